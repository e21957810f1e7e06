//! The Raft hard state of a partition replica (term, vote, commit), kept in
//! an atomically replaced file beside the segments.

use super::{atomic, Result, StorageError};
use crate::io::Disk;
use std::path::Path;

const FILE_NAME: &str = "hard_state";
const VERSION: u8 = 1;
const BODY_BYTES: usize = 1 + 8 * 3;

/// Raft's durable vote state: what a replica must never forget.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: u64,
    pub vote: u64,
    pub commit: u64,
}

impl HardState {
    /// Loads the hard state of the replica in `dir`; the default (all zero)
    /// if none was ever saved.
    pub fn load(disk: &dyn Disk, dir: &Path) -> Result<HardState> {
        let Some(body) = atomic::read(disk, dir, FILE_NAME)? else {
            return Ok(HardState::default());
        };
        if body.len() != BODY_BYTES || body[0] != VERSION {
            return Err(StorageError::Corrupt {
                path: dir.join(FILE_NAME),
                position: 0,
                reason: format!("unknown hard state format (version {})", body[0]),
            });
        }
        let field = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&body[1 + 8 * i..9 + 8 * i]);
            u64::from_be_bytes(a)
        };
        Ok(HardState {
            term: field(0),
            vote: field(1),
            commit: field(2),
        })
    }

    /// Saves durably: when this returns, a crash cannot bring back an older
    /// hard state.
    pub fn save(&self, disk: &dyn Disk, dir: &Path) -> Result<()> {
        let mut body = Vec::with_capacity(BODY_BYTES);
        body.push(VERSION);
        body.extend_from_slice(&self.term.to_be_bytes());
        body.extend_from_slice(&self.vote.to_be_bytes());
        body.extend_from_slice(&self.commit.to_be_bytes());
        atomic::write(disk, dir, FILE_NAME, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::RealDisk;

    #[test]
    fn save_load_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let disk = RealDisk;
        assert_eq!(
            HardState::load(&disk, dir.path()).unwrap(),
            HardState::default()
        );
        let a = HardState {
            term: 3,
            vote: 2,
            commit: 17,
        };
        a.save(&disk, dir.path()).unwrap();
        assert_eq!(HardState::load(&disk, dir.path()).unwrap(), a);
        let b = HardState {
            term: 4,
            vote: 0,
            commit: 18,
        };
        b.save(&disk, dir.path()).unwrap();
        assert_eq!(HardState::load(&disk, dir.path()).unwrap(), b);
        assert!(
            !dir.path().join("hard_state.tmp").exists(),
            "the temp file was renamed away"
        );
    }

    #[test]
    fn damage_is_an_error_not_a_default() {
        let dir = tempfile::tempdir().unwrap();
        let disk = RealDisk;
        HardState {
            term: 9,
            vote: 1,
            commit: 5,
        }
        .save(&disk, dir.path())
        .unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[3] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = HardState::load(&disk, dir.path()).unwrap_err();
        assert!(err.to_string().contains("hard_state"), "{err}");
    }
}
