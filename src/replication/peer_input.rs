//! Raft messages from peers are input from the network: checked before
//! raft-rs sees them, because raft-rs trusts its messages and panics
//! (`fatal!`) on some that no honest peer sends. Peers are not
//! authenticated (that is the security work's), so these checks do not
//! stop a member that lies within the protocol; they stop a message that
//! would kill the replica, or the driver that runs every replica.
//!
//! What raft-rs 0.7 does with a message from `step` that panics, and the
//! check here that keeps it out (docs/architecture.md, "Input from peers"):
//!
//! - `MsgHeartbeat`: `raft_log.commit_to(m.commit)` is `fatal!` when the
//!   commit is beyond the last index (a 26-byte frame did it). Checked:
//!   `commit <= last_index`.
//! - `MsgAppend`: `maybe_append` finds the first conflict by each entry's
//!   own index and term, `fatal!`s when it is at or below the commit, and
//!   slices the entries at `conflict - (index + 1)`, which underflows when
//!   the entries do not follow `index`. Checked: entries numbered
//!   `index + 1, index + 2, ...` (no overflow), terms non-decreasing, not
//!   below `log_term`, not 0 and not above the message's term. raft-rs
//!   takes the term of an index beyond its log as 0, so an append after
//!   such an index "at term 0" matched and then committed past the log
//!   (found by the property test below): `log_term` must be non-zero
//!   after index 0.
//! - `MsgAppendResponse` at a leader: an accepted `index` beyond the
//!   leader's log moves the follower's progress past it, and the next
//!   append slices the log out of bounds (`fatal!`). Checked: `index` and
//!   `reject_hint` within the log.
//! - Indexes near `u64::MAX` overflow raft-rs's `index + 1` (found by the
//!   property test below, on a snapshot): appends and snapshots must stay
//!   below [`INDEX_MAX`].
//! - `MsgSnapshot`: `restore` `fatal!`s when the configuration it carries
//!   cannot be applied, and Weir's log refuses data that is not a log start
//!   offset (the group would fail-stop). Weir never changes a group's
//!   configuration, so a snapshot must carry exactly the group's own, a
//!   non-zero index and term no newer than the message, and 8 bytes of
//!   non-negative offset.
//! - `MsgPropose` with no entries is `fatal!`; proposals only ever come
//!   from the broker itself (Weir proposes on the leader, and followers
//!   never forward). Local-only types (`MsgHup`, `MsgBeat`, `MsgPropose`,
//!   `MsgUnreachable`, `MsgSnapStatus`, `MsgCheckQuorum`,
//!   `MsgTransferLeader`, `MsgReadIndex`, `MsgReadIndexResp`; Weir uses no
//!   read index) are refused from peers.
//! - A message whose `from` is not a member of the group: raft-rs expects
//!   progress for some senders (`prs.get_mut(from).unwrap()` during a
//!   leader transfer). Weir never changes a group's membership, so the
//!   sender must be a voter or learner of it, not this broker, and the
//!   broker the connection identified itself as; `to` must be this broker.
//! - A granted vote that elects this replica: `become_leader` asserts
//!   that its whole log is persisted. A candidate's vote requests leave only
//!   once its log is persisted (they wait for the group commit), so an
//!   honest grant never arrives before; one that does is forged (found by
//!   the property test below, with a forged `MsgTimeoutNow` first).
//!   Checked: grants only while `persisted == last_index`.
//! - Term 0 is how raft-rs marks local messages: requests from peers
//!   (appends, heartbeats, snapshots, votes, `MsgTimeoutNow`) must carry a
//!   term. A term near `u64::MAX` overflows when raft-rs campaigns at the
//!   next term (found by the property test below): terms above
//!   [`TERM_MAX`] are refused.
//!
//! Anything else that panics inside raft-rs is contained by the driver
//! (`catch_unwind` around the step): that group fail-stops, no other.

