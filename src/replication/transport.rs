//! Raft messages between brokers: one outgoing link per peer broker, each a
//! task with a bounded queue that coalesces whatever is queued into one
//! `RaftBatch` frame (messages of many groups, one frame), and one reader
//! task per incoming connection that hands batches to the driver.
//!
//! Links never block the driver: a full queue drops the messages, and Raft
//! resends what matters (appends are retried, heartbeats recur). A link
//! that cannot connect drops what it holds and retries with backoff.

use super::driver::{Input, Liveness, Outbound};
use super::peer_input::{Invalid, PeerDrops};
use super::raft_frame;
use crate::io::frame::{self, FrameReader};
use crate::io::net::{BoxStream, Listener, NetworkRef};
use crate::proto::{peer_message, PeerMessage, RaftBatch};
use protobuf::Message as _;
use raft::eraftpb::Message;
use slog::Logger;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Batches queued per peer link before messages are dropped.
pub const LINK_QUEUE_LEN: usize = 256;
/// Messages coalesced into one frame at most.
const MESSAGES_PER_FRAME_MAX: usize = 4096;
/// Bytes of messages a link takes from its queue per write, and the size
/// of the frames it cuts them into (a single larger message gets a frame
/// of its own, up to the frame limit). Frames of up to the 16 MiB limit
/// made every peer reader's buffer double to 32 MiB while one arrived, and
/// a link held all it had drained, encoded, at once.
const RAFT_FRAME_BYTES_TARGET: usize = 1024 * 1024;
const BACKOFF_MS_MIN: u64 = 50;
const BACKOFF_MS_MAX: u64 = 1000;
/// A write to a peer that takes longer than this drops the connection.
const WRITE_TIMEOUT_MS: u64 = 2000;

/// A task the caller spawns (and aborts when the broker stops).
pub type Task = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Controller proposals that arrive from peers, for the controller.
pub type ProposeSink = mpsc::Sender<crate::proto::ControllerCommand>;

/// What a link carries: Raft messages (coalesced with others queued), or
/// a ready peer message (controller proposals, leader reports).
pub enum LinkItem {
    Raft(Vec<(u64, Message)>),
    Peer(PeerMessage),
}

/// The way out to every peer broker: a bounded queue per link. Cloning
/// shares the links.
#[derive(Clone, Debug, Default)]
pub struct PeerLinks {
    queues: BTreeMap<u64, mpsc::Sender<LinkItem>>,
}

impl PeerLinks {
    /// Queues `item` for broker `to`; false if dropped (queue full or no
    /// such peer).
    pub fn send(&self, to: u64, item: LinkItem) -> bool {
        self.queues
            .get(&to)
            .is_some_and(|q| q.try_send(item).is_ok())
    }

    /// The peers this broker has links to.
    pub fn peers(&self) -> impl Iterator<Item = u64> + '_ {
        self.queues.keys().copied()
    }
}

/// The driver's side of the links.
pub struct RaftOutbound {
    pub links: PeerLinks,
    /// Batches dropped because a link's queue was full or unknown.
    pub dropped: u64,
}

impl Outbound for RaftOutbound {
    fn send(&mut self, to: u64, messages: Vec<(u64, Message)>) {
        if !self.links.send(to, LinkItem::Raft(messages)) {
            self.dropped += 1;
        }
    }
}

/// What this broker has heard from its peers: when each last spoke (for
/// liveness) and who leads which group (for metadata).
#[derive(Clone, Debug, Default)]
pub struct PeerView {
    inner: Arc<Mutex<PeerViewInner>>,
}

#[derive(Debug, Default)]
struct PeerViewInner {
    heard: BTreeMap<u64, Instant>,
    incarnations: BTreeMap<u64, u64>,
    leaders: BTreeMap<u64, (u64, u64)>,
    /// Each broker's latest leader report: when it came and the groups it
    /// led then, with their terms.
    reports: BTreeMap<u64, (Instant, BTreeMap<u64, u64>)>,
}

