//! The committed reference runs (reports/*/) are what README's and docs/'s findings quote. Each report.json
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

/// No package mirror's address is written into a script or a committed report: builds take the
/// mirror from the machine's own apt configuration (guests/lib/mirror.sh), and environment.md
/// leaves it out (issue 19: ci/install-qemu10.sh named one, and every environment.md did).
#[test]
fn no_script_or_report_names_a_mirror() {
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    for dir in ["ci", "guests/lib", "guests/tiny", "guests/debian12", "guests/debian13", "guests/debian12-apps", "guests/debian12-hazards"] {
        for e in std::fs::read_dir(common::repo(dir)).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "sh") {
                files.push(e.path());
            }
        }
    }
    for e in std::fs::read_dir(common::repo("reports")).unwrap().flatten() {
        let env = e.path().join("environment.md");
        if env.is_file() {
            files.push(env);
        }
    }
    assert!(files.len() >= 10, "{files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, line) in text.lines().enumerate() {
            // The pattern mirror.sh greps apt's configuration with is not an address.
            let url = line.split_whitespace().find(|w| (w.contains("http://") || w.contains("https://")) && !w.contains("https?://"));
            assert!(url.is_none(), "{}:{}: names a host: {line}", f.display(), i + 1);
        }
    }
}
