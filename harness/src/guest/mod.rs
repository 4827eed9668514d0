//! Guests as profiles. A guest is a folder built by `guests/<name>/build.sh` into the guests
//! directory (default /var/lib/clonesafe/guests, readable by libvirt's QEMU user: FACTS.md) with
//! a `guest.toml` manifest ([`manifest`]) that says how it boots, which agent transport it offers
//! and where it keeps its identities. Nothing else in the harness names a guest.

pub mod image;
pub mod manifest;

use clonesafe_protocol::Sources;
use std::path::{Path, PathBuf};

/// Where built guests live unless `CLONESAFE_GUESTS` says otherwise. It is outside any home
/// directory because libvirt's QEMU runs as `libvirt-qemu` and cannot read /root (FACTS.md).
pub const DEFAULT_GUESTS_DIR: &str = "/var/lib/clonesafe/guests";

/// The guest a scenario runs when it names none.
pub const DEFAULT_GUEST: &str = "tiny";

/// The static probe injected through qemu-guest-agent unless `CLONESAFE_PROBE` says otherwise
/// (ci/setup.sh installs it there).
pub fn default_probe() -> PathBuf {
    std::env::var_os("CLONESAFE_PROBE").map(PathBuf::from).unwrap_or_else(|| "/var/lib/clonesafe/probe/clonesafe-probe".into())
}

pub fn default_guests_dir() -> PathBuf {
    std::env::var_os("CLONESAFE_GUESTS").map(PathBuf::from).unwrap_or_else(|| DEFAULT_GUESTS_DIR.into())
}

#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("Unknown guest {name:?} in {dir}: built guests there are {}", known_list(.known))]
    Unknown { name: String, dir: PathBuf, known: Vec<String> },
    #[error("Guest {name:?} is not built: {missing} is missing. Build it with `guests/{name}/build.sh` (or `ci/setup.sh`), or point CLONESAFE_GUESTS at a built copy")]
    NotBuilt { name: String, missing: String },
    #[error("{path}:{message}")]
    Manifest { path: PathBuf, message: String },
    #[error("Image {}: {message}", .path.display())]
    Image { path: PathBuf, message: String },
}

fn known_list(k: &[String]) -> String {
    if k.is_empty() {
        "none (run ci/setup.sh)".into()
    } else {
        k.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
    }
}

/// How a guest starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// The VMM loads the kernel and initramfs itself (`-kernel`, libvirt `<kernel>`).
    DirectKernel { kernel: PathBuf, initrd: PathBuf, cmdline: String },
    /// The disk's own bootloader starts the guest.
    Disk,
}

/// How the harness talks to the guest's agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentTransport {
    /// The clonesafe probe on the guest's second serial port (ttyS1).
    SerialProbe,
    /// qemu-guest-agent on a virtio-serial port; clonesafe injects its probe through it.
    Qga,
    /// No agent: only host-side checks can run.
    None,
}

impl AgentTransport {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "serial-probe" => Some(AgentTransport::SerialProbe),
            "qga" => Some(AgentTransport::Qga),
            "none" => Some(AgentTransport::None),
            _ => None,
        }
    }
}

/// A located, validated guest.
#[derive(Debug, Clone)]
pub struct GuestProfile {
    pub name: String,
    pub description: Option<String>,
    pub dir: PathBuf,
    pub boot: Boot,
    /// The never-booted disk; VMs get overlays on it and never write to it.
    pub disk: PathBuf,
    pub disk_format: String,
    pub agent: AgentTransport,
    /// Where the guest keeps its file-based identities.
    pub sources: Sources,
    /// Memory for scenarios that do not say (MiB).
    pub memory_mib: u32,
    pub vcpus: u32,
    /// TCP services the host reaches through port forwards: name → guest port.
    pub services: std::collections::BTreeMap<String, u16>,
    /// A user's image: its agent and services may be absent (checks that need them are then
    /// skipped, with the reason), where a guest built here must have them.
    pub optional: bool,
    /// Kernel release from the build's manifest.json, for reports.
    pub kernel_release: Option<String>,
}

