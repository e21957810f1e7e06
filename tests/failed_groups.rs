//! A fault confined to one Raft group fail-stops that group only, and the
//! broker says so: `weir topic describe` shows the replica as failed with
//! its cause, and `weir cluster health` lists it and exits 1. Before, the
//! partition just had no answers, and nothing told the operator why.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use weir::broker::{self, BrokerConfig, Seams};
use weir::io::{Disk, DiskFile, FileSync, OpenMode, RealDisk, SyncHandle, TokioClock};
use weir::proto::{Acks, ErrorCode};

/// Real files, except that once `armed`, appends to files whose path
/// contains `doomed` fail with EIO; syncs of those files are counted.
#[derive(Debug)]
struct DoomedDisk {
    inner: RealDisk,
    doomed: String,
    armed: Arc<AtomicBool>,
    syncs: Arc<AtomicU64>,
}

#[derive(Debug)]
struct DoomedFile {
    inner: Box<dyn DiskFile>,
    armed: Option<Arc<AtomicBool>>,
    syncs: Arc<AtomicU64>,
}

#[derive(Debug)]
struct CountedSync {
    inner: SyncHandle,
    syncs: Arc<AtomicU64>,
}

impl FileSync for CountedSync {
    fn sync(&self) -> io::Result<()> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        self.inner.sync()
    }
    fn drop_cache(&self, len: u64) -> io::Result<()> {
        self.inner.drop_cache(len)
    }
}

impl DoomedFile {
    fn check(&self) -> io::Result<()> {
        match &self.armed {
            Some(a) if a.load(Ordering::SeqCst) => Err(io::Error::other("injected EIO")),
            _ => Ok(()),
        }
    }
}

