//! qemu-guest-agent as a transport (QEMU's qga/qapi-schema.json). It needs nothing of
//! clonesafe's inside the guest, so it serves any Linux image that runs the agent: identities are
//! read through its file commands (`guest-file-open/read/close`), commands run through
//! `guest-exec` with captured output, and time through `guest-get-time`/`guest-set-time`.
//!
//! The RNG hold/go protocol needs a process that blocks inside the guest and answers at once
//! after resume, which the agent cannot be; so clonesafe *injects* its static probe: it uploads
//! the binary with `guest-file-write`, starts it with `guest-exec` on a second virtio-serial port
//! (`org.clonesafe.probe.0`), and from then on the probe serves hold/go/samples/report. If
//! injection fails (no exec, noexec mounts), the reason is kept, and what needs the probe is
//! unavailable with that reason (its checks become `skipped`).
//!
//! The wire is either a socket the harness owns (the QEMU backend) or libvirt's
//! `virDomainQemuAgentCommand` (the libvirt backend), behind [`QgaWire`]. Every reply is bounded:
//! the guest controls the agent.

use super::lines::read_line;
use super::serial::ProbeChannel;
use super::{AgentError, FixupDone, GuestAgent, Resumed};
use async_trait::async_trait;
use base64::Engine;
use clonesafe_protocol::{Disk, Gate, HostKey, Identity, Nic, Sources};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// Longest reply line accepted from the agent (a file chunk of 48 KiB is about 64 KiB of base64).
pub const MAX_REPLY: usize = 4 << 20;
/// Longest file read through the agent.
pub const MAX_FILE: usize = 1 << 20;
/// Longest declared file digested through the agent.
pub const MAX_DIGEST: u64 = 64 << 20;
/// Bytes per guest-file-write. Through libvirt (libvirt 9.0, qemu-ga 7.2) 1 MiB chunks reached the
/// agent mangled ("JSON parse error, invalid keyword 'buf'", measured) and left the agent
/// unusable; 64 KiB ones arrived whole. 48 KiB is the size reads use.
pub const WRITE_CHUNK: usize = 48 << 10;
/// Where the injected probe's file requests are confined (on the guest's root disk).
pub const PROBE_DATA_DIR: &str = "/var/lib/clonesafe-probe";
/// The virtio-serial port the injected probe talks on.
pub const PROBE_PORT: &str = "org.clonesafe.probe.0";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// One agent command and its `return` value.
#[async_trait]
pub trait QgaWire: Send {
    async fn execute(&mut self, cmd: &str, args: Value, t: Duration) -> Result<Value, AgentError>;
}

/// The agent on a socket the harness owns: line-delimited JSON, each command tagged with an
/// `id` that its reply echoes. Replies to earlier, timed-out commands (and the 0xff sentinel of
/// guest-sync-delimited) are skipped.
pub struct SocketWire {
    reader: BufReader<Box<dyn AsyncRead + Send + Unpin>>,
    writer: Box<dyn AsyncWrite + Send + Unpin>,
    next_id: u64,
}

impl SocketWire {
    pub fn new<S: AsyncRead + AsyncWrite + Send + Unpin + 'static>(stream: S) -> Self {
        let (r, w) = tokio::io::split(stream);
        SocketWire { reader: BufReader::new(Box::new(r)), writer: Box::new(w), next_id: 0 }
    }
}

/// The `return` of a reply, or the agent's error as [`AgentError::Guest`].
pub fn reply_value(cmd: &str, v: Value) -> Result<Value, AgentError> {
    if let Some(r) = v.get("return") {
        return Ok(r.clone());
    }
    let e = &v["error"];
    Err(AgentError::Guest(format!("{cmd}: {}: {}", e["class"].as_str().unwrap_or("?"), e["desc"].as_str().unwrap_or("?"))))
}

#[async_trait]
impl QgaWire for SocketWire {
    async fn execute(&mut self, cmd: &str, args: Value, t: Duration) -> Result<Value, AgentError> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "execute": cmd, "id": id });
        if args.as_object().is_some_and(|o| !o.is_empty()) {
            msg["arguments"] = args;
        }
        let mut s = msg.to_string();
        s.push('\n');
        self.writer.write_all(s.as_bytes()).await?;
        self.writer.flush().await?;
        let wait = async {
            loop {
                let line = read_line(&mut self.reader, MAX_REPLY).await?;
                // guest-sync-delimited puts a 0xff sentinel before its reply; anything else that
                // is not UTF-8 is refused, not replaced (a mangled value would count as evidence).
                let start = line.iter().position(|&b| b != 0xff).unwrap_or(line.len());
                let text = std::str::from_utf8(&line[start..]).map_err(|e| AgentError::NotUtf8 { what: "a qemu-guest-agent reply", at: start + e.valid_up_to() })?;
                let text = text.trim();
                let Ok(v) = serde_json::from_str::<Value>(text) else { continue };
                if v.get("id").and_then(Value::as_u64) == Some(id) {
                    return reply_value(cmd, v);
                }
            }
        };
        tokio::time::timeout(t, wait).await.map_err(|_| AgentError::Timeout(t, "a qemu-guest-agent reply"))?
    }
}

