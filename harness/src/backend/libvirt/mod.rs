//! The libvirt backend: the same VMs as the QEMU backend, driven through libvirtd with the
//! `virt` crate (blocking calls, run on tokio's blocking pool).
//!
//! libvirt refuses to restore a save image under a new identity, on purpose: its restore checks
//! that name, UUID, MAC and genid match the image (`Target domain uuid X does not match source Y`,
//! libvirt src/conf/domain_conf.c, virDomainDefCheckABIStability and qemuSaveImageUpdateDef). So
//! each clone is made in two steps, and both are recorded:
//! 1. libvirt's own route, `virDomainRestoreFlags(image, dxml-with-new-identity)`, once per
//!    snapshot; its refusal goes into the report as evidence;
//! 2. the engine rewrites the domain XML *inside the save image* ([`save_image`]), within the
//!    slack libvirt left, and restores with no dxml. The memory stream is never copied: clones
//!    are restored one after another from the one image, whose XML is rewritten before each.

pub mod domain;
pub mod save_image;

use super::{io_err, vm_disk, Backend, BackendError, BackendKind, Phase, Snapshot, Vm, VmSpec};
use crate::identity::{HostIdentity, NAME_PREFIX};
use crate::probes::ProbeChannel;
use async_trait::async_trait;
use save_image::SaveImage;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;
use virt::connect::Connect;
use virt::sys;

pub const DEFAULT_URI: &str = "qemu:///system";

/// How a running domain is snapshotted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotMode {
    /// External memory snapshot, LIVE: the source keeps running on a new disk overlay.
    #[default]
    External,
    /// `virDomainSaveFlags`: suspend and clone; the source stops.
    Save,
}

pub struct LibvirtBackend {
    conn: Arc<Connect>,
    pub mode: SnapshotMode,
    /// Clones of one image are restored one at a time: its XML is rewritten for each. The map
    /// keeps each image's XML as the source wrote it, which every rewrite starts from.
    restore_lock: tokio::sync::Mutex<std::collections::HashMap<PathBuf, String>>,
}

fn verr(what: &str) -> impl FnOnce(virt::error::Error) -> BackendError + '_ {
    move |e| BackendError::Other(format!("libvirt: {what}: {}", e.message()))
}

async fn blocking<T: Send + 'static>(
    vm: &str,
    phase: Phase,
    t: Duration,
    f: impl FnOnce() -> Result<T, BackendError> + Send + 'static,
) -> Result<T, BackendError> {
    match tokio::time::timeout(t, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(BackendError::Other(format!("{vm}: libvirt call panicked: {e}"))),
        Err(_) => Err(BackendError::Timeout { vm: vm.into(), phase, after: t, console_tail: String::new() }),
    }
}

impl LibvirtBackend {
    /// Connect (libvirt's default error printing to stderr is switched off first).
    pub fn connect(uri: &str, mode: SnapshotMode) -> Result<Self, String> {
        virt::error::clear_error_callback();
        let conn = Connect::open(Some(uri)).map_err(|e| format!("cannot connect to {uri}: {} (is libvirtd running? ci/start-libvirt.sh starts it)", e.message()))?;
        Ok(LibvirtBackend { conn: Arc::new(conn), mode, restore_lock: Default::default() })
    }

    /// Destroy `clonesafe-<pid>-…` domains whose harness `<pid>` is gone. Returns their names.
    pub fn reap_stale(&self) -> Vec<String> {
        let me = std::process::id();
        let mut out = Vec::new();
        for d in self.conn.list_all_domains(0).unwrap_or_default() {
            let Ok(name) = d.name() else { continue };
            let Some(owner) = name.strip_prefix(NAME_PREFIX).and_then(|r| r.split('-').next()).and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if owner != me && !Path::new(&format!("/proc/{owner}")).exists() {
                if d.is_active().unwrap_or(false) {
                    let _ = d.destroy();
                }
                if d.is_persistent().unwrap_or(false) {
                    let _ = d.undefine();
                }
                out.push(name);
            }
        }
        out
    }

    /// Names of the clonesafe domains libvirt knows, running or not.
    pub fn clonesafe_domains(&self) -> Vec<String> {
        self.conn.list_all_domains(0).unwrap_or_default().iter().filter_map(|d| d.name().ok()).filter(|n| n.starts_with(NAME_PREFIX)).collect()
    }

