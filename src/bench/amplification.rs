//! Write amplification of a produce run, from the brokers' own counters:
//! bytes the broker processes caused to be written to storage (Linux
//! `/proc/self/io` `write_bytes`, via `DescribeBrokerStats`) over the bytes
//! the topic's partition logs grew by on every replica. Because each
//! partition's Raft log is its partition log, a record is written once per
//! replica; what remains above 1.0 is indexes, hard state, directory
//! updates and pages rewritten when a partly filled page is synced again.
//!
//! The counters cover whole processes: anything else the brokers write
//! during the run (other topics, retention) is counted too.

use crate::client::Admin;
use std::collections::BTreeMap;

/// The counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Storage write bytes by broker id.
    written: BTreeMap<u64, u64>,
    /// Bytes of the topic's partition logs, summed over every replica.
    log_bytes: u64,
}

/// What the run wrote.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Amplification {
    /// Bytes written to storage by all brokers.
    pub disk_bytes: u64,
    /// Bytes the topic's logs grew by, over every replica.
    pub log_bytes: u64,
}

impl Amplification {
    /// Disk bytes per byte of partition log (per replica); None when the
    /// logs did not grow.
    pub fn ratio(&self) -> Option<f64> {
        (self.log_bytes > 0).then(|| self.disk_bytes as f64 / self.log_bytes as f64)
    }
}

/// Reads the counters; None when any broker cannot say (not Linux, or
/// /proc/self/io unreadable), so that a partial sum is never reported.
pub async fn snapshot(admin: &Admin, topic: &str) -> Option<Snapshot> {
    let stats = admin.broker_stats(false).await.ok()?;
    let mut written = BTreeMap::new();
    for s in stats {
        written.insert(s.broker_id, s.storage_write_bytes?);
    }
    let dirs = admin.describe_log_dirs(&[topic.to_string()]).await.ok()?;
    if dirs.iter().any(|d| d.error.is_some()) {
        return None;
    }
    let log_bytes = dirs
        .iter()
        .flat_map(|d| d.partitions.iter())
        .filter(|p| p.topic == topic)
        .map(|p| p.size_bytes)
        .sum();
    Some(Snapshot { written, log_bytes })
}

/// The difference between two snapshots; None if the set of brokers
/// changed or a counter went backwards (a broker restarted).
pub fn between(before: &Snapshot, after: &Snapshot) -> Option<Amplification> {
    if before.written.keys().ne(after.written.keys()) {
        return None;
    }
    let mut disk_bytes = 0u64;
    for (id, end) in &after.written {
        disk_bytes += end.checked_sub(before.written[id])?;
    }
    Some(Amplification {
        disk_bytes,
        log_bytes: after.log_bytes.checked_sub(before.log_bytes)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(written: &[(u64, u64)], log_bytes: u64) -> Snapshot {
        Snapshot {
            written: written.iter().copied().collect(),
            log_bytes,
        }
    }

    #[test]
    fn ratio_of_disk_bytes_to_log_growth() {
        let a = between(
            &snap(&[(1, 100), (2, 50)], 1000),
            &snap(&[(1, 1200), (2, 1150)], 3000),
        )
        .unwrap();
        assert_eq!(a.disk_bytes, 2200);
        assert_eq!(a.log_bytes, 2000);
        assert_eq!(a.ratio(), Some(1.1));
    }

    #[test]
    fn restarts_and_membership_changes_give_no_figure() {
        // Broker 2's counter went backwards: it restarted mid-run.
        assert_eq!(
            between(&snap(&[(1, 10), (2, 50)], 0), &snap(&[(1, 20), (2, 5)], 9)),
            None
        );
        assert_eq!(
            between(&snap(&[(1, 10)], 0), &snap(&[(1, 20), (2, 5)], 9)),
            None
        );
        // Nothing logged: no ratio rather than infinity.
        let idle = between(&snap(&[(1, 10)], 5), &snap(&[(1, 20)], 5)).unwrap();
        assert_eq!(idle.ratio(), None);
    }
}
