//! A live TCP session across the snapshot (issue 22, `tcp_session`): the probe opens a connection
//! to the harness's peer on the segment before `hold`, and every clone of the snapshot resumes
//! holding it (the kernel socket, its 4-tuple and sequence numbers are guest memory). After
//! resume each clone speaks on it; the peer, the capture and this side say what happened.
//!
//! `drop` is what `ss -K dst ADDR` does (iproute2 misc/ss.c, `kill_inet_sock`): a
//! SOCK_DIAG_BY_FAMILY dump of the TCP sockets, then SOCK_DESTROY for each connected to ADDR.
//! The kernel answers it only with CONFIG_INET_DIAG_DESTROY (Debian sets it) and tcp_diag
//! loaded (net/ipv4/inet_diag.c, `inet_diag_cmd_exact` → `tcp_diag_destroy` → `tcp_abort`,
//! which sends the peer a RST and fails the socket with ECONNABORTED).

use clonesafe_protocol::{Reply, SessionSpeech, SESSION_HELLO, SESSION_MAX_LINE, SESSION_READ_MS};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;
use std::time::Duration;

struct Session {
    stream: TcpStream,
    local: String,
    remote: String,
    inherited: bool,
}

static SESSION: Mutex<Option<Session>> = Mutex::new(None);

fn lock() -> std::sync::MutexGuard<'static, Option<Session>> {
    SESSION.lock().unwrap_or_else(|p| p.into_inner())
}

