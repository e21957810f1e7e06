//! The controller: cluster metadata in its own Raft group (group 0), as
//! Kafka's KRaft and Redpanda's controller keep it.
//!
//! The leader of group 0 validates each admin request against the current
//! [`TopicTable`] and proposes a command; every broker applies committed
//! commands, in log order, to its own copy of the table ([`Metadata`]). The
//! backend ([`super::backend`]) turns table changes into local partitions.
//! Admin requests are serialized on the leader, so each is validated against
//! the table its predecessor left.

use super::table::TopicTable;
use super::ClusterError;
use crate::io::ClockRef;
use crate::proto::{
    self, controller_command, peer_message, ControllerCommand, ControllerPropose, ErrorCode,
    PeerMessage, RegisterBroker,
};
use crate::replication::driver::{Acks, Apply, Input, Proposal, StatusBoard};
use crate::replication::transport::{LinkItem, PeerLinks, PeerView};
use crate::types::{BatchBuilder, Event, RecordBatch};
use bytes::Bytes;
use prost::Message as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// The controller's Raft group.
pub const CONTROLLER_GROUP: u64 = 0;
/// How long an admin request waits for its command to commit.
const ADMIN_TIMEOUT_MS: u64 = 10_000;
/// A broker counts as live if heard from within this window.
pub const LIVENESS_WINDOW_MS: u64 = 3_000;

/// This broker's copy of the cluster metadata, with a version that moves
/// whenever a command is applied.
#[derive(Clone, Debug)]
pub struct Metadata {
    table: Arc<Mutex<TopicTable>>,
    version: Arc<watch::Sender<u64>>,
    progress: Arc<Mutex<Progress>>,
}

/// How far the table has caught up, for readiness after a restart.
#[derive(Debug, Default)]
struct Progress {
    /// The controller group's commit index persisted before this start:
    /// the table this broker had is at least that new.
    start_commit: u64,
    /// Index of the last entry handed to the table.
    applied: u64,
    /// This broker's id and start, whose registration is the barrier.
    barrier: Option<(u64, u64)>,
    /// A registration of this start was applied.
    barrier_passed: bool,
    /// Latched once reached: a ready broker stays ready (later lag behind
    /// the controller leader is ordinary follower lag, as in Kafka).
    ready: bool,
}

impl Default for Metadata {
    fn default() -> Self {
        Metadata {
            table: Arc::new(Mutex::new(TopicTable::default())),
            version: Arc::new(watch::channel(0).0),
            progress: Default::default(),
        }
    }
}

