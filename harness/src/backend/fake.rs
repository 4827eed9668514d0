//! An in-process fake backend for unit-testing the runner. Its "guest" answers the real probe
//! protocol over an in-memory pipe, and its snapshot copies guest state the way a memory
//! snapshot does, so naive clones share it. Its capabilities can be narrowed, to test the
//! plan-time check. Never used for verdicts about real VMs.

use super::capability::{Capabilities, Capability};
use super::error::BackendError;
use super::lifecycle::{Phase, Timeouts};
use super::snapshot::{Artifact, ArtifactKind, CloneArgs, Machine, Snapshot, SourceRecord};
use super::{Backend, NicHotplug, Restore, Snapshottable, Vm};
use crate::agent::serial::ProbeChannel;
use crate::agent::GuestAgent;
use crate::identity::{HostIdentity, MacAddr};
use async_trait::async_trait;
use clonesafe_metadata::{BackendKind, Vmm};
use clonesafe_protocol::{Disk, Identity, Nic, Reply, Request, Sample};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Guest memory, as far as the fake is concerned.
#[derive(Debug, Clone)]
struct GuestState {
    machine_id: String,
    boot_id: String,
    product_uuid: String,
    product_serial: String,
    mac: String,
    rng: u64,
}

pub struct FakeBackend {
    /// VMs alive right now: tests assert it returns to zero.
    pub live: Arc<AtomicUsize>,
    /// VMs booted or restored so far: tests assert nothing started.
    pub started: Arc<AtomicUsize>,
    /// Make the n-th boot (0-based) hang past its timeout.
    pub hang_boot: Option<usize>,
    boots: AtomicUsize,
    snapshots: Snapshots,
    caps: Capabilities,
}

type Snapshots = Arc<Mutex<Vec<(String, GuestState)>>>;

impl Default for FakeBackend {
    fn default() -> Self {
        FakeBackend {
            live: Default::default(),
            started: Default::default(),
            hang_boot: None,
            boots: Default::default(),
            snapshots: Default::default(),
            caps: Capabilities::of(super::qemu::CAPABILITIES),
        }
    }
}

