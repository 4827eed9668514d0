//! The segment's TCP peer (issue 22, `tcp_session`): a listener on the bridge's address inside
//! the segment's namespace, to which a source opens a session before its snapshot. Every clone
//! of that snapshot resumes holding the same connection (4-tuple and sequence numbers are kernel
//! memory), so the peer is where one connection spoken by several machines shows: it logs each
//! connection it accepted, every line it read on it (bounded), and how it ended.
//!
//! It is threads of the harness, not a process: nothing to reap after a kill. One short-lived
//! thread enters the namespace (setns(2) on /run/netns/NAME changes only the calling thread's
//! network namespace) and binds the listener there; a socket stays in the namespace it was made
//! in, so the accept loop and the connection threads run in the host's namespace and still
//! serve the segment. A namespace with an open socket lives on after `ip netns del` until the
//! socket closes; [`Peer::stop`] closes them all before the segment is deleted.
//!
//! Lines: the guest says `hello`, the peer answers `hello <n>` (n: the connection's number); for
//! `id <ID>` it answers `heard <ID> on connection <n>`. Anything else is logged and not answered.

use serde::Serialize;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The port the peer listens on, on the segment's router address.
pub const PORT: u16 = 7070;
/// Connections the peer accepts, lines it keeps per connection, and bytes per line: the guests
/// are untrusted and cannot make the peer grow.
pub const MAX_CONNS: usize = 64;
pub const MAX_LINES: usize = 32;
pub const MAX_LINE: usize = 200;

/// One connection as the peer saw it.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct PeerConn {
    /// 1-based, in the order accepted.
    pub conn: u32,
    /// The guest's end ("10.77.0.23:41234").
    pub remote: String,
    pub accepted_unix_ns: u64,
    /// Each line read: (Unix time in ns, the line, control characters dropped).
    pub lines: Vec<(u64, String)>,
    /// How it ended, if it did before the peer stopped: (Unix time in ns, "closed" or the error,
    /// e.g. "Connection reset by peer (os error 104)").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<(u64, String)>,
}

pub struct Peer {
    pub addr: SocketAddrV4,
    conns: Arc<Mutex<Vec<PeerConn>>>,
    stop: Arc<AtomicBool>,
    threads: Arc<Mutex<Vec<std::thread::JoinHandle<()>>>>,
}

/// Unix time in ns (the clock of the capture and the VMs' resume times).
fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// A TCP listener bound in namespace `ns` (its name under /run/netns).
fn listen_in(ns: &str, addr: SocketAddrV4) -> Result<TcpListener, String> {
    let path = std::path::Path::new("/run/netns").join(ns);
    let f = std::fs::File::open(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            use std::os::unix::io::AsRawFd;
            // SAFETY: setns(2) on an open namespace file, on this thread only (it ends here).
            if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(format!("setns into {ns}: {}", std::io::Error::last_os_error()));
            }
            let l = TcpListener::bind(addr).map_err(|e| format!("listen on {addr} in {ns}: {e}"))?;
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            Ok(l)
        })
        .join()
        .unwrap_or_else(|_| Err("the thread entering the namespace panicked".into()))
    })
}

impl Peer {
    /// Listen on `ip`:[`PORT`] inside namespace `ns` (whose bridge holds `ip`).
    pub fn start(ns: &str, ip: Ipv4Addr) -> Result<Peer, String> {
        let addr = SocketAddrV4::new(ip, PORT);
        let listener = listen_in(ns, addr)?;
        let peer = Peer { addr, conns: Default::default(), stop: Default::default(), threads: Default::default() };
        let (conns, stop, threads) = (peer.conns.clone(), peer.stop.clone(), peer.threads.clone());
        let accept = std::thread::Builder::new()
            .name("clonesafe-peer".into())
            .spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, remote)) => {
                            let mut all = conns.lock().unwrap();
                            if all.len() >= MAX_CONNS {
                                continue;
                            }
                            let n = all.len() as u32 + 1;
                            all.push(PeerConn { conn: n, remote: remote.to_string(), accepted_unix_ns: now_ns(), ..Default::default() });
                            drop(all);
                            let (conns, stop) = (conns.clone(), stop.clone());
                            if let Ok(h) = std::thread::Builder::new().name(format!("clonesafe-peer-{n}")).spawn(move || serve(stream, n, &conns, &stop)) {
                                threads.lock().unwrap().push(h);
                            }
                        }
                        // Nothing to accept yet (non-blocking), or a failed accept: poll again.
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
            .map_err(|e| format!("start the peer's thread: {e}"))?;
        peer.threads.lock().unwrap().push(accept);
        Ok(peer)
    }

    /// What the peer saw so far.
    pub fn conns(&self) -> Vec<PeerConn> {
        self.conns.lock().unwrap().clone()
    }

    /// Stop accepting and reading, close every socket; waits for the threads (each notices
    /// within its 100 ms poll).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        loop {
            let Some(h) = self.threads.lock().unwrap().pop() else { break };
            let _ = h.join();
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(mut s: TcpStream, n: u32, conns: &Mutex<Vec<PeerConn>>, stop: &AtomicBool) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let record = |f: &dyn Fn(&mut PeerConn)| {
        if let Some(c) = conns.lock().unwrap().iter_mut().find(|c| c.conn == n) {
            f(c)
        }
    };
    let mut line: Vec<u8> = Vec::new();
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::SeqCst) {
        match s.read(&mut buf) {
            Ok(0) => {
                record(&|c| c.ended = Some((now_ns(), "closed".into())));
                return;
            }
            Ok(k) => {
                for &b in &buf[..k] {
                    if b != b'\n' {
                        if line.len() < MAX_LINE {
                            line.push(b);
                        }
                        continue;
                    }
                    let text: String = String::from_utf8_lossy(&line).chars().filter(|c| !c.is_control()).collect();
                    line.clear();
                    let t = now_ns();
                    record(&|c| {
                        if c.lines.len() < MAX_LINES {
                            c.lines.push((t, text.clone()));
                        }
                    });
                    let answer = if text == clonesafe_protocol::SESSION_HELLO {
                        Some(format!("{} {n}\n", clonesafe_protocol::SESSION_HELLO))
                    } else {
                        text.strip_prefix("id ").map(|id| format!("heard {id} on connection {n}\n"))
                    };
                    if let Some(a) = answer {
                        let _ = s.write_all(a.as_bytes());
                    }
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => {
                record(&|c| c.ended = Some((now_ns(), e.to_string())));
                return;
            }
        }
    }
}
