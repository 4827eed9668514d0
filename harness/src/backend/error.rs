//! Errors of a VM's life. Every variant names the VM and the phase (the step that failed), and
//! keeps its cause as a `#[source]`: the agent's error, the tool's exit status and stderr, and
//! for whatever a backend drives ([`BackendError::Vmm`]) its own error type (QMP's, libvirt's
//! code and message, a save image's), which this file does not need to know. Timeouts and
//! failures carry the guest console's tail, and a VMM that died carries its stderr.

use super::capability::Capability;
use super::lifecycle::Phase;
use crate::agent::AgentError;
use crate::tools::ToolError;
use clonesafe_metadata::BackendKind;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{vm}: {phase} timed out after {after:?}{}", console_section(.console_tail))]
    Timeout { vm: String, phase: Phase, after: Duration, console_tail: String },
    #[error("{vm}: QEMU exited during {phase} ({status}){}{}", stderr_section(.stderr), console_section(.console_tail))]
    Exited { vm: String, phase: Phase, status: String, stderr: String, console_tail: String },
    /// What a backend drives (QEMU over QMP, libvirt, a save image) refused `what`; its own
    /// error, kept whole, is the source.
    #[error("{vm}: {what}")]
    Vmm {
        vm: String,
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    #[error("{vm}: {phase} failed{}", console_section(.console_tail))]
    Agent {
        vm: String,
        phase: Phase,
        console_tail: String,
        #[source]
        source: AgentError,
    },
    #[error("{vm}: {phase} failed: the filesystem holding {} is full ({free} bytes free); free space or give another --workdir", .path.display())]
    DiskFull {
        vm: String,
        phase: Phase,
        path: PathBuf,
        free: u64,
        /// What the VMM said (QEMU says "Broken pipe" when its `cat` dies of ENOSPC).
        #[source]
        source: Box<BackendError>,
    },
    #[error("{vm}: {what}")]
    Io {
        vm: String,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{vm}: disk image")]
    Tool {
        vm: String,
        #[source]
        source: ToolError,
    },
    #[error("{vm}: the guest has no agent, so clonesafe cannot {op}")]
    NoAgent { vm: String, op: &'static str },
    #[error("{vm}: its network port")]
    Segment {
        vm: String,
        #[source]
        source: crate::network::segment::SegmentError,
    },
    #[error("The {backend} backend cannot do {capability}")]
    Unsupported { backend: BackendKind, capability: Capability },
    #[error("A snapshot made by the {made_by} backend cannot be restored by the {backend} backend")]
    WrongSnapshot { backend: BackendKind, made_by: BackendKind },
    #[error("{vm}: a blocking libvirt call during {phase} panicked")]
    Panicked {
        vm: String,
        phase: Phase,
        #[source]
        source: tokio::task::JoinError,
    },
}

fn console_section(tail: &str) -> String {
    if tail.trim().is_empty() {
        "\n--- serial console: (empty) ---".into()
    } else {
        format!("\n--- last lines of the serial console ---\n{}", tail.trim_end())
    }
}

fn stderr_section(s: &str) -> String {
    if s.trim().is_empty() {
        String::new()
    } else {
        format!("\n--- QEMU stderr ---\n{}", s.trim_end())
    }
}

impl BackendError {
    /// `source`, an error of what the backend drives, while doing `what` for `vm`.
    pub fn vmm(vm: impl Into<String>, what: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> BackendError {
        BackendError::Vmm { vm: vm.into(), what: what.into(), source: Box::new(source) }
    }

    /// An I/O error while doing `what` for `vm`.
    pub fn segment(vm: &str) -> impl FnOnce(crate::network::segment::SegmentError) -> BackendError {
        let vm = vm.to_string();
        move |source| BackendError::Segment { vm, source }
    }

    pub fn io(vm: &str, what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackendError {
        let (vm, what) = (vm.to_string(), what.into());
        move |source| BackendError::Io { vm, what, source }
    }

    /// A disk-image tool's failure for `vm`.
    pub fn tool(vm: &str) -> impl FnOnce(ToolError) -> BackendError {
        let vm = vm.to_string();
        move |source| BackendError::Tool { vm, source }
    }
}

impl BackendError {
    /// This error, or, when the filesystem holding `dir` is (nearly) full, a
    /// [`BackendError::DiskFull`] that names it and keeps this error as its cause.
    pub fn or_disk_full(self, vm: &str, phase: Phase, dir: &std::path::Path) -> BackendError {
        match crate::secrets::free_bytes(dir) {
            Some(free) if free < crate::secrets::FULL_DISK_BYTES => BackendError::DiskFull { vm: vm.into(), phase, path: dir.to_path_buf(), free, source: Box::new(self) },
            _ => self,
        }
    }
}
