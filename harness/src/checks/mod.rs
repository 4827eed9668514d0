//! Checks compare what the probes read from each VM and give one verdict per identity, keeping
//! the values they compared as evidence. A verdict of `unique` is only ever the result of
//! comparing real values from every VM; a VM whose value is missing makes the check `error`.

mod compare;

pub use compare::{compare, Comparison};

use crate::clones::remanence::Scan;
use crate::probes::Observation;
use crate::scenario::Strategy;
use clonesafe_protocol::Sample;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckId {
    Mac,
    SmbiosUuid,
    DiskSerial,
    MachineId,
    BootId,
    Hostname,
    SshHostKeys,
    KernelRng,
    UserspaceRng,
    Vmgenid,
    HwMismatchMs,
    SecretRemanence,
}

impl CheckId {
    pub const ALL: [CheckId; 12] = [
        CheckId::Mac,
        CheckId::SmbiosUuid,
        CheckId::DiskSerial,
        CheckId::MachineId,
        CheckId::BootId,
        CheckId::Hostname,
        CheckId::SshHostKeys,
        CheckId::KernelRng,
        CheckId::UserspaceRng,
        CheckId::Vmgenid,
        CheckId::HwMismatchMs,
        CheckId::SecretRemanence,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CheckId::Mac => "mac",
            CheckId::SmbiosUuid => "smbios_uuid",
            CheckId::DiskSerial => "disk_serial",
            CheckId::MachineId => "machine_id",
            CheckId::BootId => "boot_id",
            CheckId::Hostname => "hostname",
            CheckId::SshHostKeys => "ssh_host_keys",
            CheckId::KernelRng => "kernel_rng",
            CheckId::UserspaceRng => "userspace_rng",
            CheckId::Vmgenid => "vmgenid",
            CheckId::HwMismatchMs => "hw_mismatch_ms",
            CheckId::SecretRemanence => "secret_remanence",
        }
    }

    pub fn parse(s: &str) -> Option<CheckId> {
        CheckId::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for CheckId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Unique,
    Duplicate,
    Error,
    Skipped,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Unique => "unique",
            Verdict::Duplicate => "duplicate",
            Verdict::Error => "error",
            Verdict::Skipped => "skipped",
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub id: CheckId,
    pub verdict: Verdict,
    /// One value per VM, in VM order (null where a VM gave none).
    pub values: Vec<Value>,
    pub detail: String,
    /// Extra evidence (for `kernel_rng`: every sample of every VM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Value>,
}

/// What the checks need to know about how the VMs came to be.
#[derive(Debug, Clone, Copy)]
pub struct CheckContext<'a> {
    pub strategy: Strategy,
    /// The canary scan, when the scenario planted one.
    pub remanence: Option<&'a Scan>,
}

impl CheckContext<'_> {
    /// True when the VMs were restored from one snapshot (so a vmgenid fork is meaningful).
    pub fn restored(&self) -> bool {
        self.strategy.restores()
    }
}

pub fn run_all(obs: &[Observation], ctx: CheckContext) -> Vec<CheckResult> {
    CheckId::ALL.into_iter().map(|id| run(id, obs, ctx)).collect()
}

fn run(id: CheckId, obs: &[Observation], ctx: CheckContext) -> CheckResult {
    if let Some(bad) = obs.iter().find(|o| o.error.is_some()) {
        return error(id, obs, format!("{} could not be probed: {}", bad.vm, bad.error.as_deref().unwrap_or("")));
    }
    match id {
        CheckId::KernelRng => return kernel_rng(obs),
        CheckId::Vmgenid => return vmgenid(obs, ctx),
        CheckId::HwMismatchMs => return hw_mismatch(obs, ctx),
        CheckId::SecretRemanence => return remanence(obs, ctx),
        _ => {}
    }
    let mut values = Vec::with_capacity(obs.len());
    for o in obs {
        match extract(id, o) {
            Ok(v) => values.push(v),
            Err(why) => return error(id, obs, format!("{}: {why}", o.vm)),
        }
    }
    from_values(id, obs, values)
}

/// The value of one identity for one VM, as a string to compare.
fn extract(id: CheckId, o: &Observation) -> Result<String, String> {
    let Some(ident) = &o.identity else { return Err("no identity report".into()) };
    let guest_error = |field: &str| {
        ident
            .errors
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, e)| e.clone())
            .unwrap_or_else(|| format!("the guest reported no {field}"))
    };
    let joined = |parts: Vec<String>, field: &str| if parts.is_empty() { Err(guest_error(field)) } else { Ok(parts.join(" ")) };
    match id {
        CheckId::Mac => joined(ident.nics.iter().map(|n| format!("{}={}", n.name, n.mac)).collect(), "nics"),
        CheckId::DiskSerial => joined(ident.disks.iter().map(|d| format!("{}={}", d.name, d.serial)).collect(), "disks"),
        CheckId::SshHostKeys => joined(ident.ssh_host_keys.iter().map(|k| k.fingerprint.clone()).collect(), "ssh_host_keys"),
        CheckId::SmbiosUuid => ident.product_uuid.clone().ok_or_else(|| guest_error("product_uuid")),
        CheckId::MachineId => ident.machine_id.clone().ok_or_else(|| guest_error("machine_id")),
        CheckId::BootId => ident.boot_id.clone().ok_or_else(|| guest_error("boot_id")),
        CheckId::Hostname => ident.hostname.clone().ok_or_else(|| guest_error("hostname")),
        CheckId::UserspaceRng => o.userspace_rng.first().map(|s| s.hex.clone()).ok_or_else(|| "no userspace PRNG sample".into()),
        CheckId::KernelRng | CheckId::Vmgenid | CheckId::HwMismatchMs | CheckId::SecretRemanence => unreachable!("handled separately"),
    }
}