impl PeerView {
    fn lock(&self) -> std::sync::MutexGuard<'_, PeerViewInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn heard_from(&self, broker: u64, incarnation: u64) {
        let mut inner = self.lock();
        inner.heard.insert(broker, Instant::now());
        let known = inner.incarnations.entry(broker).or_insert(incarnation);
        *known = (*known).max(incarnation);
    }

    /// The newest incarnation of `broker` heard of (0: none yet).
    pub fn incarnation(&self, broker: u64) -> u64 {
        self.lock().incarnations.get(&broker).copied().unwrap_or(0)
    }

    /// When `broker` was last heard from.
    pub fn last_heard(&self, broker: u64) -> Option<Instant> {
        self.lock().heard.get(&broker).copied()
    }

    /// Brokers heard from within `window`.
    pub fn live(&self, window: Duration) -> Vec<u64> {
        let now = Instant::now();
        self.lock()
            .heard
            .iter()
            .filter(|(_, t)| now.duration_since(**t) <= window)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Records a leader report, keeping the newest term per group.
    pub fn note_leader(&self, group: u64, leader: u64, term: u64) {
        let mut inner = self.lock();
        let entry = inner.leaders.entry(group).or_insert((leader, term));
        if term >= entry.1 {
            *entry = (leader, term);
        }
    }

    /// Records `broker`'s report of every group it leads, replacing its
    /// previous one (a group missing from it is no longer led there).
    pub fn note_report(&self, broker: u64, groups: &[crate::proto::GroupLeader]) {
        let led = groups
            .iter()
            .filter(|g| g.leader == broker)
            .map(|g| (g.group, g.term))
            .collect();
        self.lock().reports.insert(broker, (Instant::now(), led));
        for g in groups {
            self.note_leader(g.group, g.leader, g.term);
        }
    }

    /// The leader of `group` by the newest report (0 if none).
    pub fn leader_of(&self, group: u64) -> (u64, u64) {
        self.lock().leaders.get(&group).copied().unwrap_or((0, 0))
    }
}

/// How long a peer's traffic and leader reports are trusted for quiescence:
/// three report intervals, so that one lost or late report does not wake
/// every idle group. An idle partition's failover takes up to this much
/// longer than an active one's (its followers start their election timers
/// only once the leader's reports stop).
pub const QUIESCENT_TRUST_MS: u64 = 1_500;

impl Liveness for PeerView {
    fn broker_live(&self, broker: u64) -> bool {
        let window = Duration::from_millis(QUIESCENT_TRUST_MS);
        self.last_heard(broker)
            .is_some_and(|t| Instant::now().duration_since(t) <= window)
    }

    fn confirms_leader(&self, group: u64, leader: u64, term: u64) -> bool {
        let window = Duration::from_millis(QUIESCENT_TRUST_MS);
        let inner = self.lock();
        inner.reports.get(&leader).is_some_and(|(at, led)| {
            Instant::now().duration_since(*at) <= window && led.get(&group) == Some(&term)
        })
    }
}

/// The bytes of Raft entries in `messages`: what a link drains by.
fn entry_bytes(messages: &[(u64, Message)]) -> usize {
    messages.iter().map(|(_, m)| message_entry_bytes(m)).sum()
}

/// The bytes of Raft entries in one message.
fn message_entry_bytes(m: &Message) -> usize {
    m.get_entries().iter().map(|e| e.get_data().len()).sum()
}

/// One link per peer (`peers` maps broker id to peer address; this
/// broker's own entry is skipped): the handle to queue messages, and the
/// link tasks for the caller to spawn (and abort when it stops).
pub fn start_links(
    net: NetworkRef,
    self_id: u64,
    incarnation: u64,
    peers: &BTreeMap<u64, String>,
    view: &PeerView,
    logger: &Logger,
) -> (PeerLinks, Vec<Task>) {
    let mut queues = BTreeMap::new();
    let mut tasks: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> =
        Vec::new();
    for (&id, addr) in peers.iter().filter(|(id, _)| **id != self_id) {
        let (tx, rx) = mpsc::channel::<LinkItem>(LINK_QUEUE_LEN);
        queues.insert(id, tx);
        let link = Link {
            net: net.clone(),
            self_id,
            incarnation,
            peer: id,
            view: view.clone(),
            addr: addr.clone(),
            logger: logger.new(slog::o!("peer" => id)),
        };
        tasks.push(Box::pin(link.run(rx)));
    }
    (PeerLinks { queues }, tasks)
}

struct Link {
    net: NetworkRef,
    self_id: u64,
    incarnation: u64,
    peer: u64,
    view: PeerView,
    addr: String,
    logger: Logger,
}

