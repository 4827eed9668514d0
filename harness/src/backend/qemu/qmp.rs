//! A minimal QMP client (QEMU Machine Protocol, docs/interop/qmp-spec.rst in QEMU): one JSON
//! object per line; commands carry an `id` that their `return`/`error` echoes; asynchronous
//! `event`s can arrive between them and are queued for [`Qmp::wait_event`].
//!
//! QEMU connects to *our* listening socket (`-chardev socket,path=...` without `server=on`), so
//! there is no race between QEMU creating a socket and the harness polling for it.

use serde_json::{json, Value};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP I/O failed")]
    Io(#[from] std::io::Error),
    #[error("QMP connection closed")]
    Closed,
    #[error("QMP sent invalid JSON")]
    Json(#[from] serde_json::Error),
    #[error("QMP command {command} failed: {class}: {desc}")]
    Command { command: String, class: String, desc: String },
    #[error("QMP timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
}

pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next_id: u64,
    events: VecDeque<Value>,
}

/// Longest QMP line we accept. QEMU's own replies are far smaller.
const MAX_QMP_LINE: usize = 4 << 20;

impl Qmp {
    /// Read the greeting and negotiate capabilities.
    pub async fn handshake(stream: UnixStream) -> Result<Self, QmpError> {
        let (r, w) = stream.into_split();
        let mut qmp = Qmp { reader: BufReader::new(r), writer: w, next_id: 0, events: VecDeque::new() };
        let greeting = qmp.read_value().await?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Command {
                command: "greeting".into(),
                class: "Protocol".into(),
                desc: format!("unexpected greeting {greeting}"),
            });
        }
        qmp.execute("qmp_capabilities", json!({})).await?;
        Ok(qmp)
    }

    async fn read_value(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        let n = (&mut self.reader).take(MAX_QMP_LINE as u64).read_line(&mut line).await?;
        if n == 0 {
            return Err(QmpError::Closed);
        }
        Ok(serde_json::from_str(&line)?)
    }

    /// Run a command and return its `return` value.
    pub async fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "execute": command, "id": id });
        if arguments.as_object().is_some_and(|o| !o.is_empty()) {
            msg["arguments"] = arguments;
        }
        let mut s = msg.to_string();
        s.push('\n');
        self.writer.write_all(s.as_bytes()).await?;
        loop {
            let v = self.read_value().await?;
            if v.get("event").is_some() {
                self.events.push_back(v);
                continue;
            }
            if v.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            let err = v.get("error").cloned().unwrap_or_default();
            return Err(QmpError::Command {
                command: command.to_string(),
                class: err["class"].as_str().unwrap_or("?").to_string(),
                desc: err["desc"].as_str().unwrap_or("?").to_string(),
            });
        }
    }

    /// Wait for an event for which `pred` holds, consuming queued events first.
    pub async fn wait_event(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Result<Value, QmpError> {
        while let Some(ev) = self.events.pop_front() {
            if pred(&ev) {
                return Ok(ev);
            }
        }
        let fut = async {
            loop {
                let v = self.read_value().await?;
                if v.get("event").is_some() && pred(&v) {
                    return Ok(v);
                }
            }
        };
        tokio::time::timeout(timeout, fut).await.map_err(|_| QmpError::Timeout(timeout, what.to_string()))?
    }

    /// Wait for a `MIGRATION` event with a final status; `completed` is Ok, `failed` an error.
    /// Needs the `events` migration capability.
    pub async fn wait_migration(&mut self, timeout: Duration) -> Result<(), QmpError> {
        let ev = self
            .wait_event("migration to complete", timeout, |e| {
                e["event"] == "MIGRATION"
                    && matches!(e["data"]["status"].as_str(), Some("completed" | "failed" | "cancelled"))
            })
            .await?;
        match ev["data"]["status"].as_str() {
            Some("completed") => Ok(()),
            other => {
                let info = self.execute("query-migrate", json!({})).await.unwrap_or_default();
                Err(QmpError::Command {
                    command: "migrate".into(),
                    class: other.unwrap_or("?").to_string(),
                    desc: info["error-desc"].as_str().unwrap_or("migration did not complete").to_string(),
                })
            }
        }
    }
}
