//! `clonesafe report diff OLD NEW`: which verdicts differ between two report.json files, per
//! scenario and check. It reads the files as plain JSON (`scenarios[].name`,
//! `scenarios[].checks[].id/verdict`), so it also compares reports written before
//! `schema_version` existed.

use serde_json::Value;
use std::collections::BTreeMap;

/// (scenario, check) → verdict; a scenario that could not run has the single check "error".
fn verdicts(r: &Value) -> Result<BTreeMap<(String, String), String>, String> {
    let scenarios = r["scenarios"].as_array().ok_or("no scenarios array")?;
    let mut out = BTreeMap::new();
    for s in scenarios {
        let name = s["name"].as_str().ok_or("a scenario without a name")?.to_string();
        if !s["error"].is_null() {
            out.insert((name.clone(), "(could not run)".into()), "error".into());
            continue;
        }
        for c in s["checks"].as_array().into_iter().flatten() {
            let id = c["id"].as_str().ok_or("a check without an id")?;
            let v = c["verdict"].as_str().ok_or("a check without a verdict")?;
            out.insert((name.clone(), id.to_string()), v.to_string());
        }
    }
    Ok(out)
}

/// One (scenario, check) whose verdict differs; None where a report has no such row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub scenario: String,
    pub check: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

/// How a change reads for someone deciding whether cloning is still safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// An identity became shared, or a check stopped giving an answer (error, or a scenario
    /// that no longer runs).
    Regression,
    /// An identity that was shared no longer is.
    Improvement,
    /// Anything else (skipped, a check that appeared or went away).
    Other,
}

impl Change {
    pub fn kind(&self) -> Kind {
        match (self.old.as_deref(), self.new.as_deref()) {
            (o, Some("duplicate")) if o != Some("duplicate") => Kind::Regression,
            (o, Some("error")) if o != Some("error") => Kind::Regression,
            (Some("duplicate"), Some("unique")) => Kind::Improvement,
            _ => Kind::Other,
        }
    }

    fn line(&self) -> String {
        let v = |x: &Option<String>| x.clone().unwrap_or_else(|| "(missing)".into());
        format!("{} {}: {} -> {}", self.scenario, self.check, v(&self.old), v(&self.new))
    }
}

/// Every (scenario, check) whose verdict differs, in the old report's order, then the new rows.
pub fn changes(old: &Value, new: &Value) -> Result<Vec<Change>, String> {
    let (a, b) = (verdicts(old)?, verdicts(new)?);
    let mut out = Vec::new();
    for (k, va) in &a {
        match b.get(k) {
            Some(vb) if vb == va => {}
            vb => out.push(Change { scenario: k.0.clone(), check: k.1.clone(), old: Some(va.clone()), new: vb.cloned() }),
        }
    }
    for (k, vb) in &b {
        if !a.contains_key(k) {
            out.push(Change { scenario: k.0.clone(), check: k.1.clone(), old: None, new: Some(vb.clone()) });
        }
    }
    Ok(out)
}

/// Lines describing each difference; empty when every verdict is the same.
pub fn diff(old: &Value, new: &Value) -> Result<Vec<String>, String> {
    Ok(changes(old, new)?.iter().map(Change::line).collect())
}

