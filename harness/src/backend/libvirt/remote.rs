//! A libvirt host that shares no filesystem with the harness (`clonesafe run --connect URI`).
//!
//! Everything a VM needs on the hypervisor host goes through libvirt's storage API, in one
//! storage pool per run:
//!
//! ```text
//! <pool dir>/clonesafe-<pid>-pool-<random>/ dir pool, 0700, made new and removed by the run
//!     base-<k>-<file>                       guest disk, kernel, initrd: uploaded once per run
//!     <vm>.disk.qcow2                       each VM's overlay (backingStore = base or frozen disk)
//!     <vm>.seed.iso                         its NoCloud seed, uploaded, when it has one
//!     <vm>.save-<n>                         a source's nth memory snapshot (libvirt writes it)
//!     <vm>.disk-after-snapshot-<n>.qcow2    the overlay an external snapshot moves the source to
//! ```
//!
//! A VM's files are named `<pool dir>/<vm>.<file>` where the local backend writes
//! `<run dir>/<vm>/<file>`, so the save-image rewrite swaps one prefix for another in both. The save
//! image's header and XML region are read and written with `virStorageVolDownload`/`Upload` at
//! offset 0 (libvirt's dir-pool upload opens the file without truncating it: storage_util.c,
//! `virStorageBackendVolUploadLocal` → `virFDStreamOpenBlockDevice`, `O_WRONLY`), never the
//! migration stream after it.
//!
//! The pool's directory must not exist before the run (issue 19, item 3: an existing directory,
//! or a symlink to one, was adopted, emptied and chmodded 0700). libvirt's build never refuses
//! an existing directory (storage_util.c, virStorageBackendBuildLocal: VIR_DIR_CREATE_ALLOW_EXIST,
//! "If the dir already exists, just set the perms"), so the name carries 64 random bits, and the
//! pool is started once before it is built: a start succeeds only if the directory is already
//! there (the dir backend's refresh opens it), and then the run stops, changing nothing. The pool
//! is deleted when the backend is dropped: the volumes the run created or had libvirt write,
//! then the directory (rmdir: it fails rather than remove what the run did not make), then the
//! definition. A run killed before that leaves a pool whose name carries its dead pid, which the
//! next run removes ([`sweep`]). Measured on this machine with `qemu+tcp://127.0.0.1/system` while the harness ran
//! in a mount namespace where the pool directory was an empty tmpfs (tests/remote_libvirt.rs).

use super::error::LibvirtError;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use virt::connect::Connect;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::stream::Stream;

/// Where the run's pool directory is made on the hypervisor host, unless `--pool-dir` says.
pub const DEFAULT_POOL_DIR: &str = "/var/lib/clonesafe/pool";

/// Stream chunks: libvirt's RPC messages carry at most 256 KiB of stream data.
const CHUNK: usize = 256 << 10;

/// Start libvirt's default event loop on a thread of its own, once per process. A connection
/// opened after this reads its socket from that loop, which is what lets a non-blocking stream
/// (a console) receive data while no other call is running (virsh console does the same:
/// tools/virsh-console.c). Must run before [`Connect::open`].
pub fn start_event_loop() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if virt::event::event_register_default_impl().is_ok() {
            std::thread::Builder::new()
                .name("libvirt-events".into())
                .spawn(|| loop {
                    if virt::event::event_run_default_impl().is_err() {
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                })
                .expect("spawn the libvirt event loop thread");
        }
    });
}

/// Whether the host behind `conn` offers KVM guests: its capabilities list a
/// `<domain type='kvm'>` for each guest arch it can run under KVM (whether one really boots is
/// only known by booting one).
pub fn offers_kvm(conn: &Connect) -> Result<bool, virt::error::Error> {
    conn.capabilities().map(|x| x.contains("<domain type='kvm'"))
}

/// What the pool names of the run with process id `pid` start with.
pub fn pool_prefix(pid: u32) -> String {
    format!("{}{pid}-pool-", crate::identity::NAME_PREFIX)
}

/// This run's pool name: its pid, then 64 random bits, so that no directory can be waiting
/// at that name.
pub fn own_pool_name() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| format!("{}{:016x}", pool_prefix(std::process::id()), u64::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().expect("8 bytes"))))
}

