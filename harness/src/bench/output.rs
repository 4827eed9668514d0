//! What `clonesafe bench` writes: `bench.json` (the [`BenchReport`] itself), `bench.md` (medians,
//! ratios and the targets of issue 10, each with the figures it was computed from) and two SVG
//! plots (restore time against memory, and against fan-out).
//!
//! Every ratio is computed from samples of one run: medians per (method, memory, fan-out); for a
//! fan-out, the slowest clone of each round (each clone is timed to its own answer), against the
//! median single clone.

use super::{BenchMethod, BenchReport, Sample};
use crate::report::plots::{lines_log_y, median};
use plotters::style::RGBColor;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// The samples of one (method, memory, fan-out) cell, with or without multifd channels.
fn cell<'a>(r: &'a BenchReport, method: BenchMethod, memory: u32, fanout: u32, multifd: bool) -> impl Iterator<Item = &'a Sample> {
    r.samples.iter().filter(move |s| s.method == method && s.memory_mib == memory && s.fanout == fanout && (s.multifd_channels.unwrap_or(0) > 0) == multifd)
}

/// The samples of a cell without multifd (every method but mapped-ram has none).
fn of<'a>(r: &'a BenchReport, method: BenchMethod, memory: u32, fanout: u32) -> impl Iterator<Item = &'a Sample> {
    cell(r, method, memory, fanout, false)
}

/// Median ms of a (method, memory, fan-out) cell.
pub fn median_ms(r: &BenchReport, method: BenchMethod, memory: u32, fanout: u32) -> Option<f64> {
    median(&of(r, method, memory, fanout).map(|s| s.ms).collect::<Vec<_>>())
}

/// The median over rounds of the slowest clone of each round of fan-out `fanout`.
pub fn slowest_ms(r: &BenchReport, method: BenchMethod, memory: u32, fanout: u32) -> Option<f64> {
    let mut rounds: std::collections::BTreeMap<u32, f64> = Default::default();
    for s in of(r, method, memory, fanout) {
        let e = rounds.entry(s.repeat).or_insert(0.0);
        *e = e.max(s.ms);
    }
    median(&rounds.into_values().collect::<Vec<_>>())
}

/// The CPU floor of a fan-out: per round, the CPU time its clones' QEMU processes used, summed
/// and spread over the host's CPUs (no round can end before that much CPU has been spent), the
/// median over rounds. None where no round had every clone's CPU time read.
pub fn cpu_floor_ms(r: &BenchReport, method: BenchMethod, memory: u32, fanout: u32) -> Option<f64> {
    let mut rounds: std::collections::BTreeMap<u32, Option<f64>> = Default::default();
    for s in of(r, method, memory, fanout) {
        let e = rounds.entry(s.repeat).or_insert(Some(0.0));
        *e = match (*e, s.phases.and_then(|p| p.cpu_ms)) {
            (Some(a), Some(c)) => Some(a + c),
            _ => None,
        };
    }
    let cores = f64::from(r.host.vcpus.max(1));
    // A round where one clone's CPU time was not read has no floor; the other rounds keep theirs.
    median(&rounds.into_values().flatten().map(|c| c / cores).collect::<Vec<_>>())
}

fn snapshot_of(r: &BenchReport, method: BenchMethod, memory: u32) -> Option<(f64, u64)> {
    r.samples.iter().find(|s| s.method == method && s.memory_mib == memory && s.multifd_channels.unwrap_or(0) == 0).and_then(|s| Some((s.snapshot_ms?, s.snapshot_bytes?)))
}

fn fmt(v: Option<f64>) -> String {
    v.map(|x| if x >= 100.0 { format!("{x:.0}") } else { format!("{x:.1}") }).unwrap_or_else(|| "-".into())
}

/// One target of issue 10: what it asks, what was measured, and whether it holds.
pub struct Target {
    pub what: String,
    pub measured: String,
    pub met: Option<bool>,
}

