//! Peers, grants and each peer's outbox (its feed).

use std::ops::Bound;

use super::encoding::{PeerRemoval, legacy_job};
use super::keys::{GrantRecord, OfficeSeq};
use super::trees::tree_set;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::trees::Trees;
use super::tx::{Tx, abort, unwrap_tx};
use super::typed::TxTree;
use super::{Result, Store, StoreError};
use crate::domain::audit::{Draft, Entry};
use crate::domain::sharing::{FeedItem, Grant, GrantId, GrantJob, Peer};
use crate::domain::{OfficeId, RecordId};

use super::encoding::AuditHead;

/// Feed items (or revealed records) per transaction when many are queued
/// at once: sled runs one transaction at a time, and a longer one holds
/// every write back.
const FEED_CHUNK: usize = 256;

/// Where job markers were kept before they had their own tree.
const LEGACY_JOB_PREFIX: &[u8] = b"job:";

/// Where every peer's feed numbering starts: `outbox_seq`, the last
/// number of the single numbering all feeds shared before each was
/// numbered on its own (0 for a store that never had it). Its entries and
/// the checkpoints peers hold keep their numbers; a feed continues from
/// here, and nothing writes this counter any more.
pub(super) const FEED_FLOOR: &str = "outbox_seq";

pub(super) fn feed_floor(trees: &Trees) -> Result<u64> {
    Ok(trees.counters.get(FEED_FLOOR)?.unwrap_or(0))
}

/// How far each peer's feed is on disk: the last sequence number assigned
/// in it when a flush began. Cheap to clone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedEnds {
    ends: Arc<BTreeMap<OfficeId, u64>>,
    floor: u64,
}

impl FeedEnds {
    /// The last sequence number of `peer`'s feed.
    pub fn of(&self, peer: &OfficeId) -> u64 {
        self.ends.get(peer).copied().unwrap_or(self.floor)
    }

    /// These ends, moved forward to `newer` where it is further; `None`
    /// when nothing moved.
    pub(super) fn advanced(&self, newer: &FeedEnds) -> Option<FeedEnds> {
        let moved = newer.ends.iter().any(|(peer, &seq)| seq > self.of(peer));
        moved.then(|| {
            let mut ends = (*self.ends).clone();
            for (peer, &seq) in newer.ends.iter() {
                let end = ends.entry(peer.clone()).or_insert(self.floor);
                *end = (*end).max(seq);
            }
            FeedEnds {
                ends: Arc::new(ends),
                floor: self.floor,
            }
        })
    }
}

/// The ends of every feed as stored now.
pub(super) fn feed_ends(trees: &Trees, floor: u64) -> Result<FeedEnds> {
    Ok(FeedEnds {
        ends: Arc::new(trees.last_seqs.iter().collect::<Result<_>>()?),
        floor,
    })
}

/// Appends feed items inside a transaction, each peer's numbered on from
/// its own last sequence number (`floor` for a feed that has none yet),
/// and counts them into each peer's pending entries (`counters`).
pub(super) fn push_feed(
    floor: u64,
    last_seqs: &TxTree<'_, OfficeId, u64>,
    outbox: &TxTree<'_, OfficeSeq, FeedItem>,
    counters: &TxTree<'_, str, u64>,
    feed: &[(OfficeId, FeedItem)],
) -> Tx<()> {
    let mut ends: BTreeMap<&OfficeId, u64> = BTreeMap::new();
    for (peer, item) in feed {
        let last = match ends.get(peer) {
            Some(&seq) => seq,
            None => last_seqs.get(peer)?.unwrap_or(floor),
        };
        let seq = last.checked_add(1).ok_or_else(|| {
            abort(StoreError::Inconsistent(format!(
                "the feed of {peer} has run out of sequence numbers"
            )))
        })?;
        outbox.insert((peer, seq), item)?;
        ends.insert(peer, seq);
    }
    for (peer, seq) in ends {
        let added = seq - last_seqs.get(peer)?.unwrap_or(floor);
        last_seqs.insert(peer, &seq)?;
        super::counts::add_tx(
            counters,
            &super::counts::outbox_key(peer.as_str()),
            added as i64,
        )?;
    }
    Ok(())
}

tree_set! {
    /// Pinning or unpinning a peer.
    PeerTx {
        peers: OfficeId => Peer,
        removals: OfficeId => PeerRemoval,
        audit_entries: u64 => Entry,
        audit_head: str => AuditHead,
        audit_terms: super::keys::AuditTerm => (),
    }
}

