//! Recipes: how the VMs that get compared come to exist. A recipe is a clone method
//! ([`method`]) and an ordered list of fix-ups ([`fixup`]) acting at named points of it
//! ([`recipe`]). The eight strategy presets of the scenario files are such recipes
//! (`clonesafe_metadata::Strategy::recipe`).

pub mod fixup;
pub mod method;
pub mod recipe;
pub mod remanence;

use crate::backend::capability::Capability;
use crate::network::{self, segment::Segment};
use crate::scenario::{Network, ScenarioPlan};
use clonesafe_metadata::{FixupId, Recipe};
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
        // Off the runtime's thread: it waits (bounded) for tcpdump and dnsmasq to come up.
        let (name, dir) = (cx.scenario.name.clone(), cx.dir.join("segment"));
        let seg = tokio::task::spawn_blocking(move || Segment::create(&name, &dir))
            .await
            .map_err(|e| RecipeError::Segment(format!("setting up the segment panicked: {e}")))?
            .map_err(|e| RecipeError::Segment(e.to_string()))?;
        let _ = cx.segment.set(std::sync::Arc::new(seg));
    }
    let t0 = crate::probes::unix_ns(std::time::SystemTime::now());
    let mut fleet = Fleet::default();
    let mut r = method::of(cx.scenario.recipe.method).make(cx, &mut fleet).await;
    if let (Ok(out), Some(seg)) = (&mut r, cx.segment.get()) {
        out.segment = Some(watch_segment(cx, seg, &mut fleet, out, t0).await);
    }
    fleet.destroy().await;
    if let Some(seg) = cx.segment.get() {
        seg.teardown();
    }
    r
}

/// Watch the segment until [`network::WATCH`] after the last resume, read each VM's own
/// addresses, stop the capture, and analyse it.
async fn watch_segment(cx: &Ctx<'_>, seg: &Segment, fleet: &mut Fleet, out: &mut Outcome, t0: u64) -> network::SegmentReport {
    use crate::events::EventKind;
    let last = out.observations.iter().map(|o| o.resumed_unix_ns).max().unwrap_or(t0);
    let until = last + network::WATCH.as_nanos() as u64;
    let now = crate::probes::unix_ns(std::time::SystemTime::now());
    if until > now {
        cx.emit(EventKind::Note { text: format!("watching the segment for {} s more (renewals happen at half the {} s lease)", (until - now) / 1_000_000_000, network::segment::LEASE.as_secs()) });
        tokio::time::sleep(std::time::Duration::from_nanos(until - now)).await;
    }
    let mut guests = std::collections::BTreeMap::new();
    for vm in fleet.0.iter_mut() {
        let name = vm.name().to_string();
        let t = cx.timeouts.probe;
        let g = match crate::probes::call(vm.as_mut(), "read the guest's addresses", |a| a.addrs(t)).await {
            Ok((v6, v4)) => network::GuestAddrs { v4, v6: network::wire::parse_if_inet6(&v6), error: None },
            Err(e) => network::GuestAddrs { error: Some(crate::error_chain(&e)), ..Default::default() },
        };
        guests.insert(name, g);
    }
    let watched_ms = (crate::probes::unix_ns(std::time::SystemTime::now()).saturating_sub(last)) / 1_000_000;
    let stopping = cx.segment.get().cloned();
    let _ = tokio::task::spawn_blocking(move || stopping.map(|s| s.stop())).await;
    let restored = cx.scenario.recipe.method.restores();
    let inherits = restored && !cx.scenario.recipe.has(FixupId::NicReplug);
    let resumed: std::collections::BTreeMap<&str, u64> = out.observations.iter().map(|o| (o.vm.as_str(), o.resumed_unix_ns)).collect();
    let index = seg.ifindexes().unwrap_or_default();
    let mut members: Vec<network::wire::Member> = Vec::new();
    for p in seg.ports() {
        let ifx = index.iter().find(|(n, _)| *n == p.tap).map(|(_, i)| *i);
        let m = match members.iter_mut().position(|m| m.vm == p.vm) {
            Some(i) => &mut members[i],
            None => {
                let role = p.vm.rsplit('-').next().unwrap_or("").trim_end_matches(|c: char| c.is_ascii_digit()).to_string();
                let compared = resumed.get(p.vm.as_str()).copied();
                members.push(network::wire::Member {
                    vm: p.vm.clone(),
                    inherits: inherits && role == "clone",
                    resumed_ns: if restored && role == "clone" { compared } else { None },
                    role,
                    ifindexes: vec![],
                    taps: vec![],
                    macs: vec![],
                });
                members.last_mut().expect("pushed")
            }
        };
        m.ifindexes.extend(ifx);
        m.taps.push(p.tap.clone());
        if !p.mac.is_empty() && !m.macs.contains(&p.mac) {
            m.macs.push(p.mac.clone());
        }
    }
    // The source first: a clone inherits what it held.
    members.sort_by_key(|m| m.role != "source");
    let mut r = network::report(seg, &members, t0, watched_ms, guests);
    if let Some(dir) = &cx.captures {
        // The capture holds DHCP, ARP and neighbour discovery of the scenario's VMs (and
        // whatever else they sent: at most segment::MAX_FRAMES frames of segment::SNAPLEN bytes).
        let to = dir.join(format!("{}.pcap", cx.scenario.name));
        match std::fs::create_dir_all(dir).and_then(|_| std::fs::copy(seg.capture_path(), &to)) {
            Ok(_) => r.capture = Some(format!("captures/{}.pcap", cx.scenario.name)),
            Err(e) => out.notes.push(format!("the capture could not be kept in {}: {e}", to.display())),
        }
    }
    out.notes.push(format!(
        "the VMs shared one segment ({}: bridge, dnsmasq with {} s leases, capture of {} frames); watched {} s after the last resume",
        seg.ns,
        network::segment::LEASE.as_secs(),
        r.wire.frames,
        watched_ms / 1000
    ));
    r
}
