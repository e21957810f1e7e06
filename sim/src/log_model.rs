//! A model check of the partition log: arbitrary sequences of appends,
//! syncs, truncations, retention passes, config changes and reopens are run
//! against the real [`PartitionLog`] and against a plain in-memory list of
//! batches, and after every step the log must agree with the list: same
//! start, same end, same terms, and every read returns exactly the events
//! the model holds at exactly their offsets.
//!
//! The runner takes the disk as a parameter so the same check runs on real
//! files (tests/ with a temporary directory) and on turmoil's simulated disk.

use bytes::Bytes;
use quickcheck::{Arbitrary, Gen};
use weir::io::DiskRef;
use weir::storage::{LogConfig, PartitionLog};
use weir::types::{BatchBuilder, Event, Header, RecordBatch};

/// One step of a model run.
#[derive(Clone, Debug)]
pub enum Op {
    /// Append a batch of `records` events of `value_bytes` each.
    Append {
        records: u8,
        value_bytes: u16,
    },
    Sync,
    /// Truncate the last `back` entries (a Raft conflict); later appends
    /// come in a higher term.
    Truncate {
        back: u8,
    },
    /// Advance the clock and run retention with everything deletable.
    Retention {
        advance_ms: u32,
    },
    /// Change retention limits.
    Configure {
        retention_bytes: u16,
        retention_ms: u16,
    },
    /// Close and reopen the log.
    Reopen,
    /// Read from the model entry `at` (modulo the model's length).
    Read {
        at: u16,
        max_bytes: u16,
    },
    /// Discard the log and restart it empty (a follower installing a Raft
    /// snapshot), this many entries and offsets from the current end:
    /// ahead of it (the usual lagging follower) or behind it (a divergent
    /// follower whose tail overlaps the new start).
    Reset {
        index_delta: i8,
        offset_delta: i16,
    },
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Self {
        match u8::arbitrary(g) % 20 {
            0..=8 => Op::Append {
                records: 1 + u8::arbitrary(g) % 8,
                value_bytes: u16::arbitrary(g) % 300,
            },
            9..=10 => Op::Sync,
            11 => Op::Truncate {
                back: u8::arbitrary(g) % 6,
            },
            12..=13 => Op::Retention {
                advance_ms: u32::arbitrary(g) % 5000,
            },
            14 if u8::arbitrary(g) % 2 == 0 => Op::Reset {
                index_delta: i8::arbitrary(g) % 12,
                offset_delta: i16::arbitrary(g) % 60,
            },
            14 => Op::Configure {
                retention_bytes: u16::arbitrary(g),
                retention_ms: u16::arbitrary(g),
            },
            15 => Op::Reopen,
            _ => Op::Read {
                at: u16::arbitrary(g),
                max_bytes: u16::arbitrary(g),
            },
        }
    }
}

/// A batch as the model remembers it.
#[derive(Clone, Debug)]
struct Entry {
    index: u64,
    term: u64,
    base_offset: i64,
    events: Vec<Event>,
}

/// The in-memory model plus the clock and term of the run.
struct Model {
    entries: Vec<Entry>,
    start_offset: i64,
    start_index: u64,
    term: u64,
    now_ms: i64,
    seq: u64,
}

impl Model {
    fn next_offset(&self) -> i64 {
        self.entries
            .last()
            .map(|e| e.base_offset + e.events.len() as i64)
            .unwrap_or(self.start_offset)
    }

    fn next_index(&self) -> u64 {
        self.entries
            .last()
            .map(|e| e.index + 1)
            .unwrap_or(self.start_index)
    }
}

/// Small segments and a dense index, so that a short run rolls segments,
/// crosses index entries and lets retention delete.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        segment_ms: 60_000,
        retention_ms: -1,
        retention_bytes: -1,
        index_interval_bytes: 256,
        max_batch_bytes: 2048,
        page_cache_keep_bytes: 0,
    }
}

fn events(m: &mut Model, records: u8, value_bytes: u16) -> Vec<Event> {
    (0..records)
        .map(|_| {
            m.seq += 1;
            let value: Vec<u8> = (0..value_bytes)
                .map(|i| (m.seq as u8).wrapping_add(i as u8))
                .collect();
            Event {
                key: Some(Bytes::from(format!("k{}", m.seq % 7))),
                value: Some(Bytes::from(value)),
                timestamp_ms: m.now_ms,
                headers: vec![Header {
                    key: "seq".into(),
                    value: Some(Bytes::from(m.seq.to_string())),
                }],
            }
        })
        .collect()
}

/// What a run exercised, so a test can assert that its random runs reached
/// the interesting paths (rolls, retention, truncation) at all.
#[derive(Clone, Copy, Debug, Default)]
pub struct Coverage {
    pub segments_max: usize,
    /// Entries removed by retention, at most, in one run.
    pub segments_deleted: usize,
    pub truncations: usize,
    pub reads: usize,
    pub resets: usize,
}

