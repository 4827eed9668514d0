//! The [`Evidence`] of one scenario: what every check reads. Filled by the sources beside this
//! file (their `gather`), read by crate::checks.

use crate::probes::Observation;
use clonesafe_metadata::{Recipe, Scan, VmRecord};

/// Everything the checks read about one scenario's compared VMs.
#[derive(Debug, Clone)]
pub struct Evidence {
    pub recipe: Recipe,
    /// What each compared VM said about itself, in the order they were made.
    pub observations: Vec<Observation>,
    /// The report's record of each compared VM (its fresh identity, role and host).
    pub vms: Vec<VmRecord>,
    /// The canary scan, when the scenario planted one.
    pub remanence: Option<Scan>,
    /// The cross-VM TLS session-ticket test, when one was run.
    pub tickets: Option<crate::probes::host::Tickets>,
    /// Every MAC the host assigned to a VM of the scenario (source and template included); empty
    /// when not known, and then no MAC claim is checked.
    pub assigned_macs: Vec<String>,
    /// Whether the host gave the VMs a vmgenid device (the `vmgenid` fix-up adds it).
    pub vmgenid_device: bool,
    /// What the segment's capture and the guests said, when the VMs were on one.
    pub segment: Option<crate::network::SegmentReport>,
    /// The identities the scenario file declared; each VM's reading is in its observation.
    pub declared: Vec<crate::scenario::declared::Declared>,
    /// Each compared VM's guest RAM pages as the host sees them (empty: not measured).
    pub pages: Vec<Result<RamPages, String>>,
}

impl Evidence {
    /// Evidence of `observations` alone (no scan, no tickets, no segment), for `recipe`.
    pub fn of(recipe: &Recipe, observations: Vec<Observation>) -> Self {
        Evidence {
            recipe: recipe.clone(),
            observations,
            vms: vec![],
            remanence: None,
            tickets: None,
            assigned_macs: vec![],
            vmgenid_device: recipe.has(clonesafe_metadata::FixupId::Vmgenid),
            segment: None,
            declared: vec![],
            pages: vec![],
        }
    }

    /// True when the VMs were restored from one snapshot (so a VM fork happened).
    pub fn restored(&self) -> bool {
        self.recipe.method.restores()
    }
}

/// One VM's guest RAM mapping, in KiB (read by pages.rs from the QEMU process's smaps).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RamPages {
    pub pid: u32,
    /// The mapping's file (a shared-RAM template's file), or `anonymous`.
    pub mapping: String,
    pub size_kib: u64,
    pub rss_kib: u64,
    /// Resident pages also mapped by another process.
    pub shared_kib: u64,
    pub private_kib: u64,
}
