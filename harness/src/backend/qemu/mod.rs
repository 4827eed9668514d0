//! The QEMU backend: QEMU 7.2 driven directly over QMP, no libvirt.
//!
//! Snapshot (measured in FACTS.md): `stop`, `blockdev-snapshot-sync` (the disk is frozen at the
//! same instant; the source continues on a new overlay), `migrate` to `exec:cat > FILE` (QEMU 7.2
//! has no `file:` URI; it arrived in 8.2), wait for the `MIGRATION` event, `cont`.
//! Restore: the same devices plus a fresh identity, `-S -incoming defer`, `migrate-incoming
//! exec:cat FILE`, wait for `MIGRATION completed`, `cont`. This is the sequence Kata Containers'
//! VM templating uses (`-incoming defer`, `migrate-incoming exec:cat`).

mod process;

pub use process::read_tail;
mod qmp;

pub use qmp::{Qmp, QmpError};

use super::{vm_disk, Accel, Backend, BackendError, BackendKind, Phase, Snapshot, Vm, VmSpec};
use crate::identity::HostIdentity;
use crate::probes::ProbeChannel;
use async_trait::async_trait;
use process::QemuProcess;
use serde_json::json;
use std::path::{Path, PathBuf};

/// The QEMU binary: `CLONESAFE_QEMU` or `qemu-system-x86_64` on PATH.
pub fn qemu_binary() -> PathBuf {
    std::env::var_os("CLONESAFE_QEMU").map(PathBuf::from).unwrap_or_else(|| "qemu-system-x86_64".into())
}

#[derive(Debug, Default)]
pub struct QemuBackend;

pub struct QemuVm {
    proc: QemuProcess,
    spec: VmSpec,
    /// The overlay this VM writes to now.
    disk: PathBuf,
    vmgenid_device: bool,
    snapshots: u32,
    /// Whether the VM has a NIC now.
    nic: bool,
}

/// The NIC: virtio-net on the hub, in a fixed slot, without an option ROM.
const NIC_DEVICE: &str = "virtio-net-pci,netdev=net0,romfile=,addr=0x5";

/// Arguments that describe the machine. A clone must use the same ones as its source, or the
/// migration stream will not load.
fn machine_args(spec: &VmSpec, disk: &Path, vmgenid_device: bool, nic: bool) -> Vec<String> {
    let id = &spec.identity;
    let mut a: Vec<String> = vec![
        "-name".into(),
        format!("{},process={}", id.name, id.name),
        "-machine".into(),
        "pc".into(),
        "-accel".into(),
        spec.accel.qemu_name().into(),
        "-cpu".into(),
        spec.accel.cpu_model().into(),
        "-m".into(),
        format!("{}M", spec.memory_mib),
        "-smp".into(),
        "1".into(),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        "-no-reboot".into(),
        "-kernel".into(),
        spec.guest.kernel.display().to_string(),
        "-initrd".into(),
        spec.guest.initrd.display().to_string(),
        "-append".into(),
        spec.guest.cmdline.clone(),
        // ttyS0: console to a file; ttyS1: the probe channel (QEMU connects to our socket).
        "-serial".into(),
        format!("file:{}", spec.dir.join("console.log").display()),
        "-chardev".into(),
        format!("socket,id=probe,path={}", spec.dir.join("probe.sock").display()),
        "-serial".into(),
        "chardev:probe".into(),
        "-chardev".into(),
        format!("socket,id=qmp,path={}", spec.dir.join("qmp.sock").display()),
        "-mon".into(),
        "chardev=qmp,mode=control".into(),
        "-drive".into(),
        // discard=unmap: a guest fstrim frees clusters in the overlay (remanence mitigation).
        format!("if=none,id=drive0,file={},format=qcow2,discard=unmap", disk.display()),
        "-device".into(),
        // Fixed PCI slots: a clone started without the NIC (nic-replug) keeps every other
        // device where the migration stream expects it.
        format!("virtio-blk-pci,id=blk0,drive=drive0,serial={},addr=0x4", id.disk_serial.as_str()),
        // A hub with no other port: the NIC exists, but no packet can leave the VM.
        "-netdev".into(),
        "hubport,id=net0,hubid=0".into(),
        "-uuid".into(),
        id.uuid.to_string(),
    ];
    if nic {
        // romfile= drops the iPXE option ROM (not installed, and slow to run under TCG).
        a.push("-device".into());
        a.push(format!("{},id=nic0,mac={}", NIC_DEVICE, id.mac));
    }
    if vmgenid_device {
        // QEMU writes this guid into guest memory on load and notifies the guest (FACTS.md).
        let genid = id.vmgenid.map(|g| g.to_string()).unwrap_or_else(|| "auto".into());
        a.push("-device".into());
        a.push(format!("vmgenid,id=vmgenid0,guid={genid}"));
    }
    a
}

