//! Writing the files a run leaves for people (reports, events, captures, bench results) without
//! ever writing through a link someone else put there.
//!
//! Issue 19, item 6: `<out>/.report.json.tmp`, `events.jsonl` and `captures/<scenario>.pcap` made
//! symlinks redirected clonesafe's writes into other files. Every file here is created with
//! `O_CREAT|O_EXCL|O_NOFOLLOW` (a link, or anything, already at that name makes the open fail),
//! finished files are renamed into place (rename(2) replaces a link at the target; it never
//! writes through it), and a directory clonesafe makes inside `--out` must be a real directory.
//! The `--out` directory itself is the user's choice, link or not.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Create `path` new, 0644, refusing anything already there (a link above all).
fn create_excl(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o644).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path)
}

/// `dir` (created if missing), refusing a link or a non-directory at that name.
pub fn subdir(dir: &Path) -> std::io::Result<PathBuf> {
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let m = std::fs::symlink_metadata(dir)?;
    if !m.is_dir() {
        return Err(std::io::Error::other(format!("{} is not a directory (a link is not followed)", dir.display())));
    }
    Ok(dir.to_path_buf())
}

/// A temporary file beside `dir/name`, created exclusively; rename it into place when done.
fn temp_in(dir: &Path, name: &str) -> std::io::Result<(PathBuf, File)> {
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let f = create_excl(&tmp)?;
    Ok((tmp, f))
}

/// Write `bytes` as `dir/name`: into a fresh temporary file, then renamed over whatever was at
/// that name. No half-written or empty temporary file is left behind (a full disk, say).
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let p = dir.join(name);
    let (tmp, mut f) = temp_in(dir, name)?;
    let r = f.write_all(bytes).and_then(|_| f.flush()).and_then(|_| std::fs::rename(&tmp, &p));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.map(|_| p)
}

/// Copy the file `from` to `dir/name` the same way.
pub fn copy_atomic(from: &Path, dir: &Path, name: &str) -> std::io::Result<PathBuf> {
    let p = dir.join(name);
    let mut src = crate::input::open_regular(from).map_err(std::io::Error::other)?;
    let (tmp, mut f) = temp_in(dir, name)?;
    let r = std::io::copy(&mut src, &mut f).and_then(|_| f.flush()).and_then(|_| std::fs::rename(&tmp, &p));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.map(|_| p)
}

/// A new, empty `dir/name` to append to as the run goes (the event stream): what was at that
/// name (an old file, or a link) is removed first, never written through.
pub fn create_fresh(dir: &Path, name: &str) -> std::io::Result<File> {
    let p = dir.join(name);
    match std::fs::remove_file(&p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    create_excl(&p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Issue 19, item 6: links at every name clonesafe writes are replaced, not written through.
    #[test]
    fn links_in_the_output_directory_are_never_written_through() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let out = d.path().join("out");
        std::fs::create_dir(&out).unwrap();
        symlink(&victim, out.join("report.json")).unwrap();
        symlink(&victim, out.join("events.jsonl")).unwrap();
        write_atomic(&out, "report.json", b"{}").unwrap();
        let mut f = create_fresh(&out, "events.jsonl").unwrap();
        f.write_all(b"event\n").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(out.join("report.json")).unwrap(), "{}");
        assert!(!std::fs::symlink_metadata(out.join("events.jsonl")).unwrap().file_type().is_symlink());
        // A directory clonesafe makes inside --out must not be a link to elsewhere.
        let elsewhere = d.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        symlink(&elsewhere, out.join("captures")).unwrap();
        assert!(subdir(&out.join("captures")).is_err());
        let src = d.path().join("capture.pcap");
        std::fs::write(&src, "pcap").unwrap();
        symlink(&victim, out.join("copied")).unwrap();
        copy_atomic(&src, &out, "copied").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 4, "no temporary file left");
    }
}
