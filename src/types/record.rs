//! Kafka's RecordBatch v2 (magic 2), byte for byte as Kafka specifies it.
//!
//! Weir stores batches on disk, replicates them and serves them exactly in
//! this form: a producer's batch is validated once, stamped with its base
//! offset and the Raft term (in `partitionLeaderEpoch`), written once per
//! replica and handed to consumers as the same bytes. Stamping does not touch
//! the CRC, which covers `attributes` to the end and so excludes both fields.
//!
//! ```text
//! offset size field
//!      0    8 baseOffset            (i64)
//!      8    4 batchLength           (i32, bytes after this field)
//!     12    4 partitionLeaderEpoch  (i32; Weir: the Raft term)
//!     16    1 magic                 (i8 = 2)
//!     17    4 crc                   (u32, CRC-32C of bytes 21..end)
//!     21    2 attributes            (i16: compression 0-2, timestamp type 3,
//!                                    transactional 4, control 5)
//!     23    4 lastOffsetDelta       (i32)
//!     27    8 baseTimestamp         (i64)
//!     35    8 maxTimestamp          (i64)
//!     43    8 producerId            (i64)
//!     51    2 producerEpoch         (i16)
//!     53    4 baseSequence          (i32)
//!     57    4 records count         (i32)
//!     61      records: length varint, attributes i8, timestampDelta varlong,
//!             offsetDelta varint, key (varint length, -1 = null), value
//!             (likewise), header count varint, headers (key: varint length
//!             + UTF-8, value: varint length, -1 = null, + bytes)
//! ```
//!
//! Decoding takes untrusted bytes (from the network or the disk) and answers
//! malformed input with a [`RecordError`], never a panic, and never allocates
//! more than the input could describe.

use super::varint::{
    get_varint, get_varlong, put_varint, varlong_len, write_varlong, VARLONG_BYTES_MAX,
};
use bytes::{BufMut, Bytes, BytesMut};
use std::fmt;
use std::ops::Range;

/// The magic byte of RecordBatch v2.
pub const MAGIC: i8 = 2;
/// Bytes before `batchLength` counts: baseOffset and batchLength.
pub const LOG_OVERHEAD: usize = 12;
/// Size of the fixed batch header, up to the first record.
pub const HEADER_SIZE: usize = 61;

const BATCH_LENGTH_POS: usize = 8;
const LEADER_EPOCH_POS: usize = 12;
const MAGIC_POS: usize = 16;
const CRC_POS: usize = 17;
const ATTRIBUTES_POS: usize = 21;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;

/// Smallest encoded record: length, attributes, three one-byte varints, two
/// null lengths and a header count.
const RECORD_SIZE_MIN: usize = 7;

/// A header of an event: a UTF-8 key and an optional value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: Option<Bytes>,
}

/// What a producer writes: key, value, timestamp and headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    /// Milliseconds since the Unix epoch (the producer's create time).
    pub timestamp_ms: i64,
    pub headers: Vec<Header>,
}

/// An event as read back from the log: with the offset it was stored at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub offset: i64,
    pub event: Event,
}

/// Kinds of control batch. Kafka's transaction markers use keys 0 and 1;
/// Weir adds its own Raft entries above Kafka's range so that a Kafka reader
/// sees them as control records to skip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlType {
    Abort,
    Commit,
    /// An empty Raft entry (a new leader's no-op).
    RaftNoop,
    /// A Raft configuration change; the record value holds it.
    RaftConfChange,
    /// A Raft configuration change (v2); the record value holds it.
    RaftConfChangeV2,
}

impl ControlType {
    fn code(self) -> i16 {
        match self {
            ControlType::Abort => 0,
            ControlType::Commit => 1,
            ControlType::RaftNoop => 100,
            ControlType::RaftConfChange => 101,
            ControlType::RaftConfChangeV2 => 102,
        }
    }

    fn from_code(code: i16) -> Option<Self> {
        Some(match code {
            0 => ControlType::Abort,
            1 => ControlType::Commit,
            100 => ControlType::RaftNoop,
            101 => ControlType::RaftConfChange,
            102 => ControlType::RaftConfChangeV2,
            _ => return None,
        })
    }
}

/// Why bytes are not a valid batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// Fewer bytes than the header or `batchLength` require.
    Truncated {
        needed_bytes: usize,
        have_bytes: usize,
    },
    /// `batchLength` too small for a header, or larger than allowed.
    BadLength { batch_length: i64, max_bytes: usize },
    /// A magic byte other than 2.
    BadMagic(i8),
    /// The stored CRC-32C does not match the bytes.
    CrcMismatch { stored: u32, computed: u32 },
    /// A compression codec Weir does not implement yet.
    UnsupportedCompression(i16),
    /// A record or header inside the batch is malformed.
    Malformed(String),
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Truncated {
                needed_bytes,
                have_bytes,
            } => write!(
                f,
                "record batch truncated: needs {needed_bytes} bytes, only {have_bytes} present"
            ),
            RecordError::BadLength {
                batch_length,
                max_bytes,
            } => write!(
                f,
                "record batch length {batch_length} is outside the allowed range \
                 ({} to {max_bytes} bytes)",
                HEADER_SIZE - LOG_OVERHEAD
            ),
            RecordError::BadMagic(m) => write!(
                f,
                "record batch magic {m} is not supported: Weir reads RecordBatch v2 (magic 2) only"
            ),
            RecordError::CrcMismatch { stored, computed } => write!(
                f,
                "record batch CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x} \
                 (the bytes were corrupted)"
            ),
            RecordError::UnsupportedCompression(c) => write!(
                f,
                "record batch compression codec {c} is not supported yet: send uncompressed batches"
            ),
            RecordError::Malformed(what) => write!(f, "malformed record batch: {what}"),
        }
    }
}

impl std::error::Error for RecordError {}

