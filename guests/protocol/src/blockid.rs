//! On-disk identities a block device carries in its first blocks, read like `blkid` does: the
//! file system UUID (ext2/3/4, XFS, Btrfs, swap), an LVM2 physical volume's UUID and its volume
//! group's, and a LUKS container's UUID with a digest of its volume-key digest. Clones made from
//! one disk carry all of them unchanged (virt-sysprep's `fs-uuids` and `lvm-uuids` operations exist
//! for that, and are not among its defaults; systemd's docs/BUILDING_IMAGES.md warns that an
//! encrypted volume made at image build gives every machine one volume key).
//!
//! Pure functions over bytes the probe read, so the harness tests them on the host; every offset
//! is bounds-checked (the bytes come from a disk the guest controls).

use serde::{Deserialize, Serialize};

/// How many bytes of a device the probe reads: Btrfs's superblock is at 64 KiB, and an LVM2
/// volume group's first metadata text usually sits a few KiB in.
pub const READ_BYTES: usize = 72 * 1024;

/// What one block device says it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockId {
    /// The kernel's name for the device (`vda1`, `loop0`, `dm-0`).
    pub device: String,
    /// `ext4` (any of ext2/3/4), `xfs`, `btrfs`, `swap`, `luks1`, `luks2`, `lvm2_pv`.
    pub kind: String,
    /// The file system UUID, the LUKS UUID or the PV UUID, as the tools print it.
    pub uuid: String,
    /// LVM2: the volume group's name and UUID from its metadata text (`name/uuid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vg: Option<String>,
    /// LUKS: SHA-256 over the header's volume-key digest and its salt (LUKS1 `mk-digest`,
    /// LUKS2 `digests`). Two headers with the same value unlock to the same volume key; the key
    /// itself is never read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_digest: Option<String>,
    /// LUKS: a dm-crypt mapping of this device is open (`/sys/block/dm-*/dm/uuid` names its UUID).
    #[serde(default)]
    pub active: bool,
}

fn at<const N: usize>(b: &[u8], off: usize) -> Option<[u8; N]> {
    b.get(off..off.checked_add(N)?)?.try_into().ok()
}
fn le16(b: &[u8], off: usize) -> Option<u16> {
    at::<2>(b, off).map(u16::from_le_bytes)
}
fn le32(b: &[u8], off: usize) -> Option<u32> {
    at::<4>(b, off).map(u32::from_le_bytes)
}
fn le64(b: &[u8], off: usize) -> Option<u64> {
    at::<8>(b, off).map(u64::from_le_bytes)
}
fn be64(b: &[u8], off: usize) -> Option<u64> {
    at::<8>(b, off).map(u64::from_be_bytes)
}

