//! What each built-in check reads, where, what can make it unique, and which public list of
//! clone hazards it comes from: `clonesafe checks`, in the spirit of
//! `virt-sysprep --list-operations`.
//!
//! "Made unique by" names the recipes and fix-ups whose mechanism changes the identity; the
//! reference reports (reports/) are the measurements, and some say otherwise under a race (the
//! kernel RNG before the vmgenid reseed lands) or on one guest (a sysprep's single machine-id).

use clonesafe_metadata::{CheckId, Severity};
use serde::Serialize;
use std::borrow::Cow;

/// Where a check's values come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Where {
    /// Read inside the guest (the probe or qemu-guest-agent).
    Guest,
    /// Read by the harness on the host: the snapshot's files, or the host's own knowledge.
    Host,
    /// Asked of the guest's services from the host, as a network client would.
    Service,
    /// Seen on the network segment's wire.
    Wire,
}

/// One check in the catalogue: built in, or declared by a scenario file.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub id: Cow<'static, str>,
    /// What it compares.
    pub reads: Cow<'static, str>,
    pub source: Where,
    /// The path or interface it reads.
    pub at: Cow<'static, str>,
    /// Recipes (strategies) or fix-ups whose mechanism makes it unique; empty: none of clonesafe's.
    pub made_unique_by: Vec<Cow<'static, str>>,
    /// The public hazard lists that name it (for a declared one: where it is declared).
    pub listed_in: Vec<Cow<'static, str>>,
    /// What breaks when clones share it.
    pub consequence: Cow<'static, str>,
    /// How bad that is; None for a declared identity that does not say.
    pub severity: Option<Severity>,
    pub declared: bool,
    /// The scenarios that check a declared identity.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scenarios: Vec<String>,
}

const SYSTEMD: &str = "systemd docs/BUILDING_IMAGES.md";
const SEEDS: &str = "systemd docs/RANDOM_SEEDS.md";
const FIRECRACKER: &str = "Firecracker docs/snapshotting/random-for-clones.md";
const THREAD: &str = "OpenStack live-clone thread (2013)";
const FIRECRACKER_NET: &str = "Firecracker docs/snapshotting/network-for-clones.md";
const SNAPSTART: &str = "AWS Lambda SnapStart uniqueness docs";
const CLOUD_INIT: &str = "cloud-init first-boot docs";

