//! `clonesafe run --connect URI` against a libvirt host that shares no file with the harness.
//!
//! The host is this machine's libvirtd reached over libvirt's network protocol on loopback
//! (`qemu+tcp://127.0.0.1/system`, which `ci/start-libvirt.sh --tcp-loopback` opens). To make
//! "shares no file" true, the harness runs in a mount namespace of its own (`unshare --mount`)
//! where
//! * the pool directory is an empty tmpfs: a local read of a save image or overlay finds
//!   nothing (a marker file put there from outside must be invisible inside, or the test fails);
//! * its guests, run directory and report are on a tmpfs libvirtd cannot see: a domain XML that
//!   named a local path (kernel, console log, probe socket) would fail to start.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

const TCP: &str = "qemu+tcp://127.0.0.1/system";
const POOL_DIR: &str = "/var/lib/clonesafe/pool";

fn required() -> bool {
    std::env::var("CLONESAFE_REQUIRE_VMS").is_ok_and(|v| v == "1")
}

/// The tiny guest's directory, root, and libvirtd answering on loopback TCP; else skip.
fn ready() -> Option<std::path::PathBuf> {
    let g = guest()?;
    // SAFETY: geteuid has no preconditions (the same check as network/segment.rs).
    let root = unsafe { libc::geteuid() } == 0;
    let tcp = virt::connect::Connect::open(Some(TCP)).is_ok();
    if !root || !tcp {
        assert!(!required(), "needs root ({root}) and libvirtd on {TCP} ({tcp}): run ci/start-libvirt.sh --tcp-loopback");
        eprintln!("skipping: needs root and libvirtd on {TCP}");
        return None;
    }
    Some(g.dir)
}

/// clonesafe pools, domains and pool directories libvirtd has now.
fn remote_leftovers() -> Vec<String> {
    let conn = virt::connect::Connect::open(Some(TCP)).unwrap();
    let mut out: Vec<String> = conn.list_all_storage_pools(0).unwrap().iter().filter_map(|p| p.name().ok()).filter(|n| n.starts_with("clonesafe-")).map(|n| format!("pool {n}")).collect();
    out.extend(conn.list_all_domains(0).unwrap().iter().filter_map(|d| d.name().ok()).filter(|n| n.starts_with("clonesafe-")).map(|n| format!("domain {n}")));
    if let Ok(rd) = std::fs::read_dir(POOL_DIR) {
        out.extend(rd.flatten().map(|e| e.file_name().to_string_lossy().to_string()).filter(|n| n.starts_with("clonesafe-")).map(|n| format!("directory {POOL_DIR}/{n}")));
    }
    out
}

