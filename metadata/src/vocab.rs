//! The shared vocabulary: every enum here is written in scenario files, printed in reports and
//! matched on by the engine, always by the same spelling ([`as_str`](CheckId::as_str)).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;

/// An enum whose variants have one spelling each, used for serde, `Display`, `FromStr`, the
/// JSON Schema and the "use one of ..." lists in error messages.
macro_rules! named {
    ($(#[$m:meta])* pub enum $T:ident : $what:literal { $($(#[$vm:meta])* $V:ident = $s:literal,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
        pub enum $T {
            $($(#[$vm])* #[serde(rename = $s)] $V,)+
        }

        impl $T {
            /// Every value, in the order reports list them.
            pub const ALL: &'static [$T] = &[$($T::$V,)+];

            pub fn as_str(self) -> &'static str {
                match self { $($T::$V => $s,)+ }
            }

            pub fn parse(s: &str) -> Option<$T> {
                Self::ALL.iter().copied().find(|x| x.as_str() == s)
            }

            /// Every spelling, for "use one of ..." messages.
            pub fn names() -> Vec<&'static str> {
                Self::ALL.iter().map(|x| x.as_str()).collect()
            }
        }

        impl fmt::Display for $T {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $T {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $T::parse(s).ok_or_else(|| format!("unknown {} {s:?}; use one of: {}", $what, $T::names().join(", ")))
            }
        }
    };
}

named! {
    /// The software that runs the VMs.
    pub enum BackendKind: "backend" {
        /// QEMU driven directly over QMP.
        Qemu = "qemu",
        /// QEMU through a libvirtd, with the `virt` crate.
        Libvirt = "libvirt",
    }
}

named! {
    /// The accelerator the VMs ran under.
    pub enum Accel: "accelerator" {
        Kvm = "kvm",
        Tcg = "tcg",
    }
}

named! {
    /// How the VMs that get compared come to exist.
    pub enum Method: "clone method" {
        /// N independent first boots of the never-booted image: the baseline.
        ColdBoot = "cold-boot",
        /// The offline clone, as virt-clone does it: a template boots once and is shut down, and
        /// its disk is copied for each clone.
        ImageCopy = "image-copy",
        /// One live snapshot (memory, device state, disk) restored N times.
        Live = "live",
        /// Template mode: the source's RAM is a shared file, the snapshot holds device state
        /// only (`x-ignore-shared`), and each clone maps the RAM file copy-on-write. The source
        /// stays paused as a frozen template.
        SharedRam = "shared-ram",
    }
}

impl Method {
    /// Whether the VMs compared are restored from one snapshot (so a VM fork happened).
    pub fn restores(self) -> bool {
        matches!(self, Method::Live | Method::SharedRam)
    }
}

named! {
    /// A fix-up: one step a recipe adds to its clone method.
    pub enum FixupId: "fix-up" {
        /// Hot-unplug every NIC before the snapshot; hot-plug a new one, with the clone's own
        /// MAC, on resume.
        NicReplug = "nic-replug",
        /// Give every VM a VM generation ID device, and each clone a fresh generation ID.
        Vmgenid = "vmgenid",
        /// On resume, the in-guest agent credits host entropy, reseeds the CRNG, and regenerates
        /// machine-id, hostname, SSH host keys and its own PRNG.
        Agent = "agent",
        /// Sanitize the copied image offline before any clone boots it.
        Sysprep = "sysprep",
        /// On resume, set each clone's wall clock from the host's (qemu-guest-agent
        /// guest-set-time, libvirt virDomainSetTime, or the probe); the skew before is measured.
        Clock = "clock",
        /// Hold each clone's first RNG read until it has proven its reseed: the vmgenid reseed
        /// seen (when the clone has vmgenid), then host entropy credited and the CRNG reseeded.
        RngGate = "rng-gate",
        /// Give every VM a VMClock device (QEMU 9.1+ `-device vmclock`): a shared page whose
        /// disruption marker (and, where present, generation counter) a clone can read at once.
        Vmclock = "vmclock",
        /// Before the snapshot (or the template's shutdown), scrub deleted data from the guest's
        /// disk and page cache; afterwards, compact the disk images clones are made from.
        MitigateRemanence = "mitigate-remanence",
        /// On resume, destroy each clone's TCP connections to the segment's peer (what
        /// `ss -K dst ADDR` does), so that no clone speaks on the connection its source opened.
        DropSessions = "drop-sessions",
        /// Hold each clone's first RNG read until its kernel sends the `NEW_VMGENID=1` uevent
        /// (Linux 6.8+, after the vmgenid reseed), bounded; nothing is credited or reseeded.
        /// Needs vmgenid.
        GenidWait = "genid-wait",
    }
}

impl FixupId {
    /// The clone methods this fix-up composes with.
    pub fn methods(self) -> &'static [Method] {
        match self {
            FixupId::NicReplug | FixupId::Vmgenid | FixupId::Agent | FixupId::Clock | FixupId::RngGate | FixupId::Vmclock | FixupId::DropSessions | FixupId::GenidWait => &[Method::Live, Method::SharedRam],
            FixupId::Sysprep => &[Method::ImageCopy],
            FixupId::MitigateRemanence => &[Method::ImageCopy, Method::Live, Method::SharedRam],
        }
    }
}

