//! Repair of a damaged sealed segment on real files (`storage::repair`):
//! the scrub finds a flipped byte, a plan names the stretch between sparse
//! index entries, only the healthy replica's identical batches are accepted,
//! and the repaired copy replaces the segment durably.

use bytes::Bytes;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use weir::io::{DiskRef, FaultConfig, FaultyDisk, RealDisk};
use weir::storage::repair::{repair_name, write_repaired_copy, write_repaired_copy_reserving};
use weir::storage::{LogConfig, PartitionLog, StorageError};
use weir::types::{split_batches, BatchBuilder, Event};

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

/// A log of `n` one-record batches of 200-byte values, synced, closed; and
/// a byte-identical copy of its directory (the healthy replica).
fn two_replicas(n: u64) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let mut log = PartitionLog::open(disk(), &dir, config(), 0).unwrap();
    append(&mut log, 1..=n, |i| 1 + i / 10);
    log.sync().unwrap();
    drop(log);
    let peer = tmp.path().join("peer");
    std::fs::create_dir(&peer).unwrap();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, peer.join(p.file_name().unwrap())).unwrap();
    }
    (tmp, dir, peer)
}

/// Appends entries `indexes` (one-record batches of 200-byte values, the
/// same bytes for the same index but for the term).
fn append(
    log: &mut PartitionLog,
    indexes: std::ops::RangeInclusive<u64>,
    term: impl Fn(u64) -> u64,
) {
    for i in indexes {
        let mut b = BatchBuilder::new();
        b.push(&Event {
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(vec![i as u8 | 1; 200])),
            timestamp_ms: i as i64,
            headers: vec![],
        });
        log.append(b.build(), term(i), i, 0).unwrap();
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

fn flip_byte(path: &Path, pos: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, pos).unwrap();
    f.write_all_at(&[b[0] ^ 0x10], pos).unwrap();
}

fn all_crcs_hold(dir: &Path) -> bool {
    segments(dir)
        .iter()
        .all(|p| split_batches(std::fs::read(p).unwrap().into(), usize::MAX).is_ok())
}

/// Runs the scrub over the whole log; returns the error it stopped at.
fn scrub(log: &mut PartitionLog) -> Option<StorageError> {
    let mut at = 0;
    loop {
        match log.scrub_step(at, 1000) {
            Ok((_, 0)) => return None,
            Ok((next, _)) => at = next,
            Err(e) => {
                assert!(log.note_damage(&e));
                return Some(e);
            }
        }
    }
}

#[test]
fn the_scrub_finds_a_flipped_byte_in_a_sealed_segment_and_a_peer_copy_repairs_it() {
    let (_tmp, dir, peer_dir) = two_replicas(40);
    let segs = segments(&dir);
    assert!(segs.len() >= 3, "the fill must roll: {segs:?}");
    // In the second sealed segment, past its first sparse index entry.
    let victim = segs[1].clone();
    flip_byte(&victim, 900);
    // Sealed segments load from their index files: opening does not see it.
    let mut log = PartitionLog::open(disk(), &dir, config(), 0).unwrap();
    assert!(log.damage().is_none());
    let found = scrub(&mut log).expect("the scrub finds the damage");
    assert!(matches!(found, StorageError::Corrupt { ref path, .. } if *path == victim));
    assert_eq!(log.damage().unwrap().path, victim);

    let plan = log.repair_plan().expect("a sealed segment has a plan");
    assert!(
        plan.from_position <= 900 && 900 < plan.to_position,
        "{plan:?}"
    );
    assert!(
        plan.to_position - plan.from_position < 4096,
        "a stretch, not the segment"
    );

    // What the healthy replica holds for the stretch is accepted; anything
    // else is not.
    let peer = PartitionLog::open(disk(), &peer_dir, config(), 0).unwrap();
    let good = peer
        .read(plan.from_offset, 1 << 20, plan.to_offset)
        .unwrap()
        .bytes;
    let mut bad = good.to_vec();
    bad[100] ^= 1;
    assert!(plan.check(&bad, 4096).is_err());
    assert!(plan.check(&good[..good.len() - 1], 4096).is_err());
    // Batches past the stretch are left out.
    let longer = peer
        .read(plan.from_offset, 1 << 20, plan.to_offset + 1)
        .unwrap()
        .bytes;
    assert!(longer.len() > good.len());
    assert_eq!(plan.check(&longer, 4096).unwrap(), good);
    let replacement = plan.check(&good, 4096).unwrap();

    let (d, dir_of) = log.location();
    let copy = write_repaired_copy(d.as_ref(), &dir_of, &plan, &replacement).unwrap();
    assert!(log.install_repair(&plan, &copy).unwrap());
    assert!(log.damage().is_none());
    assert!(!copy.exists());
    assert!(scrub(&mut log).is_none());
    drop(log);
    assert!(all_crcs_hold(&dir));
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        std::fs::read(peer_dir.join(victim.file_name().unwrap())).unwrap()
    );
    // And it reopens clean.
    let mut log = PartitionLog::open(disk(), &dir, config(), 0).unwrap();
    assert!(scrub(&mut log).is_none());
}

