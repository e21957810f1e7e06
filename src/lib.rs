//! Weir: an event streaming platform with Kafka's model, in which every
//! partition is its own Raft group.
//!
//! Layers, each using only those before it:
//! - [`proto`]: Weir's wire schemas, generated from `proto/` by prost.
//! - [`types`]: events and Kafka's RecordBatch v2 format.
//! - [`io`]: the disk interface and its real implementation, plus a
//!   fault-injecting wrapper.
//! - [`storage`]: segments, indexes, the partition log, hard state.
//! - [`cluster`]: the controller's metadata (pure): topic configs,
//!   placement, the topic table and the checks before proposing.

pub mod cluster;
pub mod io;
pub mod storage;
pub mod types;

/// Weir's wire schemas, generated from `proto/weir.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/weir.v1.rs"));
}
