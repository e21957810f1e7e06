//! A broker: wires the layers together and runs them until shut down.
//!
//! The caller injects the seams (disk, network, clock, logger, and the
//! future that says when to stop), so the same code runs as `weir broker`
//! on files and TCP, in-process in tests, and on turmoil hosts.

use crate::cluster::backend::Backend;
use crate::cluster::controller::{Controller, ControllerApply, Metadata, CONTROLLER_GROUP};
use crate::io::net::NetworkRef;
use crate::io::{ClockRef, DiskRef};
use crate::partition::{PartitionService, Replicas};
use crate::proto::{peer_message, GroupLeader, LeaderReport, PeerMessage};
use crate::replication::driver::{Driver, DriverConfig, GroupSpec, Input, StatusBoard};
use crate::replication::raft_log::RaftLog;
use crate::replication::transport::{self, LinkItem, PeerLinks, PeerView, RaftOutbound};
use crate::server::handlers::Services;
use crate::server::{self, ServerLimits};
use crate::storage::LogConfig;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

/// The controller group has at most this many voters.
pub const CONTROLLER_VOTERS_MAX: usize = 5;
/// Inputs queued for the driver before senders wait.
const DRIVER_QUEUE_LEN: usize = 4096;
/// How often a broker tells its peers which groups it leads.
const LEADER_REPORT_MS: u64 = 500;
// Idle groups trust these reports for a while (transport.rs); a window of
// one report would wake every idle group whenever one report is late.
const _: () = assert!(transport::QUIESCENT_TRUST_MS >= 3 * LEADER_REPORT_MS);

/// How a broker is set up.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    pub id: u64,
    pub data_dir: PathBuf,
    /// Where clients connect, as bound.
    pub listen: String,
    /// Where clients are told to connect (defaults to `listen`).
    pub advertised_listen: Option<String>,
    /// Where peers connect.
    pub peer_listen: String,
    /// The initial members by peer address, this broker included.
    pub peers: BTreeMap<u64, String>,
    pub driver: DriverConfig,
    pub limits: ServerLimits,
    pub retention_check_ms: u64,
    /// Bytes at the end of each partition log whose cached pages are kept
    /// after a sync; the rest are dropped (0: the OS decides; default
    /// 64 MiB). See
    /// [`crate::storage::LogConfig::page_cache_keep_bytes`].
    pub page_cache_keep_bytes: u64,
    /// Rate of the background scrub that checks every batch's CRC in the
    /// partition logs (0: off; see [`crate::partition::repair`]).
    pub scrub_bytes_per_sec: u64,
    /// Least time between the starts of two scrub passes over every log.
    pub scrub_interval_ms: u64,
}

/// The default scrub rate: 16 MiB/s reads a terabyte of logs about every
/// 18 hours, while taking a few percent of one SSD's bandwidth (or a
/// quarter of a slow disk's) and well under 1% of a core for the CRCs.
pub const SCRUB_BYTES_PER_SEC_DEFAULT: u64 = 16 * 1024 * 1024;
/// The highest scrub rate accepted: past a few GiB/s the scrub would take a
/// whole disk's bandwidth from the brokers' own work.
pub const SCRUB_BYTES_PER_SEC_MAX: u64 = 4 * 1024 * 1024 * 1024;
/// The default least time between scrub passes: an hour, so a broker whose
/// logs take less to read does not read them over and over (ZFS and Ceph
/// scrub weekly; an hour finds rot while replicas still hold good copies).
pub const SCRUB_INTERVAL_MS_DEFAULT: u64 = 3_600_000;

impl BrokerConfig {
    /// A single-broker cluster with the documented defaults.
    pub fn single(id: u64, data_dir: PathBuf, listen: &str, peer_listen: &str) -> Self {
        BrokerConfig {
            id,
            data_dir,
            listen: listen.to_string(),
            advertised_listen: None,
            peer_listen: peer_listen.to_string(),
            peers: BTreeMap::from([(id, peer_listen.to_string())]),
            driver: DriverConfig::new(id, id),
            limits: ServerLimits::default(),
            retention_check_ms: 60_000,
            page_cache_keep_bytes: crate::storage::LogConfig::default().page_cache_keep_bytes,
            scrub_bytes_per_sec: SCRUB_BYTES_PER_SEC_DEFAULT,
            scrub_interval_ms: SCRUB_INTERVAL_MS_DEFAULT,
        }
    }

