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
    assert_eq!(
        normal.history.probes.len(),
        base.partitions as usize,
        "one probe per partition"
    );
}
