//! Backends boot VMs, snapshot them live, and restore clones. Two are real, QEMU over QMP
//! ([`qemu`]) and libvirt ([`libvirt`]); [`fake`] serves the runner's unit tests. The runner sees
//! only these traits.
//!
//! Following Cloud Hypervisor's small stacked traits (vm-migration/src/lib.rs: `Pausable`,
//! `Snapshottable`, `Transportable`), a [`Vm`] has a small required core and optional abilities
//! as traits of their own: [`Snapshottable`], [`NicHotplug`], and, on the backend, [`Restore`]
//! and [`WarmPool`].
//! Which ones a backend has is declared once, in [`Backend::capabilities`], and checked against
//! every scenario before any VM starts ([`capability`]). Unlike Cloud Hypervisor's, no method
//! here has a default body that pretends to succeed: an ability a VM lacks is `None`.
//!
//! What a clone copies and what it is given fresh are separate types ([`snapshot`]).

pub mod accel;
pub mod capability;
pub mod console;
pub mod emulator;
pub mod error;
pub mod fake;
pub mod libvirt;
pub mod lifecycle;
pub mod qemu;
pub mod snapshot;
pub mod start;

use crate::agent::GuestAgent;
use crate::identity::{HostIdentity, MacAddr};
use async_trait::async_trait;
use capability::Capabilities;
use clonesafe_metadata::{BackendKind, Vmm};
use error::BackendError;
use lifecycle::Timeouts;
use snapshot::{CloneArgs, Machine, Snapshot};
use std::path::{Path, PathBuf};

/// A running VM. Dropping it kills it; [`Vm::destroy`] shuts it down politely first.
#[async_trait]
pub trait Vm: Send {
    fn name(&self) -> &str;
    /// What this VM was given fresh.
    fn identity(&self) -> &HostIdentity;
    /// The machine it runs as now (a hot-unplug changes its devices).
    fn machine(&self) -> &Machine;
    /// The transport to its in-guest agent, if the guest has one.
    fn agent(&mut self) -> Option<&mut dyn GuestAgent>;
    /// The last `lines` lines of the guest's serial console.
    fn console_tail(&self, lines: usize) -> String;
    /// What the backend had to do unusually to make this VM, for the report.
    fn notes(&self) -> Vec<String>;
    /// The disk image this VM writes to now.
    fn disk(&self) -> &Path;
    /// Host ports on 127.0.0.1 forwarded to the guest's services (service name → port).
    fn forwards(&self) -> &std::collections::BTreeMap<String, u16>;
    /// The hypervisor host it runs on, as its backend names it.
    fn host(&self) -> String;
    /// Its QEMU process's pid when that process runs on this host (host-side page checks).
    fn host_pid(&self) -> Option<u32> {
        None
    }
    async fn destroy(self: Box<Self>) -> Result<(), BackendError>;
    /// Power the guest off through ACPI and wait (at most `t`) until it has gone, as a user
    /// shuts a template down before copying its disk; if it does not go, destroy it. Ok(true):
    /// it shut down by itself.
    async fn shutdown(self: Box<Self>, t: std::time::Duration) -> Result<bool, BackendError>;

    /// The live-snapshot ability, when the backend declares `live-snapshot`.
    fn snapshottable(&mut self) -> Option<&mut dyn Snapshottable> {
        None
    }
    /// The NIC hotplug ability, when the backend declares `nic-hotplug`.
    fn nic_hotplug(&mut self) -> Option<&mut dyn NicHotplug> {
        None
    }
}

/// Live snapshots of a running VM.
#[async_trait]
pub trait Snapshottable: Send {
    /// Stop the VM, freeze its disk, write memory and device state under `dir`, and let the
    /// VM run on (on a new disk overlay of its own). The guest agent should be holding.
    async fn snapshot(&mut self, dir: &Path) -> Result<Snapshot, BackendError>;
}

/// NIC hotplug in a running VM.
#[async_trait]
pub trait NicHotplug: Send {
    /// Hot-unplug the NIC, returning once the guest has released it.
    async fn unplug_nic(&mut self) -> Result<(), BackendError>;
    /// Hot-plug a new virtio NIC with `mac` (the host side returns; the guest sees it later).
    async fn plug_nic(&mut self, mac: MacAddr) -> Result<(), BackendError>;
}

