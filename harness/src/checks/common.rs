//! What every check shares: the [`Check`] trait, what checks know of how the VMs came to be
//! ([`CheckContext`]), and the helpers that turn values into a verdict with its evidence.

use super::compare::{compare, compare_sets, Comparison};
use crate::probes::Observation;
use clonesafe_metadata::{CheckId, CheckResult, Recipe, Scan, Verdict};
use serde_json::{json, Value};

/// One identity (or risk) compared across the VMs of a scenario.
pub trait Check: Send + Sync {
    fn id(&self) -> CheckId;
    /// The verdict from what the probes read. Called only when every VM was probed and no VM's
    /// agent declared this check unavailable.
    fn run(&self, obs: &[Observation], cx: &CheckContext) -> CheckResult;
}

/// What the checks need to know about how the VMs came to be.
#[derive(Debug, Clone, Copy)]
pub struct CheckContext<'a> {
    pub recipe: &'a Recipe,
    /// The canary scan, when the scenario planted one.
    pub remanence: Option<&'a Scan>,
    /// The cross-VM TLS session-ticket test, when one was run.
    pub tickets: Option<&'a crate::probes::host::Tickets>,
    /// Every MAC the host assigned to a VM of the scenario (source and template included);
    /// empty when not known, and then no MAC claim is checked.
    pub assigned_macs: &'a [String],
    /// Whether the host gave the VMs a vmgenid device (the `vmgenid` fix-up is what adds it:
    /// clones/fixup/vmgenid.rs).
    pub vmgenid_device: bool,
    /// What the segment's capture and the guests said, when the VMs were on one.
    pub segment: Option<&'a crate::network::SegmentReport>,
}

impl CheckContext<'_> {
    /// True when the VMs were restored from one snapshot (so a VM fork happened).
    pub fn restored(&self) -> bool {
        self.recipe.method.restores()
    }
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
