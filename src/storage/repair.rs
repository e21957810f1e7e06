//! Damage found in a replica's log, and its repair from a healthy replica.
//!
//! A batch whose CRC does not hold (bit rot, tampering) is found by a read
//! (consumer fetch, replication, the background scrub): the log records it
//! as its [`Damage`], reads of it fail, and the replica neither leads nor
//! campaigns until it is repaired (see the driver). Raft's Log Matching
//! property makes a committed entry identical (same bytes: entries are
//! stamped with offset and term, and control batches are built
//! deterministically) on every replica, so the damaged stretch is rebuilt by
//! fetching the same entries from a peer: [`RepairPlan`] names the stretch
//! between two sparse index entries of the damaged sealed segment (trusted:
//! the index file is checksummed), [`RepairPlan::check`] verifies what the
//! peer sent (CRCs, offsets, entry count, terms, exact length), and the
//! segment is rewritten as a copy, synced, renamed over the original and the
//! directory synced ([`write_repaired_copy`], `PartitionLog::install_repair`).
//! Nothing is truncated: the entries stay where they were.

use super::index::TermRun;
use super::segment::log_name;
use super::{io_err, Result, StorageError};
use crate::io::{read_exact_at, Disk, OpenMode};
use crate::types::record::{BatchHeader, HEADER_SIZE};
use bytes::Bytes;
use std::fmt;
use std::path::{Path, PathBuf};

/// A damaged batch found in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    pub path: PathBuf,
    /// Byte position of the damaged batch in its segment file.
    pub position: u64,
    pub reason: String,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "damaged batch in {} at byte {}: {}",
            self.path.display(),
            self.position,
            self.reason
        )
    }
}

/// The stretch of a sealed segment to rebuild, and what its replacement
/// must look like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairPlan {
    pub path: PathBuf,
    /// The segment's base offset and size when planned: the repair is
    /// installed only if the segment is still there, unchanged.
    pub base_offset: i64,
    pub segment_bytes: u64,
    /// Byte range `[from_position, to_position)` to replace.
    pub from_position: u64,
    pub to_position: u64,
    /// Offsets `[from_offset, to_offset)` and entries `[from_index,
    /// to_index)` it holds.
    pub from_offset: i64,
    pub to_offset: i64,
    pub from_index: u64,
    pub to_index: u64,
    /// The term runs of those entries (the log's, which come from the index
    /// file or a CRC-checked scan).
    pub terms: Vec<TermRun>,
}

impl RepairPlan {
    /// The term of entry `index` by the plan's runs.
    fn term(&self, index: u64) -> Option<u64> {
        let i = self.terms.partition_point(|t| t.first_index <= index);
        i.checked_sub(1).map(|i| self.terms[i].term)
    }

    /// Checks batches fetched from a peer for `[from_offset, to_offset)`
    /// and returns exactly the bytes that replace the damaged stretch: every
    /// batch whole, with a good CRC, contiguous offsets from `from_offset`
    /// to `to_offset`, one entry each of `[from_index, to_index)` with the
    /// term this log has for it, and exactly `to_position - from_position`
    /// bytes in all.
    pub fn check(&self, fetched: &[u8], max_batch_bytes: usize) -> Result<Bytes, String> {
        let want = (self.to_position - self.from_position) as usize;
        let mut out = Vec::with_capacity(want.min(fetched.len()));
        let (mut at, mut offset, mut index) = (0usize, self.from_offset, self.from_index);
        // Bounded by the batches in `fetched`.
        while offset < self.to_offset {
            let rest = &fetched[at..];
            if rest.len() < HEADER_SIZE {
                return Err(format!(
                    "the peer's batches end at offset {offset}, before {}",
                    self.to_offset
                ));
            }
            let h = BatchHeader::parse(rest, max_batch_bytes).map_err(|e| e.to_string())?;
            let size = h.size_bytes();
            if size > rest.len() {
                return Err("the peer's last batch is cut short".into());
            }
            if h.base_offset != offset {
                return Err(format!(
                    "the peer's batch starts at offset {}, expected {offset}",
                    h.base_offset
                ));
            }
            if crc32c::crc32c(&rest[21..size]) != h.crc {
                return Err(format!(
                    "the peer's batch at offset {offset} fails its CRC-32C"
                ));
            }
            if self.term(index) != Some(h.partition_leader_epoch as u64) || index >= self.to_index {
                return Err(format!(
                    "the peer's entry {index} has term {}, this log {:?}",
                    h.partition_leader_epoch,
                    self.term(index)
                ));
            }
            if out.len() + size > want {
                return Err("the peer's batches are longer than the damaged stretch".into());
            }
            out.extend_from_slice(&rest[..size]);
            at += size;
            offset = h.next_offset();
            index += 1;
        }
        if offset != self.to_offset || index != self.to_index || out.len() != want {
            return Err(format!(
                "the peer's batches ({} bytes, {} entries, to offset {offset}) do not match \
                 the damaged stretch ({want} bytes, {} entries, to offset {})",
                out.len(),
                index - self.from_index,
                self.to_index - self.from_index,
                self.to_offset
            ));
        }
        Ok(Bytes::from(out))
    }
}

