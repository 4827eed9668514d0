//! The libvirt backend: the same VMs as the QEMU backend, driven through libvirtd with the
//! `virt` crate (blocking calls, run on tokio's blocking pool, bounded by a timeout).
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
//!
//! On `qemu:///system` the VMs' files are in the harness's run directory. With `run --connect
//! URI` ([`LibvirtBackend::connect_remote`]) the host may share no filesystem with the harness:
//! files are volumes of a pool made for the run, and consoles and probes are libvirt streams
//! ([`remote`]).

pub mod call;
pub mod domain;
pub mod error;
pub mod qga_wire;
pub mod remote;
pub mod save_image;
pub mod storage;

use crate::agent::qga::Qga;
use crate::agent::serial::ProbeChannel;
use crate::agent::transport::Transport;
use crate::agent::{AgentError, GuestAgent};
use crate::backend::capability::{Capabilities, Capability};
use crate::backend::error::BackendError;
pub use error::LibvirtError;
use crate::backend::lifecycle::{Phase, Timeouts};
use crate::backend::snapshot::{Artifact, ArtifactKind, CloneArgs, Machine, Snapshot, SourceRecord};
use crate::backend::{Backend, NicHotplug, Restore, Snapshottable, Vm};
use crate::guest::AgentTransport;
use crate::identity::{is_stale, HostIdentity, MacAddr, NAME_PREFIX};
use call::{blocking, lv, lv_src};
use remote::RunPool;
use async_trait::async_trait;
use clonesafe_metadata::{BackendKind, Vmm};
use save_image::SaveImage;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;
use virt::connect::Connect;
use virt::sys;

pub const DEFAULT_URI: &str = "qemu:///system";

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
    Capability::SegmentNetwork,
];

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
    /// Some for a host reached with `--connect`, which may share no filesystem with the
    /// harness: every file a VM needs is a volume of this run's pool there (remote.rs). What
    /// concerns the VMs' files goes through `storage`; this says the host is remote (ports,
    /// consoles and probes through streams, capabilities, the sweep).
    pool: Option<Arc<RunPool>>,
    /// Where the VMs' files are (storage.rs).
    storage: Arc<dyn storage::Storage>,
    /// Clones of one image are restored one at a time: its XML is rewritten for each. The map
    /// keeps each image as the source wrote it (header, XML, cookie), which every rewrite
    /// starts from.
    restore_lock: tokio::sync::Mutex<std::collections::HashMap<PathBuf, SaveImage>>,
}

/// What this backend keeps with a snapshot it made.
#[derive(Default)]
struct LibvirtSnapshot {
    /// Whether libvirt's own restore route was already tried (and refused) for this snapshot.
    tried: AtomicBool,
}

/// Whether this process ever connected to libvirt (else there is nothing to sweep).
static CONNECTED: AtomicBool = AtomicBool::new(false);
/// The URI this process connected to (the sweep after a run reconnects to it).
static URI: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// After a run ends in any way (Ctrl-C and SIGTERM included): wait (at most `wait`) for libvirt
/// calls still in flight, then destroy every domain this process named (`clonesafe-<pid>-`).
/// Returns one line per domain removed; nothing when the run never used libvirt.
pub fn sweep_own_domains(wait: Duration) -> Vec<String> {
    if !CONNECTED.load(Ordering::SeqCst) {
        return vec![];
    }
    let deadline = std::time::Instant::now() + wait;
    while call::in_flight() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let Ok(conn) = Connect::open(Some(URI.get().map(String::as_str).unwrap_or(DEFAULT_URI))) else { return vec![] };
    let mine = format!("{NAME_PREFIX}{}-", std::process::id());
    let mut out = Vec::new();
    for d in conn.list_all_domains(0).unwrap_or_default() {
        let Ok(name) = d.name() else { continue };
        if !name.starts_with(&mine) {
            continue;
        }
        if d.is_active().unwrap_or(false) {
            let _ = d.destroy();
        }
        if d.is_persistent().unwrap_or(false) {
            let _ = d.undefine();
        }
        out.push(format!("removed libvirt domain {name}, which a call still in flight created after teardown"));
    }
    // The run's pool, if the backend could not remove it (a domain still used a volume).
    let pool = remote::own_pool_name();
    out.extend(remote::sweep(&conn, |n| n == pool));
    out
}