use super::raft_log::decode_snapshot_data;
use raft::eraftpb::{Message, MessageType};
use raft::{Raft, Storage};
use slog::Logger;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The largest term a peer may send. Terms grow by one per election, so
/// no honest term comes near; raft-rs adds one to the term it adopts when
/// it campaigns (overflow: a panic in debug builds, term 0 in release).
pub const TERM_MAX: u64 = u64::MAX >> 1;
/// The largest log index a peer may name in an append or a snapshot:
/// raft-rs computes `index + 1` and `index + entries` on them.
pub const INDEX_MAX: u64 = u64::MAX >> 1;

/// Why a message from a peer was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Invalid {
    /// A type only the broker itself produces.
    LocalType,
    /// `from` is not the broker the connection identified itself as.
    ForgedSender,
    /// The sender is not a voter or learner of the group (or is us).
    NotMember,
    /// `to` is not this broker.
    WrongReceiver,
    /// A request with term 0 (local in raft-rs), or a term so large that
    /// raft-rs's next `term + 1` would overflow.
    BadTerm,
    /// A heartbeat committing beyond the receiver's log.
    CommitBeyondLog,
    /// Entries not numbered after the append's index, or with terms out of
    /// order.
    BadEntries,
    /// An append response naming indexes beyond the leader's log.
    IndexBeyondLog,
    /// A snapshot whose metadata or data this group cannot take.
    BadSnapshot,
    /// A vote granted before this replica's own log was persisted, so
    /// before its vote request can have left.
    PrematureVote,
    /// The connection's first frame named a broker that is not a member.
    UnknownPeer,
    /// A frame that does not decode.
    BadFrame,
    /// A connection over the peer connection limit.
    ConnectionLimit,
    /// A connection that sent nothing (or no whole frame) in time.
    ReadTimeout,
    /// A panic inside raft-rs while stepping the message (the group
    /// fail-stops).
    StepPanicked,
}

impl Invalid {
    pub fn as_str(self) -> &'static str {
        match self {
            Invalid::LocalType => "local_message_type",
            Invalid::ForgedSender => "forged_sender",
            Invalid::NotMember => "sender_not_member",
            Invalid::WrongReceiver => "wrong_receiver",
            Invalid::BadTerm => "bad_term",
            Invalid::CommitBeyondLog => "commit_beyond_log",
            Invalid::BadEntries => "bad_entries",
            Invalid::IndexBeyondLog => "index_beyond_log",
            Invalid::BadSnapshot => "bad_snapshot",
            Invalid::PrematureVote => "premature_vote",
            Invalid::UnknownPeer => "unknown_peer",
            Invalid::BadFrame => "bad_frame",
            Invalid::ConnectionLimit => "connection_limit",
            Invalid::ReadTimeout => "read_timeout",
            Invalid::StepPanicked => "step_panicked",
        }
    }
}

/// How often each reason is logged at most; the count in between goes in
/// the next line.
const LOG_EVERY_MS: u64 = 10_000;

/// Peer input dropped so far, per reason: shared by the peer listener and
/// the driver, read by whoever reports (`weir cluster` once metrics exist;
/// a warning line per reason every 10 s at most until then).
#[derive(Clone, Debug, Default)]
pub struct PeerDrops {
    inner: Arc<Mutex<BTreeMap<Invalid, Counted>>>,
}

/// Drops of one reason so far, and when the last line about it was logged.
type Counted = (u64, Option<Instant>);

impl PeerDrops {
    /// Counts one drop; logs it unless this reason was logged recently.
    pub fn note(&self, reason: Invalid, logger: &Logger, detail: &dyn Fn() -> String) {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (count, logged) = inner.entry(reason).or_insert((0, None));
        *count += 1;
        let due =
            logged.is_none_or(|at| now.duration_since(at) >= Duration::from_millis(LOG_EVERY_MS));
        if due {
            *logged = Some(now);
            let count = *count;
            drop(inner);
            slog::warn!(logger, "peer input dropped (or its connection closed)";
                "reason" => reason.as_str(), "dropped_total" => count, "detail" => detail());
        }
    }

    /// Drops so far, per reason.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.iter().map(|(r, (n, _))| (r.as_str(), *n)).collect()
    }

    /// All drops so far.
    pub fn total(&self) -> u64 {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.values().map(|(n, _)| *n).sum()
    }
}

