use super::compare::compare;
use super::*;
use crate::probes::Observation;
use clonesafe_metadata::{CheckId, Control, Hit, MeasurementId, Recipe, Scan, Strategy, Verdict};
use clonesafe_protocol::{Identity, Nic, Sample};
use proptest::prelude::*;
use serde_json::{json, Value};

fn recipe(s: Strategy) -> Recipe {
    s.recipe().unwrap()
}

fn cx(r: &Recipe) -> Evidence {
    Evidence::of(r, vec![])
}

/// Every check on the observations `o` with the rest of the evidence `cx`.
fn run_all(o: &[Observation], cx: &Evidence) -> Vec<clonesafe_metadata::CheckResult> {
    super::run_all(&Evidence { observations: o.to_vec(), ..cx.clone() })
}

proptest! {
    /// unique iff the values are pairwise distinct; duplicate iff some pair is equal.
    #[test]
    fn verdict_matches_pairwise_equality(values in prop::collection::vec("[a-c]{1,2}", 2..8)) {
        let c = compare(&values.iter().cloned().map(Some).collect::<Vec<_>>());
        let any_equal = (0..values.len()).any(|i| (i + 1..values.len()).any(|j| values[i] == values[j]));
        prop_assert_eq!(c.verdict, if any_equal { Verdict::Duplicate } else { Verdict::Unique });
        let distinct: std::collections::HashSet<_> = values.iter().collect();
        prop_assert_eq!(c.distinct, distinct.len());
    }

    /// Groups are exactly the classes of equal values with two or more members.
    #[test]
    fn groups_partition_the_duplicates(values in prop::collection::vec("[a-d]", 0..10)) {
        let c = compare(&values.iter().cloned().map(Some).collect::<Vec<_>>());
        let mut seen = std::collections::HashSet::new();
        for g in &c.groups {
            prop_assert!(g.len() >= 2);
            for &i in g {
                prop_assert!(seen.insert(i), "index {} in two groups", i);
                prop_assert_eq!(&values[i], &values[g[0]]);
            }
        }
        for i in 0..values.len() {
            let shared = values.iter().filter(|v| **v == values[i]).count() > 1;
            prop_assert_eq!(shared, seen.contains(&i));
        }
    }

    /// The verdict does not depend on VM order.
    #[test]
    fn verdict_is_order_independent(mut values in prop::collection::vec("[a-e]", 2..8), seed in any::<u64>()) {
        let before = compare(&values.iter().cloned().map(Some).collect::<Vec<_>>()).verdict;
        let n = values.len();
        values.rotate_left((seed as usize) % n);
        values.swap(0, (seed as usize / 7) % n);
        prop_assert_eq!(before, compare(&values.iter().cloned().map(Some).collect::<Vec<_>>()).verdict);
    }

    /// One missing value is an error, never a verdict about uniqueness.
    #[test]
    fn a_missing_value_is_an_error(values in prop::collection::vec("[a-z]{4}", 2..6), hole in any::<usize>()) {
        let mut v: Vec<Option<String>> = values.into_iter().map(Some).collect();
        let i = hole % v.len();
        v[i] = None;
        prop_assert_eq!(compare(&v).verdict, Verdict::Error);
    }
}

fn sample(t_ms: u64, hex: &str) -> Sample {
    Sample { t_ns: t_ms * 1_000_000, hex: hex.into() }
}

fn obs(vm: &str, mac: &str, krng: &[&str]) -> Observation {
    Observation {
        vm: vm.into(),
        kernel_rng: krng.iter().enumerate().map(|(i, h)| sample(1000 + i as u64 * 10, h)).collect(),
        userspace_rng: vec![sample(1000, "aa")],
        identity: Some(Identity {
            nics: vec![Nic { name: "eth0".into(), mac: mac.into() }],
            product_uuid: Some("u".into()),
            machine_id: None,
            errors: vec![("machine_id".into(), "/data/etc/machine-id: No such file".into())],
            ..Default::default()
        }),
        error: None,
        host_mac: Some(mac.into()),
        ..Default::default()
    }
}

