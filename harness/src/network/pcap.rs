//! A reader for the segment's capture: classic pcap files of Linux cooked v2 frames (what
//! `tcpdump -i any -y LINUX_SLL2 -w` writes), decoded just far enough for the network checks:
//! DHCPv4 messages, ARP, and ICMPv6 neighbour discovery. Everything in the file came from
//! guests, so every length is checked and nothing here panics on any input
//! (fuzz/fuzz_targets/pcap.rs).
//!
//! ```text
//!  file header (24 bytes, little-endian magic a1b2c3d4 = µs, a1b23c4d = ns timestamps)
//!  ┌────────┬───────┬───────┬─────────┬─────────┬─────────┬──────────┐
//!  │ magic  │ major │ minor │ thiszone│ sigfigs │ snaplen │ linktype │  linktype 276 = LINUX_SLL2
//!  │ u32    │ u16   │ u16   │ i32     │ u32     │ u32     │ u32      │
//!  └────────┴───────┴───────┴─────────┴─────────┴─────────┴──────────┘
//!  per record: ts_sec u32, ts_frac u32, incl_len u32, orig_len u32, then incl_len bytes:
//!  SLL2 header (20 bytes, big-endian)
//!  ┌──────────┬──────────┬─────────┬──────────┬──────────┬─────────┬──────────────┐
//!  │ protocol │ reserved │ ifindex │ hatype   │ pkttype  │ halen   │ address (8)  │
//!  │ u16      │ u16      │ u32     │ u16      │ u8       │ u8      │ src MAC + pad│
//!  └──────────┴──────────┴─────────┴──────────┴──────────┴─────────┴──────────────┘
//!  then the network-layer packet (no Ethernet header). pkttype 4 (OUTGOING) is a frame the
//!  interface sent; anything else on a tap is a frame its VM sent.
//! ```
//! (Formats: pcap-savefile(5); tcpdump.org/linktypes/LINKTYPE_LINUX_SLL2.html.)

use std::net::{Ipv4Addr, Ipv6Addr};

pub const LINKTYPE_LINUX_SLL2: u32 = 276;
/// Frames read from one capture, at most (the capture itself stops at segment::MAX_FRAMES).
pub const MAX_RECORDS: usize = 500_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PcapError {
    #[error("not a pcap file (magic {0:08x})")]
    Magic(u32),
    #[error("link type {0}, not Linux cooked v2 (276)")]
    LinkType(u32),
    #[error("the file header is cut short ({0} bytes)")]
    Short(usize),
}

/// What a frame carried, as far as the checks need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Dhcp(Dhcp),
    Arp { op: u16, sender_mac: [u8; 6], sender_ip: Ipv4Addr, target_ip: Ipv4Addr },
    /// ICMPv6 neighbour discovery: 133 RS, 134 RA, 135 NS, 136 NA.
    Nd { kind: u8, src: Ipv6Addr, dst: Ipv6Addr, target: Option<Ipv6Addr> },
    /// Any other IPv6 packet: its source address.
    Ipv6 { src: Ipv6Addr },
    /// An IPv4 TCP segment: its addresses, sequence number, flags (0x04 RST, 0x02 SYN, 0x01
    /// FIN) and payload length.
    Tcp { src: std::net::SocketAddrV4, dst: std::net::SocketAddrV4, seq: u32, flags: u8, len: u16 },
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dhcp {
    /// Option 53: 1 DISCOVER, 2 OFFER, 3 REQUEST, 4 DECLINE, 5 ACK, 6 NAK, 7 RELEASE, 8 INFORM.
    pub msg_type: u8,
    pub xid: u32,
    pub chaddr: [u8; 6],
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    /// Option 61, verbatim (hex when shown).
    pub client_id: Option<Vec<u8>>,
    /// Option 50.
    pub requested: Option<Ipv4Addr>,
}

