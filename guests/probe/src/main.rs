//! clonesafe-probe: started by the guest's init, it answers the harness over a serial port.
//!
//! Usage: `probe [DEVICE] [--data-dir DIR]` (default `/dev/ttyS1` and `/data`), or
//! `probe --wait-entropy`, which blocks in getrandom(2) until the kernel CRNG is initialised
//! (init uses it before making identities). DEVICE may be a serial port (made raw) or a
//! virtio-serial port (`/dev/virtio-ports/org.clonesafe.probe.0`, where clonesafe starts an
//! injected copy through qemu-guest-agent). File requests are confined to DIR.
//!
//! Ordering matters here: on `go` the kernel RNG is read before anything else, because the window
//! in which restored clones share CRNG state closes as soon as interrupts feed a reseed.

use clonesafe_protocol::{
    Disk, HostKey, Identity, Nic, Reply, Request, Sample, UeventWatch, KERNEL_RNG_SAMPLE_OFFSETS_MS, MAX_LINE,
    UEVENT_WAIT_MS, USERSPACE_RNG_SAMPLES, VMFORK_RESEED_MSG,
};
mod session;
mod vdso;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::io::AsRawFd;
use std::time::Duration;

/// The directory file requests may touch (tiny's data disk by default).
static DATA_DIR: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn data_dir() -> &'static str {
    DATA_DIR.get().map(String::as_str).unwrap_or("/data")
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--wait-entropy") {
        getrandom8();
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--data-dir") {
        if let Some(d) = args.get(i + 1) {
            let _ = DATA_DIR.set(d.trim_end_matches('/').to_string());
        }
        args.drain(i..(i + 2).min(args.len()));
    }
    let arg = args.first().cloned();
    // The userspace PRNG stands for any long-lived program's random state: seeded once, here,
    // before any snapshot can happen.
    let mut prng = XorShift64(u64::from_ne_bytes(getrandom8()) | 1);
    // The kernel makes boot_id lazily, at its first read. On a real system journald reads it
    // during boot; do the same, so that a snapshot taken later carries it as a real one would.
    let _ = fs::read_to_string("/proc/sys/kernel/random/boot_id");
    let dev = arg.unwrap_or_else(|| "/dev/ttyS1".into());
    let mut port = match fs::OpenOptions::new().read(true).write(true).open(&dev) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("probe: open {dev}: {e}");
            std::process::exit(1);
        }
    };
    make_raw(&port);
    send(&mut port, &Reply::Ready { probe_version: env!("CARGO_PKG_VERSION").into(), uptime_ms: uptime_ms() });
    let mut reader = LineReader::default();
    let mut sampler = None;
    loop {
        let line = match reader.next_line(&mut port) {
            Ok(Some(l)) => l,
            Ok(None) => {
                // Oversized line: dropped; say so and carry on.
                send(&mut port, &Reply::Error { message: format!("line longer than {MAX_LINE} bytes") });
                continue;
            }
            Err(e) => {
                eprintln!("probe: read: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Request>(&line) {
            Ok(req) => handle(req, &mut prng, &mut sampler),
            Err(e) => Reply::Error { message: format!("bad request: {e}") },
        };
        send(&mut port, &reply);
    }
}

/// Memory a `dirty` request filled; held until the probe exits so its pages stay in guest RAM.
static DIRTIED: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

/// Left free when filling memory, so the guest's kernel and the probe itself keep running.
const DIRTY_RESERVE_MIB: u64 = 32;

/// Fill `mib` MiB (at most MemAvailable less [`DIRTY_RESERVE_MIB`]; the reply says how much)
/// with non-zero bytes (xorshift64 words, each forced odd so no page is all zeros and QEMU cannot
/// send it as a zero page), and hold it.
fn dirty(mib: u32, prng: &mut XorShift64) -> Reply {
    if mib > clonesafe_protocol::MAX_DIRTY_MIB {
        return Reply::Error { message: format!("dirty: {mib} MiB is more than {}", clonesafe_protocol::MAX_DIRTY_MIB) };
    }
    // Never more than the guest can hold: past MemAvailable the OOM killer takes the probe.
    let avail = fs::read_to_string("/proc/meminfo").ok().and_then(|m| m.lines().find_map(|l| l.strip_prefix("MemAvailable:")).and_then(|r| r.split_whitespace().next()).and_then(|v| v.parse::<u64>().ok()));
    let mib = match avail {
        Some(kib) => mib.min((kib / 1024).saturating_sub(DIRTY_RESERVE_MIB) as u32),
        None => mib,
    };
    let t = monotonic_ns();
    let bytes = mib as usize * 1024 * 1024;
    let mut v: Vec<u8> = Vec::new();
    if let Err(e) = v.try_reserve_exact(bytes) {
        return Reply::Error { message: format!("dirty: cannot allocate {mib} MiB: {e}") };
    }
    let mut x = prng.next() | 1;
    for _ in 0..bytes / 8 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&(x | 1).to_le_bytes());
    }
    DIRTIED.lock().unwrap_or_else(|p| p.into_inner()).push(v);
    Reply::Dirtied { mib, ms: (monotonic_ns() - t) / 1_000_000 }
}

/// Kernel RNG samples and random uuids the sampler thread takes after the first.
type Later = (Vec<Sample>, Vec<Sample>);