impl LibvirtBackend {
    /// Whether the host's libvirt offers a TPM 2.0 CRB on its swtpm emulator backend (its
    /// domain capabilities list them once swtpm is installed).
    fn has_tpm_emulator(&self) -> bool {
        self.conn.domain_capabilities(None, Some("x86_64"), Some("pc"), Some("qemu"), 0).is_ok_and(|x| tpm_emulator_in(&x))
    }

    /// Connect (libvirt's default error printing to stderr is switched off first).
    pub fn connect(uri: &str, mode: SnapshotMode) -> Result<Self, LibvirtError> {
        virt::error::clear_error_callback();
        let conn = Connect::open(Some(uri)).map_err(LibvirtError::from)?;
        CONNECTED.store(true, Ordering::SeqCst);
        let _ = URI.set(uri.to_string());
        Ok(LibvirtBackend { conn: Arc::new(conn), mode, pool: None, storage: Arc::new(storage::Local), restore_lock: Default::default() })
    }

    /// Connect to a host that may share no filesystem with the harness (`run --connect`): make
    /// this run's storage pool under `pool_dir` on that host (the pools of dead runs go with
    /// their domains in [`Backend::reap_stale`]). Guests' files are uploaded into it; consoles
    /// and probes are libvirt streams.
    pub fn connect_remote(uri: &str, mode: SnapshotMode, pool_dir: &str) -> Result<Self, LibvirtError> {
        // Before the connection opens: its streams are read by libvirt's event loop.
        remote::start_event_loop();
        let mut b = Self::connect(uri, mode)?;
        let pool = Arc::new(RunPool::create(&b.conn, pool_dir)?);
        b.storage = Arc::new(storage::Pool(pool.clone()));
        b.pool = Some(pool);
        Ok(b)
    }

    /// A remote host's VM gets no host ports: QEMU would listen on that host's loopback, which
    /// the harness cannot reach (so ssh-keyscan and the TLS checks are skipped there).
    fn remote_args(&self, args: &mut CloneArgs) {
        if self.pool.is_some() {
            args.forwards.clear();
        }
    }

    /// Names of the clonesafe domains libvirt knows, running or not.
    pub fn clonesafe_domains(&self) -> Vec<String> {
        self.conn.list_all_domains(0).unwrap_or_default().iter().filter_map(|d| d.name().ok()).filter(|n| n.starts_with(NAME_PREFIX)).collect()
    }

    /// Start the domain with `start`, accept the probe's connection, return the VM. `restored`
    /// is the probe state the clone's memory holds (None for a boot).
    #[allow(clippy::too_many_arguments)]
    async fn launch(
        &self,
        machine: Machine,
        args: CloneArgs,
        t: &Timeouts,
        disk: PathBuf,
        start: impl FnOnce(Arc<Connect>) -> Result<(), BackendError> + Send + 'static,
        phase: Phase,
        restored: Option<&SourceRecord>,
    ) -> Result<LibvirtVm, BackendError> {
        let name = args.identity.name.clone();
        // The local console: a socket QEMU connects to, read into console.log up to a cap
        // (backend/console.rs); a file chardev would grow as long as the guest writes.
        let console_l = if self.pool.is_none() {
            let p = args.dir.join("console.sock");
            let _ = std::fs::remove_file(&p);
            Some(UnixListener::bind(&p).map_err(BackendError::io(&name, format!("bind {}", p.display())))?)
        } else {
            None
        };
        let listener = if machine.guest.agent != AgentTransport::None && self.pool.is_none() {
            let probe_path = args.dir.join("probe.sock");
            let _ = std::fs::remove_file(&probe_path);
            Some(UnixListener::bind(&probe_path).map_err(BackendError::io(&name, format!("bind {}", probe_path.display())))?)
        } else {
            None
        };
        let conn = self.conn.clone();
        let bound = if phase == Phase::IncomingMigration { t.restore } else { t.start };
        let started = blocking(&name, phase, bound, move || start(conn)).await;
        let current_mac = machine.devices.nic.then_some(args.identity.mac);
        // From here on the domain may exist: the guard destroys it on every error path.
        let mut vm = LibvirtVm {
            conn: self.conn.clone(),
            agent: Transport::None,
            disk,
            machine,
            args,
            timeouts: *t,
            snapshots: 0,
            alive: true,
            notes: vec![],
            mode: self.mode,
            current_mac,
            pumps: vec![],
            storage: self.storage.clone(),
            console_capped: None,
        };
        if let Err(e) = started {
            vm.alive = false;
            return Err(e);
        }
        if let Some(l) = console_l {
            let log = vm.args.console_log();
            let s = match tokio::time::timeout(t.start, l.accept()).await {
                Ok(Ok((s, _))) => s,
                Ok(Err(e)) => return Err(BackendError::Io { vm: name, what: "accept the console connection".into(), source: e }),
                Err(_) => return Err(BackendError::Timeout { vm: name, phase: Phase::Start, after: t.start, console_tail: String::new() }),
            };
            let flag = crate::backend::console::pump_socket(s, &log).map_err(BackendError::io(&name, format!("keep the console in {}", log.display())))?;
            vm.console_capped = Some(flag);
        }
        if let Some(pool) = &self.pool {
            vm.notes.push(format!(
                "the VMs ran on the libvirt host {} ({}), their files volumes of its pool {} in {} (uploaded, read and rewritten through libvirt), their consoles and probes libvirt streams",
                vm.host(),
                self.conn.uri().unwrap_or_default(),
                pool.name,
                pool.dir
            ));
        }
        let probe = match listener {
            // A remote host's domain was started paused: its console and probe are opened as
            // streams before it runs, so nothing it writes is lost.
            None if self.pool.is_some() => vm.open_streams(bound).await?,
            None => None,
            Some(listener) => match tokio::time::timeout(t.start, listener.accept()).await {
                Ok(Ok((s, _))) => Some(ProbeChannel::new(s)),
                Ok(Err(e)) => return Err(BackendError::Io { vm: name, what: "accept the probe connection".into(), source: e }),
                Err(_) => return Err(BackendError::Timeout { vm: name, phase: Phase::Start, after: t.start, console_tail: vm.console_tail(20) }),
            },
        };
        vm.agent = match vm.machine.guest.agent {
            _ if restored.is_some_and(|s| !s.agent) => Transport::None,
            AgentTransport::SerialProbe => probe.map(Transport::Serial).unwrap_or(Transport::None),
            AgentTransport::Qga => {
                let wire = Box::new(qga_wire::LibvirtWire { conn: self.conn.clone(), domain: name.clone() });
                Transport::Qga(match restored {
                    None => Qga::new(wire, probe),
                    Some(source) => Qga::restored(wire, probe, &source.probe),
                })
            }
            AgentTransport::None => Transport::None,
        };
        vm.forward_ports().await?;
        Ok(vm)
    }
}

