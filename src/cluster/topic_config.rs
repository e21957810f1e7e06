//! Topic configs, named as Kafka names them, and their defaults.
//!
//! A topic stores only its overrides (what the user set); [`TopicConfig`]
//! is the validated result with defaults filled in. The defaults are
//! Kafka's, except `segment.bytes`: Weir uses the storage layer's 128 MiB
//! rather than Kafka's 1 GiB, because a partition replica recovers by
//! re-scanning its active segment and retention frees space a segment at
//! a time, and every partition here is a Raft group, so there are many.

use super::ClusterError;
use crate::proto::ErrorCode;
use crate::storage::config::SEGMENT_BYTES_MAX;
use crate::storage::LogConfig;
use std::collections::BTreeMap;

pub const RETENTION_MS: &str = "retention.ms";
pub const RETENTION_BYTES: &str = "retention.bytes";
pub const SEGMENT_BYTES: &str = "segment.bytes";
pub const SEGMENT_MS: &str = "segment.ms";
pub const MAX_MESSAGE_BYTES: &str = "max.message.bytes";
pub const CLEANUP_POLICY: &str = "cleanup.policy";

/// Every topic config Weir knows, sorted.
pub const KEYS: [&str; 6] = [
    CLEANUP_POLICY,
    MAX_MESSAGE_BYTES,
    RETENTION_BYTES,
    RETENTION_MS,
    SEGMENT_BYTES,
    SEGMENT_MS,
];

/// Seven days, as Kafka.
pub const DEFAULT_RETENTION_MS: i64 = 604_800_000;
/// No size limit, as Kafka.
pub const DEFAULT_RETENTION_BYTES: i64 = -1;
/// Weir's 128 MiB (see the module comment), not Kafka's 1 GiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 134_217_728;
/// Seven days, as Kafka.
pub const DEFAULT_SEGMENT_MS: i64 = 604_800_000;
/// Kafka's 1 MiB plus the 12-byte log overhead of its old formats.
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 1_048_588;
/// The smallest segment the storage layer accepts.
pub const SEGMENT_BYTES_MIN: u64 = 1024;
/// The smallest batch limit the storage layer accepts.
pub const MAX_MESSAGE_BYTES_MIN: u64 = 128;

/// Values echoed in error messages are cut to this many characters, so a
/// hostile request cannot make the error huge.
const SHOWN_CHARS_MAX: usize = 64;

/// What happens to old segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CleanupPolicy {
    /// Delete whole segments past retention (Kafka's `delete`).
    Delete,
}

impl CleanupPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
        }
    }
}

/// A topic's validated settings, defaults included. Built only by
/// [`TopicConfig::from_overrides`] (or `default()`), so it always maps to a
/// `LogConfig` that the storage layer accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicConfig {
    retention_ms: i64,
    retention_bytes: i64,
    segment_bytes: u64,
    segment_ms: i64,
    max_message_bytes: u64,
    cleanup_policy: CleanupPolicy,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            retention_ms: DEFAULT_RETENTION_MS,
            retention_bytes: DEFAULT_RETENTION_BYTES,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            segment_ms: DEFAULT_SEGMENT_MS,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            cleanup_policy: CleanupPolicy::Delete,
        }
    }
}

impl TopicConfig {
    /// Validates a topic's overrides and fills in the defaults. The error
    /// names the first bad key (in key order), its value and what is
    /// accepted.
    ///
    /// `max.message.bytes` must fit in a segment. When it is not set, its
    /// default is lowered to `segment.bytes` if that is smaller, so a small
    /// `segment.bytes` alone is accepted; when set, it must fit.
    pub fn from_overrides(overrides: &BTreeMap<String, String>) -> Result<Self, ClusterError> {
        let mut config = TopicConfig::default();
        for (key, value) in overrides {
            config.set(key, value)?;
        }
        match overrides.get(MAX_MESSAGE_BYTES) {
            Some(value) if config.max_message_bytes > config.segment_bytes => {
                Err(config.max_message_bytes_error(value))
            }
            Some(_) => Ok(config),
            None => {
                config.max_message_bytes = config.max_message_bytes.min(config.segment_bytes);
                Ok(config)
            }
        }
    }

