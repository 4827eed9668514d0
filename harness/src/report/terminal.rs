//! Human output: progress lines while VMs boot (stderr, a spinner on a terminal) and, when the
//! run finishes, a verdict table per scenario (stdout).

use crate::events::{Event, EventKind, EventSink};
use clonesafe_metadata::{Report, ScenarioReport};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::fmt::Write;
use std::time::Duration;

/// Prints one line per event to stderr; on a terminal, a spinner shows the phase in progress.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub fn new() -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(ProgressStyle::with_template("{spinner} [{elapsed}] {msg}").expect("valid template"));
        bar.enable_steady_tick(Duration::from_millis(120));
        Progress { bar }
    }
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl EventSink for Progress {
    fn emit(&self, e: Event) {
        let who = e.scenario.as_deref().unwrap_or("run");
        let (line, spin) = match &e.kind {
            EventKind::RunStarted { scenarios, accel, accel_reason } => {
                (Some(format!("{scenarios} scenario(s); accelerator {accel}: {accel_reason}")), None)
            }
            EventKind::ScenarioStarted { strategy, recipe, backend, vms } => {
                let what = if strategy == "custom" { recipe.clone() } else { strategy.clone() };
                (Some(format!("{who}: {what} on {backend}, {vms} VMs")), None)
            }
            EventKind::Booting { vm } => (None, Some(format!("{who}: booting {vm}"))),
            EventKind::Booted { vm, ms, cpu_ms } => {
                let cpu = cpu_ms.map(|c| format!(" (its QEMU ran {c} ms of CPU)")).unwrap_or_default();
                (Some(format!("{who}: {vm} booted in {ms} ms{cpu}")), None)
            }
            EventKind::Snapshotting { vm } => (None, Some(format!("{who}: snapshotting {vm}"))),
            EventKind::Snapshotted { vm, ms, bytes } => {
                (Some(format!("{who}: snapshot of {vm} in {ms} ms ({:.1} MB)", *bytes as f64 / 1e6)), None)
            }
            EventKind::Restoring { vm } => (None, Some(format!("{who}: restoring {vm}"))),
            EventKind::Restored { vm, ms } => (Some(format!("{who}: {vm} restored and probed in {ms} ms")), None),
            EventKind::Gathered { source, vm, ms, steps } => {
                let of = vm.as_deref().map(|v| format!(" of {v}")).unwrap_or_default();
                let parts: Vec<String> = steps.iter().map(|(s, ms)| format!("{s} {ms} ms")).collect();
                let parts = if parts.is_empty() { String::new() } else { format!(" ({})", parts.join(", ")) };
                (Some(format!("{who}: {source}{of} gathered in {ms} ms{parts}")), None)
            }
            EventKind::Note { text } => (Some(format!("{who}: {text}")), None),
            EventKind::ScenarioFinished { report } => (
                Some(match &report.error {
                    Some(e) => format!("{who}: could not run: {}", e.lines().next().unwrap_or_default()),
                    None if report.expectations_met => format!("{who}: expectations met"),
                    None => format!("{who}: EXPECTATIONS NOT MET"),
                }),
                None,
            ),
            EventKind::RunFinished { report, .. } => {
                self.bar.finish_and_clear();
                print!("{}", crate::text::for_terminal(&render(report)));
                (None, None)
            }
        };
        // Scenario names, notes and errors can carry what a guest said (issue 19, item 8).
        if let Some(l) = line.map(|l| crate::text::for_terminal(&l)) {
            let secs = e.elapsed.as_secs_f64();
            if self.bar.is_hidden() {
                eprintln!("[{secs:7.1}s] {l}");
            } else {
                self.bar.println(format!("[{secs:7.1}s] {l}"));
            }
        }
        if let Some(s) = spin {
            self.bar.set_message(crate::text::for_terminal(&s));
        }
    }
}

fn short(v: &serde_json::Value, n: usize) -> String {
    let s = match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    if s.chars().count() > n {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    } else {
        s
    }
}

pub fn scenario_table(s: &ScenarioReport) -> String {
    let mut out = String::new();
    let status = match (&s.error, s.expectations_met) {
        (Some(_), _) => "COULD NOT RUN",
        (None, true) => "expectations met",
        (None, false) => "EXPECTATIONS NOT MET",
    };
    let _ = writeln!(out, "\n== {} ({} on {}, {} VMs, {} MiB): {status}", s.name, s.recipe_label(), s.backend, s.clones, s.memory_mib);
    if let Some(e) = &s.error {
        let _ = writeln!(out, "{e}");
        return out;
    }
    if let Some(src) = s.source.as_ref().filter(|u| u.how != clonesafe_metadata::SourceHow::Own) {
        // Scenario names are the user's (escaped like the rest of the terminal output).
        let _ = writeln!(out, "   source: {} ({}; booted in {})", crate::text::for_terminal(&src.id), src.how, crate::text::for_terminal(&src.booted_in));
    }
    let t = &s.timing;
    let list = |v: &[u64]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ");
    let _ = write!(out, "   timing: boot_ms [{}]", list(&t.boot_ms));
    if let Some(ms) = t.snapshot_ms {
        let _ = write!(out, "  snapshot_ms {ms}");
    }
    if !t.restore_ms.is_empty() {
        let _ = write!(out, "  restore_ms [{}]", list(&t.restore_ms));
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "   {:<16} {:<10} {:<10} {:<3} {:<26} detail", "check", "verdict", "expected", "ok", "values (first VMs)");
    for c in &s.checks {
        let vals: Vec<String> = c.result.values.iter().take(3).map(|v| short(v, 8)).collect();
        let _ = writeln!(
            out,
            "   {:<16} {:<10} {:<10} {:<3} {:<26} {}",
            c.id().as_str(),
            c.verdict().to_string(),
            c.expected.map(|e| e.to_string()).unwrap_or_else(|| "-".into()),
            if c.met { "ok" } else { "NO" },
            vals.join(" "),
            c.result.detail
        );
    }
    for n in &s.notes {
        let _ = writeln!(out, "   note: {n}");
    }
    out
}

/// The plain closing line CI systems read (print it last): a scenario passes when it ran and
/// every expectation held.
pub fn closing_line(r: &Report) -> String {
    let met = r.scenarios.iter().filter(|s| s.passed()).count();
    format!("scenarios: {met} passed, {} failed", r.scenarios.len() - met)
}

pub fn render(r: &Report) -> String {
    let mut out = String::new();
    for s in &r.scenarios {
        out.push_str(&scenario_table(s));
    }
    let met = r.scenarios.iter().filter(|s| s.passed()).count();
    let _ = writeln!(out, "\n{met} of {} scenario(s) met their expectations (accelerator: {}).", r.scenarios.len(), r.host.accel);
    out
}