/// Bytes copied at a time while writing a repaired segment.
const COPY_CHUNK_BYTES: usize = 1024 * 1024;

/// Free space a repair leaves beside its copy when the caller names no
/// reserve: the broker's default reserve for the filesystem (see
/// `partition::space::default_min_free_bytes`), so that a segment-sized copy
/// never eats the room kept for controller entries and Raft hard states.
fn default_reserve_bytes(total_bytes: u64) -> u64 {
    crate::partition::space::default_min_free_bytes(total_bytes)
}

/// The temporary name of a segment's repaired copy (not a segment name, so
/// an open ignores it, and removes it: see [`is_repair_name`]).
pub fn repair_name(base_offset: i64) -> String {
    format!("{base_offset:020}.repair")
}

/// Whether `name` is a repaired copy's (a leftover of a repair that a
/// crash or an error interrupted).
pub fn is_repair_name(name: &str) -> bool {
    name.split_once('.').is_some_and(|(stem, ext)| {
        ext == "repair" && stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit())
    })
}

/// Writes a copy of the planned segment with `replacement` at the damaged
/// stretch, synced, beside it; returns its path. The segment is sealed (never
/// written again), so this runs without the log's lock; the caller installs
/// the copy with `PartitionLog::install_repair`, which checks the segment is
/// unchanged. Leaves the filesystem's default reserve free (see
/// [`write_repaired_copy_reserving`]).
pub fn write_repaired_copy(
    disk: &dyn Disk,
    dir: &Path,
    plan: &RepairPlan,
    replacement: &[u8],
) -> Result<PathBuf> {
    write_repaired_copy_reserving(disk, dir, plan, replacement, None)
}

/// [`write_repaired_copy`], refused unless the filesystem keeps
/// `min_free_bytes` (None: the default reserve for its size) free beside
/// the copy. The whole copy is then read back and checked (every batch's
/// CRC, offsets following on) before it is offered for install: the rest of
/// the segment is copied, not fetched, and a bad read of it (a flipped bit)
/// must not become permanent damage. A batch outside the repaired stretch
/// that fails its CRC is let through only if the original holds exactly the
/// same bytes (damage it already had, which the scrub finds again and the
/// next repair fixes). On any error the copy is removed.
pub fn write_repaired_copy_reserving(
    disk: &dyn Disk,
    dir: &Path,
    plan: &RepairPlan,
    replacement: &[u8],
    min_free_bytes: Option<u64>,
) -> Result<PathBuf> {
    if replacement.len() as u64 != plan.to_position - plan.from_position {
        return Err(StorageError::Invalid(
            "a repair must replace the damaged stretch byte for byte".into(),
        ));
    }
    // A disk that cannot say how full it is says so through the write.
    if let Ok(space) = disk.space(dir) {
        let reserve = min_free_bytes.unwrap_or_else(|| default_reserve_bytes(space.total_bytes));
        if space.free_bytes < plan.segment_bytes.saturating_add(reserve) {
            return Err(StorageError::Io {
                context: format!(
                    "repair of {}: a copy of {} bytes would leave less than the {reserve} bytes \
                     reserved free ({} free); the repair waits for space",
                    plan.path.display(),
                    plan.segment_bytes,
                    space.free_bytes
                ),
                source: std::io::Error::from(std::io::ErrorKind::StorageFull),
            });
        }
    }
    let tmp = dir.join(repair_name(plan.base_offset));
    let result = write_and_check(disk, dir, &tmp, plan, replacement);
    if result.is_err() && disk.exists(&tmp) {
        // Best effort: an open removes whatever is left.
        let _ = disk.remove_file(&tmp);
    }
    result.map(|()| tmp)
}

