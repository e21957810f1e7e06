//! A broker under more request bytes than its budget allows: every request
//! still completes, one larger than the whole budget included, and nothing
//! is lost (the budget only delays reading; see `server::RequestBudget`).

mod common;

use common::*;
use std::sync::Arc;
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
