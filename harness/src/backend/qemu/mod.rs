//! The QEMU backend: QEMU 7.2 driven directly over QMP, no libvirt.
//!
//! Snapshot (measured in FACTS.md): `stop`, `blockdev-snapshot-sync` (the disk is frozen at the
//! same instant; the source continues on a new overlay), `migrate` to `exec:cat > FILE` (QEMU 7.2
//! has no `file:` URI; it arrived in 8.2), wait for the `MIGRATION` event, `cont`.
//! Restore: the snapshot's machine plus the clone's fresh identity, `-S -incoming defer`,
//! `migrate-incoming exec:cat FILE`, wait for `MIGRATION completed`, `cont`. This is the sequence
//! Kata Containers' VM templating uses (`-incoming defer`, `migrate-incoming exec:cat`).
//!
//! Shared RAM ([`Ram::Shared`], the `shared-ram` method): the source's RAM is
//! `memory-backend-file,share=on` on a file in its directory; the snapshot sets the
//! `x-ignore-shared` migration capability, so the stream skips that RAM block and holds device
//! state (and the small unshared blocks: firmware, ROMs) only; the source then stays paused, a
//! frozen template. A clone maps the same file with `share=off` (MAP_PRIVATE: its writes are
//! copy-on-write and never reach the file), sets `x-ignore-shared` too (the stream's RAM header
//! then carries each block's address, and both ends must agree), and loads the device state.
//! QEMU: migration/ram.c `ramblock_is_ignored()` (a block is skipped when the capability is on
//! and the block is shared); Kata's template factory starts clones the same way
//! (`memory-backend-file,share=off` over the template's memory file, `x-ignore-shared`).
//! Measured with a prototype (FACTS.md, "Restore floor under TCG"): 20 ms and 0.37 MB for the
//! snapshot, 65-81 ms to the first answer of a clone, 35-39 ms from a pre-started process.
//!
//! mapped-ram ([`Migration::MappedRam`], QEMU 9.0+, `clonesafe bench` with `--emulator`): the
//! `mapped-ram` capability (and `multifd` with `multifd-channels`) on both ends and a `file:`
//! URI (QEMU 8.2+); each page lands at a fixed offset, so the file is as large as guest RAM but
//! sparse where the guest never wrote. QEMU docs/devel/migration/mapped-ram.rst.
//!
//! A warm pool ([`WarmPool`]) is [`WarmPool::prepare`] ahead of time and [`Pending::resume`]
//! at take: `migrate-incoming`, wait, `cont`.

pub mod process;
pub mod qmp;
pub mod reap;

use super::capability::{Capabilities, Capability};
use super::emulator;
use super::error::BackendError;
use super::lifecycle::{Phase, Timeouts};
use super::snapshot::{Artifact, ArtifactKind, CloneArgs, Machine, Migration, Ram, Snapshot, SourceRecord};
use super::{vm_disk, Backend, NicHotplug, Pending, Restore, Snapshottable, Vm, WarmPool};
use crate::agent::qga::{Qga, SocketWire};
use crate::agent::transport::Transport;
use crate::agent::GuestAgent;
use crate::guest::{AgentTransport, Boot};
use crate::identity::{HostIdentity, MacAddr};
use async_trait::async_trait;
use clonesafe_metadata::{BackendKind, Vmm};
use process::{Channels, QemuProcess};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct QemuBackend;

pub const CAPABILITIES: &[Capability] = &[
    Capability::HostFiles,
    Capability::GuestPorts,
    Capability::DirectKernelBoot,
    Capability::DiskBoot,
    Capability::SerialProbe,
    Capability::QemuGuestAgent,
    Capability::LiveSnapshot,
    Capability::NicHotplug,
    Capability::Vmgenid,
    Capability::SharedRam,
    Capability::WarmPool,
    Capability::SegmentNetwork,
];

/// The file a [`Ram::Shared`] VM's guest RAM lives in, in its directory.
pub const RAM_FILE: &str = "ram.mem";

pub struct QemuVm {
    proc: QemuProcess,
    agent: Transport,
    notes: Vec<String>,
    machine: Machine,
    args: CloneArgs,
    timeouts: Timeouts,
    /// The overlay this VM writes to now.
    disk: PathBuf,
    snapshots: u32,
}

