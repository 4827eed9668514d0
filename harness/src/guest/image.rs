//! A user's disk image, read before any VM or host tool opens it: its format is decided, never
//! probed, and its backing chain is walked link by link without opening a link the user did not
//! name.
//!
//! Issue 19, item 1: QEMU and libvirt follow an image's own backing chain. A 512-byte boot
//! sector in a qcow2 rebased onto a 0600 host file printed that file to the console, the report
//! and the HTML; a `json:{"driver":"nbd",...}` backing made the host's qemu-img connect to a
//! listener; a file named `.img` holding qcow2 bytes was probed as qcow2. So:
//!
//! ```text
//! format   --image-format, else the name: .qcow2 → qcow2, .raw/.img → raw, else refused
//!          qcow2 must start with QFI\xfb; raw must not (unless --image-format raw says so) and
//!          must look like a disk (a whole number of sectors, 0x55AA at byte 510)
//! chain    qemu-img info -f FORMAT -U (it opens no backing file), then for each backing link:
//!            json: or a protocol (nbd:, http:, ...)         always refused
//!            no recorded backing format (it would be probed) refused
//!            a file the user did not name with --allow-backing  refused
//!          an external data file (qcow2 data-file) is refused like a backing link
//!          at most 8 links
//! ```
//!
//! `--allow-backing` is off by default because the image, not the user, chooses which host
//! files its VMs read: a shared or downloaded image must not decide that.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How deep a chain may be.
pub const MAX_CHAIN: usize = 8;

/// What the user allows: the format of the top image (None: from its name) and the backing
/// files its chain may use.
#[derive(Debug, Clone, Default)]
pub struct ImagePolicy {
    pub format: Option<String>,
    pub allow_backing: Vec<PathBuf>,
}

/// The checked image: its canonical path, its format, and its backing chain (canonical paths,
/// each with its format), top first.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedImage {
    pub path: PathBuf,
    pub format: String,
    pub chain: Vec<(PathBuf, String)>,
}

/// Formats whose magic a raw image must not carry (a tool that probes would read them as that).
fn magic_format(head: &[u8]) -> Option<&'static str> {
    let known: [(&[u8], usize, &str); 8] = [
        (b"QFI\xfb", 0, "qcow2"),
        (b"QED\0", 0, "qed"),
        (b"KDMV", 0, "vmdk"),
        (b"conectix", 0, "vpc"),
        (b"vhdxfile", 0, "vhdx"),
        (b"LUKS\xba\xbe", 0, "luks"),
        (b"<<< Oracle VM VirtualBox Disk Image >>>", 0, "vdi"),
        (b"\x7f\x10\xda\xbe", 64, "vdi"),
    ];
    known.iter().find(|(m, at, _)| head.len() >= at + m.len() && &head[*at..at + m.len()] == *m).map(|(_, _, f)| *f)
}

fn format_from_name(path: &Path) -> Option<&'static str> {
    match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
        "qcow2" | "qcow" => Some("qcow2"),
        "raw" | "img" => Some("raw"),
        _ => None,
    }
}

/// The first 4 KiB of a regular file (opened without blocking: a FIFO is refused at once).
fn head(path: &Path) -> Result<(Vec<u8>, u64), String> {
    use std::io::Read;
    let f = crate::input::open_regular(path).map_err(|e| e.to_string())?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    let mut h = Vec::new();
    f.take(4096).read_to_end(&mut h).map_err(|e| e.to_string())?;
    Ok((h, len))
}

/// `qemu-img info` of one link, naming its format (so nothing is probed) and opening no
/// backing file (qemu-img info opens each image with BDRV_O_NO_BACKING; --backing-chain is
/// what would follow the chain, and it is not used).
fn info(path: &Path, format: &str) -> Result<serde_json::Value, String> {
    let out = crate::tools::bounded::output(
        std::process::Command::new("qemu-img").args(["info", "--output=json", "-U", "-f", format]).arg(path),
        Duration::from_secs(30),
        1 << 20,
    )
    .map_err(|e| crate::error_chain(&e))?;
    if !out.status.success() {
        return Err(format!("qemu-img cannot read it as {format}: {}", crate::text::truncate(String::from_utf8_lossy(&out.stderr).trim(), 400)));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("qemu-img info printed invalid JSON: {e}"))
}