#[test]
fn checks_report_values_and_reasons() {
    let o = vec![obs("a", "52:54:00:00:00:01", &["01", "02"]), obs("b", "52:54:00:00:00:02", &["01", "03"])];
    let naive = recipe(Strategy::Naive);
    let r = run_all(&o, &cx(&naive));
    let get = |id| r.iter().find(|c| c.id == id).unwrap();
    assert_eq!(get(CheckId::Mac).verdict, Verdict::Unique);
    assert_eq!(get(CheckId::Mac).values, vec![json!("eth0=52:54:00:00:00:01"), json!("eth0=52:54:00:00:00:02")]);
    assert_eq!(get(CheckId::SmbiosUuid).verdict, Verdict::Duplicate);
    assert!(get(CheckId::SmbiosUuid).detail.contains("2 of 2 VMs share"));
    // A value the guest could not read is an error carrying the guest's reason.
    let m = get(CheckId::MachineId);
    assert_eq!(m.verdict, Verdict::Error);
    assert!(m.detail.contains("No such file"), "{}", m.detail);
    // Kernel RNG: first samples equal, second differ: duplicate, identical only at sample 1.
    let k = get(CheckId::KernelRng);
    assert_eq!(k.verdict, Verdict::Duplicate);
    assert_eq!(k.evidence.as_ref().unwrap()["identical_until_ms"], json!(0.0));
    assert_eq!(get(CheckId::Vmgenid).verdict, Verdict::Duplicate);
    assert_eq!(r.len(), CheckId::ALL.len());
}

#[test]
fn kernel_rng_late_duplicate_still_counts_and_reports_the_span() {
    let o = vec![obs("a", "m1", &["01", "02", "09"]), obs("b", "m2", &["03", "04", "09"])];
    let naive = recipe(Strategy::Naive);
    let k = run_all(&o, &cx(&naive)).into_iter().find(|c| c.id == CheckId::KernelRng).unwrap();
    assert_eq!(k.verdict, Verdict::Duplicate);
    assert_eq!(k.evidence.unwrap()["identical_until_ms"], json!(20.0));
}

/// `vdso_rng`: skipped with the helper's reason where glibc took the system call, compared like
/// kernel_rng where every VM took the vDSO path, an error when only some did.
#[test]
fn vdso_rng_compares_only_what_took_the_vdso_path() {
    let watch = |path: &str, hex: &[&str]| clonesafe_protocol::VdsoRngWatch {
        helper: true,
        glibc: if path == "vdso" { "2.41".into() } else { "2.36".into() },
        vdso_symbol: true,
        path: path.into(),
        why: format!("{path} test"),
        samples: hex.iter().enumerate().map(|(i, h)| sample(1000 + i as u64 * 10, h)).collect(),
        error: None,
    };
    let naive = recipe(Strategy::Naive);
    let judge = |a: clonesafe_protocol::VdsoRngWatch, b: clonesafe_protocol::VdsoRngWatch| {
        let mut o = vec![obs("a", "m1", &["01"]), obs("b", "m2", &["02"])];
        o[0].vdso_rng = Some(a);
        o[1].vdso_rng = Some(b);
        run_all(&o, &cx(&naive)).into_iter().find(|c| c.id == CheckId::VdsoRng).unwrap()
    };
    let c = judge(watch("syscall", &[]), watch("syscall", &[]));
    assert_eq!(c.verdict, Verdict::Skipped);
    assert!(c.detail.contains("glibc 2.36: syscall test"), "{}", c.detail);
    let c = judge(watch("vdso", &["0a", "0b", "0c"]), watch("vdso", &["0a", "0b", "0d"]));
    assert_eq!(c.verdict, Verdict::Duplicate);
    assert_eq!(c.evidence.as_ref().unwrap()["identical_until_ms"], json!(10.0));
    assert_eq!(c.evidence.as_ref().unwrap()["glibc"][0]["path"], "vdso");
    assert_eq!(judge(watch("vdso", &["0a"]), watch("vdso", &["0b"])).verdict, Verdict::Unique);
    let c = judge(watch("vdso", &["0a"]), watch("syscall", &[]));
    assert_eq!(c.verdict, Verdict::Error);
    assert!(c.detail.contains("b: the vDSO path did not run"), "{}", c.detail);
    // A probe that predates the helper: skipped, said so.
    let o = vec![obs("a", "m1", &["01"]), obs("b", "m2", &["02"])];
    let c = run_all(&o, &cx(&naive)).into_iter().find(|c| c.id == CheckId::VdsoRng).unwrap();
    assert_eq!(c.verdict, Verdict::Skipped);
}

