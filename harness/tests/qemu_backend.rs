//! The QEMU backend against real QEMU and the real tiny guest.

mod common;

use clonesafe::backend::qemu::QemuBackend;
use clonesafe::backend::{Backend, BackendError, Phase};
use clonesafe_protocol::{Reply, Request};
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

async fn call(vm: &mut Box<dyn clonesafe::backend::Vm>, req: Request) -> Reply {
    vm.probe().call(&req, Duration::from_secs(30)).await.unwrap_or_else(|e| panic!("{}: {e}", vm.name()))
}

async fn read(vm: &mut Box<dyn clonesafe::backend::Vm>, path: &str) -> Option<String> {
    match call(vm, Request::ReadFile { path: path.into() }).await {
        Reply::File { data, .. } => data,
        other => panic!("unexpected {other:?}"),
    }
}

/// A live snapshot restores into clones that share memory-borne identity, while every VM has a
/// writable disk of its own: a write in one clone is seen neither by a sibling nor the source.
#[tokio::test]
async fn clones_have_private_disks_and_snapshots_are_private_files() {
    let Some(guest) = guest() else { return };
    let work = tempfile::tempdir().unwrap();
    let b = QemuBackend;
    tokio::time::timeout(VM_TEST_BOUND, async {
        let mut source = b.boot(spec(&guest, work.path(), "source", false)).await.unwrap();
        // Written before the snapshot: every clone must see it.
        assert!(matches!(call(&mut source, Request::WriteFile { path: "/data/before".into(), data: "src".into() }).await, Reply::Written { .. }));
        assert_eq!(call(&mut source, Request::Hold).await, Reply::Held);
        let snap = source.snapshot(work.path()).await.unwrap();
        let mode = std::fs::metadata(&snap.memory).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "snapshot memory must be private");
        assert!(std::fs::metadata(&snap.memory).unwrap().len() > 1_000_000, "a real migration stream");

        let mut c0 = b.restore(&snap, spec(&guest, work.path(), "clone0", false)).await.unwrap();
        let mut c1 = b.restore(&snap, spec(&guest, work.path(), "clone1", false)).await.unwrap();
        for vm in [&mut c0, &mut c1] {
            assert!(matches!(call(vm, Request::Go).await, Reply::Resumed { .. }));
            assert_eq!(read(vm, "/data/before").await.as_deref(), Some("src"));
        }
        assert!(matches!(call(&mut source, Request::Go).await, Reply::Resumed { .. }));

        assert!(matches!(call(&mut c0, Request::WriteFile { path: "/data/after".into(), data: "c0".into() }).await, Reply::Written { .. }));
        assert_eq!(read(&mut c0, "/data/after").await.as_deref(), Some("c0"));
        assert_eq!(read(&mut c1, "/data/after").await, None, "sibling saw clone0's write");
        assert_eq!(read(&mut source, "/data/after").await, None, "source saw clone0's write");

        // Host-side identity was fresh; the guest's view of the MAC is still the source's.
        let mac = |r: Reply| match r {
            Reply::Report { identity } => identity.nics[0].mac.clone(),
            o => panic!("{o:?}"),
        };
        assert_ne!(c0.identity().mac, source.identity().mac);
        assert_eq!(mac(call(&mut c0, Request::Report).await), source.identity().mac.to_string());

        for vm in [source, c0, c1] {
            vm.destroy().await.unwrap();
        }
    })
    .await
    .expect("test bound");
    assert!(settle_roles(&["source", "clone0", "clone1"]).await.is_empty());
}

/// A guest that never brings its probe up: the error names the phase, carries the console's
/// tail, and the QEMU process is gone afterwards.
#[tokio::test]
async fn a_guest_that_never_boots_times_out_naming_the_phase_and_leaks_nothing() {
    let Some(mut guest) = guest() else { return };
    // No init: the kernel panics and, with panic=0, hangs there; the probe never comes up.
    guest.cmdline = "console=ttyS0 panic=0 rdinit=/nonexistent".into();
    let work = tempfile::tempdir().unwrap();
    let mut s = spec(&guest, work.path(), "stuck", false);
    s.timeouts.boot = Duration::from_secs(15);
    let err = tokio::time::timeout(VM_TEST_BOUND, QemuBackend.boot(s)).await.expect("test bound").err().expect("must fail");
    match &err {
        BackendError::Timeout { phase, console_tail, .. } => {
            assert_eq!(*phase, Phase::Boot);
            assert!(console_tail.contains("Kernel panic"), "console tail: {console_tail}");
        }
        other => panic!("expected a boot timeout, got {other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("boot (QEMU start to probe ready) timed out") && msg.contains("serial console"), "{msg}");
    assert!(settle_roles(&["stuck"]).await.is_empty(), "QEMU left running after a failed boot");
}

/// A kernel that does not exist: QEMU exits at once, and the error says so with QEMU's stderr.
#[tokio::test]
async fn a_missing_kernel_is_a_clear_error() {
    let Some(mut guest) = guest() else { return };
    guest.kernel = "/nonexistent/vmlinuz".into();
    let work = tempfile::tempdir().unwrap();
    let err = tokio::time::timeout(VM_TEST_BOUND, QemuBackend.boot(spec(&guest, work.path(), "nokernel", false)))
        .await
        .expect("test bound")
        .err()
        .expect("must fail");
    let msg = err.to_string();
    assert!(matches!(err, BackendError::Exited { .. }), "{msg}");
    assert!(msg.contains("/nonexistent/vmlinuz"), "{msg}");
    assert!(settle_roles(&["nokernel"]).await.is_empty());
}
