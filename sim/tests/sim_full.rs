//! The `full` fault: a broker's disk reports less free space than its
//! reserve for a while. It refuses produces (OUT_OF_SPACE, a definite
//! failure: nothing was proposed) and stays in the cluster; the checkers
//! pass (no acknowledged write lost) and writes resume after the heal (the
//! `unavailable` check).

use weir_sim::cluster::{run, Options, RunResult};
use weir_sim::history::Outcome;
use weir_sim::nemesis::FaultKind;

fn run_with(seed: u64, faults: &[FaultKind]) -> RunResult {
    run(&Options {
        seed,
        duration_s: 8,
        faults: faults.to_vec(),
        ..Options::default()
    })
}

fn refused(r: &RunResult) -> usize {
    r.history
        .writes
        .iter()
        .filter(|w| w.outcome == Outcome::Failed)
        .count()
}

#[test]
fn a_full_disk_refuses_writes_for_a_while_and_loses_none() {
    let seed = 2;
    let full = run_with(seed, &[FaultKind::Full]);
    assert!(
        full.passed(),
        "seed {seed}: {:?} {:?}",
        full.error,
        full.report.anomalies
    );
    assert!(
        full.trace
            .lines
            .iter()
            .any(|l| l.contains("nemesis space freed")),
        "the fault fired and healed"
    );
    let calm = run_with(seed, &[]);
    assert!(
        calm.passed(),
        "{:?} {:?}",
        calm.error,
        calm.report.anomalies
    );
    assert!(
        refused(&full) > refused(&calm),
        "a full disk refuses writes: {} refused with the fault, {} without",
        refused(&full),
        refused(&calm)
    );
}
