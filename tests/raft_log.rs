//! Three raft-rs nodes on `RaftLog`s over real files, in one process, with
//! messages routed by hand: the partition log works as the Raft log.
//!
//! - 50 proposed batches commit everywhere, and every replica's log is
//!   byte-identical with dense offsets;
//! - an isolated replica restarted from its directory catches up;
//! - a replica that lags behind the leader's retention gets a snapshot,
//!   restarts its log where the leader's starts and catches up.

use bytes::Bytes;
use raft::prelude::*;
use raft::{GetEntriesContext, StateRole, Storage};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use weir::io::{DiskRef, RealDisk};
use weir::replication::raft_log::RaftLog;
use weir::storage::LogConfig;
use weir::types::{BatchBuilder, Event, RecordBatch};

const VOTERS: [u64; 3] = [1, 2, 3];
/// A generous bound on delivery rounds for anything the tests wait for.
const ROUNDS_MAX: usize = 2_000;

fn raft_config(id: u64, applied: u64) -> Config {
    Config {
        id,
        election_tick: 10,
        heartbeat_tick: 3,
        // raft-rs draws the election timeout from [min, max): always 10.
        min_election_tick: 10,
        max_election_tick: 11,
        max_size_per_msg: 4096,
        max_inflight_msgs: 16,
        // An isolated node keeps its term, so reconnecting does not depose
        // the leader.
        pre_vote: true,
        applied,
        ..Config::default()
    }
}

struct Node {
    log: RaftLog,
    raw: RawNode<RaftLog>,
    /// Index of the last committed entry handed to the application.
    applied: u64,
    snapshots_installed: usize,
}

impl Node {
    fn start(id: u64, dir: &Path, config: &LogConfig, now_ms: i64) -> Node {
        let disk: DiskRef = Arc::new(RealDisk);
        let log = RaftLog::open(disk, dir, config.clone(), now_ms, &VOTERS).unwrap();
        // Entries up to the saved commit were applied before the restart.
        let applied = log.hard_state().commit;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&raft_config(id, applied), log.clone(), &logger).unwrap();
        Node {
            log,
            raw,
            applied,
            snapshots_installed: 0,
        }
    }

    /// One Ready round, in raft-rs's order. Returns the messages to send.
    fn handle_ready(&mut self, now_ms: i64) -> Vec<Message> {
        let mut out = Vec::new();
        if !self.raw.has_ready() {
            return out;
        }
        let mut rd = self.raw.ready();
        // Leaders send before persisting (Raft allows the leader's own
        // append to run in parallel with the followers').
        out.extend(rd.take_messages());
        if !rd.snapshot().is_empty() {
            self.log.apply_snapshot(rd.snapshot().clone()).unwrap();
            self.applied = rd.snapshot().get_metadata().index;
            self.snapshots_installed += 1;
        }
        self.apply(rd.take_committed_entries());
        self.log.append(rd.entries(), now_ms).unwrap();
        if let Some(hs) = rd.hs() {
            self.log.set_hard_state(hs);
        }
        self.log.sync().unwrap();
        out.extend(rd.take_persisted_messages());
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            self.log.set_commit(commit);
        }
        out.extend(light.take_messages());
        self.apply(light.take_committed_entries());
        self.raw.advance_apply();
        assert!(self.log.take_read_error().is_none());
        out
    }

    /// Applying is checking: committed entries arrive once, in order, and
    /// only data and no-ops are expected.
    fn apply(&mut self, entries: Vec<Entry>) {
        for e in entries {
            assert_eq!(e.index, self.applied + 1, "committed entries in order");
            assert_eq!(e.get_entry_type(), EntryType::EntryNormal);
            self.applied = e.index;
        }
    }

    fn last_index(&self) -> u64 {
        self.log.last_index().unwrap()
    }
}

struct Cluster {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    config: LogConfig,
    nodes: BTreeMap<u64, Node>,
    isolated: BTreeSet<u64>,
    queue: VecDeque<Message>,
    now_ms: i64,
    proposed: u64,
}

