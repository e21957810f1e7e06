//! The producer: records are batched per partition (sent when a batch
//! reaches `batch_size`, or has waited `linger` and a request slot is
//! free), several batches are in flight at once over pipelined connections,
//! and a failed batch is retried with backoff (refreshing the leader) until
//! its delivery timeout.
//!
//! Without idempotence a retried batch whose first attempt did land is
//! written twice (at-least-once, as Kafka's producer without idempotence).

use super::metadata::{Client, ClientConfig};
use super::partitioner::{partition_for_key, Sticky};
use super::Error;
use crate::proto::client_request::Body as Req;
use crate::proto::client_response::Body as Resp;
use crate::proto::{ErrorCode, ProduceRequest};
use crate::types::{BatchBuilder, Event, Header};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

/// When the broker answers a produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// Once committed on a majority of replicas.
    All,
    /// Once the leader persisted it.
    Leader,
    /// Never: the send resolves once written to the socket, offset -1.
    None,
}

impl Acks {
    fn proto(self) -> crate::proto::Acks {
        match self {
            Acks::All => crate::proto::Acks::All,
            Acks::Leader => crate::proto::Acks::Leader,
            Acks::None => crate::proto::Acks::NoneAcks,
        }
    }
}

/// Producer settings.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub acks: Acks,
    /// How long a batch waits for more records before it is sent.
    pub linger: Duration,
    /// Bytes at which a batch is sent without waiting for `linger`.
    pub batch_size: usize,
    /// Bytes of records buffered (waiting or in flight) at most; `send`
    /// waits for room.
    pub buffer_memory: usize,
    /// Batches in flight at most (over all connections).
    pub max_in_flight: usize,
    /// Largest record accepted, in bytes (encoded).
    pub max_record_bytes: usize,
    /// After this a record not yet acknowledged fails.
    pub delivery_timeout: Duration,
    /// How long the broker may take to answer one produce.
    pub request_timeout: Duration,
    pub retry_backoff: Duration,
    /// Where record timestamps come from when a record has none: the wall
    /// clock by default; a simulation passes its own, so runs replay.
    pub clock: Option<crate::io::ClockRef>,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            linger: Duration::from_millis(5),
            batch_size: 64 * 1024,
            buffer_memory: 32 * 1024 * 1024,
            max_in_flight: 32,
            max_record_bytes: 1024 * 1024,
            delivery_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            retry_backoff: Duration::from_millis(100),
            clock: None,
        }
    }
}

/// A record to send. An explicit partition overrides the key's.
#[derive(Debug, Clone, Default)]
pub struct ProducerRecord {
    /// Shared: an application sending many records to a topic clones an
    /// `Arc` per record, not the name (a `&str` or `String` converts).
    pub topic: Arc<str>,
    pub partition: Option<u32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
    /// Milliseconds since the epoch; now if unset.
    pub timestamp_ms: Option<i64>,
}

impl ProducerRecord {
    pub fn new(topic: impl Into<Arc<str>>, value: impl Into<Bytes>) -> Self {
        ProducerRecord {
            topic: topic.into(),
            value: Some(value.into()),
            ..Default::default()
        }
    }

    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header {
            key: key.into(),
            value: Some(value.into()),
        });
        self
    }
}

type Outcome = Result<(u32, i64), Error>;

/// Resolves to the (partition, offset) a record was written at.
///
/// All the records of a batch share one [`Completion`]: a send allocates no
/// channel of its own, and a batch's answer wakes its waiters once.
#[derive(Debug)]
pub struct Delivery {
    done: Arc<Completion>,
    index: u32,
}

impl Future for Delivery {
    type Output = Outcome;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let done = &self.done;
        if let Some(o) = done.outcome.get() {
            return Poll::Ready(self.result(o));
        }
        let mut wakers = done.wakers.lock().unwrap_or_else(|e| e.into_inner());
        // Checked again under the lock: `complete` sets the outcome before
        // it takes the wakers, so either this sees it or it sees this waker.
        if let Some(o) = done.outcome.get() {
            return Poll::Ready(self.result(o));
        }
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Delivery {
    fn result(&self, batch: &Result<i64, Error>) -> Outcome {
        match batch {
            Ok(base) if *base < 0 => Ok((self.done.partition, -1)),
            Ok(base) => Ok((self.done.partition, base + i64::from(self.index))),
            Err(e) => Err(e.clone()),
        }
    }
}

/// The outcome of one batch (its base offset), shared by its deliveries.
/// Read without a lock once set.
#[derive(Debug)]
struct Completion {
    partition: u32,
    outcome: std::sync::OnceLock<Result<i64, Error>>,
    wakers: Mutex<Vec<std::task::Waker>>,
}

impl Completion {
    fn new(partition: u32) -> Completion {
        Completion {
            partition,
            outcome: std::sync::OnceLock::new(),
            wakers: Mutex::default(),
        }
    }

