//! A broker: wires the layers together and runs them until shut down.
//!
//! The caller injects the seams (disk, network, clock, logger, and the
//! future that says when to stop), so the same code runs as `weir broker`
//! on files and TCP, in-process in tests, and on turmoil hosts.

use crate::cluster::backend::Backend;
use crate::cluster::controller::{Controller, ControllerApply, Metadata, CONTROLLER_GROUP};
use crate::io::net::NetworkRef;
use crate::io::{ClockRef, DiskRef};
use crate::partition::{PartitionService, Replicas, SpaceGuard};
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

/// Bounds of `peer_read_timeout_ms`.
pub const PEER_READ_TIMEOUT_MS_MIN: u64 = 4 * LEADER_REPORT_MS;
pub const PEER_READ_TIMEOUT_MS_MAX: u64 = 600_000;

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
    /// Limits of the peer listener (`max_peer_connections`,
    /// `peer_read_timeout_ms`).
    pub peer_limits: transport::PeerLimits,
    /// Free bytes kept on the data directory's filesystem: below it,
    /// produces are refused (None: the default for the filesystem's size,
    /// see [`crate::partition::space::default_min_free_bytes`]).
    pub storage_min_free_bytes: Option<u64>,
    /// Rate of the background scrub that checks every batch's CRC in the
    /// partition logs (0: off; see [`crate::partition::repair`]).
    pub scrub_bytes_per_sec: u64,
    /// Least time between the starts of two scrub passes over every log.
    pub scrub_interval_ms: u64,
}

/// A scrub rate to turn it on at: 16 MiB/s reads a terabyte of logs about
/// every 18 hours, a few percent of one SSD's bandwidth and well under 1% of
/// a core for the CRCs.
pub const SCRUB_BYTES_PER_SEC_SUGGESTED: u64 = 16 * 1024 * 1024;
/// The default scrub rate: off. Measured on 4 Dec 2026 (docs/performance.md,
/// "Issue 24"), three brokers at 1M records/s end to end missed (d) in 4 of
/// 5 runs with the scrub at 16 MiB/s and 2 of 2 at 4 MiB/s (p99 476-908 ms),
/// against 1 of 4 without it: the scrub reads under the partition log's
/// lock, which the driver needs for every append. Damage is still found by
/// every read (fetches, replication) and at open, and repaired; the scrub
/// only finds it sooner in data nobody reads.
pub const SCRUB_BYTES_PER_SEC_DEFAULT: u64 = 0;
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
            peer_limits: transport::PeerLimits::default(),
            storage_min_free_bytes: None,
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
        // Zero periods panic tokio's interval (the task would die and, before
        // supervision, leave a broker that answered but served nothing).
        if self.driver.tick_ms == 0 || self.retention_check_ms == 0 {
            return Err(BrokerError::Config(format!(
                "tick_ms ({}) and retention_check_ms ({}) must be at least 1",
                self.driver.tick_ms, self.retention_check_ms
            )));
        }
        if self.limits.request_bytes_in_flight_max < 1024 * 1024 {
            return Err(BrokerError::Config(format!(
                "max_request_bytes_in_flight is {} bytes; it must be at least 1048576 \
                 (1 MiB), or a broker could hold only a request or two at once",
                self.limits.request_bytes_in_flight_max
            )));
        }
        if let Some(b) = self.storage_min_free_bytes {
            let min = crate::partition::space::MIN_FREE_BYTES_MIN;
            if b < min {
                return Err(BrokerError::Config(format!(
                    "storage_min_free_bytes is {b}; it must be at least {min} (1 MiB), \
                     room for the controller's entries and Raft's hard states when the disk fills"
                )));
            }
        }
        for (key, value_ms, range) in [
            (
                "request_read_timeout_ms",
                self.limits.request_read_timeout_ms,
                crate::server::REQUEST_READ_TIMEOUT_MS_RANGE,
            ),
            (
                "connection_idle_timeout_ms",
                self.limits.connection_idle_timeout_ms,
                crate::server::CONNECTION_IDLE_TIMEOUT_MS_RANGE,
            ),
        ] {
            if !range.contains(&value_ms) {
                return Err(BrokerError::Config(format!(
                    "{key} is {value_ms}; it must be from {} to {}",
                    range.start(),
                    range.end()
                )));
            }
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
        self.validate_peer_limits()
    }

    /// Each peer keeps one link to this broker, and its restarts leave a
    /// few more open until they time out; the read timeout must span
    /// several leader reports (every 500 ms), which keep a live link busy.
    fn validate_peer_limits(&self) -> Result<(), BrokerError> {
        let peers = self.peers.len().saturating_sub(1);
        let connections = self.peer_limits.connections_max;
        if !(peers.max(1)..=65_536).contains(&connections) {
            return Err(BrokerError::Config(format!(
                "max_peer_connections is {connections}; it must be between {} (one per \
                 other member in --peers) and 65536",
                peers.max(1)
            )));
        }
        let timeout_ms = self.peer_limits.read_timeout_ms;
        if !(PEER_READ_TIMEOUT_MS_MIN..=PEER_READ_TIMEOUT_MS_MAX).contains(&timeout_ms) {
            return Err(BrokerError::Config(format!(
                "peer_read_timeout_ms is {timeout_ms}; it must be between \
                 {PEER_READ_TIMEOUT_MS_MIN} (four leader reports) and {PEER_READ_TIMEOUT_MS_MAX}"
            )));
        }
        Ok(())
    }
}

