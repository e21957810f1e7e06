//! The broker's failover scenario under turmoil: three brokers on simulated
//! hosts with the simulated disk and network (the same broker code as on
//! TCP and files). A topic of 3 partitions, RF 3; acks=all writes; the
//! leader of partition 0 crashes (losing unsynced writes), a new leader is
//! elected and every acknowledged record is still read at its offset; the
//! old leader restarts and catches up.

use bytes::Bytes;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use weir::broker::{self, BrokerConfig, Seams};
use weir::client::Connection;
use weir::io::net::NetworkRef;
use weir::proto::client_request::Body as Req;
use weir::proto::client_response::Body as Resp;
use weir::proto::*;
use weir::types::{BatchBuilder, Event, RecordBatch};
use weir_sim::{SimDisk, SimNetwork};

const TOPIC: &str = "events";
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Script {
    kill: Option<u64>,
    killed: bool,
    restart: bool,
    restarted: bool,
    done: bool,
    log: Vec<String>,
}

type Shared = Rc<RefCell<Script>>;

fn host(id: u64) -> String {
    format!("b{id}")
}

fn config(id: u64) -> BrokerConfig {
    let peers: BTreeMap<u64, String> = (1..=3).map(|i| (i, format!("{}:7401", host(i)))).collect();
    let mut c = BrokerConfig::single(
        id,
        PathBuf::from("/data"),
        &format!("{}:7400", host(id)),
        &peers[&id],
    );
    c.peers = peers;
    c.driver.tick_ms = 20;
    c
}

async fn run_broker(id: u64) -> turmoil::Result {
    let seams = Seams {
        disk: Arc::new(SimDisk::new()),
        net: Arc::new(SimNetwork::new()),
        clock: Arc::new(weir_sim::sim_clock()),
        logger: if std::env::var("SIM_LOG").is_ok() {
            weir::cli::logging::stderr_logger(slog::Level::Debug)
        } else {
            slog::Logger::root(slog::Discard, slog::o!())
        },
    };
    let running = broker::start(config(id), seams).await?;
    std::future::pending::<()>().await;
    drop(running);
    Ok(())
}

async fn connect(id: u64) -> Option<Connection> {
    let net: NetworkRef = Arc::new(SimNetwork::new());
    Connection::connect(&net, &format!("{}:7400", host(id)))
        .await
        .ok()
}

async fn ask(id: u64, body: Req) -> Option<Resp> {
    let c = connect(id).await?;
    let resp = c.request(body, TIMEOUT).await.ok()?;
    resp.body
}

