//! The audit log's trees: entries in sequence, the chain head, the heads
//! this office signed, and the heads witnessed from peers.
//!
//! Entries are appended inside the transaction of the change they describe
//! ([`append_tx`]), so a change and its entry are stored together or not at
//! all. Nothing here deletes an entry.

use std::ops::Bound;

use super::keys::AuditTerm;
use super::trees::tree_set;
use super::tx::{Tx, unwrap_tx};
use super::typed::TxTree;
use super::{Result, Store};
use crate::domain::OfficeId;
use crate::domain::audit::{Draft, Entry, GENESIS, SignedHead};

/// The key of the chain head in `audit_head`.
pub(super) const HEAD_KEY: &str = "head";

pub use super::encoding::AuditHead;

/// The head of an empty log.
const EMPTY: AuditHead = AuditHead {
    seq: 0,
    hash: GENESIS,
    at_ms: 0,
};

/// Appends entries inside a transaction that also holds `entries`,
/// `head` and `terms` (each entry is indexed as it is appended:
/// [`super::audit_index`]); returns the new head.
pub(super) fn append_tx(
    entries: &TxTree<'_, u64, Entry>,
    head: &TxTree<'_, str, AuditHead>,
    terms: &TxTree<'_, AuditTerm, ()>,
    node: &str,
    drafts: &[Draft],
) -> Tx<Option<AuditHead>> {
    if drafts.is_empty() {
        return Ok(None);
    }
    let mut h = head.get(HEAD_KEY)?.unwrap_or(EMPTY);
    for d in drafts {
        // No input makes an entry large, whichever use case built it.
        let mut d = d.clone().clipped();
        // Time in the log never runs backwards, so it can be searched by time.
        d.at_ms = d.at_ms.max(h.at_ms);
        let e = Entry::from_draft(d, h.seq + 1, node, h.hash);
        entries.insert(e.seq, &e)?;
        super::audit_index::index_tx(terms, &e, node)?;
        h = AuditHead {
            seq: e.seq,
            hash: e.hash(),
            at_ms: e.at_ms,
        };
    }
    head.insert(HEAD_KEY, &h)?;
    Ok(Some(h))
}

tree_set! {
    /// Appending entries that describe no stored change.
    AuditTx {
        audit_entries: u64 => Entry,
        audit_head: str => AuditHead,
        audit_terms: super::keys::AuditTerm => (),
    }
}

impl Store {
    /// Appends entries that describe no stored change (reads, refusals).
    /// Durable after [`Store::commit`].
    /// Not held to the free-space reserve (reads must go on), but refused
    /// once the store has failed.
    pub fn audit(&self, drafts: &[Draft]) -> Result<()> {
        self.space.check_not_failed()?;
        unwrap_tx(AuditTx::run(&self.trees, |t| {
            append_tx(
                &t.audit_entries,
                &t.audit_head,
                &t.audit_terms,
                &self.office,
                drafts,
            )
        }))
        .map_err(|e| self.space.note(e))?;
        self.audit_appended();
        Ok(())
    }

    /// Wakes the head signer; called after every transaction that appended.
    pub(super) fn audit_appended(&self) {
        self.audit_wake.notify_one();
    }

    pub fn audit_head(&self) -> Result<AuditHead> {
        Ok(self.trees.audit_head.get(HEAD_KEY)?.unwrap_or(EMPTY))
    }

    /// Stored entries with `seq > after`, at most `limit`, as stored.
    pub fn audit_raw(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        self.trees
            .audit_entries
            .range_raw(Bound::Excluded(after), Bound::<u64>::Unbounded)
            .take(limit)
            .map(|kv| kv.map(|(seq, v)| (seq, v.to_vec())))
            .collect()
    }

    /// Stored entries with `seq < before`, newest first, at most `limit`.
    pub fn audit_raw_before(&self, before: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        self.trees
            .audit_entries
            .range_raw(Bound::<u64>::Unbounded, Bound::Excluded(before))
            .rev()
            .take(limit)
            .map(|kv| kv.map(|(seq, v)| (seq, v.to_vec())))
            .collect()
    }

