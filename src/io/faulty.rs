//! Fault injection: [`FaultyDisk`] wraps any [`Disk`] and makes its
//! operations fail, come back short or come back corrupted, at rates given by
//! a [`FaultConfig`] and drawn from a seeded RNG.
//!
//! Everything random comes from one `ChaCha8Rng` seeded by the caller, shared
//! (behind a mutex) by the disk and every file opened through it. Under a
//! deterministic scheduler (turmoil runs all hosts on one thread) the same
//! seed and the same sequence of operations give the same faults. If several
//! threads use one `FaultyDisk` at once, the order of their draws decides who
//! gets which fault, and a run is only as repeatable as that order.
//!
//! What each fault does, and why:
//! - EIO or ENOSPC on append first appends a random prefix of the data (maybe
//!   empty) through to the inner file, then fails. A real failed `write` may
//!   leave a partial write behind, so storage must not assume a failed append
//!   left the file unchanged: it has to truncate back to its last known end
//!   (or give up on the file).
//! - EIO on sync does not call the inner sync: whatever was unsynced stays
//!   unsynced. On Linux a failed fsync may have dropped the dirty pages, so
//!   the only safe reaction is to treat the data as lost.
//! - EIO on read reads nothing. A short read returns between 1 and n-1 of
//!   the n bytes the inner read returned. A bit flip flips one random bit in
//!   the bytes returned; the file itself is never touched.
//! - EIO on directory sync does not call the inner `sync_dir`.
//!
//! Injected errors carry an [`InjectedFault`] as their payload, so a test can
//! tell them from real errors, and their message names the operation and the
//! path ("injected EIO on fsync of /data/x.log").
//!
//! Faults can be switched off and on at run time ([`FaultHandle`]): the
//! simulator runs a fault phase, then a quiet phase to check liveness. While
//! off, no random numbers are drawn.

use super::{Disk, DiskFile, DiskRef, FileSync, OpenMode, SyncHandle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The kinds of fault a [`FaultyDisk`] injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// EIO on append, after appending a random prefix.
    AppendEio,
    /// ENOSPC on append, after appending a random prefix.
    AppendEnospc,
    /// EIO on file sync; the inner sync is not called.
    SyncEio,
    /// EIO on directory sync; the inner sync is not called.
    SyncDirEio,
    /// EIO on read; nothing is read.
    ReadEio,
    /// A read returns fewer bytes than it could (at least one).
    ShortRead,
    /// One bit of the bytes a read returns is flipped.
    ReadBitFlip,
}

impl FaultKind {
    /// Every kind, in the order counters and configs print them.
    pub const ALL: [FaultKind; 7] = [
        FaultKind::AppendEio,
        FaultKind::AppendEnospc,
        FaultKind::SyncEio,
        FaultKind::SyncDirEio,
        FaultKind::ReadEio,
        FaultKind::ShortRead,
        FaultKind::ReadBitFlip,
    ];

    /// A short snake_case name, as printed by `Display` of configs and stats.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::AppendEio => "append_eio",
            FaultKind::AppendEnospc => "append_enospc",
            FaultKind::SyncEio => "sync_eio",
            FaultKind::SyncDirEio => "sync_dir_eio",
            FaultKind::ReadEio => "read_eio",
            FaultKind::ShortRead => "short_read",
            FaultKind::ReadBitFlip => "read_bit_flip",
        }
    }

    /// The largest probability [`FaultConfig::random`] draws for this kind.
    /// Errors are kept rare so that runs make progress between them; short
    /// reads are harmless to a correct caller, so they may be frequent.
    pub fn max_random_probability(self) -> f64 {
        match self {
            FaultKind::AppendEio | FaultKind::SyncEio | FaultKind::ReadEio => 0.02,
            FaultKind::AppendEnospc | FaultKind::SyncDirEio => 0.01,
            FaultKind::ShortRead => 0.2,
            FaultKind::ReadBitFlip => 0.005,
        }
    }
}

