//! The types of `report.json`. Field names are a contract: add fields freely, never rename.
//!
//! ```text
//! {"schema_version", "clonesafe_version",
//!  "host": {"accel", "accel_reason", "qemu", "kernel", "guest_kernel", "cpus", "cpu_model", "vmms": [..]},
//!  "scenarios": [{"name", "backend", "strategy", "recipe": {"method", "fixups"}, "guest", "clones",
//!    "memory_mib", "timing": {"boot_ms": [..], "snapshot_ms", "restore_ms": [..], "<measurement>": [..]},
//!    "checks": [{"id", "verdict", "values": [..one per VM..], "detail", "evidence", "expected", "met"}],
//!    "expectations_met", "error", "vms": [..], "notes": [..], "duration_ms"}]}
//! ```

use crate::exit_codes;
use crate::vocab::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Report {
    /// [`crate::SCHEMA_VERSION`] of the writer.
    pub schema_version: u32,
    pub clonesafe_version: String,
    pub host: Host,
    pub scenarios: Vec<ScenarioReport>,
    /// Absent for a whole run. A shard's report (`run --shard I/N`) says which part of which plan
    /// it holds; a merge of every shard has none (it is what one run would have written); a merge
    /// with `--allow-partial` says which shards it lacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
    /// `clonesafe assess`: the reviewer's answer drawn from these scenarios.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assessment: Option<Assessment>,
}

/// What `clonesafe assess` concludes from its fixed suite. Every statement names the cells
/// (`scenario/check`) it rests on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Assessment {
    /// The image (or guest) assessed.
    pub subject: String,
    /// The cold-boot scenario whose duplicates are the image's own (None: it did not run).
    pub baseline: Option<String>,
    /// Identities every fresh boot of the image already shares: the image ships them.
    pub shipped: Vec<Shared>,
    /// Per recipe of the suite (the baseline excluded).
    pub recipes: Vec<RecipeAssessment>,
    /// Recipes of the suite that were not run because the backend does not offer what they
    /// need (a remote libvirt host cannot copy or sysprep disk files on this machine).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_run: Vec<NotRun>,
    pub conclusions: Vec<Conclusion>,
}

/// A recipe of the suite left out before any VM started, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NotRun {
    pub scenario: String,
    pub reason: String,
}

/// One identity still shared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Shared {
    pub id: CheckName,
    /// None: a declared identity that states none.
    pub severity: Option<Severity>,
    pub consequence: String,
    /// True when the baseline's fresh boots share it too (the image ships it), false when
    /// cloning makes it shared.
    pub shipped: bool,
    /// How to fix it in the image, for a shipped one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// The cell this rests on: `scenario/check`.
    pub cell: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RecipeAssessment {
    pub scenario: String,
    /// The preset's name or the composed recipe.
    pub recipe: String,
    /// Why it could not run, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Worst first.
    pub shared: Vec<Shared>,
    /// Checks that gave no answer (`error`): not counted as unique.
    pub unknown: Vec<String>,
    /// What the recipe costs, ms (medians over its VMs).
    pub snapshot_ms: Option<u64>,
    pub restore_ms: Option<u64>,
    pub boot_ms: Option<u64>,
    pub fixup_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Conclusion {
    pub text: String,
    /// `scenario/check` cells it rests on.
    pub cells: Vec<String>,
}

/// Which part of a sharded plan a report holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Shard {
    /// 1..=count for one shard; 0 for a partial merge of several.
    pub index: u32,
    pub count: u32,
    /// SHA-256 (hex) of the whole plan's scenarios, as `run` parsed them: shards of one plan
    /// share it, whatever order the files were given in.
    pub plan_id: String,
    /// Every scenario of the whole plan, in plan order.
    pub plan: Vec<String>,
    /// The shards a partial merge lacks, and so the scenarios it does not report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_shards: Vec<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_scenarios: Vec<String>,
}

