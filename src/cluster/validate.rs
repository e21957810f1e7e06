//! What the controller leader checks before it proposes a command.
//!
//! An admin request is checked against the table as the leader knows it
//! and turned into a command with every decision made (topic id, Raft
//! groups, replicas), so that applying it needs no choices. The errors go
//! back to the client, so they say what is wrong and how to fix it.

use super::placement::assign;
use super::table::TopicTable;
use super::topic_config::{altered_overrides, shown, TopicConfig};
use super::ClusterError;
use crate::proto::{
    AlterConfigsRequest, AlterTopicConfig, CreateTopic, CreateTopicRequest, DeleteTopic,
    DeleteTopicRequest, ErrorCode,
};
use std::collections::BTreeMap;

/// Kafka's limit, which leaves room in its 255-byte file names for the
/// partition number.
pub const TOPIC_NAME_MAX_CHARS: usize = 249;

/// Kafka's topic name rules: 1 to 249 of ASCII letters, digits, '.', '_'
/// and '-', but not "." or ".." (they would name directories that are not
/// the topic's).
pub fn check_topic_name(name: &str) -> Result<(), ClusterError> {
    let invalid = |message: String| ClusterError::new(ErrorCode::InvalidTopicName, message);
    let chars = name.chars().count();
    if chars == 0 {
        return Err(invalid("topic name must not be empty".into()));
    }
    if chars > TOPIC_NAME_MAX_CHARS {
        return Err(invalid(format!(
            "topic name {} is {chars} characters long; the limit is {TOPIC_NAME_MAX_CHARS}",
            shown(name)
        )));
    }
    if name == "." || name == ".." {
        return Err(invalid(format!("topic name '{name}' is not allowed")));
    }
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    match name.chars().find(|c| !legal(*c)) {
        None => Ok(()),
        Some(c) => Err(invalid(format!(
            "topic name {} contains '{}', which is not allowed; use ASCII letters, digits, \
             '.', '_' and '-'",
            shown(name),
            c.escape_debug()
        ))),
    }
}

impl TopicTable {
    /// The command creating `req`'s topic on `live_brokers` (those not
    /// registered are left out: nobody would know their addresses).
    pub fn prepare_create(
        &self,
        req: &CreateTopicRequest,
        live_brokers: &[u64],
    ) -> Result<CreateTopic, ClusterError> {
        check_topic_name(&req.name)?;
        if self.topic(&req.name).is_some() {
            return Err(ClusterError::new(
                ErrorCode::TopicAlreadyExists,
                format!("topic '{}' already exists", req.name),
            ));
        }
        let configs: BTreeMap<String, String> = req.configs.clone().into_iter().collect();
        TopicConfig::from_overrides(&configs)?;
        let live: Vec<u64> = live_brokers
            .iter()
            .copied()
            .filter(|b| self.broker(*b).is_some())
            .collect();
        let partitions = assign(
            req.partitions,
            req.replication_factor,
            &live,
            self.next_group(),
            &self.placement_load(),
        )?;
        Ok(CreateTopic {
            name: req.name.clone(),
            topic_id: self.next_topic_id(),
            partitions,
            configs: configs.into_iter().collect(),
        })
    }

    /// The command deleting `req`'s topic.
    pub fn prepare_delete(&self, req: &DeleteTopicRequest) -> Result<DeleteTopic, ClusterError> {
        self.existing(&req.name)?;
        Ok(DeleteTopic {
            name: req.name.clone(),
        })
    }

    /// The command altering `req`'s topic's configs; the resulting config
    /// must be valid as a whole.
    pub fn prepare_alter(
        &self,
        req: &AlterConfigsRequest,
    ) -> Result<AlterTopicConfig, ClusterError> {
        let topic = self.existing(&req.topic)?;
        if req.set.is_empty() && req.delete.is_empty() {
            return Err(ClusterError::new(
                ErrorCode::InvalidRequest,
                "nothing to alter: give configs to set or to delete",
            ));
        }
        let set: BTreeMap<String, String> = req.set.clone().into_iter().collect();
        let mut delete = req.delete.clone();
        delete.sort();
        delete.dedup();
        altered_overrides(&topic.configs, &set, &delete)?;
        Ok(AlterTopicConfig {
            name: req.topic.clone(),
            set: set.into_iter().collect(),
            delete,
        })
    }

