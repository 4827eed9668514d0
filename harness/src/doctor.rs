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

/// What the libvirt host at `uri` offers (`doctor --connect URI`), asked over libvirt's own
/// protocol, so it works for a remote host: who answers (its hostname, libvirt and QEMU
/// versions), whether it can run KVM guests, its active storage pools and their free space, and
/// whether the connection is encrypted. Bounded at 20 s.
pub async fn remote(uri: &str) -> Vec<Item> {
    let u = uri.to_string();
    let r = tokio::time::timeout(Duration::from_secs(20), tokio::task::spawn_blocking(move || remote_blocking(&u))).await;
    match r {
        Ok(Ok(items)) => items,
        Ok(Err(e)) => vec![item("connect", false, format!("{uri}: {e}"))],
        Err(_) => vec![item("connect", false, format!("{uri}: no answer within 20 s"))],
    }
}

/// libvirt's packed version number (major * 1,000,000 + minor * 1,000 + release).
fn version(v: u32) -> String {
    format!("{}.{}.{}", v / 1_000_000, (v / 1_000) % 1_000, v % 1_000)
}

fn remote_blocking(uri: &str) -> Vec<Item> {
    use virt::connect::Connect;
    let conn = match Connect::open(Some(uri)) {
        Ok(c) => c,
        Err(e) => return vec![item("connect", false, format!("{uri}: {e}"))],
    };
    let mut items = Vec::new();
    let host = conn.hostname().unwrap_or_else(|_| "?".into());
    let lib = conn.lib_version().map(version).unwrap_or_else(|_| "?".into());
    let hyp = conn.hyp_version().map(version).unwrap_or_else(|_| "?".into());
    let driver = conn.driver_type().unwrap_or_else(|_| "?".into());
    items.push(item("connect", true, format!("{uri} answers: host {host}, libvirt {lib}, {driver} {hyp}")));
    let kvm = crate::backend::libvirt::remote::offers_kvm(&conn).unwrap_or(false);
    items.push(item("kvm", kvm, if kvm { "the host offers KVM guests (whether a guest really boots under it is only known by booting one)" } else { "no KVM on that host: guests run under TCG" }));
    let flags = virt::sys::VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE;
    match conn.list_all_storage_pools(flags) {
        // `run --connect` makes a pool of its own for each run (under --pool-dir).
        Ok(pools) if pools.is_empty() => items.push(item("pools", true, format!("no active storage pool; `run --connect` makes one for its run under {} (--pool-dir)", crate::backend::libvirt::remote::DEFAULT_POOL_DIR))),
        Ok(pools) => {
            let d: Vec<String> = pools
                .iter()
                .map(|p| {
                    let name = p.name().unwrap_or_else(|_| "?".into());
                    match p.info() {
                        Ok(i) => format!("{name}: {:.1} GiB free of {:.1} GiB", i.available as f64 / (1u64 << 30) as f64, i.capacity as f64 / (1u64 << 30) as f64),
                        Err(e) => format!("{name}: {e}"),
                    }
                })
                .collect();
            items.push(item("pools", true, d.join("; ")));
        }
        Err(e) => items.push(item("pools", false, format!("cannot list storage pools: {e}"))),
    }
    items.push(pool_dir(&conn, crate::backend::libvirt::remote::DEFAULT_POOL_DIR));
    let encrypted = conn.is_encrypted().unwrap_or(false);
    let secure = conn.is_secure().unwrap_or(false);
    items.push(item(
        "transport",
        true,
        match (encrypted, secure) {
            (true, _) => "encrypted".to_string(),
            (false, true) => "local (a UNIX socket)".to_string(),
            (false, false) => "NOT encrypted and not local (e.g. qemu+tcp without TLS): for tests on loopback only".to_string(),
        },
    ));
    items
}

