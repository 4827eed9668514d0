//! Checks from the wire of a segment (`network = "segment"`, network/segment.rs): what each VM
//! sent and was given, read from the capture in the segment's namespace (network/wire.rs) and,
//! for IPv6, from the guest's own address table. Evidence points at frame numbers of the
//! capture and lines of dnsmasq's log.
//!
//! * `dhcp_client_id`: the client identities (option 61) each VM sent.
//! * `ipv4_lease`: the address each VM held at the end of the watch; duplicate when two VMs
//!   (or a clone and its running source) hold one.
//! * `ipv6_addr`: each VM's addresses; duplicate when two share one or duplicate-address
//!   detection failed (in the guest, or answered on the wire).
//! * `arp_conflict`: two MACs claiming one IPv4 address, or one MAC sending from two ports.
//! * `ip_window_ms`: from resume until each VM held an address of its own and kept it.

use super::common::{error, from_sets, skipped, Check, Evidence};
use crate::network::SegmentReport;
use crate::probes::Observation;
use clonesafe_metadata::{CheckId, CheckResult, Verdict};
use serde_json::{json, Value};

fn segment<'a>(id: CheckId, obs: &[Observation], cx: &'a Evidence) -> Result<&'a SegmentReport, CheckResult> {
    let Some(s) = cx.segment.as_ref() else {
        return Err(skipped(id, vec![Value::Null; obs.len()], "the VMs were not on a shared segment (network = \"segment\" puts them on one)"));
    };
    if let Some(e) = &s.error {
        return Err(error(id, obs, format!("the segment's capture could not be read: {e}")));
    }
    if let Some(o) = obs.iter().find(|o| s.vm(&o.vm).is_none()) {
        return Err(error(id, obs, format!("{} has no port on the segment", o.vm)));
    }
    Ok(s)
}

/// A check read from the segment's report: skipped off a segment, an error when the capture
/// could not be read or a compared VM has no port; otherwise [`WireCheck::judge`].
trait WireCheck: Send + Sync {
    const ID: CheckId;
    fn judge(&self, s: &SegmentReport, obs: &[Observation]) -> CheckResult;
}

impl<T: WireCheck> Check for T {
    fn id(&self) -> CheckId {
        T::ID
    }
    fn run(&self, ev: &Evidence) -> CheckResult {
        let obs = ev.observations.as_slice();
        let cx = ev;
        match segment(T::ID, obs, cx) {
            Ok(s) => self.judge(s, obs),
            Err(r) => r,
        }
    }
}

fn source_of(s: &SegmentReport) -> Option<&crate::network::wire::VmWire> {
    s.wire.vms.iter().find(|v| v.role == "source")
}

pub struct DhcpClientId;

impl WireCheck for DhcpClientId {
    const ID: CheckId = CheckId::DhcpClientId;
    fn judge(&self, s: &SegmentReport, obs: &[Observation]) -> CheckResult {
        let id = Self::ID;
        let mut sets = Vec::new();
        for o in obs {
            let v = s.vm(&o.vm).expect("checked");
            if v.client_ids.is_empty() {
                return error(id, obs, format!("{} sent no DHCP message in the {} s watched", o.vm, s.watched_ms / 1000));
            }
            sets.push(v.client_ids.clone());
        }
        let mut r = from_sets(id, obs, sets);
        if let Some(src) = source_of(s) {
            let same: Vec<&str> = obs.iter().filter(|o| s.vm(&o.vm).is_some_and(|v| v.client_ids.iter().any(|c| src.client_ids.contains(c)))).map(|o| o.vm.as_str()).collect();
            if !same.is_empty() {
                r.detail.push_str(&format!("; {} sent the source's own client id", same.join(", ")));
                if r.verdict == Verdict::Unique {
                    r.verdict = Verdict::Duplicate;
                }
            }
        }
        r.evidence = Some(evidence(s, obs, |v| json!(v.dhcp.iter().filter(|d| d.dir == "sent").take(6).map(|d| json!({ "frame": d.frame, "t_ms": d.t_ms, "msg": d.msg, "client_id": d.client_id })).collect::<Vec<_>>())));
        r
    }
}

pub struct Ipv4Lease;

