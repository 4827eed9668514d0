//! The typed interface to whatever runs inside a guest and answers the harness. The serial probe
//! ([`serial`]) is the first transport; qemu-guest-agent is the next. A transport that cannot do
//! an operation says so with [`AgentError::Unsupported`], and the checks that need it become
//! `skipped` with that reason, never a silent success.
//!
//! Everything an agent returns comes from the guest, so it is untrusted: transports bound every
//! message and turn anything malformed into an error.

pub mod lines;
pub mod qga;
pub mod serial;
pub mod transport;

use async_trait::async_trait;
use clonesafe_protocol::{DigestOf, ExecOutput, Gate, GateDone, Identity, Sample, Sources};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("Agent channel closed")]
    Closed,
    #[error("Agent channel I/O failed")]
    Io(#[from] std::io::Error),
    #[error("Agent sent a line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("Agent sent invalid JSON: {line:?}")]
    BadJson {
        line: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("Agent sent {what} that is not UTF-8 (first bad byte at offset {at}): a protocol error, not evidence")]
    NotUtf8 { what: &'static str, at: usize },
    #[error("No reply from the agent within {0:?} while waiting for {1}")]
    Timeout(Duration, &'static str),
    #[error("Agent answered {got} while {want} was expected")]
    Unexpected { want: &'static str, got: String },
    #[error("Agent reported an error: {0}")]
    Guest(String),
    #[error("The {transport} transport cannot {op}")]
    Unsupported { transport: &'static str, op: &'static str },
    #[error("Cannot {op}: {why}")]
    Unavailable { op: &'static str, why: String },
    #[error("The guest's kernel panicked while it booted (its console says \"{0}\"): waiting longer would not bring the agent up")]
    KernelPanic(String),
}

/// The first samples after `go`: the kernel RNG first, then the program PRNG.
#[derive(Debug, Clone, Default)]
pub struct Resumed {
    pub kernel_rng: Vec<Sample>,
    pub userspace_rng: Vec<Sample>,
    /// Random uuids from the kernel, the first read right after the first kernel RNG sample.
    pub random_uuid: Vec<Sample>,
    /// What the rng-gate did before the first sample, when `go` carried one.
    pub gate: Option<GateDone>,
}

/// What is injected into a guest reached through qemu-guest-agent: the static probe, and the
/// dynamically linked vDSO getrandom helper that runs beside it (guests/vdso-rng; None when it
/// was not built, and `vdso_rng` is then skipped with that reason).
#[derive(Debug, Default)]
pub struct Injected {
    pub probe: Vec<u8>,
    pub vdso_helper: Option<Vec<u8>>,
}

/// What a guest said it destroyed (`drop_sessions`), bounded: at most 64 lines of 120 characters,
/// whitespace runs made single spaces.
pub fn bound_dropped<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<String> {
    lines.filter(|l| !l.trim().is_empty()).take(64).map(|l| crate::text::truncate(&l.split_whitespace().collect::<Vec<_>>().join(" "), 120)).collect()
}

impl Injected {
    /// The probe at `probe` and the vDSO helper beside it, each a bounded regular file opened
    /// without blocking (issue 19, item 9: a FIFO given as --probe blocked the run in open(2)).
    /// Err: no probe (why); a missing helper is only said in the notes.
    pub fn load(probe: &std::path::Path) -> Result<(Injected, Vec<String>), String> {
        let bin = crate::input::read_bounded(probe, 64 << 20).map_err(|e| format!("no probe to inject at {} ({e})", probe.display()))?;
        let hp = probe.with_file_name(clonesafe_protocol::VDSO_HELPER);
        let mut notes = Vec::new();
        let vdso_helper = match crate::input::read_bounded(&hp, 64 << 20) {
            Ok(b) => Some(b),
            Err(e) => {
                notes.push(format!("no vDSO helper to inject at {} ({e}): vdso_rng on qemu-guest-agent guests will be skipped", hp.display()));
                None
            }
        };
        Ok((Injected { probe: bin, vdso_helper }, notes))
    }
}

/// What `samples` collects: the later kernel RNG samples and random uuids, what the uevent
/// listener heard and the VMClock page's three reads (each None: the probe predates it).
#[derive(Debug, Clone, Default)]
pub struct Later {
    pub kernel_rng: Vec<Sample>,
    pub random_uuid: Vec<Sample>,
    pub uevents: Option<clonesafe_protocol::UeventWatch>,
    pub vmclock: Option<clonesafe_protocol::VmclockWatch>,
    pub vdso_rng: Option<clonesafe_protocol::VdsoRngWatch>,
}

impl Resumed {
    /// The guest's monotonic time of the first post-resume sample (0 if none).
    pub fn t0_ns(&self) -> u64 {
        self.kernel_rng.first().map(|s| s.t_ns).unwrap_or(0)
    }
}

/// Whether the guest's copy of clonesafe's probe runs (guest state: clones inherit it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeState {
    /// Part of the guest (the tiny guest's init starts it).
    Builtin,
    /// Injected through qemu-guest-agent, and answering.
    Injected,
    /// Not there, and why.
    Missing(String),
}

/// What the in-guest fix-up did, on the guest's monotonic clock.
#[derive(Debug, Clone)]
pub struct FixupDone {
    pub t_start_ns: u64,
    pub t_rng_ns: u64,
    pub t_done_ns: u64,
    pub steps: Vec<String>,
}

/// The operations the harness asks of a guest. Every call is bounded by `t`.
#[async_trait]
pub trait GuestAgent: Send {
    /// The transport's name, for messages ("serial-probe").
    fn transport(&self) -> &'static str;
    /// Wait for the agent's first sign of life; returns the guest's uptime then, in ms (0 when
    /// the transport cannot tell).
    async fn wait_ready(&mut self, t: Duration) -> Result<u64, AgentError>;
    /// Once after a boot: whatever the transport needs before the first snapshot or probe (for
    /// qemu-guest-agent: wait for the boot to finish, then inject `probe_bin`). Returns notes
    /// for the report.
    async fn prepare(&mut self, probe_bin: Option<&Injected>, t: Duration) -> Result<Vec<String>, AgentError>;
    /// Touch the kernel RNG (so a due reseed happens now), then block until `go`: the VM is
    /// snapshotted while the agent waits here, so clones resume exactly at their next request.
    async fn hold(&mut self, t: Duration) -> Result<(), AgentError>;
    /// The kernel RNG first, then the program PRNG; later samples are taken at fixed offsets
    /// and collected by [`GuestAgent::samples`]. With a `gate`, the first sample waits for it.
    async fn go(&mut self, gate: Option<Gate>, t: Duration) -> Result<Resumed, AgentError>;
    async fn samples(&mut self, t: Duration) -> Result<Later, AgentError>;
    /// The identity as the guest sees it, with file-based identities read from `sources`.
    async fn report(&mut self, sources: &Sources, t: Duration) -> Result<Identity, AgentError>;
    /// Credit `entropy` to the kernel, reseed the CRNG, regenerate the guest's identities and
    /// reseed the program PRNG.
    async fn fixup(&mut self, entropy: &[u8], t: Duration) -> Result<FixupDone, AgentError>;
    /// Credit `entropy` and force a CRNG reseed, nothing else; returns the guest's monotonic
    /// time when it was done.
    async fn reseed(&mut self, entropy: &[u8], t: Duration) -> Result<u64, AgentError>;
    /// The guest's wall clock, ns since the Unix epoch.
    async fn time(&mut self, t: Duration) -> Result<i64, AgentError>;
    /// The guest's CLOCK_MONOTONIC, the clock of the RNG samples and the fix-up times.
    async fn monotonic(&mut self, t: Duration) -> Result<u64, AgentError>;
    /// Set the guest's wall clock.
    async fn set_time(&mut self, realtime_ns: i64, t: Duration) -> Result<(), AgentError>;
    /// The guest's OS, as the agent names it ("Debian GNU/Linux 12 (bookworm)").
    async fn os_info(&mut self, t: Duration) -> Result<String, AgentError>;
    /// Poll until a NIC with `mac` appears (at most `within`); its guest time, or None.
    async fn wait_nic(&mut self, mac: &str, within: Duration, t: Duration) -> Result<Option<u64>, AgentError>;
    /// Write, read back, delete and sync a secret given encoded (each byte XOR 0xff, in hex).
    async fn plant_canary(&mut self, secret_xff_hex: String, t: Duration) -> Result<(), AgentError>;
    /// Remanence mitigation in the guest; returns what the guest reported doing.
    async fn scrub(&mut self, t: Duration) -> Result<String, AgentError>;
    async fn write_file(&mut self, path: &str, data: &str, t: Duration) -> Result<(), AgentError>;
    /// The file's contents, or None when it does not exist.
    async fn read_file(&mut self, path: &str, t: Duration) -> Result<Option<String>, AgentError>;
    /// Make the guest fill and hold up to `mib` MiB of non-zero memory (`clonesafe bench`);
    /// returns the MiB it filled (no more than it had available) and how long it took, in ms.
    async fn dirty(&mut self, mib: u32, t: Duration) -> Result<(u32, u64), AgentError>;
    /// Renew the guest's DHCP lease with the identity it has now: systemd-networkd computes its
    /// DUID from machine-id once, at start, so it is restarted (it releases, then asks anew).
    /// Returns what was done.
    async fn renew_lease(&mut self, t: Duration) -> Result<String, AgentError>;
    /// The guest's addresses: `/proc/net/if_inet6` verbatim and its local IPv4 addresses.
    async fn addrs(&mut self, t: Duration) -> Result<(String, Vec<String>), AgentError>;
    /// A declared identity's file (any absolute path): the SHA-256 of all of it, its size and,
    /// with `text_bytes` > 0, its first bytes as text. None when it does not exist.
    async fn digest_file(&mut self, path: &str, text_bytes: u32, t: Duration) -> Result<Option<DigestOf>, AgentError>;
    /// A declared identity's command (no shell), killed after `limit` with what it printed so
    /// far, each stream kept up to `max_bytes`. `t` bounds the exchange beyond `limit`.
    async fn run_command(&mut self, argv: &[String], limit: Duration, max_bytes: u32, t: Duration) -> Result<ExecOutput, AgentError>;
    /// Open a TCP session from the guest to `peer` and keep it (before a snapshot: the session
    /// its clones inherit); retries for `within` while the guest has no address yet. Returns the
    /// connection's local and remote address.
    async fn session_open(&mut self, peer: std::net::SocketAddrV4, within: Duration, t: Duration) -> Result<(String, String), AgentError>;
    /// Speak as `id` on the session (opening one when the guest holds none), and read the peer's
    /// answer.
    async fn session_speak(&mut self, peer: std::net::SocketAddrV4, id: String, within: Duration, t: Duration) -> Result<clonesafe_protocol::SessionSpeech, AgentError>;
    /// Destroy the guest's TCP connections to `dst` (`ss -K dst DST`); returns one line per
    /// connection destroyed.
    async fn drop_sessions(&mut self, dst: std::net::Ipv4Addr, t: Duration) -> Result<Vec<String>, AgentError>;
}
