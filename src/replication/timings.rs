//! Where a broker's replication time goes: the driver records how long its
//! rounds take, how long each group commit (fsync) takes, and how late its
//! ticks fire (a late tick means the driver task was busy or not scheduled).
//! `DescribeBrokerStats` reports them, and `weir bench` resets them before a
//! run and prints them after it, so a latency spike in a benchmark can be
//! put down to the driver, the disk or neither.
//!
//! Durations come from tokio's clock, so under simulation they are the
//! simulated durations (a group commit there takes none).

use hdrhistogram::Histogram;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Longest duration recorded exactly; longer ones are recorded as this.
/// An hour is far past any round or fsync that is not a hang.
const RECORD_US_MAX: u64 = 3_600_000_000;

/// One duration's distribution, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// The driver's timings since they were last reset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// One pass of the driver loop: handling what woke it and the round
    /// after (everything but the group commit's own fsync).
    pub round: Summary,
    /// One group commit, from handing it to the persister to hearing back.
    pub group_commit: Summary,
    /// How long after its due time each tick was seen.
    pub tick_late: Summary,
}

struct Histograms {
    round: Histogram<u64>,
    group_commit: Histogram<u64>,
    tick_late: Histogram<u64>,
}

/// Shared between the driver, which records, and whoever reports.
#[derive(Clone)]
pub struct Timings {
    inner: Arc<Mutex<Histograms>>,
}

impl std::fmt::Debug for Timings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timings").finish_non_exhaustive()
    }
}

impl Default for Timings {
    fn default() -> Self {
        Self::new()
    }
}

fn histogram() -> Histogram<u64> {
    // Three significant digits from 1 us to an hour: a few tens of KiB.
    match Histogram::new_with_bounds(1, RECORD_US_MAX, 3) {
        Ok(h) => h,
        Err(e) => panic!("fixed histogram bounds rejected: {e}"),
    }
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    h.saturating_record(us.clamp(1, RECORD_US_MAX));
}

fn summary(h: &Histogram<u64>) -> Summary {
    if h.is_empty() {
        return Summary::default();
    }
    Summary {
        count: h.len(),
        p50_us: h.value_at_quantile(0.5),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
    }
}

impl Timings {
    pub fn new() -> Timings {
        Timings {
            inner: Arc::new(Mutex::new(Histograms {
                round: histogram(),
                group_commit: histogram(),
                tick_late: histogram(),
            })),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Histograms) -> R) -> R {
        // A panic while recording leaves plain counts behind: still usable.
        let mut h = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut h)
    }

    pub fn round(&self, d: Duration) {
        self.with(|h| record(&mut h.round, d));
    }

    pub fn group_commit(&self, d: Duration) {
        self.with(|h| record(&mut h.group_commit, d));
    }

    pub fn tick_late(&self, d: Duration) {
        self.with(|h| record(&mut h.tick_late, d));
    }

    /// The timings so far; with `reset`, starts counting afresh.
    pub fn report(&self, reset: bool) -> Report {
        self.with(|h| {
            let r = Report {
                round: summary(&h.round),
                group_commit: summary(&h.group_commit),
                tick_late: summary(&h.tick_late),
            };
            if reset {
                h.round.reset();
                h.group_commit.reset();
                h.tick_late.reset();
            }
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_percentiles_and_resets() {
        let t = Timings::new();
        for us in 1..=1000u64 {
            t.round(Duration::from_micros(us));
        }
        t.group_commit(Duration::from_millis(7));
        let r = t.report(true);
        assert_eq!(r.round.count, 1000);
        assert!((499..=501).contains(&r.round.p50_us), "{r:?}");
        assert!((989..=991).contains(&r.round.p99_us), "{r:?}");
        assert!((999..=1001).contains(&r.round.max_us), "{r:?}");
        assert_eq!(r.group_commit.count, 1);
        assert!((6995..=7005).contains(&r.group_commit.max_us), "{r:?}");
        assert_eq!(r.tick_late, Summary::default());
        // Reset: nothing left.
        assert_eq!(t.report(false), Report::default());
    }

    #[test]
    fn out_of_range_durations_are_clamped_not_lost() {
        let t = Timings::new();
        t.tick_late(Duration::ZERO);
        t.tick_late(Duration::from_secs(100_000));
        let r = t.report(false).tick_late;
        assert_eq!(r.count, 2);
        assert!(r.max_us >= RECORD_US_MAX - RECORD_US_MAX / 1000, "{r:?}");
    }
}
