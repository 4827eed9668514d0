//! Black-box measurements from the host, through each VM's forwarded ports on 127.0.0.1: what
//! any client of the VM would see, whatever the guest claims. Nothing here trusts the guest: every
//! read is bounded in size and time.
//!
//! * `ssh-keyscan` through the VM's ssh forward (FACTS.md: it works through a QEMU user-network
//!   forward; ed25519 can be slow under TCG, hence a generous timeout).
//! * The TLS ServerHello random: a minimal TLS 1.2 ClientHello written here (no crypto is needed
//!   to read the server's first message), so samples can be taken right after resume.
//! * TLS session resumption across VMs with `openssl s_client -sess_out/-sess_in`: a ticket one
//!   VM issued, accepted by another, means they share the ticket key.

use clonesafe_protocol::Sample;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every host key fingerprint the VM serves on 127.0.0.1:`port`, sorted.
///
/// Each of [`KEY_TYPES`] is asked for on its own (`ssh-keyscan -t`), one connection at a time.
/// Until one type answers, the types are tried in turn (a replugged NIC may still be waiting for
/// its lease, and an image need not have every type) until `within` after the first try; then
/// each other type is asked for once.
///
/// Not one scan of ssh-keyscan's default types: that opens a connection per type at once (five
/// with OpenSSH 9.2's sk types, which sshd never serves), and QEMU's user network listens for a
/// forward with a backlog of one (libslirp src/socket.c, tcpx_listen: `listen(s, 1)`). Under TCG,
/// where QEMU's main loop accepts late, connections beyond the backlog wait for SYN
/// retransmissions, and one type regularly missed a scan's 15 s timeout. Measured in
/// `scenarios/debian.toml` on one host: a median 16.7 s a VM with one scan and the missed types
/// asked for again (10 to 36 s with scans repeated until one added nothing), 3.5 s one type at
/// a time (reports/debian, the `gathered` events).
pub async fn ssh_host_keys(port: u16, within: Duration) -> Result<Vec<String>, String> {
    let deadline = Instant::now() + within;
    let mut tried = 0usize;
    let (first, mut keys) = loop {
        let t = KEY_TYPES[tried % KEY_TYPES.len()];
        tried += 1;
        let err = match ssh_keyscan_type(port, Duration::from_secs(15), t).await {
            Ok(keys) => break (t, keys),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(err);
        }
        if tried % KEY_TYPES.len() == 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    for t in KEY_TYPES.into_iter().filter(|t| *t != first) {
        if let Ok(more) = ssh_keyscan_type(port, Duration::from_secs(20), t).await {
            keys.extend(more);
        }
    }
    let mut fps: Vec<String> = keys.into_iter().map(|k| k.fingerprint).collect();
    fps.sort();
    fps.dedup();
    Ok(fps)
}

/// The host key types sshd can serve, as `ssh-keyscan -t` names them (it serves no sk type).
pub const KEY_TYPES: [&str; 3] = ["rsa", "ecdsa", "ed25519"];

/// One host key `ssh-keyscan` printed: its type as `-t` names it, and its fingerprint.
#[derive(Debug, PartialEq)]
pub struct ScannedKey {
    pub family: &'static str,
    pub fingerprint: String,
}

/// The keys in `ssh-keyscan`'s output (`host keytype base64`, comments skipped): a line whose key
/// does not decode is dropped, and a key type outside [`KEY_TYPES`] is kept as "other".
pub fn parse_keyscan(text: &str) -> Vec<ScannedKey> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (_, key) = l.split_once(' ')?;
            let family = match key.split_whitespace().next()? {
                "ssh-rsa" => "rsa",
                t if t.starts_with("ecdsa-sha2-") => "ecdsa",
                "ssh-ed25519" => "ed25519",
                _ => "other",
            };
            Some(ScannedKey { family, fingerprint: crate::agent::qga::fingerprint(key)? })
        })
        .collect()
}

/// The keys one `ssh-keyscan` of one key type (`-t`) got.
async fn ssh_keyscan_type(port: u16, t: Duration, key_type: &str) -> Result<Vec<ScannedKey>, String> {
    let mut c = tokio::process::Command::new("ssh-keyscan");
    c.args(["-T", &t.as_secs().max(1).to_string(), "-p", &port.to_string(), "-t", key_type]);
    let out = c.arg("127.0.0.1").kill_on_drop(true).output();
    let out = tokio::time::timeout(t + Duration::from_secs(5), out)
        .await
        .map_err(|_| format!("ssh-keyscan did not finish within {t:?}"))?
        .map_err(|e| format!("cannot run ssh-keyscan (is openssh-client installed?): {e}"))?;
    let keys = parse_keyscan(&String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(1 << 20)]));
    if keys.is_empty() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("no host key answered on 127.0.0.1:{port} ({})", crate::text::truncate(err.trim(), 200)));
    }
    Ok(keys)
}

