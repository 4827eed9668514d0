//! Snapshot files hold guest memory and so guest secrets: they are created 0600, inside a
//! private (0700) run directory that is removed when the run ends. Errors are plain
//! `io::Error`s: callers say what they were doing.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Create an empty file readable and writable by its owner only. Fails if it exists.
pub fn create_private(path: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map(drop)
}

/// Where run directories go unless `CLONESAFE_WORKDIR` says otherwise.
pub fn default_work_root() -> PathBuf {
    std::env::var_os("CLONESAFE_WORKDIR").map(PathBuf::from).unwrap_or_else(|| "/var/lib/clonesafe/runs".into())
}

/// A private run directory, removed (with every snapshot in it) when dropped. Its name carries
/// this process's pid (`run-<pid>-XXXXXX`), so a later run can tell that its owner is gone.
pub fn run_dir(root: &Path) -> std::io::Result<tempfile::TempDir> {
    std::fs::create_dir_all(root)?;
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new().prefix(&format!("run-{}-", std::process::id())).permissions(std::fs::Permissions::from_mode(0o700)).tempdir_in(root)
}

/// Bytes available to this user on the filesystem holding `path` (None if it cannot be told).
pub fn free_bytes(path: &Path) -> Option<u64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a statvfs to fill.
    (unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// Below this many free bytes, a failed write into a run directory is put down to a full disk.
pub const FULL_DISK_BYTES: u64 = 16 << 20;

/// Remove the run directories under `root` whose owning process is gone: what a run killed
/// with SIGKILL left (hardening issue 11 found six such directories holding 382 MB of guest
/// memory after six later runs). Returns one note per directory removed. A directory whose pid
/// is alive (another run, or a pid reused since) is left alone; names without a pid (clonesafe
/// before this change) cannot be attributed and are left too.
pub fn reap_stale_run_dirs(root: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(root) else { return vec![] };
    let mut notes = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("run-").and_then(|r| r.split('-').next()).and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        // Not through a symlink: only our own directories, as they were made.
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let bytes = dir_bytes(&e.path());
        match std::fs::remove_dir_all(e.path()) {
            Ok(()) => notes.push(format!("removed the run directory {} of a dead run (pid {pid}): {bytes} bytes of snapshots and overlays", e.path().display())),
            Err(err) => notes.push(format!("could not remove the run directory {} of a dead run (pid {pid}): {err}", e.path().display())),
        }
    }
    notes
}

fn dir_bytes(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => dir_bytes(&e.path()),
                    Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
                    _ => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn private_files_are_0600_and_never_clobbered() {
        let root = tempfile::tempdir().unwrap();
        let d = run_dir(&root.path().join("runs")).unwrap();
        assert_eq!(std::fs::metadata(d.path()).unwrap().permissions().mode() & 0o777, 0o700);
        let f = d.path().join("x.mem");
        create_private(&f).unwrap();
        assert_eq!(std::fs::metadata(&f).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(create_private(&f).is_err());
    }

    #[test]
    fn run_dirs_of_dead_owners_are_reaped_and_live_ones_kept() {
        let root = tempfile::tempdir().unwrap();
        let mine = run_dir(root.path()).unwrap();
        // A pid that cannot be alive (above pid_max's ceiling of 2^22).
        let dead = root.path().join("run-4194999-abcdef");
        std::fs::create_dir_all(dead.join("naive")).unwrap();
        std::fs::write(dead.join("naive/source.mem"), vec![0u8; 1000]).unwrap();
        let legacy = root.path().join("run-Ab12Cd");
        std::fs::create_dir(&legacy).unwrap();
        let notes = reap_stale_run_dirs(root.path());
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("pid 4194999") && notes[0].contains("1000 bytes"), "{notes:?}");
        assert!(!dead.exists() && mine.path().exists() && legacy.exists());
    }
}
