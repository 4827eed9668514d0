//! The `clonesafe` binary end to end: exit codes, report.json (validated against its schema),
//! clear errors, and no VM left behind on success, on an unmet expectation, or on Ctrl-C.

mod common;

use common::*;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

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
    let ran = run_files(&[&repo("scenarios/smoke.toml")], &out_dir, &[], work.path());
    assert!(t.elapsed() < VM_TEST_BOUND, "took {:?}", t.elapsed());
    assert_eq!(ran.code(), Some(0));
    let r = ran.report();
    for k in ["schema_version", "clonesafe_version", "host", "scenarios"] {
        assert!(r.get(k).is_some(), "report lacks {k}");
    }
    for k in ["accel", "qemu", "kernel", "cpu_model", "vmms"] {
        assert!(r["host"].get(k).is_some(), "host lacks {k}");
    }
    assert_eq!(r["host"]["vmms"][0]["name"], "qemu");
    let naive = ran.scenario("naive");
    let cold = ran.scenario("cold-boot");
    for s in [&naive, &cold] {
        for k in ["name", "backend", "strategy", "recipe", "guest", "clones", "memory_mib", "timing", "checks", "expectations_met"] {
            assert!(s.get(k).is_some(), "scenario lacks {k}");
        }
        assert_eq!(s["expectations_met"], true);
        // Each VM names the host that ran it: this machine, for QEMU.
        let here = clonesafe::backend::local_hostname();
        assert!(s["vms"].as_array().unwrap().iter().all(|v| v["host"] == here.as_str()), "{}", s["vms"]);
        for c in s["checks"].as_array().unwrap().iter().filter(|c| c["id"] != "secret_remanence") {
            assert_eq!(c["values"].as_array().unwrap().len(), s["clones"].as_u64().unwrap() as usize, "{}: one value per VM", c["id"]);
        }
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
    // The event stream: timestamped, and it ends with the finished report.
    let events = std::fs::read_to_string(out_dir.join("events.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(events.lines().last().unwrap()).unwrap();
    assert_eq!(last["kind"], "run_finished");
    assert_eq!((last["passed"].as_u64(), last["exit_code"].as_i64()), (Some(2), Some(0)));
    assert!(last["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(runs_left(work.path()).len(), 0, "run directory (with snapshots) left behind");
}

/// An expectation that reality contradicts: exit 1, and still nothing left running. The run
/// directory has commas in its path (issue 19, item 11: QEMU's -drive and -chardev took them as
/// option separators).
#[test]
fn an_unmet_expectation_exits_1_and_leaks_nothing() {
    if guest().is_none() {
        return;
    }
    let work = tempfile::Builder::new().prefix("work,with,commas").tempdir().unwrap();
    let f = work.path().join("wrong.toml");
    std::fs::write(&f, "[[scenario]]\nname = \"wrong\"\nstrategy = \"naive\"\nclones = 2\n[scenario.expect]\nmac = \"unique\"\n").unwrap();
    let out = work.path().join("o");
    let child = clonesafe(&["run", f.to_str().unwrap(), "--accel", "tcg", "--out", out.to_str().unwrap()], work.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let ran = finish(child, &out);
    assert_eq!(ran.code(), Some(1), "{}", ran.stdout());
    assert!(ran.stdout().contains("EXPECTATIONS NOT MET"), "{}", ran.stdout());
    assert!(settle_blocking(pid).is_empty(), "VMs left behind");
    assert_eq!(runs_left(work.path()).len(), 0);
}

/// Ctrl-C (and SIGTERM) in the middle of a run: exit 130 (143), every VM torn down, snapshots
/// deleted.
#[test]
fn ctrl_c_tears_everything_down() {
    if guest().is_none() {
        return;
    }
    for (signal, code) in [(libc::SIGINT, clonesafe_metadata::exit_codes::INTERRUPTED), (libc::SIGTERM, clonesafe_metadata::exit_codes::TERMINATED)] {
        interrupted_run_tears_everything_down(signal, code);
    }
}

fn interrupted_run_tears_everything_down(signal: i32, code: i32) {
    let work = tempfile::tempdir().unwrap();
    let smoke = repo("scenarios/smoke.toml");
    let mut child = clonesafe(&["run", smoke.to_str().unwrap(), "--accel", "tcg", "--out", work.path().join("o").to_str().unwrap()], work.path())
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
    unsafe { libc::kill(pid as i32, signal) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(code), "signal {signal}");
    assert!(settle_blocking(pid).is_empty(), "VMs left behind after signal {signal}");
    assert_eq!(runs_left(work.path()).len(), 0, "run directory left behind after signal {signal}");
}

/// Issue 11, item 7: `--out` is checked before any VM starts.
#[test]
fn an_unwritable_out_stops_the_run_before_any_vm() {
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let smoke = repo("scenarios/smoke.toml");
    let started = Instant::now();
    let ran = run_files(&[&smoke], &file.join("out"), &[], work.path());
    assert_eq!(ran.code(), Some(2), "{}", ran.stderr());
    assert!(ran.stderr().contains("cannot write the report into") && ran.stderr().contains("not-a-dir"), "{}", ran.stderr());
    assert!(started.elapsed() < Duration::from_secs(10), "no VM may boot first");
    assert_eq!(runs_left(work.path()).len(), 0);
}

/// Bad input changes nothing: clear errors, exit 2, no VM started.
#[test]
fn bad_input_gets_a_clear_error_and_exit_2() {
    let work = tempfile::tempdir().unwrap();
    let f = work.path().join("bad.toml");
    std::fs::write(&f, "[[scenario]]\nname = \"x\"\nstrategy = \"naive\"\nclones = 2\nmemroy_mib = 256\n").unwrap();
    let out = work.path().join("o");
    let ran = run_files(&[&f], &out, &[], work.path());
    assert_eq!(ran.code(), Some(2));
    assert!(ran.stderr().contains("bad.toml:5:") && ran.stderr().contains("memroy_mib"), "{}", ran.stderr());

    let smoke = repo("scenarios/smoke.toml");
    let o = clonesafe(&["run", smoke.to_str().unwrap(), "--out", out.to_str().unwrap()], work.path()).env("CLONESAFE_GUESTS", work.path().join("none")).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("Unknown guest \"tiny\"") && err.contains("ci/setup.sh"), "{err}");

    let ran = run_files(&[&work.path().join("missing.toml")], &out, &[], work.path());
    assert_eq!(ran.code(), Some(2));
    assert!(ran.stderr().contains("cannot read"));
    assert_eq!(runs_left(work.path()).len(), 0);
}

#[test]
fn help_documents_exit_codes() {
    let out = clonesafe(&["run", "--help"], Path::new("/tmp")).output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("Exit codes") && s.contains("--accel") && s.contains("--backend") && s.contains("143"), "{s}");
}

/// `clonesafe report schema` prints a JSON Schema that names the contract's fields.
#[test]
fn report_schema_prints_a_json_schema() {
    let out = clonesafe(&["report", "schema"], Path::new("/tmp")).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["$schema"].as_str().unwrap().contains("json-schema.org"), "{v}");
    for k in ["schema_version", "clonesafe_version", "host", "scenarios"] {
        assert!(v["required"].as_array().unwrap().iter().any(|r| r == k), "schema does not require {k}");
    }
}

/// A guest whose disk is not a disk image fails its scenario with an error that names the VM and
/// what qemu-img said, exits 1, and leaves no VM or run directory behind. (Both real backends now
/// have every capability, so the plan-time capability check is covered by runner_fake.rs.)
#[test]
fn a_broken_guest_disk_is_a_clear_error_and_leaks_nothing() {
    let work = tempfile::tempdir().unwrap();
    let g = work.path().join("guests/diskonly");
    std::fs::create_dir_all(&g).unwrap();
    std::fs::write(g.join("disk.qcow2"), "").unwrap();
    std::fs::write(g.join("guest.toml"), "name = \"diskonly\"\n[boot]\nkind = \"disk\"\ndisk = \"disk.qcow2\"\n[agent]\ntransport = \"serial-probe\"\n").unwrap();
    let f = work.path().join("s.toml");
    std::fs::write(&f, "[[scenario]]\nname = \"d\"\nguest = \"diskonly\"\nstrategy = \"naive\"\nclones = 2\n").unwrap();
    let out = work.path().join("o");
    let mut c = clonesafe(&["run", f.to_str().unwrap(), "--out", out.to_str().unwrap(), "--accel", "tcg"], work.path());
    c.env("CLONESAFE_GUESTS", work.path().join("guests")).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    let pid = child.id();
    let ran = finish(child, &out);
    // A VM that failed is exit 2 (the harness could not run the scenario), not 1.
    assert_eq!(ran.code(), Some(clonesafe_metadata::exit_codes::HARNESS_ERROR), "{}", ran.stderr());
    assert!(ran.stdout().contains("-d-source0: disk image") && ran.stdout().contains("not in qcow2 format"), "{}", ran.stdout());
    assert!(vms_of(pid).is_empty());
    assert_eq!(runs_left(work.path()).len(), 0, "no run directory either");
}

/// A 2-clone naive scenario of the tiny guest on `backend`, in `dir`, with `extra` lines.
fn naive_with(dir: &Path, backend: &str, extra: &str) -> std::path::PathBuf {
    let f = dir.join(format!("naive-{backend}.toml"));
    std::fs::write(&f, format!("[[scenario]]\nname = \"naive\"\nbackend = \"{backend}\"\nstrategy = \"naive\"\nclones = 2\nmemory_mib = 256\n{extra}")).unwrap();
    f
}

/// swtpm processes (ours: argv[0] `swtpm:<vm>`; libvirt's: its log file names the domain)
/// serving a VM whose name says process `owner` made it.
fn swtpms_of(owner: u32) -> Vec<String> {
    let prefix = format!("{}{owner}-", clonesafe::identity::NAME_PREFIX);
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.split(' ').next().is_some_and(|a| a.contains("swtpm")) && c.contains(&prefix))
        .collect()
}

/// libvirt domains (running or not) whose names say process `owner` made them.
fn domains_of(owner: u32) -> Vec<String> {
    let o = std::process::Command::new("virsh").args(["-c", "qemu:///system", "list", "--all", "--name"]).output().unwrap();
    let prefix = format!("{}{owner}-", clonesafe::identity::NAME_PREFIX);
    String::from_utf8_lossy(&o.stdout).lines().map(str::trim).filter(|n| n.starts_with(&prefix)).map(str::to_string).collect()
}

fn libvirt_answers() -> bool {
    let ok = std::process::Command::new("virsh").args(["-c", "qemu:///system", "version"]).output().is_ok_and(|o| o.status.success());
    assert!(ok || std::env::var("CLONESAFE_REQUIRE_VMS").map_or(true, |v| v != "1"), "libvirtd is required in CI");
    ok
}

/// Start `clonesafe run FILE` and return once its progress output (stderr) has shown `line`
/// (and a further `after`), with the child still running.
/// Issue 11, item 2: a run killed with SIGKILL left its run directory (with the memory snapshot
/// in it) for good, on both backends. The next run reaps its VMs, domains and directory, and
/// says so.
#[test]
fn a_run_killed_with_sigkill_is_reaped_by_the_next_run() {
    if guest().is_none() {
        return;
    }
    for backend in ["qemu", "libvirt"] {
        if backend == "libvirt" && !libvirt_answers() {
            continue;
        }
        let work = tempfile::tempdir().unwrap();
        // With a TPM: each VM's swtpm must go too (issue 22).
        let file = naive_with(work.path(), backend, "tpm = true\n");
        let mut child = run_until(&file, work.path(), &[], "snapshot of", Duration::from_millis(500));
        let pid = child.id();
        assert!(!swtpms_of(pid).is_empty(), "{backend}: the VMs have their swtpm");
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        child.wait().unwrap();
        assert_eq!(runs_left(work.path()).len(), 1, "{backend}: the killed run's directory should be there to reap");
        if backend == "libvirt" {
            // libvirtd owns the domains, so they outlive a SIGKILLed harness (QEMU processes the
            // harness started die with it, through PR_SET_PDEATHSIG, or are reaped below).
            assert!(!domains_of(pid).is_empty(), "SIGKILL leaves the domains running; the next run must reap them");
        }

        let ran = run_files(&[&file], &work.path().join("o2"), &["--accel", "tcg"], work.path());
        assert_eq!(ran.code(), Some(0), "{backend}: {}", ran.stderr());
        let said = ran.stdout() + &ran.stderr();
        assert!(said.contains(&format!("of a dead run (pid {pid})")), "{backend}: the reaping is said: {said}");
        assert_eq!(runs_left(work.path()).len(), 0, "{backend}: run directories left");
        let left = if backend == "qemu" { settle_blocking(pid) } else { domains_of(pid) };
        assert!(left.is_empty(), "{backend}: VMs of the killed run left: {left:?}");
        assert!(swtpms_of(pid).is_empty(), "{backend}: swtpm of the killed run left: {:?}", swtpms_of(pid));
        assert!(swtpms_of(ran.pid).is_empty(), "{backend}: swtpm of the second run left: {:?}", swtpms_of(ran.pid));
    }
}

/// Issue 22: a virtual TPM per VM (`tpm = true`). A live clone carries its source's TPM state,
/// so every clone has the source's endorsement key; VMs booted apart each get a freshly
/// manufactured swtpm, so each its own key; a scenario without a TPM skips the check (the
/// strategies test). On both backends; nothing of swtpm is left, the state is private while it
/// exists, and no part of it (seeds, keys: swtpm's whole state file, taken from the source's
/// TPM while it ran) reaches the report or the events: they hold the EK's digest only.
#[test]
fn a_tpm_follows_the_clone_method_on_both_backends() {
    use std::os::unix::fs::PermissionsExt;
    if guest().is_none() {
        return;
    }
    let libvirt = libvirt_answers();
    let work = tempfile::tempdir().unwrap();
    let f = work.path().join("tpm.toml");
    let mut s = String::from("[[scenario]]\nname = \"tpm-naive\"\nstrategy = \"naive\"\nclones = 2\ntpm = true\n[scenario.expect]\ntpm_ek = \"duplicate\"\n\n[[scenario]]\nname = \"tpm-cold\"\nstrategy = \"cold-boot\"\nclones = 2\ntpm = true\n[scenario.expect]\ntpm_ek = \"unique\"\n");
    if libvirt {
        s.push_str("\n[[scenario]]\nname = \"tpm-naive-libvirt\"\nbackend = \"libvirt\"\nstrategy = \"naive\"\nclones = 2\ntpm = true\n[scenario.expect]\ntpm_ek = \"duplicate\"\n");
    }
    std::fs::write(&f, s).unwrap();
    // Take the source's TPM state while its VM runs (the QEMU backend keeps it in the VM's directory).
    let mut child = run_until(&f, work.path(), &["--parallel", "1"], "snapshot of", Duration::ZERO);
    let pid = child.id();
    let state = find_file(&work.path().join("runs"), "tpm2-00.permall").expect("swtpm's state file in the source's tpm/ directory");
    let dir_mode = std::fs::metadata(state.parent().unwrap()).unwrap().permissions().mode() & 0o777;
    let file_mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!((dir_mode, file_mode), (0o700, 0o600), "TPM state is a secret: 0600 in a 0700 directory");
    let tpm_state = std::fs::read(&state).unwrap();
    assert!(tpm_state.len() > 1000, "a whole TPM state");
    assert!(child.wait().unwrap().success());
    let out = work.path().join("o");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    for sc in report["scenarios"].as_array().unwrap() {
        assert_eq!(sc["expectations_met"], true, "{}", sc["name"]);
        let ek = sc["checks"].as_array().unwrap().iter().find(|c| c["id"] == "tpm_ek").unwrap();
        for v in ek["values"].as_array().unwrap() {
            let v = v.as_str().unwrap();
            assert!(v.len() == 64 && v.chars().all(|c| c.is_ascii_hexdigit()), "{}: a SHA-256, nothing else: {v}", sc["name"]);
        }
    }
    // No 16 bytes of the TPM's state, in hex, in anything the run wrote.
    let windows: std::collections::HashSet<&[u8]> = tpm_state.windows(16).filter(|w| w.iter().any(|b| *b != 0 && *b != 0xff)).collect();
    let leaks = |text: &str| {
        text.to_lowercase().split(|c: char| !c.is_ascii_hexdigit()).filter(|r| r.len() >= 32).any(|run| {
            let bytes: Vec<u8> = (0..run.len() / 2 * 2).step_by(2).map(|i| u8::from_str_radix(&run[i..i + 2], 16).unwrap()).collect();
            bytes.windows(16).any(|w| windows.contains(w))
        })
    };
    // A piece of the state that looks random (8 distinct bytes in 16), planted in a JSON text.
    let at = tpm_state.windows(16).position(|w| w.iter().collect::<std::collections::HashSet<_>>().len() >= 8).expect("random-looking bytes in a TPM state");
    let planted: String = tpm_state[at..at + 16].iter().map(|b| format!("{b:02X}")).collect();
    assert!(leaks(&format!("{{\"x\": \"{planted}\"}}")), "the search finds a piece of the state");
    for file in ["report.json", "events.jsonl", "report.html", "junit.xml"] {
        assert!(!leaks(&std::fs::read_to_string(out.join(file)).unwrap()), "{file} holds part of the TPM's state");
    }
    assert!(swtpms_of(pid).is_empty(), "swtpm left: {:?}", swtpms_of(pid));
    assert!(settle_blocking(pid).is_empty());
    assert_eq!(runs_left(work.path()).len(), 0, "the run directory, TPM state included, is removed");
}

/// The first file named `name` below `dir`.
fn find_file(dir: &Path, name: &str) -> Option<std::path::PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
        if p.is_dir() {
            if let Some(f) = find_file(&p, name) {
                return Some(f);
            }
        }
    }
    None
}