#[test]
fn vmgenid_needs_every_clone_to_log_the_reseed_and_is_skipped_for_boots() {
    let mut o = vec![obs("a", "m1", &["01"]), obs("b", "m2", &["02"])];
    for x in &mut o {
        x.identity.as_mut().unwrap().vmfork_reseeds = 1;
    }
    // Restored with a vmgenid device (the vmgenid recipe), or booted.
    let (genid, boot) = (recipe(Strategy::Vmgenid), recipe(Strategy::ColdBoot));
    let v = |o: &[Observation], restored| run_all(o, &cx(if restored { &genid } else { &boot })).into_iter().find(|c| c.id == CheckId::Vmgenid).unwrap();
    assert_eq!(v(&o, true).verdict, Verdict::Unique);
    assert_eq!(v(&o, false).verdict, Verdict::Skipped);
    o[1].identity.as_mut().unwrap().vmfork_reseeds = 0;
    assert_eq!(v(&o, true).verdict, Verdict::Duplicate);
}

#[test]
fn an_unprobed_vm_makes_every_check_an_error() {
    let mut o = vec![obs("a", "m1", &["01"]), obs("b", "m2", &["02"])];
    o[1].error = Some("timed out".into());
    o[1].identity = None;
    let boot = recipe(Strategy::ColdBoot);
    for c in run_all(&o, &cx(&boot)) {
        assert_eq!(c.verdict, Verdict::Error, "{}", c.id);
        assert!(c.detail.contains("b could not be probed"));
    }
}

#[test]
fn hw_mismatch_compares_the_guests_mac_with_the_hosts() {
    let mut o = vec![obs("a", "52:54:00:00:00:01", &["01"]), obs("b", "52:54:00:00:00:02", &["02"])];
    let replug = recipe(Strategy::NicReplug);
    let get = |o: &[Observation]| run_all(o, &cx(&replug)).into_iter().find(|c| c.id == CheckId::HwMismatchMs).unwrap();
    o[0].measurements.insert(MeasurementId::NicWindowMs, Some(12.5));
    let c = get(&o);
    assert_eq!(c.verdict, Verdict::Unique);
    assert_eq!(c.values[0], json!(12.5));
    // The guest still sees the source's MAC while the host gave it another: unresolved.
    o[1].host_mac = Some("52:54:00:00:00:99".into());
    let c = get(&o);
    assert_eq!(c.verdict, Verdict::Duplicate);
    assert_eq!(c.values[1], Value::Null);
    assert!(c.detail.contains("sees 52:54:00:00:00:02 but was given 52:54:00:00:00:99"), "{}", c.detail);
    let boot = recipe(Strategy::ColdBoot);
    assert_eq!(run_all(&o, &cx(&boot)).into_iter().find(|c| c.id == CheckId::HwMismatchMs).unwrap().verdict, Verdict::Skipped);
}

#[test]
fn remanence_verdict_follows_the_scan() {
    let o = vec![obs("a", "m1", &["01"]), obs("b", "m2", &["02"])];
    let naive = recipe(Strategy::Naive);
    let hit = |a: &str, found| Hit { artifact: a.into(), path: "/x".into(), bytes: 1, found, offsets: if found { vec![7] } else { vec![] } };
    let get = |scan: &Scan| {
        let cx = Evidence { remanence: Some(scan.clone()), ..cx(&naive) };
        run_all(&o, &cx).into_iter().find(|c| c.id == CheckId::SecretRemanence).unwrap()
    };
    let found = Scan { hits: vec![hit("memory snapshot", false), hit("frozen disk", true)], control: None };
    let c = get(&found);
    assert_eq!(c.verdict, Verdict::Duplicate);
    assert!(c.detail.contains("survived in: frozen disk"));
    let clean = Scan { hits: vec![hit("memory snapshot", false), hit("frozen disk", false)], control: None };
    assert_eq!(get(&clean).verdict, Verdict::Unique);
    // A failed positive control turns "not found" into an error.
    let blind = Scan { control: Some(Control { needle: "tiny-1".into(), artifact: "memory snapshot".into(), found: false }), ..clean };
    assert_eq!(get(&blind).verdict, Verdict::Error);
}

