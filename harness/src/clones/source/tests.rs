use super::*;
use std::path::Path;
use crate::backend::snapshot::Machine;
use crate::guest::GuestProfile;
use clonesafe_metadata::Accel;


/// The plan's scenarios with their machines, shaped as the runner shapes them.
fn plan(src: &str) -> Vec<(ScenarioPlan, Machine)> {
    crate::scenario::parse(Path::new("t.toml"), src)
        .unwrap()
        .into_iter()
        .map(|s| {
            let mut m = Machine::new(GuestProfile::for_tests(), s.memory_mib.unwrap_or(256), Accel::Tcg);
            m.network = s.network;
            m.devices.tpm = s.tpm;
            m.devices.seed = s.nocloud.is_some();
            for f in crate::clones::fixups_of(&s.recipe) {
                f.configure(&mut m).unwrap();
            }
            (s, m)
        })
        .collect()
}

/// The units as scenario names (`*`: a derived snapshot), with whether each shares a source.
fn grouped(src: &str, share: bool, keeps_running: bool) -> Vec<(Vec<String>, bool)> {
    let p = plan(src);
    let refs: Vec<(&ScenarioPlan, &Machine)> = p.iter().map(|(s, m)| (s, m)).collect();
    units(&refs, share, |_| keeps_running)
        .into_iter()
        .map(|u| (u.scenarios.iter().map(|&i| format!("{}{}", p[i].0.name, if u.derived.contains(&i) { "*" } else { "" })).collect(), u.source.is_some()))
        .collect()
}

fn scenario(name: &str, body: &str) -> String {
    format!("[[scenario]]\nname = \"{name}\"\nclones = 2\n{body}\n")
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// debian.toml's shape: every recipe on one backend.
fn suite() -> String {
    [
        scenario("cold", "strategy = \"cold-boot\""),
        scenario("image", "strategy = \"image-clone\""),
        scenario("sysprep", "strategy = \"image-clone-sysprep\""),
        scenario("naive", "strategy = \"naive\""),
        scenario("replug", "strategy = \"nic-replug\""),
        scenario("genid", "strategy = \"vmgenid\""),
        scenario("agent", "strategy = \"agent-fixup\""),
        scenario("full", "strategy = \"full\""),
        scenario("hardened", "method = \"live\"\nfixups = [\"nic-replug\", \"vmgenid\", \"agent\", \"rng-gate\", \"clock\"]"),
        scenario("libvirt-naive", "strategy = \"naive\"\nbackend = \"libvirt\""),
    ]
    .concat()
}

#[test]
fn identical_sources_share_one_boot_and_nic_replug_derives_from_it() {
    assert_eq!(
        grouped(&suite(), true, true),
        vec![
            (names(&["cold"]), false),
            // The template is booted once; sysprep acts on each scenario's own copy.
            (names(&["image", "sysprep"]), true),
            // The plain source's snapshot serves naive and agent; nic-replug's is derived from it.
            (names(&["naive", "agent", "replug*"]), true),
            // The vmgenid device is present at boot: another source, from which full and
            // hardened (both unplug the NIC) derive.
            (names(&["genid", "full*", "hardened*"]), true),
            // Another backend is another source.
            (names(&["libvirt-naive"]), false),
        ]
    );
}

#[test]
fn no_share_gives_every_scenario_its_own_source() {
    let g = grouped(&suite(), false, true);
    assert_eq!(g.len(), 10);
    assert!(g.iter().all(|(s, shared)| s.len() == 1 && !shared));
}

#[test]
fn a_source_that_stops_at_its_snapshot_gives_nothing_to_derive_from() {
    let g = grouped(&suite(), true, false);
    assert!(g.contains(&(names(&["naive", "agent"]), true)), "{g:?}");
    assert!(g.contains(&(names(&["replug"]), false)), "{g:?}");
    assert!(g.contains(&(names(&["full", "hardened"]), true)), "{g:?}");
}

#[test]
fn segments_and_shared_seeds_never_share_and_a_scrubbed_source_is_never_derived() {
    let src = [
        scenario("a", "strategy = \"naive\"\nnetwork = \"segment\""),
        scenario("b", "strategy = \"naive\"\nnetwork = \"segment\""),
        scenario("c", "strategy = \"naive\"\nnocloud = \"shared\""),
        scenario("d", "strategy = \"naive\"\nnocloud = \"shared\""),
        scenario("e", "strategy = \"naive\""),
        scenario("f", "method = \"live\"\nfixups = [\"mitigate-remanence\"]\ncanary = true"),
        scenario("g", "strategy = \"naive\"\ncanary = true"),
    ]
    .concat();
    let g = grouped(&src, true, true);
    assert!(g.iter().all(|(s, shared)| s.len() == 1 && !shared), "{g:?}");
}

#[test]
fn shared_ram_sources_share_but_derive_nothing() {
    let src = [
        scenario("s1", "method = \"shared-ram\""),
        scenario("s2", "method = \"shared-ram\"\nfixups = [\"agent\"]"),
        scenario("s3", "method = \"shared-ram\"\nfixups = [\"nic-replug\"]"),
        // Private RAM is another source.
        scenario("l1", "strategy = \"naive\""),
    ]
    .concat();
    assert_eq!(grouped(&src, true, true), vec![(names(&["s1", "s2"]), true), (names(&["s3"]), false), (names(&["l1"]), false)]);
}

#[test]
fn a_different_memory_size_or_device_is_a_different_source() {
    let src = [
        scenario("m1", "strategy = \"naive\""),
        scenario("m2", "strategy = \"naive\"\nmemory_mib = 512"),
        scenario("t1", "strategy = \"naive\"\ntpm = true"),
        scenario("m3", "strategy = \"naive\""),
    ]
    .concat();
    assert_eq!(grouped(&src, true, true), vec![(names(&["m1", "m3"]), true), (names(&["m2"]), false), (names(&["t1"]), false)]);
}
