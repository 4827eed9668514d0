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

/// A private run directory, removed (with every snapshot in it) when dropped.
pub fn run_dir(root: &Path) -> std::io::Result<tempfile::TempDir> {
    std::fs::create_dir_all(root)?;
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new().prefix("run-").permissions(std::fs::Permissions::from_mode(0o700)).tempdir_in(root)
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
}
