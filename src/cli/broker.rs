//! `weir broker`: runs one broker on real files and TCP until Ctrl-C or
//! SIGTERM, then stops accepting, finishes in-flight writes, syncs and exits
//! with status 0.
//!
//! With no flags it starts a single-broker cluster: id 1, data in
//! `./weir-data`, clients on 127.0.0.1:7400, peers on 127.0.0.1:7401.
//! Settings come from `--config FILE` (lines of `key = value`; a `#` at the
//! start of a line or after whitespace starts a comment; a key may appear
//! once) and flags, flags winning. Every setting is checked against its
//! bounds before anything starts.

use super::logging;
use crate::broker::{self, BrokerConfig, Seams};
use crate::io::{RealDisk, TcpNetwork, TokioClock};
use crate::replication::driver::FsyncPolicy;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Flags of `weir broker`.
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerArgs {
    /// This broker's id (a positive integer, unique in the cluster).
    #[arg(long)]
    pub id: Option<u64>,
    /// Where this broker keeps its data.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address for clients, host:port.
    #[arg(long)]
    pub listen: Option<String>,
    /// Address for other brokers, host:port.
    #[arg(long)]
    pub peer_listen: Option<String>,
    /// The initial members by peer address, this broker included:
    /// id=host:port,id=host:port,...
    #[arg(long)]
    pub peers: Option<String>,
    /// A file of `key = value` settings (see "Broker settings" in the README).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// trace, debug, info, warn, error or critical.
    #[arg(long)]
    pub log_level: Option<String>,
    /// When writes are fsynced: always (before acknowledging, the default),
    /// interval:<ms>, or never (rely on replication and the OS, as Kafka
    /// does by default). See the README for what each risks.
    #[arg(long)]
    pub fsync: Option<String>,
}

/// Everything `weir broker` needs, resolved from defaults, file and flags.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub broker: BrokerConfig,
    pub log_level: slog::Level,
}

/// Keys the config file accepts.
const KEYS: &[&str] = &[
    "id",
    "data_dir",
    "listen",
    "advertised_listen",
    "peer_listen",
    "peers",
    "log_level",
    "tick_ms",
    "seed",
    "retention_check_ms",
    "max_connections",
    "max_in_flight_per_connection",
    "max_request_bytes_in_flight",
    "fsync",
    "quiesce_idle_groups",
    "group_commit_gap_us",
    "group_commit_busy_bytes_per_sec",
    "page_cache_keep_bytes",
    "max_peer_connections",
    "peer_read_timeout_ms",
    "storage_min_free_bytes",
    "request_read_timeout_ms",
    "connection_idle_timeout_ms",
    "scrub_bytes_per_sec",
    "scrub_interval_ms",
];

fn boolean(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!(
            "setting {key} must be true or false, got '{other}'"
        )),
    }
}

/// Where a comment starts in a config line: at a `#` that begins the line
/// or follows whitespace. A `#` inside a value (`a#b`) is part of it.
fn comment_start(line: &str) -> Option<usize> {
    let bytes = line.as_bytes();
    (0..bytes.len()).find(|&i| bytes[i] == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()))
}

/// Parses `key = value` lines; errors name the line. A repeated key is an
/// error naming both lines: one silently overriding the other hides typos
/// in long files. Never panics, whatever the text.
pub fn parse_config_file(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut lines_of: BTreeMap<String, usize> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = match comment_start(line) {
            Some(at) => &line[..at],
            None => line,
        }
        .trim();
        if line.is_empty() {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!(
                "line {}: expected `key = value`, got '{line}'",
                n + 1
            ));
        };
        let (k, v) = (k.trim(), v.trim().trim_matches('"'));
        if !KEYS.contains(&k) {
            return Err(format!(
                "line {}: unknown setting '{k}'; known: {}",
                n + 1,
                KEYS.join(", ")
            ));
        }
        if let Some(first) = lines_of.insert(k.to_string(), n + 1) {
            return Err(format!(
                "line {}: setting {k} is set twice (lines {first} and {}); keep one",
                n + 1,
                n + 1
            ));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// Checks a `host:port` address: a host and a port from 1 to 65535.
pub fn check_address(key: &str, v: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "setting {key} = '{v}' is not a valid address: {why}"
        ))
    };
    let Some((host, port)) = v.rsplit_once(':') else {
        return bad("it must be host:port, e.g. 127.0.0.1:7400");
    };
    if host.is_empty() {
        return bad("the host is empty");
    }
    match port.parse::<u16>() {
        Ok(p) if p >= 1 => Ok(()),
        _ => bad("the port must be a number from 1 to 65535"),
    }
}

