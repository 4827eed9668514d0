//! Checks from the host, black-box, through each VM's forwarded ports: what a client sees.
//!
//! * `ssh_keyscan`: the host keys `ssh-keyscan` gets from each VM.
//! * `tls_ticket_key`: a TLS session ticket from VM A offered to VM B; accepted resumption
//!   means the VMs share a ticket key. A VM resuming its own session is the positive control.
//! * `openssl_rng`: the ServerHello randoms each VM's TLS server sends right after resume,
//!   compared per handshake like `kernel_rng`'s samples.
//! * `wall_clock_skew_ms`: guest wall clock minus host wall clock, after the fix-ups (and, in
//!   the evidence, right after resume).

use super::common::{error, from_sets, from_values, skipped, Check, Evidence};
use super::compare::compare;
use clonesafe_metadata::{CheckId, CheckResult, Verdict};
use serde_json::{json, Value};

pub struct SshKeyscan;

impl Check for SshKeyscan {
    fn id(&self) -> CheckId {
        CheckId::SshKeyscan
    }
    fn run(&self, ev: &Evidence) -> CheckResult {
        let obs = ev.observations.as_slice();
        let id = CheckId::SshKeyscan;
        let mut sets = Vec::new();
        for o in obs {
            match &o.ssh_keyscan {
                None => return skipped(id, vec![Value::Null; obs.len()], format!("{}: the guest offers no ssh service to scan", o.vm)),
                Some(Err(e)) => return error(id, obs, format!("{}: {e} (a clone that cannot be reached over SSH is a finding)", o.vm)),
                Some(Ok(fps)) => sets.push(fps.clone()),
            }
        }
        // Sets, not strings: a scan that missed a slow key type must not make a shared key look
        // unique.
        from_sets(id, obs, sets)
    }
}

pub struct TlsTicketKey;

impl Check for TlsTicketKey {
    fn id(&self) -> CheckId {
        CheckId::TlsTicketKey
    }
    fn run(&self, ev: &Evidence) -> CheckResult {
        let obs = ev.observations.as_slice();
        let cx = ev;
        let id = CheckId::TlsTicketKey;
        let Some(t) = cx.tickets.as_ref() else { return skipped(id, vec![Value::Null; obs.len()], "no TLS ticket test was run") };
        if let Some(why) = &t.skipped {
            return skipped(id, vec![Value::Null; obs.len()], why.clone());
        }
        let evidence = serde_json::to_value(t).ok();
        if let Some(bad) = t.tries.iter().find(|x| x.resumed.is_err()) {
            let mut r = error(id, obs, format!("ticket from {} offered to {}: {}", bad.from, bad.to, bad.resumed.as_ref().err().map(String::as_str).unwrap_or("")));
            r.evidence = evidence;
            return r;
        }
        let own_ok = t.tries.iter().filter(|x| x.from == x.to).all(|x| x.resumed == Ok(true));
        if !own_ok {
            let mut r = error(id, obs, "a VM did not resume its own session: the test cannot tell a shared ticket key from none (the positive control failed)".into());
            r.evidence = evidence;
            return r;
        }
        // One value per VM: the other VMs that accepted its ticket.
        let values: Vec<Value> = obs
            .iter()
            .map(|o| json!(t.tries.iter().filter(|x| x.from == o.vm && x.to != o.vm && x.resumed == Ok(true)).map(|x| x.to.clone()).collect::<Vec<_>>()))
            .collect();
        let crossed: Vec<String> = t.tries.iter().filter(|x| x.from != x.to && x.resumed == Ok(true)).map(|x| format!("{} -> {}", x.from, x.to)).collect();
        let (verdict, detail) = if crossed.is_empty() {
            (Verdict::Unique, format!("no VM accepted another's session ticket ({} tries); each resumed its own", t.tries.len()))
        } else {
            (Verdict::Duplicate, format!("session tickets accepted across VMs: {} (they share the ticket key)", crossed.join(", ")))
        };
        CheckResult { id: id.into(), declared: false, stated: None, verdict, values, detail, evidence }
    }
}

