//! The multi-Raft driver: one task per broker runs every Raft group hosted
//! on it (the partitions' and the controller's).
//!
//! One loop, in raft-rs's order (see raft-rs `examples/five_mem_node`), but
//! for all groups at once so that disk syncs and network sends are shared,
//! and with persistence pipelined (raft-rs's async Ready):
//!
//! 1. Take inputs: proposals, Raft messages from peers, groups to add or
//!    remove; or a tick, which ticks every group; or a finished sync.
//! 2. For every group with a Ready: queue the messages that need no local
//!    persistence (a leader's appends), install a snapshot, append the new
//!    entries to the group's log (not yet synced), note the hard state, and
//!    handle newly committed entries (raft-rs hands out only entries this
//!    replica has persisted).
//! 3. Hand the Ready to raft-rs with `advance_append_async`, keeping its
//!    persisted messages (votes, append responses) back until the group
//!    commit that covers it is done. The persister (a thread of its own, or
//!    a task on a current-thread runtime) runs one group commit at a time:
//!    an fsync of every log appended to since the last one, then any
//!    changed term or vote. A Ready with nothing to sync and
//!    nothing before it syncing finishes at once (`advance`).
//! 4. When a group commit is done: `on_persist_ready`, send the messages
//!    that waited for it, answer acks=1 producers; a failed sync stops the
//!    group instead (fail-stop), and nothing that waited for it leaves.
//! 5. Flush outgoing messages, one batch per destination broker.
//!
//! So a leader's appends leave before its own fsync, which then runs
//! alongside the followers'; the next round's entries are appended while
//! the last round's fsync runs; and a fetch never waits for an fsync, which
//! holds no lock of the log's.
//!
//! Determinism: raft-rs draws each randomized election timeout from
//! `thread_rng`. The driver watches every group's (term, role, leader) after
//! each tick and step, and whenever it changes (the only times raft-rs
//! redraws) overrides the timeout with a draw from the broker's seeded RNG,
//! before the group is ticked again. Groups live in a BTreeMap and are
//! visited in id order.
//!
//! Quiescence: an idle partition costs no CPU and sends nothing. A leader
//! whose followers all hold its whole log, committed, and whose brokers are
//! all live, stops ticking after [`DriverConfig::quiesce_after_ms`]
//! (so no more heartbeats); a follower stops ticking while its leader's
//! broker keeps confirming, in the leader reports it sends every broker
//! once for all its groups, that it leads this group at this term (so no
//! election while the leader is known to be there). That per-broker-pair
//! report is the coalesced heartbeat of every quiet group, as Redpanda's
//! heartbeat manager coalesces them. Anything that needs the group wakes
//! it: a proposal or a vote request (the leader is no longer settled), a
//! report that stops confirming, a broker that falls silent. Ticks drive
//! only liveness in Raft, never safety, so a group ticked less can be late
//! to notice a failure, never wrong.

use super::peer_input::{self, PeerDrops};
use super::raft_log::RaftLog;
use super::timings::{Report, Timings};
use crate::io::ClockRef;
use crate::types::RecordBatch;
use raft::eraftpb::{Entry, EntryType, Message, MessageType};
use raft::{RawNode, StateRole};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use slog::Logger;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// When appended entries are fsynced: the broker's `fsync` setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Before anything that depends on them leaves the broker (an ack, a
    /// vote, an append response), grouped across the round's partitions.
    /// Acknowledged writes survive the loss of every replica's page cache.
    Always,
    /// At most every `ms` milliseconds. Acknowledged writes of the last
    /// interval survive only while a majority of replicas keeps running.
    IntervalMs(u64),
    /// Never by Weir; the OS writes back when it likes (as Kafka by
    /// default). Acknowledged writes survive only while a majority of
    /// replicas keeps running (or the OS flushed them).
    Never,
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            other => match other.strip_prefix("interval:").map(str::parse::<u64>) {
                Some(Ok(ms)) if ms > 0 => Ok(FsyncPolicy::IntervalMs(ms)),
                _ => Err(format!(
                    "fsync must be always, never or interval:<ms> (e.g. interval:100), got '{other}'"
                )),
            },
        }
    }
}

/// Settings of the driver.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// When appended entries are fsynced.
    pub fsync: FsyncPolicy,
    /// This broker: the Raft node id in every group it hosts.
    pub node_id: u64,
    pub tick_ms: u64,
    pub heartbeat_tick: usize,
    /// Election timeouts are drawn from `[election_tick_min, election_tick_max)`.
    pub election_tick_min: usize,
    pub election_tick_max: usize,
    /// How long a leader stays settled (every follower holds its whole
    /// log, committed) before it stops ticking. Long enough for heartbeats
    /// carrying the final commit index to go out, and for the broker's
    /// leader reports (every 500 ms) naming it leader at this term to reach
    /// the followers: until one does, a follower keeps ticking, and without
    /// heartbeats it would time out and depose an idle, healthy leader.
    pub quiesce_after_ms: u64,
    /// Whether idle groups stop ticking (the broker setting
    /// `quiesce_idle_groups`, on by default); the broker then hands the
    /// driver its view of the peers ([`Driver::with_liveness`]).
    pub quiesce: bool,
    /// Largest append message, in bytes of entries.
    pub message_bytes_max: u64,
    /// Appends in flight per follower.
    pub inflight_messages_max: usize,
    /// Inputs handled per round before the round runs.
    pub inputs_per_round_max: usize,
    /// Seed of the driver's RNG (election timeout jitter).
    pub seed: u64,
    /// Simulation only: how long, in the runtime's time, the driver waits
    /// to hear that a group commit is done, on the current-thread runtime
    /// (turmoil) where the persister is a task. A simulated fsync takes no
    /// time, so without this the driver never appends (or rolls a segment)
    /// while a group commit is under way, and bugs in that window go
    /// unseen. 0 everywhere else.
    pub simulated_sync_ms: u64,
    /// With fsync always, while the broker appends faster than
    /// `group_commit_busy_bytes_per_sec`, a group commit starts no sooner
    /// than this after the one before it started (0, the default: never
    /// held). Each fdatasync costs this kind of machine ~100 µs of CPU
    /// whatever it carries (a data write, an inode write and a cache
    /// flush, each a VM exit), so at a steady high rate fewer, larger
    /// commits leave CPU for the records themselves (the trade of Kafka's
    /// producer `linger.ms`). Off by default because the gap leaves the
    /// disk idle: a producer limited by its unacknowledged window, or a
    /// disk near its bandwidth, loses throughput (one broker, 3M records
    /// as fast as possible: 3.2-3.8M records/s without, 2.7-2.9M with
    /// 4 ms; docs/performance.md).
    pub group_commit_gap_us: u64,
    /// The append rate, in bytes per second of entries, above which the
    /// broker counts as busy for `group_commit_gap_us`.
    pub group_commit_busy_bytes_per_sec: u64,
}

impl DriverConfig {
    pub fn new(node_id: u64, seed: u64) -> Self {
        DriverConfig {
            fsync: FsyncPolicy::Always,
            node_id,
            tick_ms: 100,
            heartbeat_tick: 2,
            election_tick_min: 10,
            election_tick_max: 20,
            quiesce_after_ms: 1_500,
            quiesce: true,
            message_bytes_max: 1024 * 1024,
            inflight_messages_max: 64,
            inputs_per_round_max: 1024,
            seed,
            simulated_sync_ms: 0,
            group_commit_gap_us: 0,
            group_commit_busy_bytes_per_sec: 32 * 1024 * 1024,
        }
    }

