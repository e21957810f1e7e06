//! One segment: a file of consecutive batches named by its base offset, its
//! sparse index in memory, and (once sealed) the index file beside it.

use super::index::{floor_entry, IndexEntry, SegmentSummary, TermRun};
use super::scan::{damage_is_torn_write, ScanError, Scanned, Scanner};
use super::{atomic, io_err, Result, StorageError};
use crate::io::{read_exact_at, Disk, DiskFile, OpenMode};
use crate::types::record::HEADER_SIZE;
use crate::types::BatchHeader;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};

/// File name of the segment whose first offset is `base_offset`.
pub fn log_name(base_offset: i64) -> String {
    format!("{base_offset:020}.log")
}

/// File name of that segment's index.
pub fn index_name(base_offset: i64) -> String {
    format!("{base_offset:020}.index")
}

/// The base offset a segment or index file name stands for, and whether it
/// is a segment (`.log`) file.
pub fn parse_name(name: &str) -> Option<(i64, bool)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let base = stem.parse().ok()?;
    match ext {
        "log" => Some((base, true)),
        "index" => Some((base, false)),
        _ => None,
    }
}

/// A segment of the partition log: its file and its [`Extent`] (reachable
/// directly through `Deref`).
#[derive(Debug)]
pub struct Segment {
    pub path: PathBuf,
    file: Box<dyn DiskFile>,
    x: Extent,
}

/// What a segment holds: its first and next offset and index, size, newest
/// timestamp and sparse index. Kept apart from the file so a scan of the file
/// can update it.
#[derive(Debug, Clone)]
pub struct Extent {
    pub base_offset: i64,
    pub base_index: u64,
    pub next_offset: i64,
    pub next_index: u64,
    pub size_bytes: u64,
    /// Newest batch timestamp in the segment (`i64::MIN` if empty).
    pub max_timestamp: i64,
    entries: Vec<IndexEntry>,
    bytes_since_entry: u64,
    /// The last batches appended, oldest first, consecutive, at most
    /// [`RECENT_BATCHES`]: readers at the tail (a leader sending entries a
    /// follower has not got, a consumer keeping up, the high watermark after
    /// a commit) find their batch here instead of scanning headers from the
    /// last sparse index entry, a file read each time.
    recent: VecDeque<Recent>,
}

/// Batches remembered per active segment: 40 bytes each. At 300,000
/// records/s per partition in batches of 100, a quarter of a second.
const RECENT_BATCHES: usize = 256;

/// Where one recently appended batch is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recent {
    pub index: u64,
    pub position: u64,
    pub base_offset: i64,
    pub next_offset: i64,
    /// A control batch (what Raft kind it is needs the record itself).
    pub control: bool,
}

impl std::ops::Deref for Segment {
    type Target = Extent;
    fn deref(&self) -> &Extent {
        &self.x
    }
}

impl Extent {
    fn empty(base_offset: i64, base_index: u64) -> Self {
        Extent {
            base_offset,
            base_index,
            next_offset: base_offset,
            next_index: base_index,
            size_bytes: 0,
            max_timestamp: i64::MIN,
            entries: Vec::new(),
            bytes_since_entry: 0,
            recent: VecDeque::new(),
        }
    }

    /// The recent batch that is Raft entry `index`, if remembered.
    pub fn recent_by_index(&self, index: u64) -> Option<Recent> {
        let first = self.recent.front()?.index;
        let at = usize::try_from(index.checked_sub(first)?).ok()?;
        let r = *self.recent.get(at)?;
        debug_assert_eq!(r.index, index);
        Some(r)
    }

    /// The recent batch holding `offset`, if remembered.
    pub fn recent_by_offset(&self, offset: i64) -> Option<Recent> {
        let (first, last) = (self.recent.front()?, self.recent.back()?);
        if offset < first.base_offset || offset >= last.next_offset {
            return None;
        }
        let at = self.recent.partition_point(|r| r.next_offset <= offset);
        let r = *self.recent.get(at)?;
        debug_assert!(r.base_offset <= offset && offset < r.next_offset);
        Some(r)
    }