fn write_and_check(
    disk: &dyn Disk,
    dir: &Path,
    tmp: &Path,
    plan: &RepairPlan,
    replacement: &[u8],
) -> Result<()> {
    let source = dir.join(log_name(plan.base_offset));
    let old = disk
        .open(&source, OpenMode::Existing)
        .map_err(io_err(|| format!("open {}", source.display())))?;
    let mut new = disk
        .open(tmp, OpenMode::CreateTruncate)
        .map_err(io_err(|| format!("create {}", tmp.display())))?;
    let mut buf = vec![0u8; COPY_CHUNK_BYTES];
    let mut copy = |from: u64, to: u64, new: &mut Box<dyn crate::io::DiskFile>| -> Result<()> {
        let mut at = from;
        while at < to {
            let n = ((to - at) as usize).min(COPY_CHUNK_BYTES);
            read_exact_at(old.as_ref(), &mut buf[..n], at)
                .map_err(io_err(|| format!("read {}", source.display())))?;
            new.append(&buf[..n])
                .map_err(io_err(|| format!("write {}", tmp.display())))?;
            at += n as u64;
        }
        Ok(())
    };
    copy(0, plan.from_position, &mut new)?;
    new.append(replacement)
        .map_err(io_err(|| format!("write {}", tmp.display())))?;
    copy(plan.to_position, plan.segment_bytes, &mut new)?;
    new.sync()
        .map_err(io_err(|| format!("fsync {}", tmp.display())))?;
    drop(new);
    let written = disk
        .open(tmp, OpenMode::Existing)
        .map_err(io_err(|| format!("open {}", tmp.display())))?;
    check_copy(written.as_ref(), old.as_ref(), tmp, plan)
}

/// Reads the whole copy back: its length, every batch's CRC-32C, offsets
/// following on from the segment's base. A batch is at most the segment's
/// size, and its claimed size is checked against what is left of the file
/// before it is read.
fn check_copy(
    copy: &dyn crate::io::DiskFile,
    original: &dyn crate::io::DiskFile,
    tmp: &Path,
    plan: &RepairPlan,
) -> Result<()> {
    let bad = |position: u64, reason: String| StorageError::Corrupt {
        path: tmp.to_path_buf(),
        position,
        reason: format!("the repaired copy does not check: {reason}"),
    };
    let read_err = |source: std::io::Error| StorageError::Io {
        context: format!("read {}", tmp.display()),
        source,
    };
    let len = copy.len().map_err(read_err)?;
    if len != plan.segment_bytes {
        return Err(bad(
            len,
            format!("{len} bytes, expected {}", plan.segment_bytes),
        ));
    }
    let max_batch_bytes = usize::try_from(plan.segment_bytes).unwrap_or(usize::MAX);
    let (mut at, mut offset) = (0u64, plan.base_offset);
    let mut head = [0u8; HEADER_SIZE];
    let mut batch = Vec::new();
    // Bounded by the batches in the copy (each at least a header long).
    while at < len {
        if len - at < HEADER_SIZE as u64 {
            return Err(bad(at, "a partial batch header at the end".into()));
        }
        read_exact_at(copy, &mut head, at).map_err(read_err)?;
        let h = BatchHeader::parse(&head, max_batch_bytes).map_err(|e| bad(at, e.to_string()))?;
        let size = h.size_bytes() as u64;
        if size > len - at {
            return Err(bad(at, "a batch runs past the end".into()));
        }
        if h.base_offset != offset {
            return Err(bad(
                at,
                format!("a batch at offset {}, expected {offset}", h.base_offset),
            ));
        }
        batch.resize(size as usize, 0);
        read_exact_at(copy, &mut batch, at).map_err(read_err)?;
        if crc32c::crc32c(&batch[21..]) != h.crc {
            let outside = at + size <= plan.from_position || at >= plan.to_position;
            if !outside || !same_damage_in_original(original, &batch, at) {
                return Err(bad(at, "a batch fails its CRC-32C".into()));
            }
        }
        at += size;
        offset = h.next_offset();
    }
    Ok(())
}

/// Whether the original segment holds exactly `batch` at `at` (so a batch
/// failing its CRC in the copy was already damaged there, not misread).
fn same_damage_in_original(original: &dyn crate::io::DiskFile, batch: &[u8], at: u64) -> bool {
    let mut again = vec![0u8; batch.len()];
    read_exact_at(original, &mut again, at).is_ok() && again == batch
}
