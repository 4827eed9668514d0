//! The runner: plan → backend → clones → probes → checks → report. It validates everything it
//! can before starting a VM (bad input changes nothing), runs scenarios one after another, and
//! turns each into a [`ScenarioReport`], including the ones that failed.

use crate::backend::accel::{self, AccelChoice, AccelDecision};
use crate::backend::{Backend, BackendKind, Timeouts};
use crate::checks::{self, CheckContext};
use crate::clones::{self, Ctx};
use crate::events::{Event, EventKind, EventSink};
use crate::guest::{GuestError, GuestImage};
use crate::report::{CheckReport, Host, Report, ScenarioReport};
use crate::scenario::{Plan, ScenarioPlan};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

pub struct RunOptions {
    pub accel: AccelChoice,
    pub jobs: usize,
    pub guests_dir: PathBuf,
    pub work_root: PathBuf,
    pub timeouts: Timeouts,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Guest(#[from] GuestError),
    #[error("Backend {0} is not available: {1}")]
    Backend(BackendKind, String),
    #[error("Cannot prepare the run directory")]
    Workdir(#[source] crate::backend::BackendError),
}

/// Supplies a backend for each kind a plan uses.
pub trait Backends {
    fn get(&self, kind: BackendKind) -> Result<Arc<dyn Backend>, String>;
}

pub async fn run_plan(plan: &Plan, opts: &RunOptions, backends: &dyn Backends, sink: &dyn EventSink) -> Result<Report, RunError> {
    let started = Instant::now();
    // Pre-flight: every guest and backend the plan names, before any VM starts.
    let mut guests = BTreeMap::new();
    let mut bks: BTreeMap<&str, Arc<dyn Backend>> = BTreeMap::new();
    for s in &plan.scenarios {
        if !guests.contains_key(&s.guest) {
            guests.insert(s.guest.clone(), GuestImage::locate(&opts.guests_dir, &s.guest)?);
        }
        let key = match s.backend {
            BackendKind::Qemu => "qemu",
            BackendKind::Libvirt => "libvirt",
        };
        if !bks.contains_key(key) {
            bks.insert(key, backends.get(s.backend).map_err(|e| RunError::Backend(s.backend, e))?);
        }
    }
    for v in crate::cleanup::reap_stale() {
        sink.emit(Event {
            elapsed: started.elapsed(),
            scenario: None,
            kind: EventKind::Note { text: format!("killed a leftover VM {} (pid {}) of a dead run", v.name, v.pid) },
        });
    }
    let work = crate::secrets::run_dir(&opts.work_root).map_err(RunError::Workdir)?;

    let first_guest = guests.values().next().cloned();
    let decision = match (&first_guest, bks.values().next()) {
        (Some(g), Some(b)) => accel::resolve(opts.accel, b.as_ref(), g, work.path()).await,
        _ => AccelDecision { accel: accel::Accel::Tcg, reason: "no scenarios".into() },
    };
    sink.emit(Event {
        elapsed: started.elapsed(),
        scenario: None,
        kind: EventKind::RunStarted {
            scenarios: plan.scenarios.len(),
            accel: decision.accel.qemu_name().into(),
            accel_reason: decision.reason.clone(),
        },
    });

    let mut reports = Vec::new();
    for s in &plan.scenarios {
        let backend = match s.backend {
            BackendKind::Qemu => bks["qemu"].clone(),
            BackendKind::Libvirt => bks["libvirt"].clone(),
        };
        let mut guest = guests[&s.guest].clone();
        if s.mitigate_remanence {
            // Freed pages are zeroed, so a deleted file's page-cache copy does not linger in RAM.
            guest.cmdline.push_str(" init_on_free=1");
        }
        let ctx = Ctx {
            backend: backend.as_ref(),
            guest,
            accel: decision.accel,
            dir: work.path().join(&s.name),
            timeouts: opts.timeouts,
            jobs: opts.jobs.max(1),
            sink,
            started,
            scenario: s,
        };
        reports.push(run_scenario(&ctx).await);
    }
    if std::env::var_os("CLONESAFE_KEEP_RUN").is_some() {
        // Debugging only: the run directory holds guest memory (secrets). Say where it is.
        let kept = work.keep();
        sink.emit(Event { elapsed: started.elapsed(), scenario: None, kind: EventKind::Note { text: format!("CLONESAFE_KEEP_RUN: kept {} (it holds guest memory; delete it)", kept.display()) } });
    }
    Ok(Report {
        clonesafe_version: env!("CARGO_PKG_VERSION").into(),
        host: Host {
            accel: decision.accel.qemu_name().into(),
            accel_reason: decision.reason,
            qemu: crate::doctor::qemu_version().unwrap_or_default(),
            kernel: crate::doctor::host_kernel(),
            guest_kernel: first_guest.and_then(|g| g.kernel_release),
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        },
        scenarios: reports,
    })
}

pub async fn run_scenario(ctx: &Ctx<'_>) -> ScenarioReport {
    let s: &ScenarioPlan = ctx.scenario;
    let t = Instant::now();
    ctx.emit(EventKind::ScenarioStarted { strategy: s.strategy.to_string(), backend: s.backend.to_string(), vms: s.clones });
    let mut report = ScenarioReport {
        name: s.name.clone(),
        backend: s.backend.to_string(),
        strategy: s.strategy.to_string(),
        guest: s.guest.clone(),
        clones: s.clones,
        memory_mib: s.memory_mib,
        timing: Default::default(),
        checks: vec![],
        expectations_met: false,
        error: None,
        vms: vec![],
        notes: vec![],
        duration_ms: 0,
    };
    match clones::run(ctx).await {
        Ok(outcome) => {
            let cx = CheckContext { strategy: s.strategy, remanence: outcome.remanence.as_ref() };
            let results = checks::run_all(&outcome.observations, cx);
            report.checks = results.into_iter().map(|r| { let e = s.expect.get(&r.id).copied(); CheckReport::new(r, e) }).collect();
            report.expectations_met = report.checks.iter().all(|c| c.met);
            report.timing = outcome.timing;
            report.vms = outcome.vms;
            report.notes = outcome.notes;
        }
        Err(e) => report.error = Some(crate::error_chain(&e)),
    }
    report.duration_ms = t.elapsed().as_millis() as u64;
    ctx.emit(EventKind::ScenarioFinished { met: report.expectations_met, error: report.error.clone() });
    report
}