/// Checks message `m`, received on a connection from broker `from`, for
/// the group run by `raft`, against what raft-rs would panic on (see the
/// module doc).
pub fn check<T: Storage>(raft: &Raft<T>, from: u64, m: &Message) -> Result<(), Invalid> {
    use MessageType::*;
    let t = m.get_msg_type();
    let request = match t {
        MsgAppend | MsgHeartbeat | MsgSnapshot | MsgTimeoutNow | MsgRequestVote
        | MsgRequestPreVote => true,
        MsgAppendResponse
        | MsgHeartbeatResponse
        | MsgRequestVoteResponse
        | MsgRequestPreVoteResponse => false,
        MsgHup | MsgBeat | MsgPropose | MsgUnreachable | MsgSnapStatus | MsgCheckQuorum
        | MsgTransferLeader | MsgReadIndex | MsgReadIndexResp => return Err(Invalid::LocalType),
    };
    if m.from != from {
        return Err(Invalid::ForgedSender);
    }
    if m.from == raft.id || raft.prs().get(m.from).is_none() {
        return Err(Invalid::NotMember);
    }
    if m.to != raft.id {
        return Err(Invalid::WrongReceiver);
    }
    if (request && m.term == 0) || m.term > TERM_MAX {
        return Err(Invalid::BadTerm);
    }
    let last_index = raft.raft_log.last_index();
    match t {
        MsgHeartbeat if m.commit > last_index => Err(Invalid::CommitBeyondLog),
        MsgAppend => check_entries(m),
        MsgAppendResponse if m.index > last_index || m.reject_hint > last_index => {
            Err(Invalid::IndexBeyondLog)
        }
        MsgSnapshot => check_snapshot(raft, m),
        MsgRequestVoteResponse | MsgRequestPreVoteResponse
            if !m.reject && raft.raft_log.persisted < last_index =>
        {
            Err(Invalid::PrematureVote)
        }
        _ => Ok(()),
    }
}

/// An append's entries follow its index, with terms in order.
fn check_entries(m: &Message) -> Result<(), Invalid> {
    // raft-rs reads the term of an index beyond its log as 0, so an
    // append "after index 9 at term 0" matches any shorter log and its
    // commit then runs past the end (found by the property test below).
    // Every real entry has a term of at least 1.
    if m.index > INDEX_MAX || (m.index > 0 && m.log_term == 0) {
        return Err(Invalid::BadEntries);
    }
    let mut prev_term = m.log_term;
    for (i, e) in m.get_entries().iter().enumerate() {
        let expected = (i as u64)
            .checked_add(1)
            .and_then(|n| m.index.checked_add(n));
        if expected != Some(e.index) || e.index > INDEX_MAX || e.term < prev_term || e.term > m.term
        {
            return Err(Invalid::BadEntries);
        }
        prev_term = e.term;
    }
    Ok(())
}

/// A snapshot of this very group: its configuration, a real index and
/// term, and data Weir's log can install.
fn check_snapshot<T: Storage>(raft: &Raft<T>, m: &Message) -> Result<(), Invalid> {
    let snap = m.get_snapshot();
    let meta = snap.get_metadata();
    let ok = meta.index > 0
        && meta.index <= INDEX_MAX
        && meta.term > 0
        && meta.term <= m.term
        && same_members(meta.get_conf_state(), &raft.prs().conf().to_conf_state())
        && decode_snapshot_data(&snap.data).is_ok();
    match ok {
        true => Ok(()),
        false => Err(Invalid::BadSnapshot),
    }
}

