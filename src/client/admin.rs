//! Topic and cluster administration. Create, delete and alter go to the
//! controller leader; reads go to any broker.

use super::metadata::{Client, ClientConfig};
use super::Error;
use crate::proto::client_request::Body as Req;
use crate::proto::client_response::Body as Resp;
use crate::proto::*;
use std::collections::BTreeMap;

/// One partition of a described topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDesc {
    pub partition: u32,
    /// 0: no leader right now.
    pub leader: u64,
    pub replicas: Vec<u64>,
    pub in_sync: Vec<u64>,
    /// From the leader's log dir (-1 / 0 if it could not be asked).
    pub log_start_offset: i64,
    pub high_watermark: i64,
    pub size_bytes: u64,
    /// Replicas fail-stopped on their broker: (broker, cause).
    pub failed: Vec<(u64, String)>,
}

/// A described topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDesc {
    pub name: String,
    pub partitions: Vec<PartitionDesc>,
    pub config: BTreeMap<String, String>,
}

/// A broker of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerDesc {
    pub id: u64,
    pub client_addr: String,
    pub peer_addr: String,
    pub live: bool,
}

/// The cluster: its brokers and the controller leader (0: none yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDesc {
    pub brokers: Vec<BrokerDesc>,
    pub controller_id: u64,
}

/// One broker's log dir and the partition replicas in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDir {
    pub broker_id: u64,
    pub data_dir: String,
    pub partitions: Vec<LogDirPartition>,
    /// Set when the broker could not be asked.
    pub error: Option<String>,
    /// Why the controller group is fail-stopped on this broker.
    pub controller_failed: Option<String>,
}

/// A Raft group fail-stopped on one broker, or a broker that could not be
/// asked: what `weir cluster health` lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub broker_id: u64,
    /// "controller", "topic/partition", or "broker" (it could not be asked
    /// or is not live).
    pub what: String,
    pub cause: String,
}

/// The admin client.
#[derive(Debug, Clone)]
pub struct Admin {
    client: Client,
}

fn admin_error(r: &Resp) -> Option<crate::proto::Error> {
    match r {
        Resp::Admin(a) => a.error.clone(),
        _ => None,
    }
}

impl Admin {
    pub fn new(client: Client) -> Admin {
        Admin { client }
    }

    /// Connects to the cluster through `config.bootstrap`.
    pub async fn connect(config: ClientConfig) -> Result<Admin, Error> {
        Ok(Admin::new(Client::connect(config).await?))
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        configs: BTreeMap<String, String>,
    ) -> Result<(), Error> {
        let req = Req::CreateTopic(CreateTopicRequest {
            name: name.into(),
            partitions,
            replication_factor,
            configs: configs.into_iter().collect(),
        });
        self.client.controller(req, admin_error).await?;
        Ok(())
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), Error> {
        let req = Req::DeleteTopic(DeleteTopicRequest { name: name.into() });
        self.client.controller(req, admin_error).await?;
        Ok(())
    }

    pub async fn alter_config(
        &self,
        topic: &str,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    ) -> Result<(), Error> {
        let req = Req::AlterConfigs(AlterConfigsRequest {
            topic: topic.into(),
            set: set.into_iter().collect(),
            delete,
        });
        self.client.controller(req, admin_error).await?;
        Ok(())
    }

    /// Moves a partition's leadership to its replica `to` and waits until
    /// `to` leads it, following NOT_LEADER answers and retrying while a
    /// leader is elected. The broker later hands leadership back to the
    /// preferred replica (the first), as Kafka does.
    pub async fn transfer_leader(&self, topic: &str, partition: u32, to: u64) -> Result<(), Error> {
        let t = self.client.refresh_topic(topic).await?;
        if !t.partitions.iter().any(|p| p.partition == partition) {
            return Err(Error::Invalid(format!(
                "topic '{topic}' has no partition {partition} (it has {})",
                t.partitions.len()
            )));
        }
        let req = Req::TransferLeader(TransferLeaderRequest {
            topic: topic.into(),
            partition,
            to,
            timeout_ms: 0,
        });
        let config = self.client.config();
        let deadline = tokio::time::Instant::now() + config.admin_retry_for;
        // Bounded by the deadline.
        loop {
            let err = match self.transfer_once(topic, partition, req.clone()).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if !err.retriable() || tokio::time::Instant::now() >= deadline {
                return Err(err);
            }
            tokio::time::sleep(config.retry_backoff).await;
        }
    }

    /// One transfer request to the partition's leader as last known.
    async fn transfer_once(&self, topic: &str, partition: u32, req: Req) -> Result<(), Error> {
        let (_, conn) = self.client.leader_conn(topic, partition).await?;
        let answer = match self.client.call(&conn, req).await? {
            Resp::TransferLeader(t) => t,
            _ => return Err(unexpected()),
        };
        let Some(e) = answer.error else {
            return Ok(());
        };
        // Ask the leader it named next time, or look it up again.
        if e.leader_id != 0 {
            self.client.set_leader(topic, partition, e.leader_id);
        } else {
            self.client.refresh_topic(topic).await?;
        }
        Err(Error::broker(&e))
    }