/// Per-operation probabilities (each in `0.0..=1.0`) of each fault.
///
/// A value at or below 0 (or NaN) never fires; a value at or above 1 always
/// fires. [`FaultConfig::none`] (also `Default`) injects nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FaultConfig {
    /// EIO on append.
    pub append_eio: f64,
    /// ENOSPC on append.
    pub append_enospc: f64,
    /// EIO on file sync.
    pub sync_eio: f64,
    /// EIO on directory sync (0 to leave directory syncs alone).
    pub sync_dir_eio: f64,
    /// EIO on read.
    pub read_eio: f64,
    /// Short read.
    pub short_read: f64,
    /// One flipped bit in what a read returns.
    pub read_bit_flip: f64,
}

impl FaultConfig {
    /// No faults at all.
    pub fn none() -> Self {
        Self::default()
    }

    /// Every kind of fault with the same probability.
    pub fn all(probability: f64) -> Self {
        let mut config = Self::none();
        for kind in FaultKind::ALL {
            *config.probability_mut(kind) = probability;
        }
        config
    }

    /// Draws a config for a simulation run: each kind is off with
    /// probability 1/4 (so some runs lack it entirely, and other faults get
    /// explored without it), otherwise uniform in
    /// `0..=kind.max_random_probability()`.
    pub fn random<R: Rng + ?Sized>(rng: &mut R) -> Self {
        let mut config = Self::none();
        for kind in FaultKind::ALL {
            if rng.gen_bool(0.75) {
                *config.probability_mut(kind) = rng.gen_range(0.0..=kind.max_random_probability());
            }
        }
        config
    }

    /// [`FaultConfig::random`] with a `ChaCha8Rng` seeded from `seed`.
    pub fn from_seed(seed: u64) -> Self {
        Self::random(&mut ChaCha8Rng::seed_from_u64(seed))
    }

    /// The probability of one kind of fault.
    pub fn probability(&self, kind: FaultKind) -> f64 {
        match kind {
            FaultKind::AppendEio => self.append_eio,
            FaultKind::AppendEnospc => self.append_enospc,
            FaultKind::SyncEio => self.sync_eio,
            FaultKind::SyncDirEio => self.sync_dir_eio,
            FaultKind::ReadEio => self.read_eio,
            FaultKind::ShortRead => self.short_read,
            FaultKind::ReadBitFlip => self.read_bit_flip,
        }
    }

    /// Mutable access to the probability of one kind of fault.
    pub fn probability_mut(&mut self, kind: FaultKind) -> &mut f64 {
        match kind {
            FaultKind::AppendEio => &mut self.append_eio,
            FaultKind::AppendEnospc => &mut self.append_enospc,
            FaultKind::SyncEio => &mut self.sync_eio,
            FaultKind::SyncDirEio => &mut self.sync_dir_eio,
            FaultKind::ReadEio => &mut self.read_eio,
            FaultKind::ShortRead => &mut self.short_read,
            FaultKind::ReadBitFlip => &mut self.read_bit_flip,
        }
    }
}

impl fmt::Display for FaultConfig {
    /// One line, `name=probability` per kind. Floats print in Rust's
    /// shortest round-trip form, so a printed config can be typed back in
    /// exactly.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, kind) in FaultKind::ALL.into_iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{}={}", kind.name(), self.probability(kind))?;
        }
        Ok(())
    }
}

/// How many faults of each kind a [`FaultyDisk`] has injected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    counts: [u64; FaultKind::ALL.len()],
}

impl FaultStats {
    /// Faults of one kind injected so far.
    pub fn get(&self, kind: FaultKind) -> u64 {
        self.counts[kind as usize]
    }

    /// Faults of all kinds injected so far.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

impl fmt::Display for FaultStats {
    /// One line, `name=count` per kind.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, kind) in FaultKind::ALL.into_iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{}={}", kind.name(), self.get(kind))?;
        }
        Ok(())
    }
}

