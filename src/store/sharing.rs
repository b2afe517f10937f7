//! Peers, grants and each peer's outbox (its feed).

use std::ops::Bound;

use sled::transaction::{ConflictableTransactionError, Transactional, TransactionalTree};

use super::encoding::{
    decode_grant, decode_job, decode_peer, encode_grant, encode_job, encode_peer, legacy_job,
};
use super::tx::unwrap_tx;
use super::{Result, Store, StoreError, corrupt};
use crate::domain::OfficeId;
use crate::domain::audit::Draft;
use crate::domain::codec::DecodeError;
use crate::domain::sharing::encoding::{decode_item, encode_item};
use crate::domain::sharing::{FeedItem, Grant, GrantId, GrantJob, Peer};

/// Where job markers were kept before they had their own tree.
const LEGACY_JOB_PREFIX: &[u8] = b"job:";

const OUTBOX_SEQ: &[u8] = b"outbox_seq";

pub(super) fn read_counter(counters: &sled::Tree) -> Result<u64> {
    Ok(counters.get(OUTBOX_SEQ)?.map(|v| be_u64(&v)).unwrap_or(0))
}

fn be_u64(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    if bytes.len() == 8 {
        b.copy_from_slice(bytes);
    }
    u64::from_be_bytes(b)
}

fn outbox_prefix(peer: &OfficeId) -> Vec<u8> {
    let mut k = peer.as_str().as_bytes().to_vec();
    k.push(0);
    k
}

