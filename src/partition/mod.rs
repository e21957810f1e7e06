//! Produce and fetch on a partition's Raft group.
//!
//! A produce is validated here (a whole, well-formed RecordBatch v2 within
//! the topic's size limit), then proposed to the group through the driver;
//! the answer comes when the batch is committed (acks=all) or persisted on
//! the leader (acks=1). A fetch reads the leader's log directly, never past
//! the high watermark, and long-polls on the driver's status board until
//! enough bytes are committed or the wait runs out.

pub mod repair;

use crate::proto::{Acks as WireAcks, ErrorCode};
use crate::replication::driver::{Acks, Input, Proposal, ProposeError, StatusBoard};
use crate::replication::raft_log::RaftLog;
use crate::storage::StorageError;
use crate::types::RecordBatch;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

pub mod space;
pub use space::SpaceGuard;

/// A partition hosted on this broker.
#[derive(Clone, Debug)]
pub struct Replica {
    pub group: u64,
    pub log: RaftLog,
    /// `max.message.bytes` of its topic.
    pub max_batch_bytes: usize,
}

/// Every partition replica on this broker, by (topic, partition). Written
/// by the cluster backend, read by request handlers.
#[derive(Clone, Debug, Default)]
pub struct Replicas {
    inner: Arc<RwLock<BTreeMap<(String, u32), Replica>>>,
}

impl Replicas {
    pub fn get(&self, topic: &str, partition: u32) -> Option<Replica> {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        map.get(&(topic.to_string(), partition)).cloned()
    }

    pub fn insert(&self, topic: &str, partition: u32, replica: Replica) {
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        map.insert((topic.to_string(), partition), replica);
    }

    pub fn remove(&self, topic: &str, partition: u32) -> Option<Replica> {
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        map.remove(&(topic.to_string(), partition))
    }

    /// All replicas, in (topic, partition) order.
    pub fn all(&self) -> Vec<((String, u32), Replica)> {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// A failed request on a partition: a code for programs, a message for
/// people, and the leader to retry at where known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionError {
    pub code: ErrorCode,
    pub message: String,
    pub leader: u64,
}

impl PartitionError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        PartitionError {
            code,
            message: message.into(),
            leader: 0,
        }
    }

    pub fn to_proto(&self) -> crate::proto::Error {
        crate::proto::Error {
            code: self.code as i32,
            message: self.message.clone(),
            leader_id: self.leader,
        }
    }
}

impl From<ProposeError> for PartitionError {
    fn from(e: ProposeError) -> Self {
        let code = match e {
            ProposeError::NotLeader { leader: 0 } => ErrorCode::LeaderNotAvailable,
            ProposeError::NotLeader { .. } => ErrorCode::NotLeader,
            ProposeError::UnknownGroup => ErrorCode::UnknownPartition,
            ProposeError::Storage(_) => ErrorCode::StorageError,
            ProposeError::ShuttingDown => ErrorCode::BrokerShuttingDown,
        };
        let leader = match e {
            ProposeError::NotLeader { leader } => leader,
            _ => 0,
        };
        PartitionError {
            code,
            message: e.to_string(),
            leader,
        }
    }
}

fn storage_error(e: StorageError) -> PartitionError {
    match e {
        StorageError::OutOfRange { .. } => {
            PartitionError::new(ErrorCode::OffsetOutOfRange, e.to_string())
        }
        _ => PartitionError::new(ErrorCode::StorageError, e.to_string()),
    }
}

/// Produce and fetch against the replicas on this broker.
#[derive(Clone, Debug)]
pub struct PartitionService {
    pub replicas: Replicas,
    pub board: StatusBoard,
    driver: mpsc::Sender<Input>,
    /// The disk space reserve produces respect (None: no reserve).
    space: Option<SpaceGuard>,
}

/// Bytes read from one partition per fetch at most, whatever was asked.
pub const FETCH_PARTITION_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Longest long-poll a fetch may ask for.
pub const FETCH_WAIT_MS_MAX: u32 = 30_000;
/// Longest a produce may wait for its acknowledgement.
pub const PRODUCE_TIMEOUT_MS_MAX: u32 = 120_000;
/// How long a leadership transfer waits for the target by default.
pub const TRANSFER_TIMEOUT_MS_DEFAULT: u32 = 5_000;

