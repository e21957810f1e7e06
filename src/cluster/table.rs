//! The topic table: the controller's state machine.
//!
//! Every broker applies the controller group's committed commands, in log
//! order, to its own `TopicTable`, so applying must be deterministic (only
//! ordered maps, no clocks, no randomness) and total: a command that no
//! longer fits the table when it is applied (two creates of one name
//! proposed from the same state, or two that picked the same ids; an alter
//! that is only valid without a concurrent one) changes nothing and reports
//! no change. It never panics.
//!
//! Ids: topic ids and Raft group ids only grow and are never reused, so a
//! re-created topic gets new ones and a replica left over from the old
//! topic can never be mistaken for the new one. Group 0 is the controller
//! group itself, so partitions start at group 1; topic ids start at 1 too,
//! leaving 0 for "none".

use super::placement::{PlacementLoad, PARTITIONS_MAX};
use super::topic_config::{altered_overrides, TopicConfig};
use super::validate::check_topic_name;
use super::ClusterError;
use crate::proto::controller_command::Command;
use crate::proto::{
    AlterTopicConfig, ControllerCommand, CreateTopic, DeleteTopic, ErrorCode, PartitionAssignment,
    RegisterBroker,
};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};

/// The controller's own Raft group.
pub const CONTROLLER_GROUP: u64 = 0;

/// A registered broker and where to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerInfo {
    pub id: u64,
    /// Where clients reach it.
    pub client_addr: String,
    /// Where other brokers reach it.
    pub peer_addr: String,
}

/// A topic as the table holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topic {
    pub name: String,
    pub id: u64,
    /// Ordered by partition number, which runs from 0.
    pub partitions: Vec<PartitionAssignment>,
    /// The configs set on this topic (not the defaults).
    pub configs: BTreeMap<String, String>,
    /// `configs` validated, defaults filled in; always consistent with it.
    config: TopicConfig,
}

impl Topic {
    /// The effective config (overrides and defaults).
    pub fn config(&self) -> &TopicConfig {
        &self.config
    }

    /// The Raft groups of the partitions, in partition order.
    pub fn groups(&self) -> Vec<u64> {
        self.partitions.iter().map(|p| p.group).collect()
    }
}

/// What applying a command changed, for the layers that act on it (start
/// or stop partition replicas, reconfigure logs, refresh metadata).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableChange {
    /// A broker registered, or re-registered with new addresses.
    BrokerRegistered {
        id: u64,
    },
    TopicCreated {
        name: String,
    },
    /// The topic is gone; these groups' replicas should be removed.
    TopicDeleted {
        name: String,
        groups: Vec<u64>,
    },
    /// The topic's overrides changed.
    ConfigChanged {
        name: String,
    },
}

/// One partition replica a broker must host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostedPartition {
    pub topic: String,
    pub partition: u32,
    pub group: u64,
    /// All replicas, the preferred leader first.
    pub replicas: Vec<u64>,
}

/// The cluster metadata replicated by the controller group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicTable {
    brokers: BTreeMap<u64, BrokerInfo>,
    topics: BTreeMap<String, Topic>,
    next_topic_id: u64,
    next_group: u64,
}

impl Default for TopicTable {
    fn default() -> Self {
        TopicTable {
            brokers: BTreeMap::new(),
            topics: BTreeMap::new(),
            next_topic_id: 1,
            next_group: CONTROLLER_GROUP + 1,
        }
    }
}

