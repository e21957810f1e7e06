//! Replication: every partition is its own Raft group (tikv's raft-rs), and
//! the group's Raft log *is* the partition log.
//!
//! - [`raft_log`]: [`RaftLog`](raft_log::RaftLog), raft-rs's `Storage` over
//!   one replica's [`PartitionLog`](crate::storage::PartitionLog), its hard
//!   state and its configuration. Each Raft entry is one RecordBatch, written
//!   once per replica; Raft's own entries (a leader's no-op, configuration
//!   changes) are control batches.
//!
//! Planned here: the multi-Raft driver (one Ready loop for all groups on a
//! broker, with group commit of their syncs) and the peer transport.

pub mod raft_log;
