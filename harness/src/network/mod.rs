//! Clones on one network (`network = "segment"`): the segment itself ([`segment`]), a reader for
//! its capture ([`pcap`]), and what the capture says about each VM ([`wire`]). The checks
//! `dhcp_client_id`, `ipv4_lease`, `ipv6_addr`, `arp_conflict`, `ip_window_ms` and
//! `tcp_session` (checks/network.rs, checks/session.rs; the segment's TCP peer is [`peer`], what
//! became of the session [`session`]) read the [`SegmentReport`] made here at the end of a
//! scenario.

pub mod pcap;
pub mod peer;
pub mod segment;
pub mod session;
pub mod wire;

use serde::Serialize;
use std::collections::BTreeMap;
use wire::{GuestV6, Member, Wire};

/// How long a segment scenario watches the wire after its last clone resumed: past T1 (half
/// of dnsmasq's 2-minute lease), so every VM renews at least once in the capture.
pub const WATCH: std::time::Duration = std::time::Duration::from_secs(75);

/// What a guest said of its own addresses when it was observed.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct GuestAddrs {
    pub v4: Vec<String>,
    pub v6: Vec<GuestV6>,
    /// Why they could not be read.
    pub error: Option<String>,
}

/// Everything the network checks read, kept whole in the report's evidence.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct SegmentReport {
    pub namespace: String,
    /// The capture as kept with the report (relative to the report directory), when kept.
    pub capture: Option<String>,
    pub watched_ms: u64,
    pub wire: Wire,
    /// Per VM, its own view (read at the end of the watch).
    pub guests: BTreeMap<String, GuestAddrs>,
    /// Per VM, dnsmasq's log lines naming one of its MACs: (line number, text), the first 12.
    pub log: BTreeMap<String, Vec<(usize, String)>>,
    /// What went wrong reading the capture, if anything.
    pub error: Option<String>,
    /// The live TCP session across the snapshot (`tcp_session`).
    pub sessions: session::Sessions,
}

impl SegmentReport {
    /// The analysed view of `vm`.
    pub fn vm(&self, vm: &str) -> Option<&wire::VmWire> {
        self.wire.vms.iter().find(|v| v.vm == vm)
    }
}

/// Read the capture and dnsmasq's log of `seg` (stopped) for `members`.
pub fn report(seg: &segment::Segment, members: &[Member], t0_ns: u64, watched_ms: u64, guests: BTreeMap<String, GuestAddrs>) -> SegmentReport {
    let mut r = SegmentReport { namespace: seg.ns.clone(), capture: None, watched_ms, guests, ..Default::default() };
    match std::fs::read(seg.capture_path()) {
        Ok(data) => match pcap::parse(&data) {
            Ok(frames) => {
                r.wire = wire::analyse(&frames, members, t0_ns);
                r.sessions.wire = session::on_wire(&frames, members, t0_ns, peer::PORT);
            }
            Err(e) => r.error = Some(format!("{}: {e}", seg.capture_path().display())),
        },
        Err(e) => r.error = Some(format!("{}: {e}", seg.capture_path().display())),
    }
    let log = crate::input::read_text(&seg.log_path(), 8 << 20).unwrap_or_default();
    for m in members {
        let seen = r.vm(&m.vm).map(|v| v.macs_seen.clone()).unwrap_or_default();
        let macs: Vec<&String> = m.macs.iter().chain(&seen).collect();
        let lines: Vec<(usize, String)> = log
            .lines()
            .enumerate()
            .filter(|(_, l)| macs.iter().any(|mac| l.contains(mac.as_str())) && (l.contains("DHCPACK") || l.contains("DHCPNAK") || l.contains("DHCPOFFER") || l.contains("not found") || l.contains("client provides")))
            .take(12)
            .map(|(i, l)| (i + 1, crate::text::truncate(l, 200)))
            .collect();
        r.log.insert(m.vm.clone(), lines);
    }
    r
}