    fn raft_config(&self, applied: u64) -> raft::Config {
        raft::Config {
            id: self.node_id,
            election_tick: self.election_tick_min,
            heartbeat_tick: self.heartbeat_tick,
            // raft-rs draws from [min, max); the driver overrides each draw
            // with its own seeded one, in the same range.
            min_election_tick: self.election_tick_min,
            max_election_tick: self.election_tick_max,
            max_size_per_msg: self.message_bytes_max,
            max_inflight_msgs: self.inflight_messages_max,
            check_quorum: true,
            pre_vote: true,
            applied,
            // No limit: partitions hand raft-rs committed entries without
            // their data (`RaftLog::omit_data_of_committed`), which would
            // break its count of uncommitted bytes. Proposals are bounded
            // before they reach raft-rs instead: by the server's connection
            // and in-flight request limits and the driver's input queue.
            max_uncommitted_size: raft::NO_LIMIT,
            ..Default::default()
        }
    }
}

/// How a producer wants its write acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acks {
    /// Once committed (persisted on a majority).
    All,
    /// Once the leader persisted it.
    Leader,
    /// Never.
    None,
}

/// Why a proposal was not acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// This broker does not lead the group; `leader` does (0: unknown).
    NotLeader { leader: u64 },
    /// The group is not hosted here.
    UnknownGroup,
    /// The group's log failed; it is stopped on this broker.
    Storage(String),
    /// The broker is shutting down.
    ShuttingDown,
}

impl fmt::Display for ProposeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProposeError::NotLeader { leader: 0 } => {
                write!(f, "no leader is known yet (an election is running); retry")
            }
            ProposeError::NotLeader { leader } => {
                write!(f, "this broker is not the leader; broker {leader} is")
            }
            ProposeError::UnknownGroup => write!(f, "the partition is not hosted on this broker"),
            ProposeError::Storage(e) => write!(f, "the partition's log failed: {e}"),
            ProposeError::ShuttingDown => write!(f, "the broker is shutting down"),
        }
    }
}

/// The answer to a proposal: the base offset of the batch.
pub type ProposeResult = Result<i64, ProposeError>;

/// A batch to replicate.
pub struct Proposal {
    pub group: u64,
    pub batch: RecordBatch,
    pub acks: Acks,
    pub reply: Option<oneshot::Sender<ProposeResult>>,
}

/// Applies committed entries of a group with a state machine (the
/// controller). Called on the driver task, in log order, exactly once per
/// entry per process lifetime.
pub trait Apply: Send {
    fn apply(&mut self, index: u64, batch: &RecordBatch);
    /// Every committed entry up to `index` (of `term`) was handed over,
    /// empty ones and configuration changes included: how far the state
    /// machine has caught up, which [`Apply::apply`] alone cannot tell.
    fn applied_to(&mut self, _index: u64, _term: u64) {}
}

/// A group for the driver to host.
pub struct GroupSpec {
    pub id: u64,
    pub log: RaftLog,
    /// Where committed entries go, for groups with a state machine.
    pub apply: Option<Box<dyn Apply>>,
    /// The preferred leader (the first replica); it campaigns at once when
    /// the group is brand new, and leadership is handed back to it.
    pub preferred_leader: u64,
    /// The last entry already applied (0 re-applies the whole log).
    pub applied: u64,
}

/// What the driver is asked to do.
pub enum Input {
    Propose(Proposal),
    /// Raft messages from broker `from`, each for a group.
    Raft {
        from: u64,
        messages: Vec<(u64, Message)>,
    },
    AddGroup(Box<GroupSpec>),
    /// Stops hosting a group; `done` fires once the driver let go of its
    /// log (so its files may be deleted).
    RemoveGroup {
        id: u64,
        done: Option<oneshot::Sender<()>>,
    },
    /// Hands the leadership of `group` to replica `to`, if this broker leads
    /// it; `reply` says whether the handover started (it completes once the
    /// target is elected, which the status board shows).
    TransferLeader {
        group: u64,
        to: u64,
        reply: oneshot::Sender<Result<(), ProposeError>>,
    },
    /// Syncs everything and stops the driver.
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

/// Where Raft messages leave the broker.
pub trait Outbound: Send {
    /// Queues `messages` (group, message) for broker `to`. Must not block:
    /// when the way to `to` is congested the messages may be dropped, which
    /// Raft tolerates (it retries).
    fn send(&mut self, to: u64, messages: Vec<(u64, Message)>);
}

/// What the broker knows about its peers as a whole, from traffic between
/// brokers rather than from each group: the basis on which idle groups stop
/// ticking (see the module doc).
pub trait Liveness: Send {
    /// Whether `broker` was heard from recently.
    fn broker_live(&self, broker: u64) -> bool;
    /// Whether `leader`'s latest report, received recently, says that it
    /// leads `group` at `term`.
    fn confirms_leader(&self, group: u64, leader: u64, term: u64) -> bool;
}

/// Knows nothing of peers, so no group ever quiesces: every group ticks, as
/// in plain raft-rs.
pub struct NoLiveness;

impl Liveness for NoLiveness {
    fn broker_live(&self, _broker: u64) -> bool {
        false
    }
    fn confirms_leader(&self, _group: u64, _leader: u64, _term: u64) -> bool {
        false
    }
}

/// A group's state as other tasks see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupStatus {
    pub leader: u64,
    pub term: u64,
    pub is_leader: bool,
    /// Offset after the last committed record (Kafka's high watermark).
    pub high_watermark: i64,
    pub commit: u64,
    /// Set once the group's log failed; the group is stopped here.
    pub failed: Option<String>,
    /// Followers whose log matches the leader's last index (leader only).
    pub in_sync: Vec<u64>,
    /// Idle and no longer ticked (see the module doc).
    pub quiescent: bool,
    /// Set while this replica's log holds a damaged batch not yet repaired
    /// (`storage::repair`): it neither leads nor campaigns meanwhile.
    pub damaged: Option<String>,
}

/// Shared view of every group's status, updated by the driver after each
/// round, with a counter that changes whenever any high watermark moves (for
/// long-polling fetches).
#[derive(Clone, Debug)]
pub struct StatusBoard {
    groups: Arc<Mutex<BTreeMap<u64, GroupStatus>>>,
    changed: watch::Receiver<u64>,
    timings: Timings,
    peer_drops: PeerDrops,
}

impl StatusBoard {
    pub fn get(&self, group: u64) -> Option<GroupStatus> {
        lock(&self.groups).get(&group).cloned()
    }

    /// The groups this broker leads, with their terms.
    pub fn leading(&self) -> Vec<(u64, u64)> {
        lock(&self.groups)
            .iter()
            .filter(|(_, s)| s.is_leader)
            .map(|(id, s)| (*id, s.term))
            .collect()
    }

    /// Counts of (hosted, leading, quiescent) groups.
    pub fn counts(&self) -> (usize, usize, usize) {
        let groups = lock(&self.groups);
        let leading = groups.values().filter(|s| s.is_leader).count();
        let quiet = groups.values().filter(|s| s.quiescent).count();
        (groups.len(), leading, quiet)
    }

    /// A receiver that sees a new value whenever a high watermark moves.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changed.clone()
    }

    /// Input from peers dropped as invalid, by the driver and the peer
    /// listener (see [`peer_input`]).
    pub fn peer_drops(&self) -> PeerDrops {
        self.peer_drops.clone()
    }

    /// The driver's timings (rounds, group commits, tick lateness) since
    /// the last reset; with `reset`, starts them afresh.
    pub fn timings(&self, reset: bool) -> Report {
        self.timings.report(reset)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock already took the broker down; the data
    // behind it is plain state, still consistent between calls.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Waiter {
    term: u64,
    reply: oneshot::Sender<ProposeResult>,
}

