//! The probe step: asking each VM, through its guest agent, who it thinks it is. Every call is
//! bounded, and an agent's failure becomes a [`BackendError`] that names the VM, the phase and
//! the guest console's tail.
//!
//! The order matters: the kernel RNG is sampled first (`go`, sent right after resume, in
//! [`right_after_resume`]), because the window in which restored clones share CRNG state closes
//! as soon as a reseed happens; then the wall clock and the TLS server's random, still before any
//! fix-up; [`observe`] reads the rest after the fix-ups. Host-side measurements are in [`host`].

pub mod declared;
pub mod host;

use crate::agent::{AgentError, GuestAgent, Resumed};
use crate::backend::error::BackendError;
use crate::backend::lifecycle::Phase;
use crate::backend::Vm;
use clonesafe_metadata::{CheckId, MeasurementId};
use crate::scenario::declared::{Declared, When};
use clonesafe_protocol::{Gate, Identity, Sample};
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

/// Everything probed from one VM, ready for the checks.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub vm: String,
    /// Kernel RNG samples taken right after `go` (after resume, for clones).
    pub kernel_rng: Vec<Sample>,
    /// The probe's own PRNG, seeded once before any snapshot.
    pub userspace_rng: Vec<Sample>,
    /// `/proc/sys/kernel/random/uuid`, read beside each kernel RNG sample.
    pub random_uuid: Vec<Sample>,
    /// What the probe's uevent listener heard from `hold` to the last sample (None: no probe,
    /// or one that predates it).
    pub uevents: Option<clonesafe_protocol::UeventWatch>,
    /// The VMClock page at `hold`, right after resume and a second later (None: no probe, or
    /// one that predates it).
    pub vmclock: Option<clonesafe_protocol::VmclockWatch>,
    /// getrandom() through the guest's glibc (the vDSO helper), after resume (None: no probe, or
    /// one that predates it).
    pub vdso_rng: Option<clonesafe_protocol::VdsoRngWatch>,
    pub identity: Option<Identity>,
    /// Why this VM could not be probed, if it could not.
    pub error: Option<String>,
    /// The MAC the host gave this VM's NIC.
    pub host_mac: Option<String>,
    /// Per-VM figures the recipe's fix-ups measured (null: never got there).
    pub measurements: BTreeMap<MeasurementId, Option<f64>>,
    /// Checks this VM's agent cannot feed, with the reason (they become `skipped`).
    pub unavailable: BTreeMap<CheckId, String>,
    /// Host key fingerprints from `ssh-keyscan` on the host (None: no ssh service forwarded).
    pub ssh_keyscan: Option<Result<Vec<String>, String>>,
    /// ServerHello randoms right after resume, offsets from resume on the host's clock (None:
    /// no TLS service forwarded).
    pub tls_random: Option<Result<Vec<Sample>, String>>,
    /// Guest wall clock minus host wall clock when observed (after the fix-ups), and right after
    /// resume (before them).
    pub clock_skew_ms: Option<f64>,
    pub clock_skew_at_resume_ms: Option<f64>,
    /// When the VMM resumed it (or, for a VM that booted, when it was first observed), as unix
    /// ns: where the segment's `ip_window_ms` counts from.
    pub resumed_unix_ns: u64,
    /// The scenario's declared identities, by id: those read right after resume, then (from
    /// the evidence stage) those read after the fix-ups.
    pub declared: BTreeMap<String, declared::Reading>,
    /// How long each step of [`observe`] took, in order (ms): the run's log, not the checks.
    pub steps: Vec<(String, u64)>,
}

/// What is read from a VM right after it resumes (or, for a booted VM, when first observed),
/// before any fix-up runs.
#[derive(Debug, Clone)]
pub struct Early {
    /// When the VMM resumed the guest, and when `go` was answered (what restore_ms ends at).
    pub resumed_at: Instant,
    pub answered_at: Instant,
    /// `go`'s answer; None when the agent cannot sample the RNG (the reason is in `no_rng`).
    pub resumed: Option<Resumed>,
    pub no_rng: Option<String>,
    pub clock_skew_ms: Option<f64>,
    pub tls_random: Option<Result<Vec<Sample>, String>>,
    /// The declared identities read in the same burst as the first RNG samples
    /// (`when = "right-after-resume"`).
    pub declared: Vec<(String, declared::Reading)>,
}

/// `t` as ns since the Unix epoch.
pub fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Handshakes whose ServerHello randoms are compared.
pub const TLS_SAMPLES: usize = 3;

