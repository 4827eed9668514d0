//! Backends boot VMs, snapshot them live, and restore clones. Two are real, QEMU over QMP
//! ([`qemu`]) and libvirt ([`libvirt`]); [`fake`] serves the runner's unit tests. The runner sees
//! only these traits.
//!
//! Following Cloud Hypervisor's small stacked traits (vm-migration/src/lib.rs: `Pausable`,
//! `Snapshottable`, `Transportable`), a [`Vm`] has a small required core and optional abilities
//! as traits of their own: [`Snapshottable`], [`NicHotplug`], and, on the backend, [`Restore`].
//! Which ones a backend has is declared once, in [`Backend::capabilities`], and checked against
//! every scenario before any VM starts ([`capability`]). Unlike Cloud Hypervisor's, no method
//! here has a default body that pretends to succeed: an ability a VM lacks is `None`.
//!
//! What a clone copies and what it is given fresh are separate types ([`snapshot`]).

pub mod accel;
pub mod capability;
pub mod emulator;
pub mod error;
pub mod fake;
pub mod libvirt;
pub mod lifecycle;
pub mod qemu;
pub mod snapshot;

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
    async fn destroy(self: Box<Self>) -> Result<(), BackendError>;

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
    /// Start a VM as `machine` from the guest's never-booted disk, and return once its agent
    /// is ready.
    async fn boot(&self, machine: &Machine, args: CloneArgs, t: &Timeouts) -> Result<Box<dyn Vm>, BackendError>;
    /// The restore ability, when the backend declares `live-snapshot`.
    fn restorer(&self) -> Option<&dyn Restore> {
        None
    }
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