pub fn targets(r: &BenchReport) -> Vec<Target> {
    use BenchMethod::*;
    let mut out = Vec::new();
    let mems = &r.params.memory_mib;
    let (lo, hi) = (mems.iter().min().copied().unwrap_or(0), mems.iter().max().copied().unwrap_or(0));
    // 1. pooled shared-RAM restore <= 1/100 of a cold boot, at every size (the worst size shown).
    let worst = mems.iter().filter_map(|&m| Some((m, median_ms(r, PooledShared, m, 1)?, median_ms(r, Boot, m, 1)?))).max_by(|a, b| (a.1 / a.2).total_cmp(&(b.1 / b.2)));
    out.push(match worst {
        Some((m, p, b)) => Target { what: "pooled shared-RAM restore ≤ 1/100 of a cold boot".into(), measured: format!("1/{:.0} at {m} MiB (worst size): {p:.1} ms against {b:.0} ms", b / p), met: Some(p * 100.0 <= b) },
        None => Target { what: "pooled shared-RAM restore ≤ 1/100 of a cold boot".into(), measured: "not measured".into(), met: None },
    });
    // 2. shared restore at the largest size <= 1.2 x at the smallest.
    out.push(match (median_ms(r, Shared, hi, 1), median_ms(r, Shared, lo, 1)) {
        (Some(a), Some(b)) if hi != lo => Target {
            what: format!("shared-RAM restore at {hi} MiB ({} MiB dirtied) ≤ 1.2 × at {lo} MiB", dirtied(r, hi)),
            measured: format!("{:.2} × ({a:.1} ms against {b:.1} ms)", a / b),
            met: Some(a <= 1.2 * b),
        },
        _ => Target { what: "shared-RAM restore flat in memory size".into(), measured: "needs two memory sizes".into(), met: None },
    });
    // 3. shared snapshot <= 0.3 s at every size; stream snapshot per GiB dirtied.
    let shared_snaps: Vec<(u32, f64, u64)> = mems.iter().filter_map(|&m| snapshot_of(r, Shared, m).map(|(ms, b)| (m, ms, b))).collect();
    let worst = shared_snaps.iter().map(|s| s.1).fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))));
    out.push(Target {
        what: "shared-RAM snapshot ≤ 0.3 s at every size".into(),
        measured: shared_snaps.iter().map(|(m, ms, b)| format!("{m} MiB: {ms:.0} ms, {:.2} MB", *b as f64 / 1e6)).collect::<Vec<_>>().join("; "),
        met: worst.map(|w| w <= 300.0),
    });
    let per_gib: Vec<String> = mems
        .iter()
        .filter_map(|&m| {
            let (ms, b) = snapshot_of(r, Stream, m)?;
            let d = dirtied(r, m) as f64 / 1024.0;
            Some(format!("{m} MiB: {ms:.0} ms, {:.0} MB, {:.0} ms per GiB dirtied", b as f64 / 1e6, if d > 0.0 { ms / d } else { f64::NAN }))
        })
        .collect();
    out.push(Target { what: "stream snapshot time per GiB dirtied (reported, no bound)".into(), measured: per_gib.join("; "), met: None });
    // 4. the widest fan-out at once <= 3 x one clone, each to its own answer (largest size).
    let widest = r.params.fanout.iter().max().copied().unwrap_or(1);
    for method in [Shared, PooledShared] {
        out.push(match (slowest_ms(r, method, hi, widest), median_ms(r, method, hi, 1)) {
            (Some(w), Some(one)) if widest > 1 => Target {
                what: format!("{} clones resumed at once ≤ 3 × one clone ({}, {hi} MiB)", widest, method.as_str()),
                measured: format!(
                    "{:.2} × (slowest of {widest}: {w:.1} ms; one: {one:.1} ms){}",
                    w / one,
                    cpu_floor_ms(r, method, hi, widest).map(|f| format!("; CPU floor {f:.0} ms = {:.2} × one", f / one)).unwrap_or_default()
                ),
                met: Some(w <= 3.0 * one),
            },
            _ => Target { what: format!("fan-out ({})", method.as_str()), measured: "needs fan-out 1 and a wider one".into(), met: None },
        });
    }
    out
}

fn dirtied(r: &BenchReport, m: u32) -> u32 {
    r.samples.iter().find(|s| s.memory_mib == m && s.method != BenchMethod::Boot).map(|s| s.dirtied_mib).unwrap_or(0)
}

