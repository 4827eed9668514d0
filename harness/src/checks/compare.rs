//! The one comparison every check rests on.

use clonesafe_metadata::Verdict;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    pub verdict: Verdict,
    /// Groups (of size 2 or more) of VM indexes that share a value, in first-seen order.
    pub groups: Vec<Vec<usize>>,
    /// How many distinct values there were.
    pub distinct: usize,
}

/// Compare one value per VM. Any missing value makes the result `error`; fewer than two VMs,
/// `skipped`; otherwise `duplicate` if any two VMs share a value, else `unique`.
pub fn compare(values: &[Option<String>]) -> Comparison {
    if values.iter().any(Option::is_none) {
        return Comparison { verdict: Verdict::Error, groups: vec![], distinct: 0 };
    }
    let mut by_value: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, v) in values.iter().enumerate() {
        by_value.entry(v.as_deref().unwrap_or_default()).or_default().push(i);
    }
    let distinct = by_value.len();
    let mut groups: Vec<Vec<usize>> = by_value.into_values().filter(|g| g.len() > 1).collect();
    groups.sort_by_key(|g| g[0]);
    let verdict = if values.len() < 2 {
        Verdict::Skipped
    } else if groups.is_empty() {
        Verdict::Unique
    } else {
        Verdict::Duplicate
    };
    Comparison { verdict, groups, distinct }
}
