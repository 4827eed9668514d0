//! The split at the heart of cloning, after Firecracker's `Persist` (src/vmm/src/persist.rs:
//! `State` versus `ConstructorArgs`):
//!
//! * a [`Snapshot`] is what clones *copy*: the [`Machine`] it was taken from (guest, memory,
//!   vCPUs, accelerator, devices such as vmgenid and the NIC) and typed [`Artifact`]s (memory and
//!   device state, the frozen disk, a libvirt save image), plus data private to the backend
//!   that made it;
//! * [`CloneArgs`] are what each clone is *given fresh*: its identity and its directory.
//!
//! A backend's `restore(snapshot, args)` builds the clone's machine from the snapshot alone, so
//! a clone cannot contradict the machine its memory came from.

pub use crate::agent::ProbeState;
use crate::guest::GuestProfile;
use crate::identity::HostIdentity;
use clonesafe_metadata::{Accel, BackendKind};
use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Devices whose presence a clone must share with its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Devices {
    /// A virtio NIC (nic-replug unplugs it before the snapshot).
    pub nic: bool,
    /// A VM generation ID device.
    pub vmgenid: bool,
    /// A VMClock device (QEMU 9.1+).
    pub vmclock: bool,
    /// A read-only cloud-init NoCloud seed disk (`seed.iso` in the VM's directory).
    pub seed: bool,
    /// A TPM 2.0 (tpm-crb) backed by an swtpm of the VM's own, its state in `tpm/` of the VM's
    /// directory. A restore carries the source's TPM state in the migration stream (QEMU
    /// backends/tpm/tpm_emulator.c saves swtpm's permanent, volatile and save-state blobs).
    pub tpm: bool,
}

/// Where guest RAM lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ram {
    /// Anonymous memory of the VMM process; a snapshot copies it into the stream.
    #[default]
    Private,
    /// A file in the VM's directory, mapped shared by the source. Its snapshot carries device
    /// state only and names the file ([`ArtifactKind::RamFile`]); clones map it privately
    /// (copy-on-write), so none copies the image or writes to it.
    Shared,
}

/// How a snapshot of [`Ram::Private`] memory is written: both ends of a migration must agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Migration {
    /// QEMU's sequential migration stream (`exec:cat`), every QEMU.
    #[default]
    Stream,
    /// QEMU 9.0+'s `mapped-ram` to a `file:` URI: each RAM page at a fixed offset of the file,
    /// with `multifd_channels` threads (0: multifd off).
    MappedRam { multifd_channels: u8 },
}

/// The machine a VM is built as: everything a restore must reproduce exactly.
#[derive(Debug, Clone)]
pub struct Machine {
    pub ram: Ram,
    pub migration: Migration,
    pub guest: GuestProfile,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub accel: Accel,
    pub devices: Devices,
    /// Added to a direct-kernel guest's command line (e.g. `init_on_free=1`).
    pub kernel_args: Vec<String>,
    /// Where its NIC is plugged.
    pub network: crate::scenario::Network,
}

impl Machine {
    /// For a fix-up's `configure`: `what` works through the guest's agent, so a guest without one
    /// cannot take it (refused at plan time, naming the guest).
    pub fn needs_agent(&self, what: &str) -> Result<(), String> {
        if self.guest.agent == crate::guest::AgentTransport::None {
            return Err(format!("{what} through the guest's agent, and guest {:?} has none", self.guest.name));
        }
        Ok(())
    }

    pub fn new(guest: GuestProfile, memory_mib: u32, accel: Accel) -> Self {
        let vcpus = guest.vcpus;
        Machine { ram: Ram::Private, migration: Migration::Stream, guest, memory_mib, vcpus, accel, devices: Devices { nic: true, vmgenid: false, vmclock: false, seed: false, tpm: false }, kernel_args: vec![], network: crate::scenario::Network::User }
    }

    /// The kernel command line for a direct-kernel guest: the guest's own and `kernel_args`.
    pub fn cmdline(&self) -> Option<String> {
        match &self.guest.boot {
            crate::guest::Boot::DirectKernel { cmdline, .. } => {
                Some(std::iter::once(cmdline.as_str()).chain(self.kernel_args.iter().map(String::as_str)).collect::<Vec<_>>().join(" "))
            }
            crate::guest::Boot::Disk => None,
        }
    }
}

