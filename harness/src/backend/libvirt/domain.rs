//! Domain XML for a [`Machine`], and the identity rewrite a clone's save image gets.

use crate::backend::emulator;
use crate::backend::snapshot::{CloneArgs, Machine, SourceRecord};
use crate::guest::{AgentTransport, Boot};
use crate::text::xml_escape as esc;
use clonesafe_metadata::Accel;
use std::path::Path;

/// Where a VM's files are, as the hypervisor host sees them.
#[derive(Debug, Clone)]
pub enum Files {
    /// In the harness's run directory, which libvirtd on this machine shares: `<dir>/<file>`.
    /// The console is a file there and the probe a socket the harness listens on.
    Local,
    /// In the run's storage pool on a host that shares no filesystem with the harness
    /// (remote.rs): `<pool dir>/<vm>.<file>`, the guest's kernel and initrd uploaded there. The
    /// console and the serial probe are ptys and the qga probe's channel a socket libvirt binds;
    /// the harness reaches them through libvirt streams.
    Pool { prefix: String, kernel: Option<(String, String)> },
}

impl Files {
    /// What every file of the VM is named with: its directory and a slash, or its pool prefix.
    pub fn prefix(&self, args: &CloneArgs) -> String {
        match self {
            Files::Local => local_prefix(&args.dir),
            Files::Pool { prefix, .. } => prefix.clone(),
        }
    }
}

/// A VM's files in its directory `dir` here: `<dir>/`.
pub fn local_prefix(dir: &Path) -> String {
    format!("{}/", dir.display())
}