/// The machine the run happened on, and the VMMs it used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Host {
    pub accel: Accel,
    /// Why this accelerator (a KVM trial boot's result, or a flag).
    pub accel_reason: String,
    /// First line of `qemu-system-x86_64 --version` (kept for older consumers; see `vmms`).
    pub qemu: String,
    /// The host kernel release.
    pub kernel: String,
    pub guest_kernel: Option<String>,
    /// vCPUs of the host (available parallelism).
    pub cpus: usize,
    /// The host CPU model (/proc/cpuinfo "model name").
    #[serde(default)]
    pub cpu_model: String,
    /// Every VMM the run used, with its version.
    #[serde(default)]
    pub vmms: Vec<Vmm>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Vmm {
    /// "qemu", "libvirt", ...
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ScenarioReport {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub backend: BackendKind,
    /// The preset the recipe is, or `custom`.
    pub strategy: Strategy,
    pub recipe: Recipe,
    pub guest: String,
    /// How many VMs were compared.
    pub clones: u32,
    pub memory_mib: u32,
    pub timing: Timing,
    pub checks: Vec<CheckReport>,
    pub expectations_met: bool,
    /// Set when the scenario could not run; its checks are then empty.
    pub error: Option<String>,
    /// The host-side identity each compared VM was given.
    pub vms: Vec<VmRecord>,
    pub notes: Vec<String>,
    pub duration_ms: u64,
    /// For the live methods: which source the clones came from, and whether this scenario
    /// booted it, reused another scenario's snapshot of it, or snapshotted it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceUse>,
}

/// Where a scenario's source came from (issue 23: one boot per distinct source).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SourceUse {
    /// The source's name in this run (the VM's name without the run's prefix). For an
    /// image-copy scenario, its template.
    pub id: String,
    pub how: SourceHow,
    /// The scenario whose report holds the source's boot time (`timing.boot_ms`).
    pub booted_in: String,
    /// Every scenario of the run that used this source, in the order they ran.
    pub used_by: Vec<String>,
}

/// How a scenario got its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SourceHow {
    /// Its own: booted for this scenario alone (`--no-share`, or no other scenario needed the
    /// same source).
    Own,
    /// This scenario booted the source and took the snapshot (or template copy) others reuse.
    Booted,
    /// Used a source another scenario booted: a new snapshot of it where it runs on after a
    /// snapshot (private RAM, the source held), else that scenario's snapshot (shared RAM's
    /// frozen template) or shut-down template.
    Shared,
    /// A new snapshot of the shared source, taken after this recipe's fix-ups changed it
    /// (nic-replug unplugged its NIC).
    Derived,
}

impl std::fmt::Display for SourceHow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SourceHow::Own => "own",
            SourceHow::Booted => "booted",
            SourceHow::Shared => "shared",
            SourceHow::Derived => "derived",
        })
    }
}

/// Timings in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Timing {
    /// From VMM start to the guest's agent answering, per booted VM.
    pub boot_ms: Vec<u64>,
    /// Stop, disk freeze, memory and device state written, source resumed.
    pub snapshot_ms: Option<u64>,
    /// From a clone's VMM start to its agent answering after resume, per clone.
    pub restore_ms: Vec<u64>,
    /// Bytes of memory and device state in the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_bytes: Option<u64>,
    /// Per-VM figures measured by the recipe's fix-ups (one entry per compared VM; null where
    /// the VM never got there).
    #[serde(flatten)]
    pub measurements: BTreeMap<MeasurementId, Vec<Option<f64>>>,
}

impl Timing {
    /// The values of one measurement that were measured (nulls left out).
    pub fn measured(&self, id: MeasurementId) -> Vec<f64> {
        self.measurements.get(&id).map(|v| v.iter().flatten().copied().collect()).unwrap_or_default()
    }
}

/// A check's verdict with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CheckResult {
    pub id: CheckName,
    /// An identity the scenario file declared (`[[identity]]`), not a built-in check.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub declared: bool,
    /// For a declared identity: the severity and consequence its declaration states (a
    /// built-in check's are in clonesafe's catalogue, `clonesafe checks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stated: Option<Stated>,
    pub verdict: Verdict,
    /// One value per VM, in VM order (null where a VM gave none), or one per artifact for
    /// `secret_remanence`.
    pub values: Vec<Value>,
    pub detail: String,
    /// Extra evidence (for `kernel_rng`: every sample of every VM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Value>,
}

/// What a declaration says about its identity: how bad sharing it is, and what breaks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Stated {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consequence: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CheckReport {
    #[serde(flatten)]
    pub result: CheckResult,
    pub expected: Option<Expectation>,
    pub met: bool,
}

impl CheckReport {
    pub fn new(result: CheckResult, expected: Option<Expectation>) -> Self {
        let met = expected.is_none_or(|e| e.is_met_by(result.verdict));
        CheckReport { result, expected, met }
    }
    pub fn id(&self) -> &CheckName {
        &self.result.id
    }
    pub fn verdict(&self) -> Verdict {
        self.result.verdict
    }
}

