//! Recovery of the partition log on real files: torn tails are cut off,
//! corruption anywhere else is a clear error naming the file and position.

use bytes::Bytes;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use weir::io::{DiskRef, RealDisk};
use weir::storage::{LogConfig, PartitionLog, StorageError};
use weir::types::{BatchBuilder, Event};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 512,
        max_batch_bytes: 4096,
        ..LogConfig::default()
    }
}

fn disk() -> DiskRef {
    Arc::new(RealDisk)
}

/// Writes `n` one-record batches of 200-byte values and syncs.
fn fill(dir: &Path, n: u64) -> PartitionLog {
    let mut log = PartitionLog::open(disk(), dir, config(), 0).unwrap();
    append_unsynced(&mut log, 1, n);
    log.sync().unwrap();
    log
}

/// A temp dir holding a log of `n` synced entries (see [`fill`]), closed.
fn filled_dir(n: u64) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    drop(fill(&dir, n));
    (tmp, dir)
}

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

fn flip_byte(path: &Path, pos: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, pos).unwrap();
    f.write_all_at(&[b[0] ^ 0x10], pos).unwrap();
}

/// A flipped byte in the active segment, with good batches after it, is
/// corruption, not a torn write: nothing is cut off; the log opens with the
/// damage noted (file and position), the damaged segment sealed so it can be
/// repaired, and reads of the damaged batch fail while the rest reads.
#[test]
fn flipped_byte_in_active_segment_is_noted_damage_and_nothing_is_cut() {
    let (_tmp, dir) = filled_dir(8);
    let (next_offset, last_index) = {
        let log = PartitionLog::open(disk(), &dir, config(), 0).unwrap();
        (log.next_offset(), log.last_index())
    };
    let active = segments(&dir).pop().unwrap();
    // Inside the value of the first batch of the active segment.
    flip_byte(&active, 100);
    let mut log = PartitionLog::open(disk(), &dir, config(), 0).unwrap();
    assert_eq!(log.next_offset(), next_offset);
    assert_eq!(log.last_index(), last_index);
    assert_eq!(log.torn_bytes_recovered(), 0);
    let damage = log.damage().expect("damage noted").clone();
    assert_eq!(damage.path, active);
    assert_eq!(damage.position, 0);
    assert!(damage.to_string().contains("CRC-32C"), "{damage}");
    // Sealed: appends go to a new segment, and a repair plan exists.
    assert_eq!(segments(&dir).len(), segments_before(&active) + 1);
    assert!(log.repair_plan().is_some());
    let first = active_base(&active);
    match log.read(first, 1 << 20, next_offset) {
        Err(StorageError::Corrupt { path, position, .. }) => {
            assert_eq!(path, active);
            assert_eq!(position, 0);
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    log.sync().unwrap();
}

fn segments_before(path: &Path) -> usize {
    segments(path.parent().unwrap())
        .iter()
        .filter(|p| *p < &path.to_path_buf())
        .count()
        + 1
}

fn active_base(path: &Path) -> i64 {
    path.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

/// A sealed segment found without its index file (a crash before its
/// sealing sync finished, no tear) is scanned once: the next sync writes the
/// index file again.
#[test]
fn a_lost_index_file_is_written_again_by_the_next_sync() {
    let (_tmp, dir) = filled_dir(40);
    let segs = segments(&dir);
    assert!(segs.len() >= 3, "the fill must roll");
    let index = segs[0].with_extension("index");
    std::fs::remove_file(&index).unwrap();
    let mut log = PartitionLog::open(disk(), &dir, config(), 0).unwrap();
    assert!(log.has_pending_seals());
    log.sync().unwrap();
    assert!(index.exists());
    assert!(!log.has_pending_seals());
}

#[test]
fn flipped_byte_in_sealed_segment_is_detected_when_its_index_is_gone() {
    let (_tmp, dir) = filled_dir(40);
    let segs = segments(&dir);
    assert!(segs.len() >= 3, "the fill must roll segments");
    let sealed = &segs[0];
    // With its index file the sealed segment is trusted on open; the damage
    // is found when the segment is read (CRC on replication reads) or, as
    // here, when its index is lost and it is scanned again.
    std::fs::remove_file(sealed.with_extension("index")).unwrap();
    flip_byte(sealed, 300);
    let err = PartitionLog::open(disk(), &dir, config(), 0).unwrap_err();
    assert!(
        matches!(&err, StorageError::Corrupt { path, .. } if path == sealed),
        "{err}"
    );
}

#[test]
fn damaged_sealed_segment_is_never_replicated() {
    let (_tmp, dir) = filled_dir(40);
    let sealed = segments(&dir)[0].clone();
    flip_byte(&sealed, 300);
    let log = PartitionLog::open(disk(), &dir, config(), 0).unwrap();
    let err = log.entries(1, 5, usize::MAX).unwrap_err();
    assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
}

#[test]
fn torn_tail_is_cut_and_the_rest_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let log = fill(&dir, 8);
    let (next_offset, last_index) = (log.next_offset(), log.last_index());
    drop(log);
    let active = segments(&dir).pop().unwrap();
    let len = std::fs::metadata(&active).unwrap().len();
    // Half a batch: what a crash in the middle of an append leaves.
    let mut half = BatchBuilder::new();
    half.push(&Event {
        value: Some(Bytes::from(vec![7u8; 200])),
        ..Event::default()
    });
    let half = half.build().stamp(next_offset, 1);
    let mut f = OpenOptions::new().append(true).open(&active).unwrap();
    f.write_all(&half.as_bytes()[..150]).unwrap();
    drop(f);

    let log = PartitionLog::open(disk(), &dir, config(), 0).unwrap();
    assert_eq!(log.torn_bytes_recovered(), 150);
    assert_eq!(log.next_offset(), next_offset);
    assert_eq!(log.last_index(), last_index);
    assert_eq!(std::fs::metadata(&active).unwrap().len(), len);
    // And the log takes appends again where it left off.
    let mut log = log;
    let mut b = BatchBuilder::new();
    b.push(&Event::default());
    let at = log.append(b.build(), 2, last_index + 1, 0).unwrap();
    assert_eq!(at.base_offset, next_offset);
}

#[test]
fn zeroed_tail_is_a_torn_write() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let log = fill(&dir, 3);
    let next_offset = log.next_offset();
    drop(log);
    let active = segments(&dir).pop().unwrap();
    let f = OpenOptions::new().append(true).open(&active).unwrap();
    f.set_len(f.metadata().unwrap().len() + 4096).unwrap();
    let log = PartitionLog::open(disk(), &dir, config(), 0).unwrap();
    assert_eq!(log.torn_bytes_recovered(), 4096);
    assert_eq!(log.next_offset(), next_offset);
}

/// A full segment with the default index interval rolls: its index file
/// (thousands of entries) is written and read back on reopen.
#[test]
fn large_index_files_seal_and_reload() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let config = LogConfig {
        segment_bytes: 8 * 1024 * 1024,
        index_interval_bytes: 256,
        ..LogConfig::default()
    };
    let mut log = PartitionLog::open(disk(), &dir, config.clone(), 0).unwrap();
    let value = Bytes::from(vec![7u8; 900]);
    for i in 1..=12_000u64 {
        let mut b = BatchBuilder::new();
        b.push(&Event {
            value: Some(value.clone()),
            ..Event::default()
        });
        log.append(b.build(), 1, i, 0).unwrap();
    }
    log.sync().unwrap();
    assert!(log.segment_count() >= 2, "the log must have rolled");
    let next = log.next_offset();
    drop(log);
    let index = segments(&dir)[0].with_extension("index");
    assert!(
        std::fs::metadata(&index).unwrap().len() > 64 * 1024,
        "a large index file"
    );
    let log = PartitionLog::open(disk(), &dir, config, 0).unwrap();
    assert_eq!(log.next_offset(), next);
    assert_eq!(log.read(5000, 1, i64::MAX).unwrap().batches, 1);
}

