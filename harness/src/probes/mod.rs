//! The probe step: asking each VM, through its guest agent, who it thinks it is. Every call is
//! bounded, and an agent's failure becomes a [`BackendError`] that names the VM, the phase and
//! the guest console's tail.
//!
//! The order of [`observe`] matters: the kernel RNG is sampled first (`go`, sent right after
//! resume), because the window in which restored clones share CRNG state closes as soon as a
//! reseed happens.

use crate::agent::{AgentError, GuestAgent, Resumed};
use crate::backend::error::BackendError;
use crate::backend::lifecycle::Phase;
use crate::backend::Vm;
use clonesafe_metadata::{CheckId, MeasurementId};
use clonesafe_protocol::{Identity, Sample};
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::time::Duration;

/// Everything probed from one VM, ready for the checks.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub vm: String,
    /// Kernel RNG samples taken right after `go` (after resume, for clones).
    pub kernel_rng: Vec<Sample>,
    /// The probe's own PRNG, seeded once before any snapshot.
    pub userspace_rng: Vec<Sample>,
    pub identity: Option<Identity>,
    /// Why this VM could not be probed, if it could not.
    pub error: Option<String>,
    /// The MAC the host gave this VM's NIC.
    pub host_mac: Option<String>,
    /// Per-VM figures the recipe's fix-ups measured (null: never got there).
    pub measurements: BTreeMap<MeasurementId, Option<f64>>,
    /// Checks this VM's agent cannot feed, with the reason (they become `skipped`).
    pub unavailable: BTreeMap<CheckId, String>,
}

/// Run one agent operation on `vm`, bounded by the operation itself, and turn its failure into
/// an error that carries the VM, the phase and the console tail.
pub async fn call<T>(
    vm: &mut dyn Vm,
    op: &'static str,
    f: impl for<'a> FnOnce(&'a mut dyn GuestAgent) -> BoxFuture<'a, Result<T, AgentError>>,
) -> Result<T, BackendError> {
    let r = match vm.agent() {
        Some(agent) => f(agent).await,
        None => return Err(BackendError::NoAgent { vm: vm.name().to_string(), op }),
    };
    r.map_err(|source| BackendError::Agent { vm: vm.name().to_string(), phase: Phase::Probe, console_tail: vm.console_tail(20), source })
}

/// `go` (unless it was already sent), `samples`, then `report`.
pub async fn observe(vm: &mut dyn Vm, resumed: Option<Resumed>, t: Duration) -> Result<Observation, BackendError> {
    let host_mac = Some(vm.identity().mac.to_string());
    if vm.agent().is_none() {
        let why = "the guest has no agent to ask".to_string();
        let unavailable = CheckId::ALL.iter().filter(|c| **c != CheckId::SecretRemanence).map(|c| (*c, why.clone())).collect();
        return Ok(Observation { vm: vm.name().to_string(), host_mac, unavailable, ..Default::default() });
    }
    let r = match resumed {
        Some(r) => r,
        None => call(vm, "sample the kernel RNG", |a| a.go(t)).await?,
    };
    let mut kernel_rng = r.kernel_rng;
    kernel_rng.extend(call(vm, "collect RNG samples", |a| a.samples(t)).await?);
    let sources = vm.machine().guest.sources.clone();
    let identity = call(vm, "read the guest's identity", |a| Box::pin(async move { a.report(&sources, t).await })).await?;
    Ok(Observation {
        vm: vm.name().to_string(),
        kernel_rng,
        userspace_rng: r.userspace_rng,
        identity: Some(identity),
        error: None,
        host_mac,
        measurements: BTreeMap::new(),
        unavailable: BTreeMap::new(),
    })
}
