//! `run --shard I/N`: a deterministic 1/N of a plan, for CI job matrices.
//!
//! A scenario's shard depends on its name only (names are unique across a plan): FNV-1a of the
//! name, modulo N. So the same scenario always lands in the same shard, whatever order the files
//! were given in, and adding a scenario moves no other. The plan's identity is a SHA-256 over
//! every scenario's parsed definition, sorted by name, so shards of one plan (and only those)
//! share it; `report merge` refuses shards whose identities differ.

use super::Plan;
use clonesafe_metadata::Shard;
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// Shard `index` of `count` (1-based), as `--shard 2/3` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSpec {
    pub index: u32,
    pub count: u32,
}

/// The most shards a plan is cut into.
pub const MAX_SHARDS: u32 = 256;

impl FromStr for ShardSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a shard: use I/N with 1 <= I <= N <= {MAX_SHARDS}, e.g. 2/3");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (u32, u32) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        if index == 0 || count == 0 || index > count || count > MAX_SHARDS {
            return Err(bad());
        }
        Ok(ShardSpec { index, count })
    }
}

impl fmt::Display for ShardSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The shard (1..=count) scenario `name` belongs to.
pub fn shard_of(name: &str, count: u32) -> u32 {
    // FNV-1a, 64 bit: stable across builds and platforms (std's hasher is not).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % count as u64) as u32 + 1
}

/// The identity of a whole plan: SHA-256 over each scenario's definition, sorted by name.
pub fn plan_id(plan: &Plan) -> String {
    let mut defs: Vec<String> = plan
        .scenarios
        .iter()
        .map(|s| format!("{:?}", (&s.name, s.backend, &s.guest, &s.image, &s.recipe, s.clones, s.memory_mib, &s.expect, s.canary, s.nocloud, s.tpm)))
        .collect();
    defs.sort();
    let mut h = Sha256::new();
    for d in defs {
        h.update(d.as_bytes());
        h.update([0]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl Plan {
    /// Keep the scenarios of shard `spec`, and say which part of which plan they are.
    pub fn shard(&mut self, spec: ShardSpec) -> Shard {
        let info = Shard {
            index: spec.index,
            count: spec.count,
            plan_id: plan_id(self),
            plan: self.scenarios.iter().map(|s| s.name.clone()).collect(),
            missing_shards: vec![],
            missing_scenarios: vec![],
        };
        self.scenarios.retain(|s| shard_of(&s.name, spec.count) == spec.index);
        info
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn plan(src: &str) -> Plan {
        Plan { scenarios: super::super::parse(Path::new("s.toml"), src).unwrap() }
    }

    fn scenarios(names: &[&str]) -> String {
        names.iter().map(|n| format!("[[scenario]]\nname = \"{n}\"\nstrategy = \"naive\"\nclones = 2\n\n")).collect()
    }

    #[test]
    fn shards_partition_the_plan_whatever_the_order() {
        let names: Vec<String> = (0..40).map(|i| format!("s{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let forward = plan(&scenarios(&refs));
        let mut rev = refs.clone();
        rev.reverse();
        let backward = plan(&scenarios(&rev));
        assert_eq!(plan_id(&forward), plan_id(&backward), "the order of scenarios is not the plan");
        let mut seen = Vec::new();
        for i in 1..=3 {
            let (mut a, mut b) = (forward.clone(), backward.clone());
            let ia = a.shard(ShardSpec { index: i, count: 3 });
            b.shard(ShardSpec { index: i, count: 3 });
            let mut na: Vec<_> = a.scenarios.iter().map(|s| s.name.clone()).collect();
            let mut nb: Vec<_> = b.scenarios.iter().map(|s| s.name.clone()).collect();
            na.sort();
            nb.sort();
            assert_eq!(na, nb, "shard {i} depends on order");
            assert!(!na.is_empty(), "40 scenarios leave no shard of 3 empty");
            assert_eq!(ia.plan.len(), 40);
            seen.extend(na);
        }
        seen.sort();
        let mut all: Vec<String> = names.clone();
        all.sort();
        assert_eq!(seen, all, "every scenario in exactly one shard");
    }

    #[test]
    fn a_changed_scenario_is_another_plan() {
        let a = plan(&scenarios(&["x", "y"]));
        let b = plan(&scenarios(&["x", "y"]).replace("clones = 2", "clones = 3"));
        assert_ne!(plan_id(&a), plan_id(&b));
    }

    #[test]
    fn bad_shard_specs_are_refused() {
        for bad in ["0/3", "4/3", "1/0", "x/3", "3", "1/999"] {
            assert!(bad.parse::<ShardSpec>().is_err(), "{bad}");
        }
        assert_eq!("2/3".parse::<ShardSpec>().unwrap(), ShardSpec { index: 2, count: 3 });
    }
}