/// The free space where `run --connect` makes its pool, read through a transient dir pool on
/// that directory, stopped at once (libvirt reports the filesystem's free bytes for a dir
/// pool). Nothing is created: a missing directory is said, not built.
fn pool_dir(conn: &virt::connect::Connect, dir: &str) -> Item {
    let name = format!("{}{}-doctor", crate::identity::NAME_PREFIX, std::process::id());
    let xml = format!("<pool type='dir'><name>{name}</name><target><path>{}</path></target></pool>", crate::text::xml_escape(dir));
    match conn.create_storage_pool_xml(&xml, 0) {
        Ok(p) => {
            let info = p.info();
            let _ = p.destroy();
            match info {
                Ok(i) => item("pool-dir", true, format!("{dir} (where `run --connect` makes its pool): {:.1} GiB free of {:.1} GiB", i.available as f64 / (1u64 << 30) as f64, i.capacity as f64 / (1u64 << 30) as f64)),
                Err(e) => item("pool-dir", false, format!("{dir}: cannot read its free space: {e}")),
            }
        }
        Err(e) => item("pool-dir", true, format!("{dir} is not usable as a pool there yet (`run --connect` creates it; free space unknown): {e}")),
    }
}

/// What a user's image holds, read offline (guestfish, read-only, libguestfs under TCG): its OS
/// and whether it has qemu-guest-agent. Nothing is booted and nothing is written.
pub async fn inspect_image(path: &Path, policy: &crate::guest::image::ImagePolicy) -> Vec<Item> {
    let mut items = Vec::new();
    let format = match GuestProfile::from_image(path, policy) {
        Ok(g) => {
            items.push(item("image", true, format!("{} ({}, boots with its own bootloader; VMs get overlays on it)", g.disk.display(), g.disk_format)));
            g.disk_format
        }
        Err(e) => {
            items.push(item("image", false, e.to_string()));
            return items;
        }
    };
    // libguestfs's temporary files (and its appliance's sockets) in a directory of ours, removed
    // whatever happens to guestfish.
    let tmp = match tempfile::Builder::new().prefix("clonesafe-guestfs-").tempdir() {
        Ok(t) => t,
        Err(e) => {
            items.push(item("inspection", false, format!("cannot create a temporary directory: {e}")));
            return items;
        }
    };
    // `-i` inspects and mounts the OS it finds; an `inspect-os` in the script would run the
    // inspection again and leave nothing mounted (measured: every read then failed with "you
    // must call 'mount' first").
    let script = "-cat /etc/os-release\n-exists /usr/sbin/qemu-ga\n-exists /usr/bin/qemu-ga\n-exists /etc/ssh/sshd_config\n";
    // The format is named: libguestfs never probes the image.
    let mut c = crate::clones::fixup::sysprep::guestfs("guestfish", tmp.path());
    c.arg("--ro").arg(format!("--format={format}")).arg("-a").arg(path).arg("-i");
    // guestfish and its appliance go at the bound, whatever happens.
    let out = match crate::tools::bounded::output_async(&mut c, Some(script.as_bytes()), Duration::from_secs(600)).await {
        Ok(o) => o,
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
    items.push(segment_item());
    items
}

/// Whether `network = "segment"` can run here: root (namespaces, taps), dnsmasq and tcpdump.
fn segment_item() -> Item {
    match crate::network::segment::unavailable() {
        None => item("segment", true, format!("network segments can be made ({}; {})", tool_version("dnsmasq").map(|v| v.split("  Copyright").next().unwrap_or("").trim().to_string()).unwrap_or_else(|| "dnsmasq".into()), tool_version("tcpdump").unwrap_or_else(|| "tcpdump".into()))),
        Some(why) => item("segment", false, format!("network = \"segment\" cannot run here: {why}")),
    }
}

fn tool_version(tool: &str) -> Option<String> {
    let out = crate::tools::bounded::output(std::process::Command::new(tool).arg("--version"), Duration::from_secs(10), 64 << 10).ok()?;
    String::from_utf8_lossy(&out.stdout).lines().next().map(str::to_string)
}
