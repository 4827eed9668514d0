//! `clonesafe doctor`: what this machine offers, checked rather than assumed.

use crate::backend::accel::{self, AccelChoice};
use crate::backend::emulator;
use crate::guest::{GuestProfile, DEFAULT_GUEST};
use clonesafe_metadata::Accel;
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Serialize)]
pub struct Item {
    pub what: String,
    pub ok: bool,
    pub detail: String,
}

fn item(what: impl Into<String>, ok: bool, detail: impl Into<String>) -> Item {
    Item { what: what.into(), ok, detail: detail.into() }
}

/// libvirtd on qemu:///system: its library version, or why it does not answer.
pub async fn libvirt_status() -> Result<String, String> {
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::task::spawn_blocking(|| {
            let b = crate::backend::libvirt::LibvirtBackend::connect(crate::backend::libvirt::DEFAULT_URI, Default::default()).map_err(|e| e.to_string())?;
            let v = crate::backend::Backend::versions(&b);
            Ok::<_, String>(format!("libvirtd answers on qemu:///system ({})", v.iter().map(|v| format!("{} {}", v.name, v.version)).collect::<Vec<_>>().join(", ")))
        }),
    )
    .await;
    match r {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 10 s".into()),
    }
}

/// What a user's image holds, read offline (guestfish, read-only, libguestfs under TCG): its OS
/// and whether it has qemu-guest-agent. Nothing is booted and nothing is written.
pub async fn inspect_image(path: &Path) -> Vec<Item> {
    let mut items = Vec::new();
    match GuestProfile::from_image(path) {
        Ok(g) => items.push(item("image", true, format!("{} ({}, boots with its own bootloader; VMs get overlays on it)", g.disk.display(), g.disk_format))),
        Err(e) => {
            items.push(item("image", false, e.to_string()));
            return items;
        }
    }
    // `-i` inspects and mounts the OS it finds; an `inspect-os` in the script would run the
    // inspection again and leave nothing mounted (measured: every read then failed with "you
    // must call 'mount' first").
    let script = "-cat /etc/os-release\n-exists /usr/sbin/qemu-ga\n-exists /usr/bin/qemu-ga\n-exists /etc/ssh/sshd_config\n";
    let mut c = tokio::process::Command::new("guestfish");
    c.env("LIBGUESTFS_BACKEND", "direct").env("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg").args(["--ro", "-a"]).arg(path).arg("-i");
    c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).kill_on_drop(true);
    let out = async {
        let mut child = c.spawn().ok()?;
        use tokio::io::AsyncWriteExt;
        child.stdin.take()?.write_all(script.as_bytes()).await.ok()?;
        child.wait_with_output().await.ok()
    };
    let out = match tokio::time::timeout(Duration::from_secs(600), out).await {
        Ok(Some(o)) => o,
        _ => {
            items.push(item("inspection", false, "guestfish could not inspect the image (is libguestfs-tools installed?)"));
            return items;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let os = text.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=")).map(|v| v.trim_matches('"').to_string());
    items.push(match os {
        Some(os) => item("os", true, os),
        None => item("os", false, format!("no /etc/os-release found ({})", crate::text::truncate(String::from_utf8_lossy(&out.stderr).trim(), 200))),
    });
    let bools: Vec<bool> = text.lines().filter_map(|l| match l.trim() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }).collect();
    let qga = bools.iter().take(2).any(|b| *b);
    items.push(if qga {
        item("agent", true, "qemu-guest-agent is installed: clonesafe reads identities through it and injects its probe")
    } else {
        item("agent", false, "no qemu-guest-agent in the image: only host-side checks (ssh_keyscan, tls_*, ...) will run; in-guest checks are skipped")
    });
    items.push(if bools.get(2).copied().unwrap_or(false) {
        item("ssh", true, "an SSH server is configured: ssh_keyscan can run")
    } else {
        item("ssh", false, "no sshd_config: ssh_keyscan will be skipped")
    });
    items
}

pub async fn run(guests_dir: &Path, trial: bool, work: &Path) -> Vec<Item> {
    let mut items = Vec::new();
    items.push(match emulator::qemu_version() {
        Some(v) => item("qemu", true, v),
        None => item("qemu", false, "qemu-system-x86_64 not found: apt-get install qemu-system-x86 (or run ci/setup.sh)"),
    });
    items.push(match tool_version("qemu-img") {
        Some(v) => item("qemu-img", true, v),
        None => item("qemu-img", false, "qemu-img not found: apt-get install qemu-utils"),
    });
    let mut names = GuestProfile::known(guests_dir);
    if !names.iter().any(|n| n == DEFAULT_GUEST) {
        names.insert(0, DEFAULT_GUEST.into());
    }
    let mut default_guest = None;
    for name in names {
        match GuestProfile::locate(guests_dir, &name) {
            Ok(g) => {
                let boot = match g.boot {
                    crate::guest::Boot::DirectKernel { .. } => "direct kernel",
                    crate::guest::Boot::Disk => "its own bootloader",
                };
                items.push(item(
                    format!("guest {name}"),
                    true,
                    format!("built in {} (boots with {boot}; kernel {})", g.dir.display(), g.kernel_release.as_deref().unwrap_or("?")),
                ));
                if name == DEFAULT_GUEST {
                    default_guest = Some(g);
                }
            }
            Err(e) => items.push(item(format!("guest {name}"), false, e.to_string())),
        }
    }
    let kvm = match accel::kvm_device() {
        Err(e) => item("kvm", false, format!("{e}; guests will run under TCG")),
        Ok(()) => match &default_guest {
            None => item("kvm", true, "/dev/kvm opens; build the guest to test whether it boots"),
            Some(g) => {
                let d = if trial { Some(accel::resolve(AccelChoice::Auto, &crate::backend::qemu::QemuBackend, g, work).await) } else { accel::cached(g) };
                match d {
                    Some(d) => item("kvm", d.accel == Accel::Kvm, d.reason),
                    None => item("kvm", true, "/dev/kvm opens; not yet tried with a guest (`clonesafe doctor --trial-boot`)"),
                }
            }
        },
    };
    items.push(kvm);
    items.push(match libvirt_status().await {
        Ok(s) => item("libvirt", true, s),
        Err(e) => item("libvirt", false, format!("{e} (start it with ci/start-libvirt.sh)")),
    });
    items
}

fn tool_version(tool: &str) -> Option<String> {
    let out = std::process::Command::new(tool).arg("--version").output().ok()?;
    String::from_utf8_lossy(&out.stdout).lines().next().map(str::to_string)
}
