//! libvirt's own error: its code and domain (virterror.h), as libvirt reported it; a
//! [`BackendError::Vmm`](crate::backend::error::BackendError::Vmm) carries it as its source.

/// A libvirt error with its code and domain (virterror.h), as libvirt reported it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message} (libvirt {code_name}, code {code})")]
pub struct LibvirtError {
    pub code: u32,
    pub code_name: String,
    pub domain: String,
    pub message: String,
}

impl From<virt::error::Error> for LibvirtError {
    fn from(e: virt::error::Error) -> Self {
        LibvirtError { code: e.code().to_raw(), code_name: e.code().to_string(), domain: e.domain().to_string(), message: e.message().to_string() }
    }
}

