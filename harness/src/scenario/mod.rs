//! Scenario files (TOML) → a validated [`Plan`]. Staged like nextest's config: deserialize
//! strictly (unknown fields rejected), then validate into a plan, and every error says the
//! file, line and field.
//!
//! ```toml
//! [[scenario]]
//! name = "naive"            # unique; [a-z0-9_-]
//! guest = "tiny"            # a built guest (default "tiny")
//! backend = "qemu"          # qemu | libvirt (default qemu; `--backend` overrides)
//! strategy = "naive"        # a preset: cold-boot | image-clone | image-clone-sysprep | naive |
//!                           # nic-replug | vmgenid | agent-fixup | full
//! # or compose a recipe instead of naming a preset:
//! # method = "live"         # cold-boot | image-copy | live | shared-ram
//! # fixups = ["vmgenid", "agent"]   # nic-replug | vmgenid | agent | sysprep | mitigate-remanence
//! clones = 3                # VMs compared, 2..=16
//! memory_mib = 256          # 128..=16384, default 256
//! canary = true             # plant a deleted secret and scan the artifacts for it
//! mitigate_remanence = true # adds the mitigate-remanence fix-up (implies canary)
//! nocloud = "per-vm"        # a cloud-init NoCloud seed per VM: per-vm | shared
//! pool = 2                  # shared-ram only: clones from a warm pool of 1..=16 processes
//! network = "segment"       # user (default: each VM alone) | segment (one isolated segment
//!                           # with dnsmasq and a capture; network/segment.rs)
//! tpm = true                # a virtual TPM 2.0 (swtpm) per VM; live clones carry the source's
//! [scenario.expect]         # check id = unique | duplicate | skipped | error | any
//! mac = "duplicate"
//! [[scenario.identity]]     # the user's own identities, here or at the top level for every
//! id = "node_id"            # scenario of the file (declared.rs)
//! file = "/var/lib/agent/node-id"
//! ```

pub mod declared;
mod error;
mod parse;
mod plan;
pub mod shard;

pub use error::ScenarioError;
pub use parse::{parse, MAX_FILE_BYTES, MAX_MESSAGE};
pub use plan::{Network, NoCloud, Plan, ScenarioPlan};

use std::path::{Path, PathBuf};

/// Read and validate one scenario file.
pub fn load(path: &Path) -> Result<Vec<ScenarioPlan>, ScenarioError> {
    let src = crate::input::read_text(path, parse::MAX_FILE_BYTES).map_err(|e| ScenarioError { file: path.to_path_buf(), line: 0, column: 0, field: None, message: e.to_string() })?;
    parse(path, &src)
}

/// Every scenario of `files`, in order; names must be unique across files.
pub fn load_plan(files: &[PathBuf]) -> Result<Plan, ScenarioError> {
    let mut plan = Plan::default();
    for f in files {
        for s in load(f)? {
            if let Some(prev) = plan.scenarios.iter().find(|p| p.name == s.name) {
                return Err(ScenarioError {
                    file: f.clone(),
                    line: s.line,
                    column: 1,
                    field: Some("name".into()),
                    message: format!("{:?} is also a scenario in {}:{}", s.name, prev.file.display(), prev.line),
                });
            }
            plan.scenarios.push(s);
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests;
