//! What every check shares: the [`Check`] trait, which reads the scenario's
//! [`Evidence`](crate::evidence::Evidence), and the helpers that turn values into a verdict
//! with its evidence.

use super::compare::{compare, compare_sets, Comparison};
pub use crate::evidence::Evidence;
use crate::probes::Observation;
use clonesafe_metadata::{CheckId, CheckName, CheckResult, Verdict};
use serde_json::{json, Value};

/// One identity (or risk) compared across the VMs of a scenario.
pub trait Check: Send + Sync {
    fn id(&self) -> CheckId;
    /// The verdict from the evidence. Called only when every VM was probed and no VM's agent
    /// declared this check unavailable.
    fn run(&self, ev: &Evidence) -> CheckResult;
}

/// A result with no extra evidence; `declared` follows the name.
pub fn result(id: impl Into<CheckName>, verdict: Verdict, values: Vec<Value>, detail: String) -> CheckResult {
    let id = id.into();
    CheckResult { declared: id.is_declared(), stated: None, id, verdict, values, detail, evidence: None }
}

pub fn error(id: impl Into<CheckName>, obs: &[Observation], detail: String) -> CheckResult {
    result(id, Verdict::Error, vec![Value::Null; obs.len()], detail)
}

pub fn skipped(id: impl Into<CheckName>, values: Vec<Value>, detail: impl Into<String>) -> CheckResult {
    result(id, Verdict::Skipped, values, detail.into())
}

/// Compare one string per VM: `unique`, `duplicate` (the detail names who shares), or
/// `skipped` with fewer than two VMs.
pub fn from_values(id: impl Into<CheckName>, obs: &[Observation], values: Vec<String>) -> CheckResult {
    let json_values = values.iter().map(|v| json!(v)).collect();
    if obs.len() < 2 {
        return skipped(id, json_values, "needs at least 2 VMs to compare");
    }
    let opt: Vec<Option<String>> = values.into_iter().map(Some).collect();
    let c = compare(&opt);
    result(id, c.verdict, json_values, describe(&c, obs))
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
    result(id, c.verdict, json_values, detail)
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
