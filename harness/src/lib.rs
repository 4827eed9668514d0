//! clonesafe: settles, with evidence, whether cloning a running VM is safe.
//!
//! Data flows one way, and the modules are named after its stages:
//!
//! ```text
//! scenario (TOML) ─▶ plan ─▶ backend (qemu | libvirt) ─▶ clones (strategies) ─▶ probes ─▶ checks ─▶ report
//! ```
//!
//! * [`scenario`]: parse and validate scenario files into a [`scenario::Plan`].
//! * [`backend`]: boot, snapshot and restore VMs ([`backend::qemu`] over QMP).
//! * [`clones`]: strategies that make the VMs to compare (cold boot, naive restore, ...).
//! * [`probes`]: the host side of the in-guest probe; what each guest sees of itself.
//! * [`checks`]: compare VMs and give a verdict per identity, with evidence.
//! * [`report`]: `report.json` (a stable contract) and the terminal table.
//! * [`runner`]: drives the stages for a whole plan; emits [`events`] and never prints.

pub mod backend;
pub mod checks;
pub mod cleanup;
pub mod clones;
pub mod doctor;
pub mod events;
pub mod guest;
pub mod identity;
pub mod probes;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod secrets;

/// An error and its causes, one per line, without repeating a message.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str("\n  caused by: ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}
