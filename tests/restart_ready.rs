//! A restarted broker answers no topic question from a table older than the
//! one it had: right after a restart, consuming and listing topics wait for
//! the broker to be ready (BROKER_NOT_READY, retried by the client) rather
//! than hearing that the topic does not exist.

mod common;

use common::free_ports;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const WEIR: &str = env!("CARGO_BIN_EXE_weir");

struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(data: &Path, client: &str, peer: &str) -> Broker {
    let child = Command::new(WEIR)
        .args(["broker", "--log-level", "warn", "--data-dir"])
        .arg(data)
        .args(["--listen", client, "--peer-listen", peer])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("weir broker starts");
    Broker(child)
}

fn weir(bootstrap: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(WEIR)
        .args(args)
        .env("WEIR_BOOTSTRAP", bootstrap)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weir runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn ok(bootstrap: &str, args: &[&str], stdin: &str) -> String {
    let out = weir(bootstrap, args, stdin);
    assert!(
        out.status.success(),
        "weir {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Waits until the client port accepts connections (the broker bound it),
/// and not a moment longer: the point is to ask before it is ready.
fn wait_listening(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "broker never listened on {addr}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn restart_then_consume_and_list_never_says_the_topic_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ports = free_ports(2);
    let (client, peer) = (
        format!("127.0.0.1:{}", ports[0]),
        format!("127.0.0.1:{}", ports[1]),
    );
    let mut broker = spawn(&data, &client, &peer);
    wait_listening(&client);
    // Several topics, so the table the broker replays is not trivial.
    for t in ["a", "b", "events"] {
        ok(&client, &["topic", "create", t, "--partitions", "2"], "");
    }
    let records: Vec<String> = (0..200).map(|i| format!("record-{i}")).collect();
    ok(
        &client,
        &["produce", "events"],
        &(records.join("\n") + "\n"),
    );

    for round in 0..3 {
        // A hard stop, then a start on the same directory and ports.
        drop(broker);
        broker = spawn(&data, &client, &peer);
        wait_listening(&client);
        let list = weir(&client, &["topic", "list"], "");
        let stdout = String::from_utf8_lossy(&list.stdout);
        let stderr = String::from_utf8_lossy(&list.stderr);
        assert!(
            list.status.success(),
            "round {round}: list failed: {stderr}"
        );
        for t in ["a", "b", "events"] {
            assert!(
                stdout.lines().any(|l| l.trim() == t),
                "round {round}: right after a restart, `weir topic list` misses '{t}': {stdout}"
            );
        }
        drop(broker);
        broker = spawn(&data, &client, &peer);
        wait_listening(&client);
        let out = weir(
            &client,
            &[
                "consume",
                "events",
                "--from-beginning",
                "--max-messages",
                "200",
                "--timeout-ms",
                "15000",
            ],
            "",
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("does not exist"),
            "round {round}: a restarted broker said the topic does not exist: {stderr}"
        );
        assert!(
            out.status.success(),
            "round {round}: consume failed: {stderr}"
        );
        let mut got: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect();
        got.sort();
        let mut want = records.clone();
        want.sort();
        assert_eq!(
            got, want,
            "round {round}: every record read after the restart"
        );
    }
}
