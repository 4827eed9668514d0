use super::*;
use serde_json::json;

fn ev(vms: &[&[(&str, f64)]]) -> Value {
    json!({ "vms": vms.iter().map(|s| json!({ "samples": s.iter().map(|(h, t)| json!({"hex": h, "offset_ms": t})).collect::<Vec<_>>() })).collect::<Vec<_>>() })
}

#[test]
fn a_clone_s_window_ends_at_its_first_sample_after_the_last_shared_one() {
    // Distinct from the first read: 0.
    let w = clone_windows(&ev(&[&[("a", 0.0), ("b", 1.0)], &[("c", 0.0), ("d", 1.2)]]));
    assert_eq!(w, vec![Window { ms: 0.0, open_ended: false }; 2]);
    // The first read shared, the second not: diverged by the second sample, on each clone's clock.
    let w = clone_windows(&ev(&[&[("a", 0.0), ("b", 1.0)], &[("a", 0.0), ("d", 1.2)]]));
    assert_eq!(w, vec![Window { ms: 1.0, open_ended: false }, Window { ms: 1.2, open_ended: false }]);
    // Shared at the last sample: at least that long.
    let w = clone_windows(&ev(&[&[("a", 0.0), ("b", 300.5)], &[("x", 0.0), ("b", 300.1)]]));
    assert_eq!(w, vec![Window { ms: 300.5, open_ended: true }, Window { ms: 300.1, open_ended: true }]);
    // Three clones: two share up to their third sample, the third never shares.
    let w = clone_windows(&ev(&[&[("a", 0.0), ("b", 5.0), ("c", 20.0), ("d", 100.0)], &[("a", 0.0), ("b", 4.0), ("c", 21.0), ("e", 99.0)], &[("f", 0.0), ("g", 5.0), ("h", 20.0), ("i", 100.0)]]));
    assert_eq!(w.iter().map(|w| w.ms).collect::<Vec<_>>(), vec![100.0, 99.0, 0.0]);
    // Equal values at different indexes are not a shared read (the checks compare by index).
    let w = clone_windows(&ev(&[&[("a", 0.0), ("b", 1.0)], &[("b", 0.0), ("a", 1.0)]]));
    assert!(w.iter().all(|w| w.ms == 0.0), "{w:?}");
}

fn committed(name: &str) -> Report {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../reports").join(name).join("report.json");
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

#[test]
fn the_committed_debian_run_gives_a_cell_per_kernel_vmm_and_recipe() {
    let cells = cells(&[committed("debian")]);
    let naive = cells.iter().find(|c| c.kernel.starts_with("6.12") && c.recipe == "naive").expect("a debian13 naive cell");
    assert_eq!((naive.vmm.as_str(), naive.clones, naive.guest.as_str()), ("QEMU 7.2.22", 2, "debian13"), "{naive:?}");
    // Its vDSO getrandom stayed shared to the last sample in both clones (reports/debian).
    let vdso = &naive.series[1];
    assert_eq!(vdso.first_shared, vec![true]);
    assert!(vdso.windows.len() == 2 && vdso.windows.iter().all(|w| w.open_ended && w.ms >= 300.0), "{vdso:?}");
    assert_eq!(closure(naive, &cells), Closure::Open);
    // Debian 12's glibc has no vDSO getrandom: skipped, with the check's reason; its kernel
    // comes from vmgenid_uevent's skipped evidence.
    let d12 = cells.iter().find(|c| c.guest == "debian12" && c.recipe == "naive" && c.clones == 2).expect("a debian12 naive cell");
    assert!(d12.series[1].windows.is_empty() && d12.series[1].skipped.is_some(), "{d12:?}");
    assert!(d12.kernel.starts_with("6.1.0-"), "{d12:?}");
    let md = markdown(&cells);
    assert_eq!(md.lines().filter(|l| l.starts_with("| 6.")).count(), cells.len(), "{md}");
    assert!(md.contains("| naive | 2 |"), "{md}");
    // Kernels sort by version: 6.1 before 6.12.
    assert!(md.find("| 6.1.0-").unwrap() < md.find("| 6.12.").unwrap(), "{md}");
}

#[test]
fn a_guest_without_a_kernel_sorts_first() {
    let c = |kernel: &str, guest: &str, vmm: &str| Cell { kernel: kernel.into(), guest: guest.into(), vmm: vmm.into(), recipe: "naive".into(), ..Default::default() };
    let mut v = vec![c("7.3.0", "a", "QEMU 7.2"), c("6.12.1", "c", "QEMU 10.0"), c("", "debian12", "QEMU 7.2"), c("6.12.1", "b", "QEMU 7.2")];
    sort(&mut v);
    assert_eq!(v.iter().map(|c| c.guest.as_str()).collect::<Vec<_>>(), ["debian12", "b", "c", "a"], "6.12 before 7.3, QEMU 7.2 before 10.0");
}

#[test]
fn a_cell_is_closed_only_when_every_first_read_was_its_own() {
    let w = |ms: f64, open_ended: bool| Window { ms, open_ended };
    let cell = |recipe: &str, windows: Vec<Window>| Cell { kernel: "7.3".into(), vmm: "QEMU 10".into(), recipe: recipe.into(), series: [Series { windows, ..Default::default() }, Series::default(), Series::default()], ..Default::default() };
    let cells = vec![cell("naive", vec![w(300.0, true)]), cell("vmgenid", vec![w(0.0, false), w(2.0, false)]), cell("vmgenid + rng-gate", vec![w(0.0, false)]), cell("x", vec![])];
    assert_eq!(closure(&cells[0], &cells), Closure::Open);
    assert_eq!(closure(&cells[1], &cells), Closure::Narrowed);
    assert_eq!(closure(&cells[2], &cells), Closure::Closed);
    assert_eq!(closure(&cells[3], &cells), Closure::Unknown);
    // Against a naive cell whose windows ended: narrowed only when shorter than its longest.
    let ended = vec![cell("naive", vec![w(185.0, false)]), cell("vmgenid", vec![w(219.0, false)]), cell("vmgenid + x", vec![w(100.0, false)]), cell("vmgenid + y", vec![w(100.0, true)])];
    assert_eq!(closure(&ended[1], &ended), Closure::Open);
    assert_eq!(closure(&ended[2], &ended), Closure::Narrowed);
    assert_eq!(closure(&ended[3], &ended), Closure::Open, "a window still open at the last sample narrows nothing");
    // A vmgenid window of 524 ms against naive's ≥303: bounded against unbounded.
    let long = vec![cell("naive", vec![w(303.0, true)]), cell("vmgenid", vec![w(524.0, false)])];
    assert_eq!(closure(&long[1], &long), Closure::Narrowed);
}

#[test]
fn what_a_guest_said_is_escaped_in_the_table() {
    let c = Cell { kernel: "6.1|<script>".into(), guest: "g".into(), vmm: "QEMU 7.2".into(), recipe: "naive".into(), uevent_none: Some("x | y".into()), ..Default::default() };
    let md = markdown(&[c]);
    let row = md.lines().nth(2).unwrap();
    assert_eq!(row.matches(" | ").count() + 0, 4 + 3 + 4 - 1 + 0, "one cell per column: {row}");
    assert!(!row.contains("<script>"), "{row}");
}