/// Where a QEMU process's guest RAM comes from.
#[derive(Debug, Clone, Copy)]
enum RamMap<'a> {
    /// Anonymous memory (QEMU's default).
    Anonymous,
    /// `memory-backend-file` on `path`: `share` maps it MAP_SHARED (a template), otherwise
    /// MAP_PRIVATE (a clone: copy-on-write, the file is never written).
    File { path: &'a Path, share: bool },
}

/// The command line a clone of `machine` starts with (without `-incoming`): the host-side work
/// on the restore path that criterion measures (benches/fleet.rs). `ram_file`: the shared RAM
/// file it maps privately, if any.
pub fn restore_command_line(machine: &Machine, args: &CloneArgs, disk: &Path, ram_file: Option<&Path>) -> Vec<String> {
    machine_args(machine, args, disk, ram_file.map_or(RamMap::Anonymous, |path| RamMap::File { path, share: false }))
}

/// Set the migration capabilities and parameters `machine`'s snapshots are written with (the
/// destination must set the same). Refused by a QEMU older than the capability.
async fn set_migration(proc: &mut QemuProcess, machine: &Machine, phase: Phase) -> Result<(), BackendError> {
    let mut caps = Vec::new();
    if machine.ram == Ram::Shared {
        caps.push(json!({ "capability": "x-ignore-shared", "state": true }));
    }
    if let Migration::MappedRam { multifd_channels } = machine.migration {
        caps.push(json!({ "capability": "mapped-ram", "state": true }));
        if multifd_channels > 0 {
            caps.push(json!({ "capability": "multifd", "state": true }));
        }
    }
    if !caps.is_empty() {
        proc.qmp(phase, "migrate-set-capabilities", json!({ "capabilities": caps })).await?;
    }
    if let Migration::MappedRam { multifd_channels } = machine.migration {
        if multifd_channels > 0 {
            proc.qmp(phase, "migrate-set-parameters", json!({ "multifd-channels": multifd_channels })).await?;
        }
    }
    Ok(())
}

/// The migration URI for `file`, written (`out`) or read.
fn migration_uri(machine: &Machine, file: &Path, out: bool) -> String {
    match machine.migration {
        Migration::MappedRam { .. } => format!("file:{}", file.display()),
        Migration::Stream if out => format!("exec:cat > {}", shell_quote(file)),
        Migration::Stream => format!("exec:cat {}", shell_quote(file)),
    }
}

