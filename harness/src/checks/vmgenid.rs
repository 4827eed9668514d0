//! `vmgenid`: did each clone learn that it is a new generation? Read from the kernel log line
//! the vmgenid driver's notification produces (drivers/char/random.c, `add_vmfork_randomness`).

use super::common::{error, skipped, Check, Evidence};
use clonesafe_metadata::{CheckId, CheckResult, Verdict};
use serde_json::json;

pub struct Vmgenid;

impl Check for Vmgenid {
    fn id(&self) -> CheckId {
        CheckId::Vmgenid
    }

    fn run(&self, ev: &Evidence) -> CheckResult {
        let obs = ev.observations.as_slice();
        let cx = ev;
        let id = CheckId::Vmgenid;
        let mut counts = Vec::new();
        for o in obs {
            match &o.identity {
                Some(i) => match i.errors.iter().find(|(f, _)| f == "vmgenid") {
                    None => counts.push(i.vmfork_reseeds),
                    Some((_, e)) => return error(id, obs, format!("{}: {e}", o.vm)),
                },
                None => return error(id, obs, format!("{}: no identity report", o.vm)),
            }
        }
        let values = counts.iter().map(|c| json!(c)).collect();
        if !cx.restored() {
            return skipped(id, values, "VMs were booted, not restored from a snapshot: there is no fork to signal");
        }
        let logged = counts.iter().filter(|&&c| c > 0).count();
        let msg = clonesafe_protocol::VMFORK_RESEED_MSG;
        let (verdict, detail) = if logged == obs.len() {
            (Verdict::Unique, format!("every clone ({logged} of {}) logged \"{msg}\": each knows it is a new generation", obs.len()))
        } else {
            (Verdict::Duplicate, format!("{} of {} clones never logged \"{msg}\": they cannot tell they are copies", obs.len() - logged, obs.len()))
        };
        CheckResult { id: id.into(), declared: false, stated: None, verdict, values, detail, evidence: None }
    }
}

/// `vmgenid_uevent`: did each clone's user space get told? Linux 6.8 added a `NEW_VMGENID=1`
/// uevent on the vmgenid device right after feeding the new id to the RNG (drivers/virt/vmgenid.c,
/// vmgenid_notify(), commit ad6bcdad2b67); a revert was posted in April 2024. The probe listens
/// from `hold` on, before the snapshot, and times each arrival on the clock of the RNG samples;
/// the values are ms after the VM's first post-resume sample (negative: it came before the probe
/// was asked for it). Where the kernel logs the reseed and sends nothing, a synthetic uevent of
/// the device tells a deaf listener (error) from a kernel that does not send it (skipped).
pub struct VmgenidUevent;

impl Check for VmgenidUevent {
    fn id(&self) -> CheckId {
        CheckId::VmgenidUevent
    }

