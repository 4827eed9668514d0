//! Guest images: what `guests/<name>/build.sh` produced, found and validated before any VM starts.

use serde::Serialize;
use std::path::{Path, PathBuf};

/// Where built guests live unless `CLONESAFE_GUESTS` says otherwise. It is outside any home
/// directory because libvirt's QEMU runs as `libvirt-qemu` and cannot read /root (FACTS.md).
pub const DEFAULT_GUESTS_DIR: &str = "/var/lib/clonesafe/guests";

pub fn default_guests_dir() -> PathBuf {
    std::env::var_os("CLONESAFE_GUESTS").map(PathBuf::from).unwrap_or_else(|| DEFAULT_GUESTS_DIR.into())
}

#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("Unknown guest {0:?}: the only guest so far is \"tiny\"")]
    Unknown(String),
    #[error("Guest image {name:?} is not built: {missing} is missing. Build it with `guests/{name}/build.sh` (or `ci/setup.sh`), or point CLONESAFE_GUESTS at a built copy")]
    NotBuilt { name: String, missing: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct GuestImage {
    pub name: String,
    pub dir: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The never-booted data disk; VMs get overlays on it, never write to it.
    pub disk: PathBuf,
    pub cmdline: String,
    /// Kernel release from the build manifest, for reports.
    pub kernel_release: Option<String>,
}

impl GuestImage {
    pub fn locate(guests_dir: &Path, name: &str) -> Result<Self, GuestError> {
        if name != "tiny" {
            return Err(GuestError::Unknown(name.to_string()));
        }
        let dir = guests_dir.join(name);
        let files = ["vmlinuz", "initrd.img", "data.qcow2", "manifest.json"];
        for f in files {
            let p = dir.join(f);
            if !p.is_file() {
                return Err(GuestError::NotBuilt { name: name.into(), missing: p.display().to_string() });
            }
        }
        let kernel_release = std::fs::read_to_string(dir.join("manifest.json"))
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|v| v["kernel_release"].as_str().map(str::to_string));
        Ok(GuestImage {
            name: name.into(),
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.img"),
            disk: dir.join("data.qcow2"),
            // quiet: a chatty serial console slows TCG boots; init's own lines still show.
            cmdline: "console=ttyS0 panic=-1 quiet".into(),
            kernel_release,
            dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_image_names_the_file_and_the_fix() {
        let d = tempfile::tempdir().unwrap();
        let e = GuestImage::locate(d.path(), "tiny").unwrap_err().to_string();
        assert!(e.contains("vmlinuz is missing") && e.contains("guests/tiny/build.sh"), "{e}");
        assert!(GuestImage::locate(d.path(), "debian").is_err());
    }
}
