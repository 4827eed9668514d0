//! The libvirt QEMU save-image format (libvirt `src/qemu/qemu_saveimage.h` and `.c`,
//! `virQEMUSaveDataWrite`), as written by `virsh save`, `virDomainSaveFlags` and external memory
//! snapshots. Only the header and the XML region are ever read or rewritten here; the QEMU
//! migration stream that follows is never copied or touched.
//!
//! ```text
//! offset 0   magic[16]      "LibvirtQemudSave" (complete) | "LibvirtQemudPart" (being written)
//!        16  u32 version    2 (1 = no cookie)
//!        20  u32 data_len   bytes of the data region below
//!        24  u32 was_running
//!        28  u32 compressed 0 = raw stream
//!        32  u32 cookieOffset  offset of the cookie in the data region (0 = none)
//!        36  u32 unused[14]
//!        92  data region, data_len bytes:
//!              domain XML, NUL  | cookie XML, NUL (at cookieOffset) | zero padding
//!            (libvirt leaves 64 KiB of padding on first write so the XML can grow)
//! 92+data_len  QEMU migration stream
//! ```
//! All integers are little-endian on x86 (libvirt writes host order).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

pub const MAGIC: &[u8; 16] = b"LibvirtQemudSave";
pub const MAGIC_PARTIAL: &[u8; 16] = b"LibvirtQemudPart";
pub const HEADER_LEN: usize = 92;
pub const MAX_VERSION: u32 = 2;
/// Refuse absurd data regions instead of allocating them (libvirt's own slack is 64 KiB).
pub const MAX_DATA_LEN: u32 = 64 << 20;
/// Deepest element nesting read from a domain XML. A 20,000-deep XML overflowed the stack of
/// `save-image show` (hardening issue 11); libvirt's domain XML nests under 20.
pub const MAX_XML_DEPTH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum SaveImageError {
    #[error("Not a libvirt save image: the file is {0} bytes, shorter than the {HEADER_LEN}-byte header")]
    TooShort(u64),
    #[error("Not a libvirt save image: bad magic {0:?}")]
    InvalidMagic(String),
    #[error("Save image is incomplete: libvirt was still writing it (magic LibvirtQemudPart)")]
    Incomplete,
    #[error("Unsupported save image version {0} (this reads versions 1 and 2)")]
    InvalidFormatVersion(u32),
    #[error("Invalid data length {data_len} (file is {file_len} bytes)")]
    InvalidDataLength { data_len: u32, file_len: u64 },
    #[error("Domain XML is not NUL-terminated inside the data region")]
    XmlNotTerminated,
    #[error("Cookie offset {cookie_offset} is outside the data region ({data_len} bytes) or inside the XML")]
    InvalidCookieOffset { cookie_offset: u32, data_len: u32 },
    #[error("Cookie is not NUL-terminated inside the data region")]
    CookieNotTerminated,
    #[error("The {0} is not valid UTF-8")]
    NotUtf8(&'static str),
    #[error("New XML needs {need} bytes but the image has room for {have}: it cannot be rewritten in place")]
    XmlTooLarge { need: usize, have: usize },
    #[error("The domain XML does not parse: {0}")]
    XmlInvalid(String),
    #[error("New XML contains a NUL byte")]
    XmlHasNul,
    #[error("Domain XML is nested {depth} elements deep; at most {MAX_XML_DEPTH} are read (libvirt's own are under 20)")]
    XmlTooDeep { depth: usize },
    #[error("The QEMU migration stream is missing: the file ends where it should start (offset {0})")]
    StreamMissing(u64),
    #[error("The QEMU migration stream does not start with QEMU's magic (QEVM, version 3): found {0}")]
    StreamBadMagic(String),
    #[error("The QEMU migration stream is cut: {0}")]
    StreamCut(String),
    #[error("Save image I/O failed")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Input(#[from] crate::input::InputError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub data_len: u32,
    pub was_running: u32,
    pub compressed: u32,
    pub cookie_offset: u32,
    /// The 14 unused words, kept so a rewrite preserves them.
    pub unused: [u32; 14],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveImage {
    pub header: Header,
    pub xml: String,
    pub cookie: Option<String>,
}

/// The data region's length a complete header gives, if it is one worth reading after it
/// (`parse` says what is wrong with the rest).
pub fn data_len(head: &[u8]) -> Option<u32> {
    (head.len() >= HEADER_LEN && &head[..16] == MAGIC).then(|| u32_at(head, 20)).filter(|d| *d > 0 && *d <= MAX_DATA_LEN)
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

impl SaveImage {
    /// Parse and validate the header and data region. `file_len` is the whole file's length.
    pub fn parse(head: &[u8], file_len: u64) -> Result<Self, SaveImageError> {
        if head.len() < HEADER_LEN || file_len < HEADER_LEN as u64 {
            return Err(SaveImageError::TooShort(file_len.min(head.len() as u64)));
        }
        let magic = &head[..16];
        if magic == MAGIC_PARTIAL {
            return Err(SaveImageError::Incomplete);
        }
        if magic != MAGIC {
            return Err(SaveImageError::InvalidMagic(String::from_utf8_lossy(magic).into_owned()));
        }
        let version = u32_at(head, 16);
        if version == 0 || version > MAX_VERSION {
            return Err(SaveImageError::InvalidFormatVersion(version));
        }
        let data_len = u32_at(head, 20);
        if data_len == 0 || data_len > MAX_DATA_LEN || HEADER_LEN as u64 + data_len as u64 > file_len {
            return Err(SaveImageError::InvalidDataLength { data_len, file_len });
        }
        let mut unused = [0u32; 14];
        for (i, u) in unused.iter_mut().enumerate() {
            *u = u32_at(head, 36 + 4 * i);
        }
        let header = Header {
            version,
            data_len,
            was_running: u32_at(head, 24),
            compressed: u32_at(head, 28),
            cookie_offset: if version >= 2 { u32_at(head, 32) } else { 0 },
            unused,
        };
        let end = HEADER_LEN + data_len as usize;
        if head.len() < end {
            return Err(SaveImageError::InvalidDataLength { data_len, file_len });
        }
        let data = &head[HEADER_LEN..end];
        let xml_end = data.iter().position(|&b| b == 0).ok_or(SaveImageError::XmlNotTerminated)?;
        let xml = std::str::from_utf8(&data[..xml_end]).map_err(|_| SaveImageError::NotUtf8("domain XML"))?.to_string();
        check_depth(&xml)?;
        let cookie = match header.cookie_offset {
            0 => None,
            off if (off as usize) <= xml_end || off >= data_len => {
                return Err(SaveImageError::InvalidCookieOffset { cookie_offset: off, data_len })
            }
            off => {
                let c = &data[off as usize..];
                let n = c.iter().position(|&b| b == 0).ok_or(SaveImageError::CookieNotTerminated)?;
                Some(std::str::from_utf8(&c[..n]).map_err(|_| SaveImageError::NotUtf8("cookie"))?.to_string())
            }
        };
        Ok(SaveImage { header, xml, cookie })
    }

    /// Read the header and data region of a file (not the stream).
    pub fn read(path: &Path) -> Result<Self, SaveImageError> {
        let mut f = crate::input::open_regular(path)?;
        let file_len = f.metadata()?.len();
        let mut head = vec![0u8; HEADER_LEN.min(file_len as usize)];
        f.read_exact(&mut head)?;
        if let Some(data_len) = data_len(&head) {
            if HEADER_LEN as u64 + data_len as u64 <= file_len {
                let mut rest = vec![0u8; data_len as usize];
                f.read_exact(&mut rest)?;
                head.extend_from_slice(&rest);
            }
        }
        Self::parse(&head, file_len)
    }

    /// Where the QEMU migration stream starts.
    pub fn stream_offset(&self) -> u64 {
        HEADER_LEN as u64 + self.header.data_len as u64
    }

    /// Header and data region with `xml` in place of the domain XML: exactly
    /// `stream_offset()` bytes, so the stream after it is untouched.
    pub fn encode_with_xml(&self, xml: &str) -> Result<Vec<u8>, SaveImageError> {
        if xml.as_bytes().contains(&0) {
            return Err(SaveImageError::XmlHasNul);
        }
        let xml_len = xml.len() + 1;
        let cookie_len = self.cookie.as_ref().map(|c| c.len() + 1).unwrap_or(0);
        let have = self.header.data_len as usize;
        if xml_len + cookie_len > have {
            return Err(SaveImageError::XmlTooLarge { need: xml_len + cookie_len, have });
        }
        let mut out = Vec::with_capacity(HEADER_LEN + have);
        out.extend_from_slice(MAGIC);
        let h = &self.header;
        let cookie_offset = if self.cookie.is_some() { xml_len as u32 } else { 0 };
        for v in [h.version, h.data_len, h.was_running, h.compressed, cookie_offset] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for u in h.unused {
            out.extend_from_slice(&u.to_le_bytes());
        }
        out.extend_from_slice(xml.as_bytes());
        out.push(0);
        if let Some(c) = &self.cookie {
            out.extend_from_slice(c.as_bytes());
            out.push(0);
        }
        out.resize(HEADER_LEN + have, 0);
        Ok(out)
    }

    /// Rewrite the domain XML of the image at `path` in place, within its existing data region.
    /// Refuses (changing nothing) if it does not fit.
    pub fn rewrite_xml(path: &Path, xml: &str) -> Result<SaveImage, SaveImageError> {
        let img = Self::read(path)?;
        let bytes = img.encode_with_xml(xml)?;
        let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.seek(SeekFrom::Start(0))?;
        f.write_all(&bytes)?;
        f.sync_data()?;
        Ok(SaveImage { xml: xml.to_string(), header: Header { cookie_offset: if img.cookie.is_some() { xml.len() as u32 + 1 } else { 0 }, ..img.header }, cookie: img.cookie })
    }
}

/// Refuse XML nested deeper than [`MAX_XML_DEPTH`], before any XML parser sees it. A cheap
/// upper bound: every `<name` opens a level and every `</` or `/>` closes one; comments,
/// processing instructions and declarations (`<!`, `<?`) do not count.
pub fn check_depth(xml: &str) -> Result<(), SaveImageError> {
    let b = xml.as_bytes();
    let (mut depth, mut max) = (0usize, 0usize);
    for i in 0..b.len() {
        match (b[i], b.get(i + 1)) {
            (b'<', Some(b'/')) => depth = depth.saturating_sub(1),
            (b'<', Some(b'!' | b'?')) | (b'<', None) => {}
            (b'<', Some(_)) => {
                depth += 1;
                max = max.max(depth);
            }
            (b'/', Some(b'>')) => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    if max > MAX_XML_DEPTH {
        return Err(SaveImageError::XmlTooDeep { depth: max });
    }
    Ok(())
}

/// What could be checked of the QEMU migration stream after the data region, without reading
/// it all: its magic, and a plausible end.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StreamCheck {
    pub stream_len: u64,
    /// How the stream ends: "EOF and the VM description" or "EOF".
    pub ends_with: String,
    /// What this check cannot see.
    pub unchecked: &'static str,
}

const QEMU_VM_FILE_MAGIC: &[u8; 8] = b"QEVM\0\0\0\x03";
// migration/savevm.c (QEMU 7.2).
const QEMU_VM_EOF: u8 = 0x00;
const QEMU_VM_VMDESCRIPTION: u8 = 0x06;
const QEMU_VM_SECTION_FOOTER: u8 = 0x7e;
/// How much of the stream's end is read to find its last section.
const TAIL: u64 = 1 << 20;

/// Check the stream after the data region of the image at `path`: it must start with QEMU's
/// file magic and end the way QEMU 7.2 ends a precopy stream (`migration/savevm.c`,
/// `qemu_savevm_state_complete_precopy_non_iterable`): the last section's footer
/// (`QEMU_VM_SECTION_FOOTER`, a big-endian u32 section id), a `QEMU_VM_EOF` (0x00) byte, then,
/// unless the machine suppresses it, `QEMU_VM_VMDESCRIPTION`, a big-endian u32 length and that
/// much JSON. Measured on a `virsh save` of the tiny guest (libvirt 9.0, QEMU 7.2): the file
/// ends `7e 00 00 00 2f 00 06 00 01 90 f7` and 102,647 bytes of JSON. A cut inside the device
/// sections in between is not detected (the sections are not parsed).
pub fn check_stream(path: &Path, img: &SaveImage) -> Result<StreamCheck, SaveImageError> {
    use std::io::{Read, Seek, SeekFrom};
    if img.header.compressed != 0 {
        return Ok(StreamCheck { stream_len: 0, ends_with: "not checked: the stream is compressed".into(), unchecked: "everything: a compressed stream is not decoded" });
    }
    let mut f = crate::input::open_regular(path)?;
    let file_len = f.metadata()?.len();
    let start = img.stream_offset();
    if file_len <= start {
        return Err(SaveImageError::StreamMissing(start));
    }
    let stream_len = file_len - start;
    let mut magic = Vec::with_capacity(8);
    f.seek(SeekFrom::Start(start))?;
    Read::by_ref(&mut f).take(8).read_to_end(&mut magic)?;
    if magic.as_slice() != QEMU_VM_FILE_MAGIC {
        return Err(SaveImageError::StreamBadMagic(format!("{magic:02x?}")));
    }
    let tail_start = file_len.saturating_sub(TAIL).max(start + 8);
    let mut tail = Vec::new();
    f.seek(SeekFrom::Start(tail_start))?;
    f.take(TAIL).read_to_end(&mut tail)?;
    let ends_with = stream_end(&tail).ok_or_else(|| {
        SaveImageError::StreamCut(format!(
            "its {stream_len} bytes do not end with a section footer and QEMU_VM_EOF, nor with those followed by the VM description; the image was truncated or is still being written"
        ))
    })?;
    Ok(StreamCheck { stream_len, ends_with: ends_with.into(), unchecked: "the device and RAM sections between the magic and the end are not parsed, so damage inside them is not detected" })
}

/// How `tail` (the last bytes of a stream) ends, if QEMU could have ended it so.
fn stream_end(tail: &[u8]) -> Option<&'static str> {
    let n = tail.len();
    // A section footer and EOF end at `end`: 7e <be32 id> 00.
    let footer_eof_at = |end: usize| end >= 6 && tail[end - 1] == QEMU_VM_EOF && tail[end - 6] == QEMU_VM_SECTION_FOOTER;
    // ... then VMDESCRIPTION, be32 len, and JSON of len bytes reaching the end exactly.
    if tail.last() == Some(&b'}') {
        for p in (6..n.saturating_sub(5)).rev() {
            if tail[p] == QEMU_VM_VMDESCRIPTION && footer_eof_at(p) {
                let len = u32::from_be_bytes(tail[p + 1..p + 5].try_into().expect("4 bytes")) as usize;
                if p + 5 + len == n && tail[p + 5] == b'{' {
                    return Some("EOF and the VM description");
                }
            }
        }
    }
    footer_eof_at(n).then_some("EOF")
}

/// The aliases (`net0`, ...) of a domain XML's interfaces, in order.
pub fn interface_aliases(xml: &str) -> Vec<String> {
    if check_depth(xml).is_err() {
        return vec![];
    }
    let Ok(doc) = roxmltree::Document::parse(xml) else { return vec![] };
    doc.descendants()
        .filter(|n| n.has_tag_name("interface"))
        .filter_map(|i| i.children().find(|c| c.has_tag_name("alias")).and_then(|a| a.attribute("name")).map(str::to_string))
        .collect()
}

/// What `clonesafe save-image show` reports about a domain XML.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DomainSummary {
    pub name: Option<String>,
    pub uuid: Option<String>,
    pub macs: Vec<String>,
    pub genid: Option<String>,
}

impl DomainSummary {
    pub fn of(xml: &str) -> Result<Self, SaveImageError> {
        check_depth(xml)?;
        let doc = roxmltree::Document::parse(xml).map_err(|e| SaveImageError::XmlInvalid(e.to_string()))?;
        let root = doc.root_element();
        let child_text = |n: &str| root.children().find(|c| c.has_tag_name(n)).and_then(|c| c.text()).map(|t| t.trim().to_string());
        let macs = root
            .descendants()
            .filter(|n| n.has_tag_name("mac") && n.parent().is_some_and(|p| p.has_tag_name("interface")))
            .filter_map(|n| n.attribute("address").map(str::to_string))
            .collect();
        Ok(DomainSummary { name: child_text("name"), uuid: child_text("uuid"), macs, genid: child_text("genid") })
    }
}

#[cfg(test)]
mod tests;