/// The differences as a self-contained HTML page for CI to attach: regressions first, then
/// improvements, then the rest. Every name comes from the reports, so every one is escaped.
pub fn html(changes: &[Change], old_name: &str, new_name: &str, rows: usize) -> String {
    use crate::text::xml_escape as esc;
    use std::fmt::Write;
    let mut h = String::from("<!doctype html><html><head><meta charset=\"utf-8\"><title>clonesafe report diff</title><style>body{font-family:sans-serif;margin:1.5em;max-width:60em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}th{position:sticky;top:0;background:#f4f4f4}.duplicate{background:#f6c1c1}.unique{background:#c8efc8}.error{background:#ffd591}.skipped{background:#e6e6e6}</style></head><body>");
    let _ = write!(h, "<h1>clonesafe report diff</h1><p>old: <code>{}</code><br>new: <code>{}</code></p>", esc(old_name), esc(new_name));
    if changes.is_empty() {
        let _ = write!(h, "<p>Same verdicts: {rows} (scenario, check) rows.</p></body></html>\n");
        return h;
    }
    let count = |k: Kind| changes.iter().filter(|c| c.kind() == k).count();
    let _ = write!(h, "<p><b>{}</b> regression(s), {} improvement(s), {} other change(s).</p>", count(Kind::Regression), count(Kind::Improvement), count(Kind::Other));
    for (kind, title) in [(Kind::Regression, "Regressions: an identity became shared, or a check stopped answering"), (Kind::Improvement, "Improvements: an identity is no longer shared"), (Kind::Other, "Other changes")] {
        let these: Vec<&Change> = changes.iter().filter(|c| c.kind() == kind).collect();
        if these.is_empty() {
            continue;
        }
        let _ = write!(h, "<h2>{title}</h2><table><tr><th>scenario</th><th>check</th><th>old</th><th>new</th></tr>");
        for c in these {
            let cell = |v: &Option<String>| match v {
                Some(v) => format!("<td class=\"{0}\">{0}</td>", esc(v)),
                None => "<td>(missing)</td>".into(),
            };
            let _ = write!(h, "<tr><td>{}</td><td>{}</td>{}{}</tr>", esc(&c.scenario), esc(&c.check), cell(&c.old), cell(&c.new));
        }
        h.push_str("</table>");
    }
    h.push_str("</body></html>\n");
    h
}

/// How many (scenario, check) verdicts a report holds.
pub fn count(r: &Value) -> usize {
    verdicts(r).map(|v| v.len()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn differences_and_missing_rows_are_listed() {
        let a = json!({"scenarios": [{"name": "n", "error": null, "checks": [{"id": "mac", "verdict": "duplicate"}, {"id": "boot_id", "verdict": "duplicate"}]}]});
        let b = json!({"scenarios": [{"name": "n", "checks": [{"id": "mac", "verdict": "unique"}]}, {"name": "m", "error": "boom", "checks": []}]});
        let d = diff(&a, &b).unwrap();
        assert_eq!(d, vec!["n boot_id: duplicate -> (missing)", "n mac: duplicate -> unique", "m (could not run): (missing) -> error"]);
        assert!(diff(&a, &a).unwrap().is_empty());
        assert!(diff(&json!({}), &a).is_err());
    }

    #[test]
    fn declared_identities_are_compared_like_built_in_checks() {
        let a = json!({"scenarios": [{"name": "n", "checks": [{"id": "pg_system_id", "declared": true, "verdict": "duplicate"}]}]});
        let b = json!({"scenarios": [{"name": "n", "checks": [{"id": "pg_system_id", "declared": true, "verdict": "unique"}]}]});
        assert_eq!(diff(&a, &b).unwrap(), vec!["n pg_system_id: duplicate -> unique"]);
    }

    #[test]
    fn regressions_come_first_in_the_html_and_names_are_escaped() {
        let a = json!({"scenarios": [{"name": "n", "checks": [{"id": "mac", "verdict": "duplicate"}, {"id": "machine_id", "verdict": "unique"}, {"id": "hostname", "verdict": "unique"}]}]});
        let b = json!({"scenarios": [{"name": "n", "checks": [{"id": "mac", "verdict": "unique"}, {"id": "machine_id", "verdict": "duplicate"}, {"id": "hostname", "verdict": "skipped"}]}, {"name": "<script>x</script>", "error": "boom", "checks": []}]});
        let c = changes(&a, &b).unwrap();
        let kinds: Vec<Kind> = c.iter().map(Change::kind).collect();
        assert_eq!(kinds.iter().filter(|k| **k == Kind::Regression).count(), 2, "{c:?}");
        assert!(kinds.contains(&Kind::Improvement) && kinds.contains(&Kind::Other));
        let h = html(&c, "old/report.json", "new/report.json", 3);
        let (reg, imp, oth) = (h.find("Regressions").unwrap(), h.find("Improvements").unwrap(), h.find("Other changes").unwrap());
        assert!(reg < imp && imp < oth);
        assert!(h[reg..imp].contains("machine_id") && h[imp..oth].contains("mac"));
        assert!(!h.contains("<script>") && h.contains("&lt;script&gt;"));
        assert!(html(&[], "a", "b", 7).contains("Same verdicts: 7"));
    }
}
