//! e2fsprogs on a raw ext4 image, with no kernel module and no mount: `e2fsck` to replay a
//! journal, `debugfs -w` to remove files.

use super::{run, ToolError};
use std::path::Path;

const PACKAGE: &str = "e2fsprogs";

/// Check and repair (`-fy`); exit 1 ("errors corrected") counts as success.
pub async fn fsck(raw: &Path) -> Result<(), ToolError> {
    run("e2fsck", PACKAGE, [std::ffi::OsStr::new("-fy"), raw.as_os_str()], &[0, 1]).await.map(drop)
}

/// Run `cmds` (one debugfs request per line) against `raw`, writable. Returns what debugfs
/// printed on stdout and stderr (it reports per-request failures there, not in its status).
pub async fn debugfs(raw: &Path, cmds: &str) -> Result<String, ToolError> {
    let script = raw.with_extension("cmds");
    std::fs::write(&script, cmds).map_err(|source| ToolError::Io { what: format!("write {}", script.display()), source })?;
    let out = run("debugfs", PACKAGE, [std::ffi::OsStr::new("-w"), std::ffi::OsStr::new("-f"), script.as_os_str(), raw.as_os_str()], &[0]).await;
    let _ = std::fs::remove_file(&script);
    let out = out?;
    Ok(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}