impl WireCheck for Ipv4Lease {
    const ID: CheckId = CheckId::Ipv4Lease;
    fn judge(&self, s: &SegmentReport, obs: &[Observation]) -> CheckResult {
        let id = Self::ID;
        let finals: Vec<Option<String>> = obs.iter().map(|o| s.vm(&o.vm).and_then(|v| v.final_v4.clone())).collect();
        let values: Vec<Value> = finals.iter().map(|f| json!(f)).collect();
        let mut shared = Vec::new();
        let src = source_of(s).and_then(|v| v.final_v4.clone());
        let mut by_addr: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for (o, a) in obs.iter().zip(&finals) {
            if let Some(a) = a {
                by_addr.entry(a.as_str()).or_default().push(o.vm.as_str());
            }
        }
        for (a, vms) in &by_addr {
            if vms.len() > 1 {
                shared.push(format!("{a} held by {}", vms.join(" and ")));
            }
            if src.as_deref() == Some(*a) {
                shared.push(format!("{} hold the running source's address {a}", vms.join(" and ")));
            }
        }
        let mismatch: Vec<String> = obs
            .iter()
            .zip(&finals)
            .filter_map(|(o, f)| {
                let g = s.guests.get(&o.vm)?;
                let own: Vec<&String> = g.v4.iter().filter(|a| a.starts_with("10.77.0.")).collect();
                (g.error.is_none() && f.as_ref().is_some_and(|f| !own.contains(&f))).then(|| format!("{} reports {:?} itself", o.vm, own))
            })
            .collect();
        let ev = evidence(s, obs, |v| json!({ "held": v.held, "final": v.final_v4 }));
        let (verdict, mut detail) = if !shared.is_empty() {
            (Verdict::Duplicate, shared.join("; "))
        } else if let Some(i) = finals.iter().position(Option::is_none) {
            (Verdict::Error, format!("{} held no address at the end of the {} s watched", obs[i].vm, s.watched_ms / 1000))
        } else {
            (Verdict::Unique, format!("each of the {} VMs held its own address at the end of the watch", obs.len()))
        };
        if !mismatch.is_empty() {
            detail.push_str(&format!(" (the guest's own view differs: {})", mismatch.join("; ")));
        }
        CheckResult { id: id.into(), declared: false, stated: None, verdict, values, detail, evidence: Some(ev) }
    }
}

pub struct Ipv6Addr;

impl WireCheck for Ipv6Addr {
    const ID: CheckId = CheckId::Ipv6Addr;
    fn judge(&self, s: &SegmentReport, obs: &[Observation]) -> CheckResult {
        let id = Self::ID;
        let mut sets = Vec::new();
        let mut failed = Vec::new();
        for o in obs {
            let v = s.vm(&o.vm).expect("checked");
            let g = s.guests.get(&o.vm);
            let set: Vec<String> = match g {
                Some(g) if g.error.is_none() => {
                    for a in g.v6.iter().filter(|a| a.dad_failed) {
                        failed.push(format!("{} marks {} dadfailed", o.vm, a.addr));
                    }
                    g.v6.iter().map(|a| a.addr.clone()).collect()
                }
                _ => v.v6_sources.clone(),
            };
            for d in v.dad.iter().filter(|d| d.defended_by.is_some()) {
                failed.push(format!("{}'s DAD probe for {} (frame {}) was answered by {} (frame {})", o.vm, d.target, d.frame, d.defended_by.as_deref().unwrap_or(""), d.defended_frame.unwrap_or(0)));
            }
            if set.is_empty() {
                return error(id, obs, format!("{} has no IPv6 address that it reports or sent from", o.vm));
            }
            sets.push(set);
        }
        let mut r = from_sets(id, obs, sets);
        if !failed.is_empty() {
            r.verdict = Verdict::Duplicate;
            r.detail = format!("{}; duplicate-address detection failed: {}", r.detail, failed.join("; "));
        }
        r.evidence = Some(evidence(s, obs, |v| json!({ "guest": s.guests.get(&v.vm).map(|g| &g.v6), "dad_probes": v.dad, "sent_from": v.v6_sources })));
        r
    }
}

pub struct ArpConflict;

