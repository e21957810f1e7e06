//! The backend: turns the topic table into local partitions. Whenever the
//! metadata changes it compares the partitions this broker should host with
//! those it hosts, opens the missing ones (a `RaftLog` in their own
//! directory, a group in the driver), removes deleted ones with their data,
//! and applies config changes; on a timer it runs retention.

use super::controller::Metadata;
use super::topic_config::TopicConfig;
use crate::io::{ClockRef, DiskRef};
use crate::partition::{Replica, Replicas};
use crate::replication::driver::{GroupSpec, Input, StatusBoard};
use crate::replication::raft_log::RaftLog;
use crate::storage::LogConfig;
use raft::Storage as _;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;

/// One partition this broker should host.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Wanted {
    topic: String,
    partition: u32,
    replicas: Vec<u64>,
    config: LogConfig,
}

/// The backend's state: what it hosts, by group.
pub struct Backend {
    pub self_id: u64,
    pub data_dir: PathBuf,
    pub disk: DiskRef,
    pub clock: ClockRef,
    pub driver: mpsc::Sender<Input>,
    pub replicas: Replicas,
    pub metadata: Metadata,
    pub board: StatusBoard,
    pub logger: slog::Logger,
    pub retention_interval_ms: u64,
    /// The broker setting `page_cache_keep_bytes`, given to every
    /// partition log (see [`LogConfig::page_cache_keep_bytes`]).
    pub page_cache_keep_bytes: u64,
    hosted: BTreeMap<u64, Wanted>,
}

/// Directory of a partition replica: topic, partition and group, so that a
/// re-created topic never meets the data of its predecessor.
pub fn partition_dir(
    data_dir: &std::path::Path,
    topic: &str,
    partition: u32,
    group: u64,
) -> PathBuf {
    data_dir
        .join("partitions")
        .join(format!("{topic}-{partition}.{group}"))
}

impl Backend {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        self_id: u64,
        data_dir: PathBuf,
        disk: DiskRef,
        clock: ClockRef,
        driver: mpsc::Sender<Input>,
        replicas: Replicas,
        metadata: Metadata,
        board: StatusBoard,
        logger: slog::Logger,
    ) -> Self {
        Backend {
            self_id,
            data_dir,
            disk,
            clock,
            driver,
            replicas,
            metadata,
            board,
            logger,
            retention_interval_ms: 60_000,
            page_cache_keep_bytes: LogConfig::default().page_cache_keep_bytes,
            hosted: BTreeMap::new(),
        }
    }

    pub async fn run(mut self) {
        let mut changes = self.metadata.watch();
        let mut retention =
            tokio::time::interval(Duration::from_millis(self.retention_interval_ms));
        retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.reconcile().await;
        loop {
            tokio::select! {
                biased;
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    self.reconcile().await;
                }
                _ = retention.tick() => self.retention(),
            }
        }
    }

    fn wanted(&self) -> BTreeMap<u64, Wanted> {
        self.metadata.read(|t| {
            let mut out = BTreeMap::new();
            for h in t.partitions_of_broker(self.self_id) {
                let (topic, partition, group, replicas) =
                    (h.topic, h.partition, h.group, h.replicas);
                let mut config: LogConfig = t
                    .topic(&topic)
                    .and_then(|tp| TopicConfig::from_overrides(&tp.configs).ok())
                    .map(|c| c.to_log_config())
                    .unwrap_or_default();
                config.page_cache_keep_bytes = self.page_cache_keep_bytes;
                out.insert(
                    group,
                    Wanted {
                        topic,
                        partition,
                        replicas,
                        config,
                    },
                );
            }
            out
        })
    }

    async fn reconcile(&mut self) {
        let wanted = self.wanted();
        let gone: Vec<u64> = self
            .hosted
            .keys()
            .filter(|g| !wanted.contains_key(g))
            .copied()
            .collect();
        for group in gone {
            self.remove(group).await;
        }
        for (group, w) in wanted {
            match self.hosted.get(&group) {
                None => self.add(group, w).await,
                Some(h) if h.config != w.config => self.reconfigure(group, w),
                Some(_) => {}
            }
        }
    }

    async fn add(&mut self, group: u64, w: Wanted) {
        let dir = partition_dir(&self.data_dir, &w.topic, w.partition, group);
        let log = match RaftLog::open(
            self.disk.clone(),
            &dir,
            w.config.clone(),
            self.clock.now_ms(),
            &w.replicas,
        ) {
            Ok(log) => log,
            Err(e) => {
                slog::error!(self.logger, "cannot open partition"; "topic" => &w.topic,
                    "partition" => w.partition, "error" => %e);
                return;
            }
        };
        // Partitions have no state machine: start applying at the persisted
        // commit point rather than re-reading the whole log.
        let applied = log
            .initial_state()
            .map(|s| s.hard_state.commit)
            .unwrap_or(0);
        let spec = GroupSpec {
            id: group,
            log: log.clone(),
            apply: None,
            preferred_leader: w.replicas.first().copied().unwrap_or(0),
            applied,
        };
        if self
            .driver
            .send(Input::AddGroup(Box::new(spec)))
            .await
            .is_err()
        {
            return;
        }
        let replica = Replica {
            group,
            log,
            max_batch_bytes: w.config.max_batch_bytes,
        };
        self.replicas.insert(&w.topic, w.partition, replica);
        slog::info!(self.logger, "hosting partition"; "topic" => &w.topic, "partition" => w.partition, "group" => group);
        self.hosted.insert(group, w);
    }

    async fn remove(&mut self, group: u64) {
        let Some(w) = self.hosted.remove(&group) else {
            return;
        };
        self.replicas.remove(&w.topic, w.partition);
        // Wait until the driver let go of the log, so nothing writes into
        // the directory while it is deleted.
        let (done, let_go) = tokio::sync::oneshot::channel();
        let removal = Input::RemoveGroup {
            id: group,
            done: Some(done),
        };
        if self.driver.send(removal).await.is_err() || let_go.await.is_err() {
            return;
        }
        let dir = partition_dir(&self.data_dir, &w.topic, w.partition, group);
        let removed = self
            .disk
            .remove_dir_all(&dir)
            .and_then(|()| self.disk.sync_dir(&self.data_dir.join("partitions")));
        if let Err(e) = removed {
            slog::warn!(self.logger, "cannot remove deleted partition's data"; "dir" => %dir.display(), "error" => %e);
        }
        slog::info!(self.logger, "removed partition"; "topic" => &w.topic, "partition" => w.partition);
    }

    fn reconfigure(&mut self, group: u64, w: Wanted) {
        if let Some(replica) = self.replicas.get(&w.topic, w.partition) {
            if let Err(e) = replica.log.with_log_mut(|l| l.set_config(w.config.clone())) {
                slog::warn!(self.logger, "cannot apply config"; "topic" => &w.topic, "error" => %e);
            }
            let updated = Replica {
                max_batch_bytes: w.config.max_batch_bytes,
                ..replica
            };
            self.replicas.insert(&w.topic, w.partition, updated);
        }
        self.hosted.insert(group, w);
    }

    /// Deletes expired segments of every hosted partition, never past the
    /// commit point (uncommitted entries may still be needed by Raft).
    pub fn retention(&self) {
        let now_ms = self.clock.now_ms();
        for ((topic, partition), replica) in self.replicas.all() {
            if let Err(e) = replica.log.apply_retention(now_ms) {
                slog::warn!(self.logger, "retention failed"; "topic" => topic, "partition" => partition, "error" => %e);
            }
        }
    }
}
