//! The probe protocol: one JSON object per line, over a serial port that is not the console.
//!
//! ```text
//!   host                                   guest probe (/dev/ttyS1)
//!    |  <------------------------------  {"event":"ready",...}        (once, at probe start)
//!    |  {"op":"hold"}  ---------------->  reads 8 bytes of getrandom, then
//!    |  <------------------------------  {"event":"held"}             and blocks on the next line
//!    |        ... host stops the VM, snapshots it, restores clones ...
//!    |  {"op":"go"}    ---------------->  getrandom() FIRST, then the PRNG, then more samples
//!    |  <------------------------------  {"event":"resumed",...}       (first samples)
//!    |  {"op":"samples"} -------------->  more kernel RNG samples, at fixed offsets
//!    |  <------------------------------  {"event":"samples",...}
//!    |  {"op":"report"} --------------->
//!    |  <------------------------------  {"event":"report",...}
//! ```
//!
//! The guest controls its side of the channel, so the host treats every line as untrusted:
//! lines are bounded by [`MAX_LINE`] and anything that does not parse is an error, not a panic.

use serde::{Deserialize, Serialize};

pub mod blockid;
pub mod tpm;
pub use blockid::BlockId;

/// Longest line either side accepts, newline excluded.
pub const MAX_LINE: usize = 64 * 1024;

/// The kernel log line that a vmgenid-triggered reseed produces (drivers/char/random.c,
/// `add_vmfork_randomness`).
pub const VMFORK_RESEED_MSG: &str = "crng reseeded due to virtual machine fork";

/// Requests from the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Touch the kernel RNG (so any due reseed happens now), answer `held`, and wait.
    Hold,
    /// Sample the kernel RNG before anything else, then the userspace PRNG; answer at once.
    /// With a `gate`, the first sample waits until the clone has proven its reseed (see
    /// [`Gate`]): the rng-gate fix-up.
    Go {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gate: Option<Gate>,
    },
    /// Collect the remaining kernel RNG samples, which a probe thread takes at
    /// [`KERNEL_RNG_SAMPLE_OFFSETS_MS`] after the first sample of the last `go`.
    Samples,
    /// Report the guest-visible identity, reading the file-based identities where `sources`
    /// says (the guest's manifest); absent fields fall back to [`Sources::default`].
    Report {
        #[serde(default)]
        sources: Sources,
    },
    /// Write `data` to `path` (must be under `/data`), then fsync.
    WriteFile { path: String, data: String },
    /// Read `path` (must be under `/data`); `data` is null when absent.
    ReadFile { path: String },
    /// Agent fix-up after a clone resumes: credit `entropy_hex` (host entropy) to the kernel
    /// pool (RNDADDENTROPY) and force a CRNG reseed (RNDRESEEDCRNG), then regenerate machine-id,
    /// hostname and SSH host keys, then reseed the probe's own PRNG (standing in for any
    /// long-lived program's random state).
    Fixup { entropy_hex: String },
    /// Poll the guest's NICs until one has `mac`, for at most `timeout_ms`.
    WaitNic { mac: String, timeout_ms: u64 },
    /// Decode `secret_xff_hex` (each byte XOR 0xff, hex), write it to a file on /data, read it
    /// back, delete it, sync, and wipe the probe's own copies: a deleted secret whose only traces
    /// are the file's.
    Canary { secret_xff_hex: String },
    /// Mitigate remanence: fstrim /data (discard freed blocks) and drop the page cache.
    Scrub,
    /// Credit `entropy_hex` to the kernel pool (RNDADDENTROPY), force a CRNG reseed
    /// (RNDRESEEDCRNG) and reseed the probe's PRNG; nothing else (the kernel half of a fix-up
    /// whose identity half is done through another agent).
    Reseed { entropy_hex: String },
    /// The guest's clocks: CLOCK_REALTIME (ns since the Unix epoch) and CLOCK_MONOTONIC (the
    /// clock of the RNG samples).
    Time,
    /// Set the guest's wall clock (CLOCK_REALTIME) to `realtime_ns`.
    SetTime { realtime_ns: i64 },
    /// Allocate `mib` MiB, fill every byte with non-zero data, and keep it until the probe
    /// exits: guest RAM the snapshot must carry (`clonesafe bench`). The probe refuses more
    /// than [`MAX_DIRTY_MIB`], fills no more than the guest has available (less a reserve), and
    /// answers how much it filled.
    Dirty { mib: u32 },
    /// The guest's own addresses: `/proc/net/if_inet6` as the kernel writes it (address,
    /// ifindex, prefix length, scope, flags, name; flag 0x08 is IFA_F_DADFAILED), and the IPv4
    /// addresses `/proc/net/fib_trie` lists as local. Each bounded by [`MAX_ADDRS_BYTES`].
    Addrs,
    /// A declared identity's file: its SHA-256 and size, and with `text_bytes` > 0 its first
    /// `text_bytes` bytes as text (for a `match` pattern). Any absolute path (the file's
    /// contents are not written anywhere; `text_bytes` is at most [`MAX_DECLARED_TEXT`]).
    Digest { path: String, #[serde(default)] text_bytes: u32 },
    /// Run a declared identity's command: `argv[0]` absolute or looked up in
    /// `/usr/sbin:/usr/bin:/sbin:/bin`, no shell, stdin closed. Each stream is kept up to
    /// `max_bytes` (at most [`MAX_DECLARED_TEXT`]); after `timeout_ms` the command is killed and
    /// what it printed so far comes back with `timed_out`.
    Exec { argv: Vec<String>, timeout_ms: u64, max_bytes: u32 },
    /// Open a TCP connection to the harness's peer at `addr`:`port` (on the segment), retrying
    /// until `timeout_ms` (the guest may not hold a lease yet), say [`SESSION_HELLO`] on it and
    /// wait for the peer's answer; keep it open. Sent to a source before `hold`: the session a
    /// live clone inherits (issue 22, `tcp_session`).
    SessionOpen { addr: String, port: u16, timeout_ms: u64 },
    /// Write `id <id>` on the session (opening one first, within `timeout_ms`, when there is none:
    /// a VM that was booted, not restored), then read the peer's answer for at most
    /// [`SESSION_READ_MS`].
    SessionSpeak { addr: String, port: u16, id: String, timeout_ms: u64 },
    /// What `ss -K dst <dst>` does: destroy every TCP socket connected to `dst` (SOCK_DESTROY over
    /// NETLINK_SOCK_DIAG, which needs CONFIG_INET_DIAG_DESTROY and tcp_diag); the drop-sessions
    /// fix-up.
    DropSessions { dst: String },
}

