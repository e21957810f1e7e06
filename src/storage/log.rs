//! The partition log: an ordered list of segments, the last one active.
//!
//! Appends go to the active segment and become durable at the next
//! [`PartitionLog::sync`]; the replication layer calls `sync` once per round
//! for every log it appended to (group commit) and acknowledges nothing
//! before it returns. Each appended batch is one Raft entry: the log assigns
//! it the next offset and the next Raft index, and stamps the offset and the
//! term into the batch header.
//!
//! The start of the log (after retention) is kept in the atomic `log_start`
//! file: its first offset and Raft index and the term of the entry before it,
//! which Raft needs to check the first entry's predecessor.

use super::config::LogConfig;
use super::index::TermRun;
use super::repair::{Damage, RepairPlan};
use super::segment::{self, push_term, terms_within, Located, Segment, Target};
use super::{atomic, io_err, Result, StorageError};
use crate::io::DiskRef;
use crate::types::record::HEADER_SIZE;
use crate::types::{BatchHeader, RecordBatch, RecordError};
use bytes::Bytes;
use std::path::{Path, PathBuf};

const START_FILE: &str = "log_start";

/// Where an appended batch landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: i64,
    pub index: u64,
}

/// Whole batches read from the log, as stored (for a fetch response).
#[derive(Clone, Debug, Default)]
pub struct FetchedBatches {
    pub bytes: Bytes,
    pub batches: usize,
}

/// A Raft entry's index, term and kind, without its data: see
/// [`PartitionLog::recent_entry_kinds`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryKind {
    pub index: u64,
    pub term: u64,
    /// Its batch is a control batch: a Raft no-op or configuration change,
    /// or a Kafka control record.
    pub control: bool,
}

/// What a retention pass removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
}

/// The first entry of the log and the term of the one before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LogStart {
    offset: i64,
    index: u64,
    prev_term: u64,
}

impl Default for LogStart {
    fn default() -> Self {
        // Raft's first index is 1; offsets start at 0.
        LogStart {
            offset: 0,
            index: 1,
            prev_term: 0,
        }
    }
}

/// One partition replica's log.
#[derive(Debug)]
pub struct PartitionLog {
    disk: DiskRef,
    dir: PathBuf,
    config: LogConfig,
    /// Ordered by base offset (and so by base index); never empty; the last
    /// is the active segment.
    segments: Vec<Segment>,
    /// Term runs of every entry in the log, oldest first.
    terms: Vec<TermRun>,
    start: LogStart,
    /// When the active segment got its first batch (caller's clock).
    active_since_ms: i64,
    unsynced: bool,
    /// Appends so far (this process): tells [`Self::end_sync`] whether
    /// anything was appended while its sync ran.
    appends: u64,
    /// Sealed segments whose sealing sync (data, then index file) has not
    /// finished, oldest first: a roll hands it to the next sync instead of
    /// running it on the appending thread.
    sealing: Vec<Sealing>,
    /// Rolls so far (this process): names each [`Sealing`].
    rolls: u64,
    /// Roll number up to which the directory was synced since (the new
    /// segments' entries in it); behind `rolls` until the next sync.
    dir_synced_rolls: u64,
    poisoned: Option<String>,
    torn_bytes_recovered: u64,
    /// Bytes at the start of the active segment whose cached pages a sync
    /// was told to drop (see [`LogConfig::page_cache_keep_bytes`]).
    cache_dropped_to: u64,
    /// The first damaged batch found by a read and not yet repaired (see
    /// [`super::repair`]).
    damage: Option<Damage>,
}

/// A sync drops cached pages only once this much more can go: each drop
/// walks the file's cache from its start.
const CACHE_DROP_STEP_BYTES: u64 = 4 * 1024 * 1024;

/// How far into a segment of `size` bytes a sync should drop cached pages,
/// keeping `keep` bytes at its end, when `dropped` bytes already were; None
/// if off (`keep` 0) or not yet a step further.
fn cache_drop_to(size: u64, keep: u64, dropped: u64) -> Option<u64> {
    let to = size.saturating_sub(keep);
    (keep > 0 && to >= dropped + CACHE_DROP_STEP_BYTES).then_some(to)
}

/// A sealed segment waiting for its sealing sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sealing {
    base_offset: i64,
    /// Which roll sealed it: a segment truncated back into the active one
    /// and sealed again is another sealing, and a sync begun for the first
    /// must not write the index file for the second.
    roll: u64,
    /// A sync under way covers it (one at a time: they share a temp file).
    claimed: bool,
}

/// A sync under way outside the log; see [`PartitionLog::begin_sync`].
#[derive(Debug)]
pub struct PendingSync {
    /// The active segment's data, when asked for and unsynced.
    data: Option<(crate::io::SyncHandle, PathBuf)>,
    /// Once the data is synced, drop the cached pages of its first bytes.
    data_drop_to: Option<u64>,
    appends: u64,
    /// Sync the directory (new segments' entries) as of this roll number.
    dir_rolls: Option<u64>,
    seals: Vec<PendingSeal>,
    disk: DiskRef,
    dir: PathBuf,
}

/// One sealing sync: the segment's data, then its index file's temp copy.
#[derive(Debug)]
struct PendingSeal {
    sealing: Sealing,
    handle: crate::io::SyncHandle,
    path: PathBuf,
    summary: Vec<u8>,
    /// Once synced, drop the cached pages of its first bytes.
    drop_to: Option<u64>,
}

/// Advice to the OS after a sync: a failure costs memory, never data, so
/// it is not an error.
fn drop_cache(handle: &crate::io::SyncHandle, to: Option<u64>) {
    if let Some(to) = to {
        let _ = handle.drop_cache(to);
    }
}

impl PendingSync {
    /// The fsyncs themselves: each sealed segment's data then its index
    /// file (written to a temp file; [`PartitionLog::end_sync`] renames it),
    /// then the active segment. Blocks; takes no lock of the log's.
    pub fn sync(&self) -> Result<()> {
        for seal in &self.seals {
            if !crate::bugs::on(crate::bugs::SKIP_SEAL_SYNC) {
                seal.handle
                    .sync()
                    .map_err(io_err(|| format!("fsync {}", seal.path.display())))?;
                drop_cache(&seal.handle, seal.drop_to);
            }
            let name = segment::index_name(seal.sealing.base_offset);
            atomic::write_tmp(self.disk.as_ref(), &self.dir, &name, &seal.summary)?;
        }
        if let Some((handle, path)) = &self.data {
            handle
                .sync()
                .map_err(io_err(|| format!("fsync {}", path.display())))?;
            drop_cache(handle, self.data_drop_to);
        }
        if self.dir_rolls.is_some() {
            sync_dir(self.disk.as_ref(), &self.dir)?;
        }
        Ok(())
    }

    /// After [`PartitionLog::end_sync`] said index files were renamed: the
    /// directory sync that makes the renames durable, outside the log's
    /// lock. Nothing waits for it but tidiness: a lost rename only means
    /// the segment is scanned again when the log is opened.
    pub fn sync_dir(&self) -> Result<()> {
        sync_dir(self.disk.as_ref(), &self.dir)
    }
}

impl PartitionLog {
    /// Opens (or creates) the log in `dir`, recovering from a crash: sealed
    /// segments load from their index files, the active one is scanned with
    /// CRC checks and a torn tail cut off.
    pub fn open(disk: DiskRef, dir: &Path, config: LogConfig, now_ms: i64) -> Result<Self> {
        config.validate().map_err(StorageError::Invalid)?;
        ensure_dir(&disk, dir)?;
        let start = load_start(disk.as_ref(), dir)?;
        let bases = list_segments(&disk, dir, start)?;
        let mut log = PartitionLog {
            disk,
            dir: dir.to_path_buf(),
            config,
            segments: Vec::new(),
            terms: Vec::new(),
            start,
            active_since_ms: now_ms,
            unsynced: false,
            appends: 0,
            sealing: Vec::new(),
            rolls: 0,
            dir_synced_rolls: 0,
            poisoned: None,
            torn_bytes_recovered: 0,
            cache_dropped_to: 0,
            damage: None,
        };
        log.open_segments(&bases)?;
        log.check_invariants();
        Ok(log)
    }

