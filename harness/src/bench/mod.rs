//! `clonesafe bench`: every way of making a clone, measured side by side in one run on one
//! machine. For each memory size the guest first fills most of its RAM with non-zero data (the
//! probe's `dirty` request), so a stream has real pages to carry; then:
//!
//! ```text
//!  method         source RAM         snapshot                      a clone is
//!  boot           -                  -                             a cold boot (QEMU start to probe ready)
//!  stream         anonymous          stop + migrate to a file      a new QEMU reading the stream
//!  shared         shared file        x-ignore-shared: devices only a new QEMU mapping the RAM file privately
//!  pooled-shared  shared file        (the same snapshot)           a pre-started QEMU: migrate-incoming + cont
//!  mapped-ram     anonymous          QEMU 9.0+ file: + mapped-ram, a new QEMU reading pages at fixed
//!                                    with and without multifd      offsets (QEMU 7.2: skipped, and said so)
//! ```
//!
//! Every figure is "QEMU start (or pool take) to the probe's answer after resume", per clone (a
//! fresh start includes making its disk overlay, as a run's restore does), with
//! the snapshot's time and bytes beside it. A fan-out of N resumes N clones at once, each timed
//! to its own answer. Stream clones each hold the whole dirtied RAM, so a fan-out that would not
//! fit in 70% of the host's available memory is skipped and says so. Output: `bench.json`
//! ([`BenchReport`]), `bench.md` (ratios, the issue's targets) and two SVG plots ([`output`]).

pub mod output;

use crate::agent::GuestAgent;
use crate::backend::error::BackendError;
use crate::backend::lifecycle::Timeouts;
use crate::backend::snapshot::{CloneArgs, Machine, Migration, Ram, Snapshot};
use crate::backend::start::Start;
use crate::backend::{Backend, Pending, Vm};
use crate::guest::GuestProfile;
use crate::identity::{HostIdentity, NAME_PREFIX};
use clonesafe_metadata::Accel;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How a clone was made (the `method` of a sample).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BenchMethod {
    Boot,
    Stream,
    Shared,
    PooledShared,
    MappedRam,
}

impl BenchMethod {
    pub const ALL: [BenchMethod; 5] = [BenchMethod::Boot, BenchMethod::Stream, BenchMethod::Shared, BenchMethod::PooledShared, BenchMethod::MappedRam];
    pub fn as_str(self) -> &'static str {
        match self {
            BenchMethod::Boot => "boot",
            BenchMethod::Stream => "stream",
            BenchMethod::Shared => "shared",
            BenchMethod::PooledShared => "pooled-shared",
            BenchMethod::MappedRam => "mapped-ram",
        }
    }
}

/// One clone (or one cold boot), measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    pub method: BenchMethod,
    pub memory_mib: u32,
    pub dirtied_mib: u32,
    /// Clones resumed at once (1 for a boot).
    pub fanout: u32,
    /// QEMU start (or pool take) to the probe's answer after resume (for a boot: to ready).
    pub ms: f64,
    /// The snapshot this clone came from: its time and the bytes it wrote.
    pub snapshot_ms: Option<f64>,
    pub snapshot_bytes: Option<u64>,
    pub emulator: String,
    pub accel: Accel,
    /// Which repetition (0-based).
    pub repeat: u32,
    /// mapped-ram only: the multifd channels (0: multifd off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multifd_channels: Option<u8>,
    /// Where a clone's `ms` went (absent for a boot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phases: Option<Phases>,
    /// Where the snapshot's `snapshot_ms` went, step by step (the backend's steps, ms).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshot_steps: Vec<(String, f64)>,
}

/// A clone's time in three parts that add up to its `ms`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Phases {
    /// Its disk overlay, QEMU's start with `-incoming defer`, QMP and migration capabilities
    /// (0 for a pooled clone: done before the take).
    pub start_ms: f64,
    /// `migrate-incoming` until the migration completed, and `cont`.
    pub load_ms: f64,
    /// From `cont` to the probe's answer.
    pub answer_ms: f64,
    /// CPU time the clone's QEMU process used in those parts (all its threads, from
    /// /proc/PID/task/*/schedstat; for a pooled clone, from the take): what eight clones at once
    /// compete for on the host's cores. None where the process is not on this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ms: Option<f64>,
}

/// The machine the figures were measured on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Host {
    pub cpu_model: String,
    /// Logical CPUs the host offers.
    pub vcpus: u32,
    pub mem_total_mib: u64,
    pub kernel: String,
}

