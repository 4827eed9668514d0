//! `image-copy`: virt-clone's offline clone. A template boots once (its identity is created on
//! first boot), is shut down, and its disk is copied (flattened with `qemu-img convert`); each
//! clone boots the copy with a new name, UUID, MAC and disk serial. Fix-ups act on the template
//! before its shutdown and on the copy before any clone boots it.

use crate::backend::capability::Capability;
use crate::clones::recipe::{boot_and_observe, fleet_tests, CloneMethod, Ctx, Fleet, Outcome, RecipeError};
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
    async fn make(&self, cx: &Ctx<'_>, fleet: &mut Fleet) -> Result<Outcome, RecipeError> {
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
        let copy = cx.dir.join("image-copy.qcow2");
        qemu_img::convert(&template_disk, "qcow2", "qcow2", &copy).await.map_err(RecipeError::tool("copy the template's disk"))?;
        notes.push("template booted once, shut down, and its disk copied (qemu-img convert); each clone boots the copy with a new name, UUID, MAC and disk serial".into());
        for f in &cx.fixups {
            f.on_image(cx, &copy, "copied image", &mut notes).await?;
        }
        let mut machine = cx.machine.clone();
        machine.guest = machine.guest.with_disk(copy.clone(), "qcow2");
        let first = fleet.0.len();
        let (observations, vms) = boot_and_observe(cx, fleet, &machine, VmRole::Clone, &mut timing.boot_ms, &mut notes).await?;
        let tickets = Some(fleet_tests(cx, &fleet.0[first..], &observations).await);
        let scan = match canary {
            Some((secret, _)) => Some(remanence::scan(&secret, &[("template disk", template_disk.as_path()), ("copied image", copy.as_path())], None, &crate::backend::local_opener()).await?),
            None => None,
        };
        let assigned_macs = std::iter::once(template_mac).chain(vms.iter().map(|v| v.mac.clone())).collect();
        Ok(Outcome { observations, vms, timing, notes, remanence: scan, tickets, assigned_macs, segment: None })
    }
}