/// The first line a probe writes on a session, before the snapshot.
pub const SESSION_HELLO: &str = "hello";
/// How long a probe waits for the peer's answer after speaking on a session.
pub const SESSION_READ_MS: u64 = 1500;
/// The longest id a probe writes on a session, and the longest answer line it reads back.
pub const SESSION_MAX_LINE: usize = 200;

/// What a probe saw when it spoke on its session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSpeech {
    /// The connection's local and remote address ("10.77.0.23:41234").
    pub local: String,
    pub remote: String,
    /// Whether the connection was opened before the snapshot (held across it), or now.
    pub inherited: bool,
    /// The guest's monotonic time of the write.
    pub t_ns: u64,
    /// The write's error (None: the kernel took the bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_error: Option<String>,
    /// The peer's answer line, as read (bounded by [`SESSION_MAX_LINE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// Why no answer came: a timeout, a reset, the peer closing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_error: Option<String>,
}

/// What the vDSO helper (`clonesafe-vdso-rng`, started by the probe at `hold`, dynamically linked
/// against the guest's glibc) said: which path glibc's getrandom() took, tested under a seccomp
/// filter that forbids the system call, and its samples after resume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VdsoRngWatch {
    /// Whether the helper ran (it is injected beside the probe through qemu-guest-agent).
    pub helper: bool,
    /// gnu_get_libc_version().
    #[serde(default)]
    pub glibc: String,
    /// Whether the kernel's vDSO exports `__vdso_getrandom` (Linux 6.11+).
    #[serde(default)]
    pub vdso_symbol: bool,
    /// `vdso` (getrandom() answered while the system call was forbidden) or `syscall`.
    #[serde(default)]
    pub path: String,
    /// Why that path, in the helper's words.
    #[serde(default)]
    pub why: String,
    /// 8 bytes per sample, at [`KERNEL_RNG_SAMPLE_OFFSETS_MS`] from the first, taken from "go".
    #[serde(default)]
    pub samples: Vec<Sample>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The helper's file name, beside the probe's own.
