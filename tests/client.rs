//! The client library against an in-process three-broker cluster: the
//! leader is killed during a stream of sends and later restarts; no
//! acknowledged send is lost and the consumer, reading all along, skips no
//! record. Also the admin client's calls, and a consumer reading two
//! leaders at once.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weir::client::{
    Admin, Client, ClientConfig, Consumer, ConsumerConfig, Producer, ProducerConfig,
    ProducerRecord, StartAt,
};

fn client(cluster: &Cluster) -> Client {
    let bootstrap = cluster
        .configs
        .keys()
        .map(|id| cluster.client_addr(*id))
        .collect();
    Client::with_network(
        cluster.net.clone(),
        ClientConfig {
            bootstrap,
            request_timeout: Duration::from_secs(3),
            ..ClientConfig::default()
        },
    )
}

const TOPIC: &str = "stream";
const PARTITIONS: u32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_during_sends_loses_nothing_and_skips_nothing() {
    let mut cluster = Cluster::start(3).await;
    wait_for_cluster(&cluster).await;
    let admin = Admin::new(client(&cluster));
    admin
        .create_topic(TOPIC, PARTITIONS, 3, BTreeMap::new())
        .await
        .expect("topic created");
    let before = leaders(&cluster, TOPIC, PARTITIONS).await;

    // A consumer reading from the start the whole time.
    let mut consumer = Consumer::new(
        client(&cluster),
        ConsumerConfig {
            max_poll_records: 50,
            fetch_max_wait: Duration::from_millis(100),
            ..ConsumerConfig::default()
        },
    );
    consumer
        .assign_topic(TOPIC, StartAt::Earliest)
        .await
        .expect("assigned");
    type Seen = Arc<Mutex<BTreeMap<(u32, i64), String>>>;
    let seen: Seen = Arc::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let reader = {
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut last: BTreeMap<u32, i64> = BTreeMap::new();
            while !*stop_rx.borrow() {
                let records = consumer
                    .poll(Duration::from_millis(200))
                    .await
                    .expect("poll");
                let mut seen = seen.lock().unwrap();
                for r in &records {
                    let prev = last.insert(r.partition, r.offset);
                    assert!(
                        prev.is_none_or(|p| p < r.offset),
                        "offsets go back on {}: {prev:?} then {}",
                        r.partition,
                        r.offset
                    );
                    let value = String::from_utf8_lossy(r.value.as_deref().unwrap_or(b"")).into();
                    seen.insert((r.partition, r.offset), value);
                }
            }
        })
    };

    let producer = Producer::new(
        client(&cluster),
        ProducerConfig {
            linger: Duration::from_millis(2),
            batch_size: 1024,
            delivery_timeout: Duration::from_secs(40),
            request_timeout: Duration::from_secs(3),
            ..ProducerConfig::default()
        },
    );
    let mut deliveries = Vec::new();
    let victim = before[0];
    for i in 0..600u32 {
        if i == 200 {
            cluster.kill(victim);
        }
        if i == 350 {
            // A new leader took over while the sends went on.
            let now = leaders(&cluster, TOPIC, PARTITIONS).await;
            assert_ne!(now[0], victim);
        }
        if i == 450 {
            cluster.start_broker(victim).await;
        }
        let value = format!("value {i}");
        let rec = ProducerRecord::new(TOPIC, value.clone()).key(format!("key-{}", i % 20));
        deliveries.push((value, producer.send(rec).await.expect("queued")));
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    producer.flush().await;
    let mut acked: BTreeMap<(u32, i64), String> = BTreeMap::new();
    for (value, d) in deliveries {
        let (p, o) = d
            .await
            .unwrap_or_else(|e| panic!("{value} not acknowledged: {e}"));
        assert!(
            acked.insert((p, o), value).is_none(),
            "offset {p}/{o} given twice"
        );
    }
    assert_eq!(acked.len(), 600);

    // The consumer catches up with every acknowledged record.
    eventually(
        60,
        "the consumer to read every acknowledged record",
        || async {
            let seen = seen.lock().unwrap();
            acked.keys().all(|k| seen.contains_key(k)).then_some(())
        },
    )
    .await;
    stop_tx.send(true).unwrap();
    reader.await.expect("reader");
    let seen = seen.lock().unwrap().clone();
    for ((p, o), value) in &acked {
        assert_eq!(
            seen.get(&(*p, *o)),
            Some(value),
            "acknowledged record {p}/{o} ({value}) not consumed"
        );
    }
    // Every acknowledged record is also in the log at its offset.
    let leaders_now = leaders(&cluster, TOPIC, PARTITIONS).await;
    for p in 0..PARTITIONS {
        let c = cluster.connect(leaders_now[p as usize]).await;
        let log: BTreeMap<i64, weir::types::Record> = read_all(&c, TOPIC, p)
            .await
            .into_iter()
            .map(|r| (r.offset, r))
            .collect();
        for ((_, o), value) in acked.range((p, i64::MIN)..(p + 1, i64::MIN)) {
            let r = log.get(o).expect("acknowledged record in the log");
            assert_eq!(r.event.value.as_deref(), Some(value.as_bytes()));
        }
        // The consumer saw the whole log (no skipped offsets).
        for o in log.keys() {
            assert!(seen.contains_key(&(p, *o)), "consumer skipped {p}/{o}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls() {
    let cluster = Cluster::start(3).await;
    let controller = wait_for_cluster(&cluster).await;
    let admin = Admin::new(client(&cluster));
    let d = admin.describe_cluster().await.unwrap();
    assert_eq!(d.controller_id, controller);
    assert_eq!(d.brokers.len(), 3);
    let mut configs = BTreeMap::new();
    configs.insert("retention.ms".to_string(), "60000".to_string());
    admin.create_topic("a", 2, 3, configs).await.unwrap();
    let e = admin
        .create_topic("b", 1, 4, BTreeMap::new())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("replication factor 4"), "{e}");
    assert_eq!(admin.list_topics().await.unwrap(), ["a"]);
    leaders(&cluster, "a", 2).await;
    let producer = Producer::new(client(&cluster), ProducerConfig::default());
    let (p, o) = producer
        .send_wait(ProducerRecord::new("a", "x").partition(1))
        .await
        .unwrap();
    assert_eq!(p, 1);
    assert!(o >= 1, "offset 0 is the leader's control batch");
    let t = admin.describe_topic("a").await.unwrap();
    assert_eq!(t.partitions.len(), 2);
    assert_eq!(t.partitions[1].replicas.len(), 3);
    // o + 1, or more if leadership moved since (the preferred replica
    // takes it back after about a second), each new leader appending its
    // own control batch.
    assert!(t.partitions[1].high_watermark > o, "{t:?}");
    assert!(t.partitions[1].size_bytes > 0);
    assert_eq!(t.config["retention.ms"], "60000");
    let mut set = BTreeMap::new();
    set.insert("retention.ms".to_string(), "120000".to_string());
    admin.alter_config("a", set, vec![]).await.unwrap();
    let c = admin.describe_config("a").await.unwrap();
    assert_eq!(c["retention.ms"], "120000");
    let dirs = admin.describe_log_dirs(&["a".to_string()]).await.unwrap();
    assert_eq!(dirs.len(), 3);
    assert!(dirs.iter().all(|d| d.partitions.len() == 2));
    // Consumer start positions.
    let mut consumer = Consumer::new(client(&cluster), ConsumerConfig::default());
    consumer.assign("a", 1, StartAt::Latest).await.unwrap();
    assert!(consumer
        .poll(Duration::from_millis(300))
        .await
        .unwrap()
        .is_empty());
    // Latest is the high watermark: past the record (further if a new
    // leader appended its control batch since, see above).
    let latest = consumer.position("a", 1).expect("a position");
    assert!(latest > o, "{latest} {o}");
    consumer.seek("a", 1, StartAt::Timestamp(0));
    let got = consumer.poll(Duration::from_secs(5)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].offset, o);
    // Unknown topic: an error naming it.
    let e = producer
        .send(ProducerRecord::new("nope", "x"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("'nope'"), "{e}");
    admin.delete_topic("a").await.unwrap();
    eventually(10, "the topic to go", || async {
        admin.list_topics().await.ok().filter(|l| l.is_empty())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_timeout_fails_the_send_clearly() {
    let mut cluster = Cluster::start(3).await;
    wait_for_cluster(&cluster).await;
    let admin = Admin::new(client(&cluster));
    admin
        .create_topic("t", 1, 3, BTreeMap::new())
        .await
        .unwrap();
    leaders(&cluster, "t", 1).await;
    let producer = Producer::new(
        client(&cluster),
        ProducerConfig {
            delivery_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_millis(500),
            ..ProducerConfig::default()
        },
    );
    producer
        .send_wait(ProducerRecord::new("t", "before"))
        .await
        .expect("acknowledged while all brokers run");
    // No majority left for the partition.
    cluster.kill(2);
    cluster.kill(3);
    let started = tokio::time::Instant::now();
    let e = producer
        .send_wait(ProducerRecord::new("t", "after"))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(e, weir::client::Error::DeliveryTimeout { .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("delivery timeout of 2000 ms"), "{e}");
    // A record larger than allowed fails at once.
    let big = ProducerRecord::new("t", vec![0u8; 2 * 1024 * 1024]);
    let e = producer.send(big).await.unwrap_err();
    assert!(e.to_string().contains("exceeds the limit"), "{e}");
}

/// A poll returns the records one leader has without waiting out another
/// leader's long poll (the consumer keeps each leader's fetch in flight
/// across polls instead of waiting for every answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_from_one_leader_do_not_wait_for_another_leaders_long_poll() {
    let cluster = Cluster::start(3).await;
    wait_for_cluster(&cluster).await;
    let leaders = create_led(&cluster, "spread", 3, 1).await;
    // Partition 0 and another one led by a different broker.
    let other = leaders[1..].iter().position(|l| *l != leaders[0]);
    let (quiet, busy) = (0u32, 1 + other.expect("two leaders") as u32);
    assert_ne!(leaders[quiet as usize], leaders[busy as usize]);

    // Long polls far longer than the bound asserted below.
    let long_poll = Duration::from_secs(20);
    let config = ClientConfig {
        bootstrap: cluster
            .configs
            .keys()
            .map(|id| cluster.client_addr(*id))
            .collect(),
        request_timeout: Duration::from_secs(30),
        ..ClientConfig::default()
    };
    let mut consumer = Consumer::new(
        Client::with_network(cluster.net.clone(), config),
        ConsumerConfig {
            fetch_max_wait: long_poll,
            ..ConsumerConfig::default()
        },
    );
    consumer
        .assign("spread", quiet, StartAt::Latest)
        .await
        .unwrap();
    consumer
        .assign("spread", busy, StartAt::Latest)
        .await
        .unwrap();
    // Both long polls are now in flight (nothing to read yet).
    assert!(consumer
        .poll(Duration::from_millis(300))
        .await
        .unwrap()
        .is_empty());

    let producer = Producer::new(client(&cluster), ProducerConfig::default());
    producer
        .send_wait(ProducerRecord::new("spread", "now").partition(busy))
        .await
        .unwrap();
    let start = tokio::time::Instant::now();
    let got = consumer.poll(Duration::from_secs(60)).await.unwrap();
    let waited = start.elapsed();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].partition, busy);
    // The quiet partition's leader holds its poll for 20 s; the record
    // must not wait for it (a generous bound: this checks behaviour, not
    // speed).
    assert!(waited < Duration::from_secs(10), "waited {waited:?}");
}

/// `position` is the next offset `poll` returns, not the next one fetched:
/// records fetched but held back by `max_poll_records` are not consumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn position_counts_only_records_returned_by_poll() {
    let cluster = Cluster::start(1).await;
    wait_for_cluster(&cluster).await;
    create_led(&cluster, "held", 1, 1).await;
    let producer = Producer::new(client(&cluster), ProducerConfig::default());
    let mut last = 0;
    for i in 0..10 {
        let rec = ProducerRecord::new("held", format!("v{i}")).partition(0);
        last = producer.send_wait(rec).await.unwrap().1;
    }
    let mut consumer = Consumer::new(
        client(&cluster),
        ConsumerConfig {
            max_poll_records: 3,
            ..ConsumerConfig::default()
        },
    );
    consumer.assign("held", 0, StartAt::Earliest).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        got.extend(consumer.poll(Duration::from_secs(5)).await.unwrap());
    }
    assert_eq!(got.len(), 3, "max_poll_records is 3");
    let next = got[2].offset + 1;
    assert_eq!(consumer.position("held", 0), Some(next));
    // The rest comes from where position says.
    let mut rest = Vec::new();
    while rest
        .last()
        .is_none_or(|r: &weir::client::ConsumerRecord| r.offset < last)
    {
        rest.extend(consumer.poll(Duration::from_secs(5)).await.unwrap());
    }
    assert_eq!(rest[0].offset, next);
    assert_eq!(consumer.position("held", 0), Some(last + 1));
}
