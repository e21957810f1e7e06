//! `weir bench produce | consume | e2e`: throughput and latency of a running
//! cluster, measured through the client library as an application sees it.
//!
//! - **produce**: `--producers` producers send `--records` records of
//!   `--record-size` bytes (no key, so the sticky partitioner fills one
//!   batch per partition at a time), optionally paced at `--rate`. Latency
//!   is from the `send` call to the acknowledgement.
//! - **consume**: reads a topic from the beginning, `--records` records or
//!   up to the end offsets it had when the run started.
//! - **e2e**: a producer at a fixed rate and a consumer in the same process;
//!   each value starts with the time it was due to be sent (`n / rate`
//!   after the start) and the time it was sent, so latency is reported
//!   both from the schedule to receipt (the headline figure: it counts the
//!   time a record waited because the sender was held up, as wrk2 and
//!   HdrHistogram's corrected recording do, so a stall is not hidden by the
//!   records it kept from being sent: coordinated omission) and from the
//!   send to receipt.
//!
//! Timing uses `std::time::Instant` (see the module note in
//! [`crate::bench`]): these measure the real machine and network, which is
//! the point, and never run inside the simulator.
//!
//! Every send in flight is bounded: a producer holds at most `--in-flight`
//! unacknowledged records (and the producer's own buffer bounds bytes), so a
//! slow cluster slows the sender instead of growing memory.

use super::MIB_BYTES;
use crate::cli::output::{ClientArgs, Json, Output};
use crate::client::{
    Acks, Admin, Client, Consumer, ConsumerConfig, Delivery, Producer, ProducerConfig,
    ProducerRecord, StartAt,
};
use crate::proto::ErrorCode;
use bytes::Bytes;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Largest record a benchmark sends, in bytes (the producer's limit).
pub const RECORD_SIZE_MAX_BYTES: usize = 1024 * 1024;
/// Producers one run starts at most.
pub const PRODUCERS_MAX: u32 = 256;
/// Bytes at the start of an e2e value that carry its due and send times
/// (nanoseconds since the run's start, little-endian, 8 bytes each).
const STAMP_BYTES: usize = 16;
/// How long a run waits without any progress before it gives up.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Highest latency the histograms hold, in microseconds (10 minutes);
/// anything slower is recorded as this.
const LATENCY_MAX_US: u64 = 600_000_000;

fn parse_acks(s: &str) -> Result<Acks, String> {
    match s {
        "all" | "-1" => Ok(Acks::All),
        "1" => Ok(Acks::Leader),
        "0" => Ok(Acks::None),
        _ => Err(format!("'{s}' is not one of all, 1, 0")),
    }
}

/// Flags that create the topic before the run.
#[derive(Debug, Clone, clap::Args)]
pub struct CreateArgs {
    /// Create the topic with this many partitions first (an existing topic
    /// is used as it is).
    #[arg(long)]
    pub partitions: Option<u32>,
    /// Replication factor of the topic created by --partitions.
    #[arg(long, default_value_t = 1, requires = "partitions")]
    pub replication_factor: u32,
}

#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[arg(long)]
    pub topic: String,
    /// Records to send in all.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Bytes of each record's value (no key, no headers).
    #[arg(long = "record-size", default_value_t = 100, value_name = "BYTES")]
    pub record_size_bytes: usize,
    /// all, 1 or 0.
    #[arg(long, default_value = "1", value_parser = parse_acks)]
    pub acks: Acks,
    /// Producers, each with its own connections, sending in parallel.
    #[arg(long, default_value_t = 1)]
    pub producers: u32,
    /// Records per batch (sets the producer's batch size); default: the
    /// producer's 64 KiB batches.
    #[arg(long)]
    pub batch_records: Option<u32>,
    /// How long a batch waits for more records, in ms.
    #[arg(long = "linger-ms", default_value_t = 5)]
    pub linger_ms: u64,
    /// Records per second over all producers; default: as fast as possible.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Unacknowledged records each producer holds at most.
    #[arg(long, default_value_t = 100_000)]
    pub in_flight: u32,
    #[command(flatten)]
    pub create: CreateArgs,
}

#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[arg(long)]
    pub topic: String,
    /// Records to read; default: up to the end offsets at the start.
    #[arg(long)]
    pub records: Option<u64>,
}

#[derive(Debug, clap::Args)]
pub struct E2eArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[arg(long)]
    pub topic: String,
    /// Records per second sent.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Records to send and receive.
    #[arg(long, default_value_t = 10_000)]
    pub records: u64,
    /// Bytes of each value (at least 8: the send time).
    #[arg(long = "record-size", default_value_t = 100, value_name = "BYTES")]
    pub record_size_bytes: usize,
    /// all, 1 or 0.
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    pub acks: Acks,
    /// How long a batch waits for more records, in ms (0: a batch goes as
    /// soon as a request slot is free).
    #[arg(long = "linger-ms", default_value_t = 0)]
    pub linger_ms: u64,
    #[command(flatten)]
    pub create: CreateArgs,
}

