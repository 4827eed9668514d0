//! Probes: the host side of the in-guest probe's protocol ([`clonesafe_protocol`]).
//! Reading each VM's identity *as the guest sees it* happens here.

mod channel;

pub use channel::{unexpected, ProbeChannel, ProbeError};

use clonesafe_protocol::{Identity, Sample};
use serde::Serialize;

/// Everything probed from one VM, ready for the checks.
#[derive(Debug, Clone, Default, Serialize)]
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
    /// nic-replug: ms from resume until the guest saw its new NIC (None: never, or no replug).
    pub nic_window_ms: Option<f64>,
    /// agent-fixup: how long the fix-up took, and ms from resume until it had landed.
    pub fixup_ms: Option<f64>,
    pub fixup_window_ms: Option<f64>,
}
