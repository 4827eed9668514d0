//! The canary behind `secret_remanence`: the reference thread's point that deleted data
//! survives. Before the snapshot (or the template's shutdown) the guest writes a canary secret to
//! a file, reads it, deletes it and syncs; afterwards the evidence stage scans the snapshot's
//! artifacts for the canary's bytes (evidence/remanence.rs).
//!
//! The canary is made on the host and sent to the guest *encoded* (each byte XOR 0xff, in hex),
//! so the copies the probe channel itself leaves in guest memory do not match: what the scan
//! finds is the file's data, in the page cache or on disk.

use super::recipe::{Ctx, RecipeError};
use crate::backend::Vm;

pub fn new_canary() -> String {
    format!("CLONESAFE-CANARY-{}", uuid::Uuid::new_v4().simple())
}

/// How the canary travels over the probe channel.
pub fn encode_for_guest(secret: &str) -> String {
    secret.bytes().map(|b| format!("{:02x}", b ^ 0xff)).collect()
}

/// Plant a canary in `vm` if the scenario asks for one. Returns the secret, and the guest's
/// hostname (the positive control: it is in kernel memory) when `with_control`.
pub async fn plant(cx: &Ctx<'_>, vm: &mut dyn Vm, with_control: bool) -> Result<Option<(String, Option<String>)>, RecipeError> {
    if !cx.scenario.canary {
        return Ok(None);
    }
    let t = cx.build.timeouts.probe;
    let secret = new_canary();
    let encoded = encode_for_guest(&secret);
    crate::probes::call(vm, "plant the canary", |a| a.plant_canary(encoded, t)).await?;
    let control = if with_control {
        let sources = vm.machine().guest.sources.clone();
        crate::probes::call(vm, "read the hostname", |a| Box::pin(async move { a.report(&sources, t).await })).await.ok().and_then(|i| i.hostname)
    } else {
        None
    };
    Ok(Some((secret, control)))
}