/// Parses `id=host:port,id=host:port`.
pub fn parse_peers(s: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut peers = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('=').ok_or_else(|| {
            format!("peer '{part}' must look like id=host:port, e.g. 1=127.0.0.1:7401")
        })?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("peer id '{id}' is not a positive integer"))?;
        if id == 0 {
            return Err(format!(
                "setting peers: peer '{part}' has id 0; ids start at 1 (0 means 'none' in Raft)"
            ));
        }
        check_address("peers", addr.trim())?;
        if peers.insert(id, addr.trim().to_string()).is_some() {
            return Err(format!("peer id {id} appears twice in --peers"));
        }
    }
    if peers.is_empty() {
        return Err("--peers is empty; list id=host:port for every initial member".into());
    }
    Ok(peers)
}

fn number<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("setting {key} must be a non-negative integer, got '{v}'"))
}

/// An integer setting within `[min, max]`; the error names the key, the
/// value and the range.
fn bounded<T>(key: &str, v: &str, min: T, max: T) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    match v.parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        Ok(_) => Err(format!(
            "setting {key} = {v} is out of range: it must be from {min} to {max}"
        )),
        Err(_) => Err(format!(
            "setting {key} must be an integer from {min} to {max}, got '{v}'"
        )),
    }
}

/// Bounds of the settings (units last in the names). Zero periods are out:
/// a timer with a zero period panics tokio, and would spin if it did not.
pub const TICK_MS_MAX: u64 = 10_000;
pub const RETENTION_CHECK_MS_MAX: u64 = 86_400_000;
pub const CONNECTIONS_MAX_MAX: usize = 1_000_000;
pub const IN_FLIGHT_PER_CONNECTION_MAX_MAX: usize = 65_536;
pub const REQUEST_BYTES_IN_FLIGHT_MIN: usize = 1 << 20;
pub const REQUEST_BYTES_IN_FLIGHT_MAX_MAX: usize = 1 << 40;
pub const FSYNC_INTERVAL_MS_MAX: u64 = 3_600_000;
pub const GROUP_COMMIT_GAP_US_MAX: u64 = 10_000_000;
pub const PAGE_CACHE_KEEP_BYTES_MAX: u64 = 1 << 50;

/// Merges defaults, the config file and flags.
pub fn resolve(args: &BrokerArgs) -> Result<Resolved, String> {
    let mut file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
            parse_config_file(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => BTreeMap::new(),
    };
    let mut set = |key: &str, flag: Option<String>| {
        if let Some(v) = flag {
            file.insert(key.to_string(), v);
        }
    };
    set("id", args.id.map(|v| v.to_string()));
    set(
        "data_dir",
        args.data_dir.as_ref().map(|p| p.display().to_string()),
    );
    set("listen", args.listen.clone());
    set("peer_listen", args.peer_listen.clone());
    set("peers", args.peers.clone());
    set("log_level", args.log_level.clone());
    set("fsync", args.fsync.clone());
    let resolved = build(&file)?;
    let dir = &resolved.broker.data_dir;
    if dir.exists() && !dir.is_dir() {
        return Err(format!(
            "setting data_dir = '{}' is not a directory",
            dir.display()
        ));
    }
    Ok(resolved)
}

