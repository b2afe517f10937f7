//! The pulling side: applying a peer's batch and checkpoint atomically,
//! purging replicas (leaving stubs), and the purge acknowledgements this
//! office signed.
//!
//! Invariant: applying is idempotent — a version already held, or older
//! than the head, changes nothing — so a retried batch is harmless.

use super::blobs;
use super::encoding::{AuditHead, BlobMeta, Fetch, Head, OurAck, PurgeStub as Stub};
use super::keys::{CollectionKey, OfOrigin, RefKey, VersionKey};
use super::records::{CountDelta, add_counts_tx};
use super::trees::tree_set;
use super::tx::{Tx, unwrap_tx};
use super::typed::TxTree;
use super::{Result, Store};
use crate::domain::audit::{Actor, Draft, Entry, MAX_RECORDS, Outcome, Target};
use crate::domain::sharing::{GrantId, PurgeAck};
use crate::domain::{BlobHash, OfficeId, RecordId, SignedVersion};

/// One thing to apply from a peer's batch, already verified.
#[derive(Debug, Clone)]
pub enum ApplyItem {
    Version(Box<SignedVersion>),
    Revoke(RecordId),
    /// A purge acknowledgement this office signed, to deliver.
    Ack(PurgeAck),
}

/// What applying a batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    pub applied: usize,
    pub already_held: usize,
    pub purged: usize,
    /// Attachments this node now has to fetch from the peer.
    pub fetches_queued: usize,
    /// Versions held here whose digest differs from the copy received; the
    /// held copy is kept.
    pub conflicts: Vec<(RecordId, u64)>,
}

/// What one batch did, for its audit entries.
#[derive(Default)]
struct BatchLog {
    applied: Vec<(String, u64)>,
    purged: Vec<(String, u64)>,
    acks: Vec<String>,
}

impl BatchLog {
    fn drafts(self, node: &str, peer: &OfficeId, now_ms: u64) -> Vec<Draft> {
        let entry = |action: &str, records: Vec<(String, u64)>, detail: String| Draft {
            at_ms: now_ms,
            ..Draft::new(
                Actor::node(node),
                action,
                Target {
                    records,
                    peer: peer.to_string(),
                    detail,
                    ..Target::default()
                },
                Outcome::ok(),
            )
        };
        let mut out = Vec::new();
        for chunk in self.applied.chunks(MAX_RECORDS) {
            out.push(entry("replica.applied", chunk.to_vec(), String::new()));
        }
        for chunk in self.purged.chunks(MAX_RECORDS) {
            out.push(entry(
                "replica.purged",
                chunk.to_vec(),
                "the grant was revoked".into(),
            ));
        }
        for grant in self.acks {
            out.push(entry(
                "purge.acknowledged",
                Vec::new(),
                format!("signed the purge acknowledgement of grant {grant}"),
            ));
        }
        out
    }
}

pub use super::encoding::PurgeStub;

tree_set! {
    /// Applying a peer's batch: its versions (with their files to fetch),
    /// revocations and closed grants, the checkpoint, counts and audit.
    ApplyTx {
        heads: RecordId => Head,
        versions: VersionKey => SignedVersion,
        collections: CollectionKey => (),
        purged: RecordId => Stub,
        refs: RefKey => (),
        blobs: BlobHash => BlobMeta,
        fetches: BlobHash => Fetch,
        checkpoints: OfficeId => u64,
        our_acks: GrantId => OurAck,
        counters: str => u64,
        audit_entries: u64 => Entry,
        audit_head: str => AuditHead,
        audit_terms: super::keys::AuditTerm => (),
        search_queue: RecordId => u64,
    }
}

tree_set! {
    /// Purging the replicas of a removed peer.
    PurgeTx {
        heads: RecordId => Head,
        versions: VersionKey => SignedVersion,
        collections: CollectionKey => (),
        purged: RecordId => Stub,
        refs: RefKey => (),
        counters: str => u64,
        audit_entries: u64 => Entry,
        audit_head: str => AuditHead,
        audit_terms: super::keys::AuditTerm => (),
        search_queue: RecordId => u64,
    }
}

/// The trees that hold a record inside a transaction: its head, versions,
/// place in the collection index, purge stub, and the references of its
/// versions to files.
struct RecordTrees<'a, 't> {
    heads: &'a TxTree<'t, RecordId, Head>,
    versions: &'a TxTree<'t, VersionKey, SignedVersion>,
    collections: &'a TxTree<'t, CollectionKey, ()>,
    purged: &'a TxTree<'t, RecordId, Stub>,
    refs: &'a TxTree<'t, RefKey, ()>,
    search_queue: &'a TxTree<'t, RecordId, u64>,
}

/// What the files of applied versions need: the blobs known and the
/// fetches queued.
struct FileTrees<'a, 't> {
    blobs: &'a TxTree<'t, BlobHash, BlobMeta>,
    fetches: &'a TxTree<'t, BlobHash, Fetch>,
}

