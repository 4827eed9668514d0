//! In-guest files that must differ per machine: systemd's random seed and credential secret,
//! D-Bus's copy of the machine-id (when it is a file of its own), and cloud-init's instance-id.
//! A file absent in every VM makes its check `skipped` (the guest has none); present in some VMs
//! only, it is an `error`.

use super::common::{error, from_values, skipped, Check, Evidence};
use clonesafe_metadata::{CheckId, CheckResult};
use clonesafe_protocol::{FileDigest, Identity};
use serde_json::json;

/// A check over one file per VM.
pub struct FileCheck {
    pub id: CheckId,
    pub path: &'static str,
    pub read: fn(&Identity) -> Option<FileView>,
}

/// What a check compares of a file, and what it says about it.
pub struct FileView {
    pub value: String,
    /// A symlink: not a file of its own.
    pub symlink: bool,
    pub note: Option<String>,
}

fn digest(d: &Option<FileDigest>) -> Option<FileView> {
    d.as_ref().map(|d| FileView {
        value: d.sha256.clone(),
        symlink: d.symlink,
        note: d.creditable.map(|c| if c { "creditable (user.random-seed-creditable set)".to_string() } else { "not creditable".to_string() }),
    })
}

impl Check for FileCheck {
    fn id(&self) -> CheckId {
        self.id
    }
    fn run(&self, ev: &Evidence) -> CheckResult {
        let obs = ev.observations.as_slice();
        let mut views = Vec::new();
        for o in obs {
            let Some(ident) = &o.identity else { return error(self.id, obs, format!("{}: no identity report", o.vm)) };
            if let Some((_, e)) = ident.errors.iter().find(|(f, _)| f == self.id.as_str()) {
                return error(self.id, obs, format!("{}: {e}", o.vm));
            }
            views.push((self.read)(ident));
        }
        let absent: Vec<&str> = obs.iter().zip(&views).filter(|(_, v)| v.is_none()).map(|(o, _)| o.vm.as_str()).collect();
        if absent.len() == obs.len() {
            return skipped(self.id, vec![json!(null); obs.len()], format!("{} is absent in every VM", self.path));
        }
        if !absent.is_empty() {
            return error(self.id, obs, format!("{} is present in some VMs only (absent in {})", self.path, absent.join(", ")));
        }
        let views: Vec<FileView> = views.into_iter().flatten().collect();
        if views.iter().all(|v| v.symlink) {
            return skipped(self.id, vec![json!(null); obs.len()], format!("{} is a symlink (to /etc/machine-id) in every VM, not a file of its own: machine_id covers it", self.path));
        }
        let notes: Vec<String> = obs.iter().zip(&views).filter_map(|(o, v)| v.note.as_ref().map(|n| format!("{}: {n}", o.vm))).collect();
        let mut r = from_values(self.id, obs, views.iter().map(|v| v.value.clone()).collect());
        if !notes.is_empty() {
            r.detail = format!("{}; {}", r.detail, notes.join("; "));
            r.evidence = Some(json!({ "path": self.path, "notes": notes }));
        }
        r
    }
}

pub const RANDOM_SEED: FileCheck = FileCheck { id: CheckId::RandomSeed, path: "/var/lib/systemd/random-seed", read: |i| digest(&i.random_seed) };
pub const CREDENTIAL_SECRET: FileCheck =
    FileCheck { id: CheckId::CredentialSecret, path: "/var/lib/systemd/credential.secret", read: |i| digest(&i.credential_secret) };
pub const DBUS_MACHINE_ID: FileCheck = FileCheck { id: CheckId::DbusMachineId, path: "/var/lib/dbus/machine-id", read: |i| digest(&i.dbus_machine_id) };
pub const CLOUD_INIT_INSTANCE_ID: FileCheck = FileCheck {
    id: CheckId::CloudInitInstanceId,
    path: "/var/lib/cloud/data/instance-id",
    read: |i| i.cloud_init_instance_id.as_ref().map(|v| FileView { value: v.clone(), symlink: false, note: None }),
};
pub const MACHINE_INFO: FileCheck = FileCheck { id: CheckId::MachineInfo, path: "/etc/machine-info", read: |i| digest(&i.machine_info) };