/// What an agent declares it cannot measure is `skipped` with its reason, never a verdict.
#[test]
fn an_unavailable_check_is_skipped_with_the_agents_reason() {
    let mut o = vec![obs("a", "m1", &["01"]), obs("b", "m2", &["02"])];
    o[1].unavailable.insert(CheckId::KernelRng, "the agent cannot sample the RNG".into());
    let naive = recipe(Strategy::Naive);
    let r = run_all(&o, &cx(&naive));
    let k = r.iter().find(|c| c.id == CheckId::KernelRng).unwrap();
    assert_eq!(k.verdict, Verdict::Skipped);
    assert!(k.detail.contains("b: the agent cannot sample the RNG"), "{}", k.detail);
    assert_eq!(r.iter().find(|c| c.id == CheckId::Mac).unwrap().verdict, Verdict::Unique);
}

#[test]
fn the_registry_follows_the_check_ids() {
    let ids: Vec<CheckId> = all().iter().map(|c| c.id()).collect();
    assert_eq!(ids, CheckId::ALL.to_vec());
}

/// Issue 11, item 6: claims the host can verify. Each case failed before claims.rs: the guest's
/// word was compared as it was, and two distinct lies looked `unique`.
#[test]
fn guest_claims_that_contradict_the_host_are_errors_with_both_values() {
    let macs = ["52:54:00:00:00:01".to_string(), "52:54:00:00:00:02".to_string()];
    let naive = recipe(Strategy::Naive);
    let with = |o: &[Observation], cx: Evidence| run_all(o, &cx);
    let get = |r: &[clonesafe_metadata::CheckResult], id| r.iter().find(|c| c.id == id).unwrap().clone();

    // Honest guests: no contradiction.
    let o = vec![obs("a", &macs[0], &["01"]), obs("b", &macs[1], &["02"])];
    let r = with(&o, Evidence { assigned_macs: macs.to_vec(), ..cx(&naive) });
    assert_eq!(get(&r, CheckId::Mac).verdict, Verdict::Unique);

    // A MAC the host never assigned.
    let o = vec![obs("a", &macs[0], &["01"]), obs("b", "52:54:00:de:ad:01", &["02"])];
    let m = get(&with(&o, Evidence { assigned_macs: macs.to_vec(), ..cx(&naive) }), CheckId::Mac);
    assert_eq!(m.verdict, Verdict::Error);
    assert!(m.detail.contains("b claims MAC 52:54:00:de:ad:01") && m.detail.contains("52:54:00:00:00:02"), "{}", m.detail);

    // A vmgenid reseed claimed on a VM that has no vmgenid device.
    let mut o = vec![obs("a", &macs[0], &["01"]), obs("b", &macs[1], &["02"])];
    for x in &mut o {
        x.identity.as_mut().unwrap().vmfork_reseeds = 1;
    }
    let v = get(&with(&o, cx(&naive)), CheckId::Vmgenid);
    assert_eq!(v.verdict, Verdict::Error);
    assert!(v.detail.contains("no vmgenid device") && v.detail.contains("the comparison said unique"), "{}", v.detail);
    let genid = recipe(Strategy::Vmgenid);
    assert_eq!(get(&with(&o, cx(&genid)), CheckId::Vmgenid).verdict, Verdict::Unique);

    // Host keys the guest reports that its sshd does not serve.
    let key = |f: &str| clonesafe_protocol::HostKey { file: "/etc/ssh/k.pub".into(), fingerprint: f.into() };
    for (x, f) in o.iter_mut().zip(["SHA256:a", "SHA256:b"]) {
        x.identity.as_mut().unwrap().ssh_host_keys = vec![key(f)];
    }
    o[0].ssh_keyscan = Some(Ok(vec!["SHA256:a".into()]));
    o[1].ssh_keyscan = Some(Ok(vec!["SHA256:a".into()]));
    let k = get(&with(&o, cx(&naive)), CheckId::SshHostKeys);
    assert_eq!(k.verdict, Verdict::Error);
    assert!(k.detail.contains("b's sshd serves SHA256:a") && k.detail.contains("(SHA256:b)"), "{}", k.detail);
}

/// Two VMs whose seed disks have no serial do not share a disk serial.
#[test]
fn disks_without_a_serial_are_not_a_shared_identity() {
    use clonesafe_protocol::Disk;
    let mut o = vec![obs("a", "52:54:00:00:00:01", &["01"]), obs("b", "52:54:00:00:00:02", &["02"])];
    for (x, serial) in o.iter_mut().zip(["CSa", "CSb"]) {
        x.identity.as_mut().unwrap().disks = vec![Disk { name: "vda".into(), serial: serial.into() }, Disk { name: "vdb".into(), serial: String::new() }];
    }
    let naive = recipe(Strategy::Naive);
    let d = run_all(&o, &cx(&naive)).into_iter().find(|c| c.id == CheckId::DiskSerial).unwrap();
    assert_eq!(d.verdict, Verdict::Unique, "{}", d.detail);
    assert_eq!(d.values, vec![json!("vda=CSa"), json!("vda=CSb")]);
}