/// Escape a value for QEMU's comma-separated option syntax.
fn opt_value(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

/// The NIC: virtio-net on the hub, in a fixed slot, without an option ROM.
const NIC_DEVICE: &str = "virtio-net-pci,netdev=net0,romfile=,addr=0x5";

/// QEMU's arguments for `machine` with identity `id`. A clone is started with its snapshot's
/// machine, so its devices are the source's by construction.
fn machine_args(machine: &Machine, args: &CloneArgs, disk: &Path, ram: RamMap<'_>) -> Vec<String> {
    let id = &args.identity;
    let mut a: Vec<String> = vec![
        "-name".into(),
        format!("{},process={}", id.name, id.name),
        "-machine".into(),
        match ram {
            RamMap::Anonymous => "pc".into(),
            RamMap::File { .. } => "pc,memory-backend=ram0".into(),
        },
        "-accel".into(),
        machine.accel.as_str().into(),
        "-cpu".into(),
        emulator::cpu_model(machine.accel).into(),
        "-m".into(),
        format!("{}M", machine.memory_mib),
        "-smp".into(),
        machine.vcpus.to_string(),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        "-no-reboot".into(),
    ];
    if let RamMap::File { path, share } = ram {
        let share = if share { "on" } else { "off" };
        a.extend(["-object".into(), format!("memory-backend-file,id=ram0,size={}M,mem-path={},share={share}", machine.memory_mib, opt_value(path))]);
    }
    if let Boot::DirectKernel { kernel, initrd, .. } = &machine.guest.boot {
        a.extend(["-kernel".into(), kernel.display().to_string(), "-initrd".into(), initrd.display().to_string()]);
        a.extend(["-append".into(), machine.cmdline().unwrap_or_default()]);
    }
    // ttyS0: the console, to a socket the harness reads into console.log up to a cap
    // (backend/console.rs; QEMU connects it first). Paths in QEMU options double their commas
    // (QEMU's escaping: issue 19, item 11, a --workdir with a comma broke -drive and -chardev).
    a.extend(["-chardev".into(), format!("socket,id=con0,path={}", opt_value(&args.dir.join("console.sock"))), "-serial".into(), "chardev:con0".into()]);
    match machine.guest.agent {
        AgentTransport::SerialProbe => {
            // ttyS1: the probe channel (QEMU connects to our socket).
            a.extend([
                "-chardev".into(),
                format!("socket,id=probe,path={}", opt_value(&args.dir.join("probe.sock"))),
                "-serial".into(),
                "chardev:probe".into(),
            ]);
        }
        AgentTransport::Qga => {
            // Two virtio-serial ports on sockets of ours, in a fixed slot: qemu-guest-agent's,
            // and the one the injected probe opens. Chardevs connect in this order (probe, qga).
            a.extend([
                "-device".into(),
                "virtio-serial-pci,id=vser0,addr=0x6".into(),
                "-chardev".into(),
                format!("socket,id=probe,path={}", opt_value(&args.dir.join("probe.sock"))),
                "-device".into(),
                format!("virtserialport,bus=vser0.0,nr=2,chardev=probe,name={}", crate::agent::qga::PROBE_PORT),
                "-chardev".into(),
                format!("socket,id=qga,path={}", opt_value(&args.dir.join("qga.sock"))),
                "-device".into(),
                "virtserialport,bus=vser0.0,nr=1,chardev=qga,name=org.qemu.guest_agent.0".into(),
            ]);
        }
        AgentTransport::None => {}
    }
    a.extend([
        "-chardev".into(),
        format!("socket,id=qmp,path={}", opt_value(&args.dir.join("qmp.sock"))),
        "-mon".into(),
        "chardev=qmp,mode=control".into(),
        "-drive".into(),
        // discard=unmap: a guest fstrim frees clusters in the overlay (remanence mitigation).
        format!("if=none,id=drive0,file={},format=qcow2,discard=unmap", opt_value(disk)),
        "-device".into(),
        // Fixed PCI slots: a clone started without the NIC (nic-replug) keeps every other
        // device where the migration stream expects it.
        format!("virtio-blk-pci,id=blk0,drive=drive0,serial={},addr=0x4", id.disk_serial.as_str()),
        "-netdev".into(),
        netdev(machine, args),
        "-uuid".into(),
        id.uuid.to_string(),
        "-smbios".into(),
        format!("type=1,serial={}", id.system_serial.as_str()),
    ]);
    if machine.devices.nic {
        // romfile= drops the iPXE option ROM (not installed, and slow to run under TCG).
        a.push("-device".into());
        a.push(format!("{},id=nic0,mac={}", NIC_DEVICE, id.mac));
    }
    if machine.devices.seed {
        // cloud-init's NoCloud seed (a `cidata` ISO the harness wrote), read-only, in a fixed slot.
        a.push("-drive".into());
        a.push(format!("if=none,id=seed,file={},format=raw,readonly=on", opt_value(&args.dir.join("seed.iso"))));
        a.push("-device".into());
        a.push("virtio-blk-pci,id=blk1,drive=seed,addr=0x7".into());
    }
    if machine.devices.vmgenid {
        // QEMU writes this guid into guest memory on load and notifies the guest (FACTS.md).
        let genid = id.vmgenid.map(|g| g.to_string()).unwrap_or_else(|| "auto".into());
        a.push("-device".into());
        a.push(format!("vmgenid,id=vmgenid0,guid={genid}"));
    }
    if machine.devices.tpm {
        // QEMU's TPM emulator backend (docs/specs/tpm.rst): swtpm's control socket, which the
        // harness started before QEMU (process.rs); a CRB interface, as libvirt's default.
        a.push("-chardev".into());
        a.push(format!("socket,id=chrtpm,path={}", opt_value(&process::tpm_socket(&args.dir))));
        a.extend(["-tpmdev".into(), "emulator,id=tpm0,chardev=chrtpm".into(), "-device".into(), "tpm-crb,tpmdev=tpm0".into()]);
    }
    if machine.devices.vmclock {
        // QEMU 9.1+ (hw/acpi/vmclock.c): an ACPI device with a shared page the guest maps.
        a.push("-device".into());
        a.push("vmclock,id=vmclock0".into());
    }
    a
}

/// The NIC's network. Without forwarded services: a hub with no other port (the NIC exists, but no
/// packet can leave the VM). With them: QEMU's user network with `restrict=on`, which isolates the
/// guest from the host and the outside (it can reach nothing) while the host reaches each
/// service through a forward on 127.0.0.1 (FACTS.md: ssh-keyscan through such a forward works).
fn netdev(machine: &Machine, args: &CloneArgs) -> String {
    if let Some(port) = &args.port {
        // A tap the segment made in the host namespace (down, no address); QEMU opens it by name
        // and the segment then moves it into its namespace (network/segment.rs).
        return format!("tap,id=net0,ifname={},script=no,downscript=no", port.tap);
    }
    if args.forwards.is_empty() {
        return "hubport,id=net0,hubid=0".into();
    }
    let mut s = "user,id=net0,restrict=on".to_string();
    for (service, host_port) in &args.forwards {
        if let Some(guest_port) = machine.guest.services.get(service) {
            s.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host_port}-:{guest_port}"));
        }
    }
    s
}