fn error(id: CheckId, obs: &[Observation], detail: String) -> CheckResult {
    CheckResult { id, verdict: Verdict::Error, values: vec![Value::Null; obs.len()], detail, evidence: None }
}

fn from_values(id: CheckId, obs: &[Observation], values: Vec<String>) -> CheckResult {
    let json_values = values.iter().map(|v| json!(v)).collect();
    if obs.len() < 2 {
        return CheckResult { id, verdict: Verdict::Skipped, values: json_values, detail: "needs at least 2 VMs to compare".into(), evidence: None };
    }
    let opt: Vec<Option<String>> = values.into_iter().map(Some).collect();
    let c = compare(&opt);
    CheckResult { id, verdict: c.verdict, values: json_values, detail: describe(&c, obs), evidence: None }
}

fn describe(c: &Comparison, obs: &[Observation]) -> String {
    match c.verdict {
        Verdict::Unique => format!("all {} values distinct", obs.len()),
        Verdict::Duplicate => c
            .groups
            .iter()
            .map(|g| {
                let names: Vec<&str> = g.iter().map(|&i| obs[i].vm.as_str()).collect();
                format!("{} of {} VMs share one value ({})", g.len(), obs.len(), names.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => String::new(),
    }
}

/// The first post-resume sample decides the values; every sample index is compared, and the
/// detail says for how long after resume the VMs kept producing identical output.
fn kernel_rng(obs: &[Observation]) -> CheckResult {
    let id = CheckId::KernelRng;
    if let Some(o) = obs.iter().find(|o| o.kernel_rng.is_empty()) {
        return error(id, obs, format!("{}: no kernel RNG samples", o.vm));
    }
    let firsts: Vec<String> = obs.iter().map(|o| o.kernel_rng[0].hex.clone()).collect();
    let n_samples = obs.iter().map(|o| o.kernel_rng.len()).min().unwrap_or(0);
    let mut per_index = Vec::new();
    let mut last_dup: Option<usize> = None;
    for i in 0..n_samples {
        let vals: Vec<Option<String>> = obs.iter().map(|o| Some(o.kernel_rng[i].hex.clone())).collect();
        let c = compare(&vals);
        if c.verdict == Verdict::Duplicate {
            last_dup = Some(i);
        }
        per_index.push(json!({
            "index": i,
            "offset_ms": max_offset_ms(obs, i),
            "distinct": c.distinct,
            "of": obs.len(),
        }));
    }
    let mut r = from_values(id, obs, firsts);
    if r.verdict == Verdict::Skipped {
        return r;
    }
    let samples: Vec<Value> = obs.iter().map(|o| json!({ "vm": o.vm, "samples": rel_samples(&o.kernel_rng) })).collect();
    let identical_ms = last_dup.map(|i| max_offset_ms(obs, i));
    if last_dup.is_some() && r.verdict == Verdict::Unique {
        r.verdict = Verdict::Duplicate;
    }
    r.detail = match last_dup {
        None => format!("first post-resume samples: {}; no sample repeated across VMs", r.detail),
        Some(i) => format!(
            "first post-resume samples: {}; VMs still shared output at sample {} of {} (+{:.1} ms after the first)",
            r.detail,
            i + 1,
            n_samples,
            identical_ms.unwrap_or(0.0)
        ),
    };
    r.evidence = Some(json!({ "per_sample": per_index, "identical_until_ms": identical_ms, "vms": samples }));
    r
}

fn rel_samples(s: &[Sample]) -> Vec<Value> {
    let t0 = s.first().map(|x| x.t_ns).unwrap_or(0);
    s.iter().map(|x| json!({ "offset_ms": (x.t_ns.saturating_sub(t0)) as f64 / 1e6, "hex": x.hex })).collect()
}

fn max_offset_ms(obs: &[Observation], i: usize) -> f64 {
    obs.iter()
        .map(|o| o.kernel_rng[i].t_ns.saturating_sub(o.kernel_rng[0].t_ns) as f64 / 1e6)
        .fold(0.0, f64::max)
}

/// Did each clone learn that it is a new generation? Read from the kernel log line the
/// vmgenid driver's notification produces.
fn vmgenid(obs: &[Observation], ctx: CheckContext) -> CheckResult {
    let id = CheckId::Vmgenid;
    let mut counts = Vec::new();
    for o in obs {
        match &o.identity {
            Some(i) if !i.errors.iter().any(|(f, _)| f == "vmgenid") => counts.push(i.vmfork_reseeds),
            Some(i) => {
                let e = i.errors.iter().find(|(f, _)| f == "vmgenid").map(|(_, e)| e.clone()).unwrap_or_default();
                return error(id, obs, format!("{}: {e}", o.vm));
            }
            None => return error(id, obs, format!("{}: no identity report", o.vm)),
        }
    }
    let values = counts.iter().map(|c| json!(c)).collect();
    if !ctx.restored() {
        return CheckResult {
            id,
            verdict: Verdict::Skipped,
            values,
            detail: "VMs were booted, not restored from a snapshot: there is no fork to signal".into(),
            evidence: None,
        };
    }
    let logged = counts.iter().filter(|&&c| c > 0).count();
    let msg = clonesafe_protocol::VMFORK_RESEED_MSG;
    let (verdict, detail) = if logged == obs.len() {
        (Verdict::Unique, format!("every clone ({logged} of {}) logged \"{msg}\": each knows it is a new generation", obs.len()))
    } else {
        (
            Verdict::Duplicate,
            format!("{} of {} clones never logged \"{msg}\": they cannot tell they are copies", obs.len() - logged, obs.len()),
        )
    };
    CheckResult { id, verdict, values, detail, evidence: None }
}

/// Does each clone run on hardware that matches what its memory believes? The guest's NIC MAC
/// is compared with the one the host gave it; values are the ms from resume until they matched
/// (0 when the clone was restored without a NIC to mismatch and saw its new one at once), null
/// when they never did. `duplicate`: some clone still runs with the source's hardware identity.
fn hw_mismatch(obs: &[Observation], ctx: CheckContext) -> CheckResult {
    let id = CheckId::HwMismatchMs;
    if !ctx.restored() {
        let values = obs.iter().map(|_| json!(0)).collect();
        return CheckResult {
            id,
            verdict: Verdict::Skipped,
            values,
            detail: "VMs were booted, not restored: hardware and memory agree from the first instruction".into(),
            evidence: None,
        };
    }
    let mut values = Vec::new();
    let mut unresolved = Vec::new();
    for o in obs {
        let Some(ident) = &o.identity else { return error(id, obs, format!("{}: no identity report", o.vm)) };
        let host = o.host_mac.clone().unwrap_or_default();
        let sees_own = ident.nics.iter().any(|n| n.mac.eq_ignore_ascii_case(&host));
        if sees_own {
            values.push(json!(o.nic_window_ms.unwrap_or(0.0)));
        } else {
            values.push(Value::Null);
            let seen: Vec<&str> = ident.nics.iter().map(|n| n.mac.as_str()).collect();
            unresolved.push(format!("{} sees {} but was given {host}", o.vm, if seen.is_empty() { "no NIC".into() } else { seen.join(",") }));
        }
    }
    if unresolved.is_empty() {
        let max = values.iter().filter_map(Value::as_f64).fold(0.0, f64::max);
        let detail = if ctx.strategy.nic_replug() {
            format!("every clone saw its new NIC; the longest window from resume was {max:.1} ms")
        } else {
            "every clone sees the hardware it was given".into()
        };
        CheckResult { id, verdict: Verdict::Unique, values, detail, evidence: None }
    } else {
        let detail = format!("mismatch never resolved: {} (the MAC is migrated device state)", unresolved.join("; "));
        CheckResult { id, verdict: Verdict::Duplicate, values, detail, evidence: None }
    }
}

/// Was the deleted canary found in the snapshot's artifacts? `duplicate`: the secret survived
/// deletion into something every clone is made from. Values: one per artifact.
fn remanence(obs: &[Observation], ctx: CheckContext) -> CheckResult {
    let id = CheckId::SecretRemanence;
    let Some(scan) = ctx.remanence else {
        return CheckResult {
            id,
            verdict: Verdict::Skipped,
            values: vec![],
            detail: "no canary planted (set canary = true in the scenario)".into(),
            evidence: None,
        };
    };
    let _ = obs;
    if let Some(c) = scan.control.as_ref().filter(|c| !c.found) {
        return CheckResult {
            id,
            verdict: Verdict::Error,
            values: vec![],
            detail: format!("the scan did not find a string known to be there ({:?} in the {}): its 'not found' cannot be trusted", c.needle, c.artifact),
            evidence: serde_json::to_value(scan).ok(),
        };
    }
    let values = scan.hits.iter().map(|h| json!({ "artifact": h.artifact, "found": h.found, "offsets": h.offsets })).collect();
    let found = scan.found_in();
    let (verdict, detail) = if found.is_empty() {
        let control = scan.control.as_ref().map(|c| format!(" (the scan did find the guest's hostname in the {}, so it reads that artifact)", c.artifact)).unwrap_or_default();
        (Verdict::Unique, format!("the deleted canary was in none of: {}{control}", scan.hits.iter().map(|h| h.artifact.as_str()).collect::<Vec<_>>().join(", ")))
    } else {
        (Verdict::Duplicate, format!("the deleted canary survived in: {}", found.join(", ")))
    };
    CheckResult { id, verdict, values, detail, evidence: serde_json::to_value(scan).ok() }
}

#[cfg(test)]
mod tests;
