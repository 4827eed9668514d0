//! qemu-guest-agent through libvirt: `virDomainQemuAgentCommand` (libvirt owns the agent's
//! socket and does its own guest-sync). Blocking, so it runs on tokio's blocking pool; the reply
//! is bounded like the QEMU backend's socket.

use crate::agent::qga::{reply_value, QgaWire, MAX_REPLY};
use crate::agent::AgentError;
use async_trait::async_trait;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use virt::connect::Connect;

pub struct LibvirtWire {
    pub conn: Arc<Connect>,
    pub domain: String,
}

#[async_trait]
impl QgaWire for LibvirtWire {
    async fn execute(&mut self, cmd: &str, args: Value, t: Duration) -> Result<Value, AgentError> {
        let mut msg = json!({ "execute": cmd });
        if args.as_object().is_some_and(|o| !o.is_empty()) {
            msg["arguments"] = args;
        }
        let (conn, name, text) = (self.conn.clone(), self.domain.clone(), msg.to_string());
        let secs = t.as_secs().clamp(1, i32::MAX as u64) as i32;
        let call = tokio::task::spawn_blocking(move || {
            let d = conn.lookup_domain_by_name(&name).map_err(|e| AgentError::Guest(format!("libvirt: {}", e.message())))?;
            d.qemu_agent_command(&text, secs, 0).map_err(|e| AgentError::Guest(format!("libvirt: {}", e.message())))
        });
        let reply = match tokio::time::timeout(t + Duration::from_secs(2), call).await {
            Ok(Ok(r)) => r?,
            Ok(Err(e)) => return Err(AgentError::Io(std::io::Error::other(e))),
            Err(_) => return Err(AgentError::Timeout(t, "a qemu-guest-agent reply (through libvirt)")),
        };
        if reply.len() > MAX_REPLY {
            return Err(AgentError::LineTooLong(MAX_REPLY));
        }
        let v: Value = serde_json::from_str(&reply).map_err(|source| AgentError::BadJson { line: crate::text::truncate(&reply, 200), source })?;
        reply_value(cmd, v)
    }
}
