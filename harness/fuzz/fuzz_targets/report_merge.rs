//! Any bytes as shard reports (split at NUL bytes, up to four): reading them never panics,
//! `report merge` either refuses them with an error or merges them, and what it merges renders
//! (JSON, JUnit, HTML, Markdown) without panicking. Shard reports come from files a user (or a
//! CI job someone else controls) hands over: the shard count, plan and scenarios are untrusted.
#![no_main]

use clonesafe::report;
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;

fuzz_target!(|data: &[u8]| {
    let shards: Vec<(PathBuf, clonesafe_metadata::Report)> = data
        .split(|b| *b == 0)
        .take(4)
        .enumerate()
        .filter_map(|(i, part)| serde_json::from_slice(part).ok().map(|r| (PathBuf::from(format!("s{i}/report.json")), r)))
        .collect();
    for partial in [false, true] {
        if let Ok(m) = report::merge::merge(shards.clone(), partial) {
            let total: usize = shards.iter().map(|(_, r)| r.scenarios.len()).sum();
            assert_eq!(m.scenarios.len(), total);
            let _ = serde_json::to_string(&m).expect("a merged report serializes");
            let _ = report::junit::render(&m);
            let _ = report::html::render(&m);
            let _ = report::markdown::render(&m);
        }
    }
});
