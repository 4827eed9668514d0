//! The Markdown summary of a run, for `reports/` and for review without a browser. Every string
//! that is not this file's own text goes through [`md_escape`]: names, notes, errors and host
//! strings can come from a guest (the agent's OS name, a hostname) or from a shard report.

use super::html::{columns, measured_ids, still_duplicated};
use clonesafe_metadata::{Report, Verdict};
use crate::text::md_escape as e;
use std::fmt::Write;

/// How a verdict is written in a summary's matrix (and in docs/coverage.md, which quotes them).
pub fn verdict_cell(v: Verdict) -> &'static str {
    match v {
        Verdict::Unique => "unique",
        Verdict::Duplicate => "**DUP**",
        Verdict::Error => "error",
        Verdict::Skipped => "-",
    }
}

fn cell(v: Verdict, met: bool) -> String {
    let s = verdict_cell(v);
    if met { s.to_string() } else { format!("{s} (unmet)") }
}

pub fn render(r: &Report) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# clonesafe reference report\n");
    let _ = writeln!(
        m,
        "clonesafe {}, accelerator **{}** ({}), {}, host kernel {}, guest kernel {}, {} CPUs.\n",
        e(&r.clonesafe_version),
        r.host.accel,
        e(&r.host.accel_reason),
        e(&r.host.qemu),
        e(&r.host.kernel),
        e(r.host.guest_kernel.as_deref().unwrap_or("?")),
        r.host.cpus
    );
    let _ = writeln!(m, "`unique`: every clone had its own value. **DUP**: at least two clones shared one. `-`: not applicable (skipped). The evidence for every cell is in `report.json` and `report.html`.\n");
    let cols = columns(r);
    let _ = write!(m, "| scenario | strategy | backend |");
    for id in &cols {
        let _ = write!(m, " {}{} |", e(id.as_str()), if id.is_declared() { " (declared)" } else { "" });
    }
    let _ = write!(m, "\n|---|---|---|");
    for _ in &cols {
        m.push_str("---|");
    }
    m.push('\n');
    for s in &r.scenarios {
        let _ = write!(m, "| {} | {} | {} |", e(&s.name), e(&s.recipe_label()), s.backend);
        match &s.error {
            Some(err) => {
                let _ = write!(m, " could not run: {} |", e(err.lines().next().unwrap_or_default()));
            }
            None => {
                for id in &cols {
                    let c = s.check(id);
                    let _ = write!(m, " {} |", c.map(|c| cell(c.verdict(), c.met)).unwrap_or_default());
                }
            }
        }
        m.push('\n');
    }
    let _ = writeln!(m, "\n## What stays duplicated under `full`, and why\n");
    for (s, dups) in still_duplicated(r) {
        let _ = writeln!(m, "### {} ({})\n", e(&s.name), s.backend);
        if dups.is_empty() {
            let _ = writeln!(m, "Nothing: every identity was unique.\n");
        }
        for (id, why) in dups {
            let _ = writeln!(m, "- **{}**: {}", e(id.as_str()), e(why));
        }
        m.push('\n');
    }
    let ids = measured_ids(r);
    let _ = write!(m, "## Timing (medians, ms)\n\n| scenario | boot | snapshot | restore |");
    for id in &ids {
        let _ = write!(m, " {} |", e(id.label()));
    }
    let _ = writeln!(m, "\n|---|---|---|---|{}", "---|".repeat(ids.len()));
    let med = |v: Vec<f64>| super::plots::median(&v).map(|x| format!("{x:.0}")).unwrap_or_else(|| "-".into());
    for s in r.scenarios.iter().filter(|s| s.error.is_none()) {
        let t = &s.timing;
        let _ = write!(
            m,
            "| {} | {} | {} | {} |",
            e(&s.name),
            med(t.boot_ms.iter().map(|&x| x as f64).collect()),
            t.snapshot_ms.map(|x| x.to_string()).unwrap_or_else(|| "-".into()),
            med(t.restore_ms.iter().map(|&x| x as f64).collect()),
        );
        for id in &ids {
            let _ = write!(m, " {} |", med(t.measured(*id)));
        }
        m.push('\n');
    }
    let _ = writeln!(m, "\n## Notes\n");
    for s in &r.scenarios {
        for n in &s.notes {
            let _ = writeln!(m, "- {}: {}", e(&s.name), e(n));
        }
    }
    m
}
