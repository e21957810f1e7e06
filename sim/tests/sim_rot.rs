//! The `rot` fault: bytes flipped on disk in one replica of a partition.
//! Brokers find the damage by CRC, never serve it, and repair it from a
//! healthy replica: the checkers pass, and at the end every replica of
//! every partition can be read again (a replica still damaged refuses the
//! auditor's reads and is listed as unread).

use weir_sim::cluster::{run, Options};
use weir_sim::nemesis::FaultKind;

#[test]
fn rotted_replicas_are_never_served_and_are_repaired() {
    // Seed 0 flips bytes in sealed and active segments of three partitions
    // (before damage found in the active segment was sealed for repair,
    // two replicas stayed damaged and unread to the end).
    for seed in [0, 15] {
        let faults = match seed {
            0 => vec![FaultKind::Rot],
            // Rot with the default faults: a new leader's truncation meets a
            // rotted follower's segment (it used to fail-stop the replica).
            _ => FaultKind::DEFAULT
                .into_iter()
                .chain([FaultKind::Rot])
                .collect(),
        };
        let r = run(&Options {
            seed,
            faults,
            ..Options::default()
        });
        assert!(
            r.passed(),
            "seed {seed}: {:?} {:?}",
            r.error,
            r.report.anomalies
        );
        let rots = r
            .trace
            .lines
            .iter()
            .filter(|l| l.contains("nemesis rot b"))
            .count();
        assert!(rots > 0, "seed {seed}: no byte flipped");
        assert!(!r.history.replica_checks.is_empty());
        for c in &r.history.replica_checks {
            assert!(
                c.unread.is_empty() && c.differing.is_empty(),
                "seed {seed}: partition {}: unread {:?}, differing {:?}",
                c.partition,
                c.unread,
                c.differing
            );
        }
    }
}
