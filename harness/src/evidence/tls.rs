//! The cross-VM TLS session-ticket test: a ticket from VM A offered to VM B. It needs every
//! compared VM at once, so it runs once they have all been observed (a VM whose TLS server did
//! not answer the sampling is not tried again).

use super::types::Evidence;
use crate::clones::recipe::{Ctx, Fleet, Made};
use crate::probes::host::Tickets;

pub(super) async fn gather(cx: &Ctx<'_>, fleet: &Fleet, made: &Made, ev: &mut Evidence) {
    let ports: Vec<(String, u16)> = made.compared.iter().filter_map(|c| fleet.0[c.index].forwards().get("tls").map(|p| (fleet.0[c.index].name().to_string(), *p))).collect();
    let skipped = if ports.len() < made.compared.len() || ports.len() < 2 {
        Some("the guest offers no TLS service".to_string())
    } else {
        ev.observations.iter().find_map(|o| match &o.tls_random {
            Some(Err(e)) => Some(format!("{}'s TLS server did not answer: {e}", o.vm)),
            None => Some(format!("{}: no TLS server to test", o.vm)),
            _ => None,
        })
    };
    ev.tickets = Some(match skipped {
        Some(why) => Tickets { tries: vec![], skipped: Some(why) },
        None => crate::probes::host::ticket_test(&ports, &cx.build.dir, std::time::Duration::from_secs(20)).await,
    });
}