fn check_create(c: &CreateArgs) -> Result<(), String> {
    if c.partitions == Some(0) {
        return Err("--partitions must be at least 1".into());
    }
    if c.replication_factor == 0 {
        return Err("--replication-factor must be at least 1".into());
    }
    Ok(())
}

fn check_record_size(bytes: usize, min: usize) -> Result<(), String> {
    if bytes < min || bytes > RECORD_SIZE_MAX_BYTES {
        return Err(format!(
            "--record-size must be {min}..={RECORD_SIZE_MAX_BYTES} bytes, got {bytes}"
        ));
    }
    Ok(())
}

impl ProduceArgs {
    /// Rejects values the run cannot use, with a message naming the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.records == 0 {
            return Err("--records must be at least 1".into());
        }
        check_record_size(self.record_size_bytes, 1)?;
        if self.producers == 0 || self.producers > PRODUCERS_MAX {
            return Err(format!(
                "--producers must be 1..={PRODUCERS_MAX}, got {}",
                self.producers
            ));
        }
        if self.batch_records == Some(0) {
            return Err("--batch-records must be at least 1".into());
        }
        if self.rate == Some(0) {
            return Err("--rate must be at least 1 record per second".into());
        }
        if self.in_flight == 0 {
            return Err("--in-flight must be at least 1".into());
        }
        if self.linger_ms > 60_000 {
            return Err("--linger-ms must be at most 60000".into());
        }
        check_create(&self.create)
    }
}

impl ConsumeArgs {
    pub fn validate(&self) -> Result<(), String> {
        if self.records == Some(0) {
            return Err("--records must be at least 1".into());
        }
        Ok(())
    }
}

impl E2eArgs {
    pub fn validate(&self) -> Result<(), String> {
        if self.records == 0 {
            return Err("--records must be at least 1".into());
        }
        if self.rate == 0 {
            return Err("--rate must be at least 1 record per second".into());
        }
        check_record_size(self.record_size_bytes, STAMP_BYTES)?;
        if self.linger_ms > 60_000 {
            return Err("--linger-ms must be at most 60000".into());
        }
        check_create(&self.create)
    }
}

/// Latency percentiles, in ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            p50_ms: ms(h.value_at_quantile(0.50)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// "produce", "consume" or "e2e".
    pub kind: &'static str,
    pub records: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    /// None for consume. For e2e, from each record's scheduled send time.
    pub latency: Option<Latency>,
    /// E2e only: from each record's actual send time, which leaves out the
    /// time records waited to be sent (so it is the kinder figure).
    pub latency_from_send: Option<Latency>,
    /// Produce only, where the brokers report their storage writes.
    pub write_amplification: Option<super::amplification::Amplification>,
    /// Produce and e2e: the brokers' driver timings over the run (empty
    /// where the brokers cannot say).
    pub brokers: Vec<super::brokers::BrokerTimings>,
    /// Produce and e2e: the machine's stalls over the run, as the client
    /// saw them (see `hiccup`).
    pub hiccups: Option<super::hiccup::Hiccups>,
}

impl Summary {
    pub fn records_per_sec(&self) -> f64 {
        per_sec(self.records as f64, self.elapsed)
    }

    /// MiB (2^20 bytes) of record values per second.
    pub fn mb_per_sec(&self) -> f64 {
        per_sec(self.bytes as f64 / MIB_BYTES as f64, self.elapsed)
    }
}

fn per_sec(n: f64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs == 0.0 {
        0.0
    } else {
        n / secs
    }
}

