//! The external programs clonesafe runs on disk images, each wrapped once: `qemu-img` (overlays,
//! copies, compaction) and e2fsprogs (`e2fsck`, `debugfs`). A failure keeps the program's exit
//! status and stderr, so the report says what really went wrong.

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
}

/// Run `tool` with `args`; any exit status in `ok` counts as success.
pub(crate) async fn run<I, S>(tool: &'static str, package: &'static str, args: I, ok: &[i32]) -> Result<Output, ToolError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_os_string()).collect();
    let out = tokio::process::Command::new(tool)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| ToolError::Spawn { tool, package, source })?;
    if out.status.code().is_some_and(|c| ok.contains(&c)) {
        return Ok(out);
    }
    let text = |b: &[u8]| crate::text::truncate(String::from_utf8_lossy(b).trim(), 4000);
    let stderr = if out.stderr.is_empty() { text(&out.stdout) } else { text(&out.stderr) };
    Err(ToolError::Failed {
        tool,
        args: args.iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" "),
        status: out.status.to_string(),
        stderr,
    })
}