impl Link {
    async fn run(self, mut rx: mpsc::Receiver<LinkItem>) {
        // The connection, and the peer's incarnation when it was made.
        let mut conn: Option<(BoxStream, u64)> = None;
        let mut backoff_ms = BACKOFF_MS_MIN;
        while let Some(item) = rx.recv().await {
            // Links only write, so they notice a peer's restart by the new
            // incarnation it announces on its own links to us: the old
            // connection may be a black hole that never reports an error.
            if conn
                .as_ref()
                .is_some_and(|(_, inc)| *inc != self.view.incarnation(self.peer))
            {
                slog::debug!(self.logger, "peer restarted; reconnecting");
                conn = None;
            }
            let mut out = match item {
                LinkItem::Raft(first) => Outgoing::Raft(self.drain(first, &mut rx).into()),
                LinkItem::Peer(m) => match frame::encode_message(&m) {
                    Ok(f) => Outgoing::Frame(Some(Vec::from(f))),
                    Err(e) => {
                        slog::error!(self.logger, "cannot encode a peer frame"; "error" => %e);
                        continue;
                    }
                },
            };
            if conn.is_none() {
                match self.connect().await {
                    Ok(s) => {
                        conn = Some((s, self.view.incarnation(self.peer)));
                        backoff_ms = BACKOFF_MS_MIN;
                    }
                    Err(e) => {
                        slog::debug!(self.logger, "peer unreachable"; "addr" => &self.addr, "error" => %e);
                        tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                        backoff_ms = (backoff_ms * 2).min(BACKOFF_MS_MAX);
                        continue;
                    }
                }
            }
            let Some((stream, _)) = conn.as_mut() else {
                continue;
            };
            // A frame's worth is encoded, then written, before the next is
            // encoded: a large batch (a follower's whole append window,
            // read back from the log) is never all encoded at once.
            while let Some(frames) = self.next_frames(&mut out) {
                // A write to a peer that stopped reading (dead, or behind a
                // partition) blocks once the socket buffer is full: bound
                // it, and start over on a fresh connection.
                let timeout = Duration::from_millis(WRITE_TIMEOUT_MS);
                match tokio::time::timeout(timeout, frame::write_encoded(stream, &frames)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        slog::debug!(self.logger, "peer link broke"; "error" => %e);
                        conn = None;
                        break;
                    }
                    Err(_) => {
                        slog::debug!(self.logger, "peer link stalled; reconnecting");
                        conn = None;
                        break;
                    }
                }
            }
        }
    }

    /// A new connection to the peer, which has heard who this is: a peer
    /// takes only a small first frame from a connection until it names a
    /// member (see [`FIRST_FRAME_BYTES_MAX`]).
    async fn connect(&self) -> std::io::Result<BoxStream> {
        let mut stream = self.net.connect(&self.addr).await?;
        let hello = hello(self.self_id, self.incarnation).map_err(std::io::Error::other)?;
        let timeout = Duration::from_millis(WRITE_TIMEOUT_MS);
        match tokio::time::timeout(timeout, frame::write_encoded(&mut stream, &[hello])).await {
            Ok(Ok(())) => Ok(stream),
            Ok(Err(e)) => Err(std::io::Error::other(e)),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "writing the hello to a peer timed out",
            )),
        }
    }

    /// The Raft messages of `first` and of the Raft items queued behind it,
    /// up to about a frame's worth of entries. Stops at the first item that
    /// is not Raft messages: that one is dropped (leader reports recur;
    /// proposals are retried by their senders).
    fn drain(
        &self,
        first: Vec<(u64, Message)>,
        rx: &mut mpsc::Receiver<LinkItem>,
    ) -> Vec<(u64, Message)> {
        let mut messages = first;
        let mut bytes = entry_bytes(&messages);
        while messages.len() < MESSAGES_PER_FRAME_MAX && bytes < RAFT_FRAME_BYTES_TARGET {
            match rx.try_recv() {
                Ok(LinkItem::Raft(batch)) => {
                    bytes += entry_bytes(&batch);
                    messages.extend(batch);
                }
                _ => break,
            }
        }
        messages
    }

    /// The next frames to write: the peer frame, or the next frame's worth
    /// of Raft messages, encoded (messages too large for any frame are
    /// dropped and logged; an encoding failure drops the rest).
    fn next_frames(&self, out: &mut Outgoing) -> Option<Vec<Vec<u8>>> {
        let messages = match out {
            Outgoing::Frame(f) => return f.take().map(|f| vec![f]),
            Outgoing::Raft(messages) => messages,
        };
        while !messages.is_empty() {
            let n = frame_worth(messages.iter(), RAFT_FRAME_BYTES_TARGET);
            let chunk: Vec<(u64, Message)> = messages.drain(..n).collect();
            match raft_frame::encode(
                self.self_id,
                self.incarnation,
                &chunk,
                RAFT_FRAME_BYTES_TARGET,
                frame::FRAME_BYTES_MAX,
            ) {
                Ok((frames, skipped)) => {
                    if skipped > 0 {
                        slog::error!(self.logger, "Raft messages too large for a frame dropped"; "count" => skipped);
                    }
                    if !frames.is_empty() {
                        return Some(frames);
                    }
                }
                Err(e) => {
                    slog::error!(self.logger, "cannot encode a peer frame"; "error" => %e);
                    messages.clear();
                }
            }
        }
        None
    }
}

