//! Why an identity stays duplicated under a recipe: the explanations a reviewer needs next to
//! the verdicts. Keyed by check id; a report uses them for whatever `full` still duplicates.

use clonesafe_metadata::{CheckId, CheckName};

pub fn why_duplicate(id: &CheckName) -> &'static str {
    let Some(id) = id.builtin() else {
        return "An identity the scenario file declared. clonesafe's recipes know nothing of it: no sysprep operation or fix-up here regenerates it, so the image, or whatever provisions each clone, must.";
    };
    match id {
        CheckId::SmbiosUuid => "The guest read its SMBIOS/DMI table at boot and keeps the copy in memory (/sys/class/dmi/id reads it). A new -uuid changes the table in the new VM's firmware area, but the restored kernel never reads it again. Only a reboot, or a guest that re-reads DMI, changes it.",
        CheckId::BootId => "boot_id is created once per boot by the kernel and lives in memory. By definition every clone of one running system shares its boot. Nothing short of a reboot changes it, and software that keys on boot_id (journald, for example) treats the clones as one boot.",
        CheckId::Mac => "The virtio-net MAC is migrated device state, so the clone's NIC keeps the source's MAC whatever the host assigned. Only replacing the device (nic-replug) changes what the guest sees.",
        CheckId::MachineId | CheckId::Hostname | CheckId::SshHostKeys => "These live on the guest's disk and in its memory. Nothing outside the guest changes them. A guest agent (agent-fixup) or an offline sysprep must regenerate them.",
        CheckId::KernelRng => "The CRNG state is part of the guest's memory. It diverges only after a reseed: the vmgenid notification, an agent's RNDRESEEDCRNG, or enough interrupt entropy. A read before that returns the same bytes in every clone. The vmgenid notification is asynchronous (an ACPI notify handled by a kernel worker), so a read in the first milliseconds after resume can come before it.",
        CheckId::UserspaceRng => "A program's PRNG, seeded once before the snapshot, is copied into every clone. Only the program itself can reseed it, when it is told to (here by the agent). Output taken before that is shared.",
        CheckId::DiskSerial => "The guest caches the disk serial.",
        CheckId::Vmgenid => "The clones have no vmgenid device, or the new generation ID was not delivered, so no clone learns it is a copy.",
        CheckId::RandomUuid => "Each read of /proc/sys/kernel/random/uuid takes 16 bytes from the CRNG, so it repeats across clones exactly as long as getrandom(2) does: until the vmgenid reseed or another reseed lands.",
        CheckId::VdsoRng => "glibc 2.41's getrandom() generates in user space from a per-thread ChaCha20 state and re-keys it only when the vDSO data page shows a new kernel RNG generation: the kernel bumps it when the CRNG reseeds (a vmgenid fork reseed, or a periodic one that only a kernel-side read triggers), so a clone repeats its source's output until then.",
        CheckId::Vmclock => "The VMClock page is guest memory the host updates; unless the VMM changes its disruption marker or generation counter when it loads a snapshot, a clone reads the source's values and learns nothing.",
        CheckId::FsUuid => "A file system's UUID is written in its superblock when it is made; every disk copied or overlaid from one image carries it, and virt-sysprep changes it only when asked (fs-uuids), because fstab and the bootloader name the root by it.",
        CheckId::LvmUuid => "LVM writes the PV and VG UUIDs into the disk's label and metadata at creation; a copy of the disk carries them unchanged.",
        CheckId::LuksVolumeKey => "The volume key is made once, at luksFormat, and stored in the header under each keyslot; every copy of the header unlocks to it. Only cryptsetup reencrypt makes a new one.",
        CheckId::MachineInfo => "/etc/machine-info is an ordinary file in the image; nothing rewrites it on a clone.",
        CheckId::UserCredentials => "Password hashes and users' keys are files in the image; a clone has the source's files, and no clone method changes them.",
        CheckId::MachineAccount => "A domain join writes the machine's secret into files (the keytab, secrets.tdb); every copy of the machine holds it, and the domain knows only one machine.",
        CheckId::TpmEk => "A live clone's TPM is its source's: QEMU carries the swtpm state, endorsement and storage seeds included, in the migration stream, and the EK is derived from the endorsement seed. Only a new TPM (a fresh swtpm state, or TPM2_ChangeEPS, which destroys everything sealed under it) gives a clone its own.",
        CheckId::SharedPages => "A shared-RAM clone maps its template's RAM file copy-on-write, and KSM merges identical anonymous pages: until a clone writes a page, the page is physically shared.",
        CheckId::SmbiosSerial => "Like the SMBIOS UUID: each clone's VMM is given its own serial, but the guest read its DMI table at boot and a restored kernel keeps the source's copy.",
        CheckId::VmgenidUevent => "Without a vmgenid device (or before Linux 6.8) the kernel sends no NEW_VMGENID uevent, so nothing in user space can learn of the fork by waiting for it.",
        CheckId::HwMismatchMs => "The clone runs on virtual hardware that does not match its memory (the NIC's MAC), and nothing resolves the mismatch.",
        CheckId::SecretRemanence => "A deleted file's data survives in freed disk blocks and page-cache pages, and every clone is made from those artifacts.",
        CheckId::RandomSeed => "systemd's random seed is a file on the disk every clone copies; a clone that credits it (the user.random-seed-creditable xattr) seeds its RNG from the same bytes as its siblings. Only something inside the guest refreshes it.",
        CheckId::CredentialSecret => "systemd's credential.secret encrypts credentials on the host's behalf; clones that share it can decrypt each other's credentials. Images should not ship it (systemd docs/BUILDING_IMAGES.md), and a clone must regenerate it.",
        CheckId::DbusMachineId => "D-Bus keeps its own copy of the machine-id; where it is a file of its own, regenerating /etc/machine-id does not change it.",
        CheckId::CloudInitInstanceId => "cloud-init decides whether to rerun its per-instance modules (host keys, hostname) by the instance-id, and only at boot: a live clone never reruns them, whatever its NoCloud seed says.",
        CheckId::SshKeyscan => "The SSH host keys the clones serve are the same keys: a client cannot tell them apart, and one clone can impersonate another.",
        CheckId::TlsTicketKey => "The TLS server keeps its session-ticket key in memory; every clone resumes with the same key, so a ticket issued by one clone is accepted by all, and one clone's recorded sessions can be decrypted with another's key.",
        CheckId::OpensslRng => "OpenSSL's DRBG state is program memory, copied into every clone; until it reseeds (it does not watch for VM forks), clones produce the same 'random' bytes: ServerHello randoms, and with them ephemeral keys.",
        CheckId::WallClockSkewMs => "A clone resumes with its source's wall clock, behind the host by as long as the snapshot waited, until something sets it (NTP, or the clock fix-up).",
        CheckId::DhcpClientId => "systemd-networkd's DHCP client identity is a DUID derived from /etc/machine-id (systemd issue 9609), not the MAC: clones that share a machine-id ask for one lease whatever their MACs, until machine-id is regenerated and networkd restarted.",
        CheckId::Ipv4Lease => "A live clone resumes bound to the address its source holds, and a DHCP server that keys leases on the client identity hands clones that share one the same address at renewal (FACTS.md, dnsmasq 2.90).",
        CheckId::Ipv6Addr => "IPv6 addresses derived from the MAC or from a per-host secret are copied with the guest's memory; addresses already configured are not probed again (DAD) after a resume.",
        CheckId::ArpConflict => "Clones answering ARP for one address (or sending with one MAC from several ports) make the segment's neighbours flap between them.",
        CheckId::IpWindowMs => "Until every clone renews with an identity of its own, clones hold their source's address (or each other's).",
        CheckId::TcpSession => "A TCP connection is kernel memory: every live clone resumes the source's sockets, 4-tuple and sequence numbers included, and speaks on them as if it were the only one. Only destroying them in each clone (ss -K, SOCK_DESTROY) or closing them before the snapshot ends that; a program must then reconnect.",
    }
}
