//! The runner against the in-process fake backend: plumbing, verdicts, errors and teardown,
//! without booting anything. (The real backends have their own tests.)

use clonesafe::backend::fake::FakeBackend;
use clonesafe::backend::{accel::AccelChoice, Backend, BackendKind, Timeouts};
use clonesafe::checks::{CheckId, Verdict};
use clonesafe::events::Recorder;
use clonesafe::runner::{run_plan, Backends, RunOptions};
use clonesafe::scenario::{parse, Plan};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

struct Fake(Arc<FakeBackend>);
impl Backends for Fake {
    fn get(&self, _: BackendKind) -> Result<Arc<dyn Backend>, String> {
        Ok(self.0.clone())
    }
}

/// A directory that looks like a built guest (the fake never reads the files).
fn fake_guests() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("tiny")).unwrap();
    for f in ["vmlinuz", "initrd.img", "data.qcow2", "manifest.json"] {
        std::fs::write(d.path().join("tiny").join(f), "{}").unwrap();
    }
    d
}

fn plan(src: &str) -> Plan {
    Plan { scenarios: parse(Path::new("t.toml"), src).unwrap() }
}

async fn run(p: &Plan, fake: Arc<FakeBackend>, boot_timeout: Duration) -> (clonesafe::report::Report, tempfile::TempDir) {
    let guests = fake_guests();
    let work = tempfile::tempdir().unwrap();
    let opts = RunOptions {
        accel: AccelChoice::Tcg,
        jobs: 2,
        guests_dir: guests.path().to_path_buf(),
        work_root: work.path().join("runs"),
        timeouts: Timeouts { boot: boot_timeout, ..Timeouts::default() },
    };
    let rec = Recorder::default();
    let r = run_plan(p, &opts, &Fake(fake), &rec).await.unwrap();
    assert!(!rec.0.lock().unwrap().is_empty(), "the runner emits events");
    assert_eq!(std::fs::read_dir(work.path().join("runs")).unwrap().count(), 0, "run directory removed");
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

#[tokio::test]
async fn naive_clones_share_state_and_cold_boots_do_not() {
    let fake = Arc::new(FakeBackend::default());
    let (r, _w) = run(&plan(BOTH), fake.clone(), Duration::from_secs(5)).await;
    assert_eq!(fake.live.load(Ordering::SeqCst), 0, "every VM destroyed");
    assert_eq!(r.exit_code(), 0);
    let v = |s: usize, id: CheckId| r.scenarios[s].checks.iter().find(|c| c.id() == id).unwrap().verdict();
    assert_eq!(v(0, CheckId::MachineId), Verdict::Duplicate);
    assert_eq!(v(0, CheckId::Mac), Verdict::Duplicate);
    assert_eq!(v(0, CheckId::DiskSerial), Verdict::Unique);
    assert_eq!(v(0, CheckId::KernelRng), Verdict::Duplicate);
    assert_eq!(v(1, CheckId::MachineId), Verdict::Unique);
    assert_eq!(v(1, CheckId::Vmgenid), Verdict::Skipped);
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
    assert!(!r.scenarios[0].checks.iter().find(|c| c.id() == CheckId::Mac).unwrap().met);
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
    assert!(e.contains("boot (QEMU start to probe ready) timed out") && e.contains("kernel stuck"), "{e}");
}

/// The live fix-up plumbing on the fake: nic-replug makes the guest see the host's MAC (window
/// recorded), agent-fixup regenerates machine-id (fix-up timing recorded).
#[tokio::test]
async fn full_strategy_runs_replug_and_fixup_on_every_clone() {
    let p = plan("[[scenario]]\nname = \"f\"\nstrategy = \"full\"\nclones = 3\n[scenario.expect]\nmac = \"unique\"\nhw_mismatch_ms = \"unique\"\nmachine_id = \"unique\"\n");
    let fake = Arc::new(FakeBackend::default());
    let (r, _w) = run(&p, fake.clone(), Duration::from_secs(5)).await;
    assert_eq!(fake.live.load(Ordering::SeqCst), 0);
    assert_eq!(r.exit_code(), 0, "{:?}", r.scenarios[0].checks.iter().filter(|c| !c.met).map(|c| (c.id(), c.result.detail.clone())).collect::<Vec<_>>());
    let t = &r.scenarios[0].timing;
    assert_eq!(t.nic_window_ms.len(), 3);
    assert_eq!(t.fixup_ms.len(), 3);
    assert_eq!(t.fixup_window_ms.len(), 3);
    // No canary was planted: the remanence check says so instead of guessing.
    let rem = r.scenarios[0].checks.iter().find(|c| c.id() == CheckId::SecretRemanence).unwrap();
    assert_eq!(rem.verdict(), Verdict::Skipped);
}
