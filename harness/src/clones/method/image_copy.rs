//! `image-copy`: virt-clone's offline clone. A template boots once (its identity is created on
//! first boot), is shut down, and its disk is copied (flattened with `qemu-img convert`); each
//! clone boots the copy with a new name, UUID, MAC and disk serial. Fix-ups act on the template
//! before its shutdown and on the copy before any clone boots it.

use crate::backend::capability::Capability;
use crate::clones::recipe::{boot_all, Canary, CloneMethod, Ctx, Fleet, Made, RecipeError};
use crate::clones::remanence;
use crate::tools::qemu_img;
use async_trait::async_trait;
use clonesafe_metadata::{Method, Timing, VmRole};

pub struct ImageCopy;

#[async_trait]
impl CloneMethod for ImageCopy {
    fn id(&self) -> Method {
        Method::ImageCopy
    }
    fn requires(&self) -> &'static [Capability] {
        &[Capability::HostFiles]
    }
    async fn make(&self, cx: &Ctx<'_>, fleet: &mut Fleet) -> Result<Made, RecipeError> {
        let mut timing = Timing::default();
        let mut notes = Vec::new();
        let (mut template, ms) = cx.boot_one(&cx.machine, cx.args(VmRole::Template.as_str(), 0), &mut notes).await?;
        timing.boot_ms.push(ms);
        let canary = remanence::plant(cx, template.as_mut(), false).await?;
        for f in &cx.fixups {
            f.before_capture(cx, template.as_mut(), &mut notes).await?;
        }
        let template_disk = template.disk().to_path_buf();
        let template_mac = template.identity().mac.to_string();
        if cx.machine.guest.boot == crate::guest::Boot::Disk {
            // A real OS is shut down before its disk is copied, as virt-clone requires (systemd
            // saves its random seed then, among other things).
            let clean = template.shutdown(std::time::Duration::from_secs(120)).await?;
            notes.push(if clean { "the template was shut down (ACPI power-off) before its disk was copied".into() } else { "the template did not power off within 120 s and was stopped".into() });
        } else {
            // The tiny guest's busybox init ignores the power button; its probe syncs every write.
            template.destroy().await?;
        }
        let copy = cx.build.dir.join("image-copy.qcow2");
        qemu_img::convert(&template_disk, "qcow2", "qcow2", &copy).await.map_err(RecipeError::tool("copy the template's disk"))?;
        notes.push("template booted once, shut down, and its disk copied (qemu-img convert); each clone boots the copy with a new name, UUID, MAC and disk serial".into());
        for f in &cx.fixups {
            f.on_image(cx, &copy, "copied image", &mut notes).await?;
        }
        let mut machine = cx.machine.clone();
        machine.guest = machine.guest.with_disk(copy.clone(), "qcow2");
        let compared = boot_all(cx, fleet, &machine, VmRole::Clone, &mut timing.boot_ms, &mut notes).await?;
        let canary = canary.map(|(secret, _)| Canary { secret, control: None, artifacts: vec![("template disk", template_disk.clone()), ("copied image", copy.clone())] });
        let assigned_macs = std::iter::once(template_mac).chain(compared.iter().map(|c| fleet.0[c.index].identity().mac.to_string())).collect();
        Ok(Made { compared, timing, notes, assigned_macs, canary })
    }
}
