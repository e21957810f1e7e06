//! Three brokers in one process on loopback TCP with real files: a topic of
//! 3 partitions and replication factor 3; keyed writes with acks=all; the
//! leader of a partition is killed, a new one is elected and every
//! acknowledged record is still read at its offset; the old leader restarts,
//! catches up and holds byte-identical data.

mod common;

use common::*;
use std::collections::BTreeMap;
use weir::proto::client_request::Body as Req;
use weir::proto::*;

const TOPIC: &str = "events";
const PARTITIONS: u32 = 3;

/// (partition, offset) -> (key, value) of every acknowledged record.
type Acked = BTreeMap<(u32, i64), (String, String)>;

async fn write(cluster: &Cluster, acked: &mut Acked, round: u32, n: u32) {
    for i in 0..n {
        let key = format!("key-{}", i % 7);
        let value = format!("round {round} value {i}");
        let partition = (i % 7) % PARTITIONS;
        let batch = batch_of(&[event(&key, &value)]);
        // Retry across brokers until acknowledged: leaders move during the
        // test, and NOT_LEADER names the new one.
        let resp = eventually(20, "an acknowledged write", || {
            let batch = batch.clone();
            async move {
                for id in cluster.running.keys() {
                    let c = cluster.connect(*id).await;
                    let r = produce(&c, TOPIC, partition, &batch, Acks::All).await;
                    if r.error.is_none() {
                        return Some(r);
                    }
                }
                None
            }
        })
        .await;
        acked.insert((partition, resp.base_offset), (key, value));
    }
}

async fn check_acked(cluster: &Cluster, acked: &Acked) {
    let leaders = leaders(cluster, TOPIC, PARTITIONS).await;
    for p in 0..PARTITIONS {
        let c = cluster.connect(leaders[p as usize]).await;
        let records = read_all(&c, TOPIC, p).await;
        let by_offset: BTreeMap<i64, &weir::types::Record> =
            records.iter().map(|r| (r.offset, r)).collect();
        for ((_, offset), (key, value)) in acked.range((p, i64::MIN)..(p + 1, i64::MIN)) {
            let r = by_offset
                .get(offset)
                .unwrap_or_else(|| panic!("acknowledged record at {p}/{offset} is missing"));
            assert_eq!(
                r.event.key.as_deref(),
                Some(key.as_bytes()),
                "key at {p}/{offset}"
            );
            assert_eq!(
                r.event.value.as_deref(),
                Some(value.as_bytes()),
                "value at {p}/{offset}"
            );
        }
    }
}

/// The bytes of every segment of a partition replica, concatenated.
fn replica_bytes(cluster: &Cluster, broker: u64, partition: u32) -> Vec<u8> {
    let root = cluster.data_dir(broker).join("partitions");
    let dir = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{TOPIC}-{partition}."))
        })
        .expect("partition directory");
    let mut segments: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    segments
        .iter()
        .flat_map(|s| std::fs::read(s).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failover_keeps_acknowledged_writes() {
    let mut cluster = Cluster::start(3).await;
    wait_for_cluster(&cluster).await;
    let before = create_led(&cluster, TOPIC, PARTITIONS, 3).await;

    let mut acked = Acked::new();
    write(&cluster, &mut acked, 1, 60).await;
    check_acked(&cluster, &acked).await;

    // Kill the leader of partition 0; a new leader takes over.
    let victim = before[0];
    cluster.kill(victim);
    let after = leaders(&cluster, TOPIC, PARTITIONS).await;
    assert_ne!(after[0], victim, "partition 0 must have a new leader");
    eprintln!("leaders before {before:?}, killed {victim}, after {after:?}");
    write(&cluster, &mut acked, 2, 60).await;
    check_acked(&cluster, &acked).await;

    // The old leader comes back, catches up, and holds the same bytes.
    cluster.start_broker(victim).await;
    let others: Vec<u64> = (1..=3).filter(|b| *b != victim).collect();
    for p in 0..PARTITIONS {
        eventually(30, "the restarted replica to catch up", || async {
            let a = replica_bytes(&cluster, victim, p);
            let b = replica_bytes(&cluster, others[0], p);
            let c = replica_bytes(&cluster, others[1], p);
            (a == b && b == c && !a.is_empty()).then_some(())
        })
        .await;
    }
    check_acked(&cluster, &acked).await;
    assert_eq!(
        acked.len(),
        120,
        "every write was acknowledged at a distinct offset"
    );
    eprintln!(
        "acknowledged offsets per partition: {:?}",
        (0..PARTITIONS)
            .map(|p| acked.range((p, i64::MIN)..(p + 1, i64::MIN)).count())
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors() {
    let cluster = Cluster::start(3).await;
    wait_for_cluster(&cluster).await;
    let zero = admin(&cluster, create("zero", 0, 1)).await;
    assert_eq!(
        zero.error.as_ref().map(|e| e.code),
        Some(ErrorCode::InvalidPartitions as i32)
    );
    let too_many = admin(&cluster, create("wide", 1, 4)).await;
    let e = too_many
        .error
        .expect("replication factor 4 on 3 brokers must fail");
    assert_eq!(e.code, ErrorCode::InvalidReplicationFactor as i32);
    assert!(
        e.message.contains('4') && e.message.contains('3'),
        "{}",
        e.message
    );

    let c = cluster.any().await;
    let r = produce(&c, "nope", 0, &batch_of(&[event("k", "v")]), Acks::All).await;
    let e = r.error.expect("unknown topic");
    assert_eq!(e.code, ErrorCode::UnknownTopic as i32);
    assert!(e.message.contains("nope"), "{}", e.message);

    create_led(&cluster, "small", 1, 1).await;
    let big = batch_of(&[event("k", &"x".repeat(2 * 1024 * 1024))]);
    let resp = eventually(10, "an answer from the leader", || async {
        for id in cluster.running.keys() {
            let c = cluster.connect(*id).await;
            let r = produce(&c, "small", 0, &big, Acks::All).await;
            if r.error.as_ref().map(|e| e.code) != Some(ErrorCode::NotLeader as i32) {
                return Some(r);
            }
        }
        None
    })
    .await;
    assert_eq!(
        resp.error.map(|e| e.code),
        Some(ErrorCode::MessageTooLarge as i32)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_do_not_hurt_the_broker() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cluster = Cluster::start(1).await;
    wait_for_cluster(&cluster).await;
    let addr = cluster.client_addr(1);
    // Garbage that decodes as no request.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(&[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, s.read_to_end(&mut buf))
        .await
        .expect("the broker closes the connection");
    // A frame claiming 1 GiB.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(&[0x40, 0, 0, 0, 1, 2, 3]).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, s.read_to_end(&mut buf))
        .await
        .expect("the broker closes the connection");
    // The broker still serves.
    let c = cluster.any().await;
    let body = call(&c, Req::ListTopics(ListTopicsRequest {})).await;
    assert!(matches!(
        body,
        weir::proto::client_response::Body::ListTopics(_)
    ));
}
