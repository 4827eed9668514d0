//! `shared_pages`: whether clones share physical guest RAM pages with another process (another
//! clone, the template a shared-RAM clone maps, pages KSM merged). Host side, from the QEMU
//! processes' smaps (evidence/pages.rs). `duplicate` when any compared VM has shared pages,
//! `unique` when none has; `skipped` where the processes are not on this host.

use super::common::{error, result, skipped, Check, Evidence};
use clonesafe_metadata::{CheckId, CheckResult, Verdict};
use serde_json::json;

pub struct SharedPages;

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

impl Check for SharedPages {
    fn id(&self) -> CheckId {
        CheckId::SharedPages
    }
    fn run(&self, ev: &Evidence) -> CheckResult {
        let obs = ev.observations.as_slice();
        let id = CheckId::SharedPages;
        if ev.pages.is_empty() {
            return skipped(id, vec![json!(null); obs.len()], "the host did not measure the VMs' pages");
        }
        if let Some(Err(e)) = ev.pages.iter().find(|p| p.as_ref().is_err_and(|e| e.contains("not on this host"))) {
            return skipped(id, vec![json!(null); ev.pages.len()], e.clone());
        }
        if let Some(Err(e)) = ev.pages.iter().find(|p| p.is_err()) {
            return error(id, obs, e.clone());
        }
        let pages: Vec<&crate::evidence::RamPages> = ev.pages.iter().filter_map(|p| p.as_ref().ok()).collect();
        let values = pages.iter().map(|p| json!({ "shared_kib": p.shared_kib, "rss_kib": p.rss_kib, "private_kib": p.private_kib, "mapping": p.mapping })).collect();
        // ev.pages follows the compared VMs, like the observations.
        let name = |i: usize| obs.get(i).map(|o| o.vm.as_str()).unwrap_or("?");
        let sharing: Vec<String> = pages
            .iter()
            .enumerate()
            .filter(|(_, p)| p.shared_kib > 0)
            .map(|(i, p)| format!("{} {} of {} resident ({:.0}%)", name(i), mib(p.shared_kib), mib(p.rss_kib), 100.0 * p.shared_kib as f64 / p.rss_kib.max(1) as f64))
            .collect();
        let mut r = if sharing.is_empty() {
            let total: u64 = pages.iter().map(|p| p.rss_kib).sum();
            result(id, Verdict::Unique, values, format!("no guest RAM page of the {} VMs is mapped by another process ({} resident in all)", pages.len(), mib(total)))
        } else {
            result(id, Verdict::Duplicate, values, format!("{} of {} VMs share guest RAM pages with another process: {}", sharing.len(), pages.len(), sharing.join("; ")))
        };
        r.evidence = Some(json!({ "from": "/proc/<qemu pid>/smaps: Shared_Clean + Shared_Dirty of the guest RAM mapping", "vms": pages }));
        r
    }
}
