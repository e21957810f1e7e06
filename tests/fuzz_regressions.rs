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

const TARGETS: [(&str, Harness); 2] = [
    ("request", weir::fuzzing::request),
    ("record_batch", weir::fuzzing::record_batch),
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
