//! Where a libvirt VM's files are, behind one small interface: [`Local`] (the harness's run
//! directory, which libvirtd on this machine shares) or [`Pool`] (volumes of the run's storage
//! pool on a libvirt host reached with `run --connect`, read and written through libvirt;
//! remote.rs). The backend and its VMs ask this, not "is there a pool?".

use super::call::{blocking, lv_src};
use super::domain::{self, Files};
use super::remote::{self, RunPool};
use super::save_image::SaveImage;
use crate::backend::error::BackendError;
use crate::backend::lifecycle::{Phase, Timeouts};
use crate::backend::snapshot::{CloneArgs, Machine};
use async_trait::async_trait;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[async_trait]
pub trait Storage: Send + Sync {
    /// The VM's disk, an overlay on `backing` (the guest's disk when None), and how its domain
    /// XML names its files; the harness's own directory for the VM is made too.
    async fn place(&self, machine: &Machine, args: &CloneArgs, backing: Option<&Path>, t: &Timeouts) -> Result<(PathBuf, Files), BackendError>;
    /// The save image at `path`.
    async fn read_image(&self, vm: &str, path: &Path, t: Duration) -> Result<SaveImage, BackendError>;
    /// Rewrite the XML of the save image at `path` (read before as `img`) in place.
    async fn write_image_xml(&self, vm: &str, path: &Path, img: &SaveImage, xml: &str, t: Duration) -> Result<(), BackendError>;
    /// What the files of VM `name` (its directory `dir`) are named with in its domain XML.
    fn prefix(&self, name: &str, dir: &Path) -> String;
    /// Where a snapshot of VM `name` puts its memory image (`snap_dir` is the snapshot's
    /// directory here) and the source's next overlay (the `n`th snapshot; `vm_dir` is the VM's).
    fn snapshot_paths(&self, name: &str, snap_dir: &Path, vm_dir: &Path, n: u32) -> (PathBuf, PathBuf);
    /// After libvirt wrote a snapshot's memory image and the source's new overlay: make the
    /// image private, or list both as the pool's volumes. Returns the image's size when known.
    async fn snapshot_written(&self, vm: &str, memory: &Path, disk: &Path, frozen: &Path, t: Duration) -> Result<Option<u64>, BackendError>;
    /// How the harness reads an artifact (a snapshot's file).
    fn opener(&self) -> crate::backend::Opener;
}

/// Files in the harness's run directory, shared with libvirtd on this machine.
pub struct Local;

#[async_trait]
impl Storage for Local {
    async fn place(&self, machine: &Machine, args: &CloneArgs, backing: Option<&Path>, _t: &Timeouts) -> Result<(PathBuf, Files), BackendError> {
        let (b, f) = match backing {
            Some(b) => (b, "qcow2"),
            None => (machine.guest.disk.as_path(), machine.guest.disk_format.as_str()),
        };
        Ok((crate::backend::vm_disk(args, b, f).await?, Files::Local))
    }

    async fn read_image(&self, vm: &str, path: &Path, _t: Duration) -> Result<SaveImage, BackendError> {
        SaveImage::read(path).map_err(|source| BackendError::vmm(vm, format!("save image {}", path.display()), source))
    }

    async fn write_image_xml(&self, vm: &str, path: &Path, _img: &SaveImage, xml: &str, _t: Duration) -> Result<(), BackendError> {
        SaveImage::rewrite_xml(path, xml).map(drop).map_err(|source| BackendError::vmm(vm, format!("save image {}", path.display()), source))
    }

    fn prefix(&self, _name: &str, dir: &Path) -> String {
        domain::local_prefix(dir)
    }

    fn snapshot_paths(&self, name: &str, snap_dir: &Path, vm_dir: &Path, n: u32) -> (PathBuf, PathBuf) {
        (snap_dir.join(format!("{name}.save")), vm_dir.join(format!("disk-after-snapshot-{n}.qcow2")))
    }

    async fn snapshot_written(&self, vm: &str, memory: &Path, _disk: &Path, _frozen: &Path, _t: Duration) -> Result<Option<u64>, BackendError> {
        // The image holds guest memory: make sure it is private whatever libvirt's umask was.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(memory, std::fs::Permissions::from_mode(0o600)).map_err(BackendError::io(vm, format!("chmod {}", memory.display())))?;
        Ok(None)
    }

    fn opener(&self) -> crate::backend::Opener {
        crate::backend::local_opener()
    }
}

/// Volumes of the run's storage pool on the libvirt host (which may share no filesystem with
/// the harness): uploaded, read and rewritten through libvirt's volume streams.
pub struct Pool(pub Arc<RunPool>);