/// Rounds for output: two decimals is more than these runs can resolve.
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The summary as text or as one JSON object.
pub fn render(s: &Summary, output: Output) -> String {
    match output {
        Output::Json => {
            let num = |x: f64| Json::Num(round2(x));
            let mut fields = vec![
                ("records", Json::UInt(s.records)),
                ("records_per_sec", num(s.records_per_sec())),
                ("mb_per_sec", num(s.mb_per_sec())),
            ];
            if let Some(l) = s.latency {
                fields.push((
                    "latency_ms",
                    Json::obj([
                        ("p50", num(l.p50_ms)),
                        ("p99", num(l.p99_ms)),
                        ("p999", num(l.p999_ms)),
                        ("max", num(l.max_ms)),
                    ]),
                ));
            }
            if let Some(l) = s.latency_from_send {
                fields.push((
                    "latency_from_send_ms",
                    Json::obj([
                        ("p50", num(l.p50_ms)),
                        ("p99", num(l.p99_ms)),
                        ("p999", num(l.p999_ms)),
                        ("max", num(l.max_ms)),
                    ]),
                ));
            }
            if let Some(ratio) = s.write_amplification.and_then(|a| a.ratio()) {
                fields.push(("write_amplification", num(ratio)));
            }
            if let Some(h) = s.hiccups {
                fields.push((
                    "hiccup_ms",
                    Json::obj([("p99", num(h.p99_ms)), ("max", num(h.max_ms))]),
                ));
            }
            if !s.brokers.is_empty() {
                fields.push(("brokers", super::brokers::json(&s.brokers)));
            }
            fields.push(("elapsed_ms", Json::UInt(s.elapsed.as_millis() as u64)));
            Json::obj(fields).render() + "\n"
        }
        Output::Table => {
            let mut out = format!(
                "{}: {} records in {:.2} s: {:.0} records/s, {:.2} MiB/s\n",
                s.kind,
                s.records,
                s.elapsed.as_secs_f64(),
                s.records_per_sec(),
                s.mb_per_sec()
            );
            if let Some(l) = s.latency {
                let from = match s.latency_from_send {
                    Some(_) => " (from scheduled send)",
                    None => "",
                };
                out.push_str(&format!(
                    "latency ms{from}: p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}\n",
                    l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms
                ));
            }
            if let Some(l) = s.latency_from_send {
                out.push_str(&format!(
                    "latency ms (from actual send): p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}\n",
                    l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms
                ));
            }
            if let Some(a) = s.write_amplification {
                if let Some(ratio) = a.ratio() {
                    out.push_str(&format!(
                        "write amplification: {ratio:.3} ({} bytes written to storage by the \
                         brokers for {} bytes of partition log on all replicas)\n",
                        a.disk_bytes, a.log_bytes
                    ));
                }
            }
            if let Some(h) = s.hiccups {
                out.push_str(&format!(
                    "client hiccups (1 ms sleeps woken late) ms: p99 {:.2}  max {:.2}\n",
                    h.p99_ms, h.max_ms
                ));
            }
            out.push_str(&super::brokers::text(&s.brokers));
            out
        }
    }
}

/// Counters shared by the workers and the once-a-second progress line.
struct Progress {
    records: AtomicU64,
    bytes: AtomicU64,
    latency_us: Mutex<Histogram<u64>>,
    /// E2e only: latencies from the actual send (`latency_us` is then from
    /// the schedule).
    latency_from_send_us: Mutex<Histogram<u64>>,
    done: AtomicBool,
}

impl Progress {
    fn new() -> Result<Arc<Progress>, String> {
        Ok(Arc::new(Progress {
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            latency_us: Mutex::new(new_histogram()?),
            latency_from_send_us: Mutex::new(new_histogram()?),
            done: AtomicBool::new(false),
        }))
    }

    /// Adds a worker's latencies to the shared histogram and empties it.
    fn merge_latency(&self, local: &mut Histogram<u64>) {
        merge_into(&self.latency_us, local);
    }

