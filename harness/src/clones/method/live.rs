//! `live`: one live snapshot restored N times. The source boots, the fix-ups act on it, its agent
//! holds (reading the kernel RNG so a due reseed happens now, then blocking), and it is
//! snapshotted. Each clone is restored with a fresh identity and gets `go` at once, so the
//! kernel RNG is read as early as possible after resume; then the fix-ups' on-resume steps run,
//! in the order a real orchestrator would apply them (the scenario's order).

use crate::probes::Early;
use crate::backend::capability::Capability;
use crate::backend::start::Start;
use crate::backend::snapshot::{ArtifactKind, Ram, Snapshot};
use crate::backend::{Pending, Vm};
use crate::clones::recipe::{Canary, CloneMethod, Compared, Ctx, Fleet, Made, RecipeError};
use crate::clones::remanence;
use crate::clones::recipe::{SharedSource, Stage};
use crate::clones::source::shaping;
use crate::events::EventKind;
use async_trait::async_trait;
use clonesafe_metadata::{MeasurementId, Method, SourceHow, SourceUse, Timing, VmRole};
use futures::stream::{self, StreamExt, TryStreamExt};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

pub struct Live;

#[async_trait]
impl CloneMethod for Live {
    fn id(&self) -> Method {
        Method::Live
    }
    fn requires(&self) -> &'static [Capability] {
        &[Capability::LiveSnapshot]
    }

    async fn make(&self, cx: &Ctx<'_>, fleet: &mut Fleet) -> Result<Made, RecipeError> {
        make(cx, fleet, Ram::Private, None).await
    }
}

/// The live method, with the source's RAM `ram` and, when `pool` is given, clones taken from a
/// warm pool of that many processes started after the snapshot (the `shared-ram` method).
pub(super) async fn make(cx: &Ctx<'_>, fleet: &mut Fleet, ram: Ram, pool: Option<u32>) -> Result<Made, RecipeError> {
    let mut timing = Timing::default();
    let mut notes = Vec::new();
    let (stage, source) = match cx.shared {
        None => {
            let mut machine = cx.machine.clone();
            machine.ram = ram;
            let (source, ms) = cx.boot_one(&machine, cx.args(VmRole::Source.as_str(), 0), &mut notes).await?;
            timing.boot_ms.push(ms);
            // In the fleet from the start: every error path below tears it down with the rest.
            fleet.0.push(source);
            let stage = capture(cx, fleet.0[0].as_mut(), &cx.build.dir, true, &mut timing, &mut notes).await?;
            (Arc::new(stage), crate::clones::source::own(&cx.scenario.name, "source"))
        }
        Some(sh) => shared_stage(cx, sh, ram, &mut timing, &mut notes).await?,
    };
    let snap = &stage.snap;
    let name = snap.source.identity.name.clone();
    let n = cx.scenario.clones as usize;
    let mut starts: Vec<Start> = Vec::with_capacity(n);
    if let Some(p) = pool {
        let warm = cx.build.backend.warm_pool().ok_or(RecipeError::Missing { vm: name.clone(), capability: Capability::WarmPool })?;
        let filled = Instant::now();
        let size = (p as usize).min(n);
        let prepared: Vec<Box<dyn Pending>> = stream::iter((0..size).map(|i| async move {
            let args = cx.args(VmRole::Clone.as_str(), i);
            cx.write_seed(&args).await?;
            Ok::<_, RecipeError>(warm.prepare(snap, args, &cx.build.timeouts).await?)
        }))
        .buffered(cx.build.jobs)
        .try_collect()
        .await?;
        notes.push(format!(
            "a warm pool of {size} QEMU processes, started with -incoming defer after the snapshot (in {} ms), served {size} of the {n} clones; their restore time runs from the take (migrate-incoming) to the agent's answer",
            filled.elapsed().as_millis()
        ));
        starts.extend(prepared.into_iter().map(Start::Pooled));
    }
    for i in starts.len()..n {
        starts.push(Start::Fresh(cx.args(VmRole::Clone.as_str(), i)));
    }
    let restored: Vec<(Box<dyn Vm>, u64, Early, BTreeMap<MeasurementId, Option<f64>>)> =
        stream::iter(starts.into_iter().map(|s| restore_one(cx, snap, s))).buffered(cx.build.jobs).try_collect().await?;

    let mut compared = Vec::new();
    for (vm, ms, early, measurements) in restored {
        timing.restore_ms.push(ms);
        compared.push(Compared { index: fleet.0.len(), role: VmRole::Clone, early: Some(early), measurements });
        fleet.0.push(vm);
    }
    notes.insert(0, live_note(cx, n, &snap.source.identity.name));
    for note in fleet.0.iter().flat_map(|vm| vm.notes()) {
        if !notes.contains(&note) {
            notes.push(note);
        }
    }
    // The source's hostname is in its kernel memory: the scan's positive control, looked for in
    // the memory artifact.
    let canary = stage.canary.clone().map(|(secret, control)| Canary {
        secret,
        control: control.map(|h| (h, snap.ram().map(|a| a.kind).unwrap_or(ArtifactKind::MemoryStream).label())),
        artifacts: snap.artifacts.iter().map(|a| (a.kind.label(), a.path.clone())).collect(),
    });
    let assigned_macs = std::iter::once(stage.source_mac.clone()).chain(compared.iter().map(|c| fleet.0[c.index].identity().mac.to_string())).collect();
    Ok(Made { compared, timing, notes, assigned_macs, canary, source: Some(source) })
}

