//! Choosing the accelerator. `/dev/kvm` existing proves nothing: on these machines it is a
//! paravirtual nested KVM on which a stock Debian kernel hangs after "Probing EDD" (FACTS.md).
//! So `auto` boots the real guest under KVM with a bound, and falls back to TCG, saying why.
//! The verdict is cached per (host kernel, QEMU, guest kernel) so later runs skip the trial.

use super::{Backend, Timeouts, VmSpec};
use crate::guest::GuestImage;
use crate::identity::{HostIdentity, NAME_PREFIX};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

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
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(drop)
        .map_err(|e| format!("/dev/kvm: {e}"))
}

/// `$CLONESAFE_STATE/accel.json` (default /var/lib/clonesafe/accel.json).
fn cache_path() -> PathBuf {
    std::env::var_os("CLONESAFE_STATE").map(PathBuf::from).unwrap_or_else(|| "/var/lib/clonesafe".into()).join("accel.json")
}

fn cache_key(guest: &GuestImage) -> String {
    let uname = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("host={} qemu={} guest={}", uname.trim(), crate::doctor::qemu_version().unwrap_or_default(), guest.kernel_release.clone().unwrap_or_default())
}

#[derive(Serialize, Deserialize)]
struct Cached {
    key: String,
    decision: AccelDecision,
}

/// A previously measured decision for this host, if any.
pub fn cached(guest: &GuestImage) -> Option<AccelDecision> {
    let c: Cached = serde_json::from_str(&std::fs::read_to_string(cache_path()).ok()?).ok()?;
    (c.key == cache_key(guest)).then_some(c.decision)
}

pub async fn resolve(choice: AccelChoice, backend: &dyn Backend, guest: &GuestImage, work: &Path) -> AccelDecision {
    match choice {
        AccelChoice::Kvm => AccelDecision { accel: Accel::Kvm, reason: "forced with --accel kvm".into() },
        AccelChoice::Tcg => AccelDecision { accel: Accel::Tcg, reason: "forced with --accel tcg".into() },
        AccelChoice::Auto => {
            if let Err(e) = kvm_device() {
                return AccelDecision { accel: Accel::Tcg, reason: format!("no usable KVM ({e}); using TCG") };
            }
            if let Some(d) = cached(guest) {
                return d;
            }
            let d = trial(backend, guest, work).await;
            let c = Cached { key: cache_key(guest), decision: d.clone() };
            let _ = std::fs::write(cache_path(), serde_json::to_string_pretty(&c).unwrap_or_default());
            d
        }
    }
}

/// Boot the guest under KVM once, bounded, and keep KVM only if the probe answered.
async fn trial(backend: &dyn Backend, guest: &GuestImage, work: &Path) -> AccelDecision {
    let name = format!("{NAME_PREFIX}{}-kvm-trial", std::process::id());
    let spec = VmSpec {
        identity: HostIdentity::fresh(name, false),
        guest: guest.clone(),
        memory_mib: 256,
        accel: Accel::Kvm,
        dir: work.join("kvm-trial"),
        timeouts: Timeouts { boot: KVM_TRIAL_BOUND, ..Timeouts::default() },
    };
    match backend.boot(spec).await {
        Ok(vm) => {
            let _ = vm.destroy().await;
            AccelDecision { accel: Accel::Kvm, reason: "a trial guest booted under KVM".into() }
        }
        Err(e) => {
            let first = e.to_string().lines().next().unwrap_or_default().to_string();
            AccelDecision {
                accel: Accel::Tcg,
                reason: format!("/dev/kvm is present but a trial guest did not boot under it ({first}); using TCG"),
            }
        }
    }
}
