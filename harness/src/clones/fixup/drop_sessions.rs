//! `drop-sessions`: on resume, each clone destroys its TCP connections to the segment's peer, as
//! an orchestrator would with `ss -K dst ADDR` (iproute2; the kernel's SOCK_DESTROY, which needs
//! CONFIG_INET_DIAG_DESTROY: net/ipv4/inet_diag.c → tcp_abort, which resets the connection and
//! fails the socket with ECONNABORTED). On Debian guests it is the guest's own `ss`, through
//! qemu-guest-agent; on the tiny guest the probe sends the same netlink requests. It measures
//! the host's round trip (`drop_sessions_ms`). A program whose connection was destroyed must
//! reconnect; that reconnection is not part of this fix-up.

use crate::backend::capability::Capability;
use crate::backend::snapshot::Machine;
use crate::backend::Vm;
use crate::clones::recipe::{Ctx, Fixup, RecipeError};
use crate::probes::Early;
use async_trait::async_trait;
use clonesafe_metadata::{FixupId, MeasurementId};

pub struct DropSessions;

#[async_trait]
impl Fixup for DropSessions {
    fn id(&self) -> FixupId {
        FixupId::DropSessions
    }
    fn requires(&self) -> &'static [Capability] {
        &[]
    }
    fn describe(&self) -> Option<&'static str> {
        Some("on resume each clone destroyed its TCP connections to the segment's peer (ss -K)")
    }
    fn configure(&self, machine: &mut Machine) -> Result<(), String> {
        machine.needs_agent("drop-sessions destroys connections")
    }

    async fn on_resume(&self, cx: &Ctx<'_>, vm: &mut dyn Vm, _early: &Early) -> Result<Vec<(MeasurementId, Option<f64>)>, RecipeError> {
        let t = cx.build.timeouts.probe;
        let dst: std::net::Ipv4Addr = crate::network::segment::ROUTER_V4.parse().expect("a constant address");
        let started = std::time::Instant::now();
        let dropped = crate::probes::call(vm, "destroy the clone's TCP connections", |a| a.drop_sessions(dst, t)).await?;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        cx.emit(crate::events::EventKind::Note { text: format!("{}: destroyed {} TCP connection(s) to {dst}", vm.name(), dropped.len()) });
        Ok(vec![(MeasurementId::DropSessionsMs, Some(ms))])
    }
}
