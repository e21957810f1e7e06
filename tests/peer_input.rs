//! Input from peers is input (issue 24): whatever arrives on `--peer-listen`
//! (a hostile Raft message, a forged sender, frames announced and never
//! sent, connections beyond the limit) ends in a dropped message or a
//! closed connection, and the broker goes on serving.

mod common;

use common::*;
use raft::eraftpb::{Message, MessageType};
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use weir::client::Connection;
use weir::io::frame::FRAME_BYTES_MAX;
use weir::io::net::{NetworkRef, TcpNetwork};
use weir::proto::*;
use weir::replication::raft_frame;

/// A heartbeat for `group` from `from` to broker 1 whose commit index is
/// far beyond any log: raft-rs panics on it (`commit_to` is fatal).
fn hostile_heartbeat(from: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgHeartbeat);
    m.from = from;
    m.to = 1;
    m.term = 1_000;
    m.commit = 1 << 40;
    m
}

/// The frame (length prefix included) a broker's link would write for
/// `messages`, claiming to come from `from`.
fn frame_from(from: u64, messages: &[(u64, Message)]) -> Vec<u8> {
    let (frames, skipped) =
        raft_frame::encode(from, 1, messages, FRAME_BYTES_MAX, FRAME_BYTES_MAX).unwrap();
    assert_eq!((frames.len(), skipped), (1, 0));
    frames.into_iter().next().unwrap()
}

