//! The external programs clonesafe runs on disk images, each wrapped once: `qemu-img` (overlays,
//! copies, compaction) and e2fsprogs (`e2fsck`, `debugfs`). A failure keeps the program's exit
//! status and stderr, so the report says what really went wrong.

pub mod bounded;
pub mod e2fs;
pub mod qemu_img;

use std::ffi::OsStr;
use std::process::Output;

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("Cannot run {tool} (is {package} installed?)")]
    Spawn {
        tool: &'static str,
        package: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} {args} failed ({status}): {stderr}")]
    Failed { tool: &'static str, args: String, status: String, stderr: String },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} did not do what was asked: {detail}")]
    Unexpected { tool: &'static str, detail: String },
    #[error("{tool} {args} did not finish within {} s and was killed", .after.as_secs())]
    Timeout { tool: &'static str, args: String, after: std::time::Duration },
}

/// How long one run of a disk tool may take: a copy of a large image is minutes under load; a
/// tool that takes longer is stuck (a FIFO or a network backing it waits on).
pub const TOOL_LIMIT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// Run `tool` with `args`; any exit status in `ok` counts as success.
pub(crate) async fn run<I, S>(tool: &'static str, package: &'static str, args: I, ok: &[i32]) -> Result<Output, ToolError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_os_string()).collect();
    let shown = || args.iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ");
    let mut cmd = tokio::process::Command::new(tool);
    cmd.args(&args);
    let out = match bounded::output_async(&mut cmd, None, TOOL_LIMIT).await {
        Ok(o) => o,
        Err(bounded::BoundedError::Spawn { source, .. }) => return Err(ToolError::Spawn { tool, package, source }),
        Err(bounded::BoundedError::Timeout { .. }) => return Err(ToolError::Timeout { tool, args: shown(), after: TOOL_LIMIT }),
    };
    if out.status.code().is_some_and(|c| ok.contains(&c)) {
        return Ok(out);
    }
    let text = |b: &[u8]| crate::text::truncate(String::from_utf8_lossy(b).trim(), 4000);
    let stderr = if out.stderr.is_empty() { text(&out.stdout) } else { text(&out.stderr) };
    Err(ToolError::Failed {
        tool,
        args: shown(),
        status: out.status.to_string(),
        stderr,
    })
}
