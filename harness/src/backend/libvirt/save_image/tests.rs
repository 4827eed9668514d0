use super::*;
use proptest::prelude::*;

fn image(xml: &str, cookie: Option<&str>, slack: usize, stream: &[u8]) -> Vec<u8> {
    let data_len = xml.len() + 1 + cookie.map(|c| c.len() + 1).unwrap_or(0) + slack;
    let mut b = Vec::new();
    b.extend_from_slice(MAGIC);
    let cookie_off = if cookie.is_some() { xml.len() as u32 + 1 } else { 0 };
    for v in [2u32, data_len as u32, 1, 0, cookie_off] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&[0u8; 56]);
    b.extend_from_slice(xml.as_bytes());
    b.push(0);
    if let Some(c) = cookie {
        b.extend_from_slice(c.as_bytes());
        b.push(0);
    }
    b.resize(HEADER_LEN + data_len, 0);
    b.extend_from_slice(stream);
    b
}

const XML: &str = "<domain type='qemu'><name>a</name><uuid>u-1</uuid><genid>g-1</genid><devices><interface type='user'><mac address='52:54:00:00:00:01'/></interface></devices></domain>";

#[test]
fn parses_every_field() {
    let b = image(XML, Some("<qemu-migration/>"), 65536, b"QEVM");
    let img = SaveImage::parse(&b, b.len() as u64).unwrap();
    assert_eq!(img.header.version, 2);
    assert_eq!(img.header.was_running, 1);
    assert_eq!(img.xml, XML);
    assert_eq!(img.cookie.as_deref(), Some("<qemu-migration/>"));
    assert_eq!(&b[img.stream_offset() as usize..], b"QEVM");
    let s = DomainSummary::of(&img.xml).unwrap();
    assert_eq!(s.name.as_deref(), Some("a"));
    assert_eq!(s.uuid.as_deref(), Some("u-1"));
    assert_eq!(s.genid.as_deref(), Some("g-1"));
    assert_eq!(s.macs, vec!["52:54:00:00:00:01"]);
}

#[test]
fn named_errors_for_each_corruption() {
    let good = image(XML, Some("<c/>"), 100, b"S");
    let p = |b: &[u8]| SaveImage::parse(b, b.len() as u64).unwrap_err();
    assert!(matches!(p(&good[..50]), SaveImageError::TooShort(50)));
    let mut b = good.clone();
    b[..16].copy_from_slice(MAGIC_PARTIAL);
    assert!(matches!(p(&b), SaveImageError::Incomplete));
    b[..16].copy_from_slice(b"NotASaveImage!!!");
    assert!(matches!(p(&b), SaveImageError::InvalidMagic(_)));
    let mut b = good.clone();
    b[16..20].copy_from_slice(&7u32.to_le_bytes());
    assert!(matches!(p(&b), SaveImageError::InvalidFormatVersion(7)));
    let mut b = good.clone();
    b[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(p(&b), SaveImageError::InvalidDataLength { .. }));
    let mut b = good.clone();
    b[32..36].copy_from_slice(&3u32.to_le_bytes());
    assert!(matches!(p(&b), SaveImageError::InvalidCookieOffset { .. }));
    // XML filling the whole region with no NUL.
    let mut b = image("x", None, 0, b"");
    b[HEADER_LEN + 1] = b'y';
    assert!(matches!(p(&b), SaveImageError::XmlNotTerminated));
}

#[test]
fn rewrite_in_place_keeps_the_stream_and_refuses_what_does_not_fit() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("img");
    let stream: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    std::fs::write(&f, image(XML, Some("<c/>"), 64, &stream)).unwrap();
    let bigger = XML.replace("<name>a</name>", "<name>a-longer-name</name>");
    let img = SaveImage::rewrite_xml(&f, &bigger).unwrap();
    let back = SaveImage::read(&f).unwrap();
    assert_eq!(back, img);
    assert_eq!(back.xml, bigger);
    assert_eq!(back.cookie.as_deref(), Some("<c/>"));
    let bytes = std::fs::read(&f).unwrap();
    assert_eq!(&bytes[back.stream_offset() as usize..], &stream[..]);
    let huge = XML.replace("<name>a</name>", &format!("<name>{}</name>", "n".repeat(200)));
    let before = std::fs::read(&f).unwrap();
    assert!(matches!(SaveImage::rewrite_xml(&f, &huge), Err(SaveImageError::XmlTooLarge { .. })));
    assert_eq!(std::fs::read(&f).unwrap(), before, "a refused rewrite changes nothing");
}

