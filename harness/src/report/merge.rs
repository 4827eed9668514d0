//! `clonesafe report merge`: shard reports (`run --shard I/N`) back into the report one run of
//! the whole plan would have written. Shards must come from one plan (same `plan_id` and
//! count), may not overlap, and must all be there, unless a partial merge is asked for, in which
//! case the merged report says what it lacks.

use clonesafe_metadata::{Report, ScenarioReport, Shard};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("no shard reports to merge")]
    Empty,
    #[error("{0}: not a shard's report (it has no \"shard\"; was it made with run --shard I/N?)")]
    NotAShard(PathBuf),
    #[error("{a} and {b} are shards of different plans (plan_id {pa} vs {pb}, {ca} vs {cb} shards): the scenario files or options differ")]
    DifferentPlans { a: PathBuf, b: PathBuf, pa: String, pb: String, ca: u32, cb: u32 },
    #[error("{a} and {b} are both shard {index}/{count}")]
    Overlap { a: PathBuf, b: PathBuf, index: u32, count: u32 },
    #[error("shard(s) {} of {count} missing (scenarios: {}); give every shard, or --allow-partial", join(.shards), .scenarios.join(", "))]
    Missing { shards: Vec<u32>, count: u32, scenarios: Vec<String> },
    #[error("{path}: scenario {name:?} is not in shard {index} of the plan")]
    Foreign { path: PathBuf, name: String, index: u32 },
    #[error("{path}: shard {index}/{count} is not a shard: a report gives 1 <= index <= count <= {max}, as run --shard does")]
    BadShard { path: PathBuf, index: u32, count: u32, max: u32 },
    #[error("{path}: scenario {name:?} appears more than once (in the shard's scenarios or in its plan)")]
    Duplicate { path: PathBuf, name: String },
}

