//! `genid-wait`: hold the workload until the kernel says the clone was forked. Linux 6.8 added a
//! `NEW_VMGENID=1` uevent on the vmgenid device, sent after the new generation id was fed to the
//! RNG (ad6bcdad2b67, drivers/virt/vmgenid.c `vmgenid_notify()`), so that user space could wait
//! for it instead of racing the asynchronous reseed. With this fix-up, `go` carries a gate: the
//! probe waits (at most [`UEVENT_WAIT_MS`]) until the listener it opened at `hold` hears that
//! uevent, then takes its first sample. Unlike rng-gate it credits nothing and forces no
//! reseed: it measures what waiting for the kernel's notice alone buys. Its cost is
//! `genid_wait_ms`, from `go` to the release; where the kernel never sends the uevent (measured:
//! Debian's 6.12 and 7.3; 6.1 predates it) that is the bound, and `vmgenid_uevent` says why.

use crate::backend::capability::Capability;
use crate::backend::snapshot::Machine;
use crate::backend::Vm;
use crate::clones::recipe::{Ctx, Fixup, RecipeError};
use crate::probes::Early;
use async_trait::async_trait;
use clonesafe_metadata::{FixupId, MeasurementId};
use clonesafe_protocol::Gate;

pub struct GenidWait;

/// How long the gate waits for `NEW_VMGENID` before it lets the workload go anyway. A program
/// that waited without a bound on a kernel that never sends it would never start.
pub const UEVENT_WAIT_MS: u64 = 2000;

#[async_trait]
impl Fixup for GenidWait {
    fn id(&self) -> FixupId {
        FixupId::GenidWait
    }
    fn requires(&self) -> &'static [Capability] {
        &[]
    }
    fn describe(&self) -> Option<&'static str> {
        Some("each clone's first RNG read was held until its kernel sent the NEW_VMGENID uevent (at most 2 s; nothing credited or reseeded)")
    }
    fn configure(&self, machine: &mut Machine) -> Result<(), String> {
        machine.needs_agent("genid-wait holds the first read")
    }
    fn gate(&self, _machine: &Machine) -> Option<Gate> {
        Some(Gate { wait_vmgenid_ms: 0, entropy_hex: String::new(), wait_uevent_ms: UEVENT_WAIT_MS })
    }

    async fn on_resume(&self, _cx: &Ctx<'_>, _vm: &mut dyn Vm, early: &Early) -> Result<Vec<(MeasurementId, Option<f64>)>, RecipeError> {
        Ok(vec![(MeasurementId::GenidWaitMs, super::rng_gate::gate_held_ms(early))])
    }
}