fn outbox_key(peer: &OfficeId, seq: u64) -> Vec<u8> {
    let mut k = outbox_prefix(peer);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Appends feed items inside a transaction; returns the last seq assigned.
pub(super) fn push_feed(
    counters: &TransactionalTree,
    outbox: &TransactionalTree,
    feed: &[(OfficeId, FeedItem)],
) -> std::result::Result<u64, ConflictableTransactionError<StoreError>> {
    let mut seq = counters.get(OUTBOX_SEQ)?.map(|v| be_u64(&v)).unwrap_or(0);
    for (peer, item) in feed {
        seq += 1;
        outbox.insert(outbox_key(peer, seq), encode_item(item))?;
    }
    if !feed.is_empty() {
        counters.insert(OUTBOX_SEQ, &seq.to_be_bytes())?;
    }
    Ok(seq)
}

impl Store {
    /// Pins (or re-pins) a peer and appends `audit`, in one transaction.
    pub fn put_peer(&self, peer: &Peer, audit: &[Draft]) -> Result<()> {
        let value = encode_peer(peer);
        unwrap_tx(
            (&self.office_peer, &self.auditseq_entry, &self.audit_head).transaction(
                |(peers, entries, head)| {
                    peers.insert(peer.office.as_str(), value.as_slice())?;
                    super::audit::append_tx(entries, head, &self.office, audit)?;
                    Ok(())
                },
            ),
        )?;
        self.audit_appended();
        Ok(())
    }

    pub fn peer(&self, office: &OfficeId) -> Result<Option<Peer>> {
        self.office_peer
            .get(office.as_str())?
            .map(|v| decode_peer(&v).map_err(corrupt("office_peer")))
            .transpose()
    }

    pub fn peers(&self) -> Result<Vec<Peer>> {
        self.office_peer
            .iter()
            .map(|kv| {
                let (_, v) = kv?;
                decode_peer(&v).map_err(corrupt("office_peer"))
            })
            .collect()
    }

    /// Unpins a peer and appends `audit`, in one transaction.
    pub fn unpin_peer(&self, office: &OfficeId, audit: &[Draft]) -> Result<()> {
        unwrap_tx(
            (&self.office_peer, &self.auditseq_entry, &self.audit_head).transaction(
                |(peers, entries, head)| {
                    peers.remove(office.as_str())?;
                    super::audit::append_tx(entries, head, &self.office, audit)?;
                    Ok(())
                },
            ),
        )?;
        self.audit_appended();
        Ok(())
    }

    /// Forgets an unpinned peer's feeds: its outbox here, how far it got,
    /// and our checkpoint in its feed.
    pub fn forget_peer_feeds(&self, office: &OfficeId) -> Result<()> {
        self.office_acked.remove(office.as_str())?;
        self.office_checkpoint.remove(office.as_str())?;
        self.gc_outbox(office, u64::MAX)?;
        Ok(())
    }

    pub fn grant(&self, id: &GrantId) -> Result<Option<Grant>> {
        self.grantid_grant
            .get(id.as_str())?
            .map(|v| decode_grant(&v).map_err(corrupt("grantid_grant")))
            .transpose()
    }

    pub fn grants(&self) -> Result<Vec<Grant>> {
        self.grantid_grant
            .iter()
            .map(|kv| {
                let (_, v) = kv?;
                decode_grant(&v).map_err(corrupt("grantid_grant"))
            })
            .collect()
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
    ) -> Result<u64> {
        let value = encode_grant(grant);
        let seq = unwrap_tx(
            (
                &self.grantid_grant,
                &self.grantid_job,
                &self.counters,
                &self.peerseq_outbox,
                &self.auditseq_entry,
                &self.audit_head,
            )
                .transaction(|(grants, jobs, counters, outbox, entries, head)| {
                    grants.insert(grant.id.as_str(), value.as_slice())?;
                    if let Some(job) = job {
                        jobs.insert(grant.id.as_str(), encode_job(job))?;
                    }
                    super::audit::append_tx(entries, head, &self.office, audit)?;
                    push_feed(counters, outbox, feed)
                }),
        )?;
        self.audit_appended();
        Ok(seq)
    }

    /// Appends feed items (in transactions of bounded size).
    pub fn push_feed(&self, feed: &[(OfficeId, FeedItem)]) -> Result<u64> {
        let mut last = 0;
        for chunk in feed.chunks(2048) {
            last = unwrap_tx(
                (&self.counters, &self.peerseq_outbox)
                    .transaction(|(counters, outbox)| push_feed(counters, outbox, chunk)),
            )?;
        }
        Ok(last)
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
        let lower = outbox_key(peer, after.saturating_add(1));
        let upper = outbox_key(peer, upto);
        let prefix_len = outbox_prefix(peer).len();
        let mut out = Vec::new();
        for kv in self
            .peerseq_outbox
            .range::<Vec<u8>, _>((Bound::Included(lower), Bound::Included(upper)))
        {
            let (k, v) = kv?;
            let seq = be_u64(&k[prefix_len..]);
            out.push((seq, decode_item(&v).map_err(corrupt("peerseq_outbox"))?));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Forgets `peer`'s outbox entries up to `upto` (it has applied them)
    /// and remembers how far it got.
    pub fn ack_outbox(&self, peer: &OfficeId, upto: u64) -> Result<()> {
        self.gc_outbox(peer, upto)?;
        self.office_acked.fetch_and_update(peer.as_str(), |old| {
            let old = old.map(be_u64).unwrap_or(0);
            Some(old.max(upto).to_be_bytes().to_vec())
        })?;
        Ok(())
    }

    /// Sets how far `peer` got, backwards too (after it lost its state).
    pub fn reset_acked(&self, peer: &OfficeId, seq: u64) -> Result<()> {
        self.office_acked
            .insert(peer.as_str(), &seq.to_be_bytes())?;
        Ok(())
    }

    fn gc_outbox(&self, peer: &OfficeId, upto: u64) -> Result<()> {
        let lower = outbox_key(peer, 0);
        let upper = outbox_key(peer, upto);
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for kv in self
            .peerseq_outbox
            .range::<Vec<u8>, _>((Bound::Included(lower), Bound::Included(upper)))
        {
            let (k, _) = kv?;
            batch.remove(k);
            n += 1;
            if n % 4096 == 0 {
                self.peerseq_outbox
                    .apply_batch(std::mem::take(&mut batch))?;
            }
        }
        self.peerseq_outbox.apply_batch(batch)?;
        Ok(())
    }

    /// How many outbox entries wait for `peer`.
    pub fn outbox_pending(&self, peer: &OfficeId) -> Result<u64> {
        Ok(self.peerseq_outbox.scan_prefix(outbox_prefix(peer)).count() as u64)
    }

    /// The job of `grant` is done.
    pub fn clear_job(&self, grant: &GrantId) -> Result<()> {
        self.grantid_job.remove(grant.as_str())?;
        Ok(())
    }

    /// Grant jobs still marked as started.
    pub fn jobs(&self) -> Result<Vec<(GrantId, GrantJob)>> {
        self.grantid_job
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let id = GrantId::parse(&String::from_utf8_lossy(&k)).map_err(|e| {
                    corrupt("grantid_job")(DecodeError::Invalid {
                        field: "grant id",
                        reason: e.to_string(),
                    })
                })?;
                Ok((id, decode_job(&v).map_err(corrupt("grantid_job"))?))
            })
            .collect()
    }

    /// Moves job markers a version before the jobs tree kept in
    /// `counters` (as `job:<grant id>`) into their own tree.
    pub(super) fn move_legacy_jobs(&self) -> Result<()> {
        for kv in self.counters.scan_prefix(LEGACY_JOB_PREFIX) {
            let (k, v) = kv?;
            let id = &k[LEGACY_JOB_PREFIX.len()..];
            unwrap_tx(
                (&self.counters, &self.grantid_job).transaction(|(counters, jobs)| {
                    jobs.insert(id, encode_job(legacy_job(&v)))?;
                    counters.remove(k.clone())?;
                    Ok(())
                }),
            )?;
        }
        Ok(())
    }

    pub fn acked(&self, peer: &OfficeId) -> Result<u64> {
        Ok(self
            .office_acked
            .get(peer.as_str())?
            .map(|v| be_u64(&v))
            .unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::sharing::GrantTarget;

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
        assert_eq!(decode_grant(&bytes).unwrap(), g);
        assert_eq!(encode_grant(&g), bytes);
    }

    /// A job marked by an earlier version (`job:<grant>` in `counters`)
    /// is found in the jobs tree once the store opens, and nowhere else.
    #[test]
    fn job_markers_of_an_earlier_version_move_to_their_own_tree() {
        let dir = tempfile::tempdir().unwrap();
        let options = crate::store::StoreOptions {
            cache_bytes: 1 << 20,
        };
        let path = dir.path().join("store");
        {
            let store = Store::open(&path, "phila-da", &options).unwrap();
            store
                .counters
                .insert(b"job:g-0123456789abcdef", b"backfill")
                .unwrap();
            store
                .counters
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
        assert_eq!(store.counters.scan_prefix(LEGACY_JOB_PREFIX).count(), 0);
        store.clear_job(&jobs[0].0).unwrap();
        assert_eq!(store.jobs().unwrap().len(), 1);
    }
}
