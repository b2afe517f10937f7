//! Finding audit entries by term ([`super::audit_index`]), and indexing a
//! log written before the index existed.
//!
//! A store opened for the first time by a build with the index records
//! where its log ended then (`audit_terms_end`): every later entry is
//! indexed as it is appended; the entries up to there are indexed by
//! [`Store::index_audit_step`], a batch per transaction that also moves
//! `audit_terms_done`, so a crash resumes where the last batch ended.
//! Until the two meet, [`Store::audit_unindexed`] names the entries a
//! query must still scan.

use std::ops::Bound;

use super::audit_index::{self, AuditField};
use super::keys::AuditTerm;
use super::trees::tree_set;
use super::tx::unwrap_tx;
use super::{Result, Store};
use crate::domain::audit::Entry;

/// The last entry written before the index existed (0: none).
const TERMS_END: &str = "audit_terms_end";
/// The last of those entries indexed so far.
const TERMS_DONE: &str = "audit_terms_done";

tree_set! {
    /// Indexing entries written before the index, with the progress marker.
    IndexTx {
        audit_terms: AuditTerm => (),
        counters: str => u64,
    }
}

impl Store {
    /// Marks where the log ended when the index was first opened, for a
    /// store that has no mark yet: called at open, before anything appends.
    pub(super) fn init_audit_index(&self) -> Result<()> {
        if self.trees.counters.get(TERMS_END)?.is_some() {
            return Ok(());
        }
        let end = self.audit_head()?.seq;
        unwrap_tx(IndexTx::run(&self.trees, |t| {
            t.counters.insert(TERMS_DONE, &0)?;
            t.counters.insert(TERMS_END, &end)?;
            Ok(())
        }))
    }

    /// The entries `(after, upto]` not indexed yet, written before the
    /// index; `None` once every entry is indexed.
    pub fn audit_unindexed(&self) -> Result<Option<(u64, u64)>> {
        let end = self.trees.counters.get(TERMS_END)?.unwrap_or(0);
        let done = self.trees.counters.get(TERMS_DONE)?.unwrap_or(0);
        Ok((done < end).then_some((done, end)))
    }

