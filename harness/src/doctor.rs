//! `clonesafe doctor`: what this machine offers, checked rather than assumed.

use crate::backend::accel::{self, Accel};
use crate::guest::GuestImage;
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

/// First line of `qemu-system-x86_64 --version`.
pub fn qemu_version() -> Option<String> {
    let out = std::process::Command::new(crate::backend::qemu::qemu_binary()).arg("--version").output().ok()?;
    String::from_utf8_lossy(&out.stdout).lines().next().map(str::to_string)
}

pub fn host_kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string()
}

#[derive(Debug, Serialize)]
pub struct Item {
    pub what: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// libvirtd on qemu:///system: its library and daemon versions, or why it does not answer.
pub async fn libvirt_status() -> Result<String, String> {
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::task::spawn_blocking(|| {
            virt::error::clear_error_callback();
            let conn = virt::connect::Connect::open(Some("qemu:///system")).map_err(|e| e.to_string())?;
            let lib = conn.lib_version().map_err(|e| e.to_string())?;
            drop(conn); // Connect closes on drop
            Ok::<_, String>(format!("libvirtd answers on qemu:///system (libvirt {}.{}.{})", lib / 1_000_000, lib / 1000 % 1000, lib % 1000))
        }),
    )
    .await;
    match r {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 10 s".into()),
    }
}

pub async fn run(guests_dir: &Path, trial: bool, work: &Path) -> Vec<Item> {
    let mut items = Vec::new();
    items.push(match qemu_version() {
        Some(v) => Item { what: "qemu", ok: true, detail: v },
        None => Item { what: "qemu", ok: false, detail: "qemu-system-x86_64 not found: apt-get install qemu-system-x86 (or run ci/setup.sh)".into() },
    });
    items.push(match qemu_img() {
        Some(v) => Item { what: "qemu-img", ok: true, detail: v },
        None => Item { what: "qemu-img", ok: false, detail: "qemu-img not found: apt-get install qemu-utils".into() },
    });
    let guest = GuestImage::locate(guests_dir, "tiny");
    items.push(match &guest {
        Ok(g) => Item {
            what: "guest tiny",
            ok: true,
            detail: format!("built in {} (kernel {})", g.dir.display(), g.kernel_release.as_deref().unwrap_or("?")),
        },
        Err(e) => Item { what: "guest tiny", ok: false, detail: e.to_string() },
    });
    let kvm = match accel::kvm_device() {
        Err(e) => Item { what: "kvm", ok: false, detail: format!("{e}; guests will run under TCG") },
        Ok(()) => match &guest {
            Err(_) => Item { what: "kvm", ok: true, detail: "/dev/kvm opens; build the guest to test whether it boots".into() },
            Ok(g) => {
                let d = if trial {
                    Some(accel::resolve(accel::AccelChoice::Auto, &crate::backend::qemu::QemuBackend, g, work).await)
                } else {
                    accel::cached(g)
                };
                match d {
                    Some(d) => Item { what: "kvm", ok: d.accel == Accel::Kvm, detail: d.reason },
                    None => Item {
                        what: "kvm",
                        ok: true,
                        detail: "/dev/kvm opens; not yet tried with a guest (`clonesafe doctor --trial-boot`)".into(),
                    },
                }
            }
        },
    };
    items.push(kvm);
    items.push(match libvirt_status().await {
        Ok(s) => Item { what: "libvirt", ok: true, detail: s },
        Err(e) => Item { what: "libvirt", ok: false, detail: format!("{e} (start it with ci/start-libvirt.sh)") },
    });
    items
}

fn qemu_img() -> Option<String> {
    let out = std::process::Command::new("qemu-img").arg("--version").output().ok()?;
    String::from_utf8_lossy(&out.stdout).lines().next().map(str::to_string)
}
