//! The consumer: assigned partitions (or a whole topic) are fetched from
//! their leaders; control batches are skipped; on NOT_LEADER, connection
//! loss or a broker restart the leader is looked up again and fetching
//! resumes at the same offset, so no record is skipped.

use super::metadata::{Client, ClientConfig};
use super::Error;
use crate::proto::client_request::Body as Req;
use crate::proto::client_response::Body as Resp;
use crate::proto::{ErrorCode, FetchPartition, FetchRequest, FetchedPartition, ListOffsetsRequest};
use crate::types::{BatchHeader, Header, RecordBatch};
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Where to start reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    /// The high watermark: only records written from now on.
    Latest,
    Offset(i64),
    /// The first record with a timestamp at or after this (ms since the
    /// epoch); latest if there is none.
    Timestamp(i64),
}

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Records one `poll` returns at most.
    pub max_poll_records: usize,
    /// Bytes one fetch response carries at most.
    pub fetch_max_bytes: u32,
    /// Bytes per partition per fetch at most.
    pub partition_max_bytes: u32,
    /// How long the broker holds a fetch waiting for data.
    pub fetch_max_wait: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            max_poll_records: 500,
            fetch_max_bytes: 8 * 1024 * 1024,
            partition_max_bytes: 1024 * 1024,
            fetch_max_wait: Duration::from_millis(500),
        }
    }
}

/// A record as consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// Shared by every record of a fetch: one allocation per partition
    /// fetched rather than one per record (a fifth of the consumer's
    /// instructions went to copying and freeing the name per record).
    pub topic: Arc<str>,
    pub partition: u32,
    pub offset: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub timestamp_ms: i64,
    pub headers: Vec<Header>,
}

#[derive(Debug, Clone)]
struct Assigned {
    start: StartAt,
    /// The next offset to fetch, once resolved.
    position: Option<i64>,
    /// Bumped by `seek`: an answer to a fetch sent before it is stale.
    epoch: u64,
    /// A fetch of this partition is in flight.
    fetching: bool,
}

/// A fetch in flight to one leader: the partitions it asked for, with the
/// epoch of each at sending, and the answer.
type FetchDone = (Vec<(FetchPartition, u64)>, Result<Resp, Error>);

/// The consumer.
#[derive(Debug)]
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    assigned: BTreeMap<(String, u32), Assigned>,
    buffered: VecDeque<ConsumerRecord>,
    /// At most one fetch per partition, kept across polls: a poll returns
    /// as soon as any leader's answer brings records, while the other
    /// leaders' long polls go on (a later poll takes their answers) instead
    /// of holding those records back. Aborted when the consumer is dropped.
    in_flight: tokio::task::JoinSet<FetchDone>,
    /// The last retriable error met since a fetch last succeeded: retried
    /// silently, but a caller that waited long for records can say why
    /// (a full disk, a broker not ready, no leader) instead of nothing.
    failing: Option<Error>,
}

/// Partitions a consumer may be assigned at most.
pub const ASSIGNED_MAX: usize = 10_000;

impl Consumer {
    pub fn new(client: Client, config: ConsumerConfig) -> Consumer {
        Consumer {
            client,
            config,
            assigned: BTreeMap::new(),
            buffered: VecDeque::new(),
            in_flight: tokio::task::JoinSet::new(),
            failing: None,
        }
    }