/// Prepare `vm` and snapshot it into `dir`. A `fresh` source (just booted) gets the canary, the
/// segment's TCP session and the hold; a derived snapshot's source has them already, held since
/// its first snapshot. Then the fix-ups change it (`before_capture`), it is snapshotted, and the
/// fix-ups act on the frozen disk (`on_image`).
async fn capture(cx: &Ctx<'_>, vm: &mut dyn crate::backend::Vm, dir: &std::path::Path, fresh: bool, timing: &mut Timing, notes: &mut Vec<String>) -> Result<Stage, RecipeError> {
    let source_mac = vm.identity().mac.to_string();
    // The source's hostname is in its kernel memory: the positive control for the scan.
    let canary = if fresh { remanence::plant(cx, vm, true).await? } else { None };
    if fresh {
        // Before the fix-ups prepare the snapshot (nic-replug unplugs the NIC): a service's
        // connection exists before anyone prepares a snapshot.
        open_session(cx, vm, notes).await;
    }
    for f in &cx.fixups {
        f.before_capture(cx, vm, notes).await?;
    }
    if fresh {
        hold(cx, vm, notes).await?;
    }
    let snap = take(cx, vm, dir, timing).await?;
    if let Some(disk) = snap.artifact(ArtifactKind::FrozenDisk) {
        for f in &cx.fixups {
            f.on_image(cx, disk, "frozen disk", notes).await?;
        }
    }
    Ok(Stage { shaping: shaping(cx.scenario).0, snap, canary, source_mac, made_in: cx.scenario.name.clone() })
}

/// Snapshot `vm` into `dir`, timed.
async fn take(cx: &Ctx<'_>, vm: &mut dyn crate::backend::Vm, dir: &std::path::Path, timing: &mut Timing) -> Result<Snapshot, RecipeError> {
    let name = vm.name().to_string();
    cx.emit(EventKind::Snapshotting { vm: name.clone() });
    let started = Instant::now();
    let snap = vm.snapshottable().ok_or(RecipeError::Missing { vm: name.clone(), capability: Capability::LiveSnapshot })?.snapshot(dir).await?;
    let ms = started.elapsed().as_millis() as u64;
    let bytes = snap.state_bytes();
    timing.snapshot_ms = Some(ms);
    timing.snapshot_bytes = Some(bytes);
    cx.emit(EventKind::Snapshotted { vm: name, ms, bytes });
    Ok(snap)
}