/// `--pool-dir`: an absolute, plain path (libvirtd would take a relative one from its own
/// working directory, after the guest was uploaded: issue 19, item 10).
pub fn check_pool_dir(dir: &str) -> Result<(), String> {
    let p = Path::new(dir);
    if !p.is_absolute() {
        return Err(format!("--pool-dir {dir:?} is relative; give an absolute directory on the libvirt host (libvirtd would resolve it from its own working directory)"));
    }
    if p.components().any(|c| matches!(c, std::path::Component::ParentDir)) || dir.chars().any(|c| c.is_control()) {
        return Err(format!("--pool-dir {dir:?}: give a plain absolute path (no .. and no control characters)"));
    }
    Ok(())
}

/// One run's storage pool on the hypervisor host.
pub struct RunPool {
    conn: Arc<Connect>,
    pool: StoragePool,
    pub name: String,
    /// The pool's directory on the hypervisor host (never opened by the harness).
    pub dir: String,
    /// Local file → (its volume's path on the host, virtual disk size): each is uploaded once.
    bases: Mutex<HashMap<PathBuf, (String, u64)>>,
    /// Disk volume path → virtual size, for the overlays made on it.
    sizes: Mutex<HashMap<String, u64>>,
    /// The volumes this run created or had libvirt write (by name): what teardown deletes.
    owned: Mutex<Vec<String>>,
}

impl std::fmt::Debug for RunPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunPool").field("name", &self.name).field("dir", &self.dir).finish()
    }
}

fn err(e: virt::error::Error) -> LibvirtError {
    LibvirtError::from(e)
}

impl RunPool {
    /// Define, build (libvirt makes the 0700 directory on the host) and start this run's pool
    /// under `parent` on the host.
    pub fn create(conn: &Arc<Connect>, parent: &str) -> Result<Self, LibvirtError> {
        Self::create_named(conn, parent, own_pool_name())
    }

    /// The same with a given name: refused, changing nothing, when `<parent>/<name>` exists.
    pub fn create_named(conn: &Arc<Connect>, parent: &str, name: &str) -> Result<Self, LibvirtError> {
        let refuse = |message: String| LibvirtError { code: 0, code_name: "clonesafe".into(), domain: "storage".into(), message };
        check_pool_dir(parent).map_err(refuse)?;
        let dir = format!("{}/{name}", parent.trim_end_matches('/'));
        let xml = format!(
            "<pool type='dir'><name>{}</name><target><path>{}</path><permissions><mode>0700</mode><owner>0</owner><group>0</group></permissions></target></pool>",
            crate::text::xml_escape(name),
            crate::text::xml_escape(&dir)
        );
        let pool = conn.define_storage_pool_xml(&xml, 0).map_err(err)?;
        // Started before it is built, it comes up only if its directory (or a link there) is
        // already on the host: then it is not ours to use.
        if pool.create(0).is_ok() {
            let _ = pool.destroy();
            let _ = pool.undefine();
            return Err(refuse(format!("{dir} already exists on the libvirt host; clonesafe makes its pool directory itself and never uses one that was there before")));
        }
        let started = pool.build(0).and_then(|_| pool.create(0));
        if let Err(e) = started {
            let _ = pool.delete(0);
            let _ = pool.undefine();
            return Err(err(e));
        }
        Ok(RunPool { conn: conn.clone(), pool, name: name.to_string(), dir, bases: Default::default(), sizes: Default::default(), owned: Default::default() })
    }

    /// Record that `path` (a volume of this pool) is the run's, to delete at teardown.
    fn own(&self, path: &str) {
        let name = self.vol_name(path).to_string();
        let mut owned = self.owned.lock().expect("pool lock");
        if !owned.contains(&name) {
            owned.push(name);
        }
    }

    /// Volumes libvirt wrote for the run at these paths (a save image, an overlay): the run's.
    pub fn owns(&self, paths: &[&str]) {
        for p in paths {
            self.own(p);
        }
    }

    /// `<pool dir>/<vm>.`: what a VM's files are named with on the host.
    pub fn prefix(&self, vm: &str) -> String {
        format!("{}/{vm}.", self.dir)
    }