named! {
    /// The named recipes (presets) of a scenario's `strategy` key; `custom` marks a recipe
    /// composed with `method` and `fixups` that matches no preset.
    pub enum Strategy: "strategy" {
        ColdBoot = "cold-boot",
        ImageClone = "image-clone",
        ImageCloneSysprep = "image-clone-sysprep",
        Naive = "naive",
        NicReplug = "nic-replug",
        Vmgenid = "vmgenid",
        AgentFixup = "agent-fixup",
        Full = "full",
        Custom = "custom",
    }
}

impl Strategy {
    /// The presets a scenario file may name (every strategy but `custom`).
    pub fn presets() -> impl Iterator<Item = Strategy> {
        Strategy::ALL.iter().copied().filter(|s| *s != Strategy::Custom)
    }

    /// The recipe a preset stands for; `None` for `custom`.
    pub fn recipe(self) -> Option<Recipe> {
        use FixupId::*;
        let (method, fixups): (Method, &[FixupId]) = match self {
            Strategy::ColdBoot => (Method::ColdBoot, &[]),
            Strategy::ImageClone => (Method::ImageCopy, &[]),
            Strategy::ImageCloneSysprep => (Method::ImageCopy, &[Sysprep]),
            Strategy::Naive => (Method::Live, &[]),
            Strategy::NicReplug => (Method::Live, &[NicReplug]),
            Strategy::Vmgenid => (Method::Live, &[Vmgenid]),
            Strategy::AgentFixup => (Method::Live, &[Agent]),
            Strategy::Full => (Method::Live, &[NicReplug, Vmgenid, Agent]),
            Strategy::Custom => return None,
        };
        Some(Recipe { method, fixups: fixups.to_vec() })
    }

    /// The preset a recipe is, if any. `mitigate-remanence` is orthogonal to the presets (a
    /// scenario adds it with `mitigate_remanence = true`), so it is ignored here; the order of
    /// the other fix-ups is not.
    pub fn of(recipe: &Recipe) -> Strategy {
        let core: Vec<FixupId> = recipe.fixups.iter().copied().filter(|f| *f != FixupId::MitigateRemanence).collect();
        Strategy::presets()
            .find(|s| s.recipe().is_some_and(|r| r.method == recipe.method && r.fixups == core))
            .unwrap_or(Strategy::Custom)
    }
}

/// A clone method and the fix-ups applied with it, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Recipe {
    pub method: Method,
    pub fixups: Vec<FixupId>,
}

impl Recipe {
    pub fn has(&self, f: FixupId) -> bool {
        self.fixups.contains(&f)
    }
}

impl fmt::Display for Recipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.method.as_str())?;
        for x in &self.fixups {
            write!(f, "+{x}")?;
        }
        Ok(())
    }
}

