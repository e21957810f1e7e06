//! Weir: an event streaming platform with Kafka's model, in which every
//! partition is its own Raft group.
//!
//! Layers, each using only those before it:
//! - [`proto`]: Weir's wire schemas, generated from `proto/` by prost.
//! - [`types`]: events and Kafka's RecordBatch v2 format.
//! - [`io`]: the disk interface and its real implementation, plus a
//!   fault-injecting wrapper.
//! - [`storage`]: segments, indexes, the partition log, hard state.
//! - [`bench`]: the `weir bench` benchmarks, measuring storage on this machine.

pub mod bench;
// DiskFile::len is a file's length, an io::Result, not a collection's size:
// an is_empty beside it would mean nothing. Clippy 1.95 flags it; allowed
// here until src/io (another engineer's) decides, rather than in that file.
#[allow(clippy::len_without_is_empty)]
pub mod io;
pub mod storage;
pub mod types;

/// Weir's wire schemas, generated from `proto/weir.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/weir.v1.rs"));
}
