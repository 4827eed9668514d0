//! One isolated network segment per scenario (`network = "segment"`): a network namespace the
//! harness creates, holding a Linux bridge, one port per VM NIC, `dnsmasq` as DHCPv4 server and
//! IPv6 router, and `tcpdump` capturing every port into a pcap.
//!
//! ```text
//!   host namespace (no address, no route, no forwarding)     namespace clonesafe-<pid>-<scenario>
//!   ┌───────────────────────────────────────────┐            ┌──────────────────────────────────┐
//!   │ VMM ──fd── tap cs<pid>n<k> (down, no IPv6)│ ─ moved ─▶ │ tap ─┐                            │
//!   └───────────────────────────────────────────┘            │ tap ─┼─ br0 10.77.0.1/24          │
//!                                                            │ tap ─┘     fd00:77::1/64          │
//!                                                            │ dnsmasq (DHCP 2 min, RA)          │
//!                                                            │ tcpdump -i any (LINUX_SLL2) → pcap│
//!                                                            │ TCP peer 10.77.0.1:7070 (peer.rs) │
//!                                                            └──────────────────────────────────┘
//! ```
//!
//! A tap is created in the host namespace, down and with IPv6 disabled, so it never holds an
//! address there; the VMM opens it by name; then it is moved into the segment's namespace and
//! enslaved to the bridge. The VMM's file descriptor survives the move (measured here
//! 2026-11-28: a frame written to the fd after `ip link set ... netns` arrived on the bridge).
//! That works for every VMM that opens a tap by name, QEMU's `-netdev tap,ifname=` and
//! libvirt's `<interface type='ethernet'>` with `<target managed='no'>`, and keeps the
//! workplace rule (FACTS.md, "Networks on these machines"): the host namespace never carries the
//! segment's traffic. Inside the namespace, new interfaces get no IPv6 either
//! (`default.disable_ipv6`), so the only IPv6 speakers on the wire are the bridge and the guests.
//!
//! `tcpdump -i any` with the Linux cooked v2 header records each frame's interface, so a frame a
//! VM sent is attributed to its port even when two VMs share a MAC (`naive`). dnsmasq's lease
//! time is its minimum, 2 minutes (dnsmasq(8) `--dhcp-range`), so renewals (T1, half the lease)
//! happen within a run.
//!
//! Teardown kills dnsmasq and tcpdump and deletes the namespace (the kernel deletes the taps and
//! the bridge in it); dropping a [`Segment`] does the same. dnsmasq and tcpdump die with the
//! harness (PR_SET_PDEATHSIG), and [`reap_stale`] removes namespaces and taps of a run that was
//! killed. Each namespace and tap is claimed in the owner registry ([`crate::owner`]) before it
//! is made, and the reaper removes only what a marker there says a run that is over made: never
//! an interface or namespace that merely has a clonesafe-like name (issue 19).

use crate::identity::NAME_PREFIX;
use crate::owner;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The segment's IPv4 router (the bridge), its prefix and the DHCP pool.
pub const ROUTER_V4: &str = "10.77.0.1";
/// The bridge's MAC, fixed (locally administered), so that it does not follow its ports.
pub const ROUTER_MAC: &str = "02:00:0a:4d:00:01";
pub const PREFIX_V4: u8 = 24;
pub const POOL_V4: (&str, &str) = ("10.77.0.10", "10.77.0.250");
/// The IPv6 prefix dnsmasq advertises (SLAAC), and the bridge's address in it.
pub const PREFIX_V6: &str = "fd00:77::";
pub const ROUTER_V6: &str = "fd00:77::1";
/// dnsmasq's shortest lease: renewals (T1) every minute.
pub const LEASE: Duration = Duration::from_secs(120);
/// Captured bytes per frame (a DHCP message is under 600 bytes) and frames per capture.
pub const SNAPLEN: u32 = 1024;
pub const MAX_FRAMES: u32 = 200_000;

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("network segment {ns}: {step}: {detail}")]
    Step { ns: String, step: String, detail: String },
}

/// A port of the segment: a tap the VMM opens by name, then [`Port::attach`] moves into the
/// segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub tap: String,
    pub ns: String,
    /// The VM it was made for.
    pub vm: String,
}