struct Group {
    node: RawNode<RaftLog>,
    log: RaftLog,
    apply: Option<Box<dyn Apply>>,
    preferred_leader: u64,
    /// (term, role, leader) when last observed, to spot redraws of the
    /// election timeout and leadership changes.
    seen: (u64, StateRole, u64),
    waiting_commit: BTreeMap<u64, Waiter>,
    waiting_persist: VecDeque<(u64, Waiter)>,
    /// Readies handed to raft-rs but not yet durable, oldest first.
    unpersisted: VecDeque<Unpersisted>,
    /// Successful answers of this round, sent once the round's status is
    /// published, so a writer that reads right after its ack sees its write.
    answers: Vec<(oneshot::Sender<ProposeResult>, ProposeResult)>,
    failed: Option<String>,
    status: GroupStatus,
    /// Consecutive ticks this group has led with nothing left to replicate.
    settled_ticks: u64,
    /// Not ticked at the last tick.
    quiescent: bool,
    /// (commit, high watermark) last computed: entries up to the commit
    /// never change, so the offset after it is read from the log only when
    /// the commit moves, not every round.
    hw_at: Option<(u64, i64)>,
    /// The log's damage was reported (logged) since it was last clean.
    damage_reported: bool,
    /// The voter a damaged leader last tried to hand leadership to, and in
    /// which term: the next try goes to the next candidate.
    step_down_tried: Option<(u64, u64)>,
}

/// The driver task's state. Build with [`Driver::new`], run with
/// [`Driver::run`].
pub struct Driver {
    config: DriverConfig,
    groups: BTreeMap<u64, Group>,
    inputs: mpsc::Receiver<Input>,
    outbound: Box<dyn Outbound>,
    liveness: Box<dyn Liveness>,
    outbox: BTreeMap<u64, Vec<(u64, Message)>>,
    board: Arc<Mutex<BTreeMap<u64, GroupStatus>>>,
    changed: watch::Sender<u64>,
    rng: ChaCha8Rng,
    clock: ClockRef,
    logger: Logger,
    ticks: u64,
    /// Groups ticked, stepped, proposed to or otherwise changed since the
    /// last round, and groups left with a Ready: the only ones a round
    /// looks at, so that idle groups cost nothing.
    touched: std::collections::BTreeSet<u64>,
    /// Groups with appends not yet fsynced (fsync interval or never).
    unsynced: std::collections::BTreeSet<u64>,
    last_fsync: tokio::time::Instant,
    persist: Persist,
    timings: Timings,
    /// Peer messages dropped as invalid (shared with the peer listener).
    peer_drops: PeerDrops,
}

/// The driver's side of the persister task, which runs one group commit
/// at a time while the driver goes on: the leader's appends leave before
/// its own fsync, the next round's entries are appended during it, and
/// fetches read meanwhile (the fsync holds no lock of the log's).
struct Persist {
    jobs: mpsc::Sender<PersistJob>,
    done: mpsc::Receiver<PersistDone>,
    /// The persister's ends, until `run` starts it.
    task_ends: Option<(mpsc::Receiver<PersistJob>, mpsc::Sender<PersistDone>)>,
    /// The job being synced, and when it was handed over.
    in_flight: Option<(u64, tokio::time::Instant)>,
    /// The id the next job will have: readies handed off now wait for it.
    next_job: u64,
    /// Logs the next job syncs.
    next_logs: std::collections::BTreeSet<u64>,
    /// Readies wait for the next job: it must run even with nothing to
    /// sync (a Ready queued behind a sync only because the one before it
    /// was syncing, with fsync never, or a follower's heartbeat response).
    next_waited: bool,
    /// The next job also saves every log's commit index.
    flush_commit: bool,
    /// When the last job was handed over, and the bytes of entries
    /// appended since: how busy the broker is.
    last_start: Option<tokio::time::Instant>,
    bytes_since_start: u64,
    /// Set while the next job is held back (see
    /// [`DriverConfig::group_commit_gap_us`]): when it may start.
    held_until: Option<tokio::time::Instant>,
}

/// One group commit: sync these logs' entries (if `sync_data`), then any
/// changed term or vote; with `flush_commit`, also save commit indexes.
struct PersistJob {
    id: u64,
    sync_data: bool,
    logs: Vec<(u64, RaftLog)>,
    flush_commit: Vec<RaftLog>,
}

/// A job done: the groups whose log failed (fail-stop for them), with the
/// log that failed.
struct PersistDone {
    id: u64,
    failed: Vec<(u64, RaftLog, String)>,
}

/// A Ready handed to raft-rs with `advance_append_async`, waiting for job
/// `job`: once that is durable, raft-rs hears `on_persist_ready(number)`
/// and `messages` (votes, append responses) may leave.
struct Unpersisted {
    number: u64,
    job: u64,
    messages: Vec<Message>,
}

/// What woke the driver loop.
enum Wake {
    /// A tick, due at this instant.
    Tick(tokio::time::Instant),
    Persisted(PersistDone),
    /// An input, or None when every sender is gone.
    Input(Option<Input>),
    /// Nothing new, but groups were left with a Ready.
    Ready,
}

/// Starts the persister: on a multi-threaded runtime a thread of its own
/// (an fsync blocks it, and a runtime worker handing its tasks off for every
/// job would cost a thread switch each time); on a current-thread runtime
/// (turmoil, where every host runs on one thread and a seed decides the
/// order) a task, whose syncs take no simulated time.
fn start_persister(
    jobs: mpsc::Receiver<PersistJob>,
    done: mpsc::Sender<PersistDone>,
    simulated_sync: Duration,
) {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread {
        let spawned = std::thread::Builder::new()
            .name("weir-persist".into())
            .spawn(move || persist_on_thread(jobs, done));
        if let Err(e) = spawned {
            panic!("cannot start the persister thread: {e}");
        }
    } else {
        tokio::spawn(persister(jobs, done, simulated_sync));
    }
}

fn persist_on_thread(mut jobs: mpsc::Receiver<PersistJob>, done: mpsc::Sender<PersistDone>) {
    while let Some(job) = jobs.blocking_recv() {
        if done.blocking_send(persist(job)).is_err() {
            return;
        }
    }
}

/// The persister task: runs the driver's jobs in order, one at a time,
/// each answered `simulated_sync` after it ran (see
/// [`DriverConfig::simulated_sync_ms`]).
async fn persister(
    mut jobs: mpsc::Receiver<PersistJob>,
    done: mpsc::Sender<PersistDone>,
    simulated_sync: Duration,
) {
    while let Some(job) = jobs.recv().await {
        let result = persist(job);
        if !simulated_sync.is_zero() {
            tokio::time::sleep(simulated_sync).await;
        }
        if done.send(result).await.is_err() {
            return;
        }
    }
}

/// One group commit.
fn persist(job: PersistJob) -> PersistDone {
    let mut failed = Vec::new();
    for (id, log) in &job.logs {
        if let Err(e) = log.sync_with(job.sync_data) {
            failed.push((*id, log.clone(), e.to_string()));
        }
    }
    // Only logs whose commit moved write anything; a failure here surfaces
    // at the log's next sync.
    for log in &job.flush_commit {
        let _ = log.flush_commit();
    }
    PersistDone { id: job.id, failed }
}