/// What a link writes for one item: a peer frame, or Raft messages yet to
/// be encoded.
enum Outgoing {
    Frame(Option<Vec<u8>>),
    Raft(std::collections::VecDeque<(u64, Message)>),
}

/// How many of `messages` (at least one) make about `bytes_target` bytes
/// of entries.
fn frame_worth<'a>(
    messages: impl Iterator<Item = &'a (u64, Message)>,
    bytes_target: usize,
) -> usize {
    let mut bytes = 0usize;
    let mut n = 0;
    for (_, m) in messages {
        let len = message_entry_bytes(m);
        if n > 0 && bytes + len > bytes_target {
            break;
        }
        bytes += len;
        n += 1;
    }
    n
}

/// Limits of the peer listener (broker settings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerLimits {
    /// Peer connections open at once (`max_peer_connections`); more are
    /// closed as they come.
    pub connections_max: usize,
    /// How long a peer connection may go without completing a frame
    /// (`peer_read_timeout_ms`): both the wait for a frame's body once its
    /// header arrived and the silence of an idle or never-identified
    /// connection. A live peer sends a leader report every 500 ms, so a
    /// healthy link is never silent this long.
    pub read_timeout_ms: u64,
}

impl Default for PeerLimits {
    fn default() -> Self {
        PeerLimits {
            connections_max: 64,
            read_timeout_ms: 10_000,
        }
    }
}

/// The largest first frame of a peer connection: the hello links send
/// before anything else, naming the broker (a few bytes). Until a
/// connection said who it is, it cannot make this broker buffer more.
pub const FIRST_FRAME_BYTES_MAX: usize = 64 * 1024;
/// Connections open at once that claim to be the same broker: its one
/// link, and a few older ones its restarts left behind until they time
/// out. A newer one closes the oldest: refusing the newcomer instead would
/// let a few connections that merely claim a member's id (the first frame
/// is not authenticated) lock the member's real link out for as long as
/// they keep talking, while closing the oldest lets the real link, which
/// reconnects, always get back in.
pub const CONNECTIONS_PER_PEER_MAX: usize = 4;

/// The frame a link writes first on every connection: who it is.
fn hello(self_id: u64, incarnation: u64) -> Result<Vec<u8>, frame::FrameError> {
    let m = PeerMessage {
        from: self_id,
        incarnation,
        body: None,
    };
    frame::encode_message(&m).map(Vec::from)
}

/// What the peer listener checks connections against.
pub struct PeerListener {
    /// This broker.
    pub self_id: u64,
    /// The brokers that may connect: the cluster's members.
    pub members: std::collections::BTreeSet<u64>,
    pub limits: PeerLimits,
    /// Where dropped input is counted.
    pub drops: PeerDrops,
}

