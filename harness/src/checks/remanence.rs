//! `secret_remanence`: was the deleted canary found in the artifacts clones are made from?
//! `duplicate`: the secret survived deletion into something every clone is made from. Values:
//! one per artifact. The scan's positive control must have found its string, or the check is
//! an error: a scan that cannot see a known string proves nothing by not seeing the canary.

use super::common::{skipped, Check, Evidence};
use clonesafe_metadata::{CheckId, CheckResult, Verdict};
use serde_json::json;

pub struct SecretRemanence;

impl Check for SecretRemanence {
    fn id(&self) -> CheckId {
        CheckId::SecretRemanence
    }

    fn run(&self, ev: &Evidence) -> CheckResult {
        let cx = ev;
        let id = CheckId::SecretRemanence;
        let Some(scan) = cx.remanence.as_ref() else {
            return skipped(id, vec![], "no canary planted (set canary = true in the scenario)");
        };
        if let Some(c) = scan.control.as_ref().filter(|c| !c.found) {
            return CheckResult {
                id: id.into(),
                declared: false,
                stated: None,
                verdict: Verdict::Error,
                values: vec![],
                detail: format!("the scan did not find a string known to be there ({:?} in the {}): its 'not found' cannot be trusted", c.needle, c.artifact),
                evidence: serde_json::to_value(scan).ok(),
            };
        }
        let values = scan.hits.iter().map(|h| json!({ "artifact": h.artifact, "found": h.found, "offsets": h.offsets })).collect();
        let found = scan.found_in();
        let (verdict, detail) = if found.is_empty() {
            let control = scan.control.as_ref().map(|c| format!(" (the scan did find the guest's hostname in the {}, so it reads that artifact)", c.artifact)).unwrap_or_default();
            (Verdict::Unique, format!("the deleted canary was in none of: {}{control}", scan.hits.iter().map(|h| h.artifact.as_str()).collect::<Vec<_>>().join(", ")))
        } else {
            (Verdict::Duplicate, format!("the deleted canary survived in: {}", found.join(", ")))
        };
        CheckResult { id: id.into(), declared: false, stated: None, verdict, values, detail, evidence: serde_json::to_value(scan).ok() }
    }
}
