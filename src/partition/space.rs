//! The disk space reserve: produces are refused while the data directory's
//! filesystem has less than `storage_min_free_bytes` free, so that the
//! small writes a broker cannot do without (controller entries, Raft hard
//! states and votes, segment rolls of retention and deletes) still find
//! room, and the broker stays in the cluster while the disk is full.
//!
//! Free space is asked of the disk (statvfs) at most once per
//! [`REFRESH_MS`], and again once [`refresh_bytes`] have been accepted
//! since the last answer, so a produce costs an atomic add, not a system
//! call, and a burst of produces cannot overshoot the reserve by more than
//! that much. Freeing space (deleting a topic, lowering retention) is seen
//! within [`REFRESH_MS`]: writes come back without a restart.

use crate::io::{DiskRef, DiskSpace};
use crate::partition::PartitionError;
use crate::proto::ErrorCode;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a free-space answer is trusted.
pub const REFRESH_MS: u64 = 1_000;
/// The default reserve, capped at [`DEFAULT_FRACTION_DIVISOR`]th of the
/// filesystem (see [`default_min_free_bytes`]).
pub const DEFAULT_MIN_FREE_BYTES: u64 = 1 << 30;
/// The default reserve is at most 1/20 (5%) of the filesystem.
pub const DEFAULT_FRACTION_DIVISOR: u64 = 20;
/// The smallest reserve a broker accepts when one is set: what a restart,
/// a few controller entries and hard-state writes need at least.
pub const MIN_FREE_BYTES_MIN: u64 = 1 << 20;

/// The default reserve for a filesystem of `total_bytes`: 1 GiB (a
/// controller log and every hard state fit many times over, as Redpanda's
/// `storage_min_free_bytes` reasons), but at most 5% of the filesystem so
/// that a small disk (a test's tmpfs, a laptop partition) still takes
/// writes; never below [`MIN_FREE_BYTES_MIN`].
pub fn default_min_free_bytes(total_bytes: u64) -> u64 {
    (total_bytes / DEFAULT_FRACTION_DIVISOR).clamp(MIN_FREE_BYTES_MIN, DEFAULT_MIN_FREE_BYTES)
}

/// Bytes accepted between two free-space questions: an eighth of the
/// reserve, between 64 KiB and 16 MiB, so that what is accepted on a stale
/// answer eats at most an eighth of the reserve.
pub fn refresh_bytes(min_free_bytes: u64) -> u64 {
    (min_free_bytes / 8).clamp(64 * 1024, 16 * 1024 * 1024)
}

#[derive(Debug)]
struct State {
    /// The last answer (None: never asked, or the question failed).
    space: Option<DiskSpace>,
    asked_at: Option<tokio::time::Instant>,
    /// Bytes accepted since the last answer.
    accepted_bytes: u64,
}

/// The reserve check shared by every produce on a broker.
#[derive(Clone, Debug)]
pub struct SpaceGuard {
    disk: DiskRef,
    dir: PathBuf,
    min_free_bytes: u64,
    state: Arc<Mutex<State>>,
}

impl SpaceGuard {
    pub fn new(disk: DiskRef, dir: PathBuf, min_free_bytes: u64) -> Self {
        SpaceGuard {
            disk,
            dir,
            min_free_bytes,
            state: Arc::new(Mutex::new(State {
                space: None,
                asked_at: None,
                accepted_bytes: 0,
            })),
        }
    }

    pub fn min_free_bytes(&self) -> u64 {
        self.min_free_bytes
    }