/// What a command run through the agent gave back.
#[derive(Debug, Clone)]
pub struct ExecResult {
    pub exitcode: i64,
    pub out: String,
    pub err: String,
}

/// The agent, and the probe injected through it once that has worked.
pub struct Qga {
    wire: Box<dyn QgaWire>,
    probe: Option<ProbeChannel>,
    /// The probe port's channel before injection.
    pending: Option<ProbeChannel>,
    /// Why there is no probe (before injection, or after it failed).
    no_probe: String,
}

impl Qga {
    /// A freshly booted guest: the probe port's channel waits for the injection.
    pub fn new(wire: Box<dyn QgaWire>, pending: Option<ProbeChannel>) -> Self {
        Qga { wire, probe: None, pending, no_probe: "the probe has not been injected".into() }
    }

    /// A clone: its memory holds the source's probe if the source had one (`state`), already
    /// past `ready`, blocked where the source held it.
    pub fn restored(wire: Box<dyn QgaWire>, channel: Option<ProbeChannel>, state: &super::ProbeState) -> Self {
        match (state, channel) {
            (super::ProbeState::Injected, Some(c)) => Qga { wire, probe: Some(c), pending: None, no_probe: String::new() },
            (super::ProbeState::Missing(why), _) => Qga { wire, probe: None, pending: None, no_probe: why.clone() },
            _ => Qga { wire, probe: None, pending: None, no_probe: "the clone has no probe port".into() },
        }
    }

    /// Whether the injected probe serves the RNG protocol, and if not, why.
    pub fn probe_status(&self) -> Result<(), &str> {
        if self.probe.is_some() {
            Ok(())
        } else {
            Err(&self.no_probe)
        }
    }

    pub async fn cmd(&mut self, cmd: &str, args: Value, t: Duration) -> Result<Value, AgentError> {
        self.wire.execute(cmd, args, t).await
    }

