//! What each compared guest says about itself: the probe's (or qemu-guest-agent's) report,
//! starting from what was read right after its resume, with the fix-ups' measurements.
//!
//! The compared VMs are observed at once, not one after another: each observation is mostly
//! waiting on its own guest (agent round trips, handshakes with its servers), and a VM observed
//! last would otherwise be read tens of seconds later than the first under TCG, which moves
//! what the host-side samples of a late VM see (its first TLS handshake after a NIC replug).

use super::types::Evidence;
use crate::backend::Vm;
use crate::clones::recipe::{Ctx, Fleet, Made, RecipeError};
use crate::events::EventKind;
use clonesafe_metadata::MeasurementId;

pub(super) async fn gather(cx: &Ctx<'_>, fleet: &mut Fleet, made: &mut Made, ev: &mut Evidence) -> Result<(), RecipeError> {
    // Each compared VM, borrowed once, in the order of `made.compared`.
    let mut slots: Vec<Option<&mut Box<dyn Vm>>> = fleet.0.iter_mut().map(Some).collect();
    let mut jobs = Vec::with_capacity(made.compared.len());
    for c in made.compared.iter_mut() {
        let vm = slots[c.index].take().expect("a VM is compared at most once");
        let (early, role) = (c.early.take(), c.role);
        jobs.push(async move {
            let started = std::time::Instant::now();
            let o = crate::probes::observe(vm.as_mut(), early, &cx.scenario.declared, cx.build.timeouts.probe).await;
            cx.emit(EventKind::Gathered {
                source: "observation".into(),
                vm: Some(vm.name().to_string()),
                ms: started.elapsed().as_millis() as u64,
                steps: o.as_ref().map(|o| o.steps.clone()).unwrap_or_default(),
            });
            o.map(|o| (o, crate::backend::record(vm.as_ref(), role)))
        });
    }
    let observed = futures::future::join_all(jobs).await;
    for (c, r) in made.compared.iter_mut().zip(observed) {
        let (mut o, record) = r?;
        o.measurements = std::mem::take(&mut c.measurements);
        ev.observations.push(o);
        ev.vms.push(record);
    }
    // Each measurement the fix-ups took, one value per compared VM.
    let ids: std::collections::BTreeSet<MeasurementId> = ev.observations.iter().flat_map(|o| o.measurements.keys().copied()).collect();
    for id in ids {
        made.timing.measurements.insert(id, ev.observations.iter().map(|o| o.measurements.get(&id).copied().flatten()).collect());
    }
    Ok(())
}
