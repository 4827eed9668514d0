//! Reading one declared identity (`[[identity]]`, crate::scenario::declared) from one VM,
//! through its agent: the probe's `digest`/`exec` requests, or qemu-guest-agent's file
//! commands and guest-exec. What comes back is the guest's, so it is bounded here and shown
//! escaped wherever it is rendered.

use crate::agent::AgentError;
use crate::backend::Vm;
use crate::scenario::declared::{Declared, Source};
use serde::Serialize;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Each output stream of a declared command kept (and shown) up to this many bytes.
pub const MAX_OUTPUT: u32 = 4096;
/// A compared value longer than this is compared (and shown) as its SHA-256.
pub const MAX_VALUE: usize = 256;

/// What one VM gave for one declared identity.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "why")]
pub enum Outcome {
    /// The value compared across VMs.
    Value(String),
    /// Not there: no such file, the command failed or printed nothing, the pattern did not match.
    Absent(String),
    /// It could not be read: the command outlived its timeout, the exchange failed.
    Failed(String),
    /// This guest's agent cannot read it.
    Unsupported(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct Reading {
    pub outcome: Outcome,
    /// What was read, bounded: a command's exit, output and error; a file's size and SHA-256.
    pub raw: Value,
    /// From the VMM's resume to the agent's answer (host clock, ms): `right-after-resume` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ms_after_resume: Option<u64>,
}

/// Read `d` from `vm`. `resumed_at`: when the VMM resumed it (for `ms_after_resume`).
pub async fn read(vm: &mut dyn Vm, d: &Declared, resumed_at: Option<Instant>, t: Duration) -> Reading {
    let mut r = match &d.source {
        Source::File(path) => file(vm, d, path, t).await,
        Source::Command(argv) => command(vm, d, argv, t).await,
    };
    r.ms_after_resume = resumed_at.map(|at| at.elapsed().as_millis() as u64);
    r
}

/// Why a reading failed: the agent cannot (`Unsupported`, the check is skipped) or it went wrong.
fn unreadable(e: Option<AgentError>) -> Outcome {
    match e {
        None => Outcome::Unsupported("the guest has no agent to ask".into()),
        Some(e @ (AgentError::Unsupported { .. } | AgentError::Unavailable { .. })) => Outcome::Unsupported(e.to_string()),
        Some(other) => Outcome::Failed(crate::text::truncate(&crate::error_chain(&other), 600)),
    }
}

async fn file(vm: &mut dyn Vm, d: &Declared, path: &str, t: Duration) -> Reading {
    let text_bytes = if d.pattern.is_some() { clonesafe_protocol::MAX_DECLARED_TEXT } else { 0 };
    let got = match vm.agent() {
        Some(a) => a.digest_file(path, text_bytes, t).await.map_err(Some),
        None => Err(None),
    };
    match got {
        Err(e) => Reading { outcome: unreadable(e), raw: Value::Null, ms_after_resume: None },
        Ok(None) => Reading { outcome: Outcome::Absent(format!("no file {path}")), raw: json!({ "file": path, "exists": false }), ms_after_resume: None },
        Ok(Some(f)) => {
            let raw = json!({ "file": path, "size": f.size, "sha256": f.sha256 });
            let outcome = match &d.pattern {
                None => Outcome::Value(f.sha256.clone()),
                Some(re) => match first_capture(re, &f.text) {
                    Some(v) => Outcome::Value(bounded(v)),
                    None => Outcome::Absent(format!("{path}: no match for {} in its first {} bytes", re.as_str(), f.text.len())),
                },
            };
            Reading { outcome, raw, ms_after_resume: None }
        }
    }
}

async fn command(vm: &mut dyn Vm, d: &Declared, argv: &[String], t: Duration) -> Reading {
    let limit = d.timeout;
    let got = match vm.agent() {
        Some(a) => a.run_command(argv, limit, MAX_OUTPUT, t).await.map_err(Some),
        None => Err(None),
    };
    let o = match got {
        Err(e) => return Reading { outcome: unreadable(e), raw: Value::Null, ms_after_resume: None },
        Ok(o) => o,
    };
    let raw = json!({ "exit": o.exit, "timed_out": o.timed_out, "stdout": o.stdout, "stderr": o.stderr, "truncated": o.truncated });
    let outcome = if o.timed_out {
        Outcome::Failed(format!("still running after {} s (timeout_s); it printed {:?}", limit.as_secs(), crate::text::truncate(&o.stdout, 200)))
    } else if o.exit != Some(0) {
        let why = o.stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
        Outcome::Absent(format!("{} exited {}{}", argv[0], o.exit.map(|c| c.to_string()).unwrap_or_else(|| "by a signal".into()), if why.is_empty() { String::new() } else { format!(": {}", crate::text::truncate(why, 200)) }))
    } else {
        match &d.pattern {
            Some(re) => match first_capture(re, &o.stdout) {
                Some(v) => Outcome::Value(bounded(v)),
                None => Outcome::Absent(format!("its output has no match for {}", re.as_str())),
            },
            None if o.stdout.trim().is_empty() => Outcome::Absent("it printed nothing".into()),
            None => Outcome::Value(bounded(o.stdout.trim())),
        }
    };
    Reading { outcome, raw, ms_after_resume: None }
}

/// The first capture group of the first match (the whole match when the pattern has none).
fn first_capture<'a>(re: &regex::Regex, text: &'a str) -> Option<&'a str> {
    let c = re.captures(text)?;
    c.get(1).or_else(|| c.get(0)).map(|m| m.as_str())
}

fn bounded(v: &str) -> String {
    if v.len() <= MAX_VALUE {
        return v.to_string();
    }
    use sha2::Digest;
    format!("sha256:{}", sha2::Sha256::digest(v.as_bytes()).iter().map(|b| format!("{b:02x}")).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_group_is_compared_and_long_values_by_digest() {
        let re = regex::Regex::new(r"Database system identifier:\s+(\d+)").unwrap();
        assert_eq!(first_capture(&re, "pg_control version number:  1300\nDatabase system identifier:           7311467012345678901\n"), Some("7311467012345678901"));
        assert_eq!(first_capture(&regex::Regex::new("[0-9a-f]{8}").unwrap(), "id deadbeef!"), Some("deadbeef"));
        assert_eq!(first_capture(&re, "nothing"), None);
        assert!(bounded(&"x".repeat(MAX_VALUE + 1)).starts_with("sha256:"));
        assert_eq!(bounded("short"), "short");
    }
}