#[async_trait]
impl Backend for LibvirtBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Libvirt
    }
    fn source_runs_on(&self) -> bool {
        // virDomainSaveFlags stops the domain; an external live snapshot leaves it running (and
        // `restore` maps a second snapshot's disk name onto the clone's overlay).
        self.mode == SnapshotMode::External
    }

    fn capabilities(&self) -> Capabilities {
        match self.pool {
            None if self.has_tpm_emulator() => Capabilities::of(CAPABILITIES).with(Capability::Tpm),
            None => Capabilities::of(CAPABILITIES),
            // A remote host's VMs cannot join a segment made here, their files are not here
            // for the harness to read or rewrite, and their forwarded ports would listen there.
            Some(_) => Capabilities::of(CAPABILITIES).without(Capability::SegmentNetwork).without(Capability::HostFiles).without(Capability::GuestPorts),
        }
    }

    fn versions(&self) -> Vec<Vmm> {
        let v = |n: u32| format!("{}.{}.{}", n / 1_000_000, n / 1000 % 1000, n % 1000);
        let mut out = vec![Vmm { name: "libvirt".into(), version: self.conn.lib_version().map(v).unwrap_or_else(|_| "unknown".into()) }];
        if let Ok(h) = self.conn.hyp_version() {
            out.push(Vmm { name: "qemu (through libvirt)".into(), version: v(h) });
        }
        out
    }

    fn artifacts(&self) -> crate::backend::Opener {
        self.storage.opener()
    }

    fn remote_kvm(&self) -> Option<Result<(), String>> {
        self.pool.as_ref()?;
        Some(match remote::offers_kvm(&self.conn) {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!("the libvirt host {} offers no KVM domain type", self.conn.hostname().unwrap_or_default())),
            Err(e) => Err(format!("cannot read the libvirt host's capabilities: {}", e.message())),
        })
    }

    /// Destroy `clonesafe-<pid>-…` domains whose harness `<pid>` is gone, then remove the
    /// storage pools of such runs (`run --connect`).
    fn reap_stale(&self) -> Vec<String> {
        let mut out = Vec::new();
        for d in self.conn.list_all_domains(0).unwrap_or_default() {
            let Ok(name) = d.name() else { continue };
            if is_stale(&name) {
                if d.is_active().unwrap_or(false) {
                    let _ = d.destroy();
                }
                if d.is_persistent().unwrap_or(false) {
                    let _ = d.undefine();
                }
                out.push(format!("removed leftover libvirt domain {name} of a dead run"));
            }
        }
        // After the domains: their disks are volumes of these pools.
        out.extend(remote::sweep(&self.conn, is_stale).into_iter().map(|l| format!("{l} (left by a dead run)")));
        out
    }

    async fn boot(&self, machine: &Machine, mut args: CloneArgs, t: &Timeouts) -> Result<Box<dyn Vm>, BackendError> {
        self.remote_args(&mut args);
        let (disk, files) = self.storage.place(machine, &args, None, t).await?;
        args.take_port().map_err(BackendError::segment(&args.identity.name))?;
        let xml = domain::domain_xml(machine, &args, &disk, &files);
        let name = args.identity.name.clone();
        // On a segment the domain starts paused: its tap joins the segment before the guest
        // runs; on a remote host, its console and probe streams open first.
        let paused = args.port.is_some() || self.pool.is_some();
        let flags = if paused { sys::VIR_DOMAIN_START_PAUSED } else { 0 };
        let start = move |c: Arc<Connect>| c.create_domain_xml(&xml, flags).map(drop).map_err(lv(&name, Phase::Start, "create the domain"));
        let mut vm = self.launch(machine.clone(), args, t, disk, start, Phase::Start, None).await?;
        if paused {
            vm.attach_port()?;
            let n = vm.args.identity.name.clone();
            vm.on_domain(Phase::Start, t.start, move |d| d.resume().map_err(lv(&n, Phase::Start, "resume the domain"))).await?;
        }
        let ssh = vm.args.forwards.get("ssh").copied();
        if let Some(agent) = vm.agent.agent() {
            let console = vm.args.console_log();
            let waited = crate::backend::wait_booted(agent, machine.guest.optional, ssh, t.boot, &console).await;
            if let Ok(Some(why)) = &waited {
                vm.agent = Transport::None;
                vm.notes.push(why.clone());
            }
            if let Err(e) = waited {
                let (vm_name, tail) = (vm.args.identity.name.clone(), vm.console_tail(20));
                return Err(match e {
                    AgentError::Timeout(..) => BackendError::Timeout { vm: vm_name, phase: Phase::Boot, after: t.boot, console_tail: tail },
                    source => BackendError::Agent { vm: vm_name, phase: Phase::Boot, console_tail: tail, source },
                });
            }
        }
        Ok(Box::new(vm))
    }

    fn restorer(&self) -> Option<&dyn Restore> {
        Some(self)
    }
}

