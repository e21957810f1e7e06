//! The driver's persistence pipeline, on a one-replica group over a disk
//! whose background syncs (the persister's) and directory syncs (hard
//! state saves) can be held, and background syncs made to fail.

use super::*;
use crate::io::{Disk, DiskFile, DiskRef, FileSync, OpenMode, RealDisk, SyncHandle, TokioClock};
use crate::storage::LogConfig;
use crate::types::{BatchBuilder, Event};
use bytes::Bytes;
use std::io;
use std::path::Path;
use std::sync::Condvar;

/// Rounds of 10 ms the tests wait at most for something that must happen.
const WAITS_MAX: usize = 1_000;

/// Holds or fails the syncs made through sync handles. Syncs made through
/// the file itself (segment creation, sealing) pass.
#[derive(Debug, Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    closed: bool,
    fail: bool,
    /// Syncs waiting at the closed gate.
    held: usize,
}

impl Gate {
    fn set(&self, closed: bool, fail: bool) {
        let mut st = self.state.lock().unwrap();
        st.closed = closed;
        st.fail = fail;
        self.changed.notify_all();
    }

    fn held(&self) -> usize {
        self.state.lock().unwrap().held
    }

    fn pass(&self) -> io::Result<()> {
        let mut st = self.state.lock().unwrap();
        st.held += 1;
        while st.closed {
            st = self.changed.wait(st).unwrap();
        }
        st.held -= 1;
        if st.fail {
            return Err(io::Error::other("injected: fsync failed"));
        }
        Ok(())
    }
}

/// Background syncs pass `data`; directory syncs pass `dirs`.
#[derive(Debug)]
struct GatedDisk {
    data: Arc<Gate>,
    dirs: Arc<Gate>,
}

#[derive(Debug)]
struct GatedFile {
    inner: Box<dyn DiskFile>,
    gate: Arc<Gate>,
}

#[derive(Debug)]
struct GatedSync {
    inner: SyncHandle,
    gate: Arc<Gate>,
}

impl Disk for GatedDisk {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn DiskFile>> {
        let inner = RealDisk.open(path, mode)?;
        Ok(Box::new(GatedFile {
            inner,
            gate: self.data.clone(),
        }))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        RealDisk.create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        RealDisk.list_dir(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        RealDisk.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        RealDisk.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        RealDisk.remove_dir_all(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.dirs.pass()?;
        RealDisk.sync_dir(path)
    }
    fn exists(&self, path: &Path) -> bool {
        RealDisk.exists(path)
    }
}

impl DiskFile for GatedFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.inner.read_at(buf, pos)
    }
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.inner.append(data)
    }
    fn sync(&self) -> io::Result<()> {
        self.inner.sync()
    }
    fn sync_handle(&self) -> io::Result<SyncHandle> {
        Ok(Arc::new(GatedSync {
            inner: self.inner.sync_handle()?,
            gate: self.gate.clone(),
        }))
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.inner.truncate(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
}

impl FileSync for GatedSync {
    fn sync(&self) -> io::Result<()> {
        self.gate.pass()?;
        self.inner.sync()
    }
}

/// Keeps what the driver sends.
#[derive(Clone, Default)]
struct Sent(Arc<Mutex<Vec<Message>>>);

impl Outbound for Sent {
    fn send(&mut self, _to: u64, messages: Vec<(u64, Message)>) {
        let mut sent = self.0.lock().unwrap();
        sent.extend(messages.into_iter().map(|(_, m)| m));
    }
}

impl Sent {
    fn has(&self, kind: MessageType) -> bool {
        self.0
            .lock()
            .unwrap()
            .iter()
            .any(|m| m.get_msg_type() == kind)
    }
}

/// A driver hosting group 1 (one replica, this broker) on a gated disk,
/// once it leads.
struct Fixture {
    _dir: tempfile::TempDir,
    gate: Arc<Gate>,
    dirs: Arc<Gate>,
    log: RaftLog,
    inputs: mpsc::Sender<Input>,
    board: StatusBoard,
    sent: Sent,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // A failed assertion must not leave the persister held at the gate:
        // the runtime would wait for it forever instead of reporting.
        self.gate.set(false, false);
        self.dirs.set(false, false);
    }
}