/// When the next group commit may start, if it must wait: only while the
/// broker is busy (appended `bytes` since the last one started, at
/// `busy_bytes_per_sec` or more) and less than `gap` has passed since.
fn hold_group_commit(
    last_start: Option<tokio::time::Instant>,
    now: tokio::time::Instant,
    bytes: u64,
    gap: Duration,
    busy_bytes_per_sec: u64,
) -> Option<tokio::time::Instant> {
    let last_start = last_start?;
    let at = last_start + gap;
    if now >= at {
        return None;
    }
    let elapsed_us = now.saturating_duration_since(last_start).as_micros();
    let busy =
        bytes > 0 && u128::from(bytes) * 1_000_000 >= u128::from(busy_bytes_per_sec) * elapsed_us;
    busy.then_some(at)
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// Ticks between checks that leadership sits with the preferred replica.
/// Prime on purpose: a leader's check quorum clears every follower's
/// `recent_active` every `election_tick_min` ticks (10 by default), and the
/// flags come back only with the next responses. With a period that is a
/// multiple of that (it was 50), a leader elected on the wrong tick saw the
/// preferred replica inactive at every check and never handed back.
const PREFERRED_LEADER_CHECK_TICKS: u64 = 53;
/// Ticks between lazy persists of the commit index.
const COMMIT_FLUSH_TICKS: u64 = 20;

impl Driver {
    /// A driver and the handles to feed it and watch it. `queue_len` bounds
    /// the input queue: senders wait when it is full.
    pub fn new(
        config: DriverConfig,
        outbound: Box<dyn Outbound>,
        clock: ClockRef,
        logger: Logger,
        queue_len: usize,
    ) -> (Driver, mpsc::Sender<Input>, StatusBoard) {
        let (tx, rx) = mpsc::channel(queue_len);
        let (changed, watch_rx) = watch::channel(0);
        let board = Arc::new(Mutex::new(BTreeMap::new()));
        let timings = Timings::new();
        let peer_drops = PeerDrops::default();
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        // One job in flight and one more queued at most: the driver sends
        // the next only after the last is done.
        let (jobs, jobs_rx) = mpsc::channel(2);
        let (done_tx, done) = mpsc::channel(2);
        let persist = Persist {
            jobs,
            done,
            task_ends: Some((jobs_rx, done_tx)),
            in_flight: None,
            next_job: 1,
            next_logs: Default::default(),
            next_waited: false,
            flush_commit: false,
            last_start: None,
            bytes_since_start: 0,
            held_until: None,
        };
        let driver = Driver {
            config,
            groups: BTreeMap::new(),
            inputs: rx,
            outbound,
            liveness: Box::new(NoLiveness),
            outbox: BTreeMap::new(),
            board: board.clone(),
            changed,
            rng,
            clock,
            logger,
            ticks: 0,
            touched: Default::default(),
            unsynced: Default::default(),
            last_fsync: tokio::time::Instant::now(),
            persist,
            timings: timings.clone(),
            peer_drops: peer_drops.clone(),
        };
        let status = StatusBoard {
            groups: board,
            changed: watch_rx,
            timings,
            peer_drops,
        };
        (driver, tx, status)
    }

    /// Lets idle groups stop ticking, trusting `liveness` to say when they
    /// must wake. Without it every group ticks.
    pub fn with_liveness(mut self, liveness: Box<dyn Liveness>) -> Self {
        self.liveness = liveness;
        self
    }

    /// Runs until shut down or until every input sender is gone.
    pub async fn run(mut self) {
        let mut ticker = tokio::time::interval(Duration::from_millis(self.config.tick_ms));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        if let Some((jobs, done)) = self.persist.task_ends.take() {
            let simulated_sync = Duration::from_millis(self.config.simulated_sync_ms);
            start_persister(jobs, done, simulated_sync);
        }
        loop {
            // Ticks first: a flood of inputs must not starve elections and
            // heartbeats. Then finished syncs, which free acks and
            // responses. Groups left with a Ready get another round as soon
            // as nothing else is waiting.
            let more = !self.touched.is_empty();
            let held_until = self.persist.held_until;
            let wake = tokio::select! {
                biased;
                due = ticker.tick() => Wake::Tick(due),
                done = self.persist.done.recv() => match done {
                    Some(done) => Wake::Persisted(done),
                    // Its jobs would never finish: stop the driver, so the
                    // broker's supervision stops the broker (see broker.rs).
                    None => panic!("the persister ended (its panic, if any, is logged above)"),
                },
                _ = sleep_until(held_until), if held_until.is_some() => Wake::Ready,
                input = self.inputs.recv() => Wake::Input(input),
                _ = std::future::ready(()), if more => Wake::Ready,
            };
            let woke = tokio::time::Instant::now();
            let stop = match wake {
                Wake::Tick(due) => {
                    self.timings.tick_late(woke.duration_since(due));
                    self.tick();
                    None
                }
                Wake::Persisted(done) => {
                    self.on_persisted(done);
                    None
                }
                Wake::Input(None) => Some(None),
                Wake::Input(Some(input)) => self.take_inputs(input),
                Wake::Ready => None,
            };
            self.round();
            self.timings.round(woke.elapsed());
            if let Some(done) = stop {
                self.finish_persisting().await;
                self.shutdown();
                if let Some(done) = done {
                    let _ = done.send(());
                }
                return;
            }
        }
    }

    /// Handles `first` and whatever else is queued, up to the round limit.
    /// Returns Some when the driver must stop.
    fn take_inputs(&mut self, first: Input) -> Option<Option<oneshot::Sender<()>>> {
        let mut next = Some(first);
        for _ in 0..self.config.inputs_per_round_max {
            match next.take() {
                Some(Input::Shutdown { done }) => return Some(Some(done)),
                Some(input) => self.handle(input),
                None => break,
            }
            next = self.inputs.try_recv().ok();
        }
        None
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Propose(p) => self.propose(p),
            Input::Raft { from, messages } => self.step(from, messages),
            Input::AddGroup(spec) => self.add_group(*spec),
            Input::RemoveGroup { id, done } => {
                self.remove_group(id);
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            Input::TransferLeader { group, to, reply } => {
                let _ = reply.send(self.transfer_leader(group, to));
            }
            Input::Shutdown { .. } => unreachable!("handled by take_inputs"),
        }
    }

    fn add_group(&mut self, spec: GroupSpec) {
        if self.groups.contains_key(&spec.id) {
            return;
        }
        if spec.apply.is_none() {
            // Nothing reads a committed entry's data but a state machine.
            spec.log.omit_data_of_committed();
        }
        let config = self.config.raft_config(spec.applied);
        let logger = self.logger.new(slog::o!("group" => spec.id));
        let mut node = match RawNode::new(&config, spec.log.clone(), &logger) {
            Ok(node) => node,
            Err(e) => {
                slog::error!(self.logger, "cannot start Raft group"; "group" => spec.id, "error" => %e);
                return;
            }
        };
        let brand_new = node.raft.term == 0 && node.raft.raft_log.last_index() == 0;
        let seen = (node.raft.term, node.raft.state, node.raft.leader_id);
        let jitter = self.draw_timeout();
        node.raft.set_randomized_election_timeout(jitter);
        if brand_new && spec.preferred_leader == self.config.node_id {
            // Skip the first election timeout: the preferred leader of a new
            // group asks for votes at once.
            let _ = node.campaign();
        }
        let group = Group {
            node,
            log: spec.log,
            apply: spec.apply,
            preferred_leader: spec.preferred_leader,
            seen,
            waiting_commit: BTreeMap::new(),
            waiting_persist: VecDeque::new(),
            unpersisted: VecDeque::new(),
            answers: Vec::new(),
            failed: None,
            status: GroupStatus::default(),
            settled_ticks: 0,
            quiescent: false,
            hw_at: None,
            damage_reported: false,
            step_down_tried: None,
        };
        self.groups.insert(spec.id, group);
        self.observe(spec.id);
    }

    fn remove_group(&mut self, id: u64) {
        self.touched.remove(&id);
        if let Some(mut g) = self.groups.remove(&id) {
            for (reply, result) in g.answers.drain(..) {
                let _ = reply.send(result);
            }
            fail_waiters(&mut g, &ProposeError::UnknownGroup);
        }
        lock(&self.board).remove(&id);
    }

    fn draw_timeout(&mut self) -> usize {
        self.rng
            .gen_range(self.config.election_tick_min..self.config.election_tick_max)
    }

    fn propose(&mut self, p: Proposal) {
        self.touched.insert(p.group);
        let Some(g) = self.groups.get_mut(&p.group) else {
            reply(p.reply, Err(ProposeError::UnknownGroup));
            return;
        };
        if let Some(e) = &g.failed {
            reply(p.reply, Err(ProposeError::Storage(e.clone())));
            return;
        }
        if g.node.raft.state != StateRole::Leader {
            let leader = g.node.raft.leader_id;
            reply(p.reply, Err(ProposeError::NotLeader { leader }));
            return;
        }
        if propose_bytes(&mut g.node, p.batch.into_bytes()).is_err() {
            // Dropped: a leadership transfer is under way.
            reply(p.reply, Err(ProposeError::NotLeader { leader: 0 }));
            return;
        }
        // raft-rs appended the proposal to the leader's log synchronously.
        let index = g.node.raft.raft_log.last_index();
        let term = g.node.raft.term;
        if let Some(reply) = p.reply {
            let waiter = Waiter { term, reply };
            match p.acks {
                // Injected bug: answer acks=all before the group commits.
                Acks::All if crate::bugs::on(crate::bugs::ACK_BEFORE_COMMIT) => {
                    g.waiting_persist.push_back((index, waiter))
                }
                Acks::All => {
                    g.waiting_commit.insert(index, waiter);
                }
                Acks::Leader => g.waiting_persist.push_back((index, waiter)),
                Acks::None => {}
            }
        }
    }

    fn step(&mut self, from: u64, messages: Vec<(u64, Message)>) {
        for (id, msg) in messages {
            let Some(g) = self.groups.get_mut(&id) else {
                // Not hosted (yet): the backend creates it once the topic
                // table says so, and Raft resends.
                continue;
            };
            if g.failed.is_some() {
                continue;
            }
            let invalid = match crate::bugs::on(crate::bugs::TRUST_PEERS) {
                true => None,
                false => peer_input::check(&g.node.raft, from, &msg).err(),
            };
            if let Some(reason) = invalid {
                self.peer_drops.note(reason, &self.logger, &|| {
                    format!(
                        "group {id}, {:?} from {} (connection of broker {from}) to {}, \
                         term {}, index {}, commit {}",
                        msg.get_msg_type(),
                        msg.from,
                        msg.to,
                        msg.term,
                        msg.index,
                        msg.commit
                    )
                });
                continue;
            }
            if msg.get_msg_type() == MessageType::MsgTimeoutNow && g.log.is_damaged() {
                // A leader handing over (the preferred-leader rule, say)
                // must not make a damaged replica leader: it would serve
                // errors for the damaged range. The transfer times out.
                continue;
            }
            if is_vote_request(&msg) {
                // A replica that knows no leader (it restarted, or lost
                // the leader's reports) is campaigning. A quiet leader
                // ignores it (it is in its lease): wake so that its
                // heartbeats tell the replica who leads.
                g.settled_ticks = 0;
            }
            // What the checks do not foresee and raft-rs panics on stops
            // this group only (fail-stop, as for a storage error), never the
            // driver and every other group with it. The node is never
            // stepped or ticked again, so its state after the unwind does
            // not matter.
            let msg_type = msg.get_msg_type();
            let stepped = match crate::bugs::on(crate::bugs::TRUST_PEERS) {
                true => Ok(g.node.step(msg)),
                false => {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| g.node.step(msg)))
                }
            };
            match stepped {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    slog::debug!(self.logger, "step failed"; "group" => id, "error" => %e);
                }
                Err(panic) => {
                    let what = panic_message(&panic);
                    self.peer_drops
                        .note(peer_input::Invalid::StepPanicked, &self.logger, &|| {
                            format!("group {id}, {msg_type:?} from broker {from}: {what}")
                        });
                    self.fail_group(
                        id,
                        format!("raft-rs panicked on a {msg_type:?} from broker {from} ({what})"),
                    );
                    continue;
                }
            }
            self.observe(id);
        }
    }

    fn tick(&mut self) {
        self.ticks += 1;
        let ids: Vec<u64> = self.groups.keys().copied().collect();
        for id in ids {
            let Some(g) = self.groups.get_mut(&id) else {
                continue;
            };
            if g.failed.is_some() {
                continue;
            }
            // Lock-free while the log is clean (`RaftLog::is_damaged`):
            // a fetch's disk read holding one log's lock must not stall the
            // ticks of every group.
            let damage = g.log.damage();
            if damage.is_none() && g.damage_reported {
                g.damage_reported = false;
                self.touched.insert(id);
                slog::info!(self.logger, "partition log repaired; this replica may lead again";
                    "group" => id);
            }
            if let Some(damage) = damage {
                if !g.damage_reported {
                    g.damage_reported = true;
                    slog::error!(self.logger, "damaged batch in the partition log; this replica \
                        steps down and stays a follower until repaired from a healthy replica";
                        "group" => id, "damage" => %damage);
                }
                self.touched.insert(id);
                if g.node.raft.state != StateRole::Leader {
                    // Not ticked: a follower that never times out never
                    // campaigns. Its log still takes appends from the
                    // leader.
                    g.quiescent = false;
                    continue;
                }
                // A leader goes on ticking (heartbeats, and the transfer's
                // timeout) while it hands over.
                step_down_damaged(g, self.config.node_id);
            }
            let after_ticks = self
                .config
                .quiesce_after_ms
                .div_ceil(self.config.tick_ms.max(1));
            let quiet = quiescent(id, g, after_ticks, self.liveness.as_ref());
            let changed = quiet != g.quiescent;
            g.quiescent = quiet;
            if !quiet {
                g.node.tick();
                self.observe(id);
            } else if changed {
                self.touched.insert(id);
            }
        }
        if self.ticks.is_multiple_of(PREFERRED_LEADER_CHECK_TICKS) {
            self.restore_preferred_leaders();
        }
        let always = self.config.fsync == FsyncPolicy::Always;
        if always && self.ticks.is_multiple_of(COMMIT_FLUSH_TICKS) {
            // With fsync other than always, the commit index is saved only
            // with term and vote changes and at shutdown: saving it syncs
            // the log, which those settings exist to avoid.
            self.persist.flush_commit = true;
        }
        // The round after this tick submits the flush, and, with fsync
        // interval, the appends left unsynced once the interval elapsed.
    }

    /// Notices role, term and leader changes: redraws the election timeout
    /// from the seeded RNG and fails writes that can no longer commit here.
    fn observe(&mut self, id: u64) {
        self.touched.insert(id);
        let jitter = self.draw_timeout();
        let Some(g) = self.groups.get_mut(&id) else {
            return;
        };
        let now = (g.node.raft.term, g.node.raft.state, g.node.raft.leader_id);
        if now == g.seen {
            return;
        }
        g.node.raft.set_randomized_election_timeout(jitter);
        if g.seen.1 == StateRole::Leader && now.1 != StateRole::Leader {
            fail_waiters(g, &ProposeError::NotLeader { leader: now.2 });
        }
        slog::debug!(self.logger, "role change"; "group" => id, "term" => now.0,
            "role" => ?now.1, "leader" => now.2);
        g.seen = now;
    }

    /// Leaders hand leadership back to the preferred replica once it has
    /// caught up, so that leaders stay spread as placement intended.
    fn restore_preferred_leaders(&mut self) {
        for (id, g) in self.groups.iter_mut() {
            if g.failed.is_some() {
                continue;
            }
            let raft = &g.node.raft;
            if raft.state != StateRole::Leader || g.preferred_leader == self.config.node_id {
                continue;
            }
            let last = raft.raft_log.last_index();
            let caught_up = raft
                .prs()
                .get(g.preferred_leader)
                .is_some_and(|p| p.matched == last && p.recent_active);
            if caught_up {
                g.node.transfer_leader(g.preferred_leader);
                self.touched.insert(*id);
            }
        }
    }

    /// One Ready round for every group (steps 2 to 5 of the module doc).
    fn round(&mut self) {
        let now_ms = self.clock.now_ms();
        let mut touched = std::mem::take(&mut self.touched);
        let ids: Vec<u64> = touched
            .iter()
            .filter(|id| {
                self.groups
                    .get(id)
                    .is_some_and(|g| g.failed.is_none() && g.node.has_ready())
            })
            .copied()
            .collect();
        let sync_entries = self.config.fsync == FsyncPolicy::Always;
        for id in ids {
            if let Some(rd) = self.persist_ready(id, now_ms) {
                self.hand_off(id, rd, sync_entries);
            }
        }
        self.submit_persist();
        touched.append(&mut self.touched);
        self.check_read_errors(&touched);
        touched.append(&mut self.touched);
        self.publish_status(&touched);
        self.send_answers(&touched);
        self.flush_outbox();
        // A group may be left with another Ready (more committed entries
        // than one Ready carries): look at it again next round.
        self.touched = touched
            .into_iter()
            .filter(|id| {
                self.groups
                    .get(id)
                    .is_some_and(|g| g.failed.is_none() && g.node.has_ready())
            })
            .collect();
    }

    fn send_answers(&mut self, ids: &std::collections::BTreeSet<u64>) {
        for id in ids {
            if let Some(g) = self.groups.get_mut(id) {
                for (reply, result) in g.answers.drain(..) {
                    let _ = reply.send(result);
                }
            }
        }
    }

    /// Step 2: everything before the group commit.
    fn persist_ready(&mut self, id: u64, now_ms: i64) -> Option<raft::Ready> {
        let g = self.groups.get_mut(&id)?;
        // raft-rs panics when its storage fails a read it does not expect to
        // fail (committed entries from a damaged segment). Contain it to
        // this group: it stops here (fail-stop) and the broker goes on. The
        // node is never touched again, so its state after the unwind does
        // not matter.
        let ready = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| g.node.ready()));
        let Ok(mut rd) = ready else {
            let cause = g
                .log
                .take_read_error()
                .map(|e| e.to_string())
                .unwrap_or_else(|| "raft-rs failed while reading the log".into());
            self.fail_group(id, cause);
            return None;
        };
        queue(&mut self.outbox, id, rd.take_messages());
        let result = (|| {
            if !rd.snapshot().is_empty() {
                g.log.apply_snapshot(rd.snapshot().clone())?;
            }
            // Injected bug: a follower stores its own re-encoding of what it
            // replicates, not the leader's bytes.
            if crate::bugs::on(crate::bugs::FOLLOWER_RESTAMPS)
                && g.node.raft.state != StateRole::Leader
            {
                g.log.append(&restamped(rd.entries(), now_ms), now_ms)?;
            } else {
                g.log.append(rd.entries(), now_ms)?;
            }
            if let Some(hs) = rd.hs() {
                g.log.set_hard_state(hs);
            }
            Ok::<(), crate::storage::StorageError>(())
        })();
        if let Err(e) = result {
            self.fail_group(id, e.to_string());
            return None;
        }
        let committed = rd.take_committed_entries();
        self.apply_committed(id, committed);
        Some(rd)
    }

    /// Step 3: hands the Ready's persistence to the persister, or, when
    /// nothing in it needs a sync and nothing before it is still syncing,
    /// finishes it now. `sync_entries`: appended entries must be fsynced
    /// before what depends on them leaves (fsync always).
    fn hand_off(&mut self, id: u64, mut rd: raft::Ready, sync_entries: bool) {
        let Some(g) = self.groups.get_mut(&id) else {
            return;
        };
        let needs_sync = (sync_entries && !rd.entries().is_empty()) || g.log.hard_state_dirty();
        if self.config.group_commit_gap_us > 0 {
            // Only the hold reads it: no pass over the entries without it.
            let appended_bytes: usize = rd.entries().iter().map(|e| e.data.len()).sum();
            self.persist.bytes_since_start += appended_bytes as u64;
        }
        if g.log.has_pending_seals() {
            // A segment rolled in step 2: its sealing sync rides on the
            // next group commit, whatever the fsync policy, and nothing
            // waits for it.
            self.persist.next_logs.insert(id);
        }
        if !needs_sync && g.unpersisted.is_empty() {
            if !rd.entries().is_empty() {
                self.unsynced.insert(id);
            }
            self.finish_ready(id, rd);
            return;
        }
        if needs_sync {
            self.persist.next_logs.insert(id);
        } else if !rd.entries().is_empty() {
            self.unsynced.insert(id);
        }
        self.persist.next_waited = true;
        g.unpersisted.push_back(Unpersisted {
            number: rd.number(),
            job: self.persist.next_job,
            messages: rd.take_persisted_messages(),
        });
        g.node.advance_append_async(rd);
        // The Ready's committed entries were applied in step 2.
        g.node.advance_apply();
    }

    /// Sends the next group commit to the persister, unless one is running
    /// (its completion calls this again) or there is nothing to sync.
    fn submit_persist(&mut self) {
        if self.persist.in_flight.is_some() {
            return;
        }
        let pending = !self.persist.next_logs.is_empty()
            || !self.unsynced.is_empty()
            || self.persist.flush_commit
            || self.persist.next_waited;
        if !pending {
            return;
        }
        self.persist.held_until = if self.config.fsync == FsyncPolicy::Always {
            hold_group_commit(
                self.persist.last_start,
                tokio::time::Instant::now(),
                self.persist.bytes_since_start,
                Duration::from_micros(self.config.group_commit_gap_us),
                self.config.group_commit_busy_bytes_per_sec,
            )
        } else {
            None
        };
        if self.persist.held_until.is_some() {
            return;
        }
        let sync_data = self.fsync_due();
        if sync_data {
            // Everything appended since the last data sync is synced now.
            let mut unsynced = std::mem::take(&mut self.unsynced);
            self.persist.next_logs.append(&mut unsynced);
        }
        if self.persist.next_logs.is_empty()
            && !self.persist.flush_commit
            && !self.persist.next_waited
        {
            return;
        }
        self.persist.next_waited = false;
        let ids = std::mem::take(&mut self.persist.next_logs);
        let logs: Vec<(u64, RaftLog)> = ids
            .iter()
            .filter_map(|id| self.groups.get(id).map(|g| (*id, g.log.clone())))
            .collect();
        let flush_commit = if std::mem::take(&mut self.persist.flush_commit) {
            self.groups.values().map(|g| g.log.clone()).collect()
        } else {
            Vec::new()
        };
        let job = PersistJob {
            id: self.persist.next_job,
            sync_data,
            logs,
            flush_commit,
        };
        // Capacity 2 with at most one job out: never full. Closed only if
        // the persister died, which would be a bug: fail loudly.
        if let Err(e) = self.persist.jobs.try_send(job) {
            panic!("the persister task is gone: {e}");
        }
        let now = tokio::time::Instant::now();
        self.persist.in_flight = Some((self.persist.next_job, now));
        self.persist.last_start = Some(now);
        self.persist.bytes_since_start = 0;
        self.persist.next_job += 1;
    }

    /// Step 4 for the Readies a job made durable: raft-rs hears of it, the
    /// messages that waited for it leave, acks=1 writers are answered.
    fn on_persisted(&mut self, done: PersistDone) {
        let in_flight = self.persist.in_flight.take();
        debug_assert_eq!(in_flight.map(|(id, _)| id), Some(done.id));
        if let Some((_, since)) = in_flight {
            self.timings.group_commit(since.elapsed());
        }
        for (id, log, cause) in done.failed {
            // Only if the group still runs on that log: a group removed
            // during the sync (its files deleted) and added again has a
            // new one.
            if self.groups.get(&id).is_some_and(|g| g.log.same(&log)) {
                self.fail_group(id, cause);
            }
        }
        let ids: Vec<u64> = self
            .groups
            .iter()
            .filter(|(_, g)| g.unpersisted.front().is_some_and(|u| u.job <= done.id))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let Some(g) = self.groups.get_mut(&id) else {
                continue;
            };
            if g.failed.is_some() {
                // Its sync failed: nothing that depends on it may leave.
                continue;
            }
            let mut number = None;
            while g.unpersisted.front().is_some_and(|u| u.job <= done.id) {
                let Some(u) = g.unpersisted.pop_front() else {
                    break;
                };
                number = Some(u.number);
                queue(&mut self.outbox, id, u.messages);
            }
            if let Some(number) = number {
                g.node.on_persist_ready(number);
            }
            answer_persisted(g);
            self.touched.insert(id);
        }
    }

    /// Waits for the job in flight, at shutdown.
    async fn finish_persisting(&mut self) {
        if self.persist.in_flight.is_some() {
            if let Some(done) = self.persist.done.recv().await {
                self.on_persisted(done);
            }
        }
    }

    /// Whether this round syncs entries to disk, by the fsync policy.
    fn fsync_due(&mut self) -> bool {
        if crate::bugs::on(crate::bugs::SKIP_FSYNC) {
            return false;
        }
        match self.config.fsync {
            FsyncPolicy::Always => true,
            FsyncPolicy::Never => false,
            FsyncPolicy::IntervalMs(ms) => {
                let now = tokio::time::Instant::now();
                let due = now.duration_since(self.last_fsync) >= Duration::from_millis(ms);
                if due {
                    self.last_fsync = now;
                }
                due
            }
        }
    }

    /// Step 4 for a Ready with nothing to sync and nothing before it
    /// syncing: everything after the group commit, at once.
    fn finish_ready(&mut self, id: u64, rd: raft::Ready) {
        let Some(g) = self.groups.get_mut(&id) else {
            return;
        };
        let persisted = rd.persisted_messages().to_vec();
        queue(&mut self.outbox, id, persisted);
        let mut light = g.node.advance(rd);
        if let Some(commit) = light.commit_index() {
            g.log.set_commit(commit);
        }
        queue(&mut self.outbox, id, light.take_messages());
        let committed = light.take_committed_entries();
        self.apply_committed(id, committed);
        let Some(g) = self.groups.get_mut(&id) else {
            return;
        };
        g.node.advance_apply();
        answer_persisted(g);
        self.observe(id);
    }

    /// Answers acks=all writers and feeds the state machine.
    fn apply_committed(&mut self, id: u64, entries: Vec<Entry>) {
        let Some(g) = self.groups.get_mut(&id) else {
            return;
        };
        for e in entries {
            // The state machine first, so that whoever is answered next sees
            // the effect of its command.
            if let Some(apply) = g.apply.as_mut() {
                if e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty() {
                    match RecordBatch::parse(e.data.clone(), usize::MAX) {
                        Ok(batch) => apply.apply(e.index, &batch),
                        Err(err) => slog::error!(self.logger, "undecodable committed entry";
                            "group" => id, "index" => e.index, "error" => %err),
                    }
                }
                apply.applied_to(e.index, e.term);
            }
            if let Some(w) = g.waiting_commit.remove(&e.index) {
                let result = if w.term == e.term {
                    base_offset(&g.log, e.index)
                } else {
                    Err(ProposeError::NotLeader {
                        leader: g.node.raft.leader_id,
                    })
                };
                g.answers.push((w.reply, result));
            }
            // Writers waiting on entries this commit overtook can no longer
            // be answered with their own entry: it was replaced.
            while let Some((&index, _)) = g.waiting_commit.first_key_value() {
                if index > e.index {
                    break;
                }
                if let Some(w) = g.waiting_commit.remove(&index) {
                    let _ = w.reply.send(Err(ProposeError::NotLeader { leader: 0 }));
                }
            }
        }
    }

    /// Stops groups whose log failed a read that raft-rs was told was only
    /// temporarily unavailable (damage on disk must not be replicated or
    /// retried forever).
    fn check_read_errors(&mut self, ids: &std::collections::BTreeSet<u64>) {
        let failed: Vec<(u64, String)> = ids
            .iter()
            .filter_map(|id| self.groups.get(id).map(|g| (*id, g)))
            .filter(|(_, g)| g.failed.is_none())
            .filter_map(|(id, g)| g.log.take_read_error().map(|e| (id, e.to_string())))
            .collect();
        for (id, cause) in failed {
            self.fail_group(id, cause);
        }
    }

    fn fail_group(&mut self, id: u64, cause: String) {
        self.touched.insert(id);
        slog::error!(self.logger, "partition log failed; the replica stops here";
            "group" => id, "error" => &cause);
        if let Some(g) = self.groups.get_mut(&id) {
            fail_waiters(g, &ProposeError::Storage(cause.clone()));
            // What waited for a sync may never leave now.
            g.unpersisted.clear();
            g.failed = Some(cause);
        }
    }

    /// Publishes every group's status and bumps the change counter if any
    /// high watermark moved.
    fn publish_status(&mut self, ids: &std::collections::BTreeSet<u64>) {
        let mut moved = false;
        let mut board = lock(&self.board);
        for id in ids {
            let Some(g) = self.groups.get_mut(id) else {
                continue;
            };
            let status = status_of(g);
            if status != g.status {
                moved |= status.high_watermark != g.status.high_watermark
                    || status.leader != g.status.leader;
                board.insert(*id, status.clone());
                g.status = status;
            }
        }
        drop(board);
        if moved {
            self.changed.send_modify(|v| *v += 1);
        }
    }

    fn flush_outbox(&mut self) {
        for (to, messages) in std::mem::take(&mut self.outbox) {
            self.outbound.send(to, messages);
        }
    }

    fn shutdown(&mut self) {
        for g in self.groups.values_mut() {
            fail_waiters(g, &ProposeError::ShuttingDown);
            let _ = g.log.sync();
            let _ = g.log.flush_commit();
        }
    }

    /// Starts handing `group`'s leadership to `to` (raft-rs's leader
    /// transfer: the leader stops taking proposals, brings `to` up to date
    /// and tells it to campaign at once; it gives up after an election
    /// timeout). The caller checks that `to` is a replica.
    fn transfer_leader(&mut self, group: u64, to: u64) -> Result<(), ProposeError> {
        // Its MsgTimeoutNow goes out in this round, quiet group or not.
        self.touched.insert(group);
        let g = self
            .groups
            .get_mut(&group)
            .ok_or(ProposeError::UnknownGroup)?;
        if let Some(e) = &g.failed {
            return Err(ProposeError::Storage(e.clone()));
        }
        let raft = &g.node.raft;
        if raft.state != StateRole::Leader {
            return Err(ProposeError::NotLeader {
                leader: raft.leader_id,
            });
        }
        if to != self.config.node_id {
            g.node.transfer_leader(to);
        }
        Ok(())
    }
}