pub const VDSO_HELPER: &str = "clonesafe-vdso-rng";

/// The most of a declared identity's output (each stream) or file text that comes back: a
/// reply must fit in [`MAX_LINE`] even when every byte is escaped.
pub const MAX_DECLARED_TEXT: u32 = 8 * 1024;

/// A declared identity's file, as `digest` found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestOf {
    /// Hex SHA-256 of the whole file.
    pub sha256: String,
    pub size: u64,
    /// The first bytes asked for, as text (invalid UTF-8 replaced); empty when none were.
    #[serde(default)]
    pub text: String,
}

/// What a declared identity's command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOutput {
    /// Its exit status; None when it was killed (by the time limit, or a signal).
    pub exit: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    /// A stream was longer than `max_bytes` and was cut.
    #[serde(default)]
    pub truncated: bool,
}

/// The most of each address file the probe sends back.
pub const MAX_ADDRS_BYTES: usize = 16 * 1024;

/// The most a single `dirty` request may ask the probe to hold, in MiB.
pub const MAX_DIRTY_MIB: u32 = 16384;

/// Where a guest keeps the identities that are files. Each is a path inside the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sources {
    /// The machine-id file.
    pub machine_id: String,
    /// The directory holding `ssh_host_*_key.pub`.
    pub ssh_host_keys: String,
}

impl Default for Sources {
    /// The tiny guest's layout: its identity lives on the /data disk.
    fn default() -> Self {
        Sources { machine_id: "/data/etc/machine-id".into(), ssh_host_keys: "/data/etc/ssh".into() }
    }
}

/// What the probe waits for before its first sample after resume (the rng-gate fix-up). The
/// vmgenid reseed is asynchronous (an ACPI notify handled by a kernel worker), so a read in the
/// first milliseconds after resume can come before it; the gate closes that window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    /// Wait (at most this long) for the kernel to log the vmgenid reseed; 0: do not wait.
    pub wait_vmgenid_ms: u64,
    /// Then credit this host entropy and force a CRNG reseed; empty: credit nothing and do not
    /// reseed (the genid-wait fix-up).
    pub entropy_hex: String,
    /// Wait (at most this long) for the kernel's `NEW_VMGENID=1` uevent, heard by the listener
    /// opened at `hold` ([`UeventWatch`]); 0: do not wait (the genid-wait fix-up).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub wait_uevent_ms: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What the gate did, on the guest's monotonic clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateDone {
    pub t_start_ns: u64,
    /// When the vmgenid reseed was seen in the kernel log (None: not waited for, or not seen).
    pub vmgenid_seen_ns: Option<u64>,
    /// When the `NEW_VMGENID` uevent was heard (None: not waited for, or not heard in time).
    #[serde(default)]
    pub uevent_seen_ns: Option<u64>,
    /// When the gate let the first sample go: after RNDRESEEDCRNG returned, or, without
    /// entropy to credit, when the wait ended.
    pub t_reseeded_ns: u64,
}

/// A TPM's endorsement key, as the digest of its public area ([`tpm`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TpmEk {
    /// The device it was read through (/dev/tpmrm0).
    pub device: String,
    /// Which EK ([`tpm::EK_TEMPLATE`]).
    pub template: String,
    /// Hex SHA-256 of the EK's TPMT_PUBLIC (its public point and template).
    pub sha256: String,
}

/// The digest of a file that must be unique per machine, and what the guest says about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    pub path: String,
    /// Hex SHA-256 of the contents.
    pub sha256: String,
    /// A symlink (its target's digest is given): not a file of its own.
    #[serde(default)]
    pub symlink: bool,
    /// For systemd's random seed: whether the `user.random-seed-creditable` xattr is set
    /// (systemd docs/RANDOM_SEEDS.md). None where the question does not apply.
    #[serde(default)]
    pub creditable: Option<bool>,
}