/// Why a broker could not start, or stopped by itself.
#[derive(Debug)]
pub enum BrokerError {
    Config(String),
    Io(String),
    /// A broker-wide task ended while the broker ran.
    TaskEnded(TaskEnded),
}

/// A broker-wide task that ended while the broker ran: which, and why
/// ("panicked: <message>", or that it returned, which none of them does
/// while the broker runs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskEnded {
    pub task: String,
    pub cause: String,
}

impl fmt::Display for TaskEnded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "broker task '{}' ended: {}", self.task, self.cause)
    }
}

/// A panic's message, if it is a string (as `panic!` makes it).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BrokerError::Config(m) => write!(f, "invalid broker configuration: {m}"),
            BrokerError::Io(m) => write!(f, "{m}"),
            BrokerError::TaskEnded(e) => write!(f, "the broker stopped: {e}"),
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
/// every log and returns. If a broker-wide task ends first (a panic, or a
/// return nothing expected), logs which and why, stops what is left the
/// same way and returns [`BrokerError::TaskEnded`]: a broker is alive or
/// dead, never half-dead, and `weir broker` exits non-zero so that systemd
/// or Kubernetes restart it.
pub async fn run(
    config: BrokerConfig,
    seams: Seams,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BrokerError> {
    let running = start(config, seams).await?;
    run_until(running, shutdown).await
}

/// The second half of [`run`]: runs a started broker until `shutdown`
/// completes or one of its tasks ends.
pub async fn run_until(
    mut running: Running,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BrokerError> {
    tokio::pin!(shutdown);
    // A task's end first: it is what the operator must hear about.
    let ended = tokio::select! {
        biased;
        ended = running.ended() => Some(ended),
        _ = &mut shutdown => None,
    };
    let Some(ended) = ended else {
        running.stop().await;
        return Ok(());
    };
    slog::crit!(running.logger, "a broker-wide task ended; the broker stops";
        "task" => &ended.task, "cause" => &ended.cause);
    running.stop().await;
    Err(BrokerError::TaskEnded(ended))
}

/// The driver's task name (a graceful stop lets it finish by itself).
const DRIVER_TASK: &str = "raft driver";

/// How long a graceful stop waits for in-flight client requests.
const DRAIN_MS: u64 = 5_000;

/// A started broker.
///
/// Every broker-wide task is owned here and supervised: [`Running::ended`]
/// completes when one of them ends, naming it. None may end while the broker
/// runs, and none is restarted in place: each holds state the others rely on
/// (the driver every group's Raft state, the backend which replicas are
/// open, the listeners their ports), so the broker stops and its supervisor
/// (systemd, Kubernetes) starts it afresh, which recovers everything from
/// disk and the peers. Per-connection tasks are not broker-wide: a panic in
/// one closes that connection only, and the client reconnects.
pub struct Running {
    tasks: JoinSet<()>,
    /// The name of each task in `tasks`, by tokio's id.
    names: Vec<(tokio::task::Id, &'static str, tokio::task::AbortHandle)>,
    /// The client listener, apart from `tasks` because a graceful stop
    /// drains it; `None` once it ended.
    server: Option<tokio::task::JoinHandle<()>>,
    stop_serving: tokio::sync::watch::Sender<bool>,
    driver: tokio::sync::mpsc::Sender<Input>,
    pub board: StatusBoard,
    pub metadata: Metadata,
    pub logger: slog::Logger,
}

impl Running {
    /// Adds a broker-wide task, supervised as the others: its end (a panic
    /// or a return) completes [`Running::ended`].
    pub fn supervise(
        &mut self,
        name: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        let handle = self.tasks.spawn(task);
        self.names.push((handle.id(), name, handle));
    }

    fn name_of(&self, id: tokio::task::Id) -> &'static str {
        self.names
            .iter()
            .find(|(i, _, _)| *i == id)
            .map_or("unknown", |(_, n, _)| n)
    }

    /// Completes when a broker-wide task ends, saying which and why; never
    /// while all of them run. Cancel-safe: call it again after a `select!`
    /// dropped it.
    pub async fn ended(&mut self) -> TaskEnded {
        let server_ended = async {
            match self.server.as_mut() {
                Some(server) => server.await,
                None => std::future::pending().await,
            }
        };
        let ended = tokio::select! {
            biased;
            joined = server_ended => Err(("client listener", joined)),
            Some(joined) = self.tasks.join_next_with_id() => Ok(joined),
        };
        let (task, joined) = match ended {
            Err((task, joined)) => {
                self.server = None;
                (task, joined)
            }
            Ok(Ok((id, ()))) => (self.name_of(id), Ok(())),
            Ok(Err(e)) => (self.name_of(e.id()), Err(e)),
        };
        let cause = match joined {
            Ok(()) => "it returned while the broker was running".to_string(),
            Err(e) if e.is_panic() => format!("panicked: {}", panic_message(&*e.into_panic())),
            Err(_) => "it was cancelled".to_string(),
        };
        TaskEnded {
            task: task.to_string(),
            cause,
        }
    }

    /// Graceful stop: no new requests, every log synced.
    pub async fn stop(mut self) {
        // Stop taking requests and let those already read finish (bounded),
        // then stop everything else and let the driver sync and stop.
        let _ = self.stop_serving.send(true);
        if let Some(mut server) = self.server.take() {
            let drained = tokio::time::timeout(Duration::from_millis(DRAIN_MS), &mut server).await;
            if drained.is_err() {
                server.abort();
            }
        }
        // Everything but the driver stops now; the driver stops on its
        // Shutdown input, after syncing every log. (Aborting it with the
        // rest, as this did, dropped it before it read that input.)
        for (_, name, handle) in &self.names {
            if *name != DRIVER_TASK {
                handle.abort();
            }
        }
        let (done, wait) = oneshot::channel();
        let shutdown = async {
            if self.driver.send(Input::Shutdown { done }).await.is_ok() {
                let _ = wait.await;
            }
        };
        if tokio::time::timeout(Duration::from_millis(DRAIN_MS), shutdown)
            .await
            .is_err()
        {
            slog::warn!(
                self.logger,
                "the driver did not stop in time; its logs may not be synced"
            );
        }
        self.tasks.abort_all();
        slog::info!(self.logger, "broker stopped");
    }

    /// Abrupt stop (for tests): every task dropped, nothing synced.
    pub fn kill(mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
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
    let space = space_guard(&config, &disk, &logger)?;
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
    let mut names = Vec::new();
    let mut spawn = |name: &'static str, task: transport::Task| {
        let handle = tasks.spawn(task);
        names.push((handle.id(), name, handle));
    };
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
        spawn("peer link", t);
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
    spawn(DRIVER_TASK, Box::pin(driver.run()));

    let metadata = Metadata::default();
    // Ready once this start's registration is applied (`Metadata::ready`).
    metadata.set_barrier(config.id, incarnation);
    add_controller_group(&config, &disk, &clock, &metadata, &driver_tx, &logger).await?;

    let (proposals_tx, proposals_rx) = tokio::sync::mpsc::channel(64);
    spawn(
        "peer listener",
        Box::pin(transport::serve_peers(
            peer_listener,
            driver_tx.clone(),
            proposals_tx,
            view.clone(),
            transport::PeerListener {
                self_id: config.id,
                members: config.peers.keys().copied().collect(),
                limits: config.peer_limits,
                drops: board.peer_drops(),
            },
            logger.clone(),
        )),
    );
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
    spawn(
        "controller forwarding",
        Box::pin(controller.clone().serve_forwarded(proposals_rx)),
    );
    let advertised = config
        .advertised_listen
        .clone()
        .unwrap_or_else(|| config.listen.clone());
    spawn(
        "broker registration",
        Box::pin(
            controller
                .clone()
                .keep_registered(advertised, config.peer_listen.clone()),
        ),
    );
    spawn(
        "leader reports",
        Box::pin(report_leaders(
            config.id,
            incarnation,
            board.clone(),
            links.clone(),
        )),
    );

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
    spawn("backend (replicas and retention)", Box::pin(backend.run()));

    spawn(
        "scrubber (damage repair)",
        Box::pin(
            crate::partition::repair::Scrubber::new(
                config.id,
                replicas.clone(),
                board.clone(),
                metadata.clone(),
                net.clone(),
                logger.clone(),
            )
            .with_scrub(config.scrub_bytes_per_sec, config.scrub_interval_ms)
            .with_min_free_bytes(config.storage_min_free_bytes)
            .run(),
        ),
    );

    let services = Arc::new(Services {
        self_id: config.id,
        data_dir: config.data_dir.clone(),
        partitions: PartitionService::new(replicas, board.clone(), driver_tx.clone())
            .with_space(space),
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
        names,
        server: Some(server),
        stop_serving,
        driver: driver_tx,
        board,
        metadata,
        logger,
    })
}

/// The disk space reserve for produces, checked against the data
/// directory's filesystem: a reserve as large as the filesystem would
/// refuse every write, so it stops the start instead.
fn space_guard(
    config: &BrokerConfig,
    disk: &DiskRef,
    logger: &slog::Logger,
) -> Result<SpaceGuard, BrokerError> {
    let space = match disk.space(&config.data_dir) {
        Ok(s) => Some(s),
        Err(e) => {
            slog::warn!(logger, "cannot tell the data directory's free space; the reserve \
                applies once it can be read"; "error" => %e);
            None
        }
    };
    let min_free_bytes = match (config.storage_min_free_bytes, space) {
        (Some(b), Some(s)) if b >= s.total_bytes => {
            return Err(BrokerError::Config(format!(
                "storage_min_free_bytes is {b} but the filesystem of {} holds only {} bytes; \
                 set it below that (the default is 5% of the filesystem, at most 1 GiB)",
                config.data_dir.display(),
                s.total_bytes
            )))
        }
        (Some(b), _) => b,
        (None, Some(s)) => crate::partition::space::default_min_free_bytes(s.total_bytes),
        (None, None) => crate::partition::space::DEFAULT_MIN_FREE_BYTES,
    };
    if let Some(s) = space {
        slog::info!(logger, "disk space reserve"; "storage_min_free_bytes" => min_free_bytes,
            "free_bytes" => s.free_bytes, "total_bytes" => s.total_bytes);
    }
    Ok(SpaceGuard::new(
        disk.clone(),
        config.data_dir.clone(),
        min_free_bytes,
    ))
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
    // The table this broker had before it stopped is at least as new as
    // the persisted commit index: answer no metadata question before the
    // replay reaches it (see `Metadata::ready`).
    let start_commit = raft::Storage::initial_state(&log)
        .map(|s| s.hard_state.commit)
        .unwrap_or(0);
    metadata.set_start_commit(start_commit);
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
