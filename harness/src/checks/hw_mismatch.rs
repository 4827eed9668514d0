//! `hw_mismatch_ms`: does each clone run on hardware that matches what its memory believes? The
//! guest's NIC MAC is compared with the one the host gave it; values are the ms from resume
//! until they matched (0 when the clone saw its own hardware at once), null when they never did.
//! `duplicate`: some clone still runs with the source's hardware identity.

use super::common::{error, skipped, Check, Evidence};
use clonesafe_metadata::{CheckId, CheckResult, FixupId, MeasurementId, Verdict};
use serde_json::{json, Value};

pub struct HwMismatch;

impl Check for HwMismatch {
    fn id(&self) -> CheckId {
        CheckId::HwMismatchMs
    }

    fn run(&self, ev: &Evidence) -> CheckResult {
        let obs = ev.observations.as_slice();
        let cx = ev;
        let id = CheckId::HwMismatchMs;
        if !cx.restored() {
            let values = obs.iter().map(|_| json!(0)).collect();
            return skipped(id, values, "VMs were booted, not restored: hardware and memory agree from the first instruction");
        }
        let mut values = Vec::new();
        let mut unresolved = Vec::new();
        for o in obs {
            let Some(ident) = &o.identity else { return error(id, obs, format!("{}: no identity report", o.vm)) };
            let host = o.host_mac.clone().unwrap_or_default();
            if ident.nics.iter().any(|n| n.mac.eq_ignore_ascii_case(&host)) {
                values.push(json!(o.measurements.get(&MeasurementId::NicWindowMs).copied().flatten().unwrap_or(0.0)));
            } else {
                values.push(Value::Null);
                let seen: Vec<&str> = ident.nics.iter().map(|n| n.mac.as_str()).collect();
                unresolved.push(format!("{} sees {} but was given {host}", o.vm, if seen.is_empty() { "no NIC".into() } else { seen.join(",") }));
            }
        }
        if unresolved.is_empty() {
            let max = values.iter().filter_map(Value::as_f64).fold(0.0, f64::max);
            let detail = if cx.recipe.has(FixupId::NicReplug) {
                format!("every clone saw its new NIC; the longest window from resume was {max:.1} ms")
            } else {
                "every clone sees the hardware it was given".into()
            };
            CheckResult { id: id.into(), declared: false, stated: None, verdict: Verdict::Unique, values, detail, evidence: None }
        } else {
            let detail = format!("mismatch never resolved: {} (the MAC is migrated device state)", unresolved.join("; "));
            CheckResult { id: id.into(), declared: false, stated: None, verdict: Verdict::Duplicate, values, detail, evidence: None }
        }
    }
}
