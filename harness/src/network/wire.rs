//! What the segment's capture says about each VM: the DHCP client identities it sent, the
//! IPv4 address it held over time (from the ACKs and NAKs delivered to its port), the ARP
//! claims it made, its IPv6 duplicate-address detection, and the moment it first held an
//! address no other VM held. Frames are attributed to a VM by the port they came in on, never
//! by MAC (in `naive`, clones share one MAC).
//!
//! A clone restored with its NIC inherits the address its source held (its memory says it is
//! bound); one without (nic-replug) holds nothing until its first ACK. A VM binds an address
//! when an ACK whose xid and chaddr match a request it sent is delivered on its port, as its
//! DHCP client would; a NAK or its own RELEASE unbinds it.

use super::pcap::{mac_str, Frame, Payload};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// A VM of the segment as the analysis needs it.
#[derive(Debug, Clone)]
pub struct Member {
    pub vm: String,
    pub role: String,
    /// Interface indexes (inside the namespace) of its ports, in plug order.
    pub ifindexes: Vec<u32>,
    pub taps: Vec<String>,
    pub macs: Vec<String>,
    /// When it resumed (unix ns); None for a VM that booted.
    pub resumed_ns: Option<u64>,
    /// Whether it resumed still bound to its source's address (its NIC came with the snapshot).
    pub inherits: bool,
}

/// One DHCP message on a VM's port.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DhcpSeen {
    /// Frame number in the capture.
    pub frame: usize,
    /// Milliseconds after the VM resumed (after the capture started, for a VM that booted).
    pub t_ms: f64,
    /// "sent" by the VM, or "got" (delivered to its port).
    pub dir: &'static str,
    pub msg: &'static str,
    pub xid: String,
    pub chaddr: String,
    pub client_id: Option<String>,
    pub addr: Option<String>,
}