proptest! {
    /// Encoding any XML that fits, then parsing, gives back that XML, the cookie and the stream.
    #[test]
    fn round_trip(xml in "[ -~]{1,300}", cookie in proptest::option::of("[ -~]{0,50}"), slack in 0usize..200, new in "[ -~]{1,300}", stream in prop::collection::vec(any::<u8>(), 0..64)) {
        let b = image(&xml, cookie.as_deref(), slack, &stream);
        let img = SaveImage::parse(&b, b.len() as u64).unwrap();
        prop_assert_eq!(&img.xml, &xml);
        prop_assert_eq!(img.cookie.as_deref(), cookie.as_deref());
        match img.encode_with_xml(&new) {
            Ok(region) => {
                prop_assert_eq!(region.len() as u64, img.stream_offset());
                let mut whole = region;
                whole.extend_from_slice(&stream);
                let again = SaveImage::parse(&whole, whole.len() as u64).unwrap();
                prop_assert_eq!(&again.xml, &new);
                prop_assert_eq!(again.cookie.as_deref(), cookie.as_deref());
                prop_assert_eq!(&again.header.data_len, &img.header.data_len);
                prop_assert_eq!(&whole[again.stream_offset() as usize..], &stream[..]);
            }
            Err(SaveImageError::XmlTooLarge { need, have }) => prop_assert!(need > have),
            Err(e) => prop_assert!(false, "unexpected {}", e),
        }
    }

    /// Any corruption of the header or data region is an error or a valid parse, never a panic;
    /// a parse never reads past the data region.
    #[test]
    fn corruption_never_panics(flips in prop::collection::vec((0usize..400, any::<u8>()), 1..8), cut in 0usize..450) {
        let mut b = image(XML, Some("<c/>"), 32, b"STREAM");
        for (i, v) in flips {
            let n = b.len();
            b[i % n] = v;
        }
        b.truncate(cut.min(b.len()));
        if let Ok(img) = SaveImage::parse(&b, b.len() as u64) {
            prop_assert!(img.stream_offset() <= b.len() as u64);
        }
    }
}

/// Issue 11, item 4: a 20,000-deep domain XML overflowed the stack of `save-image show`.
#[test]
fn deeply_nested_xml_is_a_named_error_not_a_stack_overflow() {
    let deep = format!("<domain>{}{}</domain>", "<a>".repeat(20_000), "</a>".repeat(20_000));
    let b = image(&deep, None, 0, b"QEVM");
    assert!(matches!(SaveImage::parse(&b, b.len() as u64), Err(SaveImageError::XmlTooDeep { depth: 20_001 })));
    assert!(matches!(DomainSummary::of(&deep), Err(SaveImageError::XmlTooDeep { .. })));
    assert!(interface_aliases(&deep).is_empty());
    // Self-closing elements, comments and declarations do not add depth.
    let flat = format!("<?xml version='1.0'?><!-- x --><domain>{}</domain>", "<mac address='x'/>".repeat(1000));
    assert!(check_depth(&flat).is_ok());
}

fn stream(tail: &[u8]) -> Vec<u8> {
    let mut s = b"QEVM\0\0\0\x03".to_vec();
    s.extend_from_slice(&[0x55; 4096]);
    s.extend_from_slice(tail);
    s
}

/// The last section's footer and EOF, as QEMU 7.2 writes them.
const FOOTER_EOF: [u8; 6] = [QEMU_VM_SECTION_FOOTER, 0, 0, 0, 0x2f, QEMU_VM_EOF];

fn vmdesc() -> Vec<u8> {
    let json = br#"{"page_size": 4096, "devices": []}"#;
    let mut t = FOOTER_EOF.to_vec();
    t.push(QEMU_VM_VMDESCRIPTION);
    t.extend_from_slice(&(json.len() as u32).to_be_bytes());
    t.extend_from_slice(json);
    t
}

/// Issue 11, item 7: an image cut inside the QEMU stream was shown with exit 0.
#[test]
fn the_stream_must_start_with_qemus_magic_and_end_plausibly() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("x.save");
    let check = |bytes: &[u8]| {
        std::fs::write(&p, bytes).unwrap();
        let img = SaveImage::read(&p).unwrap();
        check_stream(&p, &img)
    };
    let whole = image(XML, None, 64, &stream(&vmdesc()));
    assert_eq!(check(&whole).unwrap().ends_with, "EOF and the VM description");
    assert_eq!(check(&image(XML, None, 64, &stream(&FOOTER_EOF))).unwrap().ends_with, "EOF");
    // A zero byte alone is not an end: a cut inside RAM ends in zeros as often as not.
    assert!(matches!(check(&image(XML, None, 64, &stream(&[0, 0, 0]))), Err(SaveImageError::StreamCut(_))));
    // Cut anywhere in the stream: inside the RAM, inside the JSON, before the magic ends.
    for cut in [whole.len() - 1, whole.len() - 20, whole.len() - 200] {
        assert!(matches!(check(&whole[..cut]), Err(SaveImageError::StreamCut(_))), "cut at {cut}");
    }
    let header_only = image(XML, None, 64, b"");
    assert!(matches!(check(&header_only), Err(SaveImageError::StreamMissing(_))));
    assert!(matches!(check(&image(XML, None, 64, b"QEV")), Err(SaveImageError::StreamBadMagic(_))));
}

/// Issue 11, item 3: a FIFO given as a save image blocked forever.
#[test]
fn a_fifo_is_refused_without_blocking() {
    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("x.save");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let e = SaveImage::read(&fifo).unwrap_err();
    assert!(e.to_string().contains("not a regular file (it is a FIFO)"), "{e}");
}
