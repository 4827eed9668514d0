//! TOML → [`ScenarioPlan`]: deserialize strictly (unknown fields rejected, with spans), then
//! validate each value, so every error says the file, line, column and field.

use super::declared::{self, RawIdentity};
use super::error::ScenarioError;
use super::plan::{Network, NoCloud, ScenarioPlan};
use clonesafe_metadata::{BackendKind, CheckId, CheckName, Expectation, FixupId, Method, Recipe, Strategy};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    scenario: Vec<Spanned<RawScenario>>,
    /// Identities every scenario of the file checks (declared.rs).
    #[serde(default)]
    identity: Vec<Spanned<RawIdentity>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    guest: Option<Spanned<String>>,
    image: Option<Spanned<String>>,
    backend: Option<Spanned<String>>,
    strategy: Option<Spanned<String>>,
    method: Option<Spanned<String>>,
    fixups: Option<Spanned<Vec<Spanned<String>>>>,
    clones: Spanned<i64>,
    memory_mib: Option<Spanned<i64>>,
    #[serde(default)]
    expect: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    canary: bool,
    #[serde(default)]
    mitigate_remanence: bool,
    nocloud: Option<Spanned<String>>,
    pool: Option<Spanned<i64>>,
    network: Option<Spanned<String>>,
    #[serde(default)]
    tpm: bool,
    /// `[[scenario.identity]]`: identities this scenario alone checks.
    #[serde(default)]
    identity: Vec<Spanned<RawIdentity>>,
}

/// Scenario files are a few KiB; anything larger is refused before it is parsed.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// Values echoed in messages are cut to this many bytes (a 10 MB bad value once was echoed whole).
pub const MAX_MESSAGE: usize = 400;