    /// Sets the outcome (the first one set wins) and wakes the waiters.
    fn complete(&self, outcome: Result<i64, Error>) {
        if self.outcome.set(outcome).is_err() {
            return;
        }
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|e| e.into_inner()));
        for w in wakers {
            w.wake();
        }
    }
}

/// A batch being filled or sent. Dropped unanswered (the producer or its
/// runtime went away), its records fail with [`Error::Closed`]; dropped in
/// any case, it gives its bytes back to the producer's buffer.
struct Acc {
    builder: BatchBuilder,
    done: Arc<Completion>,
    /// Buffer bytes held for the batch's records (permits forgotten at
    /// `send`, added back on drop).
    room_bytes: usize,
    room: Arc<Semaphore>,
    /// Delivery deadline of the batch's first (oldest) record.
    deadline: Instant,
    generation: u64,
}

impl Drop for Acc {
    fn drop(&mut self) {
        self.done.complete(Err(Error::Closed));
        self.room.add_permits(self.room_bytes);
    }
}

#[derive(Default)]
struct State {
    // BTreeMap: batches are flushed in a deterministic order. Keyed by
    // topic then partition, so a send looks its batch up by `&str`.
    accs: BTreeMap<Arc<str>, BTreeMap<u32, Acc>>,
    sticky: Sticky,
    generation: u64,
    closed: bool,
}

struct Inner {
    client: Client,
    config: ProducerConfig,
    state: Mutex<State>,
    room: Arc<Semaphore>,
    in_flight: Arc<Semaphore>,
    /// Batches not yet answered (filling or in flight): `flush` waits for 0.
    outstanding: AtomicUsize,
    idle: Notify,
}

/// The producer; cheap to clone.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("config", &self.inner.config)
            .finish()
    }
}

/// A batch's buffer is allocated at `batch_size` bytes up front, but at
/// most this: many partitions' lingering batches must not reserve far more
/// memory than the records they hold.
const BATCH_PREALLOC_MAX_BYTES: usize = 1024 * 1024;

/// Bytes a record may take in a batch beyond its size alone (the size the
/// producer accounts): its offset and timestamp deltas, one byte each
/// alone, grow to 5 and 10 bytes at most.
const RECORD_SIZE_SLACK_BYTES: usize = 16;

impl Producer {
    /// Epoch milliseconds for a record sent without a timestamp.
    fn now_ms(&self) -> i64 {
        match &self.inner.config.clock {
            Some(clock) => clock.now_ms(),
            None => wall_clock_ms(),
        }
    }

    pub fn new(client: Client, config: ProducerConfig) -> Producer {
        let permits = config.buffer_memory.clamp(1, Semaphore::MAX_PERMITS);
        Producer {
            inner: Arc::new(Inner {
                client,
                room: Arc::new(Semaphore::new(permits)),
                in_flight: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
                config,
                state: Default::default(),
                outstanding: AtomicUsize::new(0),
                idle: Notify::new(),
            }),
        }
    }

