//! Shared helpers for tests that boot real guests under real QEMU.
#![allow(dead_code)]

use clonesafe::backend::{Accel, Timeouts, VmSpec};
use clonesafe::guest::GuestImage;
use clonesafe::identity::{HostIdentity, NAME_PREFIX};
use std::path::Path;
use std::time::Duration;

/// The built tiny guest, or None (test skipped) when this machine cannot run VMs.
/// With CLONESAFE_REQUIRE_VMS=1 (CI), a missing guest or QEMU fails the test instead.
pub fn guest() -> Option<GuestImage> {
    let require = std::env::var("CLONESAFE_REQUIRE_VMS").is_ok_and(|v| v == "1");
    let qemu = clonesafe::doctor::qemu_version();
    let g = GuestImage::locate(&clonesafe::guest::default_guests_dir(), "tiny");
    match (qemu, g) {
        (Some(_), Ok(g)) => Some(g),
        (q, g) => {
            let why = format!("qemu: {:?}, guest: {:?}", q, g.err().map(|e| e.to_string()));
            if require {
                panic!("VM tests required but this machine cannot run them: {why}");
            }
            eprintln!("skipping VM test: {why}");
            None
        }
    }
}

pub fn spec(guest: &GuestImage, dir: &Path, role: &str, vmgenid: bool) -> VmSpec {
    VmSpec {
        identity: HostIdentity::fresh(format!("{NAME_PREFIX}{}-test-{role}", std::process::id()), vmgenid),
        guest: guest.clone(),
        memory_mib: 256,
        accel: Accel::Tcg,
        dir: dir.join(role),
        timeouts: Timeouts::default(),
    }
}

/// clonesafe VMs started by process `owner` that are still running.
pub fn vms_of(owner: u32) -> Vec<String> {
    clonesafe::cleanup::find_vms().into_iter().filter(|v| v.owner == owner as i32).map(|v| v.name).collect()
}

/// Wait (bounded) until no VM of `owner` is left, and return what is left after that.
pub async fn settle(owner: u32) -> Vec<String> {
    for _ in 0..50 {
        if vms_of(owner).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    vms_of(owner)
}

/// Like [`settle`], for the VMs this test named with `roles` only (tests in one process run in
/// parallel unless --test-threads=1, and share the owner pid).
pub async fn settle_roles(roles: &[&str]) -> Vec<String> {
    let mine = |n: &String| roles.iter().any(|r| n.ends_with(&format!("-test-{r}")));
    for _ in 0..50 {
        if !vms_of(std::process::id()).iter().any(mine) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    vms_of(std::process::id()).into_iter().filter(|n| mine(n)).collect()
}

/// [`settle`] from a synchronous test.
pub fn settle_blocking(owner: u32) -> Vec<String> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(settle(owner))
}

/// Every VM-level test runs under its own bound.
pub const VM_TEST_BOUND: Duration = Duration::from_secs(300);