async fn leading_group() -> Fixture {
    let f = new_group(FsyncPolicy::Always, false, &[1]).await;
    let status = f.board.clone();
    wait_for("group 1 to elect itself", || {
        status.get(1).is_some_and(|s| s.is_leader)
    })
    .await;
    let board = f.board.clone();
    wait_for("group 1 to commit its first entry", || {
        board.get(1).is_some_and(|s| s.commit >= 1)
    })
    .await;
    f
}

/// A driver on broker 1 hosting group 1 (replicas `voters`, preferred
/// leader the first) with `fsync`; with `hold_dirs` the hard state saves
/// are held from the start.
async fn new_group(fsync: FsyncPolicy, hold_dirs: bool, voters: &[u64]) -> Fixture {
    new_group_on(fsync, hold_dirs, voters, LogConfig::default()).await
}

/// [`new_group`] with the log's settings.
async fn new_group_on(
    fsync: FsyncPolicy,
    hold_dirs: bool,
    voters: &[u64],
    log_config: LogConfig,
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    let dirs = Arc::new(Gate::default());
    let disk: DiskRef = Arc::new(GatedDisk {
        data: gate.clone(),
        dirs: dirs.clone(),
    });
    let log = RaftLog::open(disk, dir.path(), log_config, 0, voters).unwrap();
    dirs.set(hold_dirs, false);
    let logger = Logger::root(slog::Discard, slog::o!());
    let clock: ClockRef = Arc::new(TokioClock::starting_at(0));
    let mut config = DriverConfig::new(1, 7);
    config.fsync = fsync;
    // No tick after the first within a test: a follower's campaign or the
    // periodic commit flush would start syncs of their own and could hide
    // a stall.
    config.tick_ms = 600_000;
    let sent = Sent::default();
    let (driver, inputs, board) = Driver::new(config, Box::new(sent.clone()), clock, logger, 64);
    tokio::spawn(driver.run());
    let spec = GroupSpec {
        id: 1,
        log: log.clone(),
        apply: None,
        preferred_leader: voters[0],
        applied: 0,
    };
    inputs.send(Input::AddGroup(Box::new(spec))).await.unwrap();
    Fixture {
        _dir: dir,
        gate,
        dirs,
        log,
        inputs,
        board,
        sent,
    }
}

async fn wait_for(what: &str, done: impl Fn() -> bool) {
    for _ in 0..WAITS_MAX {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("gave up waiting for {what}");
}

fn batch(value: &str) -> RecordBatch {
    let mut b = BatchBuilder::new();
    b.push(&Event {
        key: None,
        value: Some(Bytes::from(value.to_string())),
        timestamp_ms: 0,
        headers: vec![],
    });
    b.build()
}

async fn propose(f: &Fixture, value: &str, acks: Acks) -> oneshot::Receiver<ProposeResult> {
    let (reply, answer) = oneshot::channel();
    let p = Proposal {
        group: 1,
        batch: batch(value),
        acks,
        reply: Some(reply),
    };
    f.inputs.send(Input::Propose(p)).await.unwrap();
    answer
}

/// While the leader's fsync is held, its writers wait (acks=1 and
/// acks=all alike), and the driver goes on appending the next writes to
/// the log without waiting for that fsync or its lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_wait_for_the_fsync_while_the_driver_appends_the_next_writes() {
    let f = leading_group().await;
    let before = f.log.with_log(|l| l.last_index());
    f.gate.set(true, false);
    let mut first = propose(&f, "first", Acks::Leader).await;
    let mut second = propose(&f, "second", Acks::All).await;
    let gate = f.gate.clone();
    wait_for("the first fsync to reach the gate", || gate.held() == 1).await;
    let third = propose(&f, "third", Acks::Leader).await;
    let log = f.log.clone();
    wait_for("the third write to be appended during the fsync", || {
        log.with_log(|l| l.last_index()) == before + 3
    })
    .await;
    assert!(
        first.try_recv().is_err(),
        "acks=1 answered before its fsync"
    );
    assert!(
        second.try_recv().is_err(),
        "acks=all answered before its fsync"
    );
    f.gate.set(false, false);
    let offsets = [
        first.await.unwrap().unwrap(),
        second.await.unwrap().unwrap(),
        third.await.unwrap().unwrap(),
    ];
    assert!(
        offsets[0] < offsets[1] && offsets[1] < offsets[2],
        "{offsets:?}"
    );
    // The driver timed its rounds and group commits (what `weir bench`
    // reports per broker).
    let t = f.board.timings(false);
    assert!(t.round.count > 0 && t.group_commit.count > 0, "{t:?}");
}

