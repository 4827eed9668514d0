//! The QEMU backend: QEMU 7.2 driven directly over QMP, no libvirt.
//!
//! Snapshot (measured in FACTS.md): `stop`, `blockdev-snapshot-sync` (the disk is frozen at the
//! same instant; the source continues on a new overlay), `migrate` to `exec:cat > FILE` (QEMU 7.2
//! has no `file:` URI; it arrived in 8.2), wait for the `MIGRATION` event, `cont`.
//! Restore: the snapshot's machine plus the clone's fresh identity, `-S -incoming defer`,
//! `migrate-incoming exec:cat FILE`, wait for `MIGRATION completed`, `cont`. This is the sequence
//! Kata Containers' VM templating uses (`-incoming defer`, `migrate-incoming exec:cat`).

pub mod process;
pub mod qmp;
pub mod reap;

use super::capability::{Capabilities, Capability};
use super::emulator;
use super::error::BackendError;
use super::lifecycle::{Phase, Timeouts};
use super::snapshot::{Artifact, ArtifactKind, CloneArgs, Machine, Snapshot, SourceRecord};
use super::{vm_disk, Backend, NicHotplug, Restore, Snapshottable, Vm};
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
    Capability::DirectKernelBoot,
    Capability::DiskBoot,
    Capability::SerialProbe,
    Capability::QemuGuestAgent,
    Capability::LiveSnapshot,
    Capability::NicHotplug,
    Capability::Vmgenid,
];

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

/// The NIC: virtio-net on the hub, in a fixed slot, without an option ROM.
const NIC_DEVICE: &str = "virtio-net-pci,netdev=net0,romfile=,addr=0x5";

