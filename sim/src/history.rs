//! What a simulated run records: the event trace (hashed to compare runs)
//! and the client history the checkers read.

use std::fmt::Write as _;

/// The ordered log of everything that happened in a run, with simulated
/// timestamps. Two runs of one seed must produce the same lines.
#[derive(Default, Debug, Clone)]
pub struct Trace {
    pub lines: Vec<String>,
}

impl Trace {
    /// Appends one event at simulated time `at_ms`.
    pub fn push(&mut self, at_ms: u128, event: impl AsRef<str>) {
        let mut line = String::new();
        let _ = write!(
            line,
            "{:>8}.{:03} {}",
            at_ms / 1000,
            at_ms % 1000,
            event.as_ref()
        );
        self.lines.push(line);
    }

    /// FNV-1a 64 over every line and its terminating newline: simple,
    /// dependency-free and identical on every machine.
    pub fn hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for line in &self.lines {
            for b in line.bytes().chain(std::iter::once(b'\n')) {
                h ^= b as u64;
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        h
    }
}

/// How one produce attempt ended, as far as its producer can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// acks=all answered with the batch's offset.
    Acked { offset: i64 },
    /// Definitely not written (the request never reached a broker).
    Failed,
    /// May or may not have been written: a timeout, a broken connection,
    /// or an error Weir also returns after proposing (NOT_LEADER on step
    /// down), so it cannot count as a definite failure.
    Unknown,
}

/// One produce attempt of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub producer: u32,
    /// acks=all (else acks=1, whose losses are allowed and reported apart).
    pub acks_all: bool,
    pub partition: u32,
    pub key: String,
    pub value: String,
    pub outcome: Outcome,
}

/// A record as a consumer saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub offset: i64,
    pub key: String,
    pub value: String,
}

/// A batch returned by a fetch: its extent (control batches occupy offsets
/// too) and its data records (none for a control batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSeen {
    pub base: i64,
    pub last: i64,
    pub control: bool,
    pub records: Vec<Rec>,
}

/// One successful fetch of one partition by one consumer from `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poll {
    pub consumer: u32,
    pub partition: u32,
    pub from: i64,
    pub batches: Vec<BatchSeen>,
}

/// Everything the checkers look at.
#[derive(Default, Debug, Clone)]
pub struct History {
    pub writes: Vec<Write>,
    pub polls: Vec<Poll>,
    /// Availability probes of the quiet phase, one per partition.
    pub probes: Vec<Probe>,
    /// How long after the faults stopped a partition may take to accept
    /// and acknowledge a write (simulated milliseconds).
    pub available_within_ms: u64,
    /// Replica comparisons at the end of the run, one per partition.
    pub replica_checks: Vec<ReplicaCheck>,
    /// Batches a fetch returned whose CRC-32C did not match their bytes
    /// (a broker served damaged data).
    pub corrupt_reads: Vec<CorruptRead>,
}

/// A damaged batch a broker served to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptRead {
    pub consumer: u32,
    pub partition: u32,
    /// The broker that served it.
    pub broker: u64,
    /// The batch's base offset, as its (CRC-less) header claims.
    pub base: i64,
}

/// Every replica of a partition read up to the lowest high watermark among
/// them, compared byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaCheck {
    pub partition: u32,
    /// The offset up to which replicas were compared (exclusive).
    pub up_to: i64,
    /// Brokers whose bytes differ from the first replica's, with where.
    pub differing: Vec<String>,
    /// Brokers that could not be read before the run ended.
    pub unread: Vec<u64>,
}

/// After the faults stop: how long a partition took to acknowledge a write
/// (`None`: it never did while the run lasted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub partition: u32,
    pub acked_after_ms: Option<u64>,
}