/// The payload of every error a [`FaultyDisk`] injects; see
/// [`InjectedFault::of`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectedFault {
    /// Which fault.
    pub kind: FaultKind,
    /// The file or directory operated on.
    pub path: PathBuf,
    /// For a failed append, how many leading bytes of the data were written
    /// before the error.
    pub prefix_len_bytes: Option<usize>,
}

impl InjectedFault {
    /// The injected fault behind `e`, or `None` if `e` is a real error.
    pub fn of(e: &io::Error) -> Option<&InjectedFault> {
        e.get_ref()?.downcast_ref::<InjectedFault>()
    }

    fn into_error(self) -> io::Error {
        let kind = match self.kind {
            FaultKind::AppendEnospc => io::ErrorKind::StorageFull,
            // EIO has no stable ErrorKind of its own; std maps it to an
            // unstable "uncategorized" kind, so Other is the closest.
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, self)
    }
}

impl fmt::Display for InjectedFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (errno, op) = match self.kind {
            FaultKind::AppendEio => ("EIO", "append to"),
            FaultKind::AppendEnospc => ("ENOSPC", "append to"),
            FaultKind::SyncEio => ("EIO", "fsync of"),
            FaultKind::SyncDirEio => ("EIO", "fsync of directory"),
            FaultKind::ReadEio => ("EIO", "read of"),
            FaultKind::ShortRead => ("short read", "read of"),
            FaultKind::ReadBitFlip => ("bit flip", "read of"),
        };
        write!(f, "injected {errno} on {op} {}", self.path.display())?;
        if let Some(n) = self.prefix_len_bytes {
            write!(f, " (after writing its first {n} bytes)")?;
        }
        Ok(())
    }
}

impl std::error::Error for InjectedFault {}

/// State shared by a [`FaultyDisk`], its files and its handles.
#[derive(Debug)]
struct Injector {
    config: FaultConfig,
    enabled: AtomicBool,
    rng: Mutex<ChaCha8Rng>,
    counts: [AtomicU64; FaultKind::ALL.len()],
}