impl Metadata {
    /// Reads the table.
    pub fn read<R>(&self, f: impl FnOnce(&TopicTable) -> R) -> R {
        f(&self.table.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn watch(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Sets the controller group's commit index persisted before this
    /// start, which the table must reach before the broker answers from it.
    pub fn set_start_commit(&self, commit: u64) {
        self.progress().start_commit = commit;
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Names the registration (this broker's id and start) that marks the
    /// table as caught up once applied (see [`Metadata::ready`]).
    pub fn set_barrier(&self, self_id: u64, incarnation: u64) {
        self.progress().barrier = Some((self_id, incarnation));
    }

    /// Whether this start's registration was applied.
    pub fn barrier_passed(&self) -> bool {
        self.progress().barrier_passed
    }

    fn note_applied(&self, index: u64) {
        let mut p = self.progress();
        p.applied = p.applied.max(index);
    }

    /// Whether this broker may answer metadata and topic questions: its
    /// table is at least as new as the one it had before it (re)started.
    ///
    /// That takes (1) every controller entry committed before the restart
    /// applied again (the persisted commit index), and (2) a barrier: the
    /// registration this start of the broker sends the controller leader
    /// (`keep_registered`), applied here. The leader commits it after
    /// everything it had committed when it took it, so once it is applied
    /// the table holds whatever was committed before the restart, even what
    /// this broker's persisted commit index did not record yet or what it
    /// missed while down. Until then the broker answers BROKER_NOT_READY
    /// and clients retry. Without a controller quorum a restarted broker
    /// stays not ready: it cannot know what it missed.
    pub fn ready(&self, board: &StatusBoard) -> Result<(), String> {
        let mut p = self.progress();
        if p.ready {
            return Ok(());
        }
        let status = board.get(CONTROLLER_GROUP).unwrap_or_default();
        if p.applied < p.start_commit {
            return Err(format!(
                "the broker is replaying its cluster metadata (entry {} of {}); retry in a moment",
                p.applied, p.start_commit
            ));
        }
        if !p.barrier_passed {
            return Err(match status.leader {
                0 => "the broker has not yet heard from a controller leader since it started; \
                      retry in a moment"
                    .to_string(),
                leader => format!(
                    "the broker is catching up with the cluster metadata of controller \
                     leader {leader}; retry in a moment"
                ),
            });
        }
        p.ready = true;
        Ok(())
    }

    fn apply(&self, cmd: &ControllerCommand) {
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .apply(cmd);
        if let Some(controller_command::Command::RegisterBroker(r)) = &cmd.command {
            let mut p = self.progress();
            if p.barrier == Some((r.id, r.incarnation)) {
                p.barrier_passed = true;
            }
        }
        self.version.send_modify(|v| *v += 1);
    }
}

/// Applies committed controller entries to the [`Metadata`].
pub struct ControllerApply {
    pub metadata: Metadata,
    pub logger: slog::Logger,
}

impl Apply for ControllerApply {
    fn applied_to(&mut self, index: u64, _term: u64) {
        self.metadata.note_applied(index);
    }

    fn apply(&mut self, index: u64, batch: &RecordBatch) {
        let records = match batch.records() {
            Ok(r) => r,
            Err(e) => {
                slog::error!(self.logger, "undecodable controller entry"; "index" => index, "error" => %e);
                return;
            }
        };
        for r in records {
            let value = r.event.value.unwrap_or_default();
            match ControllerCommand::decode(value) {
                Ok(cmd) => self.metadata.apply(&cmd),
                Err(e) => slog::error!(self.logger, "undecodable controller command";
                    "index" => index, "error" => %e),
            }
        }
    }
}

/// Encodes a command as the batch the controller group stores.
pub fn command_batch(cmd: &ControllerCommand, now_ms: i64) -> RecordBatch {
    let mut b = BatchBuilder::new();
    b.push(&Event {
        key: None,
        value: Some(Bytes::from(cmd.encode_to_vec())),
        timestamp_ms: now_ms,
        headers: Vec::new(),
    });
    b.build()
}

/// Admin operations and broker registration, run on whichever broker
/// receives them; only the leader of group 0 proposes.
#[derive(Clone, Debug)]
pub struct Controller {
    pub self_id: u64,
    pub metadata: Metadata,
    pub board: StatusBoard,
    pub view: PeerView,
    pub links: PeerLinks,
    pub driver: mpsc::Sender<Input>,
    pub clock: ClockRef,
    /// This run of the broker, announced to peers.
    pub incarnation: u64,
    admin: Arc<tokio::sync::Mutex<()>>,
}

impl Controller {
    pub fn new(
        self_id: u64,
        metadata: Metadata,
        board: StatusBoard,
        view: PeerView,
        links: PeerLinks,
        driver: mpsc::Sender<Input>,
        clock: ClockRef,
    ) -> Self {
        Controller {
            self_id,
            metadata,
            board,
            view,
            links,
            driver,
            clock,
            incarnation: 0,
            admin: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The current controller leader (0 if unknown) and whether it is us.
    pub fn leader(&self) -> (u64, bool) {
        let s = self.board.get(CONTROLLER_GROUP).unwrap_or_default();
        (s.leader, s.is_leader)
    }

    /// Registered brokers heard from recently (this one always counts).
    pub fn live_brokers(&self) -> Vec<u64> {
        let heard = self.view.live(Duration::from_millis(LIVENESS_WINDOW_MS));
        self.metadata.read(|t| {
            t.brokers()
                .keys()
                .copied()
                .filter(|id| *id == self.self_id || heard.contains(id))
                .collect()
        })
    }

    fn check_leader(&self) -> Result<(), ClusterError> {
        match self.leader() {
            (_, true) => Ok(()),
            (0, false) => Err(ClusterError::new(
                ErrorCode::LeaderNotAvailable,
                "the controller is electing a leader; retry shortly",
            )),
            (leader, false) => Err(ClusterError::new(
                ErrorCode::NotController,
                format!("broker {leader} is the controller; send admin requests there"),
            )
            .with_leader(leader)),
        }
    }

    pub async fn create_topic(&self, req: &proto::CreateTopicRequest) -> Result<(), ClusterError> {
        let _one_at_a_time = self.admin.lock().await;
        self.check_leader()?;
        let live = self.live_brokers();
        let create = self.metadata.read(|t| t.prepare_create(req, &live))?;
        let topic_id = create.topic_id;
        let cmd = ControllerCommand {
            command: Some(controller_command::Command::CreateTopic(create)),
        };
        self.propose(cmd).await?;
        let created = self
            .metadata
            .read(|t| t.topic(&req.name).map(|t| t.id) == Some(topic_id));
        if created {
            Ok(())
        } else {
            Err(ClusterError::new(
                ErrorCode::Unknown,
                "the topic changed concurrently; retry",
            ))
        }
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), ClusterError> {
        let _one_at_a_time = self.admin.lock().await;
        self.check_leader()?;
        let req = proto::DeleteTopicRequest {
            name: name.to_string(),
        };
        let delete = self.metadata.read(|t| t.prepare_delete(&req))?;
        let cmd = ControllerCommand {
            command: Some(controller_command::Command::DeleteTopic(delete)),
        };
        self.propose(cmd).await
    }

    pub async fn alter_config(&self, req: &proto::AlterConfigsRequest) -> Result<(), ClusterError> {
        let _one_at_a_time = self.admin.lock().await;
        self.check_leader()?;
        let alter = self.metadata.read(|t| t.prepare_alter(req))?;
        let cmd = ControllerCommand {
            command: Some(controller_command::Command::AlterConfig(alter)),
        };
        self.propose(cmd).await
    }

    /// Proposes `cmd` to group 0 and waits until it is committed and
    /// applied here.
    async fn propose(&self, cmd: ControllerCommand) -> Result<(), ClusterError> {
        let (tx, rx) = oneshot::channel();
        let proposal = Proposal {
            group: CONTROLLER_GROUP,
            batch: command_batch(&cmd, self.clock.now_ms()),
            acks: Acks::All,
            reply: Some(tx),
        };
        let timeout = Duration::from_millis(ADMIN_TIMEOUT_MS);
        let timed_out = || {
            ClusterError::new(
                ErrorCode::RequestTimedOut,
                "the controller did not commit the change in time; check that a majority of brokers is up",
            )
        };
        tokio::time::timeout(timeout, self.driver.send(Input::Propose(proposal)))
            .await
            .map_err(|_| timed_out())?
            .map_err(|_| {
                ClusterError::new(ErrorCode::BrokerShuttingDown, "the broker is shutting down")
            })?;
        match tokio::time::timeout(timeout, rx).await {
            Err(_) => Err(timed_out()),
            Ok(Err(_)) => Err(ClusterError::new(
                ErrorCode::BrokerShuttingDown,
                "the broker is shutting down",
            )),
            Ok(Ok(Err(e))) => Err(ClusterError::new(ErrorCode::NotController, e.to_string())),
            Ok(Ok(Ok(_))) => Ok(()),
        }
    }

    /// Proposes commands other brokers forwarded (registrations), if this
    /// broker leads the controller; others are dropped (senders retry).
    pub async fn serve_forwarded(self, mut rx: mpsc::Receiver<ControllerCommand>) {
        while let Some(cmd) = rx.recv().await {
            let is_registration = matches!(
                cmd.command,
                Some(controller_command::Command::RegisterBroker(_))
            );
            if is_registration && self.leader().1 {
                self.propose_no_wait(cmd).await;
            }
        }
    }

    async fn propose_no_wait(&self, cmd: ControllerCommand) {
        let proposal = Proposal {
            group: CONTROLLER_GROUP,
            batch: command_batch(&cmd, self.clock.now_ms()),
            acks: Acks::None,
            reply: None,
        };
        let _ = self.driver.send(Input::Propose(proposal)).await;
    }

    /// Registers this broker's addresses with the controller and keeps
    /// them registered (re-registering if the table ever disagrees).
    pub async fn keep_registered(self, client_addr: String, peer_addr: String) {
        let me = RegisterBroker {
            id: self.self_id,
            client_addr,
            peer_addr,
            incarnation: self.incarnation,
        };
        loop {
            // Once per start at least: this start's registration, applied,
            // is the barrier that makes the broker ready.
            let registered = self.metadata.read(|t| {
                t.brokers()
                    .get(&self.self_id)
                    .is_some_and(|b| b.client_addr == me.client_addr && b.peer_addr == me.peer_addr)
            }) && self.metadata.barrier_passed();
            if !registered {
                self.register(&me).await;
            }
            tokio::time::sleep(Duration::from_millis(if registered { 5_000 } else { 500 })).await;
        }
    }

    async fn register(&self, me: &RegisterBroker) {
        let cmd = ControllerCommand {
            command: Some(controller_command::Command::RegisterBroker(me.clone())),
        };
        match self.leader() {
            (_, true) => self.propose_no_wait(cmd).await,
            (0, false) => {}
            (leader, false) => {
                let msg = PeerMessage {
                    from: self.self_id,
                    incarnation: self.incarnation,
                    body: Some(peer_message::Body::Propose(ControllerPropose {
                        command: Some(cmd),
                    })),
                };
                self.links.send(leader, LinkItem::Peer(msg));
            }
        }
    }
}
