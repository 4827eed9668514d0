//! The validated form of a scenario file: what the runner executes.

use crate::backend::BackendKind;
use crate::checks::{CheckId, Verdict};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// N independent first boots of the same never-booted image: the baseline.
    ColdBoot,
    /// virt-clone's offline clone: boot a template once, shut it down, copy its disk; each clone
    /// gets a new name, UUID and MAC. Nothing inside the guest changes.
    ImageClone,
    /// The same, with the template's disk sanitized offline before the copies.
    ImageCloneSysprep,
    /// Live snapshot, then N restores with only the host-side identity changed.
    Naive,
    /// Hot-unplug every NIC before the snapshot; hot-plug a new one into each clone on resume.
    NicReplug,
    /// Each clone gets a fresh VM generation ID.
    Vmgenid,
    /// After resume, the in-guest agent reseeds the CRNG and regenerates identities.
    AgentFixup,
    /// nic-replug, vmgenid and agent-fixup together.
    Full,
}

impl Strategy {
    pub const ALL: [Strategy; 8] = [
        Strategy::ColdBoot,
        Strategy::ImageClone,
        Strategy::ImageCloneSysprep,
        Strategy::Naive,
        Strategy::NicReplug,
        Strategy::Vmgenid,
        Strategy::AgentFixup,
        Strategy::Full,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::ColdBoot => "cold-boot",
            Strategy::ImageClone => "image-clone",
            Strategy::ImageCloneSysprep => "image-clone-sysprep",
            Strategy::Naive => "naive",
            Strategy::NicReplug => "nic-replug",
            Strategy::Vmgenid => "vmgenid",
            Strategy::AgentFixup => "agent-fixup",
            Strategy::Full => "full",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
    pub fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|s| s.as_str()).collect()
    }
    /// Whether the VMs compared are clones restored from one live snapshot.
    pub fn restores(self) -> bool {
        !matches!(self, Strategy::ColdBoot | Strategy::ImageClone | Strategy::ImageCloneSysprep)
    }
    pub fn nic_replug(self) -> bool {
        matches!(self, Strategy::NicReplug | Strategy::Full)
    }
    pub fn vmgenid(self) -> bool {
        matches!(self, Strategy::Vmgenid | Strategy::Full)
    }
    pub fn agent_fixup(self) -> bool {
        matches!(self, Strategy::AgentFixup | Strategy::Full)
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expectation {
    Verdict(Verdict),
    /// Measured and reported, not asserted (timing-dependent evidence such as kernel_rng).
    Any,
}

impl Expectation {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "unique" => Expectation::Verdict(Verdict::Unique),
            "duplicate" => Expectation::Verdict(Verdict::Duplicate),
            "skipped" => Expectation::Verdict(Verdict::Skipped),
            "error" => Expectation::Verdict(Verdict::Error),
            "any" => Expectation::Any,
            _ => return None,
        })
    }
    pub fn is_met_by(self, v: Verdict) -> bool {
        match self {
            Expectation::Any => true,
            Expectation::Verdict(want) => want == v,
        }
    }
}

impl fmt::Display for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expectation::Any => f.write_str("any"),
            Expectation::Verdict(v) => v.fmt(f),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioPlan {
    pub name: String,
    pub description: Option<String>,
    pub file: PathBuf,
    pub guest: String,
    pub backend: BackendKind,
    pub strategy: Strategy,
    pub clones: u32,
    pub memory_mib: u32,
    pub expect: BTreeMap<CheckId, Expectation>,
    /// Plant a deleted canary secret before the snapshot (or template shutdown) and scan the
    /// artifacts for it.
    pub canary: bool,
    /// Before the snapshot: fstrim and drop caches in the guest; after it: compact the disks.
    pub mitigate_remanence: bool,
}

/// Every scenario of every file, in order, names unique across files.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub scenarios: Vec<ScenarioPlan>,
}

impl Plan {
    pub fn load(files: &[PathBuf]) -> Result<Plan, super::ScenarioError> {
        let mut plan = Plan::default();
        for f in files {
            for s in super::load(f)? {
                if let Some(prev) = plan.scenarios.iter().find(|p| p.name == s.name) {
                    return Err(super::ScenarioError {
                        file: f.clone(),
                        line: 0,
                        column: 0,
                        field: Some("name".into()),
                        message: format!("{:?} is also a scenario in {}", s.name, prev.file.display()),
                    });
                }
                plan.scenarios.push(s);
            }
        }
        Ok(plan)
    }

    /// Run every scenario on `backend` instead of the one its file names.
    pub fn override_backend(&mut self, backend: BackendKind) {
        for s in &mut self.scenarios {
            s.backend = backend;
        }
    }
}