    /// Start the domain with `start`, accept the probe's connection, return the VM.
    async fn launch(
        &self,
        spec: &VmSpec,
        disk: PathBuf,
        vmgenid_device: bool,
        nic: bool,
        start: impl FnOnce(Arc<Connect>) -> Result<(), BackendError> + Send + 'static,
        phase: Phase,
    ) -> Result<LibvirtVm, BackendError> {
        let probe_path = spec.dir.join("probe.sock");
        let _ = std::fs::remove_file(&probe_path);
        let listener = UnixListener::bind(&probe_path).map_err(io_err(format!("bind {}", probe_path.display())))?;
        let name = spec.identity.name.clone();
        let conn = self.conn.clone();
        let t = match phase {
            Phase::IncomingMigration => spec.timeouts.restore,
            _ => spec.timeouts.start,
        };
        let started = blocking(&name, phase, t, move || start(conn)).await;
        // From here on the domain may exist: the guard destroys it on every error path.
        let mut vm = LibvirtVm {
            conn: self.conn.clone(),
            probe: None,
            disk,
            vmgenid_device,
            spec: spec.clone(),
            snapshots: 0,
            alive: true,
            notes: vec![],
            mode: self.mode,
            current_mac: nic.then_some(spec.identity.mac),
        };
        if let Err(e) = started {
            vm.alive = false;
            return Err(e);
        }
        match tokio::time::timeout(spec.timeouts.start, listener.accept()).await {
            Ok(Ok((s, _))) => vm.probe = Some(ProbeChannel::new(s)),
            Ok(Err(e)) => return Err(BackendError::Io { what: format!("{name}: accept the probe connection"), source: e }),
            Err(_) => return Err(BackendError::Timeout { vm: name, phase: Phase::Start, after: spec.timeouts.start, console_tail: vm.console_tail(20) }),
        }
        Ok(vm)
    }
}

#[async_trait]
impl Backend for LibvirtBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Libvirt
    }

    async fn boot(&self, spec: VmSpec) -> Result<Box<dyn Vm>, BackendError> {
        let disk = vm_disk(&spec, &spec.guest.disk).await?;
        let vmgenid = spec.identity.vmgenid.is_some();
        let xml = domain::domain_xml(&spec, &disk, vmgenid);
        let start = move |c: Arc<Connect>| c.create_domain_xml(&xml, 0).map(drop).map_err(verr("create domain"));
        let mut vm = self.launch(&spec, disk, vmgenid, true, start, Phase::Start).await?;
        let t = spec.timeouts.boot;
        if let Err(e) = vm.probe().wait_ready(t).await {
            let tail = vm.console_tail(20);
            return Err(match e {
                crate::probes::ProbeError::Timeout(..) => BackendError::Timeout { vm: vm.spec.identity.name.clone(), phase: Phase::Boot, after: t, console_tail: tail },
                e => BackendError::Probe { vm: vm.spec.identity.name.clone(), phase: Phase::Boot, console_tail: tail, source: e },
            });
        }
        Ok(Box::new(vm))
    }

    async fn restore(&self, snap: &Snapshot, spec: VmSpec) -> Result<Box<dyn Vm>, BackendError> {
        let disk = vm_disk(&spec, &snap.disk).await?;
        let mut originals = self.restore_lock.lock().await;
        let image = snap.memory.clone();
        let name = spec.identity.name.clone();
        if !originals.contains_key(&image) {
            let img = SaveImage::read(&image).map_err(|e| BackendError::Other(format!("{}: {e}", image.display())))?;
            originals.insert(image.clone(), img.xml);
        }
        let source_xml = originals[&image].clone();
        let mut notes = Vec::new();

        // 1. libvirt's own route, once per snapshot, with the identity in dxml.
        if !snap.libvirt_tried.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let dxml = domain::rewrite_identity(&source_xml, &snap.source_identity, &snap.source_dir, &spec.identity, &spec.dir, snap.nic).map_err(BackendError::Other)?;
            let conn = self.conn.clone();
            let img = image.display().to_string();
            let r = blocking(&name, Phase::IncomingMigration, spec.timeouts.restore, move || {
                Ok(conn.restore_domain_flags(&img, Some(&dxml), sys::VIR_DOMAIN_SAVE_PAUSED))
            })
            .await?;
            match r {
                Err(e) => notes.push(format!(
                    "libvirt refused to restore the image under a new identity: \"{}\"; the engine rewrote the domain XML inside the save image instead (name, UUID, MAC, disk serial, disk overlay, console and probe paths; the memory stream untouched) and restored that",
                    e.message()
                )),
                Ok(()) => {
                    // Not expected with libvirt 9.0; if it ever happens, remove that domain and
                    // carry on the documented way, saying so.
                    if let Ok(d) = self.conn.lookup_domain_by_name(&name) {
                        let _ = d.destroy();
                    }
                    notes.push("libvirt accepted a restore under a new identity through dxml".into());
                }
            }
        }

        // 2. Rewrite the XML in the image and restore it as is.
        let xml = domain::rewrite_identity(&source_xml, &snap.source_identity, &snap.source_dir, &spec.identity, &spec.dir, snap.nic).map_err(BackendError::Other)?;
        SaveImage::rewrite_xml(&image, &xml).map_err(|e| BackendError::Other(format!("{}: {e}", image.display())))?;
        let img = image.display().to_string();
        let start = move |c: Arc<Connect>| c.restore_domain_flags(&img, None, sys::VIR_DOMAIN_SAVE_PAUSED).map_err(verr("restore the rewritten image"));
        let mut vm = self.launch(&spec, disk, snap.vmgenid_device, snap.nic, start, Phase::IncomingMigration).await?;
        if snap.vmgenid_device {
            // libvirt's source says it regenerates <genid> on restore (qemuProcessGenID); record
            // what it did. The vmgenid check shows what the guest made of it.
            let before = save_image::DomainSummary::of(&xml).ok().and_then(|d| d.genid);
            let after = vm.genid();
            notes.push(match (before, after) {
                (Some(b), Some(a)) if a != b => format!("libvirt regenerated <genid> on restore by itself (image {b}, domain now {a})"),
                (b, a) => format!("libvirt kept <genid> on restore (image {b:?}, domain {a:?})"),
            });
        }
        vm.notes = notes;
        vm.on_domain(Phase::Resume, spec.timeouts.start, |d| d.resume().map_err(verr("resume"))).await?;
        Ok(Box::new(vm))
    }
}