    fn histogram(&self) -> Histogram<u64> {
        self.latency_us
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn histogram_from_send(&self) -> Histogram<u64> {
        self.latency_from_send_us
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn merge_into(shared: &Mutex<Histogram<u64>>, local: &mut Histogram<u64>) {
    if local.is_empty() {
        return;
    }
    let mut h = shared.lock().unwrap_or_else(|e| e.into_inner());
    // Same bounds on both sides: adding cannot fail.
    let _ = h.add(&*local);
    local.reset();
}

fn new_histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3)
        .map_err(|e| format!("cannot create the latency histogram: {e}"))
}

/// Prints a progress line on stderr every second until `done`.
fn spawn_progress(kind: &'static str, p: Arc<Progress>, with_latency: bool) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let (mut last_records, mut last_bytes) = (0u64, 0u64);
        let mut last = Instant::now();
        // The latencies already reported, to tell the last second's apart.
        let mut seen = p.histogram();
        loop {
            tick.tick().await;
            if p.done.load(Ordering::Relaxed) {
                return;
            }
            let now = Instant::now();
            let (r, b) = (
                p.records.load(Ordering::Relaxed),
                p.bytes.load(Ordering::Relaxed),
            );
            let dt = now - last;
            let mut line = format!(
                "{kind}: {r} records, {:.0} records/s, {:.2} MiB/s",
                per_sec((r - last_records) as f64, dt),
                per_sec((b - last_bytes) as f64 / MIB_BYTES as f64, dt)
            );
            if with_latency {
                let h = p.histogram();
                if !h.is_empty() {
                    // The last second's own p99 too: the cumulative one
                    // hides when in the run the slow records were.
                    let mut window = h.clone();
                    let window_p99 = match window.subtract(&seen) {
                        Ok(()) if !window.is_empty() => {
                            format!("{:.2}", window.value_at_quantile(0.99) as f64 / 1000.0)
                        }
                        _ => "-".into(),
                    };
                    line.push_str(&format!(
                        ", p99 {window_p99} ms in the last second, {:.2} ms so far",
                        h.value_at_quantile(0.99) as f64 / 1000.0
                    ));
                    seen = h;
                }
            }
            let _ = writeln!(std::io::stderr(), "{line}");
            (last_records, last_bytes, last) = (r, b, now);
        }
    });
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// Creates the topic if asked to and waits until every partition has a
/// leader; fails for a topic that does not exist.
async fn prepare_topic(client: &Client, topic: &str, create: &CreateArgs) -> Result<u32, String> {
    if let Some(partitions) = create.partitions {
        let admin = Admin::new(client.clone());
        match admin
            .create_topic(
                topic,
                partitions,
                create.replication_factor,
                BTreeMap::new(),
            )
            .await
        {
            Ok(()) => {}
            Err(e) if e.code() == Some(ErrorCode::TopicAlreadyExists) => {
                eprintln!("note: topic '{topic}' exists; using it as it is");
            }
            Err(e) => return Err(format!("cannot create topic '{topic}': {e}")),
        }
    }
    let deadline = Instant::now() + STALL_TIMEOUT;
    loop {
        match client.refresh_topic(topic).await {
            Ok(t) if !t.partitions.is_empty() && t.partitions.iter().all(|p| p.leader_id != 0) => {
                return Ok(t.partitions.len() as u32)
            }
            Ok(_) => {}
            Err(e) if !e.retriable() => return Err(e.to_string()),
            Err(_) => {}
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "topic '{topic}' has partitions without a leader after {} s",
                STALL_TIMEOUT.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `start + n / rate`, if that is in the future by more than a
/// millisecond (shorter sleeps are below the timer's resolution).
async fn pace(start: Instant, n: u64, rate: Option<u64>) {
    if let Some(rate) = rate {
        let due = start + Duration::from_secs_f64(n as f64 / rate as f64);
        let now = Instant::now();
        if due > now + Duration::from_millis(1) {
            tokio::time::sleep(due - now).await;
        }
    }
}

pub fn run_produce(args: &ProduceArgs) -> Result<Summary, String> {
    let config = args.client.config().map_err(|e| e.to_string())?;
    runtime()?.block_on(async {
        let client = Client::connect(config.clone())
            .await
            .map_err(|e| e.to_string())?;
        prepare_topic(&client, &args.topic, &args.create).await?;
        let admin = Admin::new(client.clone());
        let amplification_start = super::amplification::snapshot(&admin, &args.topic).await;
        let timed = super::brokers::reset(&admin).await;
        let hiccups = super::hiccup::start();
        let mut producer_config = ProducerConfig {
            acks: args.acks,
            linger: Duration::from_millis(args.linger_ms),
            ..ProducerConfig::default()
        };
        if let Some(k) = args.batch_records {
            // Encoded record: the value plus about 8 bytes of varints and
            // attributes; the batch header is 61 bytes.
            producer_config.batch_size = (k as usize)
                .saturating_mul(args.record_size_bytes + 8)
                .saturating_add(61);
        }
        let progress = Progress::new()?;
        spawn_progress("produce", progress.clone(), true);
        // Static bytes: cloning the value for each record is then free (no
        // reference count to touch). Leaked once per run, at most 1 MiB.
        let value = Bytes::from_static(Vec::leak(vec![b'x'; args.record_size_bytes]));
        let producers = u64::from(args.producers);
        let start = Instant::now();
        let mut workers = Vec::new();
        for i in 0..producers {
            // Producer i sends records i, i+P, i+2P, ...
            let count = args.records / producers + u64::from(i < args.records % producers);
            let client = Client::connect(config.clone())
                .await
                .map_err(|e| e.to_string())?;
            let producer = Producer::new(client, producer_config.clone());
            let rate = args.rate.map(|r| (r / producers).max(1));
            workers.push(tokio::spawn(produce_worker(
                producer,
                args.topic.as_str().into(),
                value.clone(),
                count,
                rate,
                args.in_flight as usize,
                progress.clone(),
            )));
        }
        let mut first_error = None;
        for w in workers {
            let r = w
                .await
                .unwrap_or_else(|e| Err(format!("a producer task failed: {e}")));
            if let Err(e) = r {
                first_error.get_or_insert(e);
            }
        }
        let elapsed = start.elapsed();
        progress.done.store(true, Ordering::Relaxed);
        if let Some(e) = first_error {
            return Err(e);
        }
        let write_amplification = match amplification_start {
            Some(start) => super::amplification::snapshot(&admin, &args.topic)
                .await
                .and_then(|end| super::amplification::between(&start, &end)),
            None => None,
        };
        let hiccups = hiccups.and_then(|m| m.stop());
        let brokers = match timed {
            true => super::brokers::read(&admin).await,
            false => Vec::new(),
        };
        Ok(Summary {
            kind: "produce",
            records: progress.records.load(Ordering::Relaxed),
            bytes: progress.bytes.load(Ordering::Relaxed),
            elapsed,
            latency: Some(Latency::of(&progress.histogram())),
            latency_from_send: None,
            write_amplification,
            brokers,
            hiccups,
        })
    })
}

/// Deliveries handed from a producer's sending loop to its collector at a
/// time (one channel message per chunk, not per record).
const CHUNK_RECORDS: usize = 256;
/// The collector reads the clock again after this many records that were
/// already acknowledged when it got to them.
const CLOCK_REUSE_RECORDS: u32 = 64;
/// The sending loop reads the clock for a record's send time once per this
/// many records; the others reuse the reading, which is earlier than their
/// send, so their latency can only come out longer (by the time a few sends
/// take: microseconds).
const SEND_CLOCK_RECORDS: u64 = 8;
/// The collector adds its latencies to the shared histogram every this many
/// records (and at the end).
const MERGE_RECORDS: u64 = 4096;
/// The e2e receiver merges at least this often when records arrive slowly.
const E2E_MERGE_INTERVAL: Duration = Duration::from_millis(100);

/// Sends `count` records and collects their acknowledgements in send order
/// on a second task, holding about `in_flight` unacknowledged at most
/// (counted in chunks of up to [`CHUNK_RECORDS`]).
async fn produce_worker(
    producer: Producer,
    topic: Arc<str>,
    value: Bytes,
    count: u64,
    rate: Option<u64>,
    in_flight: usize,
    progress: Arc<Progress>,
) -> Result<(), String> {
    // Paced runs hand each record over at once: a record held in a partial
    // chunk while the sender sleeps would be seen late by the collector.
    let chunk = if rate.is_some() {
        1
    } else {
        CHUNK_RECORDS.min(in_flight)
    };
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<Vec<(Instant, Delivery)>>((in_flight / chunk).max(1));
    let size = value.len() as u64;
    let collector = {
        let progress = progress.clone();
        tokio::spawn(async move {
            // In send order: a record acknowledged before an earlier one is
            // counted when the earlier one is. Batches of one partition are
            // acknowledged in order, so this only adds the spread between
            // partitions' batches in flight at the same time.
            //
            // The clock is read when the collector had to wait for an
            // acknowledgement. A record already acknowledged when the
            // collector gets to it reuses that reading (at most
            // CLOCK_REUSE_RECORDS times, and never one older than its send),
            // so its latency can be short by the collector's own time since
            // then: microseconds, against milliseconds measured.
            let mut hist = new_histogram()?;
            let mut now = Instant::now();
            let mut reused = 0u32;
            let mut unmerged = 0u64;
            while let Some(chunk) = rx.recv().await {
                let n = chunk.len() as u64;
                for (sent, mut delivery) in chunk {
                    let ready = std::future::poll_fn(|cx| {
                        std::task::Poll::Ready(std::pin::Pin::new(&mut delivery).poll(cx))
                    })
                    .await;
                    let outcome = match ready {
                        std::task::Poll::Ready(o) => {
                            reused += 1;
                            if reused >= CLOCK_REUSE_RECORDS || now < sent {
                                now = Instant::now();
                                reused = 0;
                            }
                            o
                        }
                        std::task::Poll::Pending => {
                            let o = delivery.await;
                            now = Instant::now();
                            reused = 0;
                            o
                        }
                    };
                    outcome.map_err(|e| e.to_string())?;
                    let us = (now.saturating_duration_since(sent).as_micros() as u64)
                        .clamp(1, LATENCY_MAX_US);
                    hist.saturating_record(us);
                }
                progress.records.fetch_add(n, Ordering::Relaxed);
                progress.bytes.fetch_add(n * size, Ordering::Relaxed);
                unmerged += n;
                if unmerged >= MERGE_RECORDS {
                    progress.merge_latency(&mut hist);
                    unmerged = 0;
                }
            }
            progress.merge_latency(&mut hist);
            Ok::<(), String>(())
        })
    };
    let start = Instant::now();
    let mut failed = None;
    let mut pending = Vec::with_capacity(chunk);
    let mut sent = start;
    for n in 0..count {
        pace(start, n, rate).await;
        if n % SEND_CLOCK_RECORDS == 0 || rate.is_some() {
            sent = Instant::now();
        }
        let rec = ProducerRecord {
            topic: topic.clone(),
            value: Some(value.clone()),
            ..Default::default()
        };
        match producer.send(rec).await {
            Ok(d) => {
                pending.push((sent, d));
                if pending.len() >= chunk {
                    let full = std::mem::replace(&mut pending, Vec::with_capacity(chunk));
                    if tx.send(full).await.is_err() {
                        // The collector stopped on an error; it reports it.
                        break;
                    }
                }
            }
            Err(e) => {
                failed = Some(e.to_string());
                break;
            }
        }
        if n % 1024 == 0 {
            // Let the collector and the producer's tasks run on a busy
            // runtime.
            tokio::task::yield_now().await;
        }
    }
    if !pending.is_empty() {
        let _ = tx.send(pending).await;
    }
    producer.flush().await;
    drop(tx);
    let collected = collector
        .await
        .unwrap_or_else(|e| Err(format!("a collector task failed: {e}")));
    match failed {
        Some(e) => Err(e),
        None => collected,
    }
}

pub fn run_consume(args: &ConsumeArgs) -> Result<Summary, String> {
    let config = args.client.config().map_err(|e| e.to_string())?;
    runtime()?.block_on(async {
        let client = Client::connect(config).await.map_err(|e| e.to_string())?;
        prepare_topic(
            &client,
            &args.topic,
            &CreateArgs {
                partitions: None,
                replication_factor: 1,
            },
        )
        .await?;
        // Where to stop: --records, or each partition's end at the start.
        let ends: BTreeMap<u32, i64> = match args.records {
            Some(_) => BTreeMap::new(),
            None => Admin::new(client.clone())
                .describe_topic(&args.topic)
                .await
                .map_err(|e| e.to_string())?
                .partitions
                .iter()
                .map(|p| (p.partition, p.high_watermark))
                .collect(),
        };
        let mut consumer = Consumer::new(
            client,
            ConsumerConfig {
                max_poll_records: 100_000,
                ..ConsumerConfig::default()
            },
        );
        consumer
            .assign_topic(&args.topic, StartAt::Earliest)
            .await
            .map_err(|e| e.to_string())?;
        let progress = Progress::new()?;
        spawn_progress("consume", progress.clone(), false);
        let start = Instant::now();
        let mut last_progress = Instant::now();
        let (mut records, mut bytes) = (0u64, 0u64);
        loop {
            let done = match args.records {
                Some(n) => records >= n,
                None => ends.iter().all(|(p, end)| {
                    consumer
                        .position(&args.topic, *p)
                        .is_some_and(|pos| pos >= *end)
                }),
            };
            if done {
                break;
            }
            let batch = consumer
                .poll(Duration::from_millis(500))
                .await
                .map_err(|e| e.to_string())?;
            if batch.is_empty() {
                if last_progress.elapsed() >= STALL_TIMEOUT {
                    return Err(format!(
                        "no records for {} s after {records}; is the topic shorter than --records?",
                        STALL_TIMEOUT.as_secs()
                    ));
                }
                continue;
            }
            last_progress = Instant::now();
            for r in &batch {
                let b =
                    r.value.as_ref().map_or(0, |v| v.len()) + r.key.as_ref().map_or(0, |k| k.len());
                records += 1;
                bytes += b as u64;
            }
            progress.records.store(records, Ordering::Relaxed);
            progress.bytes.store(bytes, Ordering::Relaxed);
        }
        let elapsed = start.elapsed();
        progress.done.store(true, Ordering::Relaxed);
        Ok(Summary {
            kind: "consume",
            records,
            bytes,
            elapsed,
            latency: None,
            latency_from_send: None,
            write_amplification: None,
            brokers: Vec::new(),
            hiccups: None,
        })
    })
}

/// An e2e value's due and send times (ns since the run's start); the caller
/// has checked it holds at least [`STAMP_BYTES`].
fn read_stamp(v: &[u8]) -> (u64, u64) {
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&v[at..at + 8]);
        u64::from_le_bytes(b)
    };
    (word(0), word(8))
}

/// Deliveries the e2e sender hands to its checking task at once.
const E2E_CHUNK_RECORDS: usize = 256;
/// The buffer e2e values are cut from, refilled when used up.
const E2E_VALUE_BUFFER_BYTES: usize = 1 << 20;

pub fn run_e2e(args: &E2eArgs) -> Result<Summary, String> {
    let config = args.client.config().map_err(|e| e.to_string())?;
    runtime()?.block_on(async {
        let client = Client::connect(config.clone())
            .await
            .map_err(|e| e.to_string())?;
        let partitions = prepare_topic(&client, &args.topic, &args.create).await?;
        let admin = Admin::new(client.clone());
        let mut consumer = Consumer::new(
            client,
            ConsumerConfig {
                max_poll_records: 100_000,
                fetch_max_wait: Duration::from_millis(100),
                ..ConsumerConfig::default()
            },
        );
        consumer
            .assign_topic(&args.topic, StartAt::Latest)
            .await
            .map_err(|e| e.to_string())?;
        // Resolve the starting positions before anything is sent.
        let mut resolve_deadline = Instant::now() + STALL_TIMEOUT;
        while (0..partitions).any(|p| consumer.position(&args.topic, p).is_none()) {
            let stray = consumer
                .poll(Duration::ZERO)
                .await
                .map_err(|e| e.to_string())?;
            if !stray.is_empty() {
                // Someone else is writing; keep the clock honest by
                // restarting the wait.
                resolve_deadline = Instant::now() + STALL_TIMEOUT;
            }
            if Instant::now() >= resolve_deadline {
                return Err("cannot find the end of the topic's partitions".into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let producer = Producer::connect(
            config,
            ProducerConfig {
                acks: args.acks,
                linger: Duration::from_millis(args.linger_ms),
                ..ProducerConfig::default()
            },
        )
        .await
        .map_err(|e| e.to_string())?;
        let timed = super::brokers::reset(&admin).await;
        let hiccups = super::hiccup::start();
        let progress = Progress::new()?;
        spawn_progress("e2e", progress.clone(), true);
        // Send times are nanoseconds since `base`, which sender and receiver
        // share because they are this one process.
        let base = Instant::now();
        let mut sender = Some({
            let topic: Arc<str> = args.topic.as_str().into();
            let (records, rate, size) = (args.records, args.rate, args.record_size_bytes);
            tokio::spawn(async move {
                // Deliveries go to the checking task in chunks, and values
                // are cut from one buffer: the sender shares the two cores
                // with the brokers and the consumer, so its cost per record
                // is kept down (one clock read, no allocation of its own).
                let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Delivery>>(1_024);
                let acks = tokio::spawn(async move {
                    while let Some(chunk) = rx.recv().await {
                        for d in chunk {
                            d.await.map_err(|e| e.to_string())?;
                        }
                    }
                    Ok::<(), String>(())
                });
                // Record timestamps: this wall-clock reading plus the time
                // since the run's start (the producer would otherwise read
                // the wall clock for every record).
                let wall_base_ms = crate::client::producer::wall_clock_ms();
                let mut values = bytes::BytesMut::new();
                let mut chunk = Vec::with_capacity(E2E_CHUNK_RECORDS);
                for n in 0..records {
                    let mut now = Instant::now();
                    let due = base + Duration::from_secs_f64(n as f64 / rate as f64);
                    if due > now + Duration::from_millis(1) {
                        // Ahead of the rate: hand over what is sent, then wait.
                        if !chunk.is_empty() && tx.send(std::mem::take(&mut chunk)).await.is_err() {
                            break;
                        }
                        tokio::time::sleep(due - now).await;
                        now = Instant::now();
                    }
                    let stamp = now.duration_since(base).as_nanos() as u64;
                    // Behind the schedule (the producer's window was full,
                    // or this task was not run): the record was due at
                    // `due`, and the wait since then is part of its latency.
                    let due_ns = due.saturating_duration_since(base).as_nanos() as u64;
                    if values.capacity() < size {
                        values.reserve(size.max(E2E_VALUE_BUFFER_BYTES));
                    }
                    values.extend_from_slice(&due_ns.min(stamp).to_le_bytes());
                    values.extend_from_slice(&stamp.to_le_bytes());
                    values.resize(values.len() + size - STAMP_BYTES, 0);
                    let value = values.split_to(size).freeze();
                    let mut record = ProducerRecord::new(topic.clone(), value);
                    record.timestamp_ms = Some(wall_base_ms + (stamp / 1_000_000) as i64);
                    chunk.push(producer.send(record).await.map_err(|e| e.to_string())?);
                    if chunk.len() == E2E_CHUNK_RECORDS
                        && tx.send(std::mem::take(&mut chunk)).await.is_err()
                    {
                        break;
                    }
                }
                if !chunk.is_empty() {
                    let _ = tx.send(chunk).await;
                }
                producer.flush().await;
                drop(tx);
                acks.await
                    .unwrap_or_else(|e| Err(format!("an ack task failed: {e}")))
            })
        });
        let (mut records, mut bytes) = (0u64, 0u64);
        let (mut local, mut local_from_send) = (new_histogram()?, new_histogram()?);
        let (mut unmerged, mut merged_at) = (0u64, Instant::now());
        let mut last_progress = Instant::now();
        while records < args.records {
            let batch = consumer
                .poll(Duration::from_millis(200))
                .await
                .map_err(|e| e.to_string())?;
            let now_ns = base.elapsed().as_nanos() as u64;
            if batch.is_empty() {
                // A sender that failed is the reason nothing arrives.
                if let Some(handle) = sender.take_if(|h| h.is_finished()) {
                    handle
                        .await
                        .unwrap_or_else(|e| Err(format!("the sender task failed: {e}")))?;
                }
                if sender.is_none() && last_progress.elapsed() >= STALL_TIMEOUT {
                    return Err(format!(
                        "received {records} of {} records; the rest did not arrive within {} s",
                        args.records,
                        STALL_TIMEOUT.as_secs()
                    ));
                }
                continue;
            }
            last_progress = Instant::now();
            for r in &batch {
                let Some(v) = r.value.as_ref().filter(|v| v.len() >= STAMP_BYTES) else {
                    continue;
                };
                let (due_ns, sent_ns) = read_stamp(v);
                let us = |from_ns: u64| {
                    (now_ns.saturating_sub(from_ns) / 1_000).clamp(1, LATENCY_MAX_US)
                };
                local.saturating_record(us(due_ns));
                local_from_send.saturating_record(us(sent_ns));
                records += 1;
                bytes += v.len() as u64;
            }
            // Merging walks and clears the whole histogram (~21k buckets),
            // whatever it holds: once per poll it cost the receiver more
            // than the records did at low rates. So it waits for
            // MERGE_RECORDS records or E2E_MERGE_INTERVAL (the progress
            // lines read the shared histogram once a second).
            unmerged += batch.len() as u64;
            if unmerged >= MERGE_RECORDS || merged_at.elapsed() >= E2E_MERGE_INTERVAL {
                progress.merge_latency(&mut local);
                merge_into(&progress.latency_from_send_us, &mut local_from_send);
                (unmerged, merged_at) = (0, Instant::now());
            }
            progress.records.store(records, Ordering::Relaxed);
            progress.bytes.store(bytes, Ordering::Relaxed);
        }
        progress.merge_latency(&mut local);
        merge_into(&progress.latency_from_send_us, &mut local_from_send);
        let elapsed = base.elapsed();
        progress.done.store(true, Ordering::Relaxed);
        if let Some(handle) = sender {
            handle
                .await
                .unwrap_or_else(|e| Err(format!("the sender task failed: {e}")))?;
        }
        let hiccups = hiccups.and_then(|m| m.stop());
        let brokers = match timed {
            true => super::brokers::read(&admin).await,
            false => Vec::new(),
        };
        Ok(Summary {
            kind: "e2e",
            records,
            bytes,
            elapsed,
            latency: Some(Latency::of(&progress.histogram())),
            latency_from_send: Some(Latency::of(&progress.histogram_from_send())),
            write_amplification: None,
            brokers,
            hiccups,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_the_documented_keys() {
        let s = Summary {
            kind: "produce",
            records: 1000,
            bytes: 100_000,
            elapsed: Duration::from_millis(500),
            latency: Some(Latency {
                p50_ms: 1.0,
                p99_ms: 2.0,
                p999_ms: 3.0,
                max_ms: 4.0,
            }),
            latency_from_send: None,
            write_amplification: None,
            brokers: Vec::new(),
            hiccups: None,
        };
        let j = render(&s, Output::Json);
        assert!(j.starts_with(r#"{"records":1000,"records_per_sec":2000,"mb_per_sec":0.19,"latency_ms":{"p50":1,"p99":2,"p999":3,"max":4}"#), "{j}");
        assert!(!j.contains("write_amplification"), "{j}");
        let with = Summary {
            write_amplification: Some(super::super::amplification::Amplification {
                disk_bytes: 1050,
                log_bytes: 1000,
            }),
            ..s
        };
        let j = render(&with, Output::Json);
        assert!(j.contains(r#""write_amplification":1.05"#), "{j}");
        assert!(render(&with, Output::Table).contains("write amplification: 1.050"));
    }

    #[test]
    fn e2e_reports_both_latencies_scheduled_first() {
        let l = |p99_ms| Latency {
            p50_ms: 1.0,
            p99_ms,
            p999_ms: 30.0,
            max_ms: 40.0,
        };
        let s = Summary {
            kind: "e2e",
            records: 10,
            bytes: 1000,
            elapsed: Duration::from_secs(1),
            latency: Some(l(25.0)),
            latency_from_send: Some(l(5.0)),
            write_amplification: None,
            brokers: Vec::new(),
            hiccups: None,
        };
        let j = render(&s, Output::Json);
        // scripts/bench.sh reads the first "p99": the scheduled one.
        let first = j.find(r#""latency_ms":{"p50":1,"p99":25"#);
        let second = j.find(r#""latency_from_send_ms":{"p50":1,"p99":5"#);
        assert!(
            matches!((first, second), (Some(a), Some(b)) if a < b),
            "{j}"
        );
        let t = render(&s, Output::Table);
        assert!(
            t.contains("(from scheduled send): p50 1.00  p99 25.00"),
            "{t}"
        );
        assert!(t.contains("(from actual send): p50 1.00  p99 5.00"), "{t}");
    }

    #[test]
    fn stamps_read_back_due_then_sent() {
        let mut v = Vec::new();
        v.extend_from_slice(&7u64.to_le_bytes());
        v.extend_from_slice(&9u64.to_le_bytes());
        v.extend_from_slice(&[0u8; 4]);
        assert_eq!(read_stamp(&v), (7, 9));
    }

    #[test]
    fn latency_percentiles_from_the_histogram() {
        let mut h = new_histogram().unwrap();
        for us in 1..=1000 {
            h.record(us).unwrap();
        }
        let l = Latency::of(&h);
        assert!((l.p50_ms - 0.5).abs() < 0.01, "{l:?}");
        assert!((l.max_ms - 1.0).abs() < 0.01, "{l:?}");
    }
}
