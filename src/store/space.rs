//! Free space, checked before writes. sled 0.34 keeps an I/O error (a full
//! disk, say) as a sticky error until the store is opened again, so writes
//! that would grow the store are refused while the disk holding it has less
//! free space than a reserve (`store.min_free_mb`), before it is full.
//! Removals (revocations, purges, unpinning) and audit entries are not
//! checked against the reserve: they must go on working, and they are
//! small. If the store fails anyway, the failure is kept here so the node
//! can say why until it is restarted.
//!
//! Below [`FLOOR`] of free space every write, audit entries included, is
//! taken as a failure of the store before sled is asked to write: sled
//! 0.34 can leave a flush waiting forever once the disk is full (measured:
//! the commit thread blocked in `make_stable` with no error raised), which
//! would hang every writer instead of failing them.

use std::path::PathBuf;
use std::sync::Mutex;

use super::{Result, StoreError};

/// Free space below which the store is failed rather than written: a few
/// of sled's 512 KiB log segments' worth of margin.
pub(super) const FLOOR: u64 = 1024 * 1024;

/// What the store can write, as the node reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    /// Free bytes on the disk holding the store (for an unprivileged
    /// process), when they could be read.
    pub free_bytes: Option<u64>,
    /// The reserve below which writes are refused (0: no reserve).
    pub reserve_bytes: u64,
    /// Why writes are refused now, if they are.
    pub writes_refused: Option<String>,
}

pub(super) struct Space {
    dir: PathBuf,
    reserve: u64,
    /// A failure of the store itself: writes fail until it is reopened.
    failed: Mutex<Option<String>>,
}

impl Space {
    pub(super) fn new(dir: PathBuf, reserve: u64) -> Self {
        Self {
            dir,
            reserve,
            failed: Mutex::new(None),
        }
    }

    fn free_bytes(&self) -> Option<u64> {
        match rustix::fs::statvfs(&self.dir) {
            Ok(s) => Some(s.f_bavail.saturating_mul(s.f_frsize)),
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "could not read free space");
                None
            }
        }
    }

    fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `Ok` unless the store has failed, or the disk is down to its last
    /// [`FLOOR`] of free space (the store is then failed).
    pub(super) fn check_not_failed(&self) -> Result<()> {
        if let Some(why) = self.failure() {
            return Err(StoreError::Failed(why));
        }
        match self.free_bytes() {
            Some(free) if free < FLOOR => Err(self.note(StoreError::Flush(format!(
                "the disk holding the store is full ({free} bytes free, less than the {FLOOR} it must keep to write safely)"
            )))),
            _ => Ok(()),
        }
    }

    /// `Ok` if a write that grows the store may go ahead. Free space that
    /// cannot be read does not stop writes (the store's own errors will).
    pub(super) fn check(&self) -> Result<()> {
        self.check_not_failed()?;
        if self.reserve == 0 {
            return Ok(());
        }
        match self.free_bytes() {
            Some(free) if free < self.reserve => Err(StoreError::DiskFull {
                free,
                reserve: self.reserve,
            }),
            _ => Ok(()),
        }
    }

    /// Keeps `e` as the store's failure if it is one (an I/O error or a
    /// failed flush) and returns it as [`StoreError::Failed`]; other errors
    /// as they are.
    pub(super) fn note(&self, e: StoreError) -> StoreError {
        let why = match e {
            StoreError::Engine(sled::Error::Io(io)) => io.to_string(),
            StoreError::Flush(why) => why,
            other => return other,
        };
        tracing::error!(error = %why, "the store failed; writes are refused until the node is restarted");
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        StoreError::Failed(failed.get_or_insert(why).clone())
    }

    pub(super) fn storage(&self) -> Storage {
        let free_bytes = self.free_bytes();
        let writes_refused = match self.check() {
            Ok(()) => None,
            Err(e) => Some(e.to_string()),
        };
        Storage {
            free_bytes,
            reserve_bytes: self.reserve,
            writes_refused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_refused_below_the_reserve_and_after_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let free = rustix::fs::statvfs(dir.path()).unwrap();
        let free = free.f_bavail * free.f_frsize;
        let roomy = Space::new(dir.path().to_owned(), 1);
        roomy
            .check()
            .expect("control: one byte of reserve is there");
        let tight = Space::new(dir.path().to_owned(), free.saturating_mul(2).max(1 << 40));
        match tight.check() {
            Err(StoreError::DiskFull { reserve, .. }) => assert!(reserve > free),
            other => panic!("not refused: {other:?}"),
        }
        assert!(tight.storage().writes_refused.is_some());
        let none = Space::new(dir.path().to_owned(), 0);
        none.check().expect("no reserve, no check");
        let io = std::io::Error::from_raw_os_error(28);
        let noted = none.note(StoreError::Engine(sled::Error::Io(io)));
        assert!(matches!(noted, StoreError::Failed(_)), "{noted}");
        let refused = none.check().unwrap_err();
        assert!(matches!(refused, StoreError::Failed(_)), "{refused}");
        assert!(refused.to_string().contains("restart"), "{refused}");
    }
}