/// One-record batches of 200-byte values, appended without a sync.
fn append_unsynced(log: &mut PartitionLog, from: u64, n: u64) {
    for i in from..from + n {
        let mut b = BatchBuilder::new();
        b.push(&Event {
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(vec![i as u8 | 1; 200])),
            timestamp_ms: i as i64,
            headers: vec![],
        });
        log.append(b.build(), 1, i, 0).unwrap();
    }
}

/// A log in a fresh temp dir with `n` appends not yet synced, rolled into
/// at least `segments_min` segments: the temp dir, the log's dir, the log
/// and its segment files.
fn rolled_unsynced(
    n: u64,
    segments_min: usize,
) -> (tempfile::TempDir, PathBuf, PartitionLog, Vec<PathBuf>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let mut log = PartitionLog::open(disk(), &dir, config(), 0).unwrap();
    append_unsynced(&mut log, 1, n);
    let segs = segments(&dir);
    assert!(segs.len() >= segments_min, "the appends must roll segments");
    (tmp, dir, log, segs)
}

/// A roll leaves the sealed segment's fsync and index file to the next
/// sync, so the appending thread never waits for a segment's worth of data
/// to reach the disk; the index file appears only once that sync is done.
#[test]
fn a_roll_leaves_the_sealing_sync_to_the_next_sync() {
    let (_tmp, _dir, mut log, segs) = rolled_unsynced(40, 3);
    assert!(log.has_pending_seals());
    for sealed in &segs[..segs.len() - 1] {
        assert!(
            !sealed.with_extension("index").exists(),
            "{} has an index file before its sync",
            sealed.display()
        );
    }
    log.sync().unwrap();
    assert!(!log.has_pending_seals());
    for sealed in &segs[..segs.len() - 1] {
        assert!(
            sealed.with_extension("index").exists(),
            "{}",
            sealed.display()
        );
    }
    assert!(!segs[segs.len() - 1].with_extension("index").exists());
}

