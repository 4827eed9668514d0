//! Domain XML for the tiny guest, and the identity rewrite a clone's save image gets.

use crate::backend::{Accel, VmSpec};
use crate::identity::HostIdentity;
use std::path::Path;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('\'', "&apos;").replace('"', "&quot;")
}

/// The domain for one VM. Every file it names lives in `spec.dir`, so a clone's files are the
/// source's with the directory changed. QEMU runs as root:root (`seclabel` DAC static, no
/// relabel) because the run directory is private (0700) to the harness.
pub fn domain_xml(spec: &VmSpec, disk: &Path, vmgenid: bool) -> String {
    let id = &spec.identity;
    let dir = spec.dir.display().to_string();
    let (dtype, cpu) = match spec.accel {
        Accel::Kvm => ("kvm", "<cpu mode='host-passthrough'/>"),
        // libvirt's "maximum" is QEMU's -cpu max, what the QEMU backend uses under TCG.
        Accel::Tcg => ("qemu", "<cpu mode='maximum'/>"),
    };
    let genid = match (vmgenid, id.vmgenid) {
        (false, _) => String::new(),
        (true, Some(g)) => format!("<genid>{g}</genid>"),
        (true, None) => "<genid/>".into(),
    };
    format!(
        "<domain type='{dtype}'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  {genid}
  <memory unit='MiB'>{mem}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <features><acpi/></features>
  {cpu}
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{emulator}</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
      <serial>{serial}</serial>
    </disk>
    {nic}
    <serial type='file'><source path='{dir}/console.log'/><target port='0'/></serial>
    <serial type='unix'><source mode='connect' path='{dir}/probe.sock'/><target port='1'/></serial>
    <memballoon model='none'/>
  </devices>
  <seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>
</domain>
",
        name = esc(&id.name),
        uuid = id.uuid,
        mem = spec.memory_mib,
        kernel = esc(&spec.guest.kernel.display().to_string()),
        initrd = esc(&spec.guest.initrd.display().to_string()),
        cmdline = esc(&spec.guest.cmdline),
        emulator = esc(&emulator()),
        disk = esc(&disk.display().to_string()),
        serial = esc(id.disk_serial.as_str()),
        nic = interface_xml(&id.mac),
        dir = esc(&dir),
    )
}

/// The NIC: virtio on user networking (the guest never configures it, so no packet leaves),
/// without an option ROM. The same XML plugs and unplugs it.
pub fn interface_xml(mac: &crate::identity::MacAddr) -> String {
    format!("<interface type='user'><mac address='{mac}'/><model type='virtio'/><rom enabled='no'/></interface>")
}

fn emulator() -> String {
    let q = crate::backend::qemu::qemu_binary();
    if q.is_absolute() {
        return q.display().to_string();
    }
    std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join(&q)).find(|c| c.is_file()))
        .unwrap_or_else(|| "/usr/bin/qemu-system-x86_64".into())
        .display()
        .to_string()
}

