//! The checkers can fail: each injected broker bug is found within a few
//! seeds, and the clean broker passes those same seeds.
//!
//! One test function on purpose: the bug switch is process-wide, so runs
//! with different bugs must not overlap.

use std::collections::BTreeMap;
use weir_sim::cluster::{run, Options};
use weir_sim::nemesis::FaultKind;

/// Each bug must be found within this many seeds (the first two bugs are
/// usually found at seed 0; skip-fsync needs a power loss, at seed 2).
const SEEDS: u64 = 10;

/// What the runs of one case share: a bug's runs and the clean broker's
/// runs of the same seeds differ only in the bug.
#[derive(Clone, Copy)]
struct Setting {
    duration_s: u64,
    /// Power losses only, rather than the default faults.
    power_only: bool,
    /// Forged peer frames only, rather than the default faults.
    forge_only: bool,
    /// Bit rot only, rather than the default faults.
    rot_only: bool,
}

/// The usual setting: short runs under the default faults.
const DEFAULT: Setting = Setting {
    duration_s: 5,
    power_only: false,
    forge_only: false,
    rot_only: false,
};

/// skip-seal-sync loses only what is appended to a segment just before it
/// rolls, which happens in runs with bursts of writes (seeds 4..12 of
/// every 12) once segments are made small mid-run, and shows only after
/// a power loss: longer runs with power losses only.
const POWER_AFTER_ROLLS: Setting = Setting {
    duration_s: 10,
    power_only: true,
    forge_only: false,
    rot_only: false,
};

/// trust-peers shows only when someone sends hostile peer frames: the
/// `forge` fault, alone.
const FORGED: Setting = Setting {
    duration_s: 10,
    power_only: false,
    forge_only: true,
    rot_only: false,
};

/// skip-crc-check shows only when a replica's disk rots: the `rot` fault,
/// alone.
const ROTTED: Setting = Setting {
    duration_s: 10,
    power_only: false,
    forge_only: false,
    rot_only: true,
};

fn options(seed: u64, bugs: u32, setting: Setting) -> Options {
    let mut o = Options {
        seed,
        duration_s: setting.duration_s,
        bugs,
        ..Options::default()
    };
    if setting.power_only {
        o.faults = vec![FaultKind::Power];
    }
    if setting.forge_only {
        o.faults = vec![FaultKind::Forge];
    }
    if setting.rot_only {
        o.faults = vec![FaultKind::Rot];
    }
    o
}

/// The first seed below `SEEDS` that fails with `bug`, and the anomalies.
fn first_failure(bug: u32, setting: Setting) -> Option<(u64, Vec<&'static str>)> {
    (0..SEEDS).find_map(|seed| {
        let r = run(&options(seed, bug, setting));
        (!r.passed()).then(|| {
            let mut found: Vec<&'static str> = r.report.counts().into_keys().collect();
            // A broker-wide task that ended (a panic) is a finding too.
            if r.error
                .as_deref()
                .is_some_and(|e| e.starts_with("a broker-wide task ended"))
            {
                found.push("broker-task-ended");
            }
            (seed, found)
        })
    })
}

#[test]
fn injected_bugs_are_found_and_the_clean_broker_passes() {
    // skip-fsync shows as whatever a power loss then destroys: acked
    // records (lost-write), records already read, which a new leader then
    // replaces (inconsistent-offsets), or the cluster's metadata itself,
    // after which no partition takes writes again (unavailable); or, first,
    // as raft-rs panicking in the driver of a broker whose log lacks what
    // it claimed persisted (a commit index beyond its log), which ends that
    // broker (broker-task-ended).
    // follower-restamps changes bytes only, not what consumers see: only
    // the replica comparison can find it. skip-seal-sync shows as acked
    // records lost with a sealed segment's tail (lost-write), often with
    // partitions that take no writes after the faults stop (unavailable).
    // trust-peers lets a forged heartbeat or proposal make raft-rs panic in
    // a broker's driver: its partitions then take no writes (unavailable),
    // or, now that brokers are supervised, the panic ends the broker
    // (broker-task-ended).
    // skip-crc-check serves a rotted replica's damaged batches: a consumer
    // gets a batch failing its CRC (corrupt-read), or the auditor finds the
    // rotted replica's bytes differ (replica-divergence).
    let cases: [(u32, Setting, &[&str]); 7] = [
        (weir::bugs::ACK_BEFORE_COMMIT, DEFAULT, &["lost-write"]),
        (
            weir::bugs::FETCH_BEYOND_HW,
            DEFAULT,
            &["inconsistent-offsets"],
        ),
        (
            weir::bugs::SKIP_FSYNC,
            DEFAULT,
            &[
                "lost-write",
                "unavailable",
                "inconsistent-offsets",
                "broker-task-ended",
            ],
        ),
        (
            weir::bugs::FOLLOWER_RESTAMPS,
            DEFAULT,
            &["replica-divergence"],
        ),
        (
            weir::bugs::SKIP_SEAL_SYNC,
            POWER_AFTER_ROLLS,
            &["lost-write", "unavailable"],
        ),
        (
            weir::bugs::TRUST_PEERS,
            FORGED,
            &["unavailable", "broker-task-ended"],
        ),
        (
            weir::bugs::SKIP_CRC_CHECK,
            ROTTED,
            &["corrupt-read", "replica-divergence"],
        ),
    ];
    // The clean broker must pass every seed a bug was looked for in, in
    // that bug's setting: (duration, power only) -> the highest such seed.
    let mut clean: BTreeMap<(u64, bool, bool, bool), u64> = BTreeMap::new();
    for (bug, setting, anomalies) in cases {
        let (seed, found) = first_failure(bug, setting)
            .unwrap_or_else(|| panic!("bug {bug} not found in {SEEDS} seeds"));
        assert!(
            found.iter().any(|f| anomalies.contains(f)),
            "bug {bug}: {found:?}"
        );
        let last = clean
            .entry((
                setting.duration_s,
                setting.power_only,
                setting.forge_only,
                setting.rot_only,
            ))
            .or_default();
        *last = (*last).max(seed);
    }
    for ((duration_s, power_only, forge_only, rot_only), last_seed) in clean {
        let setting = Setting {
            duration_s,
            power_only,
            forge_only,
            rot_only,
        };
        for seed in 0..=last_seed {
            let r = run(&options(seed, 0, setting));
            assert!(
                r.passed(),
                "clean seed {seed} ({duration_s} s, power only: {power_only}, \
                 forge only: {forge_only}, rot only: {rot_only}): {:?} {:?}",
                r.error,
                r.report.anomalies
            );
        }
    }
}
