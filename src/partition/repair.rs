//! The scrub and repair task: reads every replica's log at a bounded rate
//! checking each batch's CRC and term (so damage is found before a reader
//! meets it), and rebuilds damaged stretches of sealed segments from a
//! healthy replica (`storage::repair`).
//!
//! One task per broker, on tokio time only. Each step (every
//! [`STEP_MS`]) checks about `scrub_bytes_per_sec / 10` bytes of one
//! replica's log, replicas in (topic, partition) order, holding the log's
//! lock for at most [`SCRUB_LOCK_BYTES_MAX`] of them at a time (the driver,
//! fetches and produces need it too); a pass over every log starts at most once per
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
use crate::replication::raft_log::RaftLog;
use crate::storage::repair::{write_repaired_copy_reserving, RepairPlan};
use crate::storage::StorageError;
use crate::types::BatchHeader;
use std::collections::{BTreeMap, BTreeSet};
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
/// Bytes a scrub reads (and holds in memory) per hold of a log's lock: a
/// fetch or an append waits behind at most this much reading.
pub const SCRUB_LOCK_BYTES_MAX: usize = 1024 * 1024;

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
    /// The broker's `storage_min_free_bytes` (None: the default for the
    /// filesystem's size): a repaired copy is not written into it.
    pub min_free_bytes: Option<u64>,
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
            min_free_bytes: None,
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

    /// Keeps the broker's configured disk reserve free of repaired copies.
    pub fn with_min_free_bytes(mut self, min_free_bytes: Option<u64>) -> Self {
        self.min_free_bytes = min_free_bytes;
        self
    }

    pub async fn run(mut self) {
        let mut every = tokio::time::interval(Duration::from_millis(STEP_MS));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let all = self.replicas.all();
            // A set, not a scan of `all` per entry: with thousands of
            // replicas that was quadratic work every step.
            let live: BTreeSet<u64> = all.iter().map(|(_, r)| r.group).collect();
            self.cursors.retain(|g, _| live.contains(g));
            self.tried.retain(|g, _| live.contains(g));
            if self.bytes_per_sec > 0 {
                self.scrub_step(&all).await;
            }
            for ((topic, partition), replica) in &all {
                // Lock-free: the flag beside the log's lock.
                if replica.log.is_damaged() {
                    self.try_repair(topic, *partition, replica).await;
                }
            }
        }
    }

    /// Checks the next stretch of one replica's log (`all` in key order).
    async fn scrub_step(&mut self, all: &[((String, u32), Replica)]) {
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
        let budget = usize::try_from(self.bytes_per_sec.saturating_mul(STEP_MS) / 1000)
            .unwrap_or(usize::MAX)
            .max(1);
        let mut cursor = self.cursors.get(&replica.group).copied().unwrap_or(0);
        let scrubbed = scrub_log(&replica.log, &mut cursor, budget).await;
        self.cursors.insert(replica.group, cursor);
        // Stay on this replica until its log is checked to the end.
        let next_replica = match scrubbed {
            Scrubbed::More => false,
            Scrubbed::End => true,
            Scrubbed::Damage(e) => {
                slog::error!(self.logger, "scrub found damage";
                    "topic" => &key.0, "partition" => key.1, "error" => %e);
                true
            }
        };
        self.on = Some(if next_replica {
            // Past this key: the next replica in order (wraps at the end).
            let mut k = key.clone();
            k.1 = k.1.saturating_add(1);
            if all.last().is_none_or(|(x, _)| *x < k) {
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
        let reserve = self.min_free_bytes;
        let write =
            || write_repaired_copy_reserving(disk.as_ref(), &dir, &plan, &replacement, reserve);
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

/// What a scrub step found in a log.
#[derive(Debug)]
enum Scrubbed {
    /// Checked its budget; the log goes on.
    More,
    /// Checked to the log's end (the cursor is back at its start), or the
    /// log is already known to be damaged.
    End,
    /// Damage, now recorded in the log.
    Damage(StorageError),
}

/// Checks about `budget` bytes of `log` from entry `*cursor` on, moving the
/// cursor. The lock is held for at most [`SCRUB_LOCK_BYTES_MAX`] of them
/// at a time (the bytes read are in memory meanwhile), other tasks let in
/// between.
async fn scrub_log(log: &RaftLog, cursor: &mut u64, budget: usize) -> Scrubbed {
    let mut left = budget;
    while left > 0 {
        if log.is_damaged() {
            return Scrubbed::End;
        }
        let chunk = left.min(SCRUB_LOCK_BYTES_MAX);
        let from = *cursor;
        let found = log.with_log_mut(|l| {
            l.scrub_step(from, chunk).inspect_err(|e| {
                l.note_damage(e);
            })
        });
        match found {
            Ok((next, checked)) => {
                *cursor = next;
                // Nothing checked: past the end, wrapped around.
                if checked == 0 {
                    return Scrubbed::End;
                }
                left = left.saturating_sub(checked);
            }
            Err(e) => return Scrubbed::Damage(e),
        }
        if left > 0 {
            tokio::task::yield_now().await;
        }
    }
    Scrubbed::More
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
    // Each answer moves the offset forward (`take_batches` refuses one that
    // does not), and the stretch is bounded: at most its entry count of
    // rounds.
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
        offset = take_batches(&p.records, offset, plan.to_offset, &mut out)?;
    }
    Ok(out)
}

/// Appends to `out` the whole batches of `records` holding offsets from
/// `offset` up to `to_offset`, and returns the offset after them. An answer
/// that moves nothing forward (its first batch cut short, or only batches
/// before `offset`) is an error: asking again would get the same answer,
/// forever, and hold up every scrub and repair of this broker.
fn take_batches(
    records: &[u8],
    mut offset: i64,
    to_offset: i64,
    out: &mut Vec<u8>,
) -> Result<i64, String> {
    let start = offset;
    let mut at = 0usize;
    while at < records.len() && offset < to_offset {
        let h = BatchHeader::parse(&records[at..], usize::MAX).map_err(|e| e.to_string())?;
        let size = h.size_bytes();
        if size > records.len() - at {
            break;
        }
        if h.next_offset() > offset {
            out.extend_from_slice(&records[at..at + size]);
            offset = h.next_offset();
        }
        at += size;
    }
    if offset == start {
        return Err(format!(
            "the peer's answer at offset {offset} holds no whole batch past it"
        ));
    }
    Ok(offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{BatchBuilder, Event};
    use bytes::Bytes;

    /// Two records at `base`, `base + 1`.
    fn batch_at(base: i64) -> Vec<u8> {
        let mut b = BatchBuilder::new();
        for i in 0..2 {
            b.push(&Event {
                key: None,
                value: Some(Bytes::from(vec![i as u8; 20])),
                timestamp_ms: 1_000,
                headers: Vec::new(),
            });
        }
        b.build().stamp(base, 1).into_bytes().to_vec()
    }

    #[test]
    fn whole_batches_from_the_offset_are_taken() {
        let mut records = batch_at(10);
        records.extend(batch_at(12));
        records.extend(batch_at(14));
        let mut out = Vec::new();
        assert_eq!(take_batches(&records, 12, 14, &mut out), Ok(14));
        assert_eq!(out, batch_at(12));
        // A batch cut short at the end of an answer is left for the next.
        let mut out = Vec::new();
        assert_eq!(
            take_batches(&records[..records.len() - 5], 10, 16, &mut out),
            Ok(14)
        );
    }

    /// An answer that moves the repair fetch nothing forward is an error:
    /// the loop used to ask for the same offset again, forever, blocking
    /// the broker's only scrub and repair task.
    #[test]
    fn an_answer_without_progress_is_an_error() {
        let whole = batch_at(10);
        let mut out = Vec::new();
        let cut = take_batches(&whole[..whole.len() - 1], 10, 12, &mut out);
        assert!(cut.is_err(), "{cut:?}");
        // Only batches before the offset wanted.
        let stale = take_batches(&whole, 12, 14, &mut out);
        assert!(stale.is_err(), "{stale:?}");
        assert!(out.is_empty());
    }

    /// Bytes read since other tasks last ran, and the most of them.
    #[derive(Debug, Default)]
    struct ReadSizes {
        since_yield_bytes: std::sync::atomic::AtomicUsize,
        max_bytes: std::sync::atomic::AtomicUsize,
    }

    #[derive(Debug)]
    struct MeasuredDisk(std::sync::Arc<ReadSizes>);

    #[derive(Debug)]
    struct MeasuredFile(Box<dyn DiskFile>, std::sync::Arc<ReadSizes>);

    use crate::io::{Disk, DiskFile, OpenMode, RealDisk, SyncHandle};
    use std::path::Path;

    impl Disk for MeasuredDisk {
        fn open(&self, path: &Path, mode: OpenMode) -> std::io::Result<Box<dyn DiskFile>> {
            Ok(Box::new(MeasuredFile(
                RealDisk.open(path, mode)?,
                self.0.clone(),
            )))
        }
        fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
            RealDisk.create_dir_all(path)
        }
        fn list_dir(&self, path: &Path) -> std::io::Result<Vec<String>> {
            RealDisk.list_dir(path)
        }
        fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
            RealDisk.rename(from, to)
        }
        fn remove_file(&self, path: &Path) -> std::io::Result<()> {
            RealDisk.remove_file(path)
        }
        fn remove_dir_all(&self, path: &Path) -> std::io::Result<()> {
            RealDisk.remove_dir_all(path)
        }
        fn sync_dir(&self, path: &Path) -> std::io::Result<()> {
            RealDisk.sync_dir(path)
        }
        fn exists(&self, path: &Path) -> bool {
            RealDisk.exists(path)
        }
    }

    impl DiskFile for MeasuredFile {
        fn read_at(&self, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
            use std::sync::atomic::Ordering::Relaxed;
            let since = self.1.since_yield_bytes.fetch_add(buf.len(), Relaxed) + buf.len();
            self.1.max_bytes.fetch_max(since, Relaxed);
            self.0.read_at(buf, pos)
        }
        fn append(&mut self, data: &[u8]) -> std::io::Result<()> {
            self.0.append(data)
        }
        fn sync(&self) -> std::io::Result<()> {
            self.0.sync()
        }
        fn sync_handle(&self) -> std::io::Result<SyncHandle> {
            self.0.sync_handle()
        }
        fn truncate(&mut self, len: u64) -> std::io::Result<()> {
            self.0.truncate(len)
        }
        fn len(&self) -> std::io::Result<u64> {
            self.0.len()
        }
    }

    /// A scrub step with a large budget (the allowed maximum rate makes it
    /// hundreds of MB) reads a log in lock holds of about
    /// `SCRUB_LOCK_BYTES_MAX` each, letting other tasks in between, never
    /// the whole budget at once under the lock (stalling the driver and
    /// every fetch of that log, and allocating all of it). A task on the
    /// same (single-threaded) runtime counts the bytes read between its
    /// turns.
    #[tokio::test]
    async fn a_scrub_step_reads_a_bounded_amount_per_lock_hold() {
        use raft::eraftpb::Entry;
        let dir = tempfile::tempdir().unwrap();
        let sizes = std::sync::Arc::new(ReadSizes::default());
        let disk: crate::io::DiskRef = std::sync::Arc::new(MeasuredDisk(sizes.clone()));
        let config = crate::storage::LogConfig::default();
        let log = RaftLog::open(disk, dir.path(), config, 0, &[1]).unwrap();
        let mut entries = vec![Entry {
            index: 1,
            term: 1,
            ..Entry::default()
        }];
        let big = |i: u64| {
            let mut b = BatchBuilder::new();
            b.push(&Event {
                key: None,
                value: Some(Bytes::from(vec![i as u8; 64 * 1024])),
                timestamp_ms: 1_000,
                headers: Vec::new(),
            });
            b.build().into_bytes()
        };
        // About 4 MiB.
        entries.extend((2..=65).map(|i| Entry {
            index: i,
            term: 1,
            data: big(i),
            ..Entry::default()
        }));
        log.append(&entries, 0).unwrap();
        log.sync().unwrap();
        sizes
            .max_bytes
            .store(0, std::sync::atomic::Ordering::Relaxed);
        let between = sizes.clone();
        tokio::spawn(async move {
            loop {
                between
                    .since_yield_bytes
                    .store(0, std::sync::atomic::Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        });
        tokio::task::yield_now().await;

        let mut cursor = 0;
        let scrubbed = scrub_log(&log, &mut cursor, 64 * 1024 * 1024).await;
        assert!(matches!(scrubbed, Scrubbed::End), "{scrubbed:?}");
        let read_max = sizes.max_bytes.load(std::sync::atomic::Ordering::Relaxed);
        assert!(read_max > 0);
        assert!(
            // 1 MiB and a batch; the log is about 4 MiB.
            read_max <= 2 * 1024 * 1024,
            "{read_max} bytes read in one lock hold"
        );
        // A small budget checks some and goes on where it stopped.
        let mut cursor = 0;
        let scrubbed = scrub_log(&log, &mut cursor, 100 * 1024).await;
        assert!(matches!(scrubbed, Scrubbed::More), "{scrubbed:?}");
        assert!(cursor > 1 && cursor < 65, "{cursor}");
    }
}