#[async_trait]
impl Storage for Pool {
    async fn place(&self, machine: &Machine, args: &CloneArgs, backing: Option<&Path>, t: &Timeouts) -> Result<(PathBuf, Files), BackendError> {
        let pool = self.0.clone();
        let name = args.identity.name.clone();
        std::fs::create_dir_all(&args.dir).map_err(BackendError::io(&name, format!("create {}", args.dir.display())))?;
        let (machine, dir, backing) = (machine.clone(), args.dir.clone(), backing.map(|b| b.display().to_string()));
        let n = name.clone();
        blocking(&name, Phase::Start, t.boot, move || {
            let up = |e: remote::UploadError| match e {
                remote::UploadError::Local(path, why) => BackendError::Io { vm: n.clone(), what: format!("read {} to upload it", path.display()), source: std::io::Error::other(why) },
                remote::UploadError::Libvirt(source) => lv_src(&n, Phase::Start, "upload a guest file into the run's pool")(source),
            };
            let kernel = match &machine.guest.boot {
                crate::guest::Boot::DirectKernel { kernel, initrd, .. } => Some((pool.base(kernel, "raw").map_err(up)?.0, pool.base(initrd, "raw").map_err(up)?.0)),
                crate::guest::Boot::Disk => None,
            };
            let (backing, format) = match backing {
                Some(b) => (b, "qcow2".to_string()),
                None => (pool.base(&machine.guest.disk, &machine.guest.disk_format).map_err(up)?.0, machine.guest.disk_format.clone()),
            };
            let disk = pool.overlay(&format!("{n}.disk.qcow2"), &backing, &format).map_err(lv_src(&n, Phase::Start, "make the VM's disk overlay in the run's pool"))?;
            if machine.devices.seed {
                pool.upload(&dir.join("seed.iso"), &format!("{n}.seed.iso")).map_err(up)?;
            }
            Ok((PathBuf::from(disk), Files::Pool { prefix: pool.prefix(&n), kernel }))
        })
        .await
    }

    async fn read_image(&self, vm: &str, path: &Path, t: Duration) -> Result<SaveImage, BackendError> {
        let pool = self.0.clone();
        let p = path.display().to_string();
        let n = vm.to_string();
        let (head, total) = blocking(vm, Phase::IncomingMigration, t, move || {
            let read = |len| pool.read_head(&p, len).map_err(lv_src(&n, Phase::IncomingMigration, "read the save image's header through libvirt"));
            let (head, total) = read(super::save_image::HEADER_LEN as u64)?;
            match super::save_image::data_len(&head) {
                Some(d) => read(super::save_image::HEADER_LEN as u64 + d as u64),
                None => Ok((head, total)),
            }
        })
        .await?;
        SaveImage::parse(&head, total).map_err(|source| BackendError::vmm(vm, format!("save image {}", path.display()), source))
    }

    /// The header and data region are encoded from `img` (a rewrite changes neither its data
    /// length nor its cookie), so the image is not downloaded again.
    async fn write_image_xml(&self, vm: &str, path: &Path, img: &SaveImage, xml: &str, t: Duration) -> Result<(), BackendError> {
        let bytes = img.encode_with_xml(xml).map_err(|source| BackendError::vmm(vm, format!("save image {}", path.display()), source))?;
        let pool = self.0.clone();
        let (p, n) = (path.display().to_string(), vm.to_string());
        blocking(vm, Phase::IncomingMigration, t, move || pool.write_head(&p, &bytes).map_err(lv_src(&n, Phase::IncomingMigration, "rewrite the save image's XML through libvirt"))).await
    }

    fn prefix(&self, name: &str, _dir: &Path) -> String {
        self.0.prefix(name)
    }

    fn snapshot_paths(&self, name: &str, _snap_dir: &Path, _vm_dir: &Path, n: u32) -> (PathBuf, PathBuf) {
        let p = self.0.prefix(name);
        // Numbered like the overlay: a shared source is snapshotted again (clones/source.rs), and
        // the restore caches each image's header by path (measured: a second snapshot written
        // over `<vm>.save` was restored with the first one's cached XML, and libvirt refused it).
        (PathBuf::from(format!("{p}save-{n}")), PathBuf::from(format!("{p}disk-after-snapshot-{n}.qcow2")))
    }

    async fn snapshot_written(&self, vm: &str, memory: &Path, disk: &Path, frozen: &Path, t: Duration) -> Result<Option<u64>, BackendError> {
        // libvirt wrote the image and the new overlay into the pool's directory (0700; QEMU's
        // save file is created 0600: qemu_saveimage.c, qemuSaveImageCreate opens it O_CREAT with
        // S_IRUSR | S_IWUSR): list them as volumes, to read and delete.
        let pool = self.0.clone();
        let (mem, disk, frozen) = (memory.display().to_string(), disk.display().to_string(), frozen.display().to_string());
        let n = vm.to_string();
        blocking(vm, Phase::Snapshot, t, move || {
            pool.adopt(&disk, &frozen).map_err(lv_src(&n, Phase::Snapshot, "list the snapshot's files in the run's pool"))?;
            pool.owns(&[&mem, &disk]);
            Ok(pool.allocation(&mem))
        })
        .await
    }

    fn opener(&self) -> crate::backend::Opener {
        let pool = self.0.clone();
        // Read through a download stream: nothing of the guest's memory is copied here.
        Arc::new(move |path: &Path| {
            let (r, len) = pool.reader(&path.display().to_string(), 0).map_err(|e| std::io::Error::other(format!("{} (through libvirt)", e)))?;
            Ok((Box::new(r) as Box<dyn std::io::Read + Send>, len))
        })
    }
}
