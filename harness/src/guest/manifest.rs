//! `guest.toml`: how a guest boots, which agent transport it offers, and where it keeps the
//! identities that are files. Parsed strictly (unknown keys are errors), with the line and
//! column of every error.
//!
//! ```toml
//! name = "tiny"
//! description = "..."
//! memory_mib = 256           # the default for scenarios that do not say (default 256)
//! vcpus = 1                  # default 1
//! [boot]
//! kind = "direct-kernel"     # direct-kernel: kernel, initrd, cmdline, disk | disk: disk
//! kernel = "vmlinuz"         # paths are relative to the manifest's directory
//! initrd = "initrd.img"
//! cmdline = "console=ttyS0"
//! disk = "data.qcow2"
//! disk_format = "qcow2"      # qcow2 (default) | raw
//! [agent]
//! transport = "serial-probe" # serial-probe | qga | none
//! [services]                 # TCP services the host reaches through port forwards
//! ssh = 22
//! tls = 443
//! [identities]
//! machine_id = "/data/etc/machine-id"
//! ssh_host_keys = "/data/etc/ssh"
//! ```

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub memory_mib: Option<u32>,
    #[serde(default)]
    pub vcpus: Option<u32>,
    #[serde(default)]
    pub services: std::collections::BTreeMap<String, u16>,
    pub boot: BootSection,
    pub agent: AgentSection,
    #[serde(default)]
    pub identities: Option<IdentitiesSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "kebab-case")]
pub enum BootSection {
    DirectKernel {
        kernel: String,
        initrd: String,
        cmdline: String,
        disk: String,
        #[serde(default = "qcow2")]
        disk_format: String,
    },
    Disk {
        disk: String,
        #[serde(default = "qcow2")]
        disk_format: String,
    },
}

fn qcow2() -> String {
    "qcow2".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    pub transport: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitiesSection {
    pub machine_id: String,
    pub ssh_host_keys: String,
}

/// Parse a manifest; errors are `line:column: message`.
pub fn parse(src: &str) -> Result<Manifest, String> {
    toml::from_str(src).map_err(|e| {
        let (line, col) = e.span().map(|s| line_col(src, s.start)).unwrap_or((0, 0));
        format!("{line}:{col}: {}", e.message().trim())
    })
}

fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..offset.min(src.len())];
    (before.matches('\n').count() + 1, before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1)
}
