//! `qemu-img`: every VM writes to an overlay of its own, images are copied and compacted with
//! `convert`. One wrapper for both backends and every recipe.
//!
//! Every call names the format of every image it opens (`-f`, `-F`, `-O`): a disk the guest
//! wrote must never be format-probed. A raw disk whose first sector a guest filled with a
//! qcow2 header (backing file: any host file) would otherwise be read as qcow2, and the host
//! file's bytes copied into the image the clones boot (issue 19, item 2: a guest got a
//! 0600 host file back as its clones' hostname through image-clone-sysprep).
//! `tests/architecture.rs` checks that each `qemu_img(&[...])` here names a format.

use super::{run, ToolError};
use std::ffi::OsStr;
use std::path::Path;

fn s(x: &str) -> &OsStr {
    OsStr::new(x)
}

const PACKAGE: &str = "qemu-utils";

async fn qemu_img(args: &[&OsStr]) -> Result<std::process::Output, ToolError> {
    run("qemu-img", PACKAGE, args, &[0]).await
}

/// A qcow2 overlay on `backing` (of `backing_format`).
pub async fn create_overlay(backing: &Path, backing_format: &str, overlay: &Path) -> Result<(), ToolError> {
    // 4 KiB clusters, the guest filesystem's block size: a guest fstrim can then free the exact
    // blocks a deleted file used. With the default 64 KiB, a freed block that shares its cluster
    // with live data keeps its bytes (measured: secret_remanence).
    qemu_img(&[s("create"), s("-q"), s("-f"), s("qcow2"), s("-o"), s("cluster_size=4096"), s("-F"), s(backing_format), s("-b"), backing.as_os_str(), overlay.as_os_str()])
        .await
        .map(drop)
}

/// Copy (and flatten) `from`, an image of `from_format`, into a new image `to` of `format`
/// ("qcow2" or "raw").
pub async fn convert(from: &Path, from_format: &str, format: &str, to: &Path) -> Result<(), ToolError> {
    qemu_img(&[s("convert"), s("-f"), s(from_format), s("-O"), s(format), from.as_os_str(), to.as_os_str()]).await.map(drop)
}

/// The backing file of the qcow2 image `image`, if it has one (`-U`: the image may be in use by
/// a VM).
pub async fn backing_file(image: &Path) -> Result<Option<String>, ToolError> {
    let out = qemu_img(&[s("info"), s("-f"), s("qcow2"), s("--output=json"), s("-U"), image.as_os_str()]).await?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| ToolError::Unexpected { tool: "qemu-img", detail: format!("info printed invalid JSON: {e}") })?;
    Ok(v["full-backing-filename"].as_str().or(v["backing-filename"].as_str()).map(str::to_string))
}

/// Rewrite a qcow2 image through `qemu-img convert`: only allocated, non-zero clusters are
/// copied, so discarded (trimmed) data does not come along. Replaces the file in place, keeping
/// its backing chain.
pub async fn compact(image: &Path, tmpdir: &Path) -> Result<(), ToolError> {
    let tmp = tmpdir.join(format!(".compact-{}.qcow2", uuid::Uuid::new_v4().simple()));
    let backing = backing_file(image).await?;
    let mut args: Vec<&OsStr> = vec![s("convert"), s("-f"), s("qcow2"), s("-O"), s("qcow2")];
    if let Some(b) = &backing {
        // Keep the chain: only this layer's clusters are rewritten.
        args.extend([s("-B"), s(b), s("-F"), s("qcow2")]);
    }
    args.extend([image.as_os_str(), tmp.as_os_str()]);
    qemu_img(&args).await?;
    std::fs::rename(&tmp, image).map_err(|source| ToolError::Io { what: format!("replace {}", image.display()), source })
}
