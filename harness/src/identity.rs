//! Host-side identity newtypes, and the split at the heart of cloning: what a clone *copies*
//! from its snapshot (see [`crate::backend::Snapshot`]) versus what it must be *given fresh*
//! ([`HostIdentity`]). This mirrors Firecracker's `Persist` split of `State` from
//! `ConstructorArgs` (src/vmm/src/persist.rs).

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
    /// `None`: the VM has no vmgenid device.
    pub vmgenid: Option<VmGenId>,
}

impl HostIdentity {
    pub fn fresh(name: String, with_vmgenid: bool) -> Self {
        HostIdentity {
            name,
            uuid: SmbiosUuid(uuid::Uuid::new_v4()),
            mac: MacAddr::random(),
            disk_serial: DiskSerial::random(),
            vmgenid: with_vmgenid.then(|| VmGenId(uuid::Uuid::new_v4())),
        }
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

/// Prefix of every VM (QEMU process name, libvirt domain) that clonesafe creates.
pub const NAME_PREFIX: &str = "clonesafe-";

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
    fn fresh_identities_differ() {
        let a = HostIdentity::fresh("a".into(), true);
        let b = HostIdentity::fresh("b".into(), true);
        assert_ne!(a.uuid, b.uuid);
        assert_ne!(a.mac, b.mac);
        assert_ne!(a.disk_serial, b.disk_serial);
        assert_ne!(a.vmgenid, b.vmgenid);
        assert!(a.disk_serial.as_str().len() <= 20);
    }
}