/// The channels QEMU connects for `machine`'s agent transport.
fn channels(machine: &Machine) -> Channels {
    let (probe, qga) = match machine.guest.agent {
        AgentTransport::SerialProbe => (true, false),
        AgentTransport::Qga => (true, true),
        AgentTransport::None => (false, false),
    };
    Channels { probe, qga, tpm: machine.devices.tpm }
}

/// The VM's transport from the process's channels: on a boot the probe (if injected) is still
/// to come; on a restore it is whatever the source had (`restored`).
fn transport(proc: &mut QemuProcess, machine: &Machine, restored: Option<&SourceRecord>) -> Transport {
    if restored.is_some_and(|s| !s.agent) {
        return Transport::None;
    }
    let restored = restored.map(|s| &s.probe);
    match machine.guest.agent {
        AgentTransport::SerialProbe => proc.probe.take().map(Transport::Serial).unwrap_or(Transport::None),
        AgentTransport::Qga => match proc.qga.take() {
            Some(stream) => {
                let wire = Box::new(SocketWire::new(stream));
                Transport::Qga(match restored {
                    None => Qga::new(wire, proc.probe.take()),
                    Some(state) => Qga::restored(wire, proc.probe.take(), state),
                })
            }
            None => Transport::None,
        },
        AgentTransport::None => Transport::None,
    }
}

#[async_trait]
impl Backend for QemuBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Qemu
    }

    fn capabilities(&self) -> Capabilities {
        let mut c = Capabilities::of(CAPABILITIES);
        if emulator::has_device("vmclock") {
            c = c.with(Capability::Vmclock);
        }
        if process::swtpm_installed() && emulator::has_device("tpm-crb") {
            c = c.with(Capability::Tpm);
        }
        c
    }

    fn versions(&self) -> Vec<Vmm> {
        vec![Vmm { name: "qemu".into(), version: emulator::qemu_version_number().unwrap_or_else(|| "unknown".into()) }]
    }

    fn reap_stale(&self) -> Vec<String> {
        reap::reap_stale().into_iter().map(|v| format!("killed a leftover VM {} (pid {}) of a dead run", v.name, v.pid)).collect()
    }

    async fn boot(&self, machine: &Machine, mut args: CloneArgs, t: &Timeouts) -> Result<Box<dyn Vm>, BackendError> {
        let disk = vm_disk(&args, &machine.guest.disk, &machine.guest.disk_format).await?;
        args.take_port().map_err(BackendError::segment(&args.identity.name))?;
        let ram_file = args.dir.join(RAM_FILE);
        let ram = match machine.ram {
            Ram::Private => RamMap::Anonymous,
            Ram::Shared => {
                // Guest memory, so guest secrets: 0600 before QEMU opens it (QEMU extends an
                // empty file to the RAM size; physmem.c file_ram_alloc).
                crate::secrets::create_private(&ram_file).map_err(BackendError::io(&args.identity.name, format!("create {}", ram_file.display())))?;
                RamMap::File { path: &ram_file, share: true }
            }
        };
        let qargs = machine_args(machine, &args, &disk, ram);
        let mut proc = QemuProcess::spawn(&args.identity.name, &args.dir, channels(machine), t, &qargs).await?;
        args.attach_port(machine.devices.nic.then_some(args.identity.mac)).map_err(BackendError::segment(&args.identity.name))?;
        proc.init_migration().await?;
        let mut agent = transport(&mut proc, machine, None);
        let mut notes = Vec::new();
        if let Some(a) = agent.agent() {
            match super::wait_booted(a, machine.guest.optional, args.forwards.get("ssh").copied(), t.boot, &args.console_log()).await {
                Ok(None) => {}
                Ok(Some(why)) => {
                    agent = Transport::None;
                    notes.push(why);
                }
                Err(e) => return Err(proc.fail(Phase::Boot, t.boot, e).await),
            }
        }
        Ok(Box::new(QemuVm { proc, agent, notes, disk, machine: machine.clone(), args, timeouts: *t, snapshots: 0 }))
    }

    fn restorer(&self) -> Option<&dyn Restore> {
        Some(self)
    }

    fn warm_pool(&self) -> Option<&dyn WarmPool> {
        Some(self)
    }
}