/// What was asked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Params {
    pub memory_mib: Vec<u32>,
    pub dirty_fraction: f64,
    pub fanout: Vec<u32>,
    pub repeat: u32,
    pub guest: String,
    /// The guest's vCPUs.
    pub guest_vcpus: u32,
}

/// bench.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    pub clonesafe_version: String,
    pub host: Host,
    pub emulator: String,
    pub accel: Accel,
    pub accel_reason: String,
    pub params: Params,
    pub samples: Vec<Sample>,
    /// What was not measured, and why (one line each).
    pub skipped: Vec<String>,
    pub wall_s: f64,
}

pub struct BenchOptions {
    pub memory: Vec<u32>,
    pub dirty_fraction: f64,
    pub fanout: Vec<u32>,
    pub repeat: u32,
    pub accel: Accel,
    pub accel_reason: String,
    pub guest: GuestProfile,
    /// What is injected into a guest reached through qemu-guest-agent after each boot.
    pub inject: Option<std::sync::Arc<crate::agent::Injected>>,
    pub work: PathBuf,
    pub timeouts: Timeouts,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Vm(#[from] Box<BackendError>),
    #[error("{vm}: {what}: {source}")]
    Agent {
        vm: String,
        what: &'static str,
        #[source]
        source: crate::agent::AgentError,
    },
    #[error("{0}")]
    Setup(String),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<BackendError> for BenchError {
    fn from(e: BackendError) -> Self {
        BenchError::Vm(Box::new(e))
    }
}

/// Validate what the user asked before any VM starts.
pub fn check_params(memory: &[u32], dirty_fraction: f64, fanout: &[u32], repeat: u32) -> Result<(), String> {
    if memory.is_empty() || memory.iter().any(|m| !(128..=16384).contains(m)) {
        return Err(format!("--memory: {memory:?}: give sizes of 128 to 16384 MiB"));
    }
    if !(0.0..=0.9).contains(&dirty_fraction) {
        return Err(format!("--dirty-fraction: {dirty_fraction} is out of range: 0 to 0.9 (the guest's kernel needs the rest)"));
    }
    if fanout.is_empty() || fanout.iter().any(|f| !(1..=16).contains(f)) {
        return Err(format!("--fanout: {fanout:?}: give fan-outs of 1 to 16 clones"));
    }
    if !(1..=20).contains(&repeat) {
        return Err(format!("--repeat: {repeat} is out of range: 1 to 20"));
    }
    Ok(())
}

/// Progress lines while the bench runs.
pub trait Progress: Sync {
    fn step(&self, line: &str);
}

/// The host's CPU model, CPUs, memory and kernel.
pub fn host() -> Host {
    let cpu_model = crate::backend::emulator::host_cpu_model();
    let vcpus = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
    Host { cpu_model, vcpus, mem_total_mib: meminfo("MemTotal:").unwrap_or(0) / 1024, kernel: crate::backend::emulator::host_kernel() }
}

/// A /proc/meminfo field, in KiB.
fn meminfo(field: &str) -> Option<u64> {
    let m = std::fs::read_to_string("/proc/meminfo").ok()?;
    m.lines().find_map(|l| l.strip_prefix(field)).and_then(|r| r.split_whitespace().next()).and_then(|v| v.parse().ok())
}

/// Run the whole bench. VMs are torn down as each step ends, and on error (dropping a VM kills
/// its QEMU); the caller removes `opts.work`.
pub async fn run(backend: &dyn Backend, opts: &BenchOptions, progress: &dyn Progress) -> Result<BenchReport, BenchError> {
    let started = Instant::now();
    let emulator = format!("qemu {}", crate::backend::emulator::qemu_version_number().unwrap_or_else(|| "unknown".into()));
    let mapped = crate::backend::emulator::has_mapped_ram();
    let mut b = Bench { backend, opts, progress, emulator: emulator.clone(), samples: vec![], skipped: vec![], n: 0, steps: steps(opts, mapped), mapped };
    if !mapped {
        b.skipped.push(format!("mapped-ram: {emulator} has no mapped-ram migration capability (QEMU 9.0 added it); not measured (--emulator chooses another QEMU)"));
    }
    for &m in &opts.memory {
        let dirtied = ((m as f64) * opts.dirty_fraction).round() as u32;
        b.memory_size(m, dirtied).await?;
    }
    Ok(BenchReport {
        clonesafe_version: env!("CARGO_PKG_VERSION").into(),
        host: host(),
        emulator,
        accel: opts.accel,
        accel_reason: opts.accel_reason.clone(),
        params: Params {
            memory_mib: opts.memory.clone(),
            dirty_fraction: opts.dirty_fraction,
            fanout: opts.fanout.clone(),
            repeat: opts.repeat,
            guest: opts.guest.name.clone(),
            guest_vcpus: opts.guest.vcpus,
        },
        samples: b.samples,
        skipped: b.skipped,
        wall_s: started.elapsed().as_secs_f64(),
    })
}

/// Steps shown in progress: per memory size, one per source and, per fan-out and repetition,
/// a stream, a shared and a pooled round (and two mapped-ram rounds when measured).
fn steps(o: &BenchOptions, mapped: bool) -> usize {
    let (sources, rounds) = if mapped { (4, 5) } else { (2, 3) };
    o.memory.len() * (sources + o.fanout.len() * o.repeat as usize * rounds)
}

/// One source per memory size: how its RAM lives and how its snapshot is written.
#[derive(Debug, Clone, Copy)]
struct Source {
    tag: &'static str,
    ram: Ram,
    migration: Migration,
}

const SOURCES: [Source; 4] = [
    Source { tag: "stream", ram: Ram::Private, migration: Migration::Stream },
    Source { tag: "shared", ram: Ram::Shared, migration: Migration::Stream },
    Source { tag: "mapped-ram", ram: Ram::Private, migration: Migration::MappedRam { multifd_channels: 0 } },
    Source { tag: "mapped-ram-multifd", ram: Ram::Private, migration: Migration::MappedRam { multifd_channels: 2 } },
];

struct Bench<'a> {
    backend: &'a dyn Backend,
    opts: &'a BenchOptions,
    progress: &'a dyn Progress,
    emulator: String,
    samples: Vec<Sample>,
    skipped: Vec<String>,
    n: usize,
    steps: usize,
    /// Whether the emulator has mapped-ram.
    mapped: bool,
}

impl Bench<'_> {
    fn say(&mut self, what: String) {
        self.n += 1;
        self.progress.step(&format!("[{}/{}] {what}", self.n, self.steps));
    }