    pub fn audit_entry(&self, seq: u64) -> Result<Option<Entry>> {
        self.trees.audit_entries.get(seq)
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
        self.trees.signed_heads.insert(h.seq, h)
    }

    /// Every head this office signed, by sequence number, as stored.
    pub fn signed_heads_raw(&self) -> impl Iterator<Item = Result<(u64, Vec<u8>)>> + '_ {
        self.trees
            .signed_heads
            .range_raw(Bound::<u64>::Unbounded, Bound::<u64>::Unbounded)
            .map(|kv| kv.map(|(seq, v)| (seq, v.to_vec())))
    }

    pub fn latest_signed_head(&self) -> Result<Option<SignedHead>> {
        Ok(self.trees.signed_heads.last()?.map(|(_, h)| h))
    }

    /// Keeps a head signed by `peer`, as witness of its log.
    pub fn put_witnessed(&self, peer: &OfficeId, h: &SignedHead) -> Result<()> {
        self.trees.witnessed.insert((peer, h.seq), h)
    }

    pub fn forget_witnessed(&self, peer: &OfficeId, seq: u64) -> Result<()> {
        self.trees.witnessed.remove((peer, seq))?;
        Ok(())
    }

    /// Heads witnessed from `peer`, oldest first.
    pub fn witnessed(&self, peer: &OfficeId) -> Result<Vec<SignedHead>> {
        self.trees
            .witnessed
            .scan(peer)
            .map(|kv| kv.map(|(_, h)| h))
            .collect()
    }

    /// The size of `peer`'s newest head a witness check proved (0: none).
    pub fn witness_proven(&self, peer: &OfficeId) -> Result<u64> {
        Ok(self.trees.witness_proven.get(peer)?.unwrap_or(0))
    }

    pub fn set_witness_proven(&self, peer: &OfficeId, size: u64) -> Result<()> {
        self.trees.witness_proven.insert(peer, &size)
    }

    pub fn latest_witnessed(&self, peer: &OfficeId) -> Result<Option<SignedHead>> {
        self.trees
            .witnessed
            .scan(peer)
            .next_back()
            .map(|kv| kv.map(|(_, h)| h))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::audit::{Actor, ChainWalk, Outcome, Stored, Target};
    use crate::store::StoreOptions;

    /// What a node of another office was sent: every field guessable.
    fn served() -> Draft {
        Draft {
            at_ms: 1_000,
            ..Draft::new(
                Actor::peer("camden-da"),
                "feed.versions_served",
                Target::record("phila-da:x", 1),
                Outcome::ok(),
            )
        }
    }

    /// A log begun before entries were salted (entry 1, version 1) goes on
    /// with salted entries, and its chain still walks to the head; two
    /// entries of identical fields get different digests, so a peer given
    /// the digests cannot confirm a guess.
    #[test]
    fn appended_entries_are_salted_and_continue_an_unsalted_log() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions::for_tests();
        let store = Store::open(&dir.path().join("store"), "phila-da", &options).unwrap();
        let old = Entry {
            salt: None,
            ..Entry::from_draft(served(), 1, "phila-da", GENESIS)
        };
        store.trees.audit_entries.insert(1, &old).unwrap();
        let head = AuditHead {
            seq: 1,
            hash: old.hash(),
            at_ms: old.at_ms,
        };
        store.trees.audit_head.insert(HEAD_KEY, &head).unwrap();

        store.audit(&[served(), served()]).unwrap();
        let stored = store.audit_raw(0, 10).unwrap();
        let mut walk = ChainWalk::default();
        for (seq, bytes) in &stored {
            walk.step_stored(*seq, bytes).unwrap();
        }
        assert_eq!(walk.hash, store.audit_head().unwrap().hash);
        let parts: Vec<_> = stored
            .iter()
            .map(|(_, bytes)| Stored::split(bytes).unwrap())
            .collect();
        let versions: Vec<u8> = parts.iter().map(|p| p.body[0]).collect();
        assert_eq!(versions, [1, 2, 2]);
        assert_ne!(parts[1].body_digest(), parts[2].body_digest());
    }
}