    fn existing(&self, name: &str) -> Result<&super::Topic, ClusterError> {
        self.topic(name).ok_or_else(|| {
            ClusterError::new(
                ErrorCode::UnknownTopic,
                format!("topic {} does not exist", shown(name)),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::controller_command::Command;
    use crate::proto::{ControllerCommand, RegisterBroker};

    fn table_with_brokers(ids: &[u64]) -> TopicTable {
        let mut table = TopicTable::new();
        for id in ids {
            table.apply(&ControllerCommand {
                command: Some(Command::RegisterBroker(RegisterBroker {
                    id: *id,
                    client_addr: format!("b{id}:9092"),
                    peer_addr: format!("b{id}:9093"),
                    incarnation: 0,
                })),
            });
        }
        table
    }

    fn create_req(
        name: &str,
        partitions: u32,
        rf: u32,
        configs: &[(&str, &str)],
    ) -> CreateTopicRequest {
        CreateTopicRequest {
            name: name.into(),
            partitions,
            replication_factor: rf,
            configs: configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn name_error(name: &str) -> String {
        let e = check_topic_name(name).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidTopicName);
        e.message
    }

    #[test]
    fn topic_names() {
        for ok in [
            "a",
            "orders",
            "Orders.v2",
            "a_b-c.d",
            "0",
            "...",
            ".a",
            &"x".repeat(249),
        ] {
            assert!(check_topic_name(ok).is_ok(), "{ok}");
        }
        assert_eq!(name_error(""), "topic name must not be empty");
        assert_eq!(name_error("."), "topic name '.' is not allowed");
        assert_eq!(name_error(".."), "topic name '..' is not allowed");
        let long = name_error(&"x".repeat(250));
        assert!(
            long.ends_with("is 250 characters long; the limit is 249"),
            "{long}"
        );
        assert!(long.len() < 150, "{long}");
        assert_eq!(
            name_error("my topic"),
            "topic name 'my topic' contains ' ', which is not allowed; use ASCII letters, \
             digits, '.', '_' and '-'"
        );
        assert!(name_error("a/b").contains("'/'"));
        assert!(name_error("é").contains("'é'"));
        assert!(name_error("a\nb").contains("'\\n'"));
        assert!(name_error("a\0").contains("'\\0'"));
    }

    #[test]
    fn create_decides_everything() {
        let table = table_with_brokers(&[1, 2, 3]);
        let req = create_req("orders", 3, 2, &[("retention.ms", "1000")]);
        let c = table.prepare_create(&req, &[1, 2, 3]).unwrap();
        assert_eq!(c.name, "orders");
        assert_eq!(c.topic_id, 1);
        let groups: Vec<u64> = c.partitions.iter().map(|p| p.group).collect();
        assert_eq!(groups, vec![1, 2, 3]);
        assert!(c.partitions.iter().all(|p| p.replicas.len() == 2));
        assert_eq!(
            c.configs.get("retention.ms").map(String::as_str),
            Some("1000")
        );
    }

    #[test]
    fn create_errors() {
        let mut table = table_with_brokers(&[1]);
        let c = table
            .prepare_create(&create_req("t", 1, 1, &[]), &[1])
            .unwrap();
        table.apply(&ControllerCommand {
            command: Some(Command::CreateTopic(c)),
        });
        let err = |req: CreateTopicRequest| table.prepare_create(&req, &[1]).unwrap_err();

        let e = err(create_req("t", 1, 1, &[]));
        assert_eq!(e.code, ErrorCode::TopicAlreadyExists);
        assert_eq!(e.message, "topic 't' already exists");
        let e = err(create_req("u", 1, 3, &[]));
        assert_eq!(e.code, ErrorCode::InvalidReplicationFactor);
        assert_eq!(
            e.message,
            "replication factor 3 exceeds the 1 live broker; start more brokers or use \
             --replication-factor 1"
        );
        let e = err(create_req("u", 0, 1, &[]));
        assert_eq!(e.code, ErrorCode::InvalidPartitions);
        assert_eq!(e.message, "a topic needs at least 1 partition");
        let e = err(create_req("u", 1, 1, &[("retention.ms", "abc")]));
        assert_eq!(e.code, ErrorCode::InvalidConfig);
        let e = err(create_req("u", 1, 1, &[("cleanup.policy", "compact")]));
        assert!(e.message.contains("not supported yet"), "{}", e.message);
        let e = err(create_req("a b", 1, 1, &[]));
        assert_eq!(e.code, ErrorCode::InvalidTopicName);
    }

    #[test]
    fn create_uses_only_registered_live_brokers() {
        let table = table_with_brokers(&[1, 2]);
        // 3 is live but not registered yet; 4 is neither.
        let e = table
            .prepare_create(&create_req("t", 1, 3, &[]), &[1, 2, 3])
            .unwrap_err();
        assert!(
            e.message.contains("exceeds the 2 live brokers"),
            "{}",
            e.message
        );
        let c = table
            .prepare_create(&create_req("t", 4, 1, &[]), &[2])
            .unwrap();
        assert!(c.partitions.iter().all(|p| p.replicas == vec![2]));
    }

    #[test]
    fn delete_and_alter_need_the_topic() {
        let table = table_with_brokers(&[1]);
        let e = table
            .prepare_delete(&DeleteTopicRequest {
                name: "nope".into(),
            })
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownTopic);
        assert_eq!(e.message, "topic 'nope' does not exist");
        let req = AlterConfigsRequest {
            topic: "nope".into(),
            ..Default::default()
        };
        assert_eq!(
            table.prepare_alter(&req).unwrap_err().code,
            ErrorCode::UnknownTopic
        );
    }

    #[test]
    fn alter_checks_the_result() {
        let mut table = table_with_brokers(&[1]);
        let req = create_req("t", 1, 1, &[("max.message.bytes", "2048")]);
        let c = table.prepare_create(&req, &[1]).unwrap();
        table.apply(&ControllerCommand {
            command: Some(Command::CreateTopic(c)),
        });
        let alter = |set: &[(&str, &str)], delete: &[&str]| AlterConfigsRequest {
            topic: "t".into(),
            set: set
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            delete: delete.iter().map(|k| k.to_string()).collect(),
        };
        let e = table.prepare_alter(&alter(&[], &[])).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        let e = table
            .prepare_alter(&alter(&[("segment.bytes", "1024")], &[]))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidConfig);
        assert!(e.message.contains("max.message.bytes"), "{}", e.message);
        let e = table
            .prepare_alter(&alter(&[("bogus", "1")], &[]))
            .unwrap_err();
        assert!(
            e.message.contains("unknown topic config 'bogus'"),
            "{}",
            e.message
        );
        let ok = alter(
            &[("segment.bytes", "1024")],
            &["max.message.bytes", "max.message.bytes"],
        );
        let c = table.prepare_alter(&ok).unwrap();
        assert_eq!(c.delete, vec!["max.message.bytes".to_string()]);
    }
}