/// Restoring clones from a snapshot this backend made.
#[async_trait]
pub trait Restore: Send + Sync {
    /// Start a clone of `snap` with the fresh `args`, and return it running (resumed). The
    /// caller sends `go` to its agent at once.
    async fn restore(&self, snap: &Snapshot, args: CloneArgs, t: &Timeouts) -> Result<Box<dyn Vm>, BackendError>;
}

/// Clone processes started ahead of their restore: a warm pool. A pending clone already has its
/// fresh identity, its disk overlay and its process; taking it loads the snapshot's state and
/// resumes. Dropping one kills its process.
#[async_trait]
pub trait WarmPool: Send + Sync {
    /// Start a clone of `snap` with the fresh `args`, stopped, waiting for its state.
    async fn prepare(&self, snap: &Snapshot, args: CloneArgs, t: &Timeouts) -> Result<Box<dyn Pending>, BackendError>;
}

/// A clone started ahead by [`WarmPool::prepare`].
#[async_trait]
pub trait Pending: Send {
    fn name(&self) -> &str;
    /// Its VMM process's pid, when that process runs on this host (the bench's CPU figures).
    fn host_pid(&self) -> Option<u32> {
        None
    }
    /// Load `snap`'s state (the one it was prepared for) and resume; the caller sends `go` at once.
    async fn resume(self: Box<Self>, snap: &Snapshot) -> Result<Box<dyn Vm>, BackendError>;
    /// Stop it without ever resuming it.
    async fn destroy(self: Box<Self>) -> Result<(), BackendError>;
}

#[async_trait]
pub trait Backend: Send + Sync {
    fn kind(&self) -> BackendKind;
    /// What this backend can do; the runner checks scenarios against it before any VM starts.
    fn capabilities(&self) -> Capabilities;
    /// The VMMs this backend drives, with their versions, for the report.
    fn versions(&self) -> Vec<Vmm>;
    /// Remove VMs that runs of clonesafe left behind when they were killed (their harness
    /// process is gone). Returns a line per VM removed.
    fn reap_stale(&self) -> Vec<String>;
    /// For VMs on another host: whether that host offers KVM at all (`--accel auto` then tries
    /// a guest there instead of asking this machine's /dev/kvm). None: the VMs run here.
    fn remote_kvm(&self) -> Option<Result<(), String>> {
        None
    }
    /// How the harness reads a snapshot's artifacts (the canary scan): as files here, or
    /// through the host's volume streams.
    fn artifacts(&self) -> Opener {
        local_opener()
    }
    /// Start a VM as `machine` from the guest's never-booted disk, and return once its agent
    /// is ready.
    async fn boot(&self, machine: &Machine, args: CloneArgs, t: &Timeouts) -> Result<Box<dyn Vm>, BackendError>;
    /// The restore ability, when the backend declares `live-snapshot`.
    fn restorer(&self) -> Option<&dyn Restore> {
        None
    }
    /// The warm-pool ability, when the backend declares `warm-pool`.
    fn warm_pool(&self) -> Option<&dyn WarmPool> {
        None
    }
    /// Whether a source runs on after a private-RAM live snapshot, so it can be changed and
    /// snapshotted again (a derived snapshot, clones/source.rs).
    fn source_runs_on(&self) -> bool {
        true
    }
}

/// How long an optional agent gets once the guest's SSH answers.
pub const AGENT_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// Wait for the guest's agent, within `t`. For a user's image (`optional`) the agent may never
/// come: once its SSH server answers on `ssh`, the agent gets [`AGENT_GRACE`] more, and then the
/// VM runs without it. Ok(None): the agent answered; Ok(Some(why)): it is left out.
/// What a Linux kernel prints on its console when it gives up.
pub const KERNEL_PANIC: &str = "Kernel panic - not syncing";

/// [`wait_agent`], giving up as soon as the guest's console (`console`, a file here) shows its
/// kernel panicked: a Debian 13 guest that panicked 2 s into its boot under TCG (CI,
/// 2026-12-04) otherwise held the run for the whole boot timeout.
pub async fn wait_booted(agent: &mut dyn GuestAgent, optional: bool, ssh: Option<u16>, t: std::time::Duration, console: &Path) -> Result<Option<String>, crate::agent::AgentError> {
    let watch = async {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let tail = crate::text::read_tail(console, 40);
            if let Some(line) = tail.lines().find(|l| l.contains(KERNEL_PANIC)) {
                return line.trim().chars().take(200).collect::<String>();
            }
        }
    };
    tokio::select! {
        r = wait_agent(agent, optional, ssh, t) => r,
        line = watch => Err(crate::agent::AgentError::KernelPanic(line)),
    }
}