/// A 16-byte UUID in the usual 8-4-4-4-12 form.
fn uuid16(u: [u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A printable, NUL-terminated string field, or None.
fn cstr(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    let s = std::str::from_utf8(&b[..end]).ok()?;
    (!s.is_empty() && s.chars().all(|c| c.is_ascii_graphic())).then(|| s.to_string())
}

/// What the first [`READ_BYTES`] of a device say it is (`device` left empty), or None.
pub fn identify(b: &[u8]) -> Option<BlockId> {
    let id = |kind: &str, uuid: String| BlockId { device: String::new(), kind: kind.into(), uuid, vg: None, key_digest: None, active: false };
    // LUKS: "LUKS\xba\xbe", a big-endian version, the UUID at 168 in both versions (cryptsetup's
    // luks1 on-disk format; LUKS2 docs/on-disk-format-luks2.pdf, struct luks2_hdr_disk).
    if b.get(..6) == Some(b"LUKS\xba\xbe") {
        let version = u16::from_be_bytes(at::<2>(b, 6)?);
        let uuid = cstr(b.get(168..208)?)?;
        return match version {
            1 => Some(BlockId { key_digest: Some(sha256_hex(&[b.get(112..168)?])), ..id("luks1", uuid) }),
            2 => {
                let hdr_size = usize::try_from(be64(b, 8)?).ok()?;
                let json = b.get(4096..hdr_size.min(b.len()))?;
                let end = json.iter().position(|&c| c == 0).unwrap_or(json.len());
                let v: serde_json::Value = serde_json::from_slice(&json[..end]).ok()?;
                // Each digest's salt and value, in key order (serde_json's map is ordered).
                let mut parts: Vec<Vec<u8>> = Vec::new();
                for (_, d) in v.get("digests")?.as_object()? {
                    for f in ["type", "hash", "salt", "digest"] {
                        parts.push(d.get(f).and_then(|x| x.as_str()).unwrap_or("").as_bytes().to_vec());
                    }
                }
                let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
                Some(BlockId { key_digest: (!refs.is_empty()).then(|| sha256_hex(&refs)), ..id("luks2", uuid) })
            }
            _ => None,
        };
    }
    // LVM2: "LABELONE" in one of the first four sectors (lib/format_text/layout.h).
    if let Some(pv) = lvm2(b) {
        return Some(pv);
    }
    // ext2/3/4: the superblock at 1024, magic 0xEF53 at 0x38, s_uuid at 0x68.
    if le16(b, 1024 + 0x38) == Some(0xEF53) {
        return Some(id("ext4", uuid16(at::<16>(b, 1024 + 0x68)?)));
    }
    // XFS: "XFSB", sb_uuid at 32.
    if b.get(..4) == Some(b"XFSB") {
        return Some(id("xfs", uuid16(at::<16>(b, 32)?)));
    }
    // Btrfs: the superblock at 64 KiB, magic "_BHRfS_M" at 0x40, fsid at 0x20.
    if b.get(0x10040..0x10048) == Some(b"_BHRfS_M") {
        return Some(id("btrfs", uuid16(at::<16>(b, 0x10020)?)));
    }
    // Linux swap (4 KiB pages): "SWAPSPACE2" ends the first page, the UUID follows
    // version, last_page and nr_badpages at 1024.
    if b.get(4086..4096) == Some(b"SWAPSPACE2") {
        return Some(id("swap", uuid16(at::<16>(b, 1024 + 12)?)));
    }
    None
}

/// LVM's 32-character ids in the 6-4-4-4-4-4-6 form `pvs` prints.
fn lvm_id(raw: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(raw).ok()?;
    if s.len() != 32 || !s.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    let cuts = [6, 4, 4, 4, 4, 4, 6];
    let mut out = Vec::new();
    let mut i = 0;
    for n in cuts {
        out.push(&s[i..i + n]);
        i += n;
    }
    Some(out.join("-"))
}

fn lvm2(b: &[u8]) -> Option<BlockId> {
    let label = (0..4).map(|s| s * 512).find(|&o| b.get(o..o + 8) == Some(b"LABELONE") && b.get(o + 24..o + 32) == Some(b"LVM2 001"))?;
    let pvh = label + usize::try_from(le32(b, label + 20)?).ok()?;
    let uuid = lvm_id(b.get(pvh..pvh + 32)?)?;
    let mut pv = BlockId { device: String::new(), kind: "lvm2_pv".into(), uuid, vg: None, key_digest: None, active: false };
    // After the UUID and device size: data areas, a zero entry, metadata areas, a zero entry.
    let mut off = pvh + 40;
    while le64(b, off)? != 0 {
        off += 16;
    }
    off += 16;
    let mda = usize::try_from(le64(b, off)?).ok()?;
    if mda == 0 || b.get(mda + 4..mda + 20) != Some(b" LVM2 x[5A%r0N*>") {
        return Some(pv);
    }
    // mda_header: checksum, magic, version, start, size, then raw_locn {offset, size, ...}.
    let text_at = mda.checked_add(usize::try_from(le64(b, mda + 40)?).ok()?)?;
    let text_len = usize::try_from(le64(b, mda + 48)?).ok()?.min(16 * 1024);
    if let Some(text) = b.get(text_at..text_at.saturating_add(text_len).min(b.len())) {
        let text = String::from_utf8_lossy(text);
        let name = text.split_whitespace().next().filter(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c)));
        let vg_id = text.split("id = \"").nth(1).and_then(|r| r.split('"').next()).filter(|i| i.len() == 38 && i.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if let (Some(n), Some(i)) = (name, vg_id) {
            pv.vg = Some(format!("{n}/{i}"));
        }
    }
    Some(pv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blank() -> Vec<u8> {
        vec![0u8; READ_BYTES]
    }

    #[test]
    fn ext4_xfs_btrfs_swap() {
        let mut b = blank();
        b[1024 + 0x38..1024 + 0x3a].copy_from_slice(&0xEF53u16.to_le_bytes());
        b[1024 + 0x68..1024 + 0x78].copy_from_slice(&[0x11; 16]);
        let e = identify(&b).unwrap();
        assert_eq!((e.kind.as_str(), e.uuid.as_str()), ("ext4", "11111111-1111-1111-1111-111111111111"));
        let mut b = blank();
        b[..4].copy_from_slice(b"XFSB");
        b[32..48].copy_from_slice(&[0xab; 16]);
        assert_eq!(identify(&b).unwrap().kind, "xfs");
        let mut b = blank();
        b[0x10040..0x10048].copy_from_slice(b"_BHRfS_M");
        assert_eq!(identify(&b).unwrap().kind, "btrfs");
        let mut b = blank();
        b[4086..4096].copy_from_slice(b"SWAPSPACE2");
        assert_eq!(identify(&b).unwrap().kind, "swap");
        assert_eq!(identify(&blank()), None);
        // Short or hostile input never panics.
        assert_eq!(identify(&b[..100]), None);
        assert_eq!(identify(b"LUKS\xba\xbe\x00\x02"), None);
    }

    #[test]
    fn luks2_digest_follows_the_volume_key_digest_only() {
        let mk = |salt: &str, uuid: &str| {
            let mut b = blank();
            b[..6].copy_from_slice(b"LUKS\xba\xbe");
            b[6..8].copy_from_slice(&2u16.to_be_bytes());
            b[8..16].copy_from_slice(&16384u64.to_be_bytes());
            b[168..168 + uuid.len()].copy_from_slice(uuid.as_bytes());
            let json = format!(r#"{{"keyslots":{{}},"digests":{{"0":{{"type":"pbkdf2","hash":"sha256","salt":"{salt}","digest":"Zm9v"}}}}}}"#);
            b[4096..4096 + json.len()].copy_from_slice(json.as_bytes());
            b
        };
        let a = identify(&mk("c2FsdA==", "0b3c0c2e-0000-4000-8000-000000000001")).unwrap();
        assert_eq!(a.kind, "luks2");
        assert_eq!(a.uuid, "0b3c0c2e-0000-4000-8000-000000000001");
        let same_key = identify(&mk("c2FsdA==", "0b3c0c2e-0000-4000-8000-000000000002")).unwrap();
        assert_eq!(a.key_digest, same_key.key_digest, "a new UUID on the same key is the same key");
        let other = identify(&mk("b3RoZXI=", "0b3c0c2e-0000-4000-8000-000000000001")).unwrap();
        assert_ne!(a.key_digest, other.key_digest);
    }

    #[test]
    fn lvm2_pv_and_vg() {
        let mut b = blank();
        let label = 512;
        b[label..label + 8].copy_from_slice(b"LABELONE");
        b[label + 20..label + 24].copy_from_slice(&32u32.to_le_bytes());
        b[label + 24..label + 32].copy_from_slice(b"LVM2 001");
        let pvh = label + 32;
        b[pvh..pvh + 32].copy_from_slice(b"AbCdEf0123456789AbCdEf0123456789");
        // one data area, terminator, one metadata area at 4096
        b[pvh + 40..pvh + 48].copy_from_slice(&1048576u64.to_le_bytes());
        b[pvh + 72..pvh + 80].copy_from_slice(&4096u64.to_le_bytes());
        b[4096 + 4..4096 + 20].copy_from_slice(b" LVM2 x[5A%r0N*>");
        b[4096 + 40..4096 + 48].copy_from_slice(&512u64.to_le_bytes());
        let text = "hazards {\nid = \"Qw3rty-abcd-efgh-ijkl-mnop-qrst-uvwxyz\"\nseqno = 1\n";
        b[4096 + 48..4096 + 56].copy_from_slice(&(text.len() as u64).to_le_bytes());
        b[4608..4608 + text.len()].copy_from_slice(text.as_bytes());
        let pv = identify(&b).unwrap();
        assert_eq!(pv.kind, "lvm2_pv");
        assert_eq!(pv.uuid, "AbCdEf-0123-4567-89Ab-CdEf-0123-456789");
        assert_eq!(pv.vg.as_deref(), Some("hazards/Qw3rty-abcd-efgh-ijkl-mnop-qrst-uvwxyz"));
    }
}