#[async_trait]
impl Restore for QemuBackend {
    async fn restore(&self, snap: &Snapshot, args: CloneArgs, t: &Timeouts) -> Result<Box<dyn Vm>, BackendError> {
        self.prepare(snap, args, t).await?.resume(snap).await
    }
}

/// A clone's QEMU process, started with `-S -incoming defer` and waiting for its state.
pub struct PendingQemu {
    proc: QemuProcess,
    machine: Machine,
    args: CloneArgs,
    disk: PathBuf,
    timeouts: Timeouts,
}

/// The snapshot's migration stream: RAM and devices, or (shared RAM) devices only.
fn stream_of(snap: &Snapshot) -> Option<&Path> {
    snap.artifact(ArtifactKind::MemoryStream).or_else(|| snap.artifact(ArtifactKind::DeviceState))
}

#[async_trait]
impl WarmPool for QemuBackend {
    async fn prepare(&self, snap: &Snapshot, mut args: CloneArgs, t: &Timeouts) -> Result<Box<dyn Pending>, BackendError> {
        let wrong = || BackendError::WrongSnapshot { backend: BackendKind::Qemu, made_by: snap.backend };
        if snap.backend != BackendKind::Qemu {
            return Err(wrong());
        }
        let (Some(_), Some(frozen)) = (stream_of(snap), snap.artifact(ArtifactKind::FrozenDisk)) else {
            return Err(wrong());
        };
        let ram = match (snap.machine.ram, snap.artifact(ArtifactKind::RamFile)) {
            (Ram::Private, _) => RamMap::Anonymous,
            (Ram::Shared, Some(path)) => RamMap::File { path, share: false },
            (Ram::Shared, None) => return Err(wrong()),
        };
        // Clones get their own overlay on the frozen disk: no two VMs share a writable image.
        let disk = vm_disk(&args, frozen, "qcow2").await?;
        args.take_port().map_err(BackendError::segment(&args.identity.name))?;
        let machine = snap.machine.clone();
        let mut qargs = machine_args(&machine, &args, &disk, ram);
        qargs.extend(["-S".into(), "-incoming".into(), "defer".into()]);
        let mut proc = QemuProcess::spawn(&args.identity.name, &args.dir, channels(&machine), t, &qargs).await?;
        args.attach_port(machine.devices.nic.then_some(args.identity.mac)).map_err(BackendError::segment(&args.identity.name))?;
        proc.init_migration().await?;
        set_migration(&mut proc, &machine, Phase::IncomingMigration).await?;
        Ok(Box::new(PendingQemu { proc, machine, args, disk, timeouts: *t }))
    }
}

#[async_trait]
impl Pending for PendingQemu {
    fn name(&self) -> &str {
        &self.args.identity.name
    }
    fn host_pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    async fn resume(self: Box<Self>, snap: &Snapshot) -> Result<Box<dyn Vm>, BackendError> {
        let PendingQemu { mut proc, machine, args, disk, timeouts: t } = *self;
        let Some(stream) = stream_of(snap) else {
            return Err(BackendError::WrongSnapshot { backend: BackendKind::Qemu, made_by: snap.backend });
        };
        let uri = migration_uri(&machine, stream, false);
        proc.qmp(Phase::IncomingMigration, "migrate-incoming", json!({ "uri": uri })).await?;
        if let Err(e) = proc.qmp_wait_migration(t.restore).await {
            return Err(proc.fail_qmp(Phase::IncomingMigration, t.restore, e).await);
        }
        proc.qmp(Phase::Resume, "cont", json!({})).await?;
        let agent = transport(&mut proc, &machine, Some(&snap.source));
        Ok(Box::new(QemuVm { proc, agent, notes: vec![], disk, machine, args, timeouts: t, snapshots: 0 }))
    }

