//! Reading the user's input files (scenario files, save images, reports) without trusting them.
//!
//! Measured in the hardening issue (11): a FIFO given as a scenario file or save image blocked
//! the harness forever, deaf to SIGTERM (a blocking `open(2)` of a FIFO waits for a writer), and
//! `/dev/zero` as a scenario file grew memory until the process died. So every input is opened
//! with `O_NONBLOCK` (a FIFO then opens at once), must be a regular file, and is read up to a
//! bound: anything else is refused with a message that says what the file is.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a regular file (it is {0}); give a regular file")]
    NotRegular(&'static str),
    #[error("too large: {size} bytes, and at most {max} are read")]
    TooLarge { size: u64, max: u64 },
    #[error("not UTF-8 text (first bad byte at offset {0})")]
    NotUtf8(usize),
}

/// Open `path` for reading, refusing anything that is not a regular file, without blocking on
/// FIFOs. The returned file is in blocking mode again (regular files never block).
pub fn open_regular(path: &Path) -> Result<File, InputError> {
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    let t = f.metadata()?.file_type();
    if !t.is_file() {
        let what = if t.is_dir() {
            "a directory"
        } else if t.is_fifo() {
            "a FIFO"
        } else if t.is_char_device() {
            "a character device"
        } else if t.is_block_device() {
            "a block device"
        } else if t.is_socket() {
            "a socket"
        } else {
            "not a file"
        };
        return Err(InputError::NotRegular(what));
    }
    // SAFETY: fcntl on a descriptor we own; clears O_NONBLOCK.
    unsafe {
        use std::os::fd::AsRawFd;
        let fd = f.as_raw_fd();
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl >= 0 {
            libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
        }
    }
    Ok(f)
}

/// The whole of a regular file of at most `max` bytes.
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, InputError> {
    let f = open_regular(path)?;
    let size = f.metadata()?.len();
    if size > max {
        return Err(InputError::TooLarge { size, max });
    }
    let mut buf = Vec::with_capacity(size as usize);
    // A file that grows while it is read is still cut at the bound.
    f.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(InputError::TooLarge { size: buf.len() as u64, max });
    }
    Ok(buf)
}

/// [`read_bounded`] as UTF-8 text.
pub fn read_text(path: &Path, max: u64) -> Result<String, InputError> {
    let b = read_bounded(path, max)?;
    String::from_utf8(b).map_err(|e| InputError::NotUtf8(e.utf8_error().valid_up_to()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_a_device_and_a_directory_are_refused_at_once() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Without O_NONBLOCK this open would wait for a writer forever.
        assert!(matches!(read_text(&fifo, 1 << 20), Err(InputError::NotRegular("a FIFO"))));
        assert!(matches!(read_text(Path::new("/dev/zero"), 1 << 20), Err(InputError::NotRegular("a character device"))));
        assert!(matches!(read_text(d.path(), 1 << 20), Err(InputError::NotRegular("a directory"))));
    }

    #[test]
    fn size_and_encoding_are_bounded() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("big");
        std::fs::write(&p, vec![b'a'; 2000]).unwrap();
        assert!(matches!(read_text(&p, 1000), Err(InputError::TooLarge { size: 2000, max: 1000 })));
        assert_eq!(read_text(&p, 2000).unwrap().len(), 2000);
        std::fs::write(&p, b"ok\xffno").unwrap();
        assert!(matches!(read_text(&p, 1000), Err(InputError::NotUtf8(2))));
    }
}