impl Injector {
    fn rng(&self) -> MutexGuard<'_, ChaCha8Rng> {
        // A panic while holding the lock cannot leave the RNG half-updated
        // in a way that matters (any state is a valid state), so a poisoned
        // lock is used as is rather than turned into a panic.
        self.rng.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Rolls for one fault of `kind` and counts it if it fires.
    fn fires(&self, kind: FaultKind) -> bool {
        // Relaxed: the flag guards no other memory; a fault drawn just
        // after someone flips it is indistinguishable from one just before.
        if !self.enabled.load(Ordering::Relaxed) {
            return false;
        }
        let p = self.config.probability(kind);
        // Written so that NaN never fires.
        if p.is_nan() || p <= 0.0 {
            return false;
        }
        // gen::<f64>() is in [0, 1), so p >= 1 always fires, and unlike
        // gen_bool this never panics on an out-of-range p.
        let hit = self.rng().gen::<f64>() < p;
        if hit {
            self.counts[kind as usize].fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    /// A random index in `0..n`; `n` must be positive.
    fn below(&self, n: usize) -> usize {
        self.rng().gen_range(0..n)
    }

    fn stats(&self) -> FaultStats {
        FaultStats {
            counts: self.counts.each_ref().map(|c| c.load(Ordering::Relaxed)),
        }
    }
}

/// A clonable handle on a [`FaultyDisk`]'s switch and counters, for code that
/// only holds the disk as a [`DiskRef`].
#[derive(Clone, Debug)]
pub struct FaultHandle {
    injector: Arc<Injector>,
}

impl FaultHandle {
    /// Switches fault injection on or off (it starts on).
    pub fn set_enabled(&self, enabled: bool) {
        self.injector.enabled.store(enabled, Ordering::Relaxed);
    }

    /// Whether faults are being injected.
    pub fn is_enabled(&self) -> bool {
        self.injector.enabled.load(Ordering::Relaxed)
    }

    /// Faults injected so far, per kind.
    pub fn stats(&self) -> FaultStats {
        self.injector.stats()
    }

    /// The probabilities in use.
    pub fn config(&self) -> FaultConfig {
        self.injector.config
    }
}

/// A disk that injects faults into the operations of an inner disk. See the
/// module documentation for what each fault does.
#[derive(Clone, Debug)]
pub struct FaultyDisk {
    inner: DiskRef,
    handle: FaultHandle,
}

impl FaultyDisk {
    /// Wraps `inner`, drawing faults from a `ChaCha8Rng` seeded with `seed`.
    /// Faults start switched on.
    pub fn new(inner: DiskRef, config: FaultConfig, seed: u64) -> Self {
        let injector = Injector {
            config,
            enabled: AtomicBool::new(true),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            counts: Default::default(),
        };
        let handle = FaultHandle {
            injector: Arc::new(injector),
        };
        FaultyDisk { inner, handle }
    }

    /// A handle that outlives the disk's concrete type (e.g. once it is
    /// boxed into a [`DiskRef`]).
    pub fn handle(&self) -> FaultHandle {
        self.handle.clone()
    }

    /// Switches fault injection on or off (it starts on).
    pub fn set_enabled(&self, enabled: bool) {
        self.handle.set_enabled(enabled);
    }

    /// Whether faults are being injected.
    pub fn is_enabled(&self) -> bool {
        self.handle.is_enabled()
    }

    /// Faults injected so far, per kind.
    pub fn stats(&self) -> FaultStats {
        self.handle.stats()
    }

    /// The probabilities in use.
    pub fn config(&self) -> FaultConfig {
        self.handle.config()
    }

    fn injector(&self) -> &Arc<Injector> {
        &self.handle.injector
    }
}

impl Disk for FaultyDisk {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn DiskFile>> {
        let inner = self.inner.open(path, mode)?;
        Ok(Box::new(FaultyFile {
            inner,
            path: path.to_path_buf(),
            injector: Arc::clone(self.injector()),
        }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dir(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_dir_all(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        if self.injector().fires(FaultKind::SyncDirEio) {
            return Err(injected(FaultKind::SyncDirEio, path, None));
        }
        self.inner.sync_dir(path)
    }

    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }

    fn space(&self, path: &Path) -> io::Result<super::DiskSpace> {
        self.inner.space(path)
    }
}

/// A file opened through a [`FaultyDisk`].
#[derive(Debug)]
struct FaultyFile {
    inner: Box<dyn DiskFile>,
    path: PathBuf,
    injector: Arc<Injector>,
}

impl FaultyFile {
    /// The append fault to inject now, if any (drawn in this order, one
    /// draw each, as every append does).
    fn append_fault(&self) -> Option<FaultKind> {
        [FaultKind::AppendEnospc, FaultKind::AppendEio]
            .into_iter()
            .find(|kind| self.injector.fires(*kind))
    }

    /// Appends a random prefix of `data` (possibly empty), then fails.
    fn fail_append(&mut self, kind: FaultKind, data: &[u8]) -> io::Result<()> {
        let prefix_len = if data.is_empty() {
            0
        } else {
            self.injector.below(data.len())
        };
        if prefix_len > 0 {
            // A real error while writing the prefix is reported instead of
            // the injected one: it is the more interesting of the two.
            self.inner.append(&data[..prefix_len])?;
        }
        Err(injected(kind, &self.path, Some(prefix_len)))
    }

    /// Cuts a read of `n` bytes short, to 1..n-1 bytes, if the fault fires.
    fn maybe_shorten(&self, n: usize) -> usize {
        if n >= 2 && self.injector.fires(FaultKind::ShortRead) {
            1 + self.injector.below(n - 1)
        } else {
            n
        }
    }

    /// Flips one random bit of `returned`, if the fault fires.
    fn maybe_flip(&self, returned: &mut [u8]) {
        if !returned.is_empty() && self.injector.fires(FaultKind::ReadBitFlip) {
            let byte = self.injector.below(returned.len());
            let bit = self.injector.below(8);
            returned[byte] ^= 1 << bit;
        }
    }
}

impl DiskFile for FaultyFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        if self.injector.fires(FaultKind::ReadEio) {
            return Err(injected(FaultKind::ReadEio, &self.path, None));
        }
        let n = self.inner.read_at(buf, pos)?;
        let n = self.maybe_shorten(n);
        self.maybe_flip(&mut buf[..n]);
        Ok(n)
    }

    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        match self.append_fault() {
            Some(kind) => self.fail_append(kind, data),
            None => self.inner.append(data),
        }
    }

    /// One append as far as faults go (the real file writes the parts in
    /// one call), so a batch draws its faults once, as before it was split.
    fn append_parts(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        match self.append_fault() {
            Some(kind) => self.fail_append(kind, &parts.concat()),
            None => self.inner.append_parts(parts),
        }
    }

    fn sync(&self) -> io::Result<()> {
        if self.injector.fires(FaultKind::SyncEio) {
            // The inner sync is skipped on purpose: the data stays unsynced.
            return Err(injected(FaultKind::SyncEio, &self.path, None));
        }
        self.inner.sync()
    }

    fn sync_handle(&self) -> io::Result<SyncHandle> {
        Ok(Arc::new(FaultySync {
            inner: self.inner.sync_handle()?,
            path: self.path.clone(),
            injector: Arc::clone(&self.injector),
        }))
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.inner.truncate(len)
    }

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
}

/// A [`FaultyFile`]'s sync handle: the same injected sync failures.
#[derive(Debug)]
struct FaultySync {
    inner: SyncHandle,
    path: PathBuf,
    injector: Arc<Injector>,
}

impl FileSync for FaultySync {
    fn sync(&self) -> io::Result<()> {
        if self.injector.fires(FaultKind::SyncEio) {
            return Err(injected(FaultKind::SyncEio, &self.path, None));
        }
        self.inner.sync()
    }

    fn drop_cache(&self, len: u64) -> io::Result<()> {
        self.inner.drop_cache(len)
    }
}

fn injected(kind: FaultKind, path: &Path, prefix_len_bytes: Option<usize>) -> io::Error {
    InjectedFault {
        kind,
        path: path.to_path_buf(),
        prefix_len_bytes,
    }
    .into_error()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{read_exact_at, RealDisk};
    use std::sync::atomic::AtomicUsize;
    use tempfile::TempDir;

    const DATA: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

    /// A RealDisk that counts the syncs that reach it, to show which injected
    /// faults skip the inner call.
    #[derive(Debug, Default)]
    struct SyncCounter {
        syncs: Arc<AtomicUsize>,
    }

    #[derive(Debug)]
    struct CountedFile {
        inner: Box<dyn DiskFile>,
        syncs: Arc<AtomicUsize>,
    }

    impl Disk for SyncCounter {
        fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn DiskFile>> {
            let inner = RealDisk.open(path, mode)?;
            let syncs = Arc::clone(&self.syncs);
            Ok(Box::new(CountedFile { inner, syncs }))
        }
        fn create_dir_all(&self, path: &Path) -> io::Result<()> {
            RealDisk.create_dir_all(path)
        }
        fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
            RealDisk.list_dir(path)
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            RealDisk.rename(from, to)
        }
        fn remove_file(&self, path: &Path) -> io::Result<()> {
            RealDisk.remove_file(path)
        }
        fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
            RealDisk.remove_dir_all(path)
        }
        fn sync_dir(&self, path: &Path) -> io::Result<()> {
            self.syncs.fetch_add(1, Ordering::Relaxed);
            RealDisk.sync_dir(path)
        }
        fn exists(&self, path: &Path) -> bool {
            RealDisk.exists(path)
        }
    }

