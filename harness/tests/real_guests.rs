//! Real guests under real QEMU and libvirt: the Debian 12 and 13 disk images built by
//! guests/debian*/build.sh, probed through qemu-guest-agent with the injected probe, and a user's
//! image that this test builds itself (tests/byo/build-image.sh) and hands over by path, so the
//! `--image` path cannot lean on anything under guests/.

mod common;

use common::*;
use std::path::Path;
use std::process::Stdio;

/// The built guest `name`, or None (skipped) where it is not built; with
/// CLONESAFE_REQUIRE_VMS=1 (CI) a missing guest fails the test.
fn built(name: &str) -> Option<()> {
    guest()?;
    match clonesafe::guest::GuestProfile::locate(&clonesafe::guest::default_guests_dir(), name) {
        Ok(_) => Some(()),
        Err(e) if std::env::var("CLONESAFE_REQUIRE_VMS").is_ok_and(|v| v == "1") => panic!("guest {name} required: {e}"),
        Err(e) => {
            eprintln!("skipping: {e}");
            None
        }
    }
}

/// Run `scenarios` (TOML text) with `extra` arguments; return what it left, and check that it
/// left no VM, domain or run directory.
fn run_scenarios(scenarios: &str, extra: &[&str]) -> Ran {
    let work = tempfile::tempdir().unwrap();
    run_scenarios_in(work.path(), scenarios, extra)
}

/// [`run_scenarios`] in `work`, whose `out/` keeps what the run wrote.
fn run_scenarios_in(work: &Path, scenarios: &str, extra: &[&str]) -> Ran {
    let f = work.join("s.toml");
    std::fs::write(&f, scenarios).unwrap();
    let out = work.join("out");
    let mut args = vec!["run", f.to_str().unwrap(), "--accel", "tcg", "--out", out.to_str().unwrap()];
    args.extend(extra);
    let child = clonesafe(&args, work).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let ran = finish(child, &out);
    assert!(settle_blocking(pid).is_empty(), "VMs left behind");
    assert_eq!(runs_left(work).len(), 0, "run directory left behind");
    let left = std::process::Command::new("virsh").args(["-c", "qemu:///system", "list", "--all", "--name"]).output().map(|o| String::from_utf8_lossy(&o.stdout).to_string()).unwrap_or_default();
    assert!(!left.contains(&format!("clonesafe-{pid}-")), "libvirt domains left behind: {left}");
    ran
}

fn values(s: &serde_json::Value, id: &str) -> Vec<serde_json::Value> {
    s["checks"].as_array().unwrap().iter().find(|c| c["id"] == id).unwrap()["values"].as_array().unwrap().clone()
}

fn notes(s: &serde_json::Value) -> String {
    s["notes"].to_string()
}

