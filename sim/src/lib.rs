//! weir-sim: deterministic simulation of Weir clusters under turmoil.
//!
//! Modules:
//! - [`disk`]: [`SimDisk`], Weir's `Disk` on turmoil's per-host simulated
//!   filesystem, which loses unsynced data when a host crashes. Wrap it in
//!   `weir::io::FaultyDisk` to inject errors as well.
//! - [`net`]: [`SimNetwork`], Weir's `Network` on turmoil's simulated TCP.
//! - [`log_model`]: the partition log checked against an in-memory model,
//!   on any disk.
//! - [`cluster`]: one seeded run of a whole cluster under faults (the
//!   `weir-sim` binary), recording a [`history`] for the [`checker`]s;
//!   faults come from the [`nemesis`]; an admin client (`admin.rs`)
//!   creates a topic mid-run and carries out leadership transfers; [`rot`]
//!   flips bytes in a replica's log on the simulated disk.
//! - [`seeded`]: property tests replayable from a seed (`WEIR_TEST_SEED`).

mod admin;
pub mod checker;
pub mod cluster;
pub mod disk;
mod forge;
pub mod history;
pub mod log_model;
pub mod nemesis;
pub mod net;
pub mod rot;
pub mod seeded;

pub use disk::{SimDisk, SpaceHandle};
pub use net::SimNetwork;

/// The epoch time simulated runs start at (2023-11-14T22:13:20Z), so that
/// record timestamps and retention look like production's.
pub const SIM_EPOCH_MS: i64 = 1_700_000_000_000;

/// A broker clock for a turmoil host: the simulation's epoch plus the
/// simulated time elapsed so far, advancing with tokio's (simulated) time.
/// A host that restarts gets a later reading, as a real restart would.
pub fn sim_clock() -> weir::io::TokioClock {
    let elapsed_ms = turmoil::sim_elapsed().unwrap_or_default().as_millis() as i64;
    weir::io::TokioClock::starting_at(SIM_EPOCH_MS + elapsed_ms)
}

/// Moves tokio's process-wide task id counter to a multiple of 4, so that a
/// run does not depend on how many tasks earlier runs in this process
/// spawned.
///
/// Why: a current-thread runtime keeps its tasks in 4 lists chosen by task
/// id (`id & 3`), and when turmoil crashes a host it drops the host's tasks
/// list by list. Each dropped socket sends its close through the simulated
/// network, drawing from the seeded RNG, so the drop order is part of the
/// run. Ids count up across the whole process: without this, a seed run
/// after another (`--seeds 0..4`) gave a different trace than the same seed
/// run alone (`--seed 1`). Two simulations on two threads of one process
/// would still disturb each other, which is why `weir-sim --jobs` runs
/// seeds in worker processes.
pub fn align_tokio_task_ids() {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    // At most 4 spawns: each takes the next id.
    for _ in 0..4 {
        let task = rt.spawn(async {});
        let id: u64 = task.id().to_string().parse().unwrap_or(3);
        let _ = rt.block_on(task);
        if id % 4 == 3 {
            return;
        }
    }
}