    /// Stops remembering recent batches (a sealed segment's are dropped).
    pub fn forget_recent(&mut self) {
        self.recent = VecDeque::new();
    }

    /// The stretch between sparse index entries holding the batch at
    /// `position`: (position, offset, index) where it starts and where it
    /// ends (the next entry, or the segment's end).
    pub fn stretch_around(&self, position: u64) -> ((u64, i64, u64), (u64, i64, u64)) {
        let at = |e: &IndexEntry| {
            (
                e.position as u64,
                self.base_offset + e.offset_delta as i64,
                self.base_index + e.index_delta as u64,
            )
        };
        let n = self
            .entries
            .partition_point(|e| e.position as u64 <= position);
        let from = n
            .checked_sub(1)
            .map_or((0, self.base_offset, self.base_index), |i| {
                at(&self.entries[i])
            });
        let to = self
            .entries
            .get(n)
            .map_or((self.size_bytes, self.next_offset, self.next_index), at);
        (from, to)
    }

    /// Updates the extent and sparse index for a batch just written at the
    /// end of the file.
    fn note_append(&mut self, header: &BatchHeader, interval: u64) {
        if self.entries.is_empty() || self.bytes_since_entry >= interval {
            self.entries.push(IndexEntry {
                offset_delta: (self.next_offset - self.base_offset) as u32,
                index_delta: (self.next_index - self.base_index) as u32,
                position: self.size_bytes as u32,
                timestamp_before: self.max_timestamp,
            });
            self.bytes_since_entry = 0;
        }
        if self.recent.len() == RECENT_BATCHES {
            self.recent.pop_front();
        }
        self.recent.push_back(Recent {
            index: self.next_index,
            position: self.size_bytes,
            base_offset: header.base_offset,
            next_offset: header.next_offset(),
            control: header.is_control(),
        });
        let size = header.size_bytes() as u64;
        self.size_bytes += size;
        self.bytes_since_entry += size;
        self.next_offset = header.next_offset();
        self.next_index += 1;
        self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
    }

    /// Rebuilds the extent by scanning `[0, end)` of `file` with CRC checks.
    /// On damage returns its position and reason, with the extent covering
    /// the valid prefix. With `tolerate_crc`, a batch whose header is sound
    /// but whose CRC fails is taken in and the first such returned.
    fn rebuild(
        &mut self,
        file: &dyn DiskFile,
        end: u64,
        max_batch_bytes: usize,
        terms: &mut Vec<TermRun>,
        tolerate_crc: bool,
    ) -> Result<Option<(u64, String)>, (u64, String)> {
        *self = Extent::empty(self.base_offset, self.base_index);
        // The interval does not matter for correctness; rebuilt segments get
        // the default spacing.
        let interval = super::LogConfig::default().index_interval_bytes;
        let mut scanner = Scanner::new(file, 0, end, true, max_batch_bytes);
        if tolerate_crc {
            scanner = scanner.tolerating_crc();
        }
        // Bounded by the batches in [0, end).
        loop {
            match scanner.next_batch() {
                Ok(None) => return Ok(scanner.crc_damage().cloned()),
                Ok(Some(Scanned { position, header })) => {
                    if header.base_offset != self.next_offset {
                        return Err((
                            position,
                            format!(
                                "batch has base offset {}, expected {}",
                                header.base_offset, self.next_offset
                            ),
                        ));
                    }
                    if header.partition_leader_epoch < 1 {
                        return Err((position, "batch has no term".into()));
                    }
                    // The term (Kafka's leader epoch) lies outside the
                    // batch's CRC: a damaged one shows only as a term that
                    // goes down along the log.
                    let term = header.partition_leader_epoch as u64;
                    if let Some(before) = terms.last().filter(|t| t.term > term) {
                        return Err((
                            position,
                            format!(
                                "batch has term {term}, below the term {} of the entries before it",
                                before.term
                            ),
                        ));
                    }
                    push_term(terms, self.next_index, term);
                    self.note_append(&header, interval);
                }
                Err(ScanError::Io(e)) => {
                    return Err((self.size_bytes, format!("read failed: {e}")))
                }
                Err(ScanError::Damaged { position, reason }) => return Err((position, reason)),
            }
        }
    }
}