fn entry(id: CheckId) -> Entry {
    let e = |reads: &'static str, source, at: &'static str, made_unique_by: &'static [&'static str], listed_in: &'static [&'static str]| Entry {
        id: id.as_str().into(),
        reads: reads.into(),
        source,
        at: at.into(),
        made_unique_by: made_unique_by.iter().map(|s| Cow::Borrowed(*s)).collect(),
        listed_in: listed_in.iter().map(|s| Cow::Borrowed(*s)).collect(),
        consequence: Cow::Borrowed(consequence(id).1),
        severity: Some(consequence(id).0),
        declared: false,
        scenarios: vec![],
    };
    match id {
        CheckId::Mac => e("the MAC of each NIC", Where::Guest, "/sys/class/net/*/address", &["nic-replug", "image-clone", "cold-boot"], &[THREAD, "virt-sysprep net-hwaddr"]),
        CheckId::SmbiosUuid => e("the SMBIOS system UUID", Where::Guest, "/sys/class/dmi/id/product_uuid", &["image-clone", "cold-boot"], &[THREAD]),
        CheckId::DiskSerial => e("each virtio-blk serial", Where::Guest, "/sys/block/vd*/serial", &["every method (read from the new device)"], &["clonesafe (disk ids)"]),
        CheckId::MachineId => e("machine-id", Where::Guest, "/etc/machine-id", &["agent-fixup", "image-clone-sysprep"], &[THREAD, "virt-sysprep machine-id", SYSTEMD]),
        CheckId::BootId => e("the kernel's boot id", Where::Guest, "/proc/sys/kernel/random/boot_id", &["image-clone", "cold-boot (a reboot)"], &[THREAD]),
        CheckId::Hostname => e("the hostname", Where::Guest, "/etc/hostname, uname", &["agent-fixup", "image-clone-sysprep"], &[THREAD, "virt-sysprep net-hostname"]),
        CheckId::SshHostKeys => e("SHA-256 fingerprints of the SSH host keys on disk", Where::Guest, "/etc/ssh/ssh_host_*_key.pub", &["agent-fixup", "image-clone-sysprep"], &[THREAD, "virt-sysprep ssh-hostkeys", SYSTEMD]),
        CheckId::KernelRng => e("getrandom(2) output right after resume, at fixed offsets", Where::Guest, "getrandom(2)", &["vmgenid (racy: the reseed is asynchronous)", "rng-gate", "cold-boot"], &[THREAD, FIRECRACKER]),
        CheckId::UserspaceRng => e("a program's PRNG seeded before the snapshot", Where::Guest, "the probe's own PRNG", &["agent-fixup (the program reseeds when told)", "cold-boot"], &[THREAD, FIRECRACKER]),
        CheckId::Vmgenid => e("whether each clone logged the vmgenid reseed", Where::Guest, "dmesg: crng reseeded due to virtual machine fork", &["vmgenid"], &[FIRECRACKER]),
        CheckId::RandomUuid => e("random UUIDs from the kernel right after resume, beside each kernel RNG sample", Where::Guest, "/proc/sys/kernel/random/uuid", &["vmgenid (racy: the reseed is asynchronous)", "rng-gate", "cold-boot"], &[FIRECRACKER, "Cloud Hypervisor clone reports (identical uuids for about 36 ms)"]),
        CheckId::VdsoRng => e("getrandom() through the guest's own glibc right after resume, at the kernel RNG's offsets: the vDSO path on glibc 2.41+ and Linux 6.11+, tested in the guest", Where::Guest, "glibc getrandom() in clonesafe-vdso-rng, a helper started before the snapshot", &["vmgenid (the reseed bumps the generation the vDSO watches; racy, as for kernel_rng)"], &[FIRECRACKER, "Linux lib/vdso/getrandom.c", "glibc 2.41 NEWS (vDSO getrandom)"]),
        CheckId::Vmclock => e("whether each clone saw the VMClock page's disruption marker or generation counter change, right after resume and 1 s later", Where::Guest, "/dev/vmclock0 (Linux 6.13+ ptp_vmclock; QEMU 9.1+ -device vmclock)", &["vmclock, where QEMU changes the page on a restore (measured, not assumed)"], &["Linux include/uapi/linux/vmclock-abi.h", "QEMU hw/acpi/vmclock.c"]),
        CheckId::FsUuid => e("the UUID of every file system (ext2/3/4, XFS, Btrfs, swap), read from each block device's superblock", Where::Guest, "/dev/vd*, /dev/loop*, /dev/dm-* (as blkid reads them)", &[], &["virt-sysprep fs-uuids (not a default operation)", SYSTEMD]),
        CheckId::LvmUuid => e("LVM2 physical volume and volume group UUIDs", Where::Guest, "the PV label and VG metadata on each block device", &[], &["virt-sysprep lvm-uuids (not a default operation)"]),
        CheckId::LuksVolumeKey => e("which volume key each LUKS container unlocks to: a digest of its header's volume-key digest and salt (never the key)", Where::Guest, "the LUKS1/LUKS2 header on each block device; /sys/block/dm-*/dm/uuid for whether it is open", &[], &[SYSTEMD, "cryptsetup FAQ (cloned containers share the master key)"]),
        CheckId::MachineInfo => e("systemd's machine-info (pretty hostname, deployment, location)", Where::Guest, "/etc/machine-info", &[], &[SYSTEMD, "hostnamectl(1)"]),
        CheckId::UserCredentials => e("password hashes in /etc/shadow and users' private SSH keys, as digests", Where::Guest, "/etc/shadow; /root/.ssh/id_*, /home/*/.ssh/id_*", &["image-clone-sysprep (ssh-userdir removes the keys; the hashes stay)"], &["virt-sysprep user-account, ssh-userdir", "Azure Linux agent deprovision", "cloud-init first-boot docs"]),
        CheckId::MachineAccount => e("a machine account's secrets: the Kerberos keytab and Samba's secrets", Where::Guest, "/etc/krb5.keytab, /var/lib/samba/private/secrets.tdb, secrets.keytab", &["none: image-clone-sysprep deletes them (kerberos-hostkeytab, samba-db-log; measured in reports/coverage), and each clone must then join the domain itself"], &["virt-sysprep kerberos-hostkeytab, samba-db-log", "Samba (a cloned member must rejoin the domain)"]),
        CheckId::TpmEk => e("the virtual TPM's endorsement key: TPM2_CreatePrimary under the endorsement hierarchy with the TCG ECC EK template, as a digest of the public area", Where::Guest, "/dev/tpmrm0 (a TPM the scenario gives each VM: tpm = true, swtpm on the host)", &["image-clone, cold-boot (each VM's swtpm is manufactured fresh, as virt-clone does)"], &["systemd-cryptenroll(1) (volume keys sealed to the TPM)", "TCG EK Credential Profile"]),
        CheckId::SharedPages => e("guest RAM pages each VM shares physically with another process (a clone, the template it maps, KSM)", Where::Host, "/proc/<qemu pid>/smaps: Shared_Clean + Shared_Dirty of the guest RAM mapping", &["every method that gives each clone its own RAM (stream restores, boots) without KSM"], &["Firecracker docs/snapshotting/snapshot-support.md (shared memory between clones)", "KSM side-channel research (Flush+Reload, dedup timing)"]),
        CheckId::SmbiosSerial => e("the SMBIOS system serial number", Where::Guest, "/sys/class/dmi/id/product_serial", &["image-clone", "cold-boot"], &["KubeVirt (a firmware serial per VM)", "asset inventories and licence keys"]),
        CheckId::VmgenidUevent => e("whether, and when, each clone received the kernel's NEW_VMGENID uevent (Linux 6.8+)", Where::Guest, "netlink uevent NEW_VMGENID=1, listened for from before the snapshot", &["vmgenid, on a kernel that sends it (added in 6.8; Debian's 6.12 and 7.3 measured not to)"], &[FIRECRACKER, "Linux drivers/virt/vmgenid.c"]),
        CheckId::HwMismatchMs => e("whether, and how long after resume, each clone sees the hardware it was given", Where::Guest, "/sys/class/net/*/address against the host's MAC", &["nic-replug"], &[THREAD]),
        CheckId::SecretRemanence => e("a deleted canary secret in the artifacts clones are made from", Where::Host, "memory snapshot, RAM file, frozen disk, copied image", &["mitigate-remanence"], &[THREAD, "virt-sysprep (deleted files)"]),
        CheckId::RandomSeed => e("SHA-256 of systemd's random seed and whether it may be credited", Where::Guest, "/var/lib/systemd/random-seed", &["agent-fixup", "cold-boot"], &[SEEDS, "virt-sysprep random-seed"]),
        CheckId::CredentialSecret => e("SHA-256 of systemd's credential secret", Where::Guest, "/var/lib/systemd/credential.secret", &[], &[SYSTEMD]),
        CheckId::DbusMachineId => e("D-Bus's machine-id when it is a file of its own", Where::Guest, "/var/lib/dbus/machine-id", &["agent-fixup"], &["virt-sysprep machine-id", SYSTEMD]),
        CheckId::CloudInitInstanceId => e("cloud-init's instance-id", Where::Guest, "/var/lib/cloud/data/instance-id", &["image-clone with a NoCloud seed per VM"], &[CLOUD_INIT]),
        CheckId::SshKeyscan => e("the host keys each VM's sshd serves", Where::Service, "ssh-keyscan from the host", &["agent-fixup", "image-clone-sysprep"], &[THREAD, "virt-sysprep ssh-hostkeys"]),
        CheckId::TlsTicketKey => e("whether a TLS session ticket from one VM is accepted by another", Where::Service, "openssl s_client -sess_out/-sess_in from the host", &["cold-boot", "image-clone"], &[FIRECRACKER]),
        CheckId::OpensslRng => e("the ServerHello random each VM's TLS server sends right after resume", Where::Service, "openssl s_client from the host", &["cold-boot", "image-clone"], &[FIRECRACKER]),
        CheckId::WallClockSkewMs => e("guest wall clock minus host wall clock", Where::Guest, "clock_gettime(CLOCK_REALTIME) against the host's", &["clock"], &[FIRECRACKER]),
        CheckId::DhcpClientId => e("the DHCP client identity each VM sends", Where::Wire, "DHCP option 61 (DUID and IAID) on the segment", &["agent-fixup (a new machine-id, networkd restarted)", "nic-replug"], &["virt-sysprep dhcp-client-state", "systemd issue 9609"]),
        CheckId::Ipv4Lease => e("the IPv4 address each VM holds at the end of the watch", Where::Wire, "DHCP leases on the segment", &["nic-replug", "agent-fixup"], &["virt-sysprep dhcp-client-state"]),
        CheckId::Ipv6Addr => e("each VM's IPv6 addresses and whether DAD failed", Where::Wire, "the segment and /proc/net/if_inet6", &["nic-replug"], &["NetworkManager secret_key (stable privacy)"]),
        CheckId::ArpConflict => e("two MACs claiming one address, or one MAC on two ports", Where::Wire, "ARP on the segment", &["nic-replug"], &[THREAD]),
        CheckId::IpWindowMs => e("from resume until each VM holds an address of its own", Where::Wire, "DHCP and ARP on the segment", &["nic-replug", "agent-fixup"], &[THREAD]),
        CheckId::TcpSession => e("whether two VMs spoke on one TCP connection: the source opens one to the segment's peer before the snapshot, each VM writes its name on its session after resume", Where::Wire, "the segment's TCP peer, the capture, and each guest's socket", &["drop-sessions (ss -K: the inherited connection is destroyed in each clone)"], &[FIRECRACKER_NET, SNAPSTART]),
    }
}