fn handle(req: Request, prng: &mut XorShift64, sampler: &mut Option<std::thread::JoinHandle<Later>>) -> Reply {
    match req {
        Request::Hold => {
            // The uevent listener binds now, before the snapshot, so a clone hears what its
            // kernel sends the moment it resumes.
            uevents::listen();
            vmclock::at_hold();
            // The glibc helper keys its getrandom state now, before the snapshot.
            vdso::at_hold();
            getrandom8();
            Reply::Held
        }
        Request::Go { gate } => {
            // First thing after resume: the kernel RNG, unless a gate holds it until the clone
            // has proven its reseed.
            let gate = match gate {
                None => None,
                Some(g) => match run_gate(&g, prng) {
                    Ok(done) => Some(done),
                    Err(e) => return Reply::Error { message: format!("rng gate: {e}") },
                },
            };
            let first = sample_kernel();
            let t0 = first.t_ns;
            let random_uuid: Vec<Sample> = sample_uuid().into_iter().collect();
            vdso::go();
            vmclock::at_resume();
            uevents::went(t0);
            // A clock mark in the kernel log right after the first sample: the kernel log's
            // timestamps near it (the vmgenid reseed) convert to this clock with the offset of
            // this moment, not of a later one (under TCG the two clocks drift apart).
            write_clock_mark();
            let userspace_rng = (0..USERSPACE_RNG_SAMPLES)
                .map(|_| Sample { t_ns: monotonic_ns(), hex: format!("{:016x}", prng.next()) })
                .collect();
            // The later samples are taken on their own thread, at exact offsets from the first,
            // while the host goes on (new NIC, agent fix-up); `samples` collects them.
            *sampler = Some(std::thread::spawn(move || {
                let mut out = Vec::new();
                let mut uuids = Vec::new();
                for &off in &KERNEL_RNG_SAMPLE_OFFSETS_MS[1..] {
                    let due = t0 + off * 1_000_000;
                    let now = monotonic_ns();
                    if due > now {
                        std::thread::sleep(Duration::from_nanos(due - now));
                    }
                    out.push(sample_kernel());
                    uuids.extend(sample_uuid());
                }
                (out, uuids)
            }));
            Reply::Resumed { kernel_rng: vec![first], userspace_rng, random_uuid, gate }
        }
        Request::Samples => match sampler.take().map(|h| h.join()) {
            Some(Ok((kernel_rng, random_uuid))) => {
                let t0 = kernel_rng.first().map(|s| s.t_ns).unwrap_or(0).min(uevents::t0());
                Reply::Samples { kernel_rng, random_uuid, uevents: Some(uevents::heard()), vmclock: Some(vmclock::watch(t0)), vdso_rng: Some(vdso::collect()) }
            }
            Some(Err(_)) => Reply::Error { message: "sampler thread panicked".into() },
            None => Reply::Error { message: "samples before go".into() },
        },
        Request::Report { sources } => Reply::Report { identity: identity(&sources) },
        Request::WriteFile { path, data } => match data_path(&path).and_then(|p| {
            let mut f = fs::File::create(p).map_err(|e| e.to_string())?;
            f.write_all(data.as_bytes()).and_then(|_| f.sync_all()).map_err(|e| e.to_string())
        }) {
            Ok(()) => Reply::Written { path },
            Err(message) => Reply::Error { message },
        },
        Request::Fixup { entropy_hex } => fixup(&entropy_hex, prng),
        Request::Dirty { mib } => dirty(mib, prng),
        Request::Addrs => addrs(),
        Request::Time => Reply::Time { realtime_ns: realtime_ns(), monotonic_ns: monotonic_ns() },
        Request::SetTime { realtime_ns } => {
            let ts = libc::timespec { tv_sec: realtime_ns.div_euclid(1_000_000_000) as libc::time_t, tv_nsec: realtime_ns.rem_euclid(1_000_000_000) as libc::c_long };
            // SAFETY: a valid timespec; needs CAP_SYS_TIME (the probe runs as root).
            if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } == 0 {
                Reply::TimeSet
            } else {
                Reply::Error { message: format!("clock_settime: {}", std::io::Error::last_os_error()) }
            }
        }
        Request::Reseed { entropy_hex } => match add_entropy_and_reseed(&unhex(&entropy_hex)) {
            Ok(()) => Reply::Reseeded { t_ns: monotonic_ns() },
            Err(e) => Reply::Error { message: format!("reseed: {e}") },
        },
        Request::WaitNic { mac, timeout_ms } => {
            let deadline = monotonic_ns() + timeout_ms * 1_000_000;
            loop {
                let now = monotonic_ns();
                let seen = sorted_dir("/sys/class/net").iter().any(|n| {
                    fs::read_to_string(format!("/sys/class/net/{n}/address")).is_ok_and(|a| a.trim().eq_ignore_ascii_case(&mac))
                });
                if seen {
                    break Reply::NicSeen { mac, t_ns: Some(now) };
                }
                if now > deadline {
                    break Reply::NicSeen { mac, t_ns: None };
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Request::Canary { mut secret_xff_hex } => {
            let p = &format!("{}/canary.tmp", data_dir());
            let mut secret: Vec<u8> = (0..secret_xff_hex.len() / 2)
                .filter_map(|i| u8::from_str_radix(&secret_xff_hex[2 * i..2 * i + 2], 16).ok())
                .map(|b| b ^ 0xff)
                .collect();
            let r = fs::write(p, &secret)
                .and_then(|_| fs::File::open(p)?.sync_all())
                .and_then(|_| fs::read(p).map(drop))
                .and_then(|_| fs::remove_file(p));
            unsafe { libc::sync() };
            // Leave no copy of our own behind (volatile writes survive optimisation).
            for b in secret.iter_mut() {
                unsafe { std::ptr::write_volatile(b, 0) };
            }
            unsafe { secret_xff_hex.as_bytes_mut().iter_mut().for_each(|b| std::ptr::write_volatile(b, b'0')) };
            match r {
                Ok(()) => Reply::CanaryPlanted,
                Err(e) => Reply::Error { message: format!("canary: {e}") },
            }
        }
        Request::Scrub => {
            // Remount first: ext4 keeps small files' freed blocks in per-CPU preallocations
            // (marked in use, owned by no inode) until the filesystem lets go of them, and
            // neither a filling write nor fstrim touches them. Then zero the free space (what
            // virt-sparsify does), then trim.
            unsafe { libc::sync() };
            let remount = std::process::Command::new("/bin/umount").arg("/data").status().is_ok_and(|s| s.success())
                && std::process::Command::new("/bin/mount").args(["-t", "ext4", "/dev/vda", "/data"]).status().is_ok_and(|s| s.success());
            let z = "/data/.zero-fill";
            let zeros = vec![0u8; 1 << 20];
            if let Ok(mut f) = fs::File::create(z) {
                while f.write_all(&zeros).is_ok() {}
                let _ = f.sync_all();
            }
            let _ = fs::remove_file(z);
            unsafe { libc::sync() };
            let out = std::process::Command::new("/bin/fstrim").args(["-v", "/data"]).output();
            let _ = fs::write("/proc/sys/vm/drop_caches", "3");
            match out {
                Ok(o) => Reply::Scrubbed {
                    output: format!(
                        "remount {}; {}{}",
                        if remount { "done" } else { "FAILED" },
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    )
                    .trim()
                    .to_string(),
                },
                Err(e) => Reply::Error { message: format!("fstrim: {e}") },
            }
        }
        Request::Digest { path, text_bytes } => digest_file(path, text_bytes),
        Request::SessionOpen { addr, port, timeout_ms } => session::open(&addr, port, timeout_ms),
        Request::SessionSpeak { addr, port, id, timeout_ms } => session::speak(&addr, port, &id, timeout_ms),
        Request::DropSessions { dst } => session::drop_to(&dst),
        Request::Exec { argv, timeout_ms, max_bytes } => exec(&argv, timeout_ms, max_bytes),
        Request::ReadFile { path } => match data_path(&path) {
            Ok(p) => match fs::read_to_string(p) {
                Ok(data) => Reply::File { path, data: Some(data) },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Reply::File { path, data: None },
                Err(e) => Reply::Error { message: format!("read {path}: {e}") },
            },
            Err(message) => Reply::Error { message },
        },
    }
}

/// A declared identity's file: the SHA-256 of all of it, read in blocks (any size), and its
/// first `text_bytes` bytes as text when a pattern needs them.
fn digest_file(path: String, text_bytes: u32) -> Reply {
    use sha2::Digest;
    if !path.starts_with('/') {
        return Reply::Error { message: format!("digest: {path:?} is not an absolute path") };
    }
    let mut f = match fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Reply::Digested { path, found: None },
        Err(e) => return Reply::Error { message: format!("digest {path}: {e}") },
    };
    let keep = text_bytes.min(clonesafe_protocol::MAX_DECLARED_TEXT) as usize;
    let (mut h, mut size, mut head) = (sha2::Sha256::new(), 0u64, Vec::new());
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                h.update(&buf[..n]);
                size += n as u64;
                if head.len() < keep {
                    head.extend_from_slice(&buf[..n.min(keep - head.len())]);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Reply::Error { message: format!("digest {path}: {e}") },
        }
    }
    let sha256 = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Reply::Digested { path, found: Some(clonesafe_protocol::DigestOf { sha256, size, text: String::from_utf8_lossy(&head).into_owned() }) }
}