/// Guest wall clock minus host wall clock (ms), against the midpoint of the host's clock around
/// the agent's answer. None when the agent cannot read the clock.
pub async fn clock_skew(vm: &mut dyn Vm, t: Duration) -> Option<f64> {
    let before = SystemTime::now();
    let guest = vm.agent()?.time(t).await.ok()?;
    let after = SystemTime::now();
    let host_mid = (unix_ns(before) as i128 + unix_ns(after) as i128) / 2;
    Some((guest as i128 - host_mid) as f64 / 1e6)
}

/// `go` first (with `gate`, if the recipe holds the first read), then the declared identities
/// read right after resume, then the clock, then the TLS server's random; `resumed_at` is when
/// the VMM resumed the guest.
pub async fn right_after_resume(vm: &mut dyn Vm, gate: Option<Gate>, resumed_at: Instant, declared: &[Declared], t: Duration) -> Result<Early, BackendError> {
    let mut early = Early { resumed_at, answered_at: resumed_at, resumed: None, no_rng: None, clock_skew_ms: None, tls_random: None, declared: vec![] };
    match call(vm, "sample the kernel RNG after resume", |a| a.go(gate, t)).await {
        Ok(r) => early.resumed = Some(r),
        Err(BackendError::Agent { source: e @ (AgentError::Unavailable { .. } | AgentError::Unsupported { .. }), .. }) => early.no_rng = Some(e.to_string()),
        Err(BackendError::NoAgent { op, .. }) => early.no_rng = Some(format!("the guest has no agent to {op}")),
        Err(e) => return Err(e),
    }
    early.answered_at = Instant::now();
    for d in declared.iter().filter(|d| d.when == When::RightAfterResume) {
        early.declared.push((d.id.clone(), declared::read(vm, d, Some(resumed_at), t).await));
    }
    early.clock_skew_ms = clock_skew(vm, t).await;
    // A clone without a NIC (nic-replug unplugged it before the snapshot) cannot be reached
    // yet: its TLS server is sampled after the fix-ups instead.
    if let (Some(port), true) = (vm.forwards().get("tls").copied(), vm.machine().devices.nic) {
        early.tls_random = Some(host::tls_random_samples(port, TLS_SAMPLES, resumed_at, Duration::from_secs(10)).await);
    }
    Ok(early)
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

/// The rest of what the checks compare, after the fix-ups: the remaining RNG samples (when `go`
/// was answered), the identity report, `ssh-keyscan`, and the clock again. `early` is what
/// [`right_after_resume`] read (None for a booted VM, which this reads now, with the `declared`
/// identities read right after resume).
pub async fn observe(vm: &mut dyn Vm, early: Option<Early>, declared: &[Declared], t: Duration) -> Result<Observation, BackendError> {
    let mut lap = Lap::default();
    let early = match early {
        Some(e) => e,
        None => {
            let e = right_after_resume(vm, None, Instant::now(), declared, t).await?;
            lap.step("first samples");
            e
        }
    };
    let mut o = Observation {
        vm: vm.name().to_string(),
        host_mac: Some(vm.identity().mac.to_string()),
        clock_skew_at_resume_ms: early.clock_skew_ms,
        resumed_unix_ns: unix_ns(SystemTime::now()).saturating_sub(early.resumed_at.elapsed().as_nanos() as u64),
        tls_random: early.tls_random,
        declared: early.declared.into_iter().collect(),
        ..Default::default()
    };
    if let (None, Some(port)) = (&o.tls_random, vm.forwards().get("tls").copied()) {
        o.tls_random = Some(host::tls_random_samples(port, TLS_SAMPLES, early.resumed_at, Duration::from_secs(60)).await);
        lap.step("TLS handshakes");
    }
    if let Some(port) = vm.forwards().get("ssh").copied() {
        o.ssh_keyscan = Some(host::ssh_host_keys(port, Duration::from_secs(60)).await);
        lap.step("ssh-keyscan");
    }
    // A user's image need not serve ssh or TLS: then those checks are skipped, with what was
    // tried. (A guest built here declares its services, and their failure is an error.)
    if vm.machine().guest.optional {
        if let Some(Err(e)) = &o.ssh_keyscan {
            o.unavailable.insert(CheckId::SshKeyscan, format!("no SSH server answered on guest port 22 ({e})"));
            o.ssh_keyscan = None;
        }
        if let Some(Err(e)) = &o.tls_random {
            let why = format!("no TLS server answered on guest port 443 ({e})");
            o.unavailable.insert(CheckId::OpensslRng, why.clone());
            o.unavailable.insert(CheckId::TlsTicketKey, why);
            o.tls_random = None;
        }
    }
    if !vm.machine().guest.services.is_empty() && vm.forwards().is_empty() {
        let why = match vm.machine().network {
            // The NIC is a port of the segment: the host forwards nothing to the guest's services.
            crate::scenario::Network::Segment => "on a segment network the host reaches no guest port (nothing is forwarded from the host namespace)".to_string(),
            // A libvirt host reached with `run --connect`: a forward would listen over there.
            crate::scenario::Network::User => format!("the VM runs on {} (run --connect): no guest port is forwarded to this machine", vm.host()),
        };
        for c in GUEST_PORT_CHECKS {
            o.unavailable.insert(*c, why.clone());
        }
    }
    if vm.agent().is_none() {
        let why = "the guest has no agent to ask".to_string();
        for c in CheckId::ALL.iter().filter(|c| !HOST_SIDE.contains(c)) {
            o.unavailable.insert(*c, why.clone());
        }
        o.steps = lap.done();
        return Ok(o);
    }
    match early.resumed {
        Some(r) => {
            let later = call(vm, "collect RNG samples", |a| a.samples(t)).await?;
            lap.step("RNG samples");
            o.kernel_rng = r.kernel_rng;
            o.kernel_rng.extend(later.kernel_rng);
            o.random_uuid = r.random_uuid;
            o.random_uuid.extend(later.random_uuid);
            o.uevents = later.uevents;
            o.vmclock = later.vmclock;
            o.vdso_rng = later.vdso_rng;
            o.userspace_rng = r.userspace_rng;
        }
        None => {
            let why = early.no_rng.unwrap_or_else(|| "the agent cannot sample the RNG".into());
            for c in [CheckId::KernelRng, CheckId::UserspaceRng, CheckId::RandomUuid, CheckId::VdsoRng, CheckId::VmgenidUevent, CheckId::Vmclock] {
                o.unavailable.insert(c, why.clone());
            }
        }
    }
    let sources = vm.machine().guest.sources.clone();
    o.identity = Some(call(vm, "read the guest's identity", |a| Box::pin(async move { a.report(&sources, t).await })).await?);
    lap.step("identity report");
    o.clock_skew_ms = clock_skew(vm, t).await;
    lap.step("clock");
    o.steps = lap.done();
    Ok(o)
}

/// The steps of one observation, timed one after another.
struct Lap {
    last: Instant,
    steps: Vec<(String, u64)>,
}

impl Default for Lap {
    fn default() -> Self {
        Lap { last: Instant::now(), steps: vec![] }
    }
}

impl Lap {
    fn step(&mut self, what: &str) {
        self.steps.push((what.to_string(), self.last.elapsed().as_millis() as u64));
        self.last = Instant::now();
    }
    fn done(&mut self) -> Vec<(String, u64)> {
        std::mem::take(&mut self.steps)
    }
}

/// Host-side checks that reach a guest service through a port forwarded to this machine.
pub const GUEST_PORT_CHECKS: &[CheckId] = &[CheckId::SshKeyscan, CheckId::TlsTicketKey, CheckId::OpensslRng];

/// Checks whose values come from the host, not from the guest's agent.
pub const HOST_SIDE: &[CheckId] = &[CheckId::SecretRemanence, CheckId::SshKeyscan, CheckId::TlsTicketKey, CheckId::OpensslRng];

/// How long a VM that booted onto a segment may take to get its addresses.
pub const ADDRESS_WAIT: std::time::Duration = std::time::Duration::from_secs(90);

/// Wait until `vm` holds an IPv4 address of the segment and a global IPv6 address past DAD,
/// as its own address table says: a VM about to be snapshotted (or compared) is bound, so that
/// clones resume bound, not mid-exchange. Ok(ms waited), or Err(why not) after
/// [`ADDRESS_WAIT`].
pub async fn wait_address(vm: &mut dyn crate::backend::Vm, t: std::time::Duration) -> Result<u64, String> {
    let start = std::time::Instant::now();
    let prefix = crate::network::segment::ROUTER_V4.rsplit_once('.').map(|(p, _)| format!("{p}.")).unwrap_or_default();
    let v6_prefix = crate::network::segment::PREFIX_V6.trim_end_matches(':');
    let mut last = String::new();
    while start.elapsed() < ADDRESS_WAIT {
        match call(vm, "read the guest's addresses", |a| a.addrs(t)).await {
            Ok((v6, v4)) => {
                let has4 = v4.iter().any(|a| a.starts_with(&prefix) && a != crate::network::segment::ROUTER_V4);
                let has6 = crate::network::wire::parse_if_inet6(&v6).iter().any(|a| a.addr.starts_with(v6_prefix) && !a.tentative);
                if has4 && has6 {
                    return Ok(start.elapsed().as_millis() as u64);
                }
                last = format!("IPv4 {v4:?}, IPv6 on the segment: {has6}");
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    Err(format!("{} had no address on the segment after {} s ({last})", vm.name(), ADDRESS_WAIT.as_secs()))
}
