//! Choosing the accelerator. `/dev/kvm` existing proves nothing: on these machines it is a
//! paravirtual nested KVM on which a stock Debian kernel hangs after "Probing EDD" (FACTS.md).
//! So `auto` boots the real guest under KVM with a bound, and falls back to TCG, saying why.
//! The verdict is cached per (host kernel, QEMU, guest kernel) so later runs skip the trial.

use super::emulator;
use super::lifecycle::Timeouts;
use super::snapshot::{CloneArgs, Machine};
use super::Backend;
use crate::guest::GuestProfile;
use crate::identity::{HostIdentity, NAME_PREFIX};
use clonesafe_metadata::Accel;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AccelChoice {
    /// KVM if a guest really boots under it within a bound, else TCG.
    #[default]
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccelDecision {
    pub accel: Accel,
    pub reason: String,
}

/// How long a KVM trial boot may take. The tiny guest boots in about 7 s under TCG, so a working
/// KVM is far inside this.
pub const KVM_TRIAL_BOUND: Duration = Duration::from_secs(20);

/// Can this process open /dev/kvm read-write?
pub fn kvm_device() -> Result<(), String> {
    std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").map(drop).map_err(|e| format!("/dev/kvm: {e}"))
}

/// `$CLONESAFE_STATE/accel.json` (default /var/lib/clonesafe/accel.json).
fn cache_path() -> PathBuf {
    std::env::var_os("CLONESAFE_STATE").map(PathBuf::from).unwrap_or_else(|| "/var/lib/clonesafe".into()).join("accel.json")
}

fn cache_key(guest: &GuestProfile) -> String {
    format!("host={} qemu={} guest={}", emulator::host_kernel(), emulator::qemu_version().unwrap_or_default(), guest.kernel_release.clone().unwrap_or_default())
}

#[derive(Serialize, Deserialize)]
struct Cached {
    key: String,
    decision: AccelDecision,
}

/// A previously measured decision for this host, if any.
pub fn cached(guest: &GuestProfile) -> Option<AccelDecision> {
    let c: Cached = serde_json::from_str(&std::fs::read_to_string(cache_path()).ok()?).ok()?;
    (c.key == cache_key(guest)).then_some(c.decision)
}

pub async fn resolve(choice: AccelChoice, backend: &dyn Backend, guest: &GuestProfile, work: &Path) -> AccelDecision {
    match choice {
        AccelChoice::Kvm => AccelDecision { accel: Accel::Kvm, reason: "forced with --accel kvm".into() },
        AccelChoice::Tcg => AccelDecision { accel: Accel::Tcg, reason: "forced with --accel tcg".into() },
        AccelChoice::Auto => {
            if let Some(remote) = backend.remote_kvm() {
                // Another host's KVM: nothing here (device, cache) says anything about it.
                return match remote {
                    Err(e) => AccelDecision { accel: Accel::Tcg, reason: format!("{e}; using TCG") },
                    Ok(()) => trial(backend, guest, work, "the libvirt host offers KVM").await,
                };
            }
            if let Err(e) = kvm_device() {
                return AccelDecision { accel: Accel::Tcg, reason: format!("no usable KVM ({e}); using TCG") };
            }
            if let Some(d) = cached(guest) {
                return d;
            }
            let d = trial(backend, guest, work, "/dev/kvm is present").await;
            let c = Cached { key: cache_key(guest), decision: d.clone() };
            let _ = std::fs::write(cache_path(), serde_json::to_string_pretty(&c).unwrap_or_default());
            d
        }
    }
}

/// Boot the guest under KVM once, bounded, and keep KVM only if its agent answered.
async fn trial(backend: &dyn Backend, guest: &GuestProfile, work: &Path, offered: &str) -> AccelDecision {
    let name = format!("{NAME_PREFIX}{}-kvm-trial", std::process::id());
    let machine = Machine::new(guest.clone(), 256, Accel::Kvm);
    let args = CloneArgs::fresh(HostIdentity::fresh(name), work.join("kvm-trial"), &machine);
    let t = Timeouts { boot: KVM_TRIAL_BOUND, ..Timeouts::default() };
    match backend.boot(&machine, args, &t).await {
        Ok(vm) => {
            let _ = vm.destroy().await;
            AccelDecision { accel: Accel::Kvm, reason: "a trial guest booted under KVM".into() }
        }
        Err(e) => {
            let first = e.to_string().lines().next().unwrap_or_default().to_string();
            AccelDecision { accel: Accel::Tcg, reason: format!("{offered} but a trial guest did not boot under it ({first}); using TCG") }
        }
    }
}
