//! `vmgenid`: every VM of the scenario has a VM generation ID device (`-device vmgenid`, libvirt
//! `<genid>`), and each clone gets a fresh ID. QEMU writes the destination's ID into guest
//! memory on load and raises an ACPI notify; the guest kernel then reseeds its CRNG
//! (FACTS.md, "vmgenid").

use crate::backend::capability::Capability;
use crate::backend::snapshot::{CloneArgs, Machine};
use crate::clones::recipe::Fixup;
use crate::identity::VmGenId;
use async_trait::async_trait;
use clonesafe_metadata::FixupId;

pub struct Vmgenid;

#[async_trait]
impl Fixup for Vmgenid {
    fn id(&self) -> FixupId {
        FixupId::Vmgenid
    }
    fn requires(&self) -> &'static [Capability] {
        &[Capability::Vmgenid]
    }
    fn describe(&self) -> Option<&'static str> {
        Some("each clone got a fresh VM generation ID")
    }
    fn configure(&self, machine: &mut Machine) -> Result<(), String> {
        machine.devices.vmgenid = true;
        Ok(())
    }
    fn clone_args(&self, args: &mut CloneArgs) {
        args.identity.vmgenid = Some(VmGenId::fresh());
    }
}
