//! Per-partition log settings, named as Kafka's topic configs are.

/// Settings of one partition log. Changing them takes effect on the next
/// append or retention pass, without reopening the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`: roll to a new segment when the active one would grow
    /// past this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the active segment's first append is older.
    pub segment_ms: i64,
    /// `retention.ms`: delete a segment once its newest record is older;
    /// negative means keep forever.
    pub retention_ms: i64,
    /// `retention.bytes`: delete the oldest segments while the log is larger;
    /// negative means no limit.
    pub retention_bytes: i64,
    /// `index.interval.bytes`: bytes between sparse index entries.
    pub index_interval_bytes: u64,
    /// `max.message.bytes`: the largest batch accepted.
    pub max_batch_bytes: usize,
    /// The broker setting `page_cache_keep_bytes`: when not 0, after each
    /// sync the log advises the OS to drop the cached pages of its
    /// segments but about this many bytes at their end, so that tailing
    /// consumers still read from memory and catching-up ones from the
    /// disk, and the log does not fill the machine's memory with pages
    /// nobody reads (see the README's memory section). 0: the OS decides,
    /// as in Kafka. Default [`PAGE_CACHE_KEEP_BYTES_DEFAULT`].
    pub page_cache_keep_bytes: u64,
}

/// The default of [`LogConfig::page_cache_keep_bytes`]: 64 MiB per
/// partition log. On a VM that returns freed memory to its host, a page
/// cache that keeps growing faults every new page in from the host, and a
/// busy broker's writes slow down with it: e2e at 983k records/s on three
/// brokers right after (b), alternating, p99 8.7-66.6 ms (3 of 7 over
/// 20 ms) with the OS deciding against 8.6-18.9 ms (7 of 7) with 64 MiB
/// kept (docs/performance.md, "30 Nov, sixth session"). 64 MiB keeps a
/// tailing or slightly lagging consumer in memory; one further behind reads
/// from the disk, as with Redpanda, which bypasses the page cache.
pub const PAGE_CACHE_KEEP_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;

/// Sparse index entries per segment at most (20 bytes each, kept in memory
/// and in the sealed segment's index file).
pub const INDEX_ENTRIES_MAX: u64 = 2_000_000;

/// Segments must stay addressable by the index's 32-bit positions.
pub const SEGMENT_BYTES_MAX: u64 = u32::MAX as u64;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 128 * 1024 * 1024,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            index_interval_bytes: 4096,
            max_batch_bytes: 1024 * 1024,
            page_cache_keep_bytes: PAGE_CACHE_KEEP_BYTES_DEFAULT,
        }
    }
}

impl LogConfig {
    /// Checks the settings; the error says which one is wrong and why.
    pub fn validate(&self) -> Result<(), String> {
        if self.segment_bytes < 1024 || self.segment_bytes > SEGMENT_BYTES_MAX {
            return Err(format!(
                "segment.bytes {} must be between 1024 and {SEGMENT_BYTES_MAX}",
                self.segment_bytes
            ));
        }
        if self.segment_ms < 1 {
            return Err(format!("segment.ms {} must be positive", self.segment_ms));
        }
        if self.index_interval_bytes == 0 {
            return Err("index.interval.bytes must be positive".into());
        }
        if self.segment_bytes / self.index_interval_bytes > INDEX_ENTRIES_MAX {
            return Err(format!(
                "index.interval.bytes {} is too small for segment.bytes {}: a segment's index \
                 would exceed {INDEX_ENTRIES_MAX} entries; raise index.interval.bytes",
                self.index_interval_bytes, self.segment_bytes
            ));
        }
        if self.max_batch_bytes < 128 || self.max_batch_bytes as u64 > self.segment_bytes {
            return Err(format!(
                "max.message.bytes {} must be between 128 and segment.bytes ({})",
                self.max_batch_bytes, self.segment_bytes
            ));
        }
        Ok(())
    }
}
