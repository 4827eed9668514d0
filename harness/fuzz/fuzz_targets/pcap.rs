//! Any bytes: reading a capture never panics, numbers its frames 1.. in order, and what it
//! reads analyses without panicking (every frame the guests sent is untrusted).
#![no_main]

use clonesafe::network::{pcap, wire};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frames) = pcap::parse(data) {
        assert!(frames.iter().enumerate().all(|(i, f)| f.no == i + 1));
        let members: Vec<wire::Member> = (0..3u32)
            .map(|i| wire::Member {
                vm: format!("vm{i}"),
                role: if i == 0 { "source".into() } else { "clone".into() },
                ifindexes: vec![i + 1],
                taps: vec![],
                macs: vec![],
                resumed_ns: (i > 0).then_some(1),
                inherits: i > 0,
            })
            .collect();
        let _ = wire::analyse(&frames, &members, 0);
    }
    let _ = wire::parse_if_inet6(&String::from_utf8_lossy(data));
});