    /// `guest-sync` until the agent answers (each try bounded by 2 s), within `t`.
    pub async fn sync(&mut self, t: Duration) -> Result<(), AgentError> {
        let deadline = Instant::now() + t;
        loop {
            let id = u32::from_le_bytes(crate::identity::host_entropy(4).try_into().expect("4 bytes")) as u64;
            let left = deadline.saturating_duration_since(Instant::now());
            match self.wire.execute("guest-sync", json!({ "id": id }), left.min(Duration::from_secs(2))).await {
                Ok(v) if v.as_u64() == Some(id) => return Ok(()),
                Ok(_) | Err(AgentError::Timeout(..)) | Err(AgentError::Guest(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Ok(v) => return Err(AgentError::Unexpected { want: "guest-sync's id", got: v.to_string() }),
                Err(AgentError::Timeout(..)) => return Err(AgentError::Timeout(t, "qemu-guest-agent to answer guest-sync")),
                Err(e) => return Err(e),
            }
        }
    }

    /// Run `path args...` and wait for it (bounded), with its output (each stream at most
    /// [`MAX_FILE`] bytes).
    pub async fn exec(&mut self, path: &str, args: &[&str], t: Duration) -> Result<ExecResult, AgentError> {
        let deadline = Instant::now() + t;
        let r = self.cmd("guest-exec", json!({ "path": path, "arg": args, "capture-output": true }), t).await?;
        let pid = r["pid"].as_i64().ok_or_else(|| AgentError::Unexpected { want: "a pid", got: crate::text::truncate(&r.to_string(), 200) })?;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(AgentError::Timeout(t, "a command run through qemu-guest-agent"));
            }
            let st = self.cmd("guest-exec-status", json!({ "pid": pid }), left).await?;
            if st["exited"].as_bool() == Some(true) {
                let text = |k: &str| -> String {
                    let b = st[k].as_str().and_then(|s| B64.decode(s).ok()).unwrap_or_default();
                    String::from_utf8_lossy(&b[..b.len().min(MAX_FILE)]).into_owned()
                };
                return Ok(ExecResult { exitcode: st["exitcode"].as_i64().unwrap_or(-1), out: text("out-data"), err: text("err-data") });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A declared identity's file, streamed through guest-file-read into a SHA-256 (at most
    /// [`MAX_DIGEST`] bytes: the agent sends it base64 in 48 KiB chunks).
    pub async fn digest(&mut self, path: &str, text_bytes: u32, t: Duration) -> Result<Option<clonesafe_protocol::DigestOf>, AgentError> {
        use sha2::Digest;
        let handle = match self.cmd("guest-file-open", json!({ "path": path, "mode": "r" }), t).await {
            Ok(h) => h,
            Err(AgentError::Guest(m)) if m.contains("No such file") => return Ok(None),
            Err(e) => return Err(e),
        };
        let keep = text_bytes.min(clonesafe_protocol::MAX_DECLARED_TEXT) as usize;
        let (mut h, mut size, mut head) = (sha2::Sha256::new(), 0u64, Vec::new());
        let r = async {
            loop {
                let chunk = self.cmd("guest-file-read", json!({ "handle": handle, "count": 48 << 10 }), t).await?;
                let b = chunk["buf-b64"].as_str().and_then(|s| B64.decode(s).ok()).unwrap_or_default();
                h.update(&b);
                size += b.len() as u64;
                if head.len() < keep {
                    head.extend_from_slice(&b[..b.len().min(keep - head.len())]);
                }
                if size > MAX_DIGEST {
                    return Err(AgentError::Unavailable { op: "digest a declared file", why: format!("{path} is larger than {} MiB, the most read through qemu-guest-agent", MAX_DIGEST >> 20) });
                }
                if chunk["eof"].as_bool() != Some(false) || b.is_empty() {
                    return Ok(());
                }
            }
        }
        .await;
        let _ = self.cmd("guest-file-close", json!({ "handle": handle }), t).await;
        r?;
        let sha256 = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Ok(Some(clonesafe_protocol::DigestOf { sha256, size, text: String::from_utf8_lossy(&head).into_owned() }))
    }

    /// A declared identity's command through guest-exec. guest-exec returns a command's output
    /// only once it exits and offers no way to stop it, so the command runs under the guest's
    /// `timeout` (coreutils), which stops it after `limit` and lets the output printed so far
    /// come back. A guest without `timeout` runs it directly; then a command past `limit` is an
    /// error with no output (it is left running: the agent cannot kill it).
    pub async fn run_bounded(&mut self, argv: &[String], limit: Duration, max_bytes: u32, t: Duration) -> Result<clonesafe_protocol::ExecOutput, AgentError> {
        let secs = limit.as_secs().max(1).to_string();
        let mut wrapped: Vec<&str> = vec!["--kill-after=2", &secs];
        wrapped.extend(argv.iter().map(String::as_str));
        let start = Instant::now();
        let (r, under_timeout) = match self.exec("timeout", &wrapped, limit + t).await {
            Err(AgentError::Guest(m)) if m.contains("No such file") || m.contains("not found") => {
                let (prog, args) = argv.split_first().ok_or(AgentError::Unavailable { op: "run a declared command", why: "an empty argv".into() })?;
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                (self.exec(prog, &args, limit + t).await?, false)
            }
            other => (other?, true),
        };
        let cut = |s: String| -> (String, bool) {
            let keep = max_bytes.min(clonesafe_protocol::MAX_DECLARED_TEXT) as usize;
            if s.len() <= keep {
                return (s, false);
            }
            let mut end = keep;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            (s[..end].to_string(), true)
        };
        // timeout(1) exits 124 when it stopped the command (137 when it had to kill it).
        let timed_out = under_timeout && matches!(r.exitcode, 124 | 137) && start.elapsed() + Duration::from_millis(500) >= limit;
        let (stdout, c1) = cut(r.out);
        let (stderr, c2) = cut(r.err);
        let exit = (!timed_out).then_some(r.exitcode as i32);
        Ok(clonesafe_protocol::ExecOutput { exit, timed_out, stdout, stderr, truncated: c1 || c2 })
    }

    /// `sh -c script`.
    pub async fn sh(&mut self, script: &str, t: Duration) -> Result<ExecResult, AgentError> {
        self.exec("/bin/sh", &["-c", script], t).await
    }

    /// A file's contents (at most [`MAX_FILE`] bytes), or None when it does not exist.
    pub async fn read_bytes(&mut self, path: &str, t: Duration) -> Result<Option<Vec<u8>>, AgentError> {
        let handle = match self.cmd("guest-file-open", json!({ "path": path, "mode": "r" }), t).await {
            Ok(h) => h,
            Err(AgentError::Guest(m)) if m.contains("No such file") => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        let r = async {
            loop {
                let chunk = self.cmd("guest-file-read", json!({ "handle": handle, "count": 48 << 10 }), t).await?;
                let b = chunk["buf-b64"].as_str().and_then(|s| B64.decode(s).ok()).unwrap_or_default();
                out.extend_from_slice(&b);
                if out.len() > MAX_FILE {
                    return Err(AgentError::LineTooLong(MAX_FILE));
                }
                if chunk["eof"].as_bool() != Some(false) || b.is_empty() {
                    return Ok(());
                }
            }
        }
        .await;
        let _ = self.cmd("guest-file-close", json!({ "handle": handle }), t).await;
        r.map(|_| Some(out))
    }

    /// Write `data` to `path` (created or truncated), in chunks of [`WRITE_CHUNK`].
    pub async fn write_bytes(&mut self, path: &str, data: &[u8], t: Duration) -> Result<(), AgentError> {
        let handle = self.cmd("guest-file-open", json!({ "path": path, "mode": "w" }), t).await?;
        let r = async {
            for chunk in data.chunks(WRITE_CHUNK) {
                self.cmd("guest-file-write", json!({ "handle": handle, "buf-b64": B64.encode(chunk) }), t).await?;
            }
            self.cmd("guest-file-flush", json!({ "handle": handle }), t).await.map(drop)
        }
        .await;
        let _ = self.cmd("guest-file-close", json!({ "handle": handle }), t).await;
        r
    }

    /// Wait until the guest's boot is over (`systemctl is-system-running --wait`), within `t`.
    /// Returns what systemd said, or why it could not be asked (a guest without systemd).
    pub async fn wait_booted(&mut self, t: Duration) -> Result<String, AgentError> {
        let r = self.sh("systemctl is-system-running --wait 2>&1 || true", t).await?;
        Ok(r.out.trim().to_string())
    }

    /// Upload `bin` and start it on the probe port, then wait for the probe's `ready` on
    /// `probe`. Tries /run, /var/tmp and /tmp in turn (one may be mounted noexec). On failure
    /// the probe is left out and the reason kept.
    pub async fn inject_probe(&mut self, files: &super::Injected, t: Duration) -> Result<(), String> {
        let bin = files.probe.as_slice();
        let Some(mut probe) = self.pending.take() else {
            self.no_probe = "the VM has no probe port".into();
            return Err(self.no_probe.clone());
        };
        let port = format!("/dev/virtio-ports/{PROBE_PORT}");
        let mut tried = Vec::new();
        for dir in ["/run", "/var/tmp", "/tmp"] {
            let path = format!("{dir}/clonesafe-probe");
            if let Err(e) = self.write_bytes(&path, bin, t).await {
                tried.push(format!("{path}: upload failed: {e}"));
                continue;
            }
            // The vDSO helper goes beside the probe, which looks for it there (a failed upload
            // only costs `vdso_rng`, which the probe then reports as skipped).
            if let Some(helper) = &files.vdso_helper {
                let hp = format!("{dir}/{}", clonesafe_protocol::VDSO_HELPER);
                if self.write_bytes(&hp, helper, t).await.is_ok() {
                    let _ = self.sh(&format!("chmod 700 {hp}"), t).await;
                }
            }
            match self.sh(&format!("chmod 700 {path} && mkdir -p -m 700 {PROBE_DATA_DIR} && test -e {port}"), t).await {
                Ok(r) if r.exitcode == 0 => {}
                Ok(r) => {
                    tried.push(format!("{path}: setup exited {} ({})", r.exitcode, r.err.trim()));
                    continue;
                }
                Err(e) => {
                    tried.push(format!("{path}: guest-exec failed: {e}"));
                    break;
                }
            }
            // Started without capture-output: the agent does not wait for it, and it runs on.
            let started = self.cmd("guest-exec", json!({ "path": path, "arg": [port, "--data-dir", PROBE_DATA_DIR] }), t).await;
            let pid = match started {
                Ok(v) => v["pid"].as_i64(),
                Err(e) => {
                    tried.push(format!("{path}: could not start it: {e}"));
                    continue;
                }
            };
            match probe.wait_ready(Duration::from_secs(20)).await {
                Ok(_) => {
                    self.probe = Some(probe);
                    return Ok(());
                }
                Err(e) => {
                    let status = match pid {
                        Some(pid) => self.cmd("guest-exec-status", json!({ "pid": pid }), t).await.map(|s| s.to_string()).unwrap_or_default(),
                        None => String::new(),
                    };
                    tried.push(format!("{path}: it did not answer ({e}) {}", crate::text::truncate(&status, 200)));
                }
            }
        }
        self.no_probe = format!("the probe could not be injected through qemu-guest-agent: {}", tried.join("; "));
        Err(self.no_probe.clone())
    }

    fn probe(&mut self, op: &'static str) -> Result<&mut ProbeChannel, AgentError> {
        match self.probe.as_mut() {
            Some(p) => Ok(p),
            None => Err(AgentError::Unavailable { op, why: self.no_probe.clone() }),
        }
    }

    /// The identity read through the agent alone (no probe): files, interfaces, a few commands.
    async fn report_without_probe(&mut self, sources: &Sources, t: Duration) -> Result<Identity, AgentError> {
        let mut id = Identity::default();
        let mut errors = Vec::new();
        macro_rules! file {
            ($field:literal, $path:expr) => {
                match self.read_bytes($path, t).await {
                    Ok(None) => {
                        errors.push(($field.to_string(), format!("{}: no such file", $path)));
                        None
                    }
                    Ok(Some(b)) => match String::from_utf8(b) {
                        Ok(v) => Some(v.trim().to_string()),
                        Err(e) => {
                            errors.push(($field.to_string(), format!("{}: not UTF-8 (first bad byte at offset {}); not counted as a value", $path, e.utf8_error().valid_up_to())));
                            None
                        }
                    },
                    Err(e) => {
                        errors.push(($field.to_string(), format!("{}: {e}", $path)));
                        None
                    }
                }
            };
        }
        id.product_uuid = file!("product_uuid", "/sys/class/dmi/id/product_uuid");
        id.product_serial = file!("product_serial", "/sys/class/dmi/id/product_serial");
        id.machine_id = file!("machine_id", &sources.machine_id);
        id.hostname = file!("hostname", "/proc/sys/kernel/hostname");
        id.boot_id = file!("boot_id", "/proc/sys/kernel/random/boot_id");
        id.cloud_init_instance_id = self.read_bytes("/var/lib/cloud/data/instance-id", t).await.ok().flatten().and_then(|b| String::from_utf8(b).ok()).map(|v| v.trim().to_string());
        if let Ok(Some(b)) = self.read_bytes("/etc/machine-info", t).await {
            use sha2::Digest;
            let sha256 = sha2::Sha256::digest(&b).iter().map(|x| format!("{x:02x}")).collect();
            id.machine_info = Some(clonesafe_protocol::FileDigest { path: "/etc/machine-info".into(), sha256, symlink: false, creditable: None });
        }
        for field in ["block_ids", "user_credentials", "machine_account", "tpm_ek"] {
            errors.push((field.to_string(), clonesafe_protocol::PROBE_ONLY.to_string()));
        }
        match self.cmd("guest-network-get-interfaces", json!({}), t).await {
            Ok(v) => {
                for i in v.as_array().into_iter().flatten() {
                    let (Some(name), Some(mac)) = (i["name"].as_str(), i["hardware-address"].as_str()) else { continue };
                    if name != "lo" {
                        id.nics.push(Nic { name: name.into(), mac: mac.into() });
                    }
                }
            }
            Err(e) => errors.push(("nics".into(), e.to_string())),
        }
        let listing = self
            .sh(&format!("for d in /sys/block/vd*; do [ -e \"$d/serial\" ] && echo \"disk ${{d##*/}} $(cat $d/serial)\"; done; for k in {}/ssh_host_*_key.pub; do [ -e \"$k\" ] && echo \"key $k $(cat $k)\"; done; dmesg 2>/dev/null | grep -c '{}' | sed 's/^/reseeds /'", sources.ssh_host_keys, clonesafe_protocol::VMFORK_RESEED_MSG), t)
            .await;
        match listing {
            Ok(r) => {
                for line in r.out.lines() {
                    let mut w = line.splitn(3, ' ');
                    match (w.next(), w.next(), w.next()) {
                        (Some("disk"), Some(name), Some(serial)) => id.disks.push(Disk { name: name.into(), serial: serial.trim().into() }),
                        (Some("key"), Some(file), Some(pubkey)) => match fingerprint(pubkey) {
                            Some(fp) => id.ssh_host_keys.push(HostKey { file: file.trim_end_matches(".pub").rsplit('/').next().unwrap_or(file).into(), fingerprint: fp }),
                            None => errors.push(("ssh_host_keys".into(), format!("{file}: not an OpenSSH public key"))),
                        },
                        (Some("reseeds"), Some(n), _) => id.vmfork_reseeds = n.trim().parse().unwrap_or(0),
                        _ => {}
                    }
                }
            }
            Err(e) => {
                for f in ["disks", "ssh_host_keys", "vmgenid"] {
                    errors.push((f.into(), format!("guest-exec: {e}")));
                }
            }
        }
        id.errors = errors;
        Ok(id)
    }
}

/// OpenSSH's fingerprint of a public key line: SHA256 of the decoded blob, base64 unpadded.
pub fn fingerprint(pubkey_line: &str) -> Option<String> {
    use sha2::Digest;
    let blob = pubkey_line.split_whitespace().nth(1)?;
    let raw = B64.decode(blob).ok()?;
    Some(format!("SHA256:{}", base64::engine::general_purpose::STANDARD_NO_PAD.encode(sha2::Sha256::digest(&raw))))
}

/// The agent fix-up on a real guest, as one shell script run through the agent after the
/// kernel reseed: each step runs only where its file or tool exists, and says what it did.
pub const FIXUP_SCRIPT: &str = r#"
step() { echo "$1"; }
# A fresh random id, written here: systemd-machine-id-setup in a running system keeps the id
# systemd already holds (measured: the clones kept the source's).
id=$(systemd-id128 new 2>/dev/null || head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
if [ -e /etc/machine-id ] && [ -n "$id" ]; then echo "$id" > /etc/machine-id.new && mv /etc/machine-id.new /etc/machine-id && step "new machine-id"; fi
if [ -f /var/lib/dbus/machine-id ] && [ ! -L /var/lib/dbus/machine-id ]; then cp /etc/machine-id /var/lib/dbus/machine-id && step "new D-Bus machine-id"; fi
base=$(cut -d- -f1 /etc/hostname 2>/dev/null); h="${base:-clone}-$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')"
if hostnamectl set-hostname "$h" 2>/dev/null || { echo "$h" > /etc/hostname && hostname "$h"; }; then step "new hostname $h"; fi
# New SSH host keys of the types the guest had (ssh-keygen -A would add RSA-3072, which takes tens
# of seconds under TCG and was not there), then sshd reloaded.
new=""
for k in /etc/ssh/ssh_host_*_key; do
  [ -e "$k" ] || continue
  t=${k##*/ssh_host_}; t=${t%_key}
  rm -f "$k" "$k.pub" && ssh-keygen -q -N '' -t "$t" -f "$k" && new="$new $t"
done
if [ -n "$new" ]; then step "new SSH host keys:$new"; { systemctl reload ssh 2>/dev/null || systemctl reload sshd 2>/dev/null; } && step "sshd reloaded"; fi
if [ -e /var/lib/systemd/random-seed ]; then head -c 512 /dev/urandom > /var/lib/systemd/random-seed.new && mv /var/lib/systemd/random-seed.new /var/lib/systemd/random-seed && step "refreshed systemd's random seed"; fi
if [ -e /var/lib/systemd/credential.secret ]; then rm -f /var/lib/systemd/credential.secret && systemd-creds setup >/dev/null 2>&1 && step "new systemd credential secret"; fi
if command -v cloud-init >/dev/null 2>&1; then cloud-init clean >/dev/null 2>&1 && step "cloud-init clean"; fi
sync
"#;

#[async_trait]
impl GuestAgent for Qga {
    fn transport(&self) -> &'static str {
        "qemu-guest-agent"
    }

    async fn wait_ready(&mut self, t: Duration) -> Result<u64, AgentError> {
        self.sync(t).await.map(|_| 0)
    }

    async fn prepare(&mut self, probe_bin: Option<&super::Injected>, t: Duration) -> Result<Vec<String>, AgentError> {
        let mut notes = Vec::new();
        let state = self.wait_booted(t).await?;
        notes.push(format!("systemctl is-system-running --wait: {}", if state.is_empty() { "(no answer: not a systemd guest?)" } else { &state }));
        if let Ok(os) = self.os_info(t).await {
            notes.push(format!("guest OS (qemu-guest-agent): {os}"));
        }
        match probe_bin {
            None => {
                self.no_probe = "no probe binary to inject (build it with ci/setup.sh, or set CLONESAFE_PROBE)".into();
                notes.push(self.no_probe.clone());
            }
            Some(bin) => match self.inject_probe(bin, t).await {
                Ok(()) => notes.push("clonesafe's probe injected through qemu-guest-agent (guest-file-write, guest-exec) on org.clonesafe.probe.0".into()),
                Err(why) => notes.push(why),
            },
        }
        Ok(notes)
    }

    async fn hold(&mut self, t: Duration) -> Result<(), AgentError> {
        self.probe("hold the guest at a known point")?.hold(t).await
    }

    async fn go(&mut self, gate: Option<Gate>, t: Duration) -> Result<Resumed, AgentError> {
        self.probe("sample the kernel RNG after resume")?.go(gate, t).await
    }

    async fn dirty(&mut self, mib: u32, t: Duration) -> Result<(u32, u64), AgentError> {
        self.probe("fill guest memory")?.dirty(mib, t).await
    }

    async fn renew_lease(&mut self, t: Duration) -> Result<String, AgentError> {
        let r = self.sh("systemctl restart systemd-networkd 2>&1 && echo 'restarted systemd-networkd (new DUID from the new machine-id)'", t).await?;
        if r.exitcode != 0 {
            return Err(AgentError::Unexpected { want: "systemd-networkd restarted", got: crate::text::truncate(&format!("{}{}", r.out, r.err), 200) });
        }
        Ok(r.out.trim().to_string())
    }

    async fn addrs(&mut self, t: Duration) -> Result<(String, Vec<String>), AgentError> {
        self.probe("read the guest's addresses")?.addrs(t).await
    }

    async fn samples(&mut self, t: Duration) -> Result<super::Later, AgentError> {
        self.probe("collect RNG samples")?.samples(t).await
    }

    async fn session_open(&mut self, peer: std::net::SocketAddrV4, within: Duration, t: Duration) -> Result<(String, String), AgentError> {
        self.probe("open a TCP session to the peer")?.session_open(peer, within, t).await
    }

    async fn session_speak(&mut self, peer: std::net::SocketAddrV4, id: String, within: Duration, t: Duration) -> Result<clonesafe_protocol::SessionSpeech, AgentError> {
        self.probe("speak on the TCP session")?.session_speak(peer, id, within, t).await
    }

    async fn drop_sessions(&mut self, dst: std::net::Ipv4Addr, t: Duration) -> Result<Vec<String>, AgentError> {
        // The guest's own ss (iproute2), as an administrator would run it; it prints a line per
        // socket it destroyed (and fails where the kernel lacks CONFIG_INET_DIAG_DESTROY).
        let r = self.exec("/usr/bin/ss", &["-K", "-t", "-n", "-H", "dst", &dst.to_string()], t).await?;
        if r.exitcode != 0 {
            return Err(AgentError::Unexpected { want: "ss -K to succeed", got: crate::text::truncate(&format!("exit {}: {}{}", r.exitcode, r.out, r.err), 200) });
        }
        Ok(super::bound_dropped(r.out.lines()))
    }

    async fn report(&mut self, sources: &Sources, t: Duration) -> Result<Identity, AgentError> {
        match self.probe.as_mut() {
            Some(p) => p.report(sources, t).await,
            None => self.report_without_probe(sources, t).await,
        }
    }

    async fn fixup(&mut self, entropy: &[u8], t: Duration) -> Result<FixupDone, AgentError> {
        let p = self.probe("credit entropy and reseed the CRNG")?;
        let t_start_ns = p.monotonic(t).await?;
        let t_rng_ns = p.reseed(entropy, t).await?;
        let r = self.sh(FIXUP_SCRIPT, t.max(Duration::from_secs(60))).await?;
        let t_done_ns = self.probe("read the guest's clock")?.monotonic(t).await?;
        let mut steps = vec![format!("credited {} bytes of host entropy (RNDADDENTROPY) and reseeded the CRNG (RNDRESEEDCRNG)", entropy.len())];
        steps.extend(r.out.lines().map(str::to_string));
        Ok(FixupDone { t_start_ns, t_rng_ns, t_done_ns, steps })
    }

    async fn reseed(&mut self, entropy: &[u8], t: Duration) -> Result<u64, AgentError> {
        self.probe("credit entropy and reseed the CRNG")?.reseed(entropy, t).await
    }

    async fn time(&mut self, t: Duration) -> Result<i64, AgentError> {
        self.cmd("guest-get-time", json!({}), t).await?.as_i64().ok_or(AgentError::Unexpected { want: "ns since the epoch", got: "not a number".into() })
    }

    async fn monotonic(&mut self, t: Duration) -> Result<u64, AgentError> {
        self.probe("read the guest's monotonic clock")?.monotonic(t).await
    }

    async fn set_time(&mut self, realtime_ns: i64, t: Duration) -> Result<(), AgentError> {
        self.cmd("guest-set-time", json!({ "time": realtime_ns }), t).await.map(drop)
    }

    async fn os_info(&mut self, t: Duration) -> Result<String, AgentError> {
        let v = self.cmd("guest-get-osinfo", json!({}), t).await?;
        Ok(v["pretty-name"].as_str().or(v["name"].as_str()).unwrap_or("unknown").to_string())
    }

    async fn wait_nic(&mut self, mac: &str, within: Duration, t: Duration) -> Result<Option<u64>, AgentError> {
        self.probe("wait for a NIC")?.wait_nic(mac, within, t).await
    }

    async fn plant_canary(&mut self, secret_xff_hex: String, t: Duration) -> Result<(), AgentError> {
        self.probe("plant the canary")?.plant_canary(secret_xff_hex, t).await
    }

    async fn scrub(&mut self, _t: Duration) -> Result<String, AgentError> {
        Err(AgentError::Unsupported { transport: "qemu-guest-agent", op: "scrub a data disk (remanence mitigation is for direct-kernel guests)" })
    }

    async fn write_file(&mut self, path: &str, data: &str, t: Duration) -> Result<(), AgentError> {
        self.write_bytes(path, data.as_bytes(), t).await
    }

    async fn digest_file(&mut self, path: &str, text_bytes: u32, t: Duration) -> Result<Option<clonesafe_protocol::DigestOf>, AgentError> {
        self.digest(path, text_bytes, t).await
    }

    async fn run_command(&mut self, argv: &[String], limit: Duration, max_bytes: u32, t: Duration) -> Result<clonesafe_protocol::ExecOutput, AgentError> {
        self.run_bounded(argv, limit, max_bytes, t).await
    }

    async fn read_file(&mut self, path: &str, t: Duration) -> Result<Option<String>, AgentError> {
        match self.read_bytes(path, t).await? {
            None => Ok(None),
            Some(b) => String::from_utf8(b).map(Some).map_err(|e| AgentError::NotUtf8 { what: "a file", at: e.utf8_error().valid_up_to() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

    /// A fake agent on the other end of a pipe: it answers guest-sync (first with a stale id),
    /// file commands and guest-exec from a script of replies.
    #[tokio::test]
    async fn ids_skip_stale_replies_and_files_and_exec_decode() {
        let (host, guest) = tokio::io::duplex(1 << 20);
        let agent = tokio::spawn(async move {
            let (r, mut w) = tokio::io::split(guest);
            let mut lines = tokio::io::BufReader::new(r).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let v: Value = serde_json::from_str(&l).unwrap();
                let id = v["id"].clone();
                let reply = match v["execute"].as_str().unwrap() {
                    "guest-sync" => {
                        // A stale reply, the 0xff sentinel, then the real one.
                        w.write_all(b"{\"return\": 1, \"id\": 999}\n\xff\n").await.unwrap();
                        json!({ "return": v["arguments"]["id"], "id": id })
                    }
                    "guest-file-open" if v["arguments"]["path"] == "/nope" => json!({ "error": { "class": "GenericError", "desc": "failed to open file '/nope' (mode: 'r'): No such file or directory" }, "id": id }),
                    "guest-file-open" => json!({ "return": 7, "id": id }),
                    "guest-file-read" => json!({ "return": { "count": 5, "buf-b64": B64.encode("hello"), "eof": true }, "id": id }),
                    "guest-file-close" => json!({ "return": {}, "id": id }),
                    "guest-exec" => json!({ "return": { "pid": 42 }, "id": id }),
                    "guest-exec-status" => json!({ "return": { "exited": true, "exitcode": 3, "out-data": B64.encode("out\n") }, "id": id }),
                    other => panic!("{other}"),
                };
                w.write_all(format!("{reply}\n").as_bytes()).await.unwrap();
            }
        });
        let mut q = Qga::new(Box::new(SocketWire::new(host)), None);
        let t = Duration::from_secs(5);
        q.sync(t).await.unwrap();
        assert_eq!(q.read_bytes("/etc/x", t).await.unwrap().as_deref(), Some(&b"hello"[..]));
        assert_eq!(q.read_bytes("/nope", t).await.unwrap(), None);
        let r = q.sh("true", t).await.unwrap();
        assert_eq!((r.exitcode, r.out.as_str()), (3, "out\n"));
        // Without an injected probe, the RNG protocol is unavailable, with the reason.
        let e = q.go(None, t).await.unwrap_err().to_string();
        assert!(e.contains("sample the kernel RNG") && e.contains("not been injected"), "{e}");
        drop(q);
        agent.abort();
    }

    #[test]
    fn fingerprints_match_openssh() {
        // ssh-keygen -lf of this key (OpenSSH 9.2) prints SHA256:jwwfIM2HY/KewT83TsYg1Len3wBM5X2lFsjqUCqkhkM
        let k = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJTufWtq7yc6u0deoI1sSw3F1lFFUXzhZTYuYF24Ys6v root@debian12";
        assert_eq!(fingerprint(k).unwrap(), "SHA256:jwwfIM2HY/KewT83TsYg1Len3wBM5X2lFsjqUCqkhkM");
        assert_eq!(fingerprint("garbage"), None);
    }
}
