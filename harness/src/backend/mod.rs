//! Backends boot VMs, snapshot them live, and restore clones. Two exist: QEMU over QMP
//! ([`qemu`]) and, through libvirtd, libvirt. The runner only sees these traits.
//!
//! The split that matters: a [`Snapshot`] is what clones *copy* (memory, device state, a frozen
//! disk); a [`HostIdentity`] is what each clone is *given fresh*. `restore(snapshot, spec)`
//! combines the two.

pub mod accel;
pub mod fake;
pub mod libvirt;
pub mod qemu;

use crate::guest::GuestImage;
use crate::identity::HostIdentity;
use crate::probes::{ProbeChannel, ProbeError};
use async_trait::async_trait;
use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use accel::Accel;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    Qemu,
    Libvirt,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Qemu => "qemu",
            BackendKind::Libvirt => "libvirt",
        })
    }
}

/// Which step of a VM's life an error or timeout belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Start,
    Boot,
    Snapshot,
    IncomingMigration,
    Resume,
    Probe,
    Shutdown,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Start => "start (process up and channels connected)",
            Phase::Boot => "boot (QEMU start to probe ready)",
            Phase::Snapshot => "snapshot (stop, disk freeze, memory migration)",
            Phase::IncomingMigration => "restore (incoming migration)",
            Phase::Resume => "resume (cont)",
            Phase::Probe => "probe request",
            Phase::Shutdown => "shutdown",
        })
    }
}

/// Timeouts per phase. Generous for TCG on 2 busy cores; each is a bound, not a sleep.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub start: Duration,
    pub boot: Duration,
    pub snapshot: Duration,
    pub restore: Duration,
    pub probe: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            start: Duration::from_secs(15),
            boot: Duration::from_secs(90),
            snapshot: Duration::from_secs(120),
            restore: Duration::from_secs(120),
            probe: Duration::from_secs(30),
        }
    }
}

/// Everything needed to start one VM.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub identity: HostIdentity,
    pub guest: GuestImage,
    pub memory_mib: u32,
    pub accel: Accel,
    /// A directory of this VM's own (sockets, console log, its disk overlay).
    pub dir: PathBuf,
    pub timeouts: Timeouts,
}

