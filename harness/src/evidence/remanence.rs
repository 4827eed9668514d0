//! The canary scan behind `secret_remanence`: every artifact the clones were made from (memory
//! stream or RAM file, frozen disk, copied image) is streamed and searched for the canary's bytes
//! the source wrote and deleted before the snapshot (clones/remanence.rs plants it). The scan
//! reads through the backend's opener: files here, or volume streams on a remote host.

use super::types::Evidence;
use crate::backend::Opener;
use crate::clones::recipe::{Ctx, Made, RecipeError};
use clonesafe_metadata::{Control, Hit, Scan};
use std::io::Read;
use std::path::Path;

pub(super) async fn gather(cx: &Ctx<'_>, made: &Made, ev: &mut Evidence) -> Result<(), RecipeError> {
    let Some(c) = &made.canary else { return Ok(()) };
    let artifacts: Vec<(&str, &Path)> = c.artifacts.iter().map(|(n, p)| (*n, p.as_path())).collect();
    let control = c.control.as_ref().map(|(text, artifact)| (text.as_str(), *artifact));
    ev.remanence = Some(scan(&c.secret, &artifacts, control, &cx.build.backend.artifacts()).await?);
    Ok(())
}

/// Stream each artifact (opened with `open`: a file here, or a volume on a remote host) looking
/// for `needle`, with an overlap so a match across chunks is found. `control` is a string known
/// to be in the artifact it names.
pub async fn scan(needle: &str, artifacts: &[(&str, &Path)], control: Option<(&str, &str)>, open: &Opener) -> Result<Scan, RecipeError> {
    let mut s = scan_for(needle, artifacts, open).await?;
    if let Some((text, artifact)) = control {
        let target: Vec<(&str, &Path)> = artifacts.iter().filter(|(n, _)| *n == artifact).copied().collect();
        let found = scan_for(text, &target, open).await?.hits.iter().any(|h| h.found);
        s.control = Some(Control { needle: text.to_string(), artifact: artifact.to_string(), found });
    }
    Ok(s)
}

async fn scan_for(needle: &str, artifacts: &[(&str, &Path)], open: &Opener) -> Result<Scan, RecipeError> {
    let open = open.clone();
    let needle = needle.as_bytes().to_vec();
    let list: Vec<(String, std::path::PathBuf)> = artifacts.iter().map(|(n, p)| (n.to_string(), p.to_path_buf())).collect();
    let io = |what: String| move |source| RecipeError::Io { what, source };
    tokio::task::spawn_blocking(move || {
        let mut hits = Vec::new();
        for (name, path) in list {
            let (mut f, bytes) = open(&path).map_err(io(format!("open {}", path.display())))?;
            let finder = memchr::memmem::Finder::new(&needle);
            let mut buf = vec![0u8; 4 << 20];
            let keep = needle.len() - 1;
            let mut filled = 0usize;
            let mut base = 0u64; // file offset of buf[0]
            let mut offsets = Vec::new();
            loop {
                let n = f.read(&mut buf[filled..]).map_err(io(format!("read {}", path.display())))?;
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
    .map_err(|e| RecipeError::Io { what: "scan the artifacts".into(), source: std::io::Error::other(e) })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clones::remanence::{encode_for_guest, new_canary};

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
        let s = scan(&c, &[("a", with.as_path()), ("b", without.as_path())], Some(("CLONESAFE-CANARY", "b")), &crate::backend::local_opener()).await.unwrap();
        assert!(!s.control.as_ref().unwrap().found, "the control is searched in its artifact only");
        assert_eq!(s.hits[0].offsets, vec![(4 << 20) - 5]);
        assert!(!s.hits[1].found, "the encoded form must not match");
        assert_eq!(s.found_in(), vec!["a"]);
    }
}