/// The segment checks: skipped off a segment; on one, verdicts from the wire's view of each VM
/// (the compared clones and the running source).
#[test]
fn segment_checks_read_the_wire_and_skip_off_a_segment() {
    use crate::network::{wire::VmWire, GuestAddrs, SegmentReport};
    let o = vec![Observation { vm: "c0".into(), ..Default::default() }, Observation { vm: "c1".into(), ..Default::default() }];
    let r = recipe(Strategy::NicReplug);
    let off = run_all(&o, &cx(&r));
    for id in [CheckId::DhcpClientId, CheckId::Ipv4Lease, CheckId::Ipv6Addr, CheckId::ArpConflict, CheckId::IpWindowMs, CheckId::TcpSession] {
        let c = off.iter().find(|c| c.id == id).unwrap();
        assert_eq!(c.verdict, Verdict::Skipped, "{id:?}");
        assert!(c.detail.contains("network = \"segment\""), "{}", c.detail);
    }
    let vm = |name: &str, role: &str, id: &str, v4: Option<&str>, after: Option<f64>| VmWire {
        vm: name.into(),
        role: role.into(),
        taps: vec![],
        macs: vec![],
        macs_seen: vec![],
        client_ids: vec![id.into()],
        dhcp: vec![],
        held: vec![],
        final_v4: v4.map(String::from),
        arp_claims: Default::default(),
        dad: vec![],
        v6_sources: vec![format!("fe80::{name}")],
        unique_after_ms: after,
    };
    // One DUID for both clones: one address, which the source holds too; never their own.
    let mut seg = SegmentReport { watched_ms: 75_000, ..Default::default() };
    seg.wire.vms = vec![vm("c0", "clone", "ff01", Some("10.77.0.5"), None), vm("c1", "clone", "ff01", Some("10.77.0.5"), None), vm("s", "source", "ff01", Some("10.77.0.5"), None)];
    let v6 = crate::network::wire::GuestV6 { addr: "fd00:77::1:5".into(), iface: "eth0".into(), prefix: 64, dad_failed: true, tentative: false };
    seg.guests.insert("c0".into(), GuestAddrs { v4: vec!["10.77.0.5".into()], v6: vec![v6], error: None });
    let mut c = cx(&r);
    c.segment = Some(seg.clone());
    let on = run_all(&o, &c);
    let get = |id: CheckId| on.iter().find(|c| c.id == id).unwrap().clone();
    assert_eq!(get(CheckId::DhcpClientId).verdict, Verdict::Duplicate);
    let lease = get(CheckId::Ipv4Lease);
    assert_eq!(lease.verdict, Verdict::Duplicate);
    assert!(lease.detail.contains("10.77.0.5 held by c0 and c1") && lease.detail.contains("running source's address"), "{}", lease.detail);
    assert_eq!(get(CheckId::IpWindowMs).verdict, Verdict::Duplicate);
    // Addresses of their own (c0's from the guest, c1's from the wire), but c0's failed DAD.
    let v6 = get(CheckId::Ipv6Addr);
    assert_eq!(v6.verdict, Verdict::Duplicate);
    assert!(v6.detail.contains("c0 marks fd00:77::1:5 dadfailed"), "{}", v6.detail);
    // Own ids and own addresses, each within a second of resume.
    seg.wire.vms = vec![vm("c0", "clone", "ff02", Some("10.77.0.6"), Some(800.0)), vm("c1", "clone", "ff03", Some("10.77.0.7"), Some(900.0)), vm("s", "source", "ff01", Some("10.77.0.5"), None)];
    let mut c = cx(&r);
    c.segment = Some(seg.clone());
    let on = run_all(&o, &c);
    for id in [CheckId::DhcpClientId, CheckId::Ipv4Lease, CheckId::ArpConflict, CheckId::IpWindowMs] {
        assert_eq!(on.iter().find(|c| c.id == id).unwrap().verdict, Verdict::Unique, "{id:?}");
    }
    assert_eq!(on.iter().find(|c| c.id == CheckId::IpWindowMs).unwrap().values, vec![json!(800.0), json!(900.0)]);
}