/// What a snapshot holds, and clones copy. Files are mode 0600: guest memory holds secrets.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub source: String,
    /// Memory and device state (a QEMU migration stream, or a libvirt save image).
    pub memory: PathBuf,
    /// The disk as it was at the snapshot instant; read-only from then on.
    pub disk: PathBuf,
    pub memory_mib: u32,
    pub accel: Accel,
    /// Whether the source had a vmgenid device (clones must have the same devices).
    pub vmgenid_device: bool,
    /// Whether the source still had its NIC at the snapshot (nic-replug unplugs it first).
    pub nic: bool,
    /// The source's host-side identity and directory, which a clone's copy of the device
    /// configuration still names (libvirt embeds them in the image).
    pub source_identity: HostIdentity,
    pub source_dir: PathBuf,
    /// Whether libvirt's own restore route was already tried (and refused) for this snapshot.
    #[serde(skip)]
    pub libvirt_tried: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{vm}: {phase} timed out after {after:?}{}", console_section(.console_tail))]
    Timeout { vm: String, phase: Phase, after: Duration, console_tail: String },
    #[error("{vm}: QEMU exited during {phase} ({status}){}{}", stderr_section(.stderr), console_section(.console_tail))]
    Exited { vm: String, phase: Phase, status: String, stderr: String, console_tail: String },
    #[error("{vm}: {phase} failed")]
    Qmp {
        vm: String,
        phase: Phase,
        #[source]
        source: qemu::QmpError,
    },
    #[error("{vm}: {phase} failed{}", console_section(.console_tail))]
    Probe {
        vm: String,
        phase: Phase,
        console_tail: String,
        #[source]
        source: ProbeError,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

fn console_section(tail: &str) -> String {
    if tail.trim().is_empty() {
        "\n--- serial console: (empty) ---".into()
    } else {
        format!("\n--- last lines of the serial console ---\n{}", tail.trim_end())
    }
}

fn stderr_section(s: &str) -> String {
    if s.trim().is_empty() {
        String::new()
    } else {
        format!("\n--- QEMU stderr ---\n{}", s.trim_end())
    }
}

pub fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackendError {
    let what = what.into();
    move |source| BackendError::Io { what, source }
}

/// A qcow2 overlay on `backing`: every VM writes to one of its own, never to a shared image.
pub async fn create_overlay(backing: &Path, overlay: &Path) -> Result<(), BackendError> {
    let out = tokio::process::Command::new("qemu-img")
        // 4 KiB clusters, the guest filesystem's block size: a guest fstrim can then free the
        // exact blocks a deleted file used. With the default 64 KiB, a freed block that shares
        // its cluster with live data keeps its bytes (measured: secret_remanence).
        .args(["create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", "-F", "qcow2", "-b"])
        .arg(backing)
        .arg(overlay)
        .output()
        .await
        .map_err(io_err("run qemu-img (is qemu-utils installed?)"))?;
    if !out.status.success() {
        return Err(BackendError::Other(format!(
            "qemu-img create {} failed: {}",
            overlay.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Make the VM's directory and its own writable overlay (`disk.qcow2`) on `backing`.
pub async fn vm_disk(spec: &VmSpec, backing: &Path) -> Result<PathBuf, BackendError> {
    std::fs::create_dir_all(&spec.dir).map_err(io_err(format!("create {}", spec.dir.display())))?;
    let disk = spec.dir.join("disk.qcow2");
    create_overlay(backing, &disk).await?;
    Ok(disk)
}

/// A running VM. Dropping it kills it; [`Vm::destroy`] shuts it down politely first.
#[async_trait]
pub trait Vm: Send {
    fn name(&self) -> &str;
    fn identity(&self) -> &HostIdentity;
    fn probe(&mut self) -> &mut ProbeChannel;
    /// The last `lines` lines of the guest's serial console.
    fn console_tail(&self, lines: usize) -> String;
    /// What the backend had to do unusually to make this VM, for the report.
    fn notes(&self) -> Vec<String>;
    /// The disk image this VM writes to now.
    fn disk(&self) -> &Path;
    /// Hot-unplug the NIC, returning once the guest has released it.
    async fn unplug_nic(&mut self) -> Result<(), BackendError>;
    /// Hot-plug a new virtio NIC with `mac` (the host side returns; the guest sees it later).
    async fn plug_nic(&mut self, mac: crate::identity::MacAddr) -> Result<(), BackendError>;
    /// Stop the VM, freeze its disk, write memory and device state under `dir`, and let the
    /// VM run on (on a new disk overlay of its own). The guest probe should be holding.
    async fn snapshot(&mut self, dir: &Path) -> Result<Snapshot, BackendError>;
    async fn destroy(self: Box<Self>) -> Result<(), BackendError>;
}

#[async_trait]
pub trait Backend: Send + Sync {
    fn kind(&self) -> BackendKind;
    /// Start a VM from the guest's never-booted disk, and return once its probe is ready.
    async fn boot(&self, spec: VmSpec) -> Result<Box<dyn Vm>, BackendError>;
    /// Start a clone of `snap` with the fresh identity in `spec`, and return it running
    /// (resumed). The caller sends `go` to the probe at once.
    async fn restore(&self, snap: &Snapshot, spec: VmSpec) -> Result<Box<dyn Vm>, BackendError>;
}

/// Wrap a probe error with its VM and console tail.
pub fn probe_err(vm: &dyn Vm, phase: Phase) -> impl FnOnce(ProbeError) -> BackendError + '_ {
    move |source| BackendError::Probe {
        vm: vm.name().to_string(),
        phase,
        console_tail: vm.console_tail(20),
        source,
    }
}
