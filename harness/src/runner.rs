//! The runner: plan → backend → clones → probes → checks → report. It validates everything it
//! can before starting a VM (bad input changes nothing): every guest is located, every backend
//! answers, and every scenario's needs (its guest's boot and agent, its recipe's method and
//! fix-ups) are checked against its backend's capabilities. It then runs the scenarios (one
//! after another unless `--parallel` says more) and turns each into a [`ScenarioReport`],
//! including the ones that failed.

use crate::backend::accel::{self, AccelChoice, AccelDecision};
use crate::backend::capability::Capability;
use crate::backend::emulator;
use crate::backend::lifecycle::Timeouts;
use crate::backend::snapshot::Machine;
use crate::backend::Backend;
use crate::checks;
use crate::clones::{self, recipe::{Build, Ctx}};
use crate::events::{Event, EventKind, EventSink};
use crate::guest::{AgentTransport, Boot, GuestError, GuestProfile};
use crate::scenario::{Plan, ScenarioPlan};
use clonesafe_metadata::{Accel, BackendKind, CheckReport, Host, Report, ScenarioReport, Timing, Vmm, SCHEMA_VERSION};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

pub struct RunOptions {
    /// The static probe injected into guests that offer qemu-guest-agent.
    pub probe: PathBuf,
    pub accel: AccelChoice,
    pub jobs: usize,
    /// Scenarios run at once (each with up to `jobs` VMs starting at a time).
    pub parallel: usize,
    pub guests_dir: PathBuf,
    pub work_root: PathBuf,
    pub timeouts: Timeouts,
    /// Which part of which plan this run is (`--shard I/N`), recorded in the report.
    pub shard: Option<clonesafe_metadata::Shard>,
    /// Where each segment scenario's capture is kept (`<scenario>.pcap`), if anywhere.
    pub captures: Option<PathBuf>,
    /// What a user's image (`--image`, or a scenario's `image =`) may be: its format and the
    /// backing files its chain may name.
    pub image_policy: crate::guest::image::ImagePolicy,
    /// Scenarios that would boot the same source share one boot (`--no-share`: false).
    pub share: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("scenario {scenario}: {source}")]
    Guest {
        scenario: String,
        #[source]
        source: GuestError,
    },
    #[error("Backend {kind} is not available")]
    Backend {
        kind: BackendKind,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{file}: scenario {scenario} needs {capability} (for {needed_by}), which the {backend} backend does not have (it has: {has})")]
    Capability { file: String, scenario: String, backend: BackendKind, capability: Capability, needed_by: String, has: String },
    #[error("{file}: scenario {scenario}: {message}")]
    Recipe { file: String, scenario: String, message: String },
    #[error("Cannot prepare the run directory in {root}")]
    Workdir {
        root: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Supplies a backend for each kind a plan uses.
pub trait Backends {
    fn get(&self, kind: BackendKind) -> Result<Arc<dyn Backend>, Box<dyn std::error::Error + Send + Sync>>;
}

/// What the guest asks of any backend that runs it.
fn guest_requirements(g: &GuestProfile) -> Vec<(Capability, String)> {
    let mut out = vec![match g.boot {
        Boot::DirectKernel { .. } => (Capability::DirectKernelBoot, format!("guest {}", g.name)),
        Boot::Disk => (Capability::DiskBoot, format!("guest {}", g.name)),
    }];
    match g.agent {
        AgentTransport::SerialProbe => out.push((Capability::SerialProbe, format!("guest {}'s agent", g.name))),
        AgentTransport::Qga => out.push((Capability::QemuGuestAgent, format!("guest {}'s agent", g.name))),
        AgentTransport::None => {}
    }
    out
}

/// A scenario's machine under `accel`, shaped by its fix-ups (which may refuse the guest).
fn machine_of(s: &ScenarioPlan, guest: &GuestProfile, accel: Accel) -> Result<Machine, RunError> {
    let mut m = Machine::new(guest.clone(), s.memory_mib.unwrap_or(guest.memory_mib), accel);
    m.devices.seed = s.nocloud.is_some();
    m.network = s.network;
    m.devices.tpm = s.tpm;
    if s.network == crate::scenario::Network::Segment {
        // Tells a direct-kernel guest to run its DHCP client (guests/tiny/init); disk guests
        // configure their network themselves.
        m.kernel_args.push("clonesafe.net=dhcp".into());
    }
    for f in clones::fixups_of(&s.recipe) {
        f.configure(&mut m).map_err(|message| RunError::Recipe { file: s.file.display().to_string(), scenario: s.name.clone(), message })?;
    }
    Ok(m)
}

pub async fn run_plan(plan: &Plan, opts: &RunOptions, backends: &dyn Backends, sink: &dyn EventSink) -> Result<Report, RunError> {
    let started = Instant::now();
    let note = |text: String| sink.emit(Event::now(started, None, EventKind::Note { text }));

    // Pre-flight, before any VM starts.
    let mut guests: BTreeMap<String, GuestProfile> = BTreeMap::new();
    let mut bks: BTreeMap<BackendKind, Arc<dyn Backend>> = BTreeMap::new();
    for s in &plan.scenarios {
        if !guests.contains_key(&s.guest) {
            let g = match &s.image {
                Some(path) => GuestProfile::from_image(path, &opts.image_policy),
                None => GuestProfile::locate(&opts.guests_dir, &s.guest),
            };
            let g = g.map_err(|source| RunError::Guest { scenario: s.name.clone(), source })?;
            guests.insert(s.guest.clone(), g);
        }
        if let std::collections::btree_map::Entry::Vacant(e) = bks.entry(s.backend) {
            e.insert(backends.get(s.backend).map_err(|source| RunError::Backend { kind: s.backend, source })?);
        }
        let backend = &bks[&s.backend];
        let caps = backend.capabilities();
        let guest = &guests[&s.guest];
        for (capability, needed_by) in guest_requirements(guest).into_iter().chain(clones::requirements(s)) {
            if !caps.has(capability) {
                return Err(RunError::Capability {
                    file: s.file.display().to_string(),
                    scenario: s.name.clone(),
                    backend: s.backend,
                    capability,
                    needed_by,
                    has: caps.to_string(),
                });
            }
        }
        machine_of(s, guest, Accel::Tcg)?;
        if s.network == crate::scenario::Network::Segment {
            if let Some(why) = crate::network::segment::unavailable() {
                return Err(RunError::Recipe { file: s.file.display().to_string(), scenario: s.name.clone(), message: format!("network = \"segment\" cannot run here: {why}") });
            }
        }
    }
    for b in bks.values() {
        for text in b.reap_stale() {
            note(text);
        }
    }
    if plan.scenarios.iter().any(|s| s.network == crate::scenario::Network::Segment) {
        for text in crate::network::segment::reap_stale() {
            note(text);
        }
    }
    for text in crate::secrets::reap_stale_run_dirs(&opts.work_root) {
        note(text);
    }
    let work = crate::secrets::run_dir(&opts.work_root).map_err(|source| RunError::Workdir { root: opts.work_root.clone(), source })?;
    // Guests probed through qemu-guest-agent get the static probe injected; a missing binary is
    // said in each such scenario's notes (its RNG checks are then skipped), not fatal.
    let probe_bin = if guests.values().any(|g| g.agent == AgentTransport::Qga) {
        match crate::agent::Injected::load(&opts.probe) {
            Ok((files, notes)) => {
                notes.into_iter().for_each(note);
                Some(Arc::new(files))
            }
            Err(why) => {
                note(format!("{why}: RNG checks on qemu-guest-agent guests will be skipped"));
                None
            }
        }
    } else {
        None
    };

    let first_guest = guests.values().next().cloned();
    let decision = match (&first_guest, bks.values().next()) {
        (Some(g), Some(b)) => accel::resolve(opts.accel, b.as_ref(), g, work.path()).await,
        _ => AccelDecision { accel: Accel::Tcg, reason: "no scenarios".into() },
    };
    sink.emit(Event::now(
        started,
        None,
        EventKind::RunStarted { scenarios: plan.scenarios.len(), accel: decision.accel.to_string(), accel_reason: decision.reason.clone() },
    ));

    // Scenarios that would boot the same source share it (clones/source.rs): they form a unit
    // and run one after another. Units are independent (own VMs, own directories); up to
    // `parallel` run at once, all on this task, and the reports keep the plan's order.
    let machines: Vec<Machine> = plan.scenarios.iter().map(|s| machine_of(s, &guests[&s.guest], decision.accel)).collect::<Result<_, _>>()?;
    let planned: Vec<(&ScenarioPlan, &Machine)> = plan.scenarios.iter().zip(&machines).collect();
    let units = clones::source::units(&planned, opts.share, |k| bks[&k].source_runs_on());
    for u in units.iter().filter(|u| u.source.is_some()) {
        // Said before any VM starts: which scenarios reuse the first one's snapshot, and which
        // take a derived one.
        let names: Vec<String> = u.scenarios.iter().map(|&i| format!("{}{}", plan.scenarios[i].name, if u.derived.contains(&i) { " (derived)" } else { "" })).collect();
        note(format!("one source for {} scenarios: {}", names.len(), names.join(", ")));
    }
    let runs = units.into_iter().map(|u| {
        let (probe_bin, work) = (probe_bin.clone(), work.path().to_path_buf());
        let machines = &machines;
        let bks = &bks;
        async move {
            let used_by = u.scenarios.iter().map(|&i| plan.scenarios[i].name.clone()).collect();
            let shared = u.source.map(|id| clones::recipe::SharedSource::new(id, used_by, &work));
            let mut out = Vec::new();
            for i in u.scenarios {
                let s = &plan.scenarios[i];
                let backend = bks[&s.backend].clone();
                let build = Build { backend: backend.as_ref(), probe_bin: probe_bin.clone(), dir: work.join(&s.name), timeouts: opts.timeouts, jobs: opts.jobs.max(1), sink, started, captures: opts.captures.clone() };
                let cx = Ctx { build, scenario: s, machine: machines[i].clone(), fixups: clones::fixups_of(&s.recipe), segment: Default::default(), shared: shared.as_ref() };
                let r = run_scenario(&cx).await;
                cx.emit(EventKind::ScenarioFinished { report: Box::new(r.clone()) });
                out.push((i, r));
            }
            if let Some(sh) = &shared {
                if let Some(why) = sh.close().await {
                    note(why);
                }
            }
            out
        }
    });
    use futures::StreamExt;
    let mut reports: Vec<(usize, ScenarioReport)> = futures::stream::iter(runs).buffer_unordered(opts.parallel.max(1)).collect::<Vec<_>>().await.into_iter().flatten().collect();
    reports.sort_by_key(|(i, _)| *i);
    let reports: Vec<ScenarioReport> = reports.into_iter().map(|(_, r)| r).collect();
    if std::env::var_os("CLONESAFE_KEEP_RUN").is_some() {
        // Debugging only: the run directory holds guest memory (secrets). Say where it is.
        let kept = work.keep();
        note(format!("CLONESAFE_KEEP_RUN: kept {} (it holds guest memory; delete it)", kept.display()));
    }
    let mut vmms: Vec<Vmm> = Vec::new();
    for b in bks.values() {
        for v in b.versions() {
            if !vmms.contains(&v) {
                vmms.push(v);
            }
        }
    }
    let report = Report {
        schema_version: SCHEMA_VERSION,
        clonesafe_version: env!("CARGO_PKG_VERSION").into(),
        host: Host {
            accel: decision.accel,
            accel_reason: decision.reason,
            qemu: emulator::qemu_version().unwrap_or_default(),
            kernel: emulator::host_kernel(),
            guest_kernel: first_guest.and_then(|g| g.kernel_release),
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            cpu_model: emulator::host_cpu_model(),
            vmms,
        },
        scenarios: reports,
        shard: opts.shard.clone(),
        assessment: None,
    };
    let passed = report.scenarios.iter().filter(|s| s.passed()).count();
    let (failed, exit_code) = (report.scenarios.len() - passed, report.exit_code());
    sink.emit(Event::now(started, None, EventKind::RunFinished { report: Box::new(report.clone()), passed, failed, exit_code }));
    Ok(report)
}

pub async fn run_scenario(cx: &Ctx<'_>) -> ScenarioReport {
    let s: &ScenarioPlan = cx.scenario;
    let t = Instant::now();
    cx.emit(EventKind::ScenarioStarted { strategy: s.strategy.to_string(), recipe: s.recipe.to_string(), backend: s.backend.to_string(), vms: s.clones });
    let mut report = ScenarioReport {
        name: s.name.clone(),
        description: s.description.clone(),
        backend: s.backend,
        strategy: s.strategy,
        recipe: s.recipe.clone(),
        guest: s.guest.clone(),
        clones: s.clones,
        memory_mib: cx.machine.memory_mib,
        timing: Timing::default(),
        checks: vec![],
        expectations_met: false,
        error: None,
        vms: vec![],
        notes: vec![],
        duration_ms: 0,
        source: None,
    };
    // Make the VMs, gather the evidence, tear the VMs down, judge, report.
    let mut fleet = clones::recipe::Fleet::default();
    let gathered = async {
        let t0 = clones::open(cx)?;
        let mut made = clones::make(cx, &mut fleet).await?;
        let ev = crate::evidence::gather(cx, &mut fleet, &mut made, t0).await?;
        Ok::<_, clones::recipe::RecipeError>((made, ev))
    }
    .await;
    clones::close(cx, &mut fleet).await;
    match gathered {
        Ok((made, ev)) => {
            report.checks = checks::run_all(&ev).into_iter().map(|r| {
                let e = s.expect.get(&r.id).copied();
                CheckReport::new(r, e)
            }).collect();
            report.expectations_met = report.checks.iter().all(|c| c.met);
            report.timing = made.timing;
            report.vms = ev.vms;
            report.notes = made.notes;
            report.source = made.source;
        }
        Err(e) => report.error = Some(crate::error_chain(&e)),
    }
    report.duration_ms = t.elapsed().as_millis() as u64;
    report
}