impl RecordTrees<'_, '_> {
    /// Stores a peer's version unless it is held already; moves the head
    /// and the collection index when it is the newest. Returns whether it
    /// was stored (not held already).
    fn apply_version(
        &self,
        v: &SignedVersion,
        peer: &OfficeId,
        files: &FileTrees<'_, '_>,
        out: &mut ApplyOutcome,
        counts: &mut CountDelta,
    ) -> Tx<bool> {
        let id = &v.record.id;
        if self.versions.contains((id, v.record.version))? {
            out.already_held += 1;
            return Ok(false);
        }
        self.versions.insert((id, v.record.version), v)?;
        counts.versions += 1;
        out.fetches_queued +=
            blobs::add_replica_refs_tx(self.refs, files.blobs, files.fetches, &v.record, peer)?;
        self.purged.remove(id)?;
        let old = self.heads.get(id)?;
        if old.is_none() {
            counts.record(id, 1);
        }
        if old.as_ref().is_none_or(|h| h.version < v.record.version) {
            if let Some(old) = old {
                self.collections.remove((old.collection.as_str(), id))?;
            }
            self.collections
                .insert((v.record.collection.as_str(), id), &())?;
            let head = Head {
                version: v.record.version,
                deleted: v.record.deleted,
                collection: v.record.collection.clone(),
            };
            self.heads.insert(id, &head)?;
            super::search_queue::queue_tx(self.search_queue, id)?;
        }
        out.applied += 1;
        Ok(true)
    }

    /// Deletes every version of a replica (`versions`, found by a prefix
    /// scan beforehand), leaving a stub, and takes what it removed off
    /// `counts`. Returns whether there was anything to purge.
    fn purge(
        &self,
        id: &RecordId,
        versions: &[u64],
        now_ms: u64,
        counts: &mut CountDelta,
    ) -> Tx<bool> {
        let Some(head) = self.heads.get(id)? else {
            // Queued all the same: an index that took in a version a crash
            // then took back from the store drops it.
            super::search_queue::queue_tx(self.search_queue, id)?;
            return Ok(false);
        };
        let digest = match self.versions.get((id, head.version))? {
            Some(latest) => latest.digest,
            None => [0u8; 32],
        };
        for &version in versions {
            if let Some(removed) = self.versions.take((id, version))? {
                blobs::drop_refs_tx(self.refs, &removed)?;
                counts.versions -= 1;
            }
        }
        self.collections.remove((head.collection.as_str(), id))?;
        self.heads.remove(id)?;
        super::search_queue::queue_tx(self.search_queue, id)?;
        counts.record(id, -1);
        let stub = PurgeStub {
            id: id.clone(),
            version: head.version,
            digest,
            purged_at_ms: now_ms,
        };
        self.purged.insert(id, &stub)?;
        Ok(true)
    }
}

impl Store {
    /// Our checkpoint in `peer`'s feed.
    pub fn checkpoint(&self, peer: &OfficeId) -> Result<u64> {
        Ok(self.trees.checkpoints.get(peer)?.unwrap_or(0))
    }

    /// Applies verified items from `peer`'s feed and moves our checkpoint to
    /// `checkpoint`, in one transaction, with audit entries for what was
    /// applied and purged, and `rejected` (entries about items refused before
    /// they got here).
    pub fn apply_batch(
        &self,
        peer: &OfficeId,
        items: &[ApplyItem],
        checkpoint: u64,
        now_ms: u64,
        rejected: &[Draft],
    ) -> Result<ApplyOutcome> {
        // Versions grow the store; a batch of revocations only shrinks it.
        if items.iter().any(|i| matches!(i, ApplyItem::Version(_))) {
            self.check_space()?;
        }
        let mut revoked = std::collections::HashMap::new();
        for item in items {
            if let ApplyItem::Revoke(id) = item {
                revoked.insert(id.clone(), self.stored_versions(id)?);
            }
        }
        let gate = blobs::gate(&self.blob_pins);
        let outcome = unwrap_tx(ApplyTx::run(&self.trees, |t| {
            let record = RecordTrees {
                heads: &t.heads,
                versions: &t.versions,
                collections: &t.collections,
                purged: &t.purged,
                refs: &t.refs,
                search_queue: &t.search_queue,
            };
            let files = FileTrees {
                blobs: &t.blobs,
                fetches: &t.fetches,
            };
            let mut out = ApplyOutcome::default();
            let mut counts = CountDelta::default();
            let mut log = BatchLog::default();
            // Versions stored earlier in this same batch were not there
            // when the versions of revoked records were scanned.
            let mut fresh: std::collections::HashMap<&RecordId, Vec<u64>> =
                std::collections::HashMap::new();
            for item in items {
                match item {
                    ApplyItem::Version(v) => {
                        if record.apply_version(v, peer, &files, &mut out, &mut counts)? {
                            let id = &v.record.id;
                            fresh.entry(id).or_default().push(v.record.version);
                            log.applied.push((id.to_string(), v.record.version));
                        }
                    }
                    ApplyItem::Revoke(id) => {
                        let mut versions = revoked.get(id).cloned().unwrap_or_default();
                        versions.extend(fresh.get(id).into_iter().flatten());
                        if record.purge(id, &versions, now_ms, &mut counts)? {
                            out.purged += 1;
                            log.purged.push((id.to_string(), 0));
                        }
                    }
                    ApplyItem::Ack(ack) => {
                        let ours = OurAck {
                            ack: ack.clone(),
                            delivered: false,
                        };
                        t.our_acks.insert(&ack.grant, &ours)?;
                        log.acks.push(ack.grant.to_string());
                    }
                }
            }
            t.checkpoints.insert(peer, &checkpoint)?;
            add_counts_tx(&t.counters, &counts)?;
            let mut drafts = log.drafts(&self.office, peer, now_ms);
            drafts.extend_from_slice(rejected);
            super::audit::append_tx(
                &t.audit_entries,
                &t.audit_head,
                &t.audit_terms,
                &self.office,
                &drafts,
            )?;
            Ok(out)
        }))
        .map_err(|e| self.space.note(e))?;
        drop(gate);
        self.audit_appended();
        if outcome.applied > 0 || outcome.purged > 0 {
            self.search_wake.notify_one();
        }
        if outcome.fetches_queued > 0 {
            self.blob_wake.fetch.notify_one();
        }
        if outcome.purged > 0 {
            self.blob_wake.sweep.notify_one();
        }
        Ok(outcome)
    }