    #[allow(clippy::too_many_arguments)]
    fn sample(&mut self, method: BenchMethod, memory_mib: u32, dirtied_mib: u32, fanout: u32, ms: f64, snap: Option<(f64, u64, &Snapshot)>, repeat: u32, multifd_channels: Option<u8>, phases: Option<Phases>) {
        self.samples.push(Sample {
            multifd_channels,
            phases,
            method,
            memory_mib,
            dirtied_mib,
            fanout,
            ms,
            snapshot_ms: snap.map(|s| s.0),
            snapshot_bytes: snap.map(|s| s.1),
            snapshot_steps: snap.map(|s| s.2.steps.iter().map(|(k, ms)| (k.to_string(), *ms)).collect()).unwrap_or_default(),
            emulator: self.emulator.clone(),
            accel: self.opts.accel,
            repeat,
        });
    }

    fn args(&self, dir: &Path, name: &str, machine: &Machine) -> CloneArgs {
        CloneArgs::fresh(HostIdentity::fresh(format!("{NAME_PREFIX}{}-bench-{name}", std::process::id())), dir.join(name), machine)
    }

    /// Both sources of memory size `m`, each asked to fill `want` MiB, and their clones.
    async fn memory_size(&mut self, m: u32, want: u32) -> Result<(), BenchError> {
        let n = if self.mapped { 4 } else { 2 };
        for src in SOURCES.into_iter().take(n) {
            let (tag, ram) = (src.tag, src.ram);
            let dir = self.opts.work.join(format!("{m}-{tag}"));
            std::fs::create_dir_all(&dir).map_err(|source| BenchError::Io { what: format!("create {}", dir.display()), source })?;
            self.say(format!("{m} MiB: boot a {tag} source, fill {want} MiB, snapshot"));
            let mut machine = Machine::new(self.opts.guest.clone(), m, self.opts.accel);
            machine.ram = ram;
            machine.migration = src.migration;
            let t = Instant::now();
            let mut source = self.backend.boot(&machine, self.args(&dir, &format!("m{m}-{tag}-source"), &machine), &self.opts.timeouts).await?;
            if let Some(files) = self.opts.inject.clone() {
                // Part of the boot: a Debian guest answers once systemd has finished and the probe
                // is injected (what a run's boot_ms counts too, clones/recipe.rs boot_one).
                let boot_t = self.opts.timeouts.boot;
                let notes = crate::probes::call(source.as_mut(), "prepare the guest", |a| Box::pin(async move { a.prepare(Some(&*files), boot_t).await })).await?;
                if let Some(n) = notes.iter().find(|n| n.contains("could not be injected")) {
                    return Err(BenchError::Setup(n.clone()));
                }
            }
            let boot_ms = t.elapsed().as_secs_f64() * 1000.0;
            self.sample(BenchMethod::Boot, m, 0, 1, boot_ms, None, 0, None, None);
            let dirtied = fill(source.as_mut(), want).await?;
            self.progress.step(&format!("      the guest filled {dirtied} MiB"));
            let snap_dir = dir.join("snapshot");
            // Inside the run directory, which is 0700; the stream itself is created 0600.
            std::fs::create_dir_all(&snap_dir).map_err(|source| BenchError::Io { what: format!("create {}", snap_dir.display()), source })?;
            let t = Instant::now();
            let name = source.name().to_string();
            let snap = source.snapshottable().ok_or_else(|| BenchError::Setup(format!("{name}: the backend cannot snapshot")))?.snapshot(&snap_dir).await?;
            let snap_cost = (t.elapsed().as_secs_f64() * 1000.0, snap.state_bytes());
            self.progress.step(&format!("      snapshot {:.0} ms, {:.1} MB", snap_cost.0, snap_cost.1 as f64 / 1e6));
            let source = match ram {
                // A stream clone needs only the file: free the source's RAM for the fan-out.
                Ram::Private => {
                    let _ = source.destroy().await;
                    None
                }
                // The frozen template stays: its file is what the clones map.
                Ram::Shared => Some(source),
            };
            let r = self.fanouts(&snap, &dir, m, dirtied, src, snap_cost).await;
            if let Some(s) = source {
                let _ = s.destroy().await;
            }
            let _ = std::fs::remove_dir_all(&dir);
            r?;
        }
        Ok(())
    }

