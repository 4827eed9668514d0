//! Running an external program with a bound on its time and on what it prints, and killing
//! everything it started when the bound is hit or the caller goes away.
//!
//! Issue 19, item 9: a `--emulator` that hung on `--version` hung the harness, deaf to SIGTERM,
//! and `doctor --image` on an image with a FIFO backing left an orphaned `qemu-img create` (a
//! grandchild: libguestfs starts it). So each program runs in a process group of its own
//! (`setpgid(0, 0)`), dies with the harness (`PR_SET_PDEATHSIG`), and on a timeout, an error or
//! a dropped future the whole group gets SIGKILL.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum BoundedError {
    #[error("cannot run {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} did not finish within {} s and was killed{}", .after.as_secs(), printed(.stdout, .stderr))]
    Timeout { program: String, after: Duration, stdout: String, stderr: String },
}

fn printed(out: &str, err: &str) -> String {
    let both = format!("{} {}", out.trim(), err.trim());
    let both = both.trim();
    if both.is_empty() {
        String::new()
    } else {
        format!("; it printed: {}", crate::text::truncate(both, 1000))
    }
}

/// Kills a process group when dropped, unless disarmed.
pub struct GroupGuard(Option<i32>);

impl GroupGuard {
    pub fn new(pgid: u32) -> Self {
        GroupGuard(Some(pgid as i32))
    }
    pub fn disarm(&mut self) {
        self.0 = None;
    }
    pub fn kill(&mut self) {
        if let Some(g) = self.0.take() {
            // SAFETY: kill(2) on a process group we created; a negative pid names the group.
            unsafe { libc::kill(-g, libc::SIGKILL) };
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Make `cmd`'s program die when the harness does, even by SIGKILL (PR_SET_PDEATHSIG; it fires
/// when the spawning *thread* exits, prctl(2)).
pub fn die_with_harness(cmd: &mut std::process::Command) {
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Make `cmd` start in a process group of its own and die with the harness.
pub fn isolate(cmd: &mut std::process::Command) {
    cmd.process_group(0);
    die_with_harness(cmd);
}

/// The same for a tokio command (it wraps a std one).
pub fn isolate_async(cmd: &mut tokio::process::Command) {
    isolate(cmd.as_std_mut());
}

/// Run the tokio command `cmd` for at most `limit`, writing `stdin` to it (or closing its
/// stdin), and collect what it prints. Its process group is killed at the bound, and when the
/// returned future is dropped (Ctrl-C) before the program was reaped.
pub async fn output_async(cmd: &mut tokio::process::Command, stdin: Option<&[u8]>, limit: Duration) -> Result<Output, BoundedError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let program = cmd.as_std().get_program().to_string_lossy().into_owned();
    isolate_async(cmd);
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| BoundedError::Spawn { program: program.clone(), source })?;
    // Declared after the child, so dropped before it: the group is killed while the program is
    // not yet reaped (a group id cannot be reused while its leader is a zombie).
    let mut guard = child.id().map(GroupGuard::new);
    let input = child.stdin.take();
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    let all = async {
        if let (Some(mut i), Some(bytes)) = (input, stdin) {
            let _ = i.write_all(bytes).await;
        }
        let (mut o, mut e) = (Vec::new(), Vec::new());
        let read_o = async {
            if let Some(r) = out.as_mut() {
                let _ = r.read_to_end(&mut o).await;
            }
        };
        let read_e = async {
            if let Some(r) = err.as_mut() {
                let _ = r.read_to_end(&mut e).await;
            }
        };
        let (status, _, _) = tokio::join!(child.wait(), read_o, read_e);
        (status, o, e)
    };
    match tokio::time::timeout(limit, all).await {
        Ok((status, stdout, stderr)) => {
            // Reaped: from now on its group id may be someone else's.
            if let Some(g) = guard.as_mut() {
                g.disarm();
            }
            Ok(Output { status: status.map_err(|source| BoundedError::Spawn { program, source })?, stdout, stderr })
        }
        Err(_) => {
            if let Some(g) = guard.as_mut() {
                g.kill();
            }
            let _ = child.wait().await;
            Err(BoundedError::Timeout { program, after: limit, stdout: String::new(), stderr: String::new() })
        }
    }
}

/// Read at most `max` bytes of `r`, then drain the rest (so the writer never blocks).
fn read_capped(mut r: impl Read, max: usize) -> Vec<u8> {
    let mut keep = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = r.read(&mut buf) {
        if n == 0 {
            break;
        }
        let room = max.saturating_sub(keep.len()).min(n);
        keep.extend_from_slice(&buf[..room]);
    }
    keep
}

/// Run `cmd` (stdin closed) for at most `limit`, keeping at most `max` bytes of each of its
/// stdout and stderr. On timeout its whole process group is killed.
pub fn output(cmd: &mut std::process::Command, limit: Duration, max: usize) -> Result<Output, BoundedError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    isolate(cmd);
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|source| BoundedError::Spawn { program: program.clone(), source })?;
    let mut guard = GroupGuard::new(child.id());
    let out_r = child.stdout.take().map(|o| std::thread::spawn(move || read_capped(o, max)));
    let err_r = child.stderr.take().map(|e| std::thread::spawn(move || read_capped(e, max)));
    let deadline = Instant::now() + limit;
    // Wait without reaping (WNOWAIT): while the leader is an unreaped zombie its process group id
    // cannot be reused, so killing the group (what it left running, or all of it at the bound)
    // can only reach what it started. Then reap.
    let pid = child.id() as libc::id_t;
    let exited = loop {
        // SAFETY: a zeroed siginfo_t for waitid to fill.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on our own child, not reaping it.
        let r = unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT) };
        // SAFETY: si_pid is valid for a WEXITED siginfo (0 when nothing exited yet).
        if r == 0 && unsafe { info.si_pid() } != 0 {
            break true;
        }
        if r != 0 || Instant::now() >= deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    guard.kill();
    let status = child.wait().ok().filter(|_| exited);
    let text = |h: Option<std::thread::JoinHandle<Vec<u8>>>| h.and_then(|h| h.join().ok()).unwrap_or_default();
    let (stdout, stderr) = (text(out_r), text(err_r));
    match status {
        Some(status) => Ok(Output { status, stdout, stderr }),
        None => Err(BoundedError::Timeout {
            program,
            after: limit,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hanging_program_and_what_it_started_are_killed_at_the_bound() {
        let d = tempfile::tempdir().unwrap();
        let pidfile = d.path().join("grandchild");
        let script = format!("sleep 300 & echo $! > {}; echo started; wait", pidfile.display());
        let t = Instant::now();
        let e = output(std::process::Command::new("sh").args(["-c", &script]), Duration::from_millis(500), 1 << 10).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
        assert!(e.to_string().contains("did not finish within 0 s") && e.to_string().contains("started"), "{e}");
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(state.is_empty() || state.contains(") Z "), "the grandchild lives on: {state}");
    }

    #[tokio::test]
    async fn the_async_runner_feeds_stdin_and_kills_the_group_at_the_bound() {
        let o = output_async(tokio::process::Command::new("cat").arg("-"), Some(b"script"), Duration::from_secs(10)).await.unwrap();
        assert_eq!(o.stdout, b"script");
        let d = tempfile::tempdir().unwrap();
        let pidfile = d.path().join("grandchild");
        let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
        let t = Instant::now();
        let e = output_async(tokio::process::Command::new("sh").args(["-c", &script]), None, Duration::from_millis(500)).await.unwrap_err();
        assert!(matches!(e, BoundedError::Timeout { .. }) && t.elapsed() < Duration::from_secs(5), "{e} after {:?}", t.elapsed());
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(state.is_empty() || state.contains(") Z "), "the grandchild lives on: {state}");
    }

    #[test]
    fn output_is_capped_and_a_quick_program_succeeds() {
        let o = output(std::process::Command::new("sh").args(["-c", "head -c 100000 /dev/zero; echo err >&2"]), Duration::from_secs(10), 1000).unwrap();
        assert!(o.status.success());
        assert_eq!(o.stdout.len(), 1000);
        assert_eq!(o.stderr, b"err\n");
    }
}
