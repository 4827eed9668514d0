//! The scenario file's own identities (`[[identity]]`, crate::scenario::declared): those read
//! after the fix-ups, from each compared VM (those read right after resume came with the VM's
//! first samples, crate::probes::right_after_resume). crate::checks::declared judges them.

use super::types::Evidence;
use crate::clones::recipe::{Ctx, Fleet, Made};
use crate::scenario::declared::When;

pub(super) async fn gather(cx: &Ctx<'_>, fleet: &mut Fleet, made: &Made, ev: &mut Evidence) {
    ev.declared = cx.scenario.declared.clone();
    for (c, o) in made.compared.iter().zip(ev.observations.iter_mut()) {
        if o.error.is_some() {
            continue;
        }
        let vm = fleet.0[c.index].as_mut();
        for d in cx.scenario.declared.iter().filter(|d| d.when == When::AfterFixups) {
            let r = crate::probes::declared::read(vm, d, None, cx.build.timeouts.probe).await;
            o.declared.insert(d.id.clone(), r);
        }
    }
}
