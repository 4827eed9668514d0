//! Recipes: how the VMs that get compared come to exist. A recipe is a clone method
//! ([`method`]) and an ordered list of fix-ups ([`fixup`]) acting at named points of it
//! ([`recipe`]). The eight strategy presets of the scenario files are such recipes
//! (`clonesafe_metadata::Strategy::recipe`).

pub mod fixup;
pub mod method;
pub mod recipe;
pub mod remanence;
mod segment;

use crate::backend::capability::Capability;
use crate::network::segment::Segment;
use crate::scenario::{Network, ScenarioPlan};
use clonesafe_metadata::Recipe;
use recipe::{Ctx, Fixup, Fleet, Outcome, RecipeError};

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
    if s.network == Network::Segment {
        out.push((Capability::SegmentNetwork, "network = \"segment\"".into()));
    }
    for c in crate::probes::GUEST_PORT_CHECKS {
        if matches!(s.expect.get(c), Some(clonesafe_metadata::Expectation::Verdict(_))) {
            out.push((Capability::GuestPorts, format!("the expectation on {c}")));
        }
    }
    for f in fixups_of(recipe) {
        out.extend(f.requires().iter().map(|c| (*c, format!("fix-up {}", f.id()))));
    }
    out
}

/// Run the recipe of `cx.scenario`; every VM it started is torn down before this returns, and
/// so is its network segment.
pub async fn run(cx: &Ctx<'_>) -> Result<Outcome, RecipeError> {
    std::fs::create_dir_all(&cx.dir).map_err(|source| RecipeError::Io { what: format!("create {}", cx.dir.display()), source })?;
    if cx.scenario.network == Network::Segment {
        // On the runtime's own thread, not a blocking-pool one: dnsmasq and tcpdump get
        // PR_SET_PDEATHSIG, which fires when the *thread* that spawned them exits (prctl(2)), and
        // an idle pool thread exits after 10 s (measured: every DHCP server of a run died, and no
        // VM got an address). Its waits for them to come up are bounded and short.
        let seg = Segment::create(&cx.scenario.name, &cx.dir.join("segment")).map_err(|e| RecipeError::Segment(e.to_string()))?;
        let _ = cx.segment.set(std::sync::Arc::new(seg));
    }
    let t0 = crate::probes::unix_ns(std::time::SystemTime::now());
    let mut fleet = Fleet::default();
    let mut r = method::of(cx.scenario.recipe.method).make(cx, &mut fleet).await;
    if let (Ok(out), Some(seg)) = (&mut r, cx.segment.get()) {
        out.segment = Some(segment::watch(cx, seg, &mut fleet, out, t0).await);
    }
    fleet.destroy().await;
    if let Some(seg) = cx.segment.get() {
        seg.teardown();
    }
    r
}
