//! The peer frames that carry Raft messages, encoded by hand.
//!
//! A frame is a `PeerMessage` whose body is a `RaftBatch` of
//! `GroupMessage`s, each holding one raft-rs message in rust-protobuf's
//! encoding. Built through prost, every raft-rs message was first encoded
//! into a buffer of its own and then copied into the frame as a `bytes`
//! field: every replicated byte was copied twice on its way out. Here each
//! one is encoded straight into the frame, around prefixes written by hand
//! that are byte for byte what prost writes (a test holds the two equal),
//! so the reader decodes these frames with prost as any other.

use crate::io::frame::{self, FrameError};
use prost::encoding::{encode_varint, encoded_len_varint};
use protobuf::{CodedOutputStream, Message as _};
use raft::eraftpb::Message;

/// Keys (field number << 3 | wire type) of the fields written here: see
/// `PeerMessage`, `RaftBatch` and `GroupMessage` in `proto/weir.proto`.
const KEY_FROM: u8 = 1 << 3;
const KEY_INCARNATION: u8 = 2 << 3;
const KEY_RAFT: u8 = (10 << 3) | 2;
const KEY_MESSAGES: u8 = (1 << 3) | 2;
const KEY_GROUP: u8 = 1 << 3;
const KEY_MESSAGE: u8 = (2 << 3) | 2;

/// Bytes of a varint field (key and value), absent when the value is 0
/// (proto3 leaves default values out, as prost does).
fn varint_field_len(value: u64) -> u64 {
    match value {
        0 => 0,
        v => 1 + encoded_len_varint(v) as u64,
    }
}

/// Bytes of a length-delimited field holding `len` bytes, key included.
fn nested_field_len(len: u64) -> u64 {
    1 + encoded_len_varint(len) as u64 + len
}

/// Bytes of a `GroupMessage` body for a raft-rs message of `message_len`.
fn group_message_len(group: u64, message_len: u64) -> u64 {
    let message = match message_len {
        0 => 0,
        n => nested_field_len(n),
    };
    varint_field_len(group) + message
}

/// Frames (length prefix included) carrying `messages` in order, as many
/// as needed to keep each payload within `payload_bytes_target`, except
/// that a message larger than that goes alone into a frame of up to
/// `payload_bytes_max` (none for no messages). A message too large for a
/// frame of its own is left out; the caller is told how many were (raft-rs
/// bounds messages far below the frame limit, so this is a guard, not a
/// path).
pub fn encode(
    from: u64,
    incarnation: u64,
    messages: &[(u64, Message)],
    payload_bytes_target: usize,
    payload_bytes_max: usize,
) -> Result<(Vec<Vec<u8>>, usize), FrameError> {
    let head = varint_field_len(from) + varint_field_len(incarnation);
    // compute_size also caches each message's size for the write below.
    let entries: Vec<u64> = messages
        .iter()
        .map(|(group, m)| nested_field_len(group_message_len(*group, u64::from(m.compute_size()))))
        .collect();
    let within = |batch_len: u64, limit: usize| head + nested_field_len(batch_len) <= limit as u64;
    let mut frames = Vec::new();
    let mut skipped = 0;
    let mut start = 0;
    // Each pass either takes at least one message into a frame or skips
    // one: at most `messages.len()` passes.
    while start < messages.len() {
        let mut end = start;
        let mut batch_len = 0u64;
        while end < messages.len()
            && (within(batch_len + entries[end], payload_bytes_target)
                || (end == start && within(entries[end], payload_bytes_max)))
        {
            batch_len += entries[end];
            end += 1;
        }
        if end == start {
            skipped += 1;
            start += 1;
            continue;
        }
        let payload_len = head + nested_field_len(batch_len);
        frames.push(write_frame(
            from,
            incarnation,
            &messages[start..end],
            batch_len,
            payload_len,
        )?);
        start = end;
    }
    Ok((frames, skipped))
}