/// Builds the settings from `key = value` pairs, checking each against its
/// bounds. Pure (no file system): it never panics, whatever the pairs.
pub fn build(s: &BTreeMap<String, String>) -> Result<Resolved, String> {
    let get = |k: &str, default: &str| s.get(k).cloned().unwrap_or_else(|| default.to_string());
    let id: u64 = bounded("id", &get("id", "1"), 1, u64::MAX)?;
    let data_dir = get("data_dir", "./weir-data");
    if data_dir.is_empty() || data_dir.contains('\0') {
        return Err(format!(
            "setting data_dir = '{data_dir}' is not a usable path: it must be non-empty, without NUL"
        ));
    }
    let data_dir = PathBuf::from(data_dir);
    let listen = get("listen", "127.0.0.1:7400");
    check_address("listen", &listen)?;
    let peer_listen = get("peer_listen", "127.0.0.1:7401");
    check_address("peer_listen", &peer_listen)?;
    let mut broker = BrokerConfig::single(id, data_dir, &listen, &peer_listen);
    if let Some(p) = s.get("peers") {
        broker.peers = parse_peers(p)?;
    }
    broker.advertised_listen = s.get("advertised_listen").cloned();
    if let Some(a) = &broker.advertised_listen {
        check_address("advertised_listen", a)?;
    }
    if let Some(v) = s.get("tick_ms") {
        broker.driver.tick_ms = bounded("tick_ms", v, 1, TICK_MS_MAX)?;
    }
    broker.driver.seed = match s.get("seed") {
        Some(v) => number("seed", v)?,
        None => id,
    };
    if let Some(v) = s.get("fsync") {
        broker.driver.fsync = v.parse().map_err(|e| format!("setting {e}"))?;
        if let FsyncPolicy::IntervalMs(ms) = broker.driver.fsync {
            if ms > FSYNC_INTERVAL_MS_MAX {
                return Err(format!(
                    "setting fsync = {v} is out of range: the interval must be from 1 to \
                     {FSYNC_INTERVAL_MS_MAX} ms"
                ));
            }
        }
    }
    if let Some(v) = s.get("group_commit_gap_us") {
        broker.driver.group_commit_gap_us =
            bounded("group_commit_gap_us", v, 0, GROUP_COMMIT_GAP_US_MAX)?;
    }
    if let Some(v) = s.get("group_commit_busy_bytes_per_sec") {
        broker.driver.group_commit_busy_bytes_per_sec =
            number("group_commit_busy_bytes_per_sec", v)?;
    }
    if let Some(v) = s.get("page_cache_keep_bytes") {
        broker.page_cache_keep_bytes =
            bounded("page_cache_keep_bytes", v, 0, PAGE_CACHE_KEEP_BYTES_MAX)?;
    }
    if let Some(v) = s.get("storage_min_free_bytes") {
        broker.storage_min_free_bytes = Some(number("storage_min_free_bytes", v)?);
    }
    if let Some(v) = s.get("scrub_bytes_per_sec") {
        broker.scrub_bytes_per_sec = number("scrub_bytes_per_sec", v)?;
    }
    if let Some(v) = s.get("scrub_interval_ms") {
        // A month at most: a pass that waits longer leaves rot time to
        // reach a second replica before it is found.
        broker.scrub_interval_ms = bounded("scrub_interval_ms", v, 0, 30 * 24 * 3_600_000)?;
    }
    if let Some(v) = s.get("retention_check_ms") {
        broker.retention_check_ms = bounded("retention_check_ms", v, 1, RETENTION_CHECK_MS_MAX)?;
    }
    if let Some(v) = s.get("quiesce_idle_groups") {
        broker.driver.quiesce = boolean("quiesce_idle_groups", v)?;
    }
    if let Some(v) = s.get("max_connections") {
        broker.limits.connections_max = bounded("max_connections", v, 1, CONNECTIONS_MAX_MAX)?;
    }
    if let Some(v) = s.get("max_in_flight_per_connection") {
        broker.limits.in_flight_per_connection_max = bounded(
            "max_in_flight_per_connection",
            v,
            1,
            IN_FLIGHT_PER_CONNECTION_MAX_MAX,
        )?;
    }
    if let Some(v) = s.get("max_request_bytes_in_flight") {
        broker.limits.request_bytes_in_flight_max = bounded(
            "max_request_bytes_in_flight",
            v,
            REQUEST_BYTES_IN_FLIGHT_MIN,
            REQUEST_BYTES_IN_FLIGHT_MAX_MAX,
        )?;
    }
    if let Some(v) = s.get("max_peer_connections") {
        broker.peer_limits.connections_max = number("max_peer_connections", v)?;
    }
    if let Some(v) = s.get("peer_read_timeout_ms") {
        broker.peer_limits.read_timeout_ms = number("peer_read_timeout_ms", v)?;
    }
    if let Some(v) = s.get("request_read_timeout_ms") {
        broker.limits.request_read_timeout_ms = number("request_read_timeout_ms", v)?;
    }
    if let Some(v) = s.get("connection_idle_timeout_ms") {
        broker.limits.connection_idle_timeout_ms = number("connection_idle_timeout_ms", v)?;
    }
    broker.validate().map_err(|e| e.to_string())?;
    let log_level = logging::parse_level(&get("log_level", "info"))
        .map_err(|e| format!("setting log_level: {e}"))?;
    Ok(Resolved { broker, log_level })
}

