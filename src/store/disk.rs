//! A stopped node's store as someone with the disk sees it: raw audit
//! entries to read, change, remove or reorder, and counts to read or drop.
//! For tests of tamper evidence and recovery; a running node never uses it.
//! The trees are the store's ([`super::trees`]); their names stay inside.

use std::path::Path;
use std::time::{Duration, Instant};

use std::ops::Bound;

use super::audit::AuditHead;
use super::encoding::{BlobMeta, Fetch, SledChunks};
use super::trees::Trees;
use super::typed::Raw;
use super::{Result, StoreError};
use crate::domain::{BlobHash, OfficeId};

pub struct OnDisk {
    db: sled::Db,
    trees: Trees,
}

impl OnDisk {
    /// Opens the store at `path`, waiting up to 10 s for a node that just
    /// stopped to let go of it. Nothing is checked or changed on open.
    pub fn open(path: &Path) -> Result<Self> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match sled::open(path) {
                Ok(db) => {
                    let trees = Trees::open(&db)?;
                    return Ok(Self { db, trees });
                }
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

    /// Every audit entry as stored, by sequence number.
    pub fn audit_entries(&self) -> Result<Vec<(u64, Vec<u8>)>> {
        self.trees
            .audit_entries
            .range_raw(Bound::<u64>::Unbounded, Bound::<u64>::Unbounded)
            .map(|kv| kv.map(|(seq, v)| (seq, v.to_vec())))
            .collect()
    }

    pub fn audit_entry(&self, seq: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.trees.audit_entries.get_raw(seq)?.map(|v| v.to_vec()))
    }

    /// Stores `bytes` as entry `seq`, whatever they are.
    pub fn put_audit_entry(&self, seq: u64, bytes: &[u8]) -> Result<()> {
        self.trees
            .audit_entries
            .raw()
            .insert(seq.to_be_bytes(), bytes)?;
        Ok(())
    }

    pub fn remove_audit_entry(&self, seq: u64) -> Result<()> {
        self.trees.audit_entries.remove(seq)?;
        Ok(())
    }

    /// Sets the head the log continues from.
    pub fn set_audit_head(&self, seq: u64, hash: [u8; 32], at_ms: u64) -> Result<()> {
        let head = AuditHead { seq, hash, at_ms };
        self.trees.audit_head.insert(super::audit::HEAD_KEY, &head)
    }

    /// Drops every head this office signed.
    pub fn clear_signed_heads(&self) -> Result<()> {
        self.trees.signed_heads.raw().clear()?;
        Ok(())
    }

    /// Drops the audit log's Merkle tree, as a store written before it was
    /// kept has none.
    pub fn clear_audit_tree(&self) -> Result<()> {
        self.trees.audit_nodes.raw().clear()?;
        self.trees.counters.remove(super::merkle::TREE_SIZE)?;
        Ok(())
    }

    /// Makes every head this office signed, and every head it witnessed,
    /// a head as signed before the log kept a tree: no root, signed again
    /// by `sign` (given the head's office and the canonical bytes); and
    /// forgets which witnessed heads were proven. With
    /// [`OnDisk::clear_audit_tree`], a store as an older version left it.
    pub fn strip_tree_roots(&self, sign: &dyn Fn(&str, &[u8]) -> Vec<u8>) -> Result<()> {
        let strip = |h: &mut crate::domain::audit::SignedHead| {
            h.root = None;
            h.signature = sign(&h.office, &h.canonical());
        };
        let signed: Vec<_> = self.trees.signed_heads.iter().collect::<Result<_>>()?;
        for (seq, mut h) in signed {
            strip(&mut h);
            self.trees.signed_heads.insert(seq, &h)?;
        }
        // Witnessed heads are keyed by office and seq; rewritten in place.
        let witnessed: Vec<_> = self
            .trees
            .witnessed
            .raw()
            .iter()
            .collect::<sled::Result<_>>()?;
        for (key, bytes) in witnessed {
            let mut h = crate::domain::audit::SignedHead::decode(&bytes)
                .map_err(|e| StoreError::Inconsistent(e.to_string()))?;
            strip(&mut h);
            self.trees.witnessed.raw().insert(key, h.encode())?;
        }
        self.trees.witness_proven.raw().clear()?;
        Ok(())
    }

    /// How many heads of peers' logs are held.
    pub fn witnessed_count(&self) -> Result<usize> {
        Ok(self.trees.witnessed.raw().len())
    }

    /// Drops the record and version counts, as a store written before they
    /// were kept has none.
    pub fn forget_counts(&self) -> Result<()> {
        for key in super::records::COUNT_KEYS {
            self.trees.counters.remove(key)?;
        }
        Ok(())
    }

    /// Sets the kept count `name` (`count:records`, `count:outbox:<peer>`,
    /// …) to `value`: a count damaged on disk, for `check-store`'s tests.
    pub fn set_count(&self, name: &str, value: u64) -> Result<()> {
        self.trees.counters.insert(name, &value)
    }

    /// How many blob chunks are stored.
    pub fn chunk_count(&self) -> Result<usize> {
        Ok(self.trees.chunks.len())
    }

    /// Stores `data` as a blob in sled chunks of `chunk` bytes, the way
    /// stores before the blob store held them (a fetch, if `fetch` says
    /// from whom and how far it got).
    pub fn write_legacy_blob(
        &self,
        data: &[u8],
        chunk: usize,
        fetch: Option<(OfficeId, u64)>,
    ) -> Result<BlobHash> {
        let storage = self.db.generate_id()?;
        let stored = fetch.as_ref().map_or(data.len(), |(_, n)| *n as usize);
        for (i, piece) in data[..stored].chunks(chunk).enumerate() {
            self.trees
                .chunks
                .insert((storage, i as u64), &Raw(sled::IVec::from(piece)))?;
        }
        let legacy = SledChunks {
            storage,
            chunk: chunk as u32,
        };
        let hash = BlobHash::of(data);
        match fetch {
            None => {
                let meta = BlobMeta {
                    size: data.len() as u64,
                    keep_until_ms: 0,
                    legacy: Some(legacy),
                };
                self.trees.blobs.insert(&hash, &meta)?;
            }
            Some((origin, received)) => {
                let f = Fetch {
                    origin,
                    size: data.len() as u64,
                    legacy: Some((legacy, received)),
                };
                self.trees.fetches.insert(&hash, &f)?;
            }
        }
        Ok(hash)
    }

    /// Drops the entry of a whole blob (its bytes stay where they are).
    pub fn remove_blob_entry(&self, hash: &BlobHash) -> Result<()> {
        self.trees.blobs.remove(hash)?;
        Ok(())
    }

    /// Blobs whose bytes are still in sled chunks, and chunk count.
    pub fn legacy_counts(&self) -> Result<(usize, usize)> {
        let mut legacy = 0;
        for m in self.trees.blobs.values() {
            legacy += usize::from(m?.legacy.is_some());
        }
        Ok((legacy, self.trees.chunks.len()))
    }

    /// Makes every change durable.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}