    fn vol(&self, name: &str) -> Result<StorageVol, LibvirtError> {
        self.pool.lookup_storage_vol_by_name(name).map_err(err)
    }

    fn vol_name<'a>(&self, path: &'a str) -> &'a str {
        path.strip_prefix(&self.dir).map(|p| p.trim_start_matches('/')).unwrap_or(path)
    }

    /// Upload the local file `local` as a new volume `vol`, 0600. Returns its path on the host.
    pub fn upload(&self, local: &Path, vol: &str) -> Result<String, UploadError> {
        let mut f = crate::input::open_regular(local).map_err(|e| UploadError::Local(local.to_path_buf(), e.to_string()))?;
        let len = f.metadata().map_err(|e| UploadError::Local(local.to_path_buf(), e.to_string()))?.len();
        let xml = format!(
            "<volume><name>{}</name><capacity unit='bytes'>{len}</capacity><allocation unit='bytes'>0</allocation><target><format type='raw'/><permissions><mode>0600</mode></permissions></target></volume>",
            crate::text::xml_escape(vol)
        );
        let v = StorageVol::create_xml(&self.pool, &xml, 0).map_err(|e| UploadError::Libvirt(err(e)))?;
        self.owned.lock().expect("pool lock").push(vol.to_string());
        let st = Stream::new(&self.conn, 0).map_err(|e| UploadError::Libvirt(err(e)))?;
        v.upload(&st, 0, len, 0).map_err(|e| UploadError::Libvirt(err(e)))?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = f.read(&mut buf).map_err(|e| UploadError::Local(local.to_path_buf(), e.to_string()))?;
            if n == 0 {
                break;
            }
            send_blocking(&st, &buf[..n]).map_err(|e| UploadError::Libvirt(err(e)))?;
        }
        st.finish().map_err(|e| UploadError::Libvirt(err(e)))?;
        v.path().map_err(|e| UploadError::Libvirt(err(e)))
    }

    /// A guest file (disk, kernel, initrd) on the host: uploaded the first time it is asked for.
    /// Returns its path there and its virtual size (`format` is the disk's: qcow2 or raw).
    pub fn base(&self, local: &Path, format: &str) -> Result<(String, u64), UploadError> {
        let mut bases = self.bases.lock().expect("pool lock");
        if let Some(b) = bases.get(local) {
            return Ok(b.clone());
        }
        let file = local.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_else(|| "file".into());
        let path = self.upload(local, &format!("base-{}-{file}", bases.len()))?;
        let size = virtual_size(local, format).map_err(|e| UploadError::Local(local.to_path_buf(), e.to_string()))?;
        self.sizes.lock().expect("pool lock").insert(path.clone(), size);
        bases.insert(local.to_path_buf(), (path.clone(), size));
        Ok((path, size))
    }

    /// A new qcow2 overlay `vol` on the volume at `backing` (libvirt runs qemu-img on the host).
    pub fn overlay(&self, vol: &str, backing: &str, backing_format: &str) -> Result<String, LibvirtError> {
        let size = self.sizes.lock().expect("pool lock").get(backing).copied().ok_or_else(|| LibvirtError {
            code: 0,
            code_name: "clonesafe".into(),
            domain: "storage".into(),
            message: format!("no volume of this run's pool is at {backing}"),
        })?;
        let xml = format!(
            "<volume><name>{}</name><capacity unit='bytes'>{size}</capacity><target><format type='qcow2'/><permissions><mode>0600</mode></permissions></target><backingStore><path>{}</path><format type='{}'/></backingStore></volume>",
            crate::text::xml_escape(vol),
            crate::text::xml_escape(backing),
            crate::text::xml_escape(backing_format)
        );
        let v = StorageVol::create_xml(&self.pool, &xml, 0).map_err(err)?;
        self.owned.lock().expect("pool lock").push(vol.to_string());
        let path = v.path().map_err(err)?;
        self.sizes.lock().expect("pool lock").insert(path.clone(), size);
        Ok(path)
    }

    /// Make libvirt list the files it wrote into the pool's directory itself (snapshots).
    /// `disk` is a new overlay the size of `like`.
    pub fn adopt(&self, disk: &str, like: &str) -> Result<(), LibvirtError> {
        self.pool.refresh(0).map_err(err)?;
        let mut sizes = self.sizes.lock().expect("pool lock");
        if let Some(s) = sizes.get(like).copied() {
            sizes.insert(disk.to_string(), s);
        }
        Ok(())
    }

    /// Bytes `path` takes on the host (allocated), as libvirt reports it.
    pub fn allocation(&self, path: &str) -> Option<u64> {
        self.vol(self.vol_name(path)).ok()?.info().ok().map(|i| i.allocation)
    }

    /// The first `len` bytes (or fewer, if the volume is shorter) of the volume at `path`, and
    /// the volume's length.
    pub fn read_head(&self, path: &str, len: u64) -> Result<(Vec<u8>, u64), LibvirtError> {
        // The download is `len` bytes long: reading to its end also finishes the stream.
        let (mut r, total) = self.reader(path, len)?;
        let mut out = Vec::new();
        r.read_to_end(&mut out).map_err(|e| stream_err(&e))?;
        Ok((out, total))
    }

    /// The volume at `path` from its start, `len` bytes of it (all when 0, or when it is
    /// shorter), as a reader over a download stream; and the volume's length.
    pub fn reader(&self, path: &str, len: u64) -> Result<(VolReader, u64), LibvirtError> {
        let v = self.vol(self.vol_name(path))?;
        let total = v.info().map_err(err)?.capacity;
        let st = Stream::new(&self.conn, 0).map_err(err)?;
        v.download(&st, 0, len.min(total), 0).map_err(err)?;
        Ok((VolReader { st: Some(st) }, total))
    }

    /// Overwrite the first `bytes.len()` bytes of the volume at `path`; the rest stays.
    pub fn write_head(&self, path: &str, bytes: &[u8]) -> Result<(), LibvirtError> {
        let v = self.vol(self.vol_name(path))?;
        let st = Stream::new(&self.conn, 0).map_err(err)?;
        v.upload(&st, 0, bytes.len() as u64, 0).map_err(err)?;
        send_blocking(&st, bytes).map_err(err)?;
        st.finish().map_err(err)
    }

    /// Delete the run's volumes, the directory and the pool. Returns what could not be removed.
    pub fn remove(&self) -> Vec<String> {
        let owned = self.owned.lock().expect("pool lock").clone();
        remove_pool(&self.pool, &self.name, |v| owned.iter().any(|o| o == v))
    }
}

