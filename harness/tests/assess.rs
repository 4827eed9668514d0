//! `clonesafe assess` against real QEMU on the tiny guest: the fixed suite runs, the
//! assessment's statements point at cells of its own report, and --fail-on decides the exit
//! code both ways. (reports/ holds a measured assessment of a Debian image.)

mod common;

use common::*;
use std::process::Stdio;

#[test]
fn assess_runs_the_suite_and_every_statement_points_at_its_report() {
    if guest().is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let ids = work.path().join("ids.toml");
    std::fs::write(&ids, "[[identity]]\nid = \"data_machine_id\"\nfile = \"/data/etc/machine-id\"\nseverity = \"identity-confusion\"\nconsequence = \"the fleet inventory counts one machine\"\n").unwrap();
    let out = work.path().join("out");
    let child = clonesafe(&["assess", "--guest", "tiny", "--accel", "tcg", "--identities", ids.to_str().unwrap(), "--out", out.to_str().unwrap(), "--fail-on", "key-reuse", "--recipe", "assess-naive"], work.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let ran = finish(child, &out);
    assert!(settle_blocking(pid).is_empty(), "VMs left behind");
    // Naive live clones share the kernel RNG's output (key-reuse): --fail-on key-reuse fails.
    assert_eq!(ran.code(), Some(1), "{}", ran.stderr());
    assert!(ran.stderr().contains("recipes done; about"), "progress with the time left: {}", ran.stderr());
    let r = ran.report.clone().expect("report.json");
    let names: Vec<&str> = r["scenarios"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, clonesafe::assess::SUITE.iter().map(|s| s.0).collect::<Vec<_>>());
    let a = &r["assessment"];
    assert_eq!(a["baseline"], "assess-cold-boot");
    // Every cell a statement names is a check of that scenario in this report.
    let cells = assessment_cells_back_their_statements(&r);
    assert!(cells > 0, "no statement names a cell: {a}");
    let naive = a["recipes"].as_array().unwrap().iter().find(|x| x["scenario"] == "assess-naive").unwrap();
    assert!(naive["shared"].as_array().unwrap().iter().any(|s| s["id"] == "kernel_rng" && s["severity"] == "key-reuse" && s["shipped"] == false), "{naive}");
    // The declared identity carries the severity it states, in the assessment and on the check
    // itself (so `assess --from` and the HTML keep it).
    let naive_report = r["scenarios"].as_array().unwrap().iter().find(|s| s["name"] == "assess-naive").unwrap();
    let declared = naive_report["checks"].as_array().unwrap().iter().find(|c| c["id"] == "data_machine_id").unwrap();
    assert_eq!(declared["stated"]["severity"], "identity-confusion", "{declared}");
    assert!(naive["shared"].as_array().unwrap().iter().any(|s| s["id"] == "data_machine_id" && s["severity"] == "identity-confusion"), "{naive}");
    let md = std::fs::read_to_string(out.join("assessment.md")).unwrap();
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(md.contains("## Conclusions") && html.contains("<h2>Assessment: tiny</h2>") && html.contains("href=\"#c-assess-naive-kernel_rng\""));
    assert!(html.contains("id=\"c-assess-naive-kernel_rng\""), "the link's target is a cell of the matrix");

    // The other way: a recipe that leaves nothing of that severity shared exits 0. On the tiny
    // guest, virt-sysprep's copy (host keys and machine-id made anew at first boot, fresh
    // kernels) leaves no key, secret or random output shared.
    let out2 = work.path().join("out2");
    let child = clonesafe(&["assess", "--guest", "tiny", "--accel", "tcg", "--out", out2.to_str().unwrap(), "--fail-on", "key-reuse", "--recipe", "assess-image-clone-sysprep"], work.path()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let ran = finish(child, &out2);
    assert!(settle_blocking(pid).is_empty(), "VMs left behind");
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr());
}
