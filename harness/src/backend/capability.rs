//! What a backend can do. Each backend declares its capabilities; the runner checks every
//! scenario's needs (its recipe's method and fix-ups, its guest's boot and agent) against them
//! before any VM starts, so a missing ability is an exit-2 error naming the capability and the
//! backend, never a failure in the middle of a run. Optional abilities are separate traits
//! ([`super::Snapshottable`], [`super::NicHotplug`], [`super::Restore`]) that a backend provides
//! only when it declares the capability; a test holds every backend to its declaration.

use std::collections::BTreeSet;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    /// Boot a kernel and initramfs given by the host.
    DirectKernelBoot,
    /// Boot a disk image with its own bootloader.
    DiskBoot,
    /// The clonesafe probe on a second serial port.
    SerialProbe,
    /// qemu-guest-agent on a virtio-serial port, with a second port for an injected probe.
    QemuGuestAgent,
    /// Snapshot a running VM (memory, devices, disk) and restore clones from it.
    LiveSnapshot,
    /// Hot-unplug and hot-plug a NIC in a running VM.
    NicHotplug,
    /// A VM generation ID device whose ID each clone gets fresh.
    Vmgenid,
    /// A VMClock device (QEMU 9.1+ `-device vmclock`), declared when the emulator has it.
    Vmclock,
    /// A virtual TPM 2.0 per VM (swtpm), its state carried by live snapshots: declared when
    /// swtpm is installed and the emulator has tpm-crb.
    Tpm,
    /// Guest RAM in a shared file, a snapshot of device state only, and clones that map the
    /// RAM file copy-on-write ([`super::snapshot::Ram::Shared`]).
    SharedRam,
    /// Clone processes started ahead, waiting for their state ([`super::WarmPool`]).
    WarmPool,
    /// Plug each NIC into a port of the scenario's network segment: a tap the VMM opens by name
    /// in the host namespace, which the segment then moves into its own (network/segment.rs).
    SegmentNetwork,
    /// The harness reads and writes the VMs' disk files itself with local tools (sysprep and
    /// the remanence mitigation edit the frozen disk, image-copy copies it): true when the VMs
    /// run on this machine, false on a remote libvirt host (whose snapshots the canary scan
    /// still reads, through volume streams).
    HostFiles,
    /// The harness reaches the guest's services (ssh, TLS) through ports forwarded to this
    /// machine: the host-side checks ssh_keyscan, tls_ticket_key and openssl_rng.
    GuestPorts,
}

impl Capability {
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::DirectKernelBoot => "direct-kernel-boot",
            Capability::DiskBoot => "disk-boot",
            Capability::SerialProbe => "serial-probe",
            Capability::QemuGuestAgent => "qemu-guest-agent",
            Capability::LiveSnapshot => "live-snapshot",
            Capability::NicHotplug => "nic-hotplug",
            Capability::Vmgenid => "vmgenid",
            Capability::Vmclock => "vmclock",
            Capability::Tpm => "tpm",
            Capability::SharedRam => "shared-ram",
            Capability::WarmPool => "warm-pool",
            Capability::SegmentNetwork => "segment-network",
            Capability::HostFiles => "host-files",
            Capability::GuestPorts => "guest-ports",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of capabilities.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities(BTreeSet<Capability>);

impl Capabilities {
    pub fn of(caps: &[Capability]) -> Self {
        Capabilities(caps.iter().copied().collect())
    }
    pub fn has(&self, c: Capability) -> bool {
        self.0.contains(&c)
    }
    pub fn with(mut self, c: Capability) -> Self {
        self.0.insert(c);
        self
    }
    pub fn without(mut self, c: Capability) -> Self {
        self.0.remove(&c);
        self
    }
    pub fn iter(&self) -> impl Iterator<Item = Capability> + '_ {
        self.0.iter().copied()
    }
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v: Vec<&str> = self.0.iter().map(|c| c.as_str()).collect();
        f.write_str(&v.join(", "))
    }
}