/// A declared identity's command: no shell, stdin closed, each stream kept up to `max_bytes`
/// (the rest is read and dropped so the command never blocks on a full pipe), killed after
/// `timeout_ms` with what it printed so far.
fn exec(argv: &[String], timeout_ms: u64, max_bytes: u32) -> Reply {
    use std::process::{Command, Stdio};
    let Some((prog, args)) = argv.split_first() else { return Reply::Error { message: "exec: an empty argv".into() } };
    let keep = max_bytes.min(clonesafe_protocol::MAX_DECLARED_TEXT) as usize;
    let mut child = match Command::new(prog)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LANG", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Reply::Error { message: format!("exec {prog}: {e}") },
    };
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let (mut kept, mut cut, mut buf) = (Vec::new(), false, [0u8; 4096]);
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let room = keep.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                cut |= n > room;
            }
            (kept, cut)
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped")));
    let err = drain(Box::new(child.stderr.take().expect("piped")));
    let deadline = std::time::Instant::now() + Duration::from_millis(timeout_ms);
    let (exit, timed_out) = loop {
        match child.try_wait() {
            Ok(Some(st)) => break (st.code(), false),
            Ok(None) if std::time::Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break (None, true);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Reply::Error { message: format!("exec {prog}: wait: {e}") },
        }
    };
    // A grandchild holding the pipes open keeps a reader going: wait a little, not forever.
    let join = |h: std::thread::JoinHandle<(Vec<u8>, bool)>| {
        let until = std::time::Instant::now() + Duration::from_millis(500);
        while !h.is_finished() && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        if h.is_finished() { h.join().unwrap_or_default() } else { (Vec::new(), true) }
    };
    let ((o, oc), (e, ec)) = (join(out), join(err));
    Reply::Executed {
        output: clonesafe_protocol::ExecOutput {
            exit,
            timed_out,
            stdout: String::from_utf8_lossy(&o).into_owned(),
            stderr: String::from_utf8_lossy(&e).into_owned(),
            truncated: oc || ec,
        },
    }
}

