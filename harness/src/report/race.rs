//! The race-window table of issue 21 (`clonesafe report windows`): from one or more reports (one
//! per QEMU), one row per kernel x VMM x recipe, pooling the scenarios that repeat a cell. Per
//! clone and per random source (the kernel's getrandom, glibc's vDSO getrandom, the kernel's
//! random uuid) it finds how long that clone's output stayed equal to another clone's: the
//! offset of the first sample after its last shared one (0: its first read was already its
//! own; "≥" when it still shared the last sample, so the window is at least that long). Samples
//! are compared index by index, as the checks compare them. Everything shown that came from a
//! guest (kernel release, details) is escaped for markdown.

use super::plots::median;
use clonesafe_metadata::{CheckId, MeasurementId, Report, ScenarioReport, Verdict};
use serde_json::Value;
use std::collections::BTreeMap;

/// The three random sources, in table order: (check, column heading).
pub const SOURCES: [(CheckId, &str); 3] = [(CheckId::KernelRng, "kernel getrandom(2)"), (CheckId::VdsoRng, "glibc getrandom() (vDSO)"), (CheckId::RandomUuid, "random uuid")];

/// How long one clone's output stayed shared with another clone's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// ms after the clone's first post-resume sample.
    pub ms: f64,
    /// It still shared its last sample: the window is at least `ms`.
    pub open_ended: bool,
}

/// One random source in one cell.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// Per snapshot (scenario): whether two clones read the same first sample.
    pub first_shared: Vec<bool>,
    pub windows: Vec<Window>,
    /// Why there are no samples (the check's detail), when it was skipped everywhere.
    pub skipped: Option<String>,
}

/// One kernel x VMM x recipe.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cell {
    pub guest: String,
    pub kernel: String,
    pub vmm: String,
    pub recipe: String,
    pub scenarios: Vec<String>,
    pub clones: usize,
    pub series: [Series; 3],
    /// ms after the first sample at which each clone heard NEW_VMGENID.
    pub uevent_ms: Vec<f64>,
    /// Why no NEW_VMGENID was heard, when none was (no device, kernel too old, not sent).
    pub uevent_none: Option<String>,
    /// Per clone: "at resume", "after 1 s", "never"; empty when no clone had the device.
    pub vmclock_seen: Vec<String>,
    pub vmclock_none: Option<String>,
    /// The gate's cost per clone (rng-gate or genid-wait), with its measurement.
    pub gate: Option<(MeasurementId, Vec<f64>)>,
    /// Scenarios that failed: name and error.
    pub failed: Vec<(String, String)>,
}

/// Whether a cell closes the window for a program that reads at the moment of resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closure {
    /// Every clone's first read of every sampled source was its own.
    Closed,
    /// Some clone shared a read, but every window ended within the sampling, where the naive
    /// cell's on the same kernel and VMM did not, or ended sooner than naive's longest.
    Narrowed,
    Open,
    /// Nothing sampled.
    Unknown,
}

impl Cell {
    fn all_windows(&self) -> impl Iterator<Item = &Window> {
        self.series.iter().flat_map(|s| s.windows.iter())
    }
    fn longest(&self) -> Option<f64> {
        self.all_windows().map(|w| w.ms).fold(None, |a, b| Some(a.map_or(b, |a: f64| a.max(b))))
    }
}

/// The recipe as the table names it: "naive", or the fix-ups joined with " + ".
fn recipe_name(s: &ScenarioReport) -> String {
    if s.recipe.fixups.is_empty() {
        if s.recipe.method == clonesafe_metadata::Method::Live { "naive".into() } else { s.recipe.method.to_string() }
    } else {
        s.recipe.fixups.iter().map(|f| f.to_string()).collect::<Vec<_>>().join(" + ")
    }
}

fn vmm_of(r: &Report) -> String {
    r.host.vmms.iter().find(|v| v.name == "qemu").map(|v| format!("QEMU {}", v.version)).unwrap_or_else(|| r.host.qemu.clone())
}

fn evidence<'a>(s: &'a ScenarioReport, id: CheckId) -> Option<(&'a clonesafe_metadata::CheckResult, Option<&'a Value>)> {
    s.check(id).map(|c| (&c.result, c.result.evidence.as_ref()))
}