/// Issue 11, item 1: Ctrl-C during the restores on libvirt left a paused `-cloneN` domain, 3
/// times out of 3 (a restore in flight created it after teardown).
#[test]
fn ctrl_c_during_libvirt_restores_leaves_no_domain() {
    if guest().is_none() || !libvirt_answers() {
        return;
    }
    for attempt in 0..3 {
        let work = tempfile::tempdir().unwrap();
        // With a TPM: libvirt's swtpm must go with its domain (issue 22).
        let file = naive_with(work.path(), "libvirt", "tpm = true\n");
        let mut child = run_until(&file, work.path(), &[], "snapshot of", Duration::from_millis(500));
        let pid = child.id();
        unsafe { libc::kill(pid as i32, libc::SIGINT) };
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(clonesafe_metadata::exit_codes::INTERRUPTED), "attempt {attempt}");
        assert!(domains_of(pid).is_empty(), "attempt {attempt}: domains left after Ctrl-C: {:?}", domains_of(pid));
        assert!(swtpms_of(pid).is_empty(), "attempt {attempt}: swtpm left after Ctrl-C: {:?}", swtpms_of(pid));
        assert_eq!(runs_left(work.path()).len(), 0, "attempt {attempt}: run directory left after Ctrl-C");
    }
}

/// Issue 12: a plan run as 3 shards and merged gives what one run gives (the same scenarios in
/// the same order, the same verdicts, except those timing decides (`CheckId::decided_by_timing`:
/// kernel_rng's and random_uuid's first-sample race, and wall_clock_skew_ms, which is `duplicate`
/// when more than 2 s pass between snapshot and restore, as on a loaded machine), an empty shard is a
/// valid report with exit 0, and a missing shard is refused unless a partial merge is asked for.
#[test]
fn three_shards_merged_equal_one_run() {
    if guest().is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("plan.toml");
    // Names from the matrix; FNV-1a puts them in shards 2, 1, 2 and 3 of 3.
    let mut plan = String::new();
    for (name, strategy) in [("cold-boot-qemu", "cold-boot"), ("naive-qemu", "naive"), ("vmgenid-qemu", "vmgenid"), ("full-qemu", "full")] {
        plan.push_str(&format!("[[scenario]]\nname = \"{name}\"\nstrategy = \"{strategy}\"\nclones = 2\nmemory_mib = 256\n\n"));
    }
    std::fs::write(&file, plan).unwrap();
    let one = run_files(&[&file], &work.path().join("one"), &["--accel", "tcg"], work.path());
    assert_eq!(one.code(), Some(0), "{}", one.stderr());
    let mut dirs = Vec::new();
    for i in 1..=3 {
        let d = work.path().join(format!("shard{i}"));
        let ran = run_files(&[&file], &d, &["--accel", "tcg", "--shard", &format!("{i}/3")], work.path());
        assert_eq!(ran.code(), Some(0), "shard {i}: {}", ran.stderr());
        assert_eq!(ran.report()["shard"]["index"], i);
        dirs.push(d);
    }
    let merged = work.path().join("merged");
    let mut args = vec!["report", "merge"];
    args.extend(dirs.iter().map(|d| d.to_str().unwrap()));
    args.extend(["--out", merged.to_str().unwrap(), "--reference"]);
    let o = clonesafe(&args, work.path()).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let m = read_report(&merged).unwrap();
    assert!(m.get("shard").is_none(), "a whole merge has no shard field");
    assert!(merged.join("summary.md").is_file() && merged.join("junit.xml").is_file());
    let names = |r: &serde_json::Value| r["scenarios"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(names(&m), names(one.report()), "plan order");
    same_verdicts_but_timing(one.report(), &m, "merged shards against one run");

    // A missing shard is refused (and named); --allow-partial merges and says what is missing.
    let o = clonesafe(&["report", "merge", dirs[0].to_str().unwrap(), dirs[2].to_str().unwrap(), "--out", work.path().join("m2").to_str().unwrap()], work.path()).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("shard(s) 2 of 3 missing"), "{}", String::from_utf8_lossy(&o.stderr));
    let p = work.path().join("partial");
    let o = clonesafe(&["report", "merge", dirs[0].to_str().unwrap(), dirs[2].to_str().unwrap(), "--out", p.to_str().unwrap(), "--allow-partial"], work.path()).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(read_report(&p).unwrap()["shard"]["missing_shards"], serde_json::json!([2]));

    // Shards of another plan (here: another shard count) are refused.
    let other = work.path().join("other");
    let ran = run_files(&[&repo("scenarios/smoke.toml")], &other, &["--shard", "2/3"], work.path());
    assert_eq!(ran.code(), Some(0), "an empty shard exits 0: {}", ran.stderr());
    assert_eq!(ran.report()["scenarios"], serde_json::json!([]), "smoke's two scenarios are both in shard 1 of 3");
    let o = clonesafe(&["report", "merge", dirs[0].to_str().unwrap(), other.to_str().unwrap(), "--out", work.path().join("m3").to_str().unwrap()], work.path()).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("different plans"), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(runs_left(work.path()).len(), 0);
}

