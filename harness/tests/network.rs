//! Clones on one network segment against real QEMU, through the binary: what collides on the
//! wire is read from the capture, the host namespace sees none of the segment's traffic, and
//! nothing of the segment outlives the run (or a killed run, once the next one reaps it).

mod common;

use common::*;
use std::process::{Command, Stdio};

const SCENARIOS: &str = r#"
[[scenario]]
name = "seg-naive"
strategy = "naive"
clones = 2
network = "segment"

[[scenario]]
name = "seg-nic-replug"
strategy = "nic-replug"
clones = 2
network = "segment"

[[scenario]]
name = "seg-drop-sessions"
method = "live"
fixups = ["drop-sessions"]
clones = 2
network = "segment"

[[scenario]]
name = "seg-naive-libvirt"
strategy = "naive"
backend = "libvirt"
clones = 2
network = "segment"
"#;

/// Names of network namespaces and taps of harness `pid`.
fn segment_leftovers(pid: u32) -> Vec<String> {
    let ns = String::from_utf8_lossy(&Command::new("ip").args(["netns", "list"]).output().unwrap().stdout).into_owned();
    let mut left: Vec<String> = ns.lines().filter_map(|l| l.split_whitespace().next()).filter(|n| n.starts_with(&format!("clonesafe-{pid}-"))).map(String::from).collect();
    left.extend(std::fs::read_dir("/sys/class/net").unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with(&format!("cs{pid}n"))));
    left
}

