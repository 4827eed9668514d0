//! `secret_remanence`: the reference thread's point that deleted data survives. Before the
//! snapshot (or the template's shutdown) the guest writes a canary secret to a file, reads it,
//! deletes it and syncs; afterwards the snapshot's artifacts are scanned for the canary's bytes.
//!
//! The canary is made on the host and sent to the guest *encoded* (each byte XOR 0xff, in hex),
//! so the copies the probe channel itself leaves in guest memory do not match: what the scan
//! finds is the file's data, in the page cache or on disk.

use crate::backend::{io_err, BackendError};
use serde::Serialize;
use std::io::Read;
use std::path::Path;

pub fn new_canary() -> String {
    format!("CLONESAFE-CANARY-{}", uuid::Uuid::new_v4().simple())
}

/// How the canary travels over the probe channel.
pub fn encode_for_guest(secret: &str) -> String {
    secret.bytes().map(|b| format!("{:02x}", b ^ 0xff)).collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    pub artifact: String,
    pub path: String,
    pub bytes: u64,
    pub found: bool,
    /// Up to 4 offsets where the canary's bytes are.
    pub offsets: Vec<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Scan {
    pub hits: Vec<Hit>,
    /// A positive control: a string known to be in one artifact (the guest's hostname is in
    /// kernel memory). If the scan cannot find it there, "not found" means nothing.
    pub control: Option<Control>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Control {
    pub needle: String,
    pub artifact: String,
    pub found: bool,
}

impl Scan {
    pub fn found_in(&self) -> Vec<&str> {
        self.hits.iter().filter(|h| h.found).map(|h| h.artifact.as_str()).collect()
    }
}

/// Stream each file looking for `needle`, with an overlap so a match across chunks is found.
pub async fn scan(needle: &str, artifacts: &[(&str, &Path)], control: Option<(&str, &str)>) -> Result<Scan, BackendError> {
    let mut s = scan_for(needle, artifacts).await?;
    if let Some((text, artifact)) = control {
        let target: Vec<(&str, &Path)> = artifacts.iter().filter(|(n, _)| *n == artifact).copied().collect();
        let found = scan_for(text, &target).await?.hits.iter().any(|h| h.found);
        s.control = Some(Control { needle: text.to_string(), artifact: artifact.to_string(), found });
    }
    Ok(s)
}

async fn scan_for(needle: &str, artifacts: &[(&str, &Path)]) -> Result<Scan, BackendError> {
    let needle = needle.as_bytes().to_vec();
    let list: Vec<(String, std::path::PathBuf)> = artifacts.iter().map(|(n, p)| (n.to_string(), p.to_path_buf())).collect();
    tokio::task::spawn_blocking(move || {
        let mut hits = Vec::new();
        for (name, path) in list {
            let mut f = std::fs::File::open(&path).map_err(io_err(format!("open {}", path.display())))?;
            let bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
            let finder = memchr::memmem::Finder::new(&needle);
            let mut buf = vec![0u8; 4 << 20];
            let keep = needle.len() - 1;
            let mut filled = 0usize;
            let mut base = 0u64; // file offset of buf[0]
            let mut offsets = Vec::new();
            loop {
                let n = f.read(&mut buf[filled..]).map_err(io_err(format!("read {}", path.display())))?;
                if n == 0 {
                    break;
                }
                filled += n;
                for i in finder.find_iter(&buf[..filled]) {
                    let off = base + i as u64;
                    if offsets.len() < 4 && !offsets.contains(&off) {
                        offsets.push(off);
                    }
                }
                if filled > keep {
                    buf.copy_within(filled - keep..filled, 0);
                    base += (filled - keep) as u64;
                    filled = keep;
                }
            }
            hits.push(Hit { artifact: name, path: path.display().to_string(), bytes, found: !offsets.is_empty(), offsets });
        }
        Ok(Scan { hits, control: None })
    })
    .await
    .map_err(|e| BackendError::Other(format!("scan panicked: {e}")))?
}

pub async fn qemu_img(args: &[&str]) -> Result<(), BackendError> {
    let out = tokio::process::Command::new("qemu-img").args(args).output().await.map_err(io_err("run qemu-img"))?;
    if !out.status.success() {
        return Err(BackendError::Other(format!("qemu-img {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(())
}

/// Rewrite a qcow2 image through `qemu-img convert`: only allocated, non-zero clusters are
/// copied, so discarded (trimmed) data does not come along. Replaces the file in place.
pub async fn compact(image: &Path, tmpdir: &Path) -> Result<(), BackendError> {
    let tmp = tmpdir.join(format!(".compact-{}.qcow2", uuid::Uuid::new_v4().simple()));
    let backing = backing_file(image).await?;
    let mut args: Vec<String> = vec!["convert".into(), "-O".into(), "qcow2".into()];
    if let Some(b) = &backing {
        // Keep the chain: only this layer's clusters are rewritten.
        args.extend(["-B".into(), b.clone(), "-F".into(), "qcow2".into()]);
    }
    args.extend([image.display().to_string(), tmp.display().to_string()]);
    qemu_img(&args.iter().map(String::as_str).collect::<Vec<_>>()).await?;
    std::fs::rename(&tmp, image).map_err(io_err(format!("replace {}", image.display())))
}

async fn backing_file(image: &Path) -> Result<Option<String>, BackendError> {
    let out = tokio::process::Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(image)
        .output()
        .await
        .map_err(io_err("run qemu-img info"))?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    Ok(v["full-backing-filename"].as_str().or(v["backing-filename"].as_str()).map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn finds_the_canary_across_chunk_boundaries_and_only_where_it_is() {
        let d = tempfile::tempdir().unwrap();
        let c = new_canary();
        let mut data = vec![0u8; (4 << 20) - 5];
        data.extend_from_slice(c.as_bytes());
        data.extend_from_slice(&[1u8; 100]);
        let with = d.path().join("with");
        let without = d.path().join("without");
        std::fs::write(&with, &data).unwrap();
        std::fs::write(&without, encode_for_guest(&c)).unwrap();
        let s = scan(&c, &[("a", with.as_path()), ("b", without.as_path())], Some(("CLONESAFE-CANARY", "b"))).await.unwrap();
        assert!(!s.control.as_ref().unwrap().found, "the control is searched in its artifact only");
        assert_eq!(s.hits[0].offsets, vec![(4 << 20) - 5]);
        assert!(!s.hits[1].found, "the encoded form must not match");
        assert_eq!(s.found_in(), vec!["a"]);
    }
}
