//! The validated form of scenario files: what the runner executes.

use super::declared::Declared;
use clonesafe_metadata::{BackendKind, CheckName, Expectation, FixupId, Recipe, Strategy};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct ScenarioPlan {
    pub name: String,
    pub description: Option<String>,
    pub file: PathBuf,
    /// The line of its `name` in `file`.
    pub line: usize,
    /// A built guest's name, or (with `image`) the image's path as the report names it.
    pub guest: String,
    /// The user's own disk image, instead of a built guest.
    pub image: Option<PathBuf>,
    pub backend: BackendKind,
    /// The preset the recipe is, or `custom`.
    pub strategy: Strategy,
    pub recipe: Recipe,
    pub clones: u32,
    /// None: the guest's default (its manifest's memory_mib).
    pub memory_mib: Option<u32>,
    /// Expectations of built-in checks and of declared identities (a declaration's own
    /// `expect`, unless `[scenario.expect]` says otherwise).
    pub expect: BTreeMap<CheckName, Expectation>,
    /// Plant a deleted canary secret before the snapshot (or template shutdown) and scan the
    /// artifacts for it.
    pub canary: bool,
    /// A cloud-init NoCloud seed (a `cidata` disk) for every VM, and whose instance-id it holds.
    pub nocloud: Option<NoCloud>,
    /// Clones of the shared-ram method taken from a warm pool of this many processes.
    pub pool: Option<u32>,
    /// Where the VMs' NICs are plugged.
    pub network: Network,
    /// A virtual TPM 2.0 for every VM (`tpm = true`): a fresh swtpm per booted VM; clones of a
    /// live snapshot get the source's TPM state.
    pub tpm: bool,
    /// The file's `[[identity]]` tables, then the scenario's own.
    pub declared: Vec<Declared>,
}

/// Where a scenario's VMs are plugged (`network = ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// Each VM behind its own QEMU user network (slirp): no VM sees another, and the host
    /// reaches guest services through forwarded ports on 127.0.0.1.
    #[default]
    User,
    /// Every VM of the scenario on one isolated segment: a network namespace with a bridge,
    /// `dnsmasq` and a capture (network/segment.rs).
    Segment,
}

/// Whose instance-id a VM's NoCloud seed holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoCloud {
    /// Each VM its own (its name), as a cloud gives each instance.
    PerVm,
    /// One for all.
    Shared,
}

impl ScenarioPlan {
    pub fn mitigates_remanence(&self) -> bool {
        self.recipe.has(FixupId::MitigateRemanence)
    }
}

/// Every scenario of every file, in order, names unique across files.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub scenarios: Vec<ScenarioPlan>,
}

impl Plan {
    /// Run every scenario on the user's image at `path` instead of its guest.
    pub fn override_image(&mut self, path: &std::path::Path) {
        for s in &mut self.scenarios {
            s.image = Some(path.to_path_buf());
            s.guest = format!("image:{}", path.display());
        }
    }

    /// Run every scenario on `backend` instead of the one its file names.
    pub fn override_backend(&mut self, backend: BackendKind) {
        for s in &mut self.scenarios {
            s.backend = backend;
        }
    }
}
