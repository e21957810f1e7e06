//! Walking the batches of a segment file: the one place that reads batch
//! headers from disk, used to recover a segment on open, to find a batch by
//! offset, index or time, and to cut reads at batch boundaries.

use crate::io::DiskFile;
use crate::types::record::{BatchHeader, HEADER_SIZE};
use std::io;

/// Bytes read from the file at a time while validating whole batches.
const WINDOW_BYTES: usize = 256 * 1024;
/// Bytes read at a time while walking headers only (a lookup from a sparse
/// index entry crosses about one index interval).
const HEADER_WINDOW_BYTES: usize = 16 * 1024;

/// A batch found in a segment: where it starts and its header.
#[derive(Clone, Copy, Debug)]
pub struct Scanned {
    pub position: u64,
    pub header: BatchHeader,
}

/// Why a walk stopped before the end of the file.
#[derive(Debug)]
pub enum ScanError {
    Io(io::Error),
    /// The bytes at `position` are not a valid batch.
    Damaged {
        position: u64,
        reason: String,
    },
}

/// Walks batches from `position` to `end`, reading the file in windows.
pub struct Scanner<'a> {
    file: &'a dyn DiskFile,
    position: u64,
    end: u64,
    verify_crc: bool,
    max_batch_bytes: usize,
    window: Vec<u8>,
    window_start: u64,
}

impl<'a> Scanner<'a> {
    /// With `verify_crc`, each batch is read whole and its CRC-32C checked;
    /// without, only headers are read (for lookups in validated segments).
    pub fn new(
        file: &'a dyn DiskFile,
        position: u64,
        end: u64,
        verify_crc: bool,
        max_batch_bytes: usize,
    ) -> Self {
        Scanner {
            file,
            position,
            end,
            verify_crc,
            max_batch_bytes,
            window: Vec::new(),
            window_start: 0,
        }
    }

    /// Where the next batch would start.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The next batch, `None` at the end, or why the bytes are not a batch.
    pub fn next_batch(&mut self) -> Result<Option<Scanned>, ScanError> {
        if self.position == self.end {
            return Ok(None);
        }
        let position = self.position;
        let damaged = |reason: String| ScanError::Damaged { position, reason };
        if self.end - position < HEADER_SIZE as u64 {
            return Err(damaged(format!(
                "{} bytes at the end are too few for a batch header",
                self.end - position
            )));
        }
        let max_batch_bytes = self.max_batch_bytes;
        let head = self.bytes(position, HEADER_SIZE)?;
        let header =
            BatchHeader::parse(head, max_batch_bytes).map_err(|e| damaged(e.to_string()))?;
        let size = header.size_bytes() as u64;
        if size > self.end - position {
            return Err(damaged(format!(
                "batch of {size} bytes runs past the end of the file ({} bytes left)",
                self.end - position
            )));
        }
        if self.verify_crc {
            let whole = self.bytes(position, size as usize)?;
            let computed = crc32c::crc32c(&whole[21..]);
            if computed != header.crc {
                return Err(damaged(format!(
                    "CRC-32C mismatch: stored {:#010x}, computed {computed:#010x}",
                    header.crc
                )));
            }
        }
        self.position += size;
        Ok(Some(Scanned { position, header }))
    }

    /// `len` bytes at `position`, from the window or a fresh read.
    fn bytes(&mut self, position: u64, len: usize) -> Result<&[u8], ScanError> {
        let in_window = position >= self.window_start
            && position + len as u64 <= self.window_start + self.window.len() as u64;
        if !in_window {
            let window = if self.verify_crc {
                WINDOW_BYTES
            } else {
                HEADER_WINDOW_BYTES
            };
            let want = (self.end - position).min(len.max(window) as u64) as usize;
            self.window.resize(want, 0);
            crate::io::read_exact_at(self.file, &mut self.window, position)
                .map_err(ScanError::Io)?;
            self.window_start = position;
        }
        let from = (position - self.window_start) as usize;
        Ok(&self.window[from..from + len])
    }
}

/// Whether damage at `position` is a torn write rather than corruption of
/// data that may have been synced.
///
/// Appends are written in order, and an fsync makes everything written
/// before it durable. So a torn write can only be followed by other unsynced
/// writes, and the bytes a crash failed to write read back as zeros (the
/// file was extended but the blocks never landed). The damage is taken as
/// torn if no valid batch follows it, or if the damaged stretch up to the next
/// valid batch ends in zeros; otherwise (non-zero garbage followed by good
/// data, as a flipped bit leaves) it is corruption and must not be truncated
/// away, since the data after it may have been acknowledged.
pub fn damage_is_torn_write(
    file: &dyn DiskFile,
    position: u64,
    end: u64,
    max_batch_bytes: usize,
) -> io::Result<bool> {
    // Recovery only: the rest of one active segment (bounded by the segment
    // size) is read at once.
    let mut rest = vec![0u8; (end - position) as usize];
    crate::io::read_exact_at(file, &mut rest, position)?;
    let Some(next_valid) = (1..rest.len()).find(|&q| valid_batch_at(&rest[q..], max_batch_bytes))
    else {
        return Ok(true);
    };
    let damaged = &rest[..next_valid];
    const ZERO_TAIL_BYTES: usize = 64;
    let zero_tail = damaged.iter().rev().take_while(|&&b| b == 0).count();
    Ok(zero_tail >= ZERO_TAIL_BYTES.min(damaged.len()))
}

fn valid_batch_at(buf: &[u8], max_batch_bytes: usize) -> bool {
    // Cheap filter first: the magic byte.
    if buf.len() < HEADER_SIZE || buf[16] != 2 {
        return false;
    }
    match BatchHeader::parse(buf, max_batch_bytes) {
        Ok(h) => h.size_bytes() <= buf.len() && crc32c::crc32c(&buf[21..h.size_bytes()]) == h.crc,
        Err(_) => false,
    }
}