/// What one VM is given fresh.
#[derive(Debug, Clone)]
pub struct CloneArgs {
    pub identity: HostIdentity,
    /// A directory of this VM's own (sockets, console log, its disk overlay).
    pub dir: PathBuf,
    /// Host ports on 127.0.0.1 forwarded to the guest's services: service name → host port.
    pub forwards: std::collections::BTreeMap<String, u16>,
    /// The segment its NICs are plugged into (`network = "segment"`); the backend asks it for a
    /// port per NIC.
    pub segment: Option<std::sync::Arc<crate::network::segment::Segment>>,
    /// The port its current NIC is on (set by the backend).
    pub port: Option<crate::network::segment::Port>,
}

impl CloneArgs {
    /// A fresh identity named `name` in `dir`, with a free host port for each of `machine`'s
    /// guest services.
    pub fn fresh(identity: HostIdentity, dir: PathBuf, machine: &Machine) -> Self {
        // On a segment the NIC is a port of the segment: nothing is forwarded from the host.
        let forwards = match machine.network {
            crate::scenario::Network::User => machine.guest.services.keys().map(|k| (k.clone(), free_port())).collect(),
            crate::scenario::Network::Segment => Default::default(),
        };
        CloneArgs { identity, dir, forwards, segment: None, port: None }
    }
}

/// The file in a VM's directory here that holds its serial console: QEMU writes it, libvirt
/// writes it on this machine, and a remote host's console stream is copied into it.
pub const CONSOLE_LOG: &str = "console.log";

impl CloneArgs {
    /// Where this VM's serial console is kept on this machine ([`CONSOLE_LOG`]).
    pub fn console_log(&self) -> PathBuf {
        self.dir.join(CONSOLE_LOG)
    }

    /// A new port of its segment for its NIC, if it is on one (any backend, before it builds
    /// the VM's NIC from `port`).
    pub fn take_port(&mut self) -> Result<(), crate::network::segment::SegmentError> {
        if let Some(seg) = &self.segment {
            self.port = Some(seg.port(&self.identity.name)?);
        }
        Ok(())
    }

    /// Once its VMM has opened the tap: move `port` into the segment and plug it into the
    /// bridge, recording the MAC of the NIC on it (None: no NIC is on it yet).
    pub fn attach_port(&self, mac: Option<crate::identity::MacAddr>) -> Result<(), crate::network::segment::SegmentError> {
        if let (Some(seg), Some(port)) = (&self.segment, &self.port) {
            port.attach(seg)?;
            if let Some(mac) = mac {
                seg.set_mac(&port.tap, &mac.to_string());
            }
        }
        Ok(())
    }
}

/// A TCP port on 127.0.0.1 for a forward to a guest: free when asked, never one this process
/// handed out before, and below the kernel's ephemeral range (net.ipv4.ip_local_port_range),
/// so that no outgoing connection (ssh-keyscan, a TLS probe, libvirt) can take it between now
/// and the VMM's bind. A port the kernel picked (bind to :0) lies in that range: in the race-
/// window run one was taken in between, and QEMU refused to start ("Could not set up host
/// forwarding rule") after about 300 clean starts.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok().and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok()).unwrap_or(32768);
    let (from, to) = if low > 12000 { (10000u16, low) } else { (61000u16, 65535u16) };
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..256 {
        let r = crate::identity::host_entropy(2);
        let port = from + (u16::from_le_bytes([r[0], r[1]]) % (to - from));
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// What a snapshot file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactKind {
    /// A QEMU migration stream: RAM and device state.
    MemoryStream,
    /// A QEMU migration stream taken with `x-ignore-shared`: device state, and only the RAM
    /// that is not in the shared RAM file (firmware and option ROM blocks).
    DeviceState,
    /// The source's guest RAM as a shared file ([`Ram::Shared`]): written by the running guest,
    /// not by the snapshot, and mapped copy-on-write by every clone.
    RamFile,
    /// A libvirt save image: a header, the domain XML, then a QEMU migration stream.
    LibvirtSaveImage,
    /// The disk as it was at the snapshot instant; read-only from then on.
    FrozenDisk,
}