/// How the caller wants a batch found.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// The batch holding this offset.
    Offset(i64),
    /// The batch that is this Raft entry.
    Index(u64),
    /// The first batch whose newest timestamp is at least this.
    Timestamp(i64),
}

/// A batch located in a segment.
#[derive(Clone, Copy, Debug)]
pub struct Located {
    pub position: u64,
    pub index: u64,
    pub header: BatchHeader,
}

impl Segment {
    /// Creates an empty segment file. The caller syncs the directory.
    pub fn create(disk: &dyn Disk, dir: &Path, base_offset: i64, base_index: u64) -> Result<Self> {
        let path = dir.join(log_name(base_offset));
        let file = disk
            .open(&path, OpenMode::CreateNew)
            .map_err(io_err(|| format!("create segment {}", path.display())))?;
        Ok(Segment {
            path,
            file,
            x: Extent::empty(base_offset, base_index),
        })
    }

    /// Opens a sealed segment from its index file, or by scanning it (with
    /// CRC checks) if the index file is missing or does not match. Returns
    /// the bytes of torn tail cut off, if any, whether the index file was
    /// used (if not, the caller queues its rewrite), and a batch whose CRC
    /// fails, taken in (see `recover`), for the log to repair.
    ///
    /// A segment with a matching index file was synced before the index was
    /// written, so it is adopted as it stands. Without one, its sync may
    /// not have finished (the log rolls on and the sealing sync runs in the
    /// background): a torn write at its end is cut off, as in the active
    /// segment, and the caller must then drop every later segment. Other
    /// damage is corruption.
    pub fn open_sealed(
        disk: &dyn Disk,
        dir: &Path,
        base_offset: i64,
        base_index: u64,
        max_batch_bytes: usize,
        terms: &mut Vec<TermRun>,
    ) -> Result<(Self, Option<u64>, bool, Option<StorageError>)> {
        let mut seg = Self::open_file(disk, dir, base_offset, base_index)?;
        let file_len = seg
            .file
            .len()
            .map_err(io_err(|| format!("stat {}", seg.path.display())))?;
        if let Some(summary) = read_summary(disk, dir, base_offset) {
            if summary.size_bytes == file_len && summary.base_index == base_index {
                seg.adopt(summary, terms);
                return Ok((seg, None, true, None));
            }
        }
        let (torn, damage) = seg.recover(file_len, max_batch_bytes, terms)?;
        Ok((seg, torn, false, damage))
    }

    /// Opens the active (last) segment, validating every batch. A torn write
    /// at the end is cut off; other damage is an error, unless it is only
    /// batches whose CRC fails (returned, see `recover`).
    pub fn open_active(
        disk: &dyn Disk,
        dir: &Path,
        base_offset: i64,
        base_index: u64,
        max_batch_bytes: usize,
        terms: &mut Vec<TermRun>,
    ) -> Result<(Self, Option<u64>, Option<StorageError>)> {
        let mut seg = Self::open_file(disk, dir, base_offset, base_index)?;
        let file_len = seg
            .file
            .len()
            .map_err(io_err(|| format!("stat {}", seg.path.display())))?;
        let (torn, damage) = seg.recover(file_len, max_batch_bytes, terms)?;
        Ok((seg, torn, damage))
    }