/// One partition's part of a fetch answer.
#[derive(Clone, Debug, Default)]
pub struct Fetched {
    pub records: Bytes,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

impl PartitionService {
    pub fn new(replicas: Replicas, board: StatusBoard, driver: mpsc::Sender<Input>) -> Self {
        PartitionService {
            replicas,
            board,
            driver,
            space: None,
        }
    }

    /// Refuses produces that would eat into the disk space reserve.
    pub fn with_space(mut self, space: SpaceGuard) -> Self {
        self.space = Some(space);
        self
    }

    fn replica(&self, topic: &str, partition: u32) -> Result<Replica, PartitionError> {
        self.replicas.get(topic, partition).ok_or_else(|| {
            PartitionError::new(
                ErrorCode::UnknownPartition,
                format!(
                    "partition {topic}-{partition} is not hosted on this broker; refresh metadata"
                ),
            )
        })
    }

    /// The leader check every request on a partition starts with.
    fn leader_replica(&self, topic: &str, partition: u32) -> Result<Replica, PartitionError> {
        let replica = self.replica(topic, partition)?;
        let status = self.board.get(replica.group).unwrap_or_default();
        if let Some(cause) = status.failed {
            return Err(PartitionError::new(ErrorCode::StorageError, cause));
        }
        if !status.is_leader {
            return Err(ProposeError::NotLeader {
                leader: status.leader,
            }
            .into());
        }
        Ok(replica)
    }

    /// Appends one batch. Returns its base offset (`-1` for acks=0).
    pub async fn produce(
        &self,
        topic: &str,
        partition: u32,
        acks: WireAcks,
        batch: Bytes,
        timeout_ms: u32,
    ) -> Result<i64, PartitionError> {
        let replica = self.leader_replica(topic, partition)?;
        let batch_bytes = batch.len();
        let batch = validate_batch(batch, replica.max_batch_bytes)?;
        // Only client data is held to the reserve: Raft's own writes
        // (hard states, votes, the controller's entries) must still find
        // room when it is reached.
        if let Some(space) = &self.space {
            space.admit(batch_bytes)?;
        }
        let acks = match acks {
            WireAcks::All => Acks::All,
            WireAcks::Leader => Acks::Leader,
            WireAcks::NoneAcks => Acks::None,
        };
        let (tx, rx) = oneshot::channel();
        let reply = (acks != Acks::None).then_some(tx);
        let proposal = Proposal {
            group: replica.group,
            batch,
            acks,
            reply,
        };
        // A full driver queue pushes back: the request waits here, and the
        // connection's in-flight limit stops it reading more.
        let timeout = Duration::from_millis(timeout_ms.clamp(1, PRODUCE_TIMEOUT_MS_MAX) as u64);
        let sent = tokio::time::timeout(timeout, self.driver.send(Input::Propose(proposal))).await;
        match sent {
            Err(_) => return Err(overloaded()),
            Ok(Err(_)) => return Err(ProposeError::ShuttingDown.into()),
            Ok(Ok(())) => {}
        }
        if acks == Acks::None {
            return Ok(-1);
        }
        match tokio::time::timeout(timeout, rx).await {
            Err(_) => Err(PartitionError::new(
                ErrorCode::RequestTimedOut,
                format!("not acknowledged within {timeout_ms} ms; the write may still succeed"),
            )),
            Ok(Err(_)) => Err(ProposeError::ShuttingDown.into()),
            Ok(Ok(result)) => result.map_err(Into::into),
        }
    }

