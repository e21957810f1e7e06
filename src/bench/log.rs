//! `weir bench log`: how fast the partition log appends and reads compared
//! with the raw disk, on this machine.
//!
//! For each (record size, batch size) configuration and each run:
//!
//! - **log append**: batches of about `batch_bytes`, built before the clock
//!   starts, each appended and then synced, as the broker acknowledges a
//!   produce request only after `sync` returns.
//! - **raw write**: the same number of writes of the same bytes with
//!   `File::write_all` and `sync_data` after each, to a plain file in the
//!   same directory: the ceiling the log is measured against.
//! - **log read**: the log reopened and read back from offset 0 with
//!   `PartitionLog::read` in chunks of at most 1 MiB, four times.
//! - **raw read**: the raw file read back with `std::io::Read` in 1 MiB
//!   chunks, four times.
//!
//! The two writers take turns batch by batch, so that both sides of a ratio
//! see the disk in the same state (a virtual disk's fsync latency drifts by
//! several times within seconds). The readers cannot (readahead for one
//! would overlap the other's timing): they take turns going first, pass by
//! pass.
//!
//! The page cache is dropped before each read pass when the process may (root),
//! so that they come from the disk; otherwise, or with `--warm-reads`, they
//! come from the cache and the report says so. Each throughput reported is
//! the median over the runs, each ratio the median of the runs' ratios.

use super::{context, drop_page_cache, median, mib_per_s, BenchError, OutputFormat, MIB_BYTES};
use crate::io::{DiskRef, RealDisk};
use crate::storage::{LogConfig, PartitionLog};
use crate::types::{BatchBuilder, Event, RecordBatch};
use bytes::Bytes;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Bytes a batch needs beyond one record's value: the 61-byte batch header
/// and the record's framing (length, attributes, deltas, key and value
/// lengths, header count), with room to spare.
pub const BATCH_OVERHEAD_BYTES: usize = 100;

/// Read chunk for both the log (`max_bytes`) and the raw file.
pub const READ_CHUNK_BYTES: usize = MIB_BYTES as usize;

/// The log's batches are copied from the template this many bytes at a time,
/// before the clock starts, so that memory stays bounded whatever
/// `--total-mb`.
const CHUNK_BYTES: usize = 4 * MIB_BYTES as usize;

/// Times each run reads both sides back. Reading takes milliseconds where
/// writing with an fsync per batch takes seconds, and a single cold read of a
/// few MiB from a virtual disk varies by half either way: several passes
/// steady the figure at little cost.
const READ_PASSES: u32 = 4;

/// Largest accepted `--total-mb` (1 TiB): a bound that keeps byte counts far
/// from overflow.
const TOTAL_MB_MAX: u64 = 1024 * 1024;

/// Largest accepted `--repeat`.
const REPEAT_MAX: u32 = 1000;

/// The Raft term every benchmark batch is appended in.
const TERM: u64 = 1;

/// Targets from the storage issue: the log's fraction of raw throughput.
pub const APPEND_RATIO_TARGET: f64 = 0.70;
/// Batch size at which the append target applies.
pub const APPEND_TARGET_BATCH_BYTES: usize = 64 * 1024;
pub const READ_RATIO_TARGET: f64 = 0.80;

/// Flags of `weir bench log`.
#[derive(Clone, Debug, clap::Args)]
pub struct LogArgs {
    /// Directory to write in: a fresh subdirectory is created in it and
    /// removed afterwards. Default: one under the system temp dir.
    #[arg(long, value_name = "PATH")]
    pub dir: Option<PathBuf>,