named! {
    /// One identity (or risk) that the checks compare across VMs.
    pub enum CheckId: "check" {
        /// The NIC MACs the guest sees (/sys/class/net/*/address).
        Mac = "mac",
        /// The SMBIOS system UUID the guest sees (/sys/class/dmi/id/product_uuid).
        SmbiosUuid = "smbios_uuid",
        /// The SMBIOS system serial the guest sees (/sys/class/dmi/id/product_serial).
        SmbiosSerial = "smbios_serial",
        /// virtio-blk serials (/sys/block/vd*/serial).
        DiskSerial = "disk_serial",
        MachineId = "machine_id",
        /// /proc/sys/kernel/random/boot_id.
        BootId = "boot_id",
        Hostname = "hostname",
        /// SHA-256 fingerprints of the SSH host keys.
        SshHostKeys = "ssh_host_keys",
        /// getrandom(2) output right after resume, sampled at fixed offsets.
        KernelRng = "kernel_rng",
        /// A program PRNG seeded before the snapshot.
        UserspaceRng = "userspace_rng",
        /// Whether each clone logged the vmgenid-triggered CRNG reseed.
        Vmgenid = "vmgenid",
        /// /proc/sys/kernel/random/uuid right after resume, beside each kernel RNG sample.
        RandomUuid = "random_uuid",
        /// getrandom() through the guest's glibc (its vDSO path, glibc 2.41+ on Linux 6.11+)
        /// right after resume, at the kernel RNG's offsets.
        VdsoRng = "vdso_rng",
        /// Whether each clone got the kernel's NEW_VMGENID uevent (Linux 6.8+), and when.
        VmgenidUevent = "vmgenid_uevent",
        /// Whether each clone saw the VMClock page's disruption marker or generation counter
        /// change on resume, and when.
        Vmclock = "vmclock",
        /// Whether, and how long after resume, each clone sees the hardware it was given.
        HwMismatchMs = "hw_mismatch_ms",
        /// Whether a deleted canary secret survives into the artifacts clones are made from.
        SecretRemanence = "secret_remanence",
        /// SHA-256 of systemd's /var/lib/systemd/random-seed, and whether it may be credited.
        RandomSeed = "random_seed",
        /// SHA-256 of /var/lib/systemd/credential.secret (clones sharing it read each other's
        /// encrypted credentials).
        CredentialSecret = "credential_secret",
        /// /var/lib/dbus/machine-id, when it is a file of its own.
        DbusMachineId = "dbus_machine_id",
        /// cloud-init's instance-id.
        CloudInitInstanceId = "cloud_init_instance_id",
        /// The host keys ssh-keyscan gets from each VM, from the host.
        SshKeyscan = "ssh_keyscan",
        /// Whether a TLS session ticket from one VM is accepted by another (a shared ticket key).
        TlsTicketKey = "tls_ticket_key",
        /// The ServerHello random each VM's TLS server sends right after resume.
        OpensslRng = "openssl_rng",
        /// Guest wall clock minus host wall clock, per VM.
        WallClockSkewMs = "wall_clock_skew_ms",
        /// The DHCP client identity each VM sent on the segment (option 61, or DUID and IAID).
        DhcpClientId = "dhcp_client_id",
        /// The IPv4 address each VM held at the end of the watch, from the leases on the wire.
        Ipv4Lease = "ipv4_lease",
        /// Each VM's IPv6 addresses, and whether duplicate-address detection failed.
        Ipv6Addr = "ipv6_addr",
        /// Two MACs claiming one IPv4 address in ARP, or one MAC sending from two ports.
        ArpConflict = "arp_conflict",
        /// From resume until each VM held an address no other VM held (null: never).
        IpWindowMs = "ip_window_ms",
        /// Whether two VMs spoke on one TCP connection (the source's, resumed in every clone).
        TcpSession = "tcp_session",
        /// File system UUIDs of every block device (blkid's UUID).
        FsUuid = "fs_uuid",
        /// LVM2 physical volume and volume group UUIDs.
        LvmUuid = "lvm_uuid",
        /// Which volume key each LUKS container unlocks to (a digest of its header's key digest).
        LuksVolumeKey = "luks_volume_key",
        /// SHA-256 of systemd's /etc/machine-info.
        MachineInfo = "machine_info",
        /// Password hashes and users' private SSH keys baked into the image, as digests.
        UserCredentials = "user_credentials",
        /// A machine account's secrets: Kerberos keytab, Samba's secrets.tdb.
        MachineAccount = "machine_account",
        /// The virtual TPM's endorsement key (a digest of its public area).
        TpmEk = "tpm_ek",
        /// Guest RAM pages each clone shares physically with another clone or the template.
        SharedPages = "shared_pages",
    }
}

impl CheckId {
    /// Checks whose verdict is a race, not a property of the recipe: a vmgenid reseed is
    /// asynchronous and a naive clone's CRNG reseeds from an input pool that interrupt timings
    /// have already made differ, so whether the first post-resume read of the kernel RNG (or of
    /// `/proc/sys/kernel/random/uuid`, read from the same CRNG a moment later) is shared depends
    /// on when it ran; clock skew depends on how long the snapshot sat. Two runs of one plan may
    /// give these different verdicts (CI saw `random_uuid` unique in one run of naive and
    /// duplicate in the next), so tests that compare runs leave them out.
    pub fn decided_by_timing(self) -> bool {
        matches!(self, CheckId::KernelRng | CheckId::RandomUuid | CheckId::VdsoRng | CheckId::WallClockSkewMs)
    }
}

