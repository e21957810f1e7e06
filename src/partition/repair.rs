//! The scrub and repair task: reads every replica's log at a bounded rate
//! checking each batch's CRC and term (so damage is found before a reader
//! meets it), and rebuilds damaged stretches of sealed segments from a
//! healthy replica (`storage::repair`).
//!
//! One task per broker, on tokio time only. Each step (every
//! [`STEP_MS`]) checks about `scrub_bytes_per_sec / 10` bytes of one
//! replica's log, replicas in (topic, partition) order, under the log's lock
//! for that step alone; a pass over every log starts at most once per
//! `scrub_interval_ms` (a log is read again only that often, not all the
//! time). It tries to repair every damaged replica at most once per
//! [`REPAIR_RETRY_MS`] each.

use super::{Replica, Replicas};
use crate::client::Connection;
use crate::cluster::controller::Metadata;
use crate::io::net::NetworkRef;
use crate::proto::client_request::Body as Req;
use crate::proto::client_response::Body as Resp;
use crate::proto::{FetchPartition, FetchRequest};
use crate::replication::driver::StatusBoard;
use crate::storage::repair::{write_repaired_copy, RepairPlan};
use crate::types::BatchHeader;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// Time between scrub steps.
pub const STEP_MS: u64 = 100;
/// Time between repair attempts of one replica.
pub const REPAIR_RETRY_MS: u64 = 1_000;
/// How long a repair waits for a peer's answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes asked of a peer per fetch while repairing.
const REPAIR_FETCH_BYTES: u32 = 1024 * 1024;

/// The task's state; build with [`Scrubber::new`], run with
/// [`Scrubber::run`].
pub struct Scrubber {
    pub self_id: u64,
    pub replicas: Replicas,
    pub board: StatusBoard,
    pub metadata: Metadata,
    pub net: NetworkRef,
    /// 0: no scrub (repairs still run for damage reads find).
    pub bytes_per_sec: u64,
    /// Least time from one pass's start to the next's.
    pub interval_ms: u64,
    pub logger: slog::Logger,
    /// When the current pass started; `None` while resting between passes.
    pass_started: Option<Instant>,
    /// When the next pass may start.
    next_pass: Option<Instant>,
    /// Where the scrub goes on in each group's log.
    cursors: BTreeMap<u64, u64>,
    /// The replica the scrub is on: its place in (topic, partition) order.
    on: Option<(String, u32)>,
    /// When each group's last repair attempt started.
    tried: BTreeMap<u64, Instant>,
}

impl Scrubber {
    pub fn new(
        self_id: u64,
        replicas: Replicas,
        board: StatusBoard,
        metadata: Metadata,
        net: NetworkRef,
        logger: slog::Logger,
    ) -> Self {
        Scrubber {
            self_id,
            replicas,
            board,
            metadata,
            net,
            bytes_per_sec: 0,
            interval_ms: 0,
            logger,
            pass_started: None,
            next_pass: None,
            cursors: BTreeMap::new(),
            on: None,
            tried: BTreeMap::new(),
        }
    }

    /// Sets the scrub's rate (0: off) and least time between passes.
    pub fn with_scrub(mut self, bytes_per_sec: u64, interval_ms: u64) -> Self {
        self.bytes_per_sec = bytes_per_sec;
        self.interval_ms = interval_ms;
        self
    }

