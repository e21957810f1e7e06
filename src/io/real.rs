//! The real disk: `std::fs` files with real fsync and directory fsync.

use super::{Disk, DiskFile, DiskSpace, FileSync, OpenMode, SyncHandle};
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// Files on the machine's filesystem.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealDisk;

#[derive(Debug)]
struct RealFile {
    /// Shared with the sync handles: fsync on any descriptor of a file
    /// syncs the file.
    file: Arc<File>,
    /// Cached length: appends are the only writes, so the end is known
    /// without a metadata call per append.
    len: u64,
}

impl Disk for RealDisk {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn DiskFile>> {
        let mut opts = OpenOptions::new();
        opts.read(true).write(true);
        match mode {
            OpenMode::Existing => {}
            OpenMode::CreateNew => {
                opts.create_new(true);
            }
            OpenMode::CreateTruncate => {
                opts.create(true).truncate(true);
            }
        }
        let file = opts.open(path).map_err(|e| with_path(e, "open", path))?;
        let len = file.metadata()?.len();
        Ok(Box::new(RealFile {
            file: Arc::new(file),
            len,
        }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path).map_err(|e| with_path(e, "create directory", path))
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path).map_err(|e| with_path(e, "list", path))? {
            let entry = entry?;
            match entry.file_name().into_string() {
                Ok(name) => names.push(name),
                // A name that is not UTF-8 is not one of ours; skip it.
                Err(_) => continue,
            }
        }
        names.sort();
        Ok(names)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to).map_err(|e| with_path(e, "rename", from))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path).map_err(|e| with_path(e, "remove", path))
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(path).map_err(|e| with_path(e, "remove directory", path))
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        // On Linux a directory opens read-only like a file, and fsync on it
        // makes its entries durable.
        let dir = File::open(path).map_err(|e| with_path(e, "open directory", path))?;
        dir.sync_all()
            .map_err(|e| with_path(e, "fsync directory", path))
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn space(&self, path: &Path) -> io::Result<DiskSpace> {
        use std::os::unix::ffi::OsStrExt;
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: `c_path` is a valid NUL-terminated string and `stat` a
        // valid, writable statvfs that the call fills.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
        if rc != 0 {
            return Err(with_path(io::Error::last_os_error(), "statvfs", path));
        }
        // f_bavail, not f_bfree: the blocks reserved for root are not ours.
        let block = stat.f_frsize as u64;
        Ok(DiskSpace {
            free_bytes: (stat.f_bavail as u64).saturating_mul(block),
            total_bytes: (stat.f_blocks as u64).saturating_mul(block),
        })
    }
}

impl DiskFile for RealFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        loop {
            match self.file.read_at(buf, pos) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }

    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        // Positional write at the cached end: no shared file cursor to race on.
        self.file.write_all_at(data, self.len)?;
        self.len += data.len() as u64;
        Ok(())
    }

    fn append_parts(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        let mut rest = &mut slices[..];
        // Drops leading empty parts, so that "all written" is "none left".
        IoSlice::advance_slices(&mut rest, 0);
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut written = 0usize;
        // Each pass writes at least one byte or returns: at most `total`
        // passes (one in practice).
        while !rest.is_empty() {
            let n = match pwritev_at(&self.file, rest, self.len + written as u64) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            written += n;
            IoSlice::advance_slices(&mut rest, n);
        }
        debug_assert_eq!(written, total);
        self.len += written as u64;
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        // sync_data persists the data and the size (the metadata needed to
        // read it back), which is all the log needs.
        self.file.sync_data()
    }

    fn sync_handle(&self) -> io::Result<SyncHandle> {
        Ok(Arc::new(RealSync(Arc::clone(&self.file))))
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.len = len;
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.len)
    }
}

/// One `pwritev(2)` of `bufs` at `pos`: how many bytes it wrote.
fn pwritev_at(file: &File, bufs: &[IoSlice<'_>], pos: u64) -> io::Result<usize> {
    let count = libc::c_int::try_from(bufs.len().min(IOV_MAX))
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let pos =
        libc::off_t::try_from(pos).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `IoSlice` is guaranteed ABI-compatible with `struct iovec` on
    // Unix; `bufs` and the memory it points to outlive the call, and `count`
    // does not exceed its length; the descriptor is open while `file` is.
    let n = unsafe {
        libc::pwritev(
            file.as_raw_fd(),
            bufs.as_ptr().cast::<libc::iovec>(),
            count,
            pos,
        )
    };
    // A negative return is an error (errno); anything else a byte count.
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Buffers per `pwritev` call at most (Linux's `IOV_MAX`).
const IOV_MAX: usize = 1024;

impl Drop for RealFile {
    fn drop(&mut self) {
        // Nothing buffered in user space: appends go straight to the kernel.
        let _ = (&*self.file).flush();
    }
}

/// [`RealFile`]'s sync handle.
#[derive(Debug)]
struct RealSync(Arc<File>);

impl FileSync for RealSync {
    fn sync(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn drop_cache(&self, len: u64) -> io::Result<()> {
        let len = libc::off_t::try_from(len).map_err(io::Error::other)?;
        // SAFETY: posix_fadvise only reads its integer arguments; the
        // descriptor is open while `self.0` is.
        let err =
            unsafe { libc::posix_fadvise(self.0.as_raw_fd(), 0, len, libc::POSIX_FADV_DONTNEED) };
        // posix_fadvise returns the error number instead of setting errno.
        match err {
            0 => Ok(()),
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }
}

fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parts land one after another at the end, empty ones included, as the
    /// concatenation would; the cached length follows.
    #[test]
    fn append_parts_writes_the_concatenation_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = RealDisk.open(&path, OpenMode::CreateNew).unwrap();
        f.append(b"head:").unwrap();
        let big = vec![7u8; 300_000];
        f.append_parts(&[b"ab", b"", &big, b"z"]).unwrap();
        f.append_parts(&[]).unwrap();
        f.append(b"!").unwrap();
        let mut expected = b"head:ab".to_vec();
        expected.extend_from_slice(&big);
        expected.extend_from_slice(b"z!");
        assert_eq!(f.len().unwrap(), expected.len() as u64);
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }
}
