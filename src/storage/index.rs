//! The sparse index of a segment, and the file a sealed segment keeps it in.
//!
//! One entry every `index.interval.bytes` of batches, taken just before a
//! batch is appended: that batch's offset, Raft index and file position, and
//! the newest timestamp of everything before it in the segment. The first two
//! find a batch by offset (fetch) or by Raft index (replication); the third
//! finds the first batch at or after a timestamp, since every batch before an
//! entry whose timestamp is below the target is below it too.
//!
//! A sealed segment's index file also holds the segment's summary (next
//! offset and index, size, newest timestamp, the terms of its entries), so
//! that opening a log reads one small file per sealed segment instead of
//! scanning it. The file is written once, when the segment is sealed, and is
//! trusted only if its CRC holds and its size matches the segment file's;
//! otherwise the segment is scanned again.

use std::fmt;

/// One sparse index entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// Offset of the batch minus the segment's base offset.
    pub offset_delta: u32,
    /// Raft index of the batch minus the segment's base index.
    pub index_delta: u32,
    /// Byte position of the batch in the segment file.
    pub position: u32,
    /// Newest timestamp of the batches before this one in the segment
    /// (`i64::MIN` if none).
    pub timestamp_before: i64,
}

/// A run of consecutive Raft entries written in one term.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TermRun {
    pub first_index: u64,
    pub term: u64,
}

/// What a sealed segment's index file records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentSummary {
    pub base_offset: i64,
    pub base_index: u64,
    pub next_offset: i64,
    pub next_index: u64,
    pub size_bytes: u64,
    pub max_timestamp: i64,
    pub terms: Vec<TermRun>,
    pub entries: Vec<IndexEntry>,
}

const MAGIC: &[u8; 8] = b"WEIRIDX1";
const FIXED_BYTES: usize = 8 + 8 * 6 + 4 + 4;
const TERM_BYTES: usize = 16;
const ENTRY_BYTES: usize = 20;

/// Why an index file cannot be used (it is then rebuilt from the segment).
#[derive(Debug, PartialEq, Eq)]
pub struct BadIndex(pub String);

impl fmt::Display for BadIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unusable index file: {}", self.0)
    }
}

impl SegmentSummary {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(
            FIXED_BYTES + self.terms.len() * TERM_BYTES + self.entries.len() * ENTRY_BYTES + 4,
        );
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&self.base_offset.to_be_bytes());
        b.extend_from_slice(&self.base_index.to_be_bytes());
        b.extend_from_slice(&self.next_offset.to_be_bytes());
        b.extend_from_slice(&self.next_index.to_be_bytes());
        b.extend_from_slice(&self.size_bytes.to_be_bytes());
        b.extend_from_slice(&self.max_timestamp.to_be_bytes());
        b.extend_from_slice(&(self.terms.len() as u32).to_be_bytes());
        b.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        for t in &self.terms {
            b.extend_from_slice(&t.first_index.to_be_bytes());
            b.extend_from_slice(&t.term.to_be_bytes());
        }
        for e in &self.entries {
            b.extend_from_slice(&e.offset_delta.to_be_bytes());
            b.extend_from_slice(&e.index_delta.to_be_bytes());
            b.extend_from_slice(&e.position.to_be_bytes());
            b.extend_from_slice(&e.timestamp_before.to_be_bytes());
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<SegmentSummary, BadIndex> {
        if b.len() < FIXED_BYTES + 4 || &b[..8] != MAGIC {
            return Err(BadIndex("missing header".into()));
        }
        let (body, trailer) = b.split_at(b.len() - 4);
        if crc32c::crc32c(body) != u32::from_be_bytes(trailer.try_into().expect("4 bytes")) {
            return Err(BadIndex("CRC-32C mismatch".into()));
        }
        let mut r = Reader { b: body, pos: 8 };
        let mut s = SegmentSummary {
            base_offset: r.u64() as i64,
            base_index: r.u64(),
            next_offset: r.u64() as i64,
            next_index: r.u64(),
            size_bytes: r.u64(),
            max_timestamp: r.u64() as i64,
            terms: Vec::new(),
            entries: Vec::new(),
        };
        let terms = r.u32() as usize;
        let entries = r.u32() as usize;
        if body.len() != FIXED_BYTES + terms * TERM_BYTES + entries * ENTRY_BYTES {
            return Err(BadIndex("length does not match its counts".into()));
        }
        s.terms = (0..terms)
            .map(|_| TermRun {
                first_index: r.u64(),
                term: r.u64(),
            })
            .collect();
        s.entries = (0..entries)
            .map(|_| IndexEntry {
                offset_delta: r.u32(),
                index_delta: r.u32(),
                position: r.u32(),
                timestamp_before: r.u64() as i64,
            })
            .collect();
        s.check()?;
        Ok(s)
    }

    /// Invariants any summary must satisfy; a file that breaks one is
    /// rejected, not trusted.
    fn check(&self) -> Result<(), BadIndex> {
        let ok = self.next_offset > self.base_offset
            && self.next_index > self.base_index
            && self.next_index - self.base_index <= (self.next_offset - self.base_offset) as u64
            && self.terms.first().map(|t| t.first_index) == Some(self.base_index)
            && self
                .terms
                .windows(2)
                .all(|w| w[0].first_index < w[1].first_index && w[0].term < w[1].term)
            && self
                .terms
                .last()
                .is_some_and(|t| t.first_index < self.next_index)
            && self.entries.windows(2).all(|w| {
                w[0].position < w[1].position
                    && w[0].offset_delta < w[1].offset_delta
                    && w[0].index_delta < w[1].index_delta
            })
            && self
                .entries
                .last()
                .is_none_or(|e| (e.position as u64) < self.size_bytes);
        if ok {
            Ok(())
        } else {
            Err(BadIndex("its fields contradict each other".into()))
        }
    }
}