impl Coverage {
    pub fn add(&mut self, o: Coverage) {
        self.segments_max = self.segments_max.max(o.segments_max);
        self.segments_deleted += o.segments_deleted;
        self.truncations += o.truncations;
        self.reads += o.reads;
        self.resets += o.resets;
    }
}

/// Runs `ops` on a log in `dir` on `disk` and checks it against the model
/// after every step. Returns a description of the first disagreement.
pub fn run(disk: DiskRef, dir: &std::path::Path, ops: &[Op]) -> Result<Coverage, String> {
    let mut cov = Coverage::default();
    let mut config = small_config();
    let mut m = Model {
        entries: Vec::new(),
        start_offset: 0,
        start_index: 1,
        term: 1,
        now_ms: 1_000_000,
        seq: 0,
    };
    let mut log = PartitionLog::open(disk.clone(), dir, config.clone(), m.now_ms)
        .map_err(|e| e.to_string())?;
    for (step, op) in ops.iter().enumerate() {
        apply(&disk, dir, &mut log, &mut m, &mut config, op)
            .map_err(|e| format!("step {step} {op:?}: {e}"))?;
        check(&log, &m).map_err(|e| format!("after step {step} {op:?}: {e}"))?;
        cov.segments_max = cov.segments_max.max(log.segment_count());
        match op {
            Op::Retention { .. } => cov.segments_deleted = m.start_index as usize - 1,
            Op::Truncate { back } if *back > 0 => cov.truncations += 1,
            Op::Read { .. } => cov.reads += 1,
            Op::Reset { .. } => cov.resets += 1,
            _ => {}
        }
    }
    Ok(cov)
}

fn apply(
    disk: &DiskRef,
    dir: &std::path::Path,
    log: &mut PartitionLog,
    m: &mut Model,
    config: &mut LogConfig,
    op: &Op,
) -> Result<(), String> {
    match *op {
        Op::Append {
            records,
            value_bytes,
        } => {
            let evs = events(m, records, value_bytes);
            let mut b = BatchBuilder::new();
            evs.iter().for_each(|e| b.push(e));
            let batch = b.build();
            if batch.size_bytes() > config.max_batch_bytes {
                return match log.append(batch, m.term, m.next_index(), m.now_ms) {
                    Err(_) => Ok(()),
                    Ok(_) => Err("an oversized batch was accepted".into()),
                };
            }
            let at = log
                .append(batch, m.term, m.next_index(), m.now_ms)
                .map_err(|e| e.to_string())?;
            if at.base_offset != m.next_offset() || at.index != m.next_index() {
                return Err(format!(
                    "appended at {at:?}, model expected offset {} index {}",
                    m.next_offset(),
                    m.next_index()
                ));
            }
            m.entries.push(Entry {
                index: at.index,
                term: m.term,
                base_offset: at.base_offset,
                events: evs,
            });
        }
        Op::Sync => log.sync().map_err(|e| e.to_string())?,
        Op::Truncate { back } => {
            let back = (back as usize).min(m.entries.len());
            if back > 0 {
                let from = m.entries[m.entries.len() - back].index;
                log.truncate_suffix(from).map_err(|e| e.to_string())?;
                m.entries.truncate(m.entries.len() - back);
                m.term += 1;
            }
        }
        Op::Retention { advance_ms } => {
            m.now_ms += advance_ms as i64;
            let before = log.size_bytes();
            let out = log
                .apply_retention(m.now_ms, i64::MAX)
                .map_err(|e| e.to_string())?;
            let start = log.log_start_offset();
            let cut = m
                .entries
                .iter()
                .take_while(|e| e.base_offset < start)
                .count();
            if m.entries.get(cut).is_some_and(|e| e.base_offset != start)
                || (cut == m.entries.len() && start != m.next_offset() && cut > 0)
            {
                return Err(format!(
                    "retention moved the start to {start}, not a batch boundary"
                ));
            }
            if config.retention_bytes >= 0
                && config.retention_ms < 0
                && out.segments_deleted > 0
                && (log.size_bytes() as i64) < config.retention_bytes
            {
                return Err(format!(
                    "retention cut below retention.bytes: {} < {}",
                    log.size_bytes(),
                    config.retention_bytes
                ));
            }
            if before - log.size_bytes() != out.bytes_deleted {
                return Err("retention reported the wrong byte count".into());
            }
            if let Some(e) = m.entries.get(cut) {
                m.start_index = e.index;
            } else if cut > 0 {
                m.start_index = m.entries[cut - 1].index + 1;
            }
            if cut > 0 {
                m.start_offset = start;
            }
            m.entries.drain(..cut);
        }
        Op::Configure {
            retention_bytes,
            retention_ms,
        } => {
            config.retention_bytes = if retention_bytes % 3 == 0 {
                -1
            } else {
                retention_bytes as i64 % 8000
            };
            config.retention_ms = if retention_ms % 3 == 0 {
                -1
            } else {
                retention_ms as i64
            };
            log.set_config(config.clone()).map_err(|e| e.to_string())?;
        }
        Op::Reopen => {
            log.sync().map_err(|e| e.to_string())?;
            *log = PartitionLog::open(disk.clone(), dir, config.clone(), m.now_ms)
                .map_err(|e| e.to_string())?;
            if log.torn_bytes_recovered() != 0 {
                return Err("a clean reopen found a torn tail".into());
            }
        }
        Op::Reset {
            index_delta,
            offset_delta,
        } => {
            let index = (m.next_index() as i64 + index_delta as i64).max(1) as u64;
            let offset = (m.next_offset() + offset_delta as i64).max(0);
            // The entry before the new start had the current term; later
            // appends continue in it.
            log.reset(offset, index, m.term)
                .map_err(|e| e.to_string())?;
            m.entries.clear();
            m.start_index = index;
            m.start_offset = offset;
            if log.term(index - 1) != Some(m.term) {
                return Err(format!(
                    "after a reset the term before the start is {:?}, not {}",
                    log.term(index - 1),
                    m.term
                ));
            }
        }
        Op::Read { at, max_bytes } => {
            if !m.entries.is_empty() {
                let e = &m.entries[at as usize % m.entries.len()];
                let offset = e.base_offset + (at as i64 % e.events.len() as i64);
                check_read(log, m, offset, max_bytes as usize)?;
            }
        }
    }
    Ok(())
}