/// A crash before a sealed segment's sync finished leaves it with no index
/// file and a torn tail. Opening cuts the tear, drops the segments after
/// it (their entries cannot follow a gap) and goes on from there; the
/// entries before the tear are intact.
#[test]
fn torn_sealed_segment_without_index_is_cut_and_later_segments_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let log = fill(&dir, 60);
    let before = log.entries(1, log.last_index() + 1, usize::MAX).unwrap();
    drop(log);
    let segs = segments(&dir);
    assert!(segs.len() >= 4, "the fill must roll segments");
    let torn = &segs[1];
    std::fs::remove_file(torn.with_extension("index")).unwrap();
    // The last blocks never written: zeros where the last batch's end was.
    let len = std::fs::metadata(torn).unwrap().len();
    let f = OpenOptions::new().write(true).open(torn).unwrap();
    f.write_all_at(&[0u8; 100], len - 100).unwrap();
    drop(f);

    let mut log = PartitionLog::open(disk(), &dir, config(), 0).unwrap();
    assert!(
        log.torn_bytes_recovered() > 100,
        "{}",
        log.torn_bytes_recovered()
    );
    assert_eq!(segments(&dir), segs[..2].to_vec(), "later segments dropped");
    assert!(!torn.with_extension("index").exists());
    let last = log.last_index();
    assert!(last > 1 && last < before.len() as u64, "{last}");
    let after = log.entries(1, last + 1, usize::MAX).unwrap();
    for ((i, got), (j, want)) in after.iter().zip(&before) {
        assert_eq!(i, j);
        assert_eq!(got.as_bytes(), want.as_bytes(), "entry {i}");
    }
    // The log takes appends at the entry after the tear.
    append_unsynced(&mut log, last + 1, 1);
    log.sync().unwrap();
    assert_eq!(log.last_index(), last + 1);
}

/// A sealing sync overtaken by a truncation into its segment (a Raft
/// conflict making that segment active again) writes no index file: one
/// would describe entries the segment no longer holds.
#[test]
fn a_sealing_sync_overtaken_by_a_truncation_writes_no_index() {
    let (_tmp, dir, mut log, _segs) = rolled_unsynced(20, 2);
    let pending = log.begin_sync().unwrap().expect("a sync to run");
    log.truncate_suffix(3).unwrap();
    assert_eq!(log.segment_count(), 1);
    let result = pending.sync();
    let renamed = log.end_sync(&pending, result).unwrap();
    assert!(!renamed);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".index"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
    assert!(!log.has_pending_seals());
    log.sync().unwrap();
}

/// Byte positions of the batches in a segment file.
fn batch_positions(path: &Path) -> Vec<u64> {
    let bytes = std::fs::read(path).unwrap();
    let mut at = 0usize;
    let mut out = Vec::new();
    while at + 12 <= bytes.len() {
        out.push(at as u64);
        let len = i32::from_be_bytes(bytes[at + 8..at + 12].try_into().unwrap());
        at += 12 + len as usize;
    }
    out
}

/// Overwrites the term (Kafka's partition leader epoch, bytes 12..16 of the
/// header, outside the CRC) of the batch at `pos`.
fn set_term(path: &Path, pos: u64, term: i32) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&term.to_be_bytes(), pos + 12).unwrap();
}

/// A damaged term is outside the CRC: a scan finds it as a term that goes
/// down along the log, and opening fails with a clear error (it once
/// panicked on the log's invariants).
#[test]
fn a_damaged_term_is_corruption_not_a_panic() {
    let (_tmp, dir) = filled_dir(8);
    let active = segments(&dir).pop().unwrap();
    let at = batch_positions(&active);
    assert!(at.len() >= 3);
    set_term(&active, at[1], 0x0400_0001);
    let err = PartitionLog::open(disk(), &dir, config(), 0).unwrap_err();
    match &err {
        StorageError::Corrupt {
            path,
            position,
            reason,
        } => {
            assert_eq!(path, &active);
            assert_eq!(*position, at[2]);
            assert!(reason.contains("below the term"), "{reason}");
        }
        other => panic!("expected corruption, got {other}"),
    }
}