/// One port as the segment recorded it (for the capture's analysis).
#[derive(Debug, Clone)]
pub struct PortRecord {
    pub tap: String,
    pub vm: String,
    pub mac: String,
    pub attached: bool,
}

pub struct Segment {
    pub ns: String,
    /// Where the lease file, dnsmasq's log and the capture are written (0700, in the scenario's
    /// directory; removed with the run).
    pub dir: PathBuf,
    children: Mutex<Vec<std::process::Child>>,
    ports: Mutex<Vec<PortRecord>>,
    /// The TCP peer on the router address ([`super::peer`]); None when it could not start (the
    /// `tcp_session` check then says why).
    peer: Result<super::peer::Peer, String>,
    /// The session the source opened to the peer before its snapshot ("local -> remote"), or
    /// why it could not.
    pub opened: Mutex<Option<Result<String, String>>>,
    /// Set once torn down (explicitly at the end of the scenario, or on drop).
    torn: std::sync::atomic::AtomicBool,
}

static NEXT_TAP: AtomicU32 = AtomicU32::new(0);

fn run(ns: &str, step: &str, cmd: &mut Command) -> Result<String, SegmentError> {
    let err = |detail: String| SegmentError::Step { ns: ns.to_string(), step: step.to_string(), detail };
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| err(format!("{e} (is iproute2 installed?)")))?;
    if !out.status.success() {
        return Err(err(crate::text::truncate(String::from_utf8_lossy(&out.stderr).trim(), 400)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(args);
    c
}

/// A command run inside namespace `ns`, dying with the harness.
fn in_ns(ns: &str, prog: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, prog]);
    // `ip netns exec` execs the program in this process, so the death signal reaches dnsmasq
    // and tcpdump themselves.
    crate::tools::bounded::die_with_harness(&mut c);
    c
}

fn set_sysctl(ns: Option<&str>, path: &str, value: &str) -> Result<(), SegmentError> {
    let script = format!("echo {value} > /proc/sys/{path}");
    let mut c = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "sh", "-c", &script]);
            c
        }
        None => {
            let mut c = Command::new("sh");
            c.args(["-c", &script]);
            c
        }
    };
    run(ns.unwrap_or("host"), &format!("set {path} = {value}"), &mut c).map(|_| ())
}

impl Segment {
    /// The namespace of scenario `scenario` of this run.
    pub fn ns_name(scenario: &str) -> String {
        format!("{NAME_PREFIX}{}-{scenario}", std::process::id())
    }

