//! Starting one clone of a snapshot, the same way for a scenario's run (clones/method/live.rs)
//! and for `clonesafe bench`: a fresh process, or one taken from a warm pool, timed in its parts.

use super::error::BackendError;
use super::lifecycle::Timeouts;
use super::snapshot::{CloneArgs, Snapshot};
use super::{Backend, Pending, Vm};
use std::time::Instant;

/// How a clone starts: a new process, or one of the warm pool (already started, waiting).
pub enum Start {
    Fresh(CloneArgs),
    Pooled(Box<dyn Pending>),
}

impl Start {
    pub fn name(&self) -> String {
        match self {
            Start::Fresh(args) => args.identity.name.clone(),
            Start::Pooled(p) => p.name().to_string(),
        }
    }
}

/// A started clone and how long each part took.
pub struct Started {
    pub vm: Box<dyn Vm>,
    /// When the start began (the restore call).
    pub t0: Instant,
    /// When the VMM resumed the guest: the caller sends `go` now.
    pub resumed_at: Instant,
    /// Making the process and its disk (0 for a pooled clone: done before the take), ms.
    pub start_ms: f64,
    /// Loading the state and resuming, ms.
    pub load_ms: f64,
}

/// Start a clone of `snap`. A fresh one is the backend's prepare then resume where it has a warm
/// pool (QEMU: `-incoming defer`, then migrate-incoming and cont), timed in those two parts;
/// otherwise its restorer, timed whole.
pub async fn start(backend: &dyn Backend, snap: &Snapshot, s: Start, t: &Timeouts) -> Result<Started, BackendError> {
    let t0 = Instant::now();
    let ms = |a: Instant| a.elapsed().as_secs_f64() * 1000.0;
    let pending = match s {
        Start::Pooled(p) => p,
        Start::Fresh(args) => match backend.warm_pool() {
            Some(w) => w.prepare(snap, args, t).await?,
            None => {
                let restorer = backend.restorer().ok_or(BackendError::Unsupported { backend: backend.kind(), capability: super::capability::Capability::LiveSnapshot })?;
                let vm = restorer.restore(snap, args, t).await?;
                return Ok(Started { vm, t0, resumed_at: Instant::now(), start_ms: ms(t0), load_ms: 0.0 });
            }
        },
    };
    let start_ms = ms(t0);
    let t1 = Instant::now();
    let vm = pending.resume(snap).await?;
    Ok(Started { vm, t0, resumed_at: Instant::now(), start_ms, load_ms: ms(t1) })
}
