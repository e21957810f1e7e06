//! The driver's persistence pipeline, on a one-replica group over a disk
//! whose background syncs (the persister's) can be held or made to fail.

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

#[derive(Debug)]
struct GatedDisk(Arc<Gate>);

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
            gate: self.0.clone(),
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

struct Nowhere;

impl Outbound for Nowhere {
    fn send(&mut self, _to: u64, _messages: Vec<(u64, Message)>) {}
}

/// A driver hosting group 1 (one replica, this broker) on a gated disk,
/// once it leads.
struct Fixture {
    _dir: tempfile::TempDir,
    gate: Arc<Gate>,
    log: RaftLog,
    inputs: mpsc::Sender<Input>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // A failed assertion must not leave the persister held at the gate:
        // the runtime would wait for it forever instead of reporting.
        self.gate.set(false, false);
    }
}

async fn leading_group() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    let disk: DiskRef = Arc::new(GatedDisk(gate.clone()));
    let log = RaftLog::open(disk, dir.path(), LogConfig::default(), 0, &[1]).unwrap();
    let logger = Logger::root(slog::Discard, slog::o!());
    let clock: ClockRef = Arc::new(TokioClock::starting_at(0));
    let (driver, inputs, board) = Driver::new(
        DriverConfig::new(1, 7),
        Box::new(Nowhere),
        clock,
        logger,
        64,
    );
    tokio::spawn(driver.run());
    let spec = GroupSpec {
        id: 1,
        log: log.clone(),
        apply: None,
        preferred_leader: 1,
        applied: 0,
    };
    inputs.send(Input::AddGroup(Box::new(spec))).await.unwrap();
    wait_for("group 1 to elect itself", || {
        board.get(1).is_some_and(|s| s.is_leader && s.commit >= 1)
    })
    .await;
    Fixture {
        _dir: dir,
        gate,
        log,
        inputs,
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