pub fn parse(path: &Path, src: &str) -> Result<Vec<ScenarioPlan>, ScenarioError> {
    let at = |span: Range<usize>, field: Option<String>, message: String| {
        let (line, column) = line_col(src, span.start);
        ScenarioError { file: path.to_path_buf(), line, column, field, message: crate::text::truncate(&message, MAX_MESSAGE) }
    };
    let raw: RawFile = toml::from_str(src).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let msg = e.message().trim().to_string();
        // "missing field `clones`": the span is the whole table, so name the field and the
        // table's index rather than whatever key is on the table's first line.
        let key = match msg.strip_prefix("missing field `").and_then(|r| r.split('`').next()) {
            Some(missing) => Some(format!("scenario[{}].{missing}", src[..(span.start + "[[scenario]]".len()).min(src.len())].matches("[[scenario]]").count().saturating_sub(1))),
            None => key_on_line(src, span.start),
        };
        at(span, key, msg)
    })?;
    if raw.scenario.is_empty() {
        return Err(at(0..0, None, "no [[scenario]] tables in this file".into()));
    }
    let line_of = |offset: usize| line_col(src, offset).0;
    let file_declared = declared::validate(path, &at, &line_of, "identity", raw.identity, &[])?;
    let mut out: Vec<ScenarioPlan> = Vec::new();
    for (i, s) in raw.scenario.into_iter().enumerate() {
        let table = s.span();
        let s = s.into_inner();
        let f = |name: &str| Some(format!("scenario[{i}].{name}"));

        let name = s.name.get_ref().clone();
        let name_line = line_col(src, s.name.span().start).0;
        let valid_name = !name.is_empty() && name.len() <= 40 && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !valid_name {
            return Err(at(s.name.span(), f("name"), format!("{name:?} is not a valid name: use 1 to 40 of a-z, 0-9, - and _")));
        }
        if out.iter().any(|p| p.name == name) {
            return Err(at(s.name.span(), f("name"), format!("{name:?} is used by an earlier scenario in this file")));
        }

        let guest = match &s.guest {
            None => crate::guest::DEFAULT_GUEST.to_string(),
            Some(g) => {
                let v = g.get_ref();
                let ok = !v.is_empty() && v.len() <= 64 && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                if !ok {
                    return Err(at(g.span(), f("guest"), format!("{v:?} is not a guest name: use letters, digits, - and _")));
                }
                v.clone()
            }
        };

        let image = match (&s.image, &s.guest) {
            (Some(i), Some(_)) => return Err(at(i.span(), f("image"), "use either guest (a built guest) or image (your own disk image), not both".into())),
            (Some(i), None) => {
                let p = Path::new(i.get_ref());
                // Relative to the scenario file, like any path in it.
                let p = if p.is_absolute() { p.to_path_buf() } else { path.parent().unwrap_or(Path::new(".")).join(p) };
                Some(p)
            }
            (None, _) => None,
        };
        let guest = match &image {
            Some(p) => format!("image:{}", p.display()),
            None => guest,
        };

        let backend = match &s.backend {
            None => BackendKind::Qemu,
            Some(b) => b.get_ref().parse::<BackendKind>().map_err(|m| at(b.span(), f("backend"), m))?,
        };

        let (strategy, mut recipe) = match (&s.strategy, &s.method) {
            (Some(st), Some(m)) => {
                let _ = st;
                return Err(at(m.span(), f("method"), "use either strategy (a preset) or method with fixups, not both".into()));
            }
            (Some(st), None) => {
                if let Some(fx) = &s.fixups {
                    return Err(at(fx.span(), f("fixups"), "fixups compose with method, not with a strategy preset (use method = ...)".into()));
                }
                let preset = Strategy::parse(st.get_ref()).filter(|p| *p != Strategy::Custom).ok_or_else(|| {
                    let names: Vec<&str> = Strategy::presets().map(Strategy::as_str).collect();
                    at(st.span(), f("strategy"), format!("unknown strategy {:?}; use one of: {}", st.get_ref(), names.join(", ")))
                })?;
                (Some(preset), preset.recipe().expect("a preset has a recipe"))
            }
            (None, Some(m)) => {
                let method = m.get_ref().parse::<Method>().map_err(|e| at(m.span(), f("method"), e))?;
                let mut fixups: Vec<FixupId> = Vec::new();
                for (j, fx) in s.fixups.as_ref().map(|v| v.get_ref().as_slice()).unwrap_or_default().iter().enumerate() {
                    let field = f(&format!("fixups[{j}]"));
                    let id = fx.get_ref().parse::<FixupId>().map_err(|e| at(fx.span(), field.clone(), e))?;
                    if fixups.contains(&id) {
                        return Err(at(fx.span(), field, format!("{id} is listed twice")));
                    }
                    if !id.methods().contains(&method) {
                        let with: Vec<&str> = id.methods().iter().map(|m| m.as_str()).collect();
                        return Err(at(fx.span(), field, format!("{id} does not apply to method {method}; it composes with: {}", with.join(", "))));
                    }
                    if id == FixupId::GenidWait && !fixups.contains(&FixupId::Vmgenid) {
                        return Err(at(fx.span(), field, "genid-wait waits for the uevent of the vmgenid device: list vmgenid before it".into()));
                    }
                    if let Some(other) = [FixupId::RngGate, FixupId::GenidWait].into_iter().find(|g| *g != id && fixups.contains(g)).filter(|_| matches!(id, FixupId::RngGate | FixupId::GenidWait)) {
                        return Err(at(fx.span(), field, format!("{other} and {id} both hold the first RNG read; a recipe takes one of them")));
                    }
                    fixups.push(id);
                }
                (None, Recipe { method, fixups })
            }
            (None, None) => {
                return Err(at(table, None, "missing field `strategy` (a preset), or compose a recipe with `method` and `fixups`".into()));
            }
        };
        if s.mitigate_remanence && !recipe.has(FixupId::MitigateRemanence) {
            if !FixupId::MitigateRemanence.methods().contains(&recipe.method) {
                return Err(at(table, f("mitigate_remanence"), format!("remanence mitigation does not apply to method {}", recipe.method)));
            }
            // First, as before the fix-ups were composable: the scrub runs before any other
            // pre-snapshot step.
            recipe.fixups.insert(0, FixupId::MitigateRemanence);
        }
        let strategy = strategy.unwrap_or_else(|| Strategy::of(&recipe));

        let clones = *s.clones.get_ref();
        if !(2..=16).contains(&clones) {
            return Err(at(s.clones.span(), f("clones"), format!("{clones} is out of range: between 2 and 16 VMs are compared")));
        }

        let memory_mib = match &s.memory_mib {
            None => None,
            Some(m) if (128..=16384).contains(m.get_ref()) => Some(*m.get_ref() as u32),
            Some(m) => return Err(at(m.span(), f("memory_mib"), format!("{} is out of range: 128 to 16384 MiB", m.get_ref()))),
        };

        let mut declared = file_declared.clone();
        declared.extend(declared::validate(path, &at, &line_of, &format!("scenario[{i}].identity"), s.identity, &file_declared)?);
        let mut expect: BTreeMap<CheckName, Expectation> = declared.iter().filter_map(|d| d.expect.map(|e| (d.name(), e))).collect();
        for (k, v) in &s.expect {
            let id = match CheckId::parse(k.get_ref()) {
                Some(c) => CheckName::Builtin(c),
                None if declared.iter().any(|d| d.id == *k.get_ref()) => CheckName::Declared(k.get_ref().clone()),
                None => {
                    let ids: Vec<&str> = declared.iter().map(|d| d.id.as_str()).collect();
                    let also = if ids.is_empty() { String::new() } else { format!("; declared here: {}", ids.join(", ")) };
                    return Err(at(k.span(), f("expect"), format!("unknown check {:?}; checks are: {}{also}", k.get_ref(), CheckId::names().join(", "))));
                }
            };
            let e = Expectation::parse(v.get_ref()).ok_or_else(|| {
                at(v.span(), f(&format!("expect.{}", k.get_ref())), format!("{:?} is not an expectation; use unique, duplicate, skipped, error or any", v.get_ref()))
            })?;
            expect.insert(id, e);
        }

        let nocloud = match &s.nocloud {
            None => None,
            Some(n) => Some(match n.get_ref().as_str() {
                "per-vm" => NoCloud::PerVm,
                "shared" => NoCloud::Shared,
                other => return Err(at(n.span(), f("nocloud"), format!("{other:?} is not a NoCloud seed; use \"per-vm\" or \"shared\""))),
            }),
        };
        let pool = match &s.pool {
            None => None,
            Some(p) if recipe.method != Method::SharedRam => {
                return Err(at(p.span(), f("pool"), format!("a warm pool serves the shared-ram method, not {}", recipe.method)))
            }
            Some(p) if (1..=16).contains(p.get_ref()) => Some(*p.get_ref() as u32),
            Some(p) => return Err(at(p.span(), f("pool"), format!("{} is out of range: a warm pool of 1 to 16 processes", p.get_ref()))),
        };
        let network = match &s.network {
            None => Network::User,
            Some(n) => match n.get_ref().as_str() {
                "user" => Network::User,
                "segment" if recipe.method == Method::SharedRam => {
                    return Err(at(n.span(), f("network"), "the segment network is not offered with the shared-ram method (its frozen template would hold a port and a lease it never renews)".into()))
                }
                "segment" => Network::Segment,
                other => return Err(at(n.span(), f("network"), format!("{other:?} is not a network; use \"user\" (each VM alone) or \"segment\" (one isolated segment with DHCP)"))),
            },
        };
        let canary = s.canary || recipe.has(FixupId::MitigateRemanence);
        out.push(ScenarioPlan {
            name,
            description: s.description,
            file: path.to_path_buf(),
            line: name_line,
            guest,
            image,
            backend,
            strategy,
            recipe,
            clones: clones as u32,
            memory_mib,
            expect,
            canary,
            nocloud,
            pool,
            network,
            tpm: s.tpm,
            declared,
        });
    }
    Ok(out)
}

pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
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
