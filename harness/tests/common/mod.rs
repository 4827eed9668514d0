//! Shared helpers for the integration tests: the built guest, VM-leak checks, a fake guests
//! directory and backend for runner tests, and one way to run the binary that also validates
//! every report.json it writes against the contract's JSON Schema.
#![allow(dead_code)]

use clonesafe::backend::fake::FakeBackend;
use clonesafe::backend::snapshot::{CloneArgs, Machine};
use clonesafe::backend::Backend;
use clonesafe::guest::{GuestProfile, DEFAULT_GUEST};
use clonesafe::identity::{HostIdentity, NAME_PREFIX};
use clonesafe::runner::Backends;
use clonesafe_metadata::{Accel, BackendKind};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

/// The built default guest, or None (test skipped) when this machine cannot run VMs.
/// With CLONESAFE_REQUIRE_VMS=1 (CI), a missing guest or QEMU fails the test instead.
pub fn guest() -> Option<GuestProfile> {
    let require = std::env::var("CLONESAFE_REQUIRE_VMS").is_ok_and(|v| v == "1");
    let qemu = clonesafe::backend::emulator::qemu_version();
    let g = GuestProfile::locate(&clonesafe::guest::default_guests_dir(), DEFAULT_GUEST);
    match (qemu, g) {
        (Some(_), Ok(g)) => Some(g),
        (q, g) => {
            let why = format!("qemu: {:?}, guest: {:?}", q, g.err().map(|e| e.to_string()));
            if require {
                panic!("VM tests required but this machine cannot run them: {why}");
            }
            eprintln!("skipping VM test: {why}");
            None
        }
    }
}

/// The default machine for `guest` under TCG, with or without a vmgenid device.
pub fn machine(guest: &GuestProfile, vmgenid: bool) -> Machine {
    let mut m = Machine::new(guest.clone(), 256, Accel::Tcg);
    m.devices.vmgenid = vmgenid;
    m
}

/// Fresh arguments for a test VM named `clonesafe-<pid>-test-<role>`.
pub fn args(dir: &Path, role: &str, vmgenid: bool) -> CloneArgs {
    let name = format!("{NAME_PREFIX}{}-test-{role}", std::process::id());
    let identity = if vmgenid { HostIdentity::fresh_with_vmgenid(name) } else { HostIdentity::fresh(name) };
    CloneArgs { identity, dir: dir.join(role), forwards: Default::default(), segment: None, port: None }
}

/// clonesafe VMs started by process `owner` that are still running.
pub fn vms_of(owner: u32) -> Vec<String> {
    clonesafe::backend::qemu::reap::find_vms().into_iter().filter(|v| v.owner == owner).map(|v| v.name).collect()
}

/// What is left in a test's work directory `work` (its `runs/`, where run directories holding
/// RAM files, streams and overlays go) after the runs have ended.
pub fn runs_left(work: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(work.join("runs")).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default()
}

/// clonesafe VMs whose name has one of `parts` and whose clonesafe has exited: leaked (a VM of a
/// run still going, another test's, is not counted).
pub fn orphan_vms(parts: &[&str]) -> Vec<String> {
    clonesafe::backend::qemu::reap::find_vms()
        .into_iter()
        .filter(|v| parts.iter().any(|p| v.name.contains(p)) && !Path::new(&format!("/proc/{}", v.owner)).exists())
        .map(|v| v.name)
        .collect()
}

/// Wait (bounded) until no VM of `owner` is left, and return what is left after that.
pub async fn settle(owner: u32) -> Vec<String> {
    for _ in 0..50 {
        if vms_of(owner).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    vms_of(owner)
}

/// Like [`settle`], for the VMs this test named with `roles` only (tests in one process run in
/// parallel unless --test-threads=1, and share the owner pid).
pub async fn settle_roles(roles: &[&str]) -> Vec<String> {
    let mine = |n: &String| roles.iter().any(|r| n.ends_with(&format!("-test-{r}")));
    for _ in 0..50 {
        if !vms_of(std::process::id()).iter().any(mine) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    vms_of(std::process::id()).into_iter().filter(|n| mine(n)).collect()
}

/// [`settle`] from a synchronous test.
pub fn settle_blocking(owner: u32) -> Vec<String> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(settle(owner))
}

/// Every VM-level test runs under its own bound.
pub const VM_TEST_BOUND: Duration = Duration::from_secs(300);

/// A path in the repository.
pub fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p)
}