    /// Scans the whole file with CRC checks; a torn tail is cut off
    /// (durably) and its length returned. Damage that is not a torn write
    /// is taken in if it is only batches whose CRC fails (their headers
    /// sound, valid batches around them): the segment opens, and the first
    /// such batch is returned as corruption for the log to repair.
    fn recover(
        &mut self,
        file_len: u64,
        max_batch_bytes: usize,
        terms: &mut Vec<TermRun>,
    ) -> Result<(Option<u64>, Option<StorageError>)> {
        let terms_before = terms.len();
        let Err((position, reason)) = self.rebuild(file_len, max_batch_bytes, terms) else {
            return Ok((None, None));
        };
        let torn = damage_is_torn_write(self.file.as_ref(), position, file_len, max_batch_bytes)
            .map_err(io_err(|| format!("read {}", self.path.display())))?;
        if !torn {
            terms.truncate(terms_before);
            return match self.rebuild_tolerant(file_len, max_batch_bytes, terms) {
                Ok(Some((p, r))) => Ok((None, Some(self.corrupt(p, r)))),
                _ => Err(self.corrupt(position, reason)),
            };
        }
        // Everything from the damage on was never synced: cut it off and
        // make the cut durable before anything is appended after it.
        self.file
            .truncate(position)
            .and_then(|()| self.file.sync())
            .map_err(io_err(|| {
                format!("truncate torn tail of {}", self.path.display())
            }))?;
        terms.truncate(terms_before);
        self.rebuild(position, max_batch_bytes, terms)
            .map_err(|(p, r)| self.corrupt(p, r))?;
        Ok((Some(file_len - position), None))
    }

    fn open_file(disk: &dyn Disk, dir: &Path, base_offset: i64, base_index: u64) -> Result<Self> {
        let path = dir.join(log_name(base_offset));
        let file = disk
            .open(&path, OpenMode::Existing)
            .map_err(io_err(|| format!("open segment {}", path.display())))?;
        Ok(Segment {
            path,
            file,
            x: Extent::empty(base_offset, base_index),
        })
    }

    fn adopt(&mut self, s: SegmentSummary, terms: &mut Vec<TermRun>) {
        let x = &mut self.x;
        x.next_offset = s.next_offset;
        x.next_index = s.next_index;
        x.size_bytes = s.size_bytes;
        x.max_timestamp = s.max_timestamp;
        x.entries = s.entries;
        for run in s.terms {
            push_term(terms, run.first_index, run.term);
        }
    }

    fn rebuild(
        &mut self,
        end: u64,
        max_batch_bytes: usize,
        terms: &mut Vec<TermRun>,
    ) -> Result<(), (u64, String)> {
        self.x
            .rebuild(self.file.as_ref(), end, max_batch_bytes, terms, false)
            .map(|_| ())
    }

    fn rebuild_tolerant(
        &mut self,
        end: u64,
        max_batch_bytes: usize,
        terms: &mut Vec<TermRun>,
    ) -> Result<Option<(u64, String)>, (u64, String)> {
        self.x
            .rebuild(self.file.as_ref(), end, max_batch_bytes, terms, true)
    }

    fn corrupt(&self, position: u64, reason: String) -> StorageError {
        StorageError::Corrupt {
            path: self.path.clone(),
            position,
            reason,
        }
    }

    /// Appends one stamped batch (not yet synced).
    pub fn append(
        &mut self,
        parts: &[&[u8]],
        header: &BatchHeader,
        interval: u64,
    ) -> std::io::Result<()> {
        debug_assert_eq!(header.base_offset, self.next_offset);
        debug_assert_eq!(
            header.size_bytes(),
            parts.iter().map(|p| p.len()).sum::<usize>()
        );
        self.file.append_parts(parts)?;
        self.x.note_append(header, interval);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.size_bytes == 0
    }