    fn open_segments(&mut self, bases: &[i64]) -> Result<()> {
        let disk = self.disk.clone();
        let max = self.config.max_batch_bytes;
        let (mut next_offset, mut next_index) = (self.start.offset, self.start.index);
        let mut active_damaged = false;
        for (i, &base) in bases.iter().enumerate() {
            if base != next_offset {
                return Err(StorageError::Corrupt {
                    path: self.dir.join(segment::log_name(base)),
                    position: 0,
                    reason: format!("segment starts at offset {base}, expected {next_offset}: a segment is missing"),
                });
            }
            let seg = if i + 1 < bases.len() {
                let (seg, torn, indexed, damage) = Segment::open_sealed(
                    disk.as_ref(),
                    &self.dir,
                    base,
                    next_index,
                    max,
                    &mut self.terms,
                )?;
                if let Some(e) = &damage {
                    self.note_damage(e);
                }
                if let Some(torn) = torn {
                    // Its sealing sync never finished: what followed the
                    // tear was never synced either, and the later segments
                    // cannot follow a gap. The cut segment is active again.
                    self.drop_segments_after(&seg, &bases[i + 1..])?;
                    self.torn_bytes_recovered = torn;
                    self.segments.push(seg);
                    break;
                }
                if !indexed {
                    // Scanned: its index file is written again by the next
                    // sync, or every open would scan it.
                    self.rolls += 1;
                    self.sealing.push(Sealing {
                        base_offset: base,
                        roll: self.rolls,
                        claimed: false,
                    });
                }
                seg
            } else {
                let (seg, torn, damage) = Segment::open_active(
                    disk.as_ref(),
                    &self.dir,
                    base,
                    next_index,
                    max,
                    &mut self.terms,
                )?;
                self.torn_bytes_recovered = torn.unwrap_or(0);
                if let Some(e) = &damage {
                    self.note_damage(e);
                    active_damaged = true;
                }
                seg
            };
            next_offset = seg.next_offset;
            next_index = seg.next_index;
            self.segments.push(seg);
        }
        if self.segments.is_empty() {
            let seg = Segment::create(disk.as_ref(), &self.dir, next_offset, next_index)?;
            sync_dir(disk.as_ref(), &self.dir)?;
            self.segments.push(seg);
        } else if active_damaged {
            // Sealed (its index file written by the next sync), so that
            // the damaged batch is repaired as in any sealed segment while
            // appends go to a new one.
            self.roll()?;
            sync_dir(disk.as_ref(), &self.dir)?;
            self.dir_synced_rolls = self.rolls;
        }
        Ok(())
    }

    /// Removes the files of the segments at `later` (after `seg`, whose tail
    /// was torn), and `seg`'s own index file, durably.
    fn drop_segments_after(&self, seg: &Segment, later: &[i64]) -> Result<()> {
        let disk = self.disk.as_ref();
        for &b in later {
            remove_segment_files(disk, &self.dir, b)?;
        }
        let index = self.dir.join(segment::index_name(seg.base_offset));
        if disk.exists(&index) {
            disk.remove_file(&index)
                .map_err(io_err(|| format!("remove {}", index.display())))?;
        }
        sync_dir(disk, &self.dir)
    }

