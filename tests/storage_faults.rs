//! The partition log under injected disk faults: it never acknowledges what
//! it could not persist, stops at the first write or fsync error, and after
//! reopening holds every acknowledged batch intact.

use bytes::Bytes;
use std::sync::Arc;
use weir::io::{DiskRef, FaultConfig, FaultyDisk, RealDisk};
use weir::storage::{LogConfig, PartitionLog, StorageError};
use weir::types::{BatchBuilder, Event, RecordBatch};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 8192,
        index_interval_bytes: 512,
        max_batch_bytes: 8192,
        ..LogConfig::default()
    }
}

fn batch(i: u64) -> RecordBatch {
    let mut b = BatchBuilder::new();
    for r in 0..=(i % 4) {
        b.push(&Event {
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(format!(
                "value {i}.{r} {}",
                "x".repeat(i as usize % 300)
            ))),
            timestamp_ms: i as i64,
            headers: vec![],
        });
    }
    b.build()
}

/// Runs appends and syncs through a faulty disk until the log fails; returns
/// how many batches were acknowledged (synced without error) and what error
/// stopped the run.
fn run_until_failure(dir: &std::path::Path, seed: u64) -> (u64, Vec<RecordBatch>, String) {
    let mut faults = FaultConfig::none();
    faults.append_eio = 0.01;
    faults.append_enospc = 0.005;
    faults.sync_eio = 0.03;
    faults.sync_dir_eio = 0.05;
    let disk = Arc::new(FaultyDisk::new(Arc::new(RealDisk), faults, seed));
    let handle = disk.handle();
    // Opening must not be disturbed; faults start once the log is open.
    handle.set_enabled(false);
    let mut log = PartitionLog::open(disk.clone() as DiskRef, dir, config(), 0).unwrap();
    handle.set_enabled(true);
    let mut written = Vec::new();
    let mut acked = 0u64;
    for i in 1..=2000u64 {
        let b = batch(i);
        if let Err(e) = log.append(b.clone(), 1, i, 0) {
            return (acked, written, check_poisoned(&mut log, e));
        }
        written.push(b);
        if i % 3 == 0 {
            if let Err(e) = log.sync() {
                return (acked, written, check_poisoned(&mut log, e));
            }
            acked = i;
        }
    }
    panic!("seed {seed}: no fault fired in 2000 appends");
}

/// After the first failure every call fails: nothing more is acknowledged.
fn check_poisoned(log: &mut PartitionLog, first: StorageError) -> String {
    assert!(matches!(log.sync(), Err(StorageError::Poisoned { .. })));
    let next = log.last_index() + 1;
    let err = log.append(batch(0), 1, next, 0).unwrap_err();
    assert!(matches!(err, StorageError::Poisoned { .. }), "{err}");
    assert!(err.to_string().contains("restart"), "{err}");
    first.to_string()
}

#[test]
fn acknowledged_batches_survive_injected_faults() {
    let mut kinds = std::collections::BTreeSet::new();
    for seed in 0..40u64 {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p");
        let (acked, written, err) = run_until_failure(&dir, seed);
        assert!(err.contains("injected"), "seed {seed}: {err}");
        kinds.insert(
            err.split("injected")
                .nth(1)
                .unwrap_or("")
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_string(),
        );

        let log = PartitionLog::open(Arc::new(RealDisk), &dir, config(), 0)
            .unwrap_or_else(|e| panic!("seed {seed}: reopen failed: {e}"));
        assert!(
            log.last_index() >= acked,
            "seed {seed}: lost acknowledged entries"
        );
        let entries = log.entries(1, log.last_index() + 1, usize::MAX).unwrap();
        for (index, got) in entries {
            let want = &written[index as usize - 1];
            assert_eq!(
                got.records()
                    .unwrap()
                    .iter()
                    .map(|r| r.event.clone())
                    .collect::<Vec<_>>(),
                want.records()
                    .unwrap()
                    .iter()
                    .map(|r| r.event.clone())
                    .collect::<Vec<_>>(),
                "seed {seed}: entry {index} differs from what was written"
            );
        }
    }
    assert!(
        kinds.len() >= 2,
        "the seeds should hit several fault kinds: {kinds:?}"
    );
}

/// A roll waits for no fsync (the appending thread serves every partition
/// of the broker); the new segment's directory entry is synced by the next
/// sync instead, which fails, and acknowledges nothing, if that fails.
#[test]
fn a_rolls_directory_sync_is_part_of_the_next_sync() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let mut faults = FaultConfig::none();
    faults.sync_dir_eio = 1.0;
    let disk = Arc::new(FaultyDisk::new(Arc::new(RealDisk), faults, 7));
    let handle = disk.handle();
    handle.set_enabled(false);
    let mut log = PartitionLog::open(disk.clone() as DiskRef, &dir, config(), 0).unwrap();
    handle.set_enabled(true);
    let mut i = 0;
    while log.segment_count() < 3 {
        i += 1;
        log.append(batch(i), 1, i, 0)
            .unwrap_or_else(|e| panic!("append {i} waited for a failing fsync: {e}"));
    }
    let err = log.sync().unwrap_err().to_string();
    assert!(
        err.contains("injected") && err.contains("directory"),
        "{err}"
    );
    assert!(matches!(log.sync(), Err(StorageError::Poisoned { .. })));
}
