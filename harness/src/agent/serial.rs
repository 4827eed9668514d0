//! The serial probe transport: line-delimited JSON ([`clonesafe_protocol`]) with the static probe
//! on the guest's second serial port. The guest controls what arrives here, so every line is
//! capped at [`MAX_LINE`] bytes and every parse failure is a typed error.

use super::{AgentError, FixupDone, GuestAgent, Resumed};
use async_trait::async_trait;
use clonesafe_protocol::{Gate, Identity, Reply, Request, Sources, MAX_LINE};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

pub struct ProbeChannel {
    reader: BufReader<Box<dyn AsyncRead + Send + Unpin>>,
    writer: Box<dyn AsyncWrite + Send + Unpin>,
}

impl ProbeChannel {
    pub fn new<S>(stream: S) -> Self
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (r, w) = tokio::io::split(stream);
        ProbeChannel { reader: BufReader::new(Box::new(r)), writer: Box::new(w) }
    }

    /// Read one reply line, never buffering more than MAX_LINE bytes of it. Invalid UTF-8 or
    /// JSON is an error (the JSON error carries a bounded copy of the line).
    pub async fn recv(&mut self) -> Result<Reply, AgentError> {
        let line = super::lines::read_line(&mut self.reader, MAX_LINE).await?;
        decode_line(&line)
    }

    pub async fn send(&mut self, req: &Request) -> Result<(), AgentError> {
        let mut s = serde_json::to_string(req).expect("requests serialize");
        s.push('\n');
        self.writer.write_all(s.as_bytes()).await?;
        self.writer.flush().await?;
        Ok(())
    }

    /// Send a request and wait for its reply.
    pub async fn call(&mut self, req: &Request, timeout: Duration) -> Result<Reply, AgentError> {
        self.send(req).await?;
        match self.recv_within(timeout, want(req)).await? {
            Reply::Error { message } => Err(AgentError::Guest(message)),
            r => Ok(r),
        }
    }

    async fn recv_within(&mut self, timeout: Duration, want: &'static str) -> Result<Reply, AgentError> {
        tokio::time::timeout(timeout, self.recv()).await.map_err(|_| AgentError::Timeout(timeout, want))?
    }
}

/// One reply line (without its newline) as the guest sent it. Invalid UTF-8 is refused, not
/// replaced: a U+FFFD-mangled value would count as evidence. Fuzzed by `probe_reply`.
pub fn decode_line(line: &[u8]) -> Result<Reply, AgentError> {
    let text = std::str::from_utf8(line).map_err(|e| AgentError::NotUtf8 { what: "a reply line", at: e.valid_up_to() })?;
    let text = text.trim();
    serde_json::from_str(text).map_err(|source| AgentError::BadJson { line: crate::text::truncate(text, 200), source })
}

/// The reply each request expects.
fn want(req: &Request) -> &'static str {
    match req {
        Request::Hold => "held",
        Request::Go { .. } => "resumed",
        Request::Samples => "samples",
        Request::Report { .. } => "report",
        Request::WriteFile { .. } => "written",
        Request::ReadFile { .. } => "file",
        Request::Fixup { .. } => "fixed_up",
        Request::WaitNic { .. } => "nic_seen",
        Request::Canary { .. } => "canary_planted",
        Request::Scrub => "scrubbed",
        Request::Reseed { .. } => "reseeded",
        Request::Time => "time",
        Request::SetTime { .. } => "time_set",
        Request::Dirty { .. } => "dirtied",
        Request::Addrs => "addrs",
        Request::Digest { .. } => "digested",
        Request::Exec { .. } => "executed",
        Request::SessionOpen { .. } => "session_opened",
        Request::SessionSpeak { .. } => "session_spoke",
        Request::DropSessions { .. } => "sessions_dropped",
    }
}

fn unexpected(want: &'static str, got: &Reply) -> AgentError {
    let got = serde_json::to_string(got).unwrap_or_default();
    AgentError::Unexpected { want, got: crate::text::truncate(&got, 200) }
}

