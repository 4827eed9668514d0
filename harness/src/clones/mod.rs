//! Clone strategies: how the VMs that get compared come to exist. Each strategy drives a
//! [`Backend`] and returns what the probes saw in every VM, with timing.

use crate::backend::{probe_err, Accel, Backend, BackendError, Phase, Timeouts, Vm, VmSpec};
use crate::events::{Event, EventKind, EventSink};
use crate::guest::GuestImage;
use crate::identity::{HostIdentity, NAME_PREFIX};
use crate::probes::Observation;
use crate::scenario::{ScenarioPlan, Strategy};
use clonesafe_protocol::{Reply, Request};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// What a strategy needs from the run.
pub struct Ctx<'a> {
    pub backend: &'a dyn Backend,
    pub guest: GuestImage,
    pub accel: Accel,
    /// This scenario's private directory (removed with the run).
    pub dir: PathBuf,
    pub timeouts: Timeouts,
    /// How many VMs may boot or restore at once.
    pub jobs: usize,
    pub sink: &'a dyn EventSink,
    pub started: Instant,
    pub scenario: &'a ScenarioPlan,
}

impl Ctx<'_> {
    pub fn emit(&self, kind: EventKind) {
        self.sink.emit(Event { elapsed: self.started.elapsed(), scenario: Some(self.scenario.name.clone()), kind });
    }

    fn vm_name(&self, role: &str, i: usize) -> String {
        format!("{NAME_PREFIX}{}-{}-{role}{i}", std::process::id(), self.scenario.name)
    }

    fn spec(&self, name: String, vmgenid: bool) -> VmSpec {
        VmSpec {
            dir: self.dir.join(name.rsplit('-').next().unwrap_or("vm")),
            identity: HostIdentity::fresh(name, vmgenid),
            guest: self.guest.clone(),
            memory_mib: self.scenario.memory_mib,
            accel: self.accel,
            timeouts: self.timeouts,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Timing {
    pub boot_ms: Vec<u64>,
    pub snapshot_ms: Option<u64>,
    pub restore_ms: Vec<u64>,
    /// Bytes of memory and device state in the snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_bytes: Option<u64>,
}

/// The host-side identity each compared VM was given, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct VmRecord {
    pub role: &'static str,
    #[serde(flatten)]
    pub identity: HostIdentity,
}

pub struct Outcome {
    pub observations: Vec<Observation>,
    pub vms: Vec<VmRecord>,
    pub timing: Timing,
    pub notes: Vec<String>,
}

pub async fn run(ctx: &Ctx<'_>) -> Result<Outcome, BackendError> {
    std::fs::create_dir_all(&ctx.dir).map_err(crate::backend::io_err(format!("create {}", ctx.dir.display())))?;
    match ctx.scenario.strategy {
        Strategy::ColdBoot => cold_boot(ctx).await,
        Strategy::Naive => naive(ctx).await,
    }
}

/// Every VM that a strategy started; all are destroyed at the end, and dropping the fleet
/// (error, panic, Ctrl-C) kills whatever is left.
#[derive(Default)]
struct Fleet(Vec<Box<dyn Vm>>);

impl Fleet {
    async fn destroy(self) {
        futures::future::join_all(self.0.into_iter().map(|vm| vm.destroy())).await;
    }
}

async fn boot_one(ctx: &Ctx<'_>, spec: VmSpec) -> Result<(Box<dyn Vm>, u64), BackendError> {
    let name = spec.identity.name.clone();
    ctx.emit(EventKind::Booting { vm: name.clone() });
    let t = Instant::now();
    let vm = ctx.backend.boot(spec).await?;
    let ms = t.elapsed().as_millis() as u64;
    ctx.emit(EventKind::Booted { vm: name, ms });
    Ok((vm, ms))
}

/// `go`, `samples`, then `report`: the kernel RNG is read first, then identity.
async fn observe(ctx: &Ctx<'_>, vm: &mut dyn Vm, already_resumed: Option<Reply>) -> Result<Observation, BackendError> {
    let t = ctx.timeouts.probe;
    let resumed = match already_resumed {
        Some(r) => r,
        None => vm.probe().call(&Request::Go, t).await.map_err(probe_err(vm, Phase::Probe))?,
    };
    let (mut kernel_rng, userspace_rng) = match resumed {
        Reply::Resumed { kernel_rng, userspace_rng } => (kernel_rng, userspace_rng),
        other => return Err(probe_err(vm, Phase::Probe)(crate::probes::unexpected("resumed", &other))),
    };
    match vm.probe().call(&Request::Samples, t).await.map_err(probe_err(vm, Phase::Probe))? {
        Reply::Samples { kernel_rng: more } => kernel_rng.extend(more),
        other => return Err(probe_err(vm, Phase::Probe)(crate::probes::unexpected("samples", &other))),
    }
    let identity = match vm.probe().call(&Request::Report, t).await.map_err(probe_err(vm, Phase::Probe))? {
        Reply::Report { identity } => identity,
        other => return Err(probe_err(vm, Phase::Probe)(crate::probes::unexpected("report", &other))),
    };
    Ok(Observation { vm: vm.name().to_string(), kernel_rng, userspace_rng, identity: Some(identity), error: None })
}

fn record(role: &'static str, vm: &dyn Vm) -> VmRecord {
    VmRecord { role, identity: vm.identity().clone() }
}

async fn cold_boot(ctx: &Ctx<'_>) -> Result<Outcome, BackendError> {
    let n = ctx.scenario.clones as usize;
    let specs: Vec<VmSpec> = (0..n).map(|i| ctx.spec(ctx.vm_name("boot", i), false)).collect();
    let mut fleet = Fleet::default();
    let mut timing = Timing::default();
    let booted: Vec<_> = stream::iter(specs.into_iter().map(|s| boot_one(ctx, s))).buffered(ctx.jobs).collect().await;
    let mut first_err = None;
    for b in booted {
        match b {
            Ok((vm, ms)) => {
                timing.boot_ms.push(ms);
                fleet.0.push(vm);
            }
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    if let Some(e) = first_err {
        fleet.destroy().await;
        return Err(e);
    }
    let mut observations = Vec::new();
    let mut vms = Vec::new();
    for vm in fleet.0.iter_mut() {
        match observe(ctx, vm.as_mut(), None).await {
            Ok(o) => observations.push(o),
            Err(e) => {
                fleet.destroy().await;
                return Err(e);
            }
        }
        vms.push(record("boot", vm.as_ref()));
    }
    fleet.destroy().await;
    Ok(Outcome { observations, vms, timing, notes: vec![] })
}

async fn naive(ctx: &Ctx<'_>) -> Result<Outcome, BackendError> {
    let mut fleet = Fleet::default();
    let r = naive_inner(ctx, &mut fleet).await;
    fleet.destroy().await;
    r
}

async fn naive_inner(ctx: &Ctx<'_>, fleet: &mut Fleet) -> Result<Outcome, BackendError> {
    let mut timing = Timing::default();
    let (mut source, ms) = boot_one(ctx, ctx.spec(ctx.vm_name("source", 0), false)).await?;
    timing.boot_ms.push(ms);

    // Hold the probe at a known point: it reads the kernel RNG (so any due reseed happens now)
    // and blocks, so that clones resume exactly at their next request.
    match source.probe().call(&Request::Hold, ctx.timeouts.probe).await.map_err(probe_err(source.as_ref(), Phase::Probe))? {
        Reply::Held => {}
        other => return Err(probe_err(source.as_ref(), Phase::Probe)(crate::probes::unexpected("held", &other))),
    }
    ctx.emit(EventKind::Snapshotting { vm: source.name().to_string() });
    let t = Instant::now();
    let snap = source.snapshot(&ctx.dir).await;
    let name = source.name().to_string();
    fleet.0.push(source);
    let snap = snap?;
    let ms = t.elapsed().as_millis() as u64;
    let bytes = std::fs::metadata(&snap.memory).map(|m| m.len()).unwrap_or(0);
    timing.snapshot_ms = Some(ms);
    timing.snapshot_bytes = Some(bytes);
    ctx.emit(EventKind::Snapshotted { vm: name, ms, bytes });

    let n = ctx.scenario.clones as usize;
    let snap = &snap;
    let restored: Vec<(Box<dyn Vm>, u64, Reply)> = stream::iter((0..n).map(|i| {
        let spec = ctx.spec(ctx.vm_name("clone", i), false);
        async move {
            let name = spec.identity.name.clone();
            ctx.emit(EventKind::Restoring { vm: name.clone() });
            let t = Instant::now();
            let mut vm = ctx.backend.restore(snap, spec).await?;
            // First thing after resume: the probe samples the kernel RNG.
            let go = vm.probe().call(&Request::Go, ctx.timeouts.probe).await.map_err(probe_err(vm.as_ref(), Phase::Probe))?;
            let ms = t.elapsed().as_millis() as u64;
            ctx.emit(EventKind::Restored { vm: name, ms });
            Ok::<_, BackendError>((vm, ms, go))
        }
    }))
    .buffered(ctx.jobs)
    .try_collect()
    .await?;

    let mut observations = Vec::new();
    let mut vms = Vec::new();
    let mut clones = Vec::new();
    for (vm, ms, go) in restored {
        timing.restore_ms.push(ms);
        clones.push((vm, go));
    }
    for (vm, go) in clones.iter_mut() {
        observations.push(observe(ctx, vm.as_mut(), Some(go.clone())).await?);
        vms.push(record("clone", vm.as_ref()));
    }
    let mut notes = vec![format!(
        "{n} clones restored from one live snapshot of {}; each started with a new UUID, MAC and disk serial",
        snap.source
    )];
    fleet.0.extend(clones.into_iter().map(|(vm, _)| vm));
    for note in fleet.0.iter().flat_map(|vm| vm.notes()) {
        if !notes.contains(&note) {
            notes.push(note);
        }
    }
    Ok(Outcome { observations, vms, timing, notes })
}