impl Dhcp {
    pub fn type_name(&self) -> &'static str {
        match self.msg_type {
            1 => "DISCOVER",
            2 => "OFFER",
            3 => "REQUEST",
            4 => "DECLINE",
            5 => "ACK",
            6 => "NAK",
            7 => "RELEASE",
            8 => "INFORM",
            _ => "?",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// 1-based, as tcpdump and Wireshark number them.
    pub no: usize,
    /// Unix time in ns.
    pub t_ns: u64,
    pub ifindex: u32,
    /// Linux packet type: 4 = the interface sent it.
    pub pkttype: u8,
    pub src_mac: [u8; 6],
    pub payload: Payload,
}

impl Frame {
    /// Whether the frame was sent *by* what is behind the interface (a VM, on its tap).
    pub fn inbound(&self) -> bool {
        self.pkttype != 4
    }
}

pub fn mac_str(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Decode a whole capture. A record cut short at the end (tcpdump killed mid-write) ends the
/// list; it is not an error.
pub fn parse(data: &[u8]) -> Result<Vec<Frame>, PcapError> {
    if data.len() < 24 {
        return Err(PcapError::Short(data.len()));
    }
    let magic = u32::from_le_bytes(data[0..4].try_into().unwrap());
    let (be, nanos) = match magic {
        0xa1b2c3d4 => (false, false),
        0xa1b23c4d => (false, true),
        0xd4c3b2a1 => (true, false),
        0x4d3cb2a1 => (true, true),
        m => return Err(PcapError::Magic(m)),
    };
    let u32_at = |b: &[u8], o: usize| {
        let a: [u8; 4] = b[o..o + 4].try_into().unwrap();
        if be { u32::from_be_bytes(a) } else { u32::from_le_bytes(a) }
    };
    let linktype = u32_at(data, 20);
    if linktype != LINKTYPE_LINUX_SLL2 {
        return Err(PcapError::LinkType(linktype));
    }
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= data.len() && out.len() < MAX_RECORDS {
        let sec = u32_at(data, off) as u64;
        let frac = u32_at(data, off + 4) as u64;
        let incl = u32_at(data, off + 8) as usize;
        let start = off + 16;
        let Some(end) = start.checked_add(incl).filter(|e| *e <= data.len()) else { break };
        let rec = &data[start..end];
        off = end;
        let t_ns = sec.saturating_mul(1_000_000_000).saturating_add(if nanos { frac } else { frac.saturating_mul(1000) });
        if let Some(f) = sll2(rec, out.len() + 1, t_ns) {
            out.push(f);
        }
    }
    Ok(out)
}

fn be16(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(o..o + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

fn v4(b: &[u8], o: usize) -> Option<Ipv4Addr> {
    let a: [u8; 4] = b.get(o..o + 4)?.try_into().ok()?;
    Some(Ipv4Addr::from(a))
}

fn v6(b: &[u8], o: usize) -> Option<Ipv6Addr> {
    let a: [u8; 16] = b.get(o..o + 16)?.try_into().ok()?;
    Some(Ipv6Addr::from(a))
}

fn sll2(rec: &[u8], no: usize, t_ns: u64) -> Option<Frame> {
    let proto = be16(rec, 0)?;
    let ifindex = be32(rec, 4)?;
    let pkttype = *rec.get(10)?;
    let src_mac: [u8; 6] = rec.get(12..18)?.try_into().ok()?;
    let body = rec.get(20..)?;
    let payload = match proto {
        0x0806 => arp(body),
        0x0800 => ipv4(body),
        0x86dd => ipv6(body),
        _ => None,
    }
    .unwrap_or(Payload::Other);
    Some(Frame { no, t_ns, ifindex, pkttype, src_mac, payload })
}

fn arp(b: &[u8]) -> Option<Payload> {
    // Ethernet/IPv4 ARP only: htype 1, ptype 0x0800, hlen 6, plen 4.
    if be16(b, 0)? != 1 || be16(b, 2)? != 0x0800 || *b.get(4)? != 6 || *b.get(5)? != 4 {
        return None;
    }
    Some(Payload::Arp { op: be16(b, 6)?, sender_mac: b.get(8..14)?.try_into().ok()?, sender_ip: v4(b, 14)?, target_ip: v4(b, 24)? })
}

fn ipv4(b: &[u8]) -> Option<Payload> {
    let ihl = (*b.first()? & 0x0f) as usize * 4;
    if *b.first()? >> 4 == 4 && ihl >= 20 && *b.get(9)? == 6 {
        return tcp(b, ihl);
    }
    if *b.first()? >> 4 != 4 || ihl < 20 || *b.get(9)? != 17 {
        return None;
    }
    let udp = b.get(ihl..)?;
    let (sport, dport) = (be16(udp, 0)?, be16(udp, 2)?);
    if !matches!((sport, dport), (68, 67) | (67, 68)) {
        return None;
    }
    dhcp(udp.get(8..)?).map(Payload::Dhcp)
}

/// A TCP segment in IPv4 packet `b` whose header is `ihl` bytes (RFC 9293 §3.1); the payload
/// length comes from the IP total length, not the (snapped) capture.
fn tcp(b: &[u8], ihl: usize) -> Option<Payload> {
    let total = be16(b, 2)? as usize;
    let t = b.get(ihl..)?;
    let off = (*t.get(12)? >> 4) as usize * 4;
    let len = total.checked_sub(ihl + off)?;
    Some(Payload::Tcp {
        src: std::net::SocketAddrV4::new(v4(b, 12)?, be16(t, 0)?),
        dst: std::net::SocketAddrV4::new(v4(b, 16)?, be16(t, 2)?),
        seq: be32(t, 4)?,
        flags: *t.get(13)?,
        len: u16::try_from(len).ok()?,
    })
}

/// A BOOTP/DHCP message (RFC 2131 §2): fixed 236 bytes, the magic cookie, then options.
fn dhcp(m: &[u8]) -> Option<Dhcp> {
    if be32(m, 236)? != 0x6382_5363 {
        return None;
    }
    let mut d = Dhcp {
        msg_type: 0,
        xid: be32(m, 4)?,
        chaddr: m.get(28..34)?.try_into().ok()?,
        ciaddr: v4(m, 12)?,
        yiaddr: v4(m, 16)?,
        client_id: None,
        requested: None,
    };
    let mut o = 240;
    while let Some(&code) = m.get(o) {
        match code {
            0 => {
                o += 1;
                continue;
            }
            255 => break,
            _ => {}
        }
        let len = *m.get(o + 1)? as usize;
        let val = m.get(o + 2..o + 2 + len)?;
        match code {
            53 if len == 1 => d.msg_type = val[0],
            61 => d.client_id = Some(val.to_vec()),
            50 if len == 4 => d.requested = v4(val, 0),
            _ => {}
        }
        o += 2 + len;
    }
    (d.msg_type != 0).then_some(d)
}

fn ipv6(b: &[u8]) -> Option<Payload> {
    if *b.first()? >> 4 != 6 {
        return None;
    }
    let src = v6(b, 8)?;
    let dst = v6(b, 24)?;
    let mut next = *b.get(6)?;
    let mut off = 40;
    // Hop-by-hop options (MLD reports carry one): skip extension headers of the usual kinds.
    for _ in 0..4 {
        if matches!(next, 0 | 43 | 60) {
            next = *b.get(off)?;
            off += (*b.get(off + 1)? as usize + 1) * 8;
        } else {
            break;
        }
    }
    if next == 58 {
        let icmp = b.get(off..)?;
        let kind = *icmp.first()?;
        if (133..=136).contains(&kind) {
            let target = if kind >= 135 { v6(icmp, 8) } else { None };
            return Some(Payload::Nd { kind, src, dst, target });
        }
    }
    Some(Payload::Ipv6 { src })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(records: &[Vec<u8>]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend(0xa1b2c3d4u32.to_le_bytes());
        f.extend(2u16.to_le_bytes());
        f.extend(4u16.to_le_bytes());
        f.extend([0u8; 8]);
        f.extend(1024u32.to_le_bytes());
        f.extend(LINKTYPE_LINUX_SLL2.to_le_bytes());
        for (i, r) in records.iter().enumerate() {
            f.extend((1_700_000_000u32 + i as u32).to_le_bytes());
            f.extend(500u32.to_le_bytes());
            f.extend((r.len() as u32).to_le_bytes());
            f.extend((r.len() as u32).to_le_bytes());
            f.extend(r);
        }
        f
    }

    fn sll2(proto: u16, ifindex: u32, pkttype: u8, mac: [u8; 6], body: &[u8]) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend(proto.to_be_bytes());
        r.extend([0, 0]);
        r.extend(ifindex.to_be_bytes());
        r.extend(1u16.to_be_bytes());
        r.push(pkttype);
        r.push(6);
        r.extend(mac);
        r.extend([0, 0]);
        r.extend(body);
        r
    }

    pub(crate) fn dhcp_request(mac: [u8; 6], client_id: &[u8], msg_type: u8, yiaddr: [u8; 4]) -> Vec<u8> {
        let mut m = vec![0u8; 240];
        m[0] = 1;
        m[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        m[16..20].copy_from_slice(&yiaddr);
        m[28..34].copy_from_slice(&mac);
        m[236..240].copy_from_slice(&0x6382_5363u32.to_be_bytes());
        m.extend([53, 1, msg_type, 61, client_id.len() as u8]);
        m.extend(client_id);
        m.push(255);
        let mut udp = Vec::new();
        udp.extend(68u16.to_be_bytes());
        udp.extend(67u16.to_be_bytes());
        udp.extend(((8 + m.len()) as u16).to_be_bytes());
        udp.extend([0, 0]);
        udp.extend(m);
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255];
        ip.extend(udp);
        ip
    }

    #[test]
    fn decodes_a_tcp_segment_with_its_payload_length() {
        let mac = [0x52, 0x54, 0, 1, 2, 3];
        // 20-byte IP header (total 20 + 20 + 9), 20-byte TCP header, 9 bytes "id clone0".
        let mut ip = vec![0x45, 0, 0, 49, 0, 0, 0, 0, 64, 6, 0, 0, 10, 77, 0, 23, 10, 77, 0, 1];
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&41234u16.to_be_bytes());
        t[2..4].copy_from_slice(&7070u16.to_be_bytes());
        t[4..8].copy_from_slice(&0xdead_beefu32.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = 0x18;
        ip.extend(t);
        ip.extend(b"id clone0");
        let frames = parse(&file(&[sll2(0x0800, 3, 0, mac, &ip)])).unwrap();
        assert_eq!(
            frames[0].payload,
            Payload::Tcp { src: "10.77.0.23:41234".parse().unwrap(), dst: "10.77.0.1:7070".parse().unwrap(), seq: 0xdead_beef, flags: 0x18, len: 9 }
        );
        // A header longer than the packet says is not a segment.
        ip[3] = 30;
        assert_eq!(parse(&file(&[sll2(0x0800, 3, 0, mac, &ip)])).unwrap()[0].payload, Payload::Other);
    }

    #[test]
    fn decodes_dhcp_arp_and_neighbour_discovery() {
        let mac = [0x52, 0x54, 0, 1, 2, 3];
        let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 2];
        arp.extend(mac);
        arp.extend([10, 77, 0, 23]);
        arp.extend([0u8; 6]);
        arp.extend([10, 77, 0, 1]);
        let mut ns = vec![0x60, 0, 0, 0, 0, 24, 58, 255];
        ns.extend([0u8; 16]);
        ns.extend("ff02::1:ff00:1".parse::<Ipv6Addr>().unwrap().octets());
        ns.extend([135, 0, 0, 0, 0, 0, 0, 0]);
        ns.extend("fe80::1".parse::<Ipv6Addr>().unwrap().octets());
        let data = file(&[
            sll2(0x0800, 7, 0, mac, &dhcp_request(mac, &[1, 0x52, 0x54, 0, 1, 2, 3], 3, [0; 4])),
            sll2(0x0806, 7, 0, mac, &arp),
            sll2(0x86dd, 8, 4, mac, &ns),
        ]);
        let frames = parse(&data).unwrap();
        assert_eq!(frames.len(), 3);
        match &frames[0].payload {
            Payload::Dhcp(d) => {
                assert_eq!((d.msg_type, d.type_name(), d.chaddr), (3, "REQUEST", mac));
                assert_eq!(d.client_id.as_deref(), Some(&[1, 0x52, 0x54, 0, 1, 2, 3][..]));
            }
            p => panic!("{p:?}"),
        }
        assert_eq!(frames[0].t_ns, 1_700_000_000_000_500_000);
        assert!(frames[0].inbound() && !frames[2].inbound());
        assert_eq!(frames[1].payload, Payload::Arp { op: 2, sender_mac: mac, sender_ip: "10.77.0.23".parse().unwrap(), target_ip: "10.77.0.1".parse().unwrap() });
        assert_eq!(frames[2].payload, Payload::Nd { kind: 135, src: Ipv6Addr::UNSPECIFIED, dst: "ff02::1:ff00:1".parse().unwrap(), target: Some("fe80::1".parse().unwrap()) });
        assert_eq!((frames[2].no, frames[2].ifindex), (3, 8));
    }

    #[test]
    fn refuses_other_files_and_stops_at_a_cut_record() {
        assert_eq!(parse(b"short"), Err(PcapError::Short(5)));
        assert_eq!(parse(&[0u8; 24]), Err(PcapError::Magic(0)));
        let mut eth = file(&[]);
        eth[20..24].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(parse(&eth), Err(PcapError::LinkType(1)));
        let mut cut = file(&[sll2(0x0806, 1, 0, [0; 6], &[0; 28]), sll2(0x0806, 1, 0, [0; 6], &[0; 28])]);
        cut.truncate(cut.len() - 10);
        assert_eq!(parse(&cut).unwrap().len(), 1);
    }
}
