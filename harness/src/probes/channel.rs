//! A bounded, line-delimited JSON channel to the guest probe. The guest controls what arrives
//! here, so every line is capped at [`MAX_LINE`] bytes and every parse failure is a typed error.

use clonesafe_protocol::{Reply, Request, MAX_LINE};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("Probe channel closed")]
    Closed,
    #[error("Probe channel I/O failed")]
    Io(#[from] std::io::Error),
    #[error("Probe sent a line longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("Probe sent invalid JSON: {line:?}")]
    BadJson {
        line: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("No reply from the probe within {0:?} while waiting for {1}")]
    Timeout(Duration, &'static str),
    #[error("Probe answered {got} while {want} was expected")]
    Unexpected { want: &'static str, got: String },
    #[error("Probe reported an error: {0}")]
    Guest(String),
}

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

    /// Read one reply line, never buffering more than MAX_LINE bytes of it.
    pub async fn recv(&mut self) -> Result<Reply, ProbeError> {
        let mut line = Vec::new();
        loop {
            let buf = self.reader.fill_buf().await?;
            if buf.is_empty() {
                return Err(ProbeError::Closed);
            }
            let (chunk, done, found_newline) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (&buf[..i], i + 1, true),
                None => (buf, buf.len(), false),
            };
            if line.len() + chunk.len() > MAX_LINE {
                // Drop the rest of this line so the channel stays usable, then report it.
                self.reader.consume(done);
                if !found_newline {
                    self.skip_to_newline().await?;
                }
                return Err(ProbeError::LineTooLong);
            }
            line.extend_from_slice(chunk);
            self.reader.consume(done);
            if found_newline {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim();
                if text.is_empty() {
                    line.clear();
                    continue;
                }
                return serde_json::from_str(text)
                    .map_err(|source| ProbeError::BadJson { line: truncate(text, 200), source });
            }
        }
    }

    async fn skip_to_newline(&mut self) -> Result<(), ProbeError> {
        loop {
            let buf = self.reader.fill_buf().await?;
            if buf.is_empty() {
                return Err(ProbeError::Closed);
            }
            if let Some(i) = buf.iter().position(|&b| b == b'\n') {
                self.reader.consume(i + 1);
                return Ok(());
            }
            let n = buf.len();
            self.reader.consume(n);
        }
    }

    pub async fn send(&mut self, req: &Request) -> Result<(), ProbeError> {
        let mut s = serde_json::to_string(req).expect("requests serialize");
        s.push('\n');
        self.writer.write_all(s.as_bytes()).await?;
        self.writer.flush().await?;
        Ok(())
    }

    /// Wait for the probe's `ready` line.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<u64, ProbeError> {
        match self.recv_within(timeout, "ready").await? {
            Reply::Ready { uptime_ms, .. } => Ok(uptime_ms),
            other => Err(unexpected("ready", &other)),
        }
    }

    /// Send a request and wait for its reply.
    pub async fn call(&mut self, req: &Request, timeout: Duration) -> Result<Reply, ProbeError> {
        self.send(req).await?;
        let want = match req {
            Request::Hold => "held",
            Request::Go => "resumed",
            Request::Samples => "samples",
            Request::Report => "report",
            Request::WriteFile { .. } => "written",
            Request::ReadFile { .. } => "file",
            Request::Fixup { .. } => "fixed_up",
            Request::WaitNic { .. } => "nic_seen",
            Request::Canary { .. } => "canary_planted",
            Request::Scrub => "scrubbed",
        };
        match self.recv_within(timeout, want).await? {
            Reply::Error { message } => Err(ProbeError::Guest(message)),
            r => Ok(r),
        }
    }

    async fn recv_within(&mut self, timeout: Duration, want: &'static str) -> Result<Reply, ProbeError> {
        tokio::time::timeout(timeout, self.recv()).await.map_err(|_| ProbeError::Timeout(timeout, want))?
    }
}

pub fn unexpected(want: &'static str, got: &Reply) -> ProbeError {
    let got = serde_json::to_string(got).unwrap_or_default();
    ProbeError::Unexpected { want, got: truncate(&got, 200) }
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        s.to_string()
    } else {
        let mut end = n;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
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
        guest.write_all(b"\x00\xffnot json\n{\"event\":\"held\"}\n").await.unwrap();
        assert!(matches!(ch.recv().await, Err(ProbeError::BadJson { .. })));
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
        assert!(matches!(ch.recv().await, Err(ProbeError::LineTooLong)));
        assert_eq!(ch.recv().await.unwrap(), Reply::Held);
        drop(w.await);
    }

    #[tokio::test]
    async fn eof_and_timeouts_are_reported() {
        let (mut ch, guest) = pair().await;
        let t = ch.wait_ready(Duration::from_millis(50)).await;
        assert!(matches!(t, Err(ProbeError::Timeout(_, "ready"))), "{t:?}");
        drop(guest);
        assert!(matches!(ch.recv().await, Err(ProbeError::Closed)));
    }

    #[tokio::test]
    async fn guest_errors_surface() {
        let (mut ch, mut guest) = pair().await;
        guest.write_all(b"{\"event\":\"error\",\"message\":\"nope\"}\n").await.unwrap();
        let r = ch.call(&Request::Report, Duration::from_secs(1)).await;
        assert!(matches!(r, Err(ProbeError::Guest(ref m)) if m == "nope"), "{r:?}");
    }
}