#[cfg(test)]
impl GuestProfile {
    /// A direct-kernel guest under /g for unit tests (nothing there is read).
    pub fn for_tests() -> Self {
        GuestProfile {
            name: "tiny".into(),
            description: None,
            dir: "/g".into(),
            boot: Boot::DirectKernel { kernel: "/g/vmlinuz".into(), initrd: "/g/initrd.img".into(), cmdline: "console=ttyS0".into() },
            disk: "/g/data.qcow2".into(),
            disk_format: "qcow2".into(),
            agent: AgentTransport::SerialProbe,
            sources: Default::default(),
            memory_mib: 256,
            vcpus: 1,
            services: Default::default(),
            optional: false,
            kernel_release: None,
        }
    }
}

impl GuestProfile {
    /// Find guest `name` in `guests_dir`, read its manifest and check that every file it names
    /// exists.
    pub fn locate(guests_dir: &Path, name: &str) -> Result<Self, GuestError> {
        let dir = guests_dir.join(name);
        let manifest = dir.join("guest.toml");
        let valid_name = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid_name || !dir.is_dir() {
            return Err(GuestError::Unknown { name: name.into(), dir: guests_dir.to_path_buf(), known: Self::known(guests_dir) });
        }
        if !manifest.is_file() {
            return Err(GuestError::NotBuilt { name: name.into(), missing: manifest.display().to_string() });
        }
        let src = std::fs::read_to_string(&manifest).map_err(|e| GuestError::Manifest { path: manifest.clone(), message: format!(" cannot read: {e}") })?;
        let m = manifest::parse(&src).map_err(|message| GuestError::Manifest { path: manifest.clone(), message })?;
        let bad = |message: String| GuestError::Manifest { path: manifest.clone(), message };
        if m.name != name {
            return Err(bad(format!(" name: {:?} does not match its directory {name:?}", m.name)));
        }
        let file = |rel: &str| -> Result<PathBuf, GuestError> {
            let p = dir.join(rel);
            if p.is_file() {
                Ok(p)
            } else {
                Err(GuestError::NotBuilt { name: name.into(), missing: p.display().to_string() })
            }
        };
        let (boot, disk, disk_format) = match &m.boot {
            manifest::BootSection::DirectKernel { kernel, initrd, cmdline, disk, disk_format } => {
                (Boot::DirectKernel { kernel: file(kernel)?, initrd: file(initrd)?, cmdline: cmdline.clone() }, file(disk)?, disk_format.clone())
            }
            manifest::BootSection::Disk { disk, disk_format } => (Boot::Disk, file(disk)?, disk_format.clone()),
        };
        if !matches!(disk_format.as_str(), "qcow2" | "raw") {
            return Err(bad(format!(" boot.disk_format: {disk_format:?} is not qcow2 or raw")));
        }
        let agent = AgentTransport::parse(&m.agent.transport).ok_or_else(|| bad(format!(" agent.transport: unknown transport {:?}; use serial-probe, qga or none", m.agent.transport)))?;
        let vcpus = m.vcpus.unwrap_or(1);
        if !(1..=16).contains(&vcpus) {
            return Err(bad(format!(" vcpus: {vcpus} is out of range: 1 to 16")));
        }
        let sources = m.identities.map(|i| Sources { machine_id: i.machine_id, ssh_host_keys: i.ssh_host_keys }).unwrap_or_default();
        let kernel_release = std::fs::read_to_string(dir.join("manifest.json"))
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|v| v["kernel_release"].as_str().map(str::to_string));
        Ok(GuestProfile {
            name: name.into(),
            description: m.description,
            dir,
            boot,
            disk,
            disk_format,
            agent,
            sources,
            memory_mib: m.memory_mib.unwrap_or(256),
            vcpus,
            services: m.services,
            optional: false,
            kernel_release,
        })
    }

    /// A user's own disk image (qcow2 or raw), which boots with its own bootloader and is never
    /// written (every VM gets an overlay on it). It is probed through qemu-guest-agent if it runs
    /// one, and from the host through ssh (22) and TLS (443) if it serves them. Its format and
    /// backing chain are checked first under `policy` ([`image`]): nothing opens it before.
    pub fn from_image(path: &Path, policy: &image::ImagePolicy) -> Result<Self, GuestError> {
        let checked = image::check(path, policy).map_err(|message| GuestError::Image { path: path.to_path_buf(), message })?;
        let (abs, format) = (checked.path, checked.format);
        let services = [("ssh".to_string(), 22u16), ("tls".to_string(), 443u16)].into_iter().collect();
        Ok(GuestProfile {
            name: format!("image:{}", abs.display()),
            description: Some(format!("the user's image {}", abs.display())),
            dir: abs.parent().map(Path::to_path_buf).unwrap_or_default(),
            boot: Boot::Disk,
            disk: abs,
            disk_format: format,
            agent: AgentTransport::Qga,
            sources: Sources { machine_id: "/etc/machine-id".into(), ssh_host_keys: "/etc/ssh".into() },
            memory_mib: 1024,
            vcpus: 2,
            services,
            optional: true,
            kernel_release: None,
        })
    }

    /// Names of the guests built in `guests_dir` (those with a manifest).
    pub fn known(guests_dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(guests_dir)
            .map(|rd| rd.flatten().filter(|e| e.path().join("guest.toml").is_file()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The same guest booting from another disk (an image copy).
    pub fn with_disk(&self, disk: PathBuf, format: &str) -> Self {
        GuestProfile { disk, disk_format: format.into(), ..self.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(dir: &Path) -> PathBuf {
        let g = dir.join("tiny");
        std::fs::create_dir_all(&g).unwrap();
        std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("../guests/tiny/guest.toml"), g.join("guest.toml")).unwrap();
        g
    }

    #[test]
    fn a_missing_file_names_the_file_and_the_fix() {
        let d = tempfile::tempdir().unwrap();
        tiny(d.path());
        let e = GuestProfile::locate(d.path(), "tiny").unwrap_err().to_string();
        assert!(e.contains("vmlinuz is missing") && e.contains("guests/tiny/build.sh"), "{e}");
        let e = GuestProfile::locate(d.path(), "debian").unwrap_err().to_string();
        assert!(e.contains("Unknown guest \"debian\"") && e.contains("\"tiny\""), "{e}");
    }

    #[test]
    fn the_shipped_manifest_describes_a_direct_kernel_guest() {
        let d = tempfile::tempdir().unwrap();
        let g = tiny(d.path());
        for f in ["vmlinuz", "initrd.img", "data.qcow2"] {
            std::fs::write(g.join(f), "").unwrap();
        }
        let p = GuestProfile::locate(d.path(), "tiny").unwrap();
        assert!(matches!(p.boot, Boot::DirectKernel { ref cmdline, .. } if cmdline.contains("console=ttyS0")));
        assert_eq!(p.agent, AgentTransport::SerialProbe);
        assert_eq!(p.sources, Sources::default());
        assert_eq!(p.disk_format, "qcow2");
    }

    #[test]
    fn manifest_errors_say_where() {
        let d = tempfile::tempdir().unwrap();
        let g = tiny(d.path());
        std::fs::write(g.join("guest.toml"), "name = \"tiny\"\n[boot]\nkind = \"floppy\"\ndisk = \"d\"\n[agent]\ntransport = \"serial-probe\"\n").unwrap();
        let e = GuestProfile::locate(d.path(), "tiny").unwrap_err().to_string();
        assert!(e.contains("guest.toml:") && e.contains("floppy"), "{e}");
    }
}
