//! An in-process cluster of brokers on loopback TCP with temporary data
//! directories, and a small admin/produce/fetch client for tests.

#![allow(dead_code)]

use bytes::Bytes;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use weir::broker::{self, BrokerConfig, Running, Seams};
use weir::client::Connection;
use weir::io::net::{NetworkRef, TcpNetwork};
use weir::io::{RealDisk, TokioClock};
use weir::proto::client_request::Body as Req;
use weir::proto::client_response::Body as Resp;
use weir::proto::*;
use weir::types::{BatchBuilder, Event, RecordBatch};

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Discards logs, unless WEIR_TEST_LOG names a level (then to stderr).
pub fn logger() -> slog::Logger {
    match std::env::var("WEIR_TEST_LOG")
        .ok()
        .and_then(|l| weir::cli::logging::parse_level(&l).ok())
    {
        Some(level) => weir::cli::logging::stderr_logger(level),
        None => slog::Logger::root(slog::Discard, slog::o!()),
    }
}

/// Loopback ports free right now, never handed out twice in this process.
/// They come from below the kernel's ephemeral range (32768 and up on
/// Linux), so a client connection's local port cannot take one between
/// this check and the broker's bind, and from a process-wide counter, so
/// tests running in parallel in one binary never get the same port. The
/// start depends on the process id, so that separate test processes
/// rarely overlap either.
pub fn free_ports(n: usize) -> Vec<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id() * 97) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    let mut out = Vec::with_capacity(n);
    for _ in 0..SPAN {
        if out.len() == n {
            break;
        }
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            out.push(port);
        }
    }
    assert_eq!(out.len(), n, "no {n} free loopback ports below 32000");
    out
}

