//! `shared-ram`: the live method in template mode. The source boots with its RAM in a shared
//! file; the snapshot writes device state only (`x-ignore-shared`) and leaves the source paused,
//! a frozen template; each clone maps the RAM file copy-on-write, so no clone copies the memory
//! image or writes to it (backend/qemu/mod.rs has the QEMU side and where it was measured).
//! With `pool = N` in the scenario, up to N clones come from a warm pool: processes started
//! after the snapshot with `-incoming defer`, whose restore is `migrate-incoming` and `cont`.
//!
//! Everything else, the fix-ups, the probes and the checks, is the live method's: a recipe's
//! verdicts must not depend on how its clones' memory got there.

use crate::backend::capability::Capability;
use crate::backend::snapshot::Ram;
use crate::clones::recipe::{CloneMethod, Ctx, Fleet, Made, RecipeError};
use async_trait::async_trait;
use clonesafe_metadata::Method;

pub struct SharedRam;

#[async_trait]
impl CloneMethod for SharedRam {
    fn id(&self) -> Method {
        Method::SharedRam
    }
    fn requires(&self) -> &'static [Capability] {
        &[Capability::LiveSnapshot, Capability::SharedRam]
    }

    async fn make(&self, cx: &Ctx<'_>, fleet: &mut Fleet) -> Result<Made, RecipeError> {
        super::live::make(cx, fleet, Ram::Shared, cx.scenario.pool).await
    }
}
