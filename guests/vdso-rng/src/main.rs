//! clonesafe-vdso-rng: getrandom(3) through the guest's own glibc, held across a snapshot.
//!
//! The probe is a static binary and calls the getrandom system call; a program linked against
//! glibc 2.41+ on Linux 6.11+ does not: glibc's getrandom() runs the vDSO's `__vdso_getrandom`,
//! a ChaCha20 generator over per-thread state in the program's own memory, keyed from the
//! kernel and re-keyed when the kernel's RNG generation (in the vDSO data page) changes (Linux
//! lib/vdso/getrandom.c; glibc sysdeps/unix/sysv/linux/getrandom.c). A clone resumes with that
//! state, so whether clones share output depends on when the generation changes, not on the
//! kernel's own CRNG: this helper measures it.
//!
//! This binary is dynamically linked, so it uses whatever glibc the guest has. The probe starts
//! it at `hold` with piped stdin and stdout:
//!
//! ```text
//!   helper → "ready\tglibc=2.41\tvdso_symbol=yes\tpath=vdso\twhy=..."   (once, after the self-test)
//!   probe  → "go"                                                       (right after resume)
//!   helper → "sample\t<CLOCK_MONOTONIC ns>\t<16 hex digits>"            (one per offset)
//!   helper → "done"
//! ```
//!
//! Which path ran is tested, not assumed: on a thread of its own the helper calls getrandom()
//! once (glibc allocates and keys that thread's state), then installs a seccomp filter on that
//! thread alone that fails the getrandom system call with EPERM, and calls getrandom() again. It
//! succeeds only if glibc answered from the vDSO without the system call (`path=vdso`); EPERM
//! means glibc fell back to the system call (`path=syscall`, with the reason). The samples are
//! taken on the main thread, which has no filter.
//!
//! Usage: `clonesafe-vdso-rng OFFSET_MS,OFFSET_MS,...` (the sample offsets after the first).

use std::io::{BufRead, Write};
use std::time::Duration;

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// 8 bytes from glibc's getrandom() (the vDSO path where glibc and the kernel have it).
fn glibc_getrandom() -> Result<[u8; 8], std::io::Error> {
    let mut b = [0u8; 8];
    // SAFETY: b is writable for 8 bytes.
    let n = unsafe { libc::getrandom(b.as_mut_ptr() as *mut libc::c_void, b.len(), 0) };
    if n == 8 {
        Ok(b)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn glibc_version() -> String {
    // SAFETY: gnu_get_libc_version returns a static NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) }.to_string_lossy().into_owned()
}

/// Whether the kernel's vDSO exports `__vdso_getrandom` (Linux 6.11+ on x86_64).
fn vdso_has_getrandom() -> bool {
    // SAFETY: dlopen with RTLD_NOLOAD only looks the already-mapped vDSO up; dlsym on its handle.
    unsafe {
        let h = libc::dlopen(c"linux-vdso.so.1".as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD);
        if h.is_null() {
            return false;
        }
        !libc::dlsym(h, c"__vdso_getrandom".as_ptr()).is_null()
    }
}

/// On the calling thread only: make the getrandom system call fail with EPERM.
fn forbid_getrandom_syscall() -> Result<(), std::io::Error> {
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    let ld = |k: u32| libc::sock_filter { code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16, jt: 0, jf: 0, k };
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter { code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16, jt, jf, k };
    let ret = |k: u32| libc::sock_filter { code: (libc::BPF_RET | libc::BPF_K) as u16, jt: 0, jf: 0, k };
    // struct seccomp_data: nr at 0, arch at 4.
    let prog = [
        ld(4),
        jeq(AUDIT_ARCH_X86_64, 0, 3),
        ld(0),
        jeq(libc::SYS_getrandom as u32, 0, 1),
        ret(libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        ret(libc::SECCOMP_RET_ALLOW),
    ];
    let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_ptr() as *mut _ };
    // SAFETY: prctl with a valid filter program that outlives the call (the kernel copies it).
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &fprog as *const _ as libc::c_ulong, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Which path glibc's getrandom() takes: ("vdso" | "syscall", why).
fn self_test() -> (&'static str, String) {
    std::thread::spawn(|| {
        if let Err(e) = glibc_getrandom() {
            return ("syscall", format!("getrandom() failed before the test: {e}"));
        }
        if let Err(e) = forbid_getrandom_syscall() {
            return ("syscall", format!("could not install the seccomp test filter: {e}"));
        }
        match glibc_getrandom() {
            Ok(_) => ("vdso", "getrandom() answered while the system call was forbidden on its thread".to_string()),
            Err(e) => ("syscall", format!("getrandom() made the system call ({e} from the test filter): this glibc or kernel has no vDSO getrandom")),
        }
    })
    .join()
    .unwrap_or(("syscall", "the self-test thread panicked".into()))
}

fn main() {
    let offsets: Vec<u64> = std::env::args().nth(1).unwrap_or_default().split(',').filter_map(|s| s.trim().parse().ok()).take(32).collect();
    // Key the main thread's state now, before the snapshot: a clone resumes holding it.
    let _ = glibc_getrandom();
    let (path, why) = self_test();
    let mut out = std::io::stdout().lock();
    let clean = |s: &str| s.replace(['\t', '\n'], " ");
    let _ = writeln!(out, "ready\tglibc={}\tvdso_symbol={}\tpath={path}\twhy={}", clean(&glibc_version()), if vdso_has_getrandom() { "yes" } else { "no" }, clean(&why));
    let _ = out.flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() || line.trim() != "go" {
        return;
    }
    let t0 = monotonic_ns();
    let sample = |out: &mut std::io::StdoutLock| {
        let t = monotonic_ns();
        let s = match glibc_getrandom() {
            Ok(b) => format!("sample\t{t}\t{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
            Err(e) => format!("error\t{t}\t{}", clean(&e.to_string())),
        };
        let _ = writeln!(out, "{s}");
        let _ = out.flush();
    };
    sample(&mut out);
    for off in offsets {
        let due = t0 + off * 1_000_000;
        let now = monotonic_ns();
        if due > now {
            std::thread::sleep(Duration::from_nanos(due - now));
        }
        sample(&mut out);
    }
    let _ = writeln!(out, "done");
}