    /// Create the namespace, bridge, dnsmasq and capture; returns once the capture listens.
    pub fn create(scenario: &str, dir: &Path) -> Result<Segment, SegmentError> {
        let ns = Self::ns_name(scenario);
        let mut seg = Segment { ns: ns.clone(), dir: dir.to_path_buf(), children: Mutex::new(vec![]), ports: Mutex::new(vec![]), peer: Err("not started".into()), opened: Mutex::new(None), torn: Default::default() };
        let err = |step: &str, detail: String| SegmentError::Step { ns: ns.clone(), step: step.into(), detail };
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| err("create its directory", e.to_string()))?;
        }
        owner::claim(Path::new(owner::REGISTRY), "netns", &ns).map_err(|e| err("claim the namespace's name", e.to_string()))?;
        if let Err(e) = run(&ns, "create the namespace", &mut ip(&["netns", "add", &ns])) {
            owner::release(Path::new(owner::REGISTRY), "netns", &ns);
            return Err(e);
        }
        // From here on, dropping `seg` deletes the namespace.
        run(&ns, "bring up lo", &mut ip(&["-n", &ns, "link", "set", "lo", "up"]))?;
        set_sysctl(Some(&ns), "net/ipv6/conf/default/disable_ipv6", "1")?;
        set_sysctl(Some(&ns), "net/ipv6/conf/all/forwarding", "0")?;
        set_sysctl(Some(&ns), "net/ipv4/ip_forward", "0")?;
        // No STP delay, no multicast snooping: neighbour solicitations reach every port at once.
        // A MAC of its own: a bridge without one takes the lowest of its ports' (net/bridge/
        // br_stp_if.c, br_stp_recalculate_bridge_id), so it changed whenever a clone's tap
        // joined, and a clone's ARP entry for the router (guest memory, from its source) then
        // named a MAC the bridge no longer had: its unicast frames to the router arrived as
        // PACKET_OTHERHOST and were dropped (measured 2026-12-07 on the tcp_session peer).
        run(&ns, "create the bridge", &mut ip(&["-n", &ns, "link", "add", "br0", "address", ROUTER_MAC, "type", "bridge", "forward_delay", "0", "stp_state", "0", "mcast_snooping", "0"]))?;
        set_sysctl(Some(&ns), "net/ipv6/conf/br0/disable_ipv6", "0")?;
        run(&ns, "address the bridge", &mut ip(&["-n", &ns, "addr", "add", &format!("{ROUTER_V4}/{PREFIX_V4}"), "dev", "br0"]))?;
        run(&ns, "address the bridge (IPv6)", &mut ip(&["-n", &ns, "addr", "add", &format!("{ROUTER_V6}/64"), "dev", "br0", "nodad"]))?;
        run(&ns, "bring up the bridge", &mut ip(&["-n", &ns, "link", "set", "br0", "up"]))?;

        // The capture first, so that it sees every packet of every VM.
        let pcap = seg.capture_path();
        let tcpdump_err = dir.join("tcpdump.stderr");
        let errf = std::fs::File::create(&tcpdump_err).map_err(|e| err("create tcpdump's log", e.to_string()))?;
        let child = in_ns(&ns, "tcpdump")
            .args(["-i", "any", "-y", "LINUX_SLL2", "-U", "-n", "-Z", "root", "-s", &SNAPLEN.to_string(), "-c", &MAX_FRAMES.to_string(), "-w"])
            .arg(&pcap)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(errf)
            .spawn()
            .map_err(|e| err("start tcpdump", format!("{e} (is tcpdump installed?)")))?;
        seg.children.lock().unwrap().push(child);
        seg.wait_for(0, &tcpdump_err, "listening on").map_err(|log| err("start tcpdump", format!("it did not start listening ({log})")))?;

        let log = dir.join("dnsmasq.log");
        let child = in_ns(&ns, "dnsmasq")
            .args(["--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--port=0", "--interface=br0", "--bind-interfaces", "--log-dhcp"])
            .arg(format!("--dhcp-range={},{},{}m", POOL_V4.0, POOL_V4.1, LEASE.as_secs() / 60))
            .arg(format!("--dhcp-range={PREFIX_V6},ra-only,64"))
            .arg("--enable-ra")
            .arg(format!("--dhcp-leasefile={}", dir.join("dnsmasq.leases").display()))
            .arg(format!("--log-facility={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| err("start dnsmasq", format!("{e} (is dnsmasq-base installed?)")))?;
        seg.children.lock().unwrap().push(child);
        // dnsmasq logs "DHCP, IP range ..." once it serves.
        seg.wait_for(1, &log, "DHCP, IP range").map_err(|log| err("start dnsmasq", format!("it did not start serving ({log})")))?;
        seg.peer = super::peer::Peer::start(&ns, ROUTER_V4.parse().expect("a constant address"));
        Ok(seg)
    }

    /// Wait (at most 10 s) until `log` says `needle`; Err(the log's start) if child `i` exits
    /// first or time runs out.
    fn wait_for(&self, i: usize, log: &Path, needle: &str) -> Result<(), String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text.contains(needle) {
                return Ok(());
            }
            let exited = self.children.lock().unwrap()[i].try_wait().ok().flatten();
            if exited.is_some() || std::time::Instant::now() > deadline {
                return Err(crate::text::truncate(text.trim(), 400));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn capture_path(&self) -> PathBuf {
        self.dir.join("segment.pcap")
    }

    /// Where the segment's TCP peer listens, or why it does not.
    pub fn peer_addr(&self) -> Result<std::net::SocketAddrV4, String> {
        self.peer.as_ref().map(|p| p.addr).map_err(Clone::clone)
    }

    /// The connections the peer accepted, and what it read on each.
    pub fn peer_conns(&self) -> Vec<super::peer::PeerConn> {
        self.peer.as_ref().map(|p| p.conns()).unwrap_or_default()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("dnsmasq.log")
    }

    /// A new port for `vm`: a tap in the host namespace, down and with IPv6 disabled, that its
    /// VMM opens by name before [`Port::attach`] moves it into the segment.
    pub fn port(&self, vm: &str) -> Result<Port, SegmentError> {
        let tap = format!("cs{}n{}", std::process::id(), NEXT_TAP.fetch_add(1, Ordering::Relaxed));
        let reg = Path::new(owner::REGISTRY);
        owner::claim(reg, "tap", &tap).map_err(|e| SegmentError::Step { ns: self.ns.clone(), step: format!("claim tap {tap}"), detail: e.to_string() })?;
        if let Err(e) = run(&self.ns, &format!("create tap {tap}"), &mut ip(&["tuntap", "add", "dev", &tap, "mode", "tap", "vnet_hdr"])) {
            owner::release(reg, "tap", &tap);
            return Err(e);
        }
        if let Err(e) = set_sysctl(None, &format!("net/ipv6/conf/{tap}/disable_ipv6"), "1") {
            let _ = ip(&["link", "del", &tap]).output();
            owner::release(reg, "tap", &tap);
            return Err(e);
        }
        self.ports.lock().unwrap().push(PortRecord { tap: tap.clone(), vm: vm.to_string(), mac: String::new(), attached: false });
        Ok(Port { tap, ns: self.ns.clone(), vm: vm.to_string() })
    }

    /// Record which MAC the VM's NIC on `tap` has (set when the VMM plugs it).
    pub fn set_mac(&self, tap: &str, mac: &str) {
        if let Some(p) = self.ports.lock().unwrap().iter_mut().find(|p| p.tap == tap) {
            p.mac = mac.to_string();
        }
    }

    pub fn ports(&self) -> Vec<PortRecord> {
        self.ports.lock().unwrap().clone()
    }

    /// Interface index of each attached tap inside the namespace (what the capture records).
    pub fn ifindexes(&self) -> Result<Vec<(String, u32)>, SegmentError> {
        let out = run(&self.ns, "list its interfaces", &mut ip(&["-n", &self.ns, "-o", "link", "show"]))?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let (idx, rest) = l.split_once(':')?;
                let name = rest.trim().split(['@', ':']).next()?.trim().to_string();
                Some((name, idx.trim().parse().ok()?))
            })
            .collect())
    }

    /// Stop the capture (tcpdump flushes on SIGTERM) and dnsmasq; the namespace stays until
    /// [`Segment::teardown`].
    pub fn stop(&self) {
        // Taken out, so that a second stop (teardown after the watch) signals nothing: a reaped
        // child's pid may already belong to another process.
        if let Ok(p) = &self.peer {
            p.stop();
        }
        let mut children = std::mem::take(&mut *self.children.lock().unwrap());
        for c in children.iter_mut() {
            // SAFETY: a signal to our own child, which we have not reaped yet.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        for c in children.iter_mut() {
            while c.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Remove everything: the processes, the namespace (and with it the bridge and the taps in
    /// it), and any tap not yet moved into it.
    pub fn teardown(&self) {
        if self.torn.swap(true, Ordering::SeqCst) {
            return;
        }
        self.stop();
        let reg = Path::new(owner::REGISTRY);
        if ip(&["netns", "del", &self.ns]).output().is_ok_and(|o| o.status.success()) {
            owner::release(reg, "netns", &self.ns);
        }
        for p in self.ports.lock().unwrap().iter() {
            if !p.attached {
                let _ = ip(&["link", "del", &p.tap]).stderr(Stdio::null()).output();
            }
            // An attached tap went with the namespace.
            if !Path::new("/sys/class/net").join(&p.tap).exists() {
                owner::release(reg, "tap", &p.tap);
            }
        }
    }

    fn mark_attached(&self, tap: &str) {
        if let Some(p) = self.ports.lock().unwrap().iter_mut().find(|p| p.tap == tap) {
            p.attached = true;
        }
    }
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment").field("ns", &self.ns).field("dir", &self.dir).finish()
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        self.teardown();
    }
}

impl Port {
    /// Move the tap (its VMM has opened it) into the segment and plug it into the bridge.
    pub fn attach(&self, seg: &Segment) -> Result<(), SegmentError> {
        run(&self.ns, &format!("move {} into the segment", self.tap), &mut ip(&["link", "set", &self.tap, "netns", &self.ns]))?;
        seg.mark_attached(&self.tap);
        run(&self.ns, &format!("plug {} into the bridge", self.tap), &mut ip(&["-n", &self.ns, "link", "set", &self.tap, "master", "br0", "up"]))?;
        Ok(())
    }
}

/// Remove the namespaces and taps of runs that were killed: only those the owner registry
/// says a run that is over claimed. Returns a line per thing removed.
pub fn reap_stale() -> Vec<String> {
    reap_stale_in(Path::new(owner::REGISTRY))
}

fn reap_stale_in(reg: &Path) -> Vec<String> {
    let mut notes = Vec::new();
    for name in owner::stale(reg, "netns") {
        if Path::new("/run/netns").join(&name).exists() {
            // Processes still inside it (a dnsmasq whose death signal was lost) go first.
            if let Ok(p) = ip(&["netns", "pids", &name]).output() {
                for pid in String::from_utf8_lossy(&p.stdout).split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
                    // SAFETY: kill(2) on a pid the kernel lists in that namespace.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            let ok = ip(&["netns", "del", &name]).output().is_ok_and(|o| o.status.success());
            notes.push(format!("{} the network segment {name} of a dead run", if ok { "removed" } else { "could not remove" }));
            if !ok {
                continue;
            }
        }
        owner::release(reg, "netns", &name);
    }
    for name in owner::stale(reg, "tap") {
        if Path::new("/sys/class/net").join(&name).exists() {
            let ok = ip(&["link", "del", &name]).output().is_ok_and(|o| o.status.success());
            notes.push(format!("{} the tap {name} of a dead run", if ok { "removed" } else { "could not remove" }));
            if !ok {
                continue;
            }
        }
        owner::release(reg, "tap", &name);
    }
    notes
}

/// Why this host cannot make segments (None: it can): they need root (namespaces, taps),
/// dnsmasq and tcpdump.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("it needs root (network namespaces and taps)".into());
    }
    let missing: Vec<&str> = ["dnsmasq", "tcpdump"]
        .into_iter()
        .filter(|t| !["/usr/sbin", "/usr/bin", "/sbin", "/bin"].iter().any(|d| Path::new(d).join(t).exists()))
        .collect();
    (!missing.is_empty()).then(|| format!("{} not installed (apt-get install dnsmasq-base tcpdump)", missing.join(" and ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link_exists(name: &str) -> bool {
        Path::new("/sys/class/net").join(name).exists()
    }

    /// Issue 19, item 5: a tap named like clonesafe's, made by someone else, survives the reaper;
    /// one a dead run claimed is removed. Needs root (taps); skipped otherwise.
    #[test]
    fn the_reaper_removes_only_taps_a_dead_run_claimed() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let reg = tempfile::tempdir().unwrap();
        let theirs = "cs4194990";
        let ours = "cs4194991n0";
        let add = |t: &str| {
            let _ = ip(&["link", "del", t]).output();
            let o = ip(&["tuntap", "add", "dev", t, "mode", "tap"]).output().unwrap();
            assert!(o.status.success(), "ip tuntap add {t}: {}", String::from_utf8_lossy(&o.stderr));
        };
        for t in [theirs, ours] {
            add(t);
        }
        let dead = owner::Owner { pid: 4_194_991, ..owner::Owner::me() };
        std::fs::write(reg.path().join(format!("tap.{ours}")), dead.render()).unwrap();
        let notes = reap_stale_in(reg.path());
        let (theirs_left, ours_left) = (link_exists(theirs), link_exists(ours));
        let _ = ip(&["link", "del", theirs]).output();
        let _ = ip(&["link", "del", ours]).output();
        assert!(theirs_left, "a tap clonesafe did not make was removed: {notes:?}");
        assert!(!ours_left, "a dead run's tap was kept: {notes:?}");
        assert_eq!(notes, vec![format!("removed the tap {ours} of a dead run")]);
        assert!(!reg.path().join(format!("tap.{ours}")).exists());
        // The real registry's reaper leaves an unclaimed tap alone too.
        let other = "cs4194992";
        add(other);
        let notes = reap_stale();
        let left = link_exists(other);
        let _ = ip(&["link", "del", other]).output();
        assert!(left, "{notes:?}");
    }
}
