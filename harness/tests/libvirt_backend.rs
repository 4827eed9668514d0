//! The libvirt backend against a real libvirtd (qemu:///system) and the real tiny guest.

mod common;

use clonesafe::backend::libvirt::save_image::HEADER_LEN;
use clonesafe::backend::libvirt::{LibvirtBackend, SnapshotMode, DEFAULT_URI};
use clonesafe::backend::lifecycle::Timeouts;
use clonesafe::backend::snapshot::ArtifactKind;
use clonesafe::backend::Backend;
use clonesafe::identity::NAME_PREFIX;
use common::*;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn libvirt(mode: SnapshotMode) -> Option<LibvirtBackend> {
    guest()?;
    match LibvirtBackend::connect(DEFAULT_URI, mode) {
        Ok(b) => Some(b),
        Err(e) if std::env::var("CLONESAFE_REQUIRE_VMS").is_ok_and(|v| v == "1") => panic!("libvirtd required: {e}"),
        Err(e) => {
            eprintln!("skipping libvirt test: {e}");
            None
        }
    }
}

fn ours(b: &LibvirtBackend) -> Vec<String> {
    let prefix = format!("{NAME_PREFIX}{}-", std::process::id());
    b.clonesafe_domains().into_iter().filter(|n| n.starts_with(&prefix)).collect()
}

fn u32_at(b: &[u8], o: usize) -> u64 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as u64
}

/// `clonesafe save-image show` agrees, field by field, with an independent reading of a file
/// that `virsh save` wrote: the raw header words, virsh's own dump of the embedded XML, and QEMU's
/// migration magic at the stream offset. Corrupt and truncated copies are refused with exit 2.
#[tokio::test]
async fn save_image_show_agrees_with_virsh_save() {
    let Some(b) = libvirt(SnapshotMode::External) else { return };
    let guest = guest().unwrap();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("virsh.save");
    tokio::time::timeout(VM_TEST_BOUND, async {
        let vm = b.boot(&machine(&guest, true), args(work.path(), "saved", true), &Timeouts::default()).await.unwrap();
        let out = Command::new("virsh").args(["-c", DEFAULT_URI, "save", vm.name(), file.to_str().unwrap()]).output().unwrap();
        assert!(out.status.success(), "virsh save: {}", String::from_utf8_lossy(&out.stderr));
        vm.destroy().await.unwrap();
    })
    .await
    .expect("test bound");

    let show = Command::new(env!("CARGO_BIN_EXE_clonesafe")).args(["save-image", "show", "--json", file.to_str().unwrap()]).output().unwrap();
    assert_eq!(show.status.code(), Some(0), "{}", String::from_utf8_lossy(&show.stderr));
    let j: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();

    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(&bytes[..16], b"LibvirtQemudSave");
    assert_eq!(j["version"].as_u64(), Some(u32_at(&bytes, 16)));
    assert_eq!(j["data_len"].as_u64(), Some(u32_at(&bytes, 20)));
    assert_eq!(j["was_running"].as_u64(), Some(u32_at(&bytes, 24)));
    assert_eq!(j["compressed"].as_u64(), Some(u32_at(&bytes, 28)));
    assert_eq!(j["cookie_offset"].as_u64(), Some(u32_at(&bytes, 32)));
    let stream = j["stream_offset"].as_u64().unwrap() as usize;
    assert_eq!(stream, HEADER_LEN + u32_at(&bytes, 20) as usize);
    assert_eq!(&bytes[stream..stream + 4], b"QEVM", "QEMU's migration stream starts at stream_offset");
    let xml_end = bytes[HEADER_LEN..].iter().position(|&c| c == 0).unwrap();
    assert_eq!(j["xml_len"].as_u64(), Some(xml_end as u64));

    let dump = Command::new("virsh").args(["-c", DEFAULT_URI, "save-image-dumpxml", file.to_str().unwrap()]).output().unwrap();
    let dump = String::from_utf8_lossy(&dump.stdout);
    let tag = |t: &str| dump.split(&format!("<{t}>")).nth(1).and_then(|r| r.split(&format!("</{t}>")).next()).map(str::to_string);
    assert_eq!(j["name"].as_str().map(str::to_string), tag("name"));
    assert_eq!(j["uuid"].as_str().map(str::to_string), tag("uuid"));
    assert_eq!(j["genid"].as_str().map(str::to_string), tag("genid"));
    let mac = dump.split("mac address='").nth(1).unwrap().split('\'').next().unwrap();
    assert_eq!(j["macs"], serde_json::json!([mac]));

    // QEMU's stream was checked, not assumed: it ends the way QEMU ends one.
    assert!(j["stream_ends_with"].as_str().is_some_and(|e| e.starts_with("EOF")), "{j}");
    assert_eq!(j["stream_len"].as_u64(), Some(bytes.len() as u64 - stream as u64));

    // Cut inside the stream (issue 11: this exited 0), truncated in the XML, and with a broken
    // magic: clear errors, exit 2, no panic.
    let half = work.path().join("half.save");
    std::fs::write(&half, &bytes[..stream + (bytes.len() - stream) / 2]).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_clonesafe")).args(["save-image", "show", half.to_str().unwrap()]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stdout));
    assert!(String::from_utf8_lossy(&o.stderr).contains("stream is cut"), "{}", String::from_utf8_lossy(&o.stderr));
    let cut = work.path().join("cut.save");
    std::fs::write(&cut, &bytes[..200]).unwrap();
    let bad = work.path().join("bad.save");
    let mut b2 = bytes[..stream + 16].to_vec();
    b2[0] = b'X';
    std::fs::write(&bad, &b2).unwrap();
    for (f, want) in [(&cut, "Invalid data length"), (&bad, "bad magic")] {
        let o = Command::new(env!("CARGO_BIN_EXE_clonesafe")).args(["save-image", "show", f.to_str().unwrap()]).output().unwrap();
        assert_eq!(o.status.code(), Some(2));
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains(want) && !e.contains("panicked"), "{e}");
    }
    assert!(ours(&b).is_empty(), "domains left: {:?}", ours(&b));
}

