//! One QEMU process: spawned so that it can never outlive the harness, with its QMP and probe
//! channels connected before anything else happens.

use super::qmp::{Qmp, QmpError};
use crate::agent::serial::ProbeChannel;
use crate::agent::AgentError;
use crate::backend::emulator;
use crate::backend::error::BackendError;
use crate::backend::lifecycle::{Phase, Timeouts};
use crate::text::read_tail;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio::process::{Child, Command};

pub struct QemuProcess {
    name: String,
    child: Child,
    qmp: Qmp,
    /// The probe's channel (serial port or virtio-serial port), when the guest has one.
    pub probe: Option<ProbeChannel>,
    /// qemu-guest-agent's channel, when the guest has one.
    pub qga: Option<UnixStream>,
    console: PathBuf,
    stderr: PathBuf,
    /// The VM's swtpm, when it has a TPM: it exits when QEMU closes its socket (`--terminate`),
    /// and dies with the harness like QEMU.
    swtpm: Option<Child>,
    /// Set when the guest's console passed the cap ([`crate::backend::console`]).
    console_capped: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Which guest channels QEMU connects to sockets of ours (QMP always does).
#[derive(Debug, Clone, Copy)]
pub struct Channels {
    pub probe: bool,
    pub qga: bool,
    /// Start the VM's swtpm first (its state in `tpm/` of the VM's directory).
    pub tpm: bool,
}

/// The directory of a VM's TPM state: guest secrets (its seeds), so 0700, and swtpm writes its
/// files 0600. It is inside the VM's directory, which the run removes.
pub fn tpm_dir(vm_dir: &Path) -> PathBuf {
    vm_dir.join("tpm")
}

/// swtpm's control socket, which QEMU's `-tpmdev emulator` connects to.
pub fn tpm_socket(vm_dir: &Path) -> PathBuf {
    tpm_dir(vm_dir).join("swtpm.sock")
}

/// The prefix of an swtpm's argv[0] of ours, followed by its VM's name.
pub const SWTPM_ARG0: &str = "swtpm:";

/// Whether swtpm is on PATH (asked once per process: the plan asks for every scenario).
pub fn swtpm_installed() -> bool {
    static INSTALLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *INSTALLED.get_or_init(|| crate::tools::bounded::output(std::process::Command::new("swtpm").arg("--version"), Duration::from_secs(5), 4096).is_ok_and(|o| o.status.success()))
}

/// Start swtpm for a VM whose directory is `dir`, and wait until its socket is there. A fresh
/// state directory makes a freshly manufactured TPM (new endorsement and storage seeds); a
/// restore then loads the source's state into it over QEMU's connection.
async fn start_swtpm(name: &str, dir: &Path, t: &Timeouts) -> Result<Child, BackendError> {
    use std::os::unix::fs::DirBuilderExt;
    let state = tpm_dir(dir);
    std::fs::DirBuilder::new().mode(0o700).create(&state).map_err(BackendError::io(name, format!("create {}", state.display())))?;
    let sock = tpm_socket(dir);
    let log = state.join("swtpm.log");
    let mut cmd = Command::new("swtpm");
    cmd.args(["socket", "--tpm2", "--terminate"])
        .arg("--tpmstate")
        .arg(format!("dir={},mode=0600", state.display()))
        .arg("--ctrl")
        .arg(format!("type=unixio,path={},mode=0600", sock.display()))
        .arg("--log")
        .arg(format!("file={},level=1", log.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    // Its argv[0] names the VM, so the next run can reap an swtpm a killed run left (reap.rs).
    std::os::unix::process::CommandExt::arg0(cmd.as_std_mut(), format!("{SWTPM_ARG0}{name}"));
    crate::tools::bounded::die_with_harness(cmd.as_std_mut());
    let mut child = cmd.spawn().map_err(BackendError::io(name, "start swtpm (is the swtpm package installed?)".to_string()))?;
    let started = std::time::Instant::now();
    while !sock.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(BackendError::Io { vm: name.to_string(), what: format!("swtpm exited before QEMU started ({status})"), source: std::io::Error::other(format!("its log: {}", read_tail(&log, 10))) });
        }
        if started.elapsed() > t.start {
            let _ = child.start_kill();
            return Err(BackendError::Timeout { vm: name.to_string(), phase: Phase::Start, after: t.start, console_tail: format!("swtpm made no socket at {}; its log: {}", sock.display(), read_tail(&log, 10)) });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(child)
}

impl QemuProcess {
    /// Start QEMU with `args`. It connects to sockets in `dir` that the harness already listens
    /// on (QMP, and `channels`), so nothing races.
    pub async fn spawn(name: &str, dir: &Path, channels: Channels, t: &Timeouts, args: &[String]) -> Result<Self, BackendError> {
        let name = name.to_string();
        let listen = |file: &str| -> Result<UnixListener, BackendError> {
            let p = dir.join(file);
            let _ = std::fs::remove_file(&p);
            UnixListener::bind(&p).map_err(BackendError::io(&name, format!("bind {}", p.display())))
        };
        let console_l = listen("console.sock")?;
        let probe_l = if channels.probe { Some(listen("probe.sock")?) } else { None };
        let qga_l = if channels.qga { Some(listen("qga.sock")?) } else { None };
        let qmp_l = listen("qmp.sock")?;
        let stderr = dir.join("qemu.stderr");
        let console = dir.join(crate::backend::snapshot::CONSOLE_LOG);
        let swtpm = if channels.tpm { Some(start_swtpm(&name, dir, t).await?) } else { None };
        let err_file = std::fs::File::create(&stderr).map_err(BackendError::io(&name, format!("create {}", stderr.display())))?;

        let mut cmd = Command::new(emulator::qemu_binary());
        cmd.args(emulator::firmware_args()).args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(err_file).kill_on_drop(true);
        // If the harness dies, even by SIGKILL, the kernel kills QEMU too: no VM outlives the
        // run that started it.
        crate::tools::bounded::die_with_harness(cmd.as_std_mut());
        let mut child = cmd
            .spawn()
            .map_err(BackendError::io(&name, format!("start {} (is qemu-system-x86 installed?)", emulator::qemu_binary().display())))?;

        // QEMU connects its chardevs in command-line order; accepting them one by one in that
        // order is enough (each connect completes in the listener's backlog).
        let connect = async {
            let (console, _) = console_l.accept().await?;
            let probe = match &probe_l {
                Some(l) => Some(l.accept().await?.0),
                None => None,
            };
            let qga = match &qga_l {
                Some(l) => Some(l.accept().await?.0),
                None => None,
            };
            let (qmp, _) = qmp_l.accept().await?;
            Ok::<_, std::io::Error>((console, probe, qga, qmp))
        };
        let (console_sock, probe, qga, qmp) = tokio::select! {
            r = tokio::time::timeout(t.start, connect) => match r {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(BackendError::Io { vm: name, what: "accept QEMU's connection".into(), source: e }),
                Err(_) => {
                    let _ = child.start_kill();
                    return Err(BackendError::Timeout { vm: name, phase: Phase::Start, after: t.start, console_tail: read_tail(&console, 20) });
                }
            },
            status = child.wait() => {
                return Err(exited_error(name, Phase::Start, status, &stderr, &console));
            }
        };
        // The console: read by a thread of ours into console.log, bounded.
        let console_capped = crate::backend::console::pump_socket(console_sock, &console).map_err(BackendError::io(&name, format!("keep the console in {}", console.display())))?;
        let qmp = match tokio::time::timeout(t.start, Qmp::handshake(qmp)).await {
            Ok(Ok(q)) => q,
            Ok(Err(e)) => {
                // QEMU connects its chardevs before it loads the kernel, so a bad -kernel shows
                // up here as a closed QMP connection: report QEMU's exit and stderr instead.
                if let Ok(status) = tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
                    return Err(exited_error(name, Phase::Start, status, &stderr, &console));
                }
                return Err(BackendError::vmm(name, format!("{} failed", Phase::Start), e));
            }
            Err(_) => return Err(BackendError::Timeout { vm: name, phase: Phase::Start, after: t.start, console_tail: read_tail(&console, 20) }),
        };
        Ok(QemuProcess { name, child, qmp, probe: probe.map(ProbeChannel::new), qga, console, stderr, swtpm, console_capped })
    }

    /// Migration events on, bandwidth unthrottled (the guest is stopped while it migrates).
    pub async fn init_migration(&mut self) -> Result<(), BackendError> {
        self.qmp(Phase::Start, "migrate-set-capabilities", json!({ "capabilities": [{ "capability": "events", "state": true }] })).await?;
        self.qmp(Phase::Start, "migrate-set-parameters", json!({ "max-bandwidth": 100u64 << 30 })).await?;
        Ok(())
    }

    pub async fn qmp(&mut self, phase: Phase, cmd: &str, args: Value) -> Result<Value, BackendError> {
        match self.qmp.execute(cmd, args).await {
            Ok(v) => Ok(v),
            Err(e) => Err(self.fail_qmp(phase, Duration::ZERO, e).await),
        }
    }

    pub async fn qmp_wait_event(&mut self, what: &str, t: Duration, pred: impl FnMut(&Value) -> bool) -> Result<Value, QmpError> {
        self.qmp.wait_event(what, t, pred).await
    }

    pub async fn qmp_wait_migration(&mut self, t: Duration) -> Result<(), QmpError> {
        self.qmp.wait_migration(t).await
    }

    /// Turn a QMP failure into the most telling error: QEMU's exit, a timeout, or the QMP error.
    pub async fn fail_qmp(&mut self, phase: Phase, after: Duration, e: QmpError) -> BackendError {
        if let Some(exited) = self.exited(phase).await {
            return exited;
        }
        match e {
            QmpError::Timeout(..) => BackendError::Timeout { vm: self.name.clone(), phase, after, console_tail: self.console_tail(20) },
            e => BackendError::vmm(self.name.clone(), format!("{phase} failed"), e),
        }
    }

    /// Turn an agent failure into the most telling error, the same way.
    pub async fn fail(&mut self, phase: Phase, after: Duration, e: AgentError) -> BackendError {
        if let Some(exited) = self.exited(phase).await {
            return exited;
        }
        let console_tail = self.console_tail(20);
        match e {
            AgentError::Timeout(..) => BackendError::Timeout { vm: self.name.clone(), phase, after, console_tail },
            source => BackendError::Agent { vm: self.name.clone(), phase, console_tail, source },
        }
    }

    async fn exited(&mut self, phase: Phase) -> Option<BackendError> {
        // Give a dying QEMU a moment to be reaped, so its exit is what we report.
        let status = tokio::time::timeout(Duration::from_millis(200), self.child.wait()).await.ok()?;
        Some(exited_error(self.name.clone(), phase, status, &self.stderr, &self.console))
    }

    /// The QEMU process's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn console_tail(&self, lines: usize) -> String {
        read_tail(&self.console, lines)
    }

    /// Whether the guest wrote more to its console than is kept.
    pub fn console_capped(&self) -> bool {
        self.console_capped.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// ACPI power-off (`system_powerdown`), then wait up to `t` for QEMU to exit (it does when
    /// the guest powers off: -no-reboot); otherwise [`QemuProcess::shutdown`]. Ok(true): the
    /// guest went by itself.
    pub async fn power_off(mut self, t: Duration) -> Result<bool, BackendError> {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.qmp.execute("system_powerdown", json!({}))).await;
        if tokio::time::timeout(t, self.child.wait()).await.is_ok() {
            self.stop_swtpm().await;
            return Ok(true);
        }
        self.shutdown().await.map(|_| false)
    }

    /// `quit` over QMP, then wait; SIGKILL if QEMU does not go within 5 s.
    pub async fn shutdown(mut self) -> Result<(), BackendError> {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.qmp.execute("quit", json!({}))).await;
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
        self.stop_swtpm().await;
        Ok(())
    }

    /// Once QEMU is gone: swtpm exits by itself (`--terminate`); wait for it briefly, then kill.
    async fn stop_swtpm(&mut self) {
        if let Some(mut s) = self.swtpm.take() {
            if tokio::time::timeout(Duration::from_secs(2), s.wait()).await.is_err() {
                let _ = s.kill().await;
            }
        }
    }
}

/// "QEMU exited", with its exit status, the tail of its stderr and of the guest's console.
fn exited_error(vm: String, phase: Phase, status: std::io::Result<std::process::ExitStatus>, stderr: &Path, console: &Path) -> BackendError {
    BackendError::Exited {
        vm,
        phase,
        status: status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
        stderr: read_tail(stderr, 20),
        console_tail: read_tail(console, 20),
    }
}
