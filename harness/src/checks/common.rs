//! What every check shares: the [`Check`] trait, which reads the scenario's
//! [`Evidence`](crate::evidence::Evidence), and the helpers that turn values into a verdict
//! with its evidence.

use super::compare::{compare, compare_sets, Comparison};
pub use crate::evidence::Evidence;
use crate::probes::Observation;
use clonesafe_metadata::{CheckId, CheckResult, Verdict};
use serde_json::{json, Value};

/// One identity (or risk) compared across the VMs of a scenario.
pub trait Check: Send + Sync {
    fn id(&self) -> CheckId;
    /// The verdict from the evidence. Called only when every VM was probed and no VM's agent
    /// declared this check unavailable.
    fn run(&self, ev: &Evidence) -> CheckResult;
}

pub fn error(id: CheckId, obs: &[Observation], detail: String) -> CheckResult {
    CheckResult { id, verdict: Verdict::Error, values: vec![Value::Null; obs.len()], detail, evidence: None }
}

pub fn skipped(id: CheckId, values: Vec<Value>, detail: impl Into<String>) -> CheckResult {
    CheckResult { id, verdict: Verdict::Skipped, values, detail: detail.into(), evidence: None }
}

/// Compare one string per VM: `unique`, `duplicate` (the detail names who shares), or
/// `skipped` with fewer than two VMs.
pub fn from_values(id: CheckId, obs: &[Observation], values: Vec<String>) -> CheckResult {
    let json_values = values.iter().map(|v| json!(v)).collect();
    if obs.len() < 2 {
        return skipped(id, json_values, "needs at least 2 VMs to compare");
    }
    let opt: Vec<Option<String>> = values.into_iter().map(Some).collect();
    let c = compare(&opt);
    CheckResult { id, verdict: c.verdict, values: json_values, detail: describe(&c, obs), evidence: None }
}

/// Compare one set per VM (values shown joined): `duplicate` when two VMs share any element.
pub fn from_sets(id: CheckId, obs: &[Observation], sets: Vec<Vec<String>>) -> CheckResult {
    let json_values = sets.iter().map(|v| json!(v.join(" "))).collect();
    if obs.len() < 2 {
        return skipped(id, json_values, "needs at least 2 VMs to compare");
    }
    let c = compare_sets(&sets);
    let detail = match c.verdict {
        Verdict::Unique => format!("all {} sets disjoint", obs.len()),
        _ => describe(&c, obs).replace("share one value", "share at least one element"),
    };
    CheckResult { id, verdict: c.verdict, values: json_values, detail, evidence: None }
}

fn describe(c: &Comparison, obs: &[Observation]) -> String {
    match c.verdict {
        Verdict::Unique => format!("all {} values distinct", obs.len()),
        Verdict::Duplicate => c
            .groups
            .iter()
            .map(|g| {
                let names: Vec<&str> = g.iter().map(|&i| obs[i].vm.as_str()).collect();
                format!("{} of {} VMs share one value ({})", g.len(), obs.len(), names.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => String::new(),
    }
}
