//! One seed run twice gives the same trace, event for event.

use weir_sim::cluster::{run, Options};

#[test]
fn a_seed_replays_to_the_same_trace() {
    let o = Options {
        seed: 7,
        duration_s: 5,
        ..Options::default()
    };
    let (a, b) = (run(&o), run(&o));
    assert!(a.passed(), "{:?} {:?}", a.error, a.report.anomalies);
    assert!(a.report.acked > 0, "the workload acknowledged nothing");
    assert_eq!(a.trace.lines.len(), b.trace.lines.len());
    if let Some(i) = (0..a.trace.lines.len()).find(|i| a.trace.lines[*i] != b.trace.lines[*i]) {
        panic!(
            "traces differ at line {i}:\n{}\n{}",
            a.trace.lines[i], b.trace.lines[i]
        );
    }
    assert_eq!(a.trace.hash(), b.trace.hash());
    // A different seed is a different run.
    let c = run(&Options { seed: 8, ..o });
    assert_ne!(a.trace.hash(), c.trace.hash());
}
