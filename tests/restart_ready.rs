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

/// In a cluster: a broker restarted after topics were created while it was
/// down answers BROKER_NOT_READY until it has caught up, never "does not
/// exist" from the table it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_broker_never_answers_from_the_table_it_missed() {
    use common::*;
    use weir::proto::client_request::Body as Req;
    use weir::proto::client_response::Body as Resp;
    use weir::proto::{ErrorCode, MetadataRequest};

    let mut cluster = Cluster::start(3).await;
    let controller = wait_for_cluster(&cluster).await;
    create_led(&cluster, "early", 1, 3).await;
    let victim = (1..=3).find(|id| *id != controller).unwrap();
    cluster.kill(victim);
    let late: Vec<String> = (0..5).map(|i| format!("late-{i}")).collect();
    for t in &late {
        let created = admin(&cluster, create(t, 1, 1)).await;
        assert!(created.error.is_none(), "create {t}: {:?}", created.error);
    }
    cluster.start_broker(victim).await;
    let c = cluster.connect(victim).await;
    let mut names = late.clone();
    names.push("early".into());
    let ask = Req::Metadata(MetadataRequest {
        topics: names.clone(),
    });
    let mut not_ready = 0;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "broker {victim} never became ready"
        );
        let resp = c.request(ask.clone(), TIMEOUT).await.expect("an answer");
        if let Some(e) = resp.error {
            assert_eq!(e.code, ErrorCode::BrokerNotReady as i32, "{e:?}");
            not_ready += 1;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            continue;
        }
        let Some(Resp::Metadata(m)) = resp.body else {
            panic!("not a metadata answer")
        };
        for t in &m.topics {
            assert!(
                t.error.is_none(),
                "restarted broker {victim} answered {:?} for {} (after {not_ready} not-ready answers)",
                t.error,
                t.name
            );
        }
        assert_eq!(m.topics.len(), names.len());
        break;
    }
    assert!(not_ready > 0, "the broker was asked before it was ready");
}

/// A restarted broker that cannot become ready (no controller quorum) still
/// serves the partitions it holds a replica of, when their own Raft group
/// has a majority: readiness guards answers from the topic table, and a
/// produce to a local replica asks the partition's group, not the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_without_a_controller_quorum_serves_its_own_partitions() {
    use common::*;
    use weir::proto::client_request::Body as Req;
    use weir::proto::client_response::Body as Resp;
    use weir::proto::{Acks, ErrorCode, ListOffsetsRequest, MetadataRequest, ProduceRequest};

    // Five brokers, so the controller group has five voters while the
    // topic has three replicas: losing three brokers, two of them not
    // replicas, leaves the partition a majority and the controller none.
    let mut cluster = Cluster::start(5).await;
    wait_for_cluster(&cluster).await;
    create_led(&cluster, "own", 1, 3).await;
    let ask = Req::Metadata(MetadataRequest {
        topics: vec!["own".into()],
    });
    let Resp::Metadata(m) = call(&cluster.any().await, ask).await else {
        panic!("not a metadata answer")
    };
    let replicas = m.topics[0].partitions[0].replicas.clone();
    assert_eq!(replicas.len(), 3, "{replicas:?}");
    // Let every broker save the controller's commit index (every 20 ticks),
    // so that the restart replays the topic's creation from its own log.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (victim, survivor, lost) = (replicas[0], replicas[1], replicas[2]);
    for id in (1..=5).filter(|id| !replicas.contains(id)) {
        cluster.kill(id);
    }
    cluster.kill(lost);
    cluster.kill(victim);
    // The killed listener closes its port when its task is next polled.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    cluster.start_broker(victim).await;
    // The victim never becomes ready (two of five controller voters), but
    // once it has reopened its replica it answers for it from the
    // partition's group (an offset, or who leads), never BROKER_NOT_READY.
    let c = cluster.connect(victim).await;
    let asked = Req::ListOffsets(ListOffsetsRequest {
        topic: "own".into(),
        partition: 0,
        timestamp: -2,
    });
    eventually(
        30,
        "the restarted broker to answer for its replica",
        || async {
            let resp = c.request(asked.clone(), TIMEOUT).await.ok()?;
            let not_ready = resp
                .error
                .is_some_and(|e| e.code == ErrorCode::BrokerNotReady as i32);
            (!not_ready).then_some(())
        },
    )
    .await;
    // And the partition's majority (victim and survivor) takes writes
    // through whichever of the two leads.
    eventually(30, "a write through the partition's majority", || async {
        for id in [victim, survivor] {
            let c = cluster.connect(id).await;
            let req = Req::Produce(ProduceRequest {
                topic: "own".into(),
                partition: 0,
                acks: Acks::All as i32,
                batch: batch_of(&[event("k", "v")]).as_bytes().clone(),
                timeout_ms: 2000,
            });
            let resp = c.request(req, TIMEOUT).await.ok()?;
            if let (None, Some(Resp::Produce(p))) = (&resp.error, &resp.body) {
                if p.error.is_none() {
                    return Some(());
                }
            }
        }
        None
    })
    .await;
    // Questions answered from the table still wait for readiness.
    let c = cluster.connect(victim).await;
    let resp = c
        .request(
            Req::Metadata(MetadataRequest {
                topics: vec!["own".into()],
            }),
            TIMEOUT,
        )
        .await
        .expect("an answer");
    let code = resp.error.map(|e| e.code);
    assert_eq!(code, Some(ErrorCode::BrokerNotReady as i32));
}
