//! `vmclock`: did each clone learn from its VMClock page that it was restored (the `vmclock`
//! fix-up adds the device; Linux include/uapi/linux/vmclock-abi.h gives the page's layout).

use super::common::{error, skipped, Check, Evidence};
use clonesafe_metadata::{CheckId, CheckResult, Verdict};
use serde_json::json;

/// `vmclock`: did each clone see, through /dev/vmclock0, that it was restored? The probe read the
/// page at `hold` (what the snapshot carries), right after resume, and
/// [`clonesafe_protocol::VMCLOCK_AFTER_MS`] later; a clone saw it when the disruption marker or
/// the generation counter differs from the value at `hold`. What QEMU does to those fields on a
/// load is measured here, not assumed (QEMU 10.0.2: the marker goes from 1 to 2 in every clone,
/// no generation counter). The second read is at `samples`, at least 1 s after the first sample.
pub struct Vmclock;

impl Check for Vmclock {
    fn id(&self) -> CheckId {
        CheckId::Vmclock
    }

    fn run(&self, ev: &Evidence) -> CheckResult {
        let obs = ev.observations.as_slice();
        let id = CheckId::Vmclock;
        let null = || vec![serde_json::Value::Null; obs.len()];
        if obs.iter().all(|o| !o.vmclock.as_ref().is_some_and(|w| w.device)) {
            return skipped(id, null(), "no VM has /dev/vmclock0 (QEMU's vmclock device, the vmclock fix-up, and Linux 6.13+ with ptp_vmclock)");
        }
        if !ev.restored() {
            return skipped(id, null(), "VMs were booted, not restored from a snapshot: there is no restore to signal");
        }
        let mut per = Vec::new();
        for o in obs {
            let Some(w) = o.vmclock.as_ref().filter(|w| w.device) else {
                return error(id, obs, format!("{}: no /dev/vmclock0 where the other VMs have one", o.vm));
            };
            if let Some(e) = &w.error {
                return error(id, obs, format!("{}: reading /dev/vmclock0: {e}", o.vm));
            }
            let (Some(h), Some(r), Some(a)) = (&w.at_hold, &w.at_resume, &w.after) else {
                return error(id, obs, format!("{}: the VMClock page was not read at hold, at resume and after", o.vm));
            };
            let changed = |p: &clonesafe_protocol::VmclockPage| p.disruption_marker != h.disruption_marker || p.vm_generation_counter != h.vm_generation_counter;
            let seen = if changed(r) {
                "at resume"
            } else if changed(a) {
                "after 1 s"
            } else {
                "never"
            };
            per.push((o, h, r, a, seen));
        }
        let values: Vec<serde_json::Value> = per.iter().map(|(_, _, _, _, seen)| json!(seen)).collect();
        let evidence = json!({
            "vms": per.iter().map(|(o, h, r, a, seen)| json!({
                "vm": o.vm, "seen": seen,
                "at_hold": h, "at_resume": r, "after": a,
            })).collect::<Vec<_>>(),
        });
        let told = per.iter().filter(|p| p.4 != "never").count();
        // A changed marker tells a clone it was restored; it is no identity of its own when every
        // clone got the same new value (QEMU 10.0 was measured to do that).
        let markers: std::collections::BTreeSet<u64> = per.iter().map(|p| p.2.disruption_marker).collect();
        let same = if per.len() > 1 && markers.len() == 1 { format!("; the new disruption marker is the same in every clone ({:#x}), so it tells a clone it was restored, not which clone it is", per[0].2.disruption_marker) } else { String::new() };
        let (verdict, detail) = if told == per.len() {
            (Verdict::Unique, format!("every clone ({told} of {}) saw its VMClock disruption marker or generation counter change ({}){same}", per.len(), per.iter().map(|p| p.4).collect::<Vec<_>>().join(", ")))
        } else {
            let marker = per.first().map(|p| p.2.disruption_marker).unwrap_or(0);
            (Verdict::Duplicate, format!("{} of {} clones read the same VMClock page as before the snapshot (disruption marker {marker:#x}, generation counter {}): the page does not tell them they were restored", per.len() - told, per.len(), per.first().and_then(|p| p.2.vm_generation_counter).map(|g| g.to_string()).unwrap_or_else(|| "absent".into())))
        };
        CheckResult { id: id.into(), declared: false, stated: None, verdict, values, detail, evidence: Some(evidence) }
    }
}