    async fn fanouts(&mut self, snap: &Snapshot, dir: &Path, m: u32, dirtied: u32, src: Source, snap_cost: (f64, u64)) -> Result<(), BenchError> {
        let multifd = match src.migration {
            Migration::MappedRam { multifd_channels } => Some(multifd_channels),
            Migration::Stream => None,
        };
        let mut k = 0u32;
        for &f in &self.opts.fanout {
            for r in 0..self.opts.repeat {
                let methods: &[BenchMethod] = match (src.ram, src.migration) {
                    (Ram::Private, Migration::Stream) => &[BenchMethod::Stream],
                    (Ram::Private, Migration::MappedRam { .. }) => &[BenchMethod::MappedRam],
                    (Ram::Shared, _) => &[BenchMethod::Shared, BenchMethod::PooledShared],
                };
                for &method in methods {
                    let label = if method == BenchMethod::PooledShared { method.as_str() } else { src.tag };
                    self.say(format!("{m} MiB: {label} x{f} (repeat {}/{})", r + 1, self.opts.repeat));
                    if src.ram == Ram::Private {
                        // Each stream clone holds the dirtied RAM in its own anonymous memory.
                        let need = f as u64 * (dirtied as u64 + 96);
                        let avail = meminfo("MemAvailable:").unwrap_or(0) / 1024;
                        if need * 10 > avail * 7 {
                            let why = format!("{} x{f} at {m} MiB: {f} clones need about {need} MiB, more than 70% of the {avail} MiB available; not measured", src.tag);
                            if !self.skipped.contains(&why) && r == 0 {
                                self.skipped.push(why);
                            }
                            continue;
                        }
                    }
                    k += 1;
                    let names: Vec<String> = (0..f).map(|i| format!("m{m}-{}-r{k}-c{i}", src.tag)).collect();
                    let times = self.round(snap, dir, &names, method == BenchMethod::PooledShared).await?;
                    for (ms, phases) in times {
                        self.sample(method, m, dirtied, f, ms, Some((snap_cost.0, snap_cost.1, snap)), r, multifd, Some(phases));
                    }
                }
            }
        }
        Ok(())
    }