/// `tcp_session` (issue 22): duplicate when the wire shows two VMs' data on one 4-tuple, or two
/// VMs wrote on one without an error; unique when the inherited connection was gone in every
/// clone; an error when only some VMs spoke; skipped when none could (with the reason).
#[test]
fn tcp_session_reads_the_wire_then_the_guests() {
    use crate::network::session::{GuestSession, WireSession};
    use crate::network::SegmentReport;
    let o = vec![Observation { vm: "c0".into(), ..Default::default() }, Observation { vm: "c1".into(), ..Default::default() }];
    let r = recipe(Strategy::Naive);
    let tuple = "10.77.0.5:40000 -> 10.77.0.1:7070";
    let spoke = |write_error: Option<&str>| GuestSession {
        speech: Some(clonesafe_protocol::SessionSpeech { local: "10.77.0.5:40000".into(), remote: "10.77.0.1:7070".into(), inherited: true, write_error: write_error.map(String::from), ..Default::default() }),
        error: None,
    };
    let judge = |seg: &SegmentReport| {
        let mut c = cx(&r);
        let mut seg = seg.clone();
        seg.wire.vms = ["c0", "c1"].iter().map(|v| crate::network::wire::VmWire { vm: v.to_string(), role: "clone".into(), ..Default::default() }).collect();
        c.segment = Some(seg);
        run_all(&o, &c).into_iter().find(|c| c.id == CheckId::TcpSession).unwrap()
    };
    let mut seg = SegmentReport { ..Default::default() };
    seg.sessions.peer = "10.77.0.1:7070".into();
    seg.sessions.guests = [("c0".to_string(), spoke(None)), ("c1".to_string(), spoke(None))].into();
    seg.sessions.wire = vec![WireSession { tuple: tuple.into(), data_from: vec![("c0".into(), 7, 10.0), ("c1".into(), 9, 12.0)], ..Default::default() }];
    let c = judge(&seg);
    assert_eq!(c.verdict, Verdict::Duplicate, "{}", c.detail);
    assert!(c.detail.contains("2 VMs sent data on one connection") && c.detail.contains("frame 9"), "{}", c.detail);
    assert_eq!(c.values, vec![json!(tuple), json!(tuple)]);
    // No second sender in the capture, but both kernels took the bytes.
    seg.sessions.wire.clear();
    let c = judge(&seg);
    assert_eq!(c.verdict, Verdict::Duplicate, "{}", c.detail);
    assert!(c.detail.contains("without an error"), "{}", c.detail);
    // The connection was destroyed in each clone before it spoke.
    seg.sessions.guests = [("c0".to_string(), spoke(Some("Software caused connection abort (os error 103)"))), ("c1".to_string(), spoke(Some("Software caused connection abort (os error 103)")))].into();
    let c = judge(&seg);
    assert_eq!(c.verdict, Verdict::Unique, "{}", c.detail);
    assert!(c.detail.contains("os error 103"), "{}", c.detail);
    // One could not speak at all: an error, naming it; none could: skipped with the reason.
    seg.sessions.guests.insert("c1".into(), GuestSession { speech: None, error: Some("no probe".into()) });
    let c = judge(&seg);
    assert_eq!(c.verdict, Verdict::Error, "{}", c.detail);
    assert!(c.detail.contains("c1: no probe"), "{}", c.detail);
    seg.sessions.guests.insert("c0".into(), GuestSession { speech: None, error: Some("no probe".into()) });
    assert_eq!(judge(&seg).verdict, Verdict::Skipped);
    seg.sessions.peer_error = Some("setns: EPERM".into());
    let c = judge(&seg);
    assert_eq!(c.verdict, Verdict::Skipped);
    assert!(c.detail.contains("peer did not start: setns: EPERM"), "{}", c.detail);
}