/// The domain for one VM. Every file it names starts with the VM's prefix (its directory, or
/// its name in the run's pool), so a clone's files are the source's with the prefix changed.
/// QEMU runs as root:root (`seclabel` DAC static, no relabel) because the run directory (or the
/// pool's) is private (0700) to the harness.
pub fn domain_xml(machine: &Machine, args: &CloneArgs, disk: &Path, files: &Files) -> String {
    let id = &args.identity;
    let pre = esc(&files.prefix(args));
    let remote = matches!(files, Files::Pool { .. });
    let (dtype, cpu) = match machine.accel {
        Accel::Kvm => ("kvm", "<cpu mode='host-passthrough'/>"),
        // libvirt's "maximum" is QEMU's -cpu max, what the QEMU backend uses under TCG.
        Accel::Tcg => ("qemu", "<cpu mode='maximum'/>"),
    };
    let genid = match (machine.devices.vmgenid, id.vmgenid) {
        (false, _) => String::new(),
        (true, Some(g)) => format!("<genid>{g}</genid>"),
        (true, None) => "<genid/>".into(),
    };
    let os = match &machine.guest.boot {
        Boot::DirectKernel { kernel, initrd, .. } => format!(
            "<kernel>{}</kernel>\n    <initrd>{}</initrd>\n    <cmdline>{}</cmdline>",
            esc(&match files {
                Files::Pool { kernel: Some((k, _)), .. } => k.clone(),
                _ => kernel.display().to_string(),
            }),
            esc(&match files {
                Files::Pool { kernel: Some((_, i)), .. } => i.clone(),
                _ => initrd.display().to_string(),
            }),
            esc(&machine.cmdline().unwrap_or_default())
        ),
        Boot::Disk => "<boot dev='hd'/>".into(),
    };
    let probe = match machine.guest.agent {
        AgentTransport::SerialProbe if remote => "<serial type='pty'><target port='1'/></serial>".into(),
        AgentTransport::SerialProbe => format!("<serial type='unix'><source mode='connect' path='{pre}probe.sock'/><target port='1'/></serial>"),
        // qemu-guest-agent's channel is libvirt's (clonesafe reaches it with
        // virDomainQemuAgentCommand); the injected probe's port connects to our socket. The
        // controller sits in the slot the QEMU backend uses.
        AgentTransport::Qga => format!(
            "<controller type='virtio-serial' index='0'><address type='pci' domain='0x0000' bus='0x00' slot='0x06' function='0x0'/></controller>
    <channel type='unix'>{}<target type='virtio' name='{}'/><address type='virtio-serial' controller='0' bus='0' port='2'/></channel>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/><address type='virtio-serial' controller='0' bus='0' port='1'/></channel>",
            // Remote: a socket libvirt binds on its host, opened with virDomainOpenChannel.
            if remote { "<source mode='bind'/>".to_string() } else { format!("<source mode='connect' path='{pre}probe.sock'/>") },
            crate::agent::qga::PROBE_PORT
        ),
        AgentTransport::None => String::new(),
    };
    let nic = if machine.devices.nic { interface_xml(&id.mac, args.port.as_ref()) } else { String::new() };
    // libvirt starts the swtpm itself (its state under /var/lib/libvirt/swtpm/<uuid>, removed
    // with a transient domain); a restore carries the source's state in the save image.
    let tpm = if machine.devices.tpm { "<tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm>" } else { "" };
    let seed = if machine.devices.seed {
        format!(
            "<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{pre}seed.iso'/><target dev='vdb' bus='virtio'/><readonly/><address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/></disk>"
        )
    } else {
        String::new()
    };
    format!(
        "<domain type='{dtype}'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  {genid}
  <sysinfo type='smbios'><system><entry name='serial'>{system_serial}</entry></system></sysinfo>
  <memory unit='MiB'>{mem}</memory>
  <vcpu>{vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <smbios mode='sysinfo'/>
    {os}
  </os>
  <features><acpi/></features>
  {cpu}
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    {emulator}
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
      <serial>{serial}</serial>
    </disk>
    {seed}
    {tpm}
    {nic}
    {console}
    {probe}
    <memballoon model='none'/>
  </devices>
  <seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>
</domain>
",
        name = esc(&id.name),
        uuid = id.uuid,
        mem = machine.memory_mib,
        vcpus = machine.vcpus,
        // A remote host runs its own QEMU: libvirt picks it from its capabilities.
        emulator = if remote { String::new() } else { format!("<emulator>{}</emulator>", esc(&emulator::qemu_path().display().to_string())) },
        console = if remote { "<serial type='pty'><target port='0'/></serial>".to_string() } else { format!("<serial type='unix'><source mode='connect' path='{pre}console.sock'/><target port='0'/></serial>") },
        disk = esc(&disk.display().to_string()),
        serial = esc(id.disk_serial.as_str()),
        system_serial = esc(id.system_serial.as_str()),
    )
}

/// The NIC: virtio on user networking (the guest never configures it, so no packet leaves),
/// without an option ROM; or, on a network segment, on the segment's tap, which libvirt opens by
/// name and does not manage (`type='ethernet'`, `managed='no'`, libvirt 5.7+; the segment then
/// moves it into its namespace: network/segment.rs). The same XML plugs and unplugs it.
pub fn interface_xml(mac: &crate::identity::MacAddr, port: Option<&crate::network::segment::Port>) -> String {
    match port {
        None => format!("<interface type='user'><mac address='{mac}'/><model type='virtio'/><rom enabled='no'/></interface>"),
        Some(p) => format!("<interface type='ethernet'><mac address='{mac}'/><target dev='{}' managed='no'/><model type='virtio'/><rom enabled='no'/></interface>", esc(&p.tap)),
    }
}

/// The segment tap a domain XML's ethernet interface names, if any.
pub fn segment_tap(xml: &str) -> Option<&str> {
    let i = xml.find("<interface type='ethernet'")?;
    let rest = &xml[i..xml[i..].find("</interface>").map(|e| i + e)?];
    let t = rest.find("<target dev='")? + "<target dev='".len();
    rest[t..].split('\'').next()
}

#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("the image's domain XML has no {what} {old:?} to rewrite")]
    Missing { what: &'static str, old: String },
    #[error("the image's domain XML has no complete <genid> element to replace")]
    NoGenid,
}

/// Give the domain XML embedded in a save image a clone's identity: name, UUID, MAC, disk serial,
/// its own files (disk overlay, console log, probe socket: `from_prefix` becomes `to_prefix`, see
/// [`Files::prefix`]), and the genid when the clone has one. Each old value must be present, or
/// the rewrite is refused.
pub fn rewrite_identity(xml: &str, from: &SourceRecord, to: &CloneArgs, nic: bool, (from_prefix, to_prefix): (&str, &str)) -> Result<String, RewriteError> {
    let (f, t) = (&from.identity, &to.identity);
    let mut out = xml.to_string();
    let mut swap = |what: &'static str, old: String, new: String| -> Result<(), RewriteError> {
        if !out.contains(&old) {
            return Err(RewriteError::Missing { what, old });
        }
        out = out.replace(&old, &new);
        Ok(())
    };
    swap("name", format!("<name>{}</name>", esc(&f.name)), format!("<name>{}</name>", esc(&t.name)))?;
    swap("uuid", format!("<uuid>{}</uuid>", f.uuid), format!("<uuid>{}</uuid>", t.uuid))?;
    if nic {
        swap("MAC", format!("address='{}'", f.mac), format!("address='{}'", t.mac))?;
    }
    swap("disk serial", format!("<serial>{}</serial>", esc(f.disk_serial.as_str())), format!("<serial>{}</serial>", esc(t.disk_serial.as_str())))?;
    swap("system serial", format!("<entry name='serial'>{}</entry>", esc(f.system_serial.as_str())), format!("<entry name='serial'>{}</entry>", esc(t.system_serial.as_str())))?;
    swap("directory", esc(from_prefix), esc(to_prefix))?;
    if let Some(g) = t.vmgenid {
        let start = out.find("<genid>").ok_or(RewriteError::NoGenid)?;
        let end = out[start..].find("</genid>").ok_or(RewriteError::NoGenid)? + start + "</genid>".len();
        out.replace_range(start..end, &format!("<genid>{g}</genid>"));
    }
    Ok(out)
}