/// The fixed header of a batch, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Decodes and sanity-checks the fixed header at the front of `buf`
    /// (no CRC check: that needs the whole batch). `max_bytes` bounds the
    /// whole batch's size, so a corrupted length cannot ask for gigabytes.
    pub fn parse(buf: &[u8], max_bytes: usize) -> Result<BatchHeader, RecordError> {
        if buf.len() < HEADER_SIZE {
            return Err(RecordError::Truncated {
                needed_bytes: HEADER_SIZE,
                have_bytes: buf.len(),
            });
        }
        let h = BatchHeader {
            base_offset: be_i64(buf, 0),
            batch_length: be_i32(buf, BATCH_LENGTH_POS),
            partition_leader_epoch: be_i32(buf, LEADER_EPOCH_POS),
            magic: buf[MAGIC_POS] as i8,
            crc: be_i32(buf, CRC_POS) as u32,
            attributes: be_i16(buf, ATTRIBUTES_POS),
            last_offset_delta: be_i32(buf, 23),
            base_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, 35),
            producer_id: be_i64(buf, 43),
            producer_epoch: be_i16(buf, 51),
            base_sequence: be_i32(buf, 53),
            records_count: be_i32(buf, 57),
        };
        let total = h.batch_length as i64 + LOG_OVERHEAD as i64;
        if total < HEADER_SIZE as i64 || total as u64 > max_bytes as u64 {
            return Err(RecordError::BadLength {
                batch_length: h.batch_length as i64,
                max_bytes,
            });
        }
        if h.magic != MAGIC {
            return Err(RecordError::BadMagic(h.magic));
        }
        h.check_counts()?;
        Ok(h)
    }

    fn check_counts(&self) -> Result<(), RecordError> {
        let room = (self.size_bytes() - HEADER_SIZE) / RECORD_SIZE_MIN;
        if self.records_count < 1 || self.records_count as usize > room {
            return Err(RecordError::Malformed(format!(
                "records count {} does not fit in {} bytes",
                self.records_count,
                self.size_bytes()
            )));
        }
        // Weir's offsets are dense: a batch of n records spans exactly n
        // offsets (Kafka allows gaps only after compaction, which Weir lacks).
        if self.last_offset_delta != self.records_count - 1 {
            return Err(RecordError::Malformed(format!(
                "last offset delta {} does not match records count {} - 1",
                self.last_offset_delta, self.records_count
            )));
        }
        Ok(())
    }

    /// Total size of the batch in bytes, headers included.
    pub fn size_bytes(&self) -> usize {
        self.batch_length as usize + LOG_OVERHEAD
    }

    /// The offset after the batch's last record.
    pub fn next_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64 + 1
    }

    /// The offset of the batch's last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn compression(&self) -> i16 {
        self.attributes & COMPRESSION_MASK
    }

    /// Whether timestamps are the broker's append time (else create time).
    pub fn log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }
}

/// A checked batch in its encoded form. Cloning shares the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct RecordBatch {
    buf: Bytes,
}

impl fmt::Debug for RecordBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = self.header();
        f.debug_struct("RecordBatch")
            .field("base_offset", &h.base_offset)
            .field("records", &h.records_count)
            .field("epoch", &h.partition_leader_epoch)
            .field("size_bytes", &self.buf.len())
            .field("control", &h.is_control())
            .finish()
    }
}

impl RecordBatch {
    /// Checks header, length and CRC of exactly one batch in `buf`.
    pub fn parse(buf: Bytes, max_bytes: usize) -> Result<RecordBatch, RecordError> {
        let h = BatchHeader::parse(&buf, max_bytes)?;
        if buf.len() < h.size_bytes() {
            return Err(RecordError::Truncated {
                needed_bytes: h.size_bytes(),
                have_bytes: buf.len(),
            });
        }
        if buf.len() > h.size_bytes() {
            return Err(RecordError::Malformed(format!(
                "{} bytes follow the batch's {} bytes",
                buf.len() - h.size_bytes(),
                h.size_bytes()
            )));
        }
        let computed = crc32c::crc32c(&buf[ATTRIBUTES_POS..]);
        if computed != h.crc {
            return Err(RecordError::CrcMismatch {
                stored: h.crc,
                computed,
            });
        }
        if h.compression() != 0 {
            return Err(RecordError::UnsupportedCompression(h.compression()));
        }
        Ok(RecordBatch { buf })
    }

    /// Like [`RecordBatch::parse`], and also decodes every record, so that
    /// a batch from the network is known good before it is stored.
    pub fn parse_full(buf: Bytes, max_bytes: usize) -> Result<RecordBatch, RecordError> {
        let batch = Self::parse(buf, max_bytes)?;
        batch.validate_records()?;
        Ok(batch)
    }

    pub fn header(&self) -> BatchHeader {
        // Checked at construction; every constructor guarantees a full header.
        BatchHeader::parse(&self.buf, usize::MAX).expect("RecordBatch holds a checked header")
    }

    pub fn as_bytes(&self) -> &Bytes {
        &self.buf
    }

    pub fn into_bytes(self) -> Bytes {
        self.buf
    }

    pub fn size_bytes(&self) -> usize {
        self.buf.len()
    }

    pub fn base_offset(&self) -> i64 {
        be_i64(&self.buf, 0)
    }

    pub fn next_offset(&self) -> i64 {
        self.base_offset() + be_i32(&self.buf, 23) as i64 + 1
    }

    pub fn records_count(&self) -> i32 {
        be_i32(&self.buf, 57)
    }

    /// The Raft term the batch was written in.
    pub fn leader_epoch(&self) -> i32 {
        be_i32(&self.buf, LEADER_EPOCH_POS)
    }

    pub fn max_timestamp(&self) -> i64 {
        be_i64(&self.buf, 35)
    }

    pub fn is_control(&self) -> bool {
        be_i16(&self.buf, ATTRIBUTES_POS) & CONTROL_BIT != 0
    }

