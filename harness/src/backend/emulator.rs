//! The QEMU that both backends run (directly, or through libvirt): which binary, its version,
//! and the CPU model per accelerator. One place, so the two backends cannot drift apart.

use clonesafe_metadata::Accel;
use std::path::PathBuf;

/// The QEMU binary: `CLONESAFE_QEMU` or `qemu-system-x86_64` on PATH.
pub fn qemu_binary() -> PathBuf {
    std::env::var_os("CLONESAFE_QEMU").map(PathBuf::from).unwrap_or_else(|| "qemu-system-x86_64".into())
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
    let out = std::process::Command::new(qemu_binary()).arg("--version").output().ok()?;
    String::from_utf8_lossy(&out.stdout).lines().next().map(str::to_string)
}

/// The version number alone ("7.2.22") from [`qemu_version`].
pub fn qemu_version_number() -> Option<String> {
    let v = qemu_version()?;
    v.split_whitespace().skip_while(|w| *w != "version").nth(1).map(str::to_string)
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