    pub fn validate(&self) -> Result<(), BrokerError> {
        if self.id == 0 {
            return Err(BrokerError::Config(
                "broker id must be at least 1 (0 means 'none' in Raft)".into(),
            ));
        }
        if !self.peers.contains_key(&self.id) {
            return Err(BrokerError::Config(format!(
                "--peers must include this broker (id {}) with its peer address",
                self.id
            )));
        }
        if self.peers.contains_key(&0) {
            return Err(BrokerError::Config("peer ids must be at least 1".into()));
        }
        if self.limits.request_bytes_in_flight_max < 1024 * 1024 {
            return Err(BrokerError::Config(format!(
                "max_request_bytes_in_flight is {} bytes; it must be at least 1048576 \
                 (1 MiB), or a broker could hold only a request or two at once",
                self.limits.request_bytes_in_flight_max
            )));
        }
        if self.limits.connections_max == 0 || self.limits.in_flight_per_connection_max == 0 {
            return Err(BrokerError::Config(
                "max_connections and max_in_flight_per_connection must be at least 1".into(),
            ));
        }
        if self.scrub_bytes_per_sec > SCRUB_BYTES_PER_SEC_MAX {
            return Err(BrokerError::Config(format!(
                "scrub_bytes_per_sec is {}; it must be 0 (off) to {SCRUB_BYTES_PER_SEC_MAX}",
                self.scrub_bytes_per_sec
            )));
        }
        Ok(())
    }
}

