//! The `rot` fault: bit rot in one replica's partition log, written straight
//! into a broker's simulated filesystem (turmoil's per-host fs, reached from
//! the simulation loop through the `FsHandle` each broker host captured at
//! its start), behind the broker's back, as a failing disk would.
//!
//! What it flips, and why there:
//! - one byte of a batch's records (after the 61-byte batch header), so
//!   inside the CRC-32C's range (attributes to the end) yet outside what the
//!   header parse reads: the damage a CRC finds, which the broker repairs
//!   (header damage in the active segment stops a partition by design, see
//!   README "Damaged data");
//! - in sealed segments, or in the active segment short of its last
//!   [`TAIL_BATCHES_SPARED`] batches (which may not be committed yet);
//! - in one replica per partition for the whole run: each partition's
//!   victim broker is drawn once, so a majority of a partition's replicas
//!   is never damaged, as real rot is rare and independent. The controller's
//!   log is never touched.
//!
//! The byte is written and synced (a kernel may write a dirty page back at
//! any time, so the sync only makes durable earlier what was written).

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use turmoil::fs::shim::std::fs as simfs;
use turmoil::fs::FsHandle;

/// Each broker's filesystem, captured by the broker host when it starts
/// (turmoil keeps a host's filesystem across crashes and restarts).
pub type FsHandles = Rc<RefCell<BTreeMap<u64, FsHandle>>>;

/// Where the brokers keep partition logs (`/data`, see `broker_config`).
const PARTITIONS_DIR: &str = "/data/partitions";
/// Kafka RecordBatch v2's header: records start here.
const HEADER_BYTES: u64 = 61;
/// The bytes of a batch that give its size (base offset and length).
const PREFIX_BYTES: u64 = 12;
/// The active segment's last batches are left alone: they may not be
/// committed yet.
const TAIL_BATCHES_SPARED: usize = 4;

/// One flip, for the trace.
#[derive(Debug)]
pub struct Flip {
    pub broker: u64,
    pub file: PathBuf,
    pub position: u64,
    pub base_offset: i64,
    pub sealed: bool,
    pub mask: u8,
}

/// Draws and applies one flip: a partition, its victim replica, one of that
/// replica's batches, one byte of its records. `victims` remembers each
/// partition directory's victim broker (drawn when first seen). `None` if
/// there is nothing to damage yet (no handles, no batches).
pub fn rot(
    handles: &BTreeMap<u64, FsHandle>,
    victims: &mut BTreeMap<String, u64>,
    rng: &mut ChaCha8Rng,
) -> Option<Flip> {
    // Which brokers hold each partition directory, in name order.
    let mut holders: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (b, h) in handles {
        let _in_host = h.enter();
        for name in list(Path::new(PARTITIONS_DIR)) {
            holders.entry(name).or_default().push(*b);
        }
    }
    for (dir, brokers) in &holders {
        if !victims.contains_key(dir) {
            if let Some(b) = brokers.choose(rng) {
                victims.insert(dir.clone(), *b);
            }
        }
    }
    let candidates: Vec<(&String, u64)> = holders
        .iter()
        .filter_map(|(dir, brokers)| {
            let v = victims[dir];
            brokers.contains(&v).then_some((dir, v))
        })
        .collect();
    let (dir, broker) = *candidates.choose(rng)?;
    let _in_host = handles.get(&broker)?.enter();
    let dir = Path::new(PARTITIONS_DIR).join(dir);
    let logs: Vec<String> = list(&dir)
        .into_iter()
        .filter(|n| n.ends_with(".log"))
        .collect();
    // (file, sealed, position, base offset, size) of every batch it may hit.
    let mut batches = Vec::new();
    for (i, name) in logs.iter().enumerate() {
        let sealed = i + 1 < logs.len();
        let path = dir.join(name);
        let mut found = scan(&path);
        if !sealed {
            found.truncate(found.len().saturating_sub(TAIL_BATCHES_SPARED));
        }
        batches.extend(
            found
                .into_iter()
                .filter(|(_, _, size)| *size > HEADER_BYTES)
                .map(|(pos, base, size)| (path.clone(), sealed, pos, base, size)),
        );
    }
    let (file, sealed, at, base_offset, size) = batches.choose(rng)?.clone();
    let position = at + rng.gen_range(HEADER_BYTES..size);
    let mask: u8 = rng.gen_range(1..=255);
    flip(&file, position, mask)?;
    Some(Flip {
        broker,
        file,
        position,
        base_offset,
        sealed,
        mask,
    })
}

/// The names in `dir`, sorted (turmoil lists in arbitrary order); none if
/// it cannot be listed.
fn list(dir: &Path) -> Vec<String> {
    let Ok(entries) = simfs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// (position, base offset, size) of each whole batch of a segment file,
/// from its start to the first that is not whole or not a v2 batch.
fn scan(path: &Path) -> Vec<(u64, i64, u64)> {
    let mut out = Vec::new();
    let Ok(file) = simfs::File::open(path) else {
        return out;
    };
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return out;
    };
    let mut at = 0u64;
    // Bounded: each pass moves past one batch of at least the header.
    while at + HEADER_BYTES <= len {
        let mut prefix = [0u8; (PREFIX_BYTES + 5) as usize];
        if file.read_exact_at(&mut prefix, at).is_err() {
            break;
        }
        let base = i64::from_be_bytes(prefix[0..8].try_into().expect("8 bytes"));
        let length = i32::from_be_bytes(prefix[8..12].try_into().expect("4 bytes"));
        let magic = prefix[16];
        let size = PREFIX_BYTES + length.max(0) as u64;
        if magic != 2 || size < HEADER_BYTES || at + size > len {
            break;
        }
        out.push((at, base, size));
        at += size;
    }
    out
}

/// XORs the byte of `path` at `position` with `mask`, and syncs it.
fn flip(path: &Path, position: u64, mask: u8) -> Option<()> {
    let file = simfs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .ok()?;
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, position).ok()?;
    byte[0] ^= mask;
    file.write_all_at(&byte, position).ok()?;
    file.sync_data().ok()
}
