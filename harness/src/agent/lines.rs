//! A bounded line reader for channels the guest writes to. A line longer than the bound is
//! dropped up to its newline (the channel stays usable) and reported; nothing the guest sends
//! makes the host buffer more than the bound.

use super::AgentError;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// The next non-empty line (without its newline), at most `max` bytes.
pub async fn read_line<R: AsyncBufRead + Unpin + ?Sized>(reader: &mut R, max: usize) -> Result<Vec<u8>, AgentError> {
    let mut line = Vec::new();
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Err(AgentError::Closed);
        }
        let (chunk, done, found_newline) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], i + 1, true),
            None => (buf, buf.len(), false),
        };
        if line.len() + chunk.len() > max {
            reader.consume(done);
            if !found_newline {
                skip_to_newline(reader).await?;
            }
            return Err(AgentError::LineTooLong(max));
        }
        line.extend_from_slice(chunk);
        reader.consume(done);
        if found_newline {
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                line.clear();
                continue;
            }
            return Ok(line);
        }
    }
}

async fn skip_to_newline<R: AsyncBufRead + Unpin + ?Sized>(reader: &mut R) -> Result<(), AgentError> {
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Err(AgentError::Closed);
        }
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            reader.consume(i + 1);
            return Ok(());
        }
        let n = buf.len();
        reader.consume(n);
    }
}