/// A `weir broker` process (the built binary) with a fresh data directory
/// and free ports, killed when dropped. Callers wait for it to be ready in
/// their own way.
pub struct BrokerProcess {
    child: std::process::Child,
    pub bootstrap: String,
    _dir: tempfile::TempDir,
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `weir broker` with default settings on free loopback ports.
pub fn spawn_broker_process() -> BrokerProcess {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(2);
    let bootstrap = format!("127.0.0.1:{}", ports[0]);
    let child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["broker", "--log-level", "warn", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen", &bootstrap])
        .args(["--peer-listen", &format!("127.0.0.1:{}", ports[1])])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("weir broker starts");
    BrokerProcess {
        child,
        bootstrap,
        _dir: dir,
    }
}

pub struct Cluster {
    pub dirs: tempfile::TempDir,
    pub configs: BTreeMap<u64, BrokerConfig>,
    pub running: BTreeMap<u64, Running>,
    pub net: NetworkRef,
}

impl Cluster {
    pub async fn start(n: u64) -> Cluster {
        Self::start_with(n, |_| {}).await
    }

    /// Starts `n` brokers, letting `adjust` change each one's config first.
    pub async fn start_with(n: u64, adjust: impl Fn(&mut BrokerConfig)) -> Cluster {
        let dirs = tempfile::tempdir().unwrap();
        let ports = free_ports(2 * n as usize);
        let peers: BTreeMap<u64, String> = (1..=n)
            .map(|id| (id, format!("127.0.0.1:{}", ports[(n + id - 1) as usize])))
            .collect();
        let mut configs = BTreeMap::new();
        for id in 1..=n {
            let listen = format!("127.0.0.1:{}", ports[(id - 1) as usize]);
            let mut c = BrokerConfig::single(
                id,
                dirs.path().join(format!("broker-{id}")),
                &listen,
                &peers[&id],
            );
            c.peers = peers.clone();
            c.driver.tick_ms = 20;
            adjust(&mut c);
            configs.insert(id, c);
        }
        let net: NetworkRef = Arc::new(TcpNetwork::default());
        let mut cluster = Cluster {
            dirs,
            configs,
            running: BTreeMap::new(),
            net,
        };
        for id in 1..=n {
            cluster.start_broker(id).await;
        }
        cluster
    }

    pub async fn start_broker(&mut self, id: u64) {
        let seams = Seams {
            disk: Arc::new(RealDisk),
            net: self.net.clone(),
            clock: Arc::new(TokioClock::from_system_time()),
            logger: logger(),
        };
        let running = broker::start(self.configs[&id].clone(), seams)
            .await
            .expect("broker starts");
        self.running.insert(id, running);
    }

    pub fn kill(&mut self, id: u64) {
        if let Some(r) = self.running.remove(&id) {
            r.kill();
        }
    }

    pub fn client_addr(&self, id: u64) -> String {
        self.configs[&id].listen.clone()
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.configs[&id].data_dir.clone()
    }

    pub async fn connect(&self, id: u64) -> Connection {
        Connection::connect(&self.net, &self.client_addr(id))
            .await
            .expect("connect")
    }

    /// Some running broker's connection.
    pub async fn any(&self) -> Connection {
        let id = *self.running.keys().next().expect("a running broker");
        self.connect(id).await
    }
}

pub async fn call(c: &Connection, body: Req) -> Resp {
    let resp = c.request(body, TIMEOUT).await.expect("response");
    assert!(resp.error.is_none(), "request failed: {:?}", resp.error);
    resp.body.expect("response body")
}

/// Polls `f` every 50 ms until it returns Some, for at most `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every running broker is registered and live, and returns
/// the controller id.
pub async fn wait_for_cluster(cluster: &Cluster) -> u64 {
    let n = cluster.running.len();
    eventually(20, "the cluster to form", || async {
        let c = cluster.any().await;
        match c
            .request(Req::DescribeCluster(DescribeClusterRequest {}), TIMEOUT)
            .await
            .ok()?
            .body?
        {
            Resp::DescribeCluster(d)
                if d.controller_id != 0 && d.brokers.iter().filter(|b| b.live).count() >= n =>
            {
                Some(d.controller_id)
            }
            _ => None,
        }
    })
    .await
}

/// Sends an admin request to the controller, retrying while it moves.
pub async fn admin(cluster: &Cluster, body: Req) -> AdminResponse {
    eventually(20, "an admin answer", || {
        let body = body.clone();
        async move {
            for id in cluster.running.keys() {
                let c = cluster.connect(*id).await;
                if let Ok(resp) = c.request(body.clone(), TIMEOUT).await {
                    if let Some(Resp::Admin(a)) = resp.body {
                        let code = a.error.as_ref().map(|e| e.code).unwrap_or(0);
                        if code != ErrorCode::NotController as i32
                            && code != ErrorCode::LeaderNotAvailable as i32
                        {
                            return Some(a);
                        }
                    }
                }
            }
            None
        }
    })
    .await
}

pub fn create(name: &str, partitions: u32, rf: u32) -> Req {
    Req::CreateTopic(CreateTopicRequest {
        name: name.into(),
        partitions,
        replication_factor: rf,
        configs: Default::default(),
    })
}

/// Creates `name` (failing the test if the controller refuses) and returns
/// each partition's leader once all have one.
pub async fn create_led(cluster: &Cluster, name: &str, partitions: u32, rf: u32) -> Vec<u64> {
    let created = admin(cluster, create(name, partitions, rf)).await;
    assert!(
        created.error.is_none(),
        "create {name}: {:?}",
        created.error
    );
    leaders(cluster, name, partitions).await
}

/// The leader of each partition of `topic`, once all have one.
pub async fn leaders(cluster: &Cluster, topic: &str, partitions: u32) -> Vec<u64> {
    eventually(20, "partition leaders", || async {
        let c = cluster.any().await;
        let Resp::Metadata(m) = c
            .request(
                Req::Metadata(MetadataRequest {
                    topics: vec![topic.into()],
                }),
                TIMEOUT,
            )
            .await
            .ok()?
            .body?
        else {
            return None;
        };
        let t = m.topics.first()?;
        let leaders: Vec<u64> = t.partitions.iter().map(|p| p.leader_id).collect();
        let live: Vec<u64> = cluster.running.keys().copied().collect();
        (leaders.len() == partitions as usize && leaders.iter().all(|l| live.contains(l)))
            .then_some(leaders)
    })
    .await
}

pub fn batch_of(events: &[Event]) -> RecordBatch {
    let mut b = BatchBuilder::new();
    for e in events {
        b.push(e);
    }
    b.build()
}

pub fn event(key: &str, value: &str) -> Event {
    Event {
        key: Some(Bytes::from(key.to_string())),
        value: Some(Bytes::from(value.to_string())),
        timestamp_ms: 1_700_000_000_000,
        headers: vec![],
    }
}

pub async fn produce(
    c: &Connection,
    topic: &str,
    partition: u32,
    batch: &RecordBatch,
    acks: Acks,
) -> ProduceResponse {
    let req = Req::Produce(ProduceRequest {
        topic: topic.into(),
        partition,
        acks: acks as i32,
        batch: batch.as_bytes().clone(),
        timeout_ms: 5000,
    });
    match c.request(req, TIMEOUT).await {
        Ok(ClientResponse {
            body: Some(Resp::Produce(p)),
            ..
        }) => p,
        other => panic!("produce got {other:?}"),
    }
}

/// Fetches every committed record of a partition from its leader.
pub async fn read_all(c: &Connection, topic: &str, partition: u32) -> Vec<weir::types::Record> {
    let mut out = Vec::new();
    let mut offset = 0i64;
    loop {
        let req = Req::Fetch(FetchRequest {
            partitions: vec![FetchPartition {
                topic: topic.into(),
                partition,
                offset,
                max_bytes: 1 << 20,
                replica_read: false,
            }],
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: 1 << 20,
        });
        let Resp::Fetch(f) = call(c, req).await else {
            panic!("not a fetch response")
        };
        let p = &f.partitions[0];
        assert!(p.error.is_none(), "fetch failed: {:?}", p.error);
        if p.records.is_empty() {
            return out;
        }
        for batch in weir::types::split_batches(p.records.clone(), usize::MAX).unwrap() {
            if !batch.is_control() {
                out.extend(
                    batch
                        .records()
                        .unwrap()
                        .into_iter()
                        .filter(|r| r.offset >= offset),
                );
            }
            offset = batch.next_offset();
        }
    }
}
