//! The `clonesafe` binary end to end: exit codes, report.json, clear errors, and no VM left
//! behind on success, on an unmet expectation, or on Ctrl-C.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn clonesafe(args: &[&str], work: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_clonesafe"));
    c.args(args).env("CLONESAFE_WORKDIR", work.join("runs"));
    c
}

fn run(args: &[&str], work: &Path) -> Output {
    let out = clonesafe(args, work).output().expect("run clonesafe");
    eprintln!("--- stdout\n{}\n--- stderr\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

fn runs_left(work: &Path) -> usize {
    std::fs::read_dir(work.join("runs")).map(|d| d.count()).unwrap_or(0)
}

fn repo(p: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p).display().to_string()
}

/// The default suite, through the binary, under `--accel auto`: exit 0, the report contract,
/// and the verdicts issue #2 asks to be shown.
#[test]
fn smoke_suite_passes_and_writes_the_report_contract() {
    if guest().is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let out_dir = work.path().join("out");
    let t = Instant::now();
    let out = run(&["run", &repo("scenarios/smoke.toml"), "--out", out_dir.to_str().unwrap()], work.path());
    assert!(t.elapsed() < VM_TEST_BOUND, "took {:?}", t.elapsed());
    assert_eq!(out.status.code(), Some(0));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out_dir.join("report.json")).unwrap()).unwrap();
    for k in ["clonesafe_version", "host", "scenarios"] {
        assert!(r.get(k).is_some(), "report lacks {k}");
    }
    for k in ["accel", "qemu", "kernel"] {
        assert!(r["host"].get(k).is_some(), "host lacks {k}");
    }
    let scen = |name: &str| r["scenarios"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap().clone();
    let verdict = |s: &serde_json::Value, id: &str| {
        let c = s["checks"].as_array().unwrap().iter().find(|c| c["id"] == id).unwrap().clone();
        assert_eq!(c["values"].as_array().unwrap().len(), s["clones"].as_u64().unwrap() as usize, "{id}: one value per VM");
        c["verdict"].as_str().unwrap().to_string()
    };
    let naive = scen("naive");
    let cold = scen("cold-boot");
    for s in [&naive, &cold] {
        for k in ["name", "backend", "strategy", "guest", "clones", "memory_mib", "timing", "checks", "expectations_met"] {
            assert!(s.get(k).is_some(), "scenario lacks {k}");
        }
        assert_eq!(s["expectations_met"], true);
    }
    for id in ["smbios_uuid", "boot_id", "mac", "machine_id", "hostname", "ssh_host_keys", "userspace_rng"] {
        assert_eq!(verdict(&naive, id), "duplicate", "naive {id}");
        assert_eq!(verdict(&cold, id), "unique", "cold-boot {id}");
    }
    let k = naive["checks"].as_array().unwrap().iter().find(|c| c["id"] == "kernel_rng").unwrap();
    assert!(k["values"].as_array().unwrap().iter().all(|v| v.as_str().is_some_and(|s| s.len() == 16)), "{k}");
    assert!(k["evidence"]["per_sample"].as_array().unwrap().len() >= 2, "{k}");
    assert_eq!(naive["timing"]["restore_ms"].as_array().unwrap().len(), 3);
    assert!(naive["timing"]["snapshot_ms"].as_u64().is_some());
    assert_eq!(cold["timing"]["boot_ms"].as_array().unwrap().len(), 2);
    assert_eq!(runs_left(work.path()), 0, "run directory (with snapshots) left behind");
}


/// An expectation that reality contradicts: exit 1, and still nothing left running.
#[test]
fn an_unmet_expectation_exits_1_and_leaks_nothing() {
    if guest().is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let f = work.path().join("wrong.toml");
    std::fs::write(&f, "[[scenario]]\nname = \"wrong\"\nstrategy = \"naive\"\nclones = 2\n[scenario.expect]\nmac = \"unique\"\n").unwrap();
    let child = clonesafe(&["run", f.to_str().unwrap(), "--accel", "tcg", "--out", work.path().join("o").to_str().unwrap()], work.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("EXPECTATIONS NOT MET"), "{stdout}");
    assert!(settle_blocking(pid).is_empty(), "VMs left behind");
    assert_eq!(runs_left(work.path()), 0);
}

/// Ctrl-C in the middle of a run: exit 130, every VM torn down, snapshots deleted.
#[test]
fn ctrl_c_tears_everything_down() {
    if guest().is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let mut child = clonesafe(&["run", &repo("scenarios/smoke.toml"), "--accel", "tcg", "--out", work.path().join("o").to_str().unwrap()], work.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    while vms_of(pid).is_empty() {
        assert!(Instant::now() < deadline, "no VM started");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(settle_blocking(pid).is_empty(), "VMs left behind after Ctrl-C");
    assert_eq!(runs_left(work.path()), 0, "run directory left behind after Ctrl-C");
}

/// Bad input changes nothing: clear errors, exit 2, no VM started.
#[test]
fn bad_input_gets_a_clear_error_and_exit_2() {
    let work = tempfile::tempdir().unwrap();
    let f = work.path().join("bad.toml");
    std::fs::write(&f, "[[scenario]]\nname = \"x\"\nstrategy = \"naive\"\nclones = 2\nmemroy_mib = 256\n").unwrap();
    let out = run(&["run", f.to_str().unwrap()], work.path());
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:5:") && err.contains("memroy_mib"), "{err}");

    let out = clonesafe(&["run", &repo("scenarios/smoke.toml")], work.path()).env("CLONESAFE_GUESTS", work.path().join("none")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not built") && err.contains("build.sh"), "{err}");

    let out = run(&["run", work.path().join("missing.toml").to_str().unwrap()], work.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
    assert_eq!(runs_left(work.path()), 0);
}

#[test]
fn help_documents_exit_codes() {
    let out = Command::new(env!("CARGO_BIN_EXE_clonesafe")).args(["run", "--help"]).output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("Exit codes") && s.contains("--accel") && s.contains("--backend"), "{s}");
}