/// What breaks when clones share `id`, and how bad it is. The sources are the lists in
/// `listed_in`; where this project measured the mechanism, the reference report says so.
pub fn consequence(id: CheckId) -> (Severity, &'static str) {
    use Severity::*;
    match id {
        CheckId::Mac => (NetworkCollision, "two NICs with one MAC on a segment: bridges and switches flap between the ports, and frames reach the wrong clone"),
        CheckId::SmbiosUuid => (IdentityConfusion, "inventory, licensing and anything keyed on the system UUID counts the clones as one machine"),
        CheckId::DiskSerial => (IdentityConfusion, "/dev/disk/by-id and tools keyed on disk serials (multipath, LVM filters) take two disks for one"),
        CheckId::MachineId => (NetworkCollision, "journald, D-Bus and inventory take the clones for one machine, and systemd-networkd derives its DHCP DUID from it, so clones ask for one lease (measured: reports/network)"),
        CheckId::BootId => (IdentityConfusion, "journald and anything keyed on boot_id treat the clones' logs as one boot"),
        CheckId::Hostname => (IdentityConfusion, "logs, monitoring, DHCP hostname registration and clustering see one name for several machines"),
        CheckId::SshHostKeys => (KeyReuse, "one clone can impersonate another to SSH clients, and a key taken from one opens them all"),
        CheckId::KernelRng => (KeyReuse, "the clones produce the same \"random\" bytes until a reseed: the same keys, nonces and session ids"),
        CheckId::UserspaceRng => (KeyReuse, "a program's PRNG gives every clone the same output until the program reseeds: the same tokens and nonces"),
        CheckId::Vmgenid => (KeyReuse, "no clone is told it is a copy, so nothing reseeds on the fork (the kernel's vmgenid reseed, programs that watch for it)"),
        CheckId::RandomUuid => (KeyReuse, "programs that take ids, request ids or temporary names from the kernel's random uuid hand the same ones out in every clone until the CRNG reseeds"),
        CheckId::VdsoRng => (KeyReuse, "a program's getrandom() runs from per-thread state in its own memory, which every clone resumes with: until the kernel's RNG generation changes, the clones' programs draw the same bytes (keys, nonces, session ids) without entering the kernel"),
        CheckId::Vmclock => (KeyReuse, "a clone that reads its VMClock page cannot tell it was restored, so it keeps the clock calibration, UUIDs, connections and random state the page is meant to make it discard"),
        CheckId::FsUuid => (IdentityConfusion, "mount by UUID, initramfs root lookup and udev's /dev/disk/by-uuid pick one of two disks at random when two clones' disks meet on one host, or a clone's disk is attached to another clone"),
        CheckId::LvmUuid => (IdentityConfusion, "LVM refuses or mixes up duplicate PVs and VGs when clones' disks meet on one host (a backup host, a repair VM)"),
        CheckId::LuksVolumeKey => (KeyReuse, "every clone encrypts under one volume key: a key taken from one clone (memory, a leaked keyslot) decrypts the volumes of all, and re-keying one changes nothing for the rest"),
        CheckId::MachineInfo => (IdentityConfusion, "the pretty hostname, deployment and location systemd reports describe the source, not the clone"),
        CheckId::UserCredentials => (KeyReuse, "one password or SSH key opens every clone: a credential taken from one clone is a credential for the fleet"),
        CheckId::MachineAccount => (KeyReuse, "many machines speak as one domain member: one machine password and keytab, so a ticket or secret taken from one clone impersonates all, and a password change by one locks the others out"),
        CheckId::TpmEk => (KeyReuse, "every clone has the source's TPM seeds: one endorsement key for all, so attestation cannot tell the clones apart, and a secret sealed to the TPM (systemd-cryptenroll, BitLocker) unseals in every clone"),
        CheckId::SharedPages => (Informational, "clones that map the same physical pages are exposed to cross-VM page-sharing side channels (Flush+Reload, dedup timing): one clone can learn which pages another touches"),
        CheckId::SmbiosSerial => (IdentityConfusion, "asset inventory, licence activation and support tooling keyed on the system serial count the clones as one machine"),
        CheckId::VmgenidUevent => (KeyReuse, "user space that waits for the kernel's fork notice (to reseed its own generators, drop session keys) is never told, so it keeps the source's state"),
        CheckId::HwMismatchMs => (NetworkCollision, "the clone keeps using the MAC of the hardware it was copied from, not the one its host gave it"),
        CheckId::SecretRemanence => (KeyReuse, "a secret deleted before the snapshot is readable in the files every clone is made from"),
        CheckId::RandomSeed => (KeyReuse, "clones that credit the same seed file start their RNG from the same bytes"),
        CheckId::CredentialSecret => (KeyReuse, "clones can decrypt each other's systemd credentials"),
        CheckId::DbusMachineId => (IdentityConfusion, "D-Bus peers take the clones for one machine, even after /etc/machine-id was regenerated"),
        CheckId::CloudInitInstanceId => (IdentityConfusion, "cloud-init does not rerun its per-instance steps (host keys, hostname) on a clone"),
        CheckId::SshKeyscan => (KeyReuse, "clients see one host key for several servers: one clone can impersonate another"),
        CheckId::TlsTicketKey => (KeyReuse, "a session ticket from one clone resumes on another, and one clone's recorded sessions decrypt with another's key"),
        CheckId::OpensslRng => (KeyReuse, "TLS servers send the same randoms, and with them can make the same ephemeral keys"),
        CheckId::WallClockSkewMs => (Informational, "a clone runs behind the host's clock until something sets it: timestamps out of order, certificate and Kerberos time checks can fail"),
        CheckId::DhcpClientId => (NetworkCollision, "clones with one DHCP client identity are handed one address"),
        CheckId::Ipv4Lease => (NetworkCollision, "two clones hold one IPv4 address"),
        CheckId::Ipv6Addr => (NetworkCollision, "two clones hold one IPv6 address, and duplicate-address detection is not run again after resume"),
        CheckId::ArpConflict => (NetworkCollision, "neighbours flap between clones answering for one address"),
        CheckId::IpWindowMs => (NetworkCollision, "until each clone renews with its own identity, clones hold their source's address"),
        CheckId::TcpSession => (NetworkCollision, "every clone resumes its source's established connections with the same 4-tuple and sequence numbers: the peer takes N machines for one, drops what all but one say as retransmissions while their kernels count it delivered, and its answers reach whichever clone the switch picks"),
    }
}

