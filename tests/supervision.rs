//! A broker is alive or dead, never half-dead: a bad setting stops
//! `weir broker` before anything starts, with a message naming the key, and
//! a broker-wide task that ends (a panic) ends the broker, naming the task.

mod common;

use common::*;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `weir broker --config FILE` with `settings` (plus free ports and a
/// fresh data directory unless `settings` sets them) and returns its exit
/// code and stderr. Fails if it is still running after 15 s: a process
/// that stays up with a setting it cannot honour is the zombie this guards
/// against.
fn broker_with(settings: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(2);
    let mut text = String::new();
    if !settings.contains("listen") {
        text.push_str(&format!("listen = 127.0.0.1:{}\n", ports[0]));
        text.push_str(&format!("peer_listen = 127.0.0.1:{}\n", ports[1]));
    }
    if !settings.contains("data_dir") {
        text.push_str(&format!(
            "data_dir = {}\n",
            dir.path().join("data").display()
        ));
    }
    text.push_str(settings);
    let path = dir.path().join("weir.conf");
    std::fs::write(&path, &text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["broker", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weir broker starts");
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("`weir broker` with\n{text}\nis still running after 15 s; stderr: {err}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code(), err)
}

/// The cases of issue 24: before, `tick_ms = 0` and `retention_check_ms =
/// 0` started a broker whose driver (or backend) task had panicked on a
/// zero timer period, which kept its ports and said it was live; a repeated
/// key silently took the last value.
#[test]
fn zero_periods_and_a_repeated_key_stop_the_broker_with_a_message() {
    let cases = [
        ("tick_ms = 0\n", "tick_ms = 0"),
        ("retention_check_ms = 0\n", "retention_check_ms = 0"),
        ("tick_ms = 50\ntick_ms = 100\n", "tick_ms is set twice"),
    ];
    for (settings, message) in cases {
        let (code, err) = broker_with(settings);
        assert_eq!(code, Some(2), "{settings}: {err}");
        assert!(err.contains(message), "{settings}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

/// Every setting, given a value outside its bounds, is refused at start
/// with a non-zero exit and a message naming the key and the value.
#[test]
fn every_setting_with_a_bad_value_is_refused_at_start() {
    let cases = [
        ("id", "0"),
        ("data_dir", "/dev/null"),
        ("listen", "127.0.0.1:0"),
        ("advertised_listen", "nowhere"),
        ("peer_listen", "127.0.0.1:99999"),
        ("peers", "1=127.0.0.1"),
        ("log_level", "loud"),
        ("tick_ms", "100000"),
        ("seed", "-1"),
        ("retention_check_ms", "99999999999"),
        ("max_connections", "0"),
        ("max_in_flight_per_connection", "0"),
        ("max_request_bytes_in_flight", "4096"),
        ("fsync", "interval:0"),
        ("quiesce_idle_groups", "maybe"),
        ("group_commit_gap_us", "99999999999"),
        ("group_commit_busy_bytes_per_sec", "lots"),
        ("page_cache_keep_bytes", "-1"),
    ];
    for (key, value) in cases {
        let settings = format!("{key} = {value}\n");
        let (code, err) = broker_with(&settings);
        assert_eq!(code, Some(2), "{settings}: {err}");
        assert!(err.contains(key), "{settings}: {err}");
        assert!(err.contains(value) || key == "peers", "{settings}: {err}");
    }
}

/// A broker-wide task that panics is noticed: `Running::ended` names it and
/// its panic (and `weir broker`, which waits on it, exits non-zero). A
/// healthy broker's tasks do not end by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_broker_task_is_noticed_with_its_name_and_message() {
    let mut cluster = Cluster::start(1).await;
    let running = cluster.running.get_mut(&1).unwrap();
    let quiet = tokio::time::timeout(Duration::from_secs(2), running.ended()).await;
    assert!(quiet.is_err(), "a task ended by itself: {quiet:?}");
    running.supervise("test task", async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        panic!("boom at offset 7");
    });
    let ended = tokio::time::timeout(TIMEOUT, running.ended())
        .await
        .expect("the panic is noticed");
    assert_eq!(ended.task, "test task");
    assert_eq!(ended.cause, "panicked: boom at offset 7");
    assert_eq!(
        ended.to_string(),
        "broker task 'test task' ended: panicked: boom at offset 7"
    );
}

/// `--log-level trace` and `debug` print trace and debug lines. They did
/// not: slog compiles trace out of debug builds and debug and trace out of
/// release builds unless its max-level features are set (Cargo.toml sets
/// them for both; a unit test in cli/logging.rs checks the release one).
#[test]
fn trace_and_debug_levels_print() {
    use std::io::BufRead;
    for (level, want) in [("trace", "TRCE"), ("debug", "DEBG")] {
        let dir = tempfile::tempdir().unwrap();
        let ports = free_ports(2);
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["broker", "--log-level", level, "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen", &format!("127.0.0.1:{}", ports[0])])
            .args(["--peer-listen", &format!("127.0.0.1:{}", ports[1])])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("weir broker starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        let found = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(want) => break true,
                Ok(line) => seen.push(line),
                Err(_) => break false,
            }
        };
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            found,
            "no {want} line with --log-level {level}; got:\n{}",
            seen.join("\n")
        );
        if level == "debug" {
            assert!(!seen.iter().any(|l| l.contains("TRCE")), "{seen:?}");
        }
    }
}

/// `broker::run` (what `weir broker` runs, mapping its error to exit
/// status 1) returns when a broker-wide task panics, naming it, instead of
/// waiting for a shutdown signal that may never come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_whose_task_panics_stops_with_an_error() {
    let mut cluster = Cluster::start(1).await;
    let mut running = cluster.running.remove(&1).unwrap();
    running.supervise("test task", async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        panic!("boom");
    });
    let stopped = tokio::time::timeout(
        TIMEOUT,
        weir::broker::run_until(running, std::future::pending()),
    )
    .await
    .expect("the broker stops by itself");
    let e = stopped.expect_err("a task ended");
    assert_eq!(
        e.to_string(),
        "the broker stopped: broker task 'test task' ended: panicked: boom"
    );
    // Its ports are released: a client cannot connect any more.
    let c = weir::client::Connection::connect(&cluster.net, &cluster.client_addr(1)).await;
    assert!(c.is_err(), "the stopped broker still accepts clients");
}

