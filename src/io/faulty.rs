//! Fault-injecting disk wrapper (being written).
use super::{Disk, DiskRef};
/// Fault probabilities.
#[derive(Clone, Debug, Default)]
pub struct FaultConfig;
/// A disk that injects faults.
#[derive(Debug)]
pub struct FaultyDisk {
    _inner: DiskRef,
}
const _: Option<&dyn Disk> = None;