/// Check the image at `path` under `policy`. The message says what is wrong and what to do.
pub fn check(path: &Path, policy: &ImagePolicy) -> Result<CheckedImage, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read it: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let abs = std::fs::canonicalize(path).map_err(|e| format!("cannot resolve it: {e}"))?;
    let explicit = policy.format.as_deref();
    let format = match explicit.or_else(|| format_from_name(&abs)) {
        Some(f @ ("qcow2" | "raw")) => f.to_string(),
        Some(f) => return Err(format!("its format is given as {f}; clonesafe takes qcow2 or raw images (--image-format qcow2|raw)")),
        None => return Err("its name does not say its format (.qcow2, .raw or .img): give --image-format qcow2 or raw; clonesafe never guesses a format from an image's bytes".into()),
    };
    let allowed: Vec<PathBuf> = policy.allow_backing.iter().filter_map(|p| std::fs::canonicalize(p).ok()).collect();
    let mut chain = Vec::new();
    let (mut cur, mut cur_format) = (abs.clone(), format.clone());
    loop {
        let (h, len) = head(&cur).map_err(|e| format!("{}: {e}", cur.display()))?;
        let magic = magic_format(&h);
        let link = if chain.is_empty() { "it".to_string() } else { format!("its backing file {}", cur.display()) };
        match cur_format.as_str() {
            "qcow2" if magic != Some("qcow2") => return Err(format!("{link} is given as qcow2 but has no qcow2 header (QFI\\xfb)")),
            "raw" if magic.is_some() && !(chain.is_empty() && explicit == Some("raw")) => {
                return Err(format!(
                    "{link} is taken as raw (from its name) but holds a {} header: a tool that probed it would read it as {}, so it is refused. If it really is {}, give --image-format {}; if it is a raw disk whose first sector looks like that, give --image-format raw",
                    magic.unwrap_or("?"),
                    magic.unwrap_or("?"),
                    magic.unwrap_or("?"),
                    magic.unwrap_or("?")
                ))
            }
            "raw" if len < 512 || len % 512 != 0 || h.get(510..512) != Some(&[0x55, 0xaa][..]) => {
                return Err(format!("{link} has no recognisable disk format: not qcow2, and not a raw disk (a whole number of 512-byte sectors with a boot sector, 0x55AA at byte 510)"));
            }
            _ => {}
        }
        chain.push((cur.clone(), cur_format.clone()));
        if cur_format == "raw" {
            break;
        }
        let v = info(&cur, &cur_format).map_err(|e| format!("{}: {e}", cur.display()))?;
        if let Some(df) = v["format-specific"]["data"]["data-file"].as_str() {
            return Err(format!("{link} keeps its data in an external file ({df:?}); clonesafe does not open images whose data lives in another host file"));
        }
        let Some(backing) = v["backing-filename"].as_str() else { break };
        if chain.len() >= MAX_CHAIN {
            return Err(format!("its backing chain is longer than {MAX_CHAIN} links"));
        }
        let next = resolve_backing(&cur, backing)?;
        let Some(next_format) = v["backing-filename-format"].as_str() else {
            return Err(format!("{link} names the backing file {backing:?} without its format, so QEMU would probe it; record it with `qemu-img rebase -u -F raw|qcow2 -b {backing}`"));
        };
        if !matches!(next_format, "qcow2" | "raw") {
            return Err(format!("{link} names the backing file {backing:?} of format {next_format}; clonesafe takes qcow2 or raw"));
        }
        let canon = std::fs::canonicalize(&next).map_err(|e| format!("{link} names the backing file {backing:?}, which cannot be read: {e}"))?;
        if !allowed.contains(&canon) {
            return Err(format!(
                "{link} has the backing file {} ({next_format}); clonesafe opens a backing file only when you name it: --allow-backing {} (off by default: the image, not you, chooses which host files its VMs can read)",
                canon.display(),
                canon.display()
            ));
        }
        if chain.iter().any(|(p, _)| *p == canon) {
            return Err(format!("its backing chain loops back to {}", canon.display()));
        }
        (cur, cur_format) = (canon, next_format.to_string());
    }
    Ok(CheckedImage { path: abs, format, chain })
}