pub fn markdown(r: &BenchReport) -> String {
    use BenchMethod::*;
    let mut s = String::new();
    let _ = writeln!(s, "# clonesafe bench\n");
    let _ = writeln!(
        s,
        "Host: {} ({} CPUs, {} MiB, kernel {}). Emulator: {}. Accelerator: {} ({}). Guest: {} ({} vCPU). Dirtied: {:.0}% of RAM with non-zero data before each snapshot. Repeats: {}. Wall time: {:.0} s.\n",
        r.host.cpu_model, r.host.vcpus, r.host.mem_total_mib, r.host.kernel, r.emulator, r.accel.as_str(), r.accel_reason, r.params.guest, r.params.guest_vcpus, r.params.dirty_fraction * 100.0, r.params.repeat, r.wall_s
    );
    let _ = writeln!(
        s,
        "Each figure: QEMU start (or pool take) to the probe's answer after resume, median of the samples; `boot` is QEMU start to the probe's first answer (for a guest reached through qemu-guest-agent: systemd finished and the probe injected).\n"
    );
    let _ = writeln!(s, "## One clone, by memory size\n");
    let _ = writeln!(s, "| memory MiB | dirtied MiB | boot ms | stream ms | shared ms | pooled-shared ms | stream snapshot | shared snapshot | boot / pooled-shared |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for &m in &r.params.memory_mib {
        let snap = |meth| snapshot_of(r, meth, m).map(|(ms, b): (f64, u64)| format!("{ms:.0} ms, {:.2} MB", b as f64 / 1e6)).unwrap_or_else(|| "-".into());
        let ratio = match (median_ms(r, Boot, m, 1), median_ms(r, PooledShared, m, 1)) {
            (Some(b), Some(p)) => format!("{:.0}", b / p),
            _ => "-".into(),
        };
        let _ = writeln!(
            s,
            "| {m} | {} | {} | {} | {} | {} | {} | {} | {ratio} |",
            dirtied(r, m),
            fmt(median_ms(r, Boot, m, 1)),
            fmt(median_ms(r, Stream, m, 1)),
            fmt(median_ms(r, Shared, m, 1)),
            fmt(median_ms(r, PooledShared, m, 1)),
            snap(Stream),
            snap(Shared)
        );
    }
    if r.samples.iter().any(|x| x.method == MappedRam) {
        let _ = writeln!(s, "\n## mapped-ram beside the stream (one clone)\n");
        let _ = writeln!(s, "| memory MiB | stream ms | mapped-ram ms | mapped-ram + multifd ms | stream snapshot | mapped-ram snapshot | mapped-ram + multifd snapshot |");
        let _ = writeln!(s, "|---|---|---|---|---|---|---|");
        for &m in &r.params.memory_mib {
            let snap = |v: Option<(f64, u64)>| v.map(|(ms, b)| format!("{ms:.0} ms, {:.1} MB", b as f64 / 1e6)).unwrap_or_else(|| "-".into());
            let mf: Vec<&Sample> = cell(r, MappedRam, m, 1, true).collect();
            let mf_ms = median(&mf.iter().map(|x| x.ms).collect::<Vec<_>>());
            let mf_snap = mf.first().and_then(|x| Some((x.snapshot_ms?, x.snapshot_bytes?)));
            let _ = writeln!(
                s,
                "| {m} | {} | {} | {} | {} | {} | {} |",
                fmt(median_ms(r, Stream, m, 1)),
                fmt(median_ms(r, MappedRam, m, 1)),
                fmt(mf_ms),
                snap(snapshot_of(r, Stream, m)),
                snap(snapshot_of(r, MappedRam, m)),
                snap(mf_snap)
            );
        }
        let _ = writeln!(s, "\nSnapshot bytes are allocated bytes on disk: a mapped-ram file is as long as guest RAM but sparse where the guest never wrote.");
    }
    let _ = writeln!(s, "\n## Where one clone's time goes (medians, ms)\n");
    let _ = writeln!(s, "Start: disk overlay, QEMU start with -incoming defer, QMP (none for a pooled clone: done before the take). Load: migrate-incoming to completed, and cont. Answer: cont to the probe's answer. CPU: what the clone's QEMU process ran in those parts, all threads (a pooled clone's from the take).\n");
    let _ = writeln!(s, "| memory MiB | method | start | load | answer | total | CPU |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for &m in &r.params.memory_mib {
        for method in [Stream, Shared, PooledShared, MappedRam] {
            let ph: Vec<super::Phases> = of(r, method, m, 1).filter_map(|x| x.phases).collect();
            if ph.is_empty() {
                continue;
            }
            let med = |f: fn(&super::Phases) -> f64| fmt(median(&ph.iter().map(f).collect::<Vec<_>>()));
            let cpu = fmt(median(&ph.iter().filter_map(|p| p.cpu_ms).collect::<Vec<_>>()));
            let _ = writeln!(s, "| {m} | {} | {} | {} | {} | {} | {cpu} |", method.as_str(), med(|p| p.start_ms), med(|p| p.load_ms), med(|p| p.answer_ms), fmt(median_ms(r, method, m, 1)));
        }
    }
    if r.samples.iter().any(|x| !x.snapshot_steps.is_empty()) {
        let _ = writeln!(s, "\n## Where each snapshot's time goes (ms)\n");
        let _ = writeln!(s, "One snapshot per memory size and source. Stop: QMP `stop`. Disk overlay: `blockdev-snapshot-sync`. Migrate: the migration capabilities, `migrate` to completed. Finalize: until the run state leaves finish-migrate.\n");
        let _ = writeln!(s, "| memory MiB | source | steps | total |");
        let _ = writeln!(s, "|---|---|---|---|");
        for &m in &r.params.memory_mib {
            for method in [Stream, Shared, MappedRam] {
                let Some(x) = of(r, method, m, 1).find(|x| !x.snapshot_steps.is_empty()) else { continue };
                let steps: Vec<String> = x.snapshot_steps.iter().map(|(k, v)| format!("{k} {}", fmt(Some(*v)))).collect();
                let _ = writeln!(s, "| {m} | {} | {} | {} |", method.as_str(), steps.join(", "), fmt(x.snapshot_ms));
            }
        }
    }
    let _ = writeln!(s, "\n## Fan-out: clones resumed at once (slowest clone of the round, median over rounds)\n");
    let _ = write!(s, "| memory MiB | method |");
    for f in &r.params.fanout {
        let _ = write!(s, " x{f} ms |");
    }
    let _ = writeln!(s, "\n|---|---|{}", "---|".repeat(r.params.fanout.len()));
    for &m in &r.params.memory_mib {
        for method in [Stream, Shared, PooledShared, MappedRam] {
            if method == MappedRam && !r.samples.iter().any(|x| x.method == MappedRam) {
                continue;
            }
            let _ = write!(s, "| {m} | {} |", method.as_str());
            for &f in &r.params.fanout {
                let _ = write!(s, " {} |", fmt(slowest_ms(r, method, m, f)));
            }
            let _ = writeln!(s);
        }
    }
    let wide: Vec<u32> = r.params.fanout.iter().copied().filter(|f| *f > 1).collect();
    if r.samples.iter().any(|x| x.fanout > 1 && x.phases.and_then(|p| p.cpu_ms).is_some()) {
        let _ = writeln!(s, "\n## What bounds a fan-out: CPU floor (ms, and × one clone)\n");
        let _ = writeln!(
            s,
            "Per round, the CPU time its clones' QEMU processes ran (each from its start or take to its answer), summed and divided by the host's {} CPUs: the round cannot end sooner, however the clones are scheduled. Each cell: the slowest clone / that floor (median over rounds), then the floor as a multiple of one clone's median time.\n",
            r.host.vcpus
        );
        let _ = write!(s, "| memory MiB | method |");
        for f in &wide {
            let _ = write!(s, " x{f} |");
        }
        let _ = writeln!(s, "\n|---|---|{}", "---|".repeat(wide.len()));
        for &m in &r.params.memory_mib {
            for method in [Stream, Shared, PooledShared, MappedRam] {
                if !r.samples.iter().any(|x| x.method == method && x.memory_mib == m && x.fanout > 1) {
                    continue;
                }
                let _ = write!(s, "| {m} | {} |", method.as_str());
                let one = median_ms(r, method, m, 1);
                for &f in &wide {
                    let cellv = match (slowest_ms(r, method, m, f), cpu_floor_ms(r, method, m, f)) {
                        (Some(w), Some(fl)) => format!("{} / {} ({})", fmt(Some(w)), fmt(Some(fl)), one.map(|o| format!("{:.2} ×", fl / o)).unwrap_or_else(|| "-".into())),
                        _ => "-".into(),
                    };
                    let _ = write!(s, " {cellv} |");
                }
                let _ = writeln!(s);
            }
        }
    }
    let _ = writeln!(s, "\n## Targets (issue 10), from this run\n");
    let _ = writeln!(s, "| target | measured | met |");
    let _ = writeln!(s, "|---|---|---|");
    for t in targets(r) {
        let met = match t.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "-",
        };
        let _ = writeln!(s, "| {} | {} | {met} |", t.what, t.measured);
    }
    if !r.skipped.is_empty() {
        let _ = writeln!(s, "\n## Not measured\n");
        for k in &r.skipped {
            let _ = writeln!(s, "- {k}");
        }
    }
    s
}