    /// Deletes every replica whose origin is `origin`, leaving stubs; each
    /// transaction also logs the records it purged, on behalf of `actor`.
    pub fn purge_replicas_of(&self, origin: &OfficeId, now_ms: u64, actor: &Actor) -> Result<u64> {
        let ids: Vec<RecordId> = self
            .trees
            .heads
            .scan_keys(OfOrigin(Some(origin)))
            .collect::<Result<_>>()?;
        let mut n = 0;
        for chunk in ids.chunks(256) {
            let versions: Vec<Vec<u64>> = chunk
                .iter()
                .map(|id| self.stored_versions(id))
                .collect::<Result<_>>()?;
            let _gate = blobs::gate(&self.blob_pins);
            n += unwrap_tx(PurgeTx::run(&self.trees, |t| {
                let record = RecordTrees {
                    heads: &t.heads,
                    versions: &t.versions,
                    collections: &t.collections,
                    purged: &t.purged,
                    refs: &t.refs,
                    search_queue: &t.search_queue,
                };
                let mut counts = CountDelta::default();
                let mut gone = Vec::new();
                for (id, versions) in chunk.iter().zip(&versions) {
                    if record.purge(id, versions, now_ms, &mut counts)? {
                        gone.push((id.to_string(), 0));
                    }
                }
                let n = gone.len() as u64;
                if n > 0 {
                    let target = Target {
                        records: gone,
                        peer: origin.to_string(),
                        detail: "the peer was removed".into(),
                        ..Target::default()
                    };
                    let draft = Draft {
                        at_ms: now_ms,
                        ..Draft::new(actor.clone(), "replica.purged", target, Outcome::ok())
                    };
                    super::audit::append_tx(
                        &t.audit_entries,
                        &t.audit_head,
                        &t.audit_terms,
                        &self.office,
                        &[draft],
                    )?;
                }
                add_counts_tx(&t.counters, &counts)?;
                Ok(n)
            }))?;
        }
        self.audit_appended();
        if n > 0 {
            self.search_wake.notify_one();
            self.blob_wake.sweep.notify_one();
        }
        Ok(n)
    }

    /// The version numbers of every stored version of a record.
    fn stored_versions(&self, id: &RecordId) -> Result<Vec<u64>> {
        self.trees
            .versions
            .scan_keys(id)
            .map(|k| k.map(|(_, version)| version))
            .collect()
    }

    pub fn purge_stub(&self, id: &RecordId) -> Result<Option<PurgeStub>> {
        self.trees.purged.get(id)
    }

    /// Purge acknowledgements we signed for `origin` that it has not
    /// confirmed yet.
    pub fn undelivered_acks(&self, origin: &OfficeId) -> Result<Vec<PurgeAck>> {
        let mut out = Vec::new();
        for ours in self.trees.our_acks.values() {
            let ours = ours?;
            if !ours.delivered && &ours.ack.origin == origin {
                out.push(ours.ack);
            }
        }
        Ok(out)
    }

    /// How many purge acknowledgements this office keeps for `origin`,
    /// confirmed or not.
    pub fn ack_count(&self, origin: &OfficeId) -> Result<usize> {
        let mut n = 0;
        for ours in self.trees.our_acks.values() {
            if &ours?.ack.origin == origin {
                n += 1;
            }
        }
        Ok(n)
    }

    /// The purge acknowledgement this office signed for `grant`, if any.
    pub fn our_ack(&self, grant: &GrantId) -> Result<Option<PurgeAck>> {
        Ok(self.trees.our_acks.get(grant)?.map(|ours| ours.ack))
    }

    pub fn mark_ack_delivered(&self, grant: &GrantId) -> Result<()> {
        if let Some(mut ours) = self.trees.our_acks.get(grant)? {
            ours.delivered = true;
            self.trees.our_acks.insert(grant, &ours)?;
        }
        Ok(())
    }
}
