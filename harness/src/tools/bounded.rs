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

/// Make `cmd` start in a process group of its own and die with the harness.
pub fn isolate(cmd: &mut std::process::Command) {
    cmd.process_group(0);
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// The same for a tokio command (it wraps a std one).
pub fn isolate_async(cmd: &mut tokio::process::Command) {
    isolate(cmd.as_std_mut());
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
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => break None,
        }
    };
    if status.is_none() {
        // The group, not just the child: what it started goes too, and the pipes close.
        guard.kill();
        let _ = child.wait();
    } else {
        // The program is gone; anything it left running in its group still holds the pipes.
        guard.kill();
    }
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

    #[test]
    fn output_is_capped_and_a_quick_program_succeeds() {
        let o = output(std::process::Command::new("sh").args(["-c", "head -c 100000 /dev/zero; echo err >&2"]), Duration::from_secs(10), 1000).unwrap();
        assert!(o.status.success());
        assert_eq!(o.stdout.len(), 1000);
        assert_eq!(o.stderr, b"err\n");
    }
}
