//! Benchmarks run by `weir bench`: they measure this machine's disk through
//! Weir's storage and through plain `std::fs`, so that the cost of the log
//! over the raw disk is a number rather than a guess.
//!
//! Unlike broker code, which takes the time from its caller so that the
//! simulator controls it, a benchmark reads the wall clock
//! (`std::time::Instant`) directly: measuring the real machine is its purpose.
//!
//! - [`log`]: `weir bench log`, the partition log's append and read
//!   throughput against raw writes with fsync and raw reads.
//! - [`client`]: `weir bench produce | consume | e2e`, a running cluster's
//!   throughput and latency through the client library.
//! - [`brokers`]: the brokers' Raft driver timings over a produce or e2e
//!   run, printed with its results.
//! - [`hiccup`]: the machine's own stalls during a run, as the client
//!   sees them.
//! - [`partitions`]: `weir bench partitions`, what many partitions cost a
//!   running cluster in CPU and memory, idle and under a light load.

pub mod amplification;
pub mod brokers;
pub mod client;
pub mod hiccup;
pub mod log;
pub mod partitions;

use std::fmt;
use std::time::Duration;

/// Bytes in a MiB, the unit of every size and throughput the benchmarks
/// report.
pub const MIB_BYTES: u64 = 1024 * 1024;

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// A table for people.
    Text,
    /// A JSON array of objects, one per configuration, for scripts.
    Json,
}

/// Why a benchmark could not run or finish: the message names the operation
/// and the file.
#[derive(Debug)]
pub struct BenchError(pub String);

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BenchError {}

/// Wraps an error with what was being done, for `map_err`.
pub(crate) fn context<E: fmt::Display>(what: impl Into<String>) -> impl FnOnce(E) -> BenchError {
    let what = what.into();
    move |e| BenchError(format!("{what}: {e}"))
}

/// The median of `values` (the mean of the middle two for an even count);
/// 0 for none. Robust against one slow run, which a mean is not.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// Throughput in MiB/s; 0 if no time passed (nothing measurable).
pub fn mib_per_s(bytes: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs == 0.0 {
        0.0
    } else {
        bytes as f64 / MIB_BYTES as f64 / secs
    }
}

/// Asks the kernel to drop clean pages from the page cache, so that the next
/// read comes from the disk. Needs root (and a writable /proc/sys, which some
/// containers lack); returns whether it worked. Only clean pages are dropped:
/// callers fsync what they wrote first.
pub fn drop_page_cache() -> bool {
    std::fs::write("/proc/sys/vm/drop_caches", b"1\n").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn throughput_in_mib() {
        assert_eq!(mib_per_s(2 * MIB_BYTES, Duration::from_secs(2)), 1.0);
        assert_eq!(mib_per_s(1, Duration::ZERO), 0.0);
    }
}
