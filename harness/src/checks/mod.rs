//! Checks compare what the probes read from each VM and give one verdict per identity, keeping
//! the values they compared as evidence. A verdict of `unique` is only ever the result of
//! comparing real values from every VM; a VM whose value is missing makes the check `error`,
//! and a check the guest's agent cannot feed is `skipped` with the agent's reason.
//!
//! A new check is a file here implementing [`common::Check`], a variant of
//! [`clonesafe_metadata::CheckId`], and one line in [`all`].

pub mod catalogue;
pub mod claims;
pub mod common;
pub mod compare;
pub mod declared;
pub mod files;
pub mod hazards;
pub mod host;
pub mod hw_mismatch;
pub mod identity;
pub mod kernel_rng;
pub mod network;
pub mod pages;
pub mod remanence;
pub mod vmclock;
pub mod vmgenid;

use clonesafe_metadata::CheckResult;
use common::{error, skipped, Check, Evidence};

/// Every check, in report order (the order of `CheckId::ALL`).
pub fn all() -> Vec<&'static dyn Check> {
    vec![
        &identity::MAC,
        &identity::SMBIOS_UUID,
        &identity::SMBIOS_SERIAL,
        &identity::DISK_SERIAL,
        &identity::MACHINE_ID,
        &identity::BOOT_ID,
        &identity::HOSTNAME,
        &identity::SSH_HOST_KEYS,
        &kernel_rng::KernelRng,
        &identity::USERSPACE_RNG,
        &vmgenid::Vmgenid,
        &kernel_rng::RandomUuid,
        &kernel_rng::VdsoRng,
        &vmgenid::VmgenidUevent,
        &vmclock::Vmclock,
        &hw_mismatch::HwMismatch,
        &remanence::SecretRemanence,
        &files::RANDOM_SEED,
        &files::CREDENTIAL_SECRET,
        &files::DBUS_MACHINE_ID,
        &files::CLOUD_INIT_INSTANCE_ID,
        &host::SshKeyscan,
        &host::TlsTicketKey,
        &host::OpensslRng,
        &host::WallClockSkew,
        &network::DhcpClientId,
        &network::Ipv4Lease,
        &network::Ipv6Addr,
        &network::ArpConflict,
        &network::IpWindow,
        &network::TcpSession,
        &hazards::FS_UUID,
        &hazards::LVM_UUID,
        &hazards::LUKS_VOLUME_KEY,
        &files::MACHINE_INFO,
        &hazards::USER_CREDENTIALS,
        &hazards::MACHINE_ACCOUNT,
        &hazards::TPM_EK,
        &pages::SharedPages,
    ]
}

/// Every check's result, then each declared identity's ([`declared`]); a check whose values
/// contradict what the host knows is `error` ([`claims`]), whatever its comparison said.
pub fn run_all(ev: &Evidence) -> Vec<CheckResult> {
    let mut results: Vec<CheckResult> = all().into_iter().map(|c| run(c, ev)).collect();
    results.extend(declared::run(ev));
    for (id, why) in claims::contradictions(ev) {
        if let Some(r) = results.iter_mut().find(|r| r.id == id) {
            if r.verdict != clonesafe_metadata::Verdict::Error {
                r.detail = format!("a guest claim contradicts the host: {why}; the comparison said {} ({})", r.verdict, r.detail);
                r.verdict = clonesafe_metadata::Verdict::Error;
            } else {
                r.detail = format!("{}; also {why}", r.detail);
            }
        }
    }
    results
}

fn run(check: &dyn Check, ev: &Evidence) -> CheckResult {
    let id = check.id();
    let obs = ev.observations.as_slice();
    if let Some(bad) = obs.iter().find(|o| o.error.is_some()) {
        return error(id, obs, format!("{} could not be probed: {}", bad.vm, bad.error.as_deref().unwrap_or("")));
    }
    if let Some((o, why)) = obs.iter().find_map(|o| o.unavailable.get(&id).map(|w| (o, w))) {
        return skipped(id, vec![serde_json::Value::Null; obs.len()], format!("{}: {why}", o.vm));
    }
    check.run(ev)
}

#[cfg(test)]
mod tests;
