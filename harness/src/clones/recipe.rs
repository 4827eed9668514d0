//! A recipe is a clone method ([`CloneMethod`]: how the compared VMs come to exist) and an
//! ordered list of fix-ups ([`Fixup`]: what is done to them on the way). Each fix-up acts at
//! named points of a method:
//!
//! ```text
//!  plan time   configure(machine)        every VM of the scenario (devices, kernel arguments)
//!              clone_args(args)          each VM's fresh identity (a new vmgenid per clone)
//!  method      boot source / template
//!              before_capture(vm)        in the VM about to be snapshotted or shut down
//!              (snapshot / shutdown and copy)
//!              on_image(image)           the disk every clone will be made from
//!              restore or boot clones
//!              gate(machine)             what `go` waits for before the first RNG read
//!              on_resume(vm)             in each clone right after `go`, in list order
//! ```
//!
//! A fix-up implements only the points where it acts; the others do nothing, by design (these
//! are optional steps of a recipe, not operations a backend owes).
//!
//! Both act within a scenario's [`Ctx`], and every VM they start goes into a [`Fleet`].

use crate::backend::capability::Capability;
use crate::backend::error::BackendError;
use crate::backend::lifecycle::Timeouts;
use crate::backend::snapshot::{CloneArgs, Machine, Snapshot};
use crate::backend::{Backend, Vm};
use crate::events::{EventKind, EventSink};
use crate::identity::{HostIdentity, NAME_PREFIX};
use crate::scenario::ScenarioPlan;
use crate::tools::ToolError;
use async_trait::async_trait;
use clonesafe_metadata::{FixupId, MeasurementId, Method, SourceHow, SourceUse, Timing, VmRole};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error(transparent)]
    Vm(Box<BackendError>),
    #[error("{step}")]
    Tool {
        step: String,
        #[source]
        source: ToolError,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// What a sysprep tool said when it failed (its own output, not an error value).
    #[error("sysprep: {0}")]
    Sysprep(String),
    /// A bounded tool (libguestfs) did not finish in time, or could not be waited for.
    #[error("{tool}")]
    Bounded {
        tool: String,
        #[source]
        source: crate::tools::bounded::BoundedError,
    },
    #[error(transparent)]
    Segment(Box<crate::network::segment::SegmentError>),
    /// An earlier scenario of a shared source could not boot or snapshot it.
    #[error("the shared source {id} failed in an earlier scenario: {why}")]
    SharedSource { id: String, why: String },
    #[error("{vm}: the backend gave no {capability} ability although it declares it")]
    Missing { vm: String, capability: Capability },
}

impl From<BackendError> for RecipeError {
    fn from(e: BackendError) -> Self {
        RecipeError::Vm(Box::new(e))
    }
}

impl RecipeError {
    pub fn tool(step: impl Into<String>) -> impl FnOnce(ToolError) -> RecipeError {
        let step = step.into();
        move |source| RecipeError::Tool { step, source }
    }
}

/// What a recipe made: which VMs of the fleet are compared (with what was read from each right
/// after its resume), what the checks need to know of the host side, the artifacts a canary
/// scan reads, and how it went. The evidence stage (crate::evidence) gathers the rest.
#[derive(Default)]
pub struct Made {
    /// The VMs to compare, in order.
    pub compared: Vec<Compared>,
    pub timing: Timing,
    pub notes: Vec<String>,
    /// Every MAC the host gave a VM of this scenario (source or template included): what guest
    /// MAC claims are checked against (checks/claims.rs).
    pub assigned_macs: Vec<String>,
    /// The canary planted before the snapshot or shutdown, and where to look for it.
    pub canary: Option<Canary>,
    /// Which source the clones came from (live and image-copy methods).
    pub source: Option<clonesafe_metadata::SourceUse>,
}

