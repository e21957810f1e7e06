//! raft-rs's [`Storage`] on the partition log.
//!
//! [`RaftLog`] is one replica's Raft log, hard state and configuration. The
//! log is the [`PartitionLog`] itself: each Raft entry is one RecordBatch
//! whose `partitionLeaderEpoch` holds the entry's term, so a record is
//! written once per replica and a fetch serves the bytes Raft replicated.
//!
//! Entries map to batches as follows (see [`entry_to_batch`] and
//! [`batch_to_entry`]):
//!
//! | Raft entry | batch |
//! |---|---|
//! | `EntryNormal`, empty data (a new leader's no-op) | control batch `RaftNoop`, empty value |
//! | `EntryNormal` with data | the data, which must be a RecordBatch |
//! | `EntryConfChange` / `EntryConfChangeV2` | control batch `RaftConfChange` / `RaftConfChangeV2`, value = the encoded change |
//!
//! Control batches get timestamp -1 so that every replica builds the same
//! bytes from the same entry: replicas hold byte-identical logs.
//!
//! **Durability.** [`RaftLog::append`] and [`RaftLog::set_hard_state`] only
//! buffer; [`RaftLog::sync`] makes entries durable, then the hard state
//! (entries first: a hard state never refers to entries a crash could lose).
//! The term and vote are saved at the first sync after they change, before
//! the driver sends the messages that depend on them. The commit index is
//! saved lazily (see [`RaftLog::set_hard_state`]).
//!
//! **Snapshots.** Weir has no state machine beside the log, so a snapshot
//! says only where the log starts: metadata (index and term of the entry
//! before the first, and the configuration) and data = the log start offset
//! as 8 big-endian bytes. A follower that installs one discards its log and
//! restarts it empty at the next index and that offset; the leader then
//! sends it everything after.
//!
//! **Errors.** Nothing here panics on what the disk holds or on what a peer
//! sends: damage and bad input are errors. Weir errors reach raft-rs as
//! `Error::Store(StorageError::Other)`. raft-rs itself treats unexpected
//! storage errors as fatal (it panics) in most paths; to keep a damaged
//! segment from crashing a leader that reads it to catch up a follower,
//! read failures in contexts that may be asynchronous are reported to raft
//! as `LogTemporarilyUnavailable` and kept for the driver
//! ([`RaftLog::take_read_error`]), which should then stop the group.

use crate::io::DiskRef;
use crate::storage::{
    atomic, HardState, LogConfig, PartitionLog, Result, RetentionOutcome, StorageError,
};
use crate::types::{BatchBuilder, ControlType, RecordBatch, RecordError};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use protobuf::Message as _;
use raft::eraftpb::{self, ConfState, Entry, EntryType, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The atomic file holding the replica's Raft configuration.
const CONF_FILE: &str = "conf_state";
const CONF_VERSION: u8 = 1;

/// Converts a Raft entry into the batch the log stores for it. Data entries
/// must carry one valid RecordBatch (the leader proposes producers' batches
/// as they are); anything else is an error, never a panic.
pub fn entry_to_batch(entry: &Entry, max_batch_bytes: usize) -> Result<RecordBatch> {
    if !entry.context.is_empty() {
        // The log has nowhere to keep a proposal's context; the driver
        // proposes with an empty one.
        return Err(StorageError::Invalid(format!(
            "Raft entry {} carries a {}-byte context, which the log cannot store",
            entry.index,
            entry.context.len()
        )));
    }
    let control = |kind| BatchBuilder::control(kind, entry.data.clone(), -1);
    match entry.get_entry_type() {
        EntryType::EntryNormal if entry.data.is_empty() => Ok(control(ControlType::RaftNoop)),
        EntryType::EntryNormal => {
            let batch = RecordBatch::parse(entry.data.clone(), max_batch_bytes)?;
            // A data entry holding a Raft control batch would read back as
            // a different entry: the mapping must stay one to one.
            if let Some(kind) = raft_control_type(&batch)? {
                return Err(StorageError::Invalid(format!(
                    "Raft entry {} is data holding a {kind:?} control batch",
                    entry.index
                )));
            }
            Ok(batch)
        }
        EntryType::EntryConfChange => Ok(control(ControlType::RaftConfChange)),
        EntryType::EntryConfChangeV2 => Ok(control(ControlType::RaftConfChangeV2)),
    }
}

/// Converts a stored batch back into Raft entry `index`: the reverse of
/// [`entry_to_batch`], with the term taken from the batch's leader epoch.
pub fn batch_to_entry(index: u64, batch: &RecordBatch) -> Result<Entry> {
    let term = batch.leader_epoch();
    if term < 1 {
        return Err(StorageError::Invalid(format!(
            "batch of Raft entry {index} has no term (leader epoch {term})"
        )));
    }
    let mut e = Entry {
        index,
        term: term as u64,
        ..Entry::default()
    };
    let Some(kind) = raft_control_type(batch)? else {
        e.set_entry_type(EntryType::EntryNormal);
        e.data = batch.as_bytes().clone();
        return Ok(e);
    };
    let records = batch.records()?;
    let value = match records.as_slice() {
        [only] => only.event.value.clone(),
        _ => None,
    };
    let value = value.ok_or_else(|| {
        StorageError::Record(RecordError::Malformed(format!(
            "{kind:?} batch of Raft entry {index} must hold one record with a value"
        )))
    })?;
    match kind {
        ControlType::RaftNoop if value.is_empty() => e.set_entry_type(EntryType::EntryNormal),
        ControlType::RaftConfChange => e.set_entry_type(EntryType::EntryConfChange),
        ControlType::RaftConfChangeV2 => e.set_entry_type(EntryType::EntryConfChangeV2),
        _ => {
            return Err(StorageError::Record(RecordError::Malformed(format!(
                "{kind:?} batch of Raft entry {index} has a {}-byte value",
                value.len()
            ))))
        }
    }
    e.data = value;
    Ok(e)
}

/// The Raft kind of a control batch; `None` for data batches and for
/// Kafka's own control batches (transaction markers), which are data to
/// Raft.
fn raft_control_type(batch: &RecordBatch) -> Result<Option<ControlType>> {
    if !batch.is_control() {
        return Ok(None);
    }
    Ok(match batch.control_type()? {
        Some(
            k @ (ControlType::RaftNoop
            | ControlType::RaftConfChange
            | ControlType::RaftConfChangeV2),
        ) => Some(k),
        _ => None,
    })
}

/// A replica's Raft log: a cheap handle; clones share the state, so fetch
/// handlers read the log while the Raft driver owns the `RawNode`.
///
/// The methods lock one mutex; none may be called from inside the closure
/// given to [`RaftLog::with_log`] or [`RaftLog::with_log_mut`].
#[derive(Clone, Debug)]
pub struct RaftLog {
    state: Arc<Mutex<State>>,
    /// Held while the hard state file is written without `state`'s lock:
    /// one save at a time.
    saving: Arc<Mutex<()>>,
    /// Whether the log knows of damage (`PartitionLog::damage`), refreshed
    /// each time the lock is released: the driver asks every group each
    /// tick, and must not wait behind a fetch's or the scrub's disk reads
    /// for that.
    damaged: Arc<AtomicBool>,
}

/// The state's lock; refreshes [`RaftLog::is_damaged`] when released (every
/// change to the log, damage found, repaired or cut off, happens under it).
struct Locked<'a> {
    guard: MutexGuard<'a, State>,
    damaged: &'a AtomicBool,
}

