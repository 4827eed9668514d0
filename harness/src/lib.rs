//! clonesafe: settles, with evidence, whether cloning a running VM is safe.
//!
//! Data flows one way, and the modules are named after its stages:
//!
//! ```text
//! scenario (TOML) ─▶ plan ─▶ backend ─▶ clones (recipes) ─▶ probes ─▶ checks ─▶ report
//! ```
//!
//! * [`scenario`]: parse and validate scenario files into a [`scenario::Plan`].
//! * [`guest`]: guests as profiles (how they boot, which agent they offer).
//! * [`backend`]: boot, snapshot and restore VMs; capabilities; the Persist split.
//! * [`agent`]: the typed interface to the in-guest agent, and its transports.
//! * [`clones`]: recipes (a clone method and fix-ups) that make the VMs to compare.
//! * [`probes`]: the probe step, what each guest sees of itself.
//! * [`checks`]: compare VMs and give a verdict per identity, with evidence.
//! * [`report`]: reporters (terminal, event stream, JSON, JUnit, HTML, Markdown, plots); the
//!   report types are the contract crate [`clonesafe_metadata`].
//! * [`runner`]: drives the stages for a whole plan; emits [`events`] and never prints.
//! * [`bench`]: `clonesafe bench`, every clone method timed side by side (beside the runner: it
//!   drives a backend directly and compares speed, not identities).
//!
//! Below them: [`identity`], [`input`] (bounded reads of user files), [`secrets`], [`text`] and
//! [`tools`] (qemu-img, e2fsprogs).

pub mod agent;
pub mod assess;
pub mod backend;
pub mod bench;
pub mod checks;
pub mod clones;
pub mod doctor;
pub mod events;
pub mod evidence;
pub mod guest;
pub mod identity;
pub mod input;
pub mod network;
pub mod output;
pub mod owner;
pub mod probes;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod secrets;
pub mod text;
pub mod tools;

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