    pub async fn list_topics(&self) -> Result<Vec<String>, Error> {
        match self
            .client
            .any(Req::ListTopics(ListTopicsRequest {}))
            .await?
        {
            Resp::ListTopics(l) => {
                let mut names = l.names;
                names.sort();
                Ok(names)
            }
            _ => Err(unexpected()),
        }
    }

    /// Every effective setting of a topic (defaults included).
    pub async fn describe_config(&self, topic: &str) -> Result<BTreeMap<String, String>, Error> {
        let req = Req::DescribeConfigs(DescribeConfigsRequest {
            topic: topic.into(),
        });
        match self.client.any(req).await? {
            Resp::DescribeConfigs(d) => match d.error {
                Some(e) => Err(Error::broker(&e)),
                None => Ok(d.configs.into_iter().collect()),
            },
            _ => Err(unexpected()),
        }
    }

    pub async fn describe_cluster(&self) -> Result<ClusterDesc, Error> {
        match self
            .client
            .any(Req::DescribeCluster(DescribeClusterRequest {}))
            .await?
        {
            Resp::DescribeCluster(d) => {
                let mut brokers: Vec<BrokerDesc> = d
                    .brokers
                    .into_iter()
                    .map(|b| BrokerDesc {
                        id: b.id,
                        client_addr: b.client_addr,
                        peer_addr: b.peer_addr,
                        live: b.live,
                    })
                    .collect();
                brokers.sort_by_key(|b| b.id);
                Ok(ClusterDesc {
                    brokers,
                    controller_id: d.controller_id,
                })
            }
            _ => Err(unexpected()),
        }
    }

    /// Every live broker's log dir, restricted to `topics` (empty: all).
    pub async fn describe_log_dirs(&self, topics: &[String]) -> Result<Vec<LogDir>, Error> {
        self.client.refresh(&[]).await?;
        let snap = self.client.snapshot();
        let mut out = Vec::new();
        for b in snap.brokers.values().filter(|b| b.live) {
            let req = Req::DescribeLogDirs(DescribeLogDirsRequest {
                topics: topics.to_vec(),
            });
            let answer = match self.client.connection(&b.client_addr).await {
                Ok(c) => self.client.call(&c, req).await,
                Err(e) => Err(e),
            };
            match answer {
                Ok(Resp::DescribeLogDirs(d)) => {
                    let mut partitions = d.partitions;
                    partitions
                        .sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
                    out.push(LogDir {
                        broker_id: d.broker_id,
                        data_dir: d.data_dir,
                        partitions,
                        error: None,
                        controller_failed: Some(d.controller_failed).filter(|c| !c.is_empty()),
                    })
                }
                Ok(_) => return Err(unexpected()),
                Err(e) => out.push(LogDir {
                    broker_id: b.id,
                    data_dir: String::new(),
                    partitions: Vec::new(),
                    error: Some(e.to_string()),
                    controller_failed: None,
                }),
            }
        }
        Ok(out)
    }

    /// What is wrong in the cluster: every Raft group fail-stopped on a
    /// broker (the controller group, or a partition's replica), every
    /// registered broker that is not live, and every live one that could not
    /// be asked. Empty when all is well.
    pub async fn health(&self) -> Result<Vec<Problem>, Error> {
        let dirs = self.describe_log_dirs(&[]).await?;
        let snap = self.client.snapshot();
        let mut out = Vec::new();
        for b in snap.brokers.values().filter(|b| !b.live) {
            out.push(Problem {
                broker_id: b.id,
                what: "broker".into(),
                cause: "not live (the controller has not heard from it)".into(),
            });
        }
        for d in dirs {
            if let Some(e) = d.error {
                out.push(Problem {
                    broker_id: d.broker_id,
                    what: "broker".into(),
                    cause: format!("could not be asked: {e}"),
                });
            }
            if let Some(cause) = d.controller_failed {
                out.push(Problem {
                    broker_id: d.broker_id,
                    what: "controller".into(),
                    cause,
                });
            }
            for p in d.partitions.into_iter().filter(|p| !p.failed.is_empty()) {
                out.push(Problem {
                    broker_id: d.broker_id,
                    what: format!("{}/{}", p.topic, p.partition),
                    cause: p.failed,
                });
            }
        }
        out.sort_by(|a, b| (a.broker_id, &a.what).cmp(&(b.broker_id, &b.what)));
        Ok(out)
    }