/// Every built-in check, in report order.
pub fn built_in() -> Vec<Entry> {
    CheckId::ALL.iter().map(|id| entry(*id)).collect()
}

/// The identities `plan`'s scenario files declare, each once, with the scenarios that check it.
/// The same id declared differently in two files is listed once per declaration.
pub fn declared(plan: &crate::scenario::Plan) -> Vec<Entry> {
    let mut out: Vec<(Entry, String)> = Vec::new();
    for s in &plan.scenarios {
        for d in &s.declared {
            let at = format!("{}:{}", d.file.display(), d.line);
            match out.iter_mut().find(|(e, a)| e.id == d.id.as_str() && *a == at) {
                Some((e, _)) => e.scenarios.push(s.name.clone()),
                None => {
                    let reads = d.description.clone().unwrap_or_else(|| "an identity the scenario file declares".into());
                    let entry = Entry {
                        id: d.id.clone().into(),
                        reads: format!("{reads} (read {})", d.when.as_str()).into(),
                        source: Where::Guest,
                        at: d.reads().into(),
                        made_unique_by: vec![],
                        listed_in: vec![format!("declared at {at}").into()],
                        consequence: d.consequence.clone().map(Cow::Owned).unwrap_or(Cow::Borrowed("not stated (declare consequence = \"...\")")),
                        severity: d.severity,
                        declared: true,
                        scenarios: vec![s.name.clone()],
                    };
                    out.push((entry, at));
                }
            }
        }
    }
    out.into_iter().map(|(e, _)| e).collect()
}