impl Drop for RunPool {
    fn drop(&mut self) {
        for line in self.remove() {
            eprintln!("warning: {line}");
        }
    }
}

/// Delete the volumes `ours` selects by name, stop the pool, remove its directory (rmdir: only
/// if nothing else is left in it) and its definition.
fn remove_pool(pool: &StoragePool, name: &str, ours: impl Fn(&str) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    if pool.is_active().unwrap_or(false) {
        let _ = pool.refresh(0);
        for v in pool.list_all_volumes(0).unwrap_or_default() {
            if !v.name().is_ok_and(|n| ours(&n)) {
                continue;
            }
            if let Err(e) = v.delete(0) {
                out.push(format!("pool {name}: cannot delete volume {}: {}", v.name().unwrap_or_default(), e.message()));
            }
        }
        if let Err(e) = pool.destroy() {
            out.push(format!("pool {name}: cannot stop it: {}", e.message()));
        }
    }
    if let Err(e) = pool.delete(0) {
        out.push(format!("pool {name}: cannot remove its directory: {}", e.message()));
    }
    if pool.is_persistent().unwrap_or(false) {
        if let Err(e) = pool.undefine() {
            out.push(format!("pool {name}: cannot undefine it: {}", e.message()));
        }
    }
    out
}

/// Remove the clonesafe pools `which` selects by name (a dead run's, or this run's after
/// Ctrl-C). Only a pool named as a run names its pool, whose directory is `<parent>/<its name>`,
/// is touched: such a directory was made new by that run (it refuses one that exists), so all in
/// it is the run's. Returns one line per pool removed.
pub fn sweep(conn: &Connect, which: impl Fn(&str) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    for p in conn.list_all_storage_pools(0).unwrap_or_default() {
        let Ok(name) = p.name() else { continue };
        let Some(pid) = crate::identity::owner_of(&name) else { continue };
        if !name.starts_with(&pool_prefix(pid)) || !which(&name) {
            continue;
        }
        let ours = p.xml_desc(0).ok().and_then(|x| {
            let doc = roxmltree::Document::parse(&x).ok()?;
            let path = doc.descendants().find(|n| n.has_tag_name("path"))?.text()?.to_string();
            Some(path.trim_end_matches('/').ends_with(&format!("/{name}")))
        });
        if ours != Some(true) {
            continue;
        }
        let left = remove_pool(&p, &name, |_| true);
        out.push(format!("removed storage pool {name} and its volumes{}", if left.is_empty() { String::new() } else { format!(" (not all: {})", left.join("; ")) }));
    }
    out
}