/// A guests directory holding a "tiny" that looks built (the fake backend never reads it).
pub fn fake_guests(dir: &Path) -> PathBuf {
    let g = dir.join("guests/tiny");
    std::fs::create_dir_all(&g).unwrap();
    std::fs::copy(repo("guests/tiny/guest.toml"), g.join("guest.toml")).unwrap();
    for f in ["vmlinuz", "initrd.img", "data.qcow2", "manifest.json"] {
        std::fs::write(g.join(f), "{}").unwrap();
    }
    dir.join("guests")
}

/// Every backend kind served by one fake.
pub struct Fake(pub Arc<FakeBackend>);
impl Backends for Fake {
    fn get(&self, _: BackendKind) -> Result<Arc<dyn Backend>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.0.clone())
    }
}

/// Validate a report.json value against `clonesafe report schema`'s schema.
pub fn validate_report(report: &serde_json::Value) {
    let schema = clonesafe_metadata::schema();
    let v = jsonschema::validator_for(&schema).expect("the schema compiles");
    let errors: Vec<String> = v.iter_errors(report).map(|e| format!("{} at {}", e, e.instance_path)).collect();
    assert!(errors.is_empty(), "report.json does not match its schema:\n{}", errors.join("\n"));
}

/// The clonesafe binary with its work directory inside `work`.
pub fn clonesafe(args: &[&str], work: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_clonesafe"));
    c.args(args).env("CLONESAFE_WORKDIR", work.join("runs"));
    c
}

/// What a finished `clonesafe run` left.
pub struct Ran {
    pub output: Output,
    /// report.json from `out`, already validated against the schema (None if none was written).
    pub report: Option<serde_json::Value>,
    /// The harness process's pid (VM names carry it).
    pub pid: u32,
}

impl Ran {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }
    pub fn report(&self) -> &serde_json::Value {
        self.report.as_ref().expect("a report.json was written")
    }
    /// The scenario named `name` in the report.
    pub fn scenario(&self, name: &str) -> serde_json::Value {
        self.report()["scenarios"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("no scenario {name}")).clone()
    }
}

/// Every scenario of report `a` has, in report `b`, the verdicts it has in `a`, but for the checks
/// that timing decides (`CheckId::decided_by_timing`). `what` says what is compared.
#[allow(dead_code)]
pub fn same_verdicts_but_timing(a: &serde_json::Value, b: &serde_json::Value, what: &str) {
    for s in a["scenarios"].as_array().unwrap() {
        let name = s["name"].as_str().unwrap();
        let other = b["scenarios"].as_array().unwrap().iter().find(|x| x["name"] == name).unwrap_or_else(|| panic!("{what}: no {name}"));
        for c in s["checks"].as_array().unwrap() {
            let id = c["id"].as_str().unwrap();
            if !clonesafe_metadata::vocab::CheckId::parse(id).is_some_and(|c| c.decided_by_timing()) {
                assert_eq!(verdict(other, id), c["verdict"].as_str().unwrap(), "{what}: {name}.{id}");
            }
        }
    }
}

/// A check's verdict in a scenario of a report.
pub fn verdict(scenario: &serde_json::Value, id: &str) -> String {
    let c = scenario["checks"].as_array().unwrap().iter().find(|c| c["id"] == id).unwrap_or_else(|| panic!("no check {id}"));
    c["verdict"].as_str().unwrap().to_string()
}

