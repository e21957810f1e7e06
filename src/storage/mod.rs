//! Storage: the partition log on a [`Disk`](crate::io::Disk).
//!
//! - [`config`]: per-partition settings (segment size and age, retention).
//! - [`atomic`]: small checksummed files replaced atomically.
//! - [`hard_state`]: the Raft hard state (term, vote, commit) in such a file.
//! - [`index`]: the sparse index of a segment (offset, Raft index, time).
//! - [`scan`]: walking and validating the batches of a segment file.
//! - [`segment`]: one segment file and its index.
//! - [`log`]: the partition log: segments, reads, truncation, retention.
//! - [`repair`]: damage found by reads and its repair from a peer.
//!
//! The log is built to be the Raft log: every batch is one Raft entry and
//! carries its term in `partitionLeaderEpoch`, so each record is written
//! once per replica. Offsets (Kafka's, one per record) and Raft indexes (one
//! per batch) both increase along the log; a segment knows the first of each
//! and its sparse index holds both.
//!
//! Failure policy: any error while writing or syncing poisons the log. A
//! failed fsync may have dropped dirty pages, so nothing written since the
//! last good sync can be trusted and nothing more is acknowledged; every later
//! call fails with [`StorageError::Poisoned`] until the log is reopened, which
//! re-reads and re-validates what the disk really holds (fail-stop, as
//! PostgreSQL and Redpanda do after fsync errors).

pub mod atomic;
pub mod config;
pub mod hard_state;
pub mod index;
pub mod log;
pub mod repair;
pub mod scan;
pub mod segment;

pub use config::{LogConfig, PAGE_CACHE_KEEP_BYTES_DEFAULT};
pub use hard_state::HardState;
pub use log::{Appended, EntryKind, FetchedBatches, PartitionLog, PendingSync, RetentionOutcome};

use crate::types::RecordError;
use std::fmt;
use std::io;
use std::path::PathBuf;

/// What can go wrong in storage.
#[derive(Debug)]
pub enum StorageError {
    /// The disk failed; the message names the operation and file.
    Io { context: String, source: io::Error },
    /// A batch in the middle of the log is damaged: bit rot or tampering,
    /// not a torn write (those are truncated on open).
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    /// A write or fsync failed earlier; the log refuses everything until it is
    /// reopened and re-validated.
    Poisoned { cause: String },
    /// The caller asked for something the log cannot do (a bad argument).
    Invalid(String),
    /// The requested offset or index is below the log start (deleted by
    /// retention) or beyond its end.
    OutOfRange {
        requested: i64,
        start: i64,
        end: i64,
    },
    /// The batch is malformed.
    Record(RecordError),
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Io { context, source } => write!(f, "{context}: {source}"),
            StorageError::Corrupt {
                path,
                position,
                reason,
            } => write!(
                f,
                "corrupt log segment {} at byte {position}: {reason}; the data is damaged on disk",
                path.display()
            ),
            StorageError::Poisoned { cause } => write!(
                f,
                "partition log stopped after a disk error ({cause}); restart the broker to \
                 re-validate it"
            ),
            StorageError::Invalid(what) => write!(f, "{what}"),
            StorageError::OutOfRange {
                requested,
                start,
                end,
            } => write!(
                f,
                "offset {requested} is out of range: the log holds offsets {start} to {end} \
                 (exclusive)"
            ),
            StorageError::Record(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StorageError {}

impl From<RecordError> for StorageError {
    fn from(e: RecordError) -> Self {
        StorageError::Record(e)
    }
}

/// Attaches what was being done to an io error.
pub(crate) fn io_err(context: impl FnOnce() -> String) -> impl FnOnce(io::Error) -> StorageError {
    // The context is formatted only on an error: these sit on the fetch
    // read and group-commit fsync paths, where formatting a path for every
    // call that succeeds cost ~2% of a broker's instructions.
    move |source| StorageError::Io {
        context: context(),
        source,
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