impl TopicTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one committed command; returns what changed (nothing if the
    /// command no longer fits the table).
    pub fn apply(&mut self, cmd: &ControllerCommand) -> Vec<TableChange> {
        let change = match &cmd.command {
            Some(Command::RegisterBroker(c)) => self.apply_register(c),
            Some(Command::CreateTopic(c)) => self.apply_create(c),
            Some(Command::DeleteTopic(c)) => self.apply_delete(c),
            Some(Command::AlterConfig(c)) => self.apply_alter(c),
            // A command from a newer version this one does not know.
            None => None,
        };
        change.into_iter().collect()
    }

    /// Broker 0 is refused: the wire uses 0 for "no broker".
    fn apply_register(&mut self, c: &RegisterBroker) -> Option<TableChange> {
        let info = BrokerInfo {
            id: c.id,
            client_addr: c.client_addr.clone(),
            peer_addr: c.peer_addr.clone(),
        };
        if c.id == 0 || self.brokers.get(&c.id) == Some(&info) {
            return None;
        }
        self.brokers.insert(c.id, info);
        Some(TableChange::BrokerRegistered { id: c.id })
    }

    fn apply_create(&mut self, c: &CreateTopic) -> Option<TableChange> {
        let configs: BTreeMap<String, String> = c.configs.clone().into_iter().collect();
        let fresh = !self.topics.contains_key(&c.name)
            && check_topic_name(&c.name).is_ok()
            && c.topic_id >= self.next_topic_id
            && c.partitions.first()?.group >= self.next_group;
        if !fresh || !well_formed(&c.partitions) {
            return None;
        }
        let config = TopicConfig::from_overrides(&configs).ok()?;
        let next_topic_id = c.topic_id.checked_add(1)?;
        let next_group = c.partitions.last()?.group.checked_add(1)?;
        self.next_topic_id = next_topic_id;
        self.next_group = next_group;
        let topic = Topic {
            name: c.name.clone(),
            id: c.topic_id,
            partitions: c.partitions.clone(),
            configs,
            config,
        };
        self.topics.insert(c.name.clone(), topic);
        Some(TableChange::TopicCreated {
            name: c.name.clone(),
        })
    }

    fn apply_delete(&mut self, c: &DeleteTopic) -> Option<TableChange> {
        let topic = self.topics.remove(&c.name)?;
        Some(TableChange::TopicDeleted {
            groups: topic.groups(),
            name: topic.name,
        })
    }

    /// Re-validated as applied: two alters, each valid alone, can be
    /// invalid together (say `segment.bytes` lowered under a raised
    /// `max.message.bytes`).
    fn apply_alter(&mut self, c: &AlterTopicConfig) -> Option<TableChange> {
        let topic = self.topics.get_mut(&c.name)?;
        let set: BTreeMap<String, String> = c.set.clone().into_iter().collect();
        let configs = altered_overrides(&topic.configs, &set, &c.delete).ok()?;
        if configs == topic.configs {
            return None;
        }
        topic.config = TopicConfig::from_overrides(&configs).ok()?;
        topic.configs = configs;
        Some(TableChange::ConfigChanged {
            name: c.name.clone(),
        })
    }

    pub fn brokers(&self) -> &BTreeMap<u64, BrokerInfo> {
        &self.brokers
    }

    pub fn broker(&self, id: u64) -> Option<&BrokerInfo> {
        self.brokers.get(&id)
    }

    pub fn topics(&self) -> &BTreeMap<String, Topic> {
        &self.topics
    }

    pub fn topic(&self, name: &str) -> Option<&Topic> {
        self.topics.get(name)
    }

    /// The id the next created topic gets.
    pub fn next_topic_id(&self) -> u64 {
        self.next_topic_id
    }

    /// The first Raft group the next created topic gets.
    pub fn next_group(&self) -> u64 {
        self.next_group
    }

    /// The partition replicas `broker` must host, by topic and partition.
    pub fn partitions_of_broker(&self, broker: u64) -> Vec<HostedPartition> {
        self.topics
            .values()
            .flat_map(|t| t.partitions.iter().map(move |p| (t, p)))
            .filter(|(_, p)| p.replicas.contains(&broker))
            .map(|(t, p)| HostedPartition {
                topic: t.name.clone(),
                partition: p.partition,
                group: p.group,
                replicas: p.replicas.clone(),
            })
            .collect()
    }

    /// The Raft group of a partition.
    pub fn group_of(&self, topic: &str, partition: u32) -> Option<u64> {
        let partitions = &self.topics.get(topic)?.partitions;
        Some(partitions.get(usize::try_from(partition).ok()?)?.group)
    }

    /// The topic and partition a Raft group replicates (for routing a
    /// message of an unknown group).
    pub fn partition_of_group(&self, group: u64) -> Option<(&str, u32)> {
        self.topics.values().find_map(|t| {
            let p = t.partitions.iter().find(|p| p.group == group)?;
            Some((t.name.as_str(), p.partition))
        })
    }

    /// Replicas and preferred leaderships per broker, for placement.
    pub fn placement_load(&self) -> PlacementLoad {
        let mut load = PlacementLoad::default();
        self.topics
            .values()
            .flat_map(|t| &t.partitions)
            .for_each(|p| load.add(p));
        load
    }

    /// The whole table, for a snapshot of the controller group. The same
    /// table always encodes to the same bytes.
    pub fn encode(&self) -> Vec<u8> {
        let snapshot = TableSnapshot {
            next_topic_id: self.next_topic_id,
            next_group: self.next_group,
            brokers: self.brokers.values().map(register_command).collect(),
            topics: self.topics.values().map(topic_snapshot).collect(),
        };
        snapshot.encode_to_vec()
    }

    /// A table from [`encode`](Self::encode)'s bytes; refuses bytes that do
    /// not decode or describe a table no sequence of commands could build.
    pub fn decode(bytes: &[u8]) -> Result<Self, ClusterError> {
        let corrupt = |why: &str| {
            ClusterError::new(
                ErrorCode::CorruptMessage,
                format!("topic table snapshot: {why}"),
            )
        };
        let snapshot = TableSnapshot::decode(bytes).map_err(|e| corrupt(&e.to_string()))?;
        let mut table = TopicTable {
            next_topic_id: snapshot.next_topic_id,
            next_group: snapshot.next_group,
            ..TopicTable::default()
        };
        for b in &snapshot.brokers {
            if table.brokers.contains_key(&b.id) || table.apply_register(b).is_none() {
                return Err(corrupt(&format!("broker {} is invalid or repeated", b.id)));
            }
        }
        for t in snapshot.topics {
            let name = t.name.clone();
            table
                .restore_topic(t)
                .map_err(|why| corrupt(&format!("topic '{name}': {why}")))?;
        }
        table.check_ids().map_err(|why| corrupt(&why))?;
        Ok(table)
    }

    fn restore_topic(&mut self, t: TopicSnapshot) -> Result<(), String> {
        check_topic_name(&t.name).map_err(|e| e.message)?;
        if !well_formed(&t.partitions) {
            return Err("malformed partitions".into());
        }
        let config = TopicConfig::from_overrides(&t.configs).map_err(|e| e.message)?;
        let topic = Topic {
            name: t.name.clone(),
            id: t.id,
            partitions: t.partitions,
            configs: t.configs,
            config,
        };
        match self.topics.insert(t.name, topic) {
            None => Ok(()),
            Some(_) => Err("repeated".into()),
        }
    }

    /// Ids are unique and below the next ones handed out.
    fn check_ids(&self) -> Result<(), String> {
        let mut ids = BTreeSet::new();
        let mut groups = BTreeSet::from([CONTROLLER_GROUP]);
        for t in self.topics.values() {
            if t.id == 0 || t.id >= self.next_topic_id || !ids.insert(t.id) {
                return Err(format!(
                    "topic id {} is zero, repeated or not yet handed out",
                    t.id
                ));
            }
            for g in t.groups() {
                if g >= self.next_group || !groups.insert(g) {
                    return Err(format!("group {g} is repeated or not yet handed out"));
                }
            }
        }
        Ok(())
    }
}