/// The hazard checks (issue 22): skipped where the guest has none of the item, duplicate when
/// two VMs share one element, unique when all differ, an error when some VMs lack it or the
/// probe could not read it; the agent-only path is skipped with its reason.
#[test]
fn hazard_checks_skip_absent_items_and_compare_present_ones() {
    use clonesafe_protocol::{BlockId, Credential, FileDigest};
    let naive = recipe(Strategy::Naive);
    let get = |o: &[Observation], id| run_all(o, &cx(&naive)).into_iter().find(|c| c.id == id).unwrap();
    let base = vec![obs("a", "52:54:00:00:00:01", &["01"]), obs("b", "52:54:00:00:00:02", &["02"])];
    for id in [CheckId::FsUuid, CheckId::LvmUuid, CheckId::LuksVolumeKey, CheckId::MachineInfo, CheckId::UserCredentials, CheckId::MachineAccount] {
        let r = get(&base, id);
        assert_eq!(r.verdict, Verdict::Skipped, "{id}: {}", r.detail);
    }
    let blk = |kind: &str, uuid: &str, key: Option<&str>| BlockId { device: "vda1".into(), kind: kind.into(), uuid: uuid.into(), vg: None, key_digest: key.map(String::from), active: true };
    let mut o = base.clone();
    for (x, (fs, key)) in o.iter_mut().zip([("f1", "k1"), ("f2", "k1")]) {
        let i = x.identity.as_mut().unwrap();
        i.block_ids = vec![blk("ext4", fs, None), blk("luks2", "L", Some(key))];
        i.credentials = vec![Credential { kind: "password".into(), of: "alice".into(), sha256: format!("h-{fs}") }];
        i.machine_account = vec![FileDigest { path: "/etc/krb5.keytab".into(), sha256: "same".into(), symlink: false, creditable: None }];
        i.machine_info = Some(FileDigest { path: "/etc/machine-info".into(), sha256: "mi".into(), symlink: false, creditable: None });
    }
    assert_eq!(get(&o, CheckId::FsUuid).verdict, Verdict::Unique);
    let luks = get(&o, CheckId::LuksVolumeKey);
    assert_eq!(luks.verdict, Verdict::Duplicate, "{}", luks.detail);
    assert!(luks.evidence.as_ref().unwrap()["notes"][0].as_str().unwrap().contains("open"), "{:?}", luks.evidence);
    assert_eq!(get(&o, CheckId::UserCredentials).verdict, Verdict::Unique);
    assert_eq!(get(&o, CheckId::MachineAccount).verdict, Verdict::Duplicate);
    assert_eq!(get(&o, CheckId::MachineInfo).verdict, Verdict::Duplicate);
    assert_eq!(get(&o, CheckId::LvmUuid).verdict, Verdict::Skipped);
    // In one VM only: an error that names where it is missing.
    o[1].identity.as_mut().unwrap().machine_account.clear();
    let m = get(&o, CheckId::MachineAccount);
    assert_eq!(m.verdict, Verdict::Error);
    assert!(m.detail.contains("in b"), "{}", m.detail);
    // Unreadable: an error with the guest's reason; the agent-only path: skipped.
    o[0].identity.as_mut().unwrap().errors.push(("block_ids".into(), "/dev/vdb: Permission denied".into()));
    assert_eq!(get(&o, CheckId::FsUuid).verdict, Verdict::Error);
    let mut p = base.clone();
    p[0].identity.as_mut().unwrap().errors.push(("user_credentials".into(), clonesafe_protocol::PROBE_ONLY.into()));
    assert_eq!(get(&p, CheckId::UserCredentials).verdict, Verdict::Skipped);
}

#[test]
fn shared_pages_follow_the_hosts_page_counts() {
    use crate::evidence::RamPages;
    let naive = recipe(Strategy::Naive);
    let o = vec![obs("a", "52:54:00:00:00:01", &["01"]), obs("b", "52:54:00:00:00:02", &["02"])];
    let page = |shared| Ok(RamPages { pid: 1, mapping: "anonymous".into(), size_kib: 262144, rss_kib: 65536, shared_kib: shared, private_kib: 65536 - shared });
    let with = |pages: Vec<Result<RamPages, String>>| {
        let ev = Evidence { observations: o.clone(), pages, ..cx(&naive) };
        super::run_all(&ev).into_iter().find(|c| c.id == CheckId::SharedPages).unwrap()
    };
    assert_eq!(with(vec![]).verdict, Verdict::Skipped);
    assert_eq!(with(vec![page(0), page(0)]).verdict, Verdict::Unique);
    let d = with(vec![page(0), page(32768)]);
    assert_eq!(d.verdict, Verdict::Duplicate);
    assert!(d.detail.contains("b 32.0 MiB of 64.0 MiB resident (50%)"), "{}", d.detail);
    assert_eq!(with(vec![page(0), Err("b: its process is not on this host".into())]).verdict, Verdict::Skipped);
    assert_eq!(with(vec![page(0), Err("b: /proc/9/smaps: gone".into())]).verdict, Verdict::Error);
}
