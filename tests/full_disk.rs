//! A full disk, through a real broker process on a small tmpfs: produces
//! are refused with OUT_OF_SPACE (naming the directory and the free space)
//! once the free space falls below `storage_min_free_bytes`, while every
//! acknowledged record stays readable, topics can still be created and
//! deleted, a restart with the disk still full knows its topics, and
//! deleting a topic brings writes back without a restart.
//!
//! Needs root to mount a tmpfs (as CI runs); skipped with a printed reason
//! when the mount is refused.

mod common;

use bytes::Bytes;
use common::free_ports;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir::client::Connection;
use weir::io::net::{NetworkRef, TcpNetwork};
use weir::proto::client_request::Body as Req;
use weir::proto::client_response::Body as Resp;
use weir::proto::*;
use weir::types::{BatchBuilder, Event};

const WEIR: &str = env!("CARGO_BIN_EXE_weir");
const DISK_BYTES: u64 = 64 << 20;
const RESERVE_BYTES: u64 = 8 << 20;
const RECORD_BYTES: usize = 64 << 10;
const RECORDS_PER_BATCH: usize = 4;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={DISK_BYTES}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(config: &Path) -> Broker {
    let child = Command::new(WEIR)
        .args(["broker", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("weir broker starts");
    Broker(child)
}

fn weir(bootstrap: &str, args: &[&str]) -> Output {
    let mut child = Command::new(WEIR)
        .args(args)
        .env("WEIR_BOOTSTRAP", bootstrap)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weir runs");
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn ok(bootstrap: &str, args: &[&str]) -> String {
    let out = weir(bootstrap, args);
    assert!(
        out.status.success(),
        "weir {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn wait_listening(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "broker never listened on {addr}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Consumes a topic from the beginning with the CLI; the offsets read.
fn consume_offsets(bootstrap: &str, topic: &str, n: usize) -> Vec<i64> {
    let n = n.to_string();
    let out = ok(
        bootstrap,
        &[
            "consume",
            topic,
            "--from-beginning",
            "--max-messages",
            &n,
            "--timeout-ms",
            "15000",
            "--format",
            "%o",
        ],
    );
    out.lines().map(|l| l.trim().parse().unwrap()).collect()
}

fn batch(first: usize) -> Bytes {
    let mut b = BatchBuilder::new();
    for i in first..first + RECORDS_PER_BATCH {
        let mut value = format!("{i:08}").into_bytes();
        value.resize(RECORD_BYTES, b'x');
        b.push(&Event {
            key: None,
            value: Some(Bytes::from(value)),
            timestamp_ms: 1_700_000_000_000,
            headers: vec![],
        });
    }
    b.build().as_bytes().clone()
}

async fn produce(c: &Connection, topic: &str, first: usize) -> Result<i64, Error> {
    let req = Req::Produce(ProduceRequest {
        topic: topic.into(),
        partition: 0,
        acks: Acks::All as i32,
        batch: batch(first),
        timeout_ms: 5000,
    });
    let resp = c
        .request(req, Duration::from_secs(10))
        .await
        .expect("a response");
    if let Some(e) = resp.error {
        return Err(e);
    }
    match resp.body {
        Some(Resp::Produce(p)) => match p.error {
            Some(e) => Err(e),
            None => Ok(p.base_offset),
        },
        other => panic!("produce got {other:?}"),
    }
}

/// The offsets of the records of a batch acknowledged at `base`.
fn offsets(base: i64) -> impl Iterator<Item = i64> {
    base..base + RECORDS_PER_BATCH as i64
}

/// Produces batches to `topic` until the broker refuses one; returns the
/// offsets of the records acknowledged and the refusal.
async fn fill(c: &Connection, topic: &str) -> (Vec<i64>, Error) {
    let mut acked = Vec::new();
    // 64 MiB of disk holds at most ~256 batches of 256 KiB.
    for _ in 0..400 {
        match produce(c, topic, acked.len()).await {
            Ok(base) => acked.extend(offsets(base)),
            Err(e) => return (acked, e),
        }
    }
    panic!("{topic}: 100 MiB accepted on a {DISK_BYTES}-byte disk");
}

#[test]
fn a_full_disk_refuses_produces_and_keeps_everything_else_working() {
    let dir = tempfile::tempdir().unwrap();
    let mount = match Tmpfs::mount(&dir.path().join("mnt")) {
        Ok(m) => m,
        Err(e) => {
            println!("skipped: cannot mount a tmpfs here ({e}); run as root to test a full disk");
            return;
        }
    };
    let data = mount.0.join("data");
    let ports = free_ports(2);
    let client = format!("127.0.0.1:{}", ports[0]);
    let config = dir.path().join("broker.conf");
    std::fs::write(
        &config,
        format!(
            "data_dir = {}\nlisten = {client}\npeer_listen = 127.0.0.1:{}\nlog_level = warn\n\
             storage_min_free_bytes = {RESERVE_BYTES}\nretention_check_ms = 500\n",
            data.display(),
            ports[1]
        ),
    )
    .unwrap();
    let mut broker = spawn(&config);
    wait_listening(&client);
    ok(&client, &["topic", "create", "kept"]);
    ok(&client, &["topic", "create", "filler"]);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let net: NetworkRef = Arc::new(TcpNetwork::default());
    let conn = rt.block_on(Connection::connect(&net, &client)).unwrap();

    // 16 MiB to the topic that stays, then fill the disk with the other.
    let mut kept = Vec::new();
    while kept.len() < 64 {
        let base = rt.block_on(produce(&conn, "kept", kept.len())).unwrap();
        kept.extend(offsets(base));
    }
    let (filled, refused) = rt.block_on(fill(&conn, "filler"));
    assert_eq!(
        refused.code(),
        ErrorCode::OutOfSpace,
        "refused with OUT_OF_SPACE, not: {refused:?}"
    );
    assert!(
        refused.message.contains(&data.display().to_string())
            && refused.message.contains("storage_min_free_bytes"),
        "the refusal names the directory and the setting: {}",
        refused.message
    );
    assert!(!filled.is_empty(), "some records fit before the reserve");
    drop(conn);

    // Acknowledged records stay readable, with the CLI.
    assert_eq!(consume_offsets(&client, "kept", kept.len()), kept);
    assert_eq!(consume_offsets(&client, "filler", filled.len()), filled);
    // Metadata still writes: a topic can be created and deleted.
    ok(&client, &["topic", "create", "small"]);
    ok(&client, &["topic", "delete", "small"]);

    // A restart with the disk still full: the topics are known and the
    // data readable.
    drop(broker);
    broker = spawn(&config);
    wait_listening(&client);
    let list = ok(&client, &["topic", "list"]);
    assert!(
        list.lines().any(|l| l == "kept") && list.lines().any(|l| l == "filler"),
        "topics known after a restart on a full disk: {list}"
    );
    assert_eq!(consume_offsets(&client, "kept", kept.len()), kept);

    // Still refused, until a topic is deleted: then writes come back
    // without a restart.
    let conn = rt.block_on(Connection::connect(&net, &client)).unwrap();
    let e = rt
        .block_on(produce(&conn, "kept", kept.len()))
        .expect_err("refused while full");
    assert_eq!(e.code(), ErrorCode::OutOfSpace, "{e:?}");
    ok(&client, &["topic", "delete", "filler"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match rt.block_on(produce(&conn, "kept", kept.len())) {
            Ok(base) => {
                kept.extend(offsets(base));
                break;
            }
            Err(e) if e.code() == ErrorCode::OutOfSpace && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200))
            }
            Err(e) => panic!("writes did not come back after deleting a topic: {e:?}"),
        }
    }
    assert_eq!(consume_offsets(&client, "kept", kept.len()), kept);
    drop(conn);
    drop(broker);
    drop(mount);
}