fn check_read(log: &PartitionLog, m: &Model, offset: i64, max_bytes: usize) -> Result<(), String> {
    let got = log
        .read(offset, max_bytes, i64::MAX)
        .map_err(|e| e.to_string())?;
    if got.batches == 0 {
        return Err(format!("read at {offset} returned nothing"));
    }
    let mut expected = m
        .entries
        .iter()
        .skip_while(|e| e.base_offset + (e.events.len() as i64) <= offset);
    // Whole batches only: a partial one is an error here.
    let batches = weir::types::split_batches(got.bytes.clone(), usize::MAX)
        .map_err(|e| format!("read returned bytes that are not whole batches: {e}"))?;
    if batches.len() != got.batches {
        return Err(format!(
            "read reported {} batches, returned {}",
            got.batches,
            batches.len()
        ));
    }
    for batch in batches {
        let want = expected
            .next()
            .ok_or("read returned more batches than the model holds")?;
        compare(&batch, want)?;
    }
    Ok(())
}

fn compare(batch: &RecordBatch, want: &Entry) -> Result<(), String> {
    let records = batch.records().map_err(|e| e.to_string())?;
    if batch.leader_epoch() as u64 != want.term
        || batch.base_offset() != want.base_offset
        || records.len() != want.events.len()
    {
        return Err(format!(
            "batch {batch:?} differs from model entry {} (term {}, offset {})",
            want.index, want.term, want.base_offset
        ));
    }
    for (i, r) in records.iter().enumerate() {
        if r.offset != want.base_offset + i as i64 || r.event != want.events[i] {
            return Err(format!(
                "record at offset {} differs from the model",
                r.offset
            ));
        }
    }
    Ok(())
}

fn check(log: &PartitionLog, m: &Model) -> Result<(), String> {
    if log.log_start_offset() != m.start_offset || log.next_offset() != m.next_offset() {
        return Err(format!(
            "log spans offsets {}..{}, model {}..{}",
            log.log_start_offset(),
            log.next_offset(),
            m.start_offset,
            m.next_offset()
        ));
    }
    if log.first_index() != m.start_index || log.last_index() + 1 != m.next_index() {
        return Err(format!(
            "log spans indexes {}..={}, model {}..{}",
            log.first_index(),
            log.last_index(),
            m.start_index,
            m.next_index()
        ));
    }
    for e in &m.entries {
        if log.term(e.index) != Some(e.term) {
            return Err(format!(
                "term of entry {} is {:?}, model {}",
                e.index,
                log.term(e.index),
                e.term
            ));
        }
    }
    if let Some(first) = m.entries.first() {
        let got = log
            .entries(first.index, m.next_index(), usize::MAX)
            .map_err(|e| e.to_string())?;
        if got.len() != m.entries.len() {
            return Err(format!(
                "entries() returned {} of {}",
                got.len(),
                m.entries.len()
            ));
        }
        for ((index, batch), want) in got.iter().zip(&m.entries) {
            if *index != want.index {
                return Err(format!(
                    "entries() gave index {index}, model {}",
                    want.index
                ));
            }
            compare(batch, want)?;
        }
        let one = log
            .entries(first.index, m.next_index(), 0)
            .map_err(|e| e.to_string())?;
        if one.len() != 1 {
            return Err("entries() with no byte budget must return exactly one entry".into());
        }
    }
    Ok(())
}
