//! Identities a scenario file declares (`[[identity]]`): the user's own, checked like the
//! built-in ones without writing Rust.
//!
//! ```toml
//! [[identity]]                              # top level: every scenario of the file
//! id = "pg_system_id"                       # snake_case, not a built-in check's id
//! description = "PostgreSQL system identifier"
//! command = ["pg_controldata", "/var/lib/postgresql/15/main"]   # or: file = "/abs/path"
//! match = 'Database system identifier:\s+(\d+)'   # optional: compare the first capture group
//! when = "after-fixups"                     # or "right-after-resume"
//! expect = "unique"                         # optional; a scenario's [scenario.expect] wins
//! timeout_s = 10                            # a command still running then is an error
//! consequence = "replicas refuse a duplicate"   # optional: what breaks when clones share it
//! severity = "identity-confusion"           # optional: key-reuse | network-collision |
//!                                           # identity-confusion | informational
//!
//! [[scenario.identity]]                     # inside a scenario: that scenario only
//! ```
//!
//! A file is compared by its SHA-256 (its contents never reach the report); a command by its
//! standard output (trimmed), or by `match`'s first capture group in it. See
//! crate::evidence::declared for how they are read and crate::checks::declared for the verdict.

use super::error::ScenarioError;
use clonesafe_metadata::{CheckId, CheckName, Expectation};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// At most this many identities per scenario (the file's and its own).
pub const MAX_DECLARED: usize = 32;
/// The bounds of `timeout_s`, and its default.
pub const TIMEOUT_S: std::ops::RangeInclusive<i64> = 1..=300;
pub const DEFAULT_TIMEOUT_S: u64 = 10;
/// Longest argv element or path accepted.
const MAX_ARG: usize = 4096;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentity {
    id: Spanned<String>,
    description: Option<Spanned<String>>,
    command: Option<Spanned<Vec<Spanned<String>>>>,
    file: Option<Spanned<String>>,
    #[serde(rename = "match")]
    pattern: Option<Spanned<String>>,
    when: Option<Spanned<String>>,
    expect: Option<Spanned<String>>,
    timeout_s: Option<Spanned<i64>>,
    consequence: Option<Spanned<String>>,
    severity: Option<Spanned<String>>,
}

/// What a declared identity reads in each VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An absolute path in the guest; compared by SHA-256.
    File(String),
    /// argv, run without a shell; argv[0] absolute, or a name looked up in the guest's PATH.
    Command(Vec<String>),
}

/// When a declared identity is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// With the rest of the evidence, after the recipe's fix-ups ran (the default).
    AfterFixups,
    /// In the burst right after resume, with the first RNG samples, before any fix-up: how long
    /// the identity stays shared.
    RightAfterResume,
}

impl When {
    pub fn as_str(self) -> &'static str {
        match self {
            When::AfterFixups => "after-fixups",
            When::RightAfterResume => "right-after-resume",
        }
    }
}

/// One declared identity, validated.
#[derive(Debug, Clone)]
pub struct Declared {
    pub id: String,
    pub description: Option<String>,
    pub source: Source,
    /// Compare the first capture group (or the whole match) instead of the whole output.
    pub pattern: Option<regex::Regex>,
    pub when: When,
    /// A command still running after this long is stopped, and the identity is `error`.
    pub timeout: Duration,
    /// The expectation written beside it (a scenario's `[scenario.expect]` overrides it).
    pub expect: Option<Expectation>,
    /// What breaks when clones share it, and how bad that is, as the user states them.
    pub consequence: Option<String>,
    pub severity: Option<clonesafe_metadata::Severity>,
    /// Where it is declared.
    pub file: PathBuf,
    pub line: usize,
}

impl Declared {
    pub fn name(&self) -> CheckName {
        CheckName::Declared(self.id.clone())
    }

    /// What it reads, for listings: `file /etc/x` or `command pg_controldata /var/...`.
    pub fn reads(&self) -> String {
        let what = match &self.source {
            Source::File(p) => format!("file {p} (SHA-256)"),
            Source::Command(argv) => format!("command {}", argv.join(" ")),
        };
        match &self.pattern {
            Some(p) => format!("{what}, match {}", p.as_str()),
            None => what,
        }
    }
}