/// A credential found in the guest, never sent itself: SHA-256 of a password hash from
/// /etc/shadow, or of a user's private SSH key file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// `password` or `ssh_key`.
    pub kind: String,
    /// The account (password) or the key file's path (ssh_key).
    pub of: String,
    pub sha256: String,
}

/// The files that hold a machine account's secret (virt-sysprep has no operation for them; the
/// Azure agent's deprovision and Samba's docs say a cloned member must rejoin).
pub const MACHINE_ACCOUNT_FILES: &[&str] = &["/etc/krb5.keytab", "/var/lib/samba/private/secrets.tdb", "/var/lib/samba/private/secrets.keytab"];

/// The error text the agent-only path (no probe in the guest) gives for the identities only the
/// probe reads; checks make it `skipped`, not `error`.
pub const PROBE_ONLY: &str = "read by clonesafe's probe only (it could not run in this guest)";

/// The password hashes in an /etc/shadow text: (account, hash) for every field that holds one
/// (a crypt string, locked with a leading `!` or not); `*`, `!`, `!*` and empty fields hold none.
pub fn shadow_hashes(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let (user, hash) = (f.next()?, f.next()?);
            let h = hash.trim_start_matches('!');
            (h.starts_with('$') && h.len() > 3).then(|| (user.to_string(), h.to_string()))
        })
        .collect()
}

/// One random sample and the guest's CLOCK_MONOTONIC time when it was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    pub t_ns: u64,
    pub hex: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    pub name: String,
    pub mac: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    pub name: String,
    pub serial: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostKey {
    pub file: String,
    /// OpenSSH-style `SHA256:<base64>` of the public key blob.
    pub fingerprint: String,
}

/// Everything the guest can tell about who it is. A value the probe could not read is `None`
/// with the reason in `errors`, keyed by field name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub nics: Vec<Nic>,
    pub product_uuid: Option<String>,
    /// /sys/class/dmi/id/product_serial (readable by root only).
    #[serde(default)]
    pub product_serial: Option<String>,
    pub disks: Vec<Disk>,
    pub machine_id: Option<String>,
    pub hostname: Option<String>,
    pub boot_id: Option<String>,
    pub ssh_host_keys: Vec<HostKey>,
    /// How many times the kernel log says the CRNG was reseeded because of a VM fork.
    pub vmfork_reseeds: u32,
    /// When each of those reseeds happened, converted to the probe's CLOCK_MONOTONIC (ns), the
    /// clock of the RNG samples: the kernel log's own timestamps are shifted by the offset of a
    /// marker the probe writes to /dev/kmsg.
    #[serde(default)]
    pub vmfork_reseed_ns: Vec<u64>,
    /// systemd's /var/lib/systemd/random-seed (None: the file does not exist).
    #[serde(default)]
    pub random_seed: Option<FileDigest>,
    /// /var/lib/systemd/credential.secret (None: absent).
    #[serde(default)]
    pub credential_secret: Option<FileDigest>,
    /// /var/lib/dbus/machine-id (None: absent).
    #[serde(default)]
    pub dbus_machine_id: Option<FileDigest>,
    /// cloud-init's /var/lib/cloud/data/instance-id (None: absent).
    #[serde(default)]
    pub cloud_init_instance_id: Option<String>,
    /// systemd's /etc/machine-info (pretty hostname, deployment, location; None: absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_info: Option<FileDigest>,
    /// Each block device's file system, LVM or LUKS identity (see [`blockid`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub block_ids: Vec<BlockId>,
    /// A machine account's secrets: /etc/krb5.keytab, Samba's secrets.tdb (the ones present).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub machine_account: Vec<FileDigest>,
    /// Credentials baked into the image: each password hash in /etc/shadow and each user's
    /// private SSH key, as digests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<Credential>,
    /// The TPM's endorsement key (None: the guest has no TPM device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm_ek: Option<TpmEk>,
    pub uptime_ms: u64,
    pub errors: Vec<(String, String)>,
}