impl Cluster {
    fn new(config: LogConfig) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let now_ms = 1_700_000_000_000;
        let nodes = VOTERS
            .iter()
            .map(|&id| {
                (
                    id,
                    Node::start(id, &root.join(format!("n{id}")), &config, now_ms),
                )
            })
            .collect();
        Cluster {
            _tmp: tmp,
            root,
            config,
            nodes,
            isolated: BTreeSet::new(),
            queue: VecDeque::new(),
            now_ms,
            proposed: 0,
        }
    }

    fn node(&self, id: u64) -> &Node {
        &self.nodes[&id]
    }

    /// Processes readies and delivers messages until nothing moves. An
    /// isolated node's messages are dropped both ways.
    fn settle(&mut self) {
        for _ in 0..ROUNDS_MAX {
            let now_ms = self.now_ms;
            for node in self.nodes.values_mut() {
                self.queue.extend(node.handle_ready(now_ms));
            }
            if self.queue.is_empty() {
                return;
            }
            while let Some(m) = self.queue.pop_front() {
                if self.isolated.contains(&m.from) || self.isolated.contains(&m.to) {
                    continue;
                }
                if let Some(node) = self.nodes.get_mut(&m.to) {
                    node.raw.step(m).unwrap();
                }
            }
        }
        panic!("messages still flowing after {ROUNDS_MAX} rounds");
    }

    fn tick(&mut self) {
        self.now_ms += 100;
        for node in self.nodes.values_mut() {
            node.raw.tick();
        }
        self.settle();
    }

    /// Ticks until `done` holds.
    fn run_until(&mut self, what: &str, done: impl Fn(&Cluster) -> bool) {
        for _ in 0..ROUNDS_MAX {
            self.settle();
            if done(self) {
                return;
            }
            self.tick();
        }
        panic!("{what}: not reached after {ROUNDS_MAX} ticks");
    }

    fn elect(&mut self, id: u64) {
        self.nodes.get_mut(&id).unwrap().raw.campaign().unwrap();
        self.run_until("election", |c| {
            c.node(id).raw.raft.state == StateRole::Leader
        });
    }

    fn leader(&self) -> u64 {
        let leaders: Vec<u64> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.raw.raft.state == StateRole::Leader)
            .map(|(&id, _)| id)
            .collect();
        assert_eq!(leaders.len(), 1, "one leader");
        leaders[0]
    }

    fn propose(&mut self, n: u64) {
        let leader = self.leader();
        for _ in 0..n {
            self.proposed += 1;
            let batch = events_batch(self.proposed, self.now_ms);
            let raw = &mut self.nodes.get_mut(&leader).unwrap().raw;
            raw.propose(vec![], batch.as_bytes().to_vec()).unwrap();
            self.settle();
        }
    }

    /// Runs until the nodes in `ids` hold, commit and apply everything the
    /// leader has.
    fn commit_on(&mut self, ids: &[u64]) {
        let ids = ids.to_vec();
        self.run_until("commit", move |c| {
            let last = c.node(c.leader()).last_index();
            ids.iter().all(|id| {
                let n = c.node(*id);
                n.last_index() == last && n.raw.raft.raft_log.committed == last && n.applied == last
            })
        });
    }

    fn restart(&mut self, id: u64) {
        drop(self.nodes.remove(&id));
        let dir = self.root.join(format!("n{id}"));
        let node = Node::start(id, &dir, &self.config, self.now_ms);
        self.nodes.insert(id, node);
    }
}

fn events_batch(i: u64, now_ms: i64) -> RecordBatch {
    let mut b = BatchBuilder::new();
    for r in 0..3 {
        b.push(&Event {
            key: Some(Bytes::from(format!("key-{}", i % 7))),
            value: Some(Bytes::from(vec![(i + r) as u8; 40])),
            timestamp_ms: now_ms + r as i64,
            headers: vec![],
        });
    }
    b.build()
}

/// Every batch of the node's log, as stored, with its index.
fn stored(node: &Node) -> Vec<(u64, Bytes)> {
    node.log.with_log(|l| {
        l.entries(l.first_index(), l.last_index() + 1, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(i, b)| (i, b.into_bytes()))
            .collect()
    })
}

/// Offsets are dense: each batch starts where the one before ended, from
/// the log start to the log end, and the high watermark of the last
/// (committed) entry is the end.
fn check_dense(node: &Node) {
    let (start, end) = node
        .log
        .with_log(|l| (l.log_start_offset(), l.next_offset()));
    let mut next = start;
    for (_, bytes) in stored(node) {
        let batch = RecordBatch::parse(bytes, usize::MAX).unwrap();
        assert_eq!(batch.base_offset(), next, "offsets are dense");
        next = batch.next_offset();
    }
    assert_eq!(next, end);
    let commit = node.raw.raft.raft_log.committed;
    assert_eq!(node.log.high_watermark_offset(commit).unwrap(), end);
}

/// The nodes' logs hold the same bytes over the indexes they share, and
/// raft::Storage serves the same entries.
fn check_identical(c: &Cluster, ids: &[u64]) {
    let reference = stored(c.node(ids[0]));
    for id in &ids[1..] {
        let other = stored(c.node(*id));
        let first = reference[0].0.max(other[0].0);
        let a: Vec<_> = reference.iter().filter(|(i, _)| *i >= first).collect();
        let b: Vec<_> = other.iter().filter(|(i, _)| *i >= first).collect();
        assert_eq!(a, b, "logs of nodes {} and {id} differ", ids[0]);
        let entries = |id: u64| {
            let log = &c.node(id).log;
            let last = log.last_index().unwrap();
            log.entries(first, last + 1, None, GetEntriesContext::empty(false))
                .unwrap()
        };
        assert_eq!(entries(ids[0]), entries(*id));
    }
    for id in ids {
        check_dense(c.node(*id));
    }
}