    /// Indexes up to `batch` of the entries written before the index, in
    /// one transaction with the progress marker. Returns whether any are
    /// left. An entry that does not decode is passed over (a scan reports
    /// it; verification finds it).
    pub fn index_audit_step(&self, batch: usize) -> Result<bool> {
        let Some((done, end)) = self.audit_unindexed()? else {
            return Ok(false);
        };
        let upto = end.min(done.saturating_add(batch.max(1) as u64));
        let entries: Vec<Entry> = self
            .trees
            .audit_entries
            .range_raw(Bound::Excluded(done), Bound::Included(upto))
            .filter_map(|kv| match kv {
                Ok((seq, raw)) => match Entry::decode(&raw) {
                    Ok(e) => Some(Ok(e)),
                    Err(e) => {
                        tracing::error!(seq, error = %e, "an audit entry does not decode; not indexed");
                        None
                    }
                },
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<_>>()?;
        unwrap_tx(IndexTx::run(&self.trees, |t| {
            for e in &entries {
                audit_index::index_tx(&t.audit_terms, e, &self.office)?;
            }
            t.counters.insert(TERMS_DONE, &upto)?;
            Ok(())
        }))?;
        Ok(upto < end)
    }

    /// Whether a query for `value` in `field` can walk the index (see
    /// [`audit_index::query_uses_index`]).
    pub fn audit_term_indexed(&self, field: AuditField, value: &str) -> bool {
        audit_index::query_uses_index(field, value, &self.office)
    }

    /// The first (`newest_first`: the last) sequence number in `lo..=hi`
    /// of an indexed entry with `value` in `field`.
    pub fn audit_term_seek(
        &self,
        field: AuditField,
        value: &str,
        lo: u64,
        hi: u64,
        newest_first: bool,
    ) -> Result<Option<u64>> {
        if lo > hi {
            return Ok(None);
        }
        let tag = field.tag();
        let mut range = self.trees.audit_terms.range(
            Bound::Included((tag, value, lo)),
            Bound::Included((tag, value, hi)),
        );
        let hit = if newest_first {
            range.next_back()
        } else {
            range.next()
        };
        hit.map(|kv| kv.map(|(seq, ())| seq)).transpose()
    }

    /// Every sequence number up to `hi` of an indexed entry with `value` in
    /// `field`, in order: one range of the index.
    pub fn audit_term_seqs(&self, field: AuditField, value: &str, hi: u64) -> Result<Vec<u64>> {
        self.trees
            .audit_terms
            .range(
                Bound::Included((field.tag(), value, 0)),
                Bound::Included((field.tag(), value, hi)),
            )
            .map(|kv| kv.map(|(seq, ())| seq))
            .collect()
    }

    /// Drops the index and its marks, as a store written before the index
    /// existed has none: the next open marks the log for indexing. For
    /// tests of the upgrade.
    #[doc(hidden)]
    pub fn forget_audit_index(&self) -> Result<()> {
        self.trees.audit_terms.raw().clear()?;
        self.trees.counters.remove(TERMS_END)?;
        self.trees.counters.remove(TERMS_DONE)?;
        Ok(())
    }

    /// The stored bytes of entry `seq`.
    pub fn audit_raw_at(&self, seq: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.trees.audit_entries.get_raw(seq)?.map(|v| v.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::audit::{Actor, Draft, Outcome, Target};
    use crate::store::StoreOptions;

    fn read(record: &str) -> Draft {
        Draft::new(
            Actor::peer("nyc-da"),
            "Records.Get",
            Target::record(record, 0),
            Outcome::ok(),
        )
    }

    fn seqs(store: &Store, record: &str, newest_first: bool) -> Vec<u64> {
        let (mut lo, mut hi) = (1, store.audit_head().unwrap().seq);
        let mut out = Vec::new();
        while let Some(seq) = store
            .audit_term_seek(AuditField::Record, record, lo, hi, newest_first)
            .unwrap()
        {
            out.push(seq);
            if newest_first {
                hi = seq - 1;
            } else {
                lo = seq + 1;
            }
        }
        out
    }

    /// Entries appended are found by their terms at once, in sequence
    /// order both ways, and within a range of sequence numbers only.
    #[test]
    fn appended_entries_are_found_by_term() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "phila-da", &StoreOptions::for_tests()).unwrap();
        assert_eq!(store.audit_unindexed().unwrap(), None);
        for i in 0..30 {
            let record = if i % 3 == 0 {
                "phila-da:a"
            } else {
                "phila-da:b"
            };
            store.audit(&[read(record)]).unwrap();
        }
        let a: Vec<u64> = (0..10).map(|i| i * 3 + 1).collect();
        assert_eq!(seqs(&store, "phila-da:a", false), a);
        let mut back = a.clone();
        back.reverse();
        assert_eq!(seqs(&store, "phila-da:a", true), back);
        assert_eq!(
            store
                .audit_term_seek(AuditField::Record, "phila-da:a", 5, 9, false)
                .unwrap(),
            Some(7)
        );
        assert_eq!(
            store
                .audit_term_seek(AuditField::Record, "phila-da:a", 5, 9, true)
                .unwrap(),
            Some(7)
        );
        // A term that is a prefix of another finds only its own.
        assert_eq!(seqs(&store, "phila-da:", false), Vec::<u64>::new());
        assert_eq!(
            store
                .audit_term_seek(AuditField::Peer, "nyc-da", 1, 30, true)
                .unwrap(),
            Some(30)
        );
    }

    /// A log written before the index (its terms removed, its marks
    /// gone) is marked when opened, indexed a batch at a time, and the
    /// progress survives a reopen half way.
    #[test]
    fn a_log_written_before_the_index_is_indexed_in_resumable_batches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let store = Store::open(&path, "phila-da", &StoreOptions::for_tests()).unwrap();
            for i in 0..25 {
                store
                    .audit(&[read(&format!("phila-da:{}", i % 5))])
                    .unwrap();
            }
            store.forget_audit_index().unwrap();
            store.flush_now().unwrap();
        }
        {
            let store = Store::open(&path, "phila-da", &StoreOptions::for_tests()).unwrap();
            assert_eq!(store.audit_unindexed().unwrap(), Some((0, 25)));
            // Written after the upgrade: indexed as it is appended.
            store.audit(&[read("phila-da:0")]).unwrap();
            assert_eq!(seqs(&store, "phila-da:0", false), [26]);
            assert!(store.index_audit_step(10).unwrap());
            assert_eq!(store.audit_unindexed().unwrap(), Some((10, 25)));
            assert_eq!(seqs(&store, "phila-da:0", false), [1, 6, 26]);
            store.flush_now().unwrap();
        }
        let store = Store::open(&path, "phila-da", &StoreOptions::for_tests()).unwrap();
        assert_eq!(store.audit_unindexed().unwrap(), Some((10, 25)));
        while store.index_audit_step(10).unwrap() {}
        assert_eq!(store.audit_unindexed().unwrap(), None);
        assert!(!store.index_audit_step(10).unwrap());
        assert_eq!(seqs(&store, "phila-da:0", false), [1, 6, 11, 16, 21, 26]);
        assert_eq!(seqs(&store, "phila-da:4", true), [25, 20, 15, 10, 5]);
    }
}
