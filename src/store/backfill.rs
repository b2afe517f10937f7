//! A grant job's work in bounded batches: a backfill, with a durable
//! cursor; a close, its revealed set and revocations.
//!
//! Each batch's feed items and the cursor that says how far the backfill
//! got are written in one transaction, so a backfill cut short by a crash
//! resumes after the last batch it completed, and no batch is half queued.
//! Batches are small so that no transaction here holds writers back (sled
//! runs one transaction at a time). What a batch holds, and whether the
//! backfill goes on, is the sharing service's to decide.

use std::collections::BTreeSet;

use super::encoding::BackfillCursor;
use super::sharing::push_feed;
use super::trees::tree_set;
use super::tx::unwrap_tx;
use super::{Result, Store};
use crate::domain::sharing::{FeedItem, GrantId, GrantJob};
use crate::domain::{OfficeId, RecordId};

tree_set! {
    /// Queueing one batch of a backfill, or ending it.
    BackfillTx {
        last_seqs: OfficeId => u64,
        outbox: OfficeSeq => FeedItem,
        backfill_cursors: GrantId => BackfillCursor,
        jobs: GrantId => GrantJob,
        counters: str => u64,
    }
}

use super::keys::{GrantRecord, OfficeSeq};

tree_set! {
    /// One batch of a close's revealed set, or its last batch.
    CloseTx {
        revealed: GrantRecord => (),
        revealed_counts: GrantId => u64,
        last_seqs: OfficeId => u64,
        outbox: OfficeSeq => FeedItem,
        counters: str => u64,
    }
}

/// One page of a collection's index, for a backfill.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollectionPage {
    /// The ids read that are this office's records, in id order.
    pub ids: Vec<RecordId>,
    /// The last id read (of any origin): where the next page starts.
    pub last: Option<RecordId>,
    /// Whether the index may hold more after `last`.
    pub more: bool,
}

impl Store {
    /// The records of `origin` in `collection` after `after` (from the first
    /// without one), reading at most `limit` entries of the index (which
    /// also holds replicas of other offices).
    pub fn collection_page(
        &self,
        collection: &str,
        origin: &OfficeId,
        after: Option<&RecordId>,
        limit: usize,
    ) -> Result<CollectionPage> {
        let mut page = CollectionPage::default();
        let mut read = 0;
        for entry in self
            .trees
            .collections
            .page(collection, after.map(|a| (collection, a)))
            .take(limit)
        {
            let (id, ()) = entry?;
            read += 1;
            if id.origin() == *origin {
                page.ids.push(id.clone());
            }
            page.last = Some(id);
        }
        page.more = read == limit;
        Ok(page)
    }

    /// Queues one batch of `grant`'s backfill and moves its cursor to
    /// `after` (everything it covers up to there is queued), in one
    /// transaction.
    pub fn queue_backfill(
        &self,
        grant: &GrantId,
        feed: &[(OfficeId, FeedItem)],
        after: &RecordId,
    ) -> Result<()> {
        let cursor = BackfillCursor {
            after: after.clone(),
        };
        unwrap_tx(BackfillTx::run(&self.trees, |t| {
            push_feed(self.feed_floor, &t.last_seqs, &t.outbox, &t.counters, feed)?;
            t.backfill_cursors.insert(grant, &cursor)?;
            Ok(())
        }))
    }

    /// How far `grant`'s backfill got: every record up to this id is queued.
    pub fn backfill_cursor(&self, grant: &GrantId) -> Result<Option<RecordId>> {
        Ok(self.trees.backfill_cursors.get(grant)?.map(|c| c.after))
    }

    /// `grant`'s backfill is over (done, or stopped because the grant
    /// ended): its cursor goes, and its job marker unless that is now the
    /// grant's close.
    pub fn finish_backfill(&self, grant: &GrantId) -> Result<()> {
        unwrap_tx(BackfillTx::run(&self.trees, |t| {
            t.backfill_cursors.remove(grant)?;
            if t.jobs.get(grant)? == Some(GrantJob::Backfill) {
                t.jobs.remove(grant)?;
            }
            Ok(())
        }))
    }

    /// Adds `ids` to what closing `grant` revealed (one batch; the set
    /// counts as complete only with [`Store::finish_close`]).
    pub fn add_revealed(&self, grant: &GrantId, ids: &[RecordId]) -> Result<()> {
        unwrap_tx(CloseTx::run(&self.trees, |t| {
            for id in ids {
                t.revealed.insert((grant, id), &())?;
            }
            Ok(())
        }))
    }

    /// The last batch of `grant`'s close: its last revocations, then its
    /// closing marker, and its revealed set (of `revealed` records) marked
    /// complete, in one transaction.
    pub fn finish_close(
        &self,
        grant: &GrantId,
        peer: &OfficeId,
        revoke: &[RecordId],
        revealed: u64,
    ) -> Result<()> {
        let mut feed: Vec<(OfficeId, FeedItem)> = revoke
            .iter()
            .map(|id| (peer.clone(), FeedItem::Revoke { id: id.clone() }))
            .collect();
        let closed = FeedItem::GrantClosed {
            grant: grant.clone(),
        };
        feed.push((peer.clone(), closed));
        unwrap_tx(CloseTx::run(&self.trees, |t| {
            push_feed(self.feed_floor, &t.last_seqs, &t.outbox, &t.counters, &feed)?;
            t.revealed_counts.insert(grant, &revealed)?;
            Ok(())
        }))
    }

    /// Forgets the cursors of backfills that have no job any more (their
    /// grant ended and closed while the node was down): read at start-up.
    pub fn drop_stale_cursors(&self) -> Result<()> {
        let jobs: BTreeSet<GrantId> = self
            .jobs()?
            .into_iter()
            .filter(|(_, job)| *job == GrantJob::Backfill)
            .map(|(id, _)| id)
            .collect();
        for id in self.trees.backfill_cursors.keys() {
            let id = id?;
            if !jobs.contains(&id) {
                self.trees.backfill_cursors.remove(&id)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::typed::Value;

    /// Bytes written by version 1 of the backfill cursor encoding.
    #[test]
    fn frozen_v1_backfill_cursor_decodes() {
        let cursor = BackfillCursor {
            after: RecordId::parse("phila-da:0000000000000000000000000000002a").unwrap(),
        };
        let frozen = "01000000297068696c612d64613a3030303030303030303030303030303030303030303030303030303030303261";
        let bytes = hex::decode(frozen).unwrap();
        assert_eq!(BackfillCursor::decode(&bytes).unwrap(), cursor);
        assert_eq!(cursor.encode(), bytes);
    }
}