/// Hold the source's workload across the snapshot: the agent reads the kernel RNG (so a due
/// reseed happens now) and blocks until `go`.
async fn hold(cx: &Ctx<'_>, vm: &mut dyn crate::backend::Vm, notes: &mut Vec<String>) -> Result<(), RecipeError> {
    let t = cx.build.timeouts.probe;
    // An image without an agent is still cloned: the host-side checks need no agent. There
    // is then no workload to hold, so nothing samples the RNG across the snapshot.
    match crate::probes::call(vm, "hold the agent", |a| a.hold(t)).await {
        Ok(_) => {}
        Err(crate::backend::error::BackendError::NoAgent { .. }) => {
            notes.push("the source has no agent: the snapshot was taken with no workload held, and the in-guest checks are skipped".into())
        }
        Err(crate::backend::error::BackendError::Agent { source: e @ (crate::agent::AgentError::Unavailable { .. } | crate::agent::AgentError::Unsupported { .. }), .. }) => {
            notes.push(format!("no workload held across the snapshot: {e}"))
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// The snapshot of the shared source `sh` that `cx`'s recipe needs: one an earlier scenario took
/// (shared), a new one of the running source after this recipe's fix-ups (derived), or, for the
/// first scenario, the source booted and snapshotted (booted). A failure to boot or snapshot it
/// fails every later scenario of the source with the same cause.
async fn shared_stage(cx: &Ctx<'_>, sh: &SharedSource, ram: Ram, timing: &mut Timing, notes: &mut Vec<String>) -> Result<(Arc<Stage>, SourceUse), RecipeError> {
    let mut st = sh.lock().await?;
    let (shaping, derivable) = shaping(cx.scenario);
    let booted_in = st.booted_in.clone();
    let booted = booted_in.as_deref().unwrap_or("?").to_string();
    if let Some(stage) = st.stages.iter().find(|s| s.shaping == shaping).cloned() {
        if ram == Ram::Private && derivable && cx.build.backend.source_runs_on() && !st.fleet.0.is_empty() {
            // The source ran on, held, since that snapshot: take a new one now, so that this
            // scenario's clones resume as soon after their snapshot as a source of its own would
            // give them (a reused snapshot is older: in the first Debian run that reused them,
            // clones' clocks lagged the host's by up to 91 s instead of 1 to 6).
            let dir = sh.dir.join(format!("snapshot-{}", cx.scenario.name));
            std::fs::create_dir_all(&dir).map_err(|source| RecipeError::Io { what: format!("create {}", dir.display()), source })?;
            let taken = take(cx, st.fleet.0[0].as_mut(), &dir, timing).await;
            let snap = st.record(taken)?;
            notes.push(format!("the source {} was shared (booted in {booted}); it ran on held since its snapshot in {}, and this scenario took a snapshot of its own", sh.id, stage.made_in));
            let own = Stage { shaping, snap, canary: stage.canary.clone(), source_mac: stage.source_mac.clone(), made_in: cx.scenario.name.clone() };
            return Ok((Arc::new(own), sh.use_by(&cx.scenario.name, SourceHow::Shared, booted_in.as_deref())));
        }
        notes.push(format!("the source {} was shared: booted in {booted}, snapshot taken in {}", sh.id, stage.made_in));
        return Ok((stage, sh.use_by(&cx.scenario.name, SourceHow::Shared, booted_in.as_deref())));
    }
    let fresh = st.fleet.0.is_empty();
    let made = async {
        if fresh {
            let mut machine = cx.machine.clone();
            machine.ram = ram;
            let args = sh.args(cx, VmRole::Source.as_str(), &machine);
            let (vm, ms) = cx.boot_one(&machine, args, notes).await?;
            timing.boot_ms.push(ms);
            st.fleet.0.push(vm);
            st.booted_in = Some(cx.scenario.name.clone());
        }
        let base_canary = st.stages.first().and_then(|s| s.canary.clone());
        // Each snapshot in a directory of its own: the backends name the memory file after the
        // VM, and a derived snapshot is of the same VM.
        let dir = sh.dir.join(format!("snapshot{}", st.stages.len()));
        std::fs::create_dir_all(&dir).map_err(|source| RecipeError::Io { what: format!("create {}", dir.display()), source })?;
        let mut stage = capture(cx, st.fleet.0[0].as_mut(), &dir, fresh, timing, notes).await?;
        if !fresh {
            // Planted before the first snapshot, still in the source's memory.
            stage.canary = base_canary;
            notes.push(format!(
                "a derived snapshot: the source {} (booted in {}) ran on held after its first snapshot; this recipe's fix-ups then changed it and it was snapshotted again",
                sh.id,
                st.booted_in.as_deref().unwrap_or("?")
            ));
        }
        Ok::<_, RecipeError>(Arc::new(stage))
    }
    .await;
    let stage = st.record(made)?;
    st.stages.push(stage.clone());
    let how = if fresh { SourceHow::Booted } else { SourceHow::Derived };
    Ok((stage, sh.use_by(&cx.scenario.name, how, st.booted_in.as_deref())))
}

/// How long a source may take to reach the segment's peer (it may still be waiting for its
/// first lease when its agent answers).
const SESSION_OPEN_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// On a segment: the source opens a TCP session to the segment's peer and keeps it across the
/// snapshot, as a service with a live connection would (`tcp_session`). A failure is recorded
/// for the check, not fatal: the other checks do not need the session.
async fn open_session(cx: &Ctx<'_>, source: &mut dyn crate::backend::Vm, notes: &mut Vec<String>) {
    let Some(seg) = cx.segment.get() else { return };
    let t = cx.build.timeouts.probe;
    let opened = match seg.peer_addr() {
        Err(e) => Err(format!("the segment's TCP peer did not start: {e}")),
        Ok(peer) => crate::probes::call(source, "open a TCP session to the segment's peer", |a| a.session_open(peer, SESSION_OPEN_WITHIN, t))
            .await
            .map(|(local, remote)| format!("{local} -> {remote}"))
            .map_err(|e| crate::error_chain(&e)),
    };
    if let Err(e) = &opened {
        notes.push(format!("no TCP session was held across the snapshot: {e}"));
    }
    *seg.opened.lock().unwrap() = Some(opened);
}

fn live_note(cx: &Ctx<'_>, n: usize, source: &str) -> String {
    let mut s = format!("{n} clones restored from one live snapshot of {source}; each started with a new UUID, MAC and disk serial");
    for d in cx.fixups.iter().filter_map(|f| f.describe()) {
        s.push_str("; ");
        s.push_str(d);
    }
    s
}

/// Restore one clone: `go` first (the kernel RNG as early as possible, held only by a gate the
/// recipe asks for), then the clock and the TLS server's random, then each fix-up's on-resume
/// step. The restore time runs from the restore call to the agent's answer to `go`.
async fn restore_one(cx: &Ctx<'_>, snap: &Snapshot, start: Start) -> Result<(Box<dyn Vm>, u64, Early, BTreeMap<MeasurementId, Option<f64>>), RecipeError> {
    let name = start.name();
    cx.emit(EventKind::Restoring { vm: name.clone() });
    let gate = cx.fixups.iter().find_map(|f| f.gate(&snap.machine));
    if let Start::Fresh(args) = &start {
        cx.write_seed(args).await?;
    }
    let started = crate::backend::start::start(cx.build.backend, snap, start, &cx.build.timeouts).await?;
    let (t, resumed_at, mut vm) = (started.t0, started.resumed_at, started.vm);
    let early = crate::probes::right_after_resume(vm.as_mut(), gate, resumed_at, &cx.scenario.declared, cx.build.timeouts.probe).await?;
    let ms = early.answered_at.duration_since(t).as_millis() as u64;
    cx.emit(EventKind::Restored { vm: name, ms });
    let mut measured = BTreeMap::new();
    for f in &cx.fixups {
        measured.extend(f.on_resume(cx, vm.as_mut(), &early).await?);
    }
    Ok((vm, ms, early, measured))
}