pub async fn wait_agent(agent: &mut dyn GuestAgent, optional: bool, ssh: Option<u16>, t: std::time::Duration) -> Result<Option<String>, crate::agent::AgentError> {
    use std::time::{Duration, Instant};
    if !optional {
        return agent.wait_ready(t).await.map(|_| None);
    }
    let deadline = Instant::now() + t;
    let mut ssh_up: Option<Instant> = None;
    loop {
        match agent.wait_ready(Duration::from_secs(5)).await {
            Ok(_) => return Ok(None),
            Err(crate::agent::AgentError::Timeout(..)) => {}
            Err(e) => return Err(e),
        }
        if ssh_up.is_none() {
            if let Some(port) = ssh {
                if ssh_banner(port).await {
                    ssh_up = Some(Instant::now());
                }
            }
        }
        if let Some(up) = ssh_up {
            if up.elapsed() >= AGENT_GRACE {
                return Ok(Some(format!("no qemu-guest-agent answered within {} s of the guest's SSH server: in-guest checks are skipped", AGENT_GRACE.as_secs())));
            }
        }
        if Instant::now() >= deadline {
            return Err(crate::agent::AgentError::Timeout(t, "qemu-guest-agent or an SSH server to answer"));
        }
    }
}

/// Whether an SSH server answers with its banner on 127.0.0.1:`port` within 3 s.
async fn ssh_banner(port: u16) -> bool {
    use tokio::io::AsyncReadExt;
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let mut b = [0u8; 4];
        s.read_exact(&mut b).await.ok()?;
        Some(&b == b"SSH-")
    };
    matches!(tokio::time::timeout(std::time::Duration::from_secs(3), probe).await, Ok(Some(true)))
}

/// A reader of one artifact, and its length in bytes.
pub type ArtifactReader = (Box<dyn std::io::Read + Send>, u64);
/// Opens a snapshot's artifact by its path on the host that runs the VMs.
pub type Opener = std::sync::Arc<dyn Fn(&Path) -> std::io::Result<ArtifactReader> + Send + Sync>;

/// Artifacts that are files on this machine.
pub fn local_opener() -> Opener {
    std::sync::Arc::new(|p: &Path| {
        let f = std::fs::File::open(p)?;
        let len = f.metadata()?.len();
        Ok((Box::new(f) as Box<dyn std::io::Read + Send>, len))
    })
}

/// Make the VM's directory and its own writable overlay (`disk.qcow2`) on `backing`.
pub async fn vm_disk(args: &CloneArgs, backing: &Path, backing_format: &str) -> Result<PathBuf, BackendError> {
    let vm = &args.identity.name;
    std::fs::create_dir_all(&args.dir).map_err(BackendError::io(vm, format!("create {}", args.dir.display())))?;
    let disk = args.dir.join("disk.qcow2");
    crate::tools::qemu_img::create_overlay(backing, backing_format, &disk).await.map_err(BackendError::tool(vm))?;
    Ok(disk)
}

/// Wrap an agent error with its VM, phase and console tail.
pub fn agent_err(vm: &dyn Vm, phase: lifecycle::Phase) -> impl FnOnce(crate::agent::AgentError) -> BackendError + '_ {
    move |source| BackendError::Agent { vm: vm.name().to_string(), phase, console_tail: vm.console_tail(20), source }
}

/// This machine's hostname (the host a local VMM runs its VMs on).
pub fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "localhost".into())
}

/// What the report keeps of `vm`: its fresh identity, its role, and the host that ran it.
/// CPU time (ns) the threads of process `pid` have run: the sum of the first field of each
/// /proc/PID/task/TID/schedstat (Documentation/scheduler/sched-stats.rst: "time spent on the
/// cpu (in nanoseconds)"). Threads that already exited are not counted.
pub fn cpu_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut sum = 0u64;
    for t in tasks.flatten() {
        let s = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
        sum += s.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(sum)
}

pub fn record(vm: &dyn Vm, role: clonesafe_metadata::VmRole) -> clonesafe_metadata::VmRecord {
    let mut r = vm.identity().record(role);
    r.host = Some(vm.host());
    r
}