#[async_trait]
impl Restore for LibvirtBackend {
    async fn restore(&self, snap: &Snapshot, mut args: CloneArgs, t: &Timeouts) -> Result<Box<dyn Vm>, BackendError> {
        let wrong = || BackendError::WrongSnapshot { backend: BackendKind::Libvirt, made_by: snap.backend };
        self.remote_args(&mut args);
        args.take_port().map_err(BackendError::segment(&args.identity.name))?;
        let private = snap.private::<LibvirtSnapshot>().ok_or_else(wrong)?;
        let (Some(image), Some(frozen)) = (snap.artifact(ArtifactKind::LibvirtSaveImage), snap.artifact(ArtifactKind::FrozenDisk)) else {
            return Err(wrong());
        };
        let image = image.to_path_buf();
        let (disk, files) = self.storage.place(&snap.machine, &args, Some(frozen), t).await?;
        let prefixes = (self.storage.prefix(&snap.source.identity.name, &snap.source.dir), files.prefix(&args));
        let prefixes = (prefixes.0.as_str(), prefixes.1.as_str());
        let mut originals = self.restore_lock.lock().await;
        let name = args.identity.name.clone();
        if !originals.contains_key(&image) {
            let img = self.storage.read_image(&name, &image, t.restore).await?;
            originals.insert(image.clone(), img);
        }
        let original = &originals[&image];
        // A derived snapshot (the source's second, clones/source.rs) names the source's disk as
        // it was then, its first overlay after the first snapshot; the rewrite below maps files
        // by prefix, and a clone's overlay is `<prefix>disk.qcow2` whatever snapshot it comes
        // from. Name the frozen disk that way first (nothing to do for a first snapshot).
        // Its backing chain names the source's files, which the prefix rewrite would move into the
        // clone's directory (measured: QEMU then opened the clone's overlay twice, "Failed to get
        // \"write\" lock"): libvirt reads the chain from the images instead.
        let first = format!("{}disk.qcow2", prefixes.0);
        let frozen_s = frozen.display().to_string();
        let source_xml = if frozen_s == first {
            original.xml.clone()
        } else {
            domain::without_backing_stores(&original.xml.replace(&crate::text::xml_escape(&frozen_s), &crate::text::xml_escape(&first)))
        };
        let nic = snap.machine.devices.nic;
        let mut notes = Vec::new();

        // 1. libvirt's own route, once per snapshot, with the identity in dxml.
        if !private.tried.swap(true, Ordering::SeqCst) {
            let dxml = with_port(domain::rewrite_identity(&source_xml, &snap.source, &args, nic, prefixes).map_err(|source| BackendError::vmm(name.clone(), "cannot give the save image's domain XML the clone's identity", source))?, &args);
            let conn = self.conn.clone();
            let img = image.display().to_string();
            let r = blocking(&name, Phase::IncomingMigration, t.restore, move || Ok(conn.restore_domain_flags(&img, Some(&dxml), sys::VIR_DOMAIN_SAVE_PAUSED))).await?;
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
        let xml = with_port(domain::rewrite_identity(&source_xml, &snap.source, &args, nic, prefixes).map_err(|source| BackendError::vmm(name.clone(), "cannot give the save image's domain XML the clone's identity", source))?, &args);
        self.storage.write_image_xml(&name, &image, original, &xml, t.restore).await?;
        let img = image.display().to_string();
        let n2 = name.clone();
        let start = move |c: Arc<Connect>| c.restore_domain_flags(&img, None, sys::VIR_DOMAIN_SAVE_PAUSED).map_err(lv(&n2, Phase::IncomingMigration, "restore the rewritten image"));
        let mut vm = self.launch(snap.machine.clone(), args, t, disk, start, Phase::IncomingMigration, Some(&snap.source)).await?;
        if snap.machine.devices.vmgenid {
            // libvirt's source says it regenerates <genid> on restore (qemuProcessGenID); record
            // what it did. The vmgenid check shows what the guest made of it.
            let before = save_image::DomainSummary::of(&xml).ok().and_then(|d| d.genid);
            let after = vm.genid();
            notes.push(match (before, after) {
                (Some(b), Some(a)) if a != b => format!("libvirt regenerated <genid> on restore by itself (image {b}, domain now {a})"),
                (b, a) => format!("libvirt kept <genid> on restore (image {b:?}, domain {a:?})"),
            });
        }
        vm.notes.extend(notes);
        vm.attach_port()?;
        let n3 = name.clone();
        vm.on_domain(Phase::Resume, t.start, move |d| d.resume().map_err(lv(&n3, Phase::Resume, "resume the domain"))).await?;
        Ok(Box::new(vm))
    }
}

/// `xml` with the source's segment tap (if any) replaced by the clone's own.
fn with_port(xml: String, args: &CloneArgs) -> String {
    match (domain::segment_tap(&xml).map(str::to_string), &args.port) {
        (Some(old), Some(p)) => xml.replace(&format!("<target dev='{old}' managed='no'/>"), &format!("<target dev='{}' managed='no'/>", p.tap)),
        _ => xml,
    }
}

pub struct LibvirtVm {
    conn: Arc<Connect>,
    agent: Transport,
    disk: PathBuf,
    machine: Machine,
    args: CloneArgs,
    timeouts: Timeouts,
    snapshots: u32,
    /// False once the domain is gone (destroyed, or stopped by a save).
    alive: bool,
    notes: Vec<String>,
    mode: SnapshotMode,
    /// The MAC of the NIC the domain has now, if any.
    current_mac: Option<MacAddr>,
    /// On a remote host: the streams that carry its console (into `console.log` here) and its
    /// probe. They end with the VM.
    pumps: Vec<remote::Pump>,
    /// Where its files are (storage.rs).
    storage: Arc<dyn storage::Storage>,
    /// Set when the guest's console passed the cap (the local console pump).
    console_capped: Option<Arc<std::sync::atomic::AtomicBool>>,
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
        let (conn, name) = (self.conn.clone(), self.args.identity.name.clone());
        async move {
            let vm = name.clone();
            blocking(&vm, phase, t, move || f(&conn.lookup_domain_by_name(&name).map_err(lv(&name, phase, "look up the domain"))?)).await
        }
    }

