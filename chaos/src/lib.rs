//! Chaos experiments against a real Weir cluster, as Jepsen runs them: real
//! broker processes on this machine, a workload whose every write and read
//! is recorded, faults injected into the processes while it runs, and the
//! simulator's checkers (`weir_sim::checker`) over the history at the end.
//!
//! - [`cluster`]: the broker processes (start, SIGKILL, SIGTERM, SIGSTOP,
//!   SIGCONT, wipe).
//! - [`nemesis`]: the fault schedule, drawn from the seed, applied on its own
//!   thread.
//! - [`workload`]: producers writing unique values with acks=all, and the
//!   final read of every partition from the beginning.
//!
//! Unlike the simulator, a run is not replayable: the seed fixes the fault
//! schedule, not the interleaving. One fault at a time and never more than
//! one broker down, so with 3 brokers and replication factor 3 every
//! acknowledged write must survive; `wipe` breaks that promise on purpose
//! (it deletes every broker's data) to show that the checkers notice.

pub mod cluster;
pub mod nemesis;
pub mod workload;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weir_sim::checker::{self, Report};
use weir_sim::history::History;

pub use nemesis::Fault;

/// One experiment.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `weir` binary the brokers run.
    pub weir: PathBuf,
    /// Where the brokers' data and logs go.
    pub dir: PathBuf,
    pub brokers: u64,
    pub partitions: u32,
    pub producers: u32,
    pub keys: u32,
    /// How long faults are injected, in seconds.
    pub duration_secs: u64,
    /// Faults drawn from.
    pub faults: Vec<Fault>,
    pub seed: u64,
    /// Client port of broker 1; broker i uses `base_port + 10 * (i - 1)`
    /// and the next port for peers.
    pub base_port: u16,
}

/// What a run found.
pub struct Outcome {
    pub report: Report,
    /// The faults applied, one line each.
    pub faults: Vec<String>,
}

/// How long the cluster may take to come up, and to settle after healing.
const READY_WAIT: Duration = Duration::from_secs(60);

/// Runs one experiment. Errors are failures to run it (no cluster, no
/// topic), not anomalies: those are in the report.
pub async fn run(o: &Options) -> Result<Outcome, String> {
    check_options(o)?;
    let cluster = cluster::Cluster::start(&o.weir, o.brokers, &o.dir, o.base_port)?;
    let bootstrap = cluster.bootstrap();
    let cluster = Arc::new(Mutex::new(cluster));
    if let Err(e) = workload::wait_ready(&bootstrap, o.brokers, READY_WAIT).await {
        return Err(format!("{e}{}", cluster.lock().unwrap().log_tails(10)));
    }
    workload::create_topic(&bootstrap, o).await?;

    let history = Arc::new(Mutex::new(History::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producers = workload::start_producers(&bootstrap, o, &history, &stop).await?;
    let nemesis = nemesis::start(cluster.clone(), o);
    let faults = tokio::task::spawn_blocking(move || nemesis.join())
        .await
        .map_err(|e| format!("the nemesis failed: {e}"))?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for p in producers {
        p.await.map_err(|e| format!("a producer failed: {e}"))?;
    }
    {
        let heal = cluster.clone();
        tokio::task::spawn_blocking(move || heal.lock().unwrap().heal())
            .await
            .map_err(|e| format!("healing failed: {e}"))??;
    }
    let polls = workload::read_all(&bootstrap, o, READY_WAIT).await;
    let mut h = std::mem::take(&mut *history.lock().unwrap());
    h.polls = polls;
    Ok(Outcome {
        report: check(&h),
        faults,
    })
}

fn check_options(o: &Options) -> Result<(), String> {
    if o.brokers == 0 || o.brokers > 9 {
        return Err(format!("--brokers must be 1..=9, got {}", o.brokers));
    }
    if o.partitions == 0 || o.producers == 0 || o.keys == 0 {
        return Err("--partitions, --producers and --keys must be at least 1".into());
    }
    if o.base_port < 1024 || o.base_port > 65_000 - 10 * o.brokers as u16 {
        return Err(format!("--base-port {} is out of range", o.base_port));
    }
    Ok(())
}

/// The simulator's checkers that apply to what this workload records.
/// `poll_order` does not: the final read sees records, not batch extents,
/// so control batches look like gaps.
pub fn check(h: &History) -> Report {
    let (reads, mut anomalies) = checker::inconsistent_offsets(h);
    anomalies.extend(checker::lost_write(h, &reads));
    anomalies.extend(checker::aborted_read(h));
    anomalies.extend(checker::duplicate(h));
    Report {
        writes: h.writes.len(),
        acked: h
            .writes
            .iter()
            .filter(|w| matches!(w.outcome, weir_sim::history::Outcome::Acked { .. }))
            .count(),
        records_read: h
            .polls
            .iter()
            .flat_map(|p| p.batches.iter())
            .map(|b| b.records.len())
            .sum(),
        anomalies,
    }
}