/// Validate `raw` (the `[[identity]]` tables at `field_prefix`, e.g. `identity` or
/// `scenario[1].identity`); `earlier` are the ones already in scope (the file's), which an id
/// must not repeat.
pub(super) fn validate(
    path: &Path,
    at: &dyn Fn(std::ops::Range<usize>, Option<String>, String) -> ScenarioError,
    line_of: &dyn Fn(usize) -> usize,
    field_prefix: &str,
    raw: Vec<Spanned<RawIdentity>>,
    earlier: &[Declared],
) -> Result<Vec<Declared>, ScenarioError> {
    let mut out: Vec<Declared> = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let table = r.span();
        let r = r.into_inner();
        let f = |name: &str| Some(format!("{field_prefix}[{i}].{name}"));
        let id = r.id.get_ref().clone();
        if let Some(c) = CheckId::parse(&id) {
            return Err(at(r.id.span(), f("id"), format!("{id:?} is a built-in check's id ({c}); a declared identity needs an id of its own")));
        }
        if !CheckName::valid_declared(&id) {
            return Err(at(r.id.span(), f("id"), format!("{id:?} is not a valid id: snake_case, a-z first, then a-z, 0-9 and _, at most {} bytes", CheckName::MAX_DECLARED)));
        }
        if let Some(prev) = earlier.iter().chain(out.iter()).find(|d| d.id == id) {
            return Err(at(r.id.span(), f("id"), format!("{id:?} repeats the identity declared at {}:{}", prev.file.display(), prev.line)));
        }
        let source = match (&r.file, &r.command) {
            (Some(_), Some(c)) => return Err(at(c.span(), f("command"), "give either file or command, not both".into())),
            (None, None) => return Err(at(table, f("file"), "give file (a path in the guest, compared by SHA-256) or command (argv, compared by its output)".into())),
            (Some(p), None) => {
                let v = p.get_ref();
                if !v.starts_with('/') {
                    return Err(at(p.span(), f("file"), format!("{v:?} is not an absolute path in the guest")));
                }
                if v.len() > MAX_ARG || v.contains('\0') {
                    return Err(at(p.span(), f("file"), format!("a path of at most {MAX_ARG} bytes without NUL")));
                }
                Source::File(v.clone())
            }
            (None, Some(c)) => {
                let argv = c.get_ref();
                let Some(first) = argv.first() else {
                    return Err(at(c.span(), f("command"), "an empty argv: name the program to run first".into()));
                };
                let prog = first.get_ref();
                if prog.is_empty() || (prog.contains('/') && !prog.starts_with('/')) {
                    return Err(at(first.span(), f("command[0]"), format!("{prog:?} is a relative path: give an absolute path, or a bare name looked up in the guest's PATH")));
                }
                for (j, a) in argv.iter().enumerate() {
                    if a.get_ref().len() > MAX_ARG || a.get_ref().contains('\0') {
                        return Err(at(a.span(), f(&format!("command[{j}]")), format!("an argument of at most {MAX_ARG} bytes without NUL")));
                    }
                }
                Source::Command(argv.iter().map(|a| a.get_ref().clone()).collect())
            }
        };
        let pattern = match &r.pattern {
            None => None,
            Some(p) => Some(regex::RegexBuilder::new(p.get_ref()).size_limit(1 << 20).build().map_err(|e| at(p.span(), f("match"), format!("not a regular expression: {e}")))?),
        };
        let when = match &r.when {
            None => When::AfterFixups,
            Some(w) => match w.get_ref().as_str() {
                "after-fixups" => When::AfterFixups,
                "right-after-resume" => When::RightAfterResume,
                other => return Err(at(w.span(), f("when"), format!("{other:?} is not a time to read it; use \"after-fixups\" or \"right-after-resume\""))),
            },
        };
        let expect = match &r.expect {
            None => None,
            Some(e) => Some(Expectation::parse(e.get_ref()).ok_or_else(|| at(e.span(), f("expect"), format!("{:?} is not an expectation; use unique, duplicate, skipped, error or any", e.get_ref())))?),
        };
        let timeout = match &r.timeout_s {
            None => Duration::from_secs(DEFAULT_TIMEOUT_S),
            Some(t) if TIMEOUT_S.contains(t.get_ref()) => Duration::from_secs(*t.get_ref() as u64),
            Some(t) => return Err(at(t.span(), f("timeout_s"), format!("{} is out of range: {} to {} seconds", t.get_ref(), TIMEOUT_S.start(), TIMEOUT_S.end()))),
        };
        if matches!(source, Source::File(_)) && r.timeout_s.is_some() {
            return Err(at(r.timeout_s.as_ref().expect("some").span(), f("timeout_s"), "timeout_s bounds a command; a file is read whole".into()));
        }
        let severity = match &r.severity {
            None => None,
            Some(v) => Some(v.get_ref().parse::<clonesafe_metadata::Severity>().map_err(|m| at(v.span(), f("severity"), m))?),
        };
        if earlier.len() + out.len() >= MAX_DECLARED {
            return Err(at(r.id.span(), f("id"), format!("more than {MAX_DECLARED} declared identities in one scenario")));
        }
        out.push(Declared {
            id,
            description: r.description.map(|d| crate::text::truncate(d.get_ref(), 400)),
            source,
            pattern,
            when,
            timeout,
            expect,
            consequence: r.consequence.map(|c| crate::text::truncate(c.get_ref(), 400)),
            severity,
            file: path.to_path_buf(),
            line: line_of(r.id.span().start),
        });
    }
    Ok(out)
}