tree_set! {
    /// Changing a grant: the grant, its job, the feed items and the audit.
    GrantTx {
        grants: GrantId => Grant,
        jobs: GrantId => GrantJob,
        last_seqs: OfficeId => u64,
        outbox: OfficeSeq => FeedItem,
        counters: str => u64,
        audit_entries: u64 => Entry,
        audit_head: str => AuditHead,
        audit_terms: super::keys::AuditTerm => (),
    }
}

tree_set! {
    /// Appending feed items.
    FeedTx {
        last_seqs: OfficeId => u64,
        outbox: OfficeSeq => FeedItem,
        counters: str => u64,
    }
}

tree_set! {
    /// Removing entries a peer applied from its outbox.
    OutboxGcTx {
        outbox: OfficeSeq => FeedItem,
        counters: str => u64,
    }
}

tree_set! {
    /// Recording what a closing grant revealed, with its revocations.
    RevealTx {
        revealed: GrantRecord => (),
        revealed_counts: GrantId => u64,
        last_seqs: OfficeId => u64,
        outbox: OfficeSeq => FeedItem,
        counters: str => u64,
    }
}

tree_set! {
    /// Moving a job marker of an earlier version into the jobs tree.
    JobMoveTx {
        counters: str => u64,
        jobs: GrantId => GrantJob,
    }
}

impl Store {
    /// Pins (or re-pins) a peer and appends `audit`, in one transaction. A
    /// removal of it left unfinished is dropped: it is a peer again.
    pub fn put_peer(&self, peer: &Peer, audit: &[Draft]) -> Result<()> {
        self.check_space()?;
        unwrap_tx(PeerTx::run(&self.trees, |t| {
            t.peers.insert(&peer.office, peer)?;
            t.removals.remove(&peer.office)?;
            super::audit::append_tx(
                &t.audit_entries,
                &t.audit_head,
                &t.audit_terms,
                &self.office,
                audit,
            )
        }))?;
        self.audit_appended();
        Ok(())
    }

    pub fn peer(&self, office: &OfficeId) -> Result<Option<Peer>> {
        self.trees.peers.get(office)
    }

    pub fn peers(&self) -> Result<Vec<Peer>> {
        self.trees.peers.values().collect()
    }

    /// Unpins a peer, marks its removal as started (`removal`, finished
    /// with [`Store::finish_removal`], resumed after a crash) and appends
    /// `audit`, in one transaction.
    pub fn unpin_peer(
        &self,
        office: &OfficeId,
        removal: PeerRemoval,
        audit: &[Draft],
    ) -> Result<()> {
        unwrap_tx(PeerTx::run(&self.trees, |t| {
            t.peers.remove(office)?;
            t.removals.insert(office, &removal)?;
            super::audit::append_tx(
                &t.audit_entries,
                &t.audit_head,
                &t.audit_terms,
                &self.office,
                audit,
            )
        }))?;
        self.audit_appended();
        Ok(())
    }

    /// Peers whose removal was started and not finished.
    pub fn removals(&self) -> Result<Vec<(OfficeId, PeerRemoval)>> {
        self.trees.removals.iter().collect()
    }

    /// The removal of `office` is done.
    pub fn finish_removal(&self, office: &OfficeId) -> Result<()> {
        self.trees.removals.remove(office)?;
        Ok(())
    }

    /// Forgets an unpinned peer's feeds: its outbox here, how far it got,
    /// and our checkpoint in its feed. Its feed's numbering is kept: if it
    /// is pinned again, its own checkpoint here stays valid.
    pub fn forget_peer_feeds(&self, office: &OfficeId) -> Result<()> {
        self.trees.acked.remove(office)?;
        self.trees.checkpoints.remove(office)?;
        self.gc_outbox(office, u64::MAX)?;
        Ok(())
    }

    pub fn grant(&self, id: &GrantId) -> Result<Option<Grant>> {
        self.trees.grants.get(id)
    }

    pub fn grants(&self) -> Result<Vec<Grant>> {
        self.trees.grants.values().collect()
    }

