//! The fuzz targets' inputs as plain tests: every committed seed
//! (`fuzz/seeds/TARGET/`) and every input a fuzzer once crashed on
//! (`fuzz/regressions/TARGET/`, named for what it found) runs through the
//! same harness the target does (`weir::fuzzing`), so a fixed crash stays
//! fixed without a fuzzer. And the seeds are what `seeds()` below makes:
//! `WEIR_WRITE_FUZZ_SEEDS=1 cargo test --test fuzz_regressions` rewrites
//! them after a protocol change.

use bytes::Bytes;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use weir::io::frame;
use weir::proto::client_request::Body;
use weir::proto::*;
use weir::types::{BatchBuilder, ControlType, Event, Header};

type Harness = fn(&[u8]);

const TARGETS: [(&str, Harness); 4] = [
    ("request", weir::fuzzing::request),
    ("record_batch", weir::fuzzing::record_batch),
    ("peer", weir::fuzzing::peer),
    ("config", weir::fuzzing::config),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

#[test]
fn every_seed_and_regression_input_runs_clean() {
    for (target, harness) in TARGETS {
        let mut ran = 0;
        for kind in ["seeds", "regressions"] {
            for file in files(&fuzz_dir().join(kind).join(target)) {
                let data = std::fs::read(&file).unwrap();
                if let Err(e) = std::panic::catch_unwind(|| harness(&data)) {
                    panic!("{}: {e:?}", file.display());
                }
                ran += 1;
            }
        }
        assert!(ran > 0, "no inputs for {target}");
    }
}

fn event(key: &str, value: &str, headers: Vec<Header>) -> Event {
    Event {
        key: Some(Bytes::from(key.to_string())),
        value: Some(Bytes::from(value.to_string())),
        timestamp_ms: 1_700_000_000_000,
        headers,
    }
}

fn batch(events: &[Event]) -> Bytes {
    let mut b = BatchBuilder::new();
    for e in events {
        b.push(e);
    }
    b.build().as_bytes().clone()
}

fn request(correlation_id: u64, body: Body) -> Vec<u8> {
    let req = ClientRequest {
        correlation_id,
        version: 1,
        body: Some(body),
    };
    frame::encode_message(&req).unwrap().to_vec()
}

/// A raft-rs message of `kind` from `from` to broker 1, as a peer sends it.
fn raft_message(
    kind: raft::eraftpb::MessageType,
    from: u64,
    f: impl Fn(&mut raft::eraftpb::Message),
) -> GroupMessage {
    use protobuf::Message as _;
    let mut m = raft::eraftpb::Message::default();
    m.set_msg_type(kind);
    m.from = from;
    m.to = 1;
    m.term = 2;
    f(&mut m);
    GroupMessage {
        group: 7,
        message: Bytes::from(m.write_to_bytes().unwrap()),
    }
}

/// A peer connection's frames: the hello naming `from`, then one Raft batch.
fn peer_stream(role: u8, from: u64, messages: Vec<GroupMessage>) -> Vec<u8> {
    let hello = PeerMessage {
        from,
        incarnation: 1,
        body: None,
    };
    let raft = PeerMessage {
        from,
        incarnation: 1,
        body: Some(peer_message::Body::Raft(RaftBatch { messages })),
    };
    [
        vec![role],
        frame::encode_message(&hello).unwrap().to_vec(),
        frame::encode_message(&raft).unwrap().to_vec(),
    ]
    .concat()
}

/// The seed corpus: a few well-formed inputs of each kind the decoders
/// take, so that the fuzzer starts from the protocol rather than from
/// nothing.
fn seeds() -> BTreeMap<String, Vec<u8>> {
    let plain = batch(&[event("k", "v", vec![])]);
    let rich = batch(&[
        event("a", "one", vec![]),
        Event {
            key: None,
            value: None,
            timestamp_ms: 1_700_000_000_500,
            headers: vec![],
        },
        event(
            "c",
            "three",
            vec![Header {
                key: "h".into(),
                value: Some(Bytes::from_static(b"x")),
            }],
        ),
    ]);
    let control = BatchBuilder::control(ControlType::Commit, Bytes::from_static(&[0; 6]), 0)
        .as_bytes()
        .clone();
    let produce = |id, batch: &Bytes| {
        request(
            id,
            Body::Produce(ProduceRequest {
                topic: "t".into(),
                partition: 0,
                acks: Acks::All as i32,
                batch: batch.clone(),
                timeout_ms: 5000,
            }),
        )
    };
    let fetch = request(
        3,
        Body::Fetch(FetchRequest {
            partitions: vec![FetchPartition {
                topic: "t".into(),
                partition: 0,
                offset: 0,
                max_bytes: 1 << 20,
                replica_read: false,
            }],
            max_wait_ms: 100,
            min_bytes: 1,
            max_bytes: 1 << 20,
        }),
    );
    let metadata = request(
        4,
        Body::Metadata(MetadataRequest {
            topics: vec!["t".into()],
        }),
    );
    let create = request(
        5,
        Body::CreateTopic(CreateTopicRequest {
            name: "t".into(),
            partitions: 3,
            replication_factor: 3,
            configs: [("retention.ms".to_string(), "60000".to_string())].into(),
        }),
    );
    let mut seeds = BTreeMap::new();
    seeds.insert("request/produce".into(), produce(1, &rich));
    seeds.insert("request/fetch".into(), fetch.clone());
    seeds.insert("request/metadata".into(), metadata.clone());
    seeds.insert("request/create_topic".into(), create.clone());
    seeds.insert(
        "request/pipelined".into(),
        [produce(2, &plain), fetch, metadata, create].concat(),
    );
    {
        use raft::eraftpb::{Entry, MessageType::*};
        let heartbeat = raft_message(MsgHeartbeat, 2, |m| m.commit = 3);
        let append = raft_message(MsgAppend, 2, |m| {
            m.index = 5;
            m.log_term = 2;
            m.commit = 5;
            m.set_entries(
                vec![Entry {
                    index: 6,
                    term: 2,
                    data: Bytes::from_static(b"entry"),
                    ..Entry::default()
                }]
                .into(),
            );
        });
        let vote = raft_message(MsgRequestPreVote, 3, |m| {
            m.term = 3;
            m.index = 5;
            m.log_term = 2;
        });
        let response = raft_message(MsgAppendResponse, 3, |m| m.index = 5);
        seeds.insert(
            "peer/follower_heartbeat".into(),
            peer_stream(0, 2, vec![heartbeat]),
        );
        seeds.insert(
            "peer/follower_append".into(),
            peer_stream(0, 2, vec![append]),
        );
        seeds.insert(
            "peer/candidate_pre_vote".into(),
            peer_stream(1, 3, vec![vote]),
        );
        seeds.insert(
            "peer/leader_append_response".into(),
            peer_stream(2, 3, vec![response]),
        );
    }
    seeds.insert(
        "config/every_key".into(),
        b"# a broker\nid = 2\ndata_dir = /var/lib/weir#2 # the data\nlisten = 127.0.0.1:7410\n\
          advertised_listen = broker-2:7410\npeer_listen = 127.0.0.1:7411\n\
          peers = 1=127.0.0.1:7401,2=127.0.0.1:7411,3=127.0.0.1:7421\nlog_level = debug\n\
          tick_ms = 100\nfsync = interval:50\nretention_check_ms = 60000\n\
          quiesce_idle_groups = false\nmax_request_bytes_in_flight = 16777216\n"
            .to_vec(),
    );
    seeds.insert("config/empty".into(), Vec::new());
    seeds.insert("record_batch/plain".into(), plain.to_vec());
    seeds.insert("record_batch/headers_and_nulls".into(), rich.to_vec());
    seeds.insert("record_batch/control".into(), control.to_vec());
    seeds.insert(
        "record_batch/two_batches".into(),
        [plain.to_vec(), rich.to_vec()].concat(),
    );
    seeds
}

#[test]
fn committed_seeds_are_current() {
    let write = std::env::var_os("WEIR_WRITE_FUZZ_SEEDS").is_some();
    for (name, bytes) in seeds() {
        let path = fuzz_dir().join("seeds").join(&name);
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; rewrite with WEIR_WRITE_FUZZ_SEEDS=1",
                path.display()
            )
        });
        assert_eq!(
            committed, bytes,
            "{name} is stale; rewrite with WEIR_WRITE_FUZZ_SEEDS=1"
        );
    }
}
