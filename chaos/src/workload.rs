//! The checked workload: producers write unique values with acks=all and
//! record each attempt's outcome; at the end one consumer reads every
//! partition from the beginning to its high watermark.

use crate::Options;
use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use weir::client::{
    Acks, Admin, Client, ClientConfig, Consumer, ConsumerConfig, Producer, ProducerConfig,
    ProducerRecord, StartAt,
};
use weir::proto::ErrorCode;
use weir_sim::history::{BatchSeen, History, Outcome, Poll, Rec, Write};

/// The topic every run writes.
pub const TOPIC: &str = "chaos";

fn config(bootstrap: &[String]) -> ClientConfig {
    ClientConfig {
        bootstrap: bootstrap.to_vec(),
        request_timeout: Duration::from_secs(2),
        ..ClientConfig::default()
    }
}

/// Waits until every broker is live and a controller is elected.
pub async fn wait_ready(
    bootstrap: &[String],
    brokers: u64,
    within: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        match Admin::connect(config(bootstrap)).await {
            Ok(admin) => match admin.describe_cluster().await {
                Ok(c) if c.controller_id != 0 && live(&c) >= brokers as usize => return Ok(()),
                Ok(c) => last = format!("{} live, controller {}", live(&c), c.controller_id),
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "the cluster was not ready within {} s ({last}); see the broker logs",
        within.as_secs()
    ))
}

fn live(c: &weir::client::ClusterDesc) -> usize {
    c.brokers.iter().filter(|b| b.live).count()
}

pub async fn create_topic(bootstrap: &[String], o: &Options) -> Result<(), String> {
    let admin = Admin::connect(config(bootstrap))
        .await
        .map_err(|e| e.to_string())?;
    let rf = o.brokers.min(3) as u32;
    admin
        .create_topic(TOPIC, o.partitions, rf, BTreeMap::new())
        .await
        .map_err(|e| format!("cannot create topic {TOPIC}: {e}"))
}

/// Starts `o.producers` producers; each writes until `stop`.
pub async fn start_producers(
    bootstrap: &[String],
    o: &Options,
    history: &Arc<Mutex<History>>,
    stop: &Arc<AtomicBool>,
) -> Result<Vec<JoinHandle<()>>, String> {
    let mut tasks = Vec::new();
    for i in 0..o.producers {
        let producer = Producer::connect(
            config(bootstrap),
            ProducerConfig {
                acks: Acks::All,
                linger: Duration::ZERO,
                delivery_timeout: Duration::from_secs(5),
                request_timeout: Duration::from_secs(2),
                ..ProducerConfig::default()
            },
        )
        .await
        .map_err(|e| format!("producer {i} cannot connect: {e}"))?;
        let (history, stop) = (history.clone(), stop.clone());
        let (keys, partitions) = (o.keys, o.partitions);
        let seed = o.seed ^ (0x7072_6f64 + i as u64);
        tasks.push(tokio::spawn(async move {
            produce(producer, i, keys, partitions, seed, history, stop).await
        }));
    }
    Ok(tasks)
}

/// One producer: one write at a time, each value unique (`p{i}-{seq}`),
/// its partition fixed by its key.
async fn produce(
    producer: Producer,
    i: u32,
    keys: u32,
    partitions: u32,
    seed: u64,
    history: Arc<Mutex<History>>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let k = rng.gen_range(0..keys);
        let (key, value) = (format!("k{k}"), format!("p{i}-{seq}"));
        seq += 1;
        let partition = k % partitions;
        let rec = ProducerRecord::new(TOPIC, Bytes::from(value.clone()))
            .key(Bytes::from(key.clone()))
            .partition(partition);
        let outcome = match producer.send_wait(rec).await {
            Ok((_, offset)) => Outcome::Acked { offset },
            // A timeout or a lost leader may still have written it.
            Err(_) => Outcome::Unknown,
        };
        let failed = outcome == Outcome::Unknown;
        history.lock().unwrap().writes.push(Write {
            producer: i,
            acks_all: true,
            partition,
            key,
            value,
            outcome,
        });
        if failed {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    producer.close().await;
}

/// Reads every partition from offset 0 up to its high watermark, as one
/// consumer; gives up after `within` (what was read is returned, and the
/// checkers report the rest as never reached).
pub async fn read_all(bootstrap: &[String], o: &Options, within: Duration) -> Vec<Poll> {
    let deadline = Instant::now() + within;
    let mut polls = Vec::new();
    let Some(ends) = high_watermarks(bootstrap, o.partitions, deadline).await else {
        eprintln!("chaos: no high watermarks for topic {TOPIC}: nothing read");
        return polls;
    };
    eprintln!("chaos: reading every partition up to its high watermark {ends:?}");
    let Ok(client) = Client::connect(config(bootstrap)).await else {
        return polls;
    };
    let mut consumer = Consumer::new(client, ConsumerConfig::default());
    if consumer
        .assign_topic(TOPIC, StartAt::Earliest)
        .await
        .is_err()
    {
        return polls;
    }
    let done = |c: &Consumer| {
        (0..o.partitions).all(|p| c.position(TOPIC, p).unwrap_or(0) >= ends[p as usize])
    };
    while !done(&consumer) && Instant::now() < deadline {
        let Ok(records) = consumer.poll(Duration::from_millis(500)).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        for r in records {
            let rec = Rec {
                offset: r.offset,
                key: text(r.key.as_deref()),
                value: text(r.value.as_deref()),
            };
            // Records, not batch extents: one single-record batch each.
            polls.push(Poll {
                consumer: 0,
                partition: r.partition,
                from: r.offset,
                batches: vec![BatchSeen {
                    base: r.offset,
                    last: r.offset,
                    control: false,
                    records: vec![rec],
                }],
            });
        }
    }
    let reached: Vec<i64> = (0..o.partitions)
        .map(|p| consumer.position(TOPIC, p).unwrap_or(0))
        .collect();
    eprintln!("chaos: read up to {reached:?}");
    polls
}

/// Each partition's high watermark once every partition has a leader.
/// None if there are none by `deadline`, or if the topic stays unknown for
/// `GONE_FOR` (deleted with the data by `wipe`).
async fn high_watermarks(
    bootstrap: &[String],
    partitions: u32,
    deadline: Instant,
) -> Option<Vec<i64>> {
    const GONE_FOR: Duration = Duration::from_secs(10);
    let mut known_at = Instant::now();
    while Instant::now() < deadline {
        if let Ok(admin) = Admin::connect(config(bootstrap)).await {
            let described = admin.describe_topic(TOPIC).await;
            let unknown = described
                .as_ref()
                .is_err_and(|e| e.code() == Some(ErrorCode::UnknownTopic));
            if !unknown {
                known_at = Instant::now();
            } else if known_at.elapsed() >= GONE_FOR {
                return None;
            }
            if let Ok(t) = described {
                let led = t
                    .partitions
                    .iter()
                    .all(|p| p.leader != 0 && p.high_watermark >= 0);
                if led && t.partitions.len() == partitions as usize {
                    let mut ends = vec![0; partitions as usize];
                    for p in &t.partitions {
                        ends[p.partition as usize] = p.high_watermark;
                    }
                    return Some(ends);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

fn text(b: Option<&[u8]>) -> String {
    b.map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}