    /// Stores a grant together with feed items, the audit entries that
    /// describe the change and, optionally, the marker of a job that must
    /// finish (or be re-run after a crash), in one transaction.
    pub fn put_grant_with_feed(
        &self,
        grant: &Grant,
        feed: &[(OfficeId, FeedItem)],
        job: Option<GrantJob>,
        audit: &[Draft],
    ) -> Result<()> {
        // A new grant's backfill grows the feeds; closing one must go on.
        if matches!(job, Some(GrantJob::Backfill)) {
            self.check_space()?;
        }
        unwrap_tx(GrantTx::run(&self.trees, |t| {
            t.grants.insert(&grant.id, grant)?;
            if let Some(job) = job {
                t.jobs.insert(&grant.id, &job)?;
            }
            super::audit::append_tx(
                &t.audit_entries,
                &t.audit_head,
                &t.audit_terms,
                &self.office,
                audit,
            )?;
            push_feed(self.feed_floor, &t.last_seqs, &t.outbox, &t.counters, feed)
        }))?;
        self.audit_appended();
        Ok(())
    }

    /// Appends feed items (in transactions of bounded size).
    pub fn push_feed(&self, feed: &[(OfficeId, FeedItem)]) -> Result<()> {
        for chunk in feed.chunks(FEED_CHUNK) {
            unwrap_tx(FeedTx::run(&self.trees, |t| {
                push_feed(self.feed_floor, &t.last_seqs, &t.outbox, &t.counters, chunk)
            }))?;
        }
        Ok(())
    }

    /// The last sequence number assigned in `peer`'s feed (durable or not).
    pub fn last_seq(&self, peer: &OfficeId) -> Result<u64> {
        Ok(self.trees.last_seqs.get(peer)?.unwrap_or(self.feed_floor))
    }