    /// Moves the partition's leadership to replica `to` (the caller checked
    /// that it is one) and waits until this broker sees `to` lead, for at
    /// most `timeout_ms` (0: the default). Returns the new leader.
    pub async fn transfer_leader(
        &self,
        topic: &str,
        partition: u32,
        to: u64,
        timeout_ms: u32,
    ) -> Result<u64, PartitionError> {
        let replica = self.replica(topic, partition)?;
        if self
            .board
            .get(replica.group)
            .is_some_and(|s| s.leader == to)
        {
            return Ok(to);
        }
        self.leader_replica(topic, partition)?;
        let ms = match timeout_ms {
            0 => TRANSFER_TIMEOUT_MS_DEFAULT,
            ms => ms.min(PRODUCE_TIMEOUT_MS_MAX),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms as u64);
        // Subscribe first, so that the leader change is not missed.
        let mut changes = self.board.watch();
        changes.borrow_and_update();
        let (reply, started) = oneshot::channel();
        let input = Input::TransferLeader {
            group: replica.group,
            to,
            reply,
        };
        match tokio::time::timeout_at(deadline, self.driver.send(input)).await {
            Err(_) => return Err(overloaded()),
            Ok(Err(_)) => return Err(ProposeError::ShuttingDown.into()),
            Ok(Ok(())) => {}
        }
        match tokio::time::timeout_at(deadline, started).await {
            Err(_) => return Err(overloaded()),
            Ok(Err(_)) => return Err(ProposeError::ShuttingDown.into()),
            Ok(Ok(result)) => result?,
        }
        // Bounded by the deadline: each pass waits for the board to change.
        loop {
            let leader = self.board.get(replica.group).unwrap_or_default().leader;
            if leader == to {
                return Ok(to);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(ProposeError::ShuttingDown.into()),
                Err(_) => {
                    let now = match leader {
                        0 => "no leader is known now".to_string(),
                        l => format!("broker {l} leads it"),
                    };
                    let mut e = PartitionError::new(
                        ErrorCode::RequestTimedOut,
                        format!(
                            "broker {to} did not take over {topic}/{partition} within {ms} ms \
                             (it may be behind or unreachable); {now}"
                        ),
                    );
                    e.leader = leader;
                    return Err(e);
                }
            }
        }
    }

    /// Reads committed batches of one partition from `offset`, without
    /// waiting.
    pub fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_bytes: usize,
        replica_read: bool,
    ) -> Result<Fetched, PartitionError> {
        // A replica read serves this broker's own copy, leader or not, up to
        // the commit point it knows: committed data is identical on every
        // replica, which is what comparing replicas relies on.
        let replica = if replica_read {
            self.replica(topic, partition)?
        } else {
            self.leader_replica(topic, partition)?
        };
        let hw = self
            .board
            .get(replica.group)
            .map(|s| s.high_watermark)
            .unwrap_or(0);
        let max_bytes = max_bytes.clamp(1, FETCH_PARTITION_BYTES_MAX);
        replica.log.with_log_mut(|log| {
            // Injected bug: serve uncommitted records, up to the log end.
            let hw = if crate::bugs::on(crate::bugs::FETCH_BEYOND_HW) {
                log.next_offset()
            } else {
                hw
            };
            let start = log.log_start_offset();
            if offset < start || offset > hw {
                return Err(PartitionError::new(
                    ErrorCode::OffsetOutOfRange,
                    format!(
                        "offset {offset} is outside {start}..={hw} (log start to high watermark)"
                    ),
                ));
            }
            let got = match log.read(offset, max_bytes, hw) {
                Ok(got) => got,
                Err(e @ StorageError::Corrupt { .. }) => {
                    // Never the damaged bytes: a retriable error, and this
                    // replica steps down and repairs itself (the driver and
                    // the scrub task see the damage noted here).
                    log.note_damage(&e);
                    return Err(PartitionError::new(
                        ErrorCode::StorageError,
                        format!(
                            "{topic}/{partition} has a damaged batch on this broker ({e}); it \
                             steps down and repairs it from a healthy replica: retry"
                        ),
                    ));
                }
                Err(e) => return Err(storage_error(e)),
            };
            Ok(Fetched {
                records: got.bytes,
                high_watermark: hw,
                log_start_offset: start,
            })
        })
    }

