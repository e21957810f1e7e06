//! The clock seam. Broker code never reads the wall clock directly: it asks
//! a [`Clock`] for milliseconds since the Unix epoch (for record timestamps
//! and time-based retention), and measures intervals with tokio's time,
//! which turmoil controls under simulation.

use std::fmt::Debug;
use std::sync::Arc;

/// Milliseconds since the Unix epoch, as the broker sees them.
pub trait Clock: Send + Sync + Debug + 'static {
    fn now_ms(&self) -> i64;
}

pub type ClockRef = Arc<dyn Clock>;

/// Epoch time that advances only with tokio's clock: the wall clock is read
/// once, at construction (in production), and every later reading adds
/// tokio's elapsed time. Under turmoil the base is a fixed instant, so runs
/// replay exactly.
#[derive(Debug)]
pub struct TokioClock {
    base_ms: i64,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// Starts at `base_ms` (epoch milliseconds) now.
    pub fn starting_at(base_ms: i64) -> Self {
        TokioClock {
            base_ms,
            start: tokio::time::Instant::now(),
        }
    }

    /// Starts at the machine's wall-clock time. For production only; the
    /// simulator uses [`TokioClock::starting_at`] with a fixed base.
    pub fn from_system_time() -> Self {
        let base_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Self::starting_at(base_ms)
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> i64 {
        self.base_ms + self.start.elapsed().as_millis() as i64
    }
}