#[async_trait]
impl Backend for QemuBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Qemu
    }

    async fn boot(&self, spec: VmSpec) -> Result<Box<dyn Vm>, BackendError> {
        let disk = vm_disk(&spec, &spec.guest.disk).await?;
        let vmgenid_device = spec.identity.vmgenid.is_some();
        let args = machine_args(&spec, &disk, vmgenid_device, true);
        let mut proc = QemuProcess::spawn(&spec, &args).await?;
        proc.init_migration().await?;
        let timeout = spec.timeouts.boot;
        let ready = proc.probe.wait_ready(timeout).await;
        if let Err(e) = ready {
            return Err(proc.fail(Phase::Boot, timeout, e).await);
        }
        Ok(Box::new(QemuVm { proc, disk, spec, vmgenid_device, snapshots: 0, nic: true }))
    }

    async fn restore(&self, snap: &Snapshot, mut spec: VmSpec) -> Result<Box<dyn Vm>, BackendError> {
        // Clones get their own overlay on the frozen disk: no two VMs share a writable image.
        let disk = vm_disk(&spec, &snap.disk).await?;
        spec.memory_mib = snap.memory_mib;
        spec.accel = snap.accel;
        let mut args = machine_args(&spec, &disk, snap.vmgenid_device, snap.nic);
        args.extend(["-S".into(), "-incoming".into(), "defer".into()]);
        let mut proc = QemuProcess::spawn(&spec, &args).await?;
        proc.init_migration().await?;
        let uri = format!("exec:cat {}", shell_quote(&snap.memory));
        let t = spec.timeouts.restore;
        proc.qmp(Phase::IncomingMigration, "migrate-incoming", json!({ "uri": uri })).await?;
        if let Err(e) = proc.qmp_wait_migration(t).await {
            return Err(proc.fail_qmp(Phase::IncomingMigration, t, e).await);
        }
        proc.qmp(Phase::Resume, "cont", json!({})).await?;
        Ok(Box::new(QemuVm {
            proc,
            disk,
            vmgenid_device: snap.vmgenid_device,
            spec,
            snapshots: 0,
            nic: snap.nic,
        }))
    }
}

#[async_trait]
impl Vm for QemuVm {
    fn name(&self) -> &str {
        &self.spec.identity.name
    }
    fn identity(&self) -> &HostIdentity {
        &self.spec.identity
    }
    fn probe(&mut self) -> &mut ProbeChannel {
        &mut self.proc.probe
    }
    fn console_tail(&self, lines: usize) -> String {
        self.proc.console_tail(lines)
    }
    fn notes(&self) -> Vec<String> {
        vec![]
    }
    fn disk(&self) -> &Path {
        &self.disk
    }

    async fn unplug_nic(&mut self) -> Result<(), BackendError> {
        let t = self.spec.timeouts.snapshot;
        let p = &mut self.proc;
        p.qmp(Phase::Snapshot, "device_del", json!({ "id": "nic0" })).await?;
        // The guest must eject the device (ACPI hotplug) before QEMU reports it gone.
        if let Err(e) = p.qmp_wait_event("DEVICE_DELETED for nic0", t, |e| e["event"] == "DEVICE_DELETED" && e["data"]["device"] == "nic0").await {
            return Err(p.fail_qmp(Phase::Snapshot, t, e).await);
        }
        self.nic = false;
        Ok(())
    }

    async fn plug_nic(&mut self, mac: crate::identity::MacAddr) -> Result<(), BackendError> {
        let mut args = json!({ "driver": "virtio-net-pci", "id": "nic1", "mac": mac.to_string() });
        for kv in NIC_DEVICE.split(',').skip(1) {
            let (k, v) = kv.split_once('=').expect("key=value");
            args[k] = json!(v);
        }
        self.proc.qmp(Phase::Resume, "device_add", args).await?;
        self.nic = true;
        Ok(())
    }

    async fn snapshot(&mut self, dir: &Path) -> Result<Snapshot, BackendError> {
        let t = self.spec.timeouts.snapshot;
        let name = self.spec.identity.name.clone();
        let memory = dir.join(format!("{name}.mem"));
        // The stream is guest memory: create it 0600 before QEMU's `cat` writes into it.
        crate::secrets::create_private(&memory)?;
        let frozen = self.disk.clone();
        self.snapshots += 1;
        let next = self.spec.dir.join(format!("disk-after-snapshot-{}.qcow2", self.snapshots));
        let p = &mut self.proc;
        p.qmp(Phase::Snapshot, "stop", json!({})).await?;
        p.qmp(
            Phase::Snapshot,
            "blockdev-snapshot-sync",
            json!({ "device": "drive0", "snapshot-file": next.display().to_string(), "format": "qcow2" }),
        )
        .await?;
        self.disk = next;
        let uri = format!("exec:cat > {}", shell_quote(&memory));
        p.qmp(Phase::Snapshot, "migrate", json!({ "uri": uri })).await?;
        if let Err(e) = p.qmp_wait_migration(t).await {
            return Err(p.fail_qmp(Phase::Snapshot, t, e).await);
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
            source: name,
            memory,
            disk: frozen,
            memory_mib: self.spec.memory_mib,
            accel: self.spec.accel,
            vmgenid_device: self.vmgenid_device,
            nic: self.nic,
            source_identity: self.spec.identity.clone(),
            source_dir: self.spec.dir.clone(),
            libvirt_tried: Default::default(),
        })
    }

    async fn destroy(self: Box<Self>) -> Result<(), BackendError> {
        self.proc.shutdown().await
    }
}

/// Quote a path for the `/bin/sh -c` that QEMU's `exec:` migration runs.
fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

impl Accel {
    pub fn qemu_name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
    pub fn cpu_model(self) -> &'static str {
        match self {
            Accel::Kvm => "host",
            Accel::Tcg => "max",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_survives_quotes_and_spaces() {
        assert_eq!(shell_quote(Path::new("/a b/it's")), r"'/a b/it'\''s'");
    }
}