/// Messages from the guest.
// One reply at a time per VM: the identity report's size (it grew with the disk and file
// hazards) costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply {
    Ready { probe_version: String, uptime_ms: u64 },
    Held,
    Resumed {
        kernel_rng: Vec<Sample>,
        userspace_rng: Vec<Sample>,
        /// `/proc/sys/kernel/random/uuid` read right after the first kernel RNG sample (the
        /// uuid as the sample's text).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        random_uuid: Vec<Sample>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gate: Option<GateDone>,
    },
    Samples {
        kernel_rng: Vec<Sample>,
        /// A random uuid read right after each later kernel RNG sample.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        random_uuid: Vec<Sample>,
        /// What the uevent listener (opened at `hold`, before the snapshot) heard.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uevents: Option<UeventWatch>,
        /// The VMClock page at `hold`, right after resume and 1 s later (None: no probe support;
        /// `device: false`: no /dev/vmclock0).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vmclock: Option<VmclockWatch>,
        /// getrandom() through the guest's own glibc, from the helper started at `hold` (None: a
        /// probe that predates it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vdso_rng: Option<VdsoRngWatch>,
    },
    Report { identity: Identity },
    Written { path: String },
    File { path: String, data: Option<String> },
    FixedUp { t_start_ns: u64, t_rng_ns: u64, t_done_ns: u64, steps: Vec<String> },
    /// `t_ns` is the guest's monotonic time when the NIC was first seen; null on timeout.
    NicSeen { mac: String, t_ns: Option<u64> },
    CanaryPlanted,
    Scrubbed { output: String },
    Reseeded { t_ns: u64 },
    Time { realtime_ns: i64, monotonic_ns: u64 },
    TimeSet,
    /// `mib` MiB now held (what was filled, which can be less than asked), filled in `ms`
    /// milliseconds (the guest's monotonic clock).
    Dirtied { mib: u32, ms: u64 },
    /// `if_inet6`: the kernel's IPv6 address table, verbatim; `ipv4`: local IPv4 addresses.
    Addrs { if_inet6: String, ipv4: Vec<String> },
    /// `digest`'s answer; `found` is None when the file does not exist.
    Digested { path: String, found: Option<DigestOf> },
    Executed { output: ExecOutput },
    SessionOpened { local: String, remote: String },
    SessionSpoke { speech: SessionSpeech },
    /// How many sockets were destroyed, and each one's local and remote address.
    SessionsDropped { dropped: Vec<String> },
    Error { message: String },
}

/// The kernel uevents a probe heard between `hold` and `samples`: a NETLINK_KOBJECT_UEVENT
/// socket bound before the snapshot, read on its own thread, so a clone's `NEW_VMGENID=1` is
/// timed when it arrives, on the clock of the RNG samples. Linux 6.8 added that uevent
/// (ad6bcdad2b67, "vmgenid: emit uevent when VMGENID updates": drivers/virt/vmgenid.c,
/// vmgenid_notify() after add_vmfork_randomness()); a revert was posted in April 2024 ("Revert
/// \"vmgenid: emit uevent when VMGENID updates\"", Cc stable), and Debian's 6.12 and 7.3 were
/// measured not to send it: hence the positive control.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UeventWatch {
    /// `uname -r`: whether the kernel sends the uevent at all (6.8+).
    pub kernel: String,
    /// Whether the guest has a vmgenid device (ACPI `QEMUVGID` or `VM_Gen_Counter`).
    pub vmgenid_device: bool,
    /// Why the listener could not listen (None: it listened from `hold` on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// CLOCK_MONOTONIC (ns) at which each `NEW_VMGENID=1` uevent was received.
    pub new_vmgenid_ns: Vec<u64>,
    /// Every uevent received in that time, of any kind.
    pub seen: u32,
    /// The positive control, when the guest has a vmgenid device and no NEW_VMGENID came: the
    /// probe asked the kernel for a synthetic `change` uevent of that device (its sysfs `uevent`
    /// file) and says whether the listener heard it (None: not tried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_heard: Option<bool>,
    /// The first line (`ACTION@DEVPATH`) of the first [`UEVENT_HEADS`] of them, each cut at 160
    /// bytes: what else the kernel said.
    #[serde(default)]
    pub heads: Vec<String>,
}

