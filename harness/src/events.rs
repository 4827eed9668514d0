//! The engine never prints. It emits events; reporters (terminal progress, logs) render them.

use std::time::Duration;

#[derive(Debug, Clone)]
pub enum EventKind {
    RunStarted { scenarios: usize, accel: String, accel_reason: String },
    ScenarioStarted { strategy: String, backend: String, vms: u32 },
    Booting { vm: String },
    Booted { vm: String, ms: u64 },
    Snapshotting { vm: String },
    Snapshotted { vm: String, ms: u64, bytes: u64 },
    Restoring { vm: String },
    Restored { vm: String, ms: u64 },
    Note { text: String },
    ScenarioFinished { met: bool, error: Option<String> },
}

#[derive(Debug, Clone)]
pub struct Event {
    /// Since the run started.
    pub elapsed: Duration,
    pub scenario: Option<String>,
    pub kind: EventKind,
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
