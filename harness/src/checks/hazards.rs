//! Identities a golden image carries on its disks and in its files, compared as sets (two VMs
//! that share any one element share the identity): `fs_uuid`, `lvm_uuid`, `luks_volume_key`,
//! `user_credentials`, `machine_account`, `tpm_ek`. The items of virt-sysprep's `fs-uuids`, `lvm-uuids`,
//! `user-account` and `ssh-userdir` operations, systemd's docs/BUILDING_IMAGES.md (a volume key
//! made at image build) and the Azure agent's deprovision list (a domain member's secrets).
//!
//! A guest that has none of the item gives `skipped` with that reason; present in some VMs only,
//! it is an `error`. Values are digests or public ids: no secret is compared or shown.

use super::common::{error, from_sets, skipped, Check, Evidence};
use clonesafe_metadata::{CheckId, CheckResult};
use clonesafe_protocol::Identity;
use serde_json::json;

/// A check over a set of values per VM.
pub struct SetCheck {
    pub id: CheckId,
    /// What the guest would have to have, for the skipped reason ("no LUKS container").
    pub absent: &'static str,
    /// The probe's error keys that make this check's values incomplete.
    pub fields: &'static [&'static str],
    pub read: fn(&Identity) -> Vec<String>,
    /// Extra evidence per VM (what each value is), shown beside the verdict.
    pub note: Option<fn(&Identity) -> Option<String>>,
}

impl Check for SetCheck {
    fn id(&self) -> CheckId {
        self.id
    }
    fn run(&self, ev: &Evidence) -> CheckResult {
        let obs = ev.observations.as_slice();
        let mut sets = Vec::new();
        for o in obs {
            let Some(ident) = &o.identity else { return error(self.id, obs, format!("{}: no identity report", o.vm)) };
            if let Some((_, e)) = ident.errors.iter().find(|(f, _)| self.fields.contains(&f.as_str())) {
                if e == clonesafe_protocol::PROBE_ONLY {
                    return skipped(self.id, vec![json!(null); obs.len()], format!("{}: {e}", o.vm));
                }
                return error(self.id, obs, format!("{}: {e}", o.vm));
            }
            let mut v = (self.read)(ident);
            v.sort();
            v.dedup();
            sets.push(v);
        }
        let absent: Vec<&str> = obs.iter().zip(&sets).filter(|(_, s)| s.is_empty()).map(|(o, _)| o.vm.as_str()).collect();
        if absent.len() == obs.len() {
            return skipped(self.id, vec![json!(null); obs.len()], format!("{} in any VM", self.absent));
        }
        if !absent.is_empty() {
            return error(self.id, obs, format!("present in some VMs only ({} in {})", self.absent, absent.join(", ")));
        }
        let mut r = from_sets(self.id, obs, sets);
        if let Some(note) = self.note {
            let notes: Vec<String> = obs.iter().filter_map(|o| o.identity.as_ref().and_then(note).map(|n| format!("{}: {n}", o.vm))).collect();
            if !notes.is_empty() {
                r.evidence = Some(json!({ "notes": notes }));
            }
        }
        r
    }
}

const FS_KINDS: &[&str] = &["ext4", "xfs", "btrfs", "swap"];

pub const FS_UUID: SetCheck = SetCheck {
    id: CheckId::FsUuid,
    absent: "no file system with a UUID",
    fields: &["block_ids"],
    read: |i| i.block_ids.iter().filter(|b| FS_KINDS.contains(&b.kind.as_str())).map(|b| format!("{}:{}", b.kind, b.uuid)).collect(),
    note: Some(|i| {
        let v: Vec<String> = i.block_ids.iter().filter(|b| FS_KINDS.contains(&b.kind.as_str())).map(|b| format!("{}={} {}", b.device, b.kind, b.uuid)).collect();
        (!v.is_empty()).then(|| v.join(", "))
    }),
};

pub const LVM_UUID: SetCheck = SetCheck {
    id: CheckId::LvmUuid,
    absent: "no LVM2 physical volume",
    fields: &["block_ids"],
    read: |i| {
        let pvs = i.block_ids.iter().filter(|b| b.kind == "lvm2_pv");
        pvs.flat_map(|b| std::iter::once(format!("pv:{}", b.uuid)).chain(b.vg.iter().map(|g| format!("vg:{g}")))).collect()
    },
    note: Some(|i| {
        let v: Vec<String> = i.block_ids.iter().filter(|b| b.kind == "lvm2_pv").map(|b| format!("{} PV {} VG {}", b.device, b.uuid, b.vg.as_deref().unwrap_or("(metadata not read)"))).collect();
        (!v.is_empty()).then(|| v.join(", "))
    }),
};

pub const LUKS_VOLUME_KEY: SetCheck = SetCheck {
    id: CheckId::LuksVolumeKey,
    absent: "no LUKS container",
    fields: &["block_ids"],
    read: |i| i.block_ids.iter().filter(|b| b.kind.starts_with("luks")).map(|b| format!("key:{}", b.key_digest.as_deref().unwrap_or("unreadable header"))).collect(),
    note: Some(|i| {
        let v: Vec<String> = i
            .block_ids
            .iter()
            .filter(|b| b.kind.starts_with("luks"))
            .map(|b| format!("{} {} UUID {}{}", b.device, b.kind, b.uuid, if b.active { ", open" } else { ", not open" }))
            .collect();
        (!v.is_empty()).then(|| v.join(", "))
    }),
};

pub const USER_CREDENTIALS: SetCheck = SetCheck {
    id: CheckId::UserCredentials,
    absent: "no password hash and no user's private SSH key",
    fields: &["user_credentials"],
    read: |i| i.credentials.iter().map(|c| format!("{}:{}:{}", c.kind, c.of, &c.sha256)).collect(),
    note: Some(|i| {
        let v: Vec<String> = i.credentials.iter().map(|c| format!("{} {}", c.kind.replace('_', " "), c.of)).collect();
        (!v.is_empty()).then(|| v.join(", "))
    }),
};

pub const MACHINE_ACCOUNT: SetCheck = SetCheck {
    id: CheckId::MachineAccount,
    absent: "no Kerberos keytab and no Samba secrets",
    fields: &["machine_account"],
    read: |i| i.machine_account.iter().map(|d| format!("{}:{}", d.path, d.sha256)).collect(),
    note: Some(|i| {
        let v: Vec<&str> = i.machine_account.iter().map(|d| d.path.as_str()).collect();
        (!v.is_empty()).then(|| v.join(", "))
    }),
};

pub const TPM_EK: SetCheck = SetCheck {
    id: CheckId::TpmEk,
    absent: "no TPM (/dev/tpmrm0)",
    fields: &["tpm_ek"],
    read: |i| i.tpm_ek.iter().map(|k| k.sha256.clone()).collect(),
    note: Some(|i| i.tpm_ek.as_ref().map(|k| format!("{} through {}", k.template, k.device))),
};