    async fn destroy(self: Box<Self>) -> Result<(), BackendError> {
        self.proc.shutdown().await
    }
}

#[async_trait]
impl Vm for QemuVm {
    fn name(&self) -> &str {
        &self.args.identity.name
    }
    fn identity(&self) -> &HostIdentity {
        &self.args.identity
    }
    fn machine(&self) -> &Machine {
        &self.machine
    }
    fn agent(&mut self) -> Option<&mut dyn GuestAgent> {
        self.agent.agent()
    }
    fn console_tail(&self, lines: usize) -> String {
        self.proc.console_tail(lines)
    }
    fn notes(&self) -> Vec<String> {
        let mut n = self.notes.clone();
        if self.proc.console_capped() {
            n.push(crate::backend::console::capped_note(&self.args.identity.name));
        }
        n
    }
    fn disk(&self) -> &Path {
        &self.disk
    }
    fn forwards(&self) -> &std::collections::BTreeMap<String, u16> {
        &self.args.forwards
    }
    fn host(&self) -> String {
        crate::backend::local_hostname()
    }
    fn host_pid(&self) -> Option<u32> {
        self.proc.pid()
    }
    async fn destroy(self: Box<Self>) -> Result<(), BackendError> {
        self.proc.shutdown().await
    }
    async fn shutdown(self: Box<Self>, t: std::time::Duration) -> Result<bool, BackendError> {
        self.proc.power_off(t).await
    }
    fn snapshottable(&mut self) -> Option<&mut dyn Snapshottable> {
        Some(self)
    }
    fn nic_hotplug(&mut self) -> Option<&mut dyn NicHotplug> {
        Some(self)
    }
}

#[async_trait]
impl NicHotplug for QemuVm {
    async fn unplug_nic(&mut self) -> Result<(), BackendError> {
        let t = self.timeouts.snapshot;
        let p = &mut self.proc;
        p.qmp(Phase::Hotplug, "device_del", json!({ "id": "nic0" })).await?;
        // The guest must eject the device (ACPI hotplug) before QEMU reports it gone.
        if let Err(e) = p.qmp_wait_event("DEVICE_DELETED for nic0", t, |e| e["event"] == "DEVICE_DELETED" && e["data"]["device"] == "nic0").await {
            return Err(p.fail_qmp(Phase::Hotplug, t, e).await);
        }
        self.machine.devices.nic = false;
        Ok(())
    }

    async fn plug_nic(&mut self, mac: MacAddr) -> Result<(), BackendError> {
        let mut args = json!({ "driver": "virtio-net-pci", "id": "nic1", "mac": mac.to_string() });
        for kv in NIC_DEVICE.split(',').skip(1) {
            let (k, v) = kv.split_once('=').expect("key=value");
            args[k] = json!(v);
        }
        if self.args.segment.is_some() {
            // A new port of the segment for the new NIC; the old port stays, silent.
            let name = self.args.identity.name.clone();
            self.args.take_port().map_err(BackendError::segment(&name))?;
            let tap = self.args.port.as_ref().map(|p| p.tap.clone());
            self.proc.qmp(Phase::Hotplug, "netdev_add", json!({ "type": "tap", "id": "net1", "ifname": tap, "script": "no", "downscript": "no" })).await?;
            self.args.attach_port(Some(mac)).map_err(BackendError::segment(&name))?;
            args["netdev"] = json!("net1");
        } else if !self.args.forwards.is_empty() {
            // The new NIC gets a user network of its own. On the old one, slirp (whose state the
            // snapshot carried) still leases 10.0.2.15 to the source's MAC, so the new MAC would
            // get .16 while the forwards point at .15 (measured: ssh-keyscan got nothing).
            self.proc.qmp(Phase::Hotplug, "netdev_del", json!({ "id": "net0" })).await?;
            let hostfwd: Vec<serde_json::Value> = self
                .args
                .forwards
                .iter()
                .filter_map(|(svc, host)| self.machine.guest.services.get(svc).map(|g| json!({ "str": format!("tcp:127.0.0.1:{host}-:{g}") })))
                .collect();
            self.proc.qmp(Phase::Hotplug, "netdev_add", json!({ "type": "user", "id": "net1", "restrict": true, "hostfwd": hostfwd })).await?;
            args["netdev"] = json!("net1");
        }
        self.proc.qmp(Phase::Hotplug, "device_add", args).await?;
        self.machine.devices.nic = true;
        Ok(())
    }
}