/// The catalogue as a table for the terminal.
pub fn render(entries: &[Entry]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for e in entries {
        let where_ = match e.source {
            Where::Guest => "guest",
            Where::Host => "host",
            Where::Service => "service",
            Where::Wire => "wire",
        };
        let _ = writeln!(out, "{:<24} {:<8} {}", e.id, where_, crate::text::for_terminal(&e.reads));
        let _ = writeln!(out, "{:<24} {:<8} at: {}", "", "", crate::text::for_terminal(&e.at));
        let fixed = if e.made_unique_by.is_empty() { "none of clonesafe's recipes".to_string() } else { e.made_unique_by.join(", ") };
        let _ = writeln!(out, "{:<24} {:<8} made unique by: {fixed}", "", "");
        let _ = writeln!(out, "{:<24} {:<8} listed in: {}", "", "", e.listed_in.join("; "));
        let sev = e.severity.map(|s| s.as_str()).unwrap_or("not stated");
        let _ = writeln!(out, "{:<24} {:<8} if shared ({sev}): {}", "", "", crate::text::for_terminal(&e.consequence));
        if !e.scenarios.is_empty() {
            let _ = writeln!(out, "{:<24} {:<8} checked by: {}", "", "", e.scenarios.join(", "));
        }
    }
    out
}

