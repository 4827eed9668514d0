//! Host-side identity newtypes: what every VM is *given fresh* by the host, never copied from a
//! snapshot (the `ConstructorArgs` half of Firecracker's `Persist` split, src/vmm/src/persist.rs;
//! the copied half is [`crate::backend::snapshot::Snapshot`]). Also the naming rule every VM,
//! domain and run directory follows, so that leftovers of a dead run can be found.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A locally administered unicast MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// A random MAC in QEMU's 52:54:00 prefix (locally administered, unicast).
    pub fn random() -> Self {
        let b = uuid::Uuid::new_v4().into_bytes();
        MacAddr([0x52, 0x54, 0x00, b[0], b[1], b[2]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl From<MacAddr> for String {
    fn from(m: MacAddr) -> String {
        m.to_string()
    }
}

impl TryFrom<String> for MacAddr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::str::FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(format!("invalid MAC address {s:?}"));
        }
        let mut b = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            if p.len() != 2 {
                return Err(format!("invalid MAC address {s:?}"));
            }
            b[i] = u8::from_str_radix(p, 16).map_err(|_| format!("invalid MAC address {s:?}"))?;
        }
        Ok(MacAddr(b))
    }
}

/// SMBIOS system UUID (`-uuid`, libvirt `<uuid>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SmbiosUuid(pub uuid::Uuid);

/// SMBIOS system serial number (`-smbios type=1,serial=`, libvirt `<sysinfo>` with
/// `<smbios mode='sysinfo'/>`): what the guest reads from /sys/class/dmi/id/product_serial.
/// Asset inventories and licence keys use it; KubeVirt gives each VM its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct SystemSerial(String);

impl SystemSerial {
    pub fn random() -> Self {
        SystemSerial(format!("CS-{}", uuid::Uuid::new_v4().simple().to_string()[..20].to_uppercase()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// VM generation ID (`-device vmgenid,guid=`, libvirt `<genid>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VmGenId(pub uuid::Uuid);

/// A virtio-blk serial (at most 20 bytes, what the guest reads from /sys/block/vdX/serial).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DiskSerial(String);

impl DiskSerial {
    pub fn random() -> Self {
        DiskSerial(format!("CS{}", &uuid::Uuid::new_v4().simple().to_string()[..16]))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SmbiosUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
impl fmt::Display for VmGenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What every VM is given fresh by the host: never copied from a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostIdentity {
    /// Unique per run and VM; also the QEMU `-name` / libvirt domain name.
    pub name: String,
    pub uuid: SmbiosUuid,
    pub mac: MacAddr,
    pub disk_serial: DiskSerial,
    /// The SMBIOS system serial (empty in records written before it existed).
    #[serde(default)]
    pub system_serial: SystemSerial,
    /// `None`: the VM has no vmgenid device.
    pub vmgenid: Option<VmGenId>,
}

impl HostIdentity {
    /// A fresh UUID, MAC and disk serial; no vmgenid (the `vmgenid` fix-up gives one).
    pub fn fresh(name: String) -> Self {
        HostIdentity { name, uuid: SmbiosUuid(uuid::Uuid::new_v4()), mac: MacAddr::random(), disk_serial: DiskSerial::random(), system_serial: SystemSerial::random(), vmgenid: None }
    }

    /// The same, with a fresh VM generation ID.
    pub fn fresh_with_vmgenid(name: String) -> Self {
        HostIdentity { vmgenid: Some(VmGenId::fresh()), ..Self::fresh(name) }
    }

    /// The report's record of this identity.
    pub fn record(&self, role: clonesafe_metadata::VmRole) -> clonesafe_metadata::VmRecord {
        clonesafe_metadata::VmRecord {
            role,
            name: self.name.clone(),
            uuid: self.uuid.to_string(),
            mac: self.mac.to_string(),
            disk_serial: self.disk_serial.as_str().to_string(),
            vmgenid: self.vmgenid.map(|g| g.to_string()),
            host: None,
        }
    }
}

impl VmGenId {
    pub fn fresh() -> Self {
        VmGenId(uuid::Uuid::new_v4())
    }
}

/// `n` bytes from the host kernel's CRNG (getrandom(2)), for the agent to credit in a clone.
pub fn host_entropy(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        let r = unsafe { libc::getrandom(b[filled..].as_mut_ptr().cast(), n - filled, 0) };
        if r > 0 {
            filled += r as usize;
        }
    }
    b
}

/// Prefix of every VM (QEMU process name, libvirt domain) that clonesafe creates. The pid of the
/// harness process that made it follows: `clonesafe-<pid>-<scenario>-<role><n>`.
pub const NAME_PREFIX: &str = "clonesafe-";

/// `clonesafe-<pid>-...` for this process.
pub fn run_prefix() -> String {
    format!("{NAME_PREFIX}{}-", std::process::id())
}

/// The harness pid in a clonesafe name, if it is one.
pub fn owner_of(name: &str) -> Option<u32> {
    name.strip_prefix(NAME_PREFIX)?.split('-').next()?.parse().ok()
}

/// True when `name` is a clonesafe name whose harness is neither this process nor alive: a
/// leftover of a run that was killed.
pub fn is_stale(name: &str) -> bool {
    owner_of(name).is_some_and(|pid| pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trips_and_rejects_garbage() {
        let m = MacAddr::random();
        assert_eq!(m.to_string().parse::<MacAddr>().unwrap(), m);
        assert_eq!(m.0[0] & 1, 0, "unicast");
        assert!("52:54:00:zz:00:01".parse::<MacAddr>().is_err());
        assert!("52:54:00:00:01".parse::<MacAddr>().is_err());
    }

    #[test]
    fn owners_are_parsed_from_names_only_when_they_are_ours() {
        assert_eq!(owner_of("clonesafe-123-naive-clone1"), Some(123));
        assert_eq!(owner_of("other-123"), None);
        assert_eq!(owner_of("clonesafe-x-1"), None);
        assert!(!is_stale(&format!("{}x", run_prefix())), "this process is alive");
        assert!(is_stale("clonesafe-4000000000-x"), "no such pid");
    }

    #[test]
    fn fresh_identities_differ() {
        let a = HostIdentity::fresh_with_vmgenid("a".into());
        let b = HostIdentity::fresh_with_vmgenid("b".into());
        assert_ne!(a.uuid, b.uuid);
        assert_ne!(a.mac, b.mac);
        assert_ne!(a.disk_serial, b.disk_serial);
        assert_ne!(a.vmgenid, b.vmgenid);
        assert!(a.disk_serial.as_str().len() <= 20);
    }
}
