//! The producer's batching against a scripted broker: which records travel
//! together is decided by the producer alone, so a fake broker that holds
//! its answers shows it exactly, without a cluster's timing.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use weir::client::{Acks, Client, ClientConfig, Producer, ProducerConfig, ProducerRecord};
use weir::io::{decode_message, FrameReader, FrameWriter};
use weir::proto::client_request::Body as Req;
use weir::proto::client_response::Body as Resp;
use weir::proto::{
    BrokerInfo, ClientRequest, ClientResponse, MetadataResponse, PartitionMetadata,
    ProduceResponse, TopicMetadata,
};
use weir::types::RecordBatch;

/// What the fake broker saw: the record count and bytes of each produce's
/// batch, in order.
type Produced = Arc<Mutex<Vec<(i32, usize)>>>;

/// A one-broker cluster with topic `t` of one partition, led by itself.
/// Each produce is reported on `arrived` and answered only once `answers`
/// holds a permit for it.
async fn fake_broker(
    listener: TcpListener,
    produced: Produced,
    arrived: mpsc::UnboundedSender<()>,
    answers: Arc<Semaphore>,
) {
    let addr = listener.local_addr().unwrap().to_string();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let (addr, produced, arrived, answers) = (
            addr.clone(),
            produced.clone(),
            arrived.clone(),
            answers.clone(),
        );
        tokio::spawn(async move {
            let (r, w) = stream.into_split();
            let mut reader = FrameReader::new(r);
            let mut writer = FrameWriter::new(w);
            let mut next_offset = 0i64;
            while let Ok(Some(frame)) = reader.read_frame().await {
                let req: ClientRequest = decode_message(frame).unwrap();
                let body = match req.body {
                    Some(Req::Metadata(_)) => Resp::Metadata(metadata(&addr)),
                    Some(Req::Produce(p)) => {
                        let batch = RecordBatch::parse_full(p.batch, 1 << 20).unwrap();
                        let count = batch.records_count();
                        produced.lock().unwrap().push((count, batch.size_bytes()));
                        let _ = arrived.send(());
                        answers.acquire().await.unwrap().forget();
                        let base_offset = next_offset;
                        next_offset += i64::from(count);
                        Resp::Produce(ProduceResponse {
                            error: None,
                            base_offset,
                        })
                    }
                    other => panic!("the fake broker does not serve {other:?}"),
                };
                let resp = ClientResponse {
                    correlation_id: req.correlation_id,
                    error: None,
                    body: Some(body),
                };
                writer.push(&resp).await.unwrap();
                writer.flush().await.unwrap();
            }
        });
    }
}

fn metadata(addr: &str) -> MetadataResponse {
    MetadataResponse {
        brokers: vec![BrokerInfo {
            id: 1,
            client_addr: addr.into(),
            peer_addr: String::new(),
            live: true,
        }],
        controller_id: 1,
        topics: vec![TopicMetadata {
            name: "t".into(),
            error: None,
            partitions: vec![PartitionMetadata {
                partition: 0,
                leader_id: 1,
                replicas: vec![1],
                in_sync: vec![1],
                error: None,
                leader_epoch: 1,
            }],
        }],
    }
}

fn record(value: &'static [u8]) -> ProducerRecord {
    ProducerRecord::new("t", bytes::Bytes::from_static(value))
}

/// With every request slot taken, a batch whose linger is over keeps
/// taking records and goes out whole when a slot frees, as in Kafka's
/// accumulator; closing it at its linger would queue one small request per
/// linger period behind the slot instead.
#[tokio::test]
async fn a_lingered_batch_keeps_filling_while_no_request_slot_is_free() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let produced = Produced::default();
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let answers = Arc::new(Semaphore::new(0));
    tokio::spawn(fake_broker(
        listener,
        produced.clone(),
        arrived_tx,
        answers.clone(),
    ));
    let client = Client::connect(ClientConfig {
        bootstrap: vec![addr],
        ..ClientConfig::default()
    })
    .await
    .unwrap();
    let producer = Producer::new(
        client,
        ProducerConfig {
            acks: Acks::Leader,
            linger: Duration::from_millis(1),
            max_in_flight: 1,
            ..ProducerConfig::default()
        },
    );

    // The first batch takes the only slot and is held by the broker.
    let first = producer.send(record(b"a")).await.unwrap();
    arrived.recv().await.unwrap();
    // Three more records, each well past the linger of the batch they join.
    let mut rest = Vec::new();
    for value in [&b"b"[..], b"c", b"d"] {
        rest.push(producer.send(record(value)).await.unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    answers.add_permits(1);
    assert_eq!(first.await.unwrap(), (0, 0));
    arrived.recv().await.unwrap();
    let counts: Vec<i32> = produced.lock().unwrap().iter().map(|p| p.0).collect();
    assert_eq!(counts, vec![1, 3], "records per produce request");
    answers.add_permits(1);
    for (i, d) in rest.into_iter().enumerate() {
        assert_eq!(d.await.unwrap(), (0, 1 + i as i64));
    }
}

/// A batch never grows past `batch_size`: the record that would take it
/// over starts the next batch (one record larger than the size travels
/// alone), as in Kafka.
#[tokio::test]
async fn batches_stay_within_batch_size() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let produced = Produced::default();
    let (arrived_tx, _arrived) = mpsc::unbounded_channel();
    // Every produce is answered at once.
    let answers = Arc::new(Semaphore::new(Semaphore::MAX_PERMITS));
    tokio::spawn(fake_broker(listener, produced.clone(), arrived_tx, answers));
    let client = Client::connect(ClientConfig {
        bootstrap: vec![addr],
        ..ClientConfig::default()
    })
    .await
    .unwrap();
    let batch_size = 1_000;
    let producer = Producer::new(
        client,
        ProducerConfig {
            acks: Acks::Leader,
            // Only size closes a batch (and the flush at the end).
            linger: Duration::from_secs(60),
            batch_size,
            ..ProducerConfig::default()
        },
    );
    let value = bytes::Bytes::from(vec![b'v'; 100]);
    let mut deliveries = Vec::new();
    for _ in 0..40 {
        let mut rec = ProducerRecord::new("t", value.clone());
        rec.partition = Some(0);
        deliveries.push(producer.send(rec).await.unwrap());
    }
    let big = ProducerRecord::new("t", bytes::Bytes::from(vec![b'b'; 3_000]));
    deliveries.push(producer.send(big).await.unwrap());
    producer.flush().await;
    for d in deliveries {
        d.await.unwrap();
    }
    let batches = produced.lock().unwrap().clone();
    let records: i32 = batches.iter().map(|b| b.0).sum();
    assert_eq!(records, 41, "{batches:?}");
    let (big, small) = batches.split_last().unwrap();
    assert!(
        small.iter().all(|&(_, bytes)| bytes <= batch_size),
        "a batch past {batch_size} bytes: {batches:?}"
    );
    // Full batches: another 100-byte record would not have fitted.
    assert!(
        small[..small.len() - 1]
            .iter()
            .all(|&(_, bytes)| bytes + 130 > batch_size),
        "{batches:?}"
    );
    assert_eq!(big.0, 1, "the large record travels alone: {batches:?}");
}
