//! The machine's own stalls during a run, measured as jHiccup does: a
//! thread of the benchmark client sleeps 1 ms at a time and records how
//! much later than asked it wakes. The client shares the machine with the
//! brokers, so a long hiccup here (the VM descheduled, the kernel stalled
//! on the disk, every core busy) delays the brokers too: a latency spike in
//! the run's figures that coincides with one is the machine's, not Weir's.

use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The sleep each sample asks for.
const SLEEP: Duration = Duration::from_millis(1);
/// Longest hiccup recorded exactly (an hour); longer ones are clamped.
const HICCUP_US_MAX: u64 = 3_600_000_000;

/// How late the sleeps woke, in ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hiccups {
    pub samples: u64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The running meter; [`Meter::stop`] ends it.
pub struct Meter {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Histogram<u64>>,
}

/// Starts the meter; None if the thread cannot be started (the run goes on
/// without it).
pub fn start() -> Option<Meter> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("weir-bench-hiccup".into())
        .spawn(move || measure(&flag))
        .ok()?;
    Some(Meter { stop, thread })
}

fn measure(stop: &AtomicBool) -> Histogram<u64> {
    let mut h = match Histogram::new_with_bounds(1, HICCUP_US_MAX, 3) {
        Ok(h) => h,
        Err(e) => panic!("fixed histogram bounds rejected: {e}"),
    };
    // Bounded by the run: the caller sets `stop` when it ends.
    while !stop.load(Ordering::Relaxed) {
        let asked = Instant::now();
        std::thread::sleep(SLEEP);
        h.saturating_record(late_us(asked.elapsed()));
    }
    h
}

/// Microseconds past the 1 ms asked for (at least 1, for the histogram).
fn late_us(slept: Duration) -> u64 {
    let late = slept.saturating_sub(SLEEP);
    u64::try_from(late.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, HICCUP_US_MAX)
}

impl Meter {
    pub fn stop(self) -> Option<Hiccups> {
        self.stop.store(true, Ordering::Relaxed);
        let h = self.thread.join().ok()?;
        Some(summary(&h))
    }
}

fn summary(h: &Histogram<u64>) -> Hiccups {
    let ms = |us: u64| us as f64 / 1000.0;
    Hiccups {
        samples: h.len(),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_is_what_exceeds_the_sleep() {
        assert_eq!(late_us(Duration::from_micros(1_050)), 50);
        assert_eq!(late_us(Duration::from_millis(201)), 200_000);
        // Woken early or on time: the histogram's floor.
        assert_eq!(late_us(Duration::from_micros(900)), 1);
    }

    #[test]
    fn a_stalled_meter_reports_the_stall() {
        let mut h = Histogram::new_with_bounds(1, HICCUP_US_MAX, 3).unwrap();
        for _ in 0..990 {
            h.record(late_us(Duration::from_micros(1_060))).unwrap();
        }
        for _ in 0..10 {
            h.record(late_us(Duration::from_millis(151))).unwrap();
        }
        let s = summary(&h);
        assert_eq!(s.samples, 1000);
        assert!((s.max_ms - 150.0).abs() < 0.2, "{s:?}");
        assert!(s.p99_ms < 0.1, "{s:?}");
    }

    #[test]
    fn the_meter_samples_until_stopped() {
        let meter = start().expect("a thread");
        std::thread::sleep(Duration::from_millis(50));
        let s = meter.stop().expect("a summary");
        assert!(s.samples > 0, "{s:?}");
    }
}