fn status_of(g: &mut Group) -> GroupStatus {
    let commit = g.node.raft.raft_log.committed;
    let high_watermark = match g.hw_at {
        Some((at, hw)) if at == commit => hw,
        _ => match g.log.high_watermark_offset(commit) {
            Ok(hw) => {
                g.hw_at = Some((commit, hw));
                hw
            }
            Err(_) => g.status.high_watermark,
        },
    };
    let raft = &g.node.raft;
    let is_leader = raft.state == StateRole::Leader;
    let in_sync = if is_leader {
        let last = raft.raft_log.last_index();
        let mut ids: Vec<u64> = raft
            .prs()
            .iter()
            .filter(|(id, p)| **id == raft.id || (p.matched == last && p.recent_active))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    } else {
        Vec::new()
    };
    GroupStatus {
        leader: raft.leader_id,
        term: raft.term,
        is_leader,
        high_watermark,
        commit,
        failed: g.failed.clone(),
        in_sync,
        quiescent: g.quiescent,
        damaged: g.log.damage().map(|d| d.to_string()),
    }
}

/// The candidate after `last` in `sorted` (ids in increasing order),
/// wrapping around; the first without `last`.
fn next_candidate(sorted: &[u64], last: Option<u64>) -> Option<u64> {
    let after = last.and_then(|l| sorted.iter().find(|id| **id > l));
    after.or(sorted.first()).copied()
}

