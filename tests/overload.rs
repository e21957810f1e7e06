//! A broker under more request bytes than its budget allows: every request
//! still completes, one larger than the whole budget included, and nothing
//! is lost (the budget only delays reading; see `server::RequestBudget`).
//! And clients that announce requests and send them slowly, or never, hold
//! no budget others need and are closed after `request_read_timeout_ms`.

mod common;

use common::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir::proto::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_budget_wait_and_all_complete() {
    let cluster = Cluster::start_with(1, |c| {
        c.limits.request_bytes_in_flight_max = 1024 * 1024;
    })
    .await;
    wait_for_cluster(&cluster).await;
    // Batches of up to 2 MiB, so that one request can be larger than the
    // whole budget.
    let create = weir::proto::client_request::Body::CreateTopic(CreateTopicRequest {
        name: "flood".into(),
        partitions: 4,
        replication_factor: 1,
        configs: [("max.message.bytes".to_string(), "2097152".to_string())].into(),
    });
    let created = admin(&cluster, create).await;
    assert!(created.error.is_none(), "{:?}", created.error);
    leaders(&cluster, "flood", 4).await;

    // Eight connections, each with twelve requests of about 200 KiB in
    // flight at once: ten times what the budget holds.
    let value = "v".repeat(200 * 1024);
    let mut tasks = Vec::new();
    for c in 0..8u32 {
        let conn = Arc::new(cluster.connect(1).await);
        for r in 0..12u32 {
            let (conn, batch) = (
                conn.clone(),
                batch_of(&[event(&format!("{c}-{r}"), &value)]),
            );
            tasks.push(tokio::spawn(async move {
                produce(&conn, "flood", (c + r) % 4, &batch, Acks::All).await
            }));
        }
    }
    // And one request larger than the whole budget (a batch of 1.5 MiB):
    // it takes all of it and runs alone.
    let big = batch_of(&[event("big", &"b".repeat(1536 * 1024))]);
    let conn = cluster.connect(1).await;
    let big = produce(&conn, "flood", 0, &big, Acks::All).await;
    assert!(big.error.is_none(), "{:?}", big.error);
    for t in tasks {
        let resp = t.await.unwrap();
        assert!(resp.error.is_none(), "{:?}", resp.error);
    }

    let mut records = 0;
    for p in 0..4 {
        records += read_all(&conn, "flood", p).await.len();
    }
    assert_eq!(records, 8 * 12 + 1);
}