/// A duplicate-address detection probe a VM sent, and whether another port answered it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Dad {
    pub frame: usize,
    pub target: String,
    /// The VM whose port answered with a neighbour advertisement for the target (DAD failed).
    pub defended_by: Option<String>,
    pub defended_frame: Option<usize>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct VmWire {
    pub vm: String,
    pub role: String,
    pub taps: Vec<String>,
    /// MACs the host assigned to its NICs.
    pub macs: Vec<String>,
    /// MACs it sent from (a restored NIC keeps its source's).
    pub macs_seen: Vec<String>,
    /// Option 61 values it sent (hex), or `chaddr:<mac>` when a message had none.
    pub client_ids: Vec<String>,
    pub dhcp: Vec<DhcpSeen>,
    /// (ms after resume, address or null): each change of what it held.
    pub held: Vec<(f64, Option<String>)>,
    /// What it held at the end of the capture.
    pub final_v4: Option<String>,
    /// IPv4 addresses it claimed in ARP (as sender), with the first frame.
    pub arp_claims: BTreeMap<String, usize>,
    pub dad: Vec<Dad>,
    /// IPv6 source addresses it sent from.
    pub v6_sources: Vec<String>,
    /// ms from resume until it held an address no other VM held, and kept it to the end.
    pub unique_after_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Wire {
    pub frames: usize,
    pub vms: Vec<VmWire>,
    /// MACs that sent from more than one port: (mac, VMs).
    pub mac_on_ports: Vec<(String, Vec<String>)>,
    /// IPv4 addresses claimed in ARP by more than one MAC: (address, macs, VMs).
    pub arp_conflicts: Vec<(String, Vec<String>, Vec<String>)>,
}

/// Milliseconds from `from` to `t`, to the microsecond.
fn ms(t: u64, from: u64) -> f64 {
    ((t as i128 - from as i128) as f64 / 1e3).round() / 1e3
}

/// Analyse `frames` for `members` (the source first, then the rest in fleet order). `t0` is
/// when the capture began (unix ns).
pub fn analyse(frames: &[Frame], members: &[Member], t0: u64) -> Wire {
    let port_of: BTreeMap<u32, usize> = members.iter().enumerate().flat_map(|(i, m)| m.ifindexes.iter().map(move |x| (*x, i))).collect();
    let base = |i: usize| members[i].resumed_ns.unwrap_or(t0);
    let mut vms: Vec<VmWire> = members
        .iter()
        .map(|m| VmWire {
            vm: m.vm.clone(),
            role: m.role.clone(),
            taps: m.taps.clone(),
            macs: m.macs.clone(),
            macs_seen: vec![],
            client_ids: vec![],
            dhcp: vec![],
            held: vec![],
            final_v4: None,
            arp_claims: BTreeMap::new(),
            dad: vec![],
            v6_sources: vec![],
            unique_after_ms: None,
        })
        .collect();
    // Holding changes: (t, member, address).
    let mut changes: Vec<(u64, usize, Option<Ipv4Addr>)> = Vec::new();
    let mut sent_xids: Vec<BTreeSet<u32>> = vec![BTreeSet::new(); members.len()];
    let mut mac_ports: BTreeMap<[u8; 6], BTreeSet<usize>> = BTreeMap::new();
    let mut arp_macs: BTreeMap<Ipv4Addr, BTreeMap<[u8; 6], BTreeSet<usize>>> = BTreeMap::new();
    let mut dads: Vec<(usize, usize, u64, std::net::Ipv6Addr)> = Vec::new(); // (member, index in vms[m].dad, t, target)
    for f in frames {
        let Some(&i) = port_of.get(&f.ifindex) else { continue };
        let rel = ms(f.t_ns, base(i));
        if f.inbound() {
            mac_ports.entry(f.src_mac).or_default().insert(i);
            let m = mac_str(&f.src_mac);
            if !vms[i].macs_seen.contains(&m) && vms[i].macs_seen.len() < 8 {
                vms[i].macs_seen.push(m);
            }
        }
        match &f.payload {
            Payload::Dhcp(d) => {
                let cid = d.client_id.as_ref().map(|c| c.iter().map(|b| format!("{b:02x}")).collect::<String>());
                let addr = match d.msg_type {
                    2 | 5 => Some(d.yiaddr),
                    3 => d.requested.or((d.ciaddr != Ipv4Addr::UNSPECIFIED).then_some(d.ciaddr)),
                    _ => None,
                };
                if f.inbound() {
                    sent_xids[i].insert(d.xid);
                    let id = cid.clone().unwrap_or_else(|| format!("chaddr:{}", mac_str(&d.chaddr)));
                    if !vms[i].client_ids.contains(&id) {
                        vms[i].client_ids.push(id);
                    }
                    if d.msg_type == 7 {
                        changes.push((f.t_ns, i, None));
                    }
                } else if sent_xids[i].contains(&d.xid) {
                    // A reply to a transaction of its own, delivered on its port: its client
                    // takes it (its MAC may be the source's, not the one the host assigned).
                    match d.msg_type {
                        5 => changes.push((f.t_ns, i, Some(d.yiaddr))),
                        6 => changes.push((f.t_ns, i, None)),
                        _ => {}
                    }
                } else {
                    continue; // another VM's reply flooded to this port
                }
                vms[i].dhcp.push(DhcpSeen {
                    frame: f.no,
                    t_ms: rel,
                    dir: if f.inbound() { "sent" } else { "got" },
                    msg: d.type_name(),
                    xid: format!("{:08x}", d.xid),
                    chaddr: mac_str(&d.chaddr),
                    client_id: cid,
                    addr: addr.map(|a| a.to_string()),
                });
            }
            Payload::Arp { sender_mac, sender_ip, .. } if f.inbound() && !sender_ip.is_unspecified() => {
                vms[i].arp_claims.entry(sender_ip.to_string()).or_insert(f.no);
                arp_macs.entry(*sender_ip).or_default().entry(*sender_mac).or_default().insert(i);
            }
            Payload::Nd { kind: 135, src, target: Some(t), .. } if f.inbound() && src.is_unspecified() => {
                vms[i].dad.push(Dad { frame: f.no, target: t.to_string(), defended_by: None, defended_frame: None });
                dads.push((i, vms[i].dad.len() - 1, f.t_ns, *t));
            }
            Payload::Nd { kind: 136, src, target: Some(t), .. } if f.inbound() => {
                note_v6(&mut vms[i], src);
                // An advertisement for an address another port is probing, within DAD's second.
                for (j, k, td, target) in &dads {
                    if *j != i && target == t && f.t_ns >= *td && f.t_ns - td < 3_000_000_000 && vms[*j].dad[*k].defended_by.is_none() {
                        vms[*j].dad[*k].defended_by = Some(members[i].vm.clone());
                        vms[*j].dad[*k].defended_frame = Some(f.no);
                    }
                }
            }
            Payload::Nd { src, .. } | Payload::Ipv6 { src } if f.inbound() && !src.is_unspecified() => note_v6(&mut vms[i], src),
            _ => {}
        }
    }
    // Inherited addresses: what the source held when each clone resumed.
    let source_at = |t: u64, changes: &[(u64, usize, Option<Ipv4Addr>)]| changes.iter().filter(|c| c.1 == 0 && c.0 <= t).last().and_then(|c| c.2);
    let mut inherited = Vec::new();
    for (i, m) in members.iter().enumerate() {
        if let (true, Some(r)) = (m.inherits, m.resumed_ns) {
            inherited.push((r, i, source_at(r, &changes)));
        }
    }
    changes.extend(inherited);
    changes.sort_by_key(|c| c.0);

    let end = frames.last().map(|f| f.t_ns).unwrap_or(t0);
    let state_at = |t: u64| {
        let mut s: Vec<Option<Ipv4Addr>> = vec![None; members.len()];
        for c in changes.iter().filter(|c| c.0 <= t) {
            s[c.1] = c.2;
        }
        s
    };
    for (i, v) in vms.iter_mut().enumerate() {
        v.held = changes.iter().filter(|c| c.1 == i).map(|c| (ms(c.0, base(i)), c.2.map(|a| a.to_string()))).collect();
        v.final_v4 = state_at(end.max(changes.last().map(|c| c.0).unwrap_or(0)))[i].map(|a| a.to_string());
    }
    // Uniqueness over time: after each change (and at resume), is member i's address its own?
    for i in 0..members.len() {
        let Some(start) = members[i].resumed_ns.or(Some(t0)) else { continue };
        let mut times: Vec<u64> = std::iter::once(start).chain(changes.iter().map(|c| c.0).filter(|t| *t >= start)).collect();
        times.dedup();
        let mut since: Option<u64> = None;
        for t in times {
            let s = state_at(t);
            let unique = s[i].is_some_and(|a| s.iter().enumerate().all(|(j, b)| j == i || *b != Some(a)));
            match (unique, since) {
                (true, None) => since = Some(t),
                (false, _) => since = None,
                _ => {}
            }
        }
        vms[i].unique_after_ms = since.map(|t| ms(t, start));
    }
    let mac_on_ports = mac_ports
        .iter()
        .filter(|(_, p)| p.len() > 1)
        .map(|(m, p)| (mac_str(m), p.iter().map(|i| members[*i].vm.clone()).collect()))
        .collect();
    let arp_conflicts = arp_macs
        .iter()
        .filter(|(_, by)| by.len() > 1)
        .map(|(ip, by)| (ip.to_string(), by.keys().map(mac_str).collect(), by.values().flatten().collect::<BTreeSet<_>>().into_iter().map(|i| members[*i].vm.clone()).collect()))
        .collect();
    Wire { frames: frames.len(), vms, mac_on_ports, arp_conflicts }
}

fn note_v6(v: &mut VmWire, src: &std::net::Ipv6Addr) {
    let s = src.to_string();
    if !v.v6_sources.contains(&s) && v.v6_sources.len() < 16 {
        v.v6_sources.push(s);
    }
}

/// One address from a guest's `/proc/net/if_inet6` (untrusted: malformed lines are skipped).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GuestV6 {
    pub addr: String,
    pub iface: String,
    pub prefix: u8,
    pub dad_failed: bool,
    pub tentative: bool,
}