/// Reads big-endian fields from a buffer whose length was checked first.
struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn u64(&mut self) -> u64 {
        let v = u64::from_be_bytes(self.b[self.pos..self.pos + 8].try_into().expect("8 bytes"));
        self.pos += 8;
        v
    }

    fn u32(&mut self) -> u32 {
        let v = u32::from_be_bytes(self.b[self.pos..self.pos + 4].try_into().expect("4 bytes"));
        self.pos += 4;
        v
    }
}

/// The last entry at or before a key, by binary search on a monotonic field.
pub fn floor_entry(
    entries: &[IndexEntry],
    below: impl Fn(&IndexEntry) -> bool,
) -> Option<IndexEntry> {
    let n = entries.partition_point(below);
    n.checked_sub(1).map(|i| entries[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> SegmentSummary {
        SegmentSummary {
            base_offset: 100,
            base_index: 10,
            next_offset: 200,
            next_index: 15,
            size_bytes: 9000,
            max_timestamp: 77,
            terms: vec![
                TermRun {
                    first_index: 10,
                    term: 2,
                },
                TermRun {
                    first_index: 12,
                    term: 3,
                },
            ],
            entries: vec![
                IndexEntry {
                    offset_delta: 0,
                    index_delta: 0,
                    position: 0,
                    timestamp_before: i64::MIN,
                },
                IndexEntry {
                    offset_delta: 50,
                    index_delta: 2,
                    position: 4100,
                    timestamp_before: 70,
                },
            ],
        }
    }

    #[test]
    fn round_trip() {
        let s = summary();
        assert_eq!(SegmentSummary::decode(&s.encode()), Ok(s));
    }

    #[test]
    fn damage_is_rejected() {
        let bytes = summary().encode();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(
                SegmentSummary::decode(&b).is_err(),
                "flip at byte {i} accepted"
            );
        }
        assert!(SegmentSummary::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn contradictions_are_rejected() {
        let mut s = summary();
        s.entries[1].position = 9000;
        assert!(SegmentSummary::decode(&s.encode()).is_err());
        let mut s = summary();
        s.terms[1].term = 1;
        assert!(SegmentSummary::decode(&s.encode()).is_err());
    }

    #[test]
    fn floor_finds_last_entry_below() {
        let e = summary().entries;
        assert_eq!(
            floor_entry(&e, |x| x.offset_delta <= 49).map(|x| x.position),
            Some(0)
        );
        assert_eq!(
            floor_entry(&e, |x| x.offset_delta <= 50).map(|x| x.position),
            Some(4100)
        );
        assert_eq!(floor_entry(&e[1..], |x| x.offset_delta <= 10), None);
    }
}