impl Deref for Locked<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.guard
    }
}

impl DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.guard
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.damaged
            .store(self.guard.log.damage().is_some(), Ordering::Release);
    }
}

/// The configuration as of a Raft index.
#[derive(Clone, Debug, Default, PartialEq)]
struct ConfRecord {
    conf_state: ConfState,
    /// The entry whose application produced it (0: the initial one; a
    /// snapshot's index for one installed from a snapshot).
    index: u64,
}

#[derive(Debug)]
struct State {
    disk: DiskRef,
    dir: PathBuf,
    log: PartitionLog,
    /// Raft's hard state as the driver last set it.
    hard_state: eraftpb::HardState,
    /// Term or vote changed since the hard state was last saved.
    dirty: bool,
    /// The commit index in the saved hard state.
    saved_commit: u64,
    conf: ConfRecord,
    /// Why a hard state or configuration save failed; the replica then
    /// refuses every write (fail-stop, as the log does).
    poisoned: Option<String>,
    /// A read that failed while raft-rs was told "temporarily unavailable".
    read_error: Option<StorageError>,
    /// Entries read for Raft's own bookkeeping carry their data (see
    /// [`RaftLog::omit_data_of_committed`]).
    committed_data: bool,
}

impl State {
    fn check_usable(&self) -> Result<()> {
        match &self.poisoned {
            Some(cause) => Err(StorageError::Poisoned {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    fn poison(&mut self, e: StorageError) -> StorageError {
        self.poisoned = Some(e.to_string());
        e
    }

    fn save_hard_state(&mut self) -> Result<()> {
        let hs = HardState {
            term: self.hard_state.term,
            vote: self.hard_state.vote,
            commit: self.hard_state.commit,
        };
        hs.save(self.disk.as_ref(), &self.dir)
            .map_err(|e| self.poison(e))?;
        self.dirty = false;
        self.saved_commit = hs.commit;
        Ok(())
    }

    /// The commit index raft-rs may be started with: within
    /// `[first_index - 1, last_index]`, which raft-rs insists on (it panics
    /// otherwise). Everything before the log start was committed (retention
    /// and snapshots only cut committed entries), so raising it is safe;
    /// lowering it to the last index only forgets what the leader will
    /// tell again (see `RaftLog::open`).
    fn clamped_commit(&self) -> u64 {
        let low = self.log.first_index() - 1;
        self.hard_state.commit.clamp(low, self.log.last_index())
    }
}

impl RaftLog {
    /// Opens (or creates) the replica in `dir`. On the first open the
    /// configuration is `voters`, persisted in the `conf_state` file; later
    /// opens load that file and ignore `voters`.
    ///
    /// If the saved commit index lies past the last entry (entries a crash
    /// lost although the hard state said they were committed: possible only
    /// if the disk broke its sync promise), it is lowered to the last
    /// index: the commit index is volatile in Raft and the leader brings it
    /// back, while raft-rs refuses to start with a commit it cannot find.
    pub fn open(
        disk: DiskRef,
        dir: &Path,
        config: LogConfig,
        now_ms: i64,
        voters: &[u64],
    ) -> Result<RaftLog> {
        let log = PartitionLog::open(disk.clone(), dir, config, now_ms)?;
        let conf = match load_conf(disk.as_ref(), dir, &log)? {
            Some((conf, false)) => conf,
            Some((conf, true)) => {
                // Settle an interrupted snapshot install either way now: a
                // later retention pass could make the log start where the
                // abandoned snapshot would have put it.
                save_conf(disk.as_ref(), dir, &conf, None)?;
                conf
            }
            None => {
                check_voters(voters)?;
                let conf = ConfRecord {
                    conf_state: ConfState::from((voters.to_vec(), Vec::new())),
                    index: 0,
                };
                save_conf(disk.as_ref(), dir, &conf, None)?;
                conf
            }
        };
        let saved = HardState::load(disk.as_ref(), dir)?;
        let hard_state = eraftpb::HardState {
            term: saved.term,
            vote: saved.vote,
            commit: saved.commit,
            ..eraftpb::HardState::default()
        };
        let mut state = State {
            disk,
            dir: dir.to_path_buf(),
            log,
            hard_state,
            dirty: false,
            saved_commit: saved.commit,
            conf,
            poisoned: None,
            read_error: None,
            committed_data: true,
        };
        state.hard_state.commit = state.clamped_commit();
        let damaged = state.log.damage().is_some();
        Ok(RaftLog {
            state: Arc::new(Mutex::new(state)),
            saving: Arc::new(Mutex::new(())),
            damaged: Arc::new(AtomicBool::new(damaged)),
        })
    }

    /// Whether both handles are to the same open log.
    pub fn same(&self, other: &RaftLog) -> bool {
        Arc::ptr_eq(&self.state, &other.state)
    }

    fn lock(&self) -> Locked<'_> {
        // A panic while holding the lock (inside a storage callback of
        // raft-rs, which the driver contains and answers by failing the
        // group) may have left the state half-changed. Panicking here in
        // turn would take down the driver, or the scrub task, with every
        // other group: the log is poisoned instead, so it refuses every
        // write from now on (fail-stop), while the status and damage
        // queries go on.
        let guard = self.state.lock().unwrap_or_else(|poisoned| {
            let mut st = poisoned.into_inner();
            st.poisoned
                .get_or_insert_with(|| "a panic while the log was locked".to_string());
            st
        });
        Locked {
            guard,
            damaged: &self.damaged,
        }
    }

    /// Appends entries from a Ready, resolving conflicts as Raft does: if
    /// the first entry's index is already in the log, the log is cut from
    /// there first. Indexes must be contiguous and continue the log. Every
    /// entry is converted before anything changes, so a bad entry leaves
    /// the log as it was. Not durable until [`RaftLog::sync`].
    ///
    /// Call it before [`RaftLog::set_hard_state`] for the same Ready (as
    /// raft-rs's examples do): that hard state's commit may already cover
    /// these entries, and a rewrite at or below the commit is refused.
    pub fn append(&self, entries: &[Entry], now_ms: i64) -> Result<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let mut st = self.lock();
        st.check_usable()?;
        let (first_index, last_index) = (st.log.first_index(), st.log.last_index());
        if first.index < first_index || first.index > last_index + 1 {
            return Err(StorageError::Invalid(format!(
                "append of entries from {} to a log holding {first_index}..={last_index}",
                first.index
            )));
        }
        if first.index <= last_index && first.index <= st.hard_state.commit {
            // Raft never rewrites committed entries (raft-rs checks too);
            // refuse rather than lose acknowledged data.
            return Err(StorageError::Invalid(format!(
                "append from entry {} would overwrite entries committed up to {}",
                first.index, st.hard_state.commit
            )));
        }
        let max = st.log.config().max_batch_bytes;
        let mut batches = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            if e.index != first.index + i as u64 {
                return Err(StorageError::Invalid(format!(
                    "append of non-contiguous entries: {} after {}",
                    e.index,
                    first.index + i as u64 - 1
                )));
            }
            batches.push(entry_to_batch(e, max)?);
        }
        if first.index <= last_index {
            st.log.truncate_suffix(first.index)?;
        }
        for (e, batch) in entries.iter().zip(batches) {
            st.log.append(batch, e.term, e.index, now_ms)?;
        }
        Ok(())
    }

    /// Keeps Raft's hard state from a Ready. It is marked for saving at the
    /// next [`RaftLog::sync`] only if the term or the vote changed.
    ///
    /// The commit index is not saved eagerly, and that is safe: in Raft the
    /// commit index is volatile state. A replica that restarts with an older
    /// commit learns the current one from the leader's next message, and the
    /// entries in between are simply applied again (for Weir, applying is
    /// moving the high watermark, which is idempotent). A saved commit is
    /// never ahead of the entries on disk, since entries are synced first.
    /// The driver saves it now and then and at shutdown with
    /// [`RaftLog::flush_commit`], so a restart need not re-apply much. The
    /// term and vote, by contrast, must be on disk before any message that
    /// reveals them is sent, or a restarted replica could vote twice in a
    /// term.
    pub fn set_hard_state(&self, hs: &eraftpb::HardState) {
        let mut st = self.lock();
        if hs.term != st.hard_state.term || hs.vote != st.hard_state.vote {
            st.dirty = true;
        }
        st.hard_state = hs.clone();
    }

    /// Whether the term or vote changed since the hard state was saved:
    /// then the next sync must save it before any message revealing it
    /// leaves.
    pub fn hard_state_dirty(&self) -> bool {
        self.lock().dirty
    }

    /// Keeps the commit index from a LightReady (saved lazily, as in
    /// [`RaftLog::set_hard_state`]).
    pub fn set_commit(&self, commit: u64) {
        self.lock().hard_state.commit = commit;
    }

    /// Makes appended entries durable, then the hard state if its term or
    /// vote changed. The order matters: a saved hard state never refers to
    /// entries that are not on disk. After an error the replica refuses
    /// writes until reopened.
    pub fn sync(&self) -> Result<()> {
        self.sync_with(true)
    }

    /// Like [`Self::sync`], but with `sync_data` false the entries are left
    /// to the OS (the broker's `fsync` setting `never`, or an interval not
    /// yet due): only a changed term or vote is saved, since a forgotten
    /// vote could elect two leaders in one term. The commit saved with it may
    /// then run ahead of the entries on disk; opening clamps it.
    ///
    /// The fsync of the entries runs without the lock, so that the driver
    /// can append the next entries and fetches can read meanwhile; it
    /// covers every append made before the call.
    pub fn sync_with(&self, sync_data: bool) -> Result<()> {
        self.sync_entries(sync_data)?;
        let dirty = {
            let st = self.lock();
            st.check_usable()?;
            st.dirty
        };
        if dirty {
            self.save_hard_state()?;
        }
        Ok(())
    }

    /// Saves the commit index if it moved since the last save (with the
    /// entries synced first). The driver calls this periodically and at
    /// shutdown.
    pub fn flush_commit(&self) -> Result<()> {
        {
            let st = self.lock();
            st.check_usable()?;
            if !st.dirty && st.saved_commit == st.hard_state.commit {
                return Ok(());
            }
        }
        // The entries first, without the lock. Entries appended after this
        // sync may be covered by the commit saved below; opening clamps a
        // saved commit to the log's end, and the leader brings it back.
        self.sync_entries(true)?;
        self.save_hard_state()
    }

    /// Writes the hard state file (an atomic replace: two fsyncs) without
    /// holding the lock meanwhile, so that the driver's appends and fetches
    /// need not wait for it. A term or vote set during the write stays to
    /// be saved.
    fn save_hard_state(&self) -> Result<()> {
        let _one_at_a_time = self
            .saving
            .lock()
            // Guards no data: a panic while holding it leaves nothing
            // half-changed (the state's own lock poisons the log).
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (hs, disk, dir) = {
            let st = self.lock();
            st.check_usable()?;
            let hs = HardState {
                term: st.hard_state.term,
                vote: st.hard_state.vote,
                commit: st.hard_state.commit,
            };
            (hs, st.disk.clone(), st.dir.clone())
        };
        let result = hs.save(disk.as_ref(), &dir);
        let mut st = self.lock();
        result.map_err(|e| st.poison(e))?;
        if st.hard_state.term == hs.term && st.hard_state.vote == hs.vote {
            st.dirty = false;
        }
        st.saved_commit = hs.commit;
        Ok(())
    }

    /// Fsyncs the appended entries without holding the lock meanwhile.
    /// Syncs the entries (`with_data`) and finishes the log's sealing syncs
    /// (sealed segments' data and index files) in any case.
    fn sync_entries(&self, with_data: bool) -> Result<()> {
        let pending = {
            let mut st = self.lock();
            if with_data {
                st.log.begin_sync()?
            } else {
                st.log.begin_sealing()?
            }
        };
        if let Some(pending) = pending {
            let result = pending.sync();
            if self.lock().log.end_sync(&pending, result)? {
                let result = pending.sync_dir();
                self.lock().log.end_sync_dir(result)?;
            }
        }
        Ok(())
    }

    /// A sealed segment is waiting for its sealing sync: the driver hands
    /// the log to the next group commit even when no entry needs syncing.
    pub fn has_pending_seals(&self) -> bool {
        self.lock().log.has_pending_seals()
    }

    /// Records the configuration produced by applying the conf change at
    /// `index` (what `RawNode::apply_conf_change` returned). Durable when it
    /// returns. Must be called before a retention pass removes that entry,
    /// so that snapshots carry the configuration of their index.
    pub fn set_conf_state(&self, conf_state: &ConfState, index: u64) -> Result<()> {
        let mut st = self.lock();
        st.check_usable()?;
        let conf = ConfRecord {
            conf_state: conf_state.clone(),
            index,
        };
        save_conf(st.disk.as_ref(), &st.dir, &conf, None).map_err(|e| st.poison(e))?;
        st.conf = conf;
        Ok(())
    }

    /// Installs a leader's snapshot (from a Ready): the log restarts empty
    /// after the snapshot's index, at the offset the snapshot carries, and
    /// the commit index and configuration become the snapshot's. Durable
    /// when it returns.
    pub fn apply_snapshot(&self, snap: Snapshot) -> Result<()> {
        let mut st = self.lock();
        st.check_usable()?;
        let meta = snap.get_metadata();
        let (index, term) = (meta.index, meta.term);
        let start_offset = decode_snapshot_data(&snap.data)?;
        if index == 0 || term == 0 {
            return Err(StorageError::Invalid(format!(
                "snapshot at index {index}, term {term} is empty"
            )));
        }
        if index < st.log.first_index() {
            return Err(StorageError::Invalid(format!(
                "snapshot at index {index} is out of date: the log starts at {}",
                st.log.first_index()
            )));
        }
        let conf = ConfRecord {
            conf_state: meta.get_conf_state().clone(),
            index,
        };
        // The new configuration is saved before the log is reset, with the
        // old one beside it: until the log starts right after `index`, a
        // reopen uses the old one (see `load_conf`).
        let (disk, dir) = (st.disk.clone(), st.dir.clone());
        save_conf(disk.as_ref(), &dir, &conf, Some(&st.conf)).map_err(|e| st.poison(e))?;
        st.log.reset(start_offset, index + 1, term)?;
        st.hard_state.term = st.hard_state.term.max(term);
        st.hard_state.commit = index;
        st.save_hard_state()?;
        save_conf(disk.as_ref(), &dir, &conf, None).map_err(|e| st.poison(e))?;
        st.conf = conf;
        Ok(())
    }

    /// Raft's hard state as last set (the commit index clamped at open).
    pub fn hard_state(&self) -> eraftpb::HardState {
        self.lock().hard_state.clone()
    }

    /// The current configuration.
    pub fn conf_state(&self) -> ConfState {
        self.lock().conf.conf_state.clone()
    }

    /// Runs `f` on the log, for reads (fetch, ListOffsets) by other layers.
    pub fn with_log<R>(&self, f: impl FnOnce(&PartitionLog) -> R) -> R {
        f(&self.lock().log)
    }

    /// Runs `f` on the log mutably, for settings and retention. It must not
    /// append, truncate or reset: those belong to Raft, through this type.
    /// Retention must stay below the high watermark; prefer
    /// [`RaftLog::apply_retention`].
    pub fn with_log_mut<R>(&self, f: impl FnOnce(&mut PartitionLog) -> R) -> R {
        f(&mut self.lock().log)
    }

    /// Runs retention up to the high watermark of the commit index this
    /// replica knows: Raft may still need anything later.
    pub fn apply_retention(&self, now_ms: i64) -> Result<RetentionOutcome> {
        let mut st = self.lock();
        let high_watermark = st.log.next_offset_after_index(st.hard_state.commit)?;
        st.log.apply_retention(now_ms, high_watermark)
    }

    /// The Kafka high watermark for commit index `commit`: the offset after
    /// the last record of entry `commit`, where consumers' fetches stop.
    pub fn high_watermark_offset(&self, commit: u64) -> Result<i64> {
        self.lock().log.next_offset_after_index(commit)
    }

    /// Lets raft-rs have the committed entries of a Ready (and the entries it
    /// checks for pending configuration changes) without their data, for a
    /// group without a state machine: a partition's committed entries only
    /// move its high watermark, and reading back the bytes just written,
    /// with a CRC check, cost every replica a `pread` per commit. Data
    /// entries come from the active segment's memory of its recent batches;
    /// configuration changes, and anything older, are read as before.
    ///
    /// Only reads raft-rs says cannot be asynchronous are answered this way
    /// (`GetEntriesContext::can_async` false: a Ready's committed entries,
    /// leader transfer and vote checks, which look at entry types alone).
    /// Entries sent to followers always carry their data. raft-rs also sums
    /// committed data sizes to track uncommitted bytes, which Weir leaves
    /// unlimited (`max_uncommitted_size`), so the sum is unused.
    pub fn omit_data_of_committed(&self) {
        self.lock().committed_data = false;
    }

    /// The damaged batch this replica's log knows of, if any (see
    /// [`crate::storage::repair`]). Takes the lock only if
    /// [`RaftLog::is_damaged`].
    pub fn damage(&self) -> Option<crate::storage::repair::Damage> {
        if !self.is_damaged() {
            return None;
        }
        self.lock().log.damage().cloned()
    }

    /// Whether the log knows of damage, without taking the lock: as of the
    /// last time the lock was released.
    pub fn is_damaged(&self) -> bool {
        self.damaged.load(Ordering::Acquire)
    }

    /// The error behind the last read that raft-rs was told was temporarily
    /// unavailable; the driver should stop the group when it finds one.
    pub fn take_read_error(&self) -> Option<StorageError> {
        self.lock().read_error.take()
    }
}

/// Entries `[low, high)` as index, term and type without data, if all are
/// recent data batches (see [`RaftLog::omit_data_of_committed`]). A control
/// batch may be a configuration change, whose data raft-rs needs: `None`.
fn entries_without_data(log: &PartitionLog, low: u64, high: u64) -> Option<Vec<Entry>> {
    let kinds = log.recent_entry_kinds(low, high)?;
    if kinds.iter().any(|k| k.control) {
        return None;
    }
    let entries = kinds
        .iter()
        .map(|k| Entry {
            index: k.index,
            term: k.term,
            ..Entry::default()
        })
        .collect();
    Some(entries)
}

/// Entries `[low, high)` without their data, for a log with a damaged
/// batch among them: each entry that cannot be read comes with its term from
/// the log's term runs and the normal type. Only for committed entries of a
/// group without a state machine, where nothing reads the data, and where
/// raft-rs's remaining use of the type (pending configuration changes when
/// becoming leader) looks past the commit index, and a damaged replica does
/// not become leader.
fn entries_around_damage(log: &PartitionLog, low: u64, high: u64) -> Vec<Entry> {
    /// Bytes read per attempt: the damage makes reads fail until they start
    /// past it, so each attempt must stay cheap.
    const CHUNK_BYTES: usize = 1024 * 1024;
    let data_less = |index: u64, batch: &RecordBatch| {
        let mut e = batch_to_entry(index, batch).unwrap_or_default();
        e.index = index;
        e.data = Bytes::new();
        e
    };
    let mut out = Vec::new();
    let mut next = low;
    // Each pass moves `next` on by at least one entry.
    while next < high {
        if let Ok(batches) = log.entries(next, high, CHUNK_BYTES) {
            if !batches.is_empty() {
                for (index, batch) in &batches {
                    out.push(data_less(*index, batch));
                }
                next += batches.len() as u64;
                continue;
            }
        }
        match log.entries(next, next + 1, usize::MAX) {
            Ok(b) if !b.is_empty() => out.push(data_less(next, &b[0].1)),
            _ => out.push(Entry {
                index: next,
                term: log.term(next).unwrap_or(0),
                ..Entry::default()
            }),
        }
        next += 1;
    }
    out
}

fn store_err(e: StorageError) -> raft::Error {
    raft::Error::Store(raft::StorageError::Other(Box::new(e)))
}

impl Storage for RaftLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let st = self.lock();
        let mut hard_state = st.hard_state.clone();
        hard_state.commit = st.clamped_commit();
        Ok(RaftState::new(hard_state, st.conf.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let mut st = self.lock();
        if low < st.log.first_index() {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        if high > st.log.last_index() + 1 || low > high {
            // raft-rs's contract says this panics; an error is kinder.
            return Err(raft::Error::Store(raft::StorageError::Unavailable));
        }
        if low == high {
            return Ok(Vec::new());
        }
        if !context.can_async() && !st.committed_data {
            if let Some(entries) = entries_without_data(&st.log, low, high) {
                return Ok(entries);
            }
        }
        let max_bytes = max_size
            .into()
            .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
        let read = st.log.entries(low, high, max_bytes).and_then(|batches| {
            batches
                .iter()
                .map(|(index, batch)| batch_to_entry(*index, batch))
                .collect::<Result<Vec<_>>>()
        });
        match read {
            Ok(entries) => Ok(entries),
            // A damaged batch stops this replica from leading, not the
            // group: the driver hands leadership to a healthy replica and
            // the damage is repaired from one (`storage::repair`).
            Err(e @ StorageError::Corrupt { .. }) if context.can_async() => {
                st.log.note_damage(&e);
                Err(raft::Error::Store(
                    raft::StorageError::LogTemporarilyUnavailable,
                ))
            }
            Err(e @ StorageError::Corrupt { .. }) if !st.committed_data => {
                // Committed entries of a partition (no state machine) are
                // wanted for their index, term and type alone: the damaged
                // ones go without (see `entries_around_damage`), and the
                // damage is repaired while this replica follows.
                st.log.note_damage(&e);
                Ok(entries_around_damage(&st.log, low, high))
            }
            Err(e) if context.can_async() => {
                st.read_error = Some(e);
                Err(raft::Error::Store(
                    raft::StorageError::LogTemporarilyUnavailable,
                ))
            }
            Err(e) => Err(store_err(e)),
        }
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let st = self.lock();
        match st.log.term(idx) {
            Some(term) => Ok(term),
            None if idx < st.log.first_index() => {
                Err(raft::Error::Store(raft::StorageError::Compacted))
            }
            None => Err(raft::Error::Store(raft::StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.lock().log.first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.lock().log.last_index())
    }

    /// A snapshot of where the log starts: index `first_index - 1`, or
    /// later if the configuration was last changed later (a snapshot must
    /// carry the configuration as of its index) or the requester asked for
    /// a later one. It can always be made unless that index is not yet
    /// committed here (or is 0, which raft-rs never needs): then the answer
    /// is "temporarily unavailable" and raft-rs asks again later.
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let st = self.lock();
        let index = (st.log.first_index() - 1)
            .max(st.conf.index)
            .max(request_index);
        if index == 0 || index > st.hard_state.commit || index > st.log.last_index() {
            return Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let term = st
            .log
            .term(index)
            .ok_or_else(|| store_err(StorageError::Invalid(format!("no term for {index}"))))?;
        let start_offset = st.log.next_offset_after_index(index).map_err(store_err)?;
        let mut snap = Snapshot {
            data: encode_snapshot_data(start_offset),
            ..Snapshot::default()
        };
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(st.conf.conf_state.clone());
        Ok(snap)
    }
}

fn encode_snapshot_data(start_offset: i64) -> Bytes {
    Bytes::copy_from_slice(&start_offset.to_be_bytes())
}

pub(crate) fn decode_snapshot_data(data: &[u8]) -> Result<i64> {
    let bytes: [u8; 8] = data.try_into().map_err(|_| {
        StorageError::Invalid(format!(
            "snapshot data is {} bytes, expected an 8-byte log start offset",
            data.len()
        ))
    })?;
    let offset = i64::from_be_bytes(bytes);
    if offset < 0 {
        return Err(StorageError::Invalid(format!(
            "snapshot log start offset {offset} is negative"
        )));
    }
    Ok(offset)
}

fn check_voters(voters: &[u64]) -> Result<()> {
    let mut sorted = voters.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != voters.len() || sorted.first() == Some(&0) {
        return Err(StorageError::Invalid(format!(
            "voters {voters:?} must be distinct non-zero ids"
        )));
    }
    Ok(())
}

/// The `conf_state` file: version (1 byte), then the record (index u64,
/// length u32, the ConfState in protobuf), then a flag byte and, if set,
/// the previous record. The previous one is there only while a snapshot is
/// being installed.
fn save_conf(
    disk: &dyn crate::io::Disk,
    dir: &Path,
    conf: &ConfRecord,
    previous: Option<&ConfRecord>,
) -> Result<()> {
    let mut body = BytesMut::new();
    body.put_u8(CONF_VERSION);
    put_conf(&mut body, conf)?;
    match previous {
        None => body.put_u8(0),
        Some(p) => {
            body.put_u8(1);
            put_conf(&mut body, p)?;
        }
    }
    atomic::write(disk, dir, CONF_FILE, &body)
}

fn put_conf(body: &mut BytesMut, conf: &ConfRecord) -> Result<()> {
    let encoded = conf
        .conf_state
        .write_to_bytes()
        .map_err(|e| StorageError::Invalid(format!("cannot encode {:?}: {e}", conf.conf_state)))?;
    body.put_u64(conf.index);
    body.put_u32(encoded.len() as u32);
    body.put_slice(&encoded);
    Ok(())
}

/// Loads the configuration, `None` if none was saved, and whether the file
/// records an interrupted snapshot install. If a snapshot was being
/// installed, the new configuration counts only if the log was reset to
/// start right after the snapshot's index (a log that was not reset starts
/// at or before that index, since older snapshots are refused).
fn load_conf(
    disk: &dyn crate::io::Disk,
    dir: &Path,
    log: &PartitionLog,
) -> Result<Option<(ConfRecord, bool)>> {
    let Some(body) = atomic::read(disk, dir, CONF_FILE)? else {
        return Ok(None);
    };
    let corrupt = |reason: String| StorageError::Corrupt {
        path: dir.join(CONF_FILE),
        position: 0,
        reason,
    };
    let mut buf = &body[..];
    if buf.first() != Some(&CONF_VERSION) {
        return Err(corrupt(format!("unknown version {:?}", buf.first())));
    }
    buf.advance(1);
    let conf = get_conf(&mut buf).map_err(corrupt)?;
    let flag = buf.first().copied();
    if flag.is_some() {
        buf.advance(1);
    }
    let previous = match flag {
        Some(0) => None,
        Some(1) => Some(get_conf(&mut buf).map_err(corrupt)?),
        other => return Err(corrupt(format!("bad previous-record flag {other:?}"))),
    };
    if !buf.is_empty() {
        return Err(corrupt(format!("{} trailing bytes", buf.len())));
    }
    Ok(Some(match previous {
        Some(p) if log.first_index() != conf.index + 1 => (p, true),
        Some(_) => (conf, true),
        None => (conf, false),
    }))
}

fn get_conf(buf: &mut &[u8]) -> Result<ConfRecord, String> {
    if buf.len() < 12 {
        return Err(format!("record truncated at {} bytes", buf.len()));
    }
    let index = buf.get_u64();
    let len = buf.get_u32() as usize;
    if len > buf.len() {
        return Err(format!("ConfState of {len} bytes overruns the file"));
    }
    let conf_state =
        ConfState::parse_from_bytes(&buf[..len]).map_err(|e| format!("bad ConfState: {e}"))?;
    buf.advance(len);
    Ok(ConfRecord { conf_state, index })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Event;

    fn data_batch(n: usize) -> RecordBatch {
        let mut b = BatchBuilder::new();
        for i in 0..n {
            b.push(&Event {
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(vec![i as u8; 10 + i])),
                timestamp_ms: 1_000 + i as i64,
                headers: Vec::new(),
            });
        }
        b.build()
    }

    fn entry(kind: EntryType, data: Bytes, index: u64, term: u64) -> Entry {
        let mut e = Entry::default();
        e.set_entry_type(kind);
        e.data = data;
        e.index = index;
        e.term = term;
        e
    }

    /// Entry -> batch -> (stamped as the log stores it) -> entry.
    fn round_trip(e: &Entry) -> Entry {
        let batch = entry_to_batch(e, 1 << 20).unwrap();
        let stamped = batch.stamp(77, e.term as i32);
        batch_to_entry(e.index, &stamped).unwrap()
    }

    #[test]
    fn conversions_round_trip() {
        let noop = entry(EntryType::EntryNormal, Bytes::new(), 5, 2);
        assert_eq!(round_trip(&noop), noop);
        let cc = entry(
            EntryType::EntryConfChange,
            Bytes::from_static(b"\x08\x01\x10\x04"),
            6,
            2,
        );
        assert_eq!(round_trip(&cc), cc);
        // raft-rs's auto-leave of a joint configuration is an empty v2 change.
        let leave = entry(EntryType::EntryConfChangeV2, Bytes::new(), 7, 3);
        assert_eq!(round_trip(&leave), leave);
        let cc2 = entry(
            EntryType::EntryConfChangeV2,
            Bytes::from_static(b"\x12\x04\x08\x00\x10\x05"),
            8,
            3,
        );
        assert_eq!(round_trip(&cc2), cc2);

        // A data entry comes back as the stored (stamped) batch.
        let batch = data_batch(3);
        let data = entry(EntryType::EntryNormal, batch.as_bytes().clone(), 9, 4);
        let back = round_trip(&data);
        let stamped = batch.stamp(77, 4);
        assert_eq!(back.data, *stamped.as_bytes());
        assert_eq!((back.index, back.term), (9, 4));
        assert_eq!(back.get_entry_type(), EntryType::EntryNormal);
        // And converting that again yields the same bytes: stable.
        assert_eq!(round_trip(&back), back);

        // Kafka's own control batches are data to Raft.
        let marker = BatchBuilder::control(ControlType::Commit, Bytes::from_static(b"x"), 5);
        let e = entry(EntryType::EntryNormal, marker.as_bytes().clone(), 10, 4);
        assert_eq!(round_trip(&e).data, *marker.stamp(77, 4).as_bytes());
    }

    #[test]
    fn control_batches_are_deterministic() {
        let noop = entry(EntryType::EntryNormal, Bytes::new(), 1, 1);
        let a = entry_to_batch(&noop, 1024).unwrap();
        let b = entry_to_batch(&noop, 1024).unwrap();
        assert_eq!(a.as_bytes(), b.as_bytes());
        assert_eq!(a.max_timestamp(), -1);
    }

    #[test]
    fn bad_entries_are_errors() {
        let garbage = entry(
            EntryType::EntryNormal,
            Bytes::from_static(b"not a batch"),
            1,
            1,
        );
        assert!(entry_to_batch(&garbage, 1024).is_err());
        let too_big = entry(EntryType::EntryNormal, data_batch(40).into_bytes(), 1, 1);
        assert!(entry_to_batch(&too_big, 256).is_err());
        let noop = BatchBuilder::control(ControlType::RaftNoop, Bytes::new(), -1);
        let smuggled = entry(EntryType::EntryNormal, noop.into_bytes(), 1, 1);
        assert!(entry_to_batch(&smuggled, 1024).is_err());
        let mut with_context = entry(EntryType::EntryNormal, Bytes::new(), 1, 1);
        with_context.context = Bytes::from_static(b"ctx");
        assert!(entry_to_batch(&with_context, 1024).is_err());

        // Batches that no entry maps to.
        let unstamped = data_batch(1);
        assert!(batch_to_entry(1, &unstamped).is_err(), "no term");
        let noop_with_value =
            BatchBuilder::control(ControlType::RaftNoop, Bytes::from_static(b"v"), -1).stamp(0, 1);
        assert!(batch_to_entry(1, &noop_with_value).is_err());
    }

    #[test]
    fn snapshot_data_is_checked() {
        assert_eq!(decode_snapshot_data(&encode_snapshot_data(42)).unwrap(), 42);
        assert!(decode_snapshot_data(b"short").is_err());
        assert!(decode_snapshot_data(&(-1i64).to_be_bytes()).is_err());
    }

    fn small_config() -> LogConfig {
        LogConfig {
            segment_bytes: 1024,
            index_interval_bytes: 128,
            max_batch_bytes: 1024,
            ..LogConfig::default()
        }
    }

    fn open(dir: &Path) -> RaftLog {
        let disk: DiskRef = Arc::new(crate::io::RealDisk);
        RaftLog::open(disk, dir, small_config(), 0, &[1, 2, 3]).unwrap()
    }

    fn data_entry(index: u64, term: u64) -> Entry {
        entry(
            EntryType::EntryNormal,
            data_batch(1 + index as usize % 3).into_bytes(),
            index,
            term,
        )
    }

    fn hard_state(term: u64, vote: u64, commit: u64) -> eraftpb::HardState {
        eraftpb::HardState {
            term,
            vote,
            commit,
            ..Default::default()
        }
    }

    fn store_error(r: raft::Result<impl std::fmt::Debug>) -> raft::StorageError {
        match r {
            Err(raft::Error::Store(e)) => e,
            other => panic!("expected a storage error, got {other:?}"),
        }
    }

    /// A log of entries 1..=n in term 1 (entry 1 a no-op), synced.
    fn filled(dir: &Path, n: u64) -> RaftLog {
        let log = open(dir);
        let mut entries = vec![entry(EntryType::EntryNormal, Bytes::new(), 1, 1)];
        entries.extend((2..=n).map(|i| data_entry(i, 1)));
        log.append(&entries, 0).unwrap();
        log.sync().unwrap();
        log
    }

    /// With `omit_data_of_committed`, reads raft-rs cannot make
    /// asynchronous (a Ready's committed entries) get recent data entries
    /// without data; configuration changes, older entries and entries for
    /// followers keep theirs.
    #[test]
    fn committed_entries_come_without_data_only_where_nothing_needs_it() {
        let dir = tempfile::tempdir().unwrap();
        let disk: DiskRef = Arc::new(crate::io::RealDisk);
        let config = LogConfig {
            segment_bytes: 1 << 20,
            ..small_config()
        };
        let log = RaftLog::open(disk, dir.path(), config, 0, &[1, 2, 3]).unwrap();
        let cc = entry(
            EntryType::EntryConfChange,
            Bytes::from_static(b"\x08\x01\x10\x04"),
            11,
            2,
        );
        let mut entries = vec![entry(EntryType::EntryNormal, Bytes::new(), 1, 1)];
        entries.extend((2..=10).map(|i| data_entry(i, 1)));
        entries.push(cc.clone());
        entries.extend((12..=15).map(|i| data_entry(i, 2)));
        log.append(&entries, 0).unwrap();
        log.sync().unwrap();
        // raft-rs's own contexts cannot be made outside it; `empty(false)`
        // answers `can_async` as a Ready's committed entries do.
        let read = |low, high, ctx| log.entries(low, high, None, ctx).unwrap();
        let with_data = read(1, 16, GetEntriesContext::empty(false));
        assert!(with_data.iter().skip(1).all(|e| !e.data.is_empty()));

        log.omit_data_of_committed();
        let bare = |e: &Entry| Entry {
            data: Bytes::new(),
            ..e.clone()
        };
        let expected: Vec<Entry> = with_data[11..15].iter().map(bare).collect();
        assert_eq!(read(12, 16, GetEntriesContext::empty(false)), expected);
        assert!(read(2, 11, GetEntriesContext::empty(false))
            .iter()
            .all(|e| e.data.is_empty() && e.get_entry_type() == EntryType::EntryNormal));
        // A control batch in the range (no-op or configuration change):
        // read in full, so a configuration change keeps its data.
        assert_eq!(
            read(10, 13, GetEntriesContext::empty(false)),
            with_data[9..12]
        );
        assert_eq!(read(1, 3, GetEntriesContext::empty(false)), with_data[..2]);
        assert_eq!(read(11, 12, GetEntriesContext::empty(false)), vec![cc]);
        // Entries that may go to a follower always carry their data.
        assert_eq!(
            read(12, 16, GetEntriesContext::empty(true)),
            with_data[11..15]
        );
    }

    #[test]
    fn storage_answers_like_mem_storage() {
        let dir = tempfile::tempdir().unwrap();
        let log = filled(dir.path(), 30);
        let state = log.initial_state().unwrap();
        assert_eq!(state.conf_state.voters, vec![1, 2, 3]);
        assert_eq!(
            (log.first_index().unwrap(), log.last_index().unwrap()),
            (1, 30)
        );
        assert_eq!(log.term(0).unwrap(), 0);
        assert_eq!(log.term(30).unwrap(), 1);
        assert_eq!(store_error(log.term(31)), raft::StorageError::Unavailable);
        let all = log
            .entries(1, 31, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(all.len(), 30);
        assert!(all.iter().enumerate().all(|(i, e)| e.index == i as u64 + 1));
        // max_size: whole entries within it, but always at least one.
        let one = log
            .entries(2, 31, 1, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(one.len(), 1);
        let budget = all[1].data.len() + all[2].data.len();
        let two = log
            .entries(2, 31, budget as u64, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(two.len(), 2);
        assert_eq!(
            store_error(log.entries(2, 32, None, GetEntriesContext::empty(false))),
            raft::StorageError::Unavailable
        );

        // After retention, below the start is compacted; the entry just
        // before it keeps its term.
        log.with_log_mut(|l| {
            l.set_config(LogConfig {
                retention_bytes: 0,
                ..small_config()
            })
        })
        .unwrap();
        log.set_commit(20);
        log.apply_retention(0).unwrap();
        let first = log.first_index().unwrap();
        assert!(first > 1 && first <= 21, "retention stayed below commit");
        assert_eq!(log.term(first - 1).unwrap(), 1);
        assert_eq!(
            store_error(log.term(first - 2)),
            raft::StorageError::Compacted
        );
        assert_eq!(
            store_error(log.entries(first - 1, 31, None, GetEntriesContext::empty(false))),
            raft::StorageError::Compacted
        );

        // The snapshot is where the log starts, with its offset.
        let snap = log.snapshot(0, 2).unwrap();
        assert_eq!(snap.get_metadata().index, first - 1);
        assert_eq!(snap.get_metadata().term, 1);
        assert_eq!(snap.get_metadata().get_conf_state().voters, vec![1, 2, 3]);
        let start = log.with_log(|l| l.log_start_offset());
        assert_eq!(decode_snapshot_data(&snap.data).unwrap(), start);
        // A later requested index, if committed; otherwise not yet.
        assert_eq!(log.snapshot(20, 2).unwrap().get_metadata().index, 20);
        assert_eq!(
            store_error(log.snapshot(25, 2)),
            raft::StorageError::SnapshotTemporarilyUnavailable
        );
    }

    #[test]
    fn append_resolves_conflicts_and_refuses_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let log = filled(dir.path(), 10);
        log.set_commit(5);
        // A new leader in term 2 overwrites 8.. with its own entries.
        log.append(&[data_entry(8, 2), data_entry(9, 2)], 0)
            .unwrap();
        assert_eq!(log.last_index().unwrap(), 9);
        assert_eq!((log.term(7).unwrap(), log.term(8).unwrap()), (1, 2));
        // Gaps, non-contiguous runs and committed entries are errors that
        // change nothing.
        assert!(log.append(&[data_entry(11, 2)], 0).is_err());
        assert!(log
            .append(&[data_entry(10, 2), data_entry(12, 2)], 0)
            .is_err());
        assert!(log.append(&[data_entry(5, 2)], 0).is_err());
        let garbage = entry(EntryType::EntryNormal, Bytes::from_static(b"?"), 9, 2);
        assert!(log.append(&[data_entry(8, 2), garbage], 0).is_err());
        assert_eq!(log.last_index().unwrap(), 9);
        assert_eq!(log.term(8).unwrap(), 2);
    }

    #[test]
    fn hard_state_saves_term_and_vote_at_sync_and_commit_lazily() {
        let dir = tempfile::tempdir().unwrap();
        let log = filled(dir.path(), 10);
        log.set_hard_state(&hard_state(3, 2, 4));
        log.sync().unwrap();
        let saved = || HardState::load(&crate::io::RealDisk, dir.path()).unwrap();
        assert_eq!((saved().term, saved().vote, saved().commit), (3, 2, 4));
        // A commit-only change waits for flush_commit.
        log.set_hard_state(&hard_state(3, 2, 7));
        log.set_commit(8);
        log.sync().unwrap();
        assert_eq!(saved().commit, 4);
        log.flush_commit().unwrap();
        assert_eq!(saved().commit, 8);
        drop(log);
        let log = open(dir.path());
        assert_eq!(log.hard_state(), hard_state(3, 2, 8));
        assert_eq!(log.initial_state().unwrap().hard_state.commit, 8);
    }

    #[test]
    fn reopen_clamps_a_commit_past_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = filled(dir.path(), 10);
        drop(log);
        // As if the disk had lost synced entries 10.. after the hard state
        // recorded their commit.
        HardState {
            term: 1,
            vote: 1,
            commit: 15,
        }
        .save(&crate::io::RealDisk, dir.path())
        .unwrap();
        let log = open(dir.path());
        assert_eq!(log.initial_state().unwrap().hard_state.commit, 10);
    }

    #[test]
    fn snapshot_install_resets_the_log_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let log = filled(dir.path(), 10);
        log.set_hard_state(&hard_state(1, 1, 3));
        let mut snap = Snapshot {
            data: encode_snapshot_data(500),
            ..Snapshot::default()
        };
        let meta = snap.mut_metadata();
        meta.index = 40;
        meta.term = 3;
        meta.set_conf_state(ConfState::from((vec![1, 2, 4], vec![5])));
        log.apply_snapshot(snap.clone()).unwrap();
        let check = |log: &RaftLog, last: u64| {
            assert_eq!(
                (log.first_index().unwrap(), log.last_index().unwrap()),
                (41, last)
            );
            assert_eq!(log.term(40).unwrap(), 3);
            assert_eq!(log.with_log(|l| l.log_start_offset()), 500);
            assert_eq!(log.high_watermark_offset(40).unwrap(), 500);
            let hs = log.initial_state().unwrap().hard_state;
            assert_eq!((hs.term, hs.commit), (3, 40));
            assert_eq!(log.conf_state().voters, vec![1, 2, 4]);
            assert_eq!(log.conf_state().learners, vec![5]);
        };
        check(&log, 40);
        // Entry 41 holds three records.
        log.append(&[data_entry(41, 3)], 0).unwrap();
        log.sync().unwrap();
        assert_eq!(log.high_watermark_offset(41).unwrap(), 503);
        drop(log);
        let log = open(dir.path());
        check(&log, 41);
        // An older snapshot is refused.
        snap.mut_metadata().index = 30;
        assert!(log.apply_snapshot(snap).is_err());
    }

    /// A crash after the snapshot's configuration was saved but before the
    /// log was reset keeps the old configuration.
    #[test]
    fn an_interrupted_snapshot_install_keeps_the_old_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let log = filled(dir.path(), 10);
        drop(log);
        let disk = crate::io::RealDisk;
        let old = ConfRecord {
            conf_state: ConfState::from((vec![1, 2, 3], vec![])),
            index: 0,
        };
        let new = ConfRecord {
            conf_state: ConfState::from((vec![1, 2, 4], vec![])),
            index: 40,
        };
        save_conf(&disk, dir.path(), &new, Some(&old)).unwrap();
        let log = open(dir.path());
        assert_eq!(log.conf_state().voters, vec![1, 2, 3]);
        // The choice is final: the log starting after index 40 later (by
        // retention, say) does not revive the abandoned configuration.
        log.with_log_mut(|l| l.reset(500, 41, 3)).unwrap();
        drop(log);
        assert_eq!(open(dir.path()).conf_state().voters, vec![1, 2, 3]);
        // Had the reset happened, the new one would count.
        save_conf(&disk, dir.path(), &new, Some(&old)).unwrap();
        assert_eq!(open(dir.path()).conf_state().voters, vec![1, 2, 4]);
        assert_eq!(open(dir.path()).conf_state().voters, vec![1, 2, 4]);
    }

    #[test]
    fn damaged_conf_state_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        drop(filled(dir.path(), 2));
        let path = dir.path().join(CONF_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[5] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let disk: DiskRef = Arc::new(crate::io::RealDisk);
        let err = RaftLog::open(disk, dir.path(), small_config(), 0, &[1]).unwrap_err();
        assert!(err.to_string().contains(CONF_FILE), "{err}");
        let disk: DiskRef = Arc::new(crate::io::RealDisk);
        let fresh = tempfile::tempdir().unwrap();
        assert!(RaftLog::open(disk, fresh.path(), small_config(), 0, &[1, 1]).is_err());
    }

    /// A segment file of the log in `dir`.
    fn a_segment(dir: &Path) -> PathBuf {
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        names.sort();
        names.remove(0)
    }

    /// The damage flag is read without the lock (the driver asks every
    /// group each tick and must not wait behind a fetch's disk reads), and
    /// follows the damage as it is found and cut off.
    #[test]
    fn damage_is_known_without_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let log = filled(dir.path(), 10);
        assert!(!log.is_damaged());
        assert!(log.damage().is_none());
        let e = StorageError::Corrupt {
            path: a_segment(dir.path()),
            position: 0,
            reason: "test".into(),
        };
        assert!(log.with_log_mut(|l| l.note_damage(&e)));
        assert!(log.is_damaged());
        assert!(log.damage().is_some());

        // Someone holds the lock (a slow read): the flag still answers.
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = log.clone();
        let t = std::thread::spawn(move || {
            holder.with_log(|_| {
                held_tx.send(()).unwrap();
                let _ = release_rx.recv();
            })
        });
        held_rx.recv().unwrap();
        let (asked_tx, asked_rx) = std::sync::mpsc::channel();
        let asker = log.clone();
        std::thread::spawn(move || asked_tx.send(asker.is_damaged()).unwrap());
        let answer = asked_rx.recv_timeout(std::time::Duration::from_secs(5));
        release_tx.send(()).unwrap();
        t.join().unwrap();
        assert_eq!(answer, Ok(true), "is_damaged waited for the lock");

        // The damaged segment gone (a reset past it): clean again.
        log.with_log_mut(|l| l.reset(500, 41, 3)).unwrap();
        assert!(!log.is_damaged());
        assert!(log.damage().is_none());
    }

    /// A panic while the log is locked (inside a raft-rs storage callback,
    /// contained by the driver) poisons the mutex: later calls, the
    /// driver's status and damage queries included, must not panic in
    /// turn; writes are refused (fail-stop).
    #[test]
    fn a_panic_under_the_lock_poisons_the_log_without_panicking_later_callers() {
        let dir = tempfile::tempdir().unwrap();
        let log = filled(dir.path(), 5);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            log.with_log(|_| panic!("injected: a panic under the log's lock"))
        }));
        assert!(panicked.is_err());
        assert!(log.damage().is_none());
        assert!(!log.is_damaged());
        assert_eq!(log.hard_state().term, 0);
        assert_eq!(log.last_index().unwrap(), 5);
        let err = log.append(&[data_entry(6, 1)], 0).unwrap_err();
        assert!(matches!(err, StorageError::Poisoned { .. }), "{err}");
    }
}