/// Debian 12 on QEMU: what naive clones share on a real system, and what the complete recipe
/// (NIC replug, vmgenid, the agent fix-up through qemu-guest-agent, the RNG gate, the clock)
/// fixes and does not. Identities declared in the file are read through qemu-guest-agent
/// (guest-file-read, guest-exec under timeout(1)).
#[test]
fn debian12_naive_and_complete_on_qemu() {
    if built("debian12").is_none() {
        return;
    }
    let ran = run_scenarios(
        r#"
[[identity]]
id = "host_key_file"
file = "/etc/ssh/ssh_host_ed25519_key.pub"
[[identity]]
id = "machine_id_cmd"
command = ["cat", "/etc/machine-id"]
match = '([0-9a-f]{32})'

[[scenario]]
name = "naive"
guest = "debian12"
strategy = "naive"
clones = 2
[scenario.expect]
machine_id = "duplicate"
ssh_host_keys = "duplicate"
ssh_keyscan = "duplicate"
tls_ticket_key = "duplicate"
openssl_rng = "duplicate"
random_seed = "duplicate"
wall_clock_skew_ms = "any"
vmgenid = "duplicate"
vdso_rng = "skipped"
host_key_file = "duplicate"
machine_id_cmd = "duplicate"
boot_id_early = "duplicate"
slow = "error"
[[scenario.identity]]
id = "boot_id_early"
command = ["/usr/bin/cat", "/proc/sys/kernel/random/boot_id"]
when = "right-after-resume"
[[scenario.identity]]
id = "slow"
command = ["sh", "-c", "echo started; sleep 30"]
timeout_s = 2

[[scenario]]
name = "complete"
guest = "debian12"
method = "live"
fixups = ["nic-replug", "vmgenid", "agent", "rng-gate", "clock"]
clones = 2
[scenario.expect]
mac = "unique"
machine_id = "unique"
hostname = "unique"
ssh_host_keys = "unique"
ssh_keyscan = "unique"
random_seed = "unique"
kernel_rng = "unique"
vmgenid = "unique"
wall_clock_skew_ms = "unique"
tls_ticket_key = "duplicate"
host_key_file = "unique"
machine_id_cmd = "unique"
"#,
        &[],
    );
    assert_eq!(ran.code(), Some(0), "an expectation was not met");
    let naive = ran.scenario("naive");
    assert!(notes(&naive).contains("guest OS (qemu-guest-agent): Debian GNU/Linux 12"), "{}", notes(&naive));
    assert!(notes(&naive).contains("probe injected"), "{}", notes(&naive));
    // What the guest says and what the host sees agree: the keys sshd serves are those on disk.
    let set = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_str().unwrap_or_default().split(' ').map(str::to_string).collect();
        k.sort();
        k
    };
    assert_eq!(set(&values(&naive, "ssh_host_keys")[0]), set(&values(&naive, "ssh_keyscan")[0]));
    // A naive clone's clock lags the host's by the time from the snapshot to its resume. Whether
    // that passes the check's 2 s tolerance depends on how fast the restore was (CI, 2026-12-04:
    // -1.8 and -1.7 s, so `unique`; earlier runs were slower), so the verdict is not asserted:
    // the lag is.
    assert!(values(&naive, "wall_clock_skew_ms").iter().all(|v| v.as_f64().is_some_and(|ms| ms < -100.0)), "a naive clone runs behind the host: {:?}", values(&naive, "wall_clock_skew_ms"));
    // Debian 12's glibc 2.36 has no vDSO getrandom: the helper's self-test saw the system call.
    let vdso = check_of(&naive, "vdso_rng");
    assert!(vdso["detail"].as_str().unwrap().contains("glibc 2.36: getrandom() made the system call"), "{vdso}");
    let slow = naive["checks"].as_array().unwrap().iter().find(|c| c["id"] == "slow").unwrap().clone();
    assert!(slow["declared"] == true && slow["detail"].as_str().unwrap().contains("started"), "what it printed before timeout(1) stopped it: {slow}");
    let complete = ran.scenario("complete");
    let t = &complete["timing"];
    assert_eq!(t["rng_gate_ms"].as_array().unwrap().len(), 2, "{t}");
    assert!(t["clock_skew_before_ms"].as_array().unwrap().iter().all(|v| v.as_f64().is_some_and(|ms| ms < -100.0)), "a clone resumes behind the host: {t}");
}

/// Debian 13 (trixie: kernel 6.12, systemd 257) on QEMU, naive, with its clones taken from a
/// warm pool over shared RAM (issue 23: `pool = N` on an agent guest; a clone is ready when the
/// agent and the injected probe answer).
#[test]
fn debian13_naive_from_a_warm_pool_on_qemu() {
    if built("debian13").is_none() {
        return;
    }
    let ran = run_scenarios(
        "[[scenario]]\nname = \"naive13\"\nguest = \"debian13\"\nmethod = \"shared-ram\"\npool = 2\nclones = 2\n[scenario.expect]\nmachine_id = \"duplicate\"\nssh_keyscan = \"duplicate\"\ntls_ticket_key = \"duplicate\"\n",
        &[],
    );
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr());
    let naive = ran.scenario("naive13");
    assert!(notes(&naive).contains("Debian GNU/Linux 13"), "{}", notes(&naive));
    assert!(notes(&naive).contains("a warm pool of 2 QEMU processes") && notes(&naive).contains("served 2 of the 2 clones"), "{}", notes(&naive));
    assert_eq!(naive["timing"]["restore_ms"].as_array().unwrap().len(), 2, "{}", naive["timing"]);
    // 6.12 sends NEW_VMGENID, but naive clones have no vmgenid device: none is told.
    let ev = check_of(&naive, "vmgenid_uevent");
    assert_eq!(ev["verdict"], "duplicate", "{ev}");
    assert!(ev["detail"].as_str().unwrap().contains("no vmgenid device"), "{ev}");
    assert!(ev["evidence"]["vms"].as_array().unwrap().iter().all(|v| v["new_vmgenid_ms"].as_array().unwrap().is_empty()), "{ev}");
    assert_uuids_sampled(&naive);
    assert_vdso_sampled(&naive);
}

