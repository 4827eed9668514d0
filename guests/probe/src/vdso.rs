//! The vDSO getrandom helper (issue 21): the probe is static and calls the getrandom system
//! call, so a program's glibc path (vDSO getrandom on glibc 2.41+ and Linux 6.11+) is measured by
//! `clonesafe-vdso-rng`, a dynamically linked helper injected beside the probe. Started at `hold`
//! (its state is keyed before the snapshot), told `go` right after the first kernel sample,
//! collected by `samples`. See guests/vdso-rng/src/main.rs for its lines.

use clonesafe_protocol::{Sample, VdsoRngWatch, KERNEL_RNG_SAMPLE_OFFSETS_MS, VDSO_HELPER};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::time::Duration;

struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    ready: VdsoRngWatch,
}

static STATE: Mutex<Option<Result<Running, VdsoRngWatch>>> = Mutex::new(None);

fn lock() -> std::sync::MutexGuard<'static, Option<Result<Running, VdsoRngWatch>>> {
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Lines the helper may send: `ready`, one per sample, `done`.
const MAX_LINES: usize = 2 + 32;

/// At `hold`: (re)start the helper and wait (at most 5 s) for its `ready` line.
pub fn at_hold() {
    let mut g = lock();
    if let Some(Ok(r)) = g.as_mut() {
        let _ = r.child.kill();
        let _ = r.child.wait();
    }
    *g = Some(start());
}

fn start() -> Result<Running, VdsoRngWatch> {
    let fail = |helper: bool, why: String| VdsoRngWatch { helper, why, ..Default::default() };
    let path = match std::env::current_exe() {
        Ok(p) => p.with_file_name(VDSO_HELPER),
        Err(e) => return Err(fail(false, format!("the probe's own path: {e}"))),
    };
    if !path.exists() {
        return Err(fail(false, format!("no {VDSO_HELPER} beside the probe (it is injected with the probe into guests reached through qemu-guest-agent)")));
    }
    let offsets: Vec<String> = KERNEL_RNG_SAMPLE_OFFSETS_MS[1..].iter().map(|o| o.to_string()).collect();
    let mut child = match Command::new(&path).arg(offsets.join(",")).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn() {
        Ok(c) => c,
        Err(e) => return Err(fail(true, format!("start {}: {e}", path.display()))),
    };
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().take(MAX_LINES) {
            match line {
                Ok(l) if tx.send(l.chars().take(300).collect()).is_ok() => {}
                _ => break,
            }
        }
    });
    let first = match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(l) => l,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(true, "the helper said nothing within 5 s (a guest glibc it cannot run on?)".into()));
        }
    };
    let mut ready = VdsoRngWatch { helper: true, ..Default::default() };
    let mut fields = first.split('\t');
    if fields.next() != Some("ready") {
        let _ = child.kill();
        let _ = child.wait();
        return Err(fail(true, format!("the helper's first line was {first:?}")));
    }
    for f in fields {
        match f.split_once('=') {
            Some(("glibc", v)) => ready.glibc = v.to_string(),
            Some(("vdso_symbol", v)) => ready.vdso_symbol = v == "yes",
            Some(("path", v)) => ready.path = v.to_string(),
            Some(("why", v)) => ready.why = v.to_string(),
            _ => {}
        }
    }
    let stdin = child.stdin.take();
    Ok(Running { child, stdin, lines: rx, ready })
}

/// Right after resume: tell the helper to sample.
pub fn go() {
    if let Some(Ok(r)) = lock().as_mut() {
        if let Some(mut s) = r.stdin.take() {
            let _ = s.write_all(b"go\n");
        }
    }
}

/// At `samples`: what the helper read after `go` (waits for its `done`, at most 3 s).
pub fn collect() -> VdsoRngWatch {
    let mut g = lock();
    let Some(state) = g.take() else {
        return VdsoRngWatch { why: "not started: no hold before go".into(), ..Default::default() };
    };
    let mut r = match state {
        Ok(r) => r,
        Err(w) => return w,
    };
    let mut w = r.ready.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match r.lines.recv_timeout(left) {
            Ok(l) if l == "done" => break,
            Ok(l) => {
                let mut f = l.split('\t');
                match (f.next(), f.next().and_then(|t| t.parse::<u64>().ok()), f.next()) {
                    (Some("sample"), Some(t_ns), Some(hex)) if hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                        w.samples.push(Sample { t_ns, hex: hex.to_string() })
                    }
                    (Some("error"), _, e) => w.error = Some(format!("getrandom() failed after resume: {}", e.unwrap_or(""))),
                    _ => w.error = Some(format!("an unexpected line from the helper: {l:?}")),
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                w.error = Some(format!("the helper did not finish within 3 s ({} samples)", w.samples.len()));
                break;
            }
            Err(RecvTimeoutError::Disconnected) => {
                w.error.get_or_insert_with(|| format!("the helper ended after {} samples", w.samples.len()));
                break;
            }
        }
    }
    let _ = r.child.kill();
    let _ = r.child.wait();
    w
}