fn join(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

/// Merge shard reports (path, report). The host, version and schema are the first shard's.
pub fn merge(shards: Vec<(PathBuf, Report)>, allow_partial: bool) -> Result<Report, MergeError> {
    let mut infos: Vec<(PathBuf, Shard)> = Vec::new();
    for (p, r) in &shards {
        let s = r.shard.clone().filter(|s| s.index >= 1).ok_or_else(|| MergeError::NotAShard(p.clone()))?;
        // The shard count comes from a file: bounded as `run --shard` bounds it (issue 19: a
        // count of 0 divided by zero, 4294967295 allocated until the process was killed).
        let max = crate::scenario::shard::MAX_SHARDS;
        if s.count == 0 || s.count > max || s.index > s.count {
            return Err(MergeError::BadShard { path: p.clone(), index: s.index, count: s.count, max });
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(n) = s.plan.iter().find(|n| !seen.insert(n.as_str())) {
            return Err(MergeError::Duplicate { path: p.clone(), name: n.clone() });
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(sc) = r.scenarios.iter().find(|sc| !seen.insert(sc.name.as_str())) {
            return Err(MergeError::Duplicate { path: p.clone(), name: sc.name.clone() });
        }
        if let Some((q, first)) = infos.first() {
            if first.plan_id != s.plan_id || first.count != s.count {
                return Err(MergeError::DifferentPlans { a: q.clone(), b: p.clone(), pa: first.plan_id.clone(), pb: s.plan_id.clone(), ca: first.count, cb: s.count });
            }
        }
        if let Some((q, _)) = infos.iter().find(|(_, o)| o.index == s.index) {
            return Err(MergeError::Overlap { a: q.clone(), b: p.clone(), index: s.index, count: s.count });
        }
        for sc in &r.scenarios {
            if crate::scenario::shard::shard_of(&sc.name, s.count) != s.index || !s.plan.contains(&sc.name) {
                return Err(MergeError::Foreign { path: p.clone(), name: sc.name.clone(), index: s.index });
            }
        }
        infos.push((p.clone(), s));
    }
    let (_, first) = infos.first().cloned().ok_or(MergeError::Empty)?;
    let missing_shards: Vec<u32> = (1..=first.count).filter(|i| !infos.iter().any(|(_, s)| s.index == *i)).collect();
    let missing_scenarios: Vec<String> =
        first.plan.iter().filter(|n| missing_shards.contains(&crate::scenario::shard::shard_of(n, first.count))).cloned().collect();
    if !missing_shards.is_empty() && !allow_partial {
        return Err(MergeError::Missing { shards: missing_shards, count: first.count, scenarios: missing_scenarios });
    }
    let mut all: Vec<ScenarioReport> = shards.iter().flat_map(|(_, r)| r.scenarios.iter().cloned()).collect();
    // The whole plan's order, as one run reports them.
    all.sort_by_key(|s| first.plan.iter().position(|n| *n == s.name).unwrap_or(usize::MAX));
    let base = &shards[0].1;
    Ok(Report {
        schema_version: base.schema_version,
        clonesafe_version: base.clonesafe_version.clone(),
        host: base.host.clone(),
        scenarios: all,
        shard: (!missing_shards.is_empty()).then(|| Shard { index: 0, missing_shards, missing_scenarios, ..first }),
        assessment: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::shard::shard_of;
    use clonesafe_metadata::{Accel, BackendKind, Host, Strategy, Timing};

    fn scenario(name: &str) -> ScenarioReport {
        ScenarioReport {
            name: name.into(),
            description: None,
            backend: BackendKind::Qemu,
            strategy: Strategy::Naive,
            recipe: Strategy::Naive.recipe().unwrap(),
            guest: "tiny".into(),
            clones: 2,
            memory_mib: 256,
            timing: Timing::default(),
            checks: vec![],
            expectations_met: true,
            error: None,
            vms: vec![],
            notes: vec![],
            duration_ms: 1,
            source: None,
        }
    }

    const PLAN: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];

    fn shard(index: u32, plan_id: &str) -> (PathBuf, Report) {
        let plan: Vec<String> = PLAN.iter().map(|s| s.to_string()).collect();
        let scenarios = plan.iter().filter(|n| shard_of(n, 3) == index).map(|n| scenario(n)).collect();
        let host = Host { accel: Accel::Tcg, accel_reason: "r".into(), qemu: "q".into(), kernel: "k".into(), guest_kernel: None, cpus: 2, cpu_model: "m".into(), vmms: vec![] };
        let shard = Some(Shard { index, count: 3, plan_id: plan_id.into(), plan, missing_shards: vec![], missing_scenarios: vec![] });
        (PathBuf::from(format!("s{index}/report.json")), Report { schema_version: 1, clonesafe_version: "0".into(), host, scenarios, assessment: None, shard })
    }

    #[test]
    fn every_shard_merges_into_the_plan_in_plan_order_without_a_shard_field() {
        let m = merge(vec![shard(3, "p"), shard(1, "p"), shard(2, "p")], false).unwrap();
        let names: Vec<&str> = m.scenarios.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, PLAN.to_vec());
        assert!(m.shard.is_none(), "a whole merge is what one run writes");
    }

    #[test]
    fn different_plans_overlaps_missing_and_foreign_shards_are_refused() {
        assert!(matches!(merge(vec![shard(1, "p"), shard(2, "q")], false), Err(MergeError::DifferentPlans { .. })));
        assert!(matches!(merge(vec![shard(1, "p"), shard(1, "p")], false), Err(MergeError::Overlap { index: 1, .. })));
        let e = merge(vec![shard(1, "p"), shard(3, "p")], false).unwrap_err();
        let want: Vec<String> = PLAN.iter().filter(|n| shard_of(n, 3) == 2).map(|s| s.to_string()).collect();
        assert!(matches!(&e, MergeError::Missing { shards, scenarios, .. } if shards == &vec![2] && scenarios == &want), "{e}");
        assert!(e.to_string().contains("shard(s) 2 of 3 missing"), "{e}");
        let mut odd = shard(1, "p");
        odd.1.scenarios.push(scenario(PLAN.iter().find(|n| shard_of(n, 3) == 2).unwrap()));
        assert!(matches!(merge(vec![odd], true), Err(MergeError::Foreign { .. })));
        let mut whole = shard(1, "p");
        whole.1.shard = None;
        assert!(matches!(merge(vec![whole], false), Err(MergeError::NotAShard(_))));
    }

    /// Issue 19, item 7 and 13: counts from a file are bounded; a scenario twice is refused.
    #[test]
    fn shard_counts_out_of_bounds_and_repeated_scenarios_are_refused() {
        for (index, count) in [(1, 0), (1, u32::MAX), (1, crate::scenario::shard::MAX_SHARDS + 1), (4, 3)] {
            let mut s = shard(1, "p");
            let sh = s.1.shard.as_mut().unwrap();
            (sh.index, sh.count) = (index, count);
            let e = merge(vec![s], true).unwrap_err();
            assert!(matches!(e, MergeError::BadShard { .. }), "{index}/{count}: {e}");
        }
        let mut twice = shard(1, "p");
        let again = twice.1.scenarios[0].clone();
        twice.1.scenarios.push(again);
        assert!(matches!(merge(vec![twice], true), Err(MergeError::Duplicate { .. })));
        let mut plan_twice = shard(1, "p");
        plan_twice.1.shard.as_mut().unwrap().plan.push("a".into());
        assert!(matches!(merge(vec![plan_twice], true), Err(MergeError::Duplicate { .. })));
    }

    #[test]
    fn a_partial_merge_says_what_it_lacks() {
        let m = merge(vec![shard(1, "p"), shard(3, "p")], true).unwrap();
        let s = m.shard.expect("a partial merge says so");
        assert_eq!((s.index, s.missing_shards.clone()), (0, vec![2]));
        assert!(!s.missing_scenarios.is_empty());
        assert!(m.scenarios.iter().all(|x| !s.missing_scenarios.contains(&x.name)));
    }
}
