//! One boot per distinct source (issue 23). A run groups scenarios whose sources would be booted
//! identically and boots that source once; each scenario still gets clones of a source in exactly
//! the state its recipe needs.
//!
//! **Same source.** Two scenarios share a source when they clone the same way (live and
//! shared-ram from a snapshot, image-copy from a shut-down template) and their sources would be
//! the same VM: the same backend, guest or image, memory, devices present at boot (vmgenid,
//! VMClock, TPM, NoCloud seed), kernel arguments, RAM kind, network and canary, which is
//! everything [`Machine`] and the scenario's own fields say. The emulator is the run's. Their
//! fix-ups that change the source before the clones start ([`Shapes`]) must also be the same,
//! except where a snapshot can be derived.
//!
//! **Fresh snapshots.** A private-RAM source runs on, held, after its snapshot; each later
//! scenario of the same recipe state takes a new snapshot of it when it starts, so its clones
//! resume as soon after their snapshot as with a source of their own (a reused snapshot ages:
//! measured, clocks then lagged by up to 91 s). A shared-RAM template is paused, so its one
//! snapshot is reused.
//!
//! **Derived snapshots.** Where a recipe changes the source before its snapshot in a way that
//! can be done to a source already held and snapshotted (nic-replug's unplug), the scenario does
//! not boot: the shared source, still running after its first snapshot, gets the change and is
//! snapshotted again. One derived snapshot per source, since the change cannot be undone for a
//! third. A source that stops or pauses at its snapshot (shared RAM's frozen template; libvirt's
//! `--libvirt-snapshot save`) cannot be changed afterwards, so its recipe boots a source of its
//! own instead. A fix-up that scrubs or rewrites the disk the clones start from
//! (mitigate-remanence; sysprep on a live snapshot's frozen disk) always gets its own source.
//!
//! **A source that runs on.** After a private-RAM snapshot the source runs on, held; its clones
//! come from the snapshot file, not from it, so its running on changes nothing a later scenario's
//! clones see. What it could change is the network: on a segment (`network = "segment"`) the
//! source runs on the scenario's own wire, answers for its address, and holds the TCP session
//! the scenario measures, so segment scenarios never share. A NoCloud seed whose instance-id
//! is shared (`nocloud = "shared"`) names its scenario, so those do not share either. Cold boot
//! boots every compared VM by definition and shares nothing.
//!
//! The scenarios of one source run one after another, in one unit of work; units run in
//! parallel up to `--parallel`. The source is destroyed, and its directory (snapshots, guest
//! memory) deleted, when its unit ends, whatever happened; dropping it kills what is left. The
//! shared source itself is [`crate::clones::recipe::SharedSource`].

use crate::backend::snapshot::{Machine, Ram};
use crate::clones::recipe::Shapes;
use crate::scenario::{Network, NoCloud, ScenarioPlan};
use clonesafe_metadata::{BackendKind, FixupId, Method, SourceHow, SourceUse};

/// Scenarios run one after another, sharing `source` if it is given.
pub struct Unit {
    /// Indices into the plan, in the order they run.
    pub scenarios: Vec<usize>,
    /// The shared source's name (None: the unit's one scenario boots its own).
    pub source: Option<String>,
    /// The scenarios of `scenarios` that take a derived snapshot (the rest reuse the first).
    pub derived: Vec<usize>,
}

/// The fix-ups of `s` that change what its clones start from, and whether a source already
/// snapshotted can still take all of them (a derived snapshot).
pub fn shaping(s: &ScenarioPlan) -> (Vec<FixupId>, bool) {
    let mut ids = Vec::new();
    let mut derivable = true;
    for f in s.recipe.fixups.iter().map(|id| crate::clones::fixup::of(*id)) {
        match f.shapes() {
            Shapes::Nothing => {}
            Shapes::Source { derivable: d } => {
                ids.push(f.id());
                derivable &= d;
            }
            // An image copy's on_image acts on the scenario's own copy, after the template.
            Shapes::Image if s.recipe.method == Method::ImageCopy => {}
            Shapes::Image => {
                ids.push(f.id());
                derivable = false;
            }
        }
    }
    (ids, derivable)
}

/// What makes two sources the same VM (None: `s` never shares its source).
fn key(s: &ScenarioPlan, m: &Machine) -> Option<String> {
    let (kind, ram) = match s.recipe.method {
        Method::Live => ("live", Ram::Private),
        Method::SharedRam => ("live", Ram::Shared),
        Method::ImageCopy => ("template", Ram::Private),
        Method::ColdBoot => return None,
    };
    if s.network == Network::Segment || s.nocloud == Some(NoCloud::Shared) {
        return None;
    }
    let mut m = m.clone();
    m.ram = ram;
    Some(format!("{kind}|{}|{:?}|{:?}|{}|{m:?}", s.backend, s.image, s.nocloud, s.canary))
}

/// Group the plan's scenarios (`plan[i]` with its machine) into units. `share` false
/// (`--no-share`) gives each scenario a unit of its own. `keeps_running` says whether a
/// backend's source runs on after a private-RAM snapshot (what a derived snapshot needs).
pub fn units(plan: &[(&ScenarioPlan, &Machine)], share: bool, keeps_running: impl Fn(BackendKind) -> bool) -> Vec<Unit> {
    struct Group {
        key: Option<String>,
        shaping: Vec<FixupId>,
        derivable: bool,
        members: Vec<usize>,
        base_of: Option<usize>,
        taken: bool,
    }
    let mut groups: Vec<Group> = Vec::new();
    for (i, (s, m)) in plan.iter().enumerate() {
        let key = if share { key(s, m) } else { None };
        let (shaping, derivable) = shaping(s);
        match groups.iter_mut().find(|g| key.is_some() && g.key == key && g.shaping == shaping) {
            Some(g) => g.members.push(i),
            None => groups.push(Group { key, shaping, derivable, members: vec![i], base_of: None, taken: false }),
        }
    }
    // Each base (a live, private-RAM source with nothing changed) takes the first derivable
    // group of its key.
    for b in 0..groups.len() {
        let s = plan[groups[b].members[0]].0;
        let base = groups[b].key.is_some() && groups[b].shaping.is_empty() && s.recipe.method == Method::Live && keeps_running(s.backend);
        if !base {
            continue;
        }
        if let Some(d) = (0..groups.len()).find(|&d| d != b && !groups[d].taken && groups[d].key == groups[b].key && !groups[d].shaping.is_empty() && groups[d].derivable) {
            groups[d].taken = true;
            groups[b].base_of = Some(d);
        }
    }
    let mut units: Vec<Unit> = Vec::new();
    for g in groups.iter().filter(|g| !g.taken) {
        let mut scenarios = g.members.clone();
        let derived = g.base_of.map(|d| groups[d].members.clone()).unwrap_or_default();
        scenarios.extend(&derived);
        let first = plan[scenarios[0]].0;
        let what = if first.recipe.method == Method::ImageCopy { "template" } else { "source" };
        let source = (scenarios.len() > 1).then(|| format!("{}-{what}", first.name));
        units.push(Unit { scenarios, source, derived });
    }
    units.sort_by_key(|u| u.scenarios.iter().min().copied());
    units
}

/// A scenario with a source (`what`: "source" or "template") of its own.
pub fn own(scenario: &str, what: &str) -> SourceUse {
    SourceUse { id: format!("{scenario}-{what}"), how: SourceHow::Own, booted_in: scenario.to_string(), used_by: vec![scenario.to_string()] }
}

#[cfg(test)]
mod tests;
