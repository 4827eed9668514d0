//! `nic-replug`: the reference thread's approach. Every NIC is hot-unplugged before the
//! snapshot, and a new NIC with the clone's own MAC is hot-plugged on resume. The clone runs
//! on virtual hardware that matches its memory only once the guest has seen the new NIC; the
//! window until then is measured (`nic_window_ms`).

use crate::probes::Early;
use crate::backend::capability::Capability;
use crate::backend::Vm;
use crate::clones::recipe::{Ctx, Fixup, RecipeError, Shapes};
use async_trait::async_trait;
use clonesafe_metadata::{FixupId, MeasurementId};
use std::time::Duration;

pub struct NicReplug;

/// How long a clone may take to see its new NIC.
const NIC_WAIT: Duration = Duration::from_secs(20);

#[async_trait]
impl Fixup for NicReplug {
    fn id(&self) -> FixupId {
        FixupId::NicReplug
    }
    fn shapes(&self) -> Shapes {
        // Unplugging is ACPI hot-unplug, which the guest's kernel handles while its workload is
        // held, so a source already held and snapshotted for another scenario can be unplugged
        // and snapshotted again: its clones resume on the same held workload with no NIC.
        Shapes::Source { derivable: true }
    }
    fn requires(&self) -> &'static [Capability] {
        &[Capability::NicHotplug]
    }
    fn describe(&self) -> Option<&'static str> {
        Some("the NIC was hot-unplugged before the snapshot and a new one (the clone's MAC) hot-plugged on resume")
    }

    async fn before_capture(&self, _cx: &Ctx<'_>, vm: &mut dyn Vm, _notes: &mut Vec<String>) -> Result<(), RecipeError> {
        let name = vm.name().to_string();
        let hp = vm.nic_hotplug().ok_or(RecipeError::Missing { vm: name, capability: Capability::NicHotplug })?;
        hp.unplug_nic().await?;
        Ok(())
    }

    async fn on_resume(&self, cx: &Ctx<'_>, vm: &mut dyn Vm, early: &Early) -> Result<Vec<(MeasurementId, Option<f64>)>, RecipeError> {
        let (name, mac) = (vm.name().to_string(), vm.identity().mac);
        vm.nic_hotplug().ok_or(RecipeError::Missing { vm: name, capability: Capability::NicHotplug })?.plug_nic(mac).await?;
        let t = cx.build.timeouts.probe;
        let mac_s = mac.to_string();
        let seen = crate::probes::call(vm, "wait for the new NIC", |a| Box::pin(async move { a.wait_nic(&mac_s, NIC_WAIT, t).await })).await?;
        let t0 = early.resumed.as_ref().map(|r| r.t0_ns()).unwrap_or(0);
        Ok(vec![(MeasurementId::NicWindowMs, seen.map(|t| t.saturating_sub(t0) as f64 / 1e6))])
    }
}
