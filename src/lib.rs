//! Weir: an event streaming platform with Kafka's model, in which every
//! partition is its own Raft group.
//!
//! Layers, each using only those before it:
//! - [`proto`]: Weir's wire schemas, generated from `proto/` by prost.
//! - [`types`]: events and Kafka's RecordBatch v2 format.
//! - [`io`]: the seams to the outside world: disk, network (and framing),
//!   clock; their real implementations, plus a fault-injecting disk.
//! - [`storage`]: segments, indexes, the partition log, hard state.
//! - [`replication`]: raft-rs groups on the partition log, the multi-Raft
//!   driver and the peer transport.
//! - [`partition`]: produce and fetch on a partition's group.
//! - [`cluster`]: the controller: topic configs, placement, the topic table
//!   (pure), the controller group's runtime and the backend that turns
//!   metadata into local partitions.
//! - [`server`]: client connections and request handlers.
//! - [`broker`]: wires it all together on injected seams.
//! - [`client`]: the native client.
//! - [`cli`]: what the `weir` command runs (the broker, logging).
//! - [`bugs`]: deliberate bugs the simulator injects (feature `inject-bugs`).
//! - [`bench`]: the `weir bench` benchmarks, measuring storage on this machine.
//! - [`fuzzing`]: what each fuzz target in `fuzz/` runs on an input.

pub mod bench;
pub mod broker;
pub mod bugs;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod fuzzing;
pub mod io;
pub mod partition;
pub mod replication;
pub mod server;
pub mod storage;
#[cfg(test)]
mod test_seed;
pub mod types;

/// Weir's wire schemas, generated from `proto/weir.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/weir.v1.rs"));
}