/// Polls until `f` answers, for at most `secs` of simulated time.
async fn until<T, F, Fut>(secs: u64, what: &str, mut f: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn leader_of(live: &[u64], partition: u32) -> Option<u64> {
    for &id in live {
        if let Some(Resp::Metadata(m)) = ask(
            id,
            Req::Metadata(MetadataRequest {
                topics: vec![TOPIC.into()],
            }),
        )
        .await
        {
            let p = m.topics.first()?.partitions.get(partition as usize)?;
            if p.leader_id != 0 && live.contains(&p.leader_id) {
                return Some(p.leader_id);
            }
        }
    }
    None
}

fn batch(key: &str, value: &str) -> RecordBatch {
    let mut b = BatchBuilder::new();
    b.push(&Event {
        key: Some(Bytes::from(key.to_string())),
        value: Some(Bytes::from(value.to_string())),
        timestamp_ms: 1_700_000_000_000,
        headers: vec![],
    });
    b.build()
}

/// Writes `n` records with acks=all, retrying on every live broker.
async fn write(
    live: &[u64],
    acked: &mut BTreeMap<(u32, i64), String>,
    round: u32,
    n: u32,
) -> Result<(), String> {
    for i in 0..n {
        let partition = i % 3;
        let value = format!("round {round} value {i}");
        let b = batch(&format!("k{i}"), &value);
        let offset = until(30, "an acknowledged write", || {
            let b = b.clone();
            async move {
                for &id in live {
                    let req = Req::Produce(ProduceRequest {
                        topic: TOPIC.into(),
                        partition,
                        acks: Acks::All as i32,
                        batch: b.as_bytes().clone(),
                        timeout_ms: 3000,
                    });
                    if let Some(Resp::Produce(p)) = ask(id, req).await {
                        if p.error.is_none() {
                            return Some(p.base_offset);
                        }
                    }
                }
                None
            }
        })
        .await?;
        acked.insert((partition, offset), value);
    }
    Ok(())
}

/// Reads partition `p` from its leader and checks every acknowledged record.
async fn check(live: &[u64], acked: &BTreeMap<(u32, i64), String>) -> Result<(), String> {
    for p in 0..3u32 {
        let leader = until(30, "a leader", || leader_of(live, p)).await?;
        let req = Req::Fetch(FetchRequest {
            partitions: vec![FetchPartition {
                topic: TOPIC.into(),
                partition: p,
                offset: 0,
                max_bytes: 1 << 20,
                replica_read: false,
            }],
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: 1 << 20,
        });
        let Some(Resp::Fetch(f)) = ask(leader, req).await else {
            return Err(format!("no fetch answer from broker {leader}"));
        };
        let mut seen = BTreeMap::new();
        let batches = weir::types::split_batches(f.partitions[0].records.clone(), usize::MAX)
            .map_err(|e| e.to_string())?;
        for b in batches {
            if b.is_control() {
                continue;
            }
            for r in b.records().map_err(|e| e.to_string())? {
                seen.insert(
                    r.offset,
                    String::from_utf8_lossy(r.event.value.as_deref().unwrap_or_default())
                        .to_string(),
                );
            }
        }
        for ((_, offset), value) in acked.range((p, i64::MIN)..(p + 1, i64::MIN)) {
            if seen.get(offset) != Some(value) {
                return Err(format!(
                    "acknowledged record {p}/{offset} ({value}) reads as {:?}",
                    seen.get(offset)
                ));
            }
        }
    }
    Ok(())
}

async fn client(script: Shared) -> Result<(), String> {
    let all = [1u64, 2, 3];
    until(30, "the cluster", || async {
        match ask(1, Req::DescribeCluster(DescribeClusterRequest {})).await? {
            Resp::DescribeCluster(d)
                if d.controller_id != 0 && d.brokers.iter().filter(|b| b.live).count() == 3 =>
            {
                Some(())
            }
            _ => None,
        }
    })
    .await?;
    let create = Req::CreateTopic(CreateTopicRequest {
        name: TOPIC.into(),
        partitions: 3,
        replication_factor: 3,
        configs: Default::default(),
    });
    until(30, "the topic", || {
        let create = create.clone();
        async move {
            for id in all {
                if let Some(Resp::Admin(a)) = ask(id, create.clone()).await {
                    if a.error.is_none()
                        || a.error
                            .as_ref()
                            .is_some_and(|e| e.code == ErrorCode::TopicAlreadyExists as i32)
                    {
                        return Some(());
                    }
                }
            }
            None
        }
    })
    .await?;
    let mut acked = BTreeMap::new();
    write(&all, &mut acked, 1, 30).await?;
    check(&all, &acked).await?;

    let victim = until(30, "a leader", || leader_of(&all, 0)).await?;
    script.borrow_mut().kill = Some(victim);
    until(30, "the crash", || async {
        script.borrow().killed.then_some(())
    })
    .await?;
    let live: Vec<u64> = all.iter().copied().filter(|b| *b != victim).collect();
    let new_leader = until(30, "a new leader", || leader_of(&live, 0)).await?;
    script
        .borrow_mut()
        .log
        .push(format!("killed {victim}, new leader {new_leader}"));
    write(&live, &mut acked, 2, 30).await?;
    check(&live, &acked).await?;

    script.borrow_mut().restart = true;
    until(30, "the restart", || async {
        script.borrow().restarted.then_some(())
    })
    .await?;
    // The restarted replica catches up: same log end and size everywhere.
    until(60, "the restarted replica to catch up", || async {
        let mut ends = Vec::new();
        for id in all {
            let Some(Resp::DescribeLogDirs(d)) = ask(
                id,
                Req::DescribeLogDirs(DescribeLogDirsRequest {
                    topics: vec![TOPIC.into()],
                }),
            )
            .await
            else {
                return None;
            };
            let p = d.partitions.iter().find(|p| p.partition == 0)?;
            ends.push((p.log_end_offset, p.size_bytes));
        }
        script.borrow_mut().log.push(format!("ends {ends:?}"));
        (ends.windows(2).all(|w| w[0] == w[1])).then_some(())
    })
    .await?;
    check(&all, &acked).await?;
    script.borrow_mut().done = true;
    Ok(())
}

fn run(seed: u64) -> Result<Vec<String>, String> {
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(Duration::from_secs(600))
        .build();
    for id in 1..=3 {
        sim.host(host(id), move || run_broker(id));
    }
    let script: Shared = Rc::default();
    let s = script.clone();
    let result: Rc<RefCell<Option<Result<(), String>>>> = Rc::default();
    let r = result.clone();
    sim.client("client", async move {
        *r.borrow_mut() = Some(client(s).await);
        Ok(())
    });
    // Bounded by the simulation duration: step returns an error past it.
    loop {
        let finished = sim.step().map_err(|e| format!("simulation failed: {e}"))?;
        let mut sc = script.borrow_mut();
        if let (Some(victim), false) = (sc.kill, sc.killed) {
            sim.crash(host(victim));
            sc.killed = true;
        }
        if sc.restart && !sc.restarted {
            sim.bounce(host(sc.kill.expect("a victim")));
            sc.restarted = true;
        }
        if finished || sc.done {
            break;
        }
    }
    let outcome = result.borrow_mut().take();
    match outcome {
        Some(Ok(())) => Ok(script.borrow().log.clone()),
        Some(Err(e)) => Err(format!(
            "{e}; log tail: {:?}",
            script.borrow().log.iter().rev().take(3).collect::<Vec<_>>()
        )),
        None if script.borrow().done => Ok(script.borrow().log.clone()),
        None => Err("the client never finished".into()),
    }
}

#[test]
fn failover_under_simulation() {
    for seed in 0..2u64 {
        let log = run(seed).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        eprintln!("seed {seed}: {log:?}");
    }
}