/// A check's name in a report and in `[scenario.expect]`: a built-in check, or an identity the
/// scenario file declared (`[[identity]]`, a snake_case id that is not a built-in's). Written as
/// its id alone; a name that is not a built-in check's reads back as declared.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CheckName {
    Builtin(CheckId),
    Declared(String),
}

impl CheckName {
    /// Longest declared id.
    pub const MAX_DECLARED: usize = 64;

    pub fn as_str(&self) -> &str {
        match self {
            CheckName::Builtin(c) => c.as_str(),
            CheckName::Declared(s) => s,
        }
    }

    pub fn builtin(&self) -> Option<CheckId> {
        match self {
            CheckName::Builtin(c) => Some(*c),
            CheckName::Declared(_) => None,
        }
    }

    pub fn is_declared(&self) -> bool {
        matches!(self, CheckName::Declared(_))
    }

    /// Whether `s` may name a declared identity: snake_case (a-z first, then a-z, 0-9, _), at
    /// most [`Self::MAX_DECLARED`] bytes. Clashing with a built-in is a separate question.
    pub fn valid_declared(s: &str) -> bool {
        let mut c = s.chars();
        s.len() <= Self::MAX_DECLARED
            && c.next().is_some_and(|f| f.is_ascii_lowercase())
            && c.all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || x == '_')
    }

    /// A built-in check's name, or a declared one; None when `s` is neither.
    pub fn parse(s: &str) -> Option<CheckName> {
        match CheckId::parse(s) {
            Some(c) => Some(CheckName::Builtin(c)),
            None if Self::valid_declared(s) => Some(CheckName::Declared(s.to_string())),
            None => None,
        }
    }
}

impl From<CheckId> for CheckName {
    fn from(c: CheckId) -> Self {
        CheckName::Builtin(c)
    }
}

impl From<&CheckName> for CheckName {
    fn from(c: &CheckName) -> Self {
        c.clone()
    }
}

impl PartialEq<CheckId> for CheckName {
    fn eq(&self, other: &CheckId) -> bool {
        *self == CheckName::Builtin(*other)
    }
}

impl fmt::Display for CheckName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for CheckName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CheckName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CheckName::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("{s:?} is neither a built-in check nor a declared identity's id (snake_case)")))
    }
}

impl JsonSchema for CheckName {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "CheckName".into()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let builtin = g.subschema_for::<CheckId>();
        schemars::json_schema!({
            "description": "A built-in check's id, or the id of an identity the scenario file declared (then the check has `declared: true`)",
            "anyOf": [builtin, { "type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$" }]
        })
    }
}

named! {
    /// The outcome of one check.
    pub enum Verdict: "verdict" {
        /// Every VM had its own value.
        Unique = "unique",
        /// At least two VMs shared one value.
        Duplicate = "duplicate",
        /// A value could not be read, or a claim contradicts what the host knows.
        Error = "error",
        /// Not applicable, or not measurable with this guest or transport (the detail says why).
        Skipped = "skipped",
    }
}

/// What a scenario expects of a check. Serialized as `{"verdict": "unique"}` or `"any"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Expectation {
    Verdict(Verdict),
    /// Measured and reported, not asserted (timing-dependent evidence such as kernel_rng).
    Any,
}

impl Expectation {
    pub fn parse(s: &str) -> Option<Self> {
        if s == "any" {
            return Some(Expectation::Any);
        }
        Verdict::parse(s).map(Expectation::Verdict)
    }

    pub fn is_met_by(self, v: Verdict) -> bool {
        match self {
            Expectation::Any => true,
            Expectation::Verdict(want) => want == v,
        }
    }
}

impl fmt::Display for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expectation::Any => f.write_str("any"),
            Expectation::Verdict(v) => v.fmt(f),
        }
    }
}

named! {
    /// What breaks when clones share an identity, worst first (issue 24's classes). Every
    /// built-in check has one (`clonesafe checks`); a declared identity may state its own.
    pub enum Severity: "severity" {
        /// Keys, secrets or random output reused or exposed across clones: one clone can
        /// impersonate another, or decrypt what another encrypted.
        KeyReuse = "key-reuse",
        /// Clones collide on the network: one MAC, one address, one DHCP lease.
        NetworkCollision = "network-collision",
        /// Logs, inventory, licensing or clustering take the clones for one machine.
        IdentityConfusion = "identity-confusion",
        /// Worth knowing, nothing breaks by itself.
        Informational = "informational",
    }
}