/// Per clone, from a check's evidence (`vms[].samples[]` of `{hex, offset_ms}`): its window.
pub fn clone_windows(ev: &Value) -> Vec<Window> {
    let vms: Vec<Vec<(String, f64)>> = ev["vms"]
        .as_array()
        .map(|vms| vms.iter().map(|v| v["samples"].as_array().map(|s| s.iter().map(|x| (x["hex"].as_str().unwrap_or("").to_string(), x["offset_ms"].as_f64().unwrap_or(0.0))).collect()).unwrap_or_default()).collect())
        .unwrap_or_default();
    vms.iter()
        .enumerate()
        .filter(|(_, s)| !s.is_empty())
        .map(|(i, samples)| {
            let shared = |k: usize| vms.iter().enumerate().any(|(j, o)| j != i && o.get(k).is_some_and(|x| x.0 == samples[k].0));
            match (0..samples.len()).rev().find(|&k| shared(k)) {
                None => Window { ms: 0.0, open_ended: false },
                Some(k) if k + 1 == samples.len() => Window { ms: samples[k].1, open_ended: true },
                Some(k) => Window { ms: samples[k + 1].1, open_ended: false },
            }
        })
        .collect()
}

fn first_shared(ev: &Value) -> bool {
    ev["per_sample"].as_array().and_then(|p| p.first()).is_some_and(|p| p["distinct"].as_u64() < p["of"].as_u64())
}

/// The cells of these reports, in kernel, VMM and recipe order.
pub fn cells(reports: &[Report]) -> Vec<Cell> {
    let kernel_of = |s: &ScenarioReport| evidence(s, CheckId::VmgenidUevent).and_then(|(_, e)| e).and_then(|e| e["vms"][0]["kernel"].as_str()).map(str::to_string);
    // A scenario whose evidence names no kernel (a report from before vmgenid_uevent's skipped
    // evidence named it) takes the kernel another scenario of the same guest reported.
    let guest_kernel: BTreeMap<String, String> = reports.iter().flat_map(|r| r.scenarios.iter()).filter_map(|s| Some((s.guest.clone(), kernel_of(s)?))).collect();
    let mut by: BTreeMap<(String, String, String), Cell> = BTreeMap::new();
    for r in reports {
        let qemu = vmm_of(r);
        for s in &r.scenarios {
            let vmm = if s.backend == clonesafe_metadata::BackendKind::Qemu { qemu.clone() } else { format!("{} through {}", qemu, s.backend) };
            let kernel = kernel_of(s).or_else(|| guest_kernel.get(&s.guest).cloned()).unwrap_or_default();
            let recipe = recipe_name(s);
            let key_kernel = if kernel.is_empty() { s.guest.clone() } else { kernel.clone() };
            let c = by.entry((key_kernel, vmm.clone(), recipe.clone())).or_insert_with(|| Cell { guest: s.guest.clone(), kernel: kernel.clone(), vmm: vmm.clone(), recipe, ..Default::default() });
            if c.kernel.is_empty() {
                c.kernel = kernel;
            }
            c.scenarios.push(s.name.clone());
            if let Some(e) = &s.error {
                c.failed.push((s.name.clone(), e.clone()));
                continue;
            }
            c.clones += s.clones as usize;
            for (i, (id, _)) in SOURCES.iter().enumerate() {
                match evidence(s, *id) {
                    Some((res, Some(ev))) if res.verdict != Verdict::Skipped => {
                        c.series[i].first_shared.push(first_shared(ev));
                        c.series[i].windows.extend(clone_windows(ev));
                    }
                    Some((res, _)) if res.verdict == Verdict::Skipped => c.series[i].skipped = Some(res.detail.clone()),
                    _ => {}
                }
            }
            if let Some((res, ev)) = evidence(s, CheckId::VmgenidUevent) {
                let heard: Vec<f64> = ev.and_then(|e| e["vms"].as_array()).map(|vms| vms.iter().filter_map(|v| v["new_vmgenid_ms"][0].as_f64()).collect()).unwrap_or_default();
                if heard.is_empty() {
                    c.uevent_none = Some(res.detail.clone());
                }
                c.uevent_ms.extend(heard);
            }
            if let Some((res, _)) = evidence(s, CheckId::Vmclock) {
                if res.verdict == Verdict::Skipped {
                    c.vmclock_none = Some(res.detail.clone());
                } else {
                    c.vmclock_seen.extend(res.values.iter().map(|v| v.as_str().unwrap_or("?").to_string()));
                }
            }
            for m in [MeasurementId::RngGateMs, MeasurementId::GenidWaitMs] {
                let v = s.timing.measured(m);
                if !v.is_empty() {
                    c.gate.get_or_insert((m, Vec::new())).1.extend(v);
                }
            }
        }
    }
    let mut out: Vec<Cell> = by.into_values().collect();
    sort(&mut out);
    out
}

