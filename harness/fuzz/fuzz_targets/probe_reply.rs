//! Any bytes as a line from the guest's probe: decoding never panics, invalid UTF-8 is always
//! refused (never replaced), and whatever decodes re-encodes to JSON that decodes to the same.
#![no_main]

use clonesafe::agent::serial::decode_line;
use clonesafe::agent::AgentError;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    match decode_line(line) {
        Ok(reply) => {
            assert!(std::str::from_utf8(line).is_ok());
            let again = serde_json::to_string(&reply).expect("replies serialize");
            assert_eq!(decode_line(again.as_bytes()).expect("re-encoded reply decodes"), reply);
        }
        Err(AgentError::NotUtf8 { at, .. }) => assert!(std::str::from_utf8(line).is_err() && at < line.len()),
        Err(AgentError::BadJson { line: shown, .. }) => assert!(shown.len() <= 200 + 64),
        Err(e) => panic!("unexpected error {e}"),
    }
});
