//! weir-sim: deterministic simulation of Weir clusters under turmoil.
//!
//! Modules:
//! - [`disk`]: [`SimDisk`], Weir's `Disk` on turmoil's per-host simulated
//!   filesystem, which loses unsynced data when a host crashes. Wrap it in
//!   `weir::io::FaultyDisk` to inject errors as well.
//! - [`log_model`]: the partition log checked against an in-memory model,
//!   on any disk.

pub mod disk;
pub mod log_model;

pub use disk::SimDisk;
