//! The evidence stage: between making VMs and judging them.
//!
//! ```text
//! clones::make ──▶ Made (the VMs in the fleet, what was read right after resume, artifacts,
//!                        timing, notes)
//!        │
//!        ▼  gather: one source after another, each a file here
//!   observe.rs    what each compared guest says about itself (probe or qemu-guest-agent)
//!   tls.rs        the cross-VM TLS session-ticket test (needs every VM at once)
//!   remanence.rs  the canary scan of the snapshot's artifacts
//!   segment.rs    the wire: the segment's capture and each guest's addresses
//!   declared.rs   the scenario file's own identities ([[identity]])
//!   pages.rs      host side: guest RAM pages each VM shares with another process
//!        │
//!        ▼
//! Evidence ──▶ checks::run_all ──▶ verdicts
//! ```
//!
//! A clone method only makes VMs (timing-critical reads right after resume stay with it: they
//! are `Made::compared[..].early`); everything a check reads is gathered here, into one
//! [`Evidence`]. A new source of evidence is a file here and one line in [`gather`].

mod declared;
mod observe;
pub mod pages;
pub mod remanence;
mod segment;
mod tls;
mod types;

use crate::clones::recipe::{Ctx, Fleet, Made, RecipeError};
pub use types::{Evidence, RamPages};

/// Gather every source of evidence from what `made` made (its VMs are `fleet`'s, still
/// running). Timing that comes from the gathering (per-VM measurements) goes into `made.timing`,
/// and notes into `made.notes`.
pub async fn gather(cx: &Ctx<'_>, fleet: &mut Fleet, made: &mut Made, t0: u64) -> Result<Evidence, RecipeError> {
    let mut ev = Evidence::of(&cx.scenario.recipe, vec![]);
    ev.assigned_macs = made.assigned_macs.clone();
    observe::gather(cx, fleet, made, &mut ev).await?;
    let mut lap = std::time::Instant::now();
    let mut timed = |source: &str| {
        let ms = lap.elapsed().as_millis() as u64;
        // Sources with nothing to do for this scenario take no time and say nothing.
        if ms > 0 {
            cx.emit(crate::events::EventKind::Gathered { source: source.into(), vm: None, ms, steps: vec![] });
        }
        lap = std::time::Instant::now();
    };
    tls::gather(cx, fleet, made, &mut ev).await;
    timed("TLS ticket test");
    remanence::gather(cx, made, &mut ev).await?;
    timed("canary scan");
    segment::gather(cx, fleet, made, &mut ev, t0).await;
    timed("segment");
    declared::gather(cx, fleet, made, &mut ev).await;
    timed("declared identities");
    pages::gather(cx, fleet, made, &mut ev).await;
    timed("RAM pages");
    Ok(ev)
}