/// Accepts peer connections and feeds what they carry to the driver and
/// the controller. Runs until the listener fails.
pub async fn serve_peers(
    mut listener: Box<dyn Listener>,
    driver: mpsc::Sender<Input>,
    proposals: ProposeSink,
    view: PeerView,
    config: PeerListener,
    logger: Logger,
) {
    let config = Arc::new(config);
    let open = Arc::new(tokio::sync::Semaphore::new(config.limits.connections_max));
    let per_peer: Arc<Mutex<PeerSlots>> = Arc::default();
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                slog::warn!(logger, "peer accept failed"; "error" => %e);
                tokio::time::sleep(Duration::from_millis(BACKOFF_MS_MIN)).await;
                continue;
            }
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            // Closed at once (dropped): a flood of connections costs a
            // socket each for an instant, never a reader.
            config.drops.note(Invalid::ConnectionLimit, &logger, &|| {
                format!(
                    "{} peer connections open (max_peer_connections); closed one from {addr}",
                    config.limits.connections_max
                )
            });
            continue;
        };
        let log = logger.new(slog::o!("remote" => addr));
        let peer = PeerReader {
            driver: driver.clone(),
            proposals: proposals.clone(),
            view: view.clone(),
            config: config.clone(),
            per_peer: per_peer.clone(),
            logger: log,
        };
        tokio::spawn(async move {
            peer.run(stream).await;
            drop(permit);
        });
    }
}

/// The connections open per claimed broker, oldest first, each with what
/// closes it.
#[derive(Default)]
struct PeerSlots {
    next_seq: u64,
    open: BTreeMap<u64, std::collections::VecDeque<(u64, Arc<tokio::sync::Notify>)>>,
}

/// A connection's claim on one of its broker's connection slots, given
/// back when the connection ends; `closed` is notified when a newer
/// connection claiming the same broker takes the slot.
struct PeerSlot {
    peer: u64,
    seq: u64,
    closed: Arc<tokio::sync::Notify>,
    slots: Arc<Mutex<PeerSlots>>,
}

impl PeerSlot {
    /// A slot for a connection claiming `peer`, closing the oldest of its
    /// connections if it has [`CONNECTIONS_PER_PEER_MAX`] already.
    fn take(slots: &Arc<Mutex<PeerSlots>>, peer: u64) -> PeerSlot {
        let mut map = slots.lock().unwrap_or_else(|e| e.into_inner());
        let seq = map.next_seq;
        map.next_seq += 1;
        let closed = Arc::new(tokio::sync::Notify::new());
        let open = map.open.entry(peer).or_default();
        while open.len() >= CONNECTIONS_PER_PEER_MAX {
            if let Some((_, oldest)) = open.pop_front() {
                // Stored if its reader is not waiting right now.
                oldest.notify_one();
            }
        }
        open.push_back((seq, closed.clone()));
        PeerSlot {
            peer,
            seq,
            closed,
            slots: slots.clone(),
        }
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut map = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = map.open.get_mut(&self.peer) {
            open.retain(|(seq, _)| *seq != self.seq);
            if open.is_empty() {
                map.open.remove(&self.peer);
            }
        }
    }
}

/// Reads one peer connection until it closes, sends garbage, lies about
/// who it is or stalls.
struct PeerReader {
    driver: mpsc::Sender<Input>,
    proposals: ProposeSink,
    view: PeerView,
    config: Arc<PeerListener>,
    per_peer: Arc<Mutex<PeerSlots>>,
    logger: Logger,
}