    /// Sizes of each record's value in bytes, comma-separated.
    #[arg(long, value_name = "BYTES,...", value_delimiter = ',',
          value_parser = parse_record_size, default_value = "100,1024")]
    pub record_sizes: Vec<usize>,

    /// Target batch sizes in bytes, comma-separated: each batch holds as many
    /// records as fit. At least record size + 100, at most 1 MiB.
    #[arg(long, value_name = "BYTES,...", value_delimiter = ',',
          value_parser = parse_batch_bytes, default_value = "4096,16384,65536")]
    pub batch_bytes: Vec<usize>,

    /// MiB written per configuration and run (each of the log and the raw
    /// file gets this much).
    #[arg(long, value_name = "MB", value_parser = parse_total_mb, default_value_t = 16)]
    pub total_mb: u64,

    /// Runs per configuration; the median of each figure is reported.
    #[arg(long, value_name = "N", value_parser = parse_repeat, default_value_t = 3)]
    pub repeat: u32,

    /// Read with the page cache warm (as a consumer tailing the log does)
    /// instead of dropping it before each read.
    #[arg(long)]
    pub warm_reads: bool,

    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

fn parse_count(s: &str, what: &str) -> Result<u64, String> {
    s.trim()
        .parse::<u64>()
        .map_err(|_| format!("{what} must be a whole number, got {s:?}"))
}

fn parse_record_size(s: &str) -> Result<usize, String> {
    let n = parse_count(s, "record size in bytes")?;
    let max = batch_bytes_max() - BATCH_OVERHEAD_BYTES;
    if n < 1 || n > max as u64 {
        return Err(format!(
            "record size must be between 1 and {max} bytes (a batch is at most 1 MiB), got {n}"
        ));
    }
    Ok(n as usize)
}

fn parse_batch_bytes(s: &str) -> Result<usize, String> {
    let n = parse_count(s, "batch size in bytes")?;
    let max = batch_bytes_max();
    let min = 1 + BATCH_OVERHEAD_BYTES;
    if n < min as u64 || n > max as u64 {
        return Err(format!(
            "batch size must be between {min} and {max} bytes (the log's largest batch), got {n}"
        ));
    }
    Ok(n as usize)
}

fn parse_total_mb(s: &str) -> Result<u64, String> {
    let n = parse_count(s, "total MiB")?;
    if !(1..=TOTAL_MB_MAX).contains(&n) {
        return Err(format!(
            "total must be between 1 and {TOTAL_MB_MAX} MiB, got {n}"
        ));
    }
    Ok(n)
}

fn parse_repeat(s: &str) -> Result<u32, String> {
    let n = parse_count(s, "repeat count")?;
    if !(1..=REPEAT_MAX as u64).contains(&n) {
        return Err(format!(
            "repeat must be between 1 and {REPEAT_MAX}, got {n}"
        ));
    }
    Ok(n as u32)
}

/// The largest batch the log accepts.
fn batch_bytes_max() -> usize {
    log_config().max_batch_bytes
}

/// The log's settings: the broker's defaults, except the sparse index
/// interval. With the default 4 KiB interval a full 128 MiB segment gets
/// ~32k index entries (20 bytes each), and sealing it writes an index file
/// past `storage::atomic`'s 64 KiB limit, which asserts: any run writing more
/// than one segment of small batches would panic at the first roll. 64 KiB
/// keeps a full segment's index at 2048 entries (40 KiB). It changes nothing
/// else measured here: appends only push an entry, and a read's lookup scans
/// a 256 KiB window from the entry whatever the interval.
pub fn log_config() -> LogConfig {
    LogConfig {
        index_interval_bytes: 64 * 1024,
        ..LogConfig::default()
    }
}

