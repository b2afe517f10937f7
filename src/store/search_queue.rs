//! The search index's outbox: every transaction that changes which
//! version of a record is the latest (a write, an applied replica, a
//! purge) also puts the record's id here, with a token new to that
//! change. The index (`crate::search`) takes entries, indexes what the
//! store holds for them, makes that durable, and only then removes each
//! entry whose token is still the one it took — so a change made while it
//! worked stays queued, and a crash at any point leaves nothing unindexed.
//! It takes only entries whose change is on disk (a token below the mark
//! the last group-commit flush raised): the index never holds what a
//! crash could take back from the store.

use std::ops::Bound;

use super::tx::Tx;
use super::typed::TxTree;
use super::{Result, Store};
use crate::domain::RecordId;

/// Queues `id` for the search index, inside a transaction that changes it.
pub(super) fn queue_tx(queue: &TxTree<'_, RecordId, u64>, id: &RecordId) -> Tx<()> {
    let token = queue.generate_id()?;
    queue.insert(id, &token)?;
    Ok(())
}

/// A record the search index has yet to take in, and the token of the
/// change that queued it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub id: RecordId,
    pub token: u64,
}

impl Store {
    /// A number above the token of every queued change that is on disk:
    /// every change a write or an applied batch made before it returned
    /// ([`Store::search_queue`]).
    pub fn search_mark(&self) -> u64 {
        self.writer
            .search_durable
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Up to `limit` records the search index has yet to take in, of
    /// those queued before `mark`, after the record `after` in id order
    /// (from the first without one): a pass over the queue reads each
    /// entry once, however many newer ones it skips.
    pub fn search_queue(
        &self,
        mark: u64,
        after: Option<&RecordId>,
        limit: usize,
    ) -> Result<Vec<Queued>> {
        let lower = match after {
            Some(after) => Bound::Excluded(after),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for kv in self
            .trees
            .search_queue
            .range(lower, Bound::<&RecordId>::Unbounded)
        {
            let (id, token) = kv?;
            if token < mark {
                out.push(Queued { id, token });
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Forgets the entries the index took in, each unless its record
    /// changed again since (its token is not the one taken).
    pub fn search_queue_done(&self, done: &[Queued]) -> Result<()> {
        for q in done {
            self.trees.search_queue.remove_if(&q.id, &q.token)?;
        }
        Ok(())
    }

    /// Forgets every queued change: for a node that keeps no index (one
    /// made again is rebuilt from the store, not from the queue).
    pub fn clear_search_queue(&self) -> Result<()> {
        Ok(self.trees.search_queue.raw().clear()?)
    }

    /// How many records wait for the search index.
    pub fn search_queue_len(&self) -> usize {
        self.trees.search_queue.len()
    }

    /// The ids of every record held (deleted ones included), in order,
    /// after `after`, at most `limit`: what rebuilding the index reads.
    pub fn record_ids_after(
        &self,
        after: Option<&RecordId>,
        limit: usize,
    ) -> Result<Vec<RecordId>> {
        let lower = match after {
            Some(after) => Bound::Excluded(after),
            None => Bound::Unbounded,
        };
        self.trees
            .heads
            .range(lower, Bound::<&RecordId>::Unbounded)
            .take(limit)
            .map(|kv| kv.map(|(id, _)| id))
            .collect()
    }
}