impl DiskFile for DoomedFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.inner.read_at(buf, pos)
    }
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.check()?;
        self.inner.append(data)
    }
    fn append_parts(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        self.check()?;
        self.inner.append_parts(parts)
    }
    fn sync(&self) -> io::Result<()> {
        if self.armed.is_some() {
            self.syncs.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.sync()
    }
    fn sync_handle(&self) -> io::Result<SyncHandle> {
        let inner = self.inner.sync_handle()?;
        if self.armed.is_none() {
            return Ok(inner);
        }
        Ok(Arc::new(CountedSync {
            inner,
            syncs: self.syncs.clone(),
        }))
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.inner.truncate(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
}

impl Disk for DoomedDisk {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn DiskFile>> {
        let inner = self.inner.open(path, mode)?;
        let doomed = path.to_string_lossy().contains(&self.doomed);
        Ok(Box::new(DoomedFile {
            inner,
            armed: doomed.then(|| self.armed.clone()),
            syncs: self.syncs.clone(),
        }))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dir(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_dir_all(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.inner.sync_dir(path)
    }
    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }
}

/// Runs the `weir` binary as a client; returns (exit code, stdout, stderr).
async fn weir(args: Vec<String>) -> (Option<i32>, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(&args)
            .output()
            .expect("weir runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_partition_log_is_reported_and_the_broker_serves_the_rest() {
    let dirs = tempfile::tempdir().unwrap();
    let ports = free_ports(2);
    let listen = format!("127.0.0.1:{}", ports[0]);
    let mut config = BrokerConfig::single(
        1,
        dirs.path().join("broker-1"),
        &listen,
        &format!("127.0.0.1:{}", ports[1]),
    );
    config.driver.tick_ms = 20;
    let armed = Arc::new(AtomicBool::new(false));
    let disk = Arc::new(DoomedDisk {
        inner: RealDisk,
        doomed: "/doomed-0.".into(),
        armed: armed.clone(),
        syncs: Arc::new(AtomicU64::new(0)),
    });
    let net: weir::io::net::NetworkRef = Arc::new(weir::io::net::TcpNetwork::default());
    let seams = Seams {
        disk,
        net: net.clone(),
        clock: Arc::new(TokioClock::from_system_time()),
        logger: logger(),
    };
    let running = broker::start(config.clone(), seams).await.unwrap();
    let cluster = Cluster {
        dirs,
        configs: BTreeMap::from([(1, config)]),
        running: BTreeMap::from([(1, running)]),
        net,
    };
    wait_for_cluster(&cluster).await;
    create_led(&cluster, "doomed", 1, 1).await;
    create_led(&cluster, "fine", 1, 1).await;
    let c = cluster.connect(1).await;
    let batch = batch_of(&[event("k", "v")]);
    let ok = produce(&c, "doomed", 0, &batch, Acks::All).await;
    assert!(ok.error.is_none(), "{:?}", ok.error);

    // The partition's next append fails: its group stops on this broker.
    armed.store(true, Ordering::SeqCst);
    let failed = produce(&c, "doomed", 0, &batch, Acks::All).await;
    let e = failed.error.expect("the append fails");
    assert_eq!(e.code, ErrorCode::StorageError as i32, "{e:?}");

    let bootstrap = format!("--bootstrap={listen}");
    let (code, out, err) = weir(vec![
        "topic".into(),
        "describe".into(),
        "doomed".into(),
        bootstrap.clone(),
        "--output=json".into(),
    ])
    .await;
    assert_eq!(code, Some(0), "{err}");
    let d: serde_json::Value = serde_json::from_str(&out).unwrap();
    let f = &d["partitions"][0]["failed"][0];
    assert_eq!(f["broker"], 1, "{out}");
    assert!(
        f["cause"].as_str().unwrap().contains("injected EIO"),
        "{out}"
    );
    let (code, out, _) = weir(vec![
        "topic".into(),
        "describe".into(),
        "doomed".into(),
        bootstrap.clone(),
    ])
    .await;
    assert_eq!(code, Some(0));
    assert!(
        out.contains("FAILED: partition 0 on broker 1:") && out.contains("injected EIO"),
        "{out}"
    );

    let (code, out, err) = weir(vec!["cluster".into(), "health".into(), bootstrap.clone()]).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains("doomed/0") && out.contains("injected EIO"),
        "{out}"
    );
    assert!(!out.contains("fine/0"), "{out}");

    // The rest of the broker is unaffected.
    let ok = produce(&c, "fine", 0, &batch, Acks::All).await;
    assert!(ok.error.is_none(), "{:?}", ok.error);
    let (code, out, _) = weir(vec![
        "topic".into(),
        "describe".into(),
        "fine".into(),
        bootstrap,
        "--output=json".into(),
    ])
    .await;
    assert_eq!(code, Some(0));
    let d: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(d["partitions"][0]["failed"], serde_json::json!([]), "{out}");
}

/// A healthy cluster's `weir cluster health` says so and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_cluster_is_healthy() {
    let cluster = Cluster::start(1).await;
    wait_for_cluster(&cluster).await;
    create_led(&cluster, "t", 1, 1).await;
    let bootstrap = format!("--bootstrap={}", cluster.client_addr(1));
    let (code, out, err) = weir(vec!["cluster".into(), "health".into(), bootstrap.clone()]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("Healthy"), "{out}");
    let (code, out, _) = weir(vec![
        "cluster".into(),
        "health".into(),
        bootstrap,
        "--output=json".into(),
    ])
    .await;
    assert_eq!(code, Some(0));
    let d: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(d["healthy"], true, "{out}");
}

/// A graceful stop syncs every log, even with `fsync = never`: the driver
/// gets its Shutdown input and syncs before it ends. Before, `stop` aborted
/// the driver with the other tasks first, so it never read that input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_syncs_every_log() {
    let dirs = tempfile::tempdir().unwrap();
    let ports = free_ports(2);
    let listen = format!("127.0.0.1:{}", ports[0]);
    let mut config = BrokerConfig::single(
        1,
        dirs.path().join("broker-1"),
        &listen,
        &format!("127.0.0.1:{}", ports[1]),
    );
    config.driver.tick_ms = 20;
    config.driver.fsync = weir::replication::driver::FsyncPolicy::Never;
    let syncs = Arc::new(AtomicU64::new(0));
    let disk = Arc::new(DoomedDisk {
        inner: RealDisk,
        doomed: "/synced-0.".into(),
        armed: Arc::new(AtomicBool::new(false)),
        syncs: syncs.clone(),
    });
    let net: weir::io::net::NetworkRef = Arc::new(weir::io::net::TcpNetwork::default());
    let seams = Seams {
        disk,
        net: net.clone(),
        clock: Arc::new(TokioClock::from_system_time()),
        logger: logger(),
    };
    let running = broker::start(config.clone(), seams).await.unwrap();
    let mut cluster = Cluster {
        dirs,
        configs: BTreeMap::from([(1, config)]),
        running: BTreeMap::from([(1, running)]),
        net,
    };
    wait_for_cluster(&cluster).await;
    create_led(&cluster, "synced", 1, 1).await;
    let c = cluster.connect(1).await;
    for i in 0..20 {
        let batch = batch_of(&[event("k", &format!("v{i}"))]);
        let ok = produce(&c, "synced", 0, &batch, Acks::All).await;
        assert!(ok.error.is_none(), "{:?}", ok.error);
    }
    let before = syncs.load(Ordering::SeqCst);
    cluster.running.remove(&1).unwrap().stop().await;
    assert!(
        syncs.load(Ordering::SeqCst) > before,
        "no sync of the partition log at a graceful stop"
    );
}