/// `xml` without its disks' `<backingStore>` chains (nested ones included), so that libvirt
/// reads each chain from the images' own headers. A derived snapshot's chain names the source's
/// files, which the prefix rewrite would move into the clone's directory.
pub fn without_backing_stores(xml: &str) -> String {
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(start) = rest.find("<backingStore") {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let open_end = tail.find('>').map_or(tail.len(), |e| e + 1);
        if tail[..open_end].ends_with("/>") {
            rest = &tail[open_end..];
            continue;
        }
        // Skip to the matching close, counting nested chains.
        let (mut depth, mut i) = (1usize, open_end);
        while depth > 0 && i < tail.len() {
            let next_open = tail[i..].find("<backingStore").map(|p| p + i);
            let next_close = tail[i..].find("</backingStore>").map(|p| p + i);
            match (next_open, next_close) {
                (Some(o), Some(c)) if o < c => {
                    let e = tail[o..].find('>').map_or(tail.len(), |e| o + e + 1);
                    if !tail[o..e].ends_with("/>") {
                        depth += 1;
                    }
                    i = e;
                }
                (_, Some(c)) => {
                    depth -= 1;
                    i = c + "</backingStore>".len();
                }
                _ => i = tail.len(),
            }
        }
        rest = &tail[i..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn backing_store_chains_are_removed_whole() {
        let xml = "<disk><source file='/r/s/disk-after-snapshot-1.qcow2'/><backingStore type='file' index='1'><format type='qcow2'/><source file='/r/s/disk.qcow2'/><backingStore type='file' index='2'><source file='/g/base.qcow2'/><backingStore/></backingStore></backingStore><target dev='vda'/></disk><disk><backingStore/></disk>";
        assert_eq!(without_backing_stores(xml), "<disk><source file='/r/s/disk-after-snapshot-1.qcow2'/><target dev='vda'/></disk><disk></disk>");
        assert_eq!(without_backing_stores("<a/>"), "<a/>");
    }
    use super::*;
    use crate::guest::GuestProfile;
    use crate::identity::HostIdentity;

    fn machine(vmgenid: bool) -> Machine {
        let guest = GuestProfile::for_tests();
        let mut m = Machine::new(guest, 256, Accel::Tcg);
        m.devices.vmgenid = vmgenid;
        m
    }

    fn args(name: &str, vmgenid: bool) -> CloneArgs {
        let identity = if vmgenid { HostIdentity::fresh_with_vmgenid(name.into()) } else { HostIdentity::fresh(name.into()) };
        CloneArgs { identity, dir: format!("/runs/{name}").into(), forwards: Default::default(), segment: None, port: None }
    }

    /// libvirt's in-process test driver parses and validates the XML we generate, and reads back
    /// the identity we put in (no libvirtd needed).
    #[test]
    fn the_test_driver_accepts_our_domain_xml() {
        virt::error::clear_error_callback();
        let conn = virt::connect::Connect::open(Some("test:///default")).unwrap();
        let s = args("clonesafe-1-unit", true);
        let xml = domain_xml(&machine(true), &s, Path::new("/runs/clonesafe-1-unit/disk.qcow2"), &Files::Local);
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
        let src = args("clonesafe-1-src", false);
        let xml = domain_xml(&machine(false), &src, &src.dir.join("disk.qcow2"), &Files::Local);
        let clone = args("clonesafe-1-clone", false);
        let from = SourceRecord { identity: src.identity.clone(), dir: src.dir.clone(), probe: crate::agent::ProbeState::Builtin, agent: true };
        let prefixes = (Files::Local.prefix(&src), Files::Local.prefix(&clone));
        let out = rewrite_identity(&xml, &from, &clone, true, (&prefixes.0, &prefixes.1)).unwrap();
        for old in [src.identity.name.clone(), src.identity.uuid.to_string(), src.identity.mac.to_string(), src.identity.disk_serial.as_str().to_string(), src.identity.system_serial.as_str().to_string(), format!("{}/", src.dir.display())] {
            assert!(!out.contains(&old), "{old} survived:\n{out}");
        }
        assert!(out.contains(&format!("{}/disk.qcow2", clone.dir.display())));
        assert!(out.contains(&format!("{}/probe.sock", clone.dir.display())));
        // An image that is not the source's is refused rather than half-rewritten.
        let other = args("clonesafe-1-other", false);
        let other = SourceRecord { identity: other.identity, dir: other.dir, probe: crate::agent::ProbeState::Builtin, agent: true };
        assert!(matches!(rewrite_identity(&xml, &other, &clone, true, (&prefixes.0, &prefixes.1)), Err(RewriteError::Missing { what: "name", .. })));
    }

    /// For a remote host the XML names no file of the harness's machine: the disk, kernel,
    /// initrd and seed are the pool's, the console and the probe are ptys or a socket libvirt
    /// binds, and no emulator path is given. The test driver accepts it, and the clone's rewrite
    /// swaps the pool prefix.
    #[test]
    fn remote_files_name_nothing_local() {
        virt::error::clear_error_callback();
        let conn = virt::connect::Connect::open(Some("test:///default")).unwrap();
        let pool = |n: &str| Files::Pool { prefix: format!("/pool/{n}."), kernel: Some(("/pool/base-1-vmlinuz".into(), "/pool/base-2-initrd.img".into())) };
        let src = args("clonesafe-1-src", true);
        let mut m = machine(true);
        m.devices.seed = true;
        let xml = domain_xml(&m, &src, Path::new("/pool/clonesafe-1-src.disk.qcow2"), &pool("clonesafe-1-src"));
        for local in ["/runs/", "/g/", "<emulator>", "type='file'><source path"] {
            assert!(!xml.contains(local), "{local} in:\n{xml}");
        }
        assert_eq!(xml.matches("<serial type='pty'>").count(), 2, "{xml}");
        assert!(xml.contains("/pool/clonesafe-1-src.seed.iso") && xml.contains("/pool/base-1-vmlinuz"), "{xml}");
        let d = conn.define_domain_xml(&xml).unwrap_or_else(|e| panic!("{}\n{xml}", e.message()));
        d.undefine().unwrap();
        let mut q = machine(false);
        q.guest.agent = AgentTransport::Qga;
        let qxml = domain_xml(&q, &src, Path::new("/pool/d"), &pool("clonesafe-1-src"));
        assert!(qxml.contains("<channel type='unix'><source mode='bind'/>") && !qxml.contains("probe.sock"), "{qxml}");
        let clone = args("clonesafe-1-clone", true);
        let from = SourceRecord { identity: src.identity.clone(), dir: src.dir.clone(), probe: crate::agent::ProbeState::Builtin, agent: true };
        let out = rewrite_identity(&xml, &from, &clone, true, ("/pool/clonesafe-1-src.", "/pool/clonesafe-1-clone.")).unwrap();
        assert!(out.contains("/pool/clonesafe-1-clone.disk.qcow2") && out.contains("/pool/clonesafe-1-clone.seed.iso") && !out.contains("clonesafe-1-src"), "{out}");
    }
}