    /// Connects through `client_config.bootstrap`.
    pub async fn connect(
        client_config: ClientConfig,
        config: ProducerConfig,
    ) -> Result<Producer, Error> {
        Ok(Producer::new(Client::connect(client_config).await?, config))
    }

    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Queues a record; the returned [`Delivery`] resolves once the broker
    /// acknowledged it (or it failed). Waits while the buffer is full. Fails
    /// at once for an unknown topic, a partition out of range or a record
    /// too large.
    pub async fn send(&self, rec: ProducerRecord) -> Result<Delivery, Error> {
        let inner = &self.inner;
        let count = inner.client.partition_count(&rec.topic).await?;
        if count == 0 {
            return Err(Error::Invalid(format!(
                "topic '{}' has no partitions",
                rec.topic
            )));
        }
        let event = Event {
            key: rec.key,
            value: rec.value,
            timestamp_ms: rec.timestamp_ms.unwrap_or_else(|| self.now_ms()),
            headers: rec.headers,
        };
        // Bytes the record takes in a batch of its own: the buffer is
        // accounted in these (a record deep in a batch may differ by a byte
        // or two of varints).
        let size = BatchBuilder::lone_record_size_bytes(&event);
        let limit = inner
            .config
            .max_record_bytes
            .min(inner.config.buffer_memory);
        if size > limit {
            return Err(Error::Invalid(format!(
                "record of {size} bytes exceeds the limit of {limit} bytes"
            )));
        }
        if let Some(p) = rec.partition {
            if p >= count {
                return Err(Error::Invalid(format!(
                    "partition {p} does not exist: topic '{}' has {count} partition{} (0..{})",
                    rec.topic,
                    if count == 1 { "" } else { "s" },
                    count - 1
                )));
            }
        }
        // Room in the buffer: at once if there is some (no timer), else
        // wait up to the delivery timeout. The permit is forgotten here and
        // given back when the record's batch is answered (`Acc::drop`).
        match inner.room.try_acquire_many(size as u32) {
            Ok(permit) => permit.forget(),
            Err(tokio::sync::TryAcquireError::Closed) => return Err(Error::Closed),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                tokio::time::timeout(
                    inner.config.delivery_timeout,
                    inner.room.acquire_many(size as u32),
                )
                .await
                .map_err(|_| {
                    Error::Invalid(format!(
                        "the producer buffer stayed full for {} ms; the cluster is not keeping up",
                        inner.config.delivery_timeout.as_millis()
                    ))
                })?
                .map_err(|_| Error::Closed)?
                .forget();
            }
        }
        let mut guard = inner.state.lock().unwrap_or_else(|e| e.into_inner());
        let st = &mut *guard;
        if st.closed {
            inner.room.add_permits(size);
            return Err(Error::Closed);
        }
        let keyless = rec.partition.is_none() && event.key.is_none();
        let State {
            accs: topics,
            sticky,
            generation: last_generation,
            ..
        } = st;
        let mut partition = match (rec.partition, &event.key) {
            (Some(p), _) => p,
            (None, Some(k)) => partition_for_key(k, count),
            (None, None) => sticky.partition(&rec.topic, count),
        };
        *last_generation += 1;
        let generation = *last_generation;
        let accs = topics.entry(rec.topic.clone()).or_default();
        // A record that would take its batch past `batch_size` closes the
        // batch first, as in Kafka: batches stay within the size (a larger
        // record travels alone), and their buffers, allocated at that size,
        // never grow and copy themselves.
        let over = accs.get(&partition).is_some_and(|a| {
            !a.builder.is_empty()
                && a.builder.size_bytes() + size + RECORD_SIZE_SLACK_BYTES > inner.config.batch_size
        });
        if over {
            if let Some(full) = accs.remove(&partition) {
                self.dispatch(rec.topic.clone(), partition, full);
            }
            if keyless {
                sticky.next(&rec.topic);
                partition = sticky.partition(&rec.topic, count);
            }
        }
        let acc = accs.entry(partition).or_insert_with(|| {
            // Counted per batch, not per record: one atomic add per batch.
            inner.outstanding.fetch_add(1, Ordering::SeqCst);
            let this = self.clone();
            let key = (rec.topic.clone(), partition);
            let linger = inner.config.linger;
            tokio::spawn(async move {
                tokio::time::sleep(linger).await;
                this.linger_out(key, generation).await;
            });
            Acc {
                builder: BatchBuilder::with_capacity(
                    inner.config.batch_size.min(BATCH_PREALLOC_MAX_BYTES),
                ),
                done: Arc::new(Completion::new(partition)),
                room_bytes: 0,
                room: inner.room.clone(),
                deadline: Instant::now() + inner.config.delivery_timeout,
                generation,
            }
        });
        let index = acc.builder.len() as u32;
        acc.builder.push(&event);
        acc.room_bytes += size;
        let delivery = Delivery {
            done: acc.done.clone(),
            index,
        };
        if acc.builder.size_bytes() >= inner.config.batch_size {
            let full = accs.remove(&partition);
            if keyless {
                sticky.next(&rec.topic);
            }
            drop(guard);
            if let Some(acc) = full {
                self.dispatch(rec.topic, partition, acc);
            }
        }
        Ok(delivery)
    }

    /// Sends a record and waits for its acknowledgement.
    pub async fn send_wait(&self, rec: ProducerRecord) -> Outcome {
        self.send(rec).await?.await
    }

    /// Sends every waiting batch now and waits until every record sent so
    /// far is acknowledged or failed.
    pub async fn flush(&self) {
        self.drain_all();
        loop {
            let idle = self.inner.idle.notified();
            if self.inner.outstanding.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }

    /// Flushes and refuses further sends.
    pub async fn close(&self) {
        self.flush().await;
        self.inner
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .closed = true;
    }

    /// A batch that has lingered its time is sent once a request slot is
    /// free; until then it stays open and keeps taking records (up to
    /// `batch_size`), as Kafka's accumulator does. Under load batches grow
    /// instead of queueing as many small requests, each costing the
    /// brokers a Raft entry and its messages.
    async fn linger_out(&self, (topic, partition): (Arc<str>, u32), generation: u64) {
        // The semaphore is never closed; without a permit the batch is
        // sent unthrottled rather than stranded.
        let permit = self.inner.in_flight.clone().acquire_owned().await.ok();
        let acc = {
            let mut st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
            let acc = st.accs.get_mut(&topic).and_then(|accs| {
                match accs.get(&partition)?.generation == generation {
                    true => accs.remove(&partition),
                    false => None,
                }
            });
            // A keyless batch that lingered out moves the sticky partition
            // on, as a full one does.
            if acc.is_some() {
                st.sticky.next(&topic);
            }
            st.accs.retain(|_, a| !a.is_empty());
            acc
        };
        // Gone already (sent when full, or flushed): the slot goes back.
        if let Some(acc) = acc {
            self.send_acc(topic, partition, acc, permit).await;
        }
    }

    /// Sends every waiting batch.
    fn drain_all(&self) {
        let ready = {
            let mut st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut st.accs)
        };
        for (topic, accs) in ready {
            for (partition, acc) in accs {
                self.dispatch(topic.clone(), partition, acc);
            }
        }
    }

    /// Sends a closed batch once a request slot is free.
    fn dispatch(&self, topic: Arc<str>, partition: u32, acc: Acc) {
        let this = self.clone();
        tokio::spawn(async move {
            let permit = this.inner.in_flight.clone().acquire_owned().await.ok();
            this.send_acc(topic, partition, acc, permit).await;
        });
    }

    /// Sends a batch holding a request slot (`permit`), and answers its
    /// records.
    async fn send_acc(
        &self,
        topic: Arc<str>,
        partition: u32,
        mut acc: Acc,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        let inner = &self.inner;
        let builder = std::mem::take(&mut acc.builder);
        let outcome = send_batch(inner, &topic, partition, builder, acc.deadline).await;
        drop(permit);
        acc.done.complete(outcome);
        // Gives the batch's bytes back to the buffer.
        drop(acc);
        if inner.outstanding.fetch_sub(1, Ordering::SeqCst) == 1 {
            inner.idle.notify_waiters();
        }
    }
}