pub struct FakeVm {
    identity: HostIdentity,
    machine: Machine,
    probe: ProbeChannel,
    state: Arc<Mutex<GuestState>>,
    live: Arc<AtomicUsize>,
    snapshots: Snapshots,
    caps: Capabilities,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeVm {
    fn drop(&mut self) {
        self.task.abort();
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

fn fresh_state(id: &HostIdentity) -> GuestState {
    GuestState {
        machine_id: uuid::Uuid::new_v4().simple().to_string(),
        boot_id: uuid::Uuid::new_v4().to_string(),
        product_uuid: id.uuid.to_string(),
        product_serial: id.system_serial.as_str().to_string(),
        mac: id.mac.to_string(),
        rng: u64::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().unwrap()),
    }
}

impl FakeBackend {
    /// A fake whose `n`-th boot (0-based) never becomes ready.
    pub fn hanging_boot(n: usize) -> Self {
        FakeBackend { hang_boot: Some(n), ..Default::default() }
    }

    /// A fake that lacks `cap`.
    pub fn without(cap: Capability) -> Self {
        let d = FakeBackend::default();
        FakeBackend { caps: d.caps.clone().without(cap), ..d }
    }

    fn start(&self, id: HostIdentity, machine: Machine, state: GuestState, announce: bool) -> FakeVm {
        let (host, guest) = tokio::io::duplex(1 << 16);
        let state = Arc::new(Mutex::new(state));
        let st = state.clone();
        let serial = id.disk_serial.as_str().to_string();
        let task = tokio::spawn(async move {
            let (r, mut w) = tokio::io::split(guest);
            let mut lines = BufReader::new(r).lines();
            if announce {
                let _ = w.write_all(b"{\"event\":\"ready\",\"probe_version\":\"fake\",\"uptime_ms\":1}\n").await;
            }
            while let Ok(Some(line)) = lines.next_line().await {
                let reply = match serde_json::from_str::<Request>(&line) {
                    Ok(req) => answer(&st, &serial, req),
                    Err(e) => Reply::Error { message: e.to_string() },
                };
                let mut s = serde_json::to_string(&reply).unwrap();
                s.push('\n');
                if w.write_all(s.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
        self.live.fetch_add(1, Ordering::SeqCst);
        self.started.fetch_add(1, Ordering::SeqCst);
        FakeVm { identity: id, machine, probe: ProbeChannel::new(host), state, live: self.live.clone(), snapshots: self.snapshots.clone(), caps: self.caps.clone(), task }
    }
}

fn answer(st: &Mutex<GuestState>, serial: &str, req: Request) -> Reply {
    let mut s = st.lock().unwrap();
    let mut next = || {
        s.rng = s.rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        Sample { t_ns: 0, hex: format!("{:016x}", s.rng) }
    };
    match req {
        Request::Hold => Reply::Held,
        Request::Go { gate } => {
            let reseeds = gate.as_ref().is_some_and(|g| !g.entropy_hex.is_empty());
            // The fake kernel sends no NEW_VMGENID: a genid-wait gate waits out its bound.
            let gate = gate.map(|g| clonesafe_protocol::GateDone { t_start_ns: 0, vmgenid_seen_ns: None, uevent_seen_ns: None, t_reseeded_ns: 1 + g.wait_uevent_ms * 1_000_000 });
            if reseeds {
                // A gated clone reseeds from host entropy before its first sample.
                s.rng ^= u64::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().unwrap());
            }
            let mut next = || {
                s.rng = s.rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                Sample { t_ns: 0, hex: format!("{:016x}", s.rng) }
            };
            Reply::Resumed { kernel_rng: vec![next()], userspace_rng: vec![next()], random_uuid: vec![], gate }
        }
        Request::Reseed { .. } => Reply::Reseeded { t_ns: 1 },
        Request::Time => Reply::Time { realtime_ns: 0, monotonic_ns: 0 },
        Request::SetTime { .. } => Reply::TimeSet,
        Request::Dirty { mib } => Reply::Dirtied { mib, ms: 0 },
        Request::Addrs => Reply::Addrs { if_inet6: String::new(), ipv4: vec![] },
        Request::Samples => Reply::Samples { kernel_rng: vec![next()], random_uuid: vec![], uevents: None, vmclock: None, vdso_rng: None },
        Request::Report { .. } => Reply::Report {
            identity: Identity {
                nics: vec![Nic { name: "eth0".into(), mac: s.mac.clone() }],
                product_uuid: Some(s.product_uuid.clone()),
                product_serial: Some(s.product_serial.clone()),
                disks: vec![Disk { name: "vda".into(), serial: serial.into() }],
                machine_id: Some(s.machine_id.clone()),
                hostname: Some(format!("fake-{}", &s.machine_id[..6])),
                boot_id: Some(s.boot_id.clone()),
                ..Default::default()
            },
        },
        Request::WriteFile { path, .. } => Reply::Written { path },
        Request::ReadFile { path } => Reply::File { path, data: None },
        // Declared identities: machine-id is a file and `cat` prints it; `sleep` outlives any
        // limit; anything else is not found.
        Request::Digest { path, .. } => {
            use sha2::Digest as _;
            let found = (path == "/etc/machine-id").then(|| clonesafe_protocol::DigestOf {
                sha256: sha2::Sha256::digest(s.machine_id.as_bytes()).iter().map(|b| format!("{b:02x}")).collect(),
                size: s.machine_id.len() as u64,
                text: String::new(),
            });
            Reply::Digested { path, found }
        }
        Request::Exec { argv, .. } => {
            let out = |exit: Option<i32>, timed_out: bool, stdout: String, stderr: &str| Reply::Executed {
                output: clonesafe_protocol::ExecOutput { exit, timed_out, stdout, stderr: stderr.into(), truncated: false },
            };
            match argv.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
                ["cat", "/etc/machine-id"] => out(Some(0), false, format!("{}\n", s.machine_id), ""),
                ["sleep", ..] => out(None, true, "started\n".into(), ""),
                [prog, ..] => out(Some(127), false, String::new(), &format!("{prog}: not found")),
                [] => Reply::Error { message: "exec: an empty argv".into() },
            }
        }
        // The fake guest is on no network.
        Request::SessionOpen { .. } | Request::SessionSpeak { .. } => Reply::Error { message: "session: the fake guest has no network".into() },
        Request::DropSessions { .. } => Reply::SessionsDropped { dropped: vec![] },
        Request::Fixup { .. } => {
            s.machine_id = uuid::Uuid::new_v4().simple().to_string();
            Reply::FixedUp { t_start_ns: 0, t_rng_ns: 1, t_done_ns: 2, steps: vec![] }
        }
        Request::WaitNic { mac, .. } => {
            s.mac = mac.clone();
            Reply::NicSeen { mac, t_ns: Some(5_000_000) }
        }
        Request::Canary { .. } => Reply::CanaryPlanted,
        Request::Scrub => Reply::Scrubbed { output: String::new() },
    }
}

#[async_trait]
impl Backend for FakeBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Qemu
    }

    fn capabilities(&self) -> Capabilities {
        self.caps.clone()
    }

    fn versions(&self) -> Vec<Vmm> {
        vec![Vmm { name: "fake".into(), version: "0".into() }]
    }

    fn reap_stale(&self) -> Vec<String> {
        vec![]
    }

    async fn boot(&self, machine: &Machine, args: CloneArgs, t: &Timeouts) -> Result<Box<dyn Vm>, BackendError> {
        let n = self.boots.fetch_add(1, Ordering::SeqCst);
        let state = fresh_state(&args.identity);
        let mut vm = self.start(args.identity.clone(), machine.clone(), state, self.hang_boot != Some(n));
        if vm.probe.wait_ready(t.boot).await.is_err() {
            return Err(BackendError::Timeout { vm: args.identity.name, phase: Phase::Boot, after: t.boot, console_tail: "fake console: kernel stuck".into() });
        }
        Ok(Box::new(vm))
    }

    fn restorer(&self) -> Option<&dyn Restore> {
        self.caps.has(Capability::LiveSnapshot).then_some(self as &dyn Restore)
    }
}

#[async_trait]
impl Restore for FakeBackend {
    async fn restore(&self, snap: &Snapshot, args: CloneArgs, _t: &Timeouts) -> Result<Box<dyn Vm>, BackendError> {
        let key = snap.memory().map(|a| a.path.display().to_string()).unwrap_or_default();
        let state = self.snapshots.lock().unwrap().iter().find(|(p, _)| *p == key).map(|(_, s)| s.clone());
        let state = state.ok_or(BackendError::WrongSnapshot { backend: BackendKind::Qemu, made_by: snap.backend })?;
        Ok(Box::new(self.start(args.identity, snap.machine.clone(), state, false)))
    }
}

#[async_trait]
impl Vm for FakeVm {
    fn name(&self) -> &str {
        &self.identity.name
    }
    fn identity(&self) -> &HostIdentity {
        &self.identity
    }
    fn machine(&self) -> &Machine {
        &self.machine
    }
    fn agent(&mut self) -> Option<&mut dyn GuestAgent> {
        Some(&mut self.probe)
    }
    fn console_tail(&self, _: usize) -> String {
        "fake console".into()
    }
    fn notes(&self) -> Vec<String> {
        vec![]
    }
    fn disk(&self) -> &Path {
        Path::new("/fake/disk.qcow2")
    }
    fn forwards(&self) -> &std::collections::BTreeMap<String, u16> {
        static NONE: std::collections::BTreeMap<String, u16> = std::collections::BTreeMap::new();
        &NONE
    }
    fn host(&self) -> String {
        super::local_hostname()
    }
    async fn destroy(self: Box<Self>) -> Result<(), BackendError> {
        Ok(())
    }
    async fn shutdown(self: Box<Self>, _t: std::time::Duration) -> Result<bool, BackendError> {
        Ok(true)
    }
    fn snapshottable(&mut self) -> Option<&mut dyn Snapshottable> {
        if self.caps.has(Capability::LiveSnapshot) {
            Some(self)
        } else {
            None
        }
    }
    fn nic_hotplug(&mut self) -> Option<&mut dyn NicHotplug> {
        if self.caps.has(Capability::NicHotplug) {
            Some(self)
        } else {
            None
        }
    }
}

#[async_trait]
impl NicHotplug for FakeVm {
    async fn unplug_nic(&mut self) -> Result<(), BackendError> {
        self.machine.devices.nic = false;
        Ok(())
    }
    async fn plug_nic(&mut self, _mac: MacAddr) -> Result<(), BackendError> {
        self.machine.devices.nic = true;
        Ok(())
    }
}

#[async_trait]
impl Snapshottable for FakeVm {
    async fn snapshot(&mut self, dir: &Path) -> Result<Snapshot, BackendError> {
        let path = dir.join(format!("{}.mem", self.identity.name));
        let state = self.state.lock().unwrap().clone();
        self.snapshots.lock().unwrap().push((path.display().to_string(), state));
        Ok(Snapshot {
            backend: BackendKind::Qemu,
            machine: self.machine.clone(),
            source: SourceRecord { identity: self.identity.clone(), dir: dir.to_path_buf(), probe: crate::agent::ProbeState::Builtin, agent: true },
            steps: vec![],
            artifacts: vec![Artifact { kind: ArtifactKind::MemoryStream, path: path.clone(), host_bytes: None }, Artifact { kind: ArtifactKind::FrozenDisk, path, host_bytes: None }],
            private: Arc::new(()),
        })
    }
}