/// A backing link as QEMU resolves it: json: and protocols are refused; a relative path is
/// relative to the image's directory.
fn resolve_backing(image: &Path, backing: &str) -> Result<PathBuf, String> {
    if backing.starts_with("json:") {
        return Err(format!("its backing file is a json: specification ({}); clonesafe never opens one: it can name any driver, a network block device among them", crate::text::truncate(backing, 200)));
    }
    // QEMU reads "<protocol>:" (nbd:, http:, ssh:, file:, ...) before any '/' as a protocol.
    if let Some((proto, _)) = backing.split_once(':') {
        if !proto.contains('/') {
            return Err(format!("its backing file {backing:?} names the protocol {proto:?}; clonesafe opens backing files only as plain local files"));
        }
    }
    let p = Path::new(backing);
    Ok(if p.is_absolute() { p.to_path_buf() } else { image.parent().unwrap_or(Path::new("/")).join(p) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qemu_img(args: &[&str]) {
        let ok = std::process::Command::new("qemu-img").args(args).output().map(|o| o.status.success()).unwrap_or(false);
        assert!(ok, "qemu-img {args:?}");
    }

    fn have_qemu_img() -> bool {
        std::process::Command::new("qemu-img").arg("--version").output().is_ok()
    }

    /// A raw disk: a boot sector (0x55AA) in 1 MiB.
    fn raw_disk(p: &Path) {
        let mut b = vec![0u8; 1 << 20];
        b[510] = 0x55;
        b[511] = 0xaa;
        std::fs::write(p, b).unwrap();
    }

    /// Issue 19, item 1: every way an image could make a host tool open a file it was not given.
    #[test]
    fn backing_chains_are_refused_unless_each_link_is_allowed() {
        if !have_qemu_img() {
            assert!(std::env::var_os("CLONESAFE_REQUIRE_VMS").is_none(), "qemu-img missing");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let secret = d.path().join("host-secret");
        std::fs::write(&secret, "root:$6$hash").unwrap();
        let base = d.path().join("base.raw");
        raw_disk(&base);
        let none = ImagePolicy::default();

        // A plain raw disk and a plain qcow2 are fine.
        assert_eq!(check(&base, &none).unwrap().format, "raw");
        let plain = d.path().join("plain.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2", plain.to_str().unwrap(), "1M"]);
        assert_eq!(check(&plain, &none).unwrap().chain.len(), 1);

        // Rebased onto a host file: refused, and the message names the option.
        let evil = d.path().join("evil.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2", evil.to_str().unwrap(), "1M"]);
        qemu_img(&["rebase", "-u", "-f", "qcow2", "-F", "raw", "-b", secret.to_str().unwrap(), evil.to_str().unwrap()]);
        let e = check(&evil, &none).unwrap_err();
        assert!(e.contains("--allow-backing") && e.contains("host-secret"), "{e}");
        // The host file is not a disk even when allowed.
        let e = check(&evil, &ImagePolicy { allow_backing: vec![secret.clone()], ..Default::default() }).unwrap_err();
        assert!(e.contains("no recognisable disk format"), "{e}");

        // A chain onto a disk the user names is allowed, and reported link by link.
        let top = d.path().join("top.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2", "-F", "raw", "-b", base.to_str().unwrap(), top.to_str().unwrap()]);
        assert!(check(&top, &none).unwrap_err().contains("--allow-backing"));
        let ok = check(&top, &ImagePolicy { allow_backing: vec![base.clone()], ..Default::default() }).unwrap();
        assert_eq!(ok.chain.len(), 2);

        // A backing with no recorded format would be probed: refused. QEMU 7.2 no longer writes
        // such an image, older ones did: turn the backing-format header extension (magic
        // 0xE2792ACA, qemu docs/interop/qcow2.txt) into one QEMU ignores.
        let unformatted = d.path().join("unformatted.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2", "-F", "raw", "-b", base.to_str().unwrap(), unformatted.to_str().unwrap()]);
        let mut bytes = std::fs::read(&unformatted).unwrap();
        let at = bytes[..4096].windows(4).position(|w| w == [0xe2, 0x79, 0x2a, 0xca]).expect("a backing-format extension");
        bytes[at..at + 4].copy_from_slice(&[0x12, 0x34, 0x56, 0x78]);
        std::fs::write(&unformatted, bytes).unwrap();
        let e = check(&unformatted, &ImagePolicy { allow_backing: vec![base.clone()], ..Default::default() }).unwrap_err();
        assert!(e.contains("without its format"), "{e}");

        // json: and protocol backings are always refused, whatever is allowed.
        for b in [r#"json:{"driver":"raw","file":{"driver":"nbd","host":"127.0.0.1","port":"10809"}}"#, "nbd:127.0.0.1:10809", "http://127.0.0.1/x"] {
            let j = d.path().join("j.qcow2");
            let _ = std::fs::remove_file(&j);
            qemu_img(&["create", "-q", "-f", "qcow2", j.to_str().unwrap(), "1M"]);
            qemu_img(&["rebase", "-u", "-f", "qcow2", "-F", "raw", "-b", b, j.to_str().unwrap()]);
            let e = check(&j, &ImagePolicy { allow_backing: vec![base.clone()], ..Default::default() }).unwrap_err();
            assert!(e.contains("json:") || e.contains("protocol"), "{b}: {e}");
        }

        // A FIFO as a backing file (doctor --image left an orphaned qemu-img behind on one) is
        // refused at once, even when allowed: it is no regular file.
        let fifo = d.path().join("fifo.raw");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let on_fifo = d.path().join("on-fifo.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2", on_fifo.to_str().unwrap(), "1M"]);
        qemu_img(&["rebase", "-u", "-f", "qcow2", "-F", "raw", "-b", fifo.to_str().unwrap(), on_fifo.to_str().unwrap()]);
        let t = std::time::Instant::now();
        let e = check(&on_fifo, &ImagePolicy { allow_backing: vec![fifo.clone()], ..Default::default() }).unwrap_err();
        assert!(e.contains("a FIFO") && t.elapsed() < Duration::from_secs(5), "{e}");

        // qcow2 bytes in a file named .img are not probed into qcow2: refused unless said.
        let disguised = d.path().join("disguised.img");
        std::fs::copy(&evil, &disguised).unwrap();
        let e = check(&disguised, &none).unwrap_err();
        assert!(e.contains("holds a qcow2 header") && e.contains("--image-format"), "{e}");
        // Given as qcow2, its chain is checked (and refused).
        assert!(check(&disguised, &ImagePolicy { format: Some("qcow2".into()), ..Default::default() }).unwrap_err().contains("--allow-backing"));
        // Given as raw, it is used as raw: no backing is ever read (but it is no disk).
        assert!(check(&disguised, &ImagePolicy { format: Some("raw".into()), ..Default::default() }).unwrap_err().contains("no recognisable disk format"));
    }

    /// Issue 19, item 13: a key file (or any other host file) is not a disk image.
    #[test]
    fn a_file_with_no_disk_format_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let key = d.path().join("id_ed25519.img");
        std::fs::write(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
        assert!(check(&key, &ImagePolicy::default()).unwrap_err().contains("no recognisable disk format"));
        let unnamed = d.path().join("disk");
        raw_disk(&unnamed);
        assert!(check(&unnamed, &ImagePolicy::default()).unwrap_err().contains("--image-format"));
        assert!(check(&unnamed, &ImagePolicy { format: Some("raw".into()), ..Default::default() }).is_ok());
        assert!(check(d.path(), &ImagePolicy::default()).unwrap_err().contains("not a regular file"));
    }
}
