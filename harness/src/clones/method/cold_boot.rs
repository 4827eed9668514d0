//! `cold-boot`: N independent first boots of the never-booted image, the baseline every other
//! method is compared against.

use crate::backend::capability::Capability;
use crate::clones::recipe::{boot_all, CloneMethod, Ctx, Fleet, Made, RecipeError};
use async_trait::async_trait;
use clonesafe_metadata::{Method, VmRole};

pub struct ColdBoot;

#[async_trait]
impl CloneMethod for ColdBoot {
    fn id(&self) -> Method {
        Method::ColdBoot
    }
    fn requires(&self) -> &'static [Capability] {
        &[]
    }
    async fn make(&self, cx: &Ctx<'_>, fleet: &mut Fleet) -> Result<Made, RecipeError> {
        let mut made = Made::default();
        made.compared = boot_all(cx, fleet, &cx.machine, VmRole::Boot, &mut made.timing.boot_ms, &mut made.notes).await?;
        made.assigned_macs = fleet.0.iter().map(|v| v.identity().mac.to_string()).collect();
        Ok(made)
    }
}