    /// The batch's fixed header as [`RecordBatch::stamp`] would make it:
    /// with `base_offset` and `leader_epoch`. The log writes it followed by
    /// the rest of the batch, unchanged, rather than copying the batch to
    /// stamp it (neither field is covered by the CRC).
    pub fn stamped_header(&self, base_offset: i64, leader_epoch: i32) -> [u8; HEADER_SIZE] {
        let mut head = [0u8; HEADER_SIZE];
        head.copy_from_slice(&self.buf[..HEADER_SIZE]);
        head[0..8].copy_from_slice(&base_offset.to_be_bytes());
        head[LEADER_EPOCH_POS..LEADER_EPOCH_POS + 4].copy_from_slice(&leader_epoch.to_be_bytes());
        head
    }

    /// Stamps the base offset and leader epoch (the Raft term). Neither is
    /// covered by the CRC, so the batch stays valid. Copies only if the
    /// bytes are shared.
    pub fn stamp(self, base_offset: i64, leader_epoch: i32) -> RecordBatch {
        let mut buf = match self.buf.try_into_mut() {
            Ok(b) => b,
            Err(shared) => BytesMut::from(&shared[..]),
        };
        buf[0..8].copy_from_slice(&base_offset.to_be_bytes());
        buf[LEADER_EPOCH_POS..LEADER_EPOCH_POS + 4].copy_from_slice(&leader_epoch.to_be_bytes());
        RecordBatch { buf: buf.freeze() }
    }

    /// The control type of a control batch (from its first record's key).
    pub fn control_type(&self) -> Result<Option<ControlType>, RecordError> {
        if !self.is_control() {
            return Ok(None);
        }
        let records = self.records()?;
        let key = records
            .first()
            .and_then(|r| r.event.key.as_ref())
            .ok_or_else(|| RecordError::Malformed("control batch without a keyed record".into()))?;
        if key.len() < 4 {
            return Err(RecordError::Malformed(
                "control record key shorter than 4 bytes".into(),
            ));
        }
        let code = i16::from_be_bytes([key[2], key[3]]);
        Ok(ControlType::from_code(code))
    }

    /// Decodes every record. Keys, values and header values share the
    /// batch's bytes rather than copying them.
    pub fn records(&self) -> Result<Vec<Record>, RecordError> {
        let h = self.header();
        let mut records = Vec::with_capacity(h.records_count as usize);
        self.walk(&h, |layout| records.push(layout.record(&self.buf, &h)))?;
        Ok(records)
    }

    /// Decodes the records one at a time into `each`, without collecting
    /// them. On an error, `each` may already have had the records before
    /// the fault: a caller keeping them must drop them again.
    pub fn for_each_record(&self, mut each: impl FnMut(Record)) -> Result<(), RecordError> {
        let h = self.header();
        self.walk(&h, |layout| each(layout.record(&self.buf, &h)))
    }

    /// Checks every record as [`Self::records`] would decode it, without
    /// building them: no allocation for records without headers. This is
    /// what a produced batch pays before it is stored.
    pub fn validate_records(&self) -> Result<(), RecordError> {
        let h = self.header();
        let mut pos = HEADER_SIZE;
        for i in 0..h.records_count {
            match skip_record(&self.buf, pos, i) {
                Some(end) => pos = end,
                // The full parser finds the same fault and says what it is.
                None => return self.walk(&h, |_| {}),
            }
        }
        if pos != self.buf.len() {
            return self.walk(&h, |_| {});
        }
        Ok(())
    }

    /// Parses each record in turn and hands its layout to `each`.
    fn walk(&self, h: &BatchHeader, mut each: impl FnMut(Layout)) -> Result<(), RecordError> {
        let mut pos = HEADER_SIZE;
        for i in 0..h.records_count {
            let layout = match scan_layout(&self.buf, pos, i) {
                Some(layout) => layout,
                // The full parser finds the same fault and says what it is.
                None => parse_record(&self.buf, pos, i).map_err(|e| {
                    RecordError::Malformed(format!("record {i} at byte {pos}: {e}"))
                })?,
            };
            pos = layout.end;
            each(layout);
        }
        if pos != self.buf.len() {
            return Err(RecordError::Malformed(format!(
                "{} bytes left after {} records",
                self.buf.len() - pos,
                h.records_count
            )));
        }
        Ok(())
    }
}

/// Splits consecutive batches, as a fetch returns them or a segment holds
/// them, checking each one's header and CRC. Any bytes that are not a whole
/// valid batch are an error, so callers that must tolerate a partial last
/// batch (Kafka allows a fetch to end in one) check for that themselves.
pub fn split_batches(mut bytes: Bytes, max_bytes: usize) -> Result<Vec<RecordBatch>, RecordError> {
    let mut out = Vec::new();
    // Bounded: each pass consumes at least a header's worth of bytes.
    while !bytes.is_empty() {
        let h = BatchHeader::parse(&bytes, max_bytes)?;
        if h.size_bytes() > bytes.len() {
            return Err(RecordError::Truncated {
                needed_bytes: h.size_bytes(),
                have_bytes: bytes.len(),
            });
        }
        out.push(RecordBatch::parse(
            bytes.split_to(h.size_bytes()),
            max_bytes,
        )?);
    }
    Ok(out)
}

/// Where the parts of one record lie in the batch's bytes, once checked.
#[derive(Debug, PartialEq)]
struct Layout {
    end: usize,
    offset_delta: i32,
    timestamp_delta: i64,
    key: Option<Range<usize>>,
    value: Option<Range<usize>>,
    headers: Vec<HeaderSpan>,
}

/// Where a header's (UTF-8) key and its value lie.
type HeaderSpan = (Range<usize>, Option<Range<usize>>);

