//! What a live TCP session became in the clones (issue 22, `tcp_session`), from three sides: each
//! guest's own (the probe spoke on the session and read the answer), the peer's (connections it
//! accepted and the lines it read: [`super::peer`]), and the wire's (which VM's port sent data
//! or a reset on which 4-tuple after it resumed: this file, from the capture).

use super::pcap::{Frame, Payload};
use super::peer::PeerConn;
use super::wire::Member;
use serde::Serialize;
use std::collections::BTreeMap;

/// One VM's side.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct GuestSession {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speech: Option<clonesafe_protocol::SessionSpeech>,
    /// Why it could not speak.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A 4-tuple on the wire after the VMs resumed, and who used it.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct WireSession {
    /// "10.77.0.23:41234 -> 10.77.0.1:7070" (the guest's end first).
    pub tuple: String,
    /// VMs whose port sent payload on it, each with its first such frame's number and ms after
    /// that VM resumed.
    pub data_from: Vec<(String, usize, f64)>,
    /// VMs whose port sent a reset on it.
    pub reset_from: Vec<(String, usize, f64)>,
    /// VMs whose port a reset from the peer was delivered to.
    pub reset_to: Vec<(String, usize, f64)>,
}

/// Everything `tcp_session` reads.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Sessions {
    /// Where the peer listened ("10.77.0.1:7070"); empty when it did not ([`Sessions::peer_error`]).
    pub peer: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_error: Option<String>,
    /// The session the source opened before the snapshot ("local -> remote"); None when no
    /// source opened one (VMs that booted) or it failed ([`Sessions::open_error`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opened: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_error: Option<String>,
    pub guests: BTreeMap<String, GuestSession>,
    pub peer_saw: Vec<PeerConn>,
    pub wire: Vec<WireSession>,
}

/// The 4-tuples to port `port` seen after each member resumed (or booted), guest end first.
pub fn on_wire(frames: &[Frame], members: &[Member], t0_ns: u64, port: u16) -> Vec<WireSession> {
    let mut out: BTreeMap<String, WireSession> = BTreeMap::new();
    // A VM that booted (a live clone's source) counts from the first clone's resume: what it
    // said before the snapshot is the session's start, not a second speaker.
    let first_resume = members.iter().filter_map(|m| m.resumed_ns).min().unwrap_or(t0_ns);
    for f in frames {
        let Payload::Tcp { src, dst, flags, len, .. } = &f.payload else { continue };
        let Some(m) = members.iter().find(|m| m.ifindexes.contains(&f.ifindex)) else { continue };
        let since = m.resumed_ns.unwrap_or(first_resume);
        if f.t_ns < since {
            continue;
        }
        let ms = (f.t_ns - since) as f64 / 1e6;
        let (guest, from_vm) = if dst.port() == port && f.inbound() {
            (src, true)
        } else if src.port() == port && !f.inbound() {
            (dst, false)
        } else {
            continue;
        };
        let peer = if from_vm { dst } else { src };
        let tuple = format!("{guest} -> {peer}");
        let w = out.entry(tuple.clone()).or_insert_with(|| WireSession { tuple, ..Default::default() });
        let add = |list: &mut Vec<(String, usize, f64)>| {
            if !list.iter().any(|(vm, _, _)| *vm == m.vm) {
                list.push((m.vm.clone(), f.no, ms));
            }
        };
        if from_vm && *len > 0 {
            add(&mut w.data_from);
        }
        if from_vm && flags & 0x04 != 0 {
            add(&mut w.reset_from);
        }
        if !from_vm && flags & 0x04 != 0 {
            add(&mut w.reset_to);
        }
    }
    out.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(no: usize, t_ns: u64, ifindex: u32, inbound: bool, src: &str, dst: &str, flags: u8, len: u16) -> Frame {
        Frame {
            no,
            t_ns,
            ifindex,
            pkttype: if inbound { 0 } else { 4 },
            src_mac: [0; 6],
            payload: Payload::Tcp { src: src.parse().unwrap(), dst: dst.parse().unwrap(), seq: 1, flags, len },
        }
    }

    fn member(vm: &str, ifindex: u32, resumed: u64) -> Member {
        Member { vm: vm.into(), role: "clone".into(), ifindexes: vec![ifindex], taps: vec![], macs: vec![], resumed_ns: Some(resumed), inherits: true }
    }

    #[test]
    fn two_ports_sending_data_on_one_tuple_are_both_named_and_old_frames_are_not() {
        let (g, p) = ("10.77.0.23:41234", "10.77.0.1:7070");
        let frames = vec![
            // Before clone0 resumed: the source's hello.
            frame(1, 500, 5, true, g, p, 0x18, 6),
            frame(2, 2_000_000, 5, true, g, p, 0x18, 10),
            frame(3, 3_000_000, 6, true, g, p, 0x18, 10),
            // A pure ACK carries no data; the peer's reset reaches clone1.
            frame(4, 4_000_000, 7, true, g, p, 0x10, 0),
            frame(5, 5_000_000, 6, false, p, g, 0x04, 0),
            // Another port, another service: not the peer's.
            frame(6, 6_000_000, 5, true, g, "10.77.0.1:22", 0x18, 10),
        ];
        let mut members = vec![member("c0", 5, 1_000), member("c1", 6, 1_000), member("c2", 7, 1_000)];
        // The source said hello on its own port before the clones resumed.
        let mut source = member("s0", 8, 0);
        source.resumed_ns = None;
        members.push(source);
        let mut frames = frames;
        frames.push(frame(7, 900, 8, true, g, p, 0x18, 6));
        let w = on_wire(&frames, &members, 0, 7070);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].tuple, "10.77.0.23:41234 -> 10.77.0.1:7070");
        assert_eq!(w[0].data_from.iter().map(|(v, n, _)| (v.as_str(), *n)).collect::<Vec<_>>(), vec![("c0", 2), ("c1", 3)]);
        assert_eq!(w[0].reset_to.iter().map(|(v, _, _)| v.as_str()).collect::<Vec<_>>(), vec!["c1"]);
        assert!(w[0].reset_from.is_empty());
    }
}
