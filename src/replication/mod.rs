//! Replication: every partition is its own Raft group (tikv's raft-rs), and
//! the group's Raft log *is* the partition log.
//!
//! - [`raft_log`]: [`RaftLog`](raft_log::RaftLog), raft-rs's `Storage` over
//!   one replica's [`PartitionLog`](crate::storage::PartitionLog), its hard
//!   state and its configuration. Each Raft entry is one RecordBatch, written
//!   once per replica; Raft's own entries (a leader's no-op, configuration
//!   changes) are control batches.
//!
//! - [`driver`]: the multi-Raft driver: one Ready loop for every group on a
//!   broker, with group commit of their syncs and outgoing messages batched
//!   per destination broker.
//! - [`timings`]: how long the driver's rounds and group commits take and
//!   how late its ticks fire, for `DescribeBrokerStats` and `weir bench`.
//! - [`transport`]: the peer links that carry those batches, the reader of
//!   incoming peer connections, and what a broker learns from its peers
//!   (liveness, leaders of groups it does not host).
//! - [`raft_frame`]: the frames of Raft messages those links write, encoded
//!   by hand so that each message is written straight into its frame.

pub mod driver;
pub mod peer_input;
pub mod raft_frame;
pub mod raft_log;
pub mod timings;
pub mod transport;