/// One compared VM: where it is in the fleet, its role, and what was read from it right after
/// it resumed (None for a booted VM: it is read when observed) with the fix-ups' measurements.
pub struct Compared {
    pub index: usize,
    pub role: VmRole,
    pub early: Option<crate::probes::Early>,
    pub measurements: std::collections::BTreeMap<MeasurementId, Option<f64>>,
}

/// A planted canary: the secret, the positive control (a string known to be in the artifact
/// labelled so), and the artifacts the clones were made from.
pub struct Canary {
    pub secret: String,
    pub control: Option<(String, &'static str)>,
    pub artifacts: Vec<(&'static str, PathBuf)>,
}

#[async_trait]
pub trait CloneMethod: Send + Sync {
    fn id(&self) -> Method;
    /// What the backend must be able to do.
    fn requires(&self) -> &'static [Capability];
    /// Make `cx.scenario.clones` VMs to compare, applying `cx.fixups` at their points. Every VM
    /// started goes into `fleet`, which the caller tears down after gathering the evidence.
    async fn make(&self, cx: &Ctx<'_>, fleet: &mut Fleet) -> Result<Made, RecipeError>;
}

/// What a fix-up does to what clones are made from, which decides whether scenarios can share a
/// source (clones/source.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shapes {
    /// Nothing before the clones start (it acts on the machine's configuration, which is part of
    /// the source's key anyway, or on the clones).
    Nothing,
    /// The source VM, in `before_capture`. `derivable`: the change can be made to a source that
    /// is already held and snapshotted, and snapshotted again (a derived snapshot).
    Source { derivable: bool },
    /// The disk the clones start from, in `on_image` (a live snapshot's frozen disk, shared by
    /// every scenario of that snapshot; an image copy's own copy).
    Image,
}

#[async_trait]
pub trait Fixup: Send + Sync {
    fn id(&self) -> FixupId;
    /// What it changes before the clones start (`before_capture`, `on_image`). A fix-up that
    /// implements either must say so here, or scenarios would share a source it changed.
    fn shapes(&self) -> Shapes {
        Shapes::Nothing
    }
    /// What the backend must be able to do.
    fn requires(&self) -> &'static [Capability];
    /// What this fix-up did, for the first line of the report's notes (None: it reports its own).
    fn describe(&self) -> Option<&'static str>;

    /// Shape the scenario's machine. Runs at plan time: an error (the guest cannot take this
    /// fix-up) stops the scenario before any VM starts.
    fn configure(&self, _machine: &mut Machine) -> Result<(), String> {
        Ok(())
    }
    /// Shape each VM's fresh arguments.
    fn clone_args(&self, _args: &mut CloneArgs) {}
    /// What the guest must wait for before its first RNG read after resume.
    fn gate(&self, _machine: &Machine) -> Option<clonesafe_protocol::Gate> {
        None
    }
    /// In the VM about to be snapshotted (live) or shut down (image copy).
    async fn before_capture(&self, _cx: &Ctx<'_>, _vm: &mut dyn Vm, _notes: &mut Vec<String>) -> Result<(), RecipeError> {
        Ok(())
    }
    /// On the disk image every clone will be made from (`what` names it for notes).
    async fn on_image(&self, _cx: &Ctx<'_>, _image: &Path, _what: &str, _notes: &mut Vec<String>) -> Result<(), RecipeError> {
        Ok(())
    }
    /// In a clone right after `go`; returns what it measured.
    async fn on_resume(&self, _cx: &Ctx<'_>, _vm: &mut dyn Vm, _early: &crate::probes::Early) -> Result<Vec<(MeasurementId, Option<f64>)>, RecipeError> {
        Ok(vec![])
    }
}

/// How a scenario's VMs are built: the same for every scenario of a run but its directory, and
/// nothing the scenario file says.
pub struct Build<'a> {
    pub backend: &'a dyn Backend,
    /// The static probe, for guests probed through qemu-guest-agent.
    pub probe_bin: Option<std::sync::Arc<crate::agent::Injected>>,
    /// This scenario's private directory (removed with the run).
    pub dir: PathBuf,
    pub timeouts: Timeouts,
    /// How many VMs may boot or restore at once.
    pub jobs: usize,
    pub sink: &'a dyn EventSink,
    pub started: Instant,
    /// Where the segment's capture is kept with the report (`<scenario>.pcap`).
    pub captures: Option<PathBuf>,
}

/// One scenario's run: how VMs are built ([`Build`]), what the scenario asks (its recipe, counts,
/// expectations, network, declared identities: [`ScenarioPlan`]), and what follows from both.
pub struct Ctx<'a> {
    pub build: Build<'a>,
    pub scenario: &'a ScenarioPlan,
    /// Every VM of the scenario is built as this machine (the guest, shaped by the fix-ups;
    /// clones take their snapshot's).
    pub machine: Machine,
    /// The recipe's fix-ups, in the scenario's order.
    pub fixups: Vec<&'static dyn Fixup>,
    /// The scenario's network segment, once `clones::open` has made it (`network = "segment"`).
    pub segment: std::sync::OnceLock<std::sync::Arc<crate::network::segment::Segment>>,
    /// The source this scenario shares with others of the run (None: it boots its own).
    pub shared: Option<&'a SharedSource>,
}

