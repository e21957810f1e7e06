//! [`SimDisk`]: Weir's [`Disk`] on turmoil's simulated filesystem, so that the
//! broker's storage runs unchanged inside a simulation and loses what a crash
//! would lose.
//!
//! # Where it works
//!
//! turmoil keeps one filesystem per host and finds it through the host that
//! is currently running. Every method here must be called from inside a
//! turmoil host or client (or a thread that entered a `turmoil::fs::FsHandle`);
//! anywhere else turmoil panics. That is a wiring mistake, not an I/O error,
//! so it is not turned into one. Use one `SimDisk` per host, ideally created
//! when the host's software starts (see "Mitigations" for why).
//!
//! # Durability (turmoil 0.7.2, checked by `sim/tests/sim_disk.rs`)
//!
//! - Appends and truncates are pending until [`DiskFile::sync`] of the file;
//!   `Sim::crash` drops pending ones and keeps synced ones.
//! - Creations, renames and removals are pending until [`Disk::sync_dir`] of
//!   the parent. A file whose data was synced but whose entry was not is gone
//!   after a crash; one whose entry was synced but not its data is empty.
//! - Laxer than POSIX: `sync_dir(d)` also makes `d`'s own creation durable,
//!   and files under a directory whose creation was lost stay reachable by
//!   full path (though not by listing the missing directory).
//! - Reads see pending writes.
//!
//! # Mitigations
//!
//! turmoil's model is keyed by path, not inode, and its `sync_dir` applies a
//! directory's pending entry operations after data already synced to the
//! same path. Used raw, it loses data with no crash at all: a file removed
//! and created again under the same name before the directory sync comes back
//! empty, a directory removed and re-created vanishes at the next sync, writes
//! pending when a file is renamed are dropped, and files under a removed
//! directory survive in its place. SimDisk avoids these with moves a real
//! kernel may also make (it may write back data or directory entries at any
//! time, so they only make things durable earlier than asked):
//! - before removing or renaming a file with unsynced appends or truncates
//!   made through this disk, it syncs the file's data;
//! - before an operation on a name whose entry changed (removed, renamed from
//!   or to) since its parent was last synced, it syncs the parent;
//! - `remove_dir_all` syncs each directory once emptied, before removing it;
//!   the top directory's removal stays pending until its parent is synced.
//!
//! What it remembers for that is per `SimDisk` value, not per host, and not
//! reset by a crash; stale memories only cause extra syncs.
//!
//! Not mitigated: a file handle stays bound to the path it was opened with.
//! Do not use a handle after renaming or removing its path; reopen instead.

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use turmoil::fs::shim::std::fs as simfs;
use weir::io::{Disk, DiskFile, DiskSpace, FileSync, OpenMode, SyncHandle};

/// The unit the simulated disk writes whole or not at all.
const SECTOR_BYTES: u64 = 512;

/// The current turmoil host's simulated filesystem.
#[derive(Debug, Default, Clone)]
pub struct SimDisk {
    unsynced: Arc<Mutex<Unsynced>>,
    /// What [`Disk::space`] reports, shared by the clones of this disk (a
    /// nemesis fills the disk by setting it); None: a disk that never fills.
    space: SpaceHandle,
}

/// What a [`SimDisk`] reports as its free space, shared with whoever fills
/// it (None: a disk that never fills).
pub type SpaceHandle = Arc<Mutex<Option<DiskSpace>>>;

/// What this disk did that turmoil has not made durable yet, as far as the
/// mitigations need to know.
#[derive(Debug, Default)]
struct Unsynced {
    /// Files appended to or truncated since their last sync.
    dirty_files: HashSet<PathBuf>,
    /// Names whose entry changed since their parent's last sync.
    moved_names: HashSet<PathBuf>,
}

#[derive(Debug)]
struct SimFile {
    file: simfs::File,
    path: PathBuf,
    /// Cached length, as in the real disk: appends are the only writes.
    len: u64,
    unsynced: Arc<Mutex<Unsynced>>,
}

impl SimDisk {
    /// A disk for the host that is running when its methods are called.
    pub fn new() -> Self {
        Self::default()
    }

    /// A disk whose reported space is `space`, shared with its owner: a
    /// nemesis keeps the handle across restarts of the host.
    pub fn with_space(space: SpaceHandle) -> Self {
        SimDisk {
            space,
            ..Self::default()
        }
    }

