//! Micro-benchmarks of the host-side work that sits on a clone's restore path: reading and
//! rewriting a libvirt save image's header and XML (once per clone), and comparing values
//! across clones (once per check). Run: cargo bench -p clonesafe --bench codec

use clonesafe::backend::libvirt::save_image::SaveImage;
use clonesafe::checks::compare::compare;
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

/// A save image as libvirt writes it: a 92-byte header, a domain XML of realistic size, a
/// cookie, and libvirt's 64 KiB of slack.
fn image() -> Vec<u8> {
    let xml = format!("<domain type='qemu'><name>clonesafe-1-naive-source0</name><uuid>0b2f6d8e-5f1a-4c2b-9a57-3f0e7d4c1a20</uuid>{}</domain>", "<!-- device -->".repeat(300));
    let cookie = "<qemu-migration><name>x</name></qemu-migration>";
    let data_len = xml.len() + 1 + cookie.len() + 1 + 64 * 1024;
    let mut b = b"LibvirtQemudSave".to_vec();
    for v in [2u32, data_len as u32, 1, 0, xml.len() as u32 + 1] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&[0u8; 56]);
    b.extend_from_slice(xml.as_bytes());
    b.push(0);
    b.extend_from_slice(cookie.as_bytes());
    b.push(0);
    b.resize(92 + data_len, 0);
    b
}

fn bench(c: &mut Criterion) {
    let img = image();
    let parsed = SaveImage::parse(&img, img.len() as u64).unwrap();
    let new_xml = parsed.xml.replace("source0", "clone7");
    c.bench_function("save_image_parse", |b| b.iter(|| SaveImage::parse(black_box(&img), img.len() as u64).unwrap()));
    c.bench_function("save_image_encode_with_new_xml", |b| b.iter(|| parsed.encode_with_xml(black_box(&new_xml)).unwrap()));
    let values: Vec<Option<String>> = (0..16).map(|i| Some(format!("{:016x}", i * 0x9e37_79b9_7f4a_7c15u64))).collect();
    c.bench_function("compare_16_vms", |b| b.iter(|| compare(black_box(&values))));
}

criterion_group!(benches, bench);
criterion_main!(benches);
