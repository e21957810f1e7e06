//! The fault kinds and workload actions beyond crashes and partitions fire
//! and the checkers pass: leadership transfers, pauses, lossy links, a
//! bridge partition, two
//! faults at once, and the topic an admin client creates mid-run (whose
//! partitions the checkers cover like the first topic's).

use weir_sim::cluster::{run, Options, RunResult};
use weir_sim::nemesis::FaultKind;

fn run_with(seed: u64, faults: &[FaultKind]) -> RunResult {
    run(&Options {
        seed,
        duration_s: 6,
        faults: faults.to_vec(),
        ..Options::default()
    })
}

/// Runs seeds until one's trace has a line containing `marker`; every run
/// must pass. Returns that run.
fn first_firing(faults: &[FaultKind], marker: &str) -> RunResult {
    for seed in 0..4 {
        let r = run_with(seed, faults);
        assert!(
            r.passed(),
            "{faults:?} seed {seed}: {:?} {:?}",
            r.error,
            r.report.anomalies
        );
        if r.trace.lines.iter().any(|l| l.contains(marker)) {
            return r;
        }
    }
    panic!("{faults:?}: no run had {marker:?} in its trace");
}

#[test]
fn new_faults_fire_and_the_checkers_pass() {
    use FaultKind::*;
    // A transfer that completed: the target took over.
    first_firing(&[Transfer], ": done");
    first_firing(&[Pause], "nemesis resume b");
    first_firing(&[Lossy], "nemesis lossless b");
    // A bridge: the cut leaves one broker out of both sides (3 brokers:
    // one on each side, one reaching both).
    let r = first_firing(&[Bridge], "nemesis partition");
    let line = r
        .trace
        .lines
        .iter()
        .find(|l| l.contains("nemesis partition"))
        .expect("a bridge line");
    let sides = line.split("nemesis partition").nth(1).unwrap_or_default();
    let cut: usize = sides
        .split('|')
        .map(|side| side.matches(|c: char| c.is_ascii_digit()).count())
        .sum();
    assert_eq!(cut, 2, "{line}");
    let r = first_firing(&[Crash, Split, Pause], "nemesis overlap:");
    // The new topic was used and its acknowledged writes were checked.
    let line = r
        .trace
        .lines
        .iter()
        .find(|l| l.contains("admin topic sim-new in use"))
        .expect("the new topic came into use");
    let first: u32 = line
        .rsplit("partitions ")
        .next()
        .and_then(|s| s.split("..").next())
        .and_then(|s| s.parse().ok())
        .expect("its first partition");
    let acked_new = r
        .history
        .writes
        .iter()
        .filter(|w| w.partition >= first)
        .filter(|w| matches!(w.outcome, weir_sim::history::Outcome::Acked { .. }))
        .count();
    assert!(acked_new > 0, "no acknowledged write on the new topic");
}
