//! Calling libvirt: its blocking calls run on tokio's blocking pool, bounded, and counted while
//! in flight; its errors become [`BackendError`]s that keep libvirt's code and message.

use super::error::LibvirtError;
use crate::backend::error::BackendError;
use crate::backend::lifecycle::Phase;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// libvirt calls running on the blocking pool right now. A call outlives the future that started
/// it: on Ctrl-C the run's future is dropped, but a `virDomainRestoreFlags` in flight still
/// creates its domain afterwards, after every guard has run (hardening issue 11, item 1: a
/// paused `-cloneN` domain was left 3 times out of 3). `sweep_own_domains` waits for these.
static IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many blocking libvirt calls are running.
pub fn in_flight() -> usize {
    IN_FLIGHT.load(Ordering::SeqCst)
}

struct InFlight;
impl InFlight {
    fn start() -> Self {
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        InFlight
    }
}
impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Run a blocking libvirt call on tokio's blocking pool, bounded by `t`.
pub async fn blocking<T: Send + 'static>(vm: &str, phase: Phase, t: Duration, f: impl FnOnce() -> Result<T, BackendError> + Send + 'static) -> Result<T, BackendError> {
    let guard = InFlight::start();
    let f = move || {
        let _guard = guard;
        f()
    };
    match tokio::time::timeout(t, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(r)) => r,
        Ok(Err(source)) => Err(BackendError::Panicked { vm: vm.into(), phase, source }),
        Err(_) => Err(BackendError::Timeout { vm: vm.into(), phase, after: t, console_tail: String::new() }),
    }
}

/// A [`LibvirtError`] (already converted) of `step`.
pub fn lv_src(vm: &str, phase: Phase, step: &'static str) -> impl FnOnce(LibvirtError) -> BackendError {
    let vm = vm.to_string();
    move |source| BackendError::vmm(vm, format!("{phase} failed: libvirt could not {step}"), source)
}

/// A libvirt failure of `step`, keeping libvirt's code and message.
pub fn lv(vm: &str, phase: Phase, step: &'static str) -> impl FnOnce(virt::error::Error) -> BackendError {
    let to = lv_src(vm, phase, step);
    move |e| to(LibvirtError::from(e))
}