/// A failed background fsync fails the replica: its writers hear an error,
/// never success, and later writes are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_is_never_acknowledged() {
    let f = leading_group().await;
    f.gate.set(false, true);
    let acks1 = propose(&f, "lost", Acks::Leader).await;
    let acks_all = propose(&f, "lost too", Acks::All).await;
    for answer in [acks1.await.unwrap(), acks_all.await.unwrap()] {
        assert!(
            matches!(answer, Err(ProposeError::Storage(_))),
            "a write whose fsync failed was answered {answer:?}"
        );
    }
    f.gate.set(false, false);
    let later = propose(&f, "later", Acks::Leader).await.await.unwrap();
    assert!(matches!(later, Err(ProposeError::Storage(_))), "{later:?}");
}

/// A follower's Ready that needs no sync (a heartbeat's response) but came
/// while an append was syncing waits for that sync, and leaves once it is
/// done. It once waited for a sync that nothing would start until the next
/// append or commit flush: an idle follower's heartbeat responses were
/// held, and with fsync never a broker's registration hung at startup (its
/// Ready came after the election's hard state was saved, so it needed no
/// sync, but before the driver heard that the save was done).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_queued_behind_a_sync_leaves_when_it_is_done() {
    let f = new_group(FsyncPolicy::Always, false, &[2, 1]).await;
    let raft = |m: Message| Input::Raft {
        from: 2,
        messages: vec![(1, m)],
    };
    let heartbeat = || {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgHeartbeat);
        (m.from, m.to, m.term) = (2, 1, 1);
        m
    };
    // Broker 2 leads term 1; once broker 1 answers, term 1 is saved.
    f.inputs.send(raft(heartbeat())).await.unwrap();
    let sent = f.sent.clone();
    wait_for("a first heartbeat's response", || {
        sent.has(MessageType::MsgHeartbeatResponse)
    })
    .await;
    sent.0.lock().unwrap().clear();
    // One entry: its sync is held.
    f.gate.set(true, false);
    let entry = Entry {
        index: 1,
        term: 1,
        ..Entry::default()
    };
    let mut append = Message::default();
    append.set_msg_type(MessageType::MsgAppend);
    (append.from, append.to, append.term) = (2, 1, 1);
    append.entries = vec![entry].into();
    f.inputs.send(raft(append)).await.unwrap();
    let gate = f.gate.clone();
    wait_for("the append's sync to reach the gate", || gate.held() == 1).await;
    // Then a heartbeat, which needs no sync. The transfer request that
    // follows is answered only after the driver stepped the heartbeat, and
    // the round that hands its Ready over runs before the driver can hear
    // that the held sync is done.
    f.inputs.send(raft(heartbeat())).await.unwrap();
    let (reply, stepped) = oneshot::channel();
    let barrier = Input::TransferLeader {
        group: 1,
        to: 1,
        reply,
    };
    f.inputs.send(barrier).await.unwrap();
    let _ = stepped.await;
    assert!(
        !f.sent.has(MessageType::MsgAppendResponse),
        "responded before the sync"
    );
    assert!(
        !f.sent.has(MessageType::MsgHeartbeatResponse),
        "jumped the queue"
    );
    f.gate.set(false, false);
    wait_for("the append's response", || {
        sent.has(MessageType::MsgAppendResponse)
    })
    .await;
    wait_for("the heartbeat's response", || {
        sent.has(MessageType::MsgHeartbeatResponse)
    })
    .await;
}

