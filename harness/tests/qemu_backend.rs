//! The QEMU backend against real QEMU and the real tiny guest.

mod common;

use clonesafe::backend::error::BackendError;
use clonesafe::backend::lifecycle::{Phase, Timeouts};
use clonesafe::backend::qemu::QemuBackend;
use clonesafe::backend::snapshot::ArtifactKind;
use clonesafe::backend::{Backend, Vm};
use clonesafe::guest::Boot;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

async fn read(vm: &mut Box<dyn Vm>, path: &str) -> Option<String> {
    vm.agent().unwrap().read_file(path, T).await.unwrap()
}

async fn write(vm: &mut Box<dyn Vm>, path: &str, data: &str) {
    vm.agent().unwrap().write_file(path, data, T).await.unwrap()
}

/// A live snapshot restores into clones that share memory-borne identity, while every VM has a
/// writable disk of its own: a write in one clone is seen neither by a sibling nor the source.
#[tokio::test]
async fn clones_have_private_disks_and_snapshots_are_private_files() {
    let Some(guest) = guest() else { return };
    let work = tempfile::tempdir().unwrap();
    let b = QemuBackend;
    let t = Timeouts::default();
    tokio::time::timeout(VM_TEST_BOUND, async {
        let m = machine(&guest, false);
        let mut source = b.boot(&m, args(work.path(), "source", false), &t).await.unwrap();
        // Written before the snapshot: every clone must see it.
        write(&mut source, "/data/before", "src").await;
        source.agent().unwrap().hold(T).await.unwrap();
        let snap = source.snapshottable().unwrap().snapshot(work.path()).await.unwrap();
        let mem = snap.artifact(ArtifactKind::MemoryStream).unwrap().to_path_buf();
        let mode = std::fs::metadata(&mem).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "snapshot memory must be private");
        assert!(std::fs::metadata(&mem).unwrap().len() > 1_000_000, "a real migration stream");

        let r = b.restorer().unwrap();
        let mut c0 = r.restore(&snap, args(work.path(), "clone0", false), &t).await.unwrap();
        let mut c1 = r.restore(&snap, args(work.path(), "clone1", false), &t).await.unwrap();
        for vm in [&mut c0, &mut c1] {
            vm.agent().unwrap().go(None, T).await.unwrap();
            assert_eq!(read(vm, "/data/before").await.as_deref(), Some("src"));
        }
        source.agent().unwrap().go(None, T).await.unwrap();

        write(&mut c0, "/data/after", "c0").await;
        assert_eq!(read(&mut c0, "/data/after").await.as_deref(), Some("c0"));
        assert_eq!(read(&mut c1, "/data/after").await, None, "sibling saw clone0's write");
        assert_eq!(read(&mut source, "/data/after").await, None, "source saw clone0's write");

        // Host-side identity was fresh; the guest's view of the MAC is still the source's.
        assert_ne!(c0.identity().mac, source.identity().mac);
        let sources = guest.sources.clone();
        let id = c0.agent().unwrap().report(&sources, T).await.unwrap();
        assert_eq!(id.nics[0].mac, source.identity().mac.to_string());
        // The clone was built as its snapshot's machine.
        assert_eq!(c0.machine().memory_mib, snap.machine.memory_mib);

        for vm in [source, c0, c1] {
            vm.destroy().await.unwrap();
        }
    })
    .await
    .expect("test bound");
    assert!(settle_roles(&["source", "clone0", "clone1"]).await.is_empty());
}

/// A guest whose kernel panics while it boots: the boot fails as soon as the console says so
/// (not at the boot timeout), the error names the phase and the panic and carries the console's
/// tail, and the QEMU process is gone afterwards.
#[tokio::test]
async fn a_guest_whose_kernel_panics_fails_at_once_naming_the_phase_and_leaks_nothing() {
    let Some(mut guest) = guest() else { return };
    // No init: the kernel panics and, with panic=0, hangs there; the probe never comes up.
    if let Boot::DirectKernel { cmdline, .. } = &mut guest.boot {
        *cmdline = "console=ttyS0 panic=0 rdinit=/nonexistent".into();
    }
    let work = tempfile::tempdir().unwrap();
    let t = Timeouts { boot: Duration::from_secs(200), ..Timeouts::default() };
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(VM_TEST_BOUND, QemuBackend.boot(&machine(&guest, false), args(work.path(), "stuck", false), &t)).await.expect("test bound").err().expect("must fail");
    assert!(started.elapsed() < Duration::from_secs(60), "failed after {:?}, not at the panic", started.elapsed());
    match &err {
        BackendError::Agent { phase, console_tail, source: clonesafe::agent::AgentError::KernelPanic(line), .. } => {
            assert_eq!(*phase, Phase::Boot);
            assert!(line.contains("Kernel panic - not syncing"), "{line}");
            assert!(console_tail.contains("Kernel panic"), "console tail: {console_tail}");
        }
        other => panic!("expected a kernel panic at boot, got {other}"),
    }
    let msg = clonesafe::error_chain(&err);
    assert!(msg.contains("kernel panicked") && msg.contains("serial console"), "{msg}");
    assert!(settle_roles(&["stuck"]).await.is_empty(), "QEMU left running after a failed boot");
}

