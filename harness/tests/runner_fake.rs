//! The runner against the in-process fake backend: plumbing, verdicts, errors, teardown and the
//! plan-time capability check, without booting anything. (The real backends have their own
//! tests.)

mod common;

use clonesafe::backend::accel::AccelChoice;
use clonesafe::backend::capability::Capability;
use clonesafe::backend::fake::FakeBackend;
use clonesafe::backend::lifecycle::Timeouts;
use clonesafe::events::Recorder;
use clonesafe::runner::{run_plan, RunError, RunOptions};
use clonesafe::scenario::{parse, Plan};
use clonesafe_metadata::{CheckId, MeasurementId, Report, Strategy, Verdict};
use common::{fake_guests, validate_report, Fake};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

fn plan(src: &str) -> Plan {
    Plan { scenarios: parse(Path::new("t.toml"), src).unwrap() }
}

fn opts(dir: &Path, boot_timeout: Duration) -> RunOptions {
    RunOptions {
        probe: "/nonexistent/probe".into(),
        accel: AccelChoice::Tcg,
        jobs: 2,
        parallel: 1,
        guests_dir: fake_guests(dir),
        work_root: dir.join("runs"),
        timeouts: Timeouts { boot: boot_timeout, ..Timeouts::default() },
        shard: None,
        captures: None,
        image_policy: Default::default(),
        share: true,
    }
}

async fn run(p: &Plan, fake: Arc<FakeBackend>, boot_timeout: Duration) -> (Report, tempfile::TempDir) {
    let work = tempfile::tempdir().unwrap();
    let rec = Recorder::default();
    let r = run_plan(p, &opts(work.path(), boot_timeout), &Fake(fake), &rec).await.unwrap();
    assert!(!rec.0.lock().unwrap().is_empty(), "the runner emits events");
    assert_eq!(std::fs::read_dir(work.path().join("runs")).unwrap().count(), 0, "run directory removed");
    validate_report(&serde_json::to_value(&r).unwrap());
    (r, work)
}

const BOTH: &str = r#"
[[scenario]]
name = "n"
strategy = "naive"
clones = 3
[scenario.expect]
machine_id = "duplicate"
disk_serial = "unique"

[[scenario]]
name = "c"
strategy = "cold-boot"
clones = 2
[scenario.expect]
machine_id = "unique"
"#;

fn v(r: &Report, s: usize, id: CheckId) -> Verdict {
    r.scenarios[s].check(id).unwrap().verdict()
}

#[tokio::test]
async fn naive_clones_share_state_and_cold_boots_do_not() {
    let fake = Arc::new(FakeBackend::default());
    let (r, _w) = run(&plan(BOTH), fake.clone(), Duration::from_secs(5)).await;
    assert_eq!(fake.live.load(Ordering::SeqCst), 0, "every VM destroyed");
    assert_eq!(r.exit_code(), 0);
    assert_eq!(v(&r, 0, CheckId::MachineId), Verdict::Duplicate);
    assert_eq!(v(&r, 0, CheckId::Mac), Verdict::Duplicate);
    assert_eq!(v(&r, 0, CheckId::DiskSerial), Verdict::Unique);
    assert_eq!(v(&r, 0, CheckId::KernelRng), Verdict::Duplicate);
    assert_eq!(v(&r, 1, CheckId::MachineId), Verdict::Unique);
    assert_eq!(v(&r, 1, CheckId::Vmgenid), Verdict::Skipped);
    assert_eq!(r.scenarios[0].timing.restore_ms.len(), 3);
    assert_eq!(r.scenarios[0].timing.boot_ms.len(), 1);
    assert!(r.scenarios[0].timing.snapshot_ms.is_some());
    assert_eq!(r.scenarios[1].timing.boot_ms.len(), 2);
    assert_eq!(r.scenarios[0].vms.len(), 3);
}