/// With fsync never, a segment roll's sealing sync (the sealed segment's
/// data, up to a whole segment of it, then its index file) runs on the
/// persister: writers are answered while it is held, and the index file
/// appears once it is done. The driver once ran it inline, stalling every
/// group on the broker for as long as the fsync took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fsync_never_a_roll_is_sealed_in_the_background() {
    let config = LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 256,
        max_batch_bytes: 1024,
        ..LogConfig::default()
    };
    let f = new_group_on(FsyncPolicy::Never, false, &[1], config).await;
    let board = f.board.clone();
    wait_for("group 1 to lead and commit", || {
        board.get(1).is_some_and(|s| s.is_leader && s.commit >= 1)
    })
    .await;
    f.gate.set(true, false);
    let value = "v".repeat(300);
    for _ in 0..12 {
        let answer = propose(&f, &value, Acks::Leader).await.await.unwrap();
        assert!(answer.is_ok(), "{answer:?}");
    }
    assert!(f.log.with_log(|l| l.segment_count()) > 1, "no roll");
    let gate = f.gate.clone();
    wait_for("the sealing sync to reach the gate", || gate.held() == 1).await;
    let index = f._dir.path().join(crate::storage::segment::index_name(0));
    assert!(
        !index.exists(),
        "index file written before the segment's sync"
    );
    // Writers go on while it is held.
    let answer = propose(&f, &value, Acks::Leader).await.await.unwrap();
    assert!(answer.is_ok(), "{answer:?}");
    f.gate.set(false, false);
    wait_for("the sealed segment's index file", || index.exists()).await;
}

#[test]
fn a_group_commit_waits_for_more_only_while_the_broker_is_busy() {
    let start = tokio::time::Instant::now();
    let gap = Duration::from_micros(4_000);
    let busy = 32 * 1024 * 1024; // bytes per second
    let at = |us: u64| start + Duration::from_micros(us);
    // 1 ms after the last start, 64 KiB appended: 64 MiB/s, busy: held
    // until 4 ms after the last start.
    assert_eq!(
        hold_group_commit(Some(start), at(1_000), 64 * 1024, gap, busy),
        Some(at(4_000))
    );
    // 16 KiB in that millisecond (16 MiB/s): not busy, starts now.
    assert_eq!(
        hold_group_commit(Some(start), at(1_000), 16 * 1024, gap, busy),
        None
    );
    // Busy, but the gap has passed.
    assert_eq!(
        hold_group_commit(Some(start), at(4_000), 1 << 30, gap, busy),
        None
    );
    // Nothing appended (a vote or a commit index to save): never held.
    assert_eq!(hold_group_commit(Some(start), start, 0, gap, busy), None);
    // No commit before, or holding turned off.
    assert_eq!(hold_group_commit(None, at(1), 1 << 30, gap, busy), None);
    assert_eq!(
        hold_group_commit(Some(start), at(1), 1 << 30, Duration::ZERO, busy),
        None
    );
}

/// A damaged leader whose handover did not happen tries the next caught-up
/// voter, not the same (perhaps damaged too) one forever.
#[test]
fn a_damaged_leader_hands_over_to_each_candidate_in_turn() {
    assert_eq!(next_candidate(&[], None), None);
    assert_eq!(next_candidate(&[], Some(2)), None);
    assert_eq!(next_candidate(&[2, 3, 5], None), Some(2));
    assert_eq!(next_candidate(&[2, 3, 5], Some(2)), Some(3));
    assert_eq!(next_candidate(&[2, 3, 5], Some(3)), Some(5));
    assert_eq!(next_candidate(&[2, 3, 5], Some(5)), Some(2));
    // The last one tried no longer caught up.
    assert_eq!(next_candidate(&[2, 5], Some(3)), Some(5));
}
