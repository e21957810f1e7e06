//! Small files replaced atomically: write a temporary file, fsync it, rename
//! it over the old one, fsync the directory. A reader sees the old contents
//! or the new, never a mix; the CRC-32C trailer catches anything else.

use super::{io_err, Result, StorageError};
use crate::io::{read_exact_at, Disk, OpenMode};
use std::path::Path;

/// Largest atomic file. Most hold a few fields; a sealed segment's index
/// file holds its sparse index (20 bytes per entry, at most
/// `INDEX_ENTRIES_MAX` of them, see `LogConfig::validate`).
pub const FILE_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Replaces `dir/name` with `body` plus a CRC-32C trailer, durably.
pub fn write(disk: &dyn Disk, dir: &Path, name: &str, body: &[u8]) -> Result<()> {
    write_tmp(disk, dir, name, body)?;
    rename_tmp(disk, dir, name)?;
    disk.sync_dir(dir)
        .map_err(io_err(|| format!("fsync directory {}", dir.display())))
}

/// The first half of [`write`]: `dir/name.tmp` holds `body` and its
/// trailer, durably; `dir/name` is untouched. For writers that must check,
/// between the two halves, that the new contents still hold.
pub fn write_tmp(disk: &dyn Disk, dir: &Path, name: &str, body: &[u8]) -> Result<()> {
    assert!(
        body.len() as u64 + 4 <= FILE_BYTES_MAX,
        "atomic file too large"
    );
    let tmp = tmp_path(dir, name);
    let mut file = disk
        .open(&tmp, OpenMode::CreateTruncate)
        .map_err(io_err(|| format!("create {}", tmp.display())))?;
    let mut buf = Vec::with_capacity(body.len() + 4);
    buf.extend_from_slice(body);
    buf.extend_from_slice(&crc32c::crc32c(body).to_be_bytes());
    file.append(&buf)
        .map_err(io_err(|| format!("write {}", tmp.display())))?;
    file.sync()
        .map_err(io_err(|| format!("fsync {}", tmp.display())))
}

/// The second half of [`write`], but for the directory sync: the file
/// written by [`write_tmp`] replaces `dir/name`.
pub fn rename_tmp(disk: &dyn Disk, dir: &Path, name: &str) -> Result<()> {
    let tmp = tmp_path(dir, name);
    disk.rename(&tmp, &dir.join(name))
        .map_err(io_err(|| format!("rename {} to {name}", tmp.display())))
}

/// Where [`write_tmp`] writes `name`.
pub fn tmp_path(dir: &Path, name: &str) -> std::path::PathBuf {
    dir.join(format!("{name}.tmp"))
}

/// Reads `dir/name` and checks its trailer; `Ok(None)` if it does not exist.
pub fn read(disk: &dyn Disk, dir: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    let path = dir.join(name);
    if !disk.exists(&path) {
        return Ok(None);
    }
    let file = disk
        .open(&path, OpenMode::Existing)
        .map_err(io_err(|| format!("open {}", path.display())))?;
    let len = file
        .len()
        .map_err(io_err(|| format!("stat {}", path.display())))?;
    if !(4..=FILE_BYTES_MAX).contains(&len) {
        return Err(corrupt(&path, format!("size {len} bytes is impossible")));
    }
    let mut buf = vec![0u8; len as usize];
    read_exact_at(file.as_ref(), &mut buf, 0)
        .map_err(io_err(|| format!("read {}", path.display())))?;
    let (body, trailer) = buf.split_at(buf.len() - 4);
    let stored = u32::from_be_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    if stored != crc32c::crc32c(body) {
        return Err(corrupt(&path, "CRC-32C mismatch".into()));
    }
    let body_len = body.len();
    buf.truncate(body_len);
    Ok(Some(buf))
}

fn corrupt(path: &Path, reason: String) -> StorageError {
    StorageError::Corrupt {
        path: path.to_path_buf(),
        position: 0,
        reason,
    }
}