#[tokio::test]
async fn an_unmet_expectation_is_exit_1() {
    let p = plan("[[scenario]]\nname = \"n\"\nstrategy = \"naive\"\nclones = 2\n[scenario.expect]\nmac = \"unique\"\n");
    let fake = Arc::new(FakeBackend::default());
    let (r, _w) = run(&p, fake.clone(), Duration::from_secs(5)).await;
    assert_eq!(r.exit_code(), 1);
    assert!(!r.scenarios[0].check(CheckId::Mac).unwrap().met);
    assert_eq!(fake.live.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_boot_that_hangs_fails_the_scenario_not_the_run_and_tears_down_the_others() {
    let fake = Arc::new(FakeBackend::hanging_boot(1));
    let (r, _w) = run(&plan(BOTH), fake.clone(), Duration::from_millis(300)).await;
    assert_eq!(fake.live.load(Ordering::SeqCst), 0, "VMs leaked after a failed boot");
    assert_eq!(r.exit_code(), 2);
    // boot #0 is the naive source, boot #1 the first cold boot.
    assert!(r.scenarios[0].error.is_none());
    let e = r.scenarios[1].error.as_deref().unwrap();
    assert!(e.contains("boot (VMM start to agent ready) timed out") && e.contains("kernel stuck"), "{e}");
}

/// The live fix-up plumbing on the fake: nic-replug makes the guest see the host's MAC (window
/// recorded), agent regenerates machine-id (fix-up timing recorded).
#[tokio::test]
async fn full_strategy_runs_replug_and_fixup_on_every_clone() {
    let p = plan("[[scenario]]\nname = \"f\"\nstrategy = \"full\"\nclones = 3\n[scenario.expect]\nmac = \"unique\"\nhw_mismatch_ms = \"unique\"\nmachine_id = \"unique\"\n");
    let fake = Arc::new(FakeBackend::default());
    let (r, _w) = run(&p, fake.clone(), Duration::from_secs(5)).await;
    assert_eq!(fake.live.load(Ordering::SeqCst), 0);
    assert_eq!(r.exit_code(), 0, "{:?}", r.scenarios[0].checks.iter().filter(|c| !c.met).map(|c| (c.id(), c.result.detail.clone())).collect::<Vec<_>>());
    let t = &r.scenarios[0].timing;
    for id in [MeasurementId::NicWindowMs, MeasurementId::FixupMs, MeasurementId::FixupWindowMs] {
        assert_eq!(t.measurements[&id].len(), 3, "{id}");
    }
    // No canary was planted: the remanence check says so instead of guessing.
    assert_eq!(v(&r, 0, CheckId::SecretRemanence), Verdict::Skipped);
}

/// A recipe composed with method and fixups that equals a preset is that preset, with its
/// verdicts; one that matches no preset is reported as custom with its recipe.
#[tokio::test]
async fn a_composed_recipe_equal_to_a_preset_gives_the_presets_verdicts() {
    let src = "[[scenario]]\nname = \"preset\"\nstrategy = \"full\"\nclones = 2\n\n[[scenario]]\nname = \"composed\"\nmethod = \"live\"\nfixups = [\"nic-replug\", \"vmgenid\", \"agent\"]\nclones = 2\n\n[[scenario]]\nname = \"custom\"\nmethod = \"live\"\nfixups = [\"vmgenid\", \"agent\"]\nclones = 2\n\n[[scenario]]\nname = \"agent\"\nmethod = \"live\"\nfixups = [\"agent\"]\nclones = 2\n";
    let (r, _w) = run(&plan(src), Arc::new(FakeBackend::default()), Duration::from_secs(5)).await;
    assert_eq!(r.scenarios[1].strategy, Strategy::Full);
    let verdicts = |i: usize| r.scenarios[i].checks.iter().map(|c| (c.id(), c.verdict())).collect::<Vec<_>>();
    assert_eq!(verdicts(0), verdicts(1));
    assert_eq!(r.scenarios[2].strategy, Strategy::Custom);
    assert_eq!(r.scenarios[2].recipe_label(), "live+vmgenid+agent");
    assert_eq!(r.scenarios[3].strategy, Strategy::AgentFixup);
}

/// A scenario that needs a capability its backend lacks fails at plan time: exit 2, the error
/// names the capability and the backend, and no VM ever started.
#[tokio::test]
async fn a_missing_capability_fails_at_plan_time_and_starts_no_vm() {
    let fake = Arc::new(FakeBackend::without(Capability::NicHotplug));
    let work = tempfile::tempdir().unwrap();
    let p = plan("[[scenario]]\nname = \"ok\"\nstrategy = \"naive\"\nclones = 2\n\n[[scenario]]\nname = \"replug\"\nstrategy = \"nic-replug\"\nclones = 2\n");
    let e = run_plan(&p, &opts(work.path(), Duration::from_secs(5)), &Fake(fake.clone()), &Recorder::default()).await.unwrap_err();
    assert!(matches!(e, RunError::Capability { capability: Capability::NicHotplug, .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("replug") && msg.contains("nic-hotplug") && msg.contains("qemu backend") && msg.contains("fix-up nic-replug"), "{msg}");
    assert_eq!(fake.started.load(Ordering::SeqCst), 0, "no VM may start when the plan is refused");
    assert!(!work.path().join("runs").exists() || std::fs::read_dir(work.path().join("runs")).unwrap().count() == 0);

    let fake = Arc::new(FakeBackend::without(Capability::LiveSnapshot));
    let p = plan("[[scenario]]\nname = \"n\"\nstrategy = \"naive\"\nclones = 2\n");
    let e = run_plan(&p, &opts(work.path(), Duration::from_secs(5)), &Fake(fake.clone()), &Recorder::default()).await.unwrap_err();
    assert!(e.to_string().contains("live-snapshot (for method live)"), "{e}");
    assert_eq!(fake.started.load(Ordering::SeqCst), 0);

    // A virtual TPM needs swtpm and the emulator's tpm-crb: refused before any VM starts.
    let fake = Arc::new(FakeBackend::without(Capability::Tpm));
    let p = plan("[[scenario]]\nname = \"t\"\nstrategy = \"naive\"\nclones = 2\ntpm = true\n");
    let e = run_plan(&p, &opts(work.path(), Duration::from_secs(5)), &Fake(fake.clone()), &Recorder::default()).await.unwrap_err();
    assert!(e.to_string().contains("tpm (for tpm = true)"), "{e}");
    assert_eq!(fake.started.load(Ordering::SeqCst), 0);
}

/// Declared identities go through the same stages as built-in ones: read through the agent
/// (after the fix-ups, or right after resume), judged, expected, reported with `declared: true`.
#[tokio::test]
async fn declared_identities_get_verdicts_with_evidence() {
    let src = r#"
[[identity]]
id = "mid_file"
file = "/etc/machine-id"

[[identity]]
id = "mid_cmd"
command = ["cat", "/etc/machine-id"]
match = '([0-9a-f]{32})'

[[identity]]
id = "mid_early"
command = ["cat", "/etc/machine-id"]
when = "right-after-resume"

[[identity]]
id = "nowhere"
file = "/var/lib/none"

[[identity]]
id = "slow"
command = ["sleep", "60"]
timeout_s = 1

[[scenario]]
name = "naive"
strategy = "naive"
clones = 2
[scenario.expect]
mid_file = "duplicate"
mid_cmd = "duplicate"

[[scenario]]
name = "fixed"
strategy = "agent-fixup"
clones = 2
[scenario.expect]
mid_file = "unique"
mid_cmd = "unique"
mid_early = "duplicate"
nowhere = "skipped"
slow = "error"
"#;
    let (r, _w) = run(&plan(src), Arc::new(FakeBackend::default()), Duration::from_secs(5)).await;
    let get = |s: usize, id: &str| r.scenarios[s].check(clonesafe_metadata::CheckName::Declared(id.into())).unwrap();
    assert!(r.scenarios.iter().all(|s| s.expectations_met), "{:#?}", r.scenarios.iter().flat_map(|s| s.checks.iter().filter(|c| !c.met)).collect::<Vec<_>>());
    // The fix-up changed machine-id after the early read: shared right after resume, then not.
    let early = get(1, "mid_early");
    assert!(early.result.declared && early.result.detail.contains("ms after resume"), "{early:?}");
    let ev = early.result.evidence.as_ref().unwrap();
    assert_eq!(ev["when"], "right-after-resume");
    assert!(ev["vms"][0]["reading"]["ms_after_resume"].is_u64(), "{ev}");
    // A file is compared by digest; a command's capture by its value.
    assert_eq!(get(0, "mid_file").result.values[0].as_str().unwrap().len(), 64);
    assert_eq!(get(0, "mid_cmd").result.values[0].as_str().unwrap().len(), 32);
    assert!(get(1, "nowhere").result.detail.contains("absent in every VM"));
    assert!(get(1, "slow").result.detail.contains("still running after 1 s"), "{:?}", get(1, "slow").result.detail);
    // The report says which are declared, and the JSON form carries it.
    let j = serde_json::to_value(&r).unwrap();
    let checks = j["scenarios"][1]["checks"].as_array().unwrap();
    assert!(checks.iter().any(|c| c["id"] == "slow" && c["declared"] == true));
    assert!(checks.iter().filter(|c| c["id"] == "mac").all(|c| c.get("declared").is_none()));
}

/// A shared source that cannot boot fails every scenario that shares it, the later ones with the
/// first one's cause, and leaves nothing behind (`run` checks the run directory is gone).
#[tokio::test]
async fn a_shared_source_that_fails_fails_its_scenarios_with_its_cause() {
    let src = "[[scenario]]\nname = \"a\"\nstrategy = \"naive\"\nclones = 2\n\n[[scenario]]\nname = \"b\"\nstrategy = \"agent-fixup\"\nclones = 2\n\n[[scenario]]\nname = \"c\"\nstrategy = \"nic-replug\"\nclones = 2\n";
    let fake = Arc::new(FakeBackend::hanging_boot(0));
    let (r, _w) = run(&plan(src), fake.clone(), Duration::from_millis(300)).await;
    assert_eq!(fake.live.load(Ordering::SeqCst), 0, "VMs leaked after a shared source failed");
    assert_eq!(r.exit_code(), 2);
    let first = r.scenarios[0].error.as_deref().unwrap();
    assert!(first.contains("timed out"), "{first}");
    for s in &r.scenarios[1..] {
        let e = s.error.as_deref().unwrap();
        assert!(e.contains("the shared source a-source failed in an earlier scenario") && e.contains("timed out"), "{}: {e}", s.name);
    }
}