    pub async fn connect(
        client_config: ClientConfig,
        config: ConsumerConfig,
    ) -> Result<Consumer, Error> {
        Ok(Consumer::new(Client::connect(client_config).await?, config))
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Why fetching keeps failing, if it does: the last retriable error met
    /// since a fetch last succeeded (None once one succeeds). The consumer
    /// retries such errors itself; this is for saying so when records do
    /// not come.
    pub fn failing(&self) -> Option<&Error> {
        self.failing.as_ref()
    }

    /// Adds one partition, starting at `start`.
    pub async fn assign(
        &mut self,
        topic: &str,
        partition: u32,
        start: StartAt,
    ) -> Result<(), Error> {
        let t = self.client.refresh_topic(topic).await?;
        let count = t.partitions.len() as u32;
        if partition >= count {
            return Err(Error::Invalid(format!(
                "partition {partition} does not exist: topic '{topic}' has {count} partition{}",
                if count == 1 { "" } else { "s" }
            )));
        }
        self.add(topic, partition, start)
    }

    /// Adds every partition of a topic.
    pub async fn assign_topic(&mut self, topic: &str, start: StartAt) -> Result<(), Error> {
        let t = self.client.refresh_topic(topic).await?;
        for p in &t.partitions {
            self.add(topic, p.partition, start)?;
        }
        Ok(())
    }

    fn add(&mut self, topic: &str, partition: u32, start: StartAt) -> Result<(), Error> {
        if self.assigned.len() >= ASSIGNED_MAX {
            return Err(Error::Invalid(format!(
                "a consumer reads {ASSIGNED_MAX} partitions at most"
            )));
        }
        let key = (topic.to_string(), partition);
        // Assigned again: a fetch sent for the old assignment must not count.
        let (epoch, fetching) = self
            .assigned
            .get(&key)
            .map_or((0, false), |a| (a.epoch + 1, a.fetching));
        self.assigned.insert(
            key,
            Assigned {
                start,
                position: match start {
                    StartAt::Offset(o) if o >= 0 => Some(o),
                    _ => None,
                },
                epoch,
                fetching,
            },
        );
        Ok(())
    }

    /// The assigned partitions.
    pub fn assignment(&self) -> Vec<(String, u32)> {
        self.assigned.keys().cloned().collect()
    }

    /// Moves a partition's position; records buffered for it are dropped.
    pub fn seek(&mut self, topic: &str, partition: u32, start: StartAt) {
        if let Some(a) = self.assigned.get_mut(&(topic.to_string(), partition)) {
            a.start = start;
            a.epoch += 1;
            a.position = match start {
                StartAt::Offset(o) if o >= 0 => Some(o),
                _ => None,
            };
            self.buffered
                .retain(|r| !(&*r.topic == topic && r.partition == partition));
        }
    }

    /// The offset of the next record `poll` returns for a partition (None
    /// until resolved), as Kafka's `position`: records fetched but not yet
    /// returned are not consumed, so a position saved and sought back to
    /// skips nothing.
    pub fn position(&self, topic: &str, partition: u32) -> Option<i64> {
        let fetched = self
            .assigned
            .get(&(topic.to_string(), partition))
            .and_then(|a| a.position)?;
        let buffered = self
            .buffered
            .iter()
            .find(|r| r.partition == partition && &*r.topic == topic);
        Some(buffered.map_or(fetched, |r| r.offset))
    }

    /// Waits up to `timeout` for records; returns at most
    /// `max_poll_records` (possibly none).
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.buffered.is_empty() {
                let n = self.buffered.len().min(self.config.max_poll_records.max(1));
                return Ok(self.buffered.drain(..n).collect());
            }
            if self.assigned.is_empty() {
                return Ok(Vec::new());
            }
            self.resolve_positions().await?;
            self.send_fetches(deadline).await?;
            let now = Instant::now();
            if self.in_flight.is_empty() {
                // No leader known for anything: look again shortly.
                if now >= deadline {
                    return Ok(Vec::new());
                }
                tokio::time::sleep(Duration::from_millis(100).min(deadline - now)).await;
                continue;
            }
            // Fetches still in flight at the deadline stay in flight: a
            // later poll takes their answers.
            let Ok(Some(done)) =
                tokio::time::timeout_at(deadline, self.in_flight.join_next()).await
            else {
                return Ok(Vec::new());
            };
            let answered = match done {
                Ok((asked, answer)) => self.take_answer(asked, answer).await?,
                Err(_) => {
                    // A fetch task panicked or was aborted: which partitions
                    // it held is unknown, so fetch every partition afresh
                    // and let no older answer count.
                    self.in_flight.abort_all();
                    for a in self.assigned.values_mut() {
                        a.epoch += 1;
                        a.fetching = false;
                    }
                    false
                }
            };
            let now = Instant::now();
            if !answered && now < deadline {
                // The leader could not be reached: not in a tight loop.
                tokio::time::sleep(Duration::from_millis(100).min(deadline - now)).await;
            }
        }
    }

    /// Finds the starting offset of every partition that has none yet.
    async fn resolve_positions(&mut self) -> Result<(), Error> {
        let unresolved: Vec<(String, u32, StartAt)> = self
            .assigned
            .iter()
            .filter(|(_, a)| a.position.is_none())
            .map(|((t, p), a)| (t.clone(), *p, a.start))
            .collect();
        for (topic, partition, start) in unresolved {
            let offset = match start {
                StartAt::Offset(o) if o >= 0 => Ok(o),
                StartAt::Offset(_) | StartAt::Earliest => {
                    self.list_offset(&topic, partition, -2).await
                }
                StartAt::Latest => self.list_offset(&topic, partition, -1).await,
                StartAt::Timestamp(ts) => {
                    match self.list_offset(&topic, partition, ts.max(0)).await {
                        Ok(-1) => self.list_offset(&topic, partition, -1).await,
                        other => other,
                    }
                }
            };
            match offset {
                Ok(o) => {
                    if let Some(a) = self.assigned.get_mut(&(topic.clone(), partition)) {
                        a.position = Some(o);
                    }
                }
                Err(e) if e.retriable() => {
                    self.client.set_leader(&topic, partition, 0);
                    self.failing = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sends one fetch per leader for every partition with a position and
    /// no fetch in flight.
    async fn send_fetches(&mut self, deadline: Instant) -> Result<(), Error> {
        let mut by_leader: BTreeMap<u64, Vec<(FetchPartition, u64)>> = BTreeMap::new();
        let wanted: Vec<(String, u32, i64, u64)> = self
            .assigned
            .iter()
            .filter(|(_, a)| !a.fetching)
            .filter_map(|((t, p), a)| a.position.map(|o| (t.clone(), *p, o, a.epoch)))
            .collect();
        for (topic, partition, offset, epoch) in wanted {
            let leader = match self.client.leader(&topic, partition) {
                Some(l) => l,
                None => match self.client.refresh_topic(&topic).await {
                    Ok(_) => match self.client.leader(&topic, partition) {
                        Some(l) => l,
                        None => {
                            self.failing = Some(Error::Broker {
                                code: ErrorCode::LeaderNotAvailable,
                                message: format!(
                                    "partition {topic}/{partition} has no leader right now"
                                ),
                            });
                            continue;
                        }
                    },
                    Err(e) if e.retriable() => {
                        self.failing = Some(e);
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            let fp = FetchPartition {
                topic,
                partition,
                offset,
                max_bytes: self.config.partition_max_bytes,
                replica_read: false,
            };
            by_leader.entry(leader).or_default().push((fp, epoch));
        }
        let wait = self
            .config
            .fetch_max_wait
            .min(deadline.saturating_duration_since(Instant::now()));
        for (leader, asked) in by_leader {
            for (fp, _) in &asked {
                if let Some(a) = self.assigned.get_mut(&(fp.topic.clone(), fp.partition)) {
                    a.fetching = true;
                }
            }
            let client = self.client.clone();
            let req = Req::Fetch(FetchRequest {
                partitions: asked.iter().map(|(fp, _)| fp.clone()).collect(),
                max_wait_ms: wait.as_millis() as u32,
                min_bytes: 1,
                max_bytes: self.config.fetch_max_bytes,
            });
            self.in_flight.spawn(async move {
                let answer = match client.broker(leader).await {
                    Ok(conn) => client.call(&conn, req).await,
                    Err(e) => Err(e),
                };
                (asked, answer)
            });
        }
        Ok(())
    }

    /// Takes one fetch's answer; false if the leader could not be asked.
    /// Partitions sought since the fetch was sent ignore it.
    async fn take_answer(
        &mut self,
        asked: Vec<(FetchPartition, u64)>,
        answer: Result<Resp, Error>,
    ) -> Result<bool, Error> {
        for (fp, _) in &asked {
            if let Some(a) = self.assigned.get_mut(&(fp.topic.clone(), fp.partition)) {
                a.fetching = false;
            }
        }
        match answer {
            Ok(Resp::Fetch(f)) => {
                for fp in f.partitions {
                    let key = (fp.topic.clone(), fp.partition);
                    let sent = asked
                        .iter()
                        .find(|(r, _)| r.topic == fp.topic && r.partition == fp.partition)
                        .map(|(_, epoch)| *epoch);
                    let current = self.assigned.get(&key).map(|a| a.epoch);
                    if sent.is_some() && sent == current {
                        self.take(fp).await?;
                    }
                }
                Ok(true)
            }
            Ok(_) => Ok(true),
            Err(e) if e.retriable() => {
                for (fp, _) in asked {
                    self.client.set_leader(&fp.topic, fp.partition, 0);
                }
                self.failing = Some(e);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    async fn list_offset(&self, topic: &str, partition: u32, ts: i64) -> Result<i64, Error> {
        let (_, conn) = self.client.leader_conn(topic, partition).await?;
        let req = Req::ListOffsets(ListOffsetsRequest {
            topic: topic.into(),
            partition,
            timestamp: ts,
        });
        match self.client.call(&conn, req).await? {
            Resp::ListOffsets(lo) => match lo.error {
                Some(e) => Err(Error::broker(&e)),
                None => Ok(lo.offset),
            },
            _ => Err(Error::Transport("unexpected answer to list offsets".into())),
        }
    }

    /// Takes one partition's fetch answer into the buffer.
    async fn take(&mut self, fp: FetchedPartition) -> Result<(), Error> {
        let key = (fp.topic.clone(), fp.partition);
        let Some(position) = self.assigned.get(&key).and_then(|a| a.position) else {
            return Ok(());
        };
        if let Some(e) = &fp.error {
            let code = ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unknown);
            match code {
                ErrorCode::OffsetOutOfRange => {
                    // Only move forward if the records were deleted
                    // (retention); a new leader whose high watermark lags
                    // catches up, so wait for it.
                    if let Ok(start) = self.list_offset(&fp.topic, fp.partition, -2).await {
                        if position < start {
                            if let Some(a) = self.assigned.get_mut(&key) {
                                a.position = Some(start);
                            }
                        }
                    }
                }
                ErrorCode::NotLeader if e.leader_id != 0 => {
                    self.client.set_leader(&fp.topic, fp.partition, e.leader_id)
                }
                c if super::retriable_code(c) => {
                    self.client.set_leader(&fp.topic, fp.partition, 0);
                    self.failing = Some(Error::broker(e));
                }
                _ => return Err(Error::broker(e)),
            }
            return Ok(());
        }
        self.failing = None;
        let mut bytes = fp.records;
        let mut next = position;
        let topic: Arc<str> = Arc::from(fp.topic.as_str());
        while !bytes.is_empty() {
            let Ok(h) = BatchHeader::parse(&bytes, usize::MAX) else {
                break;
            };
            let size = h.size_bytes();
            if size > bytes.len() || size == 0 {
                break;
            }
            let Ok(batch) = RecordBatch::parse(bytes.split_to(size), usize::MAX) else {
                return Err(Error::Transport(format!(
                    "corrupt batch in {}/{} at offset {}",
                    fp.topic, fp.partition, h.base_offset
                )));
            };
            if !batch.is_control() {
                // Straight into the buffer, with no list of the batch's
                // records in between; a batch that fails to decode takes
                // back what it had added.
                let kept = self.buffered.len();
                let buffered = &mut self.buffered;
                let decoded = batch.for_each_record(|r| {
                    if r.offset >= next {
                        buffered.push_back(ConsumerRecord {
                            topic: topic.clone(),
                            partition: fp.partition,
                            offset: r.offset,
                            key: r.event.key,
                            value: r.event.value,
                            timestamp_ms: r.event.timestamp_ms,
                            headers: r.event.headers,
                        });
                    }
                });
                if let Err(e) = decoded {
                    self.buffered.truncate(kept);
                    return Err(Error::Transport(format!(
                        "undecodable batch in {}/{} at offset {}: {e}",
                        fp.topic, fp.partition, h.base_offset
                    )));
                }
            }
            next = next.max(batch.next_offset());
        }
        if let Some(a) = self.assigned.get_mut(&key) {
            a.position = Some(next);
        }
        Ok(())
    }
}