/// A kernel that does not exist: QEMU exits at once, and the error says so with QEMU's stderr.
#[tokio::test]
async fn a_missing_kernel_is_a_clear_error() {
    let Some(mut guest) = guest() else { return };
    if let Boot::DirectKernel { kernel, .. } = &mut guest.boot {
        *kernel = "/nonexistent/vmlinuz".into();
    }
    let work = tempfile::tempdir().unwrap();
    let err = tokio::time::timeout(VM_TEST_BOUND, QemuBackend.boot(&machine(&guest, false), args(work.path(), "nokernel", false), &Timeouts::default()))
        .await
        .expect("test bound")
        .err()
        .expect("must fail");
    let msg = err.to_string();
    assert!(matches!(err, BackendError::Exited { .. }), "{msg}");
    assert!(msg.contains("/nonexistent/vmlinuz"), "{msg}");
    assert!(settle_roles(&["nokernel"]).await.is_empty());
}

/// Issue 11, item 7: a full work directory was reported as "Broken pipe" (QEMU's `cat` died of
/// ENOSPC). The error now names the full filesystem, and keeps QEMU's words as its cause.
#[tokio::test]
async fn a_snapshot_into_a_full_filesystem_names_the_full_disk() {
    let Some(guest) = guest() else { return };
    let work = tempfile::tempdir().unwrap();
    let small = work.path().join("small");
    std::fs::create_dir(&small).unwrap();
    // 8 MiB of tmpfs cannot hold a 256 MiB guest's memory stream (root only: CI runs as root).
    let mounted = std::process::Command::new("mount").args(["-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", small.to_str().unwrap()]).status().is_ok_and(|s| s.success());
    if !mounted {
        assert!(std::env::var("CLONESAFE_REQUIRE_VMS").map_or(true, |v| v != "1"), "cannot mount a tmpfs");
        return;
    }
    let b = QemuBackend;
    let t = Timeouts::default();
    let r = tokio::time::timeout(VM_TEST_BOUND, async {
        let mut source = b.boot(&machine(&guest, false), args(work.path(), "fullsrc", false), &t).await.unwrap();
        source.agent().unwrap().hold(T).await.unwrap();
        let e = source.snapshottable().unwrap().snapshot(&small).await.err().expect("no room for the stream");
        source.destroy().await.unwrap();
        clonesafe::error_chain(&e)
    })
    .await;
    let _ = std::process::Command::new("umount").arg(&small).status();
    let e = r.expect("test bound");
    assert!(e.contains("is full") && e.contains(small.to_str().unwrap()), "{e}");
    assert!(settle_roles(&["fullsrc"]).await.is_empty());
}

/// Issue 19, item 12: a guest that floods its console fills no disk. The tiny guest writes 2 MiB
/// to its console (clonesafe.flood=2); with the cap lowered to 256 KiB for the test, console.log
/// keeps 256 KiB and says it cut the rest, the VM's notes say so, and the guest still answers.
#[tokio::test]
async fn a_flooding_console_is_capped() {
    let Some(guest) = guest() else { return };
    let work = tempfile::tempdir().unwrap();
    let cap = 256u64 << 10;
    // SAFETY: set before any console pump of this test starts; read by each new pump.
    unsafe { std::env::set_var("CLONESAFE_CONSOLE_CAP", cap.to_string()) };
    let b = QemuBackend;
    let t = Timeouts::default();
    tokio::time::timeout(VM_TEST_BOUND, async {
        let mut m = machine(&guest, false);
        m.kernel_args.push("clonesafe.flood=2".into());
        let a = args(work.path(), "flood", false);
        let log = a.console_log();
        let mut vm = b.boot(&m, a, &t).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while !vm.notes().iter().any(|n| n.contains("the rest was read and discarded")) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let kept = std::fs::metadata(&log).unwrap().len();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(kept <= cap + 200, "console.log holds {kept} bytes");
        assert!(text.contains("the rest was read and discarded"), "{}", &text[text.len().saturating_sub(300)..]);
        assert!(vm.notes().iter().any(|n| n.contains("passed 262144 bytes")), "{:?}", vm.notes());
        // The guest was never blocked on its console: it still answers.
        write(&mut vm, "/data/after-flood", "ok").await;
        assert_eq!(read(&mut vm, "/data/after-flood").await.as_deref(), Some("ok"));
        vm.destroy().await.unwrap();
    })
    .await
    .expect("bounded");
    unsafe { std::env::remove_var("CLONESAFE_CONSOLE_CAP") };
}
