//! `image-copy`: virt-clone's offline clone. A template boots once (its identity is created on
//! first boot), is shut down, and its disk is copied (flattened with `qemu-img convert`); each
//! clone boots the copy with a new name, UUID, MAC and disk serial. Fix-ups act on the template
//! before its shutdown and on the copy before any clone boots it.

use crate::backend::capability::Capability;
use crate::clones::recipe::{boot_all, Canary, CloneMethod, Ctx, Fleet, Made, RecipeError};
use crate::backend::snapshot::CloneArgs;
use crate::clones::remanence;
use crate::clones::recipe::{SharedSource, Template};
use crate::tools::qemu_img;
use async_trait::async_trait;
use clonesafe_metadata::{Method, SourceHow, SourceUse, Timing, VmRole};
use std::sync::Arc;

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
        let (template, source) = match cx.shared {
            None => {
                let template = boot_template(cx, cx.args(VmRole::Template.as_str(), 0), &mut timing, &mut notes).await?;
                (Arc::new(template), crate::clones::source::own(&cx.scenario.name, "template"))
            }
            Some(sh) => shared_template(cx, sh, &mut timing, &mut notes).await?,
        };
        for n in &template.notes {
            notes.push(n.clone());
        }
        let copy = cx.build.dir.join("image-copy.qcow2");
        qemu_img::convert(&template.disk, "qcow2", "qcow2", &copy).await.map_err(RecipeError::tool("copy the template's disk"))?;
        notes.push("template booted once, shut down, and its disk copied (qemu-img convert); each clone boots the copy with a new name, UUID, MAC and disk serial".into());
        for f in &cx.fixups {
            f.on_image(cx, &copy, "copied image", &mut notes).await?;
        }
        let mut machine = cx.machine.clone();
        machine.guest = machine.guest.with_disk(copy.clone(), "qcow2");
        let compared = boot_all(cx, fleet, &machine, VmRole::Clone, &mut timing.boot_ms, &mut notes).await?;
        let canary = template.canary.clone().map(|(secret, _)| Canary { secret, control: None, artifacts: vec![("template disk", template.disk.clone()), ("copied image", copy.clone())] });
        let assigned_macs = std::iter::once(template.mac.clone()).chain(compared.iter().map(|c| fleet.0[c.index].identity().mac.to_string())).collect();
        Ok(Made { compared, timing, notes, assigned_macs, canary, source: Some(source) })
    }
}

/// Boot the template, plant the canary, let the fix-ups prepare it, and stop it. Its disk stays
/// in its directory for the copies.
async fn boot_template(cx: &Ctx<'_>, args: CloneArgs, timing: &mut Timing, notes: &mut Vec<String>) -> Result<Template, RecipeError> {
    let (mut template, ms) = cx.boot_one(&cx.machine, args, notes).await?;
    timing.boot_ms.push(ms);
    let canary = remanence::plant(cx, template.as_mut(), false).await?;
    for f in &cx.fixups {
        f.before_capture(cx, template.as_mut(), notes).await?;
    }
    let disk = template.disk().to_path_buf();
    let mac = template.identity().mac.to_string();
    let mut said = Vec::new();
    if cx.machine.guest.boot == crate::guest::Boot::Disk {
        // A real OS is shut down before its disk is copied, as virt-clone requires (systemd
        // saves its random seed then, among other things).
        let clean = template.shutdown(std::time::Duration::from_secs(120)).await?;
        said.push(if clean { "the template was shut down (ACPI power-off) before its disk was copied".into() } else { "the template did not power off within 120 s and was stopped".into() });
    } else {
        // The tiny guest's busybox init ignores the power button; its probe syncs every write.
        template.destroy().await?;
    }
    Ok(Template { disk, canary, mac, notes: said })
}

/// The shared source's template: booted and shut down by the first scenario, copied by each.
async fn shared_template(cx: &Ctx<'_>, sh: &SharedSource, timing: &mut Timing, notes: &mut Vec<String>) -> Result<(Arc<Template>, SourceUse), RecipeError> {
    let mut st = sh.lock().await?;
    if let Some(t) = st.template.clone() {
        let booted_in = st.booted_in.clone();
        notes.push(format!("the template {} was shared: booted and shut down in {}", sh.id, booted_in.as_deref().unwrap_or("?")));
        return Ok((t, sh.use_by(&cx.scenario.name, SourceHow::Shared, booted_in.as_deref())));
    }
    let booted = boot_template(cx, sh.args(cx, VmRole::Template.as_str(), &cx.machine), timing, notes).await;
    let t = Arc::new(st.record(booted)?);
    st.template = Some(t.clone());
    st.booted_in = Some(cx.scenario.name.clone());
    Ok((t, sh.use_by(&cx.scenario.name, SourceHow::Booted, None)))
}