/// Clones through libvirt: libvirt refuses the new identity, the engine rewrites the image, and
/// each clone runs on its own overlay with the identity it was given. Both snapshot modes.
#[tokio::test]
async fn clones_restore_through_rewritten_images_in_both_modes() {
    for mode in [SnapshotMode::External, SnapshotMode::Save] {
        let Some(b) = libvirt(mode) else { return };
        let guest = guest().unwrap();
        let work = tempfile::tempdir().unwrap();
        tokio::time::timeout(VM_TEST_BOUND, async {
            let t = Timeouts::default();
            let mut source = b.boot(&machine(&guest, false), args(work.path(), "src", false), &t).await.unwrap();
            source.agent().unwrap().hold(T).await.unwrap();
            let snap = source.snapshottable().unwrap().snapshot(work.path()).await.unwrap();
            let image = snap.artifact(ArtifactKind::LibvirtSaveImage).unwrap().to_path_buf();
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&image).unwrap().permissions().mode() & 0o777, 0o600);
            let image_len = std::fs::metadata(&image).unwrap().len();
            let mut clones = Vec::new();
            for i in 0..2 {
                let mut c = b.restorer().unwrap().restore(&snap, args(work.path(), &format!("c{i}"), false), &t).await.unwrap();
                c.agent().unwrap().go(None, T).await.unwrap();
                clones.push(c);
            }
            assert_eq!(std::fs::metadata(&image).unwrap().len(), image_len, "the image was not copied or grown");
            let notes = clones[0].notes().join(" ");
            assert!(notes.contains("does not match source") && notes.contains("rewrote"), "{notes}");
            // Each clone's disk write stays its own.
            clones[0].agent().unwrap().write_file("/data/who", "c0", T).await.unwrap();
            assert_eq!(clones[1].agent().unwrap().read_file("/data/who", T).await.unwrap(), None);
            // libvirt runs each clone under the name and UUID it was given.
            let names = ours(&b);
            for c in &clones {
                assert!(names.contains(&c.name().to_string()), "{names:?}");
            }
            drop(source);
            for c in clones {
                c.destroy().await.unwrap();
            }
        })
        .await
        .expect("test bound");
        assert!(ours(&b).is_empty(), "{mode:?}: domains left: {:?}", ours(&b));
    }
}

/// Does libvirt give a restored domain a new genid by itself when the domain has one? Measured
/// as the guest sees it: the vmgenid reseed line in the clone's kernel log.
#[tokio::test]
async fn genid_on_restore_is_measured() {
    let Some(b) = libvirt(SnapshotMode::External) else { return };
    let guest = guest().unwrap();
    let work = tempfile::tempdir().unwrap();
    tokio::time::timeout(VM_TEST_BOUND, async {
        let t = Timeouts::default();
        let src_args = args(work.path(), "gsrc", true);
        let image_genid = src_args.identity.vmgenid.unwrap().to_string();
        let mut source = b.boot(&machine(&guest, true), src_args, &t).await.unwrap();
        source.agent().unwrap().hold(T).await.unwrap();
        let snap = source.snapshottable().unwrap().snapshot(work.path()).await.unwrap();
        // The clone keeps the image's genid (no new one from the recipe).
        let mut c = b.restorer().unwrap().restore(&snap, args(work.path(), "gclone", false), &t).await.unwrap();
        c.agent().unwrap().go(None, T).await.unwrap();
        let identity = c.agent().unwrap().report(&guest.sources, T).await.unwrap();
        let dumped = Command::new("virsh").args(["-c", DEFAULT_URI, "dumpxml", c.name()]).output().unwrap();
        let dumped = String::from_utf8_lossy(&dumped.stdout).to_string();
        let regenerated = !dumped.contains(&image_genid);
        eprintln!("MEASURED libvirt genid on restore: regenerated={regenerated}, guest vmfork reseeds={}", identity.vmfork_reseeds);
        // Whatever libvirt does, the guest must agree with it: a new genid means a logged reseed.
        assert_eq!(regenerated, identity.vmfork_reseeds > 0, "domain XML and guest disagree: {dumped}");
        drop(source);
        c.destroy().await.unwrap();
    })
    .await
    .expect("test bound");
    assert!(ours(&b).is_empty());
}