impl Ctx<'_> {
    pub fn emit(&self, kind: EventKind) {
        self.build.sink.emit(crate::events::Event::now(self.build.started, Some(self.scenario.name.clone()), kind));
    }

    /// `clonesafe-<pid>-<scenario>-<role><i>`: unique per run, and it names its owner.
    pub fn vm_name(&self, role: &str, i: usize) -> String {
        format!("{NAME_PREFIX}{}-{}-{role}{i}", std::process::id(), self.scenario.name)
    }

    /// A fresh identity and a directory for one VM, shaped by every fix-up.
    pub fn args(&self, role: &str, i: usize) -> CloneArgs {
        let mut args = CloneArgs::fresh(HostIdentity::fresh(self.vm_name(role, i)), self.build.dir.join(format!("{role}{i}")), &self.machine);
        args.segment = self.segment.get().cloned();
        for f in &self.fixups {
            f.clone_args(&mut args);
        }
        args
    }

    /// Write `args`'s NoCloud seed into its directory when the scenario gives VMs one: a
    /// `cidata` ISO with the instance-id (the VM's name, or one shared by all) and the VM's name
    /// as local-hostname.
    pub async fn write_seed(&self, args: &CloneArgs) -> Result<(), RecipeError> {
        let Some(mode) = self.scenario.nocloud else { return Ok(()) };
        let name = &args.identity.name;
        let instance = match mode {
            crate::scenario::NoCloud::PerVm => name.clone(),
            crate::scenario::NoCloud::Shared => format!("clonesafe-shared-{}", self.scenario.name),
        };
        let src = args.dir.join("seed");
        let io = |what: String| move |source| RecipeError::Io { what, source };
        std::fs::create_dir_all(&src).map_err(io(format!("create {}", src.display())))?;
        std::fs::write(src.join("meta-data"), format!("instance-id: {instance}\nlocal-hostname: {name}\n")).map_err(io("write meta-data".into()))?;
        std::fs::write(src.join("user-data"), "#cloud-config\n").map_err(io("write user-data".into()))?;
        let iso = args.dir.join("seed.iso");
        let out = tokio::process::Command::new("genisoimage")
            .args(["-quiet", "-volid", "cidata", "-joliet", "-rock", "-output"])
            .arg(&iso)
            .arg(src.join("user-data"))
            .arg(src.join("meta-data"))
            .output()
            .await
            .map_err(io("run genisoimage (is genisoimage installed?)".into()))?;
        if !out.status.success() {
            return Err(RecipeError::Sysprep(format!("genisoimage: {}", String::from_utf8_lossy(&out.stderr).trim())));
        }
        Ok(())
    }

    /// Boot one VM as `machine`, timing it from VMM start to its agent ready (for guests
    /// probed through qemu-guest-agent: their boot finished and the probe injected). The agent's
    /// notes on the way (what systemd said, the guest's OS, the probe) go into `notes`.
    pub async fn boot_one(&self, machine: &Machine, args: CloneArgs, notes: &mut Vec<String>) -> Result<(Box<dyn Vm>, u64), RecipeError> {
        let name = args.identity.name.clone();
        self.write_seed(&args).await?;
        self.emit(EventKind::Booting { vm: name.clone() });
        let t = Instant::now();
        let mut vm = self.build.backend.boot(machine, args, &self.build.timeouts).await?;
        let bin = self.build.probe_bin.clone();
        let boot_t = self.build.timeouts.boot;
        for n in crate::probes::call(vm.as_mut(), "prepare the guest", |a| Box::pin(async move { a.prepare(bin.as_deref(), boot_t).await })).await.unwrap_or_else(|e| vec![e.to_string()]) {
            if !notes.contains(&n) {
                notes.push(n);
            }
        }
        let ms = t.elapsed().as_millis() as u64;
        let cpu_ms = vm.host_pid().and_then(crate::backend::cpu_ns).map(|ns| ns / 1_000_000);
        if self.segment.get().is_some() {
            // Not part of the boot time: on a segment, a VM is snapshotted or compared bound.
            match crate::probes::wait_address(vm.as_mut(), self.build.timeouts.probe).await {
                Ok(waited) => notes.push(format!("{name} held its segment addresses {waited} ms after its agent answered")),
                Err(why) => notes.push(why),
            }
        }
        self.emit(EventKind::Booted { vm: name, ms, cpu_ms });
        Ok((vm, ms))
    }
}