/// Partitions numbered 0, 1, ... in order, at most `PARTITIONS_MAX`;
/// groups increasing and below u64::MAX (so the next one fits) and never
/// the controller's; replica sets non-empty, without duplicates or the
/// broker id 0.
fn well_formed(partitions: &[PartitionAssignment]) -> bool {
    let numbered = partitions
        .iter()
        .enumerate()
        .all(|(i, p)| usize::try_from(p.partition).ok() == Some(i));
    let groups_increase = partitions.windows(2).all(|w| w[0].group < w[1].group);
    let groups_fit = partitions
        .iter()
        .all(|p| p.group != CONTROLLER_GROUP && p.group < u64::MAX);
    let replicas_ok = partitions.iter().all(|p| {
        let distinct: BTreeSet<u64> = p.replicas.iter().copied().collect();
        !p.replicas.is_empty() && distinct.len() == p.replicas.len() && !distinct.contains(&0)
    });
    !partitions.is_empty()
        && partitions.len() <= PARTITIONS_MAX as usize
        && numbered
        && groups_increase
        && groups_fit
        && replicas_ok
}

fn register_command(b: &BrokerInfo) -> RegisterBroker {
    RegisterBroker {
        id: b.id,
        client_addr: b.client_addr.clone(),
        peer_addr: b.peer_addr.clone(),
        incarnation: 0,
    }
}