/// Whether two configurations have the same members in the same roles
/// (the order of ids does not matter).
fn same_members(a: &raft::eraftpb::ConfState, b: &raft::eraftpb::ConfState) -> bool {
    let sorted = |ids: &[u64]| {
        let mut v = ids.to_vec();
        v.sort_unstable();
        v
    };
    sorted(a.get_voters()) == sorted(b.get_voters())
        && sorted(a.get_learners()) == sorted(b.get_learners())
        && sorted(a.get_voters_outgoing()) == sorted(b.get_voters_outgoing())
        && sorted(a.get_learners_next()) == sorted(b.get_learners_next())
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::{ConfState, Entry, Snapshot};
    use raft::storage::MemStorage;
    use raft::RawNode;

    /// Replica 1 of a group of 1, 2, 3 whose log holds entries 1..=5 at
    /// term 2, committed to 3.
    fn node() -> RawNode<MemStorage> {
        let cs = ConfState::from((vec![1, 2, 3], vec![]));
        let storage = MemStorage::new_with_conf_state(cs);
        let entries: Vec<Entry> = (1..=5)
            .map(|i| Entry {
                index: i,
                term: 2,
                ..Entry::default()
            })
            .collect();
        storage.wl().append(&entries).unwrap();
        let hs = raft::eraftpb::HardState {
            term: 2,
            commit: 3,
            ..Default::default()
        };
        storage.wl().set_hardstate(hs);
        let config = raft::Config {
            id: 1,
            ..Default::default()
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        RawNode::new(&config, storage, &logger).unwrap()
    }

    fn msg(t: MessageType, from: u64, term: u64) -> Message {
        let mut m = Message::default();
        m.set_msg_type(t);
        m.from = from;
        m.to = 1;
        m.term = term;
        m
    }

    fn check_node(n: &RawNode<MemStorage>, from: u64, m: &Message) -> Result<(), Invalid> {
        check(&n.raft, from, m)
    }

    #[test]
    fn honest_messages_pass() {
        let n = node();
        let mut hb = msg(MessageType::MsgHeartbeat, 2, 3);
        hb.commit = 5;
        assert_eq!(check_node(&n, 2, &hb), Ok(()));
        let mut app = msg(MessageType::MsgAppend, 2, 3);
        app.index = 5;
        app.log_term = 2;
        app.set_entries(
            vec![
                Entry {
                    index: 6,
                    term: 3,
                    ..Entry::default()
                },
                Entry {
                    index: 7,
                    term: 3,
                    ..Entry::default()
                },
            ]
            .into(),
        );
        assert_eq!(check_node(&n, 2, &app), Ok(()));
        let mut resp = msg(MessageType::MsgAppendResponse, 3, 2);
        resp.index = 5;
        assert_eq!(check_node(&n, 3, &resp), Ok(()));
        let vote = msg(MessageType::MsgRequestPreVote, 3, 3);
        assert_eq!(check_node(&n, 3, &vote), Ok(()));
        // A vote response may carry term 0 (a brand-new replica rejecting).
        let vr = msg(MessageType::MsgRequestVoteResponse, 3, 0);
        assert_eq!(check_node(&n, 3, &vr), Ok(()));
    }

    #[test]
    fn a_heartbeat_committing_beyond_the_log_is_refused() {
        let mut n = node();
        let mut hb = msg(MessageType::MsgHeartbeat, 2, 3);
        hb.commit = 1_000_000;
        assert_eq!(check_node(&n, 2, &hb), Err(Invalid::CommitBeyondLog));
        // The reason for the check: raft-rs panics on it.
        let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| n.step(hb.clone())));
        assert!(stepped.is_err(), "raft-rs took a commit beyond its log");
    }

    #[test]
    fn local_types_are_refused() {
        let n = node();
        for t in [
            MessageType::MsgHup,
            MessageType::MsgBeat,
            MessageType::MsgPropose,
            MessageType::MsgUnreachable,
            MessageType::MsgSnapStatus,
            MessageType::MsgCheckQuorum,
            MessageType::MsgTransferLeader,
            MessageType::MsgReadIndex,
            MessageType::MsgReadIndexResp,
        ] {
            assert_eq!(
                check_node(&n, 2, &msg(t, 2, 3)),
                Err(Invalid::LocalType),
                "{t:?}"
            );
        }
    }

    #[test]
    fn senders_and_receivers_are_checked() {
        let n = node();
        let hb = msg(MessageType::MsgHeartbeat, 2, 3);
        assert_eq!(check_node(&n, 3, &hb), Err(Invalid::ForgedSender));
        let stranger = msg(MessageType::MsgHeartbeat, 9, 3);
        assert_eq!(check_node(&n, 9, &stranger), Err(Invalid::NotMember));
        let itself = msg(MessageType::MsgHeartbeat, 1, 3);
        assert_eq!(check_node(&n, 1, &itself), Err(Invalid::NotMember));
        let mut elsewhere = msg(MessageType::MsgHeartbeat, 2, 3);
        elsewhere.to = 3;
        assert_eq!(check_node(&n, 2, &elsewhere), Err(Invalid::WrongReceiver));
        let no_term = msg(MessageType::MsgAppend, 2, 0);
        assert_eq!(check_node(&n, 2, &no_term), Err(Invalid::BadTerm));
        // Found by the property below: raft-rs's campaign adds one to it.
        let huge = msg(MessageType::MsgTimeoutNow, 2, u64::MAX);
        assert_eq!(check_node(&n, 2, &huge), Err(Invalid::BadTerm));
    }

    #[test]
    fn appends_with_misnumbered_or_misordered_entries_are_refused() {
        let n = node();
        let app = |index: u64, entries: &[(u64, u64)]| {
            let mut m = msg(MessageType::MsgAppend, 2, 3);
            m.index = index;
            m.log_term = 2;
            let es: Vec<Entry> = entries
                .iter()
                .map(|&(index, term)| Entry {
                    index,
                    term,
                    ..Entry::default()
                })
                .collect();
            m.set_entries(es.into());
            m
        };
        // Conflicting with committed entry 2 (raft-rs: fatal).
        assert_eq!(
            check_node(&n, 2, &app(5, &[(2, 3)])),
            Err(Invalid::BadEntries)
        );
        assert_eq!(
            check_node(&n, 2, &app(5, &[(6, 3), (8, 3)])),
            Err(Invalid::BadEntries)
        );
        assert_eq!(
            check_node(&n, 2, &app(5, &[(6, 3), (7, 2)])),
            Err(Invalid::BadEntries),
            "terms going back"
        );
        assert_eq!(
            check_node(&n, 2, &app(5, &[(6, 4)])),
            Err(Invalid::BadEntries),
            "a term above the message's"
        );
        assert_eq!(
            check_node(&n, 2, &app(u64::MAX, &[(0, 3)])),
            Err(Invalid::BadEntries),
            "index overflow"
        );
        let mut beyond = app(9, &[]);
        beyond.log_term = 0;
        beyond.commit = 9;
        assert_eq!(
            check_node(&n, 2, &beyond),
            Err(Invalid::BadEntries),
            "term 0 after index 9"
        );
    }

    #[test]
    fn append_responses_beyond_the_log_are_refused() {
        let n = node();
        let mut resp = msg(MessageType::MsgAppendResponse, 2, 2);
        resp.index = 6;
        assert_eq!(check_node(&n, 2, &resp), Err(Invalid::IndexBeyondLog));
        resp.index = 5;
        resp.reject = true;
        resp.reject_hint = 99;
        assert_eq!(check_node(&n, 2, &resp), Err(Invalid::IndexBeyondLog));
    }

    #[test]
    fn snapshots_must_be_of_this_group() {
        let n = node();
        let snap = |voters: Vec<u64>, index: u64, term: u64, data: &[u8]| {
            let mut s = Snapshot {
                data: bytes::Bytes::copy_from_slice(data),
                ..Snapshot::default()
            };
            let meta = s.mut_metadata();
            meta.index = index;
            meta.term = term;
            meta.set_conf_state(ConfState::from((voters, vec![])));
            let mut m = msg(MessageType::MsgSnapshot, 2, 3);
            m.set_snapshot(s);
            m
        };
        let good = 100i64.to_be_bytes();
        assert_eq!(
            check_node(&n, 2, &snap(vec![1, 2, 3], 10, 3, &good)),
            Ok(())
        );
        for (bad, why) in [
            (snap(vec![1, 2], 10, 3, &good), "another configuration"),
            (snap(vec![1, 2, 3], 0, 3, &good), "index 0"),
            (snap(vec![1, 2, 3], u64::MAX, 3, &good), "index overflowing"),
            (snap(vec![1, 2, 3], 10, 4, &good), "term above the message"),
            (snap(vec![1, 2, 3], 10, 3, b"junk"), "undecodable data"),
        ] {
            assert_eq!(check_node(&n, 2, &bad), Err(Invalid::BadSnapshot), "{why}");
        }
    }

    /// A peer message with fields from small sets around the node's log
    /// (and far beyond it), for the property below.
    #[derive(Clone, Debug)]
    struct Arb(Message);

    impl quickcheck::Arbitrary for Arb {
        fn arbitrary(g: &mut quickcheck::Gen) -> Self {
            use MessageType::*;
            let types = [
                MsgAppend,
                MsgAppendResponse,
                MsgRequestVote,
                MsgRequestVoteResponse,
                MsgRequestPreVote,
                MsgRequestPreVoteResponse,
                MsgSnapshot,
                MsgHeartbeat,
                MsgHeartbeatResponse,
                MsgTimeoutNow,
                MsgPropose,
                MsgTransferLeader,
                MsgReadIndex,
            ];
            let n = |g: &mut quickcheck::Gen| {
                *g.choose(&[0u64, 1, 2, 3, 4, 5, 6, 7, 1 << 20, u64::MAX])
                    .unwrap()
            };
            let mut m = msg(
                *g.choose(&types).unwrap(),
                *g.choose(&[2, 3, 9]).unwrap(),
                0,
            );
            m.to = *g.choose(&[1, 1, 1, 2]).unwrap();
            m.term = n(g);
            m.index = n(g);
            m.log_term = n(g);
            m.commit = n(g);
            m.reject = bool::arbitrary(g);
            m.reject_hint = n(g);
            let count = usize::arbitrary(g) % 4;
            let first = n(g);
            let entries: Vec<Entry> = (0..count)
                .map(|i| Entry {
                    index: if bool::arbitrary(g) {
                        first.wrapping_add(i as u64)
                    } else {
                        n(g)
                    },
                    term: n(g),
                    ..Entry::default()
                })
                .collect();
            m.set_entries(entries.into());
            if m.get_msg_type() == MsgSnapshot {
                let mut snap = Snapshot {
                    data: bytes::Bytes::copy_from_slice(&(n(g) as i64 & i64::MAX).to_be_bytes()),
                    ..Snapshot::default()
                };
                snap.mut_metadata().index = n(g);
                snap.mut_metadata().term = n(g);
                let voters = g
                    .choose(&[vec![1, 2, 3], vec![2, 3], vec![1]])
                    .unwrap()
                    .clone();
                snap.mut_metadata()
                    .set_conf_state(ConfState::from((voters, vec![])));
                m.set_snapshot(snap);
            }
            Arb(m)
        }
    }

    /// What the checks let through never makes raft-rs panic, at a
    /// follower, a candidate or a leader.
    #[test]
    fn quickcheck_what_passes_the_checks_never_panics_raft() {
        fn prop(role: u8, msgs: Vec<Arb>) -> bool {
            let mut n = node();
            match role % 3 {
                0 => {}
                1 => n.raft.become_candidate(),
                _ => {
                    n.raft.become_candidate();
                    n.raft.become_leader();
                }
            }
            for Arb(m) in msgs {
                let from = m.from;
                if check(&n.raft, from, &m).is_err() {
                    continue;
                }
                let stepped =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| n.step(m.clone())));
                if stepped.is_err() {
                    eprintln!("raft-rs panicked on {m:?}");
                    return false;
                }
            }
            true
        }
        quickcheck::QuickCheck::new()
            .tests(20_000)
            .quickcheck(prop as fn(u8, Vec<Arb>) -> bool);
    }

    #[tokio::test(start_paused = true)]
    async fn drops_are_counted_per_reason_and_logged_at_a_bounded_rate() {
        let drops = PeerDrops::default();
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        for _ in 0..3 {
            drops.note(Invalid::ForgedSender, &logger, &String::new);
        }
        drops.note(Invalid::CommitBeyondLog, &logger, &String::new);
        assert_eq!(drops.total(), 4);
        assert_eq!(drops.counts().get("forged_sender"), Some(&3));
        assert_eq!(drops.counts().get("commit_beyond_log"), Some(&1));
    }
}