    /// Open the console (into `console.log` in the VM's directory here) and the probe's device as
    /// libvirt streams; returns the probe's channel.
    async fn open_streams(&mut self, t: Duration) -> Result<Option<ProbeChannel>, BackendError> {
        let probe_dev = match self.machine.guest.agent {
            AgentTransport::SerialProbe => Some(remote::Device::Serial("serial1")),
            AgentTransport::Qga => Some(remote::Device::Channel(crate::agent::qga::PROBE_PORT)),
            AgentTransport::None => None,
        };
        let (conn, name) = (self.conn.clone(), self.args.identity.name.clone());
        let log = self.args.console_log();
        let (console, probe) = self
            .on_domain(Phase::Start, t, move |d| {
                let open = |dev| remote::open(&conn, d, dev).map_err(lv_src(&name, Phase::Start, "open a console or channel stream"));
                let console = open(remote::Device::Serial("serial0"))?;
                let probe = probe_dev.map(open).transpose()?;
                Ok((console, probe))
            })
            .await?;
        let vm = self.args.identity.name.clone();
        let (pump, capped) = remote::to_file(console, &log).map_err(BackendError::io(&vm, format!("write {}", log.display())))?;
        self.pumps.push(pump);
        self.console_capped = Some(capped);
        let Some(probe) = probe else { return Ok(None) };
        let (mine, pump) = remote::to_socket(probe).map_err(BackendError::io(&vm, "join the probe stream to a socket"))?;
        self.pumps.push(pump);
        mine.set_nonblocking(true).map_err(BackendError::io(&vm, "join the probe stream to a socket"))?;
        let s = tokio::net::UnixStream::from_std(mine).map_err(BackendError::io(&vm, "join the probe stream to a socket"))?;
        Ok(Some(ProbeChannel::new(s)))
    }