    /// Makes [`Disk::space`] report `space` (None: a disk that never fills)
    /// on this disk and its clones. turmoil's filesystem has no size, so
    /// this is how a simulation runs a broker out of space.
    pub fn set_space(&self, space: Option<DiskSpace>) {
        *lock(&self.space) = space;
    }

    /// Syncs the data of `path` if this disk left unsynced writes in it.
    fn flush_if_dirty(&self, path: &Path) -> io::Result<()> {
        if !lock(&self.unsynced).dirty_files.contains(path) {
            return Ok(());
        }
        let file = simfs::File::open(path).map_err(|e| with_path(e, "open", path))?;
        file.sync_data().map_err(|e| with_path(e, "fsync", path))?;
        lock(&self.unsynced).dirty_files.remove(path);
        Ok(())
    }

    /// Syncs the parent of `path` if the entry at `path` changed since.
    fn settle(&self, path: &Path) -> io::Result<()> {
        let moved = lock(&self.unsynced).moved_names.contains(path);
        match path.parent() {
            Some(parent) if moved => self.sync_dir(parent),
            _ => Ok(()),
        }
    }

    /// Notes that the entry at `path` changed.
    fn moved(&self, path: &Path) {
        lock(&self.unsynced).moved_names.insert(path.to_path_buf());
    }

    /// Removes everything below `dir`, syncs it, then removes `dir` itself.
    fn remove_tree(&self, dir: &Path) -> io::Result<()> {
        let entries = simfs::read_dir(dir).map_err(|e| with_path(e, "list", dir))?;
        for entry in entries {
            let path = entry?.path();
            if simfs::metadata(&path).is_ok_and(|m| m.is_dir()) {
                self.remove_tree(&path)?;
            } else {
                self.remove_file(&path)?;
            }
        }
        // Durable removals of the contents first: otherwise turmoil keeps
        // them on record under the removed directory's path.
        self.sync_dir(dir)?;
        simfs::remove_dir(dir).map_err(|e| with_path(e, "remove directory", dir))?;
        self.moved(dir);
        Ok(())
    }
}