impl WireCheck for ArpConflict {
    const ID: CheckId = CheckId::ArpConflict;
    fn judge(&self, s: &SegmentReport, obs: &[Observation]) -> CheckResult {
        let id = Self::ID;
        let ours = |vms: &Vec<String>| vms.iter().any(|v| obs.iter().any(|o| &o.vm == v));
        let mut found: Vec<String> = s.wire.mac_on_ports.iter().filter(|(_, v)| ours(v)).map(|(m, v)| format!("MAC {m} sent from the ports of {}", v.join(", "))).collect();
        found.extend(s.wire.arp_conflicts.iter().filter(|(_, _, v)| ours(v)).map(|(ip, macs, v)| format!("{ip} claimed by {} ({})", macs.join(" and "), v.join(", "))));
        let values: Vec<Value> = obs.iter().map(|o| json!(s.vm(&o.vm).map(|v| v.arp_claims.keys().cloned().collect::<Vec<_>>()))).collect();
        let (verdict, detail) = if found.is_empty() {
            (Verdict::Unique, format!("no address claimed by two MACs and no MAC on two ports in {} frames", s.wire.frames))
        } else {
            (Verdict::Duplicate, found.join("; "))
        };
        let ev = evidence(s, obs, |v| json!(v.arp_claims));
        CheckResult { id: id.into(), declared: false, stated: None, verdict, values, detail, evidence: Some(ev) }
    }
}

pub struct IpWindow;

impl WireCheck for IpWindow {
    const ID: CheckId = CheckId::IpWindowMs;
    fn judge(&self, s: &SegmentReport, obs: &[Observation]) -> CheckResult {
        let id = Self::ID;
        let w: Vec<Option<f64>> = obs.iter().map(|o| s.vm(&o.vm).and_then(|v| v.unique_after_ms)).collect();
        let values = w.iter().map(|x| json!(x.map(f64::round))).collect();
        let never: Vec<&str> = obs.iter().zip(&w).filter(|(_, x)| x.is_none()).map(|(o, _)| o.vm.as_str()).collect();
        let (verdict, detail) = if never.is_empty() {
            let worst = w.iter().flatten().fold(0.0f64, |a, b| a.max(*b));
            (Verdict::Unique, format!("every VM held an address of its own within {:.1} s of resume, and kept it to the end of the {} s watched", worst / 1000.0, s.watched_ms / 1000))
        } else {
            (Verdict::Duplicate, format!("{} never held an address no other VM held, in the {} s watched", never.join(", "), s.watched_ms / 1000))
        };
        let ev = evidence(s, obs, |v| json!(v.held));
        CheckResult { id: id.into(), declared: false, stated: None, verdict, values, detail, evidence: Some(ev) }
    }
}

/// Per VM (the compared ones, then the source): `f` of its wire view and dnsmasq's lines on it.
fn evidence(s: &SegmentReport, obs: &[Observation], f: impl Fn(&crate::network::wire::VmWire) -> Value) -> Value {
    let mut vms: Vec<&crate::network::wire::VmWire> = obs.iter().filter_map(|o| s.vm(&o.vm)).collect();
    vms.extend(source_of(s));
    json!({
        "namespace": s.namespace,
        "frames": s.wire.frames,
        "watched_ms": s.watched_ms,
        "vms": vms.iter().map(|v| json!({ "vm": v.vm, "role": v.role, "macs": v.macs, "taps": v.taps, "wire": f(v), "dnsmasq_log": s.log.get(&v.vm) })).collect::<Vec<_>>(),
    })
}

/// `tcp_session`: whether two VMs spoke on one TCP connection. A live clone resumes holding the
/// connection its source opened to the segment's peer before the snapshot (network/peer.rs);
/// each compared VM then writes its name on its session (evidence/segment.rs). Duplicate when
/// the capture shows data from two VMs' ports on one 4-tuple after they resumed, or when two VMs
/// wrote on one 4-tuple without an error; unique when every VM that spoke had a connection of
/// its own (VMs that booted open their own; a fix-up that destroys the inherited connection,
/// drop-sessions, leaves nobody speaking on it).
pub struct TcpSession;