const COLORS: [(BenchMethod, RGBColor); 5] = [
    (BenchMethod::Boot, RGBColor(90, 120, 200)),
    (BenchMethod::Stream, RGBColor(230, 140, 40)),
    (BenchMethod::Shared, RGBColor(60, 160, 90)),
    (BenchMethod::PooledShared, RGBColor(180, 60, 160)),
    (BenchMethod::MappedRam, RGBColor(120, 120, 120)),
];

/// Median restore (and boot) time against memory size, one clone at a time.
pub fn plot_memory(r: &BenchReport) -> Result<String, String> {
    let series = COLORS
        .iter()
        .map(|(m, c)| (m.as_str().to_string(), *c, r.params.memory_mib.iter().filter_map(|&mem| Some((mem as f64, median_ms(r, *m, mem, 1)?))).collect::<Vec<_>>()))
        .filter(|s| !s.2.is_empty())
        .collect::<Vec<_>>();
    lines_log_y("Clone time against memory size (one clone; median)", "guest memory, MiB", "ms (log scale)", &series)
}

/// The slowest clone of a round against fan-out, at the largest memory size.
pub fn plot_fanout(r: &BenchReport) -> Result<String, String> {
    let hi = r.params.memory_mib.iter().max().copied().unwrap_or(0);
    let series = COLORS[1..]
        .iter()
        .map(|(m, c)| (m.as_str().to_string(), *c, r.params.fanout.iter().filter_map(|&f| Some((f as f64, slowest_ms(r, *m, hi, f)?))).collect::<Vec<_>>()))
        .filter(|s| !s.2.is_empty())
        .collect::<Vec<_>>();
    lines_log_y(&format!("Clones resumed at once, {hi} MiB (slowest clone; median over rounds)"), "clones resumed at once", "ms (log scale)", &series)
}