impl Layout {
    /// The record, its byte strings sharing the batch's bytes.
    fn record(self, buf: &Bytes, h: &BatchHeader) -> Record {
        let slice = |r: Option<Range<usize>>| r.map(|r| buf.slice(r));
        let headers = self
            .headers
            .into_iter()
            .map(|(k, v)| Header {
                // Checked to be UTF-8 when parsed.
                key: String::from_utf8_lossy(&buf[k]).into_owned(),
                value: slice(v),
            })
            .collect();
        Record {
            offset: h.base_offset + self.offset_delta as i64,
            event: Event {
                key: slice(self.key),
                value: slice(self.value),
                timestamp_ms: h.base_timestamp.wrapping_add(self.timestamp_delta),
                headers,
            },
        }
    }
}

/// Reads the fields of one record from untrusted bytes, reporting where a
/// record went wrong.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl Cursor<'_> {
    fn varlong(&mut self, what: &str) -> Result<i64, String> {
        let (v, n) = get_varlong(&self.buf[self.pos..self.end])
            .ok_or_else(|| format!("bad varint for {what}"))?;
        self.pos += n;
        Ok(v)
    }

    fn varint(&mut self, what: &str) -> Result<i32, String> {
        let (v, n) = get_varint(&self.buf[self.pos..self.end])
            .ok_or_else(|| format!("bad varint for {what}"))?;
        self.pos += n;
        Ok(v)
    }

    fn byte(&mut self) -> Result<u8, String> {
        if self.pos >= self.end {
            return Err("record attributes missing".into());
        }
        self.pos += 1;
        Ok(self.buf[self.pos - 1])
    }

    /// A length-prefixed byte string's place; length -1 is null.
    fn span(&mut self, what: &str) -> Result<Option<Range<usize>>, String> {
        let len = self.varint(what)?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| format!("negative length {len} for {what}"))?;
        if len > self.end - self.pos {
            return Err(format!("{what} of {len} bytes overruns the record"));
        }
        self.pos += len;
        Ok(Some(self.pos - len..self.pos))
    }
}

/// Parses record number `index`, which must carry offset delta `index`:
/// offsets inside a batch are dense, as Kafka's validator also demands.
fn parse_record(buf: &[u8], pos: usize, index: i32) -> Result<Layout, String> {
    let (len, n) = get_varint(&buf[pos..]).ok_or("bad varint for record length")?;
    let len = usize::try_from(len).map_err(|_| format!("negative record length {len}"))?;
    let start = pos + n;
    if len > buf.len() - start {
        return Err(format!("record length {len} overruns the batch"));
    }
    let mut c = Cursor {
        buf,
        pos: start,
        end: start + len,
    };
    let _attributes = c.byte()?;
    let timestamp_delta = c.varlong("timestamp delta")?;
    let offset_delta = c.varint("offset delta")?;
    if offset_delta != index {
        return Err(format!("offset delta {offset_delta}, expected {index}"));
    }
    let key = c.span("key")?;
    let value = c.span("value")?;
    let headers = parse_headers(&mut c)?;
    if c.pos != c.end {
        return Err(format!(
            "{} stray bytes at the end of the record",
            c.end - c.pos
        ));
    }
    Ok(Layout {
        end: c.end,
        offset_delta,
        timestamp_delta,
        key,
        value,
        headers,
    })
}

/// Where record number `index` at `pos` ends, if it is well formed: the
/// checks of [`parse_record`] (and so of `parse_headers`), without building
/// anything or an error message. `validate_records` runs it on every
/// produced record; on `None` it asks `parse_record` what is wrong.
fn skip_record(buf: &[u8], pos: usize, index: i32) -> Option<usize> {
    scan_record(buf, pos, index, |_, _| {}).map(|s| s.end)
}

/// Record number `index` at `pos`, if it is well formed, by the checks of
/// [`parse_record`] without its error messages: the decoder's fast path
/// (a consumer decodes every record it reads); on `None` the caller asks
/// `parse_record` what is wrong.
fn scan_layout(buf: &[u8], pos: usize, index: i32) -> Option<Layout> {
    let mut headers = Vec::new();
    let s = scan_record(buf, pos, index, |key, value| headers.push((key, value)))?;
    Some(Layout {
        end: s.end,
        offset_delta: index,
        timestamp_delta: s.timestamp_delta,
        key: s.key,
        value: s.value,
        headers,
    })
}

/// What [`scan_record`] finds of a record besides its headers.
struct Scanned {
    end: usize,
    timestamp_delta: i64,
    key: Option<Range<usize>>,
    value: Option<Range<usize>>,
}

/// The checks of [`parse_record`] without error messages; hands each
/// header's key and value to `header`.
fn scan_record(
    buf: &[u8],
    pos: usize,
    index: i32,
    mut header: impl FnMut(Range<usize>, Option<Range<usize>>),
) -> Option<Scanned> {
    let (len, n) = get_varint(buf.get(pos..)?)?;
    let len = usize::try_from(len).ok()?;
    let start = pos + n;
    if len > buf.len() - start {
        return None;
    }
    let end = start + len;
    let rec = &buf[..end];
    // Attributes.
    if start >= end {
        return None;
    }
    let mut p = start + 1;
    let (timestamp_delta, n) = get_varlong(&rec[p..])?;
    p += n;
    let (offset_delta, n) = get_varint(&rec[p..])?;
    p += n;
    if offset_delta != index {
        return None;
    }
    // A length-prefixed byte string (-1: null): its place, and where the
    // next field starts.
    let span = |p: usize| -> Option<(Option<Range<usize>>, usize)> {
        let (len, n) = get_varint(&rec[p..])?;
        let p = p + n;
        if len == -1 {
            return Some((None, p));
        }
        let len = usize::try_from(len).ok()?;
        if len > end - p {
            return None;
        }
        Some((Some(p..p + len), p + len))
    };
    let (key, next) = span(p)?;
    let (value, next) = span(next)?;
    p = next;
    let (count, n) = get_varint(&rec[p..])?;
    p += n;
    let count = usize::try_from(count).ok()?;
    if count > (end - p) / 2 {
        return None;
    }
    for _ in 0..count {
        // A header key: never null, UTF-8.
        let (key_len, n) = get_varint(&rec[p..])?;
        let key_len = usize::try_from(key_len).ok()?;
        let key_start = p + n;
        if key_len > end - key_start {
            return None;
        }
        let key = key_start..key_start + key_len;
        std::str::from_utf8(&rec[key.clone()]).ok()?;
        let (value, next) = span(key.end)?;
        header(key, value);
        p = next;
    }
    if p != end {
        return None;
    }
    Some(Scanned {
        end,
        timestamp_delta,
        key,
        value,
    })
}

