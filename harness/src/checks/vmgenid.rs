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
