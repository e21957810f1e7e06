//! What the broker's `fsync` setting risks, shown with turmoil's simulated
//! disk, which loses every write not fsynced when a host crashes: a single
//! broker acknowledges writes, crashes and restarts. With `always` every
//! acknowledged write is still there; with `never` they are not.

use bytes::Bytes;
use std::cell::RefCell;
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
use weir::replication::driver::FsyncPolicy;
use weir::types::{BatchBuilder, Event};
use weir_sim::{sim_clock, SimDisk, SimNetwork};

const WRITES: usize = 20;

#[derive(Default)]
struct Script {
    acked: usize,
    crash: bool,
    restarted: bool,
    survived: Option<usize>,
}

async fn broker(fsync: FsyncPolicy) -> turmoil::Result {
    let mut config = BrokerConfig::single(1, PathBuf::from("/data"), "b1:7400", "b1:7401");
    config.driver.tick_ms = 20;
    config.driver.fsync = fsync;
    let seams = Seams {
        disk: Arc::new(SimDisk::new()),
        net: Arc::new(SimNetwork::new()),
        clock: Arc::new(sim_clock()),
        logger: slog::Logger::root(slog::Discard, slog::o!()),
    };
    let _running = broker::start(config, seams).await?;
    std::future::pending::<()>().await;
    Ok(())
}

async fn ask(body: Req) -> Option<Resp> {
    let net: NetworkRef = Arc::new(SimNetwork::new());
    let c = Connection::connect(&net, "b1:7400").await.ok()?;
    c.request(body, Duration::from_secs(2)).await.ok()?.body
}

async fn retry<T, F: FnMut() -> Fut, Fut: std::future::Future<Output = Option<T>>>(
    mut f: F,
) -> Option<T> {
    for _ in 0..300 {
        if let Some(v) = f().await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

fn produce_req(i: usize) -> Req {
    let mut b = BatchBuilder::new();
    b.push(&Event {
        value: Some(Bytes::from(format!("event {i}"))),
        ..Event::default()
    });
    Req::Produce(ProduceRequest {
        topic: "t".into(),
        partition: 0,
        acks: Acks::Leader as i32,
        batch: b.build().into_bytes(),
        timeout_ms: 2000,
    })
}

async fn client(script: Rc<RefCell<Script>>) -> Option<()> {
    retry(|| async {
        let create = Req::CreateTopic(CreateTopicRequest {
            name: "t".into(),
            partitions: 1,
            replication_factor: 1,
            configs: Default::default(),
        });
        match ask(create).await? {
            Resp::Admin(a) if a.error.is_none() => Some(()),
            _ => None,
        }
    })
    .await?;
    for i in 0..WRITES {
        retry(|| async {
            match ask(produce_req(i)).await? {
                Resp::Produce(p) if p.error.is_none() => Some(()),
                _ => None,
            }
        })
        .await?;
        script.borrow_mut().acked += 1;
    }
    script.borrow_mut().crash = true;
    retry(|| async { script.borrow().restarted.then_some(()) }).await?;
    // Read what survived: the high watermark after the restart (or nothing,
    // if the topic itself was lost).
    let survived = retry(|| async {
        let req = Req::ListOffsets(ListOffsetsRequest {
            topic: "t".into(),
            partition: 0,
            timestamp: -1,
        });
        let resp = ask(req).await;
        if std::env::var("SIM_DEBUG").is_ok() {
            eprintln!("{resp:?}");
        }
        match resp? {
            Resp::ListOffsets(o) if o.error.is_none() => Some(o.offset.max(1) as usize - 1),
            Resp::ListOffsets(o)
                if o.error
                    .as_ref()
                    .is_some_and(|e| e.code == ErrorCode::UnknownTopic as i32) =>
            {
                Some(0)
            }
            _ => None,
        }
    })
    .await?;
    script.borrow_mut().survived = Some(survived);
    Some(())
}

/// Acknowledged writes still there after a crash.
fn survivors(fsync: FsyncPolicy) -> (usize, usize) {
    let mut sim = turmoil::Builder::new()
        .rng_seed(7)
        .simulation_duration(Duration::from_secs(300))
        .build();
    sim.host("b1", move || broker(fsync));
    let script: Rc<RefCell<Script>> = Rc::default();
    let s = script.clone();
    sim.client("client", async move {
        client(s).await;
        Ok(())
    });
    loop {
        let done = sim.step().expect("the simulation runs");
        let mut sc = script.borrow_mut();
        if sc.crash && !sc.restarted {
            sim.crash("b1");
            sim.bounce("b1");
            sc.restarted = true;
        }
        if done || sc.survived.is_some() {
            break;
        }
    }
    let sc = script.borrow();
    let survived = sc.survived.unwrap_or_else(|| {
        panic!(
            "{fsync:?}: no read back after the restart (acked {}, crashed {})",
            sc.acked, sc.restarted
        )
    });
    (sc.acked, survived)
}

#[test]
fn fsync_always_keeps_acknowledged_writes_and_never_loses_them() {
    let (acked, kept) = survivors(FsyncPolicy::Always);
    assert_eq!(acked, WRITES);
    // Offsets after the restart count the new leader's no-op too.
    assert!(
        kept >= WRITES,
        "fsync=always lost acknowledged writes: {kept} of {acked}"
    );
    let (acked, kept) = survivors(FsyncPolicy::Never);
    assert_eq!(acked, WRITES);
    assert!(
        kept < WRITES,
        "fsync=never kept every write through a crash: the simulated disk should lose them"
    );
}
