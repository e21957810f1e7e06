//! Cluster metadata: what the controller group replicates and decides.
//!
//! The runtime:
//!
//! - [`controller`]: the controller group (group 0): admin requests
//!   validated and proposed by its leader, committed commands applied to
//!   every broker's copy of the table, broker registration.
//! - [`backend`]: turns the table into local partitions (opens, removes,
//!   reconfigures them) and runs retention.
//!
//! The rest is pure (no I/O, no async), so the controller's state machine
//! can be replayed and checked anywhere:
//!
//! - [`topic_config`]: topic configs by their Kafka names, validated, with
//!   defaults, and their translation to the storage layer's `LogConfig`.
//! - [`placement`]: which brokers replicate each new partition, balancing
//!   replicas and preferred leaders over the cluster.
//! - [`table`]: the topic table, the state machine built by applying the
//!   controller's committed commands, and its queries.
//! - [`validate`]: the checks the controller leader runs on an admin request
//!   before it proposes the command (topic names, configs, placement).
//!
//! Validation happens twice on purpose: the leader checks a request against
//! the table as it knows it and proposes a command with everything decided
//! (ids, groups, replicas); applying re-checks the command against the table
//! as committed, because two proposals made from the same state can conflict
//! (two creates of one name, two alters that are only valid apart). A command
//! that no longer fits is applied as a no-op, and the proposer, watching the
//! table, sees it did not happen.

pub mod backend;
pub mod controller;
pub mod placement;
pub mod table;
pub mod topic_config;
pub mod validate;

pub use placement::{assign, PlacementLoad};
pub use table::{BrokerInfo, HostedPartition, TableChange, Topic, TopicTable};
pub use topic_config::{CleanupPolicy, TopicConfig};
pub use validate::check_topic_name;

use crate::proto::{self, ErrorCode};
use std::fmt;

/// A request the cluster layer refuses: the wire error code and a message
/// for people that says what is wrong and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterError {
    pub code: ErrorCode,
    pub message: String,
    /// For NOT_CONTROLLER: the broker that is the controller (0: unknown).
    pub leader: u64,
}

impl ClusterError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ClusterError {
            code,
            message: message.into(),
            leader: 0,
        }
    }

    pub fn with_leader(mut self, leader: u64) -> Self {
        self.leader = leader;
        self
    }

    pub fn to_proto(&self) -> proto::Error {
        self.clone().into()
    }
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str_name(), self.message)
    }
}

impl std::error::Error for ClusterError {}

impl From<ClusterError> for proto::Error {
    fn from(e: ClusterError) -> Self {
        proto::Error {
            code: e.code as i32,
            message: e.message,
            leader_id: e.leader,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_to_the_wire_error() {
        let e = ClusterError::new(ErrorCode::TopicAlreadyExists, "topic 'x' already exists");
        assert_eq!(
            e.to_string(),
            "TOPIC_ALREADY_EXISTS: topic 'x' already exists"
        );
        let wire: proto::Error = e.into();
        assert_eq!(wire.code(), ErrorCode::TopicAlreadyExists);
        assert_eq!(wire.message, "topic 'x' already exists");
        assert_eq!(wire.leader_id, 0);
    }
}