    fn destroy_now(&mut self) {
        if std::mem::take(&mut self.alive) {
            if let Ok(d) = self.conn.lookup_domain_by_name(&self.args.identity.name) {
                let _ = d.destroy();
            }
        }
    }

    /// Move this VM's segment tap (libvirt has opened it) into the segment, recording its MAC.
    fn attach_port(&self) -> Result<(), BackendError> {
        self.args.attach_port(self.current_mac).map_err(BackendError::segment(&self.args.identity.name))
    }

    /// Forward each service's host port to the guest through the NIC's user network (HMP
    /// `hostfwd_add` on the netdev libvirt made for it: libvirt 9.0 has no forwards for slirp).
    /// Unlike the QEMU backend's, libvirt's user network is not started with `restrict=on`;
    /// the guests here are given no route out, and the machine's network is closed.
    /// (The future does not borrow `self`, as with [`LibvirtVm::on_domain`].)
    fn forward_ports(&self) -> impl std::future::Future<Output = Result<(), BackendError>> + Send + 'static {
        let rules: Vec<String> = self
            .args
            .forwards
            .iter()
            .filter_map(|(svc, host)| self.machine.guest.services.get(svc).map(|g| format!("tcp:127.0.0.1:{host}-:{g}")))
            .collect();
        let rules = if self.machine.devices.nic { rules } else { vec![] };
        let name = self.args.identity.name.clone();
        self.on_domain(Phase::Start, self.timeouts.start, move |d| {
            if rules.is_empty() {
                return Ok(());
            }
            let xml = d.xml_desc(0).map_err(lv(&name, Phase::Start, "read the domain XML"))?;
            let alias = save_image::interface_aliases(&xml).into_iter().last().unwrap_or_else(|| "net0".into());
            for rule in rules {
                let out = d
                    .qemu_monitor_command(&format!("hostfwd_add host{alias} {rule}"), 1 /* VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP */)
                    .map_err(lv(&name, Phase::Start, "add a port forward (hostfwd_add)"))?;
                if !out.trim().is_empty() {
                    let source = LibvirtError { code: 0, code_name: "HMP".into(), domain: "qemu".into(), message: out.trim().to_string() };
                    return Err(lv_src(&name, Phase::Start, "add a port forward (hostfwd_add)")(source));
                }
            }
            Ok(())
        })
    }

    /// The domain's genid as libvirt reports it now.
    pub fn genid(&self) -> Option<String> {
        let d = self.conn.lookup_domain_by_name(&self.args.identity.name).ok()?;
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
        crate::text::read_tail(&self.args.console_log(), lines)
    }
    fn notes(&self) -> Vec<String> {
        let mut n = self.notes.clone();
        if self.console_capped.as_ref().is_some_and(|c| c.load(std::sync::atomic::Ordering::SeqCst)) {
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
        // libvirtd's host, which for a remote URI is not this machine.
        self.conn.hostname().unwrap_or_else(|e| format!("? ({})", e.message()))
    }
    fn host_pid(&self) -> Option<u32> {
        // Only a local libvirtd's QEMU is a process here (qemu:///system: no host in the URI);
        // its qemu driver writes the pid beside the domain's live state.
        let uri = self.conn.uri().ok()?;
        if !uri.contains(":///") || !self.alive {
            return None;
        }
        std::fs::read_to_string(format!("/run/libvirt/qemu/{}.pid", self.args.identity.name)).ok()?.trim().parse().ok()
    }
    async fn destroy(mut self: Box<Self>) -> Result<(), BackendError> {
        if std::mem::take(&mut self.alive) {
            let (conn, name) = (self.conn.clone(), self.args.identity.name.clone());
            blocking(&name.clone(), Phase::Shutdown, Duration::from_secs(30), move || match conn.lookup_domain_by_name(&name) {
                // Already gone (stopped by a save outside clonesafe, or crashed): nothing to do.
                Err(_) => Ok(()),
                Ok(d) => d.destroy().map_err(lv(&name, Phase::Shutdown, "destroy the domain")),
            })
            .await?;
        }
        Ok(())
    }
    async fn shutdown(mut self: Box<Self>, t: Duration) -> Result<bool, BackendError> {
        let name = self.args.identity.name.clone();
        let n = name.clone();
        let gone = self
            .on_domain(Phase::Shutdown, t + Duration::from_secs(10), move |d| {
                d.shutdown().map_err(lv(&n, Phase::Shutdown, "shut the domain down (ACPI)"))?;
                let deadline = std::time::Instant::now() + t;
                while std::time::Instant::now() < deadline {
                    // A transient domain disappears when it powers off.
                    if !d.is_active().unwrap_or(false) {
                        return Ok(true);
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Ok(false)
            })
            .await;
        match gone {
            Ok(true) => {
                self.alive = false;
                Ok(true)
            }
            _ => self.destroy().await.map(|_| false),
        }
    }
    fn snapshottable(&mut self) -> Option<&mut dyn Snapshottable> {
        Some(self)
    }
    fn nic_hotplug(&mut self) -> Option<&mut dyn NicHotplug> {
        Some(self)
    }
}

#[async_trait]
impl NicHotplug for LibvirtVm {
    async fn unplug_nic(&mut self) -> Result<(), BackendError> {
        let name = self.args.identity.name.clone();
        let Some(mac) = self.current_mac else {
            return Err(BackendError::Unsupported { backend: BackendKind::Libvirt, capability: Capability::NicHotplug });
        };
        let xml = domain::interface_xml(&mac, self.args.port.as_ref());
        self.on_domain(Phase::Hotplug, self.timeouts.snapshot, move |d| {
            d.detach_device_flags(&xml, sys::VIR_DOMAIN_AFFECT_LIVE).map_err(lv(&name, Phase::Hotplug, "detach the NIC"))?;
            // libvirt returns once QEMU reports DEVICE_DELETED, or after its own wait; confirm.
            for _ in 0..300 {
                let live = d.xml_desc(0).map_err(lv(&name, Phase::Hotplug, "read the domain XML"))?;
                if !live.contains("<interface") {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(BackendError::Timeout { vm: name, phase: Phase::Hotplug, after: Duration::from_secs(30), console_tail: String::new() })
        })
        .await?;
        self.current_mac = None;
        self.machine.devices.nic = false;
        Ok(())
    }

    async fn plug_nic(&mut self, mac: MacAddr) -> Result<(), BackendError> {
        if self.args.segment.is_some() {
            // A new port of the segment for the new NIC.
            let vm = self.args.identity.name.clone();
            self.args.take_port().map_err(BackendError::segment(&vm))?;
        }
        let xml = domain::interface_xml(&mac, self.args.port.as_ref());
        let name = self.args.identity.name.clone();
        self.on_domain(Phase::Hotplug, self.timeouts.start, move |d| d.attach_device_flags(&xml, sys::VIR_DOMAIN_AFFECT_LIVE).map_err(lv(&name, Phase::Hotplug, "attach a NIC"))).await?;
        self.current_mac = Some(mac);
        self.attach_port()?;
        self.machine.devices.nic = true;
        // A new NIC is a new slirp netdev: the forwards made at start went with the old one.
        self.forward_ports().await
    }
}

#[async_trait]
impl Snapshottable for LibvirtVm {
    async fn snapshot(&mut self, dir: &Path) -> Result<Snapshot, BackendError> {
        self.snapshots += 1;
        let name = self.args.identity.name.clone();
        let (memory, next) = self.storage.snapshot_paths(&name, dir, &self.args.dir, self.snapshots);
        let frozen = self.disk.clone();
        let t = self.timeouts.snapshot;
        let mem = memory.display().to_string();
        let n = name.clone();
        match self.mode {
            SnapshotMode::External => {
                let xml = format!(
                    "<domainsnapshot><name>clonesafe-{}</name><memory snapshot='external' file='{}'/><disks><disk name='vda' snapshot='external'><source file='{}'/></disk></disks></domainsnapshot>",
                    self.snapshots,
                    crate::text::xml_escape(&mem),
                    crate::text::xml_escape(&next.display().to_string())
                );
                self.on_domain(Phase::Snapshot, t, move |d| {
                    d.create_snapshot_xml(&xml, sys::VIR_DOMAIN_SNAPSHOT_CREATE_LIVE | sys::VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA)
                        .map(drop)
                        .map_err(lv(&n, Phase::Snapshot, "take an external memory snapshot"))
                })
                .await
                .map_err(|e| e.or_disk_full(&name, Phase::Snapshot, dir))?;
                self.disk = next;
            }
            SnapshotMode::Save => {
                self.on_domain(Phase::Snapshot, t, move |d| {
                    let p = std::ffi::CString::new(mem).map_err(|e| lv(&n, Phase::Snapshot, "save the domain")(virt::error::Error::from(e)))?;
                    // SAFETY: d is a live domain handle; virt 0.5 has no safe wrapper for
                    // virDomainSaveFlags. NULL dxml keeps the domain's own XML.
                    let r = unsafe { sys::virDomainSaveFlags(d.as_ptr(), p.as_ptr(), std::ptr::null(), 0) };
                    if r < 0 {
                        // libvirt keeps the last error per thread; this is the thread that
                        // made the call, right after it failed.
                        return Err(lv(&n, Phase::Snapshot, "save the domain")(virt::error::Error::last_error()));
                    }
                    Ok(())
                })
                .await
                .map_err(|e| e.or_disk_full(&name, Phase::Snapshot, dir))?;
                // The domain stopped when libvirt saved it.
                self.alive = false;
                self.notes.push("suspend and clone: the source domain stopped when it was saved".into());
            }
        }
        let bytes = self.storage.snapshot_written(&name, &memory, &self.disk, &frozen, t).await?;
        Ok(Snapshot {
            backend: BackendKind::Libvirt,
            machine: self.machine.clone(),
            source: SourceRecord {
                identity: self.args.identity.clone(),
                dir: self.args.dir.clone(),
                probe: self.agent.probe_state(),
                agent: !matches!(self.agent, Transport::None),
            },
            steps: vec![],
            artifacts: vec![Artifact { kind: ArtifactKind::LibvirtSaveImage, path: memory, host_bytes: bytes }, Artifact { kind: ArtifactKind::FrozenDisk, path: frozen, host_bytes: None }],
            private: Arc::new(LibvirtSnapshot::default()),
        })
    }
}

/// Whether domain capabilities XML offers `<tpm supported='yes'>` with the tpm-crb model and
/// the emulator backend.
fn tpm_emulator_in(domcaps: &str) -> bool {
    let Some(start) = domcaps.find("<tpm supported='yes'>") else { return false };
    let end = domcaps[start..].find("</tpm>").map_or(domcaps.len(), |e| start + e);
    let tpm = &domcaps[start..end];
    tpm.contains("<value>tpm-crb</value>") && tpm.contains("<value>emulator</value>")
}

#[cfg(test)]
mod tpm_caps {
    #[test]
    fn reads_the_tpm_section_of_domain_capabilities() {
        let yes = "<devices><tpm supported='yes'><enum name='model'><value>tpm-crb</value></enum><enum name='backendModel'><value>passthrough</value><value>emulator</value></enum></tpm></devices>";
        assert!(super::tpm_emulator_in(yes));
        assert!(!super::tpm_emulator_in(&yes.replace("<value>emulator</value>", "")), "no swtpm: no emulator backend");
        assert!(!super::tpm_emulator_in("<tpm supported='no'/>"));
        assert!(!super::tpm_emulator_in("<tpm supported='yes'><value>tpm-crb</value></tpm><video><value>emulator</value></video>"), "only the tpm section counts");
    }
}