/// QEMU's arguments for `machine` with identity `id`. A clone is started with its snapshot's
/// machine, so its devices are the source's by construction.
fn machine_args(machine: &Machine, args: &CloneArgs, disk: &Path) -> Vec<String> {
    let id = &args.identity;
    let mut a: Vec<String> = vec![
        "-name".into(),
        format!("{},process={}", id.name, id.name),
        "-machine".into(),
        "pc".into(),
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
    if let Boot::DirectKernel { kernel, initrd, .. } = &machine.guest.boot {
        a.extend(["-kernel".into(), kernel.display().to_string(), "-initrd".into(), initrd.display().to_string()]);
        a.extend(["-append".into(), machine.cmdline().unwrap_or_default()]);
    }
    // ttyS0: the console, to a file.
    a.extend(["-serial".into(), format!("file:{}", args.dir.join("console.log").display())]);
    match machine.guest.agent {
        AgentTransport::SerialProbe => {
            // ttyS1: the probe channel (QEMU connects to our socket).
            a.extend([
                "-chardev".into(),
                format!("socket,id=probe,path={}", args.dir.join("probe.sock").display()),
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
                format!("socket,id=probe,path={}", args.dir.join("probe.sock").display()),
                "-device".into(),
                format!("virtserialport,bus=vser0.0,nr=2,chardev=probe,name={}", crate::agent::qga::PROBE_PORT),
                "-chardev".into(),
                format!("socket,id=qga,path={}", args.dir.join("qga.sock").display()),
                "-device".into(),
                "virtserialport,bus=vser0.0,nr=1,chardev=qga,name=org.qemu.guest_agent.0".into(),
            ]);
        }
        AgentTransport::None => {}
    }
    a.extend([
        "-chardev".into(),
        format!("socket,id=qmp,path={}", args.dir.join("qmp.sock").display()),
        "-mon".into(),
        "chardev=qmp,mode=control".into(),
        "-drive".into(),
        // discard=unmap: a guest fstrim frees clusters in the overlay (remanence mitigation).
        format!("if=none,id=drive0,file={},format=qcow2,discard=unmap", disk.display()),
        "-device".into(),
        // Fixed PCI slots: a clone started without the NIC (nic-replug) keeps every other
        // device where the migration stream expects it.
        format!("virtio-blk-pci,id=blk0,drive=drive0,serial={},addr=0x4", id.disk_serial.as_str()),
        "-netdev".into(),
        netdev(machine, args),
        "-uuid".into(),
        id.uuid.to_string(),
    ]);
    if machine.devices.nic {
        // romfile= drops the iPXE option ROM (not installed, and slow to run under TCG).
        a.push("-device".into());
        a.push(format!("{},id=nic0,mac={}", NIC_DEVICE, id.mac));
    }
    if machine.devices.seed {
        // cloud-init's NoCloud seed (a `cidata` ISO the harness wrote), read-only, in a fixed slot.
        a.push("-drive".into());
        a.push(format!("if=none,id=seed,file={},format=raw,readonly=on", args.dir.join("seed.iso").display()));
        a.push("-device".into());
        a.push("virtio-blk-pci,id=blk1,drive=seed,addr=0x7".into());
    }
    if machine.devices.vmgenid {
        // QEMU writes this guid into guest memory on load and notifies the guest (FACTS.md).
        let genid = id.vmgenid.map(|g| g.to_string()).unwrap_or_else(|| "auto".into());
        a.push("-device".into());
        a.push(format!("vmgenid,id=vmgenid0,guid={genid}"));
    }
    a
}

/// The NIC's network. Without forwarded services: a hub with no other port (the NIC exists, but no
/// packet can leave the VM). With them: QEMU's user network with `restrict=on`, which isolates the
/// guest from the host and the outside (it can reach nothing) while the host reaches each
/// service through a forward on 127.0.0.1 (FACTS.md: ssh-keyscan through such a forward works).
fn netdev(machine: &Machine, args: &CloneArgs) -> String {
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
    match machine.guest.agent {
        AgentTransport::SerialProbe => Channels { probe: true, qga: false },
        AgentTransport::Qga => Channels { probe: true, qga: true },
        AgentTransport::None => Channels { probe: false, qga: false },
    }
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
        Capabilities::of(CAPABILITIES)
    }

    fn versions(&self) -> Vec<Vmm> {
        vec![Vmm { name: "qemu".into(), version: emulator::qemu_version_number().unwrap_or_else(|| "unknown".into()) }]
    }

    fn reap_stale(&self) -> Vec<String> {
        reap::reap_stale().into_iter().map(|v| format!("killed a leftover VM {} (pid {}) of a dead run", v.name, v.pid)).collect()
    }

    async fn boot(&self, machine: &Machine, args: CloneArgs, t: &Timeouts) -> Result<Box<dyn Vm>, BackendError> {
        let disk = vm_disk(&args, &machine.guest.disk, &machine.guest.disk_format).await?;
        let qargs = machine_args(machine, &args, &disk);
        let mut proc = QemuProcess::spawn(&args.identity.name, &args.dir, channels(machine), t, &qargs).await?;
        proc.init_migration().await?;
        let mut agent = transport(&mut proc, machine, None);
        let mut notes = Vec::new();
        if let Some(a) = agent.agent() {
            match super::wait_agent(a, machine.guest.optional, args.forwards.get("ssh").copied(), t.boot).await {
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
}

#[async_trait]
impl Restore for QemuBackend {
    async fn restore(&self, snap: &Snapshot, args: CloneArgs, t: &Timeouts) -> Result<Box<dyn Vm>, BackendError> {
        if snap.backend != BackendKind::Qemu {
            return Err(BackendError::WrongSnapshot { backend: BackendKind::Qemu, made_by: snap.backend });
        }
        let (Some(stream), Some(frozen)) = (snap.artifact(ArtifactKind::MemoryStream), snap.artifact(ArtifactKind::FrozenDisk)) else {
            return Err(BackendError::WrongSnapshot { backend: BackendKind::Qemu, made_by: snap.backend });
        };
        // Clones get their own overlay on the frozen disk: no two VMs share a writable image.
        let disk = vm_disk(&args, frozen, "qcow2").await?;
        let machine = snap.machine.clone();
        let mut qargs = machine_args(&machine, &args, &disk);
        qargs.extend(["-S".into(), "-incoming".into(), "defer".into()]);
        let mut proc = QemuProcess::spawn(&args.identity.name, &args.dir, channels(&machine), t, &qargs).await?;
        proc.init_migration().await?;
        let uri = format!("exec:cat {}", shell_quote(stream));
        proc.qmp(Phase::IncomingMigration, "migrate-incoming", json!({ "uri": uri })).await?;
        if let Err(e) = proc.qmp_wait_migration(t.restore).await {
            return Err(proc.fail_qmp(Phase::IncomingMigration, t.restore, e).await);
        }
        proc.qmp(Phase::Resume, "cont", json!({})).await?;
        let agent = transport(&mut proc, &machine, Some(&snap.source));
        Ok(Box::new(QemuVm { proc, agent, notes: vec![], disk, machine, args, timeouts: *t, snapshots: 0 }))
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
        self.notes.clone()
    }
    fn disk(&self) -> &Path {
        &self.disk
    }
    fn forwards(&self) -> &std::collections::BTreeMap<String, u16> {
        &self.args.forwards
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
        if !self.args.forwards.is_empty() {
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
        p.qmp(Phase::Snapshot, "stop", json!({})).await?;
        p.qmp(Phase::Snapshot, "blockdev-snapshot-sync", json!({ "device": "drive0", "snapshot-file": next.display().to_string(), "format": "qcow2" })).await?;
        self.disk = next;
        let uri = format!("exec:cat > {}", shell_quote(&memory));
        p.qmp(Phase::Snapshot, "migrate", json!({ "uri": uri })).await?;
        if let Err(e) = p.qmp_wait_migration(t).await {
            // ENOSPC kills QEMU's `cat`, and QEMU only says "Broken pipe": name the full disk.
            let e = p.fail_qmp(Phase::Snapshot, t, e).await;
            return Err(e.or_disk_full(&name, Phase::Snapshot, dir));
        }
        // MIGRATION "completed" can arrive while the run state is still finish-migrate, when
        // `cont` is refused ("Migration is not finalized yet"): wait for postmigrate first.
        for _ in 0..500 {
            let st = p.qmp(Phase::Snapshot, "query-status", json!({})).await?;
            if st["status"] != "finish-migrate" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // The source goes on running (QEMU re-activates its block devices on `cont`).
        p.qmp(Phase::Resume, "cont", json!({})).await?;
        Ok(Snapshot {
            backend: BackendKind::Qemu,
            machine: self.machine.clone(),
            source: SourceRecord {
                identity: self.args.identity.clone(),
                dir: self.args.dir.clone(),
                probe: self.agent.probe_state(),
                agent: !matches!(self.agent, Transport::None),
            },
            artifacts: vec![Artifact { kind: ArtifactKind::MemoryStream, path: memory }, Artifact { kind: ArtifactKind::FrozenDisk, path: frozen }],
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