/// Every VM that a recipe started; all are destroyed at the end, and dropping the fleet (error,
/// panic, Ctrl-C) kills whatever is left.
#[derive(Default)]
pub struct Fleet(pub Vec<Box<dyn Vm>>);

impl Fleet {
    pub async fn destroy(&mut self) {
        futures::future::join_all(std::mem::take(&mut self.0).into_iter().map(|vm| vm.destroy())).await;
    }
}

/// Boot `cx.scenario.clones` VMs as `machine` (at most `cx.build.jobs` at a time) into `fleet`, to be
/// compared in role `role`. Boot times go into `boot_ms`.
pub async fn boot_all(cx: &Ctx<'_>, fleet: &mut Fleet, machine: &Machine, role: VmRole, boot_ms: &mut Vec<u64>, notes: &mut Vec<String>) -> Result<Vec<Compared>, RecipeError> {
    use futures::stream::{self, StreamExt};
    let n = cx.scenario.clones as usize;
    let args: Vec<CloneArgs> = (0..n).map(|i| cx.args(role.as_str(), i)).collect();
    let booted: Vec<_> = stream::iter(args.into_iter().map(|a| async move {
        let mut n = Vec::new();
        cx.boot_one(machine, a, &mut n).await.map(|(vm, ms)| (vm, ms, n))
    }))
    .buffered(cx.build.jobs)
    .collect()
    .await;
    let mut compared = Vec::new();
    let mut first_err = None;
    for b in booted {
        match b {
            Ok((vm, ms, n)) => {
                boot_ms.push(ms);
                compared.push(Compared { index: fleet.0.len(), role, early: None, measurements: Default::default() });
                fleet.0.push(vm);
                for note in n {
                    if !notes.contains(&note) {
                        notes.push(note);
                    }
                }
            }
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(compared),
    }
}

/// A source that several scenarios use, with what has been made of it.
pub struct SharedSource {
    /// Its name in the run (`<first scenario>-source`, or `-template` for image copies); its
    /// VM is `clonesafe-<pid>-<id>`.
    pub id: String,
    /// The scenarios that use it, in the order they run.
    pub used_by: Vec<String>,
    /// Its private directory: the VM's files, its snapshots (guest memory).
    pub dir: PathBuf,
    state: tokio::sync::Mutex<State>,
}

/// What the scenarios of a shared source have made of it so far.
#[derive(Default)]
pub struct State {
    /// The source VM (empty until the first scenario boots it).
    pub fleet: Fleet,
    /// The scenario that booted it.
    pub booted_in: Option<String>,
    /// Why booting or snapshotting it failed: every later scenario fails with this.
    pub failed: Option<String>,
    /// Its snapshots, the first taken of the source as booted, a second derived one after.
    pub stages: Vec<Arc<Stage>>,
    /// An image-copy template's shut-down disk.
    pub template: Option<Arc<Template>>,
}

impl State {
    /// `r`, its error also kept as the cause every later scenario of the source fails with.
    pub fn record<T>(&mut self, r: Result<T, RecipeError>) -> Result<T, RecipeError> {
        if let Err(e) = &r {
            self.failed = Some(crate::error_chain(e));
        }
        r
    }
}

/// One snapshot of a source, and what was planted in it.
pub struct Stage {
    /// The fix-ups that changed the source before this snapshot (`clones::source::shaping`).
    pub shaping: Vec<FixupId>,
    pub snap: Snapshot,
    /// The canary planted before the first snapshot, and the positive control.
    pub canary: Option<(String, Option<String>)>,
    pub source_mac: String,
    /// The scenario that took it.
    pub made_in: String,
}

/// A template booted once, shut down, whose disk each image-copy scenario copies.
pub struct Template {
    pub disk: PathBuf,
    pub canary: Option<(String, Option<String>)>,
    pub mac: String,
    /// What happened to it, for the notes of every scenario that copies it.
    pub notes: Vec<String>,
}

impl SharedSource {
    pub fn new(id: String, used_by: Vec<String>, run_dir: &Path) -> Self {
        let dir = run_dir.join(&id);
        SharedSource { id, used_by, dir, state: Default::default() }
    }

    /// Its state, for the one scenario running now; an error with the cause if an earlier
    /// scenario could not boot or snapshot it.
    pub async fn lock(&self) -> Result<tokio::sync::MutexGuard<'_, State>, RecipeError> {
        let st = self.state.lock().await;
        match &st.failed {
            Some(why) => Err(RecipeError::SharedSource { id: self.id.clone(), why: why.clone() }),
            None => Ok(st),
        }
    }

    /// The source VM's fresh identity and directory, shaped by `cx`'s fix-ups (as its own source's
    /// would be: the machine is the same for every scenario of the source).
    pub fn args(&self, cx: &Ctx<'_>, role: &str, machine: &Machine) -> CloneArgs {
        let name = format!("{NAME_PREFIX}{}-{}", std::process::id(), self.id);
        let mut args = CloneArgs::fresh(HostIdentity::fresh(name), self.dir.join(role), machine);
        for f in &cx.fixups {
            f.clone_args(&mut args);
        }
        args
    }

    /// How `scenario` used it, for its report.
    pub fn use_by(&self, scenario: &str, how: SourceHow, booted_in: Option<&str>) -> SourceUse {
        SourceUse { id: self.id.clone(), how, booted_in: booted_in.unwrap_or(scenario).to_string(), used_by: self.used_by.clone() }
    }

    /// Destroy the source and delete its directory (its snapshots hold guest memory). Returns
    /// what could not be deleted (the run directory's removal tries again).
    pub async fn close(&self) -> Option<String> {
        let mut st = self.state.lock().await;
        st.fleet.destroy().await;
        st.stages.clear();
        st.template = None;
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Some(format!("could not delete {}: {e}", self.dir.display())),
            _ => None,
        }
    }
}
