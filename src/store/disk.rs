//! A stopped node's store as someone with the disk sees it: raw audit
//! entries to read, change, remove or reorder, and counts to read or drop.
//! For tests of tamper evidence and recovery; a running node never uses it.
//! The tree names stay here, inside the store.

use std::path::Path;
use std::time::{Duration, Instant};

use super::audit::AuditHead;
use super::{Result, StoreError};

pub struct OnDisk {
    db: sled::Db,
}

impl OnDisk {
    /// Opens the store at `path`, waiting up to 10 s for a node that just
    /// stopped to let go of it. Nothing is checked or changed on open.
    pub fn open(path: &Path) -> Result<Self> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match sled::open(path) {
                Ok(db) => return Ok(Self { db }),
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                    return Err(StoreError::Locked(path.to_owned()));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn tree(&self, name: &str) -> Result<sled::Tree> {
        Ok(self.db.open_tree(name)?)
    }

    /// Every audit entry as stored, by sequence number.
    pub fn audit_entries(&self) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut out = Vec::new();
        for kv in self.tree("auditseq_entry")?.iter() {
            let (k, v) = kv?;
            let seq = <[u8; 8]>::try_from(k.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::Inconsistent("an audit key is not 8 bytes".into()))?;
            out.push((seq, v.to_vec()));
        }
        Ok(out)
    }

    pub fn audit_entry(&self, seq: u64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .tree("auditseq_entry")?
            .get(seq.to_be_bytes())?
            .map(|v| v.to_vec()))
    }

    /// Stores `bytes` as entry `seq`, whatever they are.
    pub fn put_audit_entry(&self, seq: u64, bytes: &[u8]) -> Result<()> {
        self.tree("auditseq_entry")?
            .insert(seq.to_be_bytes(), bytes)?;
        Ok(())
    }

    pub fn remove_audit_entry(&self, seq: u64) -> Result<()> {
        self.tree("auditseq_entry")?.remove(seq.to_be_bytes())?;
        Ok(())
    }

    /// Sets the head the log continues from.
    pub fn set_audit_head(&self, seq: u64, hash: [u8; 32], at_ms: u64) -> Result<()> {
        let head = AuditHead { seq, hash, at_ms };
        self.tree("audit_head")?
            .insert(super::audit::HEAD_KEY, head.encode())?;
        Ok(())
    }

    /// Drops every head this office signed.
    pub fn clear_signed_heads(&self) -> Result<()> {
        self.tree("auditseq_signedhead")?.clear()?;
        Ok(())
    }

    /// Drops the record and version counts, as a store written before they
    /// were kept has none.
    pub fn forget_counts(&self) -> Result<()> {
        let counters = self.tree("counters")?;
        for key in super::records::COUNT_KEYS {
            counters.remove(key)?;
        }
        Ok(())
    }

    /// How many blob chunks are stored.
    pub fn chunk_count(&self) -> Result<usize> {
        Ok(self.tree("storage_chunk")?.len())
    }

    /// Makes every change durable.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}
