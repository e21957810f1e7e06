//! The io layer: the narrow interfaces through which everything above reaches
//! the disk (and, later, the network), with their real implementations.
//!
//! Storage never names `std::fs`: it holds a [`DiskRef`] and asks it for files.
//! Production hands it [`RealDisk`]; the simulator hands it turmoil's
//! simulated filesystem (in `weir-sim`, which loses unsynced writes when a
//! host crashes); either may be wrapped in [`FaultyDisk`] to inject errors
//! drawn from a seeded RNG. The storage code above is the same in every case.
//!
//! The interface is synchronous on purpose. A simulated disk is memory, and a
//! real append is a page-cache copy; the one slow call is `sync`, which the
//! replication layer batches across partitions (group commit) and runs where
//! blocking is allowed. Keeping storage synchronous keeps it deterministic and
//! lets the same code run under turmoil's single-threaded scheduler.

use std::fmt::Debug;
use std::io;
use std::path::Path;
use std::sync::Arc;

pub mod clock;
mod faulty;
pub mod frame;
pub mod net;
pub mod process;
mod real;

pub use clock::{Clock, ClockRef, TokioClock};
pub use faulty::{FaultConfig, FaultHandle, FaultKind, FaultStats, FaultyDisk, InjectedFault};
pub use frame::{
    decode_message, write_frame, write_message, FrameError, FrameReader, FrameWriter,
    FRAME_BYTES_MAX,
};
pub use net::{
    BoxFuture, BoxStream, Listener, Network, NetworkRef, Stream, TcpNetwork,
    CONNECT_TIMEOUT_DEFAULT,
};
pub use real::RealDisk;

/// A shared handle to a disk implementation.
pub type DiskRef = Arc<dyn Disk>;

/// How to open a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Open an existing file for reading and writing; fail if it is missing.
    Existing,
    /// Create a new file; fail if it already exists.
    CreateNew,
    /// Create the file if missing, truncating it to zero length if present.
    CreateTruncate,
}

/// Everything storage does with a directory tree.
///
/// Paths are absolute. Creations, removals and renames are durable only after
/// [`Disk::sync_dir`] on the parent directory: callers must do that before
/// relying on them (for example before acknowledging a write that lives in a
/// freshly created segment).
pub trait Disk: Send + Sync + Debug + 'static {
    /// Opens a file in the given mode.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn DiskFile>>;
    /// Creates a directory and its missing parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Names of the entries of a directory, sorted bytewise so that callers
    /// see the same order on every implementation.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Atomically replaces `to` with `from`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes a directory and everything below it.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, removals, renames) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Whether a file or directory exists at `path`.
    fn exists(&self, path: &Path) -> bool;
    /// Free and total bytes of the filesystem holding `path` (statvfs on a
    /// real disk). The default, for test doubles, reports a disk that
    /// never fills.
    fn space(&self, _path: &Path) -> io::Result<DiskSpace> {
        Ok(DiskSpace::UNLIMITED)
    }
}

/// How much room a filesystem has, as [`Disk::space`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskSpace {
    /// Bytes an unprivileged writer may still use.
    pub free_bytes: u64,
    /// The filesystem's size.
    pub total_bytes: u64,
}

impl DiskSpace {
    /// A disk that never fills.
    pub const UNLIMITED: DiskSpace = DiskSpace {
        free_bytes: u64::MAX,
        total_bytes: u64::MAX,
    };
}

/// An open file. Reads are positional; writes append at the end, which is the
/// only way the log writes data (a truncate may move the end back first).
// `len` is fallible and storage never asks whether a file is empty, so an
// `is_empty` would be dead weight on every implementation.
#[allow(clippy::len_without_is_empty)]
pub trait DiskFile: Send + Sync + Debug {
    /// Reads up to `buf.len()` bytes at `pos`; returns how many were read
    /// (fewer only at the end of the file, or on a short read).
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize>;
    /// Appends all of `data` at the current end of the file.
    fn append(&mut self, data: &[u8]) -> io::Result<()>;
    /// Appends `parts`, one after another, as [`DiskFile::append`] of their
    /// concatenation would (a real file writes them in one vectored call;
    /// the default appends each in turn).
    fn append_parts(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        for part in parts {
            self.append(part)?;
        }
        Ok(())
    }
    /// Makes the file's data and size durable (fsync).
    fn sync(&self) -> io::Result<()>;
    /// A handle that syncs this file without borrowing it, so that a sync
    /// can run on another task while the owner goes on appending (the
    /// driver appends the next round's entries while the last round's
    /// fsync runs). A sync through it covers at least every append made
    /// before the call; it fails as [`DiskFile::sync`] would.
    fn sync_handle(&self) -> io::Result<SyncHandle>;
    /// Sets the file's length (the log only ever shrinks it).
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// The file's current length in bytes.
    fn len(&self) -> io::Result<u64>;
}

/// Syncs one open file; see [`DiskFile::sync_handle`].
pub trait FileSync: Send + Sync + Debug {
    fn sync(&self) -> io::Result<()>;
    /// Advises that the file's first `len` bytes, already synced, will not
    /// be read soon, so their cached pages can go. Advice only: doing
    /// nothing (the default) is always correct.
    fn drop_cache(&self, _len: u64) -> io::Result<()> {
        Ok(())
    }
}

/// A shared [`FileSync`].
pub type SyncHandle = std::sync::Arc<dyn FileSync>;

/// Reads exactly `buf.len()` bytes at `pos`, retrying short reads. Hitting the
/// end of the file first is an `UnexpectedEof` error.
pub fn read_exact_at(file: &dyn DiskFile, buf: &mut [u8], pos: u64) -> io::Result<()> {
    let mut done = 0usize;
    // A short read makes progress of at least one byte or ends the loop, so
    // the loop runs at most buf.len() + 1 times.
    while done < buf.len() {
        let n = file.read_at(&mut buf[done..], pos + done as u64)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read of {} bytes at position {pos} reached the end of the file after {done}",
                    buf.len()
                ),
            ));
        }
        done += n;
    }
    Ok(())
}
