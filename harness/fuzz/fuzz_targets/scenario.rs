//! Any text as a scenario file: parsing never panics, every error points inside the file, and
//! its message stays bounded however long the bad value was.
#![no_main]

use clonesafe::scenario::parse;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|src: &str| {
    match parse(Path::new("fuzz.toml"), src) {
        Ok(plans) => {
            for p in plans {
                assert!(p.line >= 1 && p.line <= src.lines().count().max(1));
                assert!((2..=16).contains(&p.clones));
            }
        }
        Err(e) => {
            assert!(e.line <= src.lines().count() + 1, "line {} of {}", e.line, src.lines().count());
            assert!(e.message.len() <= clonesafe::scenario::MAX_MESSAGE + 64, "message of {} bytes", e.message.len());
        }
    }
});
