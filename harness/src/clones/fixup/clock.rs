//! `clock`: a clone resumes with the wall clock its source had at the snapshot, behind the host
//! by as long as the snapshot waited (timers ran only while a VM ran). On resume this fix-up
//! measures the skew (`clock_skew_before_ms`) and sets the guest's clock from the host's, through
//! the agent (qemu-guest-agent's guest-set-time, or the probe's clock_settime). The
//! `wall_clock_skew_ms` check reports the skew after it.

use crate::backend::capability::Capability;
use crate::backend::snapshot::Machine;
use crate::backend::Vm;
use crate::clones::recipe::{Ctx, Fixup, RecipeError};
use crate::probes::Early;
use async_trait::async_trait;
use clonesafe_metadata::{FixupId, MeasurementId};

pub struct Clock;

#[async_trait]
impl Fixup for Clock {
    fn id(&self) -> FixupId {
        FixupId::Clock
    }
    fn requires(&self) -> &'static [Capability] {
        &[]
    }
    fn describe(&self) -> Option<&'static str> {
        Some("on resume each clone's wall clock was set from the host's")
    }
    fn configure(&self, machine: &mut Machine) -> Result<(), String> {
        machine.needs_agent("the clock fix-up sets the time")
    }

    async fn on_resume(&self, cx: &Ctx<'_>, vm: &mut dyn Vm, early: &Early) -> Result<Vec<(MeasurementId, Option<f64>)>, RecipeError> {
        let t = cx.build.timeouts.probe;
        let now = crate::probes::unix_ns(std::time::SystemTime::now()) as i64;
        crate::probes::call(vm, "set the guest's clock", |a| a.set_time(now, t)).await?;
        Ok(vec![(MeasurementId::ClockSkewBeforeMs, early.clock_skew_ms)])
    }
}