/// Hands a damaged leader's leadership to a voter that is caught up and
/// active: the lowest id first, then, each time a transfer did not happen
/// (that voter is damaged too, say, and dropped it), the next one in turn.
/// With none, it keeps leading (a lone replica: reads of the damaged range
/// fail with a retriable error meanwhile).
fn step_down_damaged(g: &mut Group, self_id: u64) {
    let raft = &g.node.raft;
    if raft.lead_transferee.is_some() {
        return;
    }
    let last = raft.raft_log.last_index();
    let voters = raft.prs().conf().voters().ids();
    let mut healthy: Vec<u64> = raft
        .prs()
        .iter()
        .filter(|(id, p)| {
            **id != self_id && voters.contains(**id) && p.matched == last && p.recent_active
        })
        .map(|(id, _)| *id)
        .collect();
    healthy.sort_unstable();
    let term = raft.term;
    // Still leading in the term of the last try, with no transfer under
    // way: that one timed out.
    let last_try = match g.step_down_tried {
        Some((t, to)) if t == term => Some(to),
        _ => None,
    };
    if let Some(to) = next_candidate(&healthy, last_try) {
        g.step_down_tried = Some((term, to));
        g.node.transfer_leader(to);
    }
}

/// Whether group `g` may skip this tick (see the module doc), updating the
/// leader's count of settled ticks.
fn quiescent(id: u64, g: &mut Group, quiesce_after_ticks: u64, liveness: &dyn Liveness) -> bool {
    let raft = &g.node.raft;
    match raft.state {
        StateRole::Leader => {
            if leader_settled(g, liveness) {
                g.settled_ticks += 1;
            } else {
                g.settled_ticks = 0;
            }
            g.settled_ticks > quiesce_after_ticks
        }
        StateRole::Follower => {
            raft.leader_id != 0
                && raft.leader_id != raft.id
                && liveness.confirms_leader(id, raft.leader_id, raft.term)
        }
        StateRole::Candidate | StateRole::PreCandidate => false,
    }
}