pub struct LibvirtVm {
    conn: Arc<Connect>,
    probe: Option<ProbeChannel>,
    disk: PathBuf,
    vmgenid_device: bool,
    spec: VmSpec,
    snapshots: u32,
    /// False once the domain is gone (destroyed, or stopped by a save).
    alive: bool,
    notes: Vec<String>,
    mode: SnapshotMode,
    /// The MAC of the NIC the domain has now, if any.
    current_mac: Option<crate::identity::MacAddr>,
}

impl LibvirtVm {
    /// Run `f` on this VM's domain, on the blocking pool, bounded by `t`. The future does not
    /// borrow `self` (a `LibvirtVm` is not `Sync`, and the backend's futures must be `Send`).
    fn on_domain<T: Send + 'static>(
        &self,
        phase: Phase,
        t: Duration,
        f: impl FnOnce(&virt::domain::Domain) -> Result<T, BackendError> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T, BackendError>> + Send + 'static {
        let (conn, name) = (self.conn.clone(), self.spec.identity.name.clone());
        async move {
            let vm = name.clone();
            blocking(&vm, phase, t, move || f(&conn.lookup_domain_by_name(&name).map_err(verr("look up domain"))?)).await
        }
    }

    fn destroy_now(&mut self) {
        if std::mem::take(&mut self.alive) {
            if let Ok(d) = self.conn.lookup_domain_by_name(&self.spec.identity.name) {
                let _ = d.destroy();
            }
        }
    }

    /// The domain's genid as libvirt reports it now.
    pub fn genid(&self) -> Option<String> {
        let d = self.conn.lookup_domain_by_name(&self.spec.identity.name).ok()?;
        save_image::DomainSummary::of(&d.xml_desc(0).ok()?).ok()?.genid
    }
}

impl Drop for LibvirtVm {
    fn drop(&mut self) {
        // Errors, panics and Ctrl-C all land here: never leave a domain behind.
        self.destroy_now();
    }
}