    /// Bytes of torn tail cut off when the log was opened.
    pub fn torn_bytes_recovered(&self) -> u64 {
        self.torn_bytes_recovered
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Replaces the settings; they apply from the next append or retention
    /// pass.
    pub fn set_config(&mut self, config: LogConfig) -> Result<()> {
        config.validate().map_err(StorageError::Invalid)?;
        self.config = config;
        Ok(())
    }

    /// The first offset still in the log.
    pub fn log_start_offset(&self) -> i64 {
        self.start.offset
    }

    /// The offset the next record will get (the log end offset).
    pub fn next_offset(&self) -> i64 {
        self.active().next_offset
    }

    /// The first Raft index still in the log.
    pub fn first_index(&self) -> u64 {
        self.start.index
    }

    /// The last Raft index in the log (`first_index - 1` if empty).
    pub fn last_index(&self) -> u64 {
        self.active().next_index - 1
    }

    /// Total bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size_bytes).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The term of entry `index`: known for entries in the log and for the
    /// one just before its start; `None` otherwise.
    pub fn term(&self, index: u64) -> Option<u64> {
        if index + 1 == self.start.index {
            return Some(self.start.prev_term);
        }
        if index < self.start.index || index > self.last_index() {
            return None;
        }
        let i = self.terms.partition_point(|t| t.first_index <= index);
        Some(self.terms[i - 1].term)
    }

    fn active(&self) -> &Segment {
        self.segments
            .last()
            .expect("a log always has an active segment")
    }

    fn check_usable(&self) -> Result<()> {
        match &self.poisoned {
            Some(cause) => Err(StorageError::Poisoned {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Marks the log failed and returns the error that did it.
    fn poison(&mut self, e: StorageError) -> StorageError {
        self.poisoned = Some(e.to_string());
        e
    }

    /// Appends `batch` as Raft entry `index` of `term`. The batch is stamped
    /// with its base offset and term. Not durable until [`Self::sync`].
    pub fn append(
        &mut self,
        batch: RecordBatch,
        term: u64,
        index: u64,
        now_ms: i64,
    ) -> Result<Appended> {
        self.check_usable()?;
        self.check_append(&batch, term, index)?;
        if self.should_roll(batch.size_bytes(), now_ms) {
            self.roll().map_err(|e| self.poison(e))?;
        }
        let base_offset = self.next_offset();
        // The stamped header, then the rest as it is: the batch's bytes are
        // usually shared (with raft-rs's unstable entries, or the frame a
        // follower received), so stamping them in place would copy it whole.
        let head = batch.stamped_header(base_offset, term as i32);
        let header = BatchHeader::parse(&head, self.config.max_batch_bytes)?;
        debug_assert_eq!(header.base_offset, base_offset);
        debug_assert_eq!(header.size_bytes(), batch.size_bytes());
        let parts = [&head[..], &batch.as_bytes()[HEADER_SIZE..]];
        let interval = self.config.index_interval_bytes;
        let active = self.segments.last_mut().expect("active segment");
        if active.is_empty() {
            self.active_since_ms = now_ms;
        }
        if let Err(e) = active.append(&parts, &header, interval) {
            let path = active.path.display().to_string();
            return Err(self.poison(StorageError::Io {
                context: format!("append to {path}"),
                source: e,
            }));
        }
        push_term(&mut self.terms, index, term);
        self.unsynced = true;
        self.appends += 1;
        Ok(Appended { base_offset, index })
    }

    fn check_append(&self, batch: &RecordBatch, term: u64, index: u64) -> Result<()> {
        if index != self.last_index() + 1 {
            return Err(StorageError::Invalid(format!(
                "append of entry {index} to a log whose last entry is {}",
                self.last_index()
            )));
        }
        let last_term = self.term(self.last_index()).unwrap_or(0);
        if term < last_term || term == 0 || term > i32::MAX as u64 {
            return Err(StorageError::Invalid(format!(
                "append in term {term} after term {last_term}"
            )));
        }
        if batch.size_bytes() > self.config.max_batch_bytes {
            return Err(StorageError::Record(RecordError::BadLength {
                batch_length: batch.size_bytes() as i64,
                max_bytes: self.config.max_batch_bytes,
            }));
        }
        Ok(())
    }

    fn should_roll(&self, batch_bytes: usize, now_ms: i64) -> bool {
        let active = self.active();
        !active.is_empty()
            && (active.size_bytes + batch_bytes as u64 > self.config.segment_bytes
                || now_ms.saturating_sub(self.active_since_ms) >= self.config.segment_ms
                // Damage noted in it, whose roll failed (`note_damage`).
                || self.damage.as_ref().is_some_and(|d| d.path == active.path))
    }

    /// Seals the active segment and starts a new one. Nothing here waits
    /// for the disk: the new file's directory entry, the sealed segment's
    /// data and its index file are all left to the next sync
    /// ([`Self::begin_sync`]), which acknowledges nothing before they are
    /// durable. Run inline, on the thread that appends for every partition
    /// of the broker, they stalled it for as long as the disk took: with
    /// `fsync` never up to `segment.bytes` of data, and a directory fsync
    /// behind a busy journal took 50 ms.
    fn roll(&mut self) -> Result<()> {
        let disk = self.disk.clone();
        let active = self.active();
        let (base_offset, next_offset, next_index) =
            (active.base_offset, active.next_offset, active.next_index);
        let seg = Segment::create(disk.as_ref(), &self.dir, next_offset, next_index)?;
        if let Some(sealed) = self.segments.last_mut() {
            sealed.forget_recent();
        }
        self.rolls += 1;
        self.cache_dropped_to = 0;
        self.sealing.push(Sealing {
            base_offset,
            roll: self.rolls,
            claimed: false,
        });
        self.segments.push(seg);
        Ok(())
    }

    /// Makes every append so far durable, and finishes every sealing sync.
    /// After an error the log is poisoned: the failed fsync may have dropped
    /// the data.
    pub fn sync(&mut self) -> Result<()> {
        if let Some(pending) = self.begin_sync()? {
            let result = pending.sync();
            if self.end_sync(&pending, result)? {
                self.end_sync_dir(pending.sync_dir())?;
            }
        }
        Ok(())
    }

    /// A roll's syncs (sealed segments, the directory) have not begun.
    pub fn has_pending_seals(&self) -> bool {
        self.sealing.iter().any(|s| !s.claimed) || self.dir_synced_rolls < self.rolls
    }

    /// Starts a sync that runs without borrowing the log, so that appends
    /// can go on meanwhile: call [`PendingSync::sync`], then pass the result
    /// to [`Self::end_sync`]. It covers every append made before it began
    /// and the sealing syncs not already under way. None when there is
    /// nothing to sync. A log's syncs must not overlap (the driver runs one
    /// group commit at a time): a sealing sync claimed by one under way is
    /// not covered by another.
    pub fn begin_sync(&mut self) -> Result<Option<PendingSync>> {
        self.begin(true)
    }

    /// Like [`Self::begin_sync`] but for the sealing syncs only: with
    /// `fsync` never the active segment is left to the OS, but a sealed
    /// segment still gets its index file (and so its sync first).
    pub fn begin_sealing(&mut self) -> Result<Option<PendingSync>> {
        self.begin(false)
    }

    fn begin(&mut self, with_data: bool) -> Result<Option<PendingSync>> {
        self.check_usable()?;
        // A sync that cannot start fails like one that cannot finish: the
        // sealing syncs it claimed would otherwise never run, and a later
        // sync skip them.
        self.begin_inner(with_data).map_err(|e| self.poison(e))
    }

    fn begin_inner(&mut self, with_data: bool) -> Result<Option<PendingSync>> {
        let mut seals = Vec::new();
        for i in 0..self.sealing.len() {
            if self.sealing[i].claimed {
                continue;
            }
            let pending = self.pending_seal(self.sealing[i])?;
            self.sealing[i].claimed = true;
            seals.push(pending);
        }
        let data = if with_data && self.unsynced {
            let path = self.active().path.clone();
            let handle = self.active().sync_handle().map_err(|e| StorageError::Io {
                context: format!("open {} for fsync", path.display()),
                source: e,
            })?;
            Some((handle, path))
        } else {
            None
        };
        let keep = self.config.page_cache_keep_bytes;
        let data_drop_to = data
            .as_ref()
            .and_then(|_| cache_drop_to(self.active().size_bytes, keep, self.cache_dropped_to));
        if let Some(to) = data_drop_to {
            self.cache_dropped_to = to;
        }
        let dir_rolls = (self.dir_synced_rolls < self.rolls).then_some(self.rolls);
        if data.is_none() && seals.is_empty() && dir_rolls.is_none() {
            return Ok(None);
        }
        Ok(Some(PendingSync {
            data,
            data_drop_to,
            appends: self.appends,
            dir_rolls,
            seals,
            disk: self.disk.clone(),
            dir: self.dir.clone(),
        }))
    }

    fn pending_seal(&self, sealing: Sealing) -> Result<PendingSeal> {
        let seg = self
            .segments
            .iter()
            .find(|s| s.base_offset == sealing.base_offset)
            .expect("a sealing segment is in the log");
        assert!(
            !std::ptr::eq(seg, self.active()),
            "the active segment is never sealing"
        );
        let handle = seg.sync_handle().map_err(|e| StorageError::Io {
            context: format!("open {} for fsync", seg.path.display()),
            source: e,
        })?;
        Ok(PendingSeal {
            sealing,
            handle,
            path: seg.path.clone(),
            summary: seg.summary_bytes(&self.terms),
            drop_to: cache_drop_to(seg.size_bytes, self.config.page_cache_keep_bytes, 0),
        })
    }

    /// Finishes a sync begun with [`Self::begin_sync`]: every append made
    /// before it began is durable if `result` is Ok, and each sealed
    /// segment it covered gets its index file, if the segment is still as
    /// it was sealed (a truncation meanwhile makes it active again, a
    /// retention pass may remove it). A failed fsync poisons the log, as in
    /// [`Self::sync`]. Returns whether index files were renamed into place
    /// (see [`PendingSync::sync_dir`]).
    pub fn end_sync(&mut self, pending: &PendingSync, result: Result<()>) -> Result<bool> {
        self.check_usable()?;
        if let Err(e) = result {
            return Err(self.poison(e));
        }
        let mut renamed = false;
        for seal in &pending.seals {
            let name = segment::index_name(seal.sealing.base_offset);
            let (base, roll) = (seal.sealing.base_offset, seal.sealing.roll);
            let at = self
                .sealing
                .iter()
                .position(|s| s.base_offset == base && s.roll == roll);
            if let Some(at) = at {
                self.sealing.remove(at);
                atomic::rename_tmp(self.disk.as_ref(), &self.dir, &name)
                    .map_err(|e| self.poison(e))?;
                renamed = true;
            } else {
                let tmp = atomic::tmp_path(&self.dir, &name);
                if self.disk.exists(&tmp) {
                    let removed = self.disk.remove_file(&tmp);
                    removed
                        .map_err(io_err(|| format!("remove {}", tmp.display())))
                        .map_err(|e| self.poison(e))?;
                }
            }
        }
        // Appends made while the sync ran missed it.
        if pending.data.is_some() && self.appends == pending.appends {
            self.unsynced = false;
        }
        if let Some(rolls) = pending.dir_rolls {
            self.dir_synced_rolls = self.dir_synced_rolls.max(rolls);
        }
        Ok(renamed)
    }

    /// Takes the result of [`PendingSync::sync_dir`]: a failed directory
    /// sync poisons the log like any failed fsync.
    pub fn end_sync_dir(&mut self, result: Result<()>) -> Result<()> {
        result.map_err(|e| self.poison(e))
    }

    /// Forgets sealing syncs of segments that are gone or active again.
    fn forget_stale_sealing(&mut self) {
        let sealed = &self.segments[..self.segments.len() - 1];
        self.sealing
            .retain(|s| sealed.iter().any(|g| g.base_offset == s.base_offset));
    }

    /// Removes entries `from_index` and after (Raft conflict resolution).
    /// Durable when it returns.
    pub fn truncate_suffix(&mut self, from_index: u64) -> Result<()> {
        self.check_usable()?;
        if from_index > self.last_index() {
            return Ok(());
        }
        if from_index < self.start.index {
            return Err(StorageError::Invalid(format!(
                "cannot truncate from entry {from_index}: the log starts at {}",
                self.start.index
            )));
        }
        self.truncate_inner(from_index)
            .map_err(|e| self.poison(e))?;
        self.forget_stale_sealing();
        self.check_invariants();
        Ok(())
    }

    fn truncate_inner(&mut self, from_index: u64) -> Result<()> {
        let disk = self.disk.clone();
        let keep = self
            .segments
            .partition_point(|s| s.base_index <= from_index);
        for seg in self.segments.drain(keep..) {
            remove_segment_files(disk.as_ref(), &self.dir, seg.base_offset)?;
        }
        let seg = self
            .segments
            .last_mut()
            .expect("the segment holding from_index");
        // The segment becomes the active one again: its index file is stale.
        let index_path = self.dir.join(segment::index_name(seg.base_offset));
        if disk.exists(&index_path) {
            disk.remove_file(&index_path)
                .map_err(io_err(|| format!("remove {}", index_path.display())))?;
        }
        sync_dir(disk.as_ref(), &self.dir)?;
        let max = self.config.max_batch_bytes;
        let at = seg.locate(Target::Index(from_index), max)?.ok_or_else(|| {
            StorageError::Invalid(format!(
                "entry {from_index} not found in {}",
                seg.path.display()
            ))
        })?;
        let damaged = seg.truncate_to(&at, max, &mut self.terms)?;
        // Damage cut off goes with its batch; a regrown segment carries
        // the same name, so `damage()`'s path check alone would keep it.
        let (path, size) = (seg.path.clone(), seg.size_bytes);
        let cut_off = |d: &Damage| {
            if d.path == path {
                d.position >= size
            } else {
                !self.segments.iter().any(|s| s.path == d.path)
            }
        };
        if self.damage.as_ref().is_some_and(cut_off) {
            self.damage = None;
        }
        self.unsynced = false;
        if let Some(e) = damaged {
            // The segment is active again with a damaged batch before the
            // cut: sealed again (as an open does), so that the batch is
            // repaired as in any sealed segment while appends go to a new one.
            self.note_damage(&e);
            self.forget_stale_sealing();
            self.roll()?;
            sync_dir(disk.as_ref(), &self.dir)?;
            self.dir_synced_rolls = self.rolls;
        }
        Ok(())
    }

    /// The offset after the last record of entry `index`: where a reader
    /// that may see everything up to and including that entry stops (the
    /// high watermark when `index` is the commit index). For
    /// `first_index - 1` it is the log start offset.
    pub fn next_offset_after_index(&self, index: u64) -> Result<i64> {
        if index + 1 == self.start.index {
            return Ok(self.start.offset);
        }
        if index < self.start.index || index > self.last_index() {
            return Err(StorageError::Invalid(format!(
                "entry {index} is outside the log's {}..={}",
                self.start.index,
                self.last_index()
            )));
        }
        // `index >= start.index == segments[0].base_index`, so at least one
        // segment starts at or before it.
        let i = self.segments.partition_point(|s| s.base_index <= index) - 1;
        let seg = &self.segments[i];
        if index + 1 == seg.next_index {
            // The segment's last entry: no read needed.
            return Ok(seg.next_offset);
        }
        if let Some(r) = seg.recent_by_index(index) {
            return Ok(r.next_offset);
        }
        let at = seg
            .locate(Target::Index(index), self.config.max_batch_bytes)?
            .ok_or_else(|| {
                StorageError::Invalid(format!("entry {index} not found in {}", seg.path.display()))
            })?;
        Ok(at.header.next_offset())
    }

    /// Discards the whole log and restarts it empty at `start_offset` and
    /// Raft index `start_index`, the entry before which had `prev_term`: a
    /// follower installing a leader's snapshot, whose log starts where the
    /// leader's does. Durable when it returns.
    ///
    /// Crash safety: the new start is persisted before any segment is
    /// removed, as in retention, and a reopen removes segments below the
    /// start. A reopen keeps segments at or above the start, though, and
    /// labels the first with the start index; so every batch holding an
    /// offset at or past `start_offset` is cut off (durably) first. Those
    /// entries are not the committed prefix this replica shares with the
    /// leader (that prefix ends below `start_offset`, at the same offsets as
    /// the leader's), so losing them is what Raft's conflict truncation
    /// would do anyway. A crash at any point therefore reopens either the
    /// old log (perhaps with that suffix cut) or the new empty one.
    pub fn reset(&mut self, start_offset: i64, start_index: u64, prev_term: u64) -> Result<()> {
        self.check_usable()?;
        if start_offset < 0 || start_index == 0 || prev_term > i32::MAX as u64 {
            return Err(StorageError::Invalid(format!(
                "cannot reset the log to offset {start_offset}, index {start_index}, \
                 previous term {prev_term}"
            )));
        }
        let start = LogStart {
            offset: start_offset,
            index: start_index,
            prev_term,
        };
        self.reset_inner(start).map_err(|e| self.poison(e))?;
        self.forget_stale_sealing();
        self.check_invariants();
        Ok(())
    }

    fn reset_inner(&mut self, start: LogStart) -> Result<()> {
        let disk = self.disk.clone();
        if self.start.offset >= start.offset {
            // Every entry holds offsets at or past the new start.
            for seg in &self.segments {
                remove_segment_files(disk.as_ref(), &self.dir, seg.base_offset)?;
            }
            sync_dir(disk.as_ref(), &self.dir)?;
        } else if self.next_offset() > start.offset {
            let i = self
                .segments
                .partition_point(|s| s.base_offset <= start.offset)
                - 1;
            let seg = &self.segments[i];
            let at = seg
                .locate(Target::Offset(start.offset), self.config.max_batch_bytes)?
                .ok_or_else(|| {
                    StorageError::Invalid(format!(
                        "offset {} not found in {}",
                        start.offset,
                        seg.path.display()
                    ))
                })?;
            self.truncate_inner(at.index)?;
        }
        save_start(disk.as_ref(), &self.dir, start)?;
        // Files are removed before the new segment is created: an emptied
        // active segment may carry the new segment's name. The in-memory
        // list is replaced only once the new segment exists, so the log
        // always has an active segment (a failure here poisons it).
        for seg in &self.segments {
            let path = self.dir.join(segment::log_name(seg.base_offset));
            if disk.exists(&path) {
                remove_segment_files(disk.as_ref(), &self.dir, seg.base_offset)?;
            }
        }
        let seg = Segment::create(disk.as_ref(), &self.dir, start.offset, start.index)?;
        sync_dir(disk.as_ref(), &self.dir)?;
        self.segments = vec![seg];
        self.start = start;
        self.terms.clear();
        // Every batch went (the new segment may carry a damaged one's name).
        self.damage = None;
        self.unsynced = false;
        Ok(())
    }

    /// Reads whole batches holding offsets from `from_offset` up to
    /// `max_offset` (exclusive; the high watermark for consumers), at most
    /// `max_bytes` but always at least one batch if any is readable. The
    /// first batch may begin before `from_offset`, as in Kafka.
    pub fn read(
        &self,
        from_offset: i64,
        max_bytes: usize,
        max_offset: i64,
    ) -> Result<FetchedBatches> {
        self.check_range(from_offset)?;
        if from_offset >= max_offset.min(self.next_offset()) {
            return Ok(FetchedBatches::default());
        }
        let max = self.config.max_batch_bytes;
        let i = self
            .segments
            .partition_point(|s| s.base_offset <= from_offset)
            - 1;
        for seg in &self.segments[i..] {
            let Some((position, index)) = seg.find(Target::Offset(from_offset), max)? else {
                continue;
            };
            let (bytes, batches) =
                seg.read_batches(position, max_bytes, max_offset, u64::MAX, index, max)?;
            // Consumers never get a damaged batch: its CRC is checked here
            // (a small cost beside the read; crc32c runs at memory speed),
            // and the error names it for `note_damage`.
            verify_crcs(seg, position, &bytes, max)?;
            return Ok(FetchedBatches { bytes, batches });
        }
        Ok(FetchedBatches::default())
    }

    /// The damaged batch found and not yet repaired, if any (damage in a
    /// segment since deleted or cut off no longer counts).
    pub fn damage(&self) -> Option<&Damage> {
        self.damage
            .as_ref()
            .filter(|d| self.segments.iter().any(|s| s.path == d.path))
    }

    /// Records `e` as the log's damage if it is corruption and none is
    /// known yet; true if it was recorded.
    pub fn note_damage(&mut self, e: &StorageError) -> bool {
        let StorageError::Corrupt {
            path,
            position,
            reason,
        } = e
        else {
            return false;
        };
        if self.damage().is_some() {
            return false;
        }
        self.damage = Some(Damage {
            path: path.clone(),
            position: *position,
            reason: reason.clone(),
        });
        // Damage in the active segment: seal it now, as opening does, so
        // that it is repaired like any sealed segment while appends go to
        // a new one. Without this, damage a read found in the active
        // segment had no repair plan: the replica stayed damaged (never
        // leading, its reads refused) until the segment rolled by size or
        // age, which on a quiet partition is never. If the roll fails
        // here, the next append rolls (`should_roll`) and reports it.
        if self.segments.last().is_some_and(|s| s.path == *path) {
            let _ = self.roll();
        }
        true
    }

    /// How to repair the known damage: the stretch of its sealed segment
    /// between sparse index entries. `None` without damage, or if it is in
    /// the active segment (whose batches raft replaces only by truncation).
    pub fn repair_plan(&self) -> Option<RepairPlan> {
        let d = self.damage()?;
        let i = self.segments.iter().position(|s| s.path == d.path)?;
        if i + 1 == self.segments.len() {
            return None;
        }
        let seg = &self.segments[i];
        let ((from_position, from_offset, from_index), (to_position, to_offset, to_index)) =
            seg.stretch_around(d.position);
        Some(RepairPlan {
            path: seg.path.clone(),
            base_offset: seg.base_offset,
            segment_bytes: seg.size_bytes,
            from_position,
            to_position,
            from_offset,
            to_offset,
            from_index,
            to_index,
            terms: terms_within(&self.terms, from_index, to_index),
        })
    }

    /// The disk and directory the log lives in (for a repair's copy).
    pub fn location(&self) -> (DiskRef, PathBuf) {
        (self.disk.clone(), self.dir.clone())
    }

    /// Puts a repaired copy written by [`super::repair::write_repaired_copy`]
    /// in place of its segment: if the segment is still there unchanged, the
    /// copy is renamed over it, the directory synced, the file reopened and
    /// the repaired stretch checked; the damage is then forgotten (the scrub
    /// finds any other). Returns false (and removes the copy) if the segment
    /// changed meanwhile. An error here poisons the log: the rename may or
    /// may not be durable.
    pub fn install_repair(&mut self, plan: &RepairPlan, copy: &Path) -> Result<bool> {
        self.check_usable()?;
        let sealed = self.segments.len() - 1;
        let Some(i) = self.segments[..sealed]
            .iter()
            .position(|s| s.base_offset == plan.base_offset && s.size_bytes == plan.segment_bytes)
            // A truncation and regrowth to the same size since the plan
            // would hold newer entries there: old-term bytes must not
            // overwrite them. The same term for each entry means the same
            // entries (Raft's Log Matching).
            .filter(|_| terms_within(&self.terms, plan.from_index, plan.to_index) == plan.terms)
        else {
            let _ = self.disk.remove_file(copy);
            return Ok(false);
        };
        let max = self.config.max_batch_bytes;
        let disk = self.disk.clone();
        let result = (|| {
            disk.rename(copy, &plan.path).map_err(io_err(|| {
                format!("rename {} over {}", copy.display(), plan.path.display())
            }))?;
            sync_dir(disk.as_ref(), &self.dir)?;
            self.segments[i].reopen_and_verify(
                disk.as_ref(),
                plan.from_position,
                plan.to_position,
                max,
            )
        })();
        if let Err(e) = result {
            return Err(self.poison(e));
        }
        if self.damage.as_ref().is_some_and(|d| d.path == plan.path) {
            self.damage = None;
        }
        Ok(true)
    }

    /// One step of the background scrub: checks (CRC and term) the entries
    /// from `from` on, about `max_bytes` of them, and returns the entry to
    /// go on from (the log's first once past its end) and the bytes
    /// checked. Damage is an error (`note_damage` records it).
    pub fn scrub_step(&self, from: u64, max_bytes: usize) -> Result<(u64, usize)> {
        let low = from.max(self.start.index);
        let high = self.last_index() + 1;
        if low >= high {
            return Ok((self.start.index, 0));
        }
        let got = self.entries(low, high, max_bytes.max(1))?;
        let bytes = got.iter().map(|(_, b)| b.size_bytes()).sum();
        Ok((low + got.len() as u64, bytes))
    }

    fn check_range(&self, offset: i64) -> Result<()> {
        if offset < self.start.offset || offset > self.next_offset() {
            return Err(StorageError::OutOfRange {
                requested: offset,
                start: self.start.offset,
                end: self.next_offset(),
            });
        }
        Ok(())
    }

    /// What Raft needs to know of entries `[low, high)` when it does not
    /// need their data: each one's index, term and whether its batch is a
    /// control batch. Answered from memory, so only when every one of them
    /// is among the active segment's recent batches; `None` otherwise (and
    /// for an empty range).
    pub fn recent_entry_kinds(&self, low: u64, high: u64) -> Option<Vec<EntryKind>> {
        if low >= high || high > self.last_index() + 1 {
            return None;
        }
        let active = self.active();
        // Both ends in the ring (which is consecutive) before allocating:
        // the range is then at most the ring's length.
        active.recent_by_index(low)?;
        active.recent_by_index(high - 1)?;
        let mut out = Vec::with_capacity(usize::try_from(high - low).ok()?);
        for index in low..high {
            out.push(EntryKind {
                index,
                term: self.term(index)?,
                control: active.recent_by_index(index)?.control,
            });
        }
        Some(out)
    }

    /// Raft entries `[low, high)` as batches with their indexes: at most
    /// `max_bytes`, but at least one entry. Each batch's CRC is checked, so
    /// damage on disk is never replicated.
    pub fn entries(
        &self,
        low: u64,
        high: u64,
        max_bytes: usize,
    ) -> Result<Vec<(u64, RecordBatch)>> {
        if low < self.start.index || high > self.last_index() + 1 || low > high {
            return Err(StorageError::Invalid(format!(
                "entries {low}..{high} outside the log's {}..={}",
                self.start.index,
                self.last_index()
            )));
        }
        let mut out = Vec::new();
        let mut next = low;
        let mut budget = max_bytes;
        let i = self
            .segments
            .partition_point(|s| s.base_index <= low)
            .saturating_sub(1);
        for seg in &self.segments[i..] {
            if next >= high || (budget == 0 && !out.is_empty()) {
                break;
            }
            let Some((position, index)) =
                seg.find(Target::Index(next), self.config.max_batch_bytes)?
            else {
                continue;
            };
            let limit = if out.is_empty() {
                budget
            } else {
                budget.max(1)
            };
            let (bytes, count) = seg.read_batches(
                position,
                limit,
                i64::MAX,
                high,
                index,
                self.config.max_batch_bytes,
            )?;
            if !out.is_empty() && bytes.len() > budget {
                break;
            }
            budget = budget.saturating_sub(bytes.len());
            self.split_batches(seg, position, bytes, count, &mut next, &mut out)?;
        }
        Ok(out)
    }

    fn split_batches(
        &self,
        seg: &Segment,
        position: u64,
        bytes: Bytes,
        count: usize,
        next: &mut u64,
        out: &mut Vec<(u64, RecordBatch)>,
    ) -> Result<()> {
        let mut at = 0usize;
        for _ in 0..count {
            let h = crate::types::BatchHeader::parse(&bytes[at..], self.config.max_batch_bytes)?;
            let slice = bytes.slice(at..at + h.size_bytes());
            let corrupt = |reason: String| StorageError::Corrupt {
                path: seg.path.clone(),
                position: position + at as u64,
                reason,
            };
            let batch = RecordBatch::parse(slice, self.config.max_batch_bytes)
                .map_err(|e| corrupt(e.to_string()))?;
            // The term is outside the CRC: it must match the one the log
            // recorded for this entry when it was written or scanned.
            let (on_disk, known) = (batch.leader_epoch(), self.term(*next));
            if known != Some(on_disk as u64) {
                return Err(corrupt(format!(
                    "entry {} has term {on_disk} on disk, {known:?} in the log's term runs",
                    *next
                )));
            }
            out.push((*next, batch));
            *next += 1;
            at += h.size_bytes();
        }
        Ok(())
    }

    /// The offset of the first record whose timestamp is at least `ts_ms`,
    /// or `None` if every record is older (Kafka's ListOffsets by time).
    pub fn offset_for_timestamp(&self, ts_ms: i64) -> Result<Option<i64>> {
        let max = self.config.max_batch_bytes;
        for seg in self.segments.iter().filter(|s| s.max_timestamp >= ts_ms) {
            let Some(Located {
                position, index, ..
            }) = seg.locate(Target::Timestamp(ts_ms), max)?
            else {
                continue;
            };
            let (bytes, _) = seg.read_batches(position, 1, i64::MAX, index + 1, index, max)?;
            let batch = RecordBatch::parse(bytes, max)?;
            let hit = batch
                .records()?
                .into_iter()
                .find(|r| r.event.timestamp_ms >= ts_ms);
            if let Some(r) = hit {
                return Ok(Some(r.offset.max(self.start.offset)));
            }
        }
        Ok(None)
    }

    /// Deletes whole sealed segments that retention allows, oldest first,
    /// never any holding offsets at or past `deletable_below` (the commit
    /// point: Raft may still need uncommitted entries).
    pub fn apply_retention(
        &mut self,
        now_ms: i64,
        deletable_below: i64,
    ) -> Result<RetentionOutcome> {
        self.check_usable()?;
        let n = self.deletable_segments(now_ms, deletable_below);
        if n == 0 {
            return Ok(RetentionOutcome::default());
        }
        self.delete_prefix(n).map_err(|e| self.poison(e))
    }

    fn deletable_segments(&self, now_ms: i64, deletable_below: i64) -> usize {
        let c = &self.config;
        let mut excess = if c.retention_bytes >= 0 {
            self.size_bytes() as i64 - c.retention_bytes
        } else {
            0
        };
        let sealed = &self.segments[..self.segments.len() - 1];
        let mut n = 0;
        for seg in sealed {
            let expired =
                c.retention_ms >= 0 && seg.max_timestamp < now_ms.saturating_sub(c.retention_ms);
            let oversize = excess - seg.size_bytes as i64 >= 0 && c.retention_bytes >= 0;
            if seg.next_offset > deletable_below || !(expired || oversize) {
                break;
            }
            excess -= seg.size_bytes as i64;
            n += 1;
        }
        n
    }

    /// Moves the log start past the first `n` segments: the new start is
    /// made durable first, so a crash leaves at worst files below the start,
    /// which the next open removes.
    fn delete_prefix(&mut self, n: usize) -> Result<RetentionOutcome> {
        let first_kept = &self.segments[n];
        let start = LogStart {
            offset: first_kept.base_offset,
            index: first_kept.base_index,
            prev_term: self
                .term(first_kept.base_index - 1)
                .expect("term of a retained entry's predecessor"),
        };
        save_start(self.disk.as_ref(), &self.dir, start)?;
        self.start = start;
        let mut out = RetentionOutcome::default();
        for seg in self.segments.drain(..n) {
            remove_segment_files(self.disk.as_ref(), &self.dir, seg.base_offset)?;
            out.segments_deleted += 1;
            out.bytes_deleted += seg.size_bytes;
        }
        sync_dir(self.disk.as_ref(), &self.dir)?;
        self.terms = terms_within(&self.terms, start.index, self.last_index() + 1);
        self.forget_stale_sealing();
        self.check_invariants();
        Ok(out)
    }

    /// Invariants that hold between calls; checked after opening and after
    /// every structural change.
    fn check_invariants(&self) {
        let first = &self.segments[0];
        assert_eq!(first.base_offset, self.start.offset, "log start offset");
        assert_eq!(first.base_index, self.start.index, "log start index");
        for w in self.segments.windows(2) {
            assert_eq!(
                w[0].next_offset, w[1].base_offset,
                "segments are contiguous in offsets"
            );
            assert_eq!(
                w[0].next_index, w[1].base_index,
                "segments are contiguous in indexes"
            );
        }
        if self.last_index() >= self.start.index {
            assert_eq!(
                self.terms.first().map(|t| t.first_index),
                Some(self.start.index),
                "terms start at the log start"
            );
        }
        let sealed = &self.segments[..self.segments.len() - 1];
        assert!(
            self.sealing
                .iter()
                .all(|s| sealed.iter().any(|g| g.base_offset == s.base_offset)),
            "only sealed segments wait for a sealing sync"
        );
        assert!(self
            .terms
            .windows(2)
            .all(|w| w[0].term < w[1].term && w[0].first_index < w[1].first_index));
    }
}

/// Checks the CRC of every batch in `bytes`, read from `seg` at `position`.
fn verify_crcs(seg: &Segment, position: u64, bytes: &[u8], max_batch_bytes: usize) -> Result<()> {
    let mut at = 0usize;
    let mut expected_offset = None;
    // Bounded by the batches read (read_batches returns whole batches).
    while at < bytes.len() {
        let corrupt = |reason: String| StorageError::Corrupt {
            path: seg.path.clone(),
            position: position + at as u64,
            reason,
        };
        let h = crate::types::BatchHeader::parse(&bytes[at..], max_batch_bytes)
            .map_err(|e| corrupt(e.to_string()))?;
        let size = h.size_bytes();
        if size > bytes.len() - at {
            return Err(corrupt("batch runs past what was read".into()));
        }
        // The base offset lies outside the CRC: batches must follow on.
        if expected_offset.is_some_and(|o| o != h.base_offset) {
            return Err(corrupt(format!(
                "batch has base offset {}, expected {:?}",
                h.base_offset, expected_offset
            )));
        }
        expected_offset = Some(h.next_offset());
        let computed = crc32c::crc32c(&bytes[at + 21..at + size]);
        if computed != h.crc && !crate::bugs::on(crate::bugs::SKIP_CRC_CHECK) {
            return Err(corrupt(format!(
                "CRC-32C mismatch: stored {:#010x}, computed {computed:#010x}",
                h.crc
            )));
        }
        at += size;
    }
    Ok(())
}

fn ensure_dir(disk: &DiskRef, dir: &Path) -> Result<()> {
    if disk.exists(dir) {
        return Ok(());
    }
    disk.create_dir_all(dir)
        .map_err(io_err(|| format!("create {}", dir.display())))?;
    if let Some(parent) = dir.parent() {
        sync_dir(disk.as_ref(), parent)?;
    }
    Ok(())
}

fn sync_dir(disk: &dyn crate::io::Disk, dir: &Path) -> Result<()> {
    disk.sync_dir(dir)
        .map_err(io_err(|| format!("fsync directory {}", dir.display())))
}

fn remove_segment_files(disk: &dyn crate::io::Disk, dir: &Path, base: i64) -> Result<()> {
    let log = dir.join(segment::log_name(base));
    disk.remove_file(&log)
        .map_err(io_err(|| format!("remove {}", log.display())))?;
    let name = segment::index_name(base);
    // The temp copy is left only by a sealing sync a crash or a truncation
    // interrupted.
    for index in [dir.join(&name), atomic::tmp_path(dir, &name)] {
        if disk.exists(&index) {
            disk.remove_file(&index)
                .map_err(io_err(|| format!("remove {}", index.display())))?;
        }
    }
    Ok(())
}

/// Base offsets of the segments to open, oldest first. Files wholly below
/// the log start (left by a retention pass a crash interrupted) and index
/// files without a segment are removed.
fn list_segments(disk: &DiskRef, dir: &Path, start: LogStart) -> Result<Vec<i64>> {
    let names = disk
        .list_dir(dir)
        .map_err(io_err(|| format!("list {}", dir.display())))?;
    let mut logs: Vec<i64> = names
        .iter()
        .filter_map(|n| segment::parse_name(n))
        .filter(|&(_, is_log)| is_log)
        .map(|(b, _)| b)
        .collect();
    logs.sort_unstable();
    let first_kept = logs
        .partition_point(|&b| b <= start.offset)
        .saturating_sub(1);
    let first_kept = if logs.get(first_kept).is_some_and(|&b| b < start.offset) {
        first_kept + 1
    } else {
        first_kept
    };
    let mut removed = false;
    for &b in &logs[..first_kept] {
        remove_segment_files(disk.as_ref(), dir, b)?;
        removed = true;
    }
    let kept = logs.split_off(first_kept);
    // A repaired copy left by a repair that a crash or an error interrupted:
    // never installed (an install renames it away), so it is only waste.
    for name in names.iter().filter(|n| super::repair::is_repair_name(n)) {
        let path = dir.join(name);
        disk.remove_file(&path)
            .map_err(io_err(|| format!("remove {}", path.display())))?;
        removed = true;
    }
    // `logs` now holds the removed segments, whose index files went with them.
    for (b, _) in names
        .iter()
        .filter_map(|n| segment::parse_name(n))
        .filter(|&(b, is_log)| !is_log && !kept.contains(&b) && !logs.contains(&b))
    {
        let path = dir.join(segment::index_name(b));
        disk.remove_file(&path)
            .map_err(io_err(|| format!("remove {}", path.display())))?;
        removed = true;
    }
    if removed {
        sync_dir(disk.as_ref(), dir)?;
    }
    Ok(kept)
}

fn load_start(disk: &dyn crate::io::Disk, dir: &Path) -> Result<LogStart> {
    let Some(body) = atomic::read(disk, dir, START_FILE)? else {
        return Ok(LogStart::default());
    };
    if body.len() != 24 {
        return Err(StorageError::Corrupt {
            path: dir.join(START_FILE),
            position: 0,
            reason: format!("{} bytes, expected 24", body.len()),
        });
    }
    let field = |i: usize| u64::from_be_bytes(body[8 * i..8 * i + 8].try_into().expect("8 bytes"));
    Ok(LogStart {
        offset: field(0) as i64,
        index: field(1),
        prev_term: field(2),
    })
}

fn save_start(disk: &dyn crate::io::Disk, dir: &Path, s: LogStart) -> Result<()> {
    let mut body = Vec::with_capacity(24);
    body.extend_from_slice(&(s.offset as u64).to_be_bytes());
    body.extend_from_slice(&s.index.to_be_bytes());
    body.extend_from_slice(&s.prev_term.to_be_bytes());
    atomic::write(disk, dir, START_FILE, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::RealDisk;
    use crate::types::{BatchBuilder, ControlType, Event};
    use std::sync::Arc;

    fn config() -> LogConfig {
        LogConfig {
            segment_bytes: 1024,
            index_interval_bytes: 128,
            max_batch_bytes: 1024,
            ..LogConfig::default()
        }
    }

    fn batch(i: u64) -> RecordBatch {
        let mut b = BatchBuilder::new();
        for r in 0..1 + i % 3 {
            b.push(&Event {
                key: Some(Bytes::from(format!("k{i}-{r}"))),
                value: Some(Bytes::from(vec![i as u8; 60])),
                timestamp_ms: i as i64,
                headers: vec![],
            });
        }
        b.build()
    }

    /// A log of `n` entries in term 1 over several segments.
    fn filled(dir: &Path, n: u64) -> PartitionLog {
        let mut log = PartitionLog::open(Arc::new(RealDisk), dir, config(), 0).unwrap();
        for i in 1..=n {
            log.append(batch(i), 1, i, 0).unwrap();
        }
        log.sync().unwrap();
        assert!(log.segment_count() > 3, "the test needs several segments");
        log
    }

    fn reopen(dir: &Path) -> PartitionLog {
        PartitionLog::open(Arc::new(RealDisk), dir, config(), 0).unwrap()
    }

    /// RealDisk, counting the bytes its files are asked to read and
    /// noting each cache drop: the file, how far, and its length then.
    #[derive(Debug, Default)]
    struct CountingDisk {
        read_bytes: Arc<std::sync::atomic::AtomicU64>,
        drops: Arc<std::sync::Mutex<Vec<(PathBuf, u64, u64)>>>,
    }

    #[derive(Debug)]
    struct CountingFile {
        inner: Box<dyn crate::io::DiskFile>,
        read_bytes: Arc<std::sync::atomic::AtomicU64>,
        path: PathBuf,
        drops: Arc<std::sync::Mutex<Vec<(PathBuf, u64, u64)>>>,
    }

    #[derive(Debug)]
    struct CountingSync {
        inner: crate::io::SyncHandle,
        path: PathBuf,
        drops: Arc<std::sync::Mutex<Vec<(PathBuf, u64, u64)>>>,
    }

    impl crate::io::FileSync for CountingSync {
        fn sync(&self) -> std::io::Result<()> {
            self.inner.sync()
        }
        fn drop_cache(&self, len: u64) -> std::io::Result<()> {
            let file_len = std::fs::metadata(&self.path)?.len();
            self.drops
                .lock()
                .unwrap()
                .push((self.path.clone(), len, file_len));
            self.inner.drop_cache(len)
        }
    }

    impl crate::io::Disk for CountingDisk {
        fn open(
            &self,
            path: &Path,
            mode: crate::io::OpenMode,
        ) -> std::io::Result<Box<dyn crate::io::DiskFile>> {
            Ok(Box::new(CountingFile {
                inner: RealDisk.open(path, mode)?,
                read_bytes: self.read_bytes.clone(),
                path: path.to_path_buf(),
                drops: self.drops.clone(),
            }))
        }
        fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
            RealDisk.create_dir_all(path)
        }
        fn list_dir(&self, path: &Path) -> std::io::Result<Vec<String>> {
            RealDisk.list_dir(path)
        }
        fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
            RealDisk.rename(from, to)
        }
        fn remove_file(&self, path: &Path) -> std::io::Result<()> {
            RealDisk.remove_file(path)
        }
        fn remove_dir_all(&self, path: &Path) -> std::io::Result<()> {
            RealDisk.remove_dir_all(path)
        }
        fn sync_dir(&self, path: &Path) -> std::io::Result<()> {
            RealDisk.sync_dir(path)
        }
        fn exists(&self, path: &Path) -> bool {
            RealDisk.exists(path)
        }
    }

    impl crate::io::DiskFile for CountingFile {
        fn read_at(&self, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
            let n = buf.len() as u64;
            self.read_bytes
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            self.inner.read_at(buf, pos)
        }
        fn append(&mut self, data: &[u8]) -> std::io::Result<()> {
            self.inner.append(data)
        }
        fn sync(&self) -> std::io::Result<()> {
            self.inner.sync()
        }
        fn sync_handle(&self) -> std::io::Result<crate::io::SyncHandle> {
            Ok(Arc::new(CountingSync {
                inner: self.inner.sync_handle()?,
                path: self.path.clone(),
                drops: self.drops.clone(),
            }))
        }
        fn truncate(&mut self, len: u64) -> std::io::Result<()> {
            self.inner.truncate(len)
        }
        fn len(&self) -> std::io::Result<u64> {
            self.inner.len()
        }
    }

    /// With `page_cache_keep_bytes`, syncs drop the cached pages of each
    /// segment but its last bytes, in steps of 4 MiB; a sealed segment's
    /// at its sealing sync. Without, never.
    #[test]
    fn syncs_drop_cached_pages_but_the_end_of_the_log() {
        const MIB: u64 = 1 << 20;
        let fill = |keep: u64| {
            let dir = tempfile::tempdir().unwrap();
            let disk = Arc::new(CountingDisk::default());
            let config = LogConfig {
                segment_bytes: 20 * MIB,
                max_batch_bytes: 2 * MIB as usize,
                page_cache_keep_bytes: keep,
                ..config()
            };
            let mut log = PartitionLog::open(disk.clone(), dir.path(), config, 0).unwrap();
            for i in 1..=30 {
                let mut b = BatchBuilder::new();
                b.push(&Event {
                    value: Some(Bytes::from(vec![i as u8; MIB as usize])),
                    ..Event::default()
                });
                log.append(b.build(), 1, i, 0).unwrap();
                log.sync().unwrap();
            }
            assert!(log.segment_count() >= 2, "the test needs a roll");
            let drops = disk.drops.lock().unwrap().clone();
            (drops, log.segments[0].path.clone(), dir)
        };
        assert!(fill(0).0.is_empty(), "keep 0: the OS decides");
        let (drops, first, _dir) = fill(8 * MIB);
        assert!(drops.len() >= 3, "{drops:?}");
        for (_, to, len) in &drops {
            assert!(to + 8 * MIB <= *len, "kept less than asked: {drops:?}");
        }
        // The sealed segment's last drop came with its sealing sync, from
        // its final length; the ones before it, in steps.
        let sealed_len = std::fs::metadata(&first).unwrap().len();
        let (sealing, active): (Vec<_>, Vec<_>) = drops
            .iter()
            .filter(|d| d.0 == first)
            .partition(|d| d.2 == sealed_len && d.1 + 8 * MIB == sealed_len);
        assert_eq!(sealing.len(), 1, "{drops:?}");
        assert!(active.len() >= 2, "{drops:?}");
        for pair in active.windows(2) {
            assert!(pair[1].1 >= pair[0].1 + 4 * MIB, "{drops:?}");
        }
    }

    /// Entries asked for up to an index the active segment remembers are
    /// read alone, not with the rest of the segment after them (the
    /// committed entries raft-rs reads for each Ready sit just before the
    /// entries still being replicated).
    #[test]
    fn entries_read_only_the_batches_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Arc::new(CountingDisk::default());
        let config = LogConfig {
            segment_bytes: 1 << 20,
            ..config()
        };
        let mut log = PartitionLog::open(disk.clone(), dir.path(), config, 0).unwrap();
        for i in 1..=100 {
            log.append(batch(i), 1, i, 0).unwrap();
        }
        let before = disk.read_bytes.load(std::sync::atomic::Ordering::Relaxed);
        let got = log.entries(40, 50, usize::MAX).unwrap();
        let read = disk.read_bytes.load(std::sync::atomic::Ordering::Relaxed) - before;
        let indexes: Vec<u64> = got.iter().map(|(i, _)| *i).collect();
        assert_eq!(indexes, (40..50).collect::<Vec<_>>());
        let wanted: usize = got.iter().map(|(_, b)| b.size_bytes()).sum();
        assert_eq!(read, wanted as u64, "bytes read for 10 of 100 batches");
    }

    #[test]
    fn recent_entry_kinds_come_from_memory_for_the_active_segment_only() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Arc::new(CountingDisk::default());
        let mut log = PartitionLog::open(disk.clone(), dir.path(), config(), 0).unwrap();
        let noop = || BatchBuilder::control(ControlType::RaftNoop, Bytes::new(), -1);
        log.append(noop(), 1, 1, 0).unwrap();
        for i in 2..=40 {
            log.append(batch(i), 1 + i / 20, i, 0).unwrap();
        }
        log.append(noop(), 3, 41, 0).unwrap();
        log.sync().unwrap();
        assert!(log.segment_count() > 3, "the test needs sealed segments");
        let active_first = log.segments.last().unwrap().base_index;
        assert!(active_first < 39, "the test needs a few active batches");

        let before = disk.read_bytes.load(std::sync::atomic::Ordering::Relaxed);
        let kinds = log.recent_entry_kinds(active_first, 42).unwrap();
        let read = disk.read_bytes.load(std::sync::atomic::Ordering::Relaxed) - before;
        assert_eq!(read, 0, "answered from memory");
        let expected: Vec<EntryKind> = (active_first..42)
            .map(|index| EntryKind {
                index,
                term: 1 + index / 20,
                control: index == 41,
            })
            .collect();
        assert_eq!(kinds, expected);
        // Entries in sealed segments, beyond the log, or none: not known.
        assert_eq!(log.recent_entry_kinds(active_first - 1, 42), None);
        assert_eq!(log.recent_entry_kinds(1, 2), None);
        assert_eq!(log.recent_entry_kinds(active_first, 43), None);
        assert_eq!(log.recent_entry_kinds(40, 40), None);
    }

    #[test]
    fn next_offset_after_index_matches_the_batches() {
        let dir = tempfile::tempdir().unwrap();
        let log = filled(dir.path(), 40);
        assert_eq!(log.next_offset_after_index(0).unwrap(), 0);
        for (index, b) in log.entries(1, 41, usize::MAX).unwrap() {
            assert_eq!(log.next_offset_after_index(index).unwrap(), b.next_offset());
        }
        assert_eq!(log.next_offset_after_index(40).unwrap(), log.next_offset());
        assert!(log.next_offset_after_index(41).is_err());
    }

    /// Checks an empty log starting at `offset` / `index` after `prev_term`
    /// that accepts the next entry, here and after a reopen.
    fn check_fresh(dir: &Path, log: &mut PartitionLog, offset: i64, index: u64, prev_term: u64) {
        for log in [&mut *log, &mut reopen(dir)] {
            assert_eq!(log.log_start_offset(), offset);
            assert_eq!(log.next_offset(), offset);
            assert_eq!((log.first_index(), log.last_index()), (index, index - 1));
            assert_eq!(log.term(index - 1), Some(prev_term));
            assert_eq!(log.segment_count(), 1);
        }
        let at = log.append(batch(1), prev_term + 1, index, 0).unwrap();
        assert_eq!((at.base_offset, at.index), (offset, index));
        log.sync().unwrap();
        let again = reopen(dir);
        assert_eq!(again.last_index(), index);
        assert_eq!(again.term(index), Some(prev_term + 1));
    }

    #[test]
    fn reset_past_the_end_starts_an_empty_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = filled(dir.path(), 30);
        let (offset, index) = (log.next_offset() + 500, 80);
        log.reset(offset, index, 4).unwrap();
        check_fresh(dir.path(), &mut log, offset, index, 4);
    }

    #[test]
    fn reset_into_the_log_discards_the_overlapping_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = filled(dir.path(), 30);
        // Inside a segment and at a different index than the log has there:
        // a divergent follower.
        let offset = log.next_offset_after_index(12).unwrap() + 1;
        log.reset(offset, 20, 3).unwrap();
        check_fresh(dir.path(), &mut log, offset, 20, 3);

        // Before the start: everything goes.
        let dir = tempfile::tempdir().unwrap();
        let mut log = filled(dir.path(), 30);
        log.reset(0, 5, 2).unwrap();
        check_fresh(dir.path(), &mut log, 0, 5, 2);
    }

