//! Guest claims checked against what the host knows.
//!
//! Everything a check compares was read inside the guest, and the guest may lie or be broken
//! (hardening issue 11: a lying probe turned every `duplicate` into `unique`; a guest claiming
//! "crng reseeded due to virtual machine fork" was believed on a VM without a vmgenid device).
//! Most claims cannot be verified from outside. Where the host does know the truth, a claim that
//! contradicts it turns the check's verdict into `error`, with both values in the detail:
//!
//! | check           | the guest says                      | the host knows                        |
//! |-----------------|-------------------------------------|---------------------------------------|
//! | `vmgenid`       | it logged a vmgenid-triggered reseed | whether it gave the VM a vmgenid device |
//! | `mac`           | the MACs of its NICs                 | every MAC it assigned in this scenario |
//! | `ssh_host_keys` | the host keys in its /etc/ssh        | the keys its sshd serves (ssh-keyscan) |

use super::common::Evidence;
use clonesafe_metadata::CheckId;

/// Every contradiction found: the check it voids, and what was claimed against what is known.
pub fn contradictions(cx: &Evidence) -> Vec<(CheckId, String)> {
    let mut out = Vec::new();
    for o in &cx.observations {
        let Some(i) = &o.identity else { continue };
        if cx.restored() && !cx.vmgenid_device && i.vmfork_reseeds > 0 {
            out.push((
                CheckId::Vmgenid,
                format!(
                    "{} claims {} vmgenid reseed(s) (\"{}\"), but the host gave it no vmgenid device",
                    o.vm,
                    i.vmfork_reseeds,
                    clonesafe_protocol::VMFORK_RESEED_MSG
                ),
            ));
        }
        if !cx.assigned_macs.is_empty() {
            for n in &i.nics {
                if !cx.assigned_macs.iter().any(|m| m.eq_ignore_ascii_case(&n.mac)) {
                    out.push((
                        CheckId::Mac,
                        format!("{} claims MAC {} on {}, which the host assigned to no VM of this scenario (it assigned {})", o.vm, n.mac, n.name, cx.assigned_macs.join(", ")),
                    ));
                }
            }
        }
        if let Some(Ok(served)) = &o.ssh_keyscan {
            let on_disk: Vec<&str> = i.ssh_host_keys.iter().map(|k| k.fingerprint.as_str()).collect();
            let unknown: Vec<&str> = served.iter().map(String::as_str).filter(|f| !on_disk.contains(f)).collect();
            if !unknown.is_empty() && !on_disk.is_empty() {
                out.push((
                    CheckId::SshHostKeys,
                    format!("{}'s sshd serves {} (ssh-keyscan from the host), which is not among the host keys the guest reports ({})", o.vm, unknown.join(" "), on_disk.join(" ")),
                ));
            }
        }
    }
    out
}
