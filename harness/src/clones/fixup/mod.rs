//! The fix-ups a recipe can apply. A new one is a file here implementing
//! [`crate::clones::recipe::Fixup`], a variant of [`clonesafe_metadata::FixupId`] (with the
//! methods it composes with), and one line in [`of`].

pub mod agent;
pub mod clock;
pub mod drop_sessions;
pub mod genid_wait;
pub mod mitigate_remanence;
pub mod nic_replug;
pub mod rng_gate;
pub mod vmclock;
pub mod sysprep;
pub mod vmgenid;

use super::recipe::Fixup;
use clonesafe_metadata::FixupId;

/// The implementation of a fix-up.
pub fn of(id: FixupId) -> &'static dyn Fixup {
    match id {
        FixupId::NicReplug => &nic_replug::NicReplug,
        FixupId::Vmgenid => &vmgenid::Vmgenid,
        FixupId::Agent => &agent::Agent,
        FixupId::Sysprep => &sysprep::Sysprep,
        FixupId::MitigateRemanence => &mitigate_remanence::MitigateRemanence,
        FixupId::Clock => &clock::Clock,
        FixupId::RngGate => &rng_gate::RngGate,
        FixupId::Vmclock => &vmclock::Vmclock,
        FixupId::DropSessions => &drop_sessions::DropSessions,
        FixupId::GenidWait => &genid_wait::GenidWait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fixup_id_has_its_implementation() {
        for id in FixupId::ALL {
            assert_eq!(of(*id).id(), *id);
        }
    }
}