/// The catalogue as a Markdown table (docs/checks.md holds the built-in one; a test keeps the two
/// equal). Everything a declaration wrote is escaped.
pub fn markdown(entries: &[Entry]) -> String {
    use std::fmt::Write;
    let e = crate::text::md_escape;
    let mut out = String::from("| check | severity | reads (where) | made unique by | listed in | if shared |\n|---|---|---|---|---|---|\n");
    for x in entries {
        let fixed = if x.made_unique_by.is_empty() { "none of clonesafe's recipes".to_string() } else { x.made_unique_by.join(", ") };
        let where_ = match x.source {
            Where::Guest => "guest",
            Where::Host => "host",
            Where::Service => "service",
            Where::Wire => "wire",
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {}: {} ({where_}) | {} | {} | {} |",
            e(&x.id),
            x.severity.map(|s| s.as_str()).unwrap_or("not stated"),
            e(&x.reads),
            e(&x.at),
            e(&fixed),
            e(&x.listed_in.join("; ")),
            e(&x.consequence)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_check_is_catalogued_once_with_where_and_why() {
        let all = built_in();
        assert_eq!(all.len(), CheckId::ALL.len());
        for (e, id) in all.iter().zip(CheckId::ALL) {
            assert_eq!(e.id, id.as_str());
            assert!(!e.reads.is_empty() && !e.at.is_empty() && !e.listed_in.is_empty(), "{e:?}");
        }
        // Each says what breaks if clones share it, and how bad that is.
        assert!(all.iter().all(|e| e.severity.is_some() && e.consequence.len() > 20), "{all:?}");
        assert_eq!(consequence(CheckId::SshHostKeys).0, Severity::KeyReuse);
        assert_eq!(consequence(CheckId::Ipv4Lease).0, Severity::NetworkCollision);
        assert!(render(&all).contains("if shared (key-reuse): one clone can impersonate another"));
        // What no recipe of clonesafe's fixes says so.
        assert!(render(&all).contains("credential_secret") && render(&all).contains("none of clonesafe's recipes"));
    }
}
