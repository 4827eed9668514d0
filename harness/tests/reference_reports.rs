//! The committed reference runs (reports/*/) are what README's findings quote. Each report.json
//! must match the contract's schema, and each summary.md must be exactly what its report.json
//! renders to, so the committed files cannot drift apart.

mod common;

use clonesafe_metadata::Report;

#[test]
fn committed_reports_match_the_schema_and_their_summaries() {
    let dir = common::repo("reports");
    let mut seen = 0;
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let json = e.path().join("report.json");
        if !json.is_file() {
            continue;
        }
        seen += 1;
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        common::validate_report(&v);
        let r: Report = serde_json::from_value(v).unwrap_or_else(|e| panic!("{}: {e}", json.display()));
        let summary = e.path().join("summary.md");
        if summary.is_file() {
            let committed = std::fs::read_to_string(&summary).unwrap();
            assert!(committed == clonesafe::report::markdown::render(&r), "{} is not what {} renders to; regenerate both with the same run", summary.display(), json.display());
        }
    }
    assert!(seen >= 1, "no reference report under {}", dir.display());
}
