//! The verdict on each identity the scenario file declared, by the rules of the built-in checks:
//! every VM's value compared (`unique`/`duplicate`); absent in every VM → `skipped`; absent in
//! some only, or unreadable (a command past its timeout) → `error`; an agent that cannot read
//! it → `skipped` with its reason. The evidence is each VM's value and what was read (bounded).

use super::common::{error, from_values, result, skipped, Evidence};
use crate::probes::declared::{Outcome, Reading};
use crate::scenario::declared::Declared;
use clonesafe_metadata::{CheckResult, Verdict};
use serde_json::{json, Value};

/// One result per declared identity, in the order they were declared.
pub fn run(ev: &Evidence) -> Vec<CheckResult> {
    ev.declared.iter().map(|d| judge(d, ev)).collect()
}

fn judge(d: &Declared, ev: &Evidence) -> CheckResult {
    let obs = ev.observations.as_slice();
    let stated = (d.severity.is_some() || d.consequence.is_some()).then(|| clonesafe_metadata::Stated { severity: d.severity, consequence: d.consequence.clone() });
    if let Some(bad) = obs.iter().find(|o| o.error.is_some()) {
        let mut r = error(d.name(), obs, format!("{} could not be probed: {}", bad.vm, bad.error.as_deref().unwrap_or("")));
        r.stated = stated;
        return r;
    }
    let missing = Reading { outcome: Outcome::Failed("not read (the VM was not asked)".into()), raw: Value::Null, ms_after_resume: None };
    let readings: Vec<&Reading> = obs.iter().map(|o| o.declared.get(&d.id).unwrap_or(&missing)).collect();
    let evidence = json!({
        "declared_at": format!("{}:{}", d.file.display(), d.line),
        "reads": d.reads(),
        "when": d.when.as_str(),
        "vms": obs.iter().zip(&readings).map(|(o, r)| json!({ "vm": o.vm, "reading": r })).collect::<Vec<_>>(),
    });
    let with = |mut r: CheckResult| {
        r.evidence = Some(evidence.clone());
        r.stated = stated.clone();
        r
    };
    let value_of = |r: &Reading| match &r.outcome {
        Outcome::Value(v) => json!(v),
        _ => Value::Null,
    };
    if let Some((o, why)) = obs.iter().zip(&readings).find_map(|(o, r)| match &r.outcome {
        Outcome::Unsupported(w) => Some((o, w)),
        _ => None,
    }) {
        return with(skipped(d.name(), readings.iter().map(|r| value_of(r)).collect(), format!("{}: {why}", o.vm)));
    }
    if let Some((o, why)) = obs.iter().zip(&readings).find_map(|(o, r)| match &r.outcome {
        Outcome::Failed(w) => Some((o, w)),
        _ => None,
    }) {
        return with(result(d.name(), Verdict::Error, readings.iter().map(|r| value_of(r)).collect(), format!("{}: {why}", o.vm)));
    }
    let absent: Vec<(&str, &str)> = obs.iter().zip(&readings).filter_map(|(o, r)| match &r.outcome {
        Outcome::Absent(w) => Some((o.vm.as_str(), w.as_str())),
        _ => None,
    }).collect();
    if absent.len() == obs.len() {
        return with(skipped(d.name(), vec![Value::Null; obs.len()], format!("absent in every VM ({})", absent[0].1)));
    }
    if !absent.is_empty() {
        let list: Vec<String> = absent.iter().map(|(vm, why)| format!("{vm}: {why}")).collect();
        return with(result(d.name(), Verdict::Error, readings.iter().map(|r| value_of(r)).collect(), format!("absent in {} of {} VMs ({})", absent.len(), obs.len(), list.join("; "))));
    }
    let values: Vec<String> = readings.iter().map(|r| match &r.outcome {
        Outcome::Value(v) => v.clone(),
        _ => unreachable!("every other outcome returned above"),
    }).collect();
    let mut r = with(from_values(d.name(), obs, values));
    // How long it stayed shared: the reads right after resume carry their time.
    let ms: Vec<u64> = readings.iter().filter_map(|r| r.ms_after_resume).collect();
    if r.verdict == Verdict::Duplicate && !ms.is_empty() {
        r.detail = format!("{}, read {}..{} ms after resume", r.detail, ms.iter().min().unwrap_or(&0), ms.iter().max().unwrap_or(&0));
    }
    r
}
