//! Clone strategies: how the VMs that get compared come to exist. Each strategy drives a
//! [`Backend`] and returns what the probes saw in every VM, with timing. Three shapes:
//! boots (cold-boot), image clones (a template's disk copied offline), and live clones (one
//! snapshot restored N times, with or without NIC replug, vmgenid and agent fix-up).

pub mod remanence;
pub mod sysprep;

use crate::backend::{probe_err, Accel, Backend, BackendError, Phase, Snapshot, Timeouts, Vm, VmSpec};
use crate::events::{Event, EventKind, EventSink};
use crate::guest::GuestImage;
use crate::identity::{HostIdentity, NAME_PREFIX};
use crate::probes::{unexpected, Observation};
use crate::scenario::{ScenarioPlan, Strategy};
use clonesafe_protocol::{Reply, Request};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
    /// Agent fix-up: how long it took in each clone (guest clock).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fixup_ms: Vec<f64>,
    /// From resume until the fix-up had landed, per clone: the window of shared identity.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fixup_window_ms: Vec<f64>,
    /// From resume until the guest saw its new NIC, per clone (nic-replug).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nic_window_ms: Vec<Option<f64>>,
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
    pub remanence: Option<remanence::Scan>,
}

pub async fn run(ctx: &Ctx<'_>) -> Result<Outcome, BackendError> {
    std::fs::create_dir_all(&ctx.dir).map_err(crate::backend::io_err(format!("create {}", ctx.dir.display())))?;
    let mut fleet = Fleet::default();
    let r = match ctx.scenario.strategy {
        Strategy::ColdBoot => cold_boot(ctx, &mut fleet).await,
        Strategy::ImageClone | Strategy::ImageCloneSysprep => image_clone(ctx, &mut fleet).await,
        _ => live(ctx, &mut fleet).await,
    };
    fleet.destroy().await;
    r
}

/// Every VM that a strategy started; all are destroyed at the end, and dropping the fleet
/// (error, panic, Ctrl-C) kills whatever is left.
#[derive(Default)]
struct Fleet(Vec<Box<dyn Vm>>);

