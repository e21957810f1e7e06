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
    /// With [`Scanner::tolerating_crc`]: the first batch whose CRC did not
    /// hold, stepped over.
    crc_damage: Option<(u64, String)>,
    tolerate_crc: bool,
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
            crc_damage: None,
            tolerate_crc: false,
        }
    }

    /// Steps over a batch whose header is sound but whose CRC does not hold
    /// (a flipped bit in its data), noting the first such in
    /// [`Scanner::crc_damage`], instead of stopping there.
    pub fn tolerating_crc(mut self) -> Self {
        self.tolerate_crc = true;
        self
    }

    /// The first batch stepped over for its CRC, and why.
    pub fn crc_damage(&self) -> Option<&(u64, String)> {
        self.crc_damage.as_ref()
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
                let reason = format!(
                    "CRC-32C mismatch: stored {:#010x}, computed {computed:#010x}",
                    header.crc
                );
                if !self.tolerate_crc {
                    return Err(damaged(reason));
                }
                self.crc_damage.get_or_insert((position, reason));
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

/// The unit a disk writes whole or not at all, and the alignment of what a
/// crash can lose.
const SECTOR_BYTES: u64 = 512;
/// A batch header's base offset: 8 bytes that are zero only in the very
/// first batch of a log, which starts a segment (a sector boundary).
const BASE_OFFSET_BYTES: u64 = 8;

/// Whether damage at `position` is a torn write rather than corruption of
/// data that may have been synced.
///
/// An fsync makes everything written before it durable, so a torn write can
/// only be followed by other unsynced writes. A crash before writeback
/// finished can lose any of the unsynced sectors, in any order (page-cache
/// writeback and the disk's cache both reorder), while later ones land; a
/// lost sector keeps what it held before: zeros, after whatever part of it
/// an earlier write had made durable. So the damage is a torn write if no
/// valid batch follows it, or if, up to the next valid batch, some sector
/// ends in zeros that start where the damage starts (the damaged batch's
/// header never landed; at least its base offset, which no later batch has
/// as zeros) or cover the whole sector. Otherwise (damage with no lost
/// sector, as a flipped bit leaves) it is corruption and must not be cut
/// off: the data after it may have been acknowledged.
///
/// A flipped bit in a batch whose data held 1 KiB or more of zeros in a row
/// (so a whole aligned sector) is still taken for a torn write; one in a
/// batch that merely ends in zeros (padded values) is not.
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
    Ok(holds_lost_sector(&rest[..next_valid], position))
}

/// Whether `damaged`, which starts at file offset `start`, shows a lost
/// sector: a sector-aligned sector whose part inside `damaged` is all zeros
/// and either is the whole sector or starts at `start` and covers at least
/// a base offset.
fn holds_lost_sector(damaged: &[u8], start: u64) -> bool {
    let end = start + damaged.len() as u64;
    let mut sector_end = (start / SECTOR_BYTES + 1) * SECTOR_BYTES;
    while sector_end <= end {
        let from = (sector_end - SECTOR_BYTES).max(start);
        let part = &damaged[(from - start) as usize..(sector_end - start) as usize];
        // A whole sector, or the first one's part from `start`: which must
        // hold a whole base offset to rule out a header's leading zeros.
        if part.len() as u64 >= BASE_OFFSET_BYTES && part.iter().all(|&b| b == 0) {
            return true;
        }
        sector_end += SECTOR_BYTES;
    }
    false
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_sector_is_a_whole_sector_of_zeros_or_the_start_of_the_damage() {
        let mut bytes = vec![7u8; 4096];
        // 500 zeros at 1100..1600 cover no whole sector (1024..1536 and
        // 1536..2048 both hold sevens) and do not start the damage.
        bytes[1100..1600].fill(0);
        assert!(!holds_lost_sector(&bytes, 0));
        // Zeros at the end, as a padded value leaves: the sector they are
        // in goes on past the damage.
        bytes[4000..].fill(0);
        assert!(!holds_lost_sector(&bytes[..4090], 0));
        // The sector at 2048..2560 lost.
        bytes[2048..2560].fill(0);
        assert!(holds_lost_sector(&bytes, 0));
        // Alignment is by file offset: the same bytes read from offset 100
        // put those zeros at 2148..2660, which covers no whole sector; read
        // from offset 512, at 2560..3072, which is one.
        assert!(!holds_lost_sector(&bytes, 100));
        assert!(holds_lost_sector(&bytes, 512));
    }

    #[test]
    fn zeros_from_the_start_of_the_damage_to_a_sector_end_count_from_eight() {
        // Damage at file offset 1000: its sector ends at 1024.
        let mut bytes = vec![7u8; 100];
        bytes[..24].fill(0);
        assert!(holds_lost_sector(&bytes, 1000));
        // At 1017 only 7 bytes reach the sector end: a base offset's leading
        // zeros could be that, so it is not taken as lost.
        assert!(!holds_lost_sector(&bytes[17..], 1017));
        bytes[..24].fill(7);
        bytes[..8].fill(0);
        assert!(holds_lost_sector(&bytes[..], 1016));
        // Zeros from the start that stop short of the sector end.
        bytes[..20].fill(0);
        assert!(!holds_lost_sector(&bytes, 1000));
    }
}
