//! `sysprep`: offline sanitizing of a copied image before any clone boots it.
//!
//! A guest that boots from its own disk gets the real `virt-sysprep` (libguestfs), with its
//! default operations; the report lists those it performed. libguestfs runs its appliance under
//! TCG here (`LIBGUESTFS_BACKEND=direct`, `LIBGUESTFS_BACKEND_SETTINGS=force_tcg`: on this
//! machine's KVM the appliance hangs, FACTS.md). virt-sysprep deletes the SSH host keys; an image
//! with nothing that makes new ones at boot (Debian's ssh.service runs `sshd -t` and fails
//! without keys) would come up unreachable over SSH, so for such an image the recipe adds
//! `ssh-keygen -A` through virt-sysprep's firstboot facility, and says so.
//!
//! virt-sysprep works on a guest whose OS it can inspect on the disk; the tiny guest's OS lives
//! in its initramfs and its disk is a bare data filesystem, so its operations are done here
//! instead. The fallback, qemu-nbd, needs the nbd kernel module, and this host kernel has
//! none (`modprobe nbd`: "Module nbd not found", measured). So the files are removed from the
//! ext4 filesystem with e2fsprogs' `debugfs -w` on a raw copy: no kernel module, no mount.

use crate::backend::capability::Capability;
use crate::clones::recipe::{Ctx, Fixup, RecipeError, Shapes};
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
    fn shapes(&self) -> Shapes {
        Shapes::Image
    }
    fn requires(&self) -> &'static [Capability] {
        &[Capability::HostFiles]
    }
    fn describe(&self) -> Option<&'static str> {
        None
    }

    async fn on_image(&self, cx: &Ctx<'_>, image: &Path, _what: &str, notes: &mut Vec<String>) -> Result<(), RecipeError> {
        if cx.machine.guest.boot == crate::guest::Boot::Disk {
            notes.extend(virt_sysprep(image, &cx.build.dir).await?);
            return Ok(());
        }
        let done = sanitize(image, &cx.build.dir).await?;
        notes.push(format!("sysprep (offline, debugfs on the copied image): {}", done.join("; ")));
        notes.push(COVERAGE.into());
        Ok(())
    }
}

/// libguestfs under TCG (its appliance hangs on this machine's KVM), with its temporary files in
/// `tmp`; run it with [`crate::tools::bounded::output_async`].
pub fn guestfs(cmd: &str, tmp: &Path) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(cmd);
    c.env("LIBGUESTFS_BACKEND", "direct").env("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg").env("LIBGUESTFS_TMPDIR", tmp).env("TMPDIR", tmp);
    c
}

/// A libguestfs command, bounded (its whole process group, the appliance's QEMU with it, is
/// killed at the bound or on Ctrl-C).
async fn bounded(c: &mut tokio::process::Command, stdin: Option<&[u8]>, secs: u64) -> Result<std::process::Output, RecipeError> {
    let tool = c.as_std().get_program().to_string_lossy().into_owned();
    crate::tools::bounded::output_async(c, stdin, std::time::Duration::from_secs(secs)).await.map_err(|e| match e {
        crate::tools::bounded::BoundedError::Spawn { source, .. } => RecipeError::Io { what: format!("run {tool} (is libguestfs-tools installed?)"), source },
        source => RecipeError::Bounded { tool: format!("sysprep: {tool}"), source },
    })
}

/// Whether the image has something that makes SSH host keys at boot: a sshd-keygen unit
/// (Fedora, RHEL) or `ssh-keygen -A` in its ssh unit. (Inspected read-only with guestfish.)
async fn regenerates_host_keys(image: &Path, tmp: &Path) -> Result<bool, RecipeError> {
    // A leading '-' makes guestfish go on when a command fails (the file is absent).
    let script = "-exists /usr/lib/systemd/system/sshd-keygen@.service\n-exists /lib/systemd/system/sshd-keygen.service\n-cat /lib/systemd/system/ssh.service\n-cat /usr/lib/systemd/system/sshd.service\n";
    let mut c = guestfs("guestfish", tmp);
    // The copy is ours and qcow2: say so, so libguestfs never probes it.
    c.args(["--ro", "-i", "--format=qcow2", "-a"]).arg(image);
    let out = bounded(&mut c, Some(script.as_bytes()), 600).await?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().any(|l| l.trim() == "true") || text.contains("ssh-keygen -A"))
}