/// The virtual size of a local disk: a qcow2 header's size field (big-endian u64 at byte 24,
/// qemu docs/interop/qcow2.txt), else the file's length.
pub fn virtual_size(path: &Path, format: &str) -> std::io::Result<u64> {
    let mut f = std::fs::File::open(path)?;
    if format == "qcow2" {
        let mut h = [0u8; 32];
        f.read_exact(&mut h)?;
        if &h[..4] != b"QFI\xfb" {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "not a qcow2 image (no QFI\\xfb magic)"));
        }
        return Ok(u64::from_be_bytes(h[24..32].try_into().expect("8 bytes")));
    }
    Ok(f.metadata()?.len())
}

/// Send all of `data` on a blocking stream (an upload), at most [`CHUNK`] bytes a call.
fn send_blocking(st: &Stream, mut data: &[u8]) -> Result<(), virt::error::Error> {
    while !data.is_empty() {
        let n = st.send(&data[..data.len().min(CHUNK)])? as usize;
        data = &data[n..];
    }
    Ok(())
}

/// A download stream's read error, back as the libvirt error it was.
fn stream_err(e: &std::io::Error) -> LibvirtError {
    LibvirtError { code: 0, code_name: "stream".into(), domain: "storage".into(), message: e.to_string() }
}

/// A volume's bytes as they arrive from `virStorageVolDownload` (blocking stream).
pub struct VolReader {
    st: Option<Stream>,
}

impl std::io::Read for VolReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(st) = &self.st else { return Ok(0) };
        let n = st.recv(buf).map_err(|e| std::io::Error::other(e.message().to_string()))?;
        if n == 0 {
            if let Some(st) = self.st.take() {
                st.finish().map_err(|e| std::io::Error::other(e.message().to_string()))?;
            }
        }
        Ok(n as usize)
    }
}

