//! The committed reference runs (reports/*/) are what README's and docs/'s findings quote. Each report.json
//! must match the contract's schema, and each summary.md must be exactly what its report.json
//! renders to, so the committed files cannot drift apart.

mod common;

use clonesafe_metadata::Report;

#[test]
fn committed_reports_match_the_schema_and_their_summaries() {
    let dir = common::repo("reports");
    let mut seen = 0;
    // reports/NAME/, and reports/NAME/PART/ for a reference made of several runs (windows/qemu-10/).
    let dirs = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).filter(|p| p.is_dir()).flat_map(|p| {
        let parts: Vec<std::path::PathBuf> = std::fs::read_dir(&p).unwrap().flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
        std::iter::once(p).chain(parts)
    });
    for path in dirs {
        let json = path.join("report.json");
        if !json.is_file() {
            continue;
        }
        seen += 1;
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        common::validate_report(&v);
        let r: Report = serde_json::from_value(v).unwrap_or_else(|e| panic!("{}: {e}", json.display()));
        let summary = path.join("summary.md");
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

/// docs/coverage.md's table quotes the reference runs: every row that names a report must show,
/// per recipe column, that report's verdict for the scenario the column maps to (or `not run`
/// where the report has no such scenario), so the coverage table cannot drift from the runs.
#[test]
fn docs_coverage_matches_the_reports() {
    const COLUMNS: [&str; 6] = ["cold-boot", "image-clone", "image-clone-sysprep", "naive", "full", "shared-ram naive"];
    // The scenario each column maps to, per report (None: the report has no such recipe).
    let scenario = |report: &str, column: usize| -> Option<&'static str> {
        let row: [Option<&'static str>; 6] = match report {
            "coverage" => [Some("cold-boot"), Some("image-clone"), Some("image-clone-sysprep"), Some("naive"), Some("full"), Some("naive-shared-ram")],
            "network" => [None, None, None, Some("net-d12-naive"), Some("net-d12-full"), None],
            "apps" => [None, Some("apps-image-clone"), Some("apps-image-clone-sysprep"), Some("apps-naive"), Some("apps-full"), None],
            "coverage (libvirt)" => [Some("cold-boot-libvirt"), None, None, Some("naive-libvirt"), None, None],
            "matrix" => [Some("cold-boot-qemu"), Some("image-clone-qemu"), Some("image-clone-sysprep-qemu"), Some("naive-qemu"), Some("full-qemu"), Some("naive-shared-ram-qemu")],
            other => panic!("docs/coverage.md names reports/{other}, which this test does not map"),
        };
        row[column]
    };
    let doc = std::fs::read_to_string(common::repo("docs/coverage.md")).unwrap();
    let table = doc.split("<!-- coverage table -->\n").nth(1).and_then(|r| r.split("<!-- end -->").next()).expect("the markers in docs/coverage.md");
    let mut reports: std::collections::HashMap<String, Report> = Default::default();
    let (mut checked, mut rows) = (0, 0);
    for line in table.lines().skip(2) {
        rows += 1;
        let cells: Vec<&str> = line.trim().trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 5 + COLUMNS.len(), "docs/coverage.md: a row with {} cells: {line}", cells.len());
        // `reports/NAME`, or `reports/NAME` (libvirt) for a report's libvirt scenarios.
        let Some(report) = cells[4].strip_prefix("`reports/").map(|r| r.replacen('`', "", 1)) else {
            assert!(cells[5..].iter().all(|c| *c == "not built"), "docs/coverage.md: a row without a report must say `not built` in every cell: {line}");
            continue;
        };
        let id = cells[3].trim_matches('`');
        let report = report.as_str();
        let dir = report.split(' ').next().unwrap();
        let r = reports.entry(dir.to_string()).or_insert_with(|| {
            let p = common::repo(&format!("reports/{dir}/report.json"));
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
        });
        for (i, column) in COLUMNS.iter().enumerate() {
            let want = match scenario(report, i) {
                None => "not run".to_string(),
                Some(name) => {
                    let s = r.scenarios.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("reports/{report} has no scenario {name}"));
                    let c = s.checks.iter().find(|c| c.id().to_string() == id).unwrap_or_else(|| panic!("reports/{report}/{name} has no check {id}"));
                    clonesafe::report::markdown::verdict_cell(c.verdict()).to_string()
                }
            };
            assert_eq!(cells[5 + i], want, "docs/coverage.md, `{id}` under {column}: reports/{report} says {want}");
            checked += 1;
        }
    }
    assert!(rows >= 35 && checked >= 200, "docs/coverage.md's table has {rows} rows and {checked} measured cells: it should hold the union of the hazard lists");
}

/// reports/windows/race-windows.md is what `clonesafe report windows` makes of the two committed
/// runs, and README's race-window table is that table.
#[test]
fn the_race_window_table_is_what_its_reports_give_and_readme_quotes_it() {
    let dir = common::repo("reports/windows");
    let runs = [dir.join("qemu-7.2/report.json"), dir.join("qemu-10/report.json")];
    let out = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_clonesafe"))
        .current_dir(common::repo(""))
        .args(["report", "windows", "reports/windows/qemu-7.2/report.json", "reports/windows/qemu-10/report.json", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(o.status.success() && runs.iter().all(|r| r.is_file()), "{}", String::from_utf8_lossy(&o.stderr));
    let made = std::fs::read_to_string(out.path().join("race-windows.md")).unwrap();
    let committed = std::fs::read_to_string(dir.join("race-windows.md")).unwrap();
    assert!(made == committed, "reports/windows/race-windows.md is not what its two reports give; regenerate it with clonesafe report windows");
    let table: Vec<&str> = made.lines().filter(|l| l.starts_with('|')).collect();
    let readme = std::fs::read_to_string(common::repo("README.md")).unwrap();
    let quoted = readme.split("<!-- race windows table -->\n").nth(1).and_then(|r| r.split("<!-- end -->").next()).expect("the race windows markers in README.md");
    let quoted: Vec<&str> = quoted.lines().filter(|l| l.starts_with('|')).collect();
    assert_eq!(quoted, table, "README's race-window table differs from reports/windows/race-windows.md");
}