#[async_trait]
impl Snapshottable for QemuVm {
    async fn snapshot(&mut self, dir: &Path) -> Result<Snapshot, BackendError> {
        let t = self.timeouts.snapshot;
        let name = self.args.identity.name.clone();
        let memory = dir.join(format!("{name}.mem"));
        // The stream is guest memory: create it 0600 before QEMU's `cat` writes into it.
        crate::secrets::create_private(&memory).map_err(BackendError::io(&name, format!("create {}", memory.display())))?;
        let frozen = self.disk.clone();
        self.snapshots += 1;
        let next = self.args.dir.join(format!("disk-after-snapshot-{}.qcow2", self.snapshots));
        let p = &mut self.proc;
        let mut steps = Vec::new();
        let mut lap = std::time::Instant::now();
        let mut step = |what: &'static str| {
            steps.push((what, lap.elapsed().as_secs_f64() * 1000.0));
            lap = std::time::Instant::now();
        };
        p.qmp(Phase::Snapshot, "stop", json!({})).await?;
        step("stop");
        p.qmp(Phase::Snapshot, "blockdev-snapshot-sync", json!({ "device": "drive0", "snapshot-file": next.display().to_string(), "format": "qcow2" })).await?;
        step("disk overlay");
        self.disk = next;
        let shared = self.machine.ram == Ram::Shared;
        set_migration(p, &self.machine, Phase::Snapshot).await?;
        let uri = migration_uri(&self.machine, &memory, true);
        p.qmp(Phase::Snapshot, "migrate", json!({ "uri": uri })).await?;
        if let Err(e) = p.qmp_wait_migration(t).await {
            // ENOSPC kills QEMU's `cat`, and QEMU only says "Broken pipe": name the full disk.
            let e = p.fail_qmp(Phase::Snapshot, t, e).await;
            return Err(e.or_disk_full(&name, Phase::Snapshot, dir));
        }
        step("migrate");
        // MIGRATION "completed" can arrive while the run state is still finish-migrate, when
        // `cont` is refused ("Migration is not finalized yet"): wait for postmigrate first.
        for _ in 0..500 {
            let st = p.qmp(Phase::Snapshot, "query-status", json!({})).await?;
            if st["status"] != "finish-migrate" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        step("finalize");
        let artifacts = if shared {
            // A frozen template: if it ran on, its writes would reach the file its clones map.
            self.notes.push("the source's RAM is the clones' shared RAM file: it stayed paused after the snapshot, a frozen template".into());
            vec![
                Artifact { kind: ArtifactKind::DeviceState, path: memory, host_bytes: None },
                Artifact { kind: ArtifactKind::RamFile, path: self.args.dir.join(RAM_FILE), host_bytes: None },
                Artifact { kind: ArtifactKind::FrozenDisk, path: frozen, host_bytes: None },
            ]
        } else {
            // The source goes on running (QEMU re-activates its block devices on `cont`).
            p.qmp(Phase::Resume, "cont", json!({})).await?;
            vec![Artifact { kind: ArtifactKind::MemoryStream, path: memory, host_bytes: None }, Artifact { kind: ArtifactKind::FrozenDisk, path: frozen, host_bytes: None }]
        };
        Ok(Snapshot {
            backend: BackendKind::Qemu,
            machine: self.machine.clone(),
            source: SourceRecord {
                identity: self.args.identity.clone(),
                dir: self.args.dir.clone(),
                probe: self.agent.probe_state(),
                agent: !matches!(self.agent, Transport::None),
            },
            artifacts,
            steps,
            private: Arc::new(()),
        })
    }
}

/// Quote a path for the `/bin/sh -c` that QEMU's `exec:` migration runs.
fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_survives_quotes_and_spaces() {
        assert_eq!(shell_quote(Path::new("/a b/it's")), r"'/a b/it'\''s'");
    }
}
