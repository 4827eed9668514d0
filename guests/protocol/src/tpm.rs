//! The TPM 2.0 endorsement key, read the way `tpm2_createek -G ecc` makes it: TPM2_CreatePrimary
//! under the endorsement hierarchy with the TCG EK Credential Profile's default ECC template
//! (template L-2: NIST P-256, AES-128-CFB, the PolicySecret(TPM_RH_ENDORSEMENT) policy). A
//! primary key is derived from the hierarchy's seed and the template alone, so two TPMs that
//! hold one endorsement seed (a live clone migrates the swtpm state, seeds included) make the
//! same key, and two TPMs manufactured apart make different ones. Only the public area leaves
//! the guest, as a digest.
//!
//! Pure byte work, so the host's tests check it: the probe writes [`create_primary_ek`] to
//! /dev/tpmrm0 and hands the answer to [`ek_public`]. Layouts: TPM 2.0 Library Part 3
//! (TPM2_CreatePrimary, 24.1), Part 2 (TPMT_PUBLIC, TPMS_ECC_PARMS); the template: TCG EK
//! Credential Profile 2.0, B.3.4 (tpm2-tools lib/tpm2_createek.c uses the same).

/// TPM_ST_SESSIONS, TPM_CC_CreatePrimary, TPM_RH_ENDORSEMENT, TPM_RS_PW.
const ST_SESSIONS: u16 = 0x8002;
const ST_NO_SESSIONS: u16 = 0x8001;
const CC_CREATE_PRIMARY: u32 = 0x0000_0131;
const CC_FLUSH_CONTEXT: u32 = 0x0000_0165;
const RH_ENDORSEMENT: u32 = 0x4000_000B;
const RS_PW: u32 = 0x4000_0009;

/// The EK policy: PolicySecret(TPM_RH_ENDORSEMENT), SHA-256 (EK Credential Profile, B.3.2).
const EK_POLICY: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xB3, 0xF8, 0x1A, 0x90, 0xCC, 0x8D, 0x46, 0xA5, 0xD7, 0x24, 0xFD, 0x52, 0xD7, 0x6E, 0x06, 0x52, 0x0B, 0x64, 0xF2, 0xA1, 0xDA, 0x1B,
    0x33, 0x14, 0x69, 0xAA,
];

/// What the report says was read.
pub const EK_TEMPLATE: &str = "TCG EK template L-2 (ECC NIST P-256)";

/// The TPMT_PUBLIC of the ECC EK template: fixedTPM, fixedParent, sensitiveDataOrigin,
/// adminWithPolicy, restricted, decrypt; an empty (zero) point as `unique`.
fn ek_template() -> Vec<u8> {
    let mut t = Vec::new();
    t.extend(0x0023u16.to_be_bytes()); // TPM_ALG_ECC
    t.extend(0x000Bu16.to_be_bytes()); // nameAlg SHA-256
    t.extend(0x0003_00B2u32.to_be_bytes());
    t.extend(32u16.to_be_bytes());
    t.extend(EK_POLICY);
    t.extend(0x0006u16.to_be_bytes()); // symmetric: AES
    t.extend(128u16.to_be_bytes()); //    128 bits
    t.extend(0x0043u16.to_be_bytes()); //  CFB
    t.extend(0x0010u16.to_be_bytes()); // scheme: TPM_ALG_NULL
    t.extend(0x0003u16.to_be_bytes()); // curve: NIST P-256
    t.extend(0x0010u16.to_be_bytes()); // kdf: TPM_ALG_NULL
    for _ in 0..2 {
        t.extend(32u16.to_be_bytes());
        t.extend([0u8; 32]);
    }
    t
}

/// The TPM2_CreatePrimary command that makes the EK (empty endorsement authorization, as a
/// TPM that nobody took ownership of has).
pub fn create_primary_ek() -> Vec<u8> {
    let mut body = Vec::new();
    body.extend(RH_ENDORSEMENT.to_be_bytes());
    // Authorization area: one password session with an empty password.
    body.extend(9u32.to_be_bytes());
    body.extend(RS_PW.to_be_bytes());
    body.extend(0u16.to_be_bytes());
    body.push(0);
    body.extend(0u16.to_be_bytes());
    // inSensitive: no userAuth, no data.
    body.extend(4u16.to_be_bytes());
    body.extend([0u8; 4]);
    let t = ek_template();
    body.extend((t.len() as u16).to_be_bytes());
    body.extend(t);
    body.extend(0u16.to_be_bytes()); // outsideInfo
    body.extend(0u32.to_be_bytes()); // creationPCR: none
    command(ST_SESSIONS, CC_CREATE_PRIMARY, &body)
}