/// Write bench.json, bench.md and the plots into `out`; returns the files written (and notes
/// for plots that could not be drawn).
pub fn write(r: &BenchReport, out: &Path) -> std::io::Result<(Vec<PathBuf>, Vec<String>)> {
    std::fs::create_dir_all(out)?;
    let mut files = Vec::new();
    let mut notes = Vec::new();
    let json = serde_json::to_string_pretty(r).map_err(std::io::Error::other)? + "\n";
    files.push(crate::output::write_atomic(out, "bench.json", json.as_bytes())?);
    files.push(crate::output::write_atomic(out, "bench.md", markdown(r).as_bytes())?);
    for (name, svg) in [("bench-memory.svg", plot_memory(r)), ("bench-fanout.svg", plot_fanout(r))] {
        match svg {
            Ok(svg) => files.push(crate::output::write_atomic(out, name, svg.as_bytes())?),
            Err(e) => notes.push(format!("{name} not drawn: {e}")),
        }
    }
    Ok((files, notes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{Host, Params};
    use clonesafe_metadata::Accel;

    fn sample(method: BenchMethod, memory_mib: u32, fanout: u32, ms: f64, repeat: u32) -> Sample {
        let snap = (method != BenchMethod::Boot).then_some((if method == BenchMethod::Stream { 900.0 } else { 25.0 }, 1_000_000));
        Sample { method, memory_mib, dirtied_mib: memory_mib * 3 / 4, fanout, ms, snapshot_ms: snap.map(|s| s.0), snapshot_bytes: snap.map(|s| s.1), emulator: "qemu 7.2.19".into(), accel: Accel::Tcg, repeat, multifd_channels: None, phases: None, snapshot_steps: vec![] }
    }

    fn report(samples: Vec<Sample>) -> BenchReport {
        BenchReport {
            clonesafe_version: "0".into(),
            host: Host { cpu_model: "cpu".into(), vcpus: 2, mem_total_mib: 1024, kernel: "k".into() },
            emulator: "qemu 7.2.19".into(),
            accel: Accel::Tcg,
            accel_reason: "forced".into(),
            params: Params { memory_mib: vec![256, 4096], dirty_fraction: 0.75, fanout: vec![1, 8], repeat: 1, guest: "tiny".into(), guest_vcpus: 1 },
            samples,
            skipped: vec!["mapped-ram: not measured".into()],
            wall_s: 1.0,
        }
    }

    /// The targets are computed from the samples, and a miss says **no** with its figures.
    #[test]
    fn targets_follow_the_samples() {
        use BenchMethod::*;
        let mut v = vec![sample(Boot, 256, 1, 6000.0, 0), sample(Boot, 4096, 1, 6500.0, 0)];
        v.extend([sample(PooledShared, 256, 1, 40.0, 0), sample(PooledShared, 4096, 1, 45.0, 0)]);
        v.extend([sample(Shared, 256, 1, 100.0, 0), sample(Shared, 4096, 1, 150.0, 0)]);
        v.extend((0..8).map(|i| sample(Shared, 4096, 8, 200.0 + i as f64 * 40.0, 0)));
        let r = report(v);
        let t = targets(&r);
        assert_eq!(t[0].met, Some(true), "{}", t[0].measured);
        assert!(t[0].measured.contains("1/144"), "{}", t[0].measured);
        assert_eq!(t[1].met, Some(false), "150 against 100 is 1.5x: {}", t[1].measured);
        assert_eq!(t[2].met, Some(true));
        // Slowest of 8 is 480 ms against 150: 3.2x, a miss.
        assert_eq!(t[4].met, Some(false), "{}", t[4].measured);
        let md = markdown(&r);
        assert!(md.contains("**no**") && md.contains("mapped-ram: not measured"), "{md}");
        assert!(!md.contains("CPU floor"), "no clone's CPU time was read: no floor is claimed");
    }

    /// The CPU floor of a round is its clones' CPU summed over the host's CPUs, the median over
    /// rounds; a round with a clone whose CPU was not read has none.
    #[test]
    fn the_cpu_floor_is_the_rounds_cpu_over_the_cores() {
        use BenchMethod::*;
        let with_cpu = |ms: f64, repeat: u32, cpu: Option<f64>| {
            let mut x = sample(PooledShared, 4096, 8, ms, repeat);
            x.phases = Some(super::super::Phases { start_ms: 0.0, load_ms: 10.0, answer_ms: ms - 10.0, cpu_ms: cpu });
            x
        };
        let mut v = vec![sample(PooledShared, 4096, 1, 50.0, 0)];
        // Round 0: 8 clones of 60 ms CPU on 2 CPUs: 240 ms. Round 1: 8 of 40: 160 ms. Round 2: 8 of 50: 200 ms.
        for (r, cpu) in [(0, 60.0), (1, 40.0), (2, 50.0)] {
            v.extend((0..8).map(|i| with_cpu(250.0 + i as f64, r, Some(cpu))));
        }
        let r = report(v.clone());
        assert_eq!(cpu_floor_ms(&r, PooledShared, 4096, 8), Some(200.0));
        let t = targets(&r);
        assert!(t[5].measured.contains("CPU floor 200 ms = 4.00 × one"), "{}", t[5].measured);
        assert!(markdown(&r).contains("257 / 200 (4.00 ×)"), "{}", markdown(&r));
        // One clone without a CPU reading: that round has no floor, the other two remain.
        v[1].phases.as_mut().unwrap().cpu_ms = None;
        // v[1] is a clone of round 0: rounds 1 and 2 remain (160 and 200 ms).
        assert_eq!(cpu_floor_ms(&report(v), PooledShared, 4096, 8), Some(180.0));
    }
}
