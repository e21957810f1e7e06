//! Structured logs for the command line: slog to stderr, filtered by level.

use slog::Drain;

/// Parses a level name as `--log-level` takes it.
pub fn parse_level(s: &str) -> Result<slog::Level, String> {
    match s.to_ascii_lowercase().as_str() {
        "trace" => Ok(slog::Level::Trace),
        "debug" => Ok(slog::Level::Debug),
        "info" => Ok(slog::Level::Info),
        "warn" | "warning" => Ok(slog::Level::Warning),
        "error" => Ok(slog::Level::Error),
        "critical" => Ok(slog::Level::Critical),
        other => Err(format!(
            "unknown log level '{other}': use trace, debug, info, warn, error or critical"
        )),
    }
}

/// A logger writing human-readable lines to stderr at `level` and above.
/// Lines go through a bounded async queue; when it is full, lines are
/// dropped rather than slowing the broker down.
pub fn stderr_logger(level: slog::Level) -> slog::Logger {
    let decorator = slog_term::TermDecorator::new().stderr().build();
    let drain = slog_term::FullFormat::new(decorator).build().fuse();
    let drain = slog_async::Async::new(drain)
        .chan_size(4096)
        .overflow_strategy(slog_async::OverflowStrategy::Drop)
        .build()
        .fuse();
    let drain = drain.filter_level(level).fuse();
    slog::Logger::root(drain, slog::o!())
}

#[cfg(test)]
mod tests {
    use slog::Drain;
    use std::sync::{Arc, Mutex};

    /// Keeps the level of every record that reaches it.
    struct Levels(Arc<Mutex<Vec<slog::Level>>>);

    impl Drain for Levels {
        type Ok = ();
        type Err = slog::Never;
        fn log(&self, r: &slog::Record, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
            self.0.lock().unwrap().push(r.level());
            Ok(())
        }
    }

    /// Trace and debug records are compiled in (they were not: slog's
    /// default compile-time maximum is debug in debug builds and info in
    /// release builds), and the level filter passes exactly what it should.
    #[test]
    fn every_level_reaches_the_drain_and_the_filter_decides() {
        for (level, want) in [
            (slog::Level::Trace, 3),
            (slog::Level::Debug, 2),
            (slog::Level::Info, 1),
        ] {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let drain = Levels(seen.clone()).filter_level(level).fuse();
            let logger = slog::Logger::root(drain, slog::o!());
            slog::trace!(logger, "t");
            slog::debug!(logger, "d");
            slog::info!(logger, "i");
            assert_eq!(seen.lock().unwrap().len(), want, "{level:?}");
        }
    }

    /// Release builds take their maximum level from the `release_` features.
    #[test]
    fn release_builds_keep_trace_too() {
        let manifest = include_str!("../../Cargo.toml");
        let slog = manifest
            .lines()
            .find(|l| l.starts_with("slog ="))
            .expect("slog dependency");
        assert!(
            slog.contains("\"max_level_trace\"") && slog.contains("\"release_max_level_trace\""),
            "{slog}"
        );
    }
}
