//! The shared-RAM clone method against real QEMU, through the binary: the same recipe through
//! the stream and through shared RAM (and a warm pool) must give the same verdicts (except
//! `shared_pages`, which tells them apart), while the shared snapshot writes device state only and the RAM file is scanned like any artifact.

mod common;

use common::*;

const SCENARIOS: &str = r#"
[[scenario]]
name = "naive-stream"
strategy = "naive"
clones = 2
canary = true

[[scenario]]
name = "naive-shared"
method = "shared-ram"
clones = 2
canary = true

[[scenario]]
name = "full-stream"
strategy = "full"
clones = 2
mitigate_remanence = true

[[scenario]]
name = "full-shared-pooled"
method = "shared-ram"
fixups = ["nic-replug", "vmgenid", "agent"]
pool = 2
clones = 2
mitigate_remanence = true
"#;

/// Checks whose verdict is a race, not a property of the recipe (`CheckId::decided_by_timing`).
fn racy(id: &str) -> bool {
    clonesafe_metadata::vocab::CheckId::parse(id).is_some_and(|c| c.decided_by_timing())
}

#[test]
fn shared_ram_clones_give_the_stream_verdicts() {
    if guest().is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let f = work.path().join("shared.toml");
    std::fs::write(&f, SCENARIOS).unwrap();
    let out = work.path().join("out");
    let ran = run_files(&[&f], &out, &["--accel", "tcg"], work.path());
    assert_eq!(ran.code(), Some(0), "the run failed");
    for (stream, shared) in [("naive-stream", "naive-shared"), ("full-stream", "full-shared-pooled")] {
        let (a, b) = (ran.scenario(stream), ran.scenario(shared));
        for c in a["checks"].as_array().unwrap() {
            let id = c["id"].as_str().unwrap();
            if racy(id) && !(stream == "naive-stream" && id == "kernel_rng") || id == "shared_pages" {
                continue;
            }
            assert_eq!(verdict(&a, id), verdict(&b, id), "{id}: {stream} and {shared} differ");
        }
        // The one verdict that must differ: a stream clone's RAM is its own, a shared-RAM
        // clone maps its template's pages until it writes them (shared_pages, from smaps).
        assert_eq!(verdict(&a, "shared_pages"), "unique", "{stream}");
        assert_eq!(verdict(&b, "shared_pages"), "duplicate", "{shared}");
        // Device state only: the stream version writes the dirtied RAM, the shared one a
        // fraction of it (0.4 MB against 20+ MB for the tiny guest).
        let bytes = |s: &serde_json::Value| s["timing"]["snapshot_bytes"].as_u64().unwrap();
        assert!(bytes(&b) * 10 < bytes(&a), "shared snapshot {} bytes, stream {}", bytes(&b), bytes(&a));
        assert!(b["notes"].to_string().contains("frozen template"), "{}", b["notes"]);
    }
    // The RAM file is scanned, and the positive control (the hostname) is found in it.
    let naive = ran.scenario("naive-shared");
    let scan = naive["checks"].as_array().unwrap().iter().find(|c| c["id"] == "secret_remanence").unwrap().clone();
    assert_eq!(scan["evidence"]["control"]["artifact"], "RAM file", "{scan}");
    assert_eq!(scan["evidence"]["control"]["found"], true, "{scan}");
    let pooled = ran.scenario("full-shared-pooled");
    assert!(pooled["notes"].to_string().contains("warm pool of 2"), "{}", pooled["notes"]);
    assert_eq!(pooled["recipe"]["method"], "shared-ram");
    // Nothing left: no VM, and no RAM file or stream in the work directory.
    let left = orphan_vms(&["-naive-shared-", "-full-shared-pooled-", "-naive-stream-", "-full-stream-"]);
    assert!(left.is_empty(), "VMs left behind: {left:?}");
    let left = runs_left(work.path());
    assert!(left.is_empty(), "run directories left: {left:?}");
}

/// A backend without shared RAM refuses the method before any VM starts.
#[test]
fn libvirt_refuses_shared_ram_at_plan_time() {
    if guest().is_none() {
        return;
    }
    if let Err(e) = clonesafe::backend::libvirt::LibvirtBackend::connect(clonesafe::backend::libvirt::DEFAULT_URI, Default::default()) {
        assert!(!std::env::var("CLONESAFE_REQUIRE_VMS").is_ok_and(|v| v == "1"), "libvirtd required: {e}");
        eprintln!("skipping libvirt test: {e}");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let f = work.path().join("lv.toml");
    std::fs::write(&f, "[[scenario]]\nname = \"x\"\nmethod = \"shared-ram\"\nbackend = \"libvirt\"\nclones = 2\n").unwrap();
    let ran = run_files(&[&f], &work.path().join("out"), &["--accel", "tcg"], work.path());
    assert_eq!(ran.code(), Some(2), "{}", ran.stderr());
    assert!(ran.stderr().contains("shared-ram") && ran.stderr().contains("libvirt"), "{}", ran.stderr());
}