    impl DiskFile for CountedFile {
        fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
            self.inner.read_at(buf, pos)
        }
        fn append(&mut self, data: &[u8]) -> io::Result<()> {
            self.inner.append(data)
        }
        fn sync(&self) -> io::Result<()> {
            self.syncs.fetch_add(1, Ordering::Relaxed);
            self.inner.sync()
        }
        fn sync_handle(&self) -> io::Result<SyncHandle> {
            // Not counted: these tests sync through the file.
            self.inner.sync_handle()
        }
        fn truncate(&mut self, len: u64) -> io::Result<()> {
            self.inner.truncate(len)
        }
        fn len(&self) -> io::Result<u64> {
            self.inner.len()
        }
    }

    fn only(kind: FaultKind, probability: f64) -> FaultConfig {
        let mut config = FaultConfig::none();
        *config.probability_mut(kind) = probability;
        config
    }

    fn faulty(config: FaultConfig, seed: u64) -> FaultyDisk {
        FaultyDisk::new(Arc::new(RealDisk), config, seed)
    }

    /// A file holding DATA, written through the real disk.
    fn data_file(dir: &TempDir) -> PathBuf {
        let path = dir.path().join("data.log");
        let mut file = RealDisk.open(&path, OpenMode::CreateNew).unwrap();
        file.append(DATA).unwrap();
        path
    }

    /// What the real disk holds at `path`.
    fn contents(path: &Path) -> Vec<u8> {
        let file = RealDisk.open(path, OpenMode::Existing).unwrap();
        let mut buf = vec![0; file.len().unwrap() as usize];
        read_exact_at(file.as_ref(), &mut buf, 0).unwrap();
        buf
    }

    fn assert_injected(e: &io::Error, kind: FaultKind, path: &Path) {
        let fault = InjectedFault::of(e).expect("error should be injected");
        assert_eq!(fault.kind, kind);
        assert_eq!(fault.path, path);
        let message = e.to_string();
        assert!(message.starts_with("injected "), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
    }

    #[test]
    fn append_faults_fire_after_writing_a_strict_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let mut saw_nonempty_prefix = false;
        for (seed, kind) in
            (0..20).flat_map(|s| [(s, FaultKind::AppendEio), (s, FaultKind::AppendEnospc)])
        {
            let path = dir.path().join(format!("{seed}-{}.log", kind.name()));
            let disk = faulty(only(kind, 1.0), seed);
            let mut file = disk.open(&path, OpenMode::CreateNew).unwrap();
            let e = file.append(DATA).unwrap_err();
            assert_injected(&e, kind, &path);
            let prefix_len = InjectedFault::of(&e).unwrap().prefix_len_bytes.unwrap();
            assert!(prefix_len < DATA.len());
            saw_nonempty_prefix |= prefix_len > 0;
            assert_eq!(contents(&path), &DATA[..prefix_len]);
            assert_eq!(file.len().unwrap(), prefix_len as u64);
            assert_eq!(disk.stats().get(kind), 1);
            assert_eq!(disk.stats().total(), 1);
        }
        assert!(saw_nonempty_prefix);
    }

    #[test]
    fn append_error_kinds_and_messages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let disk = faulty(only(FaultKind::AppendEnospc, 1.0), 1);
        let e = disk
            .open(&path, OpenMode::CreateNew)
            .unwrap()
            .append(DATA)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        let expected = format!("injected ENOSPC on append to {}", path.display());
        assert!(e.to_string().starts_with(&expected), "{e}");
        let disk = faulty(only(FaultKind::AppendEio, 1.0), 1);
        let e = disk
            .open(&path, OpenMode::Existing)
            .unwrap()
            .append(DATA)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Other);
    }

    #[test]
    fn sync_eio_fires_and_skips_the_inner_sync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let counter = SyncCounter::default();
        let syncs = Arc::clone(&counter.syncs);
        let disk = FaultyDisk::new(Arc::new(counter), only(FaultKind::SyncEio, 1.0), 3);
        let mut file = disk.open(&path, OpenMode::CreateNew).unwrap();
        file.append(DATA).unwrap();
        let e = file.sync().unwrap_err();
        assert_injected(&e, FaultKind::SyncEio, &path);
        assert_eq!(
            e.to_string(),
            format!("injected EIO on fsync of {}", path.display())
        );
        assert_eq!(syncs.load(Ordering::Relaxed), 0);
        assert_eq!(disk.stats().get(FaultKind::SyncEio), 1);
    }

    #[test]
    fn sync_dir_eio_fires_and_skips_the_inner_sync() {
        let dir = tempfile::tempdir().unwrap();
        let counter = SyncCounter::default();
        let syncs = Arc::clone(&counter.syncs);
        let disk = FaultyDisk::new(Arc::new(counter), only(FaultKind::SyncDirEio, 1.0), 3);
        let e = disk.sync_dir(dir.path()).unwrap_err();
        assert_injected(&e, FaultKind::SyncDirEio, dir.path());
        assert!(e.to_string().contains("fsync of directory"), "{e}");
        assert_eq!(syncs.load(Ordering::Relaxed), 0);
        assert_eq!(disk.stats().get(FaultKind::SyncDirEio), 1);
    }

    #[test]
    fn read_eio_fires() {
        let dir = tempfile::tempdir().unwrap();
        let path = data_file(&dir);
        let disk = faulty(only(FaultKind::ReadEio, 1.0), 4);
        let file = disk.open(&path, OpenMode::Existing).unwrap();
        let e = file.read_at(&mut [0; 8], 0).unwrap_err();
        assert_injected(&e, FaultKind::ReadEio, &path);
        assert!(e.to_string().starts_with("injected EIO on read of"), "{e}");
        assert_eq!(disk.stats().get(FaultKind::ReadEio), 1);
    }

    #[test]
    fn short_reads_return_at_least_one_byte_and_fewer_than_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = data_file(&dir);
        let disk = faulty(only(FaultKind::ShortRead, 1.0), 5);
        let file = disk.open(&path, OpenMode::Existing).unwrap();
        for _ in 0..50 {
            let mut buf = vec![0; DATA.len()];
            let n = file.read_at(&mut buf, 0).unwrap();
            assert!((1..DATA.len()).contains(&n), "read {n} bytes");
            assert_eq!(&buf[..n], &DATA[..n]);
        }
        assert_eq!(disk.stats().get(FaultKind::ShortRead), 50);
        // A single byte cannot be cut short.
        assert_eq!(file.read_at(&mut [0; 1], 0).unwrap(), 1);
        // Retrying callers still get everything.
        let mut buf = vec![0; DATA.len()];
        read_exact_at(file.as_ref(), &mut buf, 0).unwrap();
        assert_eq!(buf, DATA);
    }

    #[test]
    fn bit_flip_changes_one_returned_bit_and_not_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = data_file(&dir);
        let disk = faulty(only(FaultKind::ReadBitFlip, 1.0), 6);
        let file = disk.open(&path, OpenMode::Existing).unwrap();
        for _ in 0..20 {
            let mut buf = vec![0; DATA.len()];
            assert_eq!(file.read_at(&mut buf, 0).unwrap(), DATA.len());
            let flipped: u32 = buf
                .iter()
                .zip(DATA)
                .map(|(a, b)| (a ^ b).count_ones())
                .sum();
            assert_eq!(flipped, 1);
        }
        assert_eq!(disk.stats().get(FaultKind::ReadBitFlip), 20);
        assert_eq!(contents(&path), DATA);
    }

    #[test]
    fn zero_probabilities_inject_nothing_and_data_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let disk = faulty(FaultConfig::all(0.0), 7);
        let mut file = disk.open(&path, OpenMode::CreateNew).unwrap();
        for _ in 0..100 {
            file.append(DATA).unwrap();
            file.sync().unwrap();
        }
        disk.sync_dir(dir.path()).unwrap();
        for i in 0..100u64 {
            let mut buf = vec![0; DATA.len()];
            assert_eq!(
                file.read_at(&mut buf, i * DATA.len() as u64).unwrap(),
                DATA.len()
            );
            assert_eq!(buf, DATA);
        }
        assert_eq!(disk.stats(), FaultStats::default());
        assert_eq!(FaultConfig::none(), FaultConfig::all(0.0));
    }

    /// Runs a fixed mix of operations and records what each returned,
    /// without paths, so that runs in different directories compare equal.
    fn run_script(seed: u64) -> (Vec<String>, FaultStats) {
        let dir = tempfile::tempdir().unwrap();
        let disk = faulty(FaultConfig::all(0.3), seed);
        let mut file = disk
            .open(&dir.path().join("x.log"), OpenMode::CreateNew)
            .unwrap();
        let describe = |r: io::Result<String>| match r {
            Ok(s) => s,
            Err(e) => format!(
                "{:?}",
                InjectedFault::of(&e).map(|f| (f.kind, f.prefix_len_bytes))
            ),
        };
        let mut outcomes = Vec::new();
        for i in 0..200 {
            let outcome = match i % 4 {
                0 => file.append(DATA).map(|()| "appended".to_string()),
                1 => file.sync().map(|()| "synced".to_string()),
                2 => {
                    let mut buf = [0u8; 16];
                    file.read_at(&mut buf, 3)
                        .map(|n| format!("{:?}", &buf[..n]))
                }
                _ => disk.sync_dir(dir.path()).map(|()| "dir synced".to_string()),
            };
            outcomes.push(describe(outcome));
        }
        (outcomes, disk.stats())
    }

    #[test]
    fn same_seed_gives_same_faults() {
        let (first, first_stats) = run_script(42);
        let (second, second_stats) = run_script(42);
        assert_eq!(first, second);
        assert_eq!(first_stats, second_stats);
        assert!(first_stats.total() > 0);
        let (other, _) = run_script(43);
        assert_ne!(first, other);
    }

    #[test]
    fn disabled_switch_suppresses_faults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let disk = faulty(FaultConfig::all(1.0), 8);
        let handle = disk.handle();
        handle.set_enabled(false);
        assert!(!disk.is_enabled());
        let mut file = disk.open(&path, OpenMode::CreateNew).unwrap();
        file.append(DATA).unwrap();
        file.sync().unwrap();
        disk.sync_dir(dir.path()).unwrap();
        let mut buf = vec![0; DATA.len()];
        assert_eq!(file.read_at(&mut buf, 0).unwrap(), DATA.len());
        assert_eq!(buf, DATA);
        assert_eq!(handle.stats().total(), 0);
        disk.set_enabled(true);
        assert!(handle.is_enabled());
        assert!(file.sync().is_err());
        assert_eq!(handle.stats().get(FaultKind::SyncEio), 1);
    }

    #[test]
    fn out_of_range_probabilities_do_not_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = data_file(&dir);
        for (p, fires) in [(2.0, true), (-1.0, false), (f64::NAN, false)] {
            let disk = faulty(only(FaultKind::ReadEio, p), 9);
            let file = disk.open(&path, OpenMode::Existing).unwrap();
            assert_eq!(file.read_at(&mut [0; 4], 0).is_err(), fires, "p = {p}");
        }
    }

    #[test]
    fn random_config_is_seeded_and_in_range() {
        assert_eq!(FaultConfig::from_seed(11), FaultConfig::from_seed(11));
        let mut zeros = 0;
        for seed in 0..100 {
            let config = FaultConfig::from_seed(seed);
            for kind in FaultKind::ALL {
                let p = config.probability(kind);
                assert!((0.0..=kind.max_random_probability()).contains(&p));
                zeros += usize::from(p == 0.0);
            }
        }
        // About a quarter of 700 draws should be off.
        assert!((100..300).contains(&zeros), "{zeros} kinds off");
    }

    #[test]
    fn display_prints_every_probability_on_one_line() {
        let mut config = FaultConfig::none();
        config.sync_eio = 0.125;
        config.read_bit_flip = 0.001;
        assert_eq!(
            config.to_string(),
            "append_eio=0 append_enospc=0 sync_eio=0.125 sync_dir_eio=0 read_eio=0 \
             short_read=0 read_bit_flip=0.001"
        );
        let mut stats = FaultStats::default();
        stats.counts[FaultKind::ShortRead as usize] = 3;
        assert!(stats.to_string().contains(" short_read=3 "));
    }
}