fn topic_snapshot(t: &Topic) -> TopicSnapshot {
    TopicSnapshot {
        name: t.name.clone(),
        id: t.id,
        partitions: t.partitions.clone(),
        configs: t.configs.clone(),
    }
}

/// The table's snapshot encoding. Defined here rather than in
/// `proto/weir.proto` because the generated maps are HashMaps, whose
/// encoding order varies; a snapshot should be the same bytes on every
/// replica.
#[derive(Clone, PartialEq, prost::Message)]
struct TableSnapshot {
    #[prost(uint64, tag = "1")]
    next_topic_id: u64,
    #[prost(uint64, tag = "2")]
    next_group: u64,
    #[prost(message, repeated, tag = "3")]
    brokers: Vec<RegisterBroker>,
    #[prost(message, repeated, tag = "4")]
    topics: Vec<TopicSnapshot>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TopicSnapshot {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(uint64, tag = "2")]
    id: u64,
    #[prost(message, repeated, tag = "3")]
    partitions: Vec<PartitionAssignment>,
    #[prost(btree_map = "string, string", tag = "4")]
    configs: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{AlterConfigsRequest, CreateTopicRequest, DeleteTopicRequest};
    use quickcheck::{QuickCheck, TestResult};

    fn cmd(command: Command) -> ControllerCommand {
        ControllerCommand {
            command: Some(command),
        }
    }

    fn register(id: u64) -> ControllerCommand {
        cmd(Command::RegisterBroker(RegisterBroker {
            id,
            client_addr: format!("b{id}:9092"),
            peer_addr: format!("b{id}:9093"),
            incarnation: 0,
        }))
    }