    fn run(&self, ev: &Evidence) -> CheckResult {
        let obs = ev.observations.as_slice();
        let id = CheckId::VmgenidUevent;
        if obs.iter().all(|o| o.uevents.is_none()) {
            return skipped(id, vec![serde_json::Value::Null; obs.len()], "no VM's probe listened for uevents (a probe older than the check)");
        }
        let mut watches = Vec::new();
        for o in obs {
            match &o.uevents {
                Some(w) => watches.push(w),
                None => return error(id, obs, format!("{}: its probe reported no uevent listener", o.vm)),
            }
        }
        if !ev.restored() {
            return skipped(id, vec![serde_json::Value::Null; obs.len()], "VMs were booted, not restored from a snapshot: there is no fork to signal");
        }
        let first_ns = |o: &crate::probes::Observation| o.kernel_rng.first().map(|s| s.t_ns);
        let ms: Vec<Option<f64>> = obs.iter().zip(&watches).map(|(o, w)| Some((*w.new_vmgenid_ns.first()? as f64 - first_ns(o)? as f64) / 1e6)).collect();
        let values: Vec<serde_json::Value> = ms.iter().map(|m| json!(m)).collect();
        let got: Vec<f64> = ms.iter().flatten().copied().collect();
        let evidence = json!({
            "unit": "ms after the VM's first post-resume sample",
            "vms": obs.iter().zip(&watches).map(|(o, w)| json!({
                "vm": o.vm,
                "kernel": w.kernel,
                "vmgenid_device": w.vmgenid_device,
                "uevents_heard": w.seen,
                "first_lines": w.heads,
                "positive_control_heard": w.control_heard,
                "new_vmgenid_ms": w.new_vmgenid_ns.iter().filter_map(|t| Some((*t as f64 - first_ns(o)? as f64) / 1e6)).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        });
        // The evidence names each VM's kernel even where the check is skipped for it.
        if let Some((o, w)) = obs.iter().zip(&watches).find(|(_, w)| !clonesafe_protocol::kernel_may_send_new_vmgenid(&w.kernel)) {
            let mut r = skipped(id, vec![serde_json::Value::Null; obs.len()], format!("{}: kernel {} does not send NEW_VMGENID (Linux 6.8+)", o.vm, w.kernel));
            r.evidence = Some(evidence);
            return r;
        }
        if let Some((o, e)) = obs.iter().zip(&watches).find_map(|(o, w)| w.error.as_ref().map(|e| (o, e))) {
            return error(id, obs, format!("{}: the uevent listener failed: {e}", o.vm));
        }
        // A clone whose kernel logged the vmgenid reseed and sent no NEW_VMGENID: either the
        // listener is deaf (its positive control, a synthetic uevent of the same device, went
        // unheard: error) or the kernel does not send it (control heard: skipped, as measured;
        // the uevent was added in 6.8 and a revert posted in 2024, see the protocol's UeventWatch).
        let silent: Vec<(&crate::probes::Observation, &&clonesafe_protocol::UeventWatch)> =
            obs.iter().zip(&watches).filter(|(o, w)| w.new_vmgenid_ns.is_empty() && o.identity.as_ref().is_some_and(|i| i.vmfork_reseeds > 0)).collect();
        if let Some((o, _)) = silent.iter().find(|(_, w)| w.control_heard != Some(true)) {
            let mut r = error(id, obs, format!("{}: the kernel logged the vmgenid reseed, no NEW_VMGENID uevent was heard, and the listener's positive control (a synthetic uevent of the vmgenid device) was not heard either: the listener cannot be trusted", o.vm));
            r.evidence = Some(evidence);
            return r;
        }
        if let Some((o, w)) = silent.first() {
            let mut r = skipped(
                id,
                values,
                format!("{}: kernel {} logged the vmgenid reseed but sent no NEW_VMGENID uevent, while the listener heard a synthetic uevent of the same device: this kernel does not send it (Linux 6.8 added it; a revert followed in 2024)", o.vm, w.kernel),
            );
            r.evidence = Some(evidence);
            return r;
        }
        let (verdict, detail) = if got.len() == obs.len() {
            let (lo, hi) = got.iter().fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(*x), b.max(*x)));
            (Verdict::Unique, format!("every clone ({} of {}) received NEW_VMGENID, {lo:.1} to {hi:.1} ms after its first sample", got.len(), obs.len()))
        } else {
            let without: Vec<&str> = obs.iter().zip(&watches).filter(|(_, w)| !w.vmgenid_device).map(|(o, _)| o.vm.as_str()).collect();
            let why = if without.is_empty() { String::new() } else { format!(" (no vmgenid device: {})", without.join(", ")) };
            (Verdict::Duplicate, format!("{} of {} clones never received NEW_VMGENID{why}: their user space cannot learn of the fork", obs.len() - got.len(), obs.len()))
        };
        CheckResult { id: id.into(), declared: false, stated: None, verdict, values, detail, evidence: Some(evidence) }
    }
}
