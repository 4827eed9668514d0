//! `sysprep`: offline sanitizing of a copied image before any clone boots it.
//!
//! virt-sysprep (libguestfs) works on a guest whose OS it can inspect on the disk; the tiny
//! guest's OS lives in its initramfs and its disk is a bare data filesystem, so its operations
//! are done here instead (virt-sysprep itself was not run). The fallback, qemu-nbd, needs
//! the nbd kernel module, and this host kernel has none (`modprobe nbd`: "Module nbd not found",
//! measured). So the files are removed from the ext4 filesystem with e2fsprogs' `debugfs -w` on a
//! raw copy: no kernel module, no mount.

use crate::backend::capability::Capability;
use crate::clones::recipe::{Ctx, Fixup, RecipeError};
use crate::tools::{e2fs, qemu_img};
use async_trait::async_trait;
use clonesafe_metadata::FixupId;
use std::path::Path;

pub struct Sysprep;

/// Which of virt-sysprep's default operations this covers, and why the rest do not apply.
pub const COVERAGE: &str = "virt-sysprep operations covered: machine-id (/etc/machine-id removed; the guest makes a new one at boot), ssh-hostkeys (/etc/ssh/ssh_host_* removed; regenerated at boot), net-hostname (/etc/hostname removed; regenerated). Not applicable to the tiny guest, which has none of these files: net-hwaddr (no ifcfg files), udev-persistent-net (no udev rules), dhcp-client-state (no DHCP client), random-seed (no seed file), logfiles, and the rest of the 39 defaults";

/// Files removed from the filesystem root of the data disk.
const REMOVE: &[&str] = &["/etc/machine-id", "/etc/hostname"];

#[async_trait]
impl Fixup for Sysprep {
    fn id(&self) -> FixupId {
        FixupId::Sysprep
    }
    fn requires(&self) -> &'static [Capability] {
        &[]
    }
    fn describe(&self) -> Option<&'static str> {
        None
    }

    async fn on_image(&self, cx: &Ctx<'_>, image: &Path, _what: &str, notes: &mut Vec<String>) -> Result<(), RecipeError> {
        let done = sanitize(image, &cx.dir).await?;
        notes.push(format!("sysprep (offline, debugfs on the copied image): {}", done.join("; ")));
        notes.push(COVERAGE.into());
        Ok(())
    }
}

pub async fn sanitize(image: &Path, tmpdir: &Path) -> Result<Vec<String>, RecipeError> {
    let raw = tmpdir.join("sysprep.raw");
    qemu_img::convert(image, "raw", &raw).await.map_err(RecipeError::tool("sysprep: copy the image to raw"))?;
    // The template was powered off, so its journal may still hold the identity's metadata:
    // replay it first, or the kernel would replay it at the clone's mount and undo the removal.
    e2fs::fsck(&raw).await.map_err(RecipeError::tool("sysprep: replay the journal"))?;
    let keys = e2fs::debugfs(&raw, "ls -l /etc/ssh").await.map_err(RecipeError::tool("sysprep: list the SSH host keys"))?;
    let mut script: Vec<String> = REMOVE.iter().map(|f| format!("rm {f}")).collect();
    let mut removed: Vec<String> = REMOVE.iter().map(|f| f.to_string()).collect();
    for name in keys.split_whitespace().filter(|w| w.starts_with("ssh_host_")) {
        script.push(format!("rm /etc/ssh/{name}"));
        removed.push(format!("/etc/ssh/{name}"));
    }
    let out = e2fs::debugfs(&raw, &script.join("\n")).await.map_err(RecipeError::tool("sysprep: remove the identity files"))?;
    if out.contains("File not found") {
        return Err(RecipeError::Sysprep(format!("debugfs could not remove every file:\n{out}")));
    }
    qemu_img::convert(&raw, "qcow2", image).await.map_err(RecipeError::tool("sysprep: copy the image back to qcow2"))?;
    std::fs::remove_file(&raw).map_err(|source| RecipeError::Io { what: format!("remove {}", raw.display()), source })?;
    // Prove it: the files must be gone from the sanitized image.
    let check = tmpdir.join("sysprep-check.raw");
    qemu_img::convert(image, "raw", &check).await.map_err(RecipeError::tool("sysprep: copy the result for checking"))?;
    let left = e2fs::debugfs(&check, "ls -l /etc").await.map_err(RecipeError::tool("sysprep: list /etc of the result"));
    let _ = std::fs::remove_file(&check);
    let left = left?;
    if left.contains("machine-id") || left.contains("hostname") {
        return Err(RecipeError::Sysprep(format!("files survived:\n{left}")));
    }
    Ok(vec![format!("removed {}", removed.join(", "))])
}
