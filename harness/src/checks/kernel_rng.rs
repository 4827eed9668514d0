//! `kernel_rng`: getrandom(2) output in each VM right after resume, and `random_uuid`: the
//! kernel's random uuid read beside each sample. The first post-resume sample decides the
//! values; every sample index is compared, and the detail says for how long after resume the VMs
//! kept producing identical output.

use super::common::{error, from_values, skipped, Check, Evidence};
use super::compare::compare;
use crate::probes::Observation;
use clonesafe_metadata::{CheckId, CheckResult, Verdict};
use clonesafe_protocol::Sample;
use serde_json::{json, Value};

pub struct KernelRng;

impl Check for KernelRng {
    fn id(&self) -> CheckId {
        CheckId::KernelRng
    }

    fn run(&self, ev: &Evidence) -> CheckResult {
        let obs = ev.observations.as_slice();
        let id = CheckId::KernelRng;
        if let Some(o) = obs.iter().find(|o| o.kernel_rng.is_empty()) {
            return error(id, obs, format!("{}: no kernel RNG samples", o.vm));
        }
        sampled(id, obs, |o| &o.kernel_rng)
    }
}

pub struct RandomUuid;

impl Check for RandomUuid {
    fn id(&self) -> CheckId {
        CheckId::RandomUuid
    }

    fn run(&self, ev: &Evidence) -> CheckResult {
        let obs = ev.observations.as_slice();
        let id = CheckId::RandomUuid;
        if obs.iter().all(|o| o.random_uuid.is_empty()) {
            return skipped(id, vec![Value::Null; obs.len()], "no VM's probe read /proc/sys/kernel/random/uuid (a probe older than the check, or a kernel without the file)");
        }
        if let Some(o) = obs.iter().find(|o| o.random_uuid.is_empty()) {
            return error(id, obs, format!("{}: no random uuid read", o.vm));
        }
        sampled(id, obs, |o| &o.random_uuid)
    }
}

/// `vdso_rng`: getrandom() through the guest's own glibc, from the vDSO helper the probe started
/// before the snapshot. Compared like `kernel_rng` where every VM's helper took the vDSO path
/// (tested in the guest under a seccomp filter that forbids the system call); skipped, with the
/// helper's reason, where none did (glibc before 2.41, a kernel before 6.11, no helper).
pub struct VdsoRng;

impl Check for VdsoRng {
    fn id(&self) -> CheckId {
        CheckId::VdsoRng
    }

    fn run(&self, ev: &Evidence) -> CheckResult {
        let obs = ev.observations.as_slice();
        let id = CheckId::VdsoRng;
        let nulls = || vec![Value::Null; obs.len()];
        let on_vdso = |o: &Observation| o.vdso_rng.as_ref().is_some_and(|w| w.path == "vdso");
        if !obs.iter().any(on_vdso) {
            let why = obs
                .iter()
                .find_map(|o| o.vdso_rng.as_ref().map(|w| format!("{}: {}{}", o.vm, if w.glibc.is_empty() { String::new() } else { format!("glibc {}: ", w.glibc) }, w.why)))
                .unwrap_or_else(|| "no VM's probe ran the vDSO helper (a probe older than the check)".into());
            return skipped(id, nulls(), format!("glibc's getrandom() did not take the vDSO path: {why}"));
        }
        for o in obs {
            match &o.vdso_rng {
                Some(w) if w.path != "vdso" => return error(id, obs, format!("{}: the vDSO path did not run where other VMs' did: {}", o.vm, w.why)),
                Some(w) if w.error.is_some() || w.samples.is_empty() => {
                    return error(id, obs, format!("{}: {}", o.vm, w.error.clone().unwrap_or_else(|| "no samples".into())))
                }
                None => return error(id, obs, format!("{}: no vDSO helper answer", o.vm)),
                _ => {}
            }
        }
        let mut r = sampled(id, obs, |o| o.vdso_rng.as_ref().map(|w| w.samples.as_slice()).unwrap_or(&[]));
        if let Some(Value::Object(ev)) = r.evidence.as_mut() {
            ev.insert("glibc".into(), json!(obs.iter().map(|o| o.vdso_rng.as_ref().map(|w| json!({ "vm": o.vm, "glibc": w.glibc, "vdso_symbol": w.vdso_symbol, "path": w.path, "why": w.why }))).collect::<Vec<_>>()));
        }
        r
    }
}

/// The verdict on one series of post-resume samples (`of`), with how long the VMs kept sharing
/// it and, beside each VM's first sample, its vmgenid reseed.
fn sampled(id: CheckId, obs: &[Observation], of: fn(&Observation) -> &[Sample]) -> CheckResult {
    let firsts: Vec<String> = obs.iter().map(|o| of(o)[0].hex.clone()).collect();
    let n_samples = obs.iter().map(|o| of(o).len()).min().unwrap_or(0);
    let mut per_index = Vec::new();
    let mut last_dup: Option<usize> = None;
    for i in 0..n_samples {
        let vals: Vec<Option<String>> = obs.iter().map(|o| Some(of(o)[i].hex.clone())).collect();
        let c = compare(&vals);
        if c.verdict == Verdict::Duplicate {
            last_dup = Some(i);
        }
        per_index.push(json!({ "index": i, "offset_ms": max_offset_ms(obs, of, i), "distinct": c.distinct, "of": obs.len() }));
    }
    let mut r = from_values(id, obs, firsts);
    if r.verdict == Verdict::Skipped {
        return r;
    }
    // The race made visible: each clone's vmgenid reseed (kernel log, converted to the probe's
    // monotonic clock) beside its first sample.
    let samples: Vec<Value> = obs
        .iter()
        .map(|o| {
            let first = of(o)[0].t_ns;
            let reseeds = o.identity.as_ref().map(|i| i.vmfork_reseed_ns.clone()).unwrap_or_default();
            let before = reseeds.iter().any(|r| *r > first);
            json!({
                "vm": o.vm,
                "samples": rel_samples(of(o)),
                "vmgenid_reseed_ms_after_first_sample": reseeds.iter().map(|r| (*r as f64 - first as f64) / 1e6).collect::<Vec<_>>(),
                "read_before_its_reseed": before,
            })
        })
        .collect();
    let early: Vec<&str> = obs
        .iter()
        .filter(|o| o.identity.as_ref().is_some_and(|i| i.vmfork_reseed_ns.iter().any(|r| *r > of(o)[0].t_ns)))
        .map(|o| o.vm.as_str())
        .collect();
    let identical_ms = last_dup.map(|i| max_offset_ms(obs, of, i));
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
    if !early.is_empty() {
        r.detail = format!("{}; read before its vmgenid reseed: {}", r.detail, early.join(", "));
    }
    r.evidence = Some(json!({ "per_sample": per_index, "identical_until_ms": identical_ms, "vms": samples }));
    r
}

fn rel_samples(s: &[Sample]) -> Vec<Value> {
    let t0 = s.first().map(|x| x.t_ns).unwrap_or(0);
    s.iter().map(|x| json!({ "offset_ms": (x.t_ns.saturating_sub(t0)) as f64 / 1e6, "hex": x.hex })).collect()
}

fn max_offset_ms(obs: &[Observation], of: fn(&Observation) -> &[Sample], i: usize) -> f64 {
    obs.iter().map(|o| of(o)[i].t_ns.saturating_sub(of(o)[0].t_ns) as f64 / 1e6).fold(0.0, f64::max)
}
