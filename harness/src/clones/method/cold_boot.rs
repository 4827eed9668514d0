//! `cold-boot`: N independent first boots of the never-booted image, the baseline every other
//! method is compared against.

use crate::backend::capability::Capability;
use crate::clones::recipe::{boot_and_observe, fleet_tests, CloneMethod, Ctx, Fleet, Outcome, RecipeError};
use async_trait::async_trait;
use clonesafe_metadata::{Method, Timing, VmRole};

pub struct ColdBoot;

#[async_trait]
impl CloneMethod for ColdBoot {
    fn id(&self) -> Method {
        Method::ColdBoot
    }
    fn requires(&self) -> &'static [Capability] {
        &[]
    }
    async fn make(&self, cx: &Ctx<'_>, fleet: &mut Fleet) -> Result<Outcome, RecipeError> {
        let mut timing = Timing::default();
        let mut notes = Vec::new();
        let (observations, vms) = boot_and_observe(cx, fleet, &cx.machine, VmRole::Boot, &mut timing.boot_ms, &mut notes).await?;
        let tickets = Some(fleet_tests(cx, &fleet.0, &observations).await);
        let assigned_macs = vms.iter().map(|v| v.mac.clone()).collect();
        Ok(Outcome { observations, vms, timing, notes, remanence: None, tickets, assigned_macs, segment: None })
    }
}
