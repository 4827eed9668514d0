//! `vmclock`: every VM of the scenario has a VMClock device (QEMU 9.1+, `-device vmclock`,
//! hw/acpi/vmclock.c): a page of guest memory the host keeps current, whose disruption marker
//! (and, where the hypervisor sets it, generation counter) tells a guest its clock, or its
//! generation, changed under it. Linux 6.13+ exposes it as /dev/vmclock0 (ptp_vmclock). What
//! QEMU does to those fields on a restore is what the `vmclock` check measures: the fix-up only
//! adds the device. The backend declares the capability when its emulator has the device, so a
//! QEMU without it (7.2, or libvirt's system QEMU) is refused before any VM starts.

use crate::backend::capability::Capability;
use crate::backend::snapshot::Machine;
use crate::clones::recipe::Fixup;
use async_trait::async_trait;
use clonesafe_metadata::FixupId;

pub struct Vmclock;

#[async_trait]
impl Fixup for Vmclock {
    fn id(&self) -> FixupId {
        FixupId::Vmclock
    }
    fn requires(&self) -> &'static [Capability] {
        &[Capability::Vmclock]
    }
    fn describe(&self) -> Option<&'static str> {
        Some("every VM had a VMClock device (its disruption marker and generation counter read by the probe)")
    }
    fn configure(&self, machine: &mut Machine) -> Result<(), String> {
        machine.devices.vmclock = true;
        Ok(())
    }
}
