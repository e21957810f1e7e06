//! `weir broker`: runs one broker on real files and TCP until Ctrl-C or
//! SIGTERM, then stops accepting, finishes in-flight writes, syncs and exits
//! with status 0.
//!
//! With no flags it starts a single-broker cluster: id 1, data in
//! `./weir-data`, clients on 127.0.0.1:7400, peers on 127.0.0.1:7401.
//! Settings come from `--config FILE` (lines of `key = value`, `#` starts a
//! comment) and flags, flags winning.

use super::logging;
use crate::broker::{self, BrokerConfig, Seams};
use crate::io::{RealDisk, TcpNetwork, TokioClock};
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

/// Parses `key = value` lines; errors name the line.
pub fn parse_config_file(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
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
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
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
        if !addr.contains(':') {
            return Err(format!("peer address '{addr}' must be host:port"));
        }
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
    build(&file)
}

fn build(s: &BTreeMap<String, String>) -> Result<Resolved, String> {
    let get = |k: &str, default: &str| s.get(k).cloned().unwrap_or_else(|| default.to_string());
    let id: u64 = number("id", &get("id", "1"))?;
    let data_dir = PathBuf::from(get("data_dir", "./weir-data"));
    let listen = get("listen", "127.0.0.1:7400");
    let peer_listen = get("peer_listen", "127.0.0.1:7401");
    let mut broker = BrokerConfig::single(id, data_dir, &listen, &peer_listen);
    if let Some(p) = s.get("peers") {
        broker.peers = parse_peers(p)?;
    }
    broker.advertised_listen = s.get("advertised_listen").cloned();
    if let Some(v) = s.get("tick_ms") {
        broker.driver.tick_ms = number("tick_ms", v)?;
    }
    broker.driver.seed = match s.get("seed") {
        Some(v) => number("seed", v)?,
        None => id,
    };
    if let Some(v) = s.get("fsync") {
        broker.driver.fsync = v.parse()?;
    }
    if let Some(v) = s.get("group_commit_gap_us") {
        broker.driver.group_commit_gap_us = number("group_commit_gap_us", v)?;
    }
    if let Some(v) = s.get("group_commit_busy_bytes_per_sec") {
        broker.driver.group_commit_busy_bytes_per_sec =
            number("group_commit_busy_bytes_per_sec", v)?;
    }
    if let Some(v) = s.get("page_cache_keep_bytes") {
        broker.page_cache_keep_bytes = number("page_cache_keep_bytes", v)?;
    }
    if let Some(v) = s.get("scrub_bytes_per_sec") {
        broker.scrub_bytes_per_sec = number("scrub_bytes_per_sec", v)?;
    }
    if let Some(v) = s.get("scrub_interval_ms") {
        broker.scrub_interval_ms = number("scrub_interval_ms", v)?;
    }
    if let Some(v) = s.get("retention_check_ms") {
        broker.retention_check_ms = number("retention_check_ms", v)?;
    }
    if let Some(v) = s.get("quiesce_idle_groups") {
        broker.driver.quiesce = boolean("quiesce_idle_groups", v)?;
    }
    if let Some(v) = s.get("max_connections") {
        broker.limits.connections_max = number("max_connections", v)?;
    }
    if let Some(v) = s.get("max_in_flight_per_connection") {
        broker.limits.in_flight_per_connection_max = number("max_in_flight_per_connection", v)?;
    }
    if let Some(v) = s.get("max_request_bytes_in_flight") {
        broker.limits.request_bytes_in_flight_max = number("max_request_bytes_in_flight", v)?;
    }
    broker.validate().map_err(|e| e.to_string())?;
    let log_level = logging::parse_level(&get("log_level", "info"))?;
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
    runtime.block_on(async move {
        let seams = Seams {
            disk: Arc::new(RealDisk),
            net: Arc::new(TcpNetwork::default()),
            clock: Arc::new(TokioClock::from_system_time()),
            logger: logger.clone(),
        };
        broker::run(resolved.broker, seams, shutdown_signal(logger))
            .await
            .map_err(|e| e.to_string())
    })
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
        assert!(build(&small).unwrap_err().contains("at least 1048576"));
        let none = parse_config_file("max_in_flight_per_connection = 0\n").unwrap();
        assert!(build(&none).unwrap_err().contains("at least 1"));
    }

    #[test]
    fn scrub_rate_parses_and_is_checked() {
        let r = build(&parse_config_file("").unwrap()).unwrap();
        assert_eq!(r.broker.scrub_bytes_per_sec, 16 << 20);
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
}