    /// See [`Extent::forget_recent`].
    pub fn forget_recent(&mut self) {
        self.x.forget_recent();
    }

    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync()
    }

    pub fn sync_handle(&self) -> std::io::Result<crate::io::SyncHandle> {
        self.file.sync_handle()
    }

    /// The index file's contents for this segment once sealed (never
    /// written again). `terms` are the log's term runs. The caller writes
    /// it only after the segment's data is durable: an index file present
    /// means its segment was synced whole.
    pub fn summary_bytes(&self, terms: &[TermRun]) -> Vec<u8> {
        SegmentSummary {
            base_offset: self.base_offset,
            base_index: self.base_index,
            next_offset: self.next_offset,
            next_index: self.next_index,
            size_bytes: self.size_bytes,
            max_timestamp: self.max_timestamp,
            terms: terms_within(terms, self.base_index, self.next_index),
            entries: self.entries.clone(),
        }
        .encode()
    }

    /// The position and index of the batch holding offset or entry `target`
    /// (not a timestamp): from the recent batches when they hold it, else
    /// as [`Self::locate`] finds it.
    pub fn find(&self, target: Target, max_batch_bytes: usize) -> Result<Option<(u64, u64)>> {
        let recent = match target {
            Target::Offset(o) => self.recent_by_offset(o),
            Target::Index(i) => self.recent_by_index(i),
            Target::Timestamp(_) => None,
        };
        if let Some(r) = recent {
            return Ok(Some((r.position, r.index)));
        }
        Ok(self
            .locate(target, max_batch_bytes)?
            .map(|at| (at.position, at.index)))
    }

    /// Finds the batch matching `target`, or `None` if it lies at or past the
    /// end of the segment. Reads headers only, from the nearest index entry.
    pub fn locate(&self, target: Target, max_batch_bytes: usize) -> Result<Option<Located>> {
        let floor = match target {
            Target::Offset(o) => floor_entry(&self.entries, |e| {
                self.base_offset + e.offset_delta as i64 <= o
            }),
            Target::Index(i) => floor_entry(&self.entries, |e| {
                self.base_index + e.index_delta as u64 <= i
            }),
            Target::Timestamp(t) => floor_entry(&self.entries, |e| e.timestamp_before < t),
        };
        let (start, mut index) = match floor {
            Some(e) => (e.position as u64, self.base_index + e.index_delta as u64),
            None => (0, self.base_index),
        };
        let mut scanner = Scanner::new(
            self.file.as_ref(),
            start,
            self.size_bytes,
            false,
            max_batch_bytes,
        );
        // Bounded by the batches in the segment.
        loop {
            let found = scanner.next_batch().map_err(|e| self.scan_error(e))?;
            let Some(Scanned { position, header }) = found else {
                return Ok(None);
            };
            let hit = match target {
                Target::Offset(o) => header.next_offset() > o,
                Target::Index(i) => index == i,
                Target::Timestamp(t) => header.max_timestamp >= t,
            };
            if hit {
                return Ok(Some(Located {
                    position,
                    index,
                    header,
                }));
            }
            index += 1;
        }
    }

    fn scan_error(&self, e: ScanError) -> StorageError {
        match e {
            ScanError::Io(source) => StorageError::Io {
                context: format!("read {}", self.path.display()),
                source,
            },
            ScanError::Damaged { position, reason } => self.corrupt(position, reason),
        }
    }

    /// Reads whole batches from `position`: as many as fit in `max_bytes`
    /// (at least one), stopping before any batch that reaches `max_offset`
    /// (exclusive) or would pass `max_index` (exclusive). Returns the bytes
    /// and the number of batches.
    pub fn read_batches(
        &self,
        position: u64,
        max_bytes: usize,
        max_offset: i64,
        index_limit: u64,
        first_index: u64,
        max_batch_bytes: usize,
    ) -> Result<(Bytes, usize)> {
        // One read of up to `max_bytes`, then the batch boundaries are
        // found in that buffer: the bytes are read once and handed out as a
        // slice of it.
        let avail = self.size_bytes - position;
        // Where the wanted batches end, when the segment remembers the
        // batch at the limit: committed entries for a Ready, or a fetch up
        // to the high watermark, are a few batches near the tail, and a
        // read to `max_bytes` would read (and zero) far more.
        let end = self
            .recent_by_index(index_limit)
            .or_else(|| self.recent_by_offset(max_offset))
            .map(|r| r.position)
            .filter(|end| *end > position);
        let wanted = end.map_or(avail, |end| end - position);
        let want = (max_bytes.max(HEADER_SIZE) as u64).min(wanted) as usize;
        let mut buf = self.read_bytes(position, want)?;
        let (mut at, mut count, mut index) = (0usize, 0usize, first_index);
        // Bounded by the batches that fit in the buffer.
        while buf.len() - at >= HEADER_SIZE {
            let h = BatchHeader::parse(&buf[at..], max_batch_bytes)
                .map_err(|e| self.corrupt(position + at as u64, e.to_string()))?;
            if h.next_offset() > max_offset || index >= index_limit {
                break;
            }
            let size = h.size_bytes();
            if at + size > buf.len() {
                if count > 0 {
                    break;
                }
                // The first batch is larger than asked for: it is returned
                // whole all the same, as Kafka does.
                if size as u64 > avail {
                    return Err(self.corrupt(
                        position,
                        format!("batch of {size} bytes runs past the segment end"),
                    ));
                }
                buf = self.read_bytes(position, size)?;
            }
            at += size;
            count += 1;
            index += 1;
        }
        Ok((buf.slice(..at), count))
    }

    fn read_bytes(&self, position: u64, len: usize) -> Result<Bytes> {
        let mut buf = BytesMut::zeroed(len);
        read_exact_at(self.file.as_ref(), &mut buf, position)
            .map_err(io_err(|| format!("read {}", self.path.display())))?;
        Ok(buf.freeze())
    }

    /// Cuts the segment just before the located batch.
    pub fn truncate_to(
        &mut self,
        at: &Located,
        max_batch_bytes: usize,
        terms: &mut Vec<TermRun>,
    ) -> Result<Option<StorageError>> {
        self.file
            .truncate(at.position)
            .and_then(|()| self.file.sync())
            .map_err(io_err(|| format!("truncate {}", self.path.display())))?;
        // Rare (a Raft conflict): rescan for an exact summary. A batch
        // before the cut that fails only its CRC (known damage, or found
        // now) is stepped over and returned, as an open does: the cut is
        // not the damaged batch's business.
        let mut scratch = Vec::new();
        let damage = self
            .rebuild_tolerant(at.position, max_batch_bytes, &mut scratch)
            .map_err(|(p, r)| self.corrupt(p, r))?;
        terms.retain(|t| t.first_index < at.index);
        Ok(damage.map(|(p, r)| self.corrupt(p, r)))
    }

    /// Opens the segment's file again (after a repaired copy was renamed
    /// over it) and checks `[from, to)` batch by batch with CRCs.
    pub fn reopen_and_verify(
        &mut self,
        disk: &dyn Disk,
        from: u64,
        to: u64,
        max_batch_bytes: usize,
    ) -> Result<()> {
        self.file = disk
            .open(&self.path, OpenMode::Existing)
            .map_err(io_err(|| format!("open {}", self.path.display())))?;
        let mut scanner = Scanner::new(self.file.as_ref(), from, to, true, max_batch_bytes);
        // Bounded by the batches in the stretch.
        while scanner
            .next_batch()
            .map_err(|e| self.scan_error(e))?
            .is_some()
        {}
        Ok(())
    }

    /// The file's length on disk, for checks after reopening.
    pub fn file_len(&self) -> std::io::Result<u64> {
        self.file.len()
    }
}