impl PeerReader {
    async fn run(self, stream: BoxStream) {
        // Until the connection names a member, frames stay small: a
        // stranger cannot make this broker buffer what it claims to send.
        let mut reader = FrameReader::with_max_bytes(stream, FIRST_FRAME_BYTES_MAX);
        let timeout = Duration::from_millis(self.config.limits.read_timeout_ms);
        let drops = &self.config.drops;
        let mut identity: Option<PeerSlot> = None;
        loop {
            let closed = identity.as_ref().map(|slot| slot.closed.clone());
            let read = tokio::select! {
                biased;
                // A newer connection claiming the same broker took this
                // one's slot (reading a frame is abandoned midway: the
                // connection is closing).
                _ = async { closed.as_ref().unwrap().notified().await }, if closed.is_some() => {
                    let peer = identity.as_ref().map_or(0, |slot| slot.peer);
                    drops.note(Invalid::ConnectionLimit, &self.logger, &|| {
                        format!(
                            "closing peer connection: a newer connection claims broker \
                             {peer}, which already had {CONNECTIONS_PER_PEER_MAX} open"
                        )
                    });
                    return;
                }
                read = tokio::time::timeout(timeout, reader.read_frame()) => read,
            };
            let bytes = match read {
                Ok(Ok(Some(bytes))) => bytes,
                Ok(Ok(None)) => return,
                Ok(Err(e)) => {
                    drops.note(Invalid::BadFrame, &self.logger, &|| {
                        format!("closing peer connection: {e}")
                    });
                    return;
                }
                Err(_) => {
                    drops.note(Invalid::ReadTimeout, &self.logger, &|| {
                        format!(
                            "closing peer connection: no whole frame in {} ms \
                             (peer_read_timeout_ms)",
                            timeout.as_millis()
                        )
                    });
                    return;
                }
            };
            let msg: PeerMessage = match frame::decode_message(bytes) {
                Ok(m) => m,
                Err(e) => {
                    drops.note(Invalid::BadFrame, &self.logger, &|| {
                        format!("closing peer connection: {e}")
                    });
                    return;
                }
            };
            match &identity {
                Some(slot) if slot.peer != msg.from => {
                    let claimed = slot.peer;
                    drops.note(Invalid::ForgedSender, &self.logger, &|| {
                        format!(
                            "closing peer connection: it said it was broker {claimed}, \
                             then sent a frame from {}",
                            msg.from
                        )
                    });
                    return;
                }
                Some(_) => {}
                None => {
                    let from = msg.from;
                    if from == self.config.self_id || !self.config.members.contains(&from) {
                        drops.note(Invalid::UnknownPeer, &self.logger, &|| {
                            format!("closing peer connection from unknown broker {from}")
                        });
                        return;
                    }
                    identity = Some(PeerSlot::take(&self.per_peer, from));
                    reader.set_max_bytes(frame::FRAME_BYTES_MAX);
                }
            }
            if !self.handle(msg).await {
                return;
            }
        }
    }

    /// Dispatches one message; false once the driver is gone.
    async fn handle(&self, msg: PeerMessage) -> bool {
        self.view.heard_from(msg.from, msg.incarnation);
        match msg.body {
            Some(peer_message::Body::Raft(batch)) => {
                let messages = decode_raft(batch, &self.config.drops, &self.logger);
                let input = Input::Raft {
                    from: msg.from,
                    messages,
                };
                self.driver.send(input).await.is_ok()
            }
            Some(peer_message::Body::Propose(p)) => {
                // Full queue: dropped; the proposer retries until it sees
                // the effect in the metadata.
                if let Some(cmd) = p.command {
                    let _ = self.proposals.try_send(cmd);
                }
                true
            }
            Some(peer_message::Body::Leaders(report)) => {
                self.view.note_report(msg.from, &report.groups);
                true
            }
            // A hello: heard from, nothing else to do.
            None => true,
        }
    }
}