/// The agent's fix-up. Order matters: the kernel CRNG first (everything after draws on it), then
/// the identities, then the PRNG.
fn fixup(entropy_hex: &str, prng: &mut XorShift64) -> Reply {
    let t_start_ns = monotonic_ns();
    let mut steps = Vec::new();
    let bytes = unhex(entropy_hex);
    match add_entropy_and_reseed(&bytes) {
        Ok(()) => steps.push(format!("credited {} bytes of host entropy (RNDADDENTROPY) and reseeded the CRNG (RNDRESEEDCRNG)", bytes.len())),
        Err(e) => return Reply::Error { message: format!("fixup: kernel RNG: {e}") },
    }
    let t_rng_ns = monotonic_ns();
    let hex = |n: usize| (0..n).map(|_| format!("{:02x}", getrandom8()[0])).collect::<String>();
    let id = hex(16);
    let host = format!("tiny-{}", hex(4));
    let r = fs::write("/data/etc/machine-id.new", &id)
        .and_then(|_| fs::rename("/data/etc/machine-id.new", "/data/etc/machine-id"))
        .and_then(|_| fs::write("/data/etc/hostname", &host))
        .and_then(|_| fs::write("/proc/sys/kernel/hostname", &host));
    if let Err(e) = r {
        return Reply::Error { message: format!("fixup: machine-id/hostname: {e}") };
    }
    steps.push("new machine-id and hostname".into());
    for t in ["ed25519", "ecdsa"] {
        let k = format!("/data/etc/ssh/ssh_host_{t}_key");
        let _ = fs::remove_file(&k);
        let gen = std::process::Command::new("/usr/bin/dropbearkey").args(["-t", t, "-f", &k]).output();
        let public = std::process::Command::new("/usr/bin/dropbearkey").args(["-y", "-f", &k]).output();
        match (gen, public) {
            (Ok(g), Ok(p)) if g.status.success() && p.status.success() => {
                let line = String::from_utf8_lossy(&p.stdout).lines().find(|l| l.starts_with("ssh-") || l.starts_with("ecdsa-")).unwrap_or("").to_string();
                if let Err(e) = fs::write(format!("{k}.pub"), line + "\n") {
                    return Reply::Error { message: format!("fixup: {k}.pub: {e}") };
                }
            }
            _ => return Reply::Error { message: format!("fixup: dropbearkey {t} failed") },
        }
    }
    steps.push("new SSH host keys (dropbearkey ed25519, ecdsa)".into());
    *prng = XorShift64(u64::from_ne_bytes(getrandom8()) | 1);
    steps.push("reseeded the probe's PRNG".into());
    unsafe { libc::sync() };
    Reply::FixedUp { t_start_ns, t_rng_ns, t_done_ns: monotonic_ns(), steps }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2).filter_map(|i| s.get(2 * i..2 * i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect()
}

/// The gate before the first sample. rng-gate: wait (bounded) for the vmgenid reseed to show
/// in the kernel log, then credit the host's entropy and force a reseed. genid-wait: wait
/// (bounded) for the `NEW_VMGENID` uevent, and nothing else. The workload's first sample follows.
fn run_gate(g: &clonesafe_protocol::Gate, prng: &mut XorShift64) -> std::io::Result<clonesafe_protocol::GateDone> {
    let t_start_ns = monotonic_ns();
    let mut vmgenid_seen_ns = None;
    if g.wait_vmgenid_ms > 0 {
        let deadline = t_start_ns + g.wait_vmgenid_ms * 1_000_000;
        loop {
            if count_kmsg(VMFORK_RESEED_MSG).unwrap_or(0) > 0 {
                vmgenid_seen_ns = Some(monotonic_ns());
                break;
            }
            if monotonic_ns() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    // genid-wait: the fork notice user space is offered (Linux 6.8+), heard by the listener
    // opened at `hold`.
    let uevent_seen_ns = (g.wait_uevent_ms > 0).then(|| uevents::wait_new_vmgenid(t_start_ns + g.wait_uevent_ms * 1_000_000)).flatten();
    if !g.entropy_hex.is_empty() {
        add_entropy_and_reseed(&unhex(&g.entropy_hex))?;
    }
    let _ = prng;
    Ok(clonesafe_protocol::GateDone { t_start_ns, vmgenid_seen_ns, uevent_seen_ns, t_reseeded_ns: monotonic_ns() })
}

/// RNDADDENTROPY then RNDRESEEDCRNG on /dev/urandom (linux/random.h). Needs CAP_SYS_ADMIN; the
/// probe runs as root from init.
fn add_entropy_and_reseed(bytes: &[u8]) -> std::io::Result<()> {
    const RNDADDENTROPY: libc::c_ulong = 0x4008_5203; // _IOW('R', 0x03, int[2])
    const RNDRESEEDCRNG: libc::c_ulong = 0x5207; // _IO('R', 0x07)
    let f = fs::OpenOptions::new().write(true).open("/dev/urandom")?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info: Vec<u8> = Vec::with_capacity(8 + bytes.len());
    info.extend_from_slice(&((bytes.len() * 8) as i32).to_ne_bytes());
    info.extend_from_slice(&(bytes.len() as i32).to_ne_bytes());
    info.extend_from_slice(bytes);
    info.resize(8 + bytes.len().div_ceil(4) * 4, 0);
    if unsafe { libc::ioctl(f.as_raw_fd(), RNDADDENTROPY as _, info.as_ptr()) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if unsafe { libc::ioctl(f.as_raw_fd(), RNDRESEEDCRNG as _) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The host may only touch files under the data directory (tiny: /data, its persistent disk).
fn data_path(path: &str) -> Result<&str, String> {
    let dir = data_dir();
    if path.starts_with(&format!("{dir}/")) && !path.contains("..") {
        Ok(path)
    } else {
        Err(format!("refusing path {path:?}: only {dir}/... is allowed"))
    }
}

fn identity(sources: &clonesafe_protocol::Sources) -> Identity {
    let mut id = Identity { uptime_ms: uptime_ms(), ..Default::default() };
    let errors = std::cell::RefCell::new(Vec::new());
    let read = |field: &str, path: &str| -> Option<String> {
        match fs::read_to_string(path) {
            Ok(s) => Some(s.trim().to_string()),
            Err(e) => {
                errors.borrow_mut().push((field.to_string(), format!("{path}: {e}")));
                None
            }
        }
    };
    id.product_uuid = read("product_uuid", "/sys/class/dmi/id/product_uuid");
    id.product_serial = read("product_serial", "/sys/class/dmi/id/product_serial");
    id.machine_id = read("machine_id", &sources.machine_id);
    id.hostname = read("hostname", "/proc/sys/kernel/hostname");
    id.boot_id = read("boot_id", "/proc/sys/kernel/random/boot_id");
    for name in sorted_dir("/sys/class/net") {
        if name == "lo" {
            continue;
        }
        if let Some(mac) = read("nics", &format!("/sys/class/net/{name}/address")) {
            id.nics.push(Nic { name, mac });
        }
    }
    for name in sorted_dir("/sys/block") {
        if name.starts_with("vd") {
            if let Some(serial) = read("disks", &format!("/sys/block/{name}/serial")) {
                id.disks.push(Disk { name, serial });
            }
        }
    }
    for name in sorted_dir(&sources.ssh_host_keys) {
        if let Some(stripped) = name.strip_suffix(".pub") {
            let path = format!("{}/{name}", sources.ssh_host_keys);
            match read("ssh_host_keys", &path).map(|s| fingerprint(&s)) {
                Some(Ok(fp)) => id.ssh_host_keys.push(HostKey { file: stripped.to_string(), fingerprint: fp }),
                Some(Err(e)) => errors.borrow_mut().push(("ssh_host_keys".into(), format!("{path}: {e}"))),
                None => {}
            }
        }
    }
    match kmsg_times(VMFORK_RESEED_MSG) {
        Ok(times) => {
            id.vmfork_reseeds = times.len() as u32;
            id.vmfork_reseed_ns = times;
        }
        Err(e) => errors.borrow_mut().push(("vmgenid".into(), format!("/dev/kmsg: {e}"))),
    }
    let digest = |field: &str, path: &str, xattr: Option<&str>| -> Option<clonesafe_protocol::FileDigest> {
        let meta = fs::symlink_metadata(path).ok()?;
        match fs::read(path) {
            Ok(bytes) => {
                use sha2::Digest;
                let sha256 = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
                let creditable = xattr.map(|name| has_xattr(path, name));
                Some(clonesafe_protocol::FileDigest { path: path.into(), sha256, symlink: meta.file_type().is_symlink(), creditable })
            }
            Err(e) => {
                errors.borrow_mut().push((field.into(), format!("{path}: {e}")));
                None
            }
        }
    };
    id.random_seed = digest("random_seed", "/var/lib/systemd/random-seed", Some("user.random-seed-creditable"));
    id.credential_secret = digest("credential_secret", "/var/lib/systemd/credential.secret", None);
    id.dbus_machine_id = digest("dbus_machine_id", "/var/lib/dbus/machine-id", None);
    if fs::symlink_metadata("/var/lib/cloud/data/instance-id").is_ok() {
        id.cloud_init_instance_id = read("cloud_init_instance_id", "/var/lib/cloud/data/instance-id");
    }
    id.machine_info = digest("machine_info", "/etc/machine-info", None);
    id.machine_account = clonesafe_protocol::MACHINE_ACCOUNT_FILES.iter().filter_map(|p| digest("machine_account", p, None)).collect();
    id.credentials = credentials(&mut errors.borrow_mut());
    id.block_ids = block_ids(&mut errors.borrow_mut());
    id.tpm_ek = tpm_ek(&mut errors.borrow_mut());
    id.errors = errors.into_inner();
    id
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Password hashes in /etc/shadow and users' private SSH keys (root's and /home/*'s `~/.ssh/id_*`
/// without `.pub`), as digests: the credential itself never leaves the guest.
fn credentials(errors: &mut Vec<(String, String)>) -> Vec<clonesafe_protocol::Credential> {
    use clonesafe_protocol::Credential;
    let mut out = Vec::new();
    match fs::read_to_string("/etc/shadow") {
        Ok(text) => {
            for (user, hash) in clonesafe_protocol::shadow_hashes(&text) {
                out.push(Credential { kind: "password".into(), of: user, sha256: sha256_hex(hash.as_bytes()) });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => errors.push(("user_credentials".into(), format!("/etc/shadow: {e}"))),
    }
    let mut homes = vec!["/root".to_string()];
    homes.extend(sorted_dir("/home").into_iter().map(|h| format!("/home/{h}")));
    for home in homes {
        let dir = format!("{home}/.ssh");
        for name in sorted_dir(&dir) {
            if !name.starts_with("id_") || name.ends_with(".pub") {
                continue;
            }
            let path = format!("{dir}/{name}");
            match fs::read(&path) {
                Ok(b) => out.push(Credential { kind: "ssh_key".into(), of: path, sha256: sha256_hex(&b) }),
                Err(e) => errors.push(("user_credentials".into(), format!("{path}: {e}"))),
            }
        }
    }
    out
}

/// Every block device's file system, LVM or LUKS identity, read from its first blocks through
/// /dev (see clonesafe_protocol::blockid). Empty devices (an unused loop, a CD drive without a
/// disc) are left out.
fn block_ids(errors: &mut Vec<(String, String)>) -> Vec<clonesafe_protocol::BlockId> {
    use std::io::Read;
    let mut names = Vec::new();
    for disk in sorted_dir("/sys/block") {
        if ["ram", "zram", "sr", "fd"].iter().any(|p| disk.starts_with(p)) {
            continue;
        }
        let parts: Vec<String> = sorted_dir(&format!("/sys/block/{disk}")).into_iter().filter(|p| p.starts_with(&disk) && p.len() > disk.len()).collect();
        names.push(disk);
        names.extend(parts);
    }
    // Open dm-crypt mappings name their LUKS UUID: CRYPT-LUKS2-<uuid without dashes>-<name>.
    let open_luks: Vec<String> = names
        .iter()
        .filter(|n| n.starts_with("dm-"))
        .filter_map(|n| fs::read_to_string(format!("/sys/block/{n}/dm/uuid")).ok())
        .filter_map(|u| u.trim().strip_prefix("CRYPT-LUKS").and_then(|r| r.get(2..)).map(|r| r.split('-').next().unwrap_or("").to_string()))
        .collect();
    let mut out = Vec::new();
    for name in names {
        let size = fs::read_to_string(format!("/sys/class/block/{name}/size")).ok().and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(0);
        if size == 0 {
            continue;
        }
        let path = format!("/dev/{name}");
        let mut buf = Vec::with_capacity(clonesafe_protocol::blockid::READ_BYTES);
        match fs::File::open(&path).and_then(|f| f.take(clonesafe_protocol::blockid::READ_BYTES as u64).read_to_end(&mut buf)) {
            Ok(_) => {
                if let Some(mut b) = clonesafe_protocol::blockid::identify(&buf) {
                    b.device = name;
                    b.active = b.kind.starts_with("luks") && open_luks.contains(&b.uuid.replace('-', ""));
                    out.push(b);
                }
            }
            Err(e) => errors.push(("block_ids".into(), format!("{path}: {e}"))),
        }
    }
    out
}

/// The TPM's endorsement key, made by TPM2_CreatePrimary through the kernel's resource manager
/// (/dev/tpmrm0 flushes the object when the file is closed); /dev/tpm0 where there is no
/// resource manager, flushing it ourselves. None: no TPM device.
fn tpm_ek(errors: &mut Vec<(String, String)>) -> Option<clonesafe_protocol::TpmEk> {
    use clonesafe_protocol::tpm;
    use std::io::{Read, Write};
    let device = ["/dev/tpmrm0", "/dev/tpm0"].into_iter().find(|d| fs::symlink_metadata(d).is_ok())?;
    let run = || -> Result<Vec<u8>, String> {
        let mut f = fs::OpenOptions::new().read(true).write(true).open(device).map_err(|e| format!("{device}: {e}"))?;
        f.write_all(&tpm::create_primary_ek()).map_err(|e| format!("{device}: write: {e}"))?;
        // One read returns the whole response (the driver's buffer is 4 KiB).
        let mut buf = vec![0u8; 4096];
        let n = f.read(&mut buf).map_err(|e| format!("{device}: read: {e}"))?;
        let (handle, public) = tpm::ek_public(&buf[..n])?;
        if device == "/dev/tpm0" {
            let _ = f.write_all(&tpm::flush_context(handle)).and_then(|_| f.read(&mut buf).map(|_| ()));
        }
        Ok(public)
    };
    match run() {
        Ok(public) => Some(clonesafe_protocol::TpmEk { device: device.into(), template: tpm::EK_TEMPLATE.into(), sha256: sha256_hex(&public) }),
        Err(e) => {
            errors.push(("tpm_ek".into(), e));
            None
        }
    }
}

fn sorted_dir(path: &str) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(path)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// OpenSSH's fingerprint: SHA256 of the decoded key blob, base64 without padding.
fn fingerprint(pubkey_line: &str) -> Result<String, String> {
    use base64::Engine;
    use sha2::Digest;
    let blob = pubkey_line.split_whitespace().nth(1).ok_or("no key blob")?;
    let raw = base64::engine::general_purpose::STANDARD.decode(blob).map_err(|e| e.to_string())?;
    let digest = sha2::Sha256::digest(&raw);
    Ok(format!("SHA256:{}", base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)))
}

/// Whether `path` carries the extended attribute `name`.
fn has_xattr(path: &str, name: &str) -> bool {
    let (Ok(p), Ok(n)) = (std::ffi::CString::new(path), std::ffi::CString::new(name)) else { return false };
    // SAFETY: both are NUL-terminated; a NULL buffer of size 0 asks only for the value's size.
    unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) >= 0 }
}

/// The CLOCK_MONOTONIC times (ns) of the kernel log records containing `needle`. The log's own
/// timestamps (µs, the kernel's local clock) are shifted by the offset of a marker record this
/// probe writes now, read back with the monotonic time of its writing.
fn kmsg_times(needle: &str) -> std::io::Result<Vec<u64>> {
    write_clock_mark();
    let records = kmsg_records()?;
    // (kernel log µs, monotonic ns) of every mark.
    let marks: Vec<(u64, u64)> = records
        .iter()
        .filter_map(|(us, text)| text.split_once(CLOCK_MARK).and_then(|(_, n)| n.trim().parse::<u64>().ok()).map(|ns| (*us, ns)))
        .collect();
    Ok(records
        .iter()
        .filter(|(_, text)| text.contains(needle))
        .map(|(us, _)| match marks.iter().min_by_key(|(m, _)| m.abs_diff(*us)) {
            // The nearest mark's offset between the two clocks.
            Some((m_us, m_ns)) => ((*us as i128 - *m_us as i128) * 1000 + *m_ns as i128).max(0) as u64,
            None => *us * 1000,
        })
        .collect())
}

const CLOCK_MARK: &str = "clonesafe-probe: clock mark ";

/// Write the monotonic time now into the kernel log.
fn write_clock_mark() {
    let line = format!("{CLOCK_MARK}{}", monotonic_ns());
    let _ = fs::OpenOptions::new().write(true).open("/dev/kmsg").and_then(|mut f| f.write_all(line.as_bytes()));
}

/// Every record of /dev/kmsg from the start of its buffer: (timestamp µs, text).
fn kmsg_records() -> std::io::Result<Vec<(u64, String)>> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open("/dev/kmsg")?;
    let mut buf = vec![0u8; 8192];
    let mut out = Vec::new();
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(len) => {
                // "priority,sequence,timestamp_us,flags;text"
                let rec = String::from_utf8_lossy(&buf[..len]);
                let (head, text) = rec.split_once(';').unwrap_or(("", &rec));
                let us = head.split(',').nth(2).and_then(|t| t.parse().ok()).unwrap_or(0);
                out.push((us, text.trim_end().to_string()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            // EPIPE: records were overwritten while we read; keep going from the next one.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Count kernel log records containing `needle`, reading /dev/kmsg from the start of its buffer.
fn count_kmsg(needle: &str) -> std::io::Result<u32> {
    Ok(kmsg_records()?.iter().filter(|(_, t)| t.contains(needle)).count() as u32)
}

fn sample_kernel() -> Sample {
    let t_ns = monotonic_ns();
    let b = getrandom8();
    Sample { t_ns, hex: b.iter().map(|x| format!("{x:02x}")).collect() }
}

/// `/proc/sys/kernel/random/uuid`: a fresh random UUID from the kernel's CRNG at each read, what
/// applications read for ids (None where the kernel has no such file).
fn sample_uuid() -> Option<Sample> {
    let t_ns = monotonic_ns();
    let u = fs::read_to_string("/proc/sys/kernel/random/uuid").ok()?;
    Some(Sample { t_ns, hex: u.trim().to_string() })
}

/// The VMClock page (issue 21): read at `hold`, right after resume, and again
/// [`clonesafe_protocol::VMCLOCK_AFTER_MS`] later, so what QEMU does to the disruption marker and
/// the generation counter on a restore is measured. Layout: Linux
/// include/uapi/linux/vmclock-abi.h (`struct vmclock_abi`, little-endian); the page is mapped
/// read-only from /dev/vmclock0 (drivers/ptp/ptp_vmclock.c) and read under its seqcount.
mod vmclock {
    use super::monotonic_ns;
    use clonesafe_protocol::{VmclockPage, VmclockWatch, VMCLOCK_AFTER_MS};
    use std::sync::Mutex;

    const DEV: &str = "/dev/vmclock0";
    const MAGIC: u32 = 0x4b4c_4356; // "VCLK"
    const GEN_COUNTER_PRESENT: u64 = 1 << 8;

    static STATE: Mutex<(Option<VmclockPage>, Option<VmclockPage>, Option<String>)> = Mutex::new((None, None, None));

    fn lock() -> std::sync::MutexGuard<'static, (Option<VmclockPage>, Option<VmclockPage>, Option<String>)> {
        STATE.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn at_hold() {
        let mut s = lock();
        *s = (None, None, None);
        match read() {
            Ok(p) => s.0 = p,
            Err(e) => s.2 = Some(e),
        }
    }

    pub fn at_resume() {
        let r = read();
        let mut s = lock();
        match r {
            Ok(p) => s.1 = p,
            Err(e) => s.2 = Some(e),
        }
    }

    /// The three reads; waits until [`VMCLOCK_AFTER_MS`] after `t0_ns` for the last, only where
    /// the device exists.
    pub fn watch(t0_ns: u64) -> VmclockWatch {
        let device = std::path::Path::new(DEV).exists();
        let (at_hold, at_resume, mut error) = lock().clone();
        let mut after = None;
        if device {
            let due = t0_ns + VMCLOCK_AFTER_MS * 1_000_000;
            let now = monotonic_ns();
            if due > now {
                std::thread::sleep(std::time::Duration::from_nanos(due - now));
            }
            match read() {
                Ok(p) => after = p,
                Err(e) => error = Some(e),
            }
        }
        VmclockWatch { device, error, at_hold, at_resume, after }
    }

    /// The page now (None: no device).
    fn read() -> Result<Option<VmclockPage>, String> {
        use std::os::unix::io::AsRawFd;
        let f = match std::fs::File::open(DEV) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("open {DEV}: {e}")),
        };
        const LEN: usize = 4096;
        // SAFETY: a read-only shared mapping of the device's one page, unmapped below; every
        // read is a volatile load within it.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), LEN, libc::PROT_READ, libc::MAP_SHARED, f.as_raw_fd(), 0) };
        if p == libc::MAP_FAILED {
            return Err(format!("mmap {DEV}: {}", std::io::Error::last_os_error()));
        }
        let base = p as *const u8;
        let rd = |off: usize, n: usize| -> u64 {
            let mut v = 0u64;
            for i in 0..n {
                v |= (unsafe { std::ptr::read_volatile(base.add(off + i)) } as u64) << (8 * i);
            }
            v
        };
        let mut out = Err(format!("{DEV}: the seqcount never settled"));
        for _ in 0..1000 {
            let seq = rd(12, 4) as u32;
            if seq & 1 == 1 {
                std::thread::sleep(std::time::Duration::from_micros(100));
                continue;
            }
            std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
            let magic = rd(0, 4) as u32;
            let size = rd(4, 4) as u32;
            let flags = rd(24, 8);
            let page = VmclockPage {
                t_ns: monotonic_ns(),
                size,
                version: rd(8, 2) as u16,
                seq_count: seq,
                disruption_marker: rd(16, 8),
                flags,
                clock_status: rd(34, 1) as u8,
                vm_generation_counter: (flags & GEN_COUNTER_PRESENT != 0 && size >= 112).then(|| rd(104, 8)),
            };
            std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
            if rd(12, 4) as u32 != seq {
                continue;
            }
            out = if magic == MAGIC { Ok(Some(page)) } else { Err(format!("{DEV}: magic {magic:#x}, not VCLK")) };
            break;
        }
        unsafe { libc::munmap(p, LEN) };
        out
    }
}

/// The NEW_VMGENID uevent listener (issue 21). Linux 6.8+ sends `NEW_VMGENID=1` on the vmgenid
/// device's kobject right after it has fed the new generation id to the RNG
/// (drivers/virt/vmgenid.c, vmgenid_notify()); user space can wait for it instead of polling.
mod uevents {
    use clonesafe_protocol::UEVENT_HEADS;
    use super::{monotonic_ns, UeventWatch, UEVENT_WAIT_MS};
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct Heard {
        error: Option<String>,
        new_vmgenid_ns: Vec<u64>,
        seen: u32,
        heads: Vec<String>,
        /// A synthetic uevent (`SYNTH_UUID=`) was heard: the positive control.
        synthetic: bool,
        /// The first post-`go` sample's time: where the wait for a late uevent counts from.
        t0_ns: u64,
    }

    static HEARD: Mutex<Option<Arc<Mutex<Heard>>>> = Mutex::new(None);

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bind a NETLINK_KOBJECT_UEVENT socket to the kernel's broadcast group and read it on a
    /// thread of its own until the probe exits. A second `hold` starts counting again.
    pub fn listen() {
        let mut g = lock(&HEARD);
        if let Some(h) = g.as_ref() {
            let mut h = lock(h);
            h.new_vmgenid_ns.clear();
            h.seen = 0;
            h.heads.clear();
            h.synthetic = false;
            return;
        }
        let heard = Arc::new(Mutex::new(Heard::default()));
        *g = Some(heard.clone());
        // SAFETY: plain socket(2)/bind(2) calls on a zeroed sockaddr_nl of the right size.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, libc::NETLINK_KOBJECT_UEVENT) };
        if fd < 0 {
            lock(&heard).error = Some(format!("socket(NETLINK_KOBJECT_UEVENT): {}", std::io::Error::last_os_error()));
            return;
        }
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = 1;
        let r = unsafe { libc::bind(fd, (&addr as *const libc::sockaddr_nl).cast(), std::mem::size_of::<libc::sockaddr_nl>() as u32) };
        if r < 0 {
            lock(&heard).error = Some(format!("bind(uevent group 1): {}", std::io::Error::last_os_error()));
            unsafe { libc::close(fd) };
            return;
        }
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
                let t = monotonic_ns();
                if n < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    // ENOBUFS: the socket overflowed; uevents were lost, and the report says so.
                    lock(&heard).error = Some(format!("recv: {e}"));
                    if e.raw_os_error() == Some(libc::ENOBUFS) {
                        continue;
                    }
                    return;
                }
                let msg = &buf[..n as usize];
                let mut h = lock(&heard);
                h.seen += 1;
                if h.heads.len() < UEVENT_HEADS {
                    let head = msg.split(|b| *b == 0).next().unwrap_or_default();
                    h.heads.push(String::from_utf8_lossy(&head[..head.len().min(160)]).into_owned());
                }
                if msg.split(|b| *b == 0).any(|kv| kv == b"NEW_VMGENID=1") {
                    h.new_vmgenid_ns.push(t);
                }
                if msg.split(|b| *b == 0).any(|kv| kv.starts_with(b"SYNTH_UUID=")) {
                    h.synthetic = true;
                }
            }
        });
    }

    /// Wait until a `NEW_VMGENID` uevent has been heard since `hold`, or until `deadline_ns`
    /// (CLOCK_MONOTONIC); when it was heard. None also when nothing is listening.
    pub fn wait_new_vmgenid(deadline_ns: u64) -> Option<u64> {
        let h = lock(&HEARD).clone()?;
        loop {
            if let Some(t) = lock(&h).new_vmgenid_ns.first() {
                return Some(*t);
            }
            if monotonic_ns() >= deadline_ns {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// When `go` sampled first (0: no `go` yet).
    pub fn t0() -> u64 {
        lock(&HEARD).as_ref().map(|h| lock(h).t0_ns).unwrap_or(0)
    }

    /// `go` sampled first at `t0_ns`.
    pub fn went(t0_ns: u64) {
        if let Some(h) = lock(&HEARD).as_ref() {
            lock(h).t0_ns = t0_ns;
        }
    }

    /// What was heard; waits up to [`UEVENT_WAIT_MS`] after the first sample for a NEW_VMGENID
    /// that should come (a vmgenid device and a 6.8+ kernel) and has not yet.
    pub fn heard() -> UeventWatch {
        let kernel = kernel_release();
        let device = std::fs::read_dir("/sys/bus/acpi/devices").ok().and_then(|d| d.flatten().map(|e| e.path()).find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("QEMUVGID") || n.starts_with("VMGENCTR"))));
        let vmgenid_device = device.is_some();
        let Some(h) = lock(&HEARD).clone() else {
            return UeventWatch { kernel, vmgenid_device, error: Some("not listening: no hold before go".into()), ..Default::default() };
        };
        if vmgenid_device && clonesafe_protocol::kernel_may_send_new_vmgenid(&kernel) {
            let deadline = lock(&h).t0_ns + UEVENT_WAIT_MS * 1_000_000;
            while lock(&h).new_vmgenid_ns.is_empty() && monotonic_ns() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        // No NEW_VMGENID from a guest with the device: prove the listener hears that device at
        // all, with a synthetic uevent (writing "change" to its sysfs uevent file).
        let mut control_heard = None;
        if let Some(dev) = device.filter(|_| lock(&h).new_vmgenid_ns.is_empty()) {
            control_heard = Some(std::fs::write(dev.join("uevent"), "change").is_ok() && {
                let deadline = monotonic_ns() + 500_000_000;
                while !lock(&h).synthetic && monotonic_ns() < deadline {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                lock(&h).synthetic
            });
        }
        let h = lock(&h);
        UeventWatch { kernel, vmgenid_device, error: h.error.clone(), new_vmgenid_ns: h.new_vmgenid_ns.clone(), seen: h.seen, control_heard, heads: h.heads.clone() }
    }

    fn kernel_release() -> String {
        let mut u: libc::utsname = unsafe { std::mem::zeroed() };
        if unsafe { libc::uname(&mut u) } != 0 {
            return String::new();
        }
        let b: Vec<u8> = u.release.iter().take_while(|c| **c != 0).map(|c| *c as u8).collect();
        String::from_utf8_lossy(&b).into_owned()
    }
}

fn getrandom8() -> [u8; 8] {
    let mut b = [0u8; 8];
    loop {
        let r = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
        if r == 8 {
            return b;
        }
    }
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn realtime_ns() -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as i64 * 1_000_000_000 + ts.tv_nsec as i64
}

fn uptime_ms() -> u64 {
    fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map(|s| (s * 1000.0) as u64)
        .unwrap_or(0)
}

struct XorShift64(u64);
impl XorShift64 {
    fn next(&mut self) -> u64 {
        // xorshift64* (Vigna)
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Raw mode, 115200 baud: no echo (the host would read its own requests back) and no CR/LF
/// translation.
fn make_raw(f: &fs::File) {
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(f.as_raw_fd(), &mut t) == 0 {
            libc::cfmakeraw(&mut t);
            t.c_cflag = (t.c_cflag & !libc::CBAUD) | libc::B115200;
            libc::tcsetattr(f.as_raw_fd(), libc::TCSANOW, &t);
        }
    }
}

fn send(port: &mut fs::File, reply: &Reply) {
    let mut s = serde_json::to_string(reply).expect("replies serialize");
    s.push('\n');
    if let Err(e) = port.write_all(s.as_bytes()) {
        eprintln!("probe: write: {e}");
    }
}

/// Bounded line reader: a line over MAX_LINE is dropped up to its newline and reported as None.
#[derive(Default)]
struct LineReader {
    buf: Vec<u8>,
    overflow: bool,
}

impl LineReader {
    fn next_line(&mut self, r: &mut impl Read) -> std::io::Result<Option<String>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                if std::mem::take(&mut self.overflow) {
                    return Ok(None);
                }
                return Ok(Some(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned()));
            }
            if self.buf.len() > MAX_LINE {
                self.buf.clear();
                self.overflow = true;
            }
            let mut chunk = [0u8; 4096];
            let n = r.read(&mut chunk)?;
            if n == 0 {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The guest's addresses as its kernel lists them (bounded: the harness treats them as untrusted).
fn addrs() -> Reply {
    use std::io::Read;
    let read = |p: &str| {
        let mut s = String::new();
        if let Ok(f) = std::fs::File::open(p) {
            let _ = f.take(clonesafe_protocol::MAX_ADDRS_BYTES as u64).read_to_string(&mut s);
        }
        s
    };
    // fib_trie: an address line ("|-- 10.77.0.23") followed by "/32 host LOCAL" is local.
    let trie = read("/proc/net/fib_trie");
    let mut ipv4: Vec<String> = Vec::new();
    let mut last = "";
    for line in trie.lines() {
        let t = line.trim_start_matches(|c: char| c == ' ' || c == '|' || c == '+' || c == '-');
        if line.contains("/32 host LOCAL") {
            if !last.starts_with("127.") && !ipv4.iter().any(|a| a == last) {
                ipv4.push(last.to_string());
            }
        } else if t.chars().next().is_some_and(|c| c.is_ascii_digit()) {
            last = t.split_whitespace().next().unwrap_or("");
        }
    }
    Reply::Addrs { if_inet6: read("/proc/net/if_inet6"), ipv4 }
}