    pub async fn run(mut self) {
        let mut every = tokio::time::interval(Duration::from_millis(STEP_MS));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let all = self.replicas.all();
            self.cursors
                .retain(|g, _| all.iter().any(|(_, r)| r.group == *g));
            self.tried
                .retain(|g, _| all.iter().any(|(_, r)| r.group == *g));
            if self.bytes_per_sec > 0 {
                self.scrub_step(&all);
            }
            for ((topic, partition), replica) in &all {
                if replica.log.damage().is_some() {
                    self.try_repair(topic, *partition, replica).await;
                }
            }
        }
    }

    /// Checks the next stretch of one replica's log.
    fn scrub_step(&mut self, all: &[((String, u32), Replica)]) {
        if all.is_empty() || crate::bugs::on(crate::bugs::SKIP_CRC_CHECK) {
            return;
        }
        let now = Instant::now();
        if self.pass_started.is_none() {
            if self.next_pass.is_some_and(|at| now < at) {
                return;
            }
            self.pass_started = Some(now);
        }
        // The replica after the last one scrubbed, or the first.
        let at = match &self.on {
            Some(key) => all.partition_point(|(k, _)| k < key) % all.len(),
            None => 0,
        };
        let (key, replica) = &all[at];
        let budget = (self.bytes_per_sec.saturating_mul(STEP_MS) / 1000).max(1) as usize;
        let from = self.cursors.get(&replica.group).copied().unwrap_or(0);
        let mut next_replica = true;
        if replica.log.damage().is_none() {
            let found = replica
                .log
                .with_log_mut(|log| match log.scrub_step(from, budget) {
                    Ok((next, checked)) => Ok((next, checked)),
                    Err(e) => {
                        log.note_damage(&e);
                        Err(e)
                    }
                });
            match found {
                Ok((next, checked)) => {
                    self.cursors.insert(replica.group, next);
                    // Stay on this replica until its log is checked to the
                    // end (a step that checked nothing wrapped around).
                    next_replica = checked == 0;
                }
                Err(e) => {
                    slog::error!(self.logger, "scrub found damage";
                        "topic" => &key.0, "partition" => key.1, "error" => %e);
                }
            }
        }
        self.on = Some(if next_replica {
            // Past this key: the next replica in order (wraps at the end).
            let mut k = key.clone();
            k.1 = k.1.saturating_add(1);
            if all.iter().all(|(x, _)| *x < k) {
                // A pass is done: rest until the interval since its start.
                if let Some(started) = self.pass_started.take() {
                    self.next_pass = Some(started + Duration::from_millis(self.interval_ms));
                }
                all[0].0.clone()
            } else {
                k
            }
        } else {
            key.clone()
        });
    }

    /// Rebuilds the damaged stretch of `replica` from another replica (the
    /// leader first) if the damage is in a sealed segment.
    async fn try_repair(&mut self, topic: &str, partition: u32, replica: &Replica) {
        let now = Instant::now();
        if self
            .tried
            .get(&replica.group)
            .is_some_and(|t| now < *t + Duration::from_millis(REPAIR_RETRY_MS))
        {
            return;
        }
        self.tried.insert(replica.group, now);
        let Some(plan) = replica.log.with_log(|l| l.repair_plan()) else {
            return;
        };
        // The leader first, then the other replicas: a damaged follower
        // that does not tick may not know the leader (a quiet one sends
        // nothing), and any replica's committed entries are the same.
        let leader = self.board.get(replica.group).map(|s| s.leader).unwrap_or(0);
        let sources: Vec<(u64, String)> = self.metadata.read(|t| {
            let replicas = t
                .topic(topic)
                .and_then(|tp| tp.partitions.get(partition as usize))
                .map(|a| a.replicas.clone())
                .unwrap_or_default();
            std::iter::once(leader)
                .chain(replicas.into_iter().filter(|r| *r != leader))
                .filter(|id| *id != 0 && *id != self.self_id)
                .filter_map(|id| t.broker(id).map(|b| (id, b.client_addr.clone())))
                .collect()
        });
        let mut replacement = None;
        for (source, addr) in sources {
            let checked = fetch_range(&self.net, &addr, topic, partition, &plan)
                .await
                .and_then(|fetched| plan.check(&fetched, replica.max_batch_bytes.max(1 << 20)));
            match checked {
                Ok(r) => {
                    replacement = Some((source, r));
                    break;
                }
                Err(e) => {
                    slog::warn!(self.logger, "repair: no good copy of the damaged range from a replica";
                        "topic" => topic, "partition" => partition, "replica" => source, "error" => e)
                }
            }
        }
        let Some((source, replacement)) = replacement else {
            return;
        };
        let (disk, dir) = replica.log.with_log(|l| l.location());
        // A copy of one sealed segment (segment.bytes at most), written
        // without the log's lock. On a multi-threaded runtime the worker
        // thread is handed over for it (the copy is blocking I/O); the
        // simulator's runtime has one thread and a simulated disk, and
        // copies in place.
        let write = || write_repaired_copy(disk.as_ref(), &dir, &plan, &replacement);
        let multi_thread = tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread;
        let copy = if multi_thread {
            tokio::task::block_in_place(write)
        } else {
            write()
        };
        let installed =
            copy.and_then(|copy| replica.log.with_log_mut(|l| l.install_repair(&plan, &copy)));
        match installed {
            Ok(true) => slog::info!(self.logger, "repaired a damaged range from a replica";
                "topic" => topic, "partition" => partition, "replica" => source,
                "segment" => %plan.path.display(), "from_offset" => plan.from_offset,
                "to_offset" => plan.to_offset),
            Ok(false) => {}
            Err(e) => slog::error!(self.logger, "repair failed";
                "topic" => topic, "partition" => partition, "error" => %e),
        }
    }
}

/// The batches holding offsets `[from_offset, to_offset)` of the plan, read
/// from the broker at `addr` (its own copy: a replica read).
async fn fetch_range(
    net: &NetworkRef,
    addr: &str,
    topic: &str,
    partition: u32,
    plan: &RepairPlan,
) -> Result<Vec<u8>, String> {
    let conn = Connection::connect(net, addr)
        .await
        .map_err(|e| e.to_string())?;
    let want = (plan.to_position - plan.from_position) as usize;
    let mut out = Vec::new();
    let mut offset = plan.from_offset;
    // Each answer holds at least one batch, and the stretch is bounded: at
    // most its entry count of rounds.
    while offset < plan.to_offset && out.len() <= want {
        let req = Req::Fetch(FetchRequest {
            partitions: vec![FetchPartition {
                topic: topic.into(),
                partition,
                offset,
                max_bytes: REPAIR_FETCH_BYTES,
                replica_read: true,
            }],
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: REPAIR_FETCH_BYTES,
        });
        let resp = conn
            .request(req, PEER_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(e) = resp.error {
            return Err(e.message);
        }
        let Some(Resp::Fetch(f)) = resp.body else {
            return Err("unexpected answer to a fetch".into());
        };
        let Some(p) = f.partitions.into_iter().next() else {
            return Err("empty fetch answer".into());
        };
        if let Some(e) = p.error {
            return Err(e.message);
        }
        if p.records.is_empty() {
            return Err(format!("the peer has nothing at offset {offset} yet"));
        }
        // Keep whole batches from `offset` on, up to the stretch's end.
        let mut at = 0usize;
        while at < p.records.len() && offset < plan.to_offset {
            let h = BatchHeader::parse(&p.records[at..], usize::MAX).map_err(|e| e.to_string())?;
            let size = h.size_bytes();
            if size > p.records.len() - at {
                break;
            }
            if h.next_offset() > offset {
                out.extend_from_slice(&p.records[at..at + size]);
                offset = h.next_offset();
            }
            at += size;
        }
    }
    Ok(out)
}