impl Drop for VolReader {
    fn drop(&mut self) {
        if let Some(st) = self.st.take() {
            let _ = st.abort();
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("cannot read {0}: {1}")]
    Local(PathBuf, String),
    #[error(transparent)]
    Libvirt(LibvirtError),
}

/// A character device of a domain (a serial port or a channel) as a stream from libvirtd,
/// pumped by threads of its own: to a local file (the console), or to one end of a socket pair
/// whose other end the harness reads like the local probe socket.
pub struct Pump {
    stream: Arc<Stream>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Pump {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // SAFETY: the stream is alive (we hold a reference); abort is allowed on any stream
        // state and makes the pump threads' next call fail.
        unsafe {
            virt::sys::virStreamAbort(self.stream.as_ptr());
        }
    }
}

/// Which device to open.
#[derive(Debug, Clone, Copy)]
pub enum Device<'a> {
    /// A serial port by alias (`serial0`, `serial1`): must be a pty (virDomainOpenConsole).
    Serial(&'a str),
    /// A virtio-serial channel by target name: must be a unix socket libvirt binds
    /// (virDomainOpenChannel; qemu_driver.c qemuDomainOpenChannel).
    Channel(&'a str),
}

/// Open `dev` of `d` as a non-blocking stream.
pub fn open(conn: &Connect, d: &virt::domain::Domain, dev: Device) -> Result<Stream, LibvirtError> {
    let st = Stream::new(conn, virt::sys::VIR_STREAM_NONBLOCK).map_err(err)?;
    match dev {
        Device::Serial(alias) => d.open_console(Some(alias), &st, virt::sys::VIR_DOMAIN_CONSOLE_FORCE).map_err(err)?,
        Device::Channel(name) => d.open_channel(Some(name), &st, virt::sys::VIR_DOMAIN_CHANNEL_FORCE).map_err(err)?,
    }
    Ok(st)
}

/// What one non-blocking receive got.
enum Got {
    Data(usize),
    Again,
    End,
}

fn recv(st: &Stream, buf: &mut [u8]) -> Got {
    // SAFETY: buf is valid for buf.len() bytes; virt's safe recv turns -2 (EAGAIN on a
    // non-blocking stream) into an error, so the raw call is used.
    let n = unsafe { virt::sys::virStreamRecv(st.as_ptr(), buf.as_mut_ptr() as *mut std::os::raw::c_char, buf.len()) };
    match n {
        n if n > 0 => Got::Data(n as usize),
        -2 => Got::Again,
        _ => Got::End,
    }
}

/// Send all of `data`, waiting while the stream is full. False when the stream is gone.
fn send_all(st: &Stream, mut data: &[u8], stop: &std::sync::atomic::AtomicBool) -> bool {
    while !data.is_empty() {
        // SAFETY: data is valid for data.len() bytes.
        let n = unsafe { virt::sys::virStreamSend(st.as_ptr(), data.as_ptr() as *mut std::os::raw::c_char, data.len()) };
        match n {
            n if n > 0 => data = &data[n as usize..],
            -2 if !stop.load(std::sync::atomic::Ordering::SeqCst) => std::thread::sleep(std::time::Duration::from_millis(2)),
            _ => return false,
        }
    }
    true
}

/// Poll `st` until it ends or `stop`, handing each chunk to `sink` (false from sink stops).
fn pump_out(st: &Stream, stop: &std::sync::atomic::AtomicBool, mut sink: impl FnMut(&[u8]) -> bool) {
    let mut buf = vec![0u8; 64 << 10];
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        match recv(st, &mut buf) {
            Got::Data(n) => {
                if !sink(&buf[..n]) {
                    return;
                }
            }
            Got::Again => std::thread::sleep(std::time::Duration::from_millis(2)),
            Got::End => return,
        }
    }
}


/// Append everything `st` carries to the local file `path` (a console log), up to the cap a
/// local console has ([`crate::backend::console::CappedLog`]: the guest is untrusted; past the
/// cap the stream is still read, so the guest never blocks on a full pty); returns the pump and the flag set when the cap
/// was reached.
pub fn to_file(st: Stream, path: &Path) -> std::io::Result<(Pump, Arc<std::sync::atomic::AtomicBool>)> {
    let mut log = crate::backend::console::CappedLog::open(path, crate::backend::console::cap())?;
    let capped = log.flag();
    let stream = Arc::new(st);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s, halt) = (stream.clone(), stop.clone());
    std::thread::Builder::new().name("console-pump".into()).spawn(move || pump_out(&s, &halt, |b| log.write(b).is_ok()))?;
    Ok((Pump { stream, stop }, capped))
}

/// Join `st` to a socket pair; returns the harness's end (reads what the guest sent, writes
/// reach the guest). The pump ends when either side does.
pub fn to_socket(st: Stream) -> std::io::Result<(std::os::unix::net::UnixStream, Pump)> {
    use std::io::Write;
    let (mine, theirs) = std::os::unix::net::UnixStream::pair()?;
    let stream = Arc::new(st);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s, halt, mut w) = (stream.clone(), stop.clone(), theirs.try_clone()?);
    std::thread::Builder::new().name("probe-pump-in".into()).spawn(move || {
        pump_out(&s, &halt, |b| w.write_all(b).is_ok());
        let _ = w.shutdown(std::net::Shutdown::Both);
    })?;
    let (s, halt, mut r) = (stream.clone(), stop.clone(), theirs);
    std::thread::Builder::new().name("probe-pump-out".into()).spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 || !send_all(&s, &buf[..n], &halt) {
                break;
            }
        }
    })?;
    Ok((mine, Pump { stream, stop }))
}