#[async_trait]
impl Vm for LibvirtVm {
    fn name(&self) -> &str {
        &self.spec.identity.name
    }
    fn identity(&self) -> &HostIdentity {
        &self.spec.identity
    }
    fn probe(&mut self) -> &mut ProbeChannel {
        self.probe.as_mut().expect("a launched VM has a probe channel")
    }
    fn console_tail(&self, lines: usize) -> String {
        super::qemu::read_tail(&self.spec.dir.join("console.log"), lines)
    }
    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }
    fn disk(&self) -> &Path {
        &self.disk
    }

    async fn unplug_nic(&mut self) -> Result<(), BackendError> {
        let xml = domain::interface_xml(&self.current_mac.expect("a NIC to unplug"));
        self.on_domain(Phase::Snapshot, self.spec.timeouts.snapshot, move |d| {
            d.detach_device_flags(&xml, sys::VIR_DOMAIN_AFFECT_LIVE).map_err(verr("detach the NIC"))?;
            // libvirt returns once QEMU reports DEVICE_DELETED, or after its own wait; confirm.
            for _ in 0..300 {
                let live = d.xml_desc(0).map_err(verr("read domain XML"))?;
                if !live.contains("<interface") {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(BackendError::Other("libvirt: the guest did not release its NIC within 30 s".into()))
        })
        .await?;
        self.current_mac = None;
        Ok(())
    }

    async fn plug_nic(&mut self, mac: crate::identity::MacAddr) -> Result<(), BackendError> {
        let xml = domain::interface_xml(&mac);
        self.on_domain(Phase::Resume, self.spec.timeouts.start, move |d| {
            d.attach_device_flags(&xml, sys::VIR_DOMAIN_AFFECT_LIVE).map_err(verr("attach a NIC"))
        })
        .await?;
        self.current_mac = Some(mac);
        Ok(())
    }

    async fn snapshot(&mut self, dir: &Path) -> Result<Snapshot, BackendError> {
        self.snapshots += 1;
        let name = self.spec.identity.name.clone();
        let memory = dir.join(format!("{name}.save"));
        let frozen = self.disk.clone();
        let t = self.spec.timeouts.snapshot;
        let mem = memory.display().to_string();
        let mut note = String::new();
        match self.mode {
            SnapshotMode::External => {
                let next = self.spec.dir.join(format!("disk-after-snapshot-{}.qcow2", self.snapshots));
                let xml = format!(
                    "<domainsnapshot><name>clonesafe-{}</name><memory snapshot='external' file='{}'/><disks><disk name='vda' snapshot='external'><source file='{}'/></disk></disks></domainsnapshot>",
                    self.snapshots, mem, next.display()
                );
                self.on_domain(Phase::Snapshot, t, move |d| {
                    d.create_snapshot_xml(&xml, sys::VIR_DOMAIN_SNAPSHOT_CREATE_LIVE | sys::VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA)
                        .map(drop)
                        .map_err(verr("external memory snapshot"))
                })
                .await?;
                self.disk = next;
            }
            SnapshotMode::Save => {
                self.on_domain(Phase::Snapshot, t, move |d| {
                    let p = std::ffi::CString::new(mem).map_err(|e| BackendError::Other(e.to_string()))?;
                    // SAFETY: d is a live domain handle; virt 0.5 has no safe wrapper for
                    // virDomainSaveFlags. NULL dxml keeps the domain's own XML.
                    let r = unsafe { sys::virDomainSaveFlags(d.as_ptr(), p.as_ptr(), std::ptr::null(), 0) };
                    if r < 0 {
                        return Err(BackendError::Other(format!("libvirt: save: {}", virt::error::Error::last_error().message())));
                    }
                    Ok(())
                })
                .await?;
                // The domain stopped when libvirt saved it.
                self.alive = false;
                note = "suspend and clone: the source domain stopped when it was saved".into();
            }
        }
        // The image holds guest memory: make sure it is private whatever libvirt's umask was.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&memory, std::fs::Permissions::from_mode(0o600)).map_err(io_err(format!("chmod {}", memory.display())))?;
        if !note.is_empty() {
            self.notes.push(note);
        }
        Ok(Snapshot {
            source: name,
            memory,
            disk: frozen,
            memory_mib: self.spec.memory_mib,
            accel: self.spec.accel,
            vmgenid_device: self.vmgenid_device,
            nic: self.current_mac.is_some(),
            source_identity: self.spec.identity.clone(),
            source_dir: self.spec.dir.clone(),
            libvirt_tried: Default::default(),
        })
    }

    async fn destroy(mut self: Box<Self>) -> Result<(), BackendError> {
        if std::mem::take(&mut self.alive) {
            let (conn, name) = (self.conn.clone(), self.spec.identity.name.clone());
            blocking(&name.clone(), Phase::Shutdown, Duration::from_secs(30), move || match conn.lookup_domain_by_name(&name) {
                // Already gone (stopped by a save outside clonesafe, or crashed): nothing to do.
                Err(_) => Ok(()),
                Ok(d) => d.destroy().map_err(verr("destroy")),
            })
            .await?;
        }
        Ok(())
    }
}