/// The hostile peer frame of issue 24: a heartbeat for the controller group
/// claiming a commit index far beyond the receiver's log. raft-rs panics on
/// it in the driver; before, the process stayed up with its ports open and
/// served nothing. The broker has two more (absent) members, so a frame
/// claiming member 2 passes the connection's first-frame check and reaches
/// the driver, whose check must drop it: the process stays up, says why it
/// dropped the message, and still answers clients. Without that check
/// raft-rs panics on it (the controller replica fail-stops, logged as
/// step_panicked) and this test fails (checked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_peer_frame_never_leaves_a_zombie() {
    use std::io::BufRead;
    use tokio::io::AsyncWriteExt;
    use weir::proto::client_request::Body as Req;
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(4);
    let client = format!("127.0.0.1:{}", ports[0]);
    let peer = format!("127.0.0.1:{}", ports[1]);
    // Brokers 2 and 3 never start: broker 1 alone cannot elect a
    // controller, but it runs the controller group and reads peer input.
    let peers = format!("1={peer},2=127.0.0.1:{},3=127.0.0.1:{}", ports[2], ports[3]);
    let mut child = Killed(
        Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["broker", "--log-level", "warn", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen", &client, "--peer-listen", &peer])
            .args(["--peers", &peers])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("weir broker starts"),
    );
    let child = &mut child.0;
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let net: weir::io::net::NetworkRef = std::sync::Arc::new(weir::io::net::TcpNetwork::default());
    let c = eventually(20, "the broker to listen", || {
        let (net, client) = (net.clone(), client.clone());
        async move { weir::client::Connection::connect(&net, &client).await.ok() }
    })
    .await;
    // Let its groups start (they ask for votes; no one answers).
    tokio::time::sleep(Duration::from_millis(1_000)).await;

    let mut m = raft::eraftpb::Message::default();
    m.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeat);
    m.to = 1;
    m.from = 2;
    m.term = 1_000;
    m.commit = 1_000_000;
    let (frames, _) =
        weir::replication::raft_frame::encode(2, 1, &[(0, m)], 1 << 20, 1 << 20).unwrap();
    let mut s = tokio::net::TcpStream::connect(&peer).await.unwrap();
    for f in &frames {
        s.write_all(f).await.unwrap();
    }
    s.flush().await.unwrap();

    // The driver drops it, saying why.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the broker exited ({status}) on a frame it should drop:\n{}",
                seen.join("\n")
            );
        }
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
            if line.contains("commit_beyond_log") {
                break;
            }
            seen.push(line);
        }
        assert!(
            Instant::now() < deadline,
            "no commit_beyond_log drop logged; stderr:\n{}",
            seen.join("\n")
        );
    }
    // And it goes on: alive, and answering clients.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(child.try_wait().unwrap().is_none(), "the broker exited");
    let answer = c
        .request(
            Req::DescribeCluster(weir::proto::DescribeClusterRequest {}),
            TIMEOUT,
        )
        .await;
    assert!(answer.is_ok(), "no answer after the frame: {answer:?}");
    assert!(child.try_wait().unwrap().is_none(), "the broker exited");
}

/// A child process killed when dropped, so a failing test leaves none.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