impl Fleet {
    async fn destroy(&mut self) {
        futures::future::join_all(std::mem::take(&mut self.0).into_iter().map(|vm| vm.destroy())).await;
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

async fn call(ctx: &Ctx<'_>, vm: &mut dyn Vm, req: Request) -> Result<Reply, BackendError> {
    vm.probe().call(&req, ctx.timeouts.probe).await.map_err(probe_err(vm, Phase::Probe))
}

/// What happened to one VM after it started running as a clone (or booted).
#[derive(Default)]
struct Resumed {
    go: Option<Reply>,
    nic_window_ms: Option<f64>,
    fixup: Option<(f64, f64)>,
}

/// `go` (unless already sent), `samples`, then `report`: the kernel RNG is read first.
async fn observe(ctx: &Ctx<'_>, vm: &mut dyn Vm, r: Resumed) -> Result<Observation, BackendError> {
    let go = match r.go {
        Some(g) => g,
        None => call(ctx, vm, Request::Go).await?,
    };
    let Reply::Resumed { mut kernel_rng, userspace_rng } = go else { return Err(probe_err(vm, Phase::Probe)(unexpected("resumed", &go))) };
    match call(ctx, vm, Request::Samples).await? {
        Reply::Samples { kernel_rng: more } => kernel_rng.extend(more),
        other => return Err(probe_err(vm, Phase::Probe)(unexpected("samples", &other))),
    }
    let identity = match call(ctx, vm, Request::Report).await? {
        Reply::Report { identity } => identity,
        other => return Err(probe_err(vm, Phase::Probe)(unexpected("report", &other))),
    };
    Ok(Observation {
        vm: vm.name().to_string(),
        kernel_rng,
        userspace_rng,
        identity: Some(identity),
        error: None,
        host_mac: Some(vm.identity().mac.to_string()),
        nic_window_ms: r.nic_window_ms,
        fixup_ms: r.fixup.map(|f| f.0),
        fixup_window_ms: r.fixup.map(|f| f.1),
    })
}

fn record(role: &'static str, vm: &dyn Vm) -> VmRecord {
    VmRecord { role, identity: vm.identity().clone() }
}

/// Boot `n` VMs (at most `jobs` at a time) from `guest`, then observe each.
async fn boot_many(ctx: &Ctx<'_>, fleet: &mut Fleet, guest: &GuestImage, role: &'static str, timing: &mut Timing) -> Result<(Vec<Observation>, Vec<VmRecord>), BackendError> {
    let n = ctx.scenario.clones as usize;
    let specs: Vec<VmSpec> = (0..n)
        .map(|i| {
            let mut s = ctx.spec(ctx.vm_name(role, i), false);
            s.guest = guest.clone();
            s
        })
        .collect();
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
        return Err(e);
    }
    let mut observations = Vec::new();
    let mut vms = Vec::new();
    for vm in fleet.0.iter_mut() {
        observations.push(observe(ctx, vm.as_mut(), Resumed::default()).await?);
        vms.push(record(role, vm.as_ref()));
    }
    Ok((observations, vms))
}

async fn cold_boot(ctx: &Ctx<'_>, fleet: &mut Fleet) -> Result<Outcome, BackendError> {
    let mut timing = Timing::default();
    let (observations, vms) = boot_many(ctx, fleet, &ctx.guest, "boot", &mut timing).await?;
    Ok(Outcome { observations, vms, timing, notes: vec![], remanence: None })
}

/// Plant the canary (and mitigate) in a running VM, per the scenario.
async fn prepare_remanence(ctx: &Ctx<'_>, vm: &mut dyn Vm, notes: &mut Vec<String>) -> Result<Option<String>, BackendError> {
    if !ctx.scenario.canary {
        return Ok(None);
    }
    let secret = remanence::new_canary();
    match call(ctx, vm, Request::Canary { secret_xff_hex: remanence::encode_for_guest(&secret) }).await? {
        Reply::CanaryPlanted => {}
        other => return Err(probe_err(vm, Phase::Probe)(unexpected("canary_planted", &other))),
    }
    if ctx.scenario.mitigate_remanence {
        match call(ctx, vm, Request::Scrub).await? {
            Reply::Scrubbed { output } => notes.push(format!("mitigation in the guest: remount, zero-fill free space, fstrim, drop_caches ({})", if output.is_empty() { "no output" } else { &output })),
            other => return Err(probe_err(vm, Phase::Probe)(unexpected("scrubbed", &other))),
        }
    }
    Ok(Some(secret))
}

/// virt-clone's offline clone: a template booted once (its identity created), shut down, its disk
/// copied (flattened with qemu-img convert); each clone boots the copy with a new name, UUID, MAC
/// and disk serial. With sysprep, the copy is sanitized offline first.
async fn image_clone(ctx: &Ctx<'_>, fleet: &mut Fleet) -> Result<Outcome, BackendError> {
    let mut timing = Timing::default();
    let mut notes = Vec::new();
    let (mut template, ms) = boot_one(ctx, ctx.spec(ctx.vm_name("template", 0), false)).await?;
    timing.boot_ms.push(ms);
    let secret = prepare_remanence(ctx, template.as_mut(), &mut notes).await?;
    let template_disk = template.disk().to_path_buf();
    template.destroy().await?;
    let copy = ctx.dir.join("image-copy.qcow2");
    remanence::qemu_img(&["convert", "-O", "qcow2", &path(&template_disk), &path(&copy)]).await?;
    notes.push("template booted once, shut down, and its disk copied (qemu-img convert); each clone boots the copy with a new name, UUID, MAC and disk serial".into());
    if ctx.scenario.strategy == Strategy::ImageCloneSysprep {
        let done = sysprep::sanitize(&copy, &ctx.dir).await?;
        notes.push(format!("sysprep (offline, debugfs on the copied image): {}", done.join("; ")));
        notes.push(sysprep::COVERAGE.into());
    }
    if ctx.scenario.mitigate_remanence {
        remanence::compact(&copy, &ctx.dir).await?;
        notes.push("mitigation: the copied image was compacted (qemu-img convert) after fstrim in the template".into());
    }
    let mut guest = ctx.guest.clone();
    guest.disk = copy.clone();
    let (observations, vms) = boot_many(ctx, fleet, &guest, "clone", &mut timing).await?;
    let scan = match secret {
        Some(s) => Some(remanence::scan(&s, &[("template disk", template_disk.as_path()), ("copied image", copy.as_path())], None).await?),
        None => None,
    };
    Ok(Outcome { observations, vms, timing, notes, remanence: scan })
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// One live snapshot restored N times, with the strategy's fix-ups.
async fn live(ctx: &Ctx<'_>, fleet: &mut Fleet) -> Result<Outcome, BackendError> {
    let strategy = ctx.scenario.strategy;
    let mut timing = Timing::default();
    let mut notes = Vec::new();
    let (source, ms) = boot_one(ctx, ctx.spec(ctx.vm_name("source", 0), strategy.vmgenid())).await?;
    timing.boot_ms.push(ms);
    // In the fleet from the start: every error path below tears it down with the rest.
    fleet.0.push(source);
    let source = fleet.0[0].as_mut();
    let secret = prepare_remanence(ctx, source, &mut notes).await?;
    // The source's hostname is in its kernel memory: the positive control for the memory scan.
    let control_hostname = match secret {
        Some(_) => match call(ctx, source, Request::Report).await {
            Ok(Reply::Report { identity }) => identity.hostname,
            _ => None,
        },
        None => None,
    };
    if strategy.nic_replug() {
        source.unplug_nic().await?;
    }
    // Hold the probe at a known point: it reads the kernel RNG (so any due reseed happens now)
    // and blocks, so that clones resume exactly at their next request.
    match call(ctx, source, Request::Hold).await? {
        Reply::Held => {}
        other => return Err(probe_err(source, Phase::Probe)(unexpected("held", &other))),
    }
    let name = source.name().to_string();
    ctx.emit(EventKind::Snapshotting { vm: name.clone() });
    let t = Instant::now();
    let snap = source.snapshot(&ctx.dir).await?;
    let ms = t.elapsed().as_millis() as u64;
    let bytes = std::fs::metadata(&snap.memory).map(|m| m.len()).unwrap_or(0);
    timing.snapshot_ms = Some(ms);
    timing.snapshot_bytes = Some(bytes);
    ctx.emit(EventKind::Snapshotted { vm: name, ms, bytes });

    let n = ctx.scenario.clones as usize;
    let snap = &snap;
    let restored: Vec<(Box<dyn Vm>, u64, Resumed)> = stream::iter((0..n).map(|i| {
        let spec = ctx.spec(ctx.vm_name("clone", i), strategy.vmgenid());
        async move { restore_one(ctx, snap, spec).await }
    }))
    .buffered(ctx.jobs)
    .try_collect()
    .await?;

    let mut observations = Vec::new();
    let mut vms = Vec::new();
    let mut clones = Vec::new();
    for (vm, ms, r) in restored {
        timing.restore_ms.push(ms);
        clones.push((vm, r));
    }
    for (vm, r) in clones.iter_mut() {
        let o = observe(ctx, vm.as_mut(), std::mem::take(r)).await?;
        if strategy.nic_replug() {
            timing.nic_window_ms.push(o.nic_window_ms);
        }
        if let (Some(f), Some(w)) = (o.fixup_ms, o.fixup_window_ms) {
            timing.fixup_ms.push(f);
            timing.fixup_window_ms.push(w);
        }
        observations.push(o);
        vms.push(record("clone", vm.as_ref()));
    }
    notes.insert(0, live_note(strategy, n, &snap.source));
    fleet.0.extend(clones.into_iter().map(|(vm, _)| vm));
    for note in fleet.0.iter().flat_map(|vm| vm.notes()) {
        if !notes.contains(&note) {
            notes.push(note);
        }
    }
    let scan = match secret {
        Some(s) => {
            if ctx.scenario.mitigate_remanence {
                remanence::compact(&snap.disk, &ctx.dir).await?;
                notes.push("mitigation: the frozen disk was compacted (qemu-img convert) after fstrim in the guest".into());
            }
            let control = control_hostname.as_deref().map(|h| (h, "memory snapshot"));
            Some(remanence::scan(&s, &[("memory snapshot", snap.memory.as_path()), ("frozen disk", snap.disk.as_path())], control).await?)
        }
        None => None,
    };
    Ok(Outcome { observations, vms, timing, notes, remanence: scan })
}

fn live_note(strategy: Strategy, n: usize, source: &str) -> String {
    let mut s = format!("{n} clones restored from one live snapshot of {source}; each started with a new UUID, MAC and disk serial");
    if strategy.nic_replug() {
        s.push_str("; the NIC was hot-unplugged before the snapshot and a new one (the clone's MAC) hot-plugged on resume");
    }
    if strategy.vmgenid() {
        s.push_str("; each clone got a fresh VM generation ID");
    }
    if strategy.agent_fixup() {
        s.push_str("; on resume the agent credited 64 bytes of host entropy, reseeded the CRNG, and regenerated machine-id, hostname, SSH host keys and its PRNG");
    }
    s
}

/// Restore one clone, and do the strategy's on-resume work in the order a real orchestrator
/// would: `go` first (the kernel RNG as early as possible), then the new NIC, then the agent.
async fn restore_one(ctx: &Ctx<'_>, snap: &Snapshot, spec: VmSpec) -> Result<(Box<dyn Vm>, u64, Resumed), BackendError> {
    let strategy = ctx.scenario.strategy;
    let name = spec.identity.name.clone();
    let mac = spec.identity.mac;
    ctx.emit(EventKind::Restoring { vm: name.clone() });
    let t = Instant::now();
    let mut vm = ctx.backend.restore(snap, spec).await?;
    let go = call(ctx, vm.as_mut(), Request::Go).await?;
    let ms = t.elapsed().as_millis() as u64;
    ctx.emit(EventKind::Restored { vm: name, ms });
    let t0 = match &go {
        Reply::Resumed { kernel_rng, .. } => kernel_rng.first().map(|s| s.t_ns).unwrap_or(0),
        other => return Err(probe_err(vm.as_ref(), Phase::Probe)(unexpected("resumed", other))),
    };
    let mut r = Resumed { go: Some(go), ..Default::default() };
    if strategy.nic_replug() {
        vm.plug_nic(mac).await?;
        let wait = Request::WaitNic { mac: mac.to_string(), timeout_ms: 20_000 };
        match vm.probe().call(&wait, Duration::from_secs(30)).await.map_err(probe_err(vm.as_ref(), Phase::Probe))? {
            Reply::NicSeen { t_ns, .. } => r.nic_window_ms = t_ns.map(|t| t.saturating_sub(t0) as f64 / 1e6),
            other => return Err(probe_err(vm.as_ref(), Phase::Probe)(unexpected("nic_seen", &other))),
        }
    }
    if strategy.agent_fixup() {
        let entropy: String = crate::identity::host_entropy(64).iter().map(|b| format!("{b:02x}")).collect();
        match call(ctx, vm.as_mut(), Request::Fixup { entropy_hex: entropy }).await? {
            Reply::FixedUp { t_start_ns, t_done_ns, .. } => {
                r.fixup = Some((t_done_ns.saturating_sub(t_start_ns) as f64 / 1e6, t_done_ns.saturating_sub(t0) as f64 / 1e6));
            }
            other => return Err(probe_err(vm.as_ref(), Phase::Probe)(unexpected("fixed_up", &other))),
        }
    }
    Ok((vm, ms, r))
}
