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

/// Lines describing each difference; empty when every verdict is the same.
pub fn diff(old: &Value, new: &Value) -> Result<Vec<String>, String> {
    let (a, b) = (verdicts(old)?, verdicts(new)?);
    let mut out = Vec::new();
    for (k, va) in &a {
        match b.get(k) {
            None => out.push(format!("{} {}: {va} -> (missing)", k.0, k.1)),
            Some(vb) if vb != va => out.push(format!("{} {}: {va} -> {vb}", k.0, k.1)),
            Some(_) => {}
        }
    }
    for (k, vb) in &b {
        if !a.contains_key(k) {
            out.push(format!("{} {}: (missing) -> {vb}", k.0, k.1));
        }
    }
    Ok(out)
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
}