/// TPM2_FlushContext of `handle` (needed on /dev/tpm0; /dev/tpmrm0 flushes on close).
pub fn flush_context(handle: u32) -> Vec<u8> {
    command(ST_NO_SESSIONS, CC_FLUSH_CONTEXT, &handle.to_be_bytes())
}

fn command(tag: u16, code: u32, body: &[u8]) -> Vec<u8> {
    let mut c = Vec::with_capacity(10 + body.len());
    c.extend(tag.to_be_bytes());
    c.extend(((10 + body.len()) as u32).to_be_bytes());
    c.extend(code.to_be_bytes());
    c.extend(body);
    c
}

/// From a TPM2_CreatePrimary response: the object's handle and its public area (TPMT_PUBLIC,
/// whose `unique` is the EK's public point). Errors name the TPM's response code.
pub fn ek_public(resp: &[u8]) -> Result<(u32, Vec<u8>), String> {
    let be16 = |at: usize| resp.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let be32 = |at: usize| resp.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let size = be32(2).ok_or("a TPM response shorter than its header")? as usize;
    if size != resp.len() {
        return Err(format!("a TPM response of {} bytes says it has {size}", resp.len()));
    }
    let rc = be32(6).ok_or("no response code")?;
    if rc != 0 {
        return Err(format!("TPM2_CreatePrimary(endorsement) failed: TPM response code {rc:#x}"));
    }
    let handle = be32(10).ok_or("no object handle")?;
    // handle (4), parameterSize (4), then outPublic: a u16 size and the TPMT_PUBLIC.
    let n = be16(18).ok_or("no public area")? as usize;
    let public = resp.get(20..20 + n).ok_or("a public area past the response's end")?;
    if public.len() < 4 || public[..2] != [0x00, 0x23] {
        return Err("the TPM returned a public area that is not an ECC key".into());
    }
    Ok((handle, public.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_is_a_well_formed_create_primary() {
        let c = create_primary_ek();
        assert_eq!(u32::from_be_bytes(c[2..6].try_into().unwrap()) as usize, c.len());
        assert_eq!(&c[6..10], &CC_CREATE_PRIMARY.to_be_bytes());
        assert_eq!(&c[10..14], &RH_ENDORSEMENT.to_be_bytes());
        // The template is 2+2+4+34+12+68 = 122 bytes, announced as such.
        let t = ek_template();
        assert_eq!(t.len(), 122);
        let at = 14 + 4 + 9 + 6;
        assert_eq!(u16::from_be_bytes(c[at..at + 2].try_into().unwrap()) as usize, t.len());
        assert_eq!(c.len(), at + 2 + t.len() + 2 + 4);
    }

    #[test]
    fn reads_the_public_area_and_refuses_errors() {
        let public = {
            let mut p = ek_template();
            p[122 - 32..].fill(0xAB); // a "point"
            p
        };
        let mut body = Vec::new();
        body.extend(0x8000_0000u32.to_be_bytes());
        body.extend(200u32.to_be_bytes());
        body.extend((public.len() as u16).to_be_bytes());
        body.extend(&public);
        body.extend([0u8; 40]); // creation data etc., not read
        let mut r = Vec::new();
        r.extend(ST_SESSIONS.to_be_bytes());
        r.extend(((10 + body.len()) as u32).to_be_bytes());
        r.extend(0u32.to_be_bytes());
        r.extend(&body);
        assert_eq!(ek_public(&r), Ok((0x8000_0000, public.clone())));

        let mut failed = r[..10].to_vec();
        failed[2..6].copy_from_slice(&10u32.to_be_bytes());
        failed[6..10].copy_from_slice(&0x9a2u32.to_be_bytes());
        assert!(ek_public(&failed).unwrap_err().contains("0x9a2"));
        assert!(ek_public(&r[..r.len() - 1]).is_err(), "a truncated response");
        assert!(ek_public(&[0x80]).is_err());
    }
}