fn read_summary(disk: &dyn Disk, dir: &Path, base_offset: i64) -> Option<SegmentSummary> {
    // A missing or unusable index is rebuilt from the segment, so the reason
    // it could not be used does not matter here.
    let body = atomic::read(disk, dir, &index_name(base_offset)).ok()??;
    SegmentSummary::decode(&body).ok()
}

/// Records that entry `index` has `term`, extending the runs.
pub fn push_term(terms: &mut Vec<TermRun>, index: u64, term: u64) {
    match terms.last() {
        Some(last) if last.term == term => {}
        _ => terms.push(TermRun {
            first_index: index,
            term,
        }),
    }
}

/// The runs covering entries `[from, to)`, the first clipped to start at
/// `from`.
pub fn terms_within(terms: &[TermRun], from: u64, to: u64) -> Vec<TermRun> {
    if from >= to {
        // No entries, no runs: a run kept for an empty range would claim a
        // term for an entry that does not exist.
        return Vec::new();
    }
    let start = terms
        .partition_point(|t| t.first_index <= from)
        .saturating_sub(1);
    let mut out: Vec<TermRun> = terms[start..]
        .iter()
        .take_while(|t| t.first_index < to)
        .copied()
        .collect();
    if let Some(first) = out.first_mut() {
        first.first_index = first.first_index.max(from);
    }
    out
}