/// The VMClock device's shared page (Linux include/uapi/linux/vmclock-abi.h, `struct
/// vmclock_abi`), read through /dev/vmclock0 (drivers/ptp/ptp_vmclock.c, Linux 6.13+) under its
/// seqcount. QEMU's `-device vmclock` (9.1+) provides it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmclockPage {
    /// CLOCK_MONOTONIC (ns) when read.
    pub t_ns: u64,
    pub size: u32,
    pub version: u16,
    pub seq_count: u32,
    /// Changes to another non-repeating value when the CPU counter is disrupted (a migration).
    pub disruption_marker: u64,
    pub flags: u64,
    pub clock_status: u8,
    /// Bumped each time the guest is loaded from a saved state, when the hypervisor says it does
    /// (flags bit 8, VMCLOCK_FLAG_VM_GEN_COUNTER_PRESENT) and the page is large enough to hold it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_generation_counter: Option<u64>,
}

/// The VMClock page a probe read at `hold` (before the snapshot: what each clone inherits), right
/// after the first post-resume sample, and [`VMCLOCK_AFTER_MS`] after it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmclockWatch {
    /// Whether /dev/vmclock0 exists.
    pub device: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_hold: Option<VmclockPage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_resume: Option<VmclockPage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<VmclockPage>,
}

/// When the VMClock page is read the second time, in ms after the first post-resume sample.
pub const VMCLOCK_AFTER_MS: u64 = 1000;

/// How many uevents' first lines a [`UeventWatch`] keeps.
pub const UEVENT_HEADS: usize = 16;

/// Whether a kernel of this release (`uname -r`) could send `NEW_VMGENID` at all: it was added in
/// Linux 6.8. (Whether it still does is measured: see [`UeventWatch`].)
pub fn kernel_may_send_new_vmgenid(release: &str) -> bool {
    let mut it = release.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty()).map(|p| p.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0)) >= (6, 8)
}

/// How long after the first post-`go` sample `samples` waits for a `NEW_VMGENID` uevent that
/// has not come yet, when the guest has a vmgenid device and a kernel that sends it.
pub const UEVENT_WAIT_MS: u64 = 1000;

/// Offsets from the first post-`go` sample at which kernel RNG samples are taken, in ms
/// (the first, 0, is taken by `go` itself; the rest by `samples`).
pub const KERNEL_RNG_SAMPLE_OFFSETS_MS: &[u64] = &[0, 1, 5, 20, 100, 300];

/// Number of userspace PRNG outputs reported after `go`.
pub const USERSPACE_RNG_SAMPLES: usize = 3;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_use_the_documented_wire_form() {
        assert_eq!(serde_json::to_string(&Request::Hold).unwrap(), r#"{"op":"hold"}"#);
        assert_eq!(serde_json::to_string(&Request::Go { gate: None }).unwrap(), r#"{"op":"go"}"#);
        assert_eq!(serde_json::from_str::<Request>(r#"{"op":"go"}"#).unwrap(), Request::Go { gate: None });
        let r: Request = serde_json::from_str(r#"{"op":"read_file","path":"/data/x"}"#).unwrap();
        assert_eq!(r, Request::ReadFile { path: "/data/x".into() });
        assert!(serde_json::from_str::<Request>(r#"{"op":"read_file","path":"/data/x","extra":1}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"reboot"}"#).is_err());
        // The form before `sources` existed still parses, with the tiny guest's paths.
        let r: Request = serde_json::from_str(r#"{"op":"report"}"#).unwrap();
        assert_eq!(r, Request::Report { sources: Sources::default() });
    }

    #[test]
    fn which_kernels_could_send_new_vmgenid() {
        assert!(!kernel_may_send_new_vmgenid("6.1.0-57-amd64"));
        assert!(kernel_may_send_new_vmgenid("6.12.117+deb13-amd64"));
        assert!(kernel_may_send_new_vmgenid("7.3.4+deb13-amd64"));
        assert!(!kernel_may_send_new_vmgenid(""));
    }

    #[test]
    fn replies_round_trip() {
        let r = Reply::Resumed {
            kernel_rng: vec![Sample { t_ns: 5, hex: "00ff".into() }],
            userspace_rng: vec![],
            random_uuid: vec![],
            gate: None,
        };
        let s = serde_json::to_string(&r).unwrap();
        assert!(s.starts_with(r#"{"event":"resumed""#), "{s}");
        assert_eq!(serde_json::from_str::<Reply>(&s).unwrap(), r);
    }
}