impl Severity {
    /// 0 is the worst.
    pub fn rank(self) -> usize {
        Severity::ALL.iter().position(|s| *s == self).unwrap_or(usize::MAX)
    }
}

named! {
    /// A per-VM figure that a fix-up measures, in milliseconds.
    pub enum MeasurementId: "measurement" {
        /// nic-replug: from resume until the guest saw its new NIC.
        NicWindowMs = "nic_window_ms",
        /// agent: how long the fix-up took in the guest.
        FixupMs = "fixup_ms",
        /// agent: from resume until the fix-up had landed (the window of shared identity).
        FixupWindowMs = "fixup_window_ms",
        /// clock: the guest's wall clock minus the host's right after resume, before it was set.
        ClockSkewBeforeMs = "clock_skew_before_ms",
        /// rng-gate: how long the first RNG read was held (the gate's cost).
        RngGateMs = "rng_gate_ms",
        /// drop-sessions: how long destroying the clone's connections took, asked from the host.
        DropSessionsMs = "drop_sessions_ms",
        /// genid-wait: how long the first RNG read was held waiting for `NEW_VMGENID` (the
        /// wait's cost; its bound when the uevent never came).
        GenidWaitMs = "genid_wait_ms",
    }
}

impl MeasurementId {
    /// A short heading for tables and plots.
    pub fn label(self) -> &'static str {
        match self {
            MeasurementId::NicWindowMs => "NIC window",
            MeasurementId::FixupMs => "fix-up",
            MeasurementId::FixupWindowMs => "fix-up window",
            MeasurementId::ClockSkewBeforeMs => "clock skew before",
            MeasurementId::RngGateMs => "RNG gate",
            MeasurementId::DropSessionsMs => "drop sessions",
            MeasurementId::GenidWaitMs => "genid wait",
        }
    }
}

named! {
    /// What a VM was in its scenario.
    pub enum VmRole: "role" {
        /// One of N cold boots.
        Boot = "boot",
        /// The image-copy template, booted once and shut down.
        Template = "template",
        /// The VM a live snapshot was taken of.
        Source = "source",
        /// A VM made from the source or the template.
        Clone = "clone",
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn check_names_are_built_in_or_declared_and_read_back_as_written() {
        let b: CheckName = serde_json::from_str("\"machine_id\"").unwrap();
        assert_eq!(b, CheckName::Builtin(CheckId::MachineId));
        let d: CheckName = serde_json::from_str("\"pg_system_id\"").unwrap();
        assert_eq!(d, CheckName::Declared("pg_system_id".into()));
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"pg_system_id\"");
        for bad in ["\"Bad-Id\"", "\"\"", "\"9lives\"", "\"a\\u001b[31m\""] {
            assert!(serde_json::from_str::<CheckName>(bad).is_err(), "{bad}");
        }
        assert!(!CheckName::valid_declared(&"a".repeat(CheckName::MAX_DECLARED + 1)));
    }

    use super::*;

    #[test]
    fn every_preset_round_trips_through_its_recipe() {
        for s in Strategy::presets() {
            let r = s.recipe().unwrap();
            assert_eq!(Strategy::of(&r), s, "{r}");
            let mut with = r.clone();
            with.fixups.insert(0, FixupId::MitigateRemanence);
            assert_eq!(Strategy::of(&with), s, "mitigation is orthogonal to the presets");
        }
        let r = Recipe { method: Method::Live, fixups: vec![FixupId::Agent, FixupId::Vmgenid] };
        assert_eq!(Strategy::of(&r), Strategy::Custom);
        assert_eq!(Strategy::parse("custom"), Some(Strategy::Custom));
        assert!(Strategy::presets().all(|s| s != Strategy::Custom));
    }

    #[test]
    fn spellings_match_serde() {
        for c in CheckId::ALL {
            assert_eq!(serde_json::to_value(c).unwrap(), serde_json::json!(c.as_str()));
            assert_eq!(c.as_str().parse::<CheckId>().unwrap(), *c);
        }
        assert_eq!(serde_json::to_string(&Expectation::Verdict(Verdict::Unique)).unwrap(), r#"{"verdict":"unique"}"#);
        assert_eq!(serde_json::to_string(&Expectation::Any).unwrap(), r#""any""#);
        let e = "teleport".parse::<FixupId>().unwrap_err();
        assert!(e.contains("nic-replug, vmgenid, agent, sysprep, clock, rng-gate, vmclock, mitigate-remanence"), "{e}");
    }
}