    /// Resume `names.len()` clones of `snap` at once (from a pool started first, untimed, when
    /// `pooled`), each timed to its probe's answer; then tear them down.
    async fn round(&self, snap: &Snapshot, dir: &Path, names: &[String], pooled: bool) -> Result<Vec<(f64, Phases)>, BenchError> {
        let t = &self.opts.timeouts;
        let mut pending: Vec<Box<dyn Pending>> = Vec::new();
        if pooled {
            let warm = self.backend.warm_pool().ok_or_else(|| BenchError::Setup("the backend has no warm pool".into()))?;
            for n in names {
                pending.push(warm.prepare(snap, self.args(dir, n, &snap.machine), t).await?);
            }
        }
        // The same start as a run's clone (backend/start.rs): a fresh one is the backend's
        // prepare + resume, timed in its parts.
        let starts: Vec<_> = if pooled {
            pending.into_iter().map(Start::Pooled).collect()
        } else {
            names.iter().map(|n| Start::Fresh(self.args(dir, n, &snap.machine))).collect()
        };
        let backend = self.backend;
        let runs = starts.into_iter().map(|s| async move {
            let since = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;
            // A fresh clone's process is new: all its CPU time is this clone's.
            let cpu0 = match &s {
                Start::Pooled(p) => p.host_pid().and_then(crate::backend::cpu_ns),
                Start::Fresh(_) => Some(0),
            };
            let started = crate::backend::start::start(backend, snap, s, t).await?;
            let mut vm = started.vm;
            let t2 = Instant::now();
            let answered = answer(vm.as_mut(), t.probe).await;
            let cpu_ms = match (cpu0, vm.host_pid().and_then(crate::backend::cpu_ns)) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / 1e6),
                _ => None,
            };
            let phases = Phases { start_ms: started.start_ms, load_ms: started.load_ms, answer_ms: since(t2), cpu_ms };
            let ms = since(started.t0);
            Ok::<_, BenchError>((vm, answered.map(|_| (ms, phases))))
        });
        let results = futures::future::join_all(runs).await;
        let mut times = Vec::new();
        let mut first_err = None;
        let mut vms = Vec::new();
        for r in results {
            match r {
                Ok((vm, Ok(ms))) => {
                    times.push(ms);
                    vms.push(vm);
                }
                Ok((vm, Err(e))) => {
                    first_err.get_or_insert(e);
                    vms.push(vm);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        for vm in vms {
            let _ = vm.destroy().await;
        }
        for n in names {
            let _ = std::fs::remove_dir_all(dir.join(n));
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(times),
        }
    }
}


/// The first answer of a clone's probe after resume (its clock: a request every probe serves).
async fn answer(vm: &mut dyn Vm, t: Duration) -> Result<(), BenchError> {
    let name = vm.name().to_string();
    let a: &mut dyn GuestAgent = vm.agent().ok_or_else(|| BenchError::Setup(format!("{name}: no agent to answer")))?;
    a.monotonic(t).await.map(|_| ()).map_err(|source| BenchError::Agent { vm: name, what: "answer after resume", source })
}

/// Fill up to `mib` MiB of the guest's RAM with non-zero data (bounded at 20 s + 200 ms per
/// MiB); returns what the guest filled (it keeps a reserve free).
async fn fill(vm: &mut dyn Vm, mib: u32) -> Result<u32, BenchError> {
    if mib == 0 {
        return Ok(0);
    }
    let name = vm.name().to_string();
    let t = Duration::from_secs(20) + Duration::from_millis(200) * mib;
    let a = vm.agent().ok_or_else(|| BenchError::Setup(format!("{name}: no agent to fill memory")))?;
    a.dirty(mib, t).await.map(|(filled, _)| filled).map_err(|source| BenchError::Agent { vm: name, what: "fill guest memory", source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_checked_before_any_vm() {
        assert!(check_params(&[256, 1024], 0.75, &[1, 8], 3).is_ok());
        assert!(check_params(&[64], 0.75, &[1], 1).unwrap_err().contains("--memory"));
        assert!(check_params(&[256], 0.95, &[1], 1).unwrap_err().contains("--dirty-fraction"));
        assert!(check_params(&[256], 0.5, &[0], 1).unwrap_err().contains("--fanout"));
        assert!(check_params(&[256], 0.5, &[1], 0).unwrap_err().contains("--repeat"));
    }

    #[test]
    fn versions_compare_by_number() {
        use crate::backend::emulator::version_at_least;
        assert!(version_at_least("10.0.2", 9, 0));
        assert!(!version_at_least("7.2.19", 9, 0));
        assert!(version_at_least("9.0", 9, 0));
    }
}