/// A sealed segment is trusted on open; a damaged term in it is caught when
/// its entries are read (as for replication), before it reaches a follower.
#[test]
fn a_damaged_term_is_never_replicated() {
    let (_tmp, dir) = filled_dir(40);
    let sealed = segments(&dir)[0].clone();
    assert!(sealed.with_extension("index").exists());
    let at = batch_positions(&sealed);
    set_term(&sealed, at[1], 7);
    let log = PartitionLog::open(disk(), &dir, config(), 0).unwrap();
    let err = log.entries(1, 4, usize::MAX).unwrap_err();
    assert!(
        matches!(&err, StorageError::Corrupt { reason, .. } if reason.contains("term 7 on disk")),
        "{err}"
    );
}

/// A log config whose segments hold a few KiB-sized batches.
fn roomy() -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        max_batch_bytes: 16 * 1024,
        ..config()
    }
}

fn append_value(log: &mut PartitionLog, index: u64, value: Vec<u8>) {
    let mut b = BatchBuilder::new();
    b.push(&Event {
        value: Some(Bytes::from(value)),
        ..Event::default()
    });
    log.append(b.build(), 1, index, 0).unwrap();
}

/// A roomy log in a fresh temp dir with three synced entries: the temp
/// dir, the log's dir, the log, its active segment and that file's length.
fn three_synced() -> (tempfile::TempDir, PathBuf, PartitionLog, PathBuf, u64) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let mut log = PartitionLog::open(disk(), &dir, roomy(), 0).unwrap();
    append_unsynced(&mut log, 1, 3);
    log.sync().unwrap();
    let active = segments(&dir).pop().unwrap();
    let synced_len = std::fs::metadata(&active).unwrap().len();
    (tmp, dir, log, active, synced_len)
}

/// Page-cache writeback and the disk's cache both reorder: a crash can
/// lose a sector of unsynced data while later unsynced data lands. The lost
/// sector reads back as zeros with a valid batch after it; that is a torn
/// write, cut off with everything after it, not corruption.
#[test]
fn a_lost_sector_before_landed_data_is_a_torn_write() {
    let (_tmp, dir, mut log, active, synced_len) = three_synced();
    let (next_offset, last_index) = (log.next_offset(), log.last_index());
    append_value(&mut log, 4, vec![7u8; 3000]);
    append_value(&mut log, 5, vec![9u8; 100]);
    drop(log);
    let len = std::fs::metadata(&active).unwrap().len();
    // The second sector boundary inside the 3 KiB batch: its sevens go on
    // after the lost sector, so the damage does not end in zeros.
    let lost = synced_len.next_multiple_of(512) + 512;
    assert!(lost + 512 + 64 < synced_len + 3000);
    let f = OpenOptions::new().write(true).open(&active).unwrap();
    f.write_all_at(&[0u8; 512], lost).unwrap();
    drop(f);

    let log = PartitionLog::open(disk(), &dir, roomy(), 0).unwrap();
    assert_eq!(log.torn_bytes_recovered(), len - synced_len);
    assert_eq!(log.next_offset(), next_offset);
    assert_eq!(log.last_index(), last_index);
}

/// A flipped bit in a synced batch whose value ends in zeros (padding, a
/// common shape) is corruption: taking it for a torn write would cut off
/// that batch and every acknowledged one after it.
#[test]
fn a_flipped_byte_in_a_batch_ending_in_zeros_is_corruption() {
    let (_tmp, dir, mut log, active, synced_len) = three_synced();
    let mut value = vec![0x5au8; 8];
    value.extend_from_slice(&[0u8; 300]);
    append_value(&mut log, 4, value);
    append_value(&mut log, 5, vec![9u8; 100]);
    log.sync().unwrap();
    drop(log);
    let bytes = std::fs::read(&active).unwrap();
    let at = synced_len as usize
        + bytes[synced_len as usize..]
            .windows(8)
            .position(|w| w == [0x5a; 8])
            .unwrap();
    flip_byte(&active, at as u64 + 3);

    // Nothing cut off: the batch is noted as damage, to repair.
    let log = PartitionLog::open(disk(), &dir, roomy(), 0).unwrap();
    assert_eq!(log.torn_bytes_recovered(), 0);
    let damage = log.damage().expect("damage noted");
    assert_eq!(damage.path, active);
    assert_eq!(damage.position, synced_len);
}