impl ArtifactKind {
    /// The name the remanence scan and the report use.
    pub fn label(self) -> &'static str {
        match self {
            ArtifactKind::MemoryStream | ArtifactKind::LibvirtSaveImage => "memory snapshot",
            ArtifactKind::DeviceState => "device state",
            ArtifactKind::RamFile => "RAM file",
            ArtifactKind::FrozenDisk => "frozen disk",
        }
    }

    /// Whether the file holds guest RAM (and so guest secrets, and the snapshot's size).
    pub fn holds_memory(self) -> bool {
        !matches!(self, ArtifactKind::FrozenDisk)
    }
}

#[derive(Debug, Clone)]
pub struct Artifact {
    pub kind: ArtifactKind,
    /// Its path on the host that runs the VMs (not this machine's, for a remote libvirt host).
    pub path: PathBuf,
    /// The bytes it takes there, when that host is not this machine (read through libvirt);
    /// None: the file is here.
    pub host_bytes: Option<u64>,
}

/// The VM a snapshot was taken of, as a clone's copy of the device configuration still names it.
#[derive(Debug, Clone)]
pub struct SourceRecord {
    pub identity: HostIdentity,
    pub dir: PathBuf,
    /// The probe in the source's memory, which every clone resumes with.
    pub probe: ProbeState,
    /// Whether the source's agent answered (a user's image may have none).
    pub agent: bool,
}

/// What a snapshot holds and clones copy. Artifact files are mode 0600 in a 0700 run directory.
#[derive(Clone)]
pub struct Snapshot {
    pub backend: BackendKind,
    pub machine: Machine,
    pub source: SourceRecord,
    pub artifacts: Vec<Artifact>,
    /// Where the snapshot's time went, step by step in order (ms), where the backend says
    /// (QEMU: stop, the disk overlay, the migration, waiting for it to finalize).
    pub steps: Vec<(&'static str, f64)>,
    /// Bookkeeping private to the backend that made it (see [`Snapshot::private`]).
    pub private: Arc<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot").field("backend", &self.backend).field("source", &self.source.identity.name).field("artifacts", &self.artifacts).finish()
    }
}

impl Snapshot {
    pub fn artifact(&self, kind: ArtifactKind) -> Option<&Path> {
        self.artifacts.iter().find(|a| a.kind == kind).map(|a| a.path.as_path())
    }

    /// The artifact where guest RAM is: the shared RAM file, or else the stream.
    pub fn ram(&self) -> Option<&Artifact> {
        self.artifacts.iter().find(|a| a.kind == ArtifactKind::RamFile).or_else(|| self.memory())
    }

    /// The artifact that holds guest memory (the first, if several).
    pub fn memory(&self) -> Option<&Artifact> {
        self.artifacts.iter().find(|a| a.kind.holds_memory())
    }

    /// Bytes of memory and device state the snapshot wrote (a shared RAM file is the guest's
    /// own memory, not written by the snapshot, so it does not count).
    pub fn state_bytes(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        // Allocated, not apparent, size: a mapped-ram file is as long as guest RAM but sparse
        // where the guest never wrote.
        self.artifacts
            .iter()
            .filter(|a| a.kind.holds_memory() && a.kind != ArtifactKind::RamFile)
            .filter_map(|a| a.host_bytes.or_else(|| std::fs::metadata(&a.path).ok().map(|m| m.len().min(m.blocks() * 512))))
            .sum()
    }

    /// The backend's private data, if this snapshot is of type `T`.
    pub fn private<T: Any>(&self) -> Option<&T> {
        self.private.downcast_ref::<T>()
    }
}

#[cfg(test)]
mod port_tests {
    #[test]
    fn forward_ports_are_below_the_ephemeral_range_and_never_handed_out_twice() {
        let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap().split_whitespace().next().unwrap().parse().unwrap();
        let ports: Vec<u16> = (0..200).map(|_| super::free_port()).collect();
        let mut distinct = ports.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), ports.len(), "a port handed out twice");
        if low > 12000 {
            assert!(ports.iter().all(|p| (10000..low).contains(p)), "{ports:?} (ephemeral from {low})");
        }
    }
}