/// The real virt-sysprep on a disk-booted guest's copied image. Returns the report's notes.
async fn virt_sysprep(image: &Path, tmp: &Path) -> Result<Vec<String>, RecipeError> {
    let mut notes = Vec::new();
    let tmp = tempfile::Builder::new().prefix("guestfs-").tempdir_in(tmp).map_err(|source| RecipeError::Io { what: "create libguestfs's temporary directory".into(), source })?;
    let keys_at_boot = regenerates_host_keys(image, tmp.path()).await?;
    let mut c = guestfs("virt-sysprep", tmp.path());
    c.args(["--format", "qcow2", "-a"]).arg(image);
    if !keys_at_boot {
        c.args(["--firstboot-command", "ssh-keygen -A && (systemctl restart ssh || systemctl restart sshd)"]);
    }
    let out = bounded(&mut c, None, 900).await?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return Err(RecipeError::Sysprep(format!("virt-sysprep failed ({}): {}", out.status, crate::text::truncate(text.trim(), 2000))));
    }
    // "[   7.9] Performing "machine-id" ..."
    let ops: Vec<&str> = text.lines().filter_map(|l| l.split("Performing \"").nth(1)).filter_map(|r| r.split('"').next()).collect();
    notes.push(format!("sysprep: the real virt-sysprep (libguestfs, TCG appliance) on the copied image performed {} operations: {}", ops.len(), ops.join(", ")));
    // Measured on the debian12 image (libguestfs 1.48): the "customize" operation prints
    // "Setting a random seed" and then "warning: random seed could not be set for this type of
    // guest": it writes the pre-systemd seed files (/var/lib/urandom/random-seed and similar),
    // not systemd's /var/lib/systemd/random-seed, and has no operation for credential.secret.
    let seed = if text.contains("random seed could not be set") {
        "virt-sysprep tried to set a random seed and warned that it \"could not be set for this type of guest\""
    } else if text.contains("Setting a random seed") {
        "virt-sysprep set a random seed (in the pre-systemd seed file it knows)"
    } else {
        "virt-sysprep did not set a random seed"
    };
    // Measured on the debian12 image (libguestfs 1.48): after the machine-id operation empties
    // /etc/machine-id, the customize step prints "Setting the machine ID in /etc/machine-id" and
    // writes one random ID into the image, so every VM made from this image shares it.
    if text.contains("Setting the machine ID") {
        notes.push("virt-sysprep's customize step wrote one new random machine-id into the image (\"Setting the machine ID in /etc/machine-id\"): every clone booted from this sysprepped image shares it (see the machine_id check); to have each clone's first boot make its own, run virt-sysprep on each copy or leave /etc/machine-id empty afterwards".into());
    }
    notes.push(format!("{seed}; systemd's /var/lib/systemd/random-seed and credential.secret are not among its operations, so they stay as the template left them (see the random_seed and credential_secret checks)"));
    if keys_at_boot {
        notes.push("the image makes SSH host keys at boot by itself (a sshd-keygen unit, or ssh-keygen -A in its ssh unit)".into());
    } else {
        notes.push("the image makes no SSH host keys at boot (Debian's ssh.service runs `sshd -t`, which fails without keys), so virt-sysprep's firstboot runs `ssh-keygen -A` and restarts sshd; without it the clones would not be reachable over SSH".into());
    }
    Ok(notes)
}

pub async fn sanitize(image: &Path, tmpdir: &Path) -> Result<Vec<String>, RecipeError> {
    let raw = tmpdir.join("sysprep.raw");
    qemu_img::convert(image, "qcow2", "raw", &raw).await.map_err(RecipeError::tool("sysprep: copy the image to raw"))?;
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
    qemu_img::convert(&raw, "raw", "qcow2", image).await.map_err(RecipeError::tool("sysprep: copy the image back to qcow2"))?;
    std::fs::remove_file(&raw).map_err(|source| RecipeError::Io { what: format!("remove {}", raw.display()), source })?;
    // Prove it: the files must be gone from the sanitized image.
    let check = tmpdir.join("sysprep-check.raw");
    qemu_img::convert(image, "qcow2", "raw", &check).await.map_err(RecipeError::tool("sysprep: copy the result for checking"))?;
    let left = e2fs::debugfs(&check, "ls -l /etc").await.map_err(RecipeError::tool("sysprep: list /etc of the result"));
    let _ = std::fs::remove_file(&check);
    let left = left?;
    if left.contains("machine-id") || left.contains("hostname") {
        return Err(RecipeError::Sysprep(format!("files survived:\n{left}")));
    }
    Ok(vec![format!("removed {}", removed.join(", "))])
}