/// A leader with nothing to do: no writer waiting, no transfer under way,
/// its whole log persisted and committed, every follower holding all of it
/// on a broker heard from recently (a silent one may need catching up, or
/// leadership may need to move: keep ticking).
fn leader_settled(g: &Group, liveness: &dyn Liveness) -> bool {
    let raft = &g.node.raft;
    let last = raft.raft_log.last_index();
    g.waiting_commit.is_empty()
        && g.waiting_persist.is_empty()
        && raft.lead_transferee.is_none()
        && raft.raft_log.committed == last
        && raft.raft_log.persisted == last
        && raft
            .prs()
            .iter()
            .filter(|(id, _)| **id != raft.id)
            .all(|(id, p)| p.matched == last && liveness.broker_live(*id))
}

/// `RawNode::propose` without its `Vec<u8>`: the same `MsgPropose`, stepped
/// into the node the same way, but carrying the batch's own bytes (raft-rs
/// keeps entry data as `Bytes`), so a produce request's batch is not copied
/// on its way into the log.
fn propose_bytes(node: &mut RawNode<RaftLog>, data: bytes::Bytes) -> raft::Result<()> {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgPropose);
    m.from = node.raft.id;
    let entry = Entry {
        data,
        ..Entry::default()
    };
    m.set_entries(vec![entry].into());
    node.raft.step(m)
}

