//! Deliberate bugs for the simulator (`weir-sim --inject-bug NAME`), which
//! uses them to prove its checkers can fail. Compiled in only with the
//! `inject-bugs` feature; without it every check is a constant `false` the
//! optimizer removes.

/// acks=all is answered once the leader alone persisted the batch.
pub const ACK_BEFORE_COMMIT: u32 = 1;
/// Fetch serves records up to the log end, past the high watermark.
pub const FETCH_BEYOND_HW: u32 = 2;
/// Appends are never fsynced, yet Raft is told they are persisted (so
/// votes, append responses and acks go out for data a crash loses).
pub const SKIP_FSYNC: u32 = 4;
/// A follower stores each data batch it replicates re-encoded with its own
/// clock as the records' timestamp, instead of the leader's bytes: replicas
/// then differ byte for byte while keys, values and offsets agree.
pub const FOLLOWER_RESTAMPS: u32 = 8;
/// A segment is sealed (its index file written) without its data being
/// fsynced: the appends made just before a roll are acknowledged once the
/// next group commit syncs the new active segment, yet a power loss drops
/// them.
pub const SKIP_SEAL_SYNC: u32 = 16;
/// Raft messages from peers reach raft-rs unchecked (no sender, index or
/// commit checks; `replication::peer_input`), so a forged or hostile one
/// can make raft-rs panic, and the panic is not contained.
pub const TRUST_PEERS: u32 = 1 << 10;
/// Fetches serve batches without checking their CRCs, and the background
/// scrub checks nothing: a replica whose disk rotted serves the damaged
/// bytes, and nothing finds and repairs the damage unless sending entries
/// to a follower reads it.
pub const SKIP_CRC_CHECK: u32 = 1 << 11;

#[cfg(feature = "inject-bugs")]
mod imp {
    use std::sync::atomic::{AtomicU32, Ordering};

    /// The bugs switched on. Process-wide: the simulator sets it once per
    /// run, before any broker starts.
    static ON: AtomicU32 = AtomicU32::new(0);

    pub fn set(bits: u32) {
        ON.store(bits, Ordering::SeqCst);
    }

    pub fn on(bug: u32) -> bool {
        ON.load(Ordering::Relaxed) & bug != 0
    }
}

#[cfg(not(feature = "inject-bugs"))]
mod imp {
    pub fn set(_bits: u32) {}

    pub fn on(_bug: u32) -> bool {
        false
    }
}

/// Whether `bug` is switched on.
pub use imp::on;
/// Switches exactly the given bugs on (a bit set of the constants above).
pub use imp::set;
