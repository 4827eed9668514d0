//! `agent`: on resume, the in-guest agent credits 64 bytes of host entropy (RNDADDENTROPY),
//! forces a CRNG reseed (RNDRESEEDCRNG), regenerates machine-id, hostname and SSH host keys,
//! and reseeds its own PRNG. Measured: how long it took in the guest (`fixup_ms`), and the
//! window from resume until it had landed (`fixup_window_ms`).

use crate::probes::Early;
use crate::backend::capability::Capability;
use crate::backend::snapshot::Machine;
use crate::backend::Vm;
use crate::clones::recipe::{Ctx, Fixup, RecipeError};
use async_trait::async_trait;
use clonesafe_metadata::{FixupId, MeasurementId};

pub struct Agent;

#[async_trait]
impl Fixup for Agent {
    fn id(&self) -> FixupId {
        FixupId::Agent
    }
    fn requires(&self) -> &'static [Capability] {
        &[]
    }
    fn describe(&self) -> Option<&'static str> {
        Some("on resume the agent credited 64 bytes of host entropy, reseeded the CRNG, and regenerated machine-id, hostname, SSH host keys and its PRNG")
    }
    fn configure(&self, machine: &mut Machine) -> Result<(), String> {
        machine.needs_agent("the agent fix-up works")
    }

    async fn on_resume(&self, cx: &Ctx<'_>, vm: &mut dyn Vm, early: &Early) -> Result<Vec<(MeasurementId, Option<f64>)>, RecipeError> {
        let entropy = crate::identity::host_entropy(64);
        let t = cx.build.timeouts.probe;
        let done = crate::probes::call(vm, "run the fix-up", |a| Box::pin(async move { a.fixup(&entropy, t).await })).await?;
        if vm.machine().network == crate::scenario::Network::Segment {
            // On a shared segment the DHCP identity must follow the new machine-id: renew the
            // lease with it. A guest whose identity is its MAC cannot; that is a finding, not a
            // failure.
            let _ = crate::probes::call(vm, "renew the DHCP lease", |a| a.renew_lease(t)).await;
        }
        // The window needs the first sample's guest time; without it (no RNG protocol) it is null.
        let t0 = early.resumed.as_ref().map(|r| r.t0_ns()).filter(|t| *t > 0);
        Ok(vec![
            (MeasurementId::FixupMs, Some(done.t_done_ns.saturating_sub(done.t_start_ns) as f64 / 1e6)),
            (MeasurementId::FixupWindowMs, t0.map(|t0| done.t_done_ns.saturating_sub(t0) as f64 / 1e6)),
        ])
    }
}
