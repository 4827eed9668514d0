//! A VM's way to its in-guest agent: the serial probe, qemu-guest-agent (with an injected
//! probe), or none.

use super::{qga, serial, GuestAgent, ProbeState};

/// A VM's way to its agent.
pub enum Transport {
    Serial(serial::ProbeChannel),
    Qga(qga::Qga),
    /// The guest has no agent.
    None,
}

impl Transport {
    pub fn agent(&mut self) -> Option<&mut dyn GuestAgent> {
        match self {
            Transport::Serial(p) => Some(p),
            Transport::Qga(q) => Some(q),
            Transport::None => None,
        }
    }

    /// Whether the probe runs in the guest now.
    pub fn probe_state(&self) -> ProbeState {
        match self {
            Transport::Serial(_) => ProbeState::Builtin,
            Transport::Qga(q) => match q.probe_status() {
                Ok(()) => ProbeState::Injected,
                Err(why) => ProbeState::Missing(why.to_string()),
            },
            Transport::None => ProbeState::Missing("the guest has no agent".into()),
        }
    }
}

