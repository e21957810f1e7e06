//! The `unavailable` checker fails a real run: with a bound of zero no
//! partition can acknowledge a write "in time" after the faults stop, and
//! the run must say so; with the default bound the same seed passes.

use weir_sim::cluster::{run, Options};

#[test]
fn unavailable_fires_on_a_real_run_and_not_with_the_default_bound() {
    let base = Options {
        seed: 0,
        duration_s: 3,
        ..Options::default()
    };
    let strict = run(&Options {
        available_within_s: 0,
        ..base.clone()
    });
    assert!(!strict.passed(), "a zero bound must fail the run");
    assert!(
        strict.report.counts().contains_key("unavailable"),
        "{:?}",
        strict.report.counts()
    );
    let normal = run(&base);
    assert!(
        normal.passed(),
        "{:?} {:?}",
        normal.error,
        normal.report.anomalies
    );
    // One probe per partition, the topic created mid-run's included.
    let probed: Vec<u32> = normal.history.probes.iter().map(|p| p.partition).collect();
    assert!(probed.len() >= base.partitions as usize, "{probed:?}");
    assert!(
        probed.iter().enumerate().all(|(i, p)| *p == i as u32),
        "one probe per partition: {probed:?}"
    );
}
