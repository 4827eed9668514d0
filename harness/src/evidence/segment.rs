//! The wire, when the scenario's VMs were on a network segment: have each compared VM speak on
//! its TCP session (the one its source held across the snapshot, or a new one), watch the
//! segment past the first renewal, read each VM's own addresses, stop the capture and turn it into the
//! [`network::SegmentReport`] the network checks read (checks/network.rs), keeping the capture
//! with the report.

use super::types::Evidence;
use crate::clones::recipe::{Ctx, Fleet, Made};
use crate::network;
use clonesafe_metadata::FixupId;

/// Watch the segment until [`network::WATCH`] after the last resume, read each VM's own
/// addresses, stop the capture, and analyse it. Nothing when the VMs had no segment.
pub(super) async fn gather(cx: &Ctx<'_>, fleet: &mut Fleet, made: &mut Made, ev: &mut Evidence, t0: u64) {
    let Some(seg) = cx.segment.get().cloned() else { return };
    use crate::events::EventKind;
    let spoken = speak(cx, fleet, made, &seg).await;
    let last = ev.observations.iter().map(|o| o.resumed_unix_ns).max().unwrap_or(t0);
    let until = last + network::WATCH.as_nanos() as u64;
    let now = crate::probes::unix_ns(std::time::SystemTime::now());
    if until > now {
        cx.emit(EventKind::Note { text: format!("watching the segment for {} s more (renewals happen at half the {} s lease)", (until - now) / 1_000_000_000, network::segment::LEASE.as_secs()) });
        tokio::time::sleep(std::time::Duration::from_nanos(until - now)).await;
    }
    let mut guests = std::collections::BTreeMap::new();
    for vm in fleet.0.iter_mut() {
        let name = vm.name().to_string();
        let t = cx.build.timeouts.probe;
        let g = match crate::probes::call(vm.as_mut(), "read the guest's addresses", |a| a.addrs(t)).await {
            Ok((v6, v4)) => network::GuestAddrs { v4, v6: network::wire::parse_if_inet6(&v6), error: None },
            Err(e) => network::GuestAddrs { error: Some(crate::error_chain(&e)), ..Default::default() },
        };
        guests.insert(name, g);
    }
    let watched_ms = (crate::probes::unix_ns(std::time::SystemTime::now()).saturating_sub(last)) / 1_000_000;
    let stopping = cx.segment.get().cloned();
    let _ = tokio::task::spawn_blocking(move || stopping.map(|s| s.stop())).await;
    let restored = cx.scenario.recipe.method.restores();
    let inherits = restored && !cx.scenario.recipe.has(FixupId::NicReplug);
    let resumed: std::collections::BTreeMap<&str, u64> = ev.observations.iter().map(|o| (o.vm.as_str(), o.resumed_unix_ns)).collect();
    let index = seg.ifindexes().unwrap_or_default();
    let mut members: Vec<network::wire::Member> = Vec::new();
    for p in seg.ports() {
        let ifx = index.iter().find(|(n, _)| *n == p.tap).map(|(_, i)| *i);
        let m = match members.iter_mut().position(|m| m.vm == p.vm) {
            Some(i) => &mut members[i],
            None => {
                let role = p.vm.rsplit('-').next().unwrap_or("").trim_end_matches(|c: char| c.is_ascii_digit()).to_string();
                let compared = resumed.get(p.vm.as_str()).copied();
                members.push(network::wire::Member {
                    vm: p.vm.clone(),
                    inherits: inherits && role == "clone",
                    resumed_ns: if restored && role == "clone" { compared } else { None },
                    role,
                    ifindexes: vec![],
                    taps: vec![],
                    macs: vec![],
                });
                members.last_mut().expect("pushed")
            }
        };
        m.ifindexes.extend(ifx);
        m.taps.push(p.tap.clone());
        if !p.mac.is_empty() && !m.macs.contains(&p.mac) {
            m.macs.push(p.mac.clone());
        }
    }
    // The source first: a clone inherits what it held.
    members.sort_by_key(|m| m.role != "source");
    let mut r = network::report(&seg, &members, t0, watched_ms, guests);
    r.sessions.guests = spoken;
    match seg.peer_addr() {
        Ok(a) => r.sessions.peer = a.to_string(),
        Err(e) => r.sessions.peer_error = Some(e),
    }
    match seg.opened.lock().unwrap().clone() {
        Some(Ok(o)) => r.sessions.opened = Some(o),
        Some(Err(e)) => r.sessions.open_error = Some(e),
        None => {}
    }
    r.sessions.peer_saw = seg.peer_conns();
    if let Some(dir) = &cx.build.captures {
        // The capture holds DHCP, ARP and neighbour discovery of the scenario's VMs (and
        // whatever else they sent: at most segment::MAX_FRAMES frames of segment::SNAPLEN bytes).
        let to = dir.join(format!("{}.pcap", cx.scenario.name));
        let copied = std::fs::create_dir_all(dir.parent().unwrap_or(dir))
            .and_then(|_| crate::output::subdir(dir))
            .and_then(|d| crate::output::copy_atomic(&seg.capture_path(), &d, &format!("{}.pcap", cx.scenario.name)));
        match copied {
            Ok(_) => r.capture = Some(format!("captures/{}.pcap", cx.scenario.name)),
            Err(e) => made.notes.push(format!("the capture could not be kept in {}: {e}", to.display())),
        }
    }
    made.notes.push(format!(
        "the VMs shared one segment ({}: bridge, dnsmasq with {} s leases, capture of {} frames); watched {} s after the last resume",
        seg.ns,
        network::segment::LEASE.as_secs(),
        r.wire.frames,
        watched_ms / 1000
    ));
    ev.segment = Some(r);
}

/// How long a VM that holds no session may take to open one.
const SPEAK_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Each compared VM, one after another (after its fix-ups), writes its own name on its TCP
/// session to the segment's peer and reads the answer: a live clone speaks on the connection its
/// source opened before the snapshot; a VM that was booted opens its own.
async fn speak(cx: &Ctx<'_>, fleet: &mut Fleet, made: &Made, seg: &network::segment::Segment) -> std::collections::BTreeMap<String, network::session::GuestSession> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(peer) = seg.peer_addr() else { return out };
    let t = cx.build.timeouts.probe;
    for c in &made.compared {
        let vm = fleet.0[c.index].as_mut();
        let name = vm.name().to_string();
        let id = name.clone();
        let said = crate::probes::call(vm, "speak on the TCP session", move |a| a.session_speak(peer, id, SPEAK_WITHIN, t)).await;
        let g = match said {
            Ok(speech) => network::session::GuestSession { speech: Some(speech), error: None },
            Err(e) => network::session::GuestSession { speech: None, error: Some(crate::error_chain(&e)) },
        };
        out.insert(name, g);
    }
    out
}
