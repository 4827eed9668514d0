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
/// this process's pid (`run-<pid>-XXXXXX`) for people; what lets a later run remove it is the
/// owner marker written inside it at creation ([`crate::owner`]).
pub fn run_dir(root: &Path) -> std::io::Result<tempfile::TempDir> {
    std::fs::create_dir_all(root)?;
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::Builder::new().prefix(&format!("run-{}-", std::process::id())).permissions(std::fs::Permissions::from_mode(0o700)).tempdir_in(root)?;
    crate::owner::write_marker(&d.path().join(crate::owner::MARKER))?;
    Ok(d)
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

/// Remove the run directories under `root` that a run which is over provably made: what a run
/// killed with SIGKILL left (hardening issue 11 found six such directories holding 382 MB of
/// guest memory after six later runs). Returns one note per directory removed. Only a real
/// directory (not a link) named `run-*`, of this user, holding an owner marker whose run is over
/// is removed (issue 19: going by the pid in the name removed a user's `run-2023-results/`);
/// run directories without a marker (clonesafe before the marker) are left alone.
pub fn reap_stale_run_dirs(root: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(root) else { return vec![] };
    let mut notes = Vec::new();
    for e in rd.flatten() {
        if !e.file_name().to_string_lossy().starts_with("run-") {
            continue;
        }
        let Some(owner) = crate::owner::dead_run_dir(&e.path()) else { continue };
        let bytes = dir_bytes(&e.path());
        let pid = owner.pid;
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
        // A run that is over: its marker names a pid that cannot be alive (above pid_max's
        // ceiling of 2^22).
        let dead = root.path().join("run-4194999-abcdef");
        std::fs::create_dir_all(dead.join("naive")).unwrap();
        std::fs::write(dead.join("naive/source.mem"), vec![0u8; 1000]).unwrap();
        let owner = crate::owner::Owner { pid: 4_194_999, ..crate::owner::Owner::me() };
        std::fs::write(dead.join(crate::owner::MARKER), owner.render()).unwrap();
        let legacy = root.path().join("run-Ab12Cd");
        std::fs::create_dir(&legacy).unwrap();
        // Issue 19, item 4: a user's directory that only looks like a run's (no marker).
        let user = root.path().join("run-2023-results");
        std::fs::create_dir(&user).unwrap();
        std::fs::write(user.join("thesis.txt"), "years of work").unwrap();
        // A marker reached through a link proves nothing either.
        let linked = root.path().join("run-4194998-linked");
        std::fs::create_dir(&linked).unwrap();
        std::os::unix::fs::symlink(dead.join(crate::owner::MARKER), linked.join(crate::owner::MARKER)).unwrap();
        let notes = reap_stale_run_dirs(root.path());
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("pid 4194999") && notes[0].contains("bytes"), "{notes:?}");
        assert!(!dead.exists() && mine.path().exists() && legacy.exists() && linked.exists());
        assert_eq!(std::fs::read_to_string(user.join("thesis.txt")).unwrap(), "years of work");
    }
}
