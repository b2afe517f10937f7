//! The audit log's trees: entries in sequence, the chain head, the heads
//! this office signed, and the heads witnessed from peers.
//!
//! Entries are appended inside the transaction of the change they describe
//! ([`append_tx`]), so a change and its entry are stored together or not at
//! all. Nothing here deletes an entry.

use std::ops::Bound;

use sled::transaction::{ConflictableTransactionError, Transactional, TransactionalTree};

use super::tx::{Tx, unwrap_tx};
use super::{Result, Store, corrupt};
use crate::domain::audit::{Draft, Entry, GENESIS, SignedHead};

pub(super) const HEAD_KEY: &[u8] = b"head";

pub use super::encoding::AuditHead;

fn be(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    if b.len() == 8 {
        a.copy_from_slice(b);
    }
    u64::from_be_bytes(a)
}

fn witnessed_key(peer: &str, seq: u64) -> Vec<u8> {
    let mut k = peer.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Appends entries inside a transaction that also holds `entries` and
/// `head`; returns the new head.
pub(super) fn append_tx(
    entries: &TransactionalTree,
    head: &TransactionalTree,
    node: &str,
    drafts: &[Draft],
) -> Tx<Option<AuditHead>> {
    if drafts.is_empty() {
        return Ok(None);
    }
    let mut h = match head.get(HEAD_KEY)? {
        Some(b) => AuditHead::decode(&b)
            .map_err(|e| ConflictableTransactionError::Abort(corrupt("audit_head")(e)))?,
        None => AuditHead {
            seq: 0,
            hash: GENESIS,
            at_ms: 0,
        },
    };
    for d in drafts {
        let mut d = d.clone();
        // Time in the log never runs backwards, so it can be searched by time.
        d.at_ms = d.at_ms.max(h.at_ms);
        let e = Entry::from_draft(d, h.seq + 1, node, h.hash);
        entries.insert(&e.seq.to_be_bytes(), e.encode())?;
        h = AuditHead {
            seq: e.seq,
            hash: e.hash(),
            at_ms: e.at_ms,
        };
    }
    head.insert(HEAD_KEY, h.encode())?;
    Ok(Some(h))
}

impl Store {
    /// Appends entries that describe no stored change (reads, refusals).
    /// Durable after [`Store::commit`].
    pub fn audit(&self, drafts: &[Draft]) -> Result<()> {
        unwrap_tx(
            (&self.auditseq_entry, &self.audit_head)
                .transaction(|(entries, head)| append_tx(entries, head, &self.office, drafts)),
        )?;
        self.audit_appended();
        Ok(())
    }

    /// Wakes the head signer; called after every transaction that appended.
    pub(super) fn audit_appended(&self) {
        self.audit_wake.notify_one();
    }

    pub fn audit_head(&self) -> Result<AuditHead> {
        Ok(match self.audit_head.get(HEAD_KEY)? {
            Some(b) => AuditHead::decode(&b).map_err(corrupt("audit_head"))?,
            None => AuditHead {
                seq: 0,
                hash: GENESIS,
                at_ms: 0,
            },
        })
    }

    /// Stored entries with `seq > after`, at most `limit`, as stored.
    pub fn audit_raw(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut out = Vec::new();
        for kv in self
            .auditseq_entry
            .range((Bound::Excluded(after.to_be_bytes()), Bound::Unbounded))
        {
            let (k, v) = kv?;
            out.push((be(&k), v.to_vec()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Stored entries with `seq < before`, newest first, at most `limit`.
    pub fn audit_raw_before(&self, before: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut out = Vec::new();
        for kv in self.auditseq_entry.range(..before.to_be_bytes()).rev() {
            let (k, v) = kv?;
            out.push((be(&k), v.to_vec()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    pub fn audit_entry(&self, seq: u64) -> Result<Option<Entry>> {
        self.auditseq_entry
            .get(seq.to_be_bytes())?
            .map(|v| Entry::decode(&v).map_err(corrupt("auditseq_entry")))
            .transpose()
    }

    /// The first sequence number whose entry is at or after `at_ms`
    /// (entry times never decrease, so this is a binary search).
    pub fn audit_seq_at(&self, at_ms: u64) -> Result<u64> {
        let head = self.audit_head()?;
        let (mut lo, mut hi) = (1, head.seq + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let t = match self.audit_entry(mid) {
                Ok(Some(e)) => e.at_ms,
                // A damaged or missing entry: fall back to scanning from here.
                _ => return Ok(lo),
            };
            if t < at_ms {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    pub fn put_signed_head(&self, h: &SignedHead) -> Result<()> {
        self.auditseq_signedhead
            .insert(h.seq.to_be_bytes(), h.encode())?;
        Ok(())
    }

    /// Every head this office signed, by sequence number, as stored.
    pub fn signed_heads_raw(&self) -> impl Iterator<Item = Result<(u64, Vec<u8>)>> + use<> {
        self.auditseq_signedhead.iter().map(|kv| {
            let (k, v) = kv?;
            Ok((be(&k), v.to_vec()))
        })
    }

    pub fn latest_signed_head(&self) -> Result<Option<SignedHead>> {
        self.auditseq_signedhead
            .last()?
            .map(|(_, v)| SignedHead::decode(&v).map_err(corrupt("auditseq_signedhead")))
            .transpose()
    }

    /// Keeps a head signed by `peer`, as witness of its log.
    pub fn put_witnessed(&self, peer: &str, h: &SignedHead) -> Result<()> {
        self.officeseq_witnessed
            .insert(witnessed_key(peer, h.seq), h.encode())?;
        Ok(())
    }

    pub fn forget_witnessed(&self, peer: &str, seq: u64) -> Result<()> {
        self.officeseq_witnessed.remove(witnessed_key(peer, seq))?;
        Ok(())
    }

    /// Heads witnessed from `peer`, oldest first.
    pub fn witnessed(&self, peer: &str) -> Result<Vec<SignedHead>> {
        let mut prefix = peer.as_bytes().to_vec();
        prefix.push(0);
        self.officeseq_witnessed
            .scan_prefix(prefix)
            .map(|kv| {
                let (_, v) = kv?;
                SignedHead::decode(&v).map_err(corrupt("officeseq_witnessed"))
            })
            .collect()
    }

    pub fn latest_witnessed(&self, peer: &str) -> Result<Option<SignedHead>> {
        let mut prefix = peer.as_bytes().to_vec();
        prefix.push(0);
        self.officeseq_witnessed
            .scan_prefix(prefix)
            .next_back()
            .map(|kv| {
                let (_, v) = kv?;
                SignedHead::decode(&v).map_err(corrupt("officeseq_witnessed"))
            })
            .transpose()
    }
}