/// Every VM's glibc getrandom() took the vDSO path (the helper's self-test: it answered while a
/// seccomp filter forbade the system call), and a sample was taken at every offset. A helper that
/// fell back to the system call fails here. The verdict is a race (as kernel_rng's) and is not
/// asserted.
fn assert_vdso_sampled(s: &serde_json::Value) {
    let c = check_of(s, "vdso_rng");
    assert!(["unique", "duplicate"].contains(&c["verdict"].as_str().unwrap()), "{c}");
    for g in c["evidence"]["glibc"].as_array().unwrap() {
        assert_eq!(g["path"], "vdso", "{g}");
        assert!(g["glibc"].as_str().unwrap() >= "2.41", "{g}");
    }
    for v in c["evidence"]["vms"].as_array().unwrap() {
        assert_eq!(v["samples"].as_array().unwrap().len(), clonesafe_protocol::KERNEL_RNG_SAMPLE_OFFSETS_MS.len(), "{v}");
    }
}

fn check_of(s: &serde_json::Value, id: &str) -> serde_json::Value {
    s["checks"].as_array().unwrap().iter().find(|c| c["id"] == id).cloned().unwrap_or_else(|| panic!("no check {id} in {}", s["name"]))
}

/// The probe read a random uuid beside every kernel RNG sample in every VM (not skipped).
fn assert_uuids_sampled(s: &serde_json::Value) {
    let uuid = check_of(s, "random_uuid");
    assert!(["unique", "duplicate"].contains(&uuid["verdict"].as_str().unwrap()), "{uuid}");
    for v in uuid["evidence"]["vms"].as_array().unwrap() {
        assert_eq!(v["samples"].as_array().unwrap().len(), clonesafe_protocol::KERNEL_RNG_SAMPLE_OFFSETS_MS.len(), "{v}");
    }
}

