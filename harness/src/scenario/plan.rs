//! The validated form of scenario files: what the runner executes.

use clonesafe_metadata::{BackendKind, CheckId, Expectation, FixupId, Recipe, Strategy};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct ScenarioPlan {
    pub name: String,
    pub description: Option<String>,
    pub file: PathBuf,
    pub guest: String,
    pub backend: BackendKind,
    /// The preset the recipe is, or `custom`.
    pub strategy: Strategy,
    pub recipe: Recipe,
    pub clones: u32,
    pub memory_mib: u32,
    pub expect: BTreeMap<CheckId, Expectation>,
    /// Plant a deleted canary secret before the snapshot (or template shutdown) and scan the
    /// artifacts for it.
    pub canary: bool,
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
    /// Run every scenario on `backend` instead of the one its file names.
    pub fn override_backend(&mut self, backend: BackendKind) {
        for s in &mut self.scenarios {
            s.backend = backend;
        }
    }
}