/// Give the domain XML embedded in a save image a clone's identity: name, UUID, MAC, disk serial,
/// the files in its own directory (disk overlay, console log, probe socket), and the genid when
/// the clone has one. Each old value must be present, or the rewrite is refused.
pub fn rewrite_identity(xml: &str, from: &HostIdentity, from_dir: &Path, to: &HostIdentity, to_dir: &Path, nic: bool) -> Result<String, String> {
    let mut out = xml.to_string();
    let mut swap = |what: &str, old: String, new: String| -> Result<(), String> {
        if !out.contains(&old) {
            return Err(format!("the image's domain XML has no {what} {old:?} to rewrite"));
        }
        out = out.replace(&old, &new);
        Ok(())
    };
    swap("name", format!("<name>{}</name>", esc(&from.name)), format!("<name>{}</name>", esc(&to.name)))?;
    swap("uuid", format!("<uuid>{}</uuid>", from.uuid), format!("<uuid>{}</uuid>", to.uuid))?;
    if nic {
        swap("MAC", format!("address='{}'", from.mac), format!("address='{}'", to.mac))?;
    }
    swap("disk serial", format!("<serial>{}</serial>", esc(from.disk_serial.as_str())), format!("<serial>{}</serial>", esc(to.disk_serial.as_str())))?;
    swap("directory", format!("{}/", esc(&from_dir.display().to_string())), format!("{}/", esc(&to_dir.display().to_string())))?;
    if let Some(g) = to.vmgenid {
        let start = out.find("<genid>").ok_or("the image's domain has no <genid> to replace")?;
        let end = out[start..].find("</genid>").ok_or("unterminated <genid>")? + start + "</genid>".len();
        out.replace_range(start..end, &format!("<genid>{g}</genid>"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Timeouts;
    use crate::guest::GuestImage;

    fn spec(name: &str, vmgenid: bool) -> VmSpec {
        let guest = GuestImage {
            name: "tiny".into(),
            dir: "/g".into(),
            kernel: "/g/vmlinuz".into(),
            initrd: "/g/initrd.img".into(),
            disk: "/g/data.qcow2".into(),
            cmdline: "console=ttyS0".into(),
            kernel_release: None,
        };
        VmSpec {
            identity: HostIdentity::fresh(name.into(), vmgenid),
            guest,
            memory_mib: 256,
            accel: Accel::Tcg,
            dir: format!("/runs/{name}").into(),
            timeouts: Timeouts::default(),
        }
    }

    /// libvirt's in-process test driver parses and validates the XML we generate, and reads back
    /// the identity we put in (no libvirtd needed).
    #[test]
    fn the_test_driver_accepts_our_domain_xml() {
        virt::error::clear_error_callback();
        let conn = virt::connect::Connect::open(Some("test:///default")).unwrap();
        let s = spec("clonesafe-1-unit", true);
        let xml = domain_xml(&s, Path::new("/runs/clonesafe-1-unit/disk.qcow2"), true);
        let d = conn.define_domain_xml(&xml).unwrap_or_else(|e| panic!("{}\n{xml}", e.message()));
        let back = d.xml_desc(0).unwrap();
        let sum = crate::backend::libvirt::save_image::DomainSummary::of(&back).unwrap();
        assert_eq!(sum.name.as_deref(), Some("clonesafe-1-unit"));
        assert_eq!(sum.uuid, Some(s.identity.uuid.to_string()));
        assert_eq!(sum.macs, vec![s.identity.mac.to_string()]);
        assert_eq!(sum.genid, s.identity.vmgenid.map(|g| g.to_string()));
        assert!(back.contains(s.identity.disk_serial.as_str()));
        d.undefine().unwrap();
    }

    /// A clone's image XML names the clone's identity and files, and none of the source's.
    #[test]
    fn rewrite_replaces_every_source_identity_and_path() {
        let src = spec("clonesafe-1-src", false);
        let xml = domain_xml(&src, &src.dir.join("disk.qcow2"), false);
        let clone = spec("clonesafe-1-clone", false);
        let out = rewrite_identity(&xml, &src.identity, &src.dir, &clone.identity, &clone.dir, true).unwrap();
        for old in [src.identity.name.clone(), src.identity.uuid.to_string(), src.identity.mac.to_string(), src.identity.disk_serial.as_str().to_string(), format!("{}/", src.dir.display())] {
            assert!(!out.contains(&old), "{old} survived:\n{out}");
        }
        assert!(out.contains(&format!("{}/disk.qcow2", clone.dir.display())));
        assert!(out.contains(&format!("{}/probe.sock", clone.dir.display())));
        // An image that is not the source's is refused rather than half-rewritten.
        let other = spec("clonesafe-1-other", false);
        assert!(rewrite_identity(&xml, &other.identity, &other.dir, &clone.identity, &clone.dir, true).is_err());
    }
}
