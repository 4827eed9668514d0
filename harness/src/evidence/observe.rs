//! What each compared guest says about itself: the probe's (or qemu-guest-agent's) report,
//! starting from what was read right after its resume, with the fix-ups' measurements.

use super::types::Evidence;
use crate::clones::recipe::{Ctx, Fleet, Made, RecipeError};
use clonesafe_metadata::MeasurementId;

pub(super) async fn gather(cx: &Ctx<'_>, fleet: &mut Fleet, made: &mut Made, ev: &mut Evidence) -> Result<(), RecipeError> {
    for c in made.compared.iter_mut() {
        let vm = fleet.0[c.index].as_mut();
        let mut o = crate::probes::observe(vm, c.early.take(), &cx.scenario.declared, cx.build.timeouts.probe).await?;
        o.measurements = std::mem::take(&mut c.measurements);
        ev.observations.push(o);
        ev.vms.push(crate::backend::record(vm, c.role));
    }
    // Each measurement the fix-ups took, one value per compared VM.
    let ids: std::collections::BTreeSet<MeasurementId> = ev.observations.iter().flat_map(|o| o.measurements.keys().copied()).collect();
    for id in ids {
        made.timing.measurements.insert(id, ev.observations.iter().map(|o| o.measurements.get(&id).copied().flatten()).collect());
    }
    Ok(())
}
