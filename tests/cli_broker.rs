//! `weir broker` as a user runs it: starts, serves, stops cleanly on
//! SIGTERM with exit status 0, and finds its data again on restart.

mod common;

use common::*;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use weir::client::Connection;
use weir::io::net::{NetworkRef, TcpNetwork};
use weir::proto::client_request::Body as Req;
use weir::proto::*;

fn spawn(data_dir: &std::path::Path, client: u16, peer: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["broker", "--log-level", "warn", "--data-dir"])
        .arg(data_dir)
        .args(["--listen", &format!("127.0.0.1:{client}")])
        .args(["--peer-listen", &format!("127.0.0.1:{peer}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weir broker starts")
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM failed");
    child.wait().unwrap()
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

/// Waits until the broker registered itself with its controller.
async fn registered(c: &Connection) {
    eventually(20, "the broker to register", || async {
        match c
            .request(Req::DescribeCluster(DescribeClusterRequest {}), TIMEOUT)
            .await
            .ok()?
            .body?
        {
            client_response::Body::DescribeCluster(d) if d.brokers.iter().any(|b| b.live) => {
                Some(())
            }
            _ => None,
        }
    })
    .await
}

async fn admin_call(c: &Connection, body: Req) -> AdminResponse {
    registered(c).await;
    eventually(20, "the controller", || {
        let body = body.clone();
        async move {
            match c.request(body, TIMEOUT).await.ok()?.body? {
                client_response::Body::Admin(a)
                    if a.error.as_ref().map(|e| e.code)
                        != Some(ErrorCode::LeaderNotAvailable as i32) =>
                {
                    Some(a)
                }
                _ => None,
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_serves_stops_cleanly_and_restarts_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(2);
    let mut child = spawn(dir.path(), ports[0], ports[1]);
    let c = connect(ports[0]).await;
    let created = admin_call(&c, create("quickstart-events", 1, 1)).await;
    assert!(created.error.is_none(), "{:?}", created.error);
    let batch = batch_of(&[event("k", "hello"), event("k", "world")]);
    let acked = eventually(20, "an acknowledged write", || async {
        let r = produce(&c, "quickstart-events", 0, &batch, Acks::All).await;
        r.error.is_none().then_some(r.base_offset)
    })
    .await;
    // Offset 0 holds the first leader's no-op control batch.
    assert_eq!(acked, 1);
    drop(c);
    let status = terminate(&mut child);
    assert!(status.success(), "weir broker exited with {status}");

    let mut child = spawn(dir.path(), ports[0], ports[1]);
    let c = connect(ports[0]).await;
    let records = eventually(20, "the partition after restart", || async {
        let r = read_all_retry(&c).await?;
        (r.len() == 2).then_some(r)
    })
    .await;
    assert_eq!(records[1].event.value.as_deref(), Some(&b"world"[..]));
    assert!(terminate(&mut child).success());
}

async fn read_all_retry(c: &Connection) -> Option<Vec<weir::types::Record>> {
    let req = Req::Fetch(FetchRequest {
        partitions: vec![FetchPartition {
            topic: "quickstart-events".into(),
            partition: 0,
            offset: 0,
            max_bytes: 1 << 20,
            replica_read: false,
        }],
        max_wait_ms: 0,
        min_bytes: 0,
        max_bytes: 1 << 20,
    });
    let client_response::Body::Fetch(f) = c.request(req, TIMEOUT).await.ok()?.body? else {
        return None;
    };
    let p = f.partitions.first()?;
    if p.error.is_some() {
        return None;
    }
    let mut out = Vec::new();
    for b in weir::types::split_batches(p.records.clone(), usize::MAX).ok()? {
        if !b.is_control() {
            out.extend(b.records().ok()?);
        }
    }
    Some(out)
}

#[test]
fn bad_flags_are_one_clear_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["broker", "--id", "2", "--peers", "1=127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--peers must include this broker"), "{err}");
}