/// A TLS 1.2 ClientHello offering the common ECDHE suites (ECDSA and RSA), x25519 and P-256.
fn client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend(crate::identity::host_entropy(32));
    body.push(0); // session id
    let suites: &[u16] = &[0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0x009c, 0x009d, 0x002f, 0x0035];
    body.extend(((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend(s.to_be_bytes());
    }
    body.extend([1, 0]); // compression: null
    let mut ext = Vec::new();
    let mut add = |typ: u16, data: &[u8]| {
        ext.extend(typ.to_be_bytes());
        ext.extend((data.len() as u16).to_be_bytes());
        ext.extend_from_slice(data);
    };
    add(0x000a, &[0, 6, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x18]); // supported_groups
    add(0x000b, &[1, 0]); // ec_point_formats: uncompressed
    add(0x000d, &[0, 16, 4, 3, 5, 3, 6, 3, 8, 4, 8, 5, 8, 6, 4, 1, 5, 1]); // signature_algorithms
    body.extend((ext.len() as u16).to_be_bytes());
    body.extend(ext);
    let mut hs = vec![1];
    hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend(body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend((hs.len() as u16).to_be_bytes());
    rec.extend(hs);
    rec
}

/// The 32-byte random of a ServerHello at the start of `buf`, if `buf` holds one.
pub fn server_hello_random(buf: &[u8]) -> Result<Option<[u8; 32]>, String> {
    if buf.len() < 5 {
        return Ok(None);
    }
    if buf[0] != 0x16 {
        return Err(format!("not a TLS handshake record (content type {:#04x})", buf[0]));
    }
    // record header (5) + handshake type (1) + length (3) + version (2) + random (32)
    if buf.len() < 43 {
        return Ok(None);
    }
    if buf[5] != 2 {
        return Err(format!("the first handshake message is type {}, not ServerHello", buf[5]));
    }
    Ok(Some(buf[11..43].try_into().expect("32 bytes")))
}

/// The ServerHello random of one TLS handshake with 127.0.0.1:`port`.
pub async fn tls_server_random(port: u16, t: Duration) -> Result<String, String> {
    let work = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| format!("connect: {e}"))?;
        s.write_all(&client_hello()).await.map_err(|e| format!("send ClientHello: {e}"))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(r) = server_hello_random(&buf)? {
                return Ok(r.iter().map(|b| format!("{b:02x}")).collect());
            }
            if buf.len() > 16 << 10 {
                return Err("no ServerHello in the first 16 KiB".into());
            }
            let n = s.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("the server closed the connection before its ServerHello".into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(t, work).await.map_err(|_| format!("no ServerHello within {t:?}"))?
}

/// ServerHello randoms from `n` handshakes in a row, with their offsets (host clock) from `t0`.
/// The first handshake is retried (each bounded by 5 s) until `within`, for a VM whose network is
/// not up yet.
pub async fn tls_random_samples(port: u16, n: usize, t0: Instant, within: Duration) -> Result<Vec<Sample>, String> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < n {
        let at = t0.elapsed().as_nanos() as u64;
        match tls_server_random(port, Duration::from_secs(5)).await {
            Ok(hex) => out.push(Sample { t_ns: at, hex }),
            Err(e) if out.is_empty() && Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// `openssl s_client` to 127.0.0.1:`port` (TLS 1.2, tickets), saving the session to `sess_out`
/// or offering the one in `sess_in`. Returns whether the session was resumed.
pub async fn tls_session(port: u16, sess_out: Option<&Path>, sess_in: Option<&Path>, t: Duration) -> Result<bool, String> {
    let mut cmd = tokio::process::Command::new("openssl");
    cmd.args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-tls1_2", "-no_ign_eof"]);
    if let Some(p) = sess_out {
        cmd.arg("-sess_out").arg(p);
    }
    if let Some(p) = sess_in {
        cmd.arg("-sess_in").arg(p);
    }
    cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(t, cmd.output()).await.map_err(|_| format!("openssl s_client did not finish within {t:?}"))?.map_err(|e| format!("cannot run openssl: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(1 << 20)]);
    // s_client prints "New, TLSv1.2, Cipher is ..." or "Reused, TLSv1.2, Cipher is ...".
    if text.lines().any(|l| l.starts_with("Reused,")) {
        Ok(true)
    } else if text.lines().any(|l| l.starts_with("New,")) {
        Ok(false)
    } else {
        Err(format!("no TLS session with 127.0.0.1:{port}: {}", crate::text::truncate(String::from_utf8_lossy(&out.stderr).trim(), 300)))
    }
}

/// One resumption attempt: a ticket from VM `from`, offered to VM `to`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TicketTry {
    pub from: String,
    pub to: String,
    /// Resumed (true), a full handshake (false), or why the attempt failed.
    pub resumed: Result<bool, String>,
}

/// Every VM's ticket offered to itself and to every other VM.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Tickets {
    pub tries: Vec<TicketTry>,
    /// Why there was no test (the guest offers no TLS service).
    pub skipped: Option<String>,
}

/// Offer every VM's session ticket to itself and to every other VM (`vms`: name and TLS port;
/// session files go in `dir`, which is private to the run).
pub async fn ticket_test(vms: &[(String, u16)], dir: &Path, t: Duration) -> Tickets {
    let mut out = Tickets::default();
    for (i, (from, port)) in vms.iter().enumerate() {
        let sess = dir.join(format!("tls-ticket-{i}.pem"));
        if let Err(e) = tls_session(*port, Some(&sess), None, t).await {
            out.tries.push(TicketTry { from: from.clone(), to: from.clone(), resumed: Err(format!("getting a ticket: {e}")) });
            continue;
        }
        for (to, port_to) in vms {
            let resumed = tls_session(*port_to, None, Some(&sess), t).await;
            out.tries.push(TicketTry { from: from.clone(), to: to.clone(), resumed });
        }
        let _ = std::fs::remove_file(&sess);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyscan_output_is_read_as_key_types_and_fingerprints() {
        let ed = "AAAAC3NzaC1lZDI1NTE5AAAAIJTufWtq7yc6u0deoI1sSw3F1lFFUXzhZTYuYF24Ys6v";
        let text = format!(
            "# 127.0.0.1:2222 SSH-2.0-OpenSSH_9.2p1 Debian-2\n[127.0.0.1]:2222 ssh-ed25519 {ed}\n[127.0.0.1]:2222 ecdsa-sha2-nistp256 {ed}\n[127.0.0.1]:2222 ssh-rsa not-base64!\n[127.0.0.1]:2222 ssh-dss {ed}\n"
        );
        let keys = parse_keyscan(&text);
        let families: Vec<&str> = keys.iter().map(|k| k.family).collect();
        // The comment is skipped, the undecodable rsa line dropped (so rsa is asked for again).
        assert_eq!(families, ["ed25519", "ecdsa", "other"]);
        // ssh-keygen -lf of this key (OpenSSH 9.2) prints this.
        assert_eq!(keys[0].fingerprint, "SHA256:jwwfIM2HY/KewT83TsYg1Len3wBM5X2lFsjqUCqkhkM");
        assert!(KEY_TYPES.iter().all(|t| *t != "other"));
    }

    #[test]
    fn server_hello_parsing_is_bounded_and_exact() {
        assert_eq!(server_hello_random(&[0x16, 3, 3]).unwrap(), None, "too short: read more");
        let mut sh = vec![0x16, 3, 3, 0, 60, 2, 0, 0, 56, 3, 3];
        sh.extend((0u8..32).collect::<Vec<_>>());
        let r = server_hello_random(&sh).unwrap().unwrap();
        assert_eq!(r[0], 0);
        assert_eq!(r[31], 31);
        assert!(server_hello_random(&[0x15, 3, 3, 0, 2, 2, 40]).is_err(), "an alert is not a ServerHello");
        let mut wrong = sh.clone();
        wrong[5] = 11;
        assert!(server_hello_random(&wrong).is_err());
    }

    #[test]
    fn the_client_hello_is_one_well_formed_record() {
        let h = client_hello();
        assert_eq!(h[0], 0x16);
        assert_eq!(u16::from_be_bytes([h[3], h[4]]) as usize, h.len() - 5);
        assert_eq!(h[5], 1, "ClientHello");
        assert_eq!(u32::from_be_bytes([0, h[6], h[7], h[8]]) as usize, h.len() - 9);
    }
}
