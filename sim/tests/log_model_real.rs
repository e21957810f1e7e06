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
    QuickCheck::new()
        .tests(150)
        .max_tests(1000)
        .quickcheck(prop as fn(Vec<Op>) -> TestResult);
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
