//! The partition log model check on real files in a temporary directory.

use quickcheck::{QuickCheck, TestResult};
use std::sync::{Arc, Mutex};
use weir::io::{DiskRef, RealDisk};
use weir_sim::log_model::{run, Coverage, Op};

static COVERAGE: Mutex<Coverage> = Mutex::new(Coverage {
    segments_max: 0,
    segments_deleted: 0,
    truncations: 0,
    reads: 0,
    resets: 0,
});

fn prop(ops: Vec<Op>) -> TestResult {
    let dir = tempfile::tempdir().expect("temporary directory");
    let disk: DiskRef = Arc::new(RealDisk);
    match run(disk, &dir.path().join("p0"), &ops) {
        Ok(c) => {
            COVERAGE.lock().unwrap().add(c);
            TestResult::passed()
        }
        Err(e) => TestResult::error(e),
    }
}

#[test]
fn log_agrees_with_model_on_real_disk() {
    weir_sim::seeded::quickcheck(
        QuickCheck::new().tests(150).max_tests(1000),
        prop as fn(Vec<Op>) -> TestResult,
    );
    let c = *COVERAGE.lock().unwrap();
    // The runs must have reached the paths the model exists to check.
    assert!(c.segments_max >= 5, "no run rolled several segments: {c:?}");
    assert!(
        c.segments_deleted > 0,
        "retention never deleted a segment: {c:?}"
    );
    assert!(c.truncations > 0 && c.reads > 0, "{c:?}");
    assert!(c.resets > 0, "no run reset the log: {c:?}");
}

/// Found by the model check: retention right after a truncation that
/// emptied the active segment kept a term run for an entry that no longer
/// existed, and the next append broke the term invariant.
#[test]
fn retention_after_truncation_to_an_empty_segment() {
    use Op::*;
    let ops = vec![
        Append {
            records: 5,
            value_bytes: 271,
        },
        Append {
            records: 2,
            value_bytes: 273,
        },
        Append {
            records: 2,
            value_bytes: 281,
        },
        Append {
            records: 1,
            value_bytes: 179,
        },
        Configure {
            retention_bytes: 65535,
            retention_ms: 1006,
        },
        Append {
            records: 8,
            value_bytes: 0,
        },
        Truncate { back: 4 },
        Retention { advance_ms: 1291 },
        Append {
            records: 2,
            value_bytes: 109,
        },
        Append {
            records: 1,
            value_bytes: 133,
        },
        Truncate { back: 1 },
    ];
    let dir = tempfile::tempdir().expect("temporary directory");
    run(Arc::new(RealDisk), &dir.path().join("p0"), &ops).expect("the log agrees with the model");
}