/// The message of a caught panic, for the log.
fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".into()
    }
}

fn is_vote_request(m: &Message) -> bool {
    matches!(
        m.get_msg_type(),
        MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
    )
}

/// The base offset of entry `index`: the offset after the entry before it.
fn base_offset(log: &RaftLog, index: u64) -> ProposeResult {
    log.high_watermark_offset(index - 1)
        .map_err(|e| ProposeError::Storage(e.to_string()))
}

/// Answers acks=1 writers whose entries are now durable on this leader.
fn answer_persisted(g: &mut Group) {
    let persisted = g.node.raft.raft_log.persisted;
    while let Some((index, _)) = g.waiting_persist.front() {
        if *index > persisted {
            break;
        }
        let Some((index, w)) = g.waiting_persist.pop_front() else {
            break;
        };
        let same_entry = g.node.raft.raft_log.term(index).ok() == Some(w.term);
        let result = if same_entry {
            base_offset(&g.log, index)
        } else {
            Err(ProposeError::NotLeader { leader: 0 })
        };
        g.answers.push((w.reply, result));
    }
}

fn fail_waiters(g: &mut Group, e: &ProposeError) {
    for (_, w) in std::mem::take(&mut g.waiting_commit) {
        let _ = w.reply.send(Err(e.clone()));
    }
    for (_, w) in g.waiting_persist.drain(..) {
        let _ = w.reply.send(Err(e.clone()));
    }
}

/// For the injected bug `FOLLOWER_RESTAMPS`: every data entry rebuilt with
/// `now_ms` as its records' timestamp (as a broker applying LogAppendTime
/// would), keys, values and headers kept. Entries that do not parse as a
/// data batch are kept as they are.
fn restamped(entries: &[Entry], now_ms: i64) -> Vec<Entry> {
    let rebuild = |e: &Entry| -> Option<Entry> {
        if e.get_entry_type() != EntryType::EntryNormal || e.data.is_empty() {
            return None;
        }
        let batch = RecordBatch::parse(e.data.clone(), usize::MAX).ok()?;
        if batch.is_control() {
            return None;
        }
        let mut b = crate::types::BatchBuilder::new();
        for mut r in batch.records().ok()? {
            r.event.timestamp_ms = now_ms;
            b.push(&r.event);
        }
        let mut e = e.clone();
        e.data = b.build().into_bytes();
        Some(e)
    };
    entries
        .iter()
        .map(|e| rebuild(e).unwrap_or_else(|| e.clone()))
        .collect()
}

fn reply(to: Option<oneshot::Sender<ProposeResult>>, result: ProposeResult) {
    if let Some(to) = to {
        let _ = to.send(result);
    }
}

fn queue(outbox: &mut BTreeMap<u64, Vec<(u64, Message)>>, group: u64, messages: Vec<Message>) {
    for m in messages {
        outbox.entry(m.to).or_default().push((group, m));
    }
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