/// Wall-clock epoch milliseconds, for producers given no clock (the
/// client runs in applications, not in the broker).
pub(crate) fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Sends one batch, retrying until acknowledged, a non-retriable error, or
/// the delivery timeout of its oldest record. Returns the base offset (-1
/// for acks=0).
async fn send_batch(
    inner: &Inner,
    topic: &str,
    partition: u32,
    builder: BatchBuilder,
    deadline: Instant,
) -> Result<i64, Error> {
    let bytes = builder.build().into_bytes();
    let cfg = &inner.config;
    let client = &inner.client;
    let mut last = String::from("none");
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::DeliveryTimeout {
                after_ms: cfg.delivery_timeout.as_millis() as u64,
                last_error: last,
            });
        }
        let left = deadline - now;
        let attempt = async {
            let (_, conn) = client.leader_conn(topic, partition).await?;
            let timeout = cfg.request_timeout.min(left);
            let req = Req::Produce(ProduceRequest {
                topic: topic.into(),
                partition,
                acks: cfg.acks.proto() as i32,
                batch: bytes.clone(),
                timeout_ms: timeout.as_millis().max(1) as u32,
            });
            if cfg.acks == Acks::None {
                // Nothing comes back: the request is written, then the
                // wait for an answer times out at once.
                let _ = conn.request(req, Duration::ZERO).await;
                if conn.is_broken() {
                    return Err(Error::Transport(format!(
                        "connection to {} broke",
                        conn.addr()
                    )));
                }
                return Ok(-1);
            }
            let resp = conn
                .request(req, timeout + Duration::from_secs(1))
                .await
                .map_err(Error::from)?;
            if let Some(e) = resp.error {
                return Err(Error::broker(&e));
            }
            match resp.body {
                Some(Resp::Produce(p)) => match p.error {
                    None => Ok(p.base_offset),
                    Some(e) => {
                        if e.code == ErrorCode::NotLeader as i32 && e.leader_id != 0 {
                            client.set_leader(topic, partition, e.leader_id);
                        } else {
                            client.set_leader(topic, partition, 0);
                        }
                        Err(Error::broker(&e))
                    }
                },
                _ => Err(Error::Transport("unexpected answer to a produce".into())),
            }
        };
        match tokio::time::timeout(left, attempt).await {
            Ok(Ok(base)) => return Ok(base),
            Ok(Err(e)) if !e.retriable() => return Err(e),
            Ok(Err(e)) => {
                if !matches!(e.code(), Some(ErrorCode::NotLeader)) {
                    client.set_leader(topic, partition, 0);
                }
                last = e.to_string();
            }
            Err(_) => last = "request timed out".into(),
        }
        tokio::time::sleep(
            cfg.retry_backoff
                .min(deadline.saturating_duration_since(Instant::now())),
        )
        .await;
    }
}
