//! The identities that are one string per VM, read by the probe and compared as they are:
//! `mac`, `smbios_uuid`, `disk_serial`, `machine_id`, `boot_id`, `hostname`, `ssh_host_keys`
//! and `userspace_rng` (the first PRNG output after resume).

use super::common::{error, from_sets, from_values, Check, Evidence};
use crate::probes::Observation;
use clonesafe_metadata::{CheckId, CheckResult};
use clonesafe_protocol::Identity;

/// How a check's value is read from the guest's identity report.
pub enum Read {
    /// One field.
    One(fn(&Identity) -> &Option<String>),
    /// Several values (every NIC, disk or key), compared as sets: two VMs that share any one
    /// of them share the identity.
    Many(fn(&Identity) -> Vec<String>),
    /// Not from the identity report: the first userspace PRNG sample.
    UserspaceRng,
}

/// A check whose value is one string per VM.
pub struct FieldCheck {
    pub id: CheckId,
    /// The field's name in the probe's report (its errors are keyed by it).
    pub field: &'static str,
    pub read: Read,
}

impl FieldCheck {
    /// The VM's values (one, or a set), or why there are none.
    fn value(&self, o: &Observation) -> Result<Vec<String>, String> {
        if let Read::UserspaceRng = self.read {
            return o.userspace_rng.first().map(|s| vec![s.hex.clone()]).ok_or_else(|| "no userspace PRNG sample".into());
        }
        let i = o.identity.as_ref().ok_or("no identity report")?;
        // The guest's own reason for a field it could not read.
        let guest_error = || i.errors.iter().find(|(f, _)| f == self.field).map(|(_, e)| e.clone()).unwrap_or_else(|| format!("the guest reported no {}", self.field));
        match &self.read {
            Read::One(get) => get(i).clone().map(|v| vec![v]).ok_or_else(guest_error),
            Read::Many(get) => Some(get(i)).filter(|v| !v.is_empty()).ok_or_else(guest_error),
            Read::UserspaceRng => unreachable!("handled above"),
        }
    }
}

impl Check for FieldCheck {
    fn id(&self) -> CheckId {
        self.id
    }
    fn run(&self, ev: &Evidence) -> CheckResult {
        let obs = ev.observations.as_slice();
        let mut values = Vec::with_capacity(obs.len());
        for o in obs {
            match self.value(o) {
                Ok(v) => values.push(v),
                Err(why) => return error(self.id, obs, format!("{}: {why}", o.vm)),
            }
        }
        match self.read {
            Read::Many(_) => from_sets(self.id, obs, values),
            _ => from_values(self.id, obs, values.into_iter().map(|mut v| v.remove(0)).collect()),
        }
    }
}

pub const MAC: FieldCheck = FieldCheck { id: CheckId::Mac, field: "nics", read: Read::Many(|i| i.nics.iter().map(|n| format!("{}={}", n.name, n.mac)).collect()) };
/// A disk without a serial (an empty /sys/block/*/serial, such as the NoCloud seed disk) has no
/// serial identity to share, so it is left out: two empty serials are not one identity (the first
/// Debian reference run counted them as one and called `disk_serial` duplicate).
pub const DISK_SERIAL: FieldCheck = FieldCheck {
    id: CheckId::DiskSerial,
    field: "disks",
    read: Read::Many(|i| i.disks.iter().filter(|d| !d.serial.is_empty()).map(|d| format!("{}={}", d.name, d.serial)).collect()),
};
pub const SSH_HOST_KEYS: FieldCheck =
    FieldCheck { id: CheckId::SshHostKeys, field: "ssh_host_keys", read: Read::Many(|i| i.ssh_host_keys.iter().map(|k| k.fingerprint.clone()).collect()) };
pub const SMBIOS_UUID: FieldCheck = FieldCheck { id: CheckId::SmbiosUuid, field: "product_uuid", read: Read::One(|i| &i.product_uuid) };
pub const SMBIOS_SERIAL: FieldCheck = FieldCheck { id: CheckId::SmbiosSerial, field: "product_serial", read: Read::One(|i| &i.product_serial) };
pub const MACHINE_ID: FieldCheck = FieldCheck { id: CheckId::MachineId, field: "machine_id", read: Read::One(|i| &i.machine_id) };
pub const BOOT_ID: FieldCheck = FieldCheck { id: CheckId::BootId, field: "boot_id", read: Read::One(|i| &i.boot_id) };
pub const HOSTNAME: FieldCheck = FieldCheck { id: CheckId::Hostname, field: "hostname", read: Read::One(|i| &i.hostname) };
pub const USERSPACE_RNG: FieldCheck = FieldCheck { id: CheckId::UserspaceRng, field: "userspace_rng", read: Read::UserspaceRng };
