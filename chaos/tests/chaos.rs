//! Short chaos runs against real broker processes: the `weir` binary built
//! next to this test (`cargo test --workspace` builds it), or `WEIR_BIN`.

use std::path::PathBuf;
use weir_chaos::{Fault, Options};

fn weir_bin() -> PathBuf {
    if let Ok(p) = std::env::var("WEIR_BIN") {
        return p.into();
    }
    // target/<profile>/deps/chaos-<hash> -> target/<profile>/weir
    let exe = std::env::current_exe().expect("the test's own path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("weir"))
        .expect("target/<profile>/deps");
    assert!(
        bin.exists(),
        "no weir binary at {}: run cargo build first (cargo test --workspace builds it), or set WEIR_BIN",
        bin.display()
    );
    bin
}

/// Brokers listen below Linux's ephemeral range (32768 and up), where an
/// outgoing connection could hold the port, and apart from the root
/// package's tests (20000 to 32000).
fn options(dir: &std::path::Path, faults: Vec<Fault>, base_port: u16) -> Options {
    Options {
        weir: weir_bin(),
        dir: dir.to_path_buf(),
        brokers: 3,
        partitions: 3,
        producers: 3,
        keys: 8,
        duration_secs: 12,
        faults,
        seed: 7,
        base_port,
    }
}

/// Brokers killed, paused and restarted one at a time: every acknowledged
/// write is read back where it was acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kills_pauses_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let faults = vec![Fault::Kill, Fault::Pause, Fault::Restart];
    let outcome = weir_chaos::run(&options(dir.path(), faults, 16_400))
        .await
        .expect("the experiment runs");
    let r = &outcome.report;
    assert!(!outcome.faults.is_empty(), "no fault was applied");
    assert!(
        r.acked >= 50,
        "too few acknowledged writes to check: {}",
        r.acked
    );
    assert!(
        r.records_read >= r.acked,
        "read {} of {} acked",
        r.records_read,
        r.acked
    );
    let failures: Vec<String> = r
        .anomalies
        .iter()
        .filter(|a| a.is_failure())
        .map(|a| a.to_string())
        .collect();
    assert!(
        failures.is_empty(),
        "faults {:?}: {failures:#?}",
        outcome.faults
    );
}

/// Every broker's data deleted mid-run (outside the failure model): the
/// acknowledged writes are gone, and the checkers say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_every_brokers_data_is_reported_as_lost_writes() {
    let dir = tempfile::tempdir().unwrap();
    let outcome = weir_chaos::run(&options(dir.path(), vec![Fault::Wipe], 16_500))
        .await
        .expect("the experiment runs");
    let r = &outcome.report;
    assert!(r.acked > 0, "nothing was acknowledged before the wipe");
    assert!(r.failed(), "the loss went unnoticed: {:?}", r.counts());
    assert!(
        r.counts().get("lost-write").is_some_and(|n| *n > 0),
        "{:?}",
        r.counts()
    );
}