    /// Waits until some high watermark moves or `deadline` passes.
    pub async fn wait_for_change(&self, deadline: tokio::time::Instant) {
        let mut watch = self.board.watch();
        watch.borrow_and_update();
        let _ = tokio::time::timeout_at(deadline, watch.changed()).await;
    }

    /// Kafka's ListOffsets: -2 earliest, -1 latest (the high watermark),
    /// else the first offset with a timestamp at or after it (-1: none).
    pub fn list_offset(
        &self,
        topic: &str,
        partition: u32,
        timestamp: i64,
    ) -> Result<i64, PartitionError> {
        let replica = self.leader_replica(topic, partition)?;
        let hw = self
            .board
            .get(replica.group)
            .map(|s| s.high_watermark)
            .unwrap_or(0);
        replica.log.with_log(|log| match timestamp {
            -2 => Ok(log.log_start_offset()),
            -1 => Ok(hw),
            ts if ts < 0 => Err(PartitionError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "timestamp {ts} is invalid: use -2 (earliest), -1 (latest) or milliseconds"
                ),
            )),
            ts => match log.offset_for_timestamp(ts).map_err(storage_error)? {
                Some(o) if o < hw => Ok(o),
                _ => Ok(-1),
            },
        })
    }
}

/// The driver's queue stayed full: the broker pushes back.
fn overloaded() -> PartitionError {
    PartitionError::new(
        ErrorCode::Throttled,
        "the broker is overloaded: back off and retry",
    )
}

/// Checks a produced batch: one whole RecordBatch v2, CRC intact, records
/// well formed, within the topic's limit.
pub fn validate_batch(bytes: Bytes, max_bytes: usize) -> Result<RecordBatch, PartitionError> {
    if bytes.len() > max_bytes {
        return Err(PartitionError::new(
            ErrorCode::MessageTooLarge,
            format!(
                "batch of {} bytes exceeds max.message.bytes ({max_bytes}); send smaller batches or raise the topic's max.message.bytes",
                bytes.len()
            ),
        ));
    }
    let batch = RecordBatch::parse_full(bytes, max_bytes)
        .map_err(|e| PartitionError::new(ErrorCode::CorruptMessage, e.to_string()))?;
    check_client_batch(&batch.header())?;
    Ok(batch)
}

/// Attribute bits a client's batch may set: compression (which must be
/// none, checked by the parser) and nothing else. Timestamp type 3 (log
/// append time), transactional 4, control 5 and Kafka's delete-horizon 6
/// are the broker's, and bits above are unassigned.
const CLIENT_ATTRIBUTES_MASK: i16 = 0x07;

/// Refuses a batch that says more than "these records": a client writes
/// data, and only data. Weir interprets control batches itself (its Raft
/// configuration changes travel in them), so a client-sent one would be
/// taken for the broker's own on every replica; Kafka refuses control
/// batches from clients with INVALID_RECORD too. Weir has no idempotent or
/// transactional producers, so a producer id, epoch or sequence (which
/// Kafka's non-idempotent producers leave at -1) would promise
/// deduplication and ordering that nothing here provides.
fn check_client_batch(h: &crate::types::BatchHeader) -> Result<(), PartitionError> {
    let refuse = |what: String| {
        Err(PartitionError::new(
            ErrorCode::InvalidRecord,
            format!("{what}; Weir accepts data batches only, as a non-idempotent Kafka producer writes them"),
        ))
    };
    if h.is_control() {
        return refuse("control batches are written by the broker, not by clients".into());
    }
    if h.is_transactional() {
        return refuse("transactional batches are not supported".into());
    }
    if h.attributes & !CLIENT_ATTRIBUTES_MASK != 0 {
        return refuse(format!(
            "batch attributes {:#06x} set bits only the broker may set (only compression, bits 0-2, is the client's)",
            h.attributes
        ));
    }
    if h.producer_id != -1 || h.producer_epoch != -1 || h.base_sequence != -1 {
        return refuse(format!(
            "producer id {}, epoch {} and base sequence {} must all be -1 (idempotent producers are not supported)",
            h.producer_id, h.producer_epoch, h.base_sequence
        ));
    }
    Ok(())
}
