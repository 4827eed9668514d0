//! JUnit XML: one test suite per scenario, one test case per check (and a `run` case when the
//! scenario could not run), so CI systems show results natively.

use crate::text::xml_escape as esc;
use clonesafe_metadata::Report;
use std::fmt::Write;

pub fn render(r: &Report) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let tests: usize = r.scenarios.iter().map(|s| s.checks.len().max(1)).sum();
    let failures: usize = r.scenarios.iter().map(|s| s.checks.iter().filter(|c| !c.met).count()).sum();
    let errors = r.scenarios.iter().filter(|s| s.error.is_some()).count();
    let _ = writeln!(out, "<testsuites name=\"clonesafe\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\">");
    for s in &r.scenarios {
        let f = s.checks.iter().filter(|c| !c.met).count();
        let e = usize::from(s.error.is_some());
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{f}\" errors=\"{e}\" time=\"{:.3}\">",
            esc(&s.name),
            s.checks.len().max(1),
            s.duration_ms as f64 / 1000.0
        );
        let _ = writeln!(out, "    <properties><property name=\"strategy\" value=\"{}\"/><property name=\"backend\" value=\"{}\"/><property name=\"accel\" value=\"{}\"/></properties>", esc(&s.recipe_label()), s.backend, r.host.accel);
        if let Some(err) = &s.error {
            let _ = writeln!(out, "    <testcase classname=\"{}\" name=\"run\"><error message=\"scenario could not run\">{}</error></testcase>", esc(&s.name), esc(err));
        }
        for c in &s.checks {
            let name = c.id().as_str();
            let _ = write!(out, "    <testcase classname=\"{}\" name=\"{name}\">", esc(&s.name));
            if !c.met {
                let want = c.expected.map(|e| e.to_string()).unwrap_or_default();
                let _ = write!(out, "<failure message=\"expected {want}, got {}\">{}</failure>", c.verdict(), esc(&c.result.detail));
            }
            let _ = writeln!(out, "<system-out>{}: {}</system-out></testcase>", c.verdict(), esc(&c.result.detail));
        }
        let _ = writeln!(out, "  </testsuite>");
    }
    out.push_str("</testsuites>\n");
    out
}