#[test]
fn segment_shows_collisions_on_the_wire_and_leaves_nothing() {
    if guest().is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    // The host namespace's own view of the run: any packet to or from the segment's networks.
    let host_pcap = work.path().join("host.pcap");
    let host_err = work.path().join("host-tcpdump.err");
    let mut host = Command::new("tcpdump")
        .args(["-i", "any", "-n", "-U", "-w"])
        .arg(&host_pcap)
        .args(["net", "10.77.0.0/24", "or", "net", "fd00:77::/64"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&host_err).unwrap())
        .spawn()
        .expect("tcpdump (apt-get install tcpdump)");
    for _ in 0..100 {
        if std::fs::read_to_string(&host_err).unwrap_or_default().contains("listening on") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let f = work.path().join("net.toml");
    std::fs::write(&f, SCENARIOS).unwrap();
    let out = work.path().join("out");
    let mut a: Vec<&str> = vec!["run", f.to_str().unwrap(), "--out", out.to_str().unwrap(), "--accel", "tcg"];
    a.extend(["--parallel", "3"]);
    let child = clonesafe(&a, work.path()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let ran = finish(child, &out);
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(host.id() as i32, libc::SIGTERM) };
    host.wait().unwrap();
    assert_eq!(ran.code(), Some(0), "the run failed");

    // The same MAC on three ports: one client id (the MAC), the MAC from several ports, and no
    // clone ever holds an address of its own.
    for name in ["seg-naive", "seg-naive-libvirt"] {
        let naive = ran.scenario(name);
        for (id, want) in [("mac", "duplicate"), ("dhcp_client_id", "duplicate"), ("arp_conflict", "duplicate"), ("ip_window_ms", "duplicate")] {
            assert_eq!(verdict(&naive, id), want, "{name} {id}");
        }
    }
    // Issue 22, tcp_session: both naive clones resumed the source's connection and wrote on it
    // without an error, the capture shows data from both ports on that one 4-tuple, and the
    // peer read a single id on it (the second clone's bytes carried sequence numbers it had
    // already taken: dropped as a retransmission, while that clone's kernel counted them sent).
    for name in ["seg-naive", "seg-naive-libvirt"] {
        let naive = ran.scenario(name);
        let tcp = naive["checks"].as_array().unwrap().iter().find(|c| c["id"] == "tcp_session").unwrap().clone();
        assert_eq!(tcp["verdict"], "duplicate", "{name}: {tcp}");
        let ev = &tcp["evidence"];
        let opened = ev["opened"].as_str().unwrap_or_else(|| panic!("{name}: the source opened no session: {ev}"));
        for g in ev["guests"].as_object().unwrap().values() {
            assert_eq!(g["speech"]["inherited"], true, "{name}: {g}");
            assert_eq!(format!("{} -> {}", g["speech"]["local"].as_str().unwrap(), g["speech"]["remote"].as_str().unwrap()), opened, "{name}: {g}");
        }
        let wire = ev["wire"].as_array().unwrap();
        assert!(wire.iter().any(|w| w["tuple"] == opened && w["data_from"].as_array().unwrap().len() == 2), "{name}: {ev}");
        let conns = ev["peer_saw"].as_array().unwrap();
        assert_eq!(conns.len(), 1, "{name}: one connection, accepted before the snapshot: {ev}");
        let ids: Vec<&str> = conns[0]["lines"].as_array().unwrap().iter().filter_map(|l| l[1].as_str()).filter(|l| l.starts_with("id ")).collect();
        assert_eq!(ids.len(), 1, "{name}: the peer read one clone's id on the shared connection: {ev}");
    }
    // drop-sessions destroyed the inherited connection in each clone: no clone could write on
    // it (ECONNABORTED), each clone's reset reached the wire, and the cost was measured.
    let drop = ran.scenario("seg-drop-sessions");
    let tcp = drop["checks"].as_array().unwrap().iter().find(|c| c["id"] == "tcp_session").unwrap().clone();
    assert_eq!(tcp["verdict"], "unique", "{tcp}");
    for g in tcp["evidence"]["guests"].as_object().unwrap().values() {
        assert!(g["speech"]["write_error"].as_str().is_some_and(|e| e.contains("os error 103")), "{g}");
    }
    assert!(tcp["evidence"]["wire"].as_array().unwrap().iter().any(|w| w["reset_from"].as_array().unwrap().len() == 2), "{tcp}");
    assert_eq!(drop["timing"]["drop_sessions_ms"].as_array().unwrap().len(), 2, "{}", drop["timing"]);
    let naive = ran.scenario("seg-naive");
    let arp = naive["checks"].as_array().unwrap().iter().find(|c| c["id"] == "arp_conflict").unwrap();
    assert!(arp["detail"].as_str().unwrap().contains("sent from the ports of"), "{arp}");
    // New NICs: udhcpc's client id follows the MAC, so each clone gets its own lease.
    let replug = ran.scenario("seg-nic-replug");
    for id in ["mac", "dhcp_client_id", "ipv4_lease", "ipv6_addr", "arp_conflict", "ip_window_ms"] {
        assert_eq!(verdict(&replug, id), "unique", "seg-nic-replug {id}");
    }
    let lease = replug["checks"].as_array().unwrap().iter().find(|c| c["id"] == "ipv4_lease").unwrap();
    for v in lease["values"].as_array().unwrap() {
        assert!(v.as_str().is_some_and(|a| a.starts_with("10.77.0.")), "a lease from the segment's dnsmasq: {lease}");
    }
    // Evidence points at frames of the capture and lines of dnsmasq's log.
    let ev = &lease["evidence"]["vms"][0];
    assert!(ev["wire"]["held"].as_array().is_some_and(|h| !h.is_empty()) && ev["dnsmasq_log"].as_array().is_some_and(|l| !l.is_empty()), "{ev}");
    // Checks of scenarios not on a segment are skipped, not guessed.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("Who got which address") && html.contains("class=\"collides\""), "the HTML table of addresses");

    let seen = Command::new("tcpdump").args(["-r"]).arg(&host_pcap).arg("-n").output().unwrap();
    assert!(seen.status.success(), "{}", String::from_utf8_lossy(&seen.stderr));
    let lines = String::from_utf8_lossy(&seen.stdout).into_owned();
    assert_eq!(lines.lines().count(), 0, "the host namespace saw the segment's traffic:\n{lines}");
    assert!(segment_leftovers(pid).is_empty(), "left: {:?}", segment_leftovers(pid));
    assert!(runs_left(work.path()).is_empty(), "run directories left");
    assert!(orphan_vms(&["-seg-naive-", "-seg-nic-replug-", "-seg-drop-sessions-", "-seg-naive-libvirt-"]).is_empty());
}

/// A run killed with SIGKILL leaves its namespace and taps, each claimed in the owner registry
/// (clonesafe::owner) under its dead pid: the next run's reaper removes them. A namespace and a
/// tap that only look like clonesafe's, with no claim, are left alone (issue 19, item 5).
#[test]
fn a_killed_runs_segment_is_reaped() {
    if std::env::var("CLONESAFE_REQUIRE_VMS").ok().as_deref() != Some("1") && unsafe { libc::geteuid() } != 0 {
        return;
    }
    // A pid that is certainly gone: a child that has exited and been reaped.
    let dead_pid = || {
        let mut c = Command::new("true").spawn().unwrap();
        c.wait().unwrap();
        c.id()
    };
    let dead = dead_pid();
    let ns = format!("clonesafe-{dead}-killed");
    let tap = format!("cs{dead}n0");
    // What the killed run wrote before it made them: its claims, in its name.
    let reg = std::path::Path::new(clonesafe::owner::REGISTRY);
    std::fs::create_dir_all(reg).unwrap();
    let owner = clonesafe::owner::Owner { pid: dead, ..clonesafe::owner::Owner::me() };
    std::fs::write(reg.join(format!("netns.{ns}")), owner.render()).unwrap();
    std::fs::write(reg.join(format!("tap.{tap}")), owner.render()).unwrap();
    assert!(Command::new("ip").args(["netns", "add", &ns]).status().unwrap().success());
    assert!(Command::new("ip").args(["tuntap", "add", "dev", &tap, "mode", "tap"]).status().unwrap().success());
    // Look-alikes nobody claimed.
    let other = std::iter::repeat_with(dead_pid).find(|p| *p != dead).unwrap();
    let (ns2, tap2) = (format!("clonesafe-{other}-lookalike"), format!("cs{other}n7"));
    assert!(Command::new("ip").args(["netns", "add", &ns2]).status().unwrap().success());
    assert!(Command::new("ip").args(["tuntap", "add", "dev", &tap2, "mode", "tap"]).status().unwrap().success());
    let notes = clonesafe::network::segment::reap_stale();
    let lookalikes_left = segment_leftovers(other);
    let _ = Command::new("ip").args(["netns", "del", &ns2]).status();
    let _ = Command::new("ip").args(["link", "del", &tap2]).status();
    assert!(segment_leftovers(dead).is_empty(), "left: {:?}", segment_leftovers(dead));
    assert!(notes.iter().any(|n| n.contains(&ns)) && notes.iter().any(|n| n.contains(&tap)), "{notes:?}");
    assert_eq!(lookalikes_left.len(), 2, "unclaimed look-alikes were reaped: {notes:?}");
    assert!(!reg.join(format!("netns.{ns}")).exists() && !reg.join(format!("tap.{tap}")).exists(), "the claims of what was removed stay");
}