/// The host-side identity one compared VM was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VmRecord {
    pub role: VmRole,
    pub name: String,
    pub uuid: String,
    pub mac: String,
    pub disk_serial: String,
    pub vmgenid: Option<String>,
    /// The hypervisor host that ran it, as its backend names it (this machine's hostname for
    /// QEMU, libvirtd's `virConnectGetHostname` for libvirt). Absent in reports made before it
    /// was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// Where a deleted canary secret was looked for, and found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Scan {
    pub hits: Vec<Hit>,
    /// A positive control: a string known to be in one artifact (the guest's hostname is in
    /// kernel memory). If the scan cannot find it there, "not found" means nothing.
    pub control: Option<Control>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Hit {
    pub artifact: String,
    pub path: String,
    pub bytes: u64,
    pub found: bool,
    /// Up to 4 offsets where the canary's bytes are.
    pub offsets: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Control {
    pub needle: String,
    pub artifact: String,
    pub found: bool,
}

impl Scan {
    pub fn found_in(&self) -> Vec<&str> {
        self.hits.iter().filter(|h| h.found).map(|h| h.artifact.as_str()).collect()
    }
}

impl ScenarioReport {
    /// It ran, and every expectation held.
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.expectations_met
    }

    /// The preset's name, or the composed recipe (`live+vmgenid+agent`) for `custom`.
    pub fn recipe_label(&self) -> String {
        match self.strategy {
            Strategy::Custom => self.recipe.to_string(),
            s => s.to_string(),
        }
    }

    pub fn check(&self, id: impl Into<CheckName>) -> Option<&CheckReport> {
        let id = id.into();
        self.checks.iter().find(|c| *c.id() == id)
    }
}

impl Report {
    /// [`exit_codes::HARNESS_ERROR`] if a scenario could not run, else
    /// [`exit_codes::EXPECTATION_FAILED`] if an expectation failed, else [`exit_codes::OK`].
    pub fn exit_code(&self) -> i32 {
        if self.scenarios.iter().any(|s| s.error.is_some()) {
            exit_codes::HARNESS_ERROR
        } else if self.scenarios.iter().all(|s| s.expectations_met) {
            exit_codes::OK
        } else {
            exit_codes::EXPECTATION_FAILED
        }
    }
}

/// The JSON Schema (draft 2020-12) of `report.json`, generated from these types.
pub fn schema() -> Value {
    serde_json::to_value(schemars::schema_for!(Report)).expect("a schema serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let mut measurements = BTreeMap::new();
        measurements.insert(MeasurementId::NicWindowMs, vec![Some(1.5), None]);
        Report {
            schema_version: crate::SCHEMA_VERSION,
            assessment: None,
            clonesafe_version: "0".into(),
            host: Host {
                accel: Accel::Tcg,
                accel_reason: "r".into(),
                qemu: "QEMU 7.2".into(),
                kernel: "6.1".into(),
                guest_kernel: None,
                cpus: 2,
                cpu_model: "x".into(),
                vmms: vec![Vmm { name: "qemu".into(), version: "7.2.22".into() }],
            },
            scenarios: vec![ScenarioReport {
                name: "n".into(),
                description: None,
                backend: BackendKind::Qemu,
                strategy: Strategy::NicReplug,
                recipe: Strategy::NicReplug.recipe().unwrap(),
                guest: "tiny".into(),
                clones: 2,
                memory_mib: 256,
                timing: Timing { boot_ms: vec![1], snapshot_ms: Some(2), restore_ms: vec![3, 4], snapshot_bytes: None, measurements },
                checks: vec![CheckReport::new(
                    CheckResult { id: CheckId::Mac.into(), declared: false, stated: None, verdict: Verdict::Unique, values: vec![Value::Null], detail: "d".into(), evidence: None },
                    Some(Expectation::Verdict(Verdict::Unique)),
                )],
                expectations_met: true,
                error: None,
                vms: vec![],
                notes: vec![],
                duration_ms: 9,
                source: None,
            }],
            shard: None,
        }
    }

    /// The field names of the unversioned contract are all still there, and measurements sit
    /// in `timing` under their own names, as the per-recipe fields did.
    #[test]
    fn the_wire_form_keeps_the_old_field_names() {
        let v = serde_json::to_value(sample()).unwrap();
        for k in ["clonesafe_version", "host", "scenarios"] {
            assert!(v.get(k).is_some(), "{k}");
        }
        for k in ["accel", "qemu", "kernel"] {
            assert!(v["host"].get(k).is_some(), "{k}");
        }
        let s = &v["scenarios"][0];
        for k in ["name", "backend", "strategy", "guest", "clones", "memory_mib", "timing", "checks", "expectations_met"] {
            assert!(s.get(k).is_some(), "{k}");
        }
        assert_eq!(s["strategy"], "nic-replug");
        assert_eq!(s["timing"]["nic_window_ms"], serde_json::json!([1.5, null]));
        assert_eq!(s["checks"][0]["expected"], serde_json::json!({"verdict": "unique"}));
        let back: Report = serde_json::from_value(v).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn the_schema_names_the_enums() {
        let s = schema().to_string();
        for word in ["schema_version", "nic-replug", "secret_remanence", "duplicate", "libvirt", "image-copy"] {
            assert!(s.contains(word), "{word} missing from the schema");
        }
    }
}