    fn pairs(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The create command the leader would propose.
    fn create(table: &TopicTable, name: &str, partitions: u32, rf: u32) -> ControllerCommand {
        let req = CreateTopicRequest {
            name: name.into(),
            partitions,
            replication_factor: rf,
            configs: Default::default(),
        };
        let live: Vec<u64> = table.brokers().keys().copied().collect();
        cmd(Command::CreateTopic(
            table.prepare_create(&req, &live).unwrap(),
        ))
    }

    fn alter(name: &str, set: &[(&str, &str)], delete: &[&str]) -> ControllerCommand {
        cmd(Command::AlterConfig(AlterTopicConfig {
            name: name.into(),
            set: pairs(set).into_iter().collect(),
            delete: delete.iter().map(|k| k.to_string()).collect(),
        }))
    }

    fn delete(name: &str) -> ControllerCommand {
        cmd(Command::DeleteTopic(DeleteTopic { name: name.into() }))
    }

    fn cluster(brokers: u64) -> TopicTable {
        let mut table = TopicTable::new();
        for id in 1..=brokers {
            table.apply(&register(id));
        }
        table
    }

    #[test]
    fn brokers_register() {
        let mut table = TopicTable::new();
        assert_eq!(
            table.apply(&register(1)),
            vec![TableChange::BrokerRegistered { id: 1 }]
        );
        assert_eq!(table.apply(&register(1)), vec![]);
        let moved = cmd(Command::RegisterBroker(RegisterBroker {
            id: 1,
            client_addr: "new:9092".into(),
            peer_addr: "new:9093".into(),
            incarnation: 0,
        }));
        assert_eq!(
            table.apply(&moved),
            vec![TableChange::BrokerRegistered { id: 1 }]
        );
        assert_eq!(table.broker(1).unwrap().client_addr, "new:9092");
        assert_eq!(table.apply(&register(0)), vec![]);
        assert_eq!(table.brokers().len(), 1);
    }

    #[test]
    fn create_then_query() {
        let mut table = cluster(3);
        let c = create(&table, "orders", 6, 2);
        assert_eq!(
            table.apply(&c),
            vec![TableChange::TopicCreated {
                name: "orders".into()
            }]
        );
        let topic = table.topic("orders").unwrap();
        assert_eq!(topic.id, 1);
        assert_eq!(topic.groups(), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(*topic.config(), TopicConfig::default());
        assert_eq!(table.next_topic_id(), 2);
        assert_eq!(table.next_group(), 7);
        assert_eq!(table.group_of("orders", 5), Some(6));
        assert_eq!(table.group_of("orders", 6), None);
        assert_eq!(table.group_of("nope", 0), None);
        assert_eq!(table.partition_of_group(4), Some(("orders", 3)));
        assert_eq!(table.partition_of_group(0), None);
        for b in 1..=3 {
            let load = table.placement_load().of(b);
            assert_eq!((load.replicas, load.leaders), (4, 2));
            let hosted = table.partitions_of_broker(b);
            assert_eq!(hosted.len(), 4);
            assert!(hosted
                .iter()
                .all(|h| h.topic == "orders" && h.replicas.contains(&b)));
            assert!(hosted
                .iter()
                .all(|h| table.group_of("orders", h.partition) == Some(h.group)));
        }
        assert!(table.partitions_of_broker(9).is_empty());
    }

    #[test]
    fn alter_then_delete_then_recreate() {
        let mut table = cluster(1);
        table.apply(&create(&table, "t", 2, 1));
        let a = alter(
            "t",
            &[("retention.ms", "5000"), ("segment.ms", "60000")],
            &[],
        );
        assert_eq!(
            table.apply(&a),
            vec![TableChange::ConfigChanged { name: "t".into() }]
        );
        assert_eq!(table.topic("t").unwrap().config().retention_ms(), 5000);
        // The same again changes nothing.
        assert_eq!(table.apply(&a), vec![]);
        let a = alter("t", &[], &["segment.ms"]);
        assert_eq!(
            table.apply(&a),
            vec![TableChange::ConfigChanged { name: "t".into() }]
        );
        let topic = table.topic("t").unwrap();
        assert_eq!(topic.configs, pairs(&[("retention.ms", "5000")]));
        assert_eq!(topic.config().segment_ms(), 604_800_000);

        assert_eq!(
            table.apply(&delete("t")),
            vec![TableChange::TopicDeleted {
                name: "t".into(),
                groups: vec![1, 2]
            }]
        );
        assert!(table.topic("t").is_none());
        assert_eq!(table.apply(&delete("t")), vec![]);
        assert_eq!(
            table.apply(&alter("t", &[("retention.ms", "1")], &[])),
            vec![]
        );

        table.apply(&create(&table, "t", 2, 1));
        let topic = table.topic("t").unwrap();
        assert_eq!(topic.id, 2);
        assert_eq!(topic.groups(), vec![3, 4]);
        assert!(topic.configs.is_empty());
    }

    #[test]
    fn concurrent_proposals_apply_once() {
        let mut table = cluster(2);
        // Both prepared from the same state: same id, same groups.
        let first = create(&table, "a", 1, 1);
        let same_name = create(&table, "a", 2, 1);
        let other_name = create(&table, "b", 1, 1);
        assert_eq!(table.apply(&first).len(), 1);
        let before = table.clone();
        assert_eq!(table.apply(&same_name), vec![]);
        assert_eq!(table.apply(&other_name), vec![]);
        assert_eq!(table, before);
        // Retried from the new state, it goes in.
        assert_eq!(table.apply(&create(&table, "b", 1, 1)).len(), 1);

        // Each alter is valid alone; together they are not.
        let shrink = alter("a", &[("segment.bytes", "2048")], &[]);
        let grow = alter("a", &[("max.message.bytes", "4096")], &[]);
        assert_eq!(table.apply(&shrink).len(), 1);
        assert_eq!(table.apply(&grow), vec![]);
        assert_eq!(table.topic("a").unwrap().config().max_message_bytes(), 2048);
    }

    /// A well-formed create with one field broken by `breaks`.
    fn broken(table: &TopicTable, breaks: impl Fn(&mut CreateTopic)) -> ControllerCommand {
        let Some(Command::CreateTopic(mut c)) = create(table, "t", 3, 2).command else {
            unreachable!()
        };
        breaks(&mut c);
        cmd(Command::CreateTopic(c))
    }

    #[test]
    fn malformed_creates_are_no_ops() {
        let mut table = cluster(3);
        table.apply(&create(&table, "old", 1, 1));
        let before = table.clone();
        let cases: Vec<fn(&mut CreateTopic)> = vec![
            |c| c.name = "a b".into(),
            |c| c.name = String::new(),
            |c| c.topic_id = 1,
            |c| c.topic_id = u64::MAX,
            |c| c.partitions.clear(),
            |c| c.partitions[0].group = 1,
            |c| c.partitions[2].group = u64::MAX,
            |c| c.partitions[1].group = c.partitions[0].group,
            |c| c.partitions.swap(0, 1),
            |c| c.partitions[1].partition = 7,
            |c| c.partitions[0].replicas.clear(),
            |c| c.partitions[0].replicas = vec![1, 1],
            |c| c.partitions[0].replicas = vec![0, 1],
            |c| {
                c.configs.insert("retention.ms".into(), "x".into());
            },
        ];
        for (i, breaks) in cases.iter().enumerate() {
            assert_eq!(table.apply(&broken(&table, breaks)), vec![], "case {i}");
            assert_eq!(table, before, "case {i}");
        }
        assert_eq!(table.apply(&ControllerCommand { command: None }), vec![]);
        // Unknown brokers are accepted: they may register later.
        let c = broken(&table, |c| c.partitions[0].replicas = vec![42]);
        assert_eq!(table.apply(&c).len(), 1);
        assert_eq!(table.partitions_of_broker(42).len(), 1);
    }

    #[test]
    fn encode_round_trips_and_is_canonical() {
        let mut table = cluster(3);
        table.apply(&create(&table, "b", 3, 3));
        table.apply(&create(&table, "a", 2, 2));
        table.apply(&alter(
            "a",
            &[("retention.ms", "1"), ("segment.ms", "2")],
            &[],
        ));
        table.apply(&delete("b"));
        let bytes = table.encode();
        let decoded = TopicTable::decode(&bytes).unwrap();
        assert_eq!(decoded, table);
        assert_eq!(decoded.encode(), bytes);
        assert_eq!(
            TopicTable::decode(&TopicTable::new().encode()).unwrap(),
            TopicTable::new()
        );
    }

    #[test]
    fn decode_refuses_garbage_and_impossible_tables() {
        let e = TopicTable::decode(&[0xff, 0xff, 0xff]).unwrap_err();
        assert_eq!(e.code, ErrorCode::CorruptMessage);
        let mut table = cluster(1);
        table.apply(&create(&table, "a", 2, 1));
        let mut snapshot = TableSnapshot::decode(table.encode().as_slice()).unwrap();
        snapshot.next_group = 2;
        assert!(TopicTable::decode(&snapshot.encode_to_vec()).is_err());
        let mut snapshot = TableSnapshot::decode(table.encode().as_slice()).unwrap();
        snapshot.topics.push(snapshot.topics[0].clone());
        snapshot.topics[1].name = "b".into();
        let e = TopicTable::decode(&snapshot.encode_to_vec()).unwrap_err();
        assert!(e.message.contains("repeated"), "{}", e.message);
        let mut snapshot = TableSnapshot::decode(table.encode().as_slice()).unwrap();
        snapshot.brokers.push(snapshot.brokers[0].clone());
        assert!(TopicTable::decode(&snapshot.encode_to_vec()).is_err());
    }

    /// Turns arbitrary bytes into commands: mostly what a leader would
    /// propose (some of it stale), some of it nonsense.
    fn command_from(
        table: &TopicTable,
        stale: &TopicTable,
        op: u8,
        x: u8,
        y: u8,
    ) -> ControllerCommand {
        let name = ["a", "b", "c", "d", "a b", ""][usize::from(x % 6)];
        let source = if y.is_multiple_of(4) { stale } else { table };
        let live: Vec<u64> = source.brokers().keys().copied().collect();
        let key = [
            "retention.ms",
            "segment.bytes",
            "max.message.bytes",
            "bogus",
        ][usize::from(y % 4)];
        let value = ["1024", "4096", "-1", "x"][usize::from(x % 4)];
        match op % 8 {
            0 => register(u64::from(x % 5)),
            1..=3 => {
                let req = CreateTopicRequest {
                    name: name.into(),
                    partitions: u32::from(y % 4),
                    replication_factor: u32::from(x % 2 + 1),
                    configs: Default::default(),
                };
                match source.prepare_create(&req, &live) {
                    Ok(c) => cmd(Command::CreateTopic(c)),
                    Err(_) => delete(name),
                }
            }
            4 => delete(name),
            5 => {
                let req = AlterConfigsRequest {
                    topic: name.into(),
                    set: pairs(&[(key, value)]).into_iter().collect(),
                    delete: vec![],
                };
                match source.prepare_alter(&req) {
                    Ok(c) => cmd(Command::AlterConfig(c)),
                    Err(_) => alter(name, &[(key, value)], &[key]),
                }
            }
            6 => {
                let req = DeleteTopicRequest { name: name.into() };
                let c = source
                    .prepare_delete(&req)
                    .unwrap_or(DeleteTopic { name: name.into() });
                cmd(Command::DeleteTopic(c))
            }
            _ => ControllerCommand { command: None },
        }
    }

    /// Applies `ops`, keeping a table a few commands behind to prepare
    /// stale proposals from; returns the commands and the table.
    fn run(ops: &[(u8, u8, u8)]) -> (Vec<ControllerCommand>, TopicTable) {
        let mut table = TopicTable::new();
        let mut stale = TopicTable::new();
        let mut commands = Vec::new();
        for (i, (op, x, y)) in ops.iter().enumerate() {
            let c = command_from(&table, &stale, *op, *x, *y);
            table.apply(&c);
            commands.push(c);
            if i % 3 == 2 {
                stale = table.clone();
            }
        }
        (commands, table)
    }

    #[test]
    fn quickcheck_apply_is_total_deterministic_and_keeps_invariants() {
        fn prop(ops: Vec<(u8, u8, u8)>) -> TestResult {
            let (commands, table) = run(&ops);
            let mut replay = TopicTable::new();
            commands.iter().for_each(|c| {
                replay.apply(c);
            });
            if replay.encode() != table.encode() || format!("{replay:?}") != format!("{table:?}") {
                return TestResult::error("replay differs");
            }
            if let Err(why) = table.check_ids() {
                return TestResult::error(why);
            }
            for t in table.topics().values() {
                let config = TopicConfig::from_overrides(&t.configs);
                if !well_formed(&t.partitions) || config.as_ref() != Ok(t.config()) {
                    return TestResult::error(format!("bad topic {t:?}"));
                }
                if t.config().to_log_config().validate().is_err() {
                    return TestResult::error(format!("bad log config {t:?}"));
                }
            }
            match TopicTable::decode(&table.encode()) {
                Ok(decoded) if decoded == table => TestResult::passed(),
                other => TestResult::error(format!("decode: {other:?}")),
            }
        }
        crate::test_seed::quickcheck(
            QuickCheck::new().tests(300),
            prop as fn(Vec<(u8, u8, u8)>) -> TestResult,
        );
    }

    #[test]
    fn decode_never_panics_on_damaged_snapshots() {
        let (_, table) = run(&(0..60u8)
            .map(|i| (i, i.wrapping_mul(7), i / 3))
            .collect::<Vec<_>>());
        let bytes = table.encode();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[i] ^= 1 << bit;
                let _ = TopicTable::decode(&damaged);
            }
            let _ = TopicTable::decode(&bytes[..i]);
        }
    }
}