    /// Every live broker's own resource use and Raft group counts (see
    /// `DescribeBrokerStatsResponse`), in broker id order. A broker that
    /// cannot be asked is an error: the figures are meant to cover the
    /// whole cluster. With `reset_timings`, each broker starts its driver
    /// timings afresh after answering.
    pub async fn broker_stats(
        &self,
        reset_timings: bool,
    ) -> Result<Vec<DescribeBrokerStatsResponse>, Error> {
        self.client.refresh(&[]).await?;
        let snap = self.client.snapshot();
        let mut out = Vec::new();
        for b in snap.brokers.values().filter(|b| b.live) {
            let req = Req::DescribeBrokerStats(DescribeBrokerStatsRequest { reset_timings });
            let c = self.client.connection(&b.client_addr).await?;
            match self.client.call(&c, req).await? {
                Resp::DescribeBrokerStats(s) => out.push(s),
                _ => return Err(unexpected()),
            }
        }
        out.sort_by_key(|s| s.broker_id);
        Ok(out)
    }

    /// A topic's partitions (leaders, replicas, in-sync replicas, offsets
    /// and size from the leader's log dir) and its effective config.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDesc, Error> {
        let t = self.client.refresh_topic(name).await?;
        let config = self.describe_config(name).await?;
        let dirs = self.describe_log_dirs(&[name.to_string()]).await?;
        let mut partitions: Vec<PartitionDesc> = t
            .partitions
            .iter()
            .map(|p| {
                let on_leader = dirs
                    .iter()
                    .filter(|d| d.broker_id == p.leader_id)
                    .flat_map(|d| d.partitions.iter())
                    .find(|lp| lp.topic == name && lp.partition == p.partition);
                let failed = dirs
                    .iter()
                    .flat_map(|d| {
                        d.partitions
                            .iter()
                            .filter(|lp| lp.topic == name && lp.partition == p.partition)
                            .filter(|lp| !lp.failed.is_empty())
                            .map(|lp| (d.broker_id, lp.failed.clone()))
                    })
                    .collect();
                let (log_start_offset, high_watermark, size_bytes) = match on_leader {
                    Some(lp) => (lp.log_start_offset, lp.log_end_offset, lp.size_bytes),
                    None => (-1, -1, 0),
                };
                PartitionDesc {
                    partition: p.partition,
                    leader: p.leader_id,
                    replicas: p.replicas.clone(),
                    in_sync: p.in_sync.clone(),
                    log_start_offset,
                    high_watermark,
                    size_bytes,
                    failed,
                }
            })
            .collect();
        self.in_sync_from_leaders(name, &mut partitions).await;
        // The high watermark as the leader serves it (log dirs give the log
        // end, which may be ahead of the commit point).
        for p in &mut partitions {
            if p.leader == 0 {
                continue;
            }
            let req = Req::ListOffsets(ListOffsetsRequest {
                topic: name.into(),
                partition: p.partition,
                timestamp: -1,
            });
            if let Ok(conn) = self.client.broker(p.leader).await {
                if let Ok(Resp::ListOffsets(lo)) = self.client.call(&conn, req).await {
                    if lo.error.is_none() && lo.offset >= 0 {
                        p.high_watermark = lo.offset;
                    }
                }
            }
        }
        partitions.sort_by_key(|p| p.partition);
        Ok(TopicDesc {
            name: name.into(),
            partitions,
            config,
        })
    }
}

impl Admin {
    /// Only a partition's leader knows which replicas are in sync (the
    /// broker that answered the metadata knows it only for the partitions
    /// it leads): asks each leader for the partitions it still leads. A
    /// leader that cannot be asked leaves its partitions as they were.
    async fn in_sync_from_leaders(&self, name: &str, partitions: &mut [PartitionDesc]) {
        let leaders: std::collections::BTreeSet<u64> = partitions
            .iter()
            .map(|p| p.leader)
            .filter(|l| *l != 0)
            .collect();
        for leader in leaders {
            let req = Req::Metadata(MetadataRequest {
                topics: vec![name.to_string()],
            });
            let Ok(conn) = self.client.broker(leader).await else {
                continue;
            };
            let Ok(Resp::Metadata(m)) = self.client.call(&conn, req).await else {
                continue;
            };
            let Some(t) = m.topics.iter().find(|t| t.name == name) else {
                continue;
            };
            // A leader's own list always names itself: an empty one is a
            // broker that no longer leads (its view of another leader).
            let led = |lp: &&PartitionMetadata| lp.leader_id == leader && !lp.in_sync.is_empty();
            for lp in t.partitions.iter().filter(led) {
                if let Some(p) = partitions.iter_mut().find(|p| p.partition == lp.partition) {
                    p.in_sync = lp.in_sync.clone();
                }
            }
        }
    }
}

fn unexpected() -> Error {
    Error::Transport("the broker sent an unexpected answer".into())
}
