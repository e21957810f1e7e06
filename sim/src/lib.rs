//! weir-sim: deterministic simulation of Weir clusters under turmoil.
//!
//! Modules:
//! - [`disk`]: [`SimDisk`], Weir's `Disk` on turmoil's per-host simulated
//!   filesystem, which loses unsynced data when a host crashes. Wrap it in
//!   `weir::io::FaultyDisk` to inject errors as well.

pub mod disk;

pub use disk::SimDisk;