/// Connect (retrying while the guest has no route or lease yet), say hello, read the answer.
fn connect(addr: &str, port: u16, timeout_ms: u64, inherited: bool) -> Result<Session, String> {
    let sa: SocketAddr = format!("{addr}:{port}").parse().map_err(|e| format!("peer address {addr}:{port}: {e}"))?;
    let deadline = super::monotonic_ns() + timeout_ms.saturating_mul(1_000_000);
    let mut stream = loop {
        match TcpStream::connect_timeout(&sa, Duration::from_millis(1000)) {
            Ok(s) => break s,
            Err(e) if super::monotonic_ns() > deadline => return Err(format!("connect to {sa}: {e}")),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    let local = stream.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let remote = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    stream.write_all(format!("{SESSION_HELLO}\n").as_bytes()).map_err(|e| format!("write hello to {sa}: {e}"))?;
    let answer = read_line(&mut stream, 3000).map_err(|e| format!("the peer's answer to hello: {e}"))?;
    if !answer.starts_with(SESSION_HELLO) {
        return Err(format!("the peer answered hello with {answer:?}"));
    }
    Ok(Session { stream, local, remote, inherited })
}

/// One line (without its newline), at most SESSION_MAX_LINE bytes, within `ms`.
fn read_line(s: &mut TcpStream, ms: u64) -> Result<String, String> {
    let deadline = super::monotonic_ns() + ms * 1_000_000;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let left = deadline.saturating_sub(super::monotonic_ns());
        if left == 0 {
            return Err(format!("no answer within {ms} ms"));
        }
        s.set_read_timeout(Some(Duration::from_nanos(left.max(1_000_000)))).map_err(|e| e.to_string())?;
        match s.read(&mut byte) {
            Ok(0) => return Err("end of stream: the connection is closed".into()),
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if line.len() < SESSION_MAX_LINE => line.push(byte[0]),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(format!("no answer within {ms} ms"));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

pub fn open(addr: &str, port: u16, timeout_ms: u64) -> Reply {
    match connect(addr, port, timeout_ms, true) {
        Ok(s) => {
            let reply = Reply::SessionOpened { local: s.local.clone(), remote: s.remote.clone() };
            *lock() = Some(s);
            reply
        }
        Err(message) => Reply::Error { message: format!("session: {message}") },
    }
}

pub fn speak(addr: &str, port: u16, id: &str, timeout_ms: u64) -> Reply {
    let mut g = lock();
    if g.is_none() {
        match connect(addr, port, timeout_ms, false) {
            Ok(s) => *g = Some(s),
            Err(message) => return Reply::Error { message: format!("session: {message}") },
        }
    }
    let s = g.as_mut().expect("set above");
    let id: String = id.chars().filter(|c| !c.is_control()).take(SESSION_MAX_LINE - 8).collect();
    let t_ns = super::monotonic_ns();
    let write_error = s.stream.write_all(format!("id {id}\n").as_bytes()).err().map(|e| e.to_string());
    let (answer, read_error) = match read_line(&mut s.stream, SESSION_READ_MS) {
        Ok(a) => (Some(a), None),
        Err(e) => (None, Some(e)),
    };
    Reply::SessionSpoke { speech: SessionSpeech { local: s.local.clone(), remote: s.remote.clone(), inherited: s.inherited, t_ns, write_error, answer, read_error } }
}

// Netlink sock_diag (linux/sock_diag.h, linux/inet_diag.h).
const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
/// struct inet_diag_sockid: sport, dport (be16), src[4], dst[4] (be32), if, cookie[2].
const SOCKID_LEN: usize = 48;

fn request(kind: u16, flags: u16, seq: u32, family: u8, states: u32, sockid: &[u8; SOCKID_LEN]) -> Vec<u8> {
    let len = 16 + 8 + SOCKID_LEN;
    let mut m = Vec::with_capacity(len);
    m.extend((len as u32).to_ne_bytes());
    m.extend(kind.to_ne_bytes());
    m.extend(flags.to_ne_bytes());
    m.extend(seq.to_ne_bytes());
    m.extend(0u32.to_ne_bytes());
    // struct inet_diag_req_v2: family, protocol, ext, pad, states.
    m.extend([family, libc::IPPROTO_TCP as u8, 0, 0]);
    m.extend(states.to_ne_bytes());
    m.extend(sockid);
    m
}

fn nl_socket() -> Result<OwnedFd, String> {
    // SAFETY: socket(2) with constant arguments; the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, NETLINK_SOCK_DIAG) };
    if fd < 0 {
        return Err(format!("netlink sock_diag socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: a new fd nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let tv = libc::timeval { tv_sec: 5, tv_usec: 0 };
    // SAFETY: a valid timeval for SO_RCVTIMEO.
    unsafe { libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv as *const _ as *const libc::c_void, std::mem::size_of::<libc::timeval>() as u32) };
    Ok(fd)
}

fn send(fd: &OwnedFd, m: &[u8]) -> Result<(), String> {
    // SAFETY: a buffer of m.len() bytes; netlink to the kernel (the default destination).
    if unsafe { libc::send(fd.as_raw_fd(), m.as_ptr() as *const libc::c_void, m.len(), 0) } < 0 {
        return Err(format!("netlink send: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The messages of one datagram: (type, payload).
fn recv(fd: &OwnedFd, buf: &mut [u8]) -> Result<Vec<(u16, Vec<u8>)>, String> {
    // SAFETY: `buf` is writable for its length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
    if n < 0 {
        return Err(format!("netlink recv: {}", std::io::Error::last_os_error()));
    }
    let mut out = Vec::new();
    let mut o = 0usize;
    let n = n as usize;
    while o + 16 <= n {
        let len = u32::from_ne_bytes(buf[o..o + 4].try_into().unwrap()) as usize;
        let kind = u16::from_ne_bytes(buf[o + 4..o + 6].try_into().unwrap());
        if len < 16 || o + len > n {
            break;
        }
        out.push((kind, buf[o + 16..o + len].to_vec()));
        o += (len + 3) & !3;
    }
    Ok(out)
}

fn errno_of(payload: &[u8]) -> i32 {
    payload.get(0..4).map(|b| -i32::from_ne_bytes(b.try_into().unwrap())).unwrap_or(0)
}

/// Destroy every IPv4 TCP socket connected to `dst` (not listening ones); the local and remote
/// address of each destroyed.
pub fn drop_to(dst: &str) -> Reply {
    match drop_inner(dst) {
        Ok(dropped) => Reply::SessionsDropped { dropped },
        Err(message) => Reply::Error { message: format!("drop sessions to {dst}: {message}") },
    }
}

fn drop_inner(dst: &str) -> Result<Vec<String>, String> {
    let want: std::net::Ipv4Addr = dst.parse().map_err(|e| format!("{dst}: {e}"))?;
    let fd = nl_socket()?;
    // Every state but LISTEN (TCP_LISTEN = 10).
    let states = 0x0fff & !(1 << 10);
    send(&fd, &request(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, libc::AF_INET as u8, states, &[0; SOCKID_LEN]))?;
    let mut buf = vec![0u8; 32 * 1024];
    let mut found: Vec<(u8, [u8; SOCKID_LEN])> = Vec::new();
    'dump: loop {
        for (kind, p) in recv(&fd, &mut buf)? {
            match kind {
                NLMSG_DONE => break 'dump,
                NLMSG_ERROR => return Err(format!("the TCP socket dump failed: {} (is tcp_diag loaded?)", std::io::Error::from_raw_os_error(errno_of(&p)))),
                SOCK_DIAG_BY_FAMILY if p.len() >= 4 + SOCKID_LEN => {
                    // struct inet_diag_msg: family, state, timer, retrans, then the sockid.
                    let id: [u8; SOCKID_LEN] = p[4..4 + SOCKID_LEN].try_into().unwrap();
                    if id[20..24] == want.octets() && found.len() < 4096 {
                        found.push((p[1], id));
                    }
                }
                _ => {}
            }
        }
    }
    let mut dropped = Vec::new();
    for (i, (state, id)) in found.iter().enumerate() {
        send(&fd, &request(SOCK_DESTROY, NLM_F_REQUEST | NLM_F_ACK, 2 + i as u32, libc::AF_INET as u8, 1 << state, id))?;
        let ack = recv(&fd, &mut buf)?;
        let err = ack.iter().find(|(k, _)| *k == NLMSG_ERROR).map(|(_, p)| errno_of(p)).unwrap_or(0);
        let sport = u16::from_be_bytes([id[0], id[1]]);
        let dport = u16::from_be_bytes([id[2], id[3]]);
        let src = std::net::Ipv4Addr::new(id[4], id[5], id[6], id[7]);
        if err != 0 {
            return Err(format!("SOCK_DESTROY {src}:{sport} -> {want}:{dport}: {} (the kernel needs CONFIG_INET_DIAG_DESTROY)", std::io::Error::from_raw_os_error(err)));
        }
        dropped.push(format!("{src}:{sport} -> {want}:{dport}"));
    }
    Ok(dropped)
}