/// Read `out/report.json` after a run, validating it.
pub fn read_report(out: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(out.join("report.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).expect("report.json is JSON");
    validate_report(&v);
    Some(v)
}

/// Wait for a spawned `clonesafe run` writing into `out`, echo its output, read its report.
pub fn finish(child: std::process::Child, out: &Path) -> Ran {
    let pid = child.id();
    let output = child.wait_with_output().expect("wait for clonesafe");
    eprintln!("--- stdout\n{}\n--- stderr\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    Ran { output, report: read_report(out), pid }
}

/// Run `clonesafe run FILES... --out OUT EXTRA...` to completion.
pub fn run_files(files: &[&Path], out: &Path, extra: &[&str], work: &Path) -> Ran {
    let mut a: Vec<&str> = vec!["run"];
    a.extend(files.iter().map(|f| f.to_str().unwrap()));
    a.extend(["--out", out.to_str().unwrap()]);
    a.extend(extra);
    let child = clonesafe(&a, work).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().expect("start clonesafe");
    finish(child, out)
}

/// Start `clonesafe run FILE --accel tcg --out WORK/o EXTRA...` and return once a progress line
/// containing `line` was printed, and `after` more.
pub fn run_until(file: &Path, work: &Path, extra: &[&str], line: &str, after: std::time::Duration) -> std::process::Child {
    use std::io::BufRead;
    let mut a = vec!["run", file.to_str().unwrap(), "--accel", "tcg", "--out"];
    let o = work.join("o");
    a.push(o.to_str().unwrap());
    a.extend(extra);
    let mut child = clonesafe(&a, work)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Progress lines go to stderr.
    let out = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let want = line.to_string();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if l.contains(&want) {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(std::time::Duration::from_secs(240)).unwrap_or_else(|_| panic!("no {line:?} progress line within 240 s"));
    std::thread::sleep(after);
    child
}

/// Every statement of `report`'s assessment rests on cells of that report, with the verdict the
/// statement gives them: a shared identity names a duplicate cell of its own id, and a sentence
/// that names a unique cell says something is unique or not shared. Returns how many cells the
/// conclusions name.
#[allow(dead_code)]
pub fn assessment_cells_back_their_statements(report: &serde_json::Value) -> usize {
    let verdict_of = |cell: &str| {
        let (scen, check) = cell.split_once('/')?;
        let s = report["scenarios"].as_array()?.iter().find(|s| s["name"] == scen)?;
        s["checks"].as_array()?.iter().find(|c| c["id"] == check).map(|c| c["verdict"].as_str().unwrap_or_default().to_string())
    };
    let a = &report["assessment"];
    let mut cells = 0;
    for c in a["conclusions"].as_array().expect("an assessment") {
        let text = c["text"].as_str().unwrap();
        for cell in c["cells"].as_array().unwrap() {
            let cell = cell.as_str().unwrap();
            let v = verdict_of(cell).unwrap_or_else(|| panic!("{text}: {cell} is not a cell of the report"));
            let check = cell.split_once('/').unwrap().1;
            match v.as_str() {
                "duplicate" => assert!(text.contains(check), "{text}: names {cell} but not its identity"),
                "unique" => assert!(text.contains("unique") || text.contains("nothing") || text.contains("made no"), "{text}: {cell} is unique"),
                "skipped" | "error" => assert!(text.contains("could not be told") && text.contains(check), "{text}: {cell} is {v}"),
                other => panic!("{text}: {cell} is {other}"),
            }
            cells += 1;
        }
    }
    for rec in a["recipes"].as_array().unwrap() {
        for s in rec["shared"].as_array().unwrap() {
            assert_eq!(verdict_of(s["cell"].as_str().unwrap()).as_deref(), Some("duplicate"), "{s}");
        }
    }
    for s in a["shipped"].as_array().unwrap() {
        assert_eq!(verdict_of(s["cell"].as_str().unwrap()).as_deref(), Some("duplicate"), "{s}");
    }
    cells
}
