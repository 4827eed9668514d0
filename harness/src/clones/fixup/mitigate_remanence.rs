//! `mitigate-remanence`: keep a deleted secret out of what clones are made from. The guest boots
//! with `init_on_free=1` (freed pages are zeroed, so a deleted file's page-cache copy does not
//! linger in RAM). Before the snapshot or shutdown, the agent remounts the data disk, zero-fills
//! its free space, runs fstrim and drops caches: ext4 keeps small files' freed blocks in a
//! preallocation that neither zero-filling nor fstrim touches until a remount (measured). Then
//! the disk image every clone is made from is compacted, so discarded clusters are not copied.

use crate::backend::capability::Capability;
use crate::backend::snapshot::Machine;
use crate::backend::Vm;
use crate::clones::recipe::{Ctx, Fixup, RecipeError, Shapes};
use crate::guest::Boot;
use async_trait::async_trait;
use clonesafe_metadata::FixupId;
use std::path::Path;

pub struct MitigateRemanence;

#[async_trait]
impl Fixup for MitigateRemanence {
    fn id(&self) -> FixupId {
        FixupId::MitigateRemanence
    }
    fn shapes(&self) -> Shapes {
        // It zero-fills the source's free disk space and compacts the disk the clones start
        // from. A derived snapshot's disk would still be backed by the base snapshot's
        // uncompacted one, so it gets a source of its own.
        Shapes::Source { derivable: false }
    }
    fn requires(&self) -> &'static [Capability] {
        &[Capability::HostFiles]
    }
    fn describe(&self) -> Option<&'static str> {
        None
    }
    fn configure(&self, machine: &mut Machine) -> Result<(), String> {
        if machine.guest.boot == Boot::Disk {
            return Err(format!("remanence mitigation boots with init_on_free=1, and guest {:?} boots from its own bootloader", machine.guest.name));
        }
        machine.needs_agent("remanence mitigation scrubs the disk")?;
        machine.kernel_args.push("init_on_free=1".into());
        Ok(())
    }

    async fn before_capture(&self, cx: &Ctx<'_>, vm: &mut dyn Vm, notes: &mut Vec<String>) -> Result<(), RecipeError> {
        let t = cx.build.timeouts.probe;
        let output = crate::probes::call(vm, "scrub deleted data", |a| a.scrub(t)).await?;
        notes.push(format!("mitigation in the guest: remount, zero-fill free space, fstrim, drop_caches ({})", if output.is_empty() { "no output" } else { &output }));
        Ok(())
    }

    async fn on_image(&self, cx: &Ctx<'_>, image: &Path, what: &str, notes: &mut Vec<String>) -> Result<(), RecipeError> {
        crate::tools::qemu_img::compact(image, &cx.build.dir).await.map_err(RecipeError::tool(format!("mitigation: compact the {what}")))?;
        notes.push(format!("mitigation: the {what} was compacted (qemu-img convert) after fstrim in the guest"));
        Ok(())
    }
}