impl WireCheck for TcpSession {
    const ID: CheckId = CheckId::TcpSession;
    fn judge(&self, s: &SegmentReport, obs: &[Observation]) -> CheckResult {
        let id = Self::ID;
        let ss = &s.sessions;
        let nulls = || vec![Value::Null; obs.len()];
        if let Some(e) = &ss.peer_error {
            return skipped(id, nulls(), format!("the segment's TCP peer did not start: {e}"));
        }
        let mut tuples = Vec::new();
        let mut failed = Vec::new();
        for o in obs {
            match ss.guests.get(&o.vm) {
                Some(crate::network::session::GuestSession { speech: Some(sp), .. }) => tuples.push(Some((format!("{} -> {}", sp.local, sp.remote), sp))),
                Some(g) => {
                    failed.push(format!("{}: {}", o.vm, g.error.as_deref().unwrap_or("no answer")));
                    tuples.push(None);
                }
                None => {
                    failed.push(format!("{}: did not speak", o.vm));
                    tuples.push(None);
                }
            }
        }
        let evidence = json!({ "peer": ss.peer, "opened": ss.opened, "open_error": ss.open_error, "guests": ss.guests, "peer_saw": ss.peer_saw, "wire": ss.wire });
        let values: Vec<Value> = tuples.iter().map(|t| t.as_ref().map(|(t, _)| json!(t)).unwrap_or(Value::Null)).collect();
        if failed.len() == obs.len() {
            let why = ss.open_error.as_deref().map(|e| format!(" (and the source held none: {e})")).unwrap_or_default();
            let mut r = skipped(id, values, format!("no VM could speak on a TCP session to the peer: {}{why}", failed[0]));
            r.evidence = Some(evidence);
            return r;
        }
        if !failed.is_empty() {
            let mut r = error(id, obs, format!("not every VM spoke on its session: {}", failed.join("; ")));
            r.evidence = Some(evidence);
            return r;
        }
        // Who wrote without an error, per 4-tuple.
        let mut wrote: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for (o, t) in obs.iter().zip(&tuples) {
            if let Some((tuple, sp)) = t {
                if sp.write_error.is_none() {
                    wrote.entry(tuple.as_str()).or_default().push(o.vm.as_str());
                }
            }
        }
        let on_wire: Vec<&crate::network::session::WireSession> = ss.wire.iter().filter(|w| w.data_from.len() >= 2).collect();
        let in_guests: Vec<(&&str, &Vec<&str>)> = wrote.iter().filter(|(_, vms)| vms.len() >= 2).collect();
        let resets: usize = ss.wire.iter().map(|w| w.reset_to.len()).sum();
        let peer_read = |tuple: &str| {
            let guest_end = tuple.split(" -> ").next().unwrap_or("");
            ss.peer_saw.iter().find(|c| c.remote == guest_end).map(|c| c.lines.iter().map(|(_, l)| l.as_str()).filter(|l| *l != clonesafe_protocol::SESSION_HELLO).collect::<Vec<_>>().join(", "))
        };
        let (verdict, detail) = if let Some(w) = on_wire.first() {
            let who: Vec<String> = w.data_from.iter().map(|(vm, no, ms)| format!("{vm} (frame {no}, {ms:.0} ms after resume)")).collect();
            let read = peer_read(&w.tuple).unwrap_or_default();
            (
                Verdict::Duplicate,
                format!(
                    "{} VMs sent data on one connection, {}: {}; the peer read \"{}\" on it{}",
                    w.data_from.len(),
                    w.tuple,
                    who.join(", "),
                    read,
                    if resets > 0 { format!("; {resets} reset(s) from the peer reached a VM") } else { String::new() }
                ),
            )
        } else if let Some((tuple, vms)) = in_guests.first() {
            (Verdict::Duplicate, format!("{} VMs wrote on one connection, {tuple}, without an error: {} (the capture shows no second sender)", vms.len(), vms.join(", ")))
        } else {
            let inherited: Vec<&str> = obs.iter().zip(&tuples).filter(|(_, t)| t.as_ref().is_some_and(|(_, sp)| sp.inherited && sp.write_error.is_some())).map(|(o, _)| o.vm.as_str()).collect();
            let detail = if inherited.len() == obs.len() {
                let e = tuples.iter().flatten().find_map(|(_, sp)| sp.write_error.clone()).unwrap_or_default();
                format!("no VM could speak on the connection it inherited (the first write failed: {e}), so no two VMs spoke on one")
            } else {
                format!("every VM that spoke had a connection of its own ({} connections)", wrote.len())
            };
            (Verdict::Unique, detail)
        };
        CheckResult { id: id.into(), declared: false, stated: None, verdict, values, detail, evidence: Some(evidence) }
    }
}