    /// The storage layer's settings for a partition of this topic.
    pub fn to_log_config(&self) -> LogConfig {
        LogConfig {
            segment_bytes: self.segment_bytes,
            segment_ms: self.segment_ms,
            retention_ms: self.retention_ms,
            retention_bytes: self.retention_bytes,
            // Not a topic config in Weir (yet): the storage default.
            index_interval_bytes: LogConfig::default().index_interval_bytes,
            // At most SEGMENT_BYTES_MAX (u32::MAX), so it fits a usize on
            // every platform Weir builds for; saturate rather than panic.
            max_batch_bytes: usize::try_from(self.max_message_bytes).unwrap_or(usize::MAX),
            // A broker setting, not a topic's: the backend sets it.
            page_cache_keep_bytes: LogConfig::default().page_cache_keep_bytes,
        }
    }

    /// Every config with its effective value, for describe.
    pub fn effective(&self) -> BTreeMap<String, String> {
        [
            (CLEANUP_POLICY, self.cleanup_policy.as_str().to_string()),
            (MAX_MESSAGE_BYTES, self.max_message_bytes.to_string()),
            (RETENTION_BYTES, self.retention_bytes.to_string()),
            (RETENTION_MS, self.retention_ms.to_string()),
            (SEGMENT_BYTES, self.segment_bytes.to_string()),
            (SEGMENT_MS, self.segment_ms.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    pub fn retention_ms(&self) -> i64 {
        self.retention_ms
    }

    pub fn retention_bytes(&self) -> i64 {
        self.retention_bytes
    }

    pub fn segment_bytes(&self) -> u64 {
        self.segment_bytes
    }

    pub fn segment_ms(&self) -> i64 {
        self.segment_ms
    }

    pub fn max_message_bytes(&self) -> u64 {
        self.max_message_bytes
    }

    pub fn cleanup_policy(&self) -> CleanupPolicy {
        self.cleanup_policy
    }

    /// Parses one override into `self`; the cross-key check is the caller's.
    fn set(&mut self, key: &str, value: &str) -> Result<(), ClusterError> {
        match key {
            RETENTION_MS => self.retention_ms = parse_retention_ms(value)?,
            RETENTION_BYTES => self.retention_bytes = parse_retention_bytes(value)?,
            SEGMENT_BYTES => self.segment_bytes = parse_segment_bytes(value)?,
            SEGMENT_MS => self.segment_ms = parse_segment_ms(value)?,
            MAX_MESSAGE_BYTES => self.max_message_bytes = self.parse_max_message_bytes(value)?,
            CLEANUP_POLICY => self.cleanup_policy = parse_cleanup_policy(value)?,
            _ => return Err(unknown_key(key)),
        }
        Ok(())
    }

    /// Only the lower bound here: the upper bound is `segment.bytes`, which
    /// may come later in the map.
    fn parse_max_message_bytes(&self, value: &str) -> Result<u64, ClusterError> {
        match value.trim().parse::<u64>() {
            Ok(n) if n >= MAX_MESSAGE_BYTES_MIN => Ok(n),
            _ => Err(self.max_message_bytes_error(value)),
        }
    }

    fn max_message_bytes_error(&self, value: &str) -> ClusterError {
        invalid(format!(
            "{MAX_MESSAGE_BYTES} must be an integer of bytes between {MAX_MESSAGE_BYTES_MIN} \
             and segment.bytes ({}), got {}",
            self.segment_bytes,
            shown(value)
        ))
    }
}

/// The overrides that result from an alter: `set` applied, then `delete`
/// removed (deleting an override that is not set is fine, as in Kafka).
/// Keys must be known, and a key cannot be both set and deleted. The
/// result is validated as a whole.
pub fn altered_overrides(
    overrides: &BTreeMap<String, String>,
    set: &BTreeMap<String, String>,
    delete: &[String],
) -> Result<BTreeMap<String, String>, ClusterError> {
    let mut result = overrides.clone();
    for (key, value) in set {
        if delete.contains(key) {
            return Err(invalid(format!(
                "config {} is both set and deleted; do one or the other",
                shown(key)
            )));
        }
        result.insert(key.clone(), value.clone());
    }
    for key in delete {
        check_key(key)?;
        result.remove(key);
    }
    TopicConfig::from_overrides(&result)?;
    Ok(result)
}

/// Errors unless `key` is a topic config Weir knows.
pub fn check_key(key: &str) -> Result<(), ClusterError> {
    if KEYS.contains(&key) {
        Ok(())
    } else {
        Err(unknown_key(key))
    }
}

fn parse_retention_ms(value: &str) -> Result<i64, ClusterError> {
    parse_at_least(value, -1).ok_or_else(|| {
        invalid(format!(
            "{RETENTION_MS} must be -1 or a non-negative integer of milliseconds, got {}",
            shown(value)
        ))
    })
}

fn parse_retention_bytes(value: &str) -> Result<i64, ClusterError> {
    parse_at_least(value, -1).ok_or_else(|| {
        invalid(format!(
            "{RETENTION_BYTES} must be -1 (no limit) or a non-negative integer of bytes, got {}",
            shown(value)
        ))
    })
}

fn parse_segment_ms(value: &str) -> Result<i64, ClusterError> {
    parse_at_least(value, 1).ok_or_else(|| {
        invalid(format!(
            "{SEGMENT_MS} must be a positive integer of milliseconds, got {}",
            shown(value)
        ))
    })
}

fn parse_segment_bytes(value: &str) -> Result<u64, ClusterError> {
    match value.trim().parse::<u64>() {
        Ok(n) if (SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&n) => Ok(n),
        _ => Err(invalid(format!(
            "{SEGMENT_BYTES} must be an integer of bytes between {SEGMENT_BYTES_MIN} \
             and {SEGMENT_BYTES_MAX}, got {}",
            shown(value)
        ))),
    }
}

/// Kafka takes a list (`compact,delete`); only `delete` alone is supported.
fn parse_cleanup_policy(value: &str) -> Result<CleanupPolicy, ClusterError> {
    let policies: Vec<&str> = value.split(',').map(str::trim).collect();
    if policies.iter().all(|p| *p == "delete") {
        Ok(CleanupPolicy::Delete)
    } else if policies.iter().all(|p| *p == "delete" || *p == "compact") {
        Err(invalid(format!(
            "{CLEANUP_POLICY} {} is not supported yet: compaction is not \
             implemented; use {CLEANUP_POLICY}=delete",
            shown(value)
        )))
    } else {
        Err(invalid(format!(
            "{CLEANUP_POLICY} must be 'delete' ('compact' is not supported yet), got {}",
            shown(value)
        )))
    }
}

/// Kafka trims config values, so " 5" is 5.
fn parse_at_least(value: &str, min: i64) -> Option<i64> {
    value.trim().parse::<i64>().ok().filter(|n| *n >= min)
}

fn unknown_key(key: &str) -> ClusterError {
    // A common slip is the Java property spelled with another separator.
    let normalized = key.to_ascii_lowercase().replace(['_', '-'], ".");
    let hint = match KEYS.iter().find(|k| **k == normalized) {
        Some(k) => format!("; did you mean '{k}'?"),
        None => String::new(),
    };
    invalid(format!(
        "unknown topic config {}{hint} (Weir supports {})",
        shown(key),
        KEYS.join(", ")
    ))
}

fn invalid(message: String) -> ClusterError {
    ClusterError::new(ErrorCode::InvalidConfig, message)
}

/// `value` quoted for an error message: escaped, and cut if long.
pub(crate) fn shown(value: &str) -> String {
    let escaped: String = value.escape_debug().collect();
    match escaped.char_indices().nth(SHOWN_CHARS_MAX) {
        Some((cut, _)) => format!("'{}...' ({} bytes)", &escaped[..cut], value.len()),
        None => format!("'{escaped}'"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overrides(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<TopicConfig, ClusterError> {
        TopicConfig::from_overrides(&overrides(pairs))
    }

    fn error(pairs: &[(&str, &str)]) -> String {
        let e = parse(pairs).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidConfig);
        e.message
    }

    #[test]
    fn defaults() {
        let c = parse(&[]).unwrap();
        assert_eq!(c, TopicConfig::default());
        let effective = c.effective();
        let expected = overrides(&[
            ("cleanup.policy", "delete"),
            ("max.message.bytes", "1048588"),
            ("retention.bytes", "-1"),
            ("retention.ms", "604800000"),
            ("segment.bytes", "134217728"),
            ("segment.ms", "604800000"),
        ]);
        assert_eq!(effective, expected);
        let keys: Vec<&str> = effective.keys().map(String::as_str).collect();
        assert_eq!(keys, KEYS);
    }

    #[test]
    fn defaults_agree_with_storage() {
        let log = TopicConfig::default().to_log_config();
        let storage = LogConfig::default();
        assert_eq!(log.segment_bytes, storage.segment_bytes);
        assert_eq!(log.segment_ms, storage.segment_ms);
        assert_eq!(log.retention_ms, storage.retention_ms);
        assert_eq!(log.retention_bytes, storage.retention_bytes);
        assert_eq!(log.index_interval_bytes, storage.index_interval_bytes);
        assert_eq!(log.max_batch_bytes, 1_048_588);
        log.validate().unwrap();
    }

    #[test]
    fn overrides_reach_the_log_config() {
        let c = parse(&[
            ("retention.ms", "-1"),
            ("retention.bytes", "1000000"),
            ("segment.bytes", "1048576"),
            ("segment.ms", "60000"),
            ("max.message.bytes", "4096"),
            ("cleanup.policy", "delete"),
        ])
        .unwrap();
        let log = c.to_log_config();
        assert_eq!(log.retention_ms, -1);
        assert_eq!(log.retention_bytes, 1_000_000);
        assert_eq!(log.segment_bytes, 1_048_576);
        assert_eq!(log.segment_ms, 60_000);
        assert_eq!(log.max_batch_bytes, 4096);
        log.validate().unwrap();
        assert_eq!(c.effective()["retention.ms"], "-1");
    }

    #[test]
    fn bad_values_name_key_value_and_range() {
        assert_eq!(
            error(&[("retention.ms", "abc")]),
            "retention.ms must be -1 or a non-negative integer of milliseconds, got 'abc'"
        );
        assert_eq!(
            error(&[("retention.ms", "-2")]),
            "retention.ms must be -1 or a non-negative integer of milliseconds, got '-2'"
        );
        assert_eq!(
            error(&[("retention.bytes", "1.5")]),
            "retention.bytes must be -1 (no limit) or a non-negative integer of bytes, got '1.5'"
        );
        assert_eq!(
            error(&[("segment.ms", "0")]),
            "segment.ms must be a positive integer of milliseconds, got '0'"
        );
        assert_eq!(
            error(&[("segment.bytes", "1023")]),
            "segment.bytes must be an integer of bytes between 1024 and 4294967295, got '1023'"
        );
        assert_eq!(
            error(&[("segment.bytes", "4294967296")]),
            "segment.bytes must be an integer of bytes between 1024 and 4294967295, \
             got '4294967296'"
        );
        assert_eq!(
            error(&[("max.message.bytes", "127")]),
            "max.message.bytes must be an integer of bytes between 128 and segment.bytes \
             (134217728), got '127'"
        );
    }

    #[test]
    fn edge_values() {
        assert_eq!(parse(&[("retention.ms", "0")]).unwrap().retention_ms(), 0);
        assert_eq!(parse(&[("retention.ms", " 5 ")]).unwrap().retention_ms(), 5);
        let max = i64::MAX.to_string();
        assert_eq!(
            parse(&[("segment.ms", &max)]).unwrap().segment_ms(),
            i64::MAX
        );
        assert!(parse(&[("segment.ms", "9223372036854775808")]).is_err());
        assert!(parse(&[("retention.ms", "")]).is_err());
        assert!(parse(&[("retention.ms", "1e3")]).is_err());
        assert!(parse(&[("segment.bytes", "-1")]).is_err());
        let c = parse(&[
            ("segment.bytes", "4294967295"),
            ("max.message.bytes", "4294967295"),
        ]);
        c.unwrap().to_log_config().validate().unwrap();
        let c = parse(&[("segment.bytes", "1024"), ("max.message.bytes", "128")]);
        c.unwrap().to_log_config().validate().unwrap();
    }

    #[test]
    fn max_message_bytes_must_fit_a_segment() {
        // Unset: the default shrinks to the segment.
        let c = parse(&[("segment.bytes", "2048")]).unwrap();
        assert_eq!(c.max_message_bytes(), 2048);
        c.to_log_config().validate().unwrap();
        // Set: it must fit, whichever key comes first in the map.
        assert_eq!(
            error(&[("segment.bytes", "2048"), ("max.message.bytes", "4096")]),
            "max.message.bytes must be an integer of bytes between 128 and segment.bytes \
             (2048), got '4096'"
        );
        let c = parse(&[("segment.bytes", "4096"), ("max.message.bytes", "4096")]);
        assert_eq!(c.unwrap().max_message_bytes(), 4096);
    }

    #[test]
    fn cleanup_policy() {
        assert_eq!(
            parse(&[("cleanup.policy", "delete")])
                .unwrap()
                .cleanup_policy(),
            CleanupPolicy::Delete
        );
        let e = error(&[("cleanup.policy", "compact")]);
        assert!(e.contains("'compact' is not supported yet"), "{e}");
        let e = error(&[("cleanup.policy", "compact,delete")]);
        assert!(e.contains("not supported yet"), "{e}");
        assert_eq!(
            error(&[("cleanup.policy", "shred")]),
            "cleanup.policy must be 'delete' ('compact' is not supported yet), got 'shred'"
        );
    }

    #[test]
    fn unknown_keys() {
        let e = error(&[("min.insync.replicas", "2")]);
        assert_eq!(
            e,
            "unknown topic config 'min.insync.replicas' (Weir supports cleanup.policy, \
             max.message.bytes, retention.bytes, retention.ms, segment.bytes, segment.ms)"
        );
        let e = error(&[("retention_ms", "1")]);
        assert!(e.contains("did you mean 'retention.ms'?"), "{e}");
        assert!(check_key("segment.ms").is_ok());
        assert!(check_key("segment.msx").is_err());
    }

    #[test]
    fn shown_values_are_escaped_and_cut() {
        assert_eq!(shown("a\nb"), "'a\\nb'");
        let long = "x".repeat(10_000);
        let s = shown(&long);
        assert!(s.len() < 100, "{s}");
        assert!(s.ends_with("(10000 bytes)"), "{s}");
        // Multi-byte characters are cut on a boundary.
        assert!(shown(&"é".repeat(100)).contains("..."));
    }

    #[test]
    fn alter() {
        let base = overrides(&[("retention.ms", "1000"), ("segment.ms", "2000")]);
        let set = overrides(&[("retention.bytes", "5")]);
        let del = vec!["segment.ms".to_string(), "segment.bytes".to_string()];
        let r = altered_overrides(&base, &set, &del).unwrap();
        assert_eq!(
            r,
            overrides(&[("retention.ms", "1000"), ("retention.bytes", "5")])
        );

        let both = vec!["retention.bytes".to_string()];
        let e = altered_overrides(&base, &set, &both).unwrap_err();
        assert_eq!(
            e.message,
            "config 'retention.bytes' is both set and deleted; do one or the other"
        );
        let unknown = vec!["nope".to_string()];
        assert!(altered_overrides(&base, &set, &unknown).is_err());
        // The result is validated as a whole.
        let base = overrides(&[("max.message.bytes", "2000")]);
        let set = overrides(&[("segment.bytes", "1024")]);
        assert!(altered_overrides(&base, &set, &[]).is_err());
    }
}