#[test]
fn three_nodes_replicate_byte_identical_logs_and_a_restarted_node_catches_up() {
    let mut c = Cluster::new(LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 512,
        max_batch_bytes: 4096,
        ..LogConfig::default()
    });
    c.elect(1);
    c.propose(50);
    c.commit_on(&VOTERS);
    // The leader's no-op and 50 data batches of 3 records each.
    assert_eq!(c.node(1).last_index(), 51);
    assert_eq!(c.node(1).log.with_log(|l| l.next_offset()), 1 + 50 * 3);
    assert!(c.node(1).log.with_log(|l| l.segment_count()) > 1);
    check_identical(&c, &VOTERS);
    // Control batch (no-op) first, then the proposed events as sent.
    let first = RecordBatch::parse(stored(c.node(2))[0].1.clone(), usize::MAX).unwrap();
    assert!(first.is_control() && first.leader_epoch() as u64 == c.node(1).raw.raft.term);
    let second = RecordBatch::parse(stored(c.node(3))[1].1.clone(), usize::MAX).unwrap();
    let events: Vec<_> = second
        .records()
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .collect();
    let sent: Vec<_> = events_batch(1, 0).records().unwrap();
    assert_eq!(events.len(), sent.len());
    assert_eq!(events[0].key, sent[0].event.key);
    assert_eq!(events[0].value, sent[0].event.value);

    // The driver saves the commit index now and then.
    for id in VOTERS {
        c.node(id).log.flush_commit().unwrap();
    }

    c.isolated.insert(3);
    c.propose(20);
    c.commit_on(&[1, 2]);
    assert_eq!(c.node(1).last_index(), 71);
    assert_eq!(c.node(3).last_index(), 51);

    // Node 3 stops (no flush) and comes back from its directory.
    c.restart(3);
    let hs = c.node(3).log.hard_state();
    assert_eq!(hs.commit, 51, "the flushed commit survives");
    assert_eq!(hs.term, c.node(1).raw.raft.term);
    assert_eq!(c.node(3).log.conf_state().voters, VOTERS.to_vec());
    c.isolated.clear();
    c.commit_on(&VOTERS);
    check_identical(&c, &VOTERS);
    assert_eq!(
        c.leader(),
        1,
        "the returning node did not disrupt the leader"
    );
    assert_eq!(c.node(3).snapshots_installed, 0, "caught up by entries");
}

#[test]
fn a_follower_behind_the_leaders_retention_installs_a_snapshot() {
    let config = LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 256,
        max_batch_bytes: 1024,
        ..LogConfig::default()
    };
    let mut c = Cluster::new(config.clone());
    c.elect(1);
    c.propose(10);
    c.commit_on(&VOTERS);
    c.isolated.insert(3);
    c.propose(40);
    c.commit_on(&[1, 2]);

    // Retention on the leader passes node 3's last entry.
    c.nodes[&1]
        .log
        .with_log_mut(|l| {
            l.set_config(LogConfig {
                retention_bytes: 0,
                ..config.clone()
            })
        })
        .unwrap();
    let removed = c.node(1).log.apply_retention(c.now_ms).unwrap();
    assert!(removed.segments_deleted > 0);
    let leader_first = c.node(1).log.first_index().unwrap();
    assert!(
        leader_first > c.node(3).last_index() + 1,
        "retention passed the follower: first index {leader_first}, follower at {}",
        c.node(3).last_index()
    );
    // Retention stays below the high watermark.
    let hw = c.node(1).log.high_watermark_offset(51).unwrap();
    assert!(c.node(1).log.with_log(|l| l.log_start_offset()) <= hw);

    c.isolated.clear();
    c.commit_on(&VOTERS);
    assert_eq!(c.node(3).snapshots_installed, 1);
    assert_eq!(c.node(2).snapshots_installed, 0);
    let start = |c: &Cluster, id: u64| {
        c.node(id)
            .log
            .with_log(|l| (l.log_start_offset(), l.first_index()))
    };
    assert_eq!(
        start(&c, 3),
        start(&c, 1),
        "the follower starts where the leader does"
    );
    assert_eq!(c.node(3).log.term(leader_first - 1).unwrap(), {
        c.node(1).log.term(leader_first - 1).unwrap()
    });
    check_identical(&c, &[1, 3, 2]);

    // The installed snapshot survives a restart, configuration included.
    c.restart(3);
    assert_eq!(start(&c, 3), start(&c, 1));
    assert_eq!(c.node(3).log.conf_state().voters, VOTERS.to_vec());
    c.propose(5);
    c.commit_on(&VOTERS);
    check_identical(&c, &[1, 3, 2]);
}