/// The table's order: kernel (a guest without one first), then VMM, by version; then recipe,
/// naive first.
fn sort(cells: &mut [Cell]) {
    let order = |r: &str| ["naive", "vmgenid", "vmgenid + rng-gate", "vmgenid + genid-wait", "vmgenid + vmclock"].iter().position(|x| *x == r).unwrap_or(9);
    cells.sort_by(|a, b| version_key(&a.kernel).cmp(&version_key(&b.kernel)).then(version_key(&a.vmm).cmp(&version_key(&b.vmm))).then(order(&a.recipe).cmp(&order(&b.recipe))).then(a.recipe.cmp(&b.recipe)));
}

/// The numbers in a version string, for ordering 6.1 < 6.12 < 7.3 and QEMU 7.2 < 10.0.
fn version_key(s: &str) -> Vec<u32> {
    s.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty()).take(3).map(|p| p.parse().unwrap_or(0)).collect()
}

/// Whether `c` closes the window, against the naive cell of its kernel and VMM.
pub fn closure(c: &Cell, all: &[Cell]) -> Closure {
    if c.all_windows().next().is_none() {
        return Closure::Unknown;
    }
    if c.all_windows().all(|w| w.ms == 0.0) {
        return Closure::Closed;
    }
    // Narrowed: every window of this cell ended within the sampling, and naive's did not (its
    // windows are at least as long as sampled) or its longest was longer than this cell's.
    let Some(naive) = all.iter().find(|n| n.kernel == c.kernel && n.vmm == c.vmm && n.recipe == "naive") else { return Closure::Open };
    let bounded = !c.all_windows().any(|w| w.open_ended);
    let naive_open = naive.all_windows().any(|w| w.open_ended);
    match (naive.longest(), c.longest()) {
        (Some(n), Some(l)) if c.recipe != "naive" && bounded && (naive_open || l < n) => Closure::Narrowed,
        _ => Closure::Open,
    }
}

fn ms(w: &Window) -> String {
    format!("{}{:.0}", if w.open_ended { "≥" } else { "" }, w.ms)
}

/// "shared first read in a/b · median / max ms".
fn series_cell(s: &Series) -> String {
    if s.windows.is_empty() {
        return match &s.skipped {
            // The detail's first clause says why; the VM names after it are in the report.
            Some(why) => format!("skipped: {}", crate::text::md_escape(&crate::text::truncate(why.split(": ").next().unwrap_or(why), 90))),
            None => "–".into(),
        };
    }
    let mut w = s.windows.clone();
    w.sort_by(|a, b| a.ms.partial_cmp(&b.ms).unwrap_or(std::cmp::Ordering::Equal));
    let mid = &w[(w.len() - 1) / 2];
    let med = if w.len() % 2 == 0 {
        let (a, b) = (&w[w.len() / 2 - 1], &w[w.len() / 2]);
        Window { ms: (a.ms + b.ms) / 2.0, open_ended: a.open_ended || b.open_ended }
    } else {
        *mid
    };
    let shared = s.first_shared.iter().filter(|x| **x).count();
    format!("{}/{} · {} / {} ms", shared, s.first_shared.len(), ms(&med), ms(w.last().expect("not empty")))
}

fn uevent_cell(c: &Cell) -> String {
    if !c.uevent_ms.is_empty() {
        let max = c.uevent_ms.iter().copied().fold(0.0f64, f64::max);
        return format!("{} of {} clones, median {:.0} / max {:.0} ms", c.uevent_ms.len(), c.clones, median(&c.uevent_ms).unwrap_or(0.0), max);
    }
    match c.uevent_none.as_deref() {
        Some(d) if d.contains("no vmgenid device") => "no device".into(),
        Some(d) if d.contains("(Linux 6.8+)") => "kernel predates it (6.8)".into(),
        Some(d) if d.contains("sent no NEW_VMGENID") => "none sent (reseed logged)".into(),
        Some(d) if d.contains("not restored") => "– (booted)".into(),
        Some(d) => crate::text::md_escape(&crate::text::truncate(d, 60)),
        None => "–".into(),
    }
}