fn parse_headers(c: &mut Cursor<'_>) -> Result<Vec<HeaderSpan>, String> {
    let count = c.varint("header count")?;
    let count = usize::try_from(count).map_err(|_| format!("negative header count {count}"))?;
    // Each header takes at least two bytes: bound the allocation by the input.
    if count > (c.end - c.pos) / 2 {
        return Err(format!("header count {count} does not fit in the record"));
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let key = c.span("header key")?.ok_or("null header key")?;
        std::str::from_utf8(&c.buf[key.clone()]).map_err(|_| "header key is not UTF-8")?;
        let value = c.span("header value")?;
        headers.push((key, value));
    }
    Ok(headers)
}

/// Builds a batch from events. Offsets inside the batch are 0, 1, 2, ...;
/// the base offset and epoch are stamped when the log assigns them.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: BytesMut,
    attributes: i16,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchBuilder {
    pub fn new() -> Self {
        let mut buf = BytesMut::with_capacity(HEADER_SIZE + 256);
        buf.resize(HEADER_SIZE, 0);
        BatchBuilder {
            buf,
            attributes: 0,
            count: 0,
            base_timestamp: 0,
            max_timestamp: i64::MIN,
        }
    }

    /// A builder whose buffer holds `bytes` (header included) before it
    /// grows: a producer that knows its batch size encodes into one
    /// allocation instead of doubling its way up.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = BytesMut::with_capacity(bytes.max(HEADER_SIZE + 256));
        buf.resize(HEADER_SIZE, 0);
        BatchBuilder {
            buf,
            attributes: 0,
            count: 0,
            base_timestamp: 0,
            max_timestamp: i64::MIN,
        }
    }

    /// A control batch of one record, as Kafka writes control records: key =
    /// version (i16 0) and type (i16), value given.
    pub fn control(kind: ControlType, value: Bytes, timestamp_ms: i64) -> RecordBatch {
        let mut key = BytesMut::with_capacity(4);
        key.put_i16(0);
        key.put_i16(kind.code());
        let mut b = BatchBuilder::new();
        b.attributes |= CONTROL_BIT;
        b.push(&Event {
            key: Some(key.freeze()),
            value: Some(value),
            timestamp_ms,
            headers: Vec::new(),
        });
        b.build()
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes the batch would take if built now.
    pub fn size_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Encoded size the event would add.
    pub fn record_size_bytes(&self, e: &Event) -> usize {
        let body = self.body_len(e);
        varlong_len(body as i64) + body
    }

    /// Bytes `e` takes as the first record of a batch, without a builder
    /// (whose buffer is an allocation): what a producer accounts per record.
    pub fn lone_record_size_bytes(e: &Event) -> usize {
        let body = body_len_at(e, 0, 0);
        varlong_len(body as i64) + body
    }

    fn body_len(&self, e: &Event) -> usize {
        let ts_delta = e.timestamp_ms.wrapping_sub(self.base_ts_for(e));
        body_len_at(e, ts_delta, self.count)
    }

    fn base_ts_for(&self, e: &Event) -> i64 {
        if self.count == 0 {
            e.timestamp_ms
        } else {
            self.base_timestamp
        }
    }

    pub fn push(&mut self, e: &Event) {
        if self.count == 0 {
            self.base_timestamp = e.timestamp_ms;
        }
        let body = self.body_len(e);
        let ts_delta = e.timestamp_ms.wrapping_sub(self.base_timestamp);
        let before = self.buf.len();
        let total = varlong_len(body as i64) + body;
        self.buf.reserve(total);
        // The fields around the key and value are encoded on the stack and
        // copied in one piece each (two or three per record instead of one
        // call per field): a producer pushes every record it sends.
        let mut head = [0u8; RECORD_HEAD_BYTES_MAX];
        let mut n = write_varlong(&mut head, 0, body as i64);
        n += 1; // attributes, unused: 0
        n = write_varlong(&mut head, n, ts_delta);
        n = write_varlong(&mut head, n, i64::from(self.count));
        n = write_opt_len(&mut head, n, &e.key);
        if let Some(key) = &e.key {
            self.buf.put_slice(&head[..n]);
            self.buf.put_slice(key);
            n = 0;
        }
        n = write_opt_len(&mut head, n, &e.value);
        self.buf.put_slice(&head[..n]);
        if let Some(value) = &e.value {
            self.buf.put_slice(value);
        }
        let buf = &mut self.buf;
        put_varint(buf, e.headers.len() as i32);
        for h in &e.headers {
            put_varint(buf, h.key.len() as i32);
            buf.put_slice(h.key.as_bytes());
            put_opt(buf, &h.value);
        }
        debug_assert_eq!(buf.len() - before, total, "record size computed ahead");
        self.max_timestamp = self.max_timestamp.max(e.timestamp_ms);
        self.count += 1;
    }

    /// Finishes the batch: fills the header and computes the CRC. Base
    /// offset 0 and epoch -1 until stamped; producer id -1 (no idempotence).
    pub fn build(self) -> RecordBatch {
        assert!(self.count > 0, "a batch holds at least one record");
        let mut buf = self.buf;
        let total = buf.len();
        let mut h = &mut buf[..HEADER_SIZE];
        h.put_i64(0);
        h.put_i32((total - LOG_OVERHEAD) as i32);
        h.put_i32(-1);
        h.put_i8(MAGIC);
        h.put_u32(0);
        h.put_i16(self.attributes);
        h.put_i32((self.count - 1).max(0));
        h.put_i64(self.base_timestamp);
        h.put_i64(self.max_timestamp.max(self.base_timestamp));
        h.put_i64(-1);
        h.put_i16(-1);
        h.put_i32(-1);
        h.put_i32(self.count);
        let crc = crc32c::crc32c(&buf[ATTRIBUTES_POS..]);
        buf[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
        RecordBatch { buf: buf.freeze() }
    }
}

/// Bytes of a record's body (after its length varint) at `ts_delta` and
/// `offset_delta` in its batch.
fn body_len_at(e: &Event, ts_delta: i64, offset_delta: i32) -> usize {
    let opt_len = |b: &Option<Bytes>| match b {
        None => 1,
        Some(b) => varlong_len(b.len() as i64) + b.len(),
    };
    let headers: usize = e
        .headers
        .iter()
        .map(|h| varlong_len(h.key.len() as i64) + h.key.len() + opt_len(&h.value))
        .sum();
    1 + varlong_len(ts_delta)
        + varlong_len(offset_delta as i64)
        + opt_len(&e.key)
        + opt_len(&e.value)
        + varlong_len(e.headers.len() as i64)
        + headers
}

/// Room for what a record holds before its key's bytes (its length,
/// attributes, timestamp delta, offset delta and key length) or, without a
/// key, before its value's bytes (one more length): four varints and the
/// attributes byte, each varint given the longest encoding.
const RECORD_HEAD_BYTES_MAX: usize = 1 + 5 * VARLONG_BYTES_MAX;

/// Encodes the length of an optional key or value (-1 for none) at `at`.
fn write_opt_len(out: &mut [u8], at: usize, b: &Option<Bytes>) -> usize {
    let len = b.as_ref().map_or(-1, |b| b.len() as i64);
    write_varlong(out, at, len)
}

fn put_opt(buf: &mut BytesMut, b: &Option<Bytes>) {
    match b {
        None => put_varint(buf, -1),
        Some(b) => {
            put_varint(buf, b.len() as i32);
            buf.put_slice(b);
        }
    }
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::{Arbitrary, Gen, QuickCheck};

    const MAX: usize = 1 << 20;

    #[derive(Clone, Debug)]
    struct Events(Vec<Event>);

    fn opt_bytes(g: &mut Gen) -> Option<Bytes> {
        Option::<Vec<u8>>::arbitrary(g).map(Bytes::from)
    }

    impl Arbitrary for Events {
        fn arbitrary(g: &mut Gen) -> Self {
            let n = 1 + usize::arbitrary(g) % 20;
            let base = i64::arbitrary(g) >> 2;
            let events = (0..n)
                .map(|_| Event {
                    key: opt_bytes(g),
                    value: opt_bytes(g),
                    // Deltas may be negative: timestamps need not be ordered.
                    timestamp_ms: base + (i32::arbitrary(g) as i64),
                    headers: (0..usize::arbitrary(g) % 4)
                        .map(|_| Header {
                            key: String::arbitrary(g),
                            value: opt_bytes(g),
                        })
                        .collect(),
                })
                .collect();
            Events(events)
        }
    }

    fn build(events: &[Event]) -> RecordBatch {
        let mut b = BatchBuilder::new();
        for e in events {
            let before = b.size_bytes();
            let predicted = b.record_size_bytes(e);
            b.push(e);
            assert_eq!(b.size_bytes() - before, predicted);
        }
        b.build()
    }

    fn round_trip(events: Events, base_offset: u32, epoch: u16) -> bool {
        let batch = build(&events.0).stamp(base_offset as i64, epoch as i32);
        let parsed = RecordBatch::parse_full(batch.as_bytes().clone(), MAX).unwrap();
        let records = parsed.records().unwrap();
        let h = parsed.header();
        records.len() == events.0.len()
            && records
                .iter()
                .enumerate()
                .all(|(i, r)| r.offset == base_offset as i64 + i as i64 && r.event == events.0[i])
            && h.base_offset == base_offset as i64
            && h.partition_leader_epoch == epoch as i32
            && h.next_offset() == base_offset as i64 + events.0.len() as i64
            && h.max_timestamp == events.0.iter().map(|e| e.timestamp_ms).max().unwrap()
            && h.size_bytes() == parsed.size_bytes()
    }

    #[test]
    fn lone_record_size_is_a_fresh_builders() {
        let events = [
            Event::default(),
            Event {
                key: Some(Bytes::from_static(b"k")),
                value: Some(Bytes::from(vec![7u8; 300])),
                timestamp_ms: 1_700_000_000_000,
                headers: vec![Header {
                    key: "h".into(),
                    value: Some(Bytes::from_static(b"v")),
                }],
            },
            Event {
                timestamp_ms: -5,
                ..Event::default()
            },
        ];
        for e in &events {
            assert_eq!(
                BatchBuilder::lone_record_size_bytes(e),
                BatchBuilder::new().record_size_bytes(e),
                "{e:?}"
            );
            let mut b = BatchBuilder::new();
            b.push(e);
            let batch = b.build();
            assert_eq!(
                batch.size_bytes() - HEADER_SIZE,
                BatchBuilder::lone_record_size_bytes(e)
            );
        }
    }

    #[test]
    fn quickcheck_round_trip() {
        crate::test_seed::quickcheck(
            QuickCheck::new().tests(300),
            round_trip as fn(Events, u32, u16) -> bool,
        );
    }

    /// Any single flipped bit is caught: in the CRC-covered range by the CRC,
    /// in the header by a sanity check, or it lands in baseOffset or the
    /// epoch, which the CRC deliberately excludes.
    fn bit_flip_detected(events: Events, at: usize, bit: u8) -> bool {
        let batch = build(&events.0);
        let mut bytes = batch.as_bytes().to_vec();
        let at = at % bytes.len();
        bytes[at] ^= 1 << (bit % 8);
        let result = RecordBatch::parse(Bytes::from(bytes), MAX);
        let uncovered = at < 8 || (LEADER_EPOCH_POS..LEADER_EPOCH_POS + 4).contains(&at);
        uncovered || result.is_err()
    }

    #[test]
    fn quickcheck_bit_flips() {
        crate::test_seed::quickcheck(
            QuickCheck::new().tests(500),
            bit_flip_detected as fn(Events, usize, u8) -> bool,
        );
    }

    /// Arbitrary bytes never panic the decoder, and anything accepted is a
    /// batch whose records decode and whose size matches its length.
    fn garbage_is_safe(bytes: Vec<u8>) -> bool {
        match RecordBatch::parse_full(Bytes::from(bytes.clone()), MAX) {
            Ok(b) => b.size_bytes() == bytes.len() && b.records().is_ok(),
            Err(_) => true,
        }
    }

    #[test]
    fn quickcheck_garbage() {
        crate::test_seed::quickcheck(
            QuickCheck::new().tests(2000),
            garbage_is_safe as fn(Vec<u8>) -> bool,
        );
    }

    /// Garbage after a valid header, with a correct CRC, still decodes to an
    /// error or to records, never a panic: the CRC is no defence against a
    /// malicious producer.
    fn validation_agrees_with_decoding(count: u8, body: Vec<u8>) -> bool {
        let mut buf = build(&[Event::default()]).as_bytes().to_vec();
        buf.truncate(HEADER_SIZE);
        buf.extend_from_slice(&body);
        let len = (buf.len() - LOG_OVERHEAD) as i32;
        buf[8..12].copy_from_slice(&len.to_be_bytes());
        let n = (count % 4) as i32 + 1;
        buf[23..27].copy_from_slice(&(n - 1).to_be_bytes());
        buf[57..61].copy_from_slice(&n.to_be_bytes());
        let crc = crc32c::crc32c(&buf[ATTRIBUTES_POS..]);
        buf[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
        match RecordBatch::parse(Bytes::from(buf), MAX) {
            Ok(b) => b.validate_records().is_ok() == b.records().is_ok(),
            Err(_) => true,
        }
    }

    /// The fast walk alone (no fallback to the full parser).
    fn skip_walk_ok(b: &RecordBatch) -> bool {
        let h = b.header();
        let mut pos = HEADER_SIZE;
        for i in 0..h.records_count {
            match skip_record(b.as_bytes(), pos, i) {
                Some(end) => pos = end,
                None => return false,
            }
        }
        pos == b.size_bytes()
    }

    /// A well-formed batch of `e` with one byte of its records set to
    /// `byte` and the CRC fixed up; None if the header no longer parses.
    fn with_byte_changed(e: &Events, at: usize, byte: u8) -> Option<RecordBatch> {
        let mut buf = build(&e.0).as_bytes().to_vec();
        if buf.len() > HEADER_SIZE {
            let i = HEADER_SIZE + at % (buf.len() - HEADER_SIZE);
            buf[i] = byte;
        }
        let crc = crc32c::crc32c(&buf[ATTRIBUTES_POS..]);
        buf[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
        RecordBatch::parse(Bytes::from(buf), MAX).ok()
    }

    /// Every record's layout by `parse` alone (no fallback), or None at the
    /// first record it refuses or if bytes are left over.
    fn layouts_by(
        b: &RecordBatch,
        parse: impl Fn(&[u8], usize, i32) -> Option<Layout>,
    ) -> Option<Vec<Layout>> {
        let h = b.header();
        let mut pos = HEADER_SIZE;
        let mut out = Vec::new();
        for i in 0..h.records_count {
            let layout = parse(b.as_bytes(), pos, i)?;
            pos = layout.end;
            out.push(layout);
        }
        (pos == b.size_bytes()).then_some(out)
    }

    /// The reference: the full parser, which says what is wrong.
    fn full_layouts(b: &RecordBatch) -> Option<Vec<Layout>> {
        layouts_by(b, |buf, pos, i| parse_record(buf, pos, i).ok())
    }

    /// One byte of a well-formed batch's records changed (CRC fixed up):
    /// the fast walk accepts exactly what the full parser accepts.
    fn skip_agrees_after_change(e: Events, at: usize, byte: u8) -> bool {
        with_byte_changed(&e, at, byte)
            .is_none_or(|b| skip_walk_ok(&b) == full_layouts(&b).is_some())
    }

    /// One byte changed as above: the decoder's fast path finds the same
    /// records, in the same places, as the full parser, or refuses the
    /// same batches.
    fn scan_agrees_after_change(e: Events, at: usize, byte: u8) -> bool {
        with_byte_changed(&e, at, byte)
            .is_none_or(|b| layouts_by(&b, scan_layout) == full_layouts(&b))
    }

    #[test]
    fn quickcheck_fast_decoding_agrees_with_the_full_parser() {
        crate::test_seed::quickcheck(
            QuickCheck::new().tests(3000),
            scan_agrees_after_change as fn(Events, usize, u8) -> bool,
        );
    }

    /// One byte changed as above: records handed out one at a time are the
    /// records decoded at once, and a batch that fails one way fails the
    /// other.
    fn one_at_a_time_agrees_with_decoding(e: Events, at: usize, byte: u8) -> bool {
        let Some(b) = with_byte_changed(&e, at, byte) else {
            return true;
        };
        let mut seen = Vec::new();
        let walked = b.for_each_record(|r| seen.push(r));
        match b.records() {
            Ok(all) => walked.is_ok() && seen == all,
            Err(_) => walked.is_err(),
        }
    }

    #[test]
    fn quickcheck_one_at_a_time_agrees_with_decoding() {
        crate::test_seed::quickcheck(
            QuickCheck::new().tests(2000),
            one_at_a_time_agrees_with_decoding as fn(Events, usize, u8) -> bool,
        );
    }

    #[test]
    fn quickcheck_fast_validation_agrees_with_decoding() {
        QuickCheck::new()
            .tests(3000)
            .quickcheck(skip_agrees_after_change as fn(Events, usize, u8) -> bool);
        QuickCheck::new()
            .tests(200)
            .quickcheck((|e: Events| skip_walk_ok(&build(&e.0))) as fn(Events) -> bool);
    }

    #[test]
    fn quickcheck_validation_agrees_with_decoding() {
        crate::test_seed::quickcheck(
            QuickCheck::new().tests(3000),
            validation_agrees_with_decoding as fn(u8, Vec<u8>) -> bool,
        );
        // And on well-formed batches.
        crate::test_seed::quickcheck(
            QuickCheck::new().tests(200),
            (|e: Events| build(&e.0).validate_records().is_ok()) as fn(Events) -> bool,
        );
    }

    fn garbage_records_with_valid_crc(count: u8, body: Vec<u8>) -> bool {
        let mut buf = build(&[Event::default()]).as_bytes().to_vec();
        buf.truncate(HEADER_SIZE);
        buf.extend_from_slice(&body);
        let len = (buf.len() - LOG_OVERHEAD) as i32;
        buf[8..12].copy_from_slice(&len.to_be_bytes());
        let n = (count % 8) as i32 + 1;
        buf[23..27].copy_from_slice(&(n - 1).to_be_bytes());
        buf[57..61].copy_from_slice(&n.to_be_bytes());
        let crc = crc32c::crc32c(&buf[ATTRIBUTES_POS..]);
        buf[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
        match RecordBatch::parse(Bytes::from(buf), MAX) {
            Ok(b) => {
                let _ = b.records();
                true
            }
            Err(_) => true,
        }
    }

    #[test]
    fn quickcheck_garbage_records() {
        crate::test_seed::quickcheck(
            QuickCheck::new().tests(2000),
            garbage_records_with_valid_crc as fn(u8, Vec<u8>) -> bool,
        );
    }

    #[test]
    fn header_layout_matches_kafka() {
        let e = Event {
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"v")),
            timestamp_ms: 1_700_000_000_000,
            headers: vec![],
        };
        let batch = build(&[e]).stamp(42, 7);
        let b = batch.as_bytes();
        assert_eq!(be_i64(b, 0), 42);
        assert_eq!(be_i32(b, 8) as usize, b.len() - 12);
        assert_eq!(be_i32(b, 12), 7);
        assert_eq!(b[16], 2);
        assert_eq!(be_i64(b, 43), -1, "producer id");
        assert_eq!(be_i32(b, 57), 1, "record count");
        // The single record: length 8 (zig-zag 16 = 0x10), attributes 0,
        // timestamp delta 0, offset delta 0, key length 1 (0x02), 'k',
        // value length 1, 'v', no headers.
        assert_eq!(&b[61..], &[0x10, 0, 0, 0, 0x02, b'k', 0x02, b'v', 0]);
    }

    #[test]
    fn errors_name_the_problem() {
        let batch = build(&[Event::default()]);
        let mut bytes = batch.as_bytes().to_vec();
        bytes[16] = 1;
        let err = RecordBatch::parse(Bytes::from(bytes), MAX).unwrap_err();
        assert_eq!(err, RecordError::BadMagic(1));
        assert!(err.to_string().contains("magic 2"));

        let short = batch.as_bytes().slice(..batch.size_bytes() - 1);
        assert!(matches!(
            RecordBatch::parse(short, MAX),
            Err(RecordError::Truncated { .. })
        ));
        let too_big = RecordBatch::parse(batch.as_bytes().clone(), 64);
        assert!(matches!(too_big, Err(RecordError::BadLength { .. })));

        let mut bytes = batch.as_bytes().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        let err = RecordBatch::parse(Bytes::from(bytes), MAX).unwrap_err();
        assert!(matches!(err, RecordError::CrcMismatch { .. }), "{err}");
    }

    #[test]
    fn split_batches_takes_whole_batches_only() {
        let a = build(&[Event::default()]).stamp(0, 1);
        let b = build(&[Event::default(), Event::default()]).stamp(1, 1);
        let mut both = a.as_bytes().to_vec();
        both.extend_from_slice(b.as_bytes());
        let split = split_batches(Bytes::from(both.clone()), MAX).unwrap();
        assert_eq!(split, vec![a, b]);
        both.pop();
        let err = split_batches(Bytes::from(both), MAX).unwrap_err();
        assert!(matches!(err, RecordError::Truncated { .. }), "{err}");
    }

    #[test]
    fn control_batches_carry_their_type() {
        let c = BatchBuilder::control(ControlType::RaftConfChange, Bytes::from_static(b"cc"), 5);
        assert!(c.is_control());
        assert_eq!(c.control_type().unwrap(), Some(ControlType::RaftConfChange));
        assert_eq!(
            c.records().unwrap()[0].event.value.as_deref(),
            Some(&b"cc"[..])
        );
        let data = build(&[Event::default()]);
        assert_eq!(data.control_type().unwrap(), None);
    }

    #[test]
    fn stamp_copies_only_shared_bytes() {
        let batch = build(&[Event::default()]);
        let shared = batch.clone();
        let stamped = batch.stamp(9, 3);
        assert_eq!(shared.base_offset(), 0, "the shared copy is untouched");
        assert_eq!(stamped.base_offset(), 9);
        assert_eq!(stamped.leader_epoch(), 3);
        assert!(RecordBatch::parse(stamped.into_bytes(), MAX).is_ok());
    }

    #[test]
    fn stamped_header_then_the_rest_is_the_stamped_batch() {
        let batch = build(&[Event::default(), Event::default()]);
        let head = batch.stamped_header(1_234, 5);
        let mut bytes = head.to_vec();
        bytes.extend_from_slice(&batch.as_bytes()[HEADER_SIZE..]);
        assert_eq!(bytes, batch.clone().stamp(1_234, 5).as_bytes()[..]);
        assert_eq!(batch.base_offset(), 0, "the batch itself is untouched");
        assert!(RecordBatch::parse(Bytes::from(bytes), MAX).is_ok());
    }
}