/// Debian 12 through libvirt, on the hazards guest (guests/debian12-hazards: Debian 12 plus a
/// LUKS2 volume, an LVM2 VG, a user with a password and an SSH key, machine-info, a keytab and
/// Samba secrets): the agent through virDomainQemuAgentCommand, the probe injected, forwards added
/// over HMP, the save image rewritten per clone. The full recipe fixes what a live clone can fix
/// and none of the image's own hazards (measured: every one duplicate; with a TPM, libvirt
/// carries the source's TPM state into each clone: one endorsement key), and nothing secret leaves
/// the guest: the report, events, HTML and output hold no password, hash, key file or LUKS key.
#[test]
fn debian12_hazards_full_on_libvirt() {
    if built("debian12-hazards").is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let ran = run_scenarios_in(
        work.path(),
        "[[scenario]]\nname = \"full\"\nguest = \"debian12-hazards\"\nbackend = \"libvirt\"\nstrategy = \"full\"\nclones = 2\ntpm = true\n[scenario.expect]\nmac = \"unique\"\nssh_host_keys = \"unique\"\nssh_keyscan = \"unique\"\nhostname = \"unique\"\nsmbios_serial = \"duplicate\"\nfs_uuid = \"duplicate\"\nlvm_uuid = \"duplicate\"\nluks_volume_key = \"duplicate\"\nmachine_info = \"duplicate\"\nuser_credentials = \"duplicate\"\nmachine_account = \"duplicate\"\ntpm_ek = \"duplicate\"\nshared_pages = \"unique\"\n\n[[scenario.identity]]\nid = \"ek_by_tpm2_tools\"\ncommand = [\"/bin/sh\", \"-c\", \"tpm2_createek -c /tmp/ek.ctx -G ecc -u /tmp/ek.pub >/dev/null && tail -c +3 /tmp/ek.pub | sha256sum\"]\nmatch = '^([0-9a-f]{64})'\n",
        &[],
    );
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr());
    let full = ran.scenario("full");
    assert!(notes(&full).contains("does not match source"), "{}", notes(&full));
    assert!(notes(&full).contains("probe injected"), "{}", notes(&full));
    // The evidence names what was found: the open LUKS volume, the PV and VG, alice's key.
    let ev = |id: &str| check_of(&full, id)["evidence"].to_string();
    assert!(ev("luks_volume_key").contains("luks2") && ev("luks_volume_key").contains("open"), "{}", ev("luks_volume_key"));
    assert!(ev("lvm_uuid").contains("VG hazards/"), "{}", ev("lvm_uuid"));
    assert!(ev("user_credentials").contains("password alice") && ev("user_credentials").contains("/home/alice/.ssh/id_ed25519"), "{}", ev("user_credentials"));
    assert!(ev("shared_pages").contains("anonymous"), "{}", ev("shared_pages"));
    // The probe's endorsement key is the one tpm2-tools makes in the same VM (tpm2_createek's
    // public area without its size), so tpm_ek compares the EK a user would read.
    let values = |id: &str| check_of(&full, id)["values"].clone();
    assert_eq!(values("tpm_ek"), values("ek_by_tpm2_tools"), "the probe's EK digest against tpm2_createek's");
    assert!(ev("tpm_ek").contains("/dev/tpmrm0"), "{}", ev("tpm_ek"));

    // The secrets, taken from the image itself, in every form they could leak in.
    let secrets = work.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    std::fs::set_permissions(&secrets, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let image = clonesafe::guest::default_guests_dir().join("debian12-hazards/disk.qcow2");
    let out = std::process::Command::new("virt-copy-out")
        .args(["-a", image.to_str().unwrap(), "/etc/clonesafe-hazards/luks.key", "/etc/shadow", "/home/alice/.ssh/id_ed25519"])
        .arg(&secrets)
        // As the sysprep fix-up runs libguestfs here: KVM cannot boot its appliance (FACTS.md).
        .env("LIBGUESTFS_BACKEND", "direct")
        .env("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
        .output()
        .unwrap();
    assert!(out.status.success(), "virt-copy-out: {}", String::from_utf8_lossy(&out.stderr));
    use base64::Engine;
    let key = std::fs::read(secrets.join("luks.key")).unwrap();
    let shadow = std::fs::read_to_string(secrets.join("shadow")).unwrap();
    let hash = shadow.lines().find_map(|l| l.strip_prefix("alice:")).and_then(|r| r.split(':').next()).unwrap().to_string();
    let ssh_key = std::fs::read_to_string(secrets.join("id_ed25519")).unwrap();
    let ssh_body = ssh_key.lines().filter(|l| !l.starts_with("-----")).max_by_key(|l| l.len()).unwrap().to_string();
    let forms: Vec<(&str, Vec<u8>)> = vec![
        ("the user's password", b"clonesafe-hazard-password".to_vec()),
        ("alice's password hash", hash.clone().into_bytes()),
        ("alice's private key", ssh_body.into_bytes()),
        ("the LUKS key file", key.clone()),
        ("the LUKS key file in hex", key.iter().map(|b| format!("{b:02x}")).collect::<String>().into_bytes()),
        ("the LUKS key file in base64", base64::engine::general_purpose::STANDARD.encode(&key).into_bytes()),
    ];
    assert!(hash.starts_with('$') && key.len() == 64, "the image's secrets were not read");
    let mut files = vec![];
    let mut stack = vec![work.path().join("out")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() { stack.push(e.path()) } else { files.push(e.path()) }
        }
    }
    assert!(files.iter().any(|f| f.ends_with("events.jsonl")) && files.iter().any(|f| f.ends_with("report.json")), "{files:?}");
    let mut texts: Vec<(String, Vec<u8>)> = files.iter().map(|f| (f.display().to_string(), std::fs::read(f).unwrap())).collect();
    texts.push(("stdout".into(), ran.output.stdout.clone()));
    texts.push(("stderr".into(), ran.output.stderr.clone()));
    for (what, needle) in &forms {
        for (name, hay) in &texts {
            assert!(!hay.windows(needle.len()).any(|w| w == needle.as_slice()), "{what} is in {name}");
        }
    }
}

