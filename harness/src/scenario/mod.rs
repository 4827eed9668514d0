//! Scenario files (TOML) → a validated [`Plan`]. Staged like nextest's config: deserialize
//! strictly (unknown fields rejected), then validate into a plan, and every error says the
//! file, line and field.
//!
//! ```toml
//! [[scenario]]
//! name = "naive"            # unique; [a-z0-9_-]
//! guest = "tiny"            # default "tiny"
//! backend = "qemu"          # qemu | libvirt (default qemu; `--backend` overrides)
//! strategy = "naive"        # cold-boot | image-clone | image-clone-sysprep | naive |
//!                           # nic-replug | vmgenid | agent-fixup | full
//! clones = 3                # VMs compared, 2..=16
//! memory_mib = 256          # 128..=16384, default 256
//! canary = true             # plant a deleted secret and scan the artifacts for it
//! mitigate_remanence = true # fstrim + drop caches in the guest, compact disks (implies canary)
//! [scenario.expect]         # check id = unique | duplicate | skipped | error | any
//! mac = "duplicate"
//! ```

mod plan;

pub use plan::{Expectation, Plan, ScenarioPlan, Strategy};

use crate::backend::BackendKind;
use crate::checks::CheckId;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// The field at fault, as a path (`scenario[2].clones`), when known.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ScenarioError {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    scenario: Vec<Spanned<RawScenario>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    guest: Option<Spanned<String>>,
    backend: Option<Spanned<String>>,
    strategy: Spanned<String>,
    clones: Spanned<i64>,
    memory_mib: Option<Spanned<i64>>,
    #[serde(default)]
    expect: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    canary: bool,
    #[serde(default)]
    mitigate_remanence: bool,
}

/// Read and validate one scenario file.
pub fn load(path: &Path) -> Result<Vec<ScenarioPlan>, ScenarioError> {
    let src = std::fs::read_to_string(path).map_err(|e| ScenarioError {
        file: path.to_path_buf(),
        line: 0,
        column: 0,
        field: None,
        message: format!("cannot read: {e}"),
    })?;
    parse(path, &src)
}

pub fn parse(path: &Path, src: &str) -> Result<Vec<ScenarioPlan>, ScenarioError> {
    let at = |span: Range<usize>, field: Option<String>, message: String| {
        let (line, column) = line_col(src, span.start);
        ScenarioError { file: path.to_path_buf(), line, column, field, message }
    };
    let raw: RawFile = toml::from_str(src).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let key = key_on_line(src, span.start);
        at(span, key, e.message().trim().to_string())
    })?;
    if raw.scenario.is_empty() {
        return Err(at(0..0, None, "no [[scenario]] tables in this file".into()));
    }
    let mut out: Vec<ScenarioPlan> = Vec::new();
    for (i, s) in raw.scenario.into_iter().enumerate() {
        let s = s.into_inner();
        let f = |name: &str| Some(format!("scenario[{i}].{name}"));

        let name = s.name.get_ref().clone();
        let valid_name = !name.is_empty()
            && name.len() <= 40
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !valid_name {
            return Err(at(s.name.span(), f("name"), format!("{name:?} is not a valid name: use 1 to 40 of a-z, 0-9, - and _")));
        }
        if out.iter().any(|p| p.name == name) {
            return Err(at(s.name.span(), f("name"), format!("{name:?} is used by an earlier scenario in this file")));
        }

        let guest = match &s.guest {
            None => "tiny".to_string(),
            Some(g) if g.get_ref() == "tiny" => "tiny".to_string(),
            Some(g) => return Err(at(g.span(), f("guest"), format!("unknown guest {:?}; known guests: \"tiny\"", g.get_ref()))),
        };

        let backend = match &s.backend {
            None => BackendKind::Qemu,
            Some(b) => match b.get_ref().as_str() {
                "qemu" => BackendKind::Qemu,
                "libvirt" => BackendKind::Libvirt,
                other => return Err(at(b.span(), f("backend"), format!("unknown backend {other:?}; use \"qemu\" or \"libvirt\""))),
            },
        };

        let strategy = Strategy::parse(s.strategy.get_ref()).ok_or_else(|| {
            at(
                s.strategy.span(),
                f("strategy"),
                format!("unknown strategy {:?}; use one of: {}", s.strategy.get_ref(), Strategy::names().join(", ")),
            )
        })?;

        let clones = *s.clones.get_ref();
        if !(2..=16).contains(&clones) {
            return Err(at(s.clones.span(), f("clones"), format!("{clones} is out of range: between 2 and 16 VMs are compared")));
        }

        let memory_mib = match &s.memory_mib {
            None => 256,
            Some(m) if (128..=16384).contains(m.get_ref()) => *m.get_ref(),
            Some(m) => return Err(at(m.span(), f("memory_mib"), format!("{} is out of range: 128 to 16384 MiB", m.get_ref()))),
        };

        let mut expect = BTreeMap::new();
        for (k, v) in &s.expect {
            let id = CheckId::parse(k.get_ref()).ok_or_else(|| {
                let known: Vec<&str> = CheckId::ALL.iter().map(|c| c.as_str()).collect();
                at(k.span(), f("expect"), format!("unknown check {:?}; checks are: {}", k.get_ref(), known.join(", ")))
            })?;
            let e = Expectation::parse(v.get_ref()).ok_or_else(|| {
                at(
                    v.span(),
                    f(&format!("expect.{}", k.get_ref())),
                    format!("{:?} is not an expectation; use unique, duplicate, skipped, error or any", v.get_ref()),
                )
            })?;
            expect.insert(id, e);
        }

        out.push(ScenarioPlan {
            name,
            description: s.description,
            file: path.to_path_buf(),
            guest,
            backend,
            strategy,
            clones: clones as u32,
            memory_mib: memory_mib as u32,
            expect,
            canary: s.canary || s.mitigate_remanence,
            mitigate_remanence: s.mitigate_remanence,
        });
    }
    Ok(out)
}

fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..offset.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, column)
}

/// The key assigned on the line holding `offset`, for errors whose span is a value.
fn key_on_line(src: &str, offset: usize) -> Option<String> {
    let start = src[..offset.min(src.len())].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line = src[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    (!key.is_empty() && !key.starts_with('[')).then(|| key.to_string())
}

#[cfg(test)]
mod tests;