/// Parse `/proc/net/if_inet6`: `<32 hex> <ifindex> <prefix> <scope> <flags> <name>` per line
/// (net/ipv6/addrconf.c `if6_seq_show`); loopback left out. Flags: 0x08 DADFAILED, 0x40
/// TENTATIVE (include/uapi/linux/if_addr.h).
pub fn parse_if_inet6(text: &str) -> Vec<GuestV6> {
    text.lines()
        .take(256)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() != 6 || f[0].len() != 32 || f[5] == "lo" {
                return None;
            }
            let raw = u128::from_str_radix(f[0], 16).ok()?;
            let flags = u32::from_str_radix(f[4], 16).ok()?;
            Some(GuestV6 {
                addr: std::net::Ipv6Addr::from(raw).to_string(),
                iface: crate::text::truncate(f[5], 16),
                prefix: u8::from_str_radix(f[2], 16).ok()?,
                dad_failed: flags & 0x08 != 0,
                tentative: flags & 0x40 != 0,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::pcap::{Dhcp, Frame, Payload};
    use super::*;

    const S: u64 = 1_000_000_000;

    fn dhcp(no: usize, t: u64, ifindex: u32, inbound: bool, mac: [u8; 6], xid: u32, msg_type: u8, yiaddr: [u8; 4], cid: &[u8]) -> Frame {
        Frame {
            no,
            t_ns: t,
            ifindex,
            pkttype: if inbound { 0 } else { 4 },
            src_mac: mac,
            payload: Payload::Dhcp(Dhcp { msg_type, xid, chaddr: mac, ciaddr: Ipv4Addr::UNSPECIFIED, yiaddr: Ipv4Addr::from(yiaddr), client_id: Some(cid.to_vec()), requested: None }),
        }
    }

    fn member(vm: &str, ifx: u32, mac: &str, resumed: Option<u64>) -> Member {
        Member { vm: vm.into(), role: "clone".into(), ifindexes: vec![ifx], taps: vec![format!("t{ifx}")], macs: vec![mac.into()], resumed_ns: resumed, inherits: resumed.is_some() }
    }

    /// The measured dnsmasq story (FACTS.md): two clones with one client id; the first is
    /// NAKed at renewal and handed the address the second holds.
    #[test]
    fn follows_leases_through_a_nak_to_a_shared_address() {
        let (a, b, c) = ([0x52, 0x54, 0, 0, 0, 1], [0x52, 0x54, 0, 0, 0, 2], [0x52, 0x54, 0, 0, 0, 3]);
        let frames = vec![
            dhcp(1, 1 * S, 1, true, a, 10, 3, [0; 4], b"id"),
            dhcp(2, 1 * S + 1, 1, false, a, 10, 5, [10, 77, 0, 10], b"id"),
            // clone1 renews at 20 s: ACKed its inherited address; clone2 is NAKed and rebinds to .11
            dhcp(3, 20 * S, 2, true, b, 20, 3, [0; 4], b"id"),
            dhcp(4, 20 * S + 1, 2, false, b, 20, 5, [10, 77, 0, 10], b"id"),
            dhcp(5, 21 * S, 3, true, c, 30, 3, [0; 4], b"id"),
            dhcp(6, 21 * S + 1, 3, false, c, 30, 6, [0; 4], b"id"),
            dhcp(7, 22 * S, 3, true, c, 31, 1, [0; 4], b"id"),
            dhcp(8, 22 * S + 1, 3, false, c, 31, 5, [10, 77, 0, 11], b"id"),
            // the reply to clone2's xid flooded to clone1's port is not clone1's
            dhcp(9, 22 * S + 2, 2, false, c, 31, 5, [10, 77, 0, 11], b"id"),
        ];
        let mut src = member("source", 1, "52:54:00:00:00:01", None);
        src.role = "source".into();
        let members = vec![src, member("clone1", 2, "52:54:00:00:00:02", Some(10 * S)), member("clone2", 3, "52:54:00:00:00:03", Some(10 * S))];
        let w = analyse(&frames, &members, 0);
        assert_eq!(w.vms[1].client_ids, vec!["6964".to_string()]);
        assert_eq!(w.vms[0].final_v4.as_deref(), Some("10.77.0.10"));
        assert_eq!(w.vms[1].final_v4.as_deref(), Some("10.77.0.10"));
        assert_eq!(w.vms[2].final_v4.as_deref(), Some("10.77.0.11"));
        // clone2 held the source's address from resume, nothing after the NAK, its own from 12 s.
        assert_eq!(w.vms[2].held, vec![(0.0, Some("10.77.0.10".into())), (11_000.0, None), (12_000.0, Some("10.77.0.11".into()))]);
        assert_eq!(w.vms[2].unique_after_ms, Some(12_000.0));
        assert_eq!(w.vms[1].unique_after_ms, None, "clone1 shares the source's address to the end");
        assert_eq!(w.vms[1].dhcp.len(), 2, "the flooded reply of another xid is left out");
    }

    #[test]
    fn one_mac_on_two_ports_and_arp_claims_are_conflicts() {
        let m = [0x52, 0x54, 0, 0, 0, 9];
        let arp = |no, ifindex, ip: [u8; 4]| Frame { no, t_ns: no as u64 * S, ifindex, pkttype: 0, src_mac: m, payload: Payload::Arp { op: 2, sender_mac: m, sender_ip: Ipv4Addr::from(ip), target_ip: Ipv4Addr::from(ip) } };
        let members = vec![member("a", 1, "52:54:00:00:00:09", Some(0)), member("b", 2, "52:54:00:00:00:09", Some(0))];
        let w = analyse(&[arp(1, 1, [10, 77, 0, 5]), arp(2, 2, [10, 77, 0, 5])], &members, 0);
        assert_eq!(w.mac_on_ports, vec![("52:54:00:00:00:09".to_string(), vec!["a".to_string(), "b".to_string()])]);
        assert!(w.arp_conflicts.is_empty(), "one MAC claiming its address is not a two-MAC conflict");
        assert_eq!(w.vms[1].arp_claims.get("10.77.0.5"), Some(&2));
    }

    #[test]
    fn reads_if_inet6_flags_and_skips_junk() {
        let t = "fd000077000000005054fffe000001 02 40 00 00 eth0\n\
                 fd000077000000005054fffe00000102 02 40 00 88 eth0\n\
                 00000000000000000000000000000001 01 80 10 80 lo\n\
                 fe800000000000005054fffe00000102 02 40 20 c0 eth0\n\
                 garbage";
        let v = parse_if_inet6(t);
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].addr.as_str(), v[0].dad_failed, v[0].prefix), ("fd00:77::5054:fffe:0:102", true, 64));
        assert!(v[1].tentative && !v[1].dad_failed);
    }
}