/// A user's image that this repository never saw, by path: clonesafe reads from it the
/// machine-id and host keys the image holds; the image is never written. The same image with its
/// agent masked still gets the host-side checks, and its in-guest checks are skipped, with why.
#[test]
fn a_users_image_by_path() {
    if guest().is_none() {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let image = dir.path().join("user.qcow2");
    let st = std::process::Command::new("bash").arg(repo("harness/tests/byo/build-image.sh")).arg(&image).status().unwrap();
    assert!(st.success(), "building the test image failed");
    let truth: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("user.qcow2.identity.json")).unwrap()).unwrap();
    let before = sha256(&image);

    // doctor --image reads the image offline and says what it found.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_clonesafe")).args(["doctor", "--image", image.to_str().unwrap()]).output().unwrap();
    let said = String::from_utf8_lossy(&o.stdout);
    let ok = |what: &str, has: &str| said.lines().any(|l| l.split_whitespace().take(2).eq(["ok", what]) && l.contains(has));
    assert!(ok("os", "Debian GNU/Linux 12 (bookworm)") && ok("agent", "qemu-guest-agent") && ok("ssh", "SSH server"), "doctor --image:\n{said}");

    // A declared identity on the user's image: the machine-id the image was built with.
    let declared = "[[identity]]\nid = \"image_machine_id\"\ncommand = [\"cat\", \"/etc/machine-id\"]\nmatch = '([0-9a-f]{32})'\n";
    let ran = run_scenarios(&format!("{declared}[[scenario]]\nname = \"boots\"\nstrategy = \"cold-boot\"\nclones = 2\n[scenario.expect]\nimage_machine_id = \"duplicate\"\n"), &["--image", image.to_str().unwrap()]);
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr());
    let s = ran.scenario("boots");
    assert_eq!(s["guest"], format!("image:{}", image.display()));
    let mut want: Vec<String> = truth["ssh_fingerprints"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    want.sort();
    for vm in 0..2 {
        assert_eq!(values(&s, "machine_id")[vm], truth["machine_id"], "machine-id read from the image");
        assert_eq!(values(&s, "image_machine_id")[vm], truth["machine_id"], "the declared identity, read through qemu-guest-agent");
        for id in ["ssh_host_keys", "ssh_keyscan"] {
            let mut got: Vec<String> = values(&s, id)[vm].as_str().unwrap().split(' ').map(str::to_string).collect();
            got.sort();
            assert_eq!(got, want, "{id} of VM {vm}");
        }
    }
    assert_eq!(sha256(&image), before, "the user's image was written");

    // The same image without its agent (an overlay with qemu-guest-agent masked).
    let noagent = dir.path().join("noagent.qcow2");
    let st = std::process::Command::new("qemu-img").args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"]).arg(&image).arg(&noagent).status().unwrap();
    assert!(st.success());
    let mut gf = std::process::Command::new("guestfish")
        .env("LIBGUESTFS_BACKEND", "direct")
        .env("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
        .args(["-a", noagent.to_str().unwrap(), "-i"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    gf.stdin.take().unwrap().write_all(b"ln-sf /dev/null /etc/systemd/system/qemu-guest-agent.service\n").unwrap();
    assert!(gf.wait().unwrap().success(), "guestfish could not mask the agent");
    let noagent_scenario = &format!("{declared}[[scenario]]\nname = \"noagent\"\nstrategy = \"naive\"\nclones = 2\n[scenario.expect]\nssh_keyscan = \"duplicate\"\nmachine_id = \"skipped\"\nkernel_rng = \"skipped\"\nimage_machine_id = \"skipped\"\n");
    // An overlay's backing file is opened only when it is named (issue 19, item 1).
    let refused = run_scenarios(noagent_scenario, &["--image", noagent.to_str().unwrap()]);
    assert_eq!(refused.code(), Some(2), "{}", refused.stderr());
    assert!(refused.stderr().contains(&format!("--allow-backing {}", image.display())), "{}", refused.stderr());
    let ran = run_scenarios(noagent_scenario, &["--image", noagent.to_str().unwrap(), "--allow-backing", image.to_str().unwrap()]);
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr());
    let s = ran.scenario("noagent");
    assert!(notes(&s).contains("no qemu-guest-agent answered"), "{}", notes(&s));
    let m = s["checks"].as_array().unwrap().iter().find(|c| c["id"] == "machine_id").unwrap().clone();
    assert!(m["detail"].as_str().unwrap().contains("no agent"), "{m}");
    let d = s["checks"].as_array().unwrap().iter().find(|c| c["id"] == "image_machine_id").unwrap().clone();
    assert!(d["declared"] == true && d["detail"].as_str().unwrap().contains("no agent"), "a declared identity on a guest nothing can read is skipped, saying why: {d}");
}

fn sha256(p: &Path) -> String {
    let out = std::process::Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split(' ').next().unwrap().to_string()
}

/// The third kernel of the race-window comparison (issue 21): Debian 13 with the
/// trixie-backports kernel (7.x), under QEMU 10 with vmgenid and the VMClock device; one boot
/// for both mechanisms, to keep CI within its hour.
///
/// * vmgenid: every clone logs the reseed, and its probe's uevent listener (bound before the
///   snapshot) either hears NEW_VMGENID (unique) or, as measured on 7.3, hears none while its
///   positive control (a synthetic uevent of the vmgenid device) is heard: the kernel does not
///   send it (skipped, saying so). A deaf listener is `error`, which fails this test.
/// * VMClock: the probe reads /dev/vmclock0 at hold, right after resume and at least a second
///   later, and the `vmclock` check says from those values whether each clone could tell it was
///   restored. Whatever QEMU does to the page is reported as measured; the test asserts it was
///   read (not skipped, not error). The system QEMU (7.2) has no vmclock device: the fix-up is
///   refused before any VM starts.
#[test]
fn debian13_bpo_vmgenid_and_vmclock_on_qemu10() {
    const QEMU10: &str = "/opt/clonesafe/qemu-10/usr/bin/qemu-system-x86_64";
    if built("debian13-bpo").is_none() {
        return;
    }
    if !Path::new(QEMU10).exists() {
        assert!(!std::env::var("CLONESAFE_REQUIRE_VMS").is_ok_and(|v| v == "1"), "QEMU 10 required: run ci/install-qemu10.sh");
        return;
    }
    let file = "[[scenario]]\nname = \"vmclock\"\nguest = \"debian13-bpo\"\nmethod = \"live\"\nfixups = [\"vmgenid\", \"vmclock\"]\nclones = 2\n";
    let refused = run_scenarios(file, &[]);
    assert_eq!(refused.code(), Some(2), "{}", refused.stderr());
    assert!(refused.stderr().contains("needs vmclock"), "{}", refused.stderr());
    // genid-wait rides on the same source (the same devices: a fresh snapshot of it).
    let genid_wait = "[[scenario]]\nname = \"genid-wait\"\nguest = \"debian13-bpo\"\nmethod = \"live\"\nfixups = [\"vmgenid\", \"vmclock\", \"genid-wait\"]\nclones = 2\n";
    let ran = run_scenarios(&format!("{file}[scenario.expect]\nvmgenid = \"unique\"\n{genid_wait}"), &["--emulator", QEMU10]);
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr());
    // genid-wait held each clone's first read until NEW_VMGENID came, or for its whole bound
    // where this kernel sent none (measured so far: none).
    let g = ran.scenario("genid-wait");
    assert_eq!(g["source"]["how"], "shared", "{}", g["source"]);
    let heard = check_of(&g, "vmgenid_uevent")["verdict"] == "unique";
    let waits = g["timing"]["genid_wait_ms"].as_array().unwrap_or_else(|| panic!("genid_wait_ms: {}", g["timing"]));
    assert_eq!(waits.len(), 2, "{waits:?}");
    for w in waits {
        let w = w.as_f64().unwrap();
        assert!(if heard { w < 2000.0 } else { (2000.0..2500.0).contains(&w) }, "genid_wait_ms {w} (NEW_VMGENID heard: {heard})");
    }
    let s = ran.scenario("vmclock");
    let ev = check_of(&s, "vmgenid_uevent");
    let verdict = ev["verdict"].as_str().unwrap();
    assert!(verdict == "unique" || (verdict == "skipped" && ev["detail"].as_str().unwrap().contains("does not send it")), "{ev}");
    for v in ev["evidence"]["vms"].as_array().unwrap() {
        assert!(v["kernel"].as_str().unwrap().starts_with(|c: char| c >= '7'), "the backports kernel: {v}");
        assert_eq!(v["vmgenid_device"], true, "{v}");
        if verdict == "skipped" {
            assert_eq!(v["positive_control_heard"], true, "{v}");
        } else {
            assert_eq!(v["new_vmgenid_ms"].as_array().unwrap().len(), 1, "one NEW_VMGENID per clone: {v}");
        }
    }
    assert_uuids_sampled(&s);
    assert_vdso_sampled(&s);
    let c = check_of(&s, "vmclock");
    assert!(["unique", "duplicate"].contains(&c["verdict"].as_str().unwrap()), "{c}");
    for v in c["evidence"]["vms"].as_array().unwrap() {
        for at in ["at_hold", "at_resume", "after"] {
            assert!(v[at]["size"].as_u64().unwrap() >= 104, "{at}: {v}");
        }
        assert!(v["after"]["t_ns"].as_u64().unwrap() >= v["at_resume"]["t_ns"].as_u64().unwrap() + 900_000_000, "read again about 1 s later: {v}");
    }
}


/// Issue 23 on a real guest: Debian 12 naive, agent-fixup (a fresh snapshot of the shared
/// source) and nic-replug (a derived one) on QEMU and libvirt give the verdicts with one boot per
/// backend that they give with a boot each, but for those timing decides. Not in CI (about ten
/// minutes of Debian boots); `tests/cli.rs` checks the same on the tiny guest there.
#[test]
#[ignore = "about ten minutes of Debian boots: cargo test --release --test real_guests -- --ignored debian12_shared"]
fn debian12_shared_sources_give_the_verdicts_of_their_own() {
    if built("debian12").is_none() {
        return;
    }
    let mut plan = String::new();
    for backend in ["qemu", "libvirt"] {
        for strategy in ["naive", "agent-fixup", "nic-replug"] {
            plan.push_str(&format!("[[scenario]]\nname = \"{strategy}-{backend}\"\nguest = \"debian12\"\nbackend = \"{backend}\"\nstrategy = \"{strategy}\"\nclones = 2\n\n"));
        }
    }
    let (w1, w2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let shared = run_scenarios_in(w1.path(), &plan, &["--parallel", "2"]);
    assert_eq!(shared.code(), Some(0), "{}", shared.stderr());
    let own = run_scenarios_in(w2.path(), &plan, &["--parallel", "2", "--no-share"]);
    assert_eq!(own.code(), Some(0), "{}", own.stderr());
    for backend in ["qemu", "libvirt"] {
        for (strategy, how) in [("naive", "booted"), ("agent-fixup", "shared"), ("nic-replug", "derived")] {
            let n = format!("{strategy}-{backend}");
            assert_eq!(shared.scenario(&n)["source"]["how"], how, "{n}");
            assert_eq!(own.scenario(&n)["source"]["how"], "own", "{n}");
        }
    }
    same_verdicts_but_timing(own.report(), shared.report(), "Debian 12, shared against its own source");
}