/// Why a broker could not start.
#[derive(Debug)]
pub enum BrokerError {
    Config(String),
    Io(String),
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BrokerError::Config(m) => write!(f, "invalid broker configuration: {m}"),
            BrokerError::Io(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for BrokerError {}

/// The seams a broker runs on.
#[derive(Clone, Debug)]
pub struct Seams {
    pub disk: DiskRef,
    pub net: NetworkRef,
    pub clock: ClockRef,
    pub logger: slog::Logger,
}

/// Runs a broker until `shutdown` completes, then stops accepting, syncs
/// every log and returns.
pub async fn run(
    config: BrokerConfig,
    seams: Seams,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BrokerError> {
    let running = start(config, seams).await?;
    shutdown.await;
    running.stop().await;
    Ok(())
}

/// How long a graceful stop waits for in-flight client requests.
const DRAIN_MS: u64 = 5_000;

/// A started broker.
pub struct Running {
    tasks: JoinSet<()>,
    server: tokio::task::JoinHandle<()>,
    stop_serving: tokio::sync::watch::Sender<bool>,
    driver: tokio::sync::mpsc::Sender<Input>,
    pub board: StatusBoard,
    pub metadata: Metadata,
    pub logger: slog::Logger,
}

impl Running {
    /// Graceful stop: no new requests, every log synced.
    pub async fn stop(mut self) {
        // Stop taking requests and let those already read finish (bounded),
        // then stop everything else and let the driver sync and stop.
        let _ = self.stop_serving.send(true);
        let drained = tokio::time::timeout(Duration::from_millis(DRAIN_MS), &mut self.server).await;
        if drained.is_err() {
            self.server.abort();
        }
        self.tasks.abort_all();
        let (done, wait) = oneshot::channel();
        if self.driver.send(Input::Shutdown { done }).await.is_ok() {
            let _ = wait.await;
        }
        slog::info!(self.logger, "broker stopped");
    }

    /// Abrupt stop (for tests): every task dropped, nothing synced.
    pub fn kill(mut self) {
        self.server.abort();
        self.tasks.abort_all();
    }
}

/// Starts every part of a broker and returns at once.
pub async fn start(config: BrokerConfig, seams: Seams) -> Result<Running, BrokerError> {
    config.validate()?;
    let Seams {
        disk,
        net,
        clock,
        logger,
    } = seams;
    let logger = logger.new(slog::o!("broker" => config.id));
    disk.create_dir_all(&config.data_dir).map_err(|e| {
        BrokerError::Io(format!(
            "cannot create data directory {}: {e}",
            config.data_dir.display()
        ))
    })?;
    let client_listener = net.bind(&config.listen).await.map_err(|e| {
        BrokerError::Io(format!(
            "cannot listen for clients on {}: {e}",
            config.listen
        ))
    })?;
    let peer_listener = net.bind(&config.peer_listen).await.map_err(|e| {
        BrokerError::Io(format!(
            "cannot listen for peers on {}: {e}",
            config.peer_listen
        ))
    })?;
    let mut tasks = JoinSet::new();
    // Distinct per start of this broker: peers reconnect when it changes.
    let incarnation = clock.now_ms().max(1) as u64;
    let view = PeerView::default();
    let (links, link_tasks) = transport::start_links(
        net.clone(),
        config.id,
        incarnation,
        &config.peers,
        &view,
        &logger,
    );
    for t in link_tasks {
        tasks.spawn(t);
    }
    let outbound = Box::new(RaftOutbound {
        links: links.clone(),
        dropped: 0,
    });
    let (driver, driver_tx, board) = Driver::new(
        config.driver.clone(),
        outbound,
        clock.clone(),
        logger.clone(),
        DRIVER_QUEUE_LEN,
    );
    let driver = if config.driver.quiesce {
        driver.with_liveness(Box::new(view.clone()))
    } else {
        driver
    };
    tasks.spawn(driver.run());

    let metadata = Metadata::default();
    add_controller_group(&config, &disk, &clock, &metadata, &driver_tx, &logger).await?;

    let (proposals_tx, proposals_rx) = tokio::sync::mpsc::channel(64);
    tasks.spawn(transport::serve_peers(
        peer_listener,
        driver_tx.clone(),
        proposals_tx,
        view.clone(),
        logger.clone(),
    ));
    let controller = Controller::new(
        config.id,
        metadata.clone(),
        board.clone(),
        view.clone(),
        links.clone(),
        driver_tx.clone(),
        clock.clone(),
    );
    let mut controller = controller;
    controller.incarnation = incarnation;
    tasks.spawn(controller.clone().serve_forwarded(proposals_rx));
    let advertised = config
        .advertised_listen
        .clone()
        .unwrap_or_else(|| config.listen.clone());
    tasks.spawn(
        controller
            .clone()
            .keep_registered(advertised, config.peer_listen.clone()),
    );
    tasks.spawn(report_leaders(
        config.id,
        incarnation,
        board.clone(),
        links.clone(),
    ));

    let replicas = Replicas::default();
    let mut backend = Backend::new(
        config.id,
        config.data_dir.clone(),
        disk.clone(),
        clock.clone(),
        driver_tx.clone(),
        replicas.clone(),
        metadata.clone(),
        board.clone(),
        logger.clone(),
    );
    backend.retention_interval_ms = config.retention_check_ms;
    backend.page_cache_keep_bytes = config.page_cache_keep_bytes;
    tasks.spawn(backend.run());

    tasks.spawn(
        crate::partition::repair::Scrubber::new(
            config.id,
            replicas.clone(),
            board.clone(),
            metadata.clone(),
            net.clone(),
            logger.clone(),
        )
        .with_scrub(config.scrub_bytes_per_sec, config.scrub_interval_ms)
        .run(),
    );

    let services = Arc::new(Services {
        self_id: config.id,
        data_dir: config.data_dir.clone(),
        partitions: PartitionService::new(replicas, board.clone(), driver_tx.clone()),
        controller,
        metadata: metadata.clone(),
        view,
        logger: logger.clone(),
    });
    let (stop_serving, serving) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(server::serve_clients(
        client_listener,
        services,
        config.limits,
        serving,
    ));
    slog::info!(logger, "broker started"; "clients" => &config.listen, "peers" => &config.peer_listen,
        "data_dir" => %config.data_dir.display());
    Ok(Running {
        tasks,
        server,
        stop_serving,
        driver: driver_tx,
        board,
        metadata,
        logger,
    })
}

/// Opens the controller group: voters are the first initial members (at
/// most five), the lowest id its preferred leader. Its whole log is
/// re-applied on start to rebuild the metadata.
async fn add_controller_group(
    config: &BrokerConfig,
    disk: &DiskRef,
    clock: &ClockRef,
    metadata: &Metadata,
    driver: &tokio::sync::mpsc::Sender<Input>,
    logger: &slog::Logger,
) -> Result<(), BrokerError> {
    let voters: Vec<u64> = config
        .peers
        .keys()
        .copied()
        .take(CONTROLLER_VOTERS_MAX)
        .collect();
    if !voters.contains(&config.id) {
        return Err(BrokerError::Config(format!(
            "broker {} is not among the first {CONTROLLER_VOTERS_MAX} initial members; clusters of more than \
             {CONTROLLER_VOTERS_MAX} initial members are not supported yet",
            config.id
        )));
    }
    let dir = config.data_dir.join("controller");
    let log_config = LogConfig {
        retention_ms: -1,
        ..LogConfig::default()
    };
    let log =
        RaftLog::open(disk.clone(), &dir, log_config, clock.now_ms(), &voters).map_err(|e| {
            BrokerError::Io(format!(
                "cannot open the controller log in {}: {e}",
                dir.display()
            ))
        })?;
    let apply = ControllerApply {
        metadata: metadata.clone(),
        logger: logger.clone(),
    };
    let spec = GroupSpec {
        id: CONTROLLER_GROUP,
        log,
        apply: Some(Box::new(apply)),
        preferred_leader: voters[0],
        applied: 0,
    };
    driver
        .send(Input::AddGroup(Box::new(spec)))
        .await
        .map_err(|_| BrokerError::Io("the Raft driver stopped during start-up".into()))
}

/// Tells every peer, now and then, which groups this broker leads.
async fn report_leaders(self_id: u64, incarnation: u64, board: StatusBoard, links: PeerLinks) {
    let mut every = tokio::time::interval(Duration::from_millis(LEADER_REPORT_MS));
    loop {
        every.tick().await;
        let groups: Vec<GroupLeader> = board
            .leading()
            .into_iter()
            .map(|(group, term)| GroupLeader {
                group,
                leader: self_id,
                term,
            })
            .collect();
        let peers: Vec<u64> = links.peers().collect();
        for peer in peers {
            let msg = PeerMessage {
                from: self_id,
                incarnation,
                body: Some(peer_message::Body::Leaders(LeaderReport {
                    groups: groups.clone(),
                })),
            };
            links.send(peer, LinkItem::Peer(msg));
        }
    }
}