/// Issue 19, item 9: commands bounded in time, whatever the other side does. A libvirt endpoint
/// that accepts and never answers, and an --emulator that hangs on --version, end with exit 2
/// in bounded time. No VM is needed.
#[test]
fn hanging_endpoints_and_emulators_end_in_bounded_time() {
    let work = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accept, and never answer.
    let _held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in listener.incoming().take(4) {
            conns.push(c);
        }
        std::thread::sleep(Duration::from_secs(120));
    });
    let t = std::time::Instant::now();
    let out = clonesafe(&["doctor", "--connect", &format!("qemu+tcp://127.0.0.1:{port}/system")], work.path()).output().unwrap();
    assert!(t.elapsed() < Duration::from_secs(45), "doctor --connect took {:?}", t.elapsed());
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no answer within 20 s"));

    let hang = work.path().join("qemu-that-hangs");
    std::fs::write(&hang, "#!/bin/sh\nsleep 300\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hang, std::fs::Permissions::from_mode(0o755)).unwrap();
    let t = std::time::Instant::now();
    let out = clonesafe(&["run", repo("scenarios/smoke.toml").to_str().unwrap(), "--emulator", hang.to_str().unwrap(), "--out", work.path().join("o").to_str().unwrap()], work.path()).output().unwrap();
    assert!(t.elapsed() < Duration::from_secs(30), "--emulator took {:?}", t.elapsed());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did not finish within 10 s"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Issue 19, item 9: a FIFO given as --probe blocked the run in open(2), deaf to SIGTERM. It is
/// now refused as not a regular file (the run goes on without the probe and says so), and the
/// run still ends on Ctrl-C, leaving nothing. Needs a qemu-guest-agent guest (Debian 12).
#[test]
fn a_fifo_as_probe_is_refused_without_blocking() {
    let guests = clonesafe::guest::default_guests_dir();
    if clonesafe::guest::GuestProfile::locate(&guests, "debian12").is_err() {
        assert!(std::env::var("CLONESAFE_REQUIRE_VMS").map_or(true, |v| v != "1"), "the debian12 guest is required in CI");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let fifo = work.path().join("probe.fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let f = work.path().join("d12.toml");
    std::fs::write(&f, "[[scenario]]\nname = \"d12\"\nguest = \"debian12\"\nstrategy = \"cold-boot\"\nclones = 2\n").unwrap();
    let mut child = run_until(&f, work.path(), &["--probe", fifo.to_str().unwrap()], "not a regular file (it is a FIFO)", Duration::from_millis(200));
    let pid = child.id();
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    assert_eq!(child.wait().unwrap().code(), Some(clonesafe_metadata::exit_codes::INTERRUPTED));
    assert!(settle_blocking(pid).is_empty(), "VMs left behind");
    assert_eq!(runs_left(work.path()).len(), 0);
}

/// `clonesafe checks` lists every built-in check with what it reads, where, what can make it
/// unique and where the hazard is listed; --json carries the same.
#[test]
fn checks_lists_every_built_in_check() {
    let work = tempfile::tempdir().unwrap();
    let out = clonesafe(&["checks"], work.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for id in clonesafe_metadata::CheckId::ALL {
        assert!(text.lines().any(|l| l.starts_with(&format!("{:<24} ", id.as_str()))), "{} missing:\n{text}", id.as_str());
    }
    assert!(text.contains("made unique by: nic-replug") && text.contains("virt-sysprep machine-id"), "{text}");
    let out = clonesafe(&["checks", "--json"], work.path()).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let a = v.as_array().unwrap();
    assert_eq!(a.len(), clonesafe_metadata::CheckId::ALL.len());
    assert!(a.iter().all(|e| e["declared"] == false && e["source"].is_string() && e["made_unique_by"].is_array()));
    assert_eq!(a.iter().find(|e| e["id"] == "dhcp_client_id").unwrap()["source"], "wire");

    // --scenario adds the identities a file declares, with where and by whom; a bad declaration
    // is exit 2 with its file, line and field.
    let f = work.path().join("apps.toml");
    std::fs::write(&f, "[[identity]]\nid = \"node_id\"\ndescription = \"the agent's node id\"\nfile = \"/var/lib/agent/node-id\"\n\n[[scenario]]\nname = \"a\"\nstrategy = \"naive\"\nclones = 2\n").unwrap();
    let out = clonesafe(&["checks", "--json", "--scenario", f.to_str().unwrap()], work.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let last = v.as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["id"].as_str(), last["declared"].as_bool()), (Some("node_id"), Some(true)), "{last}");
    assert_eq!(last["scenarios"], serde_json::json!(["a"]));
    assert!(last["listed_in"][0].as_str().unwrap().ends_with("apps.toml:2"), "{last}");
    std::fs::write(&f, "[[identity]]\nid = \"machine_id\"\nfile = \"/x\"\n\n[[scenario]]\nname = \"a\"\nstrategy = \"naive\"\nclones = 2\n").unwrap();
    let out = clonesafe(&["checks", "--scenario", f.to_str().unwrap()], work.path()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("apps.toml:2:") && err.contains("identity[0].id") && err.contains("built-in check"), "{err}");
}

/// `report diff`: exit 1 and the differing rows when verdicts differ, 0 when none do; with
/// --html, a page with regressions first, written over a link without following it.
#[test]
fn report_diff_lists_changes_and_writes_html() {
    let work = tempfile::tempdir().unwrap();
    let (a, b) = (work.path().join("a.json"), work.path().join("b.json"));
    std::fs::write(&a, r#"{"scenarios": [{"name": "n", "checks": [{"id": "machine_id", "verdict": "unique"}, {"id": "pg_system_id", "declared": true, "verdict": "duplicate"}]}]}"#).unwrap();
    std::fs::write(&b, r#"{"scenarios": [{"name": "n", "checks": [{"id": "machine_id", "verdict": "duplicate"}, {"id": "pg_system_id", "declared": true, "verdict": "unique"}]}]}"#).unwrap();
    let victim = work.path().join("victim.txt");
    std::fs::write(&victim, "keep").unwrap();
    let page = work.path().join("diff.html");
    std::os::unix::fs::symlink(&victim, &page).unwrap();
    let out = clonesafe(&["report", "diff", a.to_str().unwrap(), b.to_str().unwrap(), "--html", page.to_str().unwrap()], work.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("n machine_id: unique -> duplicate") && text.contains("n pg_system_id: duplicate -> unique"), "{text}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep", "the link's target was written");
    let html = std::fs::read_to_string(&page).unwrap();
    let (reg, imp) = (html.find("Regressions").unwrap(), html.find("Improvements").unwrap());
    assert!(reg < imp && html[reg..imp].contains("machine_id") && html[imp..].contains("pg_system_id"), "{html}");
    let same = clonesafe(&["report", "diff", a.to_str().unwrap(), a.to_str().unwrap()], work.path()).output().unwrap();
    assert_eq!(same.status.code(), Some(0));
}

/// `assess --from` judges the committed assessment run again without running anything:
/// --fail-on both ways on measured cells, and a report that is not an assess run refused.
#[test]
fn assess_from_a_report_judges_it_again() {
    let work = tempfile::tempdir().unwrap();
    let from = repo("reports/assess-debian12/report.json");
    let run = |extra: &[&str]| {
        let out = work.path().join(format!("o{}", extra.len()));
        let mut args = vec!["assess", "--from", from.to_str().unwrap(), "--out", out.to_str().unwrap()];
        args.extend(extra);
        let o = clonesafe(&args, work.path()).output().unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned(), out)
    };
    // The strongest recipe leaves the probe's PRNG (key-reuse) shared in that run.
    let (code, text, out) = run(&["--fail-on", "key-reuse"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("assess-strongest leaves an identity of severity key-reuse shared"), "{text}");
    assert!(std::fs::read_to_string(out.join("assessment.md")).unwrap().contains("## Shipped in the image"));
    // Drawn again from the measured Debian run, every statement rests on cells of that run,
    // the sentences that something is unique included.
    let again = read_report(&out).expect("report.json");
    assert!(assessment_cells_back_their_statements(&again) > 10);
    assert!(again["assessment"]["conclusions"].as_array().unwrap().iter().any(|c| c["text"].as_str().unwrap().contains("unique") && c["cells"].as_array().unwrap().iter().any(|x| again["scenarios"].as_array().unwrap().iter().any(|s| x.as_str().unwrap().starts_with(s["name"].as_str().unwrap())))));
    // virt-sysprep's copy leaves machine-id and the hostname (network, identity), no key.
    let (code, text, _) = run(&["--fail-on", "key-reuse", "--recipe", "assess-image-clone-sysprep"]);
    assert_eq!(code, Some(0), "{text}");
    let (code, _, _) = run(&["--fail-on", "network-collision", "--recipe", "assess-image-clone-sysprep", "--clones", "2"]);
    assert_eq!(code, Some(1));
    let o = clonesafe(&["assess", "--from", repo("reports/apps/report.json").to_str().unwrap(), "--out", work.path().join("x").to_str().unwrap()], work.path()).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not the report of an assess run"));
}

/// docs/checks.md holds the catalogue's table exactly as `clonesafe checks --markdown` prints it.
#[test]
fn docs_checks_is_the_catalogue() {
    let work = tempfile::tempdir().unwrap();
    let o = clonesafe(&["checks", "--markdown"], work.path()).output().unwrap();
    assert!(o.status.success());
    let table = String::from_utf8(o.stdout).unwrap();
    let doc = std::fs::read_to_string(repo("docs/checks.md")).unwrap();
    let between = doc.split("<!-- clonesafe checks --markdown -->\n").nth(1).and_then(|r| r.split("<!-- end -->").next()).expect("the markers in docs/checks.md");
    assert_eq!(between, table, "docs/checks.md is stale: paste `clonesafe checks --markdown` between its markers");
    assert!(table.lines().count() > 20);
}

/// A plan whose sources repeat (issue 23): naive's source serves agent-fixup and, derived,
/// nic-replug; vmgenid's serves full, derived; two image clones copy one template; on libvirt,
/// naive's source serves nic-replug, derived.
fn repeated_sources(dir: &Path) -> std::path::PathBuf {
    let file = dir.join("sources.toml");
    let mut plan = String::new();
    for (name, strategy, backend) in [
        ("naive-q", "naive", "qemu"),
        ("agent-q", "agent-fixup", "qemu"),
        ("replug-q", "nic-replug", "qemu"),
        ("genid-q", "vmgenid", "qemu"),
        ("full-q", "full", "qemu"),
        ("image-a", "image-clone", "qemu"),
        ("image-b", "image-clone", "qemu"),
        ("naive-l", "naive", "libvirt"),
        ("replug-l", "nic-replug", "libvirt"),
    ] {
        plan.push_str(&format!("[[scenario]]\nname = \"{name}\"\nstrategy = \"{strategy}\"\nbackend = \"{backend}\"\nclones = 2\nmemory_mib = 256\n\n"));
    }
    std::fs::write(&file, plan).unwrap();
    file
}

/// One boot per distinct source (issue 23). The same plan run with shared sources and with
/// `--no-share` gives the same verdicts (but those timing decides, `CheckId::decided_by_timing`);
/// each report says where its source came from; a boot is reported once per source; and nothing
/// is left behind.
#[test]
fn shared_sources_give_the_verdicts_of_sources_of_their_own() {
    if guest().is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let file = repeated_sources(work.path());
    let shared = run_files(&[&file], &work.path().join("shared"), &["--accel", "tcg", "--parallel", "2"], work.path());
    assert_eq!(shared.code(), Some(0), "{}", shared.stderr());
    let own = run_files(&[&file], &work.path().join("own"), &["--accel", "tcg", "--parallel", "2", "--no-share"], work.path());
    assert_eq!(own.code(), Some(0), "{}", own.stderr());

    let how = |r: &Ran, n: &str| {
        let s = r.scenario(n);
        (s["source"]["how"].as_str().unwrap_or_else(|| panic!("{n}: no source in {s}")).to_string(), s["source"]["booted_in"].as_str().unwrap().to_string())
    };
    let h = |a: &str, b: &str| (a.to_string(), b.to_string());
    for (n, expected) in [
        ("naive-q", h("booted", "naive-q")),
        ("agent-q", h("shared", "naive-q")),
        ("replug-q", h("derived", "naive-q")),
        ("genid-q", h("booted", "genid-q")),
        ("full-q", h("derived", "genid-q")),
        ("image-a", h("booted", "image-a")),
        ("image-b", h("shared", "image-a")),
        ("naive-l", h("booted", "naive-l")),
        ("replug-l", h("derived", "naive-l")),
    ] {
        assert_eq!(how(&shared, n), expected, "{n}");
        assert_eq!(how(&own, n), h("own", n), "--no-share: {n}");
    }
    // A boot is reported once per source: the scenarios that reused it have no boot time.
    let timing = |r: &Ran, n: &str| r.scenario(n)["timing"].clone();
    for n in ["agent-q", "replug-q", "full-q", "replug-l"] {
        assert_eq!(timing(&shared, n)["boot_ms"], serde_json::json!([]), "{n}");
    }
    // A source that runs on after its snapshot gives each scenario a snapshot of its own,
    // taken when it starts; the derived ones are timed too.
    for n in ["agent-q", "replug-q", "full-q", "replug-l"] {
        assert!(timing(&shared, n)["snapshot_ms"].is_u64(), "{n}: its snapshot is timed");
    }
    assert!(shared.scenario("agent-q")["notes"].to_string().contains("took a snapshot of its own"));
    let boots = |r: &Ran| r.report()["scenarios"].as_array().unwrap().iter().map(|s| s["timing"]["boot_ms"].as_array().unwrap().len()).sum::<usize>();
    assert_eq!(boots(&own) - boots(&shared), 5, "agent-q, replug-q, full-q, image-b's template and replug-l boot nothing");

    same_verdicts_but_timing(own.report(), shared.report(), "shared against its own source");
    assert!(settle_blocking(shared.pid).is_empty() && settle_blocking(own.pid).is_empty(), "VMs left behind");
    assert_eq!(runs_left(work.path()).len(), 0, "run directory (shared snapshots) left behind");
}

/// Ctrl-C while a derived snapshot's scenario runs: the shared source and its clones are torn
/// down and its snapshots deleted.
#[test]
fn ctrl_c_during_a_derived_snapshot_tears_the_shared_source_down() {
    if guest().is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let file = repeated_sources(work.path());
    let child = run_until(&file, work.path(), &[], "replug-q: nic-replug on qemu", Duration::from_secs(1));
    let pid = child.id();
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let ran = finish(child, &work.path().join("o"));
    assert_eq!(ran.code(), Some(clonesafe_metadata::exit_codes::INTERRUPTED));
    assert!(settle_blocking(pid).is_empty(), "VMs left behind");
    assert_eq!(runs_left(work.path()).len(), 0, "run directory (shared snapshots) left behind");
}

/// `bench --image` checks the image as `run --image` does, before any VM starts, and names one
/// guest only.
#[test]
fn bench_image_is_checked_before_any_vm() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("b");
    let o = clonesafe(&["bench", "--image", "/nonexistent/golden.qcow2", "--out", out.to_str().unwrap()], work.path()).output().unwrap();
    assert_eq!(o.status.code(), Some(clonesafe_metadata::exit_codes::HARNESS_ERROR));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/nonexistent/golden.qcow2"), "{err}");
    assert!(!out.exists(), "nothing written for a bad image");
    let o = clonesafe(&["bench", "--image", "x.qcow2", "--guest", "tiny"], work.path()).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot be used with"), "{}", String::from_utf8_lossy(&o.stderr));
}

/// SIGKILL while a shared libvirt source is alive and a derived snapshot's clones run: the
/// domains outlive the harness (libvirtd owns them), and the next run reaps them with the run
/// directory (shared snapshots included) and says so.
#[test]
fn a_run_killed_with_a_shared_source_alive_is_reaped_by_the_next_run() {
    if guest().is_none() || !libvirt_answers() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let file = repeated_sources(work.path());
    let mut child = run_until(&file, work.path(), &[], "replug-l: nic-replug on libvirt", Duration::from_secs(1));
    let pid = child.id();
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    child.wait().unwrap();
    assert!(domains_of(pid).iter().any(|d| d.contains("naive-l-source")), "the shared source's domain outlives a SIGKILL: {:?}", domains_of(pid));
    assert_eq!(runs_left(work.path()).len(), 1);
    let next = naive_with(work.path(), "libvirt", "");
    let ran = run_files(&[&next], &work.path().join("o2"), &["--accel", "tcg"], work.path());
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr());
    assert!((ran.stdout() + &ran.stderr()).contains(&format!("of a dead run (pid {pid})")), "the reaping is said");
    assert!(domains_of(pid).is_empty(), "domains of the killed run left: {:?}", domains_of(pid));
    assert!(settle_blocking(pid).is_empty(), "VMs of the killed run left");
    assert_eq!(runs_left(work.path()).len(), 0, "run directories left");
}
