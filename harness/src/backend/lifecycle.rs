//! The phases of a VM's life, which every error and timeout names, and their bounds.

use std::fmt;
use std::time::Duration;

/// Which step of a VM's life an error or timeout belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Start,
    Boot,
    Snapshot,
    IncomingMigration,
    Resume,
    Probe,
    Hotplug,
    Shutdown,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Start => "start (process up and channels connected)",
            Phase::Boot => "boot (VMM start to agent ready)",
            Phase::Snapshot => "snapshot (stop, disk freeze, memory migration)",
            Phase::IncomingMigration => "restore (incoming migration)",
            Phase::Resume => "resume (cont)",
            Phase::Probe => "agent request",
            Phase::Hotplug => "NIC hotplug",
            Phase::Shutdown => "shutdown",
        })
    }
}

/// Timeouts per phase. Generous for TCG on 2 busy cores; each is a bound, not a sleep.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub start: Duration,
    pub boot: Duration,
    pub snapshot: Duration,
    pub restore: Duration,
    pub probe: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            start: Duration::from_secs(15),
            boot: Duration::from_secs(90),
            snapshot: Duration::from_secs(120),
            restore: Duration::from_secs(120),
            probe: Duration::from_secs(30),
        }
    }
}
