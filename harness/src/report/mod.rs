//! Reporters: they consume the engine's events and turn them into output for people and for
//! machines. The types of `report.json` are the contract crate's ([`clonesafe_metadata`]).
//!
//! * [`terminal`]: progress on stderr while VMs run, the verdict tables on stdout at the end;
//! * [`Files`]: `events.jsonl` (every event as it happens), then `report.json`, `junit.xml`,
//!   `report.html` and, in reference form, `summary.md` and SVG plots.

pub mod diff;
pub mod explain;
pub mod html;
pub mod junit;
pub mod markdown;
pub mod merge;
pub mod plots;
pub mod race;
pub mod terminal;

use crate::events::{Event, EventKind, EventSink};
use clonesafe_metadata::Report;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Writes the run's files into one directory: every event to `events.jsonl` as it arrives, and
/// the report files when the run finishes. The directory is created and tested for writing
/// when the reporter is made, before any VM starts.
pub struct Files {
    dir: PathBuf,
    reference: bool,
    events: Mutex<Option<std::fs::File>>,
    result: Mutex<Option<std::io::Result<Vec<PathBuf>>>>,
}

impl Files {
    pub fn create(dir: &Path, reference: bool) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let events = crate::output::create_fresh(dir, "events.jsonl")?;
        Ok(Files { dir: dir.to_path_buf(), reference, events: Mutex::new(Some(events)), result: Mutex::new(None) })
    }

    /// What the last `RunFinished` wrote (None: the run never finished).
    pub fn written(&self) -> Option<std::io::Result<Vec<PathBuf>>> {
        self.result.lock().unwrap().take()
    }
}

impl EventSink for Files {
    fn emit(&self, e: Event) {
        let mut events = self.events.lock().unwrap();
        if let Some(f) = events.as_mut() {
            let line = serde_json::to_string(&e).expect("events serialize");
            if writeln!(f, "{line}").is_err() {
                // A full disk must not stop the run; report.json is still tried below.
                *events = None;
            }
        }
        if let EventKind::RunFinished { report, .. } = &e.kind {
            let r = if self.reference { write_reference(report, &self.dir) } else { write_all(report, &self.dir) };
            let r = r.map(|mut v| {
                v.push(self.dir.join("events.jsonl"));
                v
            });
            *self.result.lock().unwrap() = Some(r);
        }
    }
}

pub fn write_json(r: &Report, dir: &Path) -> std::io::Result<PathBuf> {
    write_atomic(dir, "report.json", &serde_json::to_string_pretty(r).expect("report serializes"))
}

/// report.json, junit.xml and report.html (self-contained) in `dir`.
pub fn write_all(r: &Report, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = vec![write_json(r, dir)?, write_atomic(dir, "junit.xml", &junit::render(r))?, write_atomic(dir, "report.html", &html::render(r))?];
    if let Some(a) = &r.assessment {
        out.push(write_atomic(dir, "assessment.md", &crate::assess::markdown(a))?);
    }
    Ok(out)
}

/// The committed reference form: the above, summary.md and the plots as SVG files.
pub fn write_reference(r: &Report, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = write_all(r, dir)?;
    out.push(write_atomic(dir, "summary.md", &markdown::render(r))?);
    for (name, svg) in [("boot-vs-restore.svg", plots::boot_vs_restore(&r.scenarios)), ("windows.svg", plots::windows(&r.scenarios))] {
        if let Ok(svg) = svg {
            out.push(write_atomic(dir, name, &svg)?);
        }
    }
    Ok(out)
}

fn write_atomic(dir: &Path, name: &str, text: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    crate::output::write_atomic(dir, name, text.as_bytes())
}