/// One frame of `messages`, whose `RaftBatch` body is `batch_len` bytes and
/// the whole payload `payload_len`.
fn write_frame(
    from: u64,
    incarnation: u64,
    messages: &[(u64, Message)],
    batch_len: u64,
    payload_len: u64,
) -> Result<Vec<u8>, FrameError> {
    let payload_len = usize::try_from(payload_len).map_err(|_| FrameError::TooLarge {
        len_bytes: usize::MAX,
        max_bytes: frame::FRAME_BYTES_MAX,
    })?;
    let header = frame::header(payload_len, frame::FRAME_BYTES_MAX)?;
    let mut buf = Vec::with_capacity(header.len() + payload_len);
    buf.extend_from_slice(&header);
    if from != 0 {
        buf.push(KEY_FROM);
        encode_varint(from, &mut buf);
    }
    if incarnation != 0 {
        buf.push(KEY_INCARNATION);
        encode_varint(incarnation, &mut buf);
    }
    buf.push(KEY_RAFT);
    encode_varint(batch_len, &mut buf);
    for (group, m) in messages {
        let message_len = u64::from(m.get_cached_size());
        buf.push(KEY_MESSAGES);
        encode_varint(group_message_len(*group, message_len), &mut buf);
        if *group != 0 {
            buf.push(KEY_GROUP);
            encode_varint(*group, &mut buf);
        }
        if message_len != 0 {
            buf.push(KEY_MESSAGE);
            encode_varint(message_len, &mut buf);
            let mut os = CodedOutputStream::vec(&mut buf);
            m.write_to_with_cached_sizes(&mut os)
                .and_then(|()| os.flush())
                .map_err(|e| FrameError::Decode(format!("encoding a Raft message failed: {e}")))?;
        }
    }
    // The sizes computed ahead are the sizes written: anything else would
    // be a frame its reader misparses.
    assert_eq!(buf.len(), header.len() + payload_len, "Raft frame size");
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{peer_message, GroupMessage, PeerMessage, RaftBatch};
    use prost::Message as _;
    use quickcheck::{Arbitrary, Gen, QuickCheck};
    use raft::eraftpb::{Entry, MessageType};

    /// A raft-rs message with arbitrary fields and entries.
    #[derive(Clone, Debug)]
    struct Msg(u64, Message);

    impl Arbitrary for Msg {
        fn arbitrary(g: &mut Gen) -> Self {
            let mut m = Message::default();
            let types = [
                MessageType::MsgAppend,
                MessageType::MsgAppendResponse,
                MessageType::MsgHeartbeat,
                MessageType::MsgRequestVote,
            ];
            m.set_msg_type(*g.choose(&types).unwrap());
            // Zeros often: proto3 leaves them out, the case to get right.
            let small = |g: &mut Gen| *g.choose(&[0u64, 1, 300, u64::MAX]).unwrap();
            m.from = small(g);
            m.to = small(g);
            m.term = u64::arbitrary(g);
            m.index = small(g);
            m.commit = u64::arbitrary(g);
            let entries: Vec<Entry> = Vec::<(u64, Vec<u8>)>::arbitrary(g)
                .into_iter()
                .map(|(term, data)| Entry {
                    term,
                    data: data.into(),
                    ..Entry::default()
                })
                .collect();
            m.set_entries(entries.into());
            Msg(small(g), m)
        }
    }

    /// What prost makes of the same frame.
    fn through_prost(from: u64, incarnation: u64, messages: &[(u64, Message)]) -> Vec<u8> {
        let msg = PeerMessage {
            from,
            incarnation,
            body: Some(peer_message::Body::Raft(RaftBatch {
                messages: messages
                    .iter()
                    .map(|(group, m)| GroupMessage {
                        group: *group,
                        message: m.write_to_bytes().unwrap().into(),
                    })
                    .collect(),
            })),
        };
        let payload = msg.encode_to_vec();
        let mut framed = (payload.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&payload);
        framed
    }

    #[test]
    fn quickcheck_frames_are_what_prost_encodes() {
        fn prop(from: u64, incarnation: u64, msgs: Vec<Msg>) -> bool {
            let messages: Vec<(u64, Message)> = msgs.into_iter().map(|Msg(g, m)| (g, m)).collect();
            let (frames, skipped) = encode(from, incarnation, &messages, 1 << 20, 1 << 20).unwrap();
            let expected = match messages.is_empty() {
                true => Vec::new(),
                false => vec![through_prost(from, incarnation, &messages)],
            };
            skipped == 0 && frames == expected
        }
        QuickCheck::new()
            .tests(300)
            .quickcheck(prop as fn(u64, u64, Vec<Msg>) -> bool);
    }

    #[test]
    fn messages_are_split_across_frames_within_the_limit() {
        let messages: Vec<(u64, Message)> = (1..=50u64)
            .map(|i| {
                let mut m = Message::default();
                m.set_msg_type(MessageType::MsgAppend);
                m.from = 1;
                m.term = i;
                let e = Entry {
                    data: vec![i as u8; 100 * i as usize].into(),
                    ..Entry::default()
                };
                m.set_entries(vec![e].into());
                (i, m)
            })
            .collect();
        let limit = 6_000;
        let (frames, skipped) = encode(3, 9, &messages, limit, limit).unwrap();
        // Messages 60 and up would not fit a frame alone; none here.
        assert_eq!(skipped, 0);
        assert!(frames.len() > 1, "{} frames", frames.len());
        let mut got = Vec::new();
        for f in &frames {
            assert!(f.len() - 4 <= limit, "a {}-byte payload", f.len() - 4);
            let m = PeerMessage::decode(&f[4..]).unwrap();
            assert_eq!((m.from, m.incarnation), (3, 9));
            let Some(peer_message::Body::Raft(batch)) = m.body else {
                panic!("not a Raft batch");
            };
            for gm in batch.messages {
                let raft = Message::parse_from_bytes(&gm.message).unwrap();
                got.push((gm.group, raft.term));
            }
        }
        let expected: Vec<(u64, u64)> = (1..=50).map(|i| (i, i)).collect();
        assert_eq!(got, expected, "every message once, in order");

        // One too large for any frame is left out and counted.
        let (frames, skipped) = encode(3, 9, &messages[40..], 4_000, 4_000).unwrap();
        assert_eq!(skipped, 10);
        assert!(frames.is_empty());
    }

    #[test]
    fn a_message_above_the_target_goes_alone_up_to_the_limit() {
        let message = |group: u64, len: usize| {
            let mut m = Message::default();
            m.set_msg_type(MessageType::MsgAppend);
            let e = Entry {
                data: vec![1u8; len].into(),
                ..Entry::default()
            };
            m.set_entries(vec![e].into());
            (group, m)
        };
        // Small, small, one above the 2,000-byte target, small, small.
        let messages = vec![
            message(1, 500),
            message(2, 500),
            message(3, 5_000),
            message(4, 500),
            message(5, 500),
        ];
        let (frames, skipped) = encode(3, 9, &messages, 2_000, 10_000).unwrap();
        assert_eq!(skipped, 0);
        let groups: Vec<Vec<u64>> = frames
            .iter()
            .map(|f| {
                let m = PeerMessage::decode(&f[4..]).unwrap();
                let Some(peer_message::Body::Raft(batch)) = m.body else {
                    panic!("not a Raft batch");
                };
                batch.messages.iter().map(|gm| gm.group).collect()
            })
            .collect();
        assert_eq!(groups, vec![vec![1, 2], vec![3], vec![4, 5]]);
        // Above the limit it is still left out.
        let (_, skipped) = encode(3, 9, &messages, 2_000, 4_000).unwrap();
        assert_eq!(skipped, 1);
    }
}