fn spawn(dir: &std::path::Path, client: u16, peer: u16, config: &str) -> Child {
    let file = dir.join("weir.conf");
    std::fs::write(&file, config).unwrap();
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["broker", "--log-level", "warn", "--config"])
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--listen", &format!("127.0.0.1:{client}")])
        .args(["--peer-listen", &format!("127.0.0.1:{peer}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("weir broker starts")
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn connect(port: u16) -> Connection {
    let net: NetworkRef = Arc::new(TcpNetwork::default());
    eventually(20, "the broker to listen", || {
        let net = net.clone();
        async move {
            Connection::connect(&net, &format!("127.0.0.1:{port}"))
                .await
                .ok()
        }
    })
    .await
}

/// Creates `topic` (1 partition), writes a record and reads it back: the
/// broker's controller and partitions work.
async fn serves(c: &Connection, topic: &str) {
    let created = eventually(20, "a topic created", || async {
        match c.request(create(topic, 1, 1), TIMEOUT).await.ok()?.body? {
            client_response::Body::Admin(a) if a.error.is_none() => Some(a),
            _ => None,
        }
    })
    .await;
    assert!(created.error.is_none());
    let batch = batch_of(&[event("k", "still serving")]);
    eventually(20, "an acknowledged write", || async {
        let r = produce(c, topic, 0, &batch, Acks::All).await;
        r.error.is_none().then_some(())
    })
    .await;
    let records = read_all(c, topic, 0).await;
    let values: Vec<_> = records
        .iter()
        .filter_map(|r| r.event.value.clone())
        .collect();
    assert_eq!(values, vec![bytes::Bytes::from("still serving")]);
}

/// Whether the broker closed `s` (a read sees the end, or a reset) within
/// `within`.
fn closed_within(s: &mut std::net::TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kb * 1024
}

/// The 26-byte frame: a heartbeat for the controller group from a
/// broker that is not even a member, with a commit far beyond the log.
/// Before, raft-rs panicked inside the driver: every group of the broker
/// stopped while the process stayed up, and creating a topic hung.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_frame_from_a_stranger_leaves_the_broker_serving() {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(2);
    let _broker = Killed(spawn(dir.path(), ports[0], ports[1], ""));
    let c = connect(ports[0]).await;
    // The controller group (0) is up: the broker answers metadata.
    serves(&c, "before").await;

    let frame = frame_from(2, &[(0, hostile_heartbeat(2))]);
    assert!(frame.len() <= 32, "a {}-byte frame", frame.len());
    let mut peer = std::net::TcpStream::connect(("127.0.0.1", ports[1])).unwrap();
    peer.write_all(&frame).unwrap();
    assert!(
        closed_within(&mut peer, Duration::from_secs(5)),
        "a stranger's connection stays open"
    );

    serves(&c, "after").await;
}

/// In a cluster the sender can be a member: broker 1 takes a connection
/// that says it is broker 2, and a heartbeat committing beyond its log is
/// dropped before raft-rs sees it. A frame then claiming broker 3 on the
/// same connection closes it; a Raft message inside broker 2's frame that
/// claims broker 3 is dropped. Broker 1 keeps replicating throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_and_forged_messages_from_a_member_are_dropped() {
    let cluster = Cluster::start(3).await;
    wait_for_cluster(&cluster).await;
    create_led(&cluster, "before", 3, 3).await;
    let drops = cluster.running[&1].board.peer_drops();

    let peer_addr = cluster.configs[&1].peer_listen.clone();
    let mut peer = std::net::TcpStream::connect(&peer_addr).unwrap();
    // A member's heartbeat, committing beyond the log, for the controller.
    peer.write_all(&frame_from(2, &[(0, hostile_heartbeat(2))]))
        .unwrap();
    // A message inside broker 2's frame that claims broker 3.
    peer.write_all(&frame_from(2, &[(0, hostile_heartbeat(3))]))
        .unwrap();
    eventually(10, "both messages dropped", || async {
        let counts = drops.counts();
        (counts.get("commit_beyond_log") >= Some(&1) && counts.get("forged_sender") >= Some(&1))
            .then_some(())
    })
    .await;
    // A frame from broker 3 on broker 2's connection.
    peer.write_all(&frame_from(3, &[(0, hostile_heartbeat(3))]))
        .unwrap();
    assert!(
        closed_within(&mut peer, Duration::from_secs(5)),
        "a connection that changed its name stays open"
    );
    assert!(drops.counts().get("forged_sender") >= Some(&2));

    // Broker 1 still runs every group: a new topic's replicas there
    // follow their leaders and its controller replica commits.
    create_led(&cluster, "after", 3, 3).await;
    let board = &cluster.running[&1].board;
    eventually(20, "broker 1's replicas of the new topic", || async {
        let (hosted, _, _) = board.counts();
        (hosted >= 7).then_some(())
    })
    .await;
    for group in 0..=6u64 {
        if let Some(s) = board.get(group) {
            assert!(s.failed.is_none(), "group {group} failed: {:?}", s.failed);
        }
    }
    let c = cluster.connect(1).await;
    let leaders = leaders(&cluster, "after", 3).await;
    for (p, leader) in leaders.iter().enumerate() {
        let lc = cluster.connect(*leader).await;
        let r = produce(
            &lc,
            "after",
            p as u32,
            &batch_of(&[event("k", "v")]),
            Acks::All,
        )
        .await;
        assert!(r.error.is_none(), "{:?}", r.error);
    }
    drop(c);
}

/// Twenty connections each announce an 8 MiB frame and send half of it.
/// Before, each held what it sent (and more, as the buffer doubled):
/// about 170 MiB for as long as they stayed open. Now a connection that
/// has not said which member it is may send only a small first frame; the
/// connections are closed and the broker's memory does not follow. Beyond
/// `max_peer_connections` connections are closed at once, and a silent one
/// is closed after `peer_read_timeout_ms`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_frames_and_idle_connections_do_not_hold_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(2);
    let config = "max_peer_connections = 8\npeer_read_timeout_ms = 2000\n";
    let broker = Killed(spawn(dir.path(), ports[0], ports[1], config));
    let c = connect(ports[0]).await;
    serves(&c, "before").await;
    let pid = broker.0.id();
    let rss_before = rss_bytes(pid);

    let peer_port = ports[1];
    let senders: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || {
                let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", peer_port)) else {
                    return None;
                };
                let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
                let mut data = (8u32 << 20).to_be_bytes().to_vec();
                data.resize(4 + (4 << 20), 0x5a);
                // The broker may close the connection while this writes.
                let _ = s.write_all(&data);
                Some(s)
            })
        })
        .collect();
    let held: Vec<_> = senders
        .into_iter()
        .filter_map(|t| t.join().unwrap())
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_during = rss_bytes(pid);
    let grown = rss_during.saturating_sub(rss_before);
    assert!(
        grown < 64 << 20,
        "20 half-sent 8 MiB frames grew the broker by {} MiB",
        grown >> 20
    );
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Twelve silent connections: four beyond the limit are closed at once.
    let mut idle: Vec<std::net::TcpStream> = (0..12)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", peer_port)).unwrap())
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let closed_at_once = idle
        .iter_mut()
        .filter_map(|s| closed_within(s, Duration::from_millis(10)).then_some(()))
        .count();
    assert_eq!(closed_at_once, 4, "connections beyond max_peer_connections");
    // The others are closed by the read timeout (2 s).
    for s in idle.iter_mut() {
        assert!(
            closed_within(s, Duration::from_secs(5)),
            "a silent peer connection stays open"
        );
    }

    serves(&c, "after").await;
}
