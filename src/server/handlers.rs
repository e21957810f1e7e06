//! What each client request does. Every handler answers; none panics on
//! what a client sends.

use crate::cluster::controller::{Controller, Metadata};
use crate::cluster::topic_config::TopicConfig;
use crate::cluster::ClusterError;
use crate::partition::{PartitionError, PartitionService, FETCH_WAIT_MS_MAX};
use crate::proto::client_request::Body as Req;
use crate::proto::client_response::Body as Resp;
use crate::proto::*;
use crate::replication::transport::PeerView;
use std::path::PathBuf;
use std::time::Duration;

/// The protocol version this broker speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Bytes a whole fetch response carries at most.
pub const FETCH_RESPONSE_BYTES_MAX: usize = 32 * 1024 * 1024;

/// Everything the handlers use.
#[derive(Debug)]
pub struct Services {
    pub self_id: u64,
    pub data_dir: PathBuf,
    pub partitions: PartitionService,
    pub controller: Controller,
    pub metadata: Metadata,
    pub view: PeerView,
    pub logger: slog::Logger,
}

pub async fn handle(s: &Services, req: ClientRequest) -> ClientResponse {
    let correlation_id = req.correlation_id;
    if req.version != PROTOCOL_VERSION {
        return failed(
            correlation_id,
            ErrorCode::UnsupportedVersion,
            format!(
                "protocol version {} is not supported; this broker speaks {PROTOCOL_VERSION}",
                req.version
            ),
        );
    }
    let Some(body) = req.body else {
        return failed(
            correlation_id,
            ErrorCode::InvalidRequest,
            "request without a body".into(),
        );
    };
    // Questions answered from the topic table wait until the table is at
    // least as new as the one this broker had before it started: a stale
    // table would say a topic does not exist. Describing the cluster, log
    // dirs and stats stays open, to diagnose a broker that is not ready.
    let from_table = !matches!(
        body,
        Req::DescribeCluster(_) | Req::DescribeLogDirs(_) | Req::DescribeBrokerStats(_)
    );
    if from_table {
        // Once ready (latched), this is the only check: the replica lookup
        // below costs a map search per partition and runs only before.
        if let Err(why) = s.metadata.ready(&s.partitions.board) {
            if !served_by_local_replicas(s, &body) {
                return failed(correlation_id, ErrorCode::BrokerNotReady, why);
            }
        }
    }
    let body = match body {
        Req::Metadata(r) => Resp::Metadata(metadata(s, &r)),
        Req::CreateTopic(r) => Resp::Admin(admin(s.controller.create_topic(&r).await)),
        Req::DeleteTopic(r) => Resp::Admin(admin(s.controller.delete_topic(&r.name).await)),
        Req::AlterConfigs(r) => Resp::Admin(admin(s.controller.alter_config(&r).await)),
        Req::ListTopics(_) => Resp::ListTopics(ListTopicsResponse {
            names: s.metadata.read(|t| t.topics().keys().cloned().collect()),
        }),
        Req::DescribeConfigs(r) => Resp::DescribeConfigs(describe_configs(s, &r.topic)),
        Req::Produce(r) => Resp::Produce(produce(s, r).await),
        Req::Fetch(r) => Resp::Fetch(fetch(s, r).await),
        Req::ListOffsets(r) => Resp::ListOffsets(list_offsets(s, &r)),
        Req::DescribeCluster(_) => Resp::DescribeCluster(DescribeClusterResponse {
            brokers: brokers(s),
            controller_id: s.controller.leader().0,
        }),
        Req::DescribeLogDirs(r) => Resp::DescribeLogDirs(log_dirs(s, &r)),
        Req::TransferLeader(r) => Resp::TransferLeader(transfer_leader(s, &r).await),
        Req::DescribeBrokerStats(r) => Resp::DescribeBrokerStats(broker_stats(s, r.reset_timings)),
    };
    ClientResponse {
        correlation_id,
        error: None,
        body: Some(body),
    }
}

