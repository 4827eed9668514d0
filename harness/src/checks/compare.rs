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
    Comparison { verdict: verdict_of(values.len(), &groups), groups, distinct }
}

/// `skipped` below 2 VMs, else `duplicate` when some VMs share (a group), else `unique`.
fn verdict_of(vms: usize, groups: &[Vec<usize>]) -> Verdict {
    if vms < 2 {
        Verdict::Skipped
    } else if groups.is_empty() {
        Verdict::Unique
    } else {
        Verdict::Duplicate
    }
}

/// Compare one *set* per VM (host keys): `duplicate` when any element is in two VMs' sets
/// (sharing one key is enough), `unique` when the sets are pairwise disjoint. Groups are the VMs
/// that share each shared element.
pub fn compare_sets(sets: &[Vec<String>]) -> Comparison {
    if sets.iter().any(Vec::is_empty) {
        return Comparison { verdict: Verdict::Error, groups: vec![], distinct: 0 };
    }
    let mut holders: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, s) in sets.iter().enumerate() {
        for e in s {
            let h = holders.entry(e.as_str()).or_default();
            if !h.contains(&i) {
                h.push(i);
            }
        }
    }
    let mut groups: Vec<Vec<usize>> = holders.values().filter(|g| g.len() > 1).cloned().collect();
    groups.sort();
    groups.dedup();
    let distinct = sets
        .iter()
        .map(|s| {
            let mut v = s.clone();
            v.sort();
            v
        })
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    Comparison { verdict: verdict_of(sets.len(), &groups), groups, distinct }
}

#[cfg(test)]
mod set_tests {
    use super::*;

    fn sets(v: &[&[&str]]) -> Vec<Vec<String>> {
        v.iter().map(|s| s.iter().map(|x| x.to_string()).collect()).collect()
    }

    /// A partial scan of a VM that shares one key is still a duplicate: joined strings would
    /// differ, sets do not lie.
    #[test]
    fn sharing_one_element_is_a_duplicate() {
        let c = compare_sets(&sets(&[&["a", "b"], &["b"]]));
        assert_eq!(c.verdict, Verdict::Duplicate);
        assert_eq!(c.groups, vec![vec![0, 1]]);
        assert_eq!(compare_sets(&sets(&[&["a", "b"], &["c", "d"], &["e"]])).verdict, Verdict::Unique);
        assert_eq!(compare_sets(&sets(&[&["a"], &[]])).verdict, Verdict::Error);
        assert_eq!(compare_sets(&sets(&[&["b", "a"], &["a", "b"]])).distinct, 1);
    }
}
