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