#[test]
fn a_fetch_never_returns_a_damaged_batch() {
    let (_tmp, dir, _peer) = two_replicas(40);
    let victim = segments(&dir)[0].clone();
    flip_byte(&victim, 100);
    let log = PartitionLog::open(disk(), &dir, config(), 0).unwrap();
    let end = log.next_offset();
    match log.read(0, 1 << 20, end) {
        Err(StorageError::Corrupt { path, position, .. }) => {
            assert_eq!(path, victim);
            assert_eq!(position, 0);
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    // Later segments still read.
    let later = log.read(end - 1, 1 << 20, end).unwrap();
    assert!(split_batches(later.bytes, usize::MAX).is_ok());
}

#[test]
fn a_repair_of_a_segment_changed_meanwhile_is_dropped() {
    let (_tmp, dir, peer_dir) = two_replicas(40);
    let victim = segments(&dir)[0].clone();
    flip_byte(&victim, 100);
    let mut log = PartitionLog::open(disk(), &dir, config(), 0).unwrap();
    scrub(&mut log).unwrap();
    let mut plan = log.repair_plan().unwrap();
    let peer = PartitionLog::open(disk(), &peer_dir, config(), 0).unwrap();
    let good = peer
        .read(plan.from_offset, 1 << 20, plan.to_offset)
        .unwrap()
        .bytes;
    let replacement = plan.check(&good, 4096).unwrap();
    let (d, dir_of) = log.location();
    let copy = write_repaired_copy(d.as_ref(), &dir_of, &plan, &replacement).unwrap();
    // As if retention had replaced the segment since.
    plan.segment_bytes += 1;
    assert!(!log.install_repair(&plan, &copy).unwrap());
    assert!(!copy.exists());
    assert!(log.damage().is_some());
}

/// A damaged log (a flipped byte in its second segment, found by the scrub),
/// its repair plan and the healthy replica's replacement for the stretch.
fn damaged_with_plan() -> (
    tempfile::TempDir,
    PathBuf,
    PartitionLog,
    weir::storage::repair::RepairPlan,
    Bytes,
) {
    let (tmp, dir, peer_dir) = two_replicas(40);
    let victim = segments(&dir)[1].clone();
    flip_byte(&victim, 900);
    let mut log = PartitionLog::open(disk(), &dir, config(), 0).unwrap();
    scrub(&mut log).unwrap();
    let plan = log.repair_plan().unwrap();
    let peer = PartitionLog::open(disk(), &peer_dir, config(), 0).unwrap();
    let good = peer
        .read(plan.from_offset, 1 << 20, plan.to_offset)
        .unwrap()
        .bytes;
    let replacement = plan.check(&good, 4096).unwrap();
    (tmp, dir, log, plan, replacement)
}

#[test]
fn a_copy_misread_outside_the_stretch_is_refused_and_removed() {
    let (_tmp, dir, mut log, plan, replacement) = damaged_with_plan();
    // Every read flips a bit: the rest of the segment is misread while it
    // is copied, though the segment on disk is sound there.
    let flipping: DiskRef = Arc::new(FaultyDisk::new(
        disk(),
        FaultConfig {
            read_bit_flip: 1.0,
            ..FaultConfig::none()
        },
        7,
    ));
    let err = write_repaired_copy(flipping.as_ref(), &dir, &plan, &replacement).unwrap_err();
    assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
    assert!(!dir.join(repair_name(plan.base_offset)).exists());
    assert!(log.damage().is_some());
    // A sound read repairs it.
    let copy = write_repaired_copy(disk().as_ref(), &dir, &plan, &replacement).unwrap();
    assert!(log.install_repair(&plan, &copy).unwrap());
    assert!(scrub(&mut log).is_none());
    drop(log);
    assert!(all_crcs_hold(&dir));
}

#[test]
fn damage_elsewhere_in_the_original_does_not_block_a_repair() {
    let (_tmp, dir, mut log, plan, replacement) = damaged_with_plan();
    // A second damaged batch in the same segment, past the stretch: the
    // copy keeps it as it was (the next repair fixes it).
    let victim = plan.path.clone();
    flip_byte(&victim, plan.to_position + 100);
    let copy = write_repaired_copy(disk().as_ref(), &dir, &plan, &replacement).unwrap();
    assert!(log.install_repair(&plan, &copy).unwrap());
    match scrub(&mut log) {
        Some(StorageError::Corrupt { path, position, .. }) => {
            assert_eq!(path, victim);
            assert!(position >= plan.to_position);
        }
        other => panic!("expected the second damage, got {other:?}"),
    }
}

#[test]
fn a_repair_leaves_the_disk_reserve_alone() {
    let (_tmp, dir, log, plan, replacement) = damaged_with_plan();
    // More reserve than any disk has free: the copy is not even started.
    let err =
        write_repaired_copy_reserving(disk().as_ref(), &dir, &plan, &replacement, Some(1 << 62))
            .unwrap_err();
    assert!(
        matches!(&err, StorageError::Io { source, .. }
            if source.kind() == std::io::ErrorKind::StorageFull),
        "{err}"
    );
    assert!(!dir.join(repair_name(plan.base_offset)).exists());
    assert!(log.damage().is_some());
    write_repaired_copy_reserving(disk().as_ref(), &dir, &plan, &replacement, Some(0)).unwrap();
}

#[test]
fn an_open_removes_a_leftover_repaired_copy() {
    let (_tmp, dir, _peer) = two_replicas(40);
    let leftover = dir.join(repair_name(0));
    std::fs::write(&leftover, b"half a copy").unwrap();
    let log = PartitionLog::open(disk(), &dir, config(), 0).unwrap();
    assert!(!leftover.exists());
    assert_eq!(log.next_offset(), 40);
}

#[test]
fn a_repair_planned_before_a_truncation_and_regrowth_is_dropped() {
    let (_tmp, dir, mut log, plan, replacement) = damaged_with_plan();
    // Raft cuts the log inside the damaged segment, and a new leader's
    // entries (term 9) grow it back to the very same size and base.
    log.truncate_suffix(plan.from_index).unwrap();
    append(&mut log, plan.from_index..=40, |_| 9);
    log.sync().unwrap();
    assert_eq!(
        std::fs::metadata(&plan.path).unwrap().len(),
        plan.segment_bytes,
        "the test needs a segment regrown to the planned size"
    );
    let before = std::fs::read(&plan.path).unwrap();
    let copy = write_repaired_copy(disk().as_ref(), &dir, &plan, &replacement).unwrap();
    // The old term's bytes must not replace the newer entries.
    assert!(!log.install_repair(&plan, &copy).unwrap());
    assert!(!copy.exists());
    assert_eq!(std::fs::read(&plan.path).unwrap(), before);
    assert_eq!(log.term(plan.from_index), Some(9));
}

#[test]
fn a_truncation_below_the_damage_forgets_it() {
    let (_tmp, _dir, mut log, plan, _) = damaged_with_plan();
    let position = log.damage().unwrap().position;
    assert!(plan.from_position <= position);
    // A cut in a later segment keeps it.
    log.truncate_suffix(40).unwrap();
    assert!(log.damage().is_some());
    // A cut below it takes the damaged batch, and the damage, with it.
    log.truncate_suffix(plan.from_index).unwrap();
    assert!(log.damage().is_none(), "{:?}", log.damage());
}

#[test]
fn a_truncation_past_the_damage_keeps_the_log_usable() {
    let (_tmp, dir, peer_dir) = two_replicas(40);
    let victim = segments(&dir)[1].clone();
    flip_byte(&victim, 900);
    let mut log = PartitionLog::open(disk(), &dir, config(), 0).unwrap();
    scrub(&mut log).unwrap();
    let plan = log.repair_plan().unwrap();
    // Raft cuts the damaged segment after the damaged batch: the cut
    // succeeds, the damage stays known, and the log goes on.
    let cut = plan.to_index;
    assert!(log.term(cut).is_some());
    log.truncate_suffix(cut).unwrap();
    assert_eq!(log.damage().unwrap().path, victim);
    append(&mut log, cut..=40, |_| 9);
    log.sync().unwrap();
    assert_eq!(log.next_offset(), 40);
    // Sealed again, so the damaged stretch is repaired as before.
    let plan = log
        .repair_plan()
        .expect("the damaged segment is sealed again");
    let peer = PartitionLog::open(disk(), &peer_dir, config(), 0).unwrap();
    let good = peer
        .read(plan.from_offset, 1 << 20, plan.to_offset)
        .unwrap()
        .bytes;
    let replacement = plan.check(&good, 4096).unwrap();
    let copy = write_repaired_copy(disk().as_ref(), &dir, &plan, &replacement).unwrap();
    assert!(log.install_repair(&plan, &copy).unwrap());
    assert!(scrub(&mut log).is_none());
    drop(log);
    let log = PartitionLog::open(disk(), &dir, config(), 0).unwrap();
    assert_eq!(log.next_offset(), 40);
    assert!(log.damage().is_none());
}
#[test]
fn damage_found_in_the_active_segment_is_sealed_and_repaired_from_a_peer() {
    let (_tmp, dir, peer_dir) = two_replicas(40);
    let mut log = PartitionLog::open(disk(), &dir, config(), 0).unwrap();
    assert!(log.damage().is_none());
    // Rot after the open (which checks the active segment): in the active
    // segment's first batch's record, as a failing disk flips it under a
    // running broker.
    let active = segments(&dir).last().unwrap().clone();
    flip_byte(&active, 100);
    let found = scrub(&mut log).expect("the scrub finds the damage");
    assert!(matches!(found, StorageError::Corrupt { ref path, .. } if *path == active));
    // Sealed at once, so that it has a repair plan (before: none, and the
    // replica stayed damaged until the segment rolled by size or age).
    assert_eq!(segments(&dir).len(), segments(&peer_dir).len() + 1);
    let plan = log.repair_plan().expect("the damaged segment was sealed");
    assert_eq!(plan.path, active);
    let peer = PartitionLog::open(disk(), &peer_dir, config(), 0).unwrap();
    let good = peer
        .read(plan.from_offset, 1 << 20, plan.to_offset)
        .unwrap()
        .bytes;
    let replacement = plan.check(&good, 4096).unwrap();
    let (d, dir_of) = log.location();
    let copy = write_repaired_copy(d.as_ref(), &dir_of, &plan, &replacement).unwrap();
    assert!(log.install_repair(&plan, &copy).unwrap());
    assert!(log.damage().is_none());
    assert!(scrub(&mut log).is_none());
    // Appends go on in the new active segment.
    let next = log.next_offset();
    let mut b = BatchBuilder::new();
    b.push(&Event {
        key: None,
        value: Some(Bytes::from_static(b"after")),
        timestamp_ms: 99,
        headers: vec![],
    });
    log.append(b.build(), 5, 41, 0).unwrap();
    log.sync().unwrap();
    assert_eq!(log.next_offset(), next + 1);
    drop(log);
    assert_eq!(
        std::fs::read(&active).unwrap(),
        std::fs::read(peer_dir.join(active.file_name().unwrap())).unwrap()
    );
    assert!(all_crcs_hold(&dir));
}

#[test]
fn a_raft_truncation_into_a_damaged_segment_keeps_the_log_and_its_repair() {
    let (_tmp, dir, peer_dir) = two_replicas(40);
    let mut log = PartitionLog::open(disk(), &dir, config(), 0).unwrap();
    let active = segments(&dir).last().unwrap().clone();
    flip_byte(&active, 100);
    assert!(scrub(&mut log).is_some());
    // A conflicting uncommitted tail after the damaged batch is cut off, as
    // Raft does when a new leader's entries differ: the rescan of the kept
    // part meets the damage (before: a fatal error that poisoned the log and
    // fail-stopped the replica).
    let last = log.last_index();
    log.truncate_suffix(last).unwrap();
    assert_eq!(log.last_index(), last - 1);
    assert_eq!(log.damage().unwrap().path, active);
    // Appends go on (in a new segment), and the damage is repaired.
    let mut b = BatchBuilder::new();
    b.push(&Event {
        key: None,
        value: Some(Bytes::from_static(b"new leader's")),
        timestamp_ms: 99,
        headers: vec![],
    });
    log.append(b.build(), 6, last, 0).unwrap();
    log.sync().unwrap();
    let plan = log.repair_plan().expect("a sealed segment has a plan");
    let peer = PartitionLog::open(disk(), &peer_dir, config(), 0).unwrap();
    let good = peer
        .read(plan.from_offset, 1 << 20, plan.to_offset)
        .unwrap()
        .bytes;
    let replacement = plan.check(&good, 4096).unwrap();
    let (d, dir_of) = log.location();
    let copy = write_repaired_copy(d.as_ref(), &dir_of, &plan, &replacement).unwrap();
    assert!(log.install_repair(&plan, &copy).unwrap());
    assert!(log.damage().is_none());
    assert!(scrub(&mut log).is_none());
    drop(log);
    assert!(all_crcs_hold(&dir));
}