    /// Takes `bytes` from the free space if the reserve stays whole, else
    /// refuses with OUT_OF_SPACE naming the directory and the free space.
    pub fn admit(&self, bytes: usize) -> Result<(), PartitionError> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = tokio::time::Instant::now();
        let stale = st.asked_at.is_none_or(|at| {
            now.saturating_duration_since(at) >= Duration::from_millis(REFRESH_MS)
        }) || st.accepted_bytes >= refresh_bytes(self.min_free_bytes);
        if stale {
            // A failed question leaves writes allowed: the reserve protects
            // against a full disk, and a disk that cannot say how full it is
            // will say so through the writes themselves.
            st.space = self.disk.space(&self.dir).ok();
            st.asked_at = Some(now);
            st.accepted_bytes = 0;
        }
        let Some(space) = st.space else {
            return Ok(());
        };
        let free = space.free_bytes.saturating_sub(st.accepted_bytes);
        if free.saturating_sub(bytes as u64) < self.min_free_bytes {
            return Err(PartitionError::new(
                ErrorCode::OutOfSpace,
                format!(
                    "the data directory {} has {free} bytes free, less than \
                     storage_min_free_bytes ({}) after this write: produces are refused \
                     until space is freed (delete a topic, lower its retention.ms or \
                     retention.bytes, or grow the disk); acknowledged records stay readable",
                    self.dir.display(),
                    self.min_free_bytes
                ),
            ));
        }
        st.accepted_bytes = st.accepted_bytes.saturating_add(bytes as u64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{Disk, DiskFile, OpenMode};
    use std::path::Path;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Debug, Default)]
    struct FakeDisk {
        free: AtomicU64,
        asked: AtomicU64,
    }

    impl Disk for FakeDisk {
        fn open(&self, _: &Path, _: OpenMode) -> std::io::Result<Box<dyn DiskFile>> {
            Err(std::io::ErrorKind::Unsupported.into())
        }
        fn create_dir_all(&self, _: &Path) -> std::io::Result<()> {
            Ok(())
        }
        fn list_dir(&self, _: &Path) -> std::io::Result<Vec<String>> {
            Ok(Vec::new())
        }
        fn rename(&self, _: &Path, _: &Path) -> std::io::Result<()> {
            Ok(())
        }
        fn remove_file(&self, _: &Path) -> std::io::Result<()> {
            Ok(())
        }
        fn remove_dir_all(&self, _: &Path) -> std::io::Result<()> {
            Ok(())
        }
        fn sync_dir(&self, _: &Path) -> std::io::Result<()> {
            Ok(())
        }
        fn exists(&self, _: &Path) -> bool {
            true
        }
        fn space(&self, _: &Path) -> std::io::Result<DiskSpace> {
            self.asked.fetch_add(1, Ordering::Relaxed);
            Ok(DiskSpace {
                free_bytes: self.free.load(Ordering::Relaxed),
                total_bytes: 1 << 30,
            })
        }
    }

    #[test]
    fn default_reserve_is_capped_for_small_disks() {
        assert_eq!(default_min_free_bytes(1 << 40), 1 << 30);
        assert_eq!(default_min_free_bytes(64 << 20), (64 << 20) / 20);
        assert_eq!(default_min_free_bytes(1 << 20), MIN_FREE_BYTES_MIN);
    }

    #[tokio::test(start_paused = true)]
    async fn refuses_below_the_reserve_and_recovers_when_space_is_freed() {
        let disk = Arc::new(FakeDisk::default());
        disk.free.store(12 << 20, Ordering::Relaxed);
        let guard = SpaceGuard::new(disk.clone(), "/data".into(), 8 << 20);
        // Writes that pass take their bytes from the disk.
        let write = |n: u64| {
            guard.admit(n as usize)?;
            disk.free.fetch_sub(n, Ordering::Relaxed);
            Ok::<(), PartitionError>(())
        };
        let mut accepted = 0u64;
        let refused = loop {
            match write(256 << 10) {
                Ok(()) => accepted += 256 << 10,
                Err(e) => break e,
            }
        };
        assert_eq!(refused.code, ErrorCode::OutOfSpace);
        assert!(refused.message.contains("/data"), "{}", refused.message);
        // Never into the reserve.
        assert!(accepted <= 4 << 20, "{accepted}");
        assert!(disk.free.load(Ordering::Relaxed) >= 8 << 20);
        // Still refused while nothing is freed.
        tokio::time::advance(Duration::from_millis(REFRESH_MS)).await;
        assert!(write(256 << 10).is_err());
        // The disk is asked again after the refresh interval: space freed
        // meanwhile lets writes in, without a restart.
        disk.free.store(100 << 20, Ordering::Relaxed);
        tokio::time::advance(Duration::from_millis(REFRESH_MS)).await;
        write(1 << 20).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn asks_the_disk_rarely() {
        let disk = Arc::new(FakeDisk::default());
        disk.free.store(1 << 40, Ordering::Relaxed);
        let guard = SpaceGuard::new(disk.clone(), "/data".into(), 8 << 20);
        for _ in 0..1000 {
            guard.admit(100).unwrap();
        }
        assert_eq!(disk.asked.load(Ordering::Relaxed), 1);
    }
}
