//! Who made a thing on this host: the proof a reaper needs before it deletes anything.
//!
//! Hardening issue 19 found two reapers that went by name alone: any `run-<N>-*` directory whose
//! N was not a live pid was removed (a user's `run-2023-results/` went with it), and any
//! interface named `cs<N>...` likewise (a tap a user made with `ip tuntap`). Now a thing is
//! reaped only if a marker written when it was made says which run made it, and that run is
//! provably over:
//!
//! ```text
//! marker (0600, a regular file, at most 4 KiB):
//!     clonesafe-owner 1
//!     pid <pid>
//!     boot <the kernel's boot_id>
//!     start <starttime of the pid, clock ticks since boot: /proc/<pid>/stat field 22>
//! ```
//!
//! The owner is alive when this kernel's boot_id is the marker's and the pid exists with the same
//! start time; a pid reused since, or another boot, is a dead owner. Run directories carry their
//! marker inside them; network namespaces and taps are named in a registry directory of markers,
//! [`REGISTRY`] (`/run` is a tmpfs: the registry goes with the boot, as the interfaces do).

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Where markers of host-wide things (namespaces, taps) are kept.
pub const REGISTRY: &str = "/run/clonesafe/owned";
/// The marker file inside a directory a run made.
pub const MARKER: &str = ".clonesafe-owner";
const MAGIC: &str = "clonesafe-owner 1";
const MAX_MARKER: u64 = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub boot: String,
    pub start: u64,
}

/// This kernel's boot id (`/proc/sys/kernel/random/boot_id`).
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// The start time of `pid` in clock ticks since boot (field 22 of /proc/<pid>/stat), if it runs.
fn start_of(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl Owner {
    /// This process.
    pub fn me() -> Owner {
        static ME: std::sync::OnceLock<Owner> = std::sync::OnceLock::new();
        ME.get_or_init(|| {
            let pid = std::process::id();
            Owner { pid, boot: boot_id(), start: start_of(pid).unwrap_or(0) }
        })
        .clone()
    }

    pub fn render(&self) -> String {
        format!("{MAGIC}\npid {}\nboot {}\nstart {}\n", self.pid, self.boot, self.start)
    }

    pub fn parse(text: &str) -> Option<Owner> {
        let mut lines = text.lines();
        if lines.next()? != MAGIC {
            return None;
        }
        let mut field = |key: &str| lines.next()?.strip_prefix(key)?.strip_prefix(' ').map(str::to_string);
        let pid = field("pid")?.parse().ok()?;
        let boot = field("boot")?;
        let start = field("start")?.parse().ok()?;
        (!boot.is_empty()).then_some(Owner { pid, boot, start })
    }

    /// Whether the run that wrote this marker may still be running: same boot, and its pid
    /// alive with the same start time.
    pub fn alive(&self) -> bool {
        self.boot == boot_id() && start_of(self.pid) == Some(self.start)
    }
}

/// Write this process's marker at `path` (which must not exist: never through a symlink).
pub fn write_marker(path: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(path)?;
    f.write_all(Owner::me().render().as_bytes())
}

/// The marker at `path`, if it is one: a regular file (not a link) of this user, bounded, that
/// parses. Anything else proves nothing.
pub fn read_marker(path: &Path) -> Option<Owner> {
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path).ok()?;
    let m = f.metadata().ok()?;
    // SAFETY: geteuid has no preconditions.
    if !m.is_file() || m.uid() != unsafe { libc::geteuid() } || m.len() > MAX_MARKER {
        return None;
    }
    let mut s = String::new();
    f.take(MAX_MARKER).read_to_string(&mut s).ok()?;
    Owner::parse(&s)
}

/// The registry entry for a host-wide thing of `kind` ("netns", "tap") named `name`.
fn entry(registry: &Path, kind: &str, name: &str) -> PathBuf {
    registry.join(format!("{kind}.{name}"))
}

/// Record that this run makes `kind` `name` (before making it: a run killed in between leaves a
/// marker for nothing, which the reaper removes). A marker already there is refused: the name
/// is someone else's.
pub fn claim(registry: &Path, kind: &str, name: &str) -> std::io::Result<()> {
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(registry)?;
    }
    let m = std::fs::symlink_metadata(registry)?;
    // SAFETY: geteuid has no preconditions.
    if !m.is_dir() || m.uid() != unsafe { libc::geteuid() } {
        return Err(std::io::Error::other(format!("{} is not a directory of this user's", registry.display())));
    }
    write_marker(&entry(registry, kind, name))
}

/// Forget `kind` `name` (it was removed).
pub fn release(registry: &Path, kind: &str, name: &str) {
    let _ = std::fs::remove_file(entry(registry, kind, name));
}

/// The names of `kind` whose marker says their run is over: what may be reaped. A marker that
/// is not one (a link, another user's, garbage) is left alone.
pub fn stale(registry: &Path, kind: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(registry) else { return vec![] };
    let prefix = format!("{kind}.");
    let mut out: Vec<String> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.strip_prefix(&prefix)?.to_string();
            let owner = read_marker(&e.path())?;
            (!owner.alive()).then_some(name)
        })
        .collect();
    out.sort();
    out
}

/// Whether the directory `dir` was made by a run that is over: it is a real directory (not a
/// link) of this user's whose marker says so.
pub fn dead_run_dir(dir: &Path) -> Option<Owner> {
    let m = std::fs::symlink_metadata(dir).ok()?;
    // SAFETY: geteuid has no preconditions.
    if !m.is_dir() || m.uid() != unsafe { libc::geteuid() } {
        return None;
    }
    read_marker(&dir.join(MARKER)).filter(|o| !o.alive())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_reused_pid_or_another_boot_is_not() {
        let me = Owner::me();
        assert!(me.start > 0 && !me.boot.is_empty());
        assert!(me.alive());
        assert_eq!(Owner::parse(&me.render()), Some(me.clone()));
        // The same pid started at another time: a pid reused since the marker was written.
        assert!(!Owner { start: me.start + 1, ..me.clone() }.alive());
        assert!(!Owner { boot: "another-boot".into(), ..me.clone() }.alive());
        assert!(!Owner { pid: 4_194_999, ..me }.alive());
        assert_eq!(Owner::parse("clonesafe-owner 1\npid x\n"), None);
        assert_eq!(Owner::parse("run-2023\n"), None);
    }

    #[test]
    fn the_registry_names_only_what_dead_runs_claimed() {
        let d = tempfile::tempdir().unwrap();
        let reg = d.path().join("owned");
        claim(&reg, "tap", "cs1n0").unwrap();
        assert!(claim(&reg, "tap", "cs1n0").is_err(), "a name claimed twice");
        let dead = Owner { pid: 4_194_999, ..Owner::me() };
        std::fs::write(reg.join("tap.cs2n0"), dead.render()).unwrap();
        // Garbage and links prove nothing.
        std::fs::write(reg.join("tap.cs3n0"), "not a marker").unwrap();
        std::os::unix::fs::symlink(reg.join("tap.cs2n0"), reg.join("tap.cs4n0")).unwrap();
        assert_eq!(stale(&reg, "tap"), vec!["cs2n0".to_string()]);
        assert!(stale(&reg, "netns").is_empty());
        release(&reg, "tap", "cs1n0");
        assert!(!reg.join("tap.cs1n0").exists());
    }
}
