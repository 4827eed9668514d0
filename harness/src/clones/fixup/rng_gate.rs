//! `rng-gate`: close the race between resume and the CRNG reseed. The vmgenid reseed is
//! asynchronous (an ACPI notify handled by a kernel worker), so a read in the first milliseconds
//! after resume can still return the source's stream (Firecracker's random-for-clones.md names
//! the window, and recommends RNDADDENTROPY then RNDRESEEDCRNG before any workload runs). With
//! this fix-up, `go` carries a gate: the probe waits, before its first sample, for the vmgenid
//! reseed to show in the kernel log (when the clone has vmgenid, at most 2 s), then credits 64
//! bytes of host entropy and forces a reseed. The workload's first read (the probe's sample)
//! comes after. Its cost is `rng_gate_ms`, from `go` to the reseed.

use crate::backend::capability::Capability;
use crate::backend::snapshot::Machine;
use crate::backend::Vm;
use crate::clones::recipe::{Ctx, Fixup, RecipeError};
use crate::probes::Early;
use async_trait::async_trait;
use clonesafe_metadata::{FixupId, MeasurementId};
use clonesafe_protocol::Gate;

pub struct RngGate;

/// How long a gate (this one, or genid-wait's) held the clone's first read, from `go` to its
/// release.
pub(crate) fn gate_held_ms(early: &Early) -> Option<f64> {
    early.resumed.as_ref().and_then(|r| r.gate.as_ref()).map(|g| g.t_reseeded_ns.saturating_sub(g.t_start_ns) as f64 / 1e6)
}

/// How long the gate waits for the vmgenid reseed before reseeding anyway.
pub const VMGENID_WAIT_MS: u64 = 2000;

#[async_trait]
impl Fixup for RngGate {
    fn id(&self) -> FixupId {
        FixupId::RngGate
    }
    fn requires(&self) -> &'static [Capability] {
        &[]
    }
    fn describe(&self) -> Option<&'static str> {
        Some("each clone's first RNG read was held until it had reseeded (the vmgenid reseed seen where it has vmgenid, then 64 bytes of host entropy credited and the CRNG reseeded)")
    }
    fn configure(&self, machine: &mut Machine) -> Result<(), String> {
        machine.needs_agent("the rng-gate holds the first read")
    }
    fn gate(&self, machine: &Machine) -> Option<Gate> {
        let entropy_hex = crate::identity::host_entropy(64).iter().map(|b| format!("{b:02x}")).collect();
        Some(Gate { wait_vmgenid_ms: if machine.devices.vmgenid { VMGENID_WAIT_MS } else { 0 }, entropy_hex, wait_uevent_ms: 0 })
    }

    async fn on_resume(&self, _cx: &Ctx<'_>, _vm: &mut dyn Vm, early: &Early) -> Result<Vec<(MeasurementId, Option<f64>)>, RecipeError> {
        Ok(vec![(MeasurementId::RngGateMs, gate_held_ms(early))])
    }
}
