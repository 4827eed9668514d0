//! `clonesafe bench` against real QEMU, through the binary, at a small size: every method it can
//! measure is sampled, the files are written, and nothing is left. With QEMU 10 (unpacked by
//! ci/install-qemu10.sh) mapped-ram is measured too, and `run --emulator` records that QEMU.

mod common;

use common::*;
use std::path::Path;

const QEMU10: &str = "/opt/clonesafe/qemu-10/usr/bin/qemu-system-x86_64";

fn bench(out: &Path, work: &Path, extra: &[&str]) -> (std::process::Output, serde_json::Value) {
    let mut a = vec!["bench", "--memory", "256", "--fanout", "1,2", "--repeat", "1", "--accel", "tcg", "--out", out.to_str().unwrap()];
    a.extend(extra);
    let o = clonesafe(&a, work).output().unwrap();
    eprintln!("--- stdout\n{}\n--- stderr\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(0), "bench failed");
    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("bench.json")).unwrap()).unwrap();
    (o, j)
}

fn methods(j: &serde_json::Value) -> std::collections::BTreeSet<String> {
    j["samples"].as_array().unwrap().iter().map(|s| s["method"].as_str().unwrap().to_string()).collect()
}

fn nothing_left(work: &Path) {
    let left = runs_left(work);
    assert!(left.is_empty(), "run directories left (they hold RAM files and streams): {left:?}");
    let vms = orphan_vms(&["-bench-"]);
    assert!(vms.is_empty(), "bench VMs left by an exited run: {vms:?}");
}

#[test]
fn bench_samples_every_method_and_writes_its_files() {
    if guest().is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("bench");
    let (o, j) = bench(&out, work.path(), &[]);
    let m = methods(&j);
    for want in ["boot", "stream", "shared", "pooled-shared"] {
        assert!(m.contains(want), "no {want} sample: {m:?}");
    }
    // Every sample carries the fields bench.json promises; fan-out 2 gives two clone samples.
    for s in j["samples"].as_array().unwrap() {
        for k in ["method", "memory_mib", "dirtied_mib", "fanout", "ms", "emulator", "accel"] {
            assert!(!s[k].is_null(), "sample without {k}: {s}");
        }
        assert!(s["ms"].as_f64().unwrap() > 0.0, "{s}");
        // A clone's phases add up to its figure.
        if s["method"] != "boot" {
            let p = &s["phases"];
            let sum = p["start_ms"].as_f64().unwrap() + p["load_ms"].as_f64().unwrap() + p["answer_ms"].as_f64().unwrap();
            let ms = s["ms"].as_f64().unwrap();
            assert!(sum <= ms + 0.5 && sum >= ms * 0.95, "phases {sum} against {ms}: {s}");
            if s["method"] == "pooled-shared" {
                assert!(p["start_ms"].as_f64().unwrap() < 1.0, "a pooled clone starts before the take: {s}");
            }
        }
    }
    let x2 = j["samples"].as_array().unwrap().iter().filter(|s| s["method"] == "shared" && s["fanout"] == 2).count();
    assert_eq!(x2, 2, "fan-out 2 is two clones, each timed");
    assert!(j["host"]["cpu_model"].is_string() && j["host"]["vcpus"].as_u64().unwrap() >= 1);
    // The guest really dirtied its memory: the stream carries it, the shared snapshot does not.
    let snap = |meth: &str| j["samples"].as_array().unwrap().iter().find(|s| s["method"] == meth).unwrap()["snapshot_bytes"].as_u64().unwrap();
    let dirtied = j["samples"].as_array().unwrap().iter().find(|s| s["method"] == "stream").unwrap()["dirtied_mib"].as_u64().unwrap();
    assert!(dirtied >= 64, "the guest filled only {dirtied} MiB");
    assert!(snap("stream") > dirtied << 20, "stream {} bytes for {dirtied} MiB dirtied", snap("stream"));
    assert!(snap("shared") * 20 < snap("stream"), "shared {} against stream {}", snap("shared"), snap("stream"));
    if !clonesafe::backend::emulator::has_mapped_ram() {
        assert!(j["skipped"].to_string().contains("mapped-ram"), "{}", j["skipped"]);
    }
    let md = std::fs::read_to_string(out.join("bench.md")).unwrap();
    assert!(md.contains("## Targets") && md.contains("pooled shared-RAM restore"), "{md}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("pooled shared-RAM restore"), "targets are printed");
    for svg in ["bench-memory.svg", "bench-fanout.svg"] {
        assert!(std::fs::read_to_string(out.join(svg)).unwrap().contains("<svg"), "{svg}");
    }
    nothing_left(work.path());
}

/// QEMU 10 beside 7.2: `--emulator` runs it (with its own firmware), the bench measures
/// mapped-ram with and without multifd, and a run's report names the QEMU that ran.
#[test]
fn qemu10_measures_mapped_ram_and_is_recorded() {
    if guest().is_none() {
        return;
    }
    if !Path::new(QEMU10).exists() {
        assert!(!std::env::var("CLONESAFE_REQUIRE_VMS").is_ok_and(|v| v == "1"), "QEMU 10 required: run ci/install-qemu10.sh");
        eprintln!("skipping: no {QEMU10}");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("bench");
    let (_, j) = bench(&out, work.path(), &["--emulator", QEMU10]);
    assert!(j["emulator"].as_str().unwrap().starts_with("qemu 10."), "{}", j["emulator"]);
    let mapped: Vec<&serde_json::Value> = j["samples"].as_array().unwrap().iter().filter(|s| s["method"] == "mapped-ram").collect();
    let channels: std::collections::BTreeSet<u64> = mapped.iter().map(|s| s["multifd_channels"].as_u64().unwrap()).collect();
    assert_eq!(channels, [0, 2].into_iter().collect(), "mapped-ram without and with multifd");
    assert!(std::fs::read_to_string(out.join("bench.md")).unwrap().contains("mapped-ram beside the stream"));
    nothing_left(work.path());

    let f = work.path().join("q10.toml");
    std::fs::write(&f, "[[scenario]]\nname = \"naive-q10\"\nstrategy = \"naive\"\nclones = 2\n[scenario.expect]\nmachine_id = \"duplicate\"\n\n[[scenario]]\nname = \"shared-q10\"\nmethod = \"shared-ram\"\npool = 2\nclones = 2\n[scenario.expect]\nmachine_id = \"duplicate\"\n").unwrap();
    let ran = run_files(&[&f], &work.path().join("out"), &["--accel", "tcg", "--emulator", QEMU10], work.path());
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr());
    assert!(ran.report().to_string().contains("\"10.0"), "the report names QEMU 10: {}", ran.report()["environment"]);
}

#[test]
fn a_bad_emulator_or_parameter_changes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("never");
    for (args, says) in [
        (vec!["bench", "--emulator", "/bin/true", "--out", out.to_str().unwrap()], "not a QEMU binary"),
        (vec!["bench", "--dirty-fraction", "1.5", "--out", out.to_str().unwrap()], "--dirty-fraction"),
        (vec!["bench", "--fanout", "0", "--out", out.to_str().unwrap()], "--fanout"),
        (vec!["bench", "--guest", "no-such-guest", "--out", out.to_str().unwrap()], "no-such-guest"),
    ] {
        let o = clonesafe(&args, work.path()).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains(says), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(!out.exists(), "{args:?} created the output directory");
    }
}