/// Run `clonesafe ARGS` (a subcommand and its arguments) in its own mount namespace: POOL_DIR an empty tmpfs, `private` a
/// tmpfs holding a copy of the tiny guest, the run directory and the report.
fn run_hidden(private: &Path, guest_dir: &Path, args: &str) -> std::process::Output {
    std::fs::create_dir_all(POOL_DIR).unwrap();
    let marker = Path::new(POOL_DIR).join("clonesafe-test-marker");
    std::fs::write(&marker, "visible from outside").unwrap();
    let script = format!(
        r#"set -e
mount -t tmpfs -o mode=0700 clonesafe-hide {pool}
mount -t tmpfs -o mode=0700 clonesafe-private {p}
if [ -e {pool}/clonesafe-test-marker ]; then echo "the pool directory is still visible" >&2; exit 97; fi
mkdir -p {p}/guests {p}/out
cp -r {g} {p}/guests/tiny
set +e
{bin} {args} --connect {TCP} --guests {p}/guests --workdir {p}/runs --out {p}/out --accel tcg
code=$?
cp -r {p}/out {p}/../out-copy 2>/dev/null
exit $code"#,
        pool = POOL_DIR,
        p = private.display(),
        g = guest_dir.display(),
        bin = env!("CARGO_BIN_EXE_clonesafe"),
    );
    let out = Command::new("unshare").args(["--mount", "--propagation", "private", "bash", "-c", &script]).output().expect("unshare (util-linux)");
    let _ = std::fs::remove_file(&marker);
    eprintln!("--- stdout\n{}\n--- stderr\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

/// The smoke suite passes through `--connect` on the loopback network URI with the pool
/// directory hidden from the harness and the harness's files hidden from libvirtd; every VM ran
/// on the host libvirt names; the snapshot's size was read through libvirt, and a canary
/// scenario finds the deleted secret in the frozen disk by reading it through libvirt, as it
/// does locally; nothing is left on the "remote" side (no pool, volume, pool directory or
/// domain).
#[test]
fn smoke_suite_through_a_network_uri_shares_no_file() {
    let Some(guest_dir) = ready() else { return };
    let work = tempfile::tempdir().unwrap();
    let private = work.path().join("private");
    std::fs::create_dir_all(&private).unwrap();
    let before = remote_leftovers();
    let smoke = repo("scenarios/smoke.toml");
    // The canary is scanned for in the snapshot through the host's volume streams.
    let canary = scenario(work.path(), "canary", "canary = true\n[scenario.expect]\nsecret_remanence = \"duplicate\"\n");
    let out = run_hidden(&private, &guest_dir, &format!("run {} {}", smoke.display(), canary.display()));
    assert_eq!(out.status.code(), Some(0), "the smoke suite through {TCP}");
    // What the harness wrote on its private tmpfs never appeared outside the namespace.
    assert_eq!(std::fs::read_dir(&private).unwrap().count(), 0, "the private tmpfs leaked");
    let report = read_report(&work.path().join("out-copy")).expect("report.json");
    let host = String::from_utf8_lossy(&Command::new("virsh").args(["-c", TCP, "hostname"]).output().unwrap().stdout).trim().to_string();
    for s in report["scenarios"].as_array().unwrap() {
        assert!(s["expectations_met"] == true && s["error"].is_null(), "{}: {}", s["name"], s["error"]);
        assert!(s["vms"].as_array().unwrap().iter().all(|v| v["host"] == host.as_str()), "{}", s["vms"]);
    }
    assert_eq!(report["scenarios"].as_array().unwrap().len(), 3);
    let scanned = report["scenarios"].as_array().unwrap().iter().find(|s| s["name"] == "canary").unwrap();
    let c = scanned["checks"].as_array().unwrap().iter().find(|c| c["id"] == "secret_remanence").unwrap();
    assert!(c["detail"].as_str().unwrap().contains("frozen disk"), "{c}");
    let naive = report["scenarios"].as_array().unwrap().iter().find(|s| s["name"] == "naive").unwrap();
    assert_eq!(verdict(naive, "mac"), "duplicate");
    assert_eq!(verdict(naive, "disk_serial"), "unique");
    assert_eq!(verdict(naive, "userspace_rng"), "duplicate");
    let notes = naive["notes"].to_string();
    assert!(notes.contains("does not match source"), "libvirt's own refusal is recorded: {notes}");
    assert!(notes.contains(&format!("ran on the libvirt host {host} ({TCP})")), "the report says where the VMs ran: {notes}");
    assert!(naive["timing"]["snapshot_bytes"].as_u64().unwrap() > 1 << 20, "snapshot size read through libvirt: {}", naive["timing"]);
    let left: Vec<String> = remote_leftovers().into_iter().filter(|l| !before.contains(l)).collect();
    assert!(left.is_empty(), "left on the host: {left:?}");
}

/// `clonesafe assess --connect` on the same hidden host: the live recipes and the baseline run
/// there; the image-clone recipes, which copy and sysprep disk files on this machine, are left
/// out before any VM starts and the assessment says so; every statement still names cells of
/// its own report; nothing is left on the host.
#[test]
fn assess_on_a_remote_host_leaves_out_what_needs_host_files() {
    let Some(guest_dir) = ready() else { return };
    let work = tempfile::tempdir().unwrap();
    let private = work.path().join("private");
    std::fs::create_dir_all(&private).unwrap();
    let before = remote_leftovers();
    let out = run_hidden(&private, &guest_dir, "assess --guest tiny --fail-on key-reuse --recipe assess-naive");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Naive live clones share the kernel RNG's output, on a remote host too.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not running assess-image-clone-sysprep") && stderr.contains("host-files"), "{stderr}");
    let report = read_report(&work.path().join("out-copy")).expect("report.json");
    let names: Vec<&str> = report["scenarios"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["assess-cold-boot", "assess-naive", "assess-full", "assess-strongest"]);
    let a = &report["assessment"];
    let not_run: Vec<&str> = a["not_run"].as_array().unwrap().iter().map(|n| n["scenario"].as_str().unwrap()).collect();
    assert_eq!(not_run, ["assess-image-clone", "assess-image-clone-sysprep"]);
    assert!(a["not_run"][0]["reason"].as_str().unwrap().contains(TCP), "{a}");
    assert!(assessment_cells_back_their_statements(&report) > 0);
    assert!(a["conclusions"].as_array().unwrap().iter().any(|c| c["text"].as_str().unwrap().starts_with("assess-image-clone was not run")), "{a}");
    let host = String::from_utf8_lossy(&Command::new("virsh").args(["-c", TCP, "hostname"]).output().unwrap().stdout).trim().to_string();
    assert!(report["scenarios"][1]["vms"].as_array().unwrap().iter().all(|v| v["host"] == host.as_str()));
    let left: Vec<String> = remote_leftovers().into_iter().filter(|l| !before.contains(l)).collect();
    assert!(left.is_empty(), "left on the host: {left:?}");
}

/// What needs the VMs' files on this machine, or a port forwarded to it, is refused at plan time
/// with exit 2, naming the capability, and the refusal leaves no pool behind.
#[test]
fn host_file_recipes_are_refused_before_any_vm() {
    let Some(_) = ready() else { return };
    let work = tempfile::tempdir().unwrap();
    let file = scenario(work.path(), "mitigated", "mitigate_remanence = true\n");
    let before = remote_leftovers();
    let out = clonesafe(&["run", file.to_str().unwrap(), "--connect", TCP, "--out", work.path().join("out").to_str().unwrap()], work.path()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("host-files") && err.contains("mitigate-remanence"), "{err}");
    // An expectation on a check that needs a port forwarded to this machine.
    let file = scenario(work.path(), "keys", "[scenario.expect]\nssh_keyscan = \"duplicate\"\n");
    let out = clonesafe(&["run", file.to_str().unwrap(), "--connect", TCP, "--out", work.path().join("out").to_str().unwrap()], work.path()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("guest-ports") && err.contains("ssh_keyscan"), "{err}");
    let o = clonesafe(&["run", file.to_str().unwrap(), "--connect", TCP, "--backend", "qemu"], work.path()).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--connect is for the libvirt backend"));
    let left: Vec<String> = remote_leftovers().into_iter().filter(|l| !before.contains(l)).collect();
    assert!(left.is_empty(), "left on the host: {left:?}");
}

/// A scenario file in `work`: one naive scenario `name` of the tiny guest (2 clones, 256 MiB), and `more`.
fn scenario(work: &Path, name: &str, more: &str) -> std::path::PathBuf {
    let file = work.join(format!("{name}.toml"));
    std::fs::write(&file, format!("[[scenario]]\nname = \"{name}\"\nstrategy = \"naive\"\nclones = 2\nmemory_mib = 256\n{more}")).unwrap();
    file
}

/// What run `pid` has on the host: its pool, its pool directory, its domains.
fn of_run(pid: u32) -> Vec<String> {
    let mine = format!("clonesafe-{pid}-");
    remote_leftovers().into_iter().filter(|l| l.contains(&mine)).collect()
}

/// Ctrl-C while clones are being restored on the remote host removes its domains and its
/// pool; a run killed with SIGKILL leaves both, and the next `run --connect` removes them and
/// says so.
#[test]
fn interrupted_and_killed_remote_runs_leave_nothing() {
    let Some(_) = ready() else { return };
    let work = tempfile::tempdir().unwrap();
    let file = scenario(work.path(), "naive", "");
    let remote = ["--connect", TCP];

    let mut child = run_until(&file, work.path(), &remote, "snapshot of", std::time::Duration::from_millis(500));
    let pid = child.id();
    assert!(of_run(pid).iter().any(|l| l.starts_with("pool ")), "the run's pool exists while it runs: {:?}", remote_leftovers());
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    assert_eq!(child.wait().unwrap().code(), Some(clonesafe_metadata::exit_codes::INTERRUPTED));
    assert!(of_run(pid).is_empty(), "left after Ctrl-C: {:?}", of_run(pid));

    let mut child = run_until(&file, work.path(), &remote, "snapshot of", std::time::Duration::from_millis(500));
    let pid = child.id();
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    child.wait().unwrap();
    let left = of_run(pid);
    assert!(left.iter().any(|l| l.starts_with("pool ")) && left.iter().any(|l| l.starts_with("domain ")), "SIGKILL leaves the pool and domains: {left:?}");
    // What it left holds guest memory: the directory is 0700 and every file in it 0600.
    use std::os::unix::fs::PermissionsExt;
    let dir = std::fs::read_dir(POOL_DIR).unwrap().flatten().map(|e| e.path()).find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&format!("clonesafe-{pid}-pool-"))).expect("the killed run's pool directory");
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700, "{}", dir.display());
    let files: Vec<(String, u32)> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| (e.file_name().to_string_lossy().to_string(), e.metadata().unwrap().permissions().mode() & 0o777)).collect();
    assert!(files.iter().any(|(n, _)| n.ends_with(".save-1")), "{files:?}");
    assert!(files.iter().all(|(_, m)| *m == 0o600), "every file 0600: {files:?}");
    let ran = run_files(&[&file], &work.path().join("o2"), &["--accel", "tcg", "--connect", TCP], work.path());
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr());
    assert!(ran.stderr().contains(&format!("removed storage pool clonesafe-{pid}-pool-")), "the reaping is said: {}", ran.stderr());
    assert!(of_run(pid).is_empty(), "left after the next run: {:?}", of_run(pid));
}