/// The Raft messages of a batch; undecodable ones are dropped (the driver
/// checks the rest, sender included).
fn decode_raft(batch: RaftBatch, drops: &PeerDrops, logger: &Logger) -> Vec<(u64, Message)> {
    let mut out = Vec::with_capacity(batch.messages.len());
    for gm in batch.messages {
        // Entries' data share the frame's bytes instead of being copied
        // out: the log writes them from there (the frame lives as long as
        // raft-rs holds the entries, until they are persisted).
        match Message::parse_from_carllerche_bytes(&gm.message) {
            Ok(m) => out.push((gm.group, m)),
            Err(e) => drops.note(Invalid::BadFrame, logger, &|| {
                format!("undecodable Raft message for group {}: {e}", gm.group)
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::GroupLeader;

    fn led(group: u64, leader: u64, term: u64) -> GroupLeader {
        GroupLeader {
            group,
            leader,
            term,
        }
    }

    fn append(group: u64, index: u64, len: usize) -> (u64, Message) {
        let mut m = Message::default();
        m.set_msg_type(raft::eraftpb::MessageType::MsgAppend);
        m.index = index;
        let e = raft::eraftpb::Entry {
            data: vec![index as u8; len].into(),
            ..Default::default()
        };
        m.set_entries(vec![e].into());
        (group, m)
    }

    #[test]
    fn a_frames_worth_is_about_the_target_and_never_nothing() {
        let messages: Vec<(u64, Message)> = (0..10).map(|i| append(1, i, 300)).collect();
        assert_eq!(frame_worth(messages.iter(), 1_000), 3);
        assert_eq!(frame_worth(messages.iter(), 100), 1, "one even above it");
        assert_eq!(frame_worth(messages.iter(), 1 << 20), 10);
        assert_eq!(frame_worth(messages[..0].iter(), 1_000), 0);
    }

    #[tokio::test]
    async fn a_large_batch_leaves_as_frames_of_about_the_target_in_order() {
        let net: NetworkRef = Arc::new(crate::io::net::TcpNetwork::new());
        let mut listener = net.bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let peers = BTreeMap::from([(1, "127.0.0.1:1".to_string()), (2, addr)]);
        let (links, tasks) = start_links(net, 1, 1, &peers, &PeerView::default(), &logger);
        let tasks: Vec<_> = tasks.into_iter().map(tokio::spawn).collect();
        // A follower's whole window in one batch: 24 appends of 256 KiB.
        let batch: Vec<(u64, Message)> = (0..24).map(|i| append(7, i, 256 * 1024)).collect();
        assert!(links.send(2, LinkItem::Raft(batch)));
        let (stream, _) = listener.accept().await.unwrap();
        let mut frames = frame::FrameReader::new(stream);
        // First the hello, naming the sender.
        let hello = frames.read_frame().await.unwrap().unwrap();
        assert!(hello.len() <= FIRST_FRAME_BYTES_MAX);
        let m: crate::proto::PeerMessage = frame::decode_message(hello).unwrap();
        assert_eq!((m.from, m.incarnation, m.body), (1, 1, None));
        let mut indexes = Vec::new();
        while indexes.len() < 24 {
            let f = frames.read_frame().await.unwrap().unwrap();
            // A frame's worth: about the target, and never the whole batch.
            assert!(
                f.len() <= RAFT_FRAME_BYTES_TARGET + 64 * 1024,
                "{} bytes",
                f.len()
            );
            let m: crate::proto::PeerMessage = frame::decode_message(f).unwrap();
            let Some(crate::proto::peer_message::Body::Raft(batch)) = m.body else {
                panic!("not a Raft batch");
            };
            for gm in batch.messages {
                let raft = Message::parse_from_bytes(&gm.message).unwrap();
                indexes.push(raft.index);
            }
        }
        assert_eq!(indexes, (0..24).collect::<Vec<_>>());
        for t in tasks {
            t.abort();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_report_confirms_only_its_groups_at_their_terms_while_fresh() {
        let view = PeerView::default();
        assert!(!view.confirms_leader(7, 2, 3), "nothing heard yet");
        view.heard_from(2, 1);
        view.note_report(2, &[led(7, 2, 3), led(8, 2, 1)]);
        assert!(view.confirms_leader(7, 2, 3));
        assert!(!view.confirms_leader(7, 2, 4), "another term");
        assert!(!view.confirms_leader(7, 1, 3), "another broker");
        assert!(view.broker_live(2));

        // The next report no longer lists group 7: it stepped down there.
        view.note_report(2, &[led(8, 2, 1)]);
        assert!(!view.confirms_leader(7, 2, 3));
        assert!(view.confirms_leader(8, 2, 1));

        // Silence: past the trust window nothing is confirmed.
        tokio::time::advance(Duration::from_millis(QUIESCENT_TRUST_MS + 1)).await;
        assert!(!view.confirms_leader(8, 2, 1));
        assert!(!view.broker_live(2));
    }

    /// A peer listener of broker 1 in a cluster of 1, 2, 3, and the
    /// driver's end of it.
    async fn listener(
        limits: PeerLimits,
    ) -> (
        String,
        mpsc::Receiver<Input>,
        PeerDrops,
        tokio::task::JoinHandle<()>,
    ) {
        let net: NetworkRef = Arc::new(crate::io::net::TcpNetwork::new());
        let listener = net.bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (driver, inputs) = mpsc::channel(16);
        let (proposals, _) = mpsc::channel(1);
        let drops = PeerDrops::default();
        let config = PeerListener {
            self_id: 1,
            members: [1, 2, 3].into(),
            limits,
            drops: drops.clone(),
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let task = tokio::spawn(serve_peers(
            listener,
            driver,
            proposals,
            PeerView::default(),
            config,
            logger,
        ));
        (addr, inputs, drops, task)
    }

    async fn closed(s: &mut tokio::net::TcpStream) -> bool {
        closed_within(s, Duration::from_secs(5)).await
    }

    async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(within, s.read(&mut buf)).await;
        matches!(read, Ok(Ok(0)) | Ok(Err(_)))
    }

    fn raft_frame_from(from: u64, group: u64) -> Vec<u8> {
        let (frames, _) =
            raft_frame::encode(from, 1, &[append(group, 1, 10)], 1 << 20, 1 << 20).unwrap();
        frames.into_iter().next().unwrap()
    }

    #[tokio::test]
    async fn a_connection_must_name_a_member_and_keep_its_name() {
        use tokio::io::AsyncWriteExt;
        let (addr, mut inputs, drops, task) = listener(PeerLimits::default()).await;

        // A stranger, and this broker's own id: closed.
        for id in [9, 1] {
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            s.write_all(&raft_frame_from(id, 5)).await.unwrap();
            assert!(closed(&mut s).await, "broker {id} accepted");
        }
        assert_eq!(drops.counts().get("unknown_peer"), Some(&2));

        // A first frame announcing more than a hello: closed on its header.
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(&(8u32 << 20).to_be_bytes()).await.unwrap();
        assert!(closed(&mut s).await, "a large first frame was awaited");
        assert_eq!(drops.counts().get("bad_frame"), Some(&1));

        // Broker 2: its hello, then its messages reach the driver; a frame
        // from broker 3 on its connection closes it.
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(&hello(2, 7).unwrap()).await.unwrap();
        s.write_all(&raft_frame_from(2, 5)).await.unwrap();
        match inputs.recv().await {
            Some(Input::Raft { from, messages }) => {
                assert_eq!((from, messages.len(), messages[0].0), (2, 1, 5));
            }
            _ => panic!("no Raft input"),
        }
        s.write_all(&raft_frame_from(3, 5)).await.unwrap();
        assert!(closed(&mut s).await, "a connection changed its name");
        assert_eq!(drops.counts().get("forged_sender"), Some(&1));
        assert!(inputs.try_recv().is_err(), "the forged frame got through");
        task.abort();
    }

    #[tokio::test]
    async fn connections_beyond_the_limits_and_silent_ones_are_closed() {
        use tokio::io::AsyncWriteExt;
        let limits = PeerLimits {
            connections_max: 5,
            read_timeout_ms: 1_500,
        };
        let (addr, mut inputs, drops, task) = listener(limits).await;
        let soon = Duration::from_millis(500);
        // Five connections say they are broker 2: the fifth is one too many
        // for one broker, and closes the oldest. Before, the fifth was
        // refused, so four connections merely claiming broker 2 locked its
        // real link out.
        let mut named = Vec::new();
        for _ in 0..5 {
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            s.write_all(&hello(2, 1).unwrap()).await.unwrap();
            named.push(s);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            closed_within(&mut named[0], soon).await,
            "the oldest connection of broker 2 stays open"
        );
        for s in &mut named[1..] {
            assert!(
                !closed_within(s, Duration::from_millis(50)).await,
                "a newer connection of broker 2 was closed"
            );
        }
        // The newest is served: its messages reach the driver.
        named[4].write_all(&raft_frame_from(2, 5)).await.unwrap();
        match tokio::time::timeout(soon, inputs.recv()).await {
            Ok(Some(Input::Raft { from, .. })) => assert_eq!(from, 2),
            _ => panic!("the newest connection of broker 2 is not served"),
        }
        // Five open at most: one more (silent) fits, the next does not.
        let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut extra = tokio::net::TcpStream::connect(&addr).await.unwrap();
        assert!(
            closed_within(&mut extra, soon).await,
            "a connection beyond the limit"
        );
        assert_eq!(drops.counts().get("connection_limit"), Some(&2));
        assert!(
            !closed_within(&mut silent, Duration::from_millis(100)).await,
            "closed before its time"
        );
        // Silence: closed after the read timeout.
        assert!(closed(&mut silent).await, "a silent connection stayed open");
        assert!(drops.counts().get("read_timeout") >= Some(&1));
        task.abort();
    }

    #[test]
    fn a_report_cannot_speak_for_another_broker() {
        let view = PeerView::default();
        // Broker 2 relays that broker 3 leads group 7: not a confirmation
        // from broker 3 itself.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            view.note_report(2, &[led(7, 3, 5)]);
            assert!(!view.confirms_leader(7, 3, 5));
            assert!(!view.confirms_leader(7, 2, 5));
        });
    }
}
