//! The engine never prints. It emits timestamped events (like nextest's `TestEvent { timestamp,
//! elapsed, kind }`), and reporters turn them into terminal output, a JSON event stream, and the
//! report files (which consume the finished report the last event carries).

use clonesafe_metadata::{Report, ScenarioReport};
use serde::Serialize;
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    RunStarted { scenarios: usize, accel: String, accel_reason: String },
    /// Something a reader of the run should know (leftovers reaped, a kept directory).
    Note { text: String },
    ScenarioStarted { strategy: String, recipe: String, backend: String, vms: u32 },
    Booting { vm: String },
    Booted {
        vm: String,
        ms: u64,
        /// CPU time its VMM process used to get there, all threads (None: not a process here).
        #[serde(skip_serializing_if = "Option::is_none")]
        cpu_ms: Option<u64>,
    },
    Snapshotting { vm: String },
    Snapshotted { vm: String, ms: u64, bytes: u64 },
    Restoring { vm: String },
    Restored { vm: String, ms: u64 },
    /// One source of evidence was gathered (`vm`: for one VM), in `ms`; `steps` splits a VM's
    /// observation into its parts (agent calls and host-side handshakes), so a run's log says
    /// where the time after resume went.
    Gathered {
        source: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        vm: Option<String>,
        ms: u64,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        steps: Vec<(String, u64)>,
    },
    ScenarioFinished { report: Box<ScenarioReport> },
    /// The finished report, for the reporters that write it; the event stream carries only the
    /// counts (each scenario's report was in its own `scenario_finished`).
    RunFinished {
        #[serde(skip)]
        report: Box<Report>,
        passed: usize,
        failed: usize,
        exit_code: i32,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Wall-clock time, RFC 3339, UTC.
    pub timestamp: String,
    /// Since the run started.
    #[serde(serialize_with = "ms")]
    pub elapsed: Duration,
    pub scenario: Option<String>,
    #[serde(flatten)]
    pub kind: EventKind,
}

fn ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

impl Event {
    pub fn now(started: Instant, scenario: Option<String>, kind: EventKind) -> Self {
        Event { timestamp: rfc3339(SystemTime::now()), elapsed: started.elapsed(), scenario, kind }
    }
}

/// `2026-11-28T09:06:43.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem / 60 % 60, rem % 60, d.subsec_millis())
}

pub trait EventSink: Send + Sync {
    fn emit(&self, event: Event);
}

/// Drops every event (tests, library use).
pub struct NullSink;
impl EventSink for NullSink {
    fn emit(&self, _: Event) {}
}

/// Keeps every event, for tests that assert on what the engine reported.
#[derive(Default)]
pub struct Recorder(pub std::sync::Mutex<Vec<Event>>);
impl EventSink for Recorder {
    fn emit(&self, event: Event) {
        self.0.lock().unwrap().push(event);
    }
}

/// Hands every event to each sink in turn.
pub struct Fanout<'a>(pub Vec<&'a dyn EventSink>);
impl EventSink for Fanout<'_> {
    fn emit(&self, event: Event) {
        for s in &self.0 {
            s.emit(event.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_029_603_123);
        assert_eq!(rfc3339(t), "2026-11-30T09:06:43.123Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00.000Z");
    }
}
