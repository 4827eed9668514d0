//! Reports: the stable `report.json` contract, and renderers for people.
//!
//! Contract (later work and CI consumers rely on it: add fields freely, never rename these):
//! `{"clonesafe_version", "host": {"accel", "qemu", "kernel"}, "scenarios": [{"name", "backend",
//! "strategy", "guest", "clones", "memory_mib", "timing": {"boot_ms": [..], "snapshot_ms",
//! "restore_ms": [..]}, "checks": [{"id", "verdict", "values": [..per VM..], "detail"}],
//! "expectations_met"}]}`

pub mod explain;
pub mod html;
pub mod junit;
pub mod markdown;
pub mod plots;
pub mod terminal;

use crate::checks::{CheckId, CheckResult, Verdict};
use crate::clones::{Timing, VmRecord};
use crate::scenario::Expectation;
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub clonesafe_version: String,
    pub host: Host,
    pub scenarios: Vec<ScenarioReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Host {
    pub accel: String,
    pub accel_reason: String,
    pub qemu: String,
    /// The host kernel release.
    pub kernel: String,
    pub guest_kernel: Option<String>,
    pub cpus: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub name: String,
    pub backend: String,
    pub strategy: String,
    pub guest: String,
    pub clones: u32,
    pub memory_mib: u32,
    pub timing: Timing,
    pub checks: Vec<CheckReport>,
    pub expectations_met: bool,
    /// Set when the scenario could not run; its checks are then empty.
    pub error: Option<String>,
    pub vms: Vec<VmRecord>,
    pub notes: Vec<String>,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
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
    pub fn id(&self) -> CheckId {
        self.result.id
    }
    pub fn verdict(&self) -> Verdict {
        self.result.verdict
    }
}

/// Exit codes, documented in `clonesafe --help`.
pub mod exit {
    /// Every expectation met.
    pub const OK: i32 = 0;
    /// Some expectation not met.
    pub const EXPECTATION_FAILED: i32 = 1;
    /// The harness could not run (bad input, missing guest, a VM that failed).
    pub const HARNESS_ERROR: i32 = 2;
}

impl Report {
    pub fn exit_code(&self) -> i32 {
        if self.scenarios.iter().any(|s| s.error.is_some()) {
            exit::HARNESS_ERROR
        } else if self.scenarios.iter().all(|s| s.expectations_met) {
            exit::OK
        } else {
            exit::EXPECTATION_FAILED
        }
    }

    pub fn write_json(&self, dir: &Path) -> std::io::Result<std::path::PathBuf> {
        write_atomic(dir, "report.json", &serde_json::to_string_pretty(self).expect("report serializes"))
    }

    /// report.json, junit.xml and report.html (self-contained) in `dir`.
    pub fn write_all(&self, dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
        Ok(vec![
            self.write_json(dir)?,
            write_atomic(dir, "junit.xml", &junit::render(self))?,
            write_atomic(dir, "report.html", &html::render(self))?,
        ])
    }

    /// The committed reference form: report.json, summary.md and the plots as SVG files.
    pub fn write_reference(&self, dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
        let mut out = self.write_all(dir)?;
        out.push(write_atomic(dir, "summary.md", &markdown::render(self))?);
        for (name, svg) in [("boot-vs-restore.svg", plots::boot_vs_restore(&self.scenarios)), ("windows.svg", plots::windows(&self.scenarios))] {
            if let Ok(svg) = svg {
                out.push(write_atomic(dir, name, &svg)?);
            }
        }
        Ok(out)
    }
}

fn write_atomic(dir: &Path, name: &str, text: &str) -> std::io::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    let p = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &p)?;
    Ok(p)
}
