//! The `forge` fault: hostile and forged frames on a broker's peer port,
//! built with Weir's own encoders. Each must end in a dropped message or a
//! closed connection (`weir::replication::peer_input`); with the injected
//! bug `trust-peers` the first kinds make raft-rs panic inside the driver,
//! and the run fails.

use crate::nemesis::broker_host;
use crate::net::SimNetwork;
use raft::eraftpb::{ConfState, Entry, Message, MessageType, Snapshot};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use weir::io::frame::FRAME_BYTES_MAX;
use weir::io::net::Network;
use weir::replication::raft_frame;

/// How long a half-sent frame's connection is held before it is dropped.
const HOLD_MS: u64 = 3_000;

/// A message of type `t` from `from` to `to` at a term no one has reached.
fn message(t: MessageType, from: u64, to: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(t);
    m.from = from;
    m.to = to;
    m.term = 1_000_000;
    m
}

/// What kind `kind` sends (its name, and the bytes).
fn frames(to: u64, claim: u64, kind: u64, group: u64) -> (&'static str, Vec<Vec<u8>>) {
    let frame = |from: u64, m: Message| {
        raft_frame::encode(from, 1, &[(group, m)], FRAME_BYTES_MAX, FRAME_BYTES_MAX)
            .map(|(f, _)| f)
            .unwrap_or_default()
    };
    match kind % 9 {
        0 => {
            let mut m = message(MessageType::MsgHeartbeat, claim, to);
            m.commit = 1 << 40;
            ("heartbeat committing beyond the log", frame(claim, m))
        }
        1 => {
            let mut m = message(MessageType::MsgAppend, claim, to);
            m.index = 1 << 30;
            let e = |index| Entry {
                index,
                term: 1,
                ..Entry::default()
            };
            m.set_entries(vec![e(1), e(5)].into());
            ("append with misnumbered entries", frame(claim, m))
        }
        2 => {
            let mut m = message(MessageType::MsgAppendResponse, claim, to);
            m.index = 1 << 40;
            ("append response beyond the log", frame(claim, m))
        }
        3 => {
            let mut m = message(MessageType::MsgSnapshot, claim, to);
            let mut snap = Snapshot {
                data: bytes::Bytes::from_static(b"junk"),
                ..Snapshot::default()
            };
            snap.mut_metadata().index = 1 << 40;
            snap.mut_metadata().term = 1;
            snap.mut_metadata()
                .set_conf_state(ConfState::from((vec![claim], vec![])));
            m.set_snapshot(snap);
            ("foreign snapshot", frame(claim, m))
        }
        4 => {
            // An empty proposal: raft-rs's "stepped empty MsgProp".
            let m = message(MessageType::MsgPropose, claim, to);
            ("empty proposal", frame(claim, m))
        }
        5 => {
            let mut m = message(MessageType::MsgHeartbeat, to, to);
            m.commit = 1 << 40;
            ("message claiming the receiver as sender", frame(claim, m))
        }
        6 => {
            let mut m = message(MessageType::MsgHeartbeat, 999, to);
            m.commit = 1 << 40;
            ("stranger's frame", frame(999, m))
        }
        7 => {
            let mut garbage = vec![0, 0, 0, 12];
            garbage.extend_from_slice(b"\xff\xff\xff\xff not protobuf");
            garbage.truncate(16);
            ("garbage frame", vec![garbage])
        }
        _ => {
            let mut half = (8u32 << 20).to_be_bytes().to_vec();
            half.resize(4 + 64 * 1024, 0x5a);
            ("half-sent 8 MiB frame", vec![half])
        }
    }
}

/// Sends forged frame `kind` to broker `to`'s peer port as broker
/// `claim`; says what it sent and how it went.
pub(crate) async fn send(to: u64, claim: u64, kind: u64, group: u64) -> String {
    let (what, frames) = frames(to, claim, kind, group);
    let addr = format!("{}:7401", broker_host(to));
    let mut stream = match SimNetwork::new().connect(&addr).await {
        Ok(s) => s,
        Err(_) => return format!("{what}: could not connect"),
    };
    for f in &frames {
        if stream.write_all(f).await.is_err() {
            return format!("{what}: connection closed while sending");
        }
    }
    if kind % 9 == 8 {
        // A half-sent frame is held a while, waiting for a body that never
        // comes, then dropped.
        tokio::time::sleep(Duration::from_millis(HOLD_MS)).await;
    }
    format!("{what}: sent")
}