/// The whole default suite through the binary with --backend libvirt: same verdicts as QEMU for
/// the checks issue #2 fixes, libvirt's refusal in the report, and no clonesafe domain left.
#[test]
fn smoke_suite_on_libvirt_matches_qemu_verdicts() {
    if libvirt(SnapshotMode::External).is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let out_dir = work.path().join("out");
    let smoke = repo("scenarios/smoke.toml");
    let child = clonesafe(&["run", smoke.to_str().unwrap(), "--backend", "libvirt", "--out", out_dir.to_str().unwrap()], work.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let ran = finish(child, &out_dir);
    assert_eq!(ran.code(), Some(0));
    let naive = ran.scenario("naive");
    assert!(ran.report()["host"]["vmms"].as_array().unwrap().iter().any(|v| v["name"] == "libvirt"), "host.vmms names libvirt");
    assert_eq!(naive["backend"], "libvirt");
    let notes = naive["notes"].to_string();
    assert!(notes.contains("Target domain uuid") && notes.contains("rewrote the domain XML"), "{notes}");
    // Each VM names the host libvirtd says it is (here this machine, through the daemon).
    let virsh = std::process::Command::new("virsh").args(["-c", DEFAULT_URI, "hostname"]).output().unwrap();
    let host = String::from_utf8_lossy(&virsh.stdout).trim().to_string();
    assert!(!host.is_empty() && naive["vms"].as_array().unwrap().iter().all(|v| v["host"] == host.as_str()), "{host}: {}", naive["vms"]);
    let b = LibvirtBackend::connect(DEFAULT_URI, SnapshotMode::External).unwrap();
    let left: Vec<String> = b.clonesafe_domains().into_iter().filter(|n| n.starts_with(&format!("{NAME_PREFIX}{pid}-"))).collect();
    assert!(left.is_empty(), "{left:?}");
}

/// `doctor --connect` asks a libvirt host over libvirt's network protocol (loopback TCP, which
/// ci/start-libvirt.sh --tcp-loopback opens) what it offers, and says the transport is not
/// encrypted. A URI nobody answers is a clear error, exit 2.
#[test]
fn doctor_asks_a_host_over_the_network_protocol() {
    const TCP: &str = "qemu+tcp://127.0.0.1/system";
    if libvirt(SnapshotMode::External).is_none() {
        return;
    }
    if virt::connect::Connect::open(Some(TCP)).is_err() {
        assert!(!std::env::var("CLONESAFE_REQUIRE_VMS").is_ok_and(|v| v == "1"), "libvirtd does not listen on {TCP}: run ci/start-libvirt.sh --tcp-loopback");
        eprintln!("skipping: nothing answers on {TCP}");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let o = clonesafe(&["doctor", "--connect", TCP, "--json"], work.path()).output().unwrap();
    let items: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)));
    let get = |what: &str| items.as_array().unwrap().iter().find(|i| i["what"] == what).unwrap_or_else(|| panic!("no {what}: {items}")).clone();
    assert_eq!(get("connect")["ok"], true, "{items}");
    assert!(get("connect")["detail"].as_str().unwrap().contains("libvirt 9."), "{items}");
    assert!(get("transport")["detail"].as_str().unwrap().contains("NOT encrypted"), "{items}");
    assert!(get("pool-dir")["detail"].as_str().unwrap().contains("/var/lib/clonesafe/pool"), "{items}");
    let pools_ok = get("pools")["ok"].as_bool().unwrap();
    assert_eq!(o.status.code(), Some(if pools_ok { 0 } else { 2 }), "exit code follows the pools item: {items}");
    let o = clonesafe(&["doctor", "--connect", "qemu+tcp://127.0.0.1:1/system"], work.path()).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stdout).contains("qemu+tcp://127.0.0.1:1/system"), "{}", String::from_utf8_lossy(&o.stdout));
}
