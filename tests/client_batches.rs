//! Produce accepts data batches only: a batch carrying what only the broker
//! may write (a control batch, be it Weir's own Raft control key or a Kafka
//! transaction marker; the transactional bit; other broker-only attribute
//! bits; a producer id) is refused with INVALID_RECORD, and the partition
//! keeps serving on every replica.

mod common;

use bytes::{BufMut, Bytes, BytesMut};
use common::*;
use weir::proto::*;
use weir::types::{BatchBuilder, ControlType, RecordBatch};

/// `batch` with its bytes at `pos` replaced by `with`, CRC recomputed: a
/// well-formed batch saying something else.
fn patched(batch: &RecordBatch, pos: usize, with: &[u8]) -> RecordBatch {
    let mut buf = BytesMut::from(&batch.as_bytes()[..]);
    buf[pos..pos + with.len()].copy_from_slice(with);
    let crc = crc32c::crc32c(&buf[21..]);
    buf[17..21].copy_from_slice(&crc.to_be_bytes());
    RecordBatch::parse(buf.freeze(), usize::MAX).expect("a well-formed batch")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_only_the_broker_may_write_are_refused_and_every_replica_keeps_serving() {
    let cluster = Cluster::start(3).await;
    wait_for_cluster(&cluster).await;
    let leader = create_led(&cluster, "t", 1, 3).await[0];
    let conn = cluster.connect(leader).await;
    let first = produce(&conn, "t", 0, &batch_of(&[event("k", "before")]), Acks::All).await;
    assert!(first.error.is_none(), "{:?}", first.error);

    let data = batch_of(&[event("k", "v")]);
    let mut conf_change = BytesMut::new();
    conf_change.put_slice(b"not a conf change");
    let hostile = [
        (
            "Weir's Raft conf change key",
            BatchBuilder::control(ControlType::RaftConfChange, conf_change.freeze(), 0),
        ),
        (
            "Weir's Raft no-op key",
            BatchBuilder::control(ControlType::RaftNoop, Bytes::new(), 0),
        ),
        (
            "a Kafka commit marker",
            BatchBuilder::control(
                ControlType::Commit,
                Bytes::from_static(&[0, 0, 0, 0, 0, 0]),
                0,
            ),
        ),
        // Attributes at byte 21: transactional (0x10), log append time
        // (0x08), an unassigned bit.
        ("the transactional bit", patched(&data, 21, &[0x00, 0x10])),
        ("log append time", patched(&data, 21, &[0x00, 0x08])),
        (
            "an unassigned attribute bit",
            patched(&data, 21, &[0x10, 0x00]),
        ),
        // Producer id at 43, epoch at 51, base sequence at 53.
        ("a producer id", patched(&data, 43, &7i64.to_be_bytes())),
        ("a producer epoch", patched(&data, 51, &0i16.to_be_bytes())),
        ("a base sequence", patched(&data, 53, &0i32.to_be_bytes())),
    ];
    for (what, batch) in &hostile {
        let resp = produce(&conn, "t", 0, batch, Acks::All).await;
        let err = resp
            .error
            .unwrap_or_else(|| panic!("{what}: accepted at offset {}", resp.base_offset));
        assert_eq!(err.code, ErrorCode::InvalidRecord as i32, "{what}: {err:?}");
        assert!(
            err.message.contains("data batches only"),
            "{what}: {}",
            err.message
        );
    }

    // The partition still takes data through all three replicas (acks=all
    // needs a quorum, and each replica is asked below).
    let after = produce(&conn, "t", 0, &batch_of(&[event("k", "after")]), Acks::All).await;
    assert!(after.error.is_none(), "{:?}", after.error);
    let values: Vec<Bytes> = read_all(&conn, "t", 0)
        .await
        .into_iter()
        .filter_map(|r| r.event.value)
        .collect();
    assert_eq!(values, vec![Bytes::from("before"), Bytes::from("after")]);
    for id in 1..=3 {
        let c = cluster.connect(id).await;
        eventually(10, "each replica has both records", || {
            let c = &c;
            async move {
                let req = weir::proto::client_request::Body::Fetch(FetchRequest {
                    partitions: vec![FetchPartition {
                        topic: "t".into(),
                        partition: 0,
                        offset: 0,
                        max_bytes: 1 << 20,
                        replica_read: true,
                    }],
                    max_wait_ms: 0,
                    min_bytes: 0,
                    max_bytes: 1 << 20,
                });
                let resp = c
                    .request(req, std::time::Duration::from_secs(5))
                    .await
                    .ok()?;
                let Some(weir::proto::client_response::Body::Fetch(f)) = resp.body else {
                    return None;
                };
                let p = f.partitions.first()?;
                if p.error.is_some() {
                    return None;
                }
                let batches = weir::types::split_batches(p.records.clone(), usize::MAX).ok()?;
                let n: usize = batches
                    .iter()
                    .filter(|b| !b.is_control())
                    .map(|b| b.records_count() as usize)
                    .sum();
                (n == 2).then_some(())
            }
        })
        .await;
    }
}