/// Produces 16 batches of 256 KiB (4 MiB, a quarter of the default budget)
/// over four connections and reads them back, all within `secs` seconds.
async fn others_produce_and_fetch(cluster: &Cluster, topic: &str, secs: u64) {
    let work = async {
        let value = "w".repeat(256 * 1024);
        let mut tasks = Vec::new();
        for c in 0..4u32 {
            let conn = cluster.connect(1).await;
            let batch = batch_of(&[event(&format!("{c}"), &value)]);
            let topic = topic.to_string();
            tasks.push(tokio::spawn(async move {
                for _ in 0..4 {
                    let resp = produce(&conn, &topic, c % 2, &batch, Acks::All).await;
                    assert!(resp.error.is_none(), "{:?}", resp.error);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let conn = cluster.connect(1).await;
        read_all(&conn, topic, 0).await.len() + read_all(&conn, topic, 1).await.len()
    };
    let records = tokio::time::timeout(Duration::from_secs(secs), work)
        .await
        .expect("other clients stalled");
    assert_eq!(records, 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_announcing_16_mib_and_nothing_else_stalls_no_one() {
    let cluster = Cluster::start(1).await;
    wait_for_cluster(&cluster).await;
    create_led(&cluster, "held", 2, 1).await;
    // Announces a frame of the cap (16 MiB, the whole default budget), sends
    // a few bytes of it, and holds the connection open.
    let mut held = TcpStream::connect(cluster.client_addr(1)).await.unwrap();
    held.write_all(&(16u32 << 20).to_be_bytes()).await.unwrap();
    held.write_all(&[0x08, 0x01]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    others_produce_and_fetch(&cluster, "held", 5).await;
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_trickling_large_frames_stall_no_one() {
    let cluster = Cluster::start(1).await;
    wait_for_cluster(&cluster).await;
    create_led(&cluster, "trickle", 2, 1).await;
    // Twenty clients announce 1 MiB each (20 MiB, more than the 16 MiB
    // budget) and send a byte every 50 ms.
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut tricklers = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(cluster.client_addr(1)).await.unwrap();
        let stop = stop.clone();
        tricklers.push(tokio::spawn(async move {
            s.write_all(&(1u32 << 20).to_be_bytes()).await.unwrap();
            loop {
                tokio::select! {
                    _ = stop.notified() => return,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
                if s.write_all(&[0]).await.is_err() {
                    return;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    others_produce_and_fetch(&cluster, "trickle", 5).await;
    stop.notify_waiters();
    for t in tricklers {
        t.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_arrives_is_answered_and_closed_after_the_timeout() {
    let cluster = Cluster::start_with(1, |c| {
        c.limits.request_read_timeout_ms = 500;
        c.limits.connection_idle_timeout_ms = 1000;
    })
    .await;
    wait_for_cluster(&cluster).await;
    let mut stalled = TcpStream::connect(cluster.client_addr(1)).await.unwrap();
    stalled.write_all(&1000u32.to_be_bytes()).await.unwrap();
    stalled.write_all(&[0x08, 0x01]).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stalled.read_to_end(&mut reply))
        .await
        .expect("the broker closes the connection")
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(400));
    // One INVALID_REQUEST response saying why, then the end of the stream.
    assert!(reply.len() > 4, "no answer before closing");
    let resp: ClientResponse = weir::io::frame::decode_message(&reply[4..]).unwrap();
    let err = resp.error.expect("an error");
    assert_eq!(err.code, ErrorCode::InvalidRequest as i32);
    assert!(
        err.message.contains("request_read_timeout_ms"),
        "{}",
        err.message
    );

    // A connection that sends nothing is closed after the idle timeout.
    let mut idle = TcpStream::connect(cluster.client_addr(1)).await.unwrap();
    let started = tokio::time::Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut [0u8; 16]))
        .await
        .expect("the broker closes an idle connection")
        .unwrap();
    assert_eq!(n, 0);
    assert!(started.elapsed() >= Duration::from_millis(900));
}

/// Two clients announce 16 MiB frames: the first sends 12 MiB of its
/// frame and stops, the second 6 MiB and stops. Before, the first held 12
/// MiB of the 16 MiB budget, the second the other 4 MiB and the overdraft,
/// and every other client waited for `request_read_timeout_ms` (10 s).
/// Now one request takes at most a quarter of the budget before it needs
/// the overdraft: the two hold 8 MiB and the overdraft, and the other half
/// serves everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_stopping_midway_through_large_frames_stall_no_one() {
    let cluster = Cluster::start(1).await;
    wait_for_cluster(&cluster).await;
    create_led(&cluster, "midway", 2, 1).await;
    let mut stalled = Vec::new();
    for sent_mib in [12usize, 6] {
        let mut s = TcpStream::connect(cluster.client_addr(1)).await.unwrap();
        stalled.push(tokio::spawn(async move {
            let mut data = (16u32 << 20).to_be_bytes().to_vec();
            data.resize(4 + (sent_mib << 20), 0);
            // The broker may stop reading (the second, now): then this
            // waits until aborted.
            let _ = s.write_all(&data).await;
            std::future::pending::<()>().await;
        }));
        // The first takes its bytes before the second starts.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    others_produce_and_fetch(&cluster, "midway", 5).await;
    for t in stalled {
        t.abort();
    }
}
