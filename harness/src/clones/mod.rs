//! Recipes: how the VMs that get compared come to exist. A recipe is a clone method
//! ([`method`]) and an ordered list of fix-ups ([`fixup`]) acting at named points of it
//! ([`recipe`]). The eight strategy presets of the scenario files are such recipes
//! (`clonesafe_metadata::Strategy::recipe`).

pub mod fixup;
pub mod method;
pub mod recipe;
pub mod remanence;
pub mod source;

use crate::backend::capability::Capability;
use crate::network::segment::Segment;
use crate::scenario::{Network, ScenarioPlan};
use clonesafe_metadata::Recipe;
use recipe::{Ctx, Fixup, Fleet, Made, RecipeError};

/// The fix-up implementations of a recipe, in order.
pub fn fixups_of(recipe: &Recipe) -> Vec<&'static dyn Fixup> {
    recipe.fixups.iter().map(|f| fixup::of(*f)).collect()
}

/// Every capability a scenario's recipe needs from its backend, with what needs it.
pub fn requirements(s: &ScenarioPlan) -> Vec<(Capability, String)> {
    let recipe = &s.recipe;
    let m = method::of(recipe.method);
    let mut out: Vec<(Capability, String)> = m.requires().iter().map(|c| (*c, format!("method {}", recipe.method))).collect();
    if s.pool.is_some() {
        out.push((Capability::WarmPool, "pool".into()));
    }
    if s.tpm {
        out.push((Capability::Tpm, "tpm = true".into()));
    }
    if s.network == Network::Segment {
        out.push((Capability::SegmentNetwork, "network = \"segment\"".into()));
    }
    for c in crate::probes::GUEST_PORT_CHECKS {
        if matches!(s.expect.get(&clonesafe_metadata::CheckName::Builtin(*c)), Some(clonesafe_metadata::Expectation::Verdict(_))) {
            out.push((Capability::GuestPorts, format!("the expectation on {c}")));
        }
    }
    for f in fixups_of(recipe) {
        out.extend(f.requires().iter().map(|c| (*c, format!("fix-up {}", f.id()))));
    }
    out
}

/// Make what the scenario's VMs need before the first starts: its directory and, with
/// `network = "segment"`, its network segment (kept in `cx.segment`; removed by [`close`], or by
/// its drop). Returns the time the scenario started, for the segment's analysis.
pub fn open(cx: &Ctx<'_>) -> Result<u64, RecipeError> {
    std::fs::create_dir_all(&cx.build.dir).map_err(|source| RecipeError::Io { what: format!("create {}", cx.build.dir.display()), source })?;
    if cx.scenario.network == Network::Segment {
        // On the runtime's own thread, not a blocking-pool one: dnsmasq and tcpdump get
        // PR_SET_PDEATHSIG, which fires when the *thread* that spawned them exits (prctl(2)), and
        // an idle pool thread exits after 10 s (measured: every DHCP server of a run died, and no
        // VM got an address). Its waits for them to come up are bounded and short.
        let seg = Segment::create(&cx.scenario.name, &cx.build.dir.join("segment")).map_err(|e| RecipeError::Segment(Box::new(e)))?;
        let _ = cx.segment.set(std::sync::Arc::new(seg));
    }
    Ok(crate::probes::unix_ns(std::time::SystemTime::now()))
}

/// Make the scenario's VMs with its recipe; every VM started goes into `fleet`.
pub async fn make(cx: &Ctx<'_>, fleet: &mut Fleet) -> Result<Made, RecipeError> {
    method::of(cx.scenario.recipe.method).make(cx, fleet).await
}

/// Tear down what the scenario made: its VMs, then its segment.
pub async fn close(cx: &Ctx<'_>, fleet: &mut Fleet) {
    fleet.destroy().await;
    if let Some(seg) = cx.segment.get() {
        seg.teardown();
    }
}