pub struct OpensslRng;

impl Check for OpensslRng {
    fn id(&self) -> CheckId {
        CheckId::OpensslRng
    }
    fn run(&self, ev: &Evidence) -> CheckResult {
        let obs = ev.observations.as_slice();
        let id = CheckId::OpensslRng;
        let mut samples = Vec::new();
        for o in obs {
            match &o.tls_random {
                None => return skipped(id, vec![Value::Null; obs.len()], format!("{}: the guest offers no TLS service", o.vm)),
                Some(Err(e)) => return error(id, obs, format!("{}: {e}", o.vm)),
                Some(Ok(s)) if s.is_empty() => return error(id, obs, format!("{}: no ServerHello", o.vm)),
                Some(Ok(s)) => samples.push(s.clone()),
            }
        }
        let n = samples.iter().map(Vec::len).min().unwrap_or(0);
        let mut per = Vec::new();
        let mut last_dup = None;
        for i in 0..n {
            let c = compare(&samples.iter().map(|s| Some(s[i].hex.clone())).collect::<Vec<_>>());
            if c.verdict == Verdict::Duplicate {
                last_dup = Some(i);
            }
            let off = samples.iter().map(|s| s[i].t_ns as f64 / 1e6).fold(0.0, f64::max);
            per.push(json!({ "index": i, "offset_ms": off, "distinct": c.distinct, "of": obs.len() }));
        }
        let mut r = from_values(id, obs, samples.iter().map(|s| s[0].hex.clone()).collect());
        if r.verdict == Verdict::Skipped {
            return r;
        }
        if last_dup.is_some() {
            r.verdict = Verdict::Duplicate;
        }
        r.detail = match last_dup {
            None => format!("first ServerHello randoms after resume: {}; no handshake repeated across VMs", r.detail),
            Some(i) => format!("first ServerHello randoms after resume: {}; VMs still sent the same random at handshake {} of {} (+{:.0} ms after resume)", r.detail, i + 1, n, per[i]["offset_ms"].as_f64().unwrap_or(0.0)),
        };
        let vms: Vec<Value> = obs.iter().zip(&samples).map(|(o, s)| json!({ "vm": o.vm, "samples": s.iter().map(|x| json!({ "offset_ms": x.t_ns as f64 / 1e6, "hex": x.hex })).collect::<Vec<_>>() })).collect();
        r.evidence = Some(json!({ "per_handshake": per, "vms": vms }));
        r
    }
}

/// A clone's clock is right when it is within this of the host's.
pub const SKEW_TOLERANCE_MS: f64 = 2000.0;

pub struct WallClockSkew;

impl Check for WallClockSkew {
    fn id(&self) -> CheckId {
        CheckId::WallClockSkewMs
    }
    fn run(&self, ev: &Evidence) -> CheckResult {
        let obs = ev.observations.as_slice();
        let id = CheckId::WallClockSkewMs;
        let mut values = Vec::new();
        let mut off = Vec::new();
        for o in obs {
            let Some(ms) = o.clock_skew_ms else { return skipped(id, vec![Value::Null; obs.len()], format!("{}: the agent cannot read the guest's clock", o.vm)) };
            values.push(json!(ms.round()));
            if ms.abs() > SKEW_TOLERANCE_MS {
                off.push(format!("{} is {:+.1} s off", o.vm, ms / 1000.0));
            }
        }
        let at_resume: Vec<Value> = obs.iter().map(|o| json!(o.clock_skew_at_resume_ms.map(f64::round))).collect();
        let evidence = Some(json!({ "at_resume_ms": at_resume, "tolerance_ms": SKEW_TOLERANCE_MS }));
        let (verdict, detail) = if off.is_empty() {
            (Verdict::Unique, format!("every VM's wall clock is within {:.0} s of the host's", SKEW_TOLERANCE_MS / 1000.0))
        } else {
            (Verdict::Duplicate, format!("{} (the clock the snapshot froze)", off.join("; ")))
        };
        CheckResult { id: id.into(), declared: false, stated: None, verdict, values, detail, evidence }
    }
}
