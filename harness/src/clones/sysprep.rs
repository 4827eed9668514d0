//! Offline sanitizing of a copied image, for `image-clone-sysprep`.
//!
//! virt-sysprep (libguestfs) works on a guest whose OS it can inspect on the disk; the tiny
//! guest's OS lives in its initramfs and its disk is a bare data filesystem, so its operations
//! are done here instead (virt-sysprep itself was not run). The fallback, qemu-nbd, needs
//! the nbd kernel module, and this host kernel has none (`modprobe nbd`: "Module nbd not found",
//! measured). So the files are removed from the ext4 filesystem with e2fsprogs' `debugfs -w` on a
//! raw copy: no kernel module, no mount.

use super::remanence::qemu_img;
use crate::backend::{io_err, BackendError};
use std::path::Path;

/// Which of virt-sysprep's default operations this covers, and why the rest do not apply.
pub const COVERAGE: &str = "virt-sysprep operations covered: machine-id (/etc/machine-id removed; the guest makes a new one at boot), ssh-hostkeys (/etc/ssh/ssh_host_* removed; regenerated at boot), net-hostname (/etc/hostname removed; regenerated). Not applicable to the tiny guest, which has none of these files: net-hwaddr (no ifcfg files), udev-persistent-net (no udev rules), dhcp-client-state (no DHCP client), random-seed (no seed file), logfiles, and the rest of the 39 defaults";

/// Files removed from the filesystem root of the data disk.
const REMOVE: &[&str] = &["/etc/machine-id", "/etc/hostname"];

pub async fn sanitize(image: &Path, tmpdir: &Path) -> Result<Vec<String>, BackendError> {
    let raw = tmpdir.join("sysprep.raw");
    qemu_img(&["convert", "-O", "raw", &image.display().to_string(), &raw.display().to_string()]).await?;
    // The template was powered off, so its journal may still hold the identity's metadata:
    // replay it first, or the kernel would replay it at the clone's mount and undo the removal.
    let fsck = tokio::process::Command::new("e2fsck").args(["-fy"]).arg(&raw).output().await.map_err(io_err("run e2fsck"))?;
    if fsck.status.code().unwrap_or(8) > 1 {
        return Err(BackendError::Other(format!("sysprep: e2fsck: {}", String::from_utf8_lossy(&fsck.stdout).trim())));
    }
    let keys = debugfs(&raw, "ls -l /etc/ssh").await?;
    let mut script: Vec<String> = REMOVE.iter().map(|f| format!("rm {f}")).collect();
    let mut removed: Vec<String> = REMOVE.iter().map(|f| f.to_string()).collect();
    for name in keys.split_whitespace().filter(|w| w.starts_with("ssh_host_")) {
        script.push(format!("rm /etc/ssh/{name}"));
        removed.push(format!("/etc/ssh/{name}"));
    }
    let out = debugfs(&raw, &script.join("\n")).await?;
    if out.contains("File not found") {
        return Err(BackendError::Other(format!("sysprep: debugfs could not remove every file:\n{out}")));
    }
    qemu_img(&["convert", "-O", "qcow2", &raw.display().to_string(), &image.display().to_string()]).await?;
    std::fs::remove_file(&raw).map_err(io_err(format!("remove {}", raw.display())))?;
    // Prove it: the files must be gone from the sanitized image.
    let check = tmpdir.join("sysprep-check.raw");
    qemu_img(&["convert", "-O", "raw", &image.display().to_string(), &check.display().to_string()]).await?;
    let left = debugfs(&check, "ls -l /etc").await?;
    let _ = std::fs::remove_file(&check);
    if left.contains("machine-id") || left.contains("hostname") {
        return Err(BackendError::Other(format!("sysprep: files survived:\n{left}")));
    }
    Ok(vec![format!("removed {}", removed.join(", "))])
}

async fn debugfs(raw: &Path, cmds: &str) -> Result<String, BackendError> {
    let script = raw.with_extension("cmds");
    std::fs::write(&script, cmds).map_err(io_err(format!("write {}", script.display())))?;
    let out = tokio::process::Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&script)
        .arg(raw)
        .output()
        .await
        .map_err(io_err("run debugfs (is e2fsprogs installed?)"))?;
    let _ = std::fs::remove_file(&script);
    if !out.status.success() {
        return Err(BackendError::Other(format!("debugfs: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}