impl Disk for SimDisk {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn DiskFile>> {
        self.settle(path)?;
        let mut opts = simfs::OpenOptions::new();
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
        let stat = file.metadata().map_err(|e| with_path(e, "stat", path))?;
        if mode == OpenMode::CreateTruncate {
            lock(&self.unsynced).dirty_files.insert(path.to_path_buf());
        }
        Ok(Box::new(SimFile {
            file,
            path: path.to_path_buf(),
            len: stat.len(),
            unsynced: Arc::clone(&self.unsynced),
        }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        // By hand rather than turmoil's create_dir_all, to settle each
        // missing directory's name before creating it.
        let mut missing: Vec<&Path> = path
            .ancestors()
            .take_while(|p| !p.as_os_str().is_empty() && !simfs::exists(p))
            .collect();
        while let Some(dir) = missing.pop() {
            self.settle(dir)?;
            simfs::create_dir(dir).map_err(|e| with_path(e, "create directory", dir))?;
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let entries = simfs::read_dir(path).map_err(|e| with_path(e, "list", path))?;
        let mut names = Vec::new();
        for entry in entries {
            // Names that are not UTF-8 are not ours; skip them like RealDisk.
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        // turmoil collects entries through a HashSet: the order is arbitrary.
        names.sort();
        Ok(names)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.flush_if_dirty(from)?;
        self.settle(from)?;
        self.settle(to)?;
        simfs::rename(from, to).map_err(|e| with_path(e, "rename", from))?;
        self.moved(from);
        self.moved(to);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        // Otherwise turmoil would keep the pending writes of the removed
        // file and apply them to the next file created under its name.
        self.flush_if_dirty(path)?;
        self.settle(path)?;
        simfs::remove_file(path).map_err(|e| with_path(e, "remove", path))?;
        self.moved(path);
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.settle(path)?;
        self.remove_tree(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        simfs::sync_dir(path).map_err(|e| with_path(e, "fsync directory", path))?;
        lock(&self.unsynced)
            .moved_names
            .retain(|p| p.parent() != Some(path));
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        simfs::exists(path)
    }

    fn space(&self, _path: &Path) -> io::Result<DiskSpace> {
        Ok(lock(&self.space).unwrap_or(DiskSpace::UNLIMITED))
    }
}

/// A [`SimFile`]'s sync handle. The simulation runs one host at a time on
/// one thread, so nothing appends between the sync and the note that the
/// file is clean.
#[derive(Debug)]
struct SimSync {
    file: simfs::File,
    path: PathBuf,
    unsynced: Arc<Mutex<Unsynced>>,
}

impl FileSync for SimSync {
    fn sync(&self) -> io::Result<()> {
        sync_data(&self.file, &self.path, &self.unsynced)
    }
}

/// Syncs `file` (at `path`) and notes that it is clean. In turmoil 0.7.2
/// sync_data and sync_all both make the file's pending writes and length
/// changes (set_len) durable, and neither makes its directory entry
/// durable; sync_data matches RealDisk.
fn sync_data(file: &simfs::File, path: &Path, unsynced: &Mutex<Unsynced>) -> io::Result<()> {
    file.sync_data().map_err(|e| with_path(e, "fsync", path))?;
    lock(unsynced).dirty_files.remove(path);
    Ok(())
}

impl SimFile {
    fn mark_dirty(&self) {
        lock(&self.unsynced).dirty_files.insert(self.path.clone());
    }
}

impl DiskFile for SimFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.file
            .read_at(buf, pos)
            .map_err(|e| with_path(e, "read", &self.path))
    }

    /// Written as a disk writes it: whole 512-byte sectors, aligned in the
    /// file, each one write of its own, the first one rewritten from its
    /// start with the bytes already in it (as writeback writes whole
    /// pages). turmoil keeps or loses each pending write on its own in a
    /// crash (a random prefix of its 512-byte blocks, counted from the
    /// write's start), so one unaligned write per append would let it lose
    /// an earlier batch's bytes in the middle of a sector whose later bytes
    /// landed, which no disk does. Sector by sector, a crash loses any set
    /// of whole sectors of unsynced data, each keeping what it held before.
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let start = self.len - self.len % SECTOR_BYTES;
        let mut sectors = vec![0u8; (self.len - start) as usize];
        weir::io::read_exact_at(self, &mut sectors, start)?;
        sectors.extend_from_slice(data);
        for (i, sector) in sectors.chunks(SECTOR_BYTES as usize).enumerate() {
            let at = start + i as u64 * SECTOR_BYTES;
            if let Err(e) = self.file.write_all_at(sector, at) {
                // turmoil checks capacity before each write: undo the
                // sectors that went in (best effort; storage must not
                // assume a failed append left nothing anyway).
                let _ = self.file.set_len(self.len);
                return Err(with_path(e, "append to", &self.path));
            }
        }
        self.len += data.len() as u64;
        self.mark_dirty();
        Ok(())
    }

    /// One append of the concatenation, as the real file makes one
    /// `pwritev` of the parts.
    fn append_parts(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        self.append(&parts.concat())
    }

    fn sync(&self) -> io::Result<()> {
        sync_data(&self.file, &self.path, &self.unsynced)
    }

    fn sync_handle(&self) -> io::Result<SyncHandle> {
        let file = self
            .file
            .try_clone()
            .map_err(|e| with_path(e, "reopen for fsync", &self.path))?;
        Ok(Arc::new(SimSync {
            file,
            path: self.path.clone(),
            unsynced: Arc::clone(&self.unsynced),
        }))
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file
            .set_len(len)
            .map_err(|e| with_path(e, "truncate", &self.path))?;
        self.len = len;
        self.mark_dirty();
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.len)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // What these hold (hints for extra syncs, a reported space) is safe to
    // keep using in whatever state a panicking holder left it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Adds the operation and path to `e`, and gives turmoil's errors, which are
/// all `ErrorKind::Other` with a strerror-like message, the kind std would
/// give the real error, so callers can match on kinds as with RealDisk.
fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(kind_of(&e), format!("{what} {}: {e}", path.display()))
}

fn kind_of(e: &io::Error) -> io::ErrorKind {
    if e.kind() != io::ErrorKind::Other {
        return e.kind();
    }
    match e.to_string().as_str() {
        "No such file or directory" => io::ErrorKind::NotFound,
        "File exists" => io::ErrorKind::AlreadyExists,
        "No space left on device" => io::ErrorKind::StorageFull,
        "Directory not empty" => io::ErrorKind::DirectoryNotEmpty,
        "Is a directory" => io::ErrorKind::IsADirectory,
        "Not a directory" => io::ErrorKind::NotADirectory,
        _ => io::ErrorKind::Other,
    }
}