/// Produce, fetch and list-offsets requests whose every partition has a
/// replica open here are answered before the broker is ready: the replica
/// was opened from the table, so the table knows the topic, and the answer
/// comes from the partition's own Raft group (which may have a majority
/// while the controller has none). Readiness is about not saying "does not
/// exist" from a stale table; these do not ask the table that.
fn served_by_local_replicas(s: &Services, body: &Req) -> bool {
    let local = |topic: &str, partition: u32| s.partitions.replicas.get(topic, partition).is_some();
    match body {
        Req::Produce(r) => local(&r.topic, r.partition),
        Req::ListOffsets(r) => local(&r.topic, r.partition),
        Req::Fetch(r) => {
            !r.partitions.is_empty() && r.partitions.iter().all(|p| local(&p.topic, p.partition))
        }
        _ => false,
    }
}

fn failed(correlation_id: u64, code: ErrorCode, message: String) -> ClientResponse {
    ClientResponse {
        correlation_id,
        error: Some(Error {
            code: code as i32,
            message,
            leader_id: 0,
        }),
        body: None,
    }
}

fn admin(r: Result<(), ClusterError>) -> AdminResponse {
    AdminResponse {
        error: r.err().map(|e| e.to_proto()),
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> Option<Error> {
    Some(Error {
        code: code as i32,
        message: message.into(),
        leader_id: 0,
    })
}

fn unknown_topic(topic: &str) -> Option<Error> {
    error(
        ErrorCode::UnknownTopic,
        format!("topic '{topic}' does not exist; create it with `weir topic create {topic}`"),
    )
}

fn brokers(s: &Services) -> Vec<BrokerInfo> {
    let live = s.controller.live_brokers();
    s.metadata.read(|t| {
        t.brokers()
            .values()
            .map(|b| BrokerInfo {
                id: b.id,
                client_addr: b.client_addr.clone(),
                peer_addr: b.peer_addr.clone(),
                live: live.contains(&b.id),
            })
            .collect()
    })
}

/// The leader of a group and its term as this broker knows them: its own
/// view if it hosts a replica, else the newest leader report from the
/// peers; and the in-sync replicas if this broker leads.
fn leader_of(s: &Services, group: u64) -> (u64, u64, Vec<u64>) {
    match s.partitions.board.get(group) {
        Some(st) if st.leader != 0 => (st.leader, st.term, st.in_sync),
        _ => {
            let (leader, term) = s.view.leader_of(group);
            (leader, if leader == 0 { 0 } else { term }, Vec::new())
        }
    }
}

fn metadata(s: &Services, req: &MetadataRequest) -> MetadataResponse {
    let names = if req.topics.is_empty() {
        s.metadata.read(|t| t.topics().keys().cloned().collect())
    } else {
        req.topics.clone()
    };
    let topics = names
        .into_iter()
        .map(|name| topic_metadata(s, name))
        .collect();
    MetadataResponse {
        brokers: brokers(s),
        controller_id: s.controller.leader().0,
        topics,
    }
}

fn topic_metadata(s: &Services, name: String) -> TopicMetadata {
    let Some(topic) = s.metadata.read(|t| t.topic(&name).cloned()) else {
        return TopicMetadata {
            error: unknown_topic(&name),
            name,
            partitions: Vec::new(),
        };
    };
    let partitions = topic
        .partitions
        .iter()
        .map(|p| {
            let (leader_id, leader_epoch, in_sync) = leader_of(s, p.group);
            PartitionMetadata {
                partition: p.partition,
                leader_id,
                leader_epoch,
                replicas: p.replicas.clone(),
                in_sync,
                error: None,
            }
        })
        .collect();
    TopicMetadata {
        name,
        error: None,
        partitions,
    }
}

fn describe_configs(s: &Services, topic: &str) -> DescribeConfigsResponse {
    let overrides = s
        .metadata
        .read(|t| t.topic(topic).map(|t| t.configs.clone()));
    match overrides.map(|o| TopicConfig::from_overrides(&o)) {
        None => DescribeConfigsResponse {
            error: unknown_topic(topic),
            configs: Default::default(),
        },
        Some(Err(e)) => DescribeConfigsResponse {
            error: Some(e.to_proto()),
            configs: Default::default(),
        },
        Some(Ok(c)) => DescribeConfigsResponse {
            error: None,
            configs: c.effective(),
        },
    }
}

fn partition_error(e: PartitionError) -> Option<Error> {
    Some(e.to_proto())
}

async fn produce(s: &Services, r: ProduceRequest) -> ProduceResponse {
    if s.metadata.read(|t| t.topic(&r.topic).is_none()) {
        return ProduceResponse {
            error: unknown_topic(&r.topic),
            base_offset: -1,
        };
    }
    let acks = Acks::try_from(r.acks).unwrap_or(Acks::All);
    match s
        .partitions
        .produce(&r.topic, r.partition, acks, r.batch, r.timeout_ms.max(1))
        .await
    {
        Ok(base_offset) => ProduceResponse {
            error: None,
            base_offset,
        },
        Err(e) => ProduceResponse {
            error: partition_error(e),
            base_offset: -1,
        },
    }
}

/// Reads every requested partition once; returns the answers and the bytes
/// they carry.
fn fetch_once(s: &Services, r: &FetchRequest) -> (Vec<FetchedPartition>, usize) {
    let mut total = 0usize;
    let budget = (r.max_bytes as usize).clamp(1, FETCH_RESPONSE_BYTES_MAX);
    let parts = r
        .partitions
        .iter()
        .map(|p| {
            let mut out = FetchedPartition {
                topic: p.topic.clone(),
                partition: p.partition,
                ..Default::default()
            };
            if s.metadata.read(|t| t.topic(&p.topic).is_none()) {
                out.error = unknown_topic(&p.topic);
                return out;
            }
            let room = budget
                .saturating_sub(total)
                .max(1)
                .min(p.max_bytes.max(1) as usize);
            match s
                .partitions
                .read(&p.topic, p.partition, p.offset, room, p.replica_read)
            {
                Ok(f) => {
                    total += f.records.len();
                    out.records = f.records;
                    out.high_watermark = f.high_watermark;
                    out.log_start_offset = f.log_start_offset;
                }
                Err(e) => out.error = partition_error(e),
            }
            out
        })
        .collect();
    (parts, total)
}

async fn fetch(s: &Services, r: FetchRequest) -> FetchResponse {
    let wait = Duration::from_millis(r.max_wait_ms.min(FETCH_WAIT_MS_MAX) as u64);
    let deadline = tokio::time::Instant::now() + wait;
    // Bounded by the deadline: each pass waits for a high watermark to move.
    loop {
        // Subscribe before reading, so a move between the read and the wait
        // is not missed.
        let mut changes = s.partitions.board.watch();
        changes.borrow_and_update();
        let (partitions, bytes) = fetch_once(s, &r);
        let any_error = partitions.iter().any(|p| p.error.is_some());
        if bytes >= r.min_bytes as usize || any_error || tokio::time::Instant::now() >= deadline {
            return FetchResponse { partitions };
        }
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            let (partitions, _) = fetch_once(s, &r);
            return FetchResponse { partitions };
        }
    }
}

/// The replicas of a partition by the topic table, or why there are none.
fn replicas_of(s: &Services, topic: &str, partition: u32) -> Result<Vec<u64>, Option<Error>> {
    let found = s.metadata.read(|t| {
        t.topic(topic).map(|t| {
            t.partitions
                .iter()
                .find(|p| p.partition == partition)
                .map(|p| p.replicas.clone())
        })
    });
    match found {
        None => Err(unknown_topic(topic)),
        Some(None) => Err(error(
            ErrorCode::UnknownPartition,
            format!("topic '{topic}' has no partition {partition}"),
        )),
        Some(Some(replicas)) => Ok(replicas),
    }
}

async fn transfer_leader(s: &Services, r: &TransferLeaderRequest) -> TransferLeaderResponse {
    let failed = |error: Option<Error>| TransferLeaderResponse {
        leader_id: error.as_ref().map_or(0, |e| e.leader_id),
        error,
    };
    let replicas = match replicas_of(s, &r.topic, r.partition) {
        Ok(replicas) => replicas,
        Err(e) => return failed(e),
    };
    if !replicas.contains(&r.to) {
        return failed(error(
            ErrorCode::NotAReplica,
            format!(
                "broker {} holds no replica of {}/{}; pick one of its replicas {replicas:?}",
                r.to, r.topic, r.partition
            ),
        ));
    }
    match s
        .partitions
        .transfer_leader(&r.topic, r.partition, r.to, r.timeout_ms)
        .await
    {
        Ok(leader_id) => TransferLeaderResponse {
            error: None,
            leader_id,
        },
        Err(e) => failed(partition_error(e)),
    }
}

fn list_offsets(s: &Services, r: &ListOffsetsRequest) -> ListOffsetsResponse {
    if s.metadata.read(|t| t.topic(&r.topic).is_none()) {
        return ListOffsetsResponse {
            error: unknown_topic(&r.topic),
            offset: -1,
        };
    }
    match s.partitions.list_offset(&r.topic, r.partition, r.timestamp) {
        Ok(offset) => ListOffsetsResponse {
            error: None,
            offset,
        },
        Err(e) => ListOffsetsResponse {
            error: partition_error(e),
            offset: -1,
        },
    }
}

fn log_dirs(s: &Services, r: &DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    let partitions = s
        .partitions
        .replicas
        .all()
        .into_iter()
        .filter(|((topic, _), _)| r.topics.is_empty() || r.topics.contains(topic))
        .map(|((topic, partition), replica)| {
            let failed = failed_cause(s, replica.group);
            replica.log.with_log(|l| LogDirPartition {
                topic,
                partition,
                size_bytes: l.size_bytes(),
                log_start_offset: l.log_start_offset(),
                log_end_offset: l.next_offset(),
                failed,
            })
        })
        .collect();
    DescribeLogDirsResponse {
        broker_id: s.self_id,
        data_dir: s.data_dir.display().to_string(),
        partitions,
        controller_failed: failed_cause(s, crate::cluster::controller::CONTROLLER_GROUP),
    }
}

/// Why `group` is fail-stopped on this broker, or "" if it is not.
fn failed_cause(s: &Services, group: u64) -> String {
    s.partitions
        .board
        .get(group)
        .and_then(|st| st.failed)
        .unwrap_or_default()
}

fn broker_stats(s: &Services, reset_timings: bool) -> DescribeBrokerStatsResponse {
    let process = crate::io::process::ProcessStats::read_self();
    let (groups, leading, quiet) = s.partitions.board.counts();
    let timings = s.partitions.board.timings(reset_timings);
    let summary = |t: crate::replication::timings::Summary| {
        Some(crate::proto::DurationSummary {
            count: t.count,
            p50_us: t.p50_us,
            p99_us: t.p99_us,
            p999_us: t.p999_us,
            max_us: t.max_us,
        })
    };
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    DescribeBrokerStatsResponse {
        broker_id: s.self_id,
        cpu_time_ms: process.cpu_time_ms,
        resident_bytes: process.resident_bytes,
        storage_write_bytes: process.storage_write_bytes,
        storage_read_bytes: process.storage_read_bytes,
        groups: count(groups),
        groups_leading: count(leading),
        groups_quiescent: count(quiet),
        driver_round: summary(timings.round),
        group_commit: summary(timings.group_commit),
        tick_late: summary(timings.tick_late),
    }
}
