//! What each fuzz target runs on one input (the targets in `fuzz/` are a
//! line each around these, see docs/fuzzing.md), kept in the main crate so
//! that an input a fuzzer found to crash replays as a plain test
//! (`tests/fuzz_regressions.rs` runs every file in `fuzz/regressions/`).
//!
//! Each harness feeds untrusted bytes to code that takes them from the
//! network or the disk; the contract is no panic, no hang and no
//! allocation of what the input merely claims. A harness panics only where
//! it checks an oracle (two decoders that must agree).

use crate::io::frame::{self, FrameReader, FRAME_BYTES_MAX};
use crate::proto::{client_request::Body, peer_message, ClientRequest, PeerMessage};
use crate::replication::peer_input;
use crate::types::{split_batches, RecordBatch};
use bytes::Bytes;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// A topic's `max.message.bytes` for the harnesses: Kafka's default.
const BATCH_BYTES_MAX: usize = 1024 * 1024;

/// Where the CRC sits in a RecordBatch header, and where what it covers
/// begins.
const CRC_POS: usize = 17;
const ATTRIBUTES_POS: usize = 21;

/// The client port's request path as `server::connection` runs it: frames
/// read by a [`FrameReader`] with the server's cap from the input as a byte
/// stream, each decoded as a [`ClientRequest`] until the first bad one (the
/// server answers it and closes), and a produce's batch checked by
/// [`crate::partition::validate_batch`] as the produce handler does.
pub fn request(data: &[u8]) {
    ready(async {
        let mut frames = FrameReader::with_max_bytes(data, FRAME_BYTES_MAX);
        while let Ok(Some(payload)) = frames.read_frame().await {
            let Ok(req) = frame::decode_message::<ClientRequest>(payload) else {
                break;
            };
            if let Some(Body::Produce(p)) = req.body {
                let _ = crate::partition::validate_batch(p.batch, BATCH_BYTES_MAX);
            }
        }
    });
}

/// The RecordBatch v2 decoder: parse, validate, iterate and split, on the
/// input as it is and with its CRC made right (so that the fuzzer gets past
/// the checksum into the records). Beyond "no panic", the check a produce
/// pays (`validate_records`) and the decoders consumers use (`records`,
/// `for_each_record`) must agree, or a produce could store a batch no
/// consumer can read.
pub fn record_batch(data: &[u8]) {
    record_batch_once(Bytes::copy_from_slice(data));
    if data.len() > ATTRIBUTES_POS {
        let mut fixed = data.to_vec();
        let crc = crc32c::crc32c(&fixed[ATTRIBUTES_POS..]);
        fixed[CRC_POS..ATTRIBUTES_POS].copy_from_slice(&crc.to_be_bytes());
        record_batch_once(Bytes::from(fixed));
    }
}

fn record_batch_once(bytes: Bytes) {
    if let Ok(batch) = RecordBatch::parse(bytes.clone(), BATCH_BYTES_MAX) {
        let validated = batch.validate_records();
        let decoded = batch.records();
        assert_eq!(
            validated.is_ok(),
            decoded.is_ok(),
            "validate_records says {validated:?}, records says {:?}",
            decoded.as_ref().map(|r| r.len())
        );
        let mut walked_count = 0usize;
        let walked = batch.for_each_record(|_| walked_count += 1);
        assert_eq!(
            walked.is_ok(),
            decoded.is_ok(),
            "for_each_record {walked:?}"
        );
        if let Ok(records) = &decoded {
            assert_eq!(records.len(), walked_count);
            assert_eq!(records.len(), batch.records_count() as usize);
        }
        let _ = batch.control_type();
    }
    if let Ok(batches) = split_batches(bytes, BATCH_BYTES_MAX) {
        for b in batches {
            let _ = b.records();
        }
    }
}

/// The peer port's Raft path, as `replication::transport` and the driver
/// run it: frames read from the input as a byte stream, each decoded as a
/// `PeerMessage`, each Raft message in it decoded as the transport does and
/// checked by [`peer_input::check`] against replica 1 of a group of 1, 2
/// and 3 (the input's first byte makes it a follower, a candidate or a
/// leader), and stepped into raft-rs when it passes. Oracle: raft-rs never
/// panics on a message the checks let through (libFuzzer reports a panic
/// as a crash; the broker would fail-stop the group).
pub fn peer(data: &[u8]) {
    let Some((&role, stream)) = data.split_first() else {
        return;
    };
    use protobuf::Message as _;
    let mut node = peer_node(role);
    ready(async {
        let mut frames = FrameReader::with_max_bytes(stream, FRAME_BYTES_MAX);
        while let Ok(Some(payload)) = frames.read_frame().await {
            let Ok(msg) = frame::decode_message::<PeerMessage>(payload) else {
                break;
            };
            let Some(peer_message::Body::Raft(batch)) = msg.body else {
                continue;
            };
            for gm in batch.messages {
                let Ok(m) = raft::eraftpb::Message::parse_from_carllerche_bytes(&gm.message) else {
                    continue;
                };
                if peer_input::check(&node.raft, msg.from, &m).is_ok() {
                    let _ = node.step(m);
                }
            }
        }
    });
}

/// Replica 1 of a group of 1, 2, 3 whose log holds entries 1..=5 at term 2,
/// committed to 3, with the driver's Raft settings that matter here
/// (check quorum, pre-vote); `role` % 3: follower, candidate, leader.
fn peer_node(role: u8) -> raft::RawNode<raft::storage::MemStorage> {
    use raft::eraftpb::{ConfState, Entry, HardState};
    let storage =
        raft::storage::MemStorage::new_with_conf_state(ConfState::from((vec![1, 2, 3], vec![])));
    let entries: Vec<Entry> = (1..=5)
        .map(|index| Entry {
            index,
            term: 2,
            ..Entry::default()
        })
        .collect();
    let mut core = storage.wl();
    let fill = core.append(&entries);
    assert!(fill.is_ok(), "a fresh MemStorage takes entries 1..=5");
    core.set_hardstate(HardState {
        term: 2,
        commit: 3,
        ..HardState::default()
    });
    drop(core);
    let config = raft::Config {
        id: 1,
        check_quorum: true,
        pre_vote: true,
        max_uncommitted_size: raft::NO_LIMIT,
        ..raft::Config::default()
    };
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let mut node = match raft::RawNode::new(&config, storage, &logger) {
        Ok(node) => node,
        Err(e) => panic!("the harness's own replica must start: {e}"),
    };
    if role % 3 >= 1 {
        node.raft.become_candidate();
    }
    if role % 3 == 2 {
        node.raft.become_leader();
    }
    node
}

/// A broker's configuration file as `weir broker --config` reads it:
/// parsed (comments, duplicates), then every setting checked against its
/// bounds. Not network input, but the rule holds for the command
/// line and files too: a clear error, never a panic.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crate::cli::broker::parse_config_file(text).and_then(|s| crate::cli::broker::build(&s));
}

/// Runs a future that never waits (it reads from a byte slice) to its end
/// in one poll, without a runtime: a fuzzer calls the harness millions of
/// times.
fn ready<F: Future>(f: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(f).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a read from a byte slice waited"),
    }
}
