//! A client writing what only a broker may (a control batch with Weir's
//! Raft conf change key) is refused on every broker, and the cluster stays
//! whole: every checker passes, `unavailable` included (an accepted one
//! fail-stops its partition on every replica, so no probe gets through).

use weir_sim::cluster::{run, Options};

#[test]
fn hostile_control_batches_are_refused_and_every_partition_stays_available() {
    let hostile_writes = 6;
    let r = run(&Options {
        seed: 3,
        duration_s: 3,
        faults: vec![],
        hostile_writes,
        ..Options::default()
    });
    assert!(r.passed(), "{:?} {:?}", r.error, r.report.anomalies);
    let outcomes: Vec<&String> = r
        .trace
        .lines
        .iter()
        .filter(|l| l.contains("hostile control batch"))
        .collect();
    assert_eq!(outcomes.len(), hostile_writes as usize, "{outcomes:?}");
    assert!(
        outcomes.iter().all(|l| l.ends_with(": refused")),
        "{outcomes:?}"
    );
}