    /// Outbox entries for `peer` with `after < seq <= upto`, at most `limit`.
    pub fn outbox_after(
        &self,
        peer: &OfficeId,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<(u64, FeedItem)>> {
        if after >= upto {
            return Ok(Vec::new());
        }
        self.trees
            .outbox
            .range(
                Bound::Excluded((peer, after)),
                Bound::Included((peer, upto)),
            )
            .take(limit)
            .collect()
    }

    /// Forgets `peer`'s outbox entries up to `upto` (it has applied them)
    /// and remembers how far it got.
    pub fn ack_outbox(&self, peer: &OfficeId, upto: u64) -> Result<()> {
        self.gc_outbox(peer, upto)?;
        self.trees
            .acked
            .update(peer, |old| old.unwrap_or(0).max(upto))
    }

    /// Sets how far `peer` got, backwards too (after it lost its state).
    pub fn reset_acked(&self, peer: &OfficeId, seq: u64) -> Result<()> {
        self.trees.acked.insert(peer, &seq)
    }

    /// Removes `peer`'s outbox entries up to `upto`, a bounded batch per
    /// transaction, each taking what it removed off the peer's count.
    fn gc_outbox(&self, peer: &OfficeId, upto: u64) -> Result<()> {
        const BATCH: usize = 4096;
        let key = super::counts::outbox_key(peer.as_str());
        loop {
            let seqs: Vec<u64> = self
                .trees
                .outbox
                .range_raw(Bound::Included((peer, 0)), Bound::Included((peer, upto)))
                .take(BATCH)
                .map(|kv| kv.map(|(seq, _)| seq))
                .collect::<Result<_>>()?;
            if seqs.is_empty() {
                return Ok(());
            }
            unwrap_tx(OutboxGcTx::run(&self.trees, |t| {
                let mut removed = 0i64;
                for &seq in &seqs {
                    removed += i64::from(t.outbox.remove((peer, seq))?);
                }
                super::counts::add_tx(&t.counters, &key, -removed)
            }))?;
            if seqs.len() < BATCH {
                return Ok(());
            }
        }
    }

    /// How many outbox entries wait for `peer` (kept in the transactions
    /// that add and remove them: [`super::counts`]).
    pub fn outbox_pending(&self, peer: &OfficeId) -> Result<u64> {
        let key = super::counts::outbox_key(peer.as_str());
        Ok(self.trees.counters.get(key.as_str())?.unwrap_or(0))
    }

    /// Records `revealed`, the records `grant` covered when it closed, and
    /// queues its closing feed: the revocations `revoke` (those of
    /// `revealed` no other grant still shows the peer), then the grant's
    /// closing marker. In transactions of bounded size; the set counts as
    /// complete with the last one, so a close cut short is computed anew.
    pub fn close_grant_feed(
        &self,
        grant: &Grant,
        revealed: &[RecordId],
        revoke: &[RecordId],
    ) -> Result<()> {
        const CHUNK: usize = FEED_CHUNK;
        let peer = &grant.peer;
        for ids in revealed.chunks(CHUNK) {
            unwrap_tx(RevealTx::run(&self.trees, |t| {
                for id in ids {
                    t.revealed.insert((&grant.id, id), &())?;
                }
                Ok(())
            }))?;
        }
        let revocations: Vec<(OfficeId, FeedItem)> = revoke
            .iter()
            .map(|id| (peer.clone(), FeedItem::Revoke { id: id.clone() }))
            .collect();
        let (last, rest) = match revocations.len() {
            0 => (&revocations[..], &revocations[..0]),
            n => {
                let cut = (n - 1) / CHUNK * CHUNK;
                (&revocations[cut..], &revocations[..cut])
            }
        };
        self.push_feed(rest)?;
        let closed = (
            peer.clone(),
            FeedItem::GrantClosed {
                grant: grant.id.clone(),
            },
        );
        unwrap_tx(RevealTx::run(&self.trees, |t| {
            let mut feed = last.to_vec();
            feed.push(closed.clone());
            push_feed(self.feed_floor, &t.last_seqs, &t.outbox, &t.counters, &feed)?;
            t.revealed_counts
                .insert(&grant.id, &(revealed.len() as u64))?;
            Ok(())
        }))
    }

    /// What a closed grant revealed, if its set is complete.
    pub fn revealed(&self, grant: &GrantId) -> Result<Option<Vec<RecordId>>> {
        if !self.trees.revealed_counts.contains(grant)? {
            return Ok(None);
        }
        self.trees
            .revealed
            .scan_keys(grant)
            .collect::<Result<_>>()
            .map(Some)
    }

    /// Forgets what a grant revealed: its purge is acknowledged.
    pub fn forget_revealed(&self, grant: &GrantId) -> Result<()> {
        self.trees.revealed_counts.remove(grant)?;
        let keys: Vec<RecordId> = self
            .trees
            .revealed
            .scan_keys(grant)
            .collect::<Result<_>>()?;
        for id in keys {
            self.trees.revealed.remove((grant, &id))?;
        }
        Ok(())
    }

    /// The job of `grant` is done.
    pub fn clear_job(&self, grant: &GrantId) -> Result<()> {
        self.trees.jobs.remove(grant)?;
        Ok(())
    }

    /// Grant jobs still marked as started.
    pub fn jobs(&self) -> Result<Vec<(GrantId, GrantJob)>> {
        self.trees.jobs.iter().collect()
    }

    /// Moves job markers a version before the jobs tree kept in
    /// `counters` (as `job:<grant id>`, raw) into their own tree.
    pub(super) fn move_legacy_jobs(&self) -> Result<()> {
        for kv in self.trees.counters.raw().scan_prefix(LEGACY_JOB_PREFIX) {
            let (k, v) = kv?;
            let raw_id = String::from_utf8_lossy(&k[LEGACY_JOB_PREFIX.len()..]).into_owned();
            let Ok(grant) = GrantId::parse(&raw_id) else {
                tracing::error!(marker = %raw_id, "a job marker of an earlier version names no grant; left alone");
                continue;
            };
            unwrap_tx(JobMoveTx::run(&self.trees, |t| {
                t.jobs.insert(&grant, &legacy_job(&v))?;
                t.counters.remove_raw(&k)
            }))?;
        }
        Ok(())
    }

    /// The sequence number of the last entry queued for `peer`: entries
    /// after [`Store::acked`] up to it are not acknowledged yet.
    pub fn feed_end(&self, peer: &OfficeId) -> Result<u64> {
        Ok(self.trees.last_seqs.get(peer)?.unwrap_or(self.feed_floor))
    }

    pub fn acked(&self, peer: &OfficeId) -> Result<u64> {
        Ok(self.trees.acked.get(peer)?.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::sharing::GrantTarget;
    use crate::store::typed::Value;

    /// Bytes written by version 1 of the grant encoding.
    #[test]
    fn frozen_v1_grant_decodes() {
        let g = Grant {
            id: GrantId::parse("g-0123456789abcdef").unwrap(),
            peer: OfficeId::parse("nyc-da").unwrap(),
            target: GrantTarget::Collection("case-1".into()),
            created_at_ms: 1,
            expires_at_ms: 2,
            ended_at_ms: 0,
            end_reason: None,
            purge_ack: None,
        };
        let frozen = "0100000012672d30313233343536373839616263646566000000066e79632d646101000000066361\
                      73652d310000000000000001000000000000000200000000000000000000";
        let bytes = hex::decode(frozen.replace(' ', "")).unwrap();
        assert_eq!(Grant::decode(&bytes).unwrap(), g);
        assert_eq!(g.encode(), bytes);
    }

    /// A job marked by an earlier version (`job:<grant>` in `counters`)
    /// is found in the jobs tree once the store opens, and nowhere else.
    #[test]
    fn job_markers_of_an_earlier_version_move_to_their_own_tree() {
        let dir = tempfile::tempdir().unwrap();
        let options = crate::store::StoreOptions::for_tests();
        let path = dir.path().join("store");
        {
            let store = Store::open(&path, "phila-da", &options).unwrap();
            let counters = store.trees.counters.raw();
            counters
                .insert(b"job:g-0123456789abcdef", b"backfill")
                .unwrap();
            counters
                .insert(b"job:g-fedcba9876543210", b"close")
                .unwrap();
            store.db.flush().unwrap();
        }
        let store = Store::open(&path, "phila-da", &options).unwrap();
        let jobs = store.jobs().unwrap();
        assert_eq!(
            jobs,
            vec![
                (
                    GrantId::parse("g-0123456789abcdef").unwrap(),
                    GrantJob::Backfill
                ),
                (
                    GrantId::parse("g-fedcba9876543210").unwrap(),
                    GrantJob::Close
                ),
            ]
        );
        assert_eq!(
            store
                .trees
                .counters
                .raw()
                .scan_prefix(LEGACY_JOB_PREFIX)
                .count(),
            0
        );
        store.clear_job(&jobs[0].0).unwrap();
        assert_eq!(store.jobs().unwrap().len(), 1);
    }

    fn item(n: u8) -> FeedItem {
        FeedItem::Revoke {
            id: RecordId::parse(&format!("phila-da:{:032x}", n)).unwrap(),
        }
    }

    /// A store written when every feed shared one numbering: nyc-da part
    /// way through a backfill (entries 1–10, acknowledged up to 6) with
    /// mpls-da's entries 11–15 after them. Opened now, nyc-da's remaining
    /// entries come out unchanged, and each feed continues from 15 on its
    /// own: nothing is lost, nothing repeats, and a feed's numbers no
    /// longer move with what was queued for the other peer.
    #[test]
    fn feeds_of_the_shared_numbering_continue_on_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let options = crate::store::StoreOptions::for_tests();
        let path = dir.path().join("store");
        let nyc = OfficeId::parse("nyc-da").unwrap();
        let mpls = OfficeId::parse("mpls-da").unwrap();
        {
            let store = Store::open(&path, "phila-da", &options).unwrap();
            let raw = |tree: &str, key: Vec<u8>, value: Vec<u8>| {
                store
                    .db
                    .open_tree(tree)
                    .unwrap()
                    .insert(key, value)
                    .unwrap();
            };
            let outbox_key = |peer: &OfficeId, seq: u64| {
                let mut k = peer.as_str().as_bytes().to_vec();
                k.push(0);
                k.extend_from_slice(&seq.to_be_bytes());
                k
            };
            for seq in 1..=15u64 {
                let peer = if seq <= 10 { &nyc } else { &mpls };
                raw(
                    "peerseq_outbox",
                    outbox_key(peer, seq),
                    item(seq as u8).encode(),
                );
            }
            raw(
                "counters",
                b"outbox_seq".to_vec(),
                15u64.to_be_bytes().to_vec(),
            );
            raw(
                "office_acked",
                b"nyc-da".to_vec(),
                6u64.to_be_bytes().to_vec(),
            );
            store.flush_now().unwrap();
        }
        let store = Store::open(&path, "phila-da", &options).unwrap();
        let acked = store.acked(&nyc).unwrap();
        assert_eq!(acked, 6);
        let end = store.last_seq(&nyc).unwrap();
        let rest = store.outbox_after(&nyc, acked, end, 100).unwrap();
        assert_eq!(
            rest,
            (7..=10).map(|n| (n, item(n as u8))).collect::<Vec<_>>(),
            "the rest of the backfill, as it was"
        );
        store
            .push_feed(&[(nyc.clone(), item(20)), (mpls.clone(), item(21))])
            .unwrap();
        store.push_feed(&[(nyc.clone(), item(22))]).unwrap();
        let end = store.last_seq(&nyc).unwrap();
        assert_eq!(end, 17);
        assert_eq!(
            store.outbox_after(&nyc, 10, end, 100).unwrap(),
            vec![(16, item(20)), (17, item(22))],
            "numbered on from the shared end, without a gap for mpls-da's entry"
        );
        assert_eq!(
            store
                .outbox_after(&mpls, 15, store.last_seq(&mpls).unwrap(), 100)
                .unwrap(),
            vec![(16, item(21))]
        );
    }
}