    /// A crash after the new start is saved (files not yet removed) must
    /// reopen as the new empty log, even when a segment left behind is named
    /// by the new start offset but was labelled with another index.
    #[test]
    fn reset_interrupted_after_the_start_is_saved() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = filled(dir.path(), 30);
        let seg = &log.segments[2];
        let (offset, index) = (seg.base_offset, seg.base_index + 7);
        // What reset does before the crash: cut entries at or past the new
        // start offset, then save the start.
        let at = seg
            .locate(Target::Offset(offset), 1024)
            .unwrap()
            .expect("the segment's first batch");
        log.truncate_suffix(at.index).unwrap();
        save_start(
            log.disk.as_ref(),
            dir.path(),
            LogStart {
                offset,
                index,
                prev_term: 1,
            },
        )
        .unwrap();
        drop(log);
        let mut log = reopen(dir.path());
        check_fresh(dir.path(), &mut log, offset, index, 1);
    }

    /// A retention pass interrupted after saving the new start leaves sealed
    /// segments (with their index files) below it; reopening removes them.
    #[test]
    fn retention_interrupted_after_the_start_is_saved() {
        let dir = tempfile::tempdir().unwrap();
        let log = filled(dir.path(), 30);
        let seg = &log.segments[2];
        let start = LogStart {
            offset: seg.base_offset,
            index: seg.base_index,
            prev_term: 1,
        };
        let last = log.last_index();
        save_start(log.disk.as_ref(), dir.path(), start).unwrap();
        drop(log);
        let log = reopen(dir.path());
        assert_eq!(log.log_start_offset(), start.offset);
        assert_eq!((log.first_index(), log.last_index()), (start.index, last));
        assert!(!dir.path().join(segment::index_name(0)).exists());
    }

    /// The recent batches an active segment remembers find the same batch
    /// as a scan from the sparse index, for every offset and entry, before
    /// and after the oldest are dropped and after a truncation.
    #[test]
    fn recent_batches_agree_with_the_scan() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes: 1 << 20,
            index_interval_bytes: 512,
            max_batch_bytes: 4096,
            ..LogConfig::default()
        };
        let mut log = PartitionLog::open(Arc::new(RealDisk), dir.path(), config, 0).unwrap();
        let check = |log: &PartitionLog| {
            let seg = log.active();
            let mut hits = 0;
            for index in seg.base_index..seg.next_index {
                let scanned = seg.locate(Target::Index(index), 4096).unwrap().unwrap();
                if let Some(r) = seg.recent_by_index(index) {
                    hits += 1;
                    assert_eq!((r.position, r.index), (scanned.position, index));
                    assert_eq!(r.next_offset, scanned.header.next_offset());
                    assert_eq!(r.base_offset, scanned.header.base_offset);
                }
                let offsets = scanned.header.base_offset..scanned.header.next_offset();
                for offset in offsets {
                    let by_offset = seg.find(Target::Offset(offset), 4096).unwrap();
                    assert_eq!(
                        by_offset,
                        Some((scanned.position, index)),
                        "offset {offset}"
                    );
                }
                assert_eq!(
                    log.next_offset_after_index(index).unwrap(),
                    scanned.header.next_offset()
                );
            }
            hits
        };
        for i in 1..=100 {
            log.append(batch(i), 1, i, 0).unwrap();
        }
        assert_eq!(check(&log), 100);
        for i in 101..=600 {
            log.append(batch(i), 1, i, 0).unwrap();
        }
        assert_eq!(check(&log), 256, "only the newest are remembered");
        log.truncate_suffix(450).unwrap();
        assert_eq!(log.last_index(), 449);
        check(&log);
        log.append(batch(450), 2, 450, 0).unwrap();
        check(&log);
    }
}