/// Issue 19, items 3 and 10: a pool directory that already exists (here a symlink to a directory
/// that is not clonesafe's) is refused and left exactly as it was; a relative --pool-dir is
/// refused before anything is uploaded.
#[test]
fn an_existing_pool_directory_is_never_adopted_and_a_relative_one_is_refused() {
    let Some(_) = ready() else { return };
    let conn = std::sync::Arc::new(virt::connect::Connect::open(Some(TCP)).unwrap());
    let parent = tempfile::tempdir().unwrap();
    let theirs = tempfile::tempdir().unwrap();
    std::fs::write(theirs.path().join("thesis.txt"), "years of work").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(theirs.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let name = format!("clonesafe-{}-pool-test", std::process::id());
    std::os::unix::fs::symlink(theirs.path(), parent.path().join(&name)).unwrap();
    let e = clonesafe::backend::libvirt::remote::RunPool::create_named(&conn, parent.path().to_str().unwrap(), &name).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    assert_eq!(std::fs::read_to_string(theirs.path().join("thesis.txt")).unwrap(), "years of work");
    assert_eq!(std::fs::metadata(theirs.path()).unwrap().permissions().mode() & 0o777, 0o755, "its mode was changed");
    assert!(conn.list_all_storage_pools(0).unwrap().iter().all(|p| p.name().unwrap() != name), "the pool's definition was left");
    // A directory made new is used, and teardown removes only what the run made in it.
    let fresh = format!("clonesafe-{}-pool-fresh", std::process::id());
    let pool = clonesafe::backend::libvirt::remote::RunPool::create_named(&conn, parent.path().to_str().unwrap(), &fresh).unwrap();
    assert_eq!(std::fs::metadata(parent.path().join(&fresh)).unwrap().permissions().mode() & 0o777, 0o700);
    drop(pool);
    assert!(!parent.path().join(&fresh).exists());

    let work = tempfile::tempdir().unwrap();
    let file = scenario(work.path(), "naive", "");
    let ran = run_files(&[&file], &work.path().join("o"), &["--connect", TCP, "--pool-dir", "relpool"], work.path());
    assert_eq!(ran.code(), Some(2), "{}", ran.stderr());
    assert!(ran.stderr().contains("--pool-dir \"relpool\" is relative"), "{}", ran.stderr());
}