#[async_trait]
impl GuestAgent for ProbeChannel {
    fn transport(&self) -> &'static str {
        "serial-probe"
    }

    async fn wait_ready(&mut self, t: Duration) -> Result<u64, AgentError> {
        match self.recv_within(t, "ready").await? {
            Reply::Ready { uptime_ms, .. } => Ok(uptime_ms),
            other => Err(unexpected("ready", &other)),
        }
    }

    async fn prepare(&mut self, _probe_bin: Option<&super::Injected>, _t: Duration) -> Result<Vec<String>, AgentError> {
        // The probe is the guest's own (init starts it), and it is ready once `ready` arrived.
        Ok(vec![])
    }

    async fn hold(&mut self, t: Duration) -> Result<(), AgentError> {
        match self.call(&Request::Hold, t).await? {
            Reply::Held => Ok(()),
            other => Err(unexpected("held", &other)),
        }
    }

    async fn go(&mut self, gate: Option<Gate>, t: Duration) -> Result<Resumed, AgentError> {
        let wait = gate.as_ref().map(|g| Duration::from_millis(g.wait_vmgenid_ms)).unwrap_or_default();
        match self.call(&Request::Go { gate }, t + wait).await? {
            Reply::Resumed { kernel_rng, userspace_rng, random_uuid, gate } => Ok(Resumed { kernel_rng, userspace_rng, random_uuid, gate }),
            other => Err(unexpected("resumed", &other)),
        }
    }

    async fn reseed(&mut self, entropy: &[u8], t: Duration) -> Result<u64, AgentError> {
        let entropy_hex = entropy.iter().map(|b| format!("{b:02x}")).collect();
        match self.call(&Request::Reseed { entropy_hex }, t).await? {
            Reply::Reseeded { t_ns } => Ok(t_ns),
            other => Err(unexpected("reseeded", &other)),
        }
    }

    async fn time(&mut self, t: Duration) -> Result<i64, AgentError> {
        match self.call(&Request::Time, t).await? {
            Reply::Time { realtime_ns, .. } => Ok(realtime_ns),
            other => Err(unexpected("time", &other)),
        }
    }

    async fn monotonic(&mut self, t: Duration) -> Result<u64, AgentError> {
        match self.call(&Request::Time, t).await? {
            Reply::Time { monotonic_ns, .. } => Ok(monotonic_ns),
            other => Err(unexpected("time", &other)),
        }
    }

    async fn set_time(&mut self, realtime_ns: i64, t: Duration) -> Result<(), AgentError> {
        match self.call(&Request::SetTime { realtime_ns }, t).await? {
            Reply::TimeSet => Ok(()),
            other => Err(unexpected("time_set", &other)),
        }
    }

    async fn os_info(&mut self, _t: Duration) -> Result<String, AgentError> {
        Err(AgentError::Unsupported { transport: "serial-probe", op: "name the guest's OS" })
    }

    async fn dirty(&mut self, mib: u32, t: Duration) -> Result<(u32, u64), AgentError> {
        match self.call(&Request::Dirty { mib }, t).await? {
            Reply::Dirtied { mib, ms } => Ok((mib, ms)),
            other => Err(unexpected("dirtied", &other)),
        }
    }

    async fn renew_lease(&mut self, _t: Duration) -> Result<String, AgentError> {
        // busybox udhcpc's client id is the MAC: only a new NIC gives a new identity.
        Err(AgentError::Unsupported { transport: "serial probe", op: "renew a DHCP lease (udhcpc's identity is its MAC)" })
    }

    async fn addrs(&mut self, t: Duration) -> Result<(String, Vec<String>), AgentError> {
        match self.call(&Request::Addrs, t).await? {
            Reply::Addrs { if_inet6, ipv4 } => Ok((if_inet6, ipv4)),
            other => Err(unexpected("addrs", &other)),
        }
    }

    async fn digest_file(&mut self, path: &str, text_bytes: u32, t: Duration) -> Result<Option<clonesafe_protocol::DigestOf>, AgentError> {
        match self.call(&Request::Digest { path: path.into(), text_bytes }, t).await? {
            Reply::Digested { found, .. } => Ok(found),
            other => Err(unexpected("digested", &other)),
        }
    }

    async fn run_command(&mut self, argv: &[String], limit: Duration, max_bytes: u32, t: Duration) -> Result<clonesafe_protocol::ExecOutput, AgentError> {
        let req = Request::Exec { argv: argv.to_vec(), timeout_ms: limit.as_millis() as u64, max_bytes };
        match self.call(&req, limit + t).await? {
            Reply::Executed { output } => Ok(output),
            other => Err(unexpected("executed", &other)),
        }
    }

    async fn samples(&mut self, t: Duration) -> Result<super::Later, AgentError> {
        // The probe may wait for a late NEW_VMGENID uevent (UEVENT_WAIT_MS after its first sample).
        match self.call(&Request::Samples, t + Duration::from_millis(clonesafe_protocol::UEVENT_WAIT_MS)).await? {
            Reply::Samples { kernel_rng, random_uuid, uevents, vmclock, vdso_rng } => Ok(super::Later { kernel_rng, random_uuid, uevents, vmclock, vdso_rng }),
            other => Err(unexpected("samples", &other)),
        }
    }

    async fn session_open(&mut self, peer: std::net::SocketAddrV4, within: Duration, t: Duration) -> Result<(String, String), AgentError> {
        let req = Request::SessionOpen { addr: peer.ip().to_string(), port: peer.port(), timeout_ms: within.as_millis() as u64 };
        match self.call(&req, t + within).await? {
            Reply::SessionOpened { local, remote } => Ok((local, remote)),
            other => Err(unexpected("session_opened", &other)),
        }
    }

    async fn session_speak(&mut self, peer: std::net::SocketAddrV4, id: String, within: Duration, t: Duration) -> Result<clonesafe_protocol::SessionSpeech, AgentError> {
        let req = Request::SessionSpeak { addr: peer.ip().to_string(), port: peer.port(), id, timeout_ms: within.as_millis() as u64 };
        match self.call(&req, t + within + Duration::from_millis(clonesafe_protocol::SESSION_READ_MS)).await? {
            Reply::SessionSpoke { speech } => Ok(speech),
            other => Err(unexpected("session_spoke", &other)),
        }
    }

    async fn drop_sessions(&mut self, dst: std::net::Ipv4Addr, t: Duration) -> Result<Vec<String>, AgentError> {
        match self.call(&Request::DropSessions { dst: dst.to_string() }, t).await? {
            Reply::SessionsDropped { dropped } => Ok(super::bound_dropped(dropped.iter().map(String::as_str))),
            other => Err(unexpected("sessions_dropped", &other)),
        }
    }

    async fn report(&mut self, sources: &Sources, t: Duration) -> Result<Identity, AgentError> {
        match self.call(&Request::Report { sources: sources.clone() }, t).await? {
            Reply::Report { identity } => Ok(identity),
            other => Err(unexpected("report", &other)),
        }
    }

    async fn fixup(&mut self, entropy: &[u8], t: Duration) -> Result<FixupDone, AgentError> {
        let entropy_hex = entropy.iter().map(|b| format!("{b:02x}")).collect();
        match self.call(&Request::Fixup { entropy_hex }, t).await? {
            Reply::FixedUp { t_start_ns, t_rng_ns, t_done_ns, steps } => Ok(FixupDone { t_start_ns, t_rng_ns, t_done_ns, steps }),
            other => Err(unexpected("fixed_up", &other)),
        }
    }

    async fn wait_nic(&mut self, mac: &str, within: Duration, t: Duration) -> Result<Option<u64>, AgentError> {
        let req = Request::WaitNic { mac: mac.to_string(), timeout_ms: within.as_millis() as u64 };
        match self.call(&req, t.max(within + Duration::from_secs(10))).await? {
            Reply::NicSeen { t_ns, .. } => Ok(t_ns),
            other => Err(unexpected("nic_seen", &other)),
        }
    }

    async fn plant_canary(&mut self, secret_xff_hex: String, t: Duration) -> Result<(), AgentError> {
        match self.call(&Request::Canary { secret_xff_hex }, t).await? {
            Reply::CanaryPlanted => Ok(()),
            other => Err(unexpected("canary_planted", &other)),
        }
    }

    async fn scrub(&mut self, t: Duration) -> Result<String, AgentError> {
        match self.call(&Request::Scrub, t).await? {
            Reply::Scrubbed { output } => Ok(output),
            other => Err(unexpected("scrubbed", &other)),
        }
    }

    async fn write_file(&mut self, path: &str, data: &str, t: Duration) -> Result<(), AgentError> {
        match self.call(&Request::WriteFile { path: path.into(), data: data.into() }, t).await? {
            Reply::Written { .. } => Ok(()),
            other => Err(unexpected("written", &other)),
        }
    }

    async fn read_file(&mut self, path: &str, t: Duration) -> Result<Option<String>, AgentError> {
        match self.call(&Request::ReadFile { path: path.into() }, t).await? {
            Reply::File { data, .. } => Ok(data),
            other => Err(unexpected("file", &other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn pair() -> (ProbeChannel, tokio::io::DuplexStream) {
        let (a, b) = tokio::io::duplex(1 << 20);
        (ProbeChannel::new(a), b)
    }

    #[tokio::test]
    async fn parses_a_reply_and_skips_blank_lines() {
        let (mut ch, mut guest) = pair().await;
        guest.write_all(b"\n{\"event\":\"held\"}\n").await.unwrap();
        assert_eq!(ch.recv().await.unwrap(), Reply::Held);
    }

    #[tokio::test]
    async fn garbage_is_an_error_not_a_panic_and_the_channel_recovers() {
        let (mut ch, mut guest) = pair().await;
        guest.write_all(b"\x00not json\n{\"event\":\"held\"}\n").await.unwrap();
        assert!(matches!(ch.recv().await, Err(AgentError::BadJson { .. })));
        assert_eq!(ch.recv().await.unwrap(), Reply::Held);
    }

    /// Issue 11, item 6: invalid UTF-8 inside a probe string was replaced with U+FFFD and
    /// counted as evidence. Now it is a protocol error, and the next line still parses.
    #[tokio::test]
    async fn invalid_utf8_is_a_protocol_error_not_a_value() {
        let (mut ch, mut guest) = pair().await;
        guest.write_all(b"{\"event\":\"file\",\"data\":\"ab\xff\"}\n{\"event\":\"held\"}\n").await.unwrap();
        assert!(matches!(ch.recv().await, Err(AgentError::NotUtf8 { at: 26, .. })), "invalid UTF-8 must be refused");
        assert_eq!(ch.recv().await.unwrap(), Reply::Held);
    }

    #[tokio::test]
    async fn overlong_lines_are_bounded_and_skipped() {
        let (mut ch, mut guest) = pair().await;
        let long = vec![b'x'; MAX_LINE * 3];
        let w = tokio::spawn(async move {
            guest.write_all(&long).await.unwrap();
            guest.write_all(b"\n{\"event\":\"held\"}\n").await.unwrap();
            guest
        });
        assert!(matches!(ch.recv().await, Err(AgentError::LineTooLong(_))));
        assert_eq!(ch.recv().await.unwrap(), Reply::Held);
        drop(w.await);
    }

    #[tokio::test]
    async fn eof_and_timeouts_are_reported() {
        let (mut ch, guest) = pair().await;
        let t = ch.wait_ready(Duration::from_millis(50)).await;
        assert!(matches!(t, Err(AgentError::Timeout(_, "ready"))), "{t:?}");
        drop(guest);
        assert!(matches!(ch.recv().await, Err(AgentError::Closed)));
    }

    #[tokio::test]
    async fn guest_errors_and_wrong_replies_surface() {
        let (mut ch, mut guest) = pair().await;
        guest.write_all(b"{\"event\":\"error\",\"message\":\"nope\"}\n{\"event\":\"held\"}\n").await.unwrap();
        let r = ch.report(&Sources::default(), Duration::from_secs(1)).await;
        assert!(matches!(r, Err(AgentError::Guest(ref m)) if m == "nope"), "{r:?}");
        let r = ch.samples(Duration::from_secs(1)).await;
        assert!(matches!(r, Err(AgentError::Unexpected { want: "samples", .. })), "{r:?}");
    }
}