impl LogArgs {
    /// Checks what the flags cannot check one by one; the error says which
    /// flags conflict and how to fix them.
    pub fn validate(&self) -> Result<(), String> {
        if self.record_sizes.is_empty() || self.batch_bytes.is_empty() {
            return Err("--record-sizes and --batch-bytes each need at least one value".into());
        }
        for &batch in &self.batch_bytes {
            for &record in &self.record_sizes {
                if batch < record + BATCH_OVERHEAD_BYTES {
                    return Err(format!(
                        "--batch-bytes {batch} cannot hold one record of --record-sizes {record}: \
                         a batch needs at least the record size + {BATCH_OVERHEAD_BYTES} bytes \
                         (header and framing); raise --batch-bytes or lower --record-sizes"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The medians of one configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub record_size_bytes: usize,
    /// The built batch's real size: as many records as fit in the target.
    pub batch_size_bytes: usize,
    pub records_per_batch: usize,
    /// Bytes written to the log (and to the raw file) per run.
    pub written_bytes: u64,
    pub log_append_mib_per_s: f64,
    pub raw_write_mib_per_s: f64,
    /// Log append over raw write throughput: the median over runs of each
    /// run's ratio (not the ratio of the two medians).
    pub append_ratio: f64,
    pub records_per_s: f64,
    pub log_read_mib_per_s: f64,
    pub raw_read_mib_per_s: f64,
    /// Log read over raw read throughput, the median of each run's ratio.
    pub read_ratio: f64,
    /// Whether every read in every run started with the page cache dropped.
    pub page_cache_dropped: bool,
    pub runs: u32,
}

/// Timings of one run of one configuration.
struct Run {
    log_append: Duration,
    raw_write: Duration,
    log_read: Duration,
    raw_read: Duration,
    page_cache_dropped: bool,
}

/// What every run of every configuration shares.
struct RunOptions {
    /// The log's clock: fixed, since no segment may roll by age mid-run.
    now_ms: i64,
    warm_reads: bool,
}

/// One configuration: a template batch and how many times to write it.
struct Config {
    record_size_bytes: usize,
    template: RecordBatch,
    batches: u64,
}

impl Config {
    fn new(record_size_bytes: usize, target_bytes: usize, total_bytes: u64, now_ms: i64) -> Self {
        let template = build_batch(record_size_bytes, target_bytes, now_ms);
        let batches = (total_bytes / template.size_bytes() as u64).max(1);
        Config {
            record_size_bytes,
            template,
            batches,
        }
    }

    fn batch_bytes(&self) -> usize {
        self.template.size_bytes()
    }

    fn records_per_batch(&self) -> u64 {
        self.template.records_count() as u64
    }

    fn total_bytes(&self) -> u64 {
        self.batches * self.batch_bytes() as u64
    }
}

/// A batch of as many records with `record_size_bytes` values (no key, no
/// headers) as fit in `target_bytes`, at least one.
fn build_batch(record_size_bytes: usize, target_bytes: usize, now_ms: i64) -> RecordBatch {
    // Varied bytes rather than zeros, in case a layer below ever compresses.
    let value: Vec<u8> = (0..record_size_bytes).map(|i| (i % 251) as u8).collect();
    let event = Event {
        key: None,
        value: Some(Bytes::from(value)),
        timestamp_ms: now_ms,
        headers: Vec::new(),
    };
    let mut builder = BatchBuilder::new();
    // Bounded: each push adds at least one byte and the loop stops once the
    // next record would pass the target.
    loop {
        if !builder.is_empty()
            && builder.size_bytes() + builder.record_size_bytes(&event) > target_bytes
        {
            break;
        }
        builder.push(&event);
    }
    builder.build()
}

/// A copy of `template` that owns its bytes, so that the log's stamping of
/// offset and term writes in place: a clone would share the bytes and make
/// `append` copy the whole batch, which the broker does not do (a produced
/// batch arrives in its own buffer).
fn unshared_copy(template: &RecordBatch) -> Result<RecordBatch, BenchError> {
    RecordBatch::parse(
        Bytes::copy_from_slice(template.as_bytes()),
        log_config().max_batch_bytes,
    )
    .map_err(context("copy the template batch"))
}

/// A directory the benchmark creates and removes when dropped, so that an
/// error midway leaves nothing behind either.
struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    fn create(base: &Path) -> Result<Self, BenchError> {
        std::fs::create_dir_all(base).map_err(context(format!("create {}", base.display())))?;
        // The process id keeps concurrent runs apart; the time keeps a rerun
        // with a recycled id from reusing a directory a killed run left.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = base.join(format!("weir-bench-log-{}-{nanos}", std::process::id()));
        // create_dir, not create_dir_all: never adopt an existing directory,
        // since it is removed afterwards.
        std::fs::create_dir(&path).map_err(context(format!("create {}", path.display())))?;
        Ok(ScratchDir { path })
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // Best effort: a failure leaves a directory the user can see in the
        // progress output and remove.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Runs every configuration, writing progress lines to `progress`.
pub fn run(args: &LogArgs, progress: &mut dyn Write) -> Result<Vec<Row>, BenchError> {
    args.validate().map_err(BenchError)?;
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = ScratchDir::create(&base)?;
    let disk: DiskRef = Arc::new(RealDisk);
    // A CLI benchmark, not broker code: the wall clock is fine here.
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let options = RunOptions {
        now_ms,
        warm_reads: args.warm_reads,
    };
    let total_bytes = args.total_mb * MIB_BYTES;
    say(
        progress,
        &format!(
            "weir bench log: writing {} MiB per configuration and run in {}",
            args.total_mb,
            scratch.path.display()
        ),
    );
    let mut rows = Vec::new();
    for &record_size in &args.record_sizes {
        for &target in &args.batch_bytes {
            let config = Config::new(record_size, target, total_bytes, now_ms);
            let mut runs = Vec::new();
            for run_no in 0..args.repeat {
                let name = format!("{record_size}-{target}-{run_no}");
                let run = run_once(&disk, &scratch.path, &name, &config, &options)?;
                // Each run's figures, so that a reader can see how much they
                // vary before trusting a median.
                let bytes = config.total_bytes();
                let line = format!(
                    "  record {record_size} B, batch {} B ({} records), run {}/{}: \
                     append {:.1}, raw write {:.1}, read {:.1}, raw read {:.1} MiB/s",
                    config.batch_bytes(),
                    config.records_per_batch(),
                    run_no + 1,
                    args.repeat,
                    mib_per_s(bytes, run.log_append),
                    mib_per_s(bytes, run.raw_write),
                    mib_per_s(bytes, run.log_read),
                    mib_per_s(bytes, run.raw_read),
                );
                say(progress, &line);
                runs.push(run);
            }
            rows.push(summarize(&config, &runs));
        }
    }
    Ok(rows)
}

/// Writes a progress line in one call: stderr is unbuffered, and a line
/// written in pieces can interleave with another process's output. Progress
/// is best effort: a closed stderr does not stop the benchmark.
fn say(progress: &mut dyn Write, line: &str) {
    let _ = progress.write_all(format!("{line}\n").as_bytes());
}

/// One run of one configuration, in files named after `name` that are
/// removed afterwards.
fn run_once(
    disk: &DiskRef,
    dir: &Path,
    name: &str,
    config: &Config,
    options: &RunOptions,
) -> Result<Run, BenchError> {
    let log_dir = dir.join(format!("log-{name}"));
    // The raw file gets a fresh directory of its own too, as the log's
    // segment does, so that ext4 places both alike (a new directory's files
    // may go to another block group). With the raw file in the parent
    // directory, single configurations showed steady gaps of 15-25% in
    // either direction, which this symmetry removed.
    let raw_dir = dir.join(format!("raw-{name}"));
    std::fs::create_dir(&raw_dir).map_err(context(format!("create {}", raw_dir.display())))?;
    let raw_path = raw_dir.join("raw");
    let (log_append, raw_write) = time_writes(disk, &log_dir, &raw_path, config, options)?;
    let reads = time_reads(disk, &log_dir, &raw_path, config, options)?;
    for d in [&log_dir, &raw_dir] {
        std::fs::remove_dir_all(d).map_err(context(format!("remove {}", d.display())))?;
    }
    Ok(Run {
        log_append,
        raw_write,
        log_read: reads.log,
        raw_read: reads.raw,
        page_cache_dropped: reads.page_cache_dropped,
    })
}

/// Writes the log and the raw file side by side, one batch to each in turn
/// (which goes first alternates), and returns the time spent on each.
///
/// Interleaving matters on this kind of disk: a virtual disk's fsync latency
/// drifts by several times within seconds, so writing all of one and then
/// all of the other would compare two different disks. Batch by batch, both
/// see the same one. The clock is read around every write, which costs tens
/// of nanoseconds against an fsync's hundreds of microseconds.
fn time_writes(
    disk: &DiskRef,
    log_dir: &Path,
    raw_path: &Path,
    config: &Config,
    options: &RunOptions,
) -> Result<(Duration, Duration), BenchError> {
    let mut log = PartitionLog::open(disk.clone(), log_dir, log_config(), options.now_ms)
        .map_err(context(format!("open log in {}", log_dir.display())))?;
    let mut raw = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(raw_path)
        .map_err(context(format!("create {}", raw_path.display())))?;
    let raw_bytes = config.template.as_bytes();
    let per_chunk = (CHUNK_BYTES / config.batch_bytes()).max(1) as u64;
    let (mut log_elapsed, mut raw_elapsed) = (Duration::ZERO, Duration::ZERO);
    let mut index = 1u64;
    let mut left = config.batches;
    // Bounded by config.batches: each pass writes at least one batch.
    while left > 0 {
        let n = left.min(per_chunk);
        // Built before the clock starts.
        let chunk = (0..n)
            .map(|_| unshared_copy(&config.template))
            .collect::<Result<Vec<_>, _>>()?;
        for batch in chunk {
            if index.is_multiple_of(2) {
                log_elapsed += append_one(&mut log, log_dir, batch, index, options.now_ms)?;
                raw_elapsed += write_one(&mut raw, raw_path, raw_bytes)?;
            } else {
                raw_elapsed += write_one(&mut raw, raw_path, raw_bytes)?;
                log_elapsed += append_one(&mut log, log_dir, batch, index, options.now_ms)?;
            }
            index += 1;
        }
        left -= n;
    }
    Ok((log_elapsed, raw_elapsed))
}

/// Appends one batch and syncs, as the broker does before acknowledging.
fn append_one(
    log: &mut PartitionLog,
    dir: &Path,
    batch: RecordBatch,
    index: u64,
    now_ms: i64,
) -> Result<Duration, BenchError> {
    let start = Instant::now();
    log.append(batch, TERM, index, now_ms)
        .map_err(|e| BenchError(format!("append to log in {}: {e}", dir.display())))?;
    log.sync()
        .map_err(|e| BenchError(format!("sync log in {}: {e}", dir.display())))?;
    Ok(start.elapsed())
}

/// Writes one batch's bytes and `sync_data`: the same bytes and the same
/// durability as the log's append and sync.
fn write_one(file: &mut File, path: &Path, bytes: &[u8]) -> Result<Duration, BenchError> {
    let start = Instant::now();
    file.write_all(bytes)
        .map_err(|e| BenchError(format!("write {}: {e}", path.display())))?;
    file.sync_data()
        .map_err(|e| BenchError(format!("fsync {}: {e}", path.display())))?;
    Ok(start.elapsed())
}

/// Time spent reading each side back.
struct Reads {
    log: Duration,
    raw: Duration,
    page_cache_dropped: bool,
}

/// Reads the whole log from offset 0 with `PartitionLog::read` and the raw
/// file with `Read::read`, each [`READ_PASSES`] times, and returns the mean
/// time of a pass.
///
/// Unlike writes, reads are not interleaved: the kernel's readahead for one
/// file would keep running while the other is timed, so each would be
/// charged for the other's I/O. Instead each side reads whole, from a cold
/// cache, and the sides take turns going first from pass to pass.
fn time_reads(
    disk: &DiskRef,
    log_dir: &Path,
    raw_path: &Path,
    config: &Config,
    options: &RunOptions,
) -> Result<Reads, BenchError> {
    // Opened before any cache is dropped: opening scans the active segment
    // with CRC checks, which would otherwise leave it all in the cache.
    let log = PartitionLog::open(disk.clone(), log_dir, log_config(), options.now_ms)
        .map_err(context(format!("reopen log in {}", log_dir.display())))?;
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    let (mut log_elapsed, mut raw_elapsed) = (Duration::ZERO, Duration::ZERO);
    let mut page_cache_dropped = true;
    for pass in 0..READ_PASSES {
        for log_turn in [pass.is_multiple_of(2), !pass.is_multiple_of(2)] {
            // Everything was synced, so every page is clean and can go.
            page_cache_dropped &= !options.warm_reads && drop_page_cache();
            if log_turn {
                log_elapsed += time_log_read(&log, log_dir, config)?;
            } else {
                raw_elapsed += time_raw_read(raw_path, &mut buf, config)?;
            }
        }
    }
    Ok(Reads {
        log: log_elapsed / READ_PASSES,
        raw: raw_elapsed / READ_PASSES,
        page_cache_dropped,
    })
}

/// Reads the whole log once, in chunks of at most 1 MiB.
fn time_log_read(log: &PartitionLog, dir: &Path, config: &Config) -> Result<Duration, BenchError> {
    let records_per_batch = config.records_per_batch() as i64;
    let end = log.next_offset();
    let (mut from, mut read_bytes) = (0i64, 0u64);
    let start = Instant::now();
    // Bounded: each read returns at least one batch (checked) and so moves
    // `from` forward.
    while from < end {
        let fetched = log
            .read(from, READ_CHUNK_BYTES, i64::MAX)
            .map_err(|e| BenchError(format!("read log in {} at {from}: {e}", dir.display())))?;
        if fetched.batches == 0 {
            return Err(BenchError(format!(
                "read log in {} at offset {from} returned nothing before its end ({end})",
                dir.display()
            )));
        }
        read_bytes += fetched.bytes.len() as u64;
        // Every batch is a copy of the template, so it holds the same number
        // of records: the next offset needs no header parsing.
        from += fetched.batches as i64 * records_per_batch;
    }
    let elapsed = start.elapsed();
    check_read("log", read_bytes, config)?;
    Ok(elapsed)
}

/// Reads the raw file once, in 1 MiB chunks into `buf`.
fn time_raw_read(path: &Path, buf: &mut [u8], config: &Config) -> Result<Duration, BenchError> {
    let mut file = File::open(path).map_err(context(format!("open {}", path.display())))?;
    let mut read_bytes = 0u64;
    let start = Instant::now();
    // Bounded by the file's length: read returns 0 at the end.
    loop {
        let n = read_some(&mut file, buf, path)?;
        if n == 0 {
            break;
        }
        read_bytes += n as u64;
    }
    let elapsed = start.elapsed();
    check_read("raw file", read_bytes, config)?;
    Ok(elapsed)
}

/// One `read` into `buf`, retrying interrupts; 0 at the end of the file.
fn read_some(file: &mut File, buf: &mut [u8], path: &Path) -> Result<usize, BenchError> {
    // Bounded: an interrupted read is retried, anything else returns.
    loop {
        match file.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => return r.map_err(|e| BenchError(format!("read {}: {e}", path.display()))),
        }
    }
}

/// A read that returned more or less than was written would make its
/// throughput a lie.
fn check_read(what: &str, read_bytes: u64, config: &Config) -> Result<(), BenchError> {
    if read_bytes != config.total_bytes() {
        return Err(BenchError(format!(
            "{what} read back {read_bytes} bytes, but {} were written",
            config.total_bytes()
        )));
    }
    Ok(())
}

fn summarize(config: &Config, runs: &[Run]) -> Row {
    let bytes = config.total_bytes();
    let rate = |f: fn(&Run) -> Duration| {
        median(
            &runs
                .iter()
                .map(|r| mib_per_s(bytes, f(r)))
                .collect::<Vec<_>>(),
        )
    };
    // A run's ratio compares two sides measured interleaved, on the same
    // disk at the same moment; the median of those is steadier than the
    // ratio of the two medians, which may come from different runs.
    let paired = |f: fn(&Run) -> (Duration, Duration)| {
        median(
            &runs
                .iter()
                .map(|r| {
                    let (log, raw) = f(r);
                    ratio(raw.as_secs_f64(), log.as_secs_f64())
                })
                .collect::<Vec<_>>(),
        )
    };
    let records = (config.batches * config.records_per_batch()) as f64;
    let records_per_s = median(
        &runs
            .iter()
            .map(|r| records / r.log_append.as_secs_f64().max(f64::MIN_POSITIVE))
            .collect::<Vec<_>>(),
    );
    Row {
        record_size_bytes: config.record_size_bytes,
        batch_size_bytes: config.batch_bytes(),
        records_per_batch: config.records_per_batch() as usize,
        written_bytes: bytes,
        log_append_mib_per_s: rate(|r| r.log_append),
        raw_write_mib_per_s: rate(|r| r.raw_write),
        append_ratio: paired(|r| (r.log_append, r.raw_write)),
        records_per_s,
        log_read_mib_per_s: rate(|r| r.log_read),
        raw_read_mib_per_s: rate(|r| r.raw_read),
        read_ratio: paired(|r| (r.log_read, r.raw_read)),
        page_cache_dropped: runs.iter().all(|r| r.page_cache_dropped),
        runs: runs.len() as u32,
    }
}

/// `a / b`, or 0 when `b` is 0, so that JSON never gets an infinity.
fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// The rows as `format` asks.
pub fn render(rows: &[Row], format: OutputFormat, warm_reads: bool) -> String {
    match format {
        OutputFormat::Text => render_text(rows, warm_reads),
        OutputFormat::Json => render_json(rows),
    }
}

fn render_text(rows: &[Row], warm_reads: bool) -> String {
    let mut out = String::new();
    let header: [[&str; 9]; 2] = [
        [
            "record",
            "batch",
            "log append",
            "raw write",
            "append",
            "records/s",
            "log read",
            "raw read",
            "read",
        ],
        [
            "bytes",
            "bytes",
            "MiB/s",
            "+fsync MiB/s",
            "ratio",
            "",
            "MiB/s",
            "MiB/s",
            "ratio",
        ],
    ];
    for h in header {
        let _ = writeln!(
            out,
            "{:>7} {:>7} {:>10} {:>12} {:>6} {:>10} {:>9} {:>9} {:>6}",
            h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8]
        );
    }
    for r in rows {
        let _ = writeln!(
            out,
            "{:>7} {:>7} {:>10.1} {:>12.1} {:>6.2} {:>10.0} {:>9.1} {:>9.1} {:>6.2}",
            r.record_size_bytes,
            r.batch_size_bytes,
            r.log_append_mib_per_s,
            r.raw_write_mib_per_s,
            r.append_ratio,
            r.records_per_s,
            r.log_read_mib_per_s,
            r.raw_read_mib_per_s,
            r.read_ratio
        );
    }
    let runs = rows.first().map_or(0, |r| r.runs);
    let _ = writeln!(
        out,
        "Medians of {runs} run(s); a ratio is the median of each run's ratio; \
         1 MiB = 1048576 bytes."
    );
    let cold = rows.iter().all(|r| r.page_cache_dropped);
    let _ = writeln!(
        out,
        "{}",
        if cold {
            "Reads: page cache dropped before each read (reads come from the disk)."
        } else if warm_reads {
            "Reads: page cache kept warm (--warm-reads): they measure memory copies."
        } else {
            "Reads: from the page cache (dropping it needs root): they measure memory copies."
        }
    );
    let _ = writeln!(
        out,
        "Targets: append ratio >= {APPEND_RATIO_TARGET:.2} for {APPEND_TARGET_BATCH_BYTES}-byte \
         batches, read ratio >= {READ_RATIO_TARGET:.2}."
    );
    out
}

fn render_json(rows: &[Row]) -> String {
    let mut out = String::from("[");
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Every value is a number or a boolean, and ratio() and mib_per_s()
        // never produce a NaN or an infinity: nothing needs escaping.
        let _ = write!(
            out,
            "\n  {{\"record_size_bytes\": {}, \"batch_size_bytes\": {}, \
             \"records_per_batch\": {}, \"written_bytes\": {}, \
             \"log_append_mib_per_s\": {:.2}, \"raw_write_mib_per_s\": {:.2}, \
             \"append_ratio\": {:.4}, \"records_per_s\": {:.0}, \
             \"log_read_mib_per_s\": {:.2}, \"raw_read_mib_per_s\": {:.2}, \
             \"read_ratio\": {:.4}, \"page_cache_dropped\": {}, \"runs\": {}}}",
            r.record_size_bytes,
            r.batch_size_bytes,
            r.records_per_batch,
            r.written_bytes,
            r.log_append_mib_per_s,
            r.raw_write_mib_per_s,
            r.append_ratio,
            r.records_per_s,
            r.log_read_mib_per_s,
            r.raw_read_mib_per_s,
            r.read_ratio,
            r.page_cache_dropped,
            r.runs
        );
    }
    out.push_str(if rows.is_empty() { "]\n" } else { "\n]\n" });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_fill_up_to_the_target() {
        for (record, target) in [(100, 4096), (1024, 16384), (1, 101), (1000, 1100)] {
            let b = build_batch(record, target, 0);
            assert!(b.size_bytes() <= target, "{record} {target}: {b:?}");
            assert!(b.records_count() >= 1);
            // One more record would not have fit.
            let next = build_batch(record, b.size_bytes() + record + 20, 0);
            assert!(next.records_count() > b.records_count());
        }
    }

    #[test]
    fn one_record_always_fits_the_smallest_allowed_batch() {
        let max = batch_bytes_max();
        let record = max - BATCH_OVERHEAD_BYTES;
        let b = build_batch(record, max, 0);
        assert_eq!(b.records_count(), 1);
        assert!(b.size_bytes() <= max);
    }

    #[test]
    fn unshared_copy_is_not_shared() {
        let t = build_batch(100, 4096, 0);
        let c = unshared_copy(&t).unwrap();
        assert_eq!(c, t);
        assert_ne!(c.as_bytes().as_ptr(), t.as_bytes().as_ptr());
    }

    #[test]
    fn a_tiny_run_reads_back_what_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let args = LogArgs {
            dir: Some(dir.path().to_path_buf()),
            record_sizes: vec![100],
            batch_bytes: vec![4096],
            total_mb: 1,
            repeat: 2,
            warm_reads: false,
            output: OutputFormat::Json,
        };
        let rows = run(&args, &mut std::io::sink()).unwrap();
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert!(r.log_append_mib_per_s > 0.0 && r.raw_read_mib_per_s > 0.0);
        assert_eq!(r.runs, 2);
        // The scratch directory is gone.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let json = render(&rows, OutputFormat::Json, false);
        assert!(
            json.starts_with("[\n  {\"record_size_bytes\": 100,"),
            "{json}"
        );
    }

    #[test]
    fn conflicting_sizes_are_rejected() {
        let args = LogArgs {
            dir: None,
            record_sizes: vec![100, 4000],
            batch_bytes: vec![4096],
            total_mb: 1,
            repeat: 1,
            warm_reads: false,
            output: OutputFormat::Text,
        };
        let err = args.validate().unwrap_err();
        assert!(err.contains("--batch-bytes 4096"), "{err}");
    }
}