/// Runs the broker until Ctrl-C or SIGTERM. Returns a one-line error if
/// it cannot start.
pub fn run(resolved: Resolved) -> Result<(), String> {
    let logger = logging::stderr_logger(resolved.log_level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let result = runtime.block_on(async move {
        let seams = Seams {
            disk: Arc::new(RealDisk),
            net: Arc::new(TcpNetwork::default()),
            clock: Arc::new(TokioClock::from_system_time()),
            logger: logger.clone(),
        };
        broker::run(resolved.broker, seams, shutdown_signal(logger))
            .await
            .map_err(|e| e.to_string())
    });
    // Whatever is still running (a blocked name lookup, say) must not keep
    // a stopped broker's process alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal(logger: slog::Logger) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            biased;
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    slog::info!(logger, "shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> BrokerArgs {
        BrokerArgs {
            id: None,
            data_dir: None,
            listen: None,
            peer_listen: None,
            peers: None,
            config: None,
            log_level: None,
            fsync: None,
        }
    }

    #[test]
    fn fsync_settings_parse() {
        use crate::replication::driver::FsyncPolicy;
        let mut a = args();
        assert_eq!(
            resolve(&a).unwrap().broker.driver.fsync,
            FsyncPolicy::Always
        );
        a.fsync = Some("interval:250".into());
        assert_eq!(
            resolve(&a).unwrap().broker.driver.fsync,
            FsyncPolicy::IntervalMs(250)
        );
        a.fsync = Some("never".into());
        assert_eq!(resolve(&a).unwrap().broker.driver.fsync, FsyncPolicy::Never);
        a.fsync = Some("sometimes".into());
        assert!(resolve(&a).unwrap_err().contains("interval:<ms>"));
    }

    #[test]
    fn group_commit_settings_parse() {
        let text = "group_commit_gap_us = 0\ngroup_commit_busy_bytes_per_sec = 1000\n";
        let r = build(&parse_config_file(text).unwrap()).unwrap();
        assert_eq!(r.broker.driver.group_commit_gap_us, 0);
        assert_eq!(r.broker.driver.group_commit_busy_bytes_per_sec, 1000);
        let r = build(&parse_config_file("page_cache_keep_bytes = 8388608\n").unwrap()).unwrap();
        assert_eq!(r.broker.page_cache_keep_bytes, 8 << 20);
        let bad = parse_config_file("group_commit_gap_us = soon\n").unwrap();
        assert!(build(&bad).unwrap_err().contains("group_commit_gap_us"));
    }

    #[test]
    fn server_limits_parse_and_are_checked() {
        let r = build(&parse_config_file("").unwrap()).unwrap();
        assert_eq!(r.broker.limits.request_bytes_in_flight_max, 16 << 20);
        let text = "max_request_bytes_in_flight = 16777216\nmax_connections = 10\n";
        let r = build(&parse_config_file(text).unwrap()).unwrap();
        assert_eq!(r.broker.limits.request_bytes_in_flight_max, 16 << 20);
        assert_eq!(r.broker.limits.connections_max, 10);
        let small = parse_config_file("max_request_bytes_in_flight = 4096\n").unwrap();
        assert!(build(&small).unwrap_err().contains("from 1048576"));
        let none = parse_config_file("max_in_flight_per_connection = 0\n").unwrap();
        assert!(build(&none).unwrap_err().contains("from 1 to"));
    }

    #[test]
    fn storage_min_free_bytes_parses_and_is_checked() {
        let r = build(&parse_config_file("").unwrap()).unwrap();
        assert_eq!(r.broker.storage_min_free_bytes, None);
        let r = build(&parse_config_file("storage_min_free_bytes = 8388608\n").unwrap()).unwrap();
        assert_eq!(r.broker.storage_min_free_bytes, Some(8 << 20));
        let small = parse_config_file("storage_min_free_bytes = 4096\n").unwrap();
        let e = build(&small).unwrap_err();
        assert!(
            e.contains("storage_min_free_bytes") && e.contains("1048576"),
            "{e}"
        );
        let bad = parse_config_file("storage_min_free_bytes = lots\n").unwrap();
        assert!(build(&bad).unwrap_err().contains("storage_min_free_bytes"));
    }

    #[test]
    fn scrub_rate_parses_and_is_checked() {
        let r = build(&parse_config_file("").unwrap()).unwrap();
        assert_eq!(r.broker.scrub_bytes_per_sec, 0);
        let r = build(&parse_config_file("scrub_bytes_per_sec = 0\n").unwrap()).unwrap();
        assert_eq!(r.broker.scrub_bytes_per_sec, 0);
        let fast = parse_config_file("scrub_bytes_per_sec = 5000000000\n").unwrap();
        let e = build(&fast).unwrap_err();
        assert!(
            e.contains("scrub_bytes_per_sec") && e.contains("5000000000"),
            "{e}"
        );
        let r = build(&parse_config_file("scrub_interval_ms = 1000\n").unwrap()).unwrap();
        assert_eq!(r.broker.scrub_interval_ms, 1000);
        let bad = parse_config_file("scrub_bytes_per_sec = fast\n").unwrap();
        assert!(build(&bad).unwrap_err().contains("scrub_bytes_per_sec"));
    }

    #[test]
    fn defaults_are_the_documented_single_broker() {
        let r = resolve(&args()).unwrap();
        assert_eq!(r.broker.page_cache_keep_bytes, 64 << 20);
        assert_eq!(r.broker.id, 1);
        assert_eq!(r.broker.listen, "127.0.0.1:7400");
        assert_eq!(r.broker.peer_listen, "127.0.0.1:7401");
        assert_eq!(r.broker.data_dir, PathBuf::from("./weir-data"));
        assert_eq!(
            r.broker.peers,
            BTreeMap::from([(1, "127.0.0.1:7401".to_string())])
        );
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.conf");
        std::fs::write(
            &path,
            "# a comment\nid = 2\npeers = 2=a:1,3=b:1\ntick_ms = 50\n",
        )
        .unwrap();
        let mut a = args();
        a.config = Some(path);
        a.id = Some(3);
        let r = resolve(&a).unwrap();
        assert_eq!(r.broker.id, 3);
        assert_eq!(r.broker.driver.tick_ms, 50);
        assert_eq!(r.broker.peers.len(), 2);
    }

    #[test]
    fn bad_settings_say_what_is_wrong() {
        let e = parse_config_file("id = 1\nbogus = 3\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("bogus"), "{e}");
        let e = parse_peers("1=a:1,x=b:2").unwrap_err();
        assert!(e.contains("'x'"), "{e}");
        let e = parse_peers("1=a:1,1=b:2").unwrap_err();
        assert!(e.contains("twice"), "{e}");
        let mut a = args();
        a.id = Some(2);
        a.peers = Some("1=127.0.0.1:7401".into());
        let e = resolve(&a).unwrap_err();
        assert!(e.contains("--peers must include this broker"), "{e}");
        let mut a = args();
        a.log_level = Some("loud".into());
        assert!(resolve(&a).unwrap_err().contains("loud"));
    }

    #[test]
    fn peer_limits_are_settings_with_bounds() {
        let settings = |text: &str| {
            let mut s = parse_config_file(text).unwrap();
            s.insert("peers".into(), "1=a:1,2=b:1,3=c:1".into());
            build(&s)
        };
        let r = settings("max_peer_connections = 8\npeer_read_timeout_ms = 5000\n").unwrap();
        assert_eq!(r.broker.peer_limits.connections_max, 8);
        assert_eq!(r.broker.peer_limits.read_timeout_ms, 5000);
        for (text, key) in [
            ("max_peer_connections = 0", "max_peer_connections is 0"),
            ("max_peer_connections = 1", "between 2"),
            ("max_peer_connections = 100000", "65536"),
            ("peer_read_timeout_ms = 0", "peer_read_timeout_ms is 0"),
            ("peer_read_timeout_ms = 999999999", "600000"),
            ("peer_read_timeout_ms = soon", "peer_read_timeout_ms"),
        ] {
            let e = settings(text).unwrap_err();
            assert!(e.contains(key), "{text}: {e}");
        }
    }
    /// Each setting, given a value outside its bounds, is refused with an
    /// error naming the key and the value.
    #[test]
    fn every_setting_is_bounded() {
        let bad = [
            ("id", "0"),
            ("id", "-1"),
            ("data_dir", ""),
            ("listen", "127.0.0.1"),
            ("listen", "127.0.0.1:0"),
            ("listen", "127.0.0.1:70000"),
            ("listen", ":7400"),
            ("advertised_listen", "example.com"),
            ("peer_listen", "127.0.0.1:x"),
            ("peers", "1=127.0.0.1"),
            ("peers", "0=127.0.0.1:7401"),
            ("log_level", "loud"),
            ("tick_ms", "0"),
            ("tick_ms", "100000"),
            ("seed", "x"),
            ("retention_check_ms", "0"),
            ("retention_check_ms", "99999999999"),
            ("max_connections", "0"),
            ("max_in_flight_per_connection", "0"),
            ("max_request_bytes_in_flight", "4096"),
            ("fsync", "interval:0"),
            ("fsync", "interval:99999999"),
            ("quiesce_idle_groups", "yes"),
            ("group_commit_gap_us", "99999999999"),
            ("group_commit_busy_bytes_per_sec", "-5"),
            ("page_cache_keep_bytes", "-1"),
            ("storage_min_free_bytes", "4096"),
            ("max_peer_connections", "0"),
            ("peer_read_timeout_ms", "0"),
            ("request_read_timeout_ms", "0"),
            ("connection_idle_timeout_ms", "5"),
            ("scrub_bytes_per_sec", "5000000000"),
            ("scrub_interval_ms", "99999999999"),
        ];
        for key in KEYS {
            assert!(
                bad.iter().any(|(k, _)| k == key),
                "no bad value tested for {key}"
            );
        }
        for (key, value) in bad {
            let text = format!("{key} = {value}\n");
            let e = parse_config_file(&text)
                .and_then(|s| build(&s))
                .expect_err(&text);
            // A peer list's error names the entry at fault, not the list.
            let value_named = e.contains(value) || key == "peers";
            assert!(e.contains(key) && value_named, "{text}: {e}");
        }
    }

    #[test]
    fn zero_periods_say_the_range() {
        let e = build(&parse_config_file("tick_ms = 0").unwrap()).unwrap_err();
        assert!(
            e.contains("tick_ms = 0") && e.contains("from 1 to 10000"),
            "{e}"
        );
        let e = build(&parse_config_file("retention_check_ms = 0").unwrap()).unwrap_err();
        assert!(
            e.contains("retention_check_ms = 0") && e.contains("from 1"),
            "{e}"
        );
    }

    #[test]
    fn a_repeated_key_is_an_error_naming_both_lines() {
        let e = parse_config_file("tick_ms = 50\n# x\ntick_ms = 60\n").unwrap_err();
        assert!(e.contains("tick_ms") && e.contains("lines 1 and 3"), "{e}");
    }

    #[test]
    fn a_hash_starts_a_comment_only_at_line_start_or_after_whitespace() {
        let s = parse_config_file("data_dir = /var/weir#1 # the data\n#id = 7\n  # x\n").unwrap();
        assert_eq!(s["data_dir"], "/var/weir#1");
        assert!(!s.contains_key("id"));
        let s = parse_config_file("id = 2#3").unwrap();
        assert_eq!(s["id"], "2#3");
        assert!(build(&s).unwrap_err().contains("'2#3'"));
    }

    #[test]
    fn odd_text_never_panics() {
        for text in [
            "=",
            "==",
            "#",
            "\u{0}",
            "id",
            "id =",
            "= 3",
            "é = é",
            "peers = ,,,",
            "peers = =",
            "peers = 1=:",
            "listen = [::1]:7400",
            "listen = ::",
            "fsync = interval:",
            "tick_ms = 18446744073709551616",
        ] {
            let _ = parse_config_file(text).and_then(|s| build(&s));
        }
        let s = parse_config_file("listen = [::1]:7400").unwrap();
        assert!(build(&s).is_ok());
    }
}