fn vmclock_cell(c: &Cell) -> String {
    if c.vmclock_seen.is_empty() {
        return match c.vmclock_none.as_deref() {
            Some(_) if c.recipe.contains("vmclock") => "no /dev/vmclock0 (Linux < 6.13)".into(),
            _ => "–".into(),
        };
    }
    let at = c.vmclock_seen.iter().filter(|s| *s == "at resume").count();
    let later = c.vmclock_seen.iter().filter(|s| *s == "after 1 s").count();
    let mut out = format!("changed at resume in {at} of {}", c.vmclock_seen.len());
    if later > 0 {
        out.push_str(&format!(", {later} only after 1 s"));
    }
    out
}

fn gate_cell(c: &Cell) -> String {
    match &c.gate {
        Some((m, v)) => format!("{}: median {:.0} / max {:.0} ms", m.as_str(), median(v).unwrap_or(0.0), v.iter().copied().fold(0.0f64, f64::max)),
        None => "–".into(),
    }
}

/// race-windows.md: where the cells come from (`sources`, the reports' paths), how to read
/// them, and the table.
pub fn page(sources: &[String], cells: &[Cell]) -> String {
    let from: Vec<String> = sources.iter().map(|p| format!("`{}`", crate::text::md_escape(p))).collect();
    format!(
        "# Race windows\n\nFrom {} (`clonesafe report windows`). Per cell, for each random source: in how many snapshots two clones read the same first sample, then the median and longest time, over the cell's clones, until a clone's output was its own (ms after its first read; 0: its first read was already its own; ≥: still shared at the last sample, +300 ms). \"A read at resume\" is **closed** where every clone's first read of every source was its own; narrowed where every window ended within the sampling and naive's on that kernel and VMM did not, or ended sooner than naive's longest; open otherwise.\n\n{}\n",
        from.join(" and "),
        markdown(cells)
    )
}

/// The table, one row per cell, and the failed scenarios under it.
pub fn markdown(cells: &[Cell]) -> String {
    let mut out = String::from("| kernel | VMM | recipe | clones | ");
    out.push_str(&SOURCES.iter().map(|(_, h)| format!("{h}: first read shared · window median / max")).collect::<Vec<_>>().join(" | "));
    out.push_str(" | NEW_VMGENID heard | VMClock change | gate cost | a read at resume |\n|");
    out.push_str(&"---|".repeat(4 + SOURCES.len() + 4));
    out.push('\n');
    for c in cells {
        let kernel = if c.kernel.is_empty() { c.guest.clone() } else { format!("{} ({})", c.kernel, c.guest) };
        let closure = match closure(c, cells) {
            Closure::Closed => "**closed**",
            Closure::Narrowed => "narrowed",
            Closure::Open => "open",
            Closure::Unknown => "–",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            crate::text::md_escape(&kernel),
            crate::text::md_escape(&c.vmm),
            c.recipe,
            c.clones,
            c.series.iter().map(series_cell).collect::<Vec<_>>().join(" | "),
            uevent_cell(c),
            vmclock_cell(c),
            format!("{} | {}", gate_cell(c), closure),
        ));
    }
    for c in cells {
        for (name, e) in &c.failed {
            out.push_str(&format!("\n- {} failed: {}", crate::text::md_escape(name), crate::text::md_escape(&crate::text::truncate(e, 300))));
        }
    }
    out
}

/// The windows as dots, one row per cell: per clone and source, how long it stayed shared
/// (hollow: still shared at the last sample).
pub fn plot(cells: &[Cell]) -> Result<String, String> {
    let labels: Vec<String> = cells.iter().map(|c| format!("{} {} {}", short_kernel(c), c.vmm.trim_start_matches("QEMU "), c.recipe)).collect();
    let colors = [super::plots::RED, super::plots::BLUE, super::plots::GREEN];
    let series: Vec<(&str, plotters::style::RGBColor, Vec<Vec<(f64, bool)>>)> = SOURCES
        .iter()
        .enumerate()
        .map(|(i, (_, name))| (*name, colors[i], cells.iter().map(|c| c.series[i].windows.iter().map(|w| (w.ms, w.open_ended)).collect()).collect()))
        .collect();
    super::plots::dots("How long clones' randomness stayed shared after resume (per clone)", "ms after the clone's first read (hollow: still shared at the last sample)", &labels, &series)
}

fn short_kernel(c: &Cell) -> String {
    let v = version_key(&c.kernel);
    if v.len() >= 2 { format!("{}.{}", v[0], v[1]) } else { c.guest.clone() }
}

#[cfg(test)]
mod tests;
