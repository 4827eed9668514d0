//! A guest's serial console kept on this machine, bounded: the guest is untrusted and can write
//! as fast as it likes (issue 19, item 12: a flooding guest wrote about 22 MB per VM in 80 s into
//! an uncapped log). QEMU's console is a socket the harness reads; the first [`CONSOLE_CAP`]
//! bytes go to `console.log`, then one line saying the rest was discarded, and the rest is read
//! and dropped, so that the guest never blocks on a full port.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Most of a console kept on this machine.
pub const CONSOLE_CAP: u64 = 16 << 20;

/// The cap in force: [`CONSOLE_CAP`], or a smaller one a test sets in `CLONESAFE_CONSOLE_CAP`
/// (bytes; it can only lower the cap).
pub fn cap() -> u64 {
    std::env::var("CLONESAFE_CONSOLE_CAP").ok().and_then(|v| v.parse().ok()).map_or(CONSOLE_CAP, |c: u64| c.min(CONSOLE_CAP))
}

/// The line written once the cap is reached.
pub fn capped_line(cap: u64) -> String {
    format!("\n[clonesafe: the console passed {cap} bytes; the rest was read and discarded]\n")
}

/// A console log on this machine that keeps at most `cap` bytes: the first `cap` bytes written
/// go to the file (created 0600, appended to, never through a link), then one line saying the
/// rest was discarded; the flag is set from then on.
pub struct CappedLog {
    f: std::fs::File,
    kept: u64,
    cap: u64,
    capped: Arc<AtomicBool>,
}

impl CappedLog {
    pub fn open(path: &Path, cap: u64) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(path)?;
        let kept = f.metadata()?.len();
        Ok(CappedLog { f, kept, cap, capped: Arc::new(AtomicBool::new(false)) })
    }

    /// Set when something was discarded.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.capped.clone()
    }

    /// Keep what fits of `b`; say once that the rest went.
    pub fn write(&mut self, b: &[u8]) -> std::io::Result<()> {
        let room = self.cap.saturating_sub(self.kept).min(b.len() as u64) as usize;
        if room > 0 {
            self.f.write_all(&b[..room])?;
            self.kept += room as u64;
        }
        if room < b.len() && !self.capped.swap(true, Ordering::SeqCst) {
            self.f.write_all(capped_line(self.cap).as_bytes())?;
        }
        Ok(())
    }
}

/// Copy `from` into `log` until `from` ends.
pub fn pump(mut from: impl Read, log: &mut CappedLog) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => log.write(&buf[..n])?,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return Ok(()),
        }
    }
}

/// [`pump`] on a thread of its own; returns the flag it sets.
pub fn spawn_pump(from: impl Read + Send + 'static, path: &Path) -> std::io::Result<Arc<AtomicBool>> {
    let mut log = CappedLog::open(path, cap())?;
    let capped = log.flag();
    std::thread::Builder::new().name("console".into()).spawn(move || {
        let _ = pump(from, &mut log);
    })?;
    Ok(capped)
}

/// [`spawn_pump`] on the socket QEMU connected its console to.
pub fn pump_socket(s: tokio::net::UnixStream, path: &Path) -> std::io::Result<Arc<AtomicBool>> {
    let s = s.into_std()?;
    s.set_nonblocking(false)?;
    spawn_pump(s, path)
}

/// The report's note for a VM whose console was cut.
pub fn capped_note(vm: &str) -> String {
    format!("the console of {vm} passed {} bytes; the rest was read and discarded (the guest is untrusted: what it writes is bounded)", cap())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_at_the_cap_and_the_cut_is_said_once() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("console.log");
        let mut capped = CappedLog::open(&log, 1 << 20).unwrap();
        let flag = capped.flag();
        let flood = std::io::repeat(b'A').take(3 << 20);
        pump(flood, &mut capped).unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(text.len(), (1 << 20) + capped_line(1 << 20).len());
        assert!(text.ends_with(&capped_line(1 << 20)) && flag.load(Ordering::SeqCst));
        let quiet = d.path().join("quiet.log");
        let mut quiet_log = CappedLog::open(&quiet, 1 << 20).unwrap();
        let flag = quiet_log.flag();
        pump(&b"boot\n"[..], &mut quiet_log).unwrap();
        assert_eq!(std::fs::read_to_string(&quiet).unwrap(), "boot\n");
        assert!(!flag.load(Ordering::SeqCst));
    }
}
