//! The QEMU that both backends run (directly, or through libvirt): which binary, its version,
//! and the CPU model per accelerator. One place, so the two backends cannot drift apart.

use clonesafe_metadata::Accel;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The binary `--emulator` chose for this process.
static CHOSEN: OnceLock<PathBuf> = OnceLock::new();

/// Run this QEMU binary instead of the system's (`--emulator PATH`), before any VM starts. It
/// must run and name its version; a QEMU unpacked into a private prefix (`PREFIX/usr/bin/...`)
/// gets its own firmware ([`firmware_args`]). Returns its version line.
pub fn choose(path: &Path) -> Result<String, String> {
    // Bounded: a binary that hangs on --version must not hang the harness (issue 19, item 9).
    let out = crate::tools::bounded::output(std::process::Command::new(path).arg("--version"), std::time::Duration::from_secs(10), 64 << 10)
        .map_err(|e| format!("--emulator {}: {}", path.display(), crate::error_chain(&e)))?;
    let line = String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_string();
    if !out.status.success() || !line.contains("QEMU emulator version") {
        return Err(format!("--emulator {}: not a QEMU binary (its --version said {:?}; stderr: {})", path.display(), line, String::from_utf8_lossy(&out.stderr).trim()));
    }
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    CHOSEN.set(abs).map_err(|_| "--emulator was given twice".to_string())?;
    Ok(line)
}

/// The QEMU binary: the one `--emulator` chose, else `CLONESAFE_QEMU`, else
/// `qemu-system-x86_64` on PATH.
pub fn qemu_binary() -> PathBuf {
    if let Some(p) = CHOSEN.get() {
        return p.clone();
    }
    std::env::var_os("CLONESAFE_QEMU").map(PathBuf::from).unwrap_or_else(|| "qemu-system-x86_64".into())
}

/// Whether the QEMU in use has device `name`: `-device NAME,help` answers with its options (or
/// "There are no options for NAME"), or "Device 'NAME' not found". Asked once per device and
/// process, bounded. (`-device help` itself lists nothing useful for a QEMU in a private prefix:
/// it tries to load the system QEMU's modules and stops.)
pub fn has_device(name: &str) -> bool {
    static CACHE: std::sync::Mutex<Vec<(PathBuf, String, bool)>> = std::sync::Mutex::new(Vec::new());
    let bin = qemu_binary();
    let mut c = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, _, has)) = c.iter().find(|(b, n, _)| *b == bin && n == name) {
        return *has;
    }
    let mut cmd = std::process::Command::new(&bin);
    cmd.args(firmware_args()).args(["-machine", "none", "-nodefaults", "-display", "none", "-device", &format!("{name},help")]);
    let has = crate::tools::bounded::output(&mut cmd, std::time::Duration::from_secs(10), 256 << 10)
        .map(|o| {
            let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
            o.status.success() && !text.contains("not found")
        })
        .unwrap_or(false);
    c.push((bin, name.to_string(), has));
    has
}

/// Whether the QEMU in use is a private one (`--emulator` into a prefix other than /usr).
pub fn is_private() -> bool {
    !firmware_args().is_empty()
}

/// `-L` firmware directories for a QEMU unpacked into a private prefix (`PREFIX/usr/bin/qemu-
/// system-x86_64`, as `dpkg-deb -x` leaves it; ci/install-qemu10.sh): its own `usr/share/qemu`
/// and `usr/share/seabios`, which QEMU searches in order. Without them it would load the system
/// QEMU's firmware, built for another version. Empty for a QEMU in /usr/bin.
pub fn firmware_args() -> Vec<String> {
    let bin = qemu_binary();
    let Some(prefix) = bin.parent().filter(|d| d.ends_with("usr/bin")).and_then(|d| d.parent()).and_then(|d| d.parent()) else { return vec![] };
    if prefix == Path::new("/") {
        return vec![];
    }
    ["usr/share/qemu", "usr/share/seabios"].iter().map(|d| prefix.join(d)).filter(|d| d.is_dir()).flat_map(|d| ["-L".to_string(), d.display().to_string()]).collect()
}

/// The QEMU binary as an absolute path (libvirt's `<emulator>` needs one).
pub fn qemu_path() -> PathBuf {
    let q = qemu_binary();
    if q.is_absolute() {
        return q;
    }
    std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join(&q)).find(|c| c.is_file()))
        .unwrap_or_else(|| "/usr/bin/qemu-system-x86_64".into())
}

/// First line of `qemu-system-x86_64 --version`.
pub fn qemu_version() -> Option<String> {
    let out = crate::tools::bounded::output(std::process::Command::new(qemu_binary()).arg("--version"), std::time::Duration::from_secs(10), 64 << 10).ok()?;
    String::from_utf8_lossy(&out.stdout).lines().next().map(str::to_string)
}

/// The version number alone ("7.2.22") from [`qemu_version`].
pub fn qemu_version_number() -> Option<String> {
    let v = qemu_version()?;
    v.split_whitespace().skip_while(|w| *w != "version").nth(1).map(str::to_string)
}

/// `a.b[.c]` ≥ `major.minor`.
pub fn version_at_least(v: &str, major: u32, minor: u32) -> bool {
    let mut it = v.split('.').map(|p| p.trim_end_matches(|c: char| !c.is_ascii_digit()).parse::<u32>().unwrap_or(0));
    let (a, b) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

/// Whether the QEMU in use has the `mapped-ram` migration capability (QEMU 9.0 added it).
pub fn has_mapped_ram() -> bool {
    qemu_version_number().is_some_and(|v| version_at_least(&v, 9, 0))
}

/// `-cpu` for an accelerator: the host's CPU under KVM, everything TCG emulates otherwise.
pub fn cpu_model(accel: Accel) -> &'static str {
    match accel {
        Accel::Kvm => "host",
        Accel::Tcg => "max",
    }
}

/// The host kernel release.
pub fn host_kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string()
}

/// The host CPU model from /proc/cpuinfo.
pub fn host_cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| "unknown".into())
}
