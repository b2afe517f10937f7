//! The pulling side: applying a peer's batch and checkpoint atomically,
//! purging replicas (leaving stubs), and the purge acknowledgements this
//! office signed.
//!
//! Invariant: applying is idempotent — a version already held, or older
//! than the head, changes nothing — so a retried batch is harmless.

use sled::transaction::{Transactional, TransactionalTree};

use super::blobs;
use super::encoding::{self, Head};
use super::keys::{collection_key, version_key, versions_prefix};
use super::records::{CountDelta, add_counts_tx};
use super::tx::{Tx, abort, unwrap_tx};
use super::{Result, Store, StoreError, corrupt};
use crate::domain::audit::{Actor, Draft, MAX_RECORDS, Outcome, Target};
use crate::domain::codec::DecodeError;
use crate::domain::sharing::PurgeAck;
use crate::domain::{OfficeId, RecordId, SignedVersion};

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
use super::encoding::{decode_our_ack, decode_stub, encode_our_ack, encode_stub};

fn read_head(heads: &TransactionalTree, id: &RecordId) -> Tx<Option<Head>> {
    match heads.get(id.as_str())? {
        Some(b) => Ok(Some(
            encoding::decode_head(&b).map_err(|e| abort(corrupt("recordid_head")(e)))?,
        )),
        None => Ok(None),
    }
}

/// The trees that hold a record inside a transaction: its head, versions,
/// place in the collection index, purge stub, and the references of its
/// versions to files.
struct RecordTrees<'a> {
    heads: &'a TransactionalTree,
    versions: &'a TransactionalTree,
    collections: &'a TransactionalTree,
    purged: &'a TransactionalTree,
    refs: &'a TransactionalTree,
}

/// What the files of applied versions need: the blobs known and the
/// fetches queued, and storage ids for new ones.
struct FileTrees<'a, I> {
    blobs: &'a TransactionalTree,
    fetches: &'a TransactionalTree,
    storage_ids: I,
}

impl<'a> RecordTrees<'a> {
    /// The trees in the order their fields are declared.
    fn of([heads, versions, collections, purged, refs]: [&'a TransactionalTree; 5]) -> Self {
        Self {
            heads,
            versions,
            collections,
            purged,
            refs,
        }
    }

    /// Stores a peer's version unless it is held already; moves the head
    /// and the collection index when it is the newest. Returns its key, or
    /// `None` when it was held.
    fn apply_version<I: Iterator<Item = u64>>(
        &self,
        v: &SignedVersion,
        peer: &OfficeId,
        files: &mut FileTrees<'_, I>,
        out: &mut ApplyOutcome,
        counts: &mut CountDelta,
    ) -> Tx<Option<Vec<u8>>> {
        let id = &v.record.id;
        let key = version_key(id, v.record.version);
        if self.versions.get(&key)?.is_some() {
            out.already_held += 1;
            return Ok(None);
        }
        self.versions
            .insert(key.clone(), encoding::encode_signed(v))?;
        counts.versions += 1;
        out.fetches_queued += blobs::add_replica_refs_tx(
            self.refs,
            files.blobs,
            files.fetches,
            &v.record,
            peer,
            &mut files.storage_ids,
        )?;
        self.purged.remove(id.as_str())?;
        let old = read_head(self.heads, id)?;
        counts.records += i64::from(old.is_none());
        if old.as_ref().is_none_or(|h| h.version < v.record.version) {
            if let Some(old) = old {
                self.collections
                    .remove(collection_key(&old.collection, id))?;
            }
            self.collections
                .insert(collection_key(&v.record.collection, id), &[])?;
            let head = Head {
                version: v.record.version,
                deleted: v.record.deleted,
                collection: v.record.collection.clone(),
            };
            self.heads
                .insert(id.as_str(), encoding::encode_head(&head))?;
        }
        out.applied += 1;
        Ok(Some(key))
    }

    /// Deletes every version of a replica (`keys`, found by a prefix scan
    /// beforehand), leaving a stub, and takes what it removed off `counts`.
    /// Returns whether there was anything to purge.
    fn purge(
        &self,
        id: &RecordId,
        keys: &[sled::IVec],
        now_ms: u64,
        counts: &mut CountDelta,
    ) -> Tx<bool> {
        let Some(head) = read_head(self.heads, id)? else {
            return Ok(false);
        };
        let mut digest = [0u8; 32];
        if let Some(latest) = self.versions.get(version_key(id, head.version))? {
            let v = encoding::decode_signed(&latest)
                .map_err(|e| abort(corrupt("recordversion_signed")(e)))?;
            digest = v.digest;
        }
        for key in keys {
            if let Some(value) = self.versions.remove(key.clone())? {
                blobs::drop_refs_tx(self.refs, &value)?;
                counts.versions -= 1;
            }
        }
        self.collections
            .remove(collection_key(&head.collection, id))?;
        self.heads.remove(id.as_str())?;
        counts.records -= 1;
        let stub = PurgeStub {
            id: id.clone(),
            version: head.version,
            digest,
            purged_at_ms: now_ms,
        };
        self.purged.insert(id.as_str(), encode_stub(&stub))?;
        Ok(true)
    }
}

impl Store {
    /// Our checkpoint in `peer`'s feed.
    pub fn checkpoint(&self, peer: &OfficeId) -> Result<u64> {
        Ok(self
            .office_checkpoint
            .get(peer.as_str())?
            .map(|v| {
                let mut b = [0u8; 8];
                if v.len() == 8 {
                    b.copy_from_slice(&v);
                }
                u64::from_be_bytes(b)
            })
            .unwrap_or(0))
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
        let mut revoked_keys = std::collections::HashMap::new();
        let mut attachments = 0;
        for item in items {
            match item {
                ApplyItem::Revoke(id) => {
                    revoked_keys.insert(id.clone(), self.version_keys(id)?);
                }
                ApplyItem::Version(v) => attachments += v.record.attachments.len(),
                ApplyItem::Ack(_) => {}
            }
        }
        // Storage ids for fetches this batch may queue.
        let storage_ids: Vec<u64> = (0..attachments)
            .map(|_| self.db.generate_id())
            .collect::<std::result::Result<_, _>>()?;
        let gate = blobs::gate(&self.blob_pins);
        let outcome = unwrap_tx(
            (
                &self.recordid_head,
                &self.recordversion_signed,
                &self.collection_recordid,
                &self.recordid_purged,
                &self.office_checkpoint,
                &self.grantid_ourack,
                &self.blobhash_ref,
                &self.blobhash_blob,
                &self.blobhash_fetch,
                &self.auditseq_entry,
                &self.audit_head,
                &self.counters,
            )
                .transaction(
                    |(
                        heads,
                        versions,
                        collections,
                        purged,
                        checkpoints,
                        acks,
                        refs,
                        blobs,
                        fetches,
                        entries,
                        audit_head,
                        counters,
                    )| {
                        let record = RecordTrees::of([heads, versions, collections, purged, refs]);
                        let mut files = FileTrees {
                            blobs,
                            fetches,
                            storage_ids: storage_ids.iter().copied(),
                        };
                        let mut out = ApplyOutcome::default();
                        let mut counts = CountDelta::default();
                        let mut log = BatchLog::default();
                        // Versions stored earlier in this same batch were not
                        // there when the keys of revoked records were scanned.
                        let mut fresh: std::collections::HashMap<RecordId, Vec<sled::IVec>> =
                            std::collections::HashMap::new();
                        for item in items {
                            match item {
                                ApplyItem::Version(v) => {
                                    let applied = record.apply_version(
                                        v,
                                        peer,
                                        &mut files,
                                        &mut out,
                                        &mut counts,
                                    )?;
                                    if let Some(key) = applied {
                                        let id = &v.record.id;
                                        fresh.entry(id.clone()).or_default().push(key.into());
                                        log.applied.push((id.to_string(), v.record.version));
                                    }
                                }
                                ApplyItem::Revoke(id) => {
                                    let mut keys =
                                        revoked_keys.get(id).cloned().unwrap_or_default();
                                    keys.extend(fresh.get(id).into_iter().flatten().cloned());
                                    if record.purge(id, &keys, now_ms, &mut counts)? {
                                        out.purged += 1;
                                        log.purged.push((id.to_string(), 0));
                                    }
                                }
                                ApplyItem::Ack(ack) => {
                                    acks.insert(ack.grant.as_str(), encode_our_ack(ack, false))?;
                                    log.acks.push(ack.grant.to_string());
                                }
                            }
                        }
                        checkpoints.insert(peer.as_str(), &checkpoint.to_be_bytes())?;
                        add_counts_tx(counters, counts)?;
                        let mut drafts = log.drafts(&self.office, peer, now_ms);
                        drafts.extend_from_slice(rejected);
                        super::audit::append_tx(entries, audit_head, &self.office, &drafts)?;
                        Ok(out)
                    },
                ),
        )?;
        drop(gate);
        self.audit_appended();
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
        let prefix = format!("{origin}:");
        let ids: Vec<RecordId> = self
            .recordid_head
            .scan_prefix(prefix.as_bytes())
            .keys()
            .map(|k| {
                let k = k?;
                RecordId::parse(&String::from_utf8_lossy(&k)).map_err(|e| StoreError::Corrupt {
                    tree: "recordid_head",
                    source: DecodeError::Invalid {
                        field: "record id",
                        reason: e.to_string(),
                    },
                })
            })
            .collect::<Result<_>>()?;
        let mut n = 0;
        for chunk in ids.chunks(256) {
            let keys: Vec<Vec<sled::IVec>> = chunk
                .iter()
                .map(|id| self.version_keys(id))
                .collect::<Result<_>>()?;
            let _gate = blobs::gate(&self.blob_pins);
            n += unwrap_tx(
                (
                    &self.recordid_head,
                    &self.recordversion_signed,
                    &self.collection_recordid,
                    &self.recordid_purged,
                    &self.blobhash_ref,
                    &self.auditseq_entry,
                    &self.audit_head,
                    &self.counters,
                )
                    .transaction(
                        |(heads, versions, collections, purged, refs, entries, head, counters)| {
                            let mut n = 0u64;
                            let mut counts = CountDelta::default();
                            let mut gone = Vec::new();
                            let record =
                                RecordTrees::of([heads, versions, collections, purged, refs]);
                            for (id, keys) in chunk.iter().zip(&keys) {
                                if record.purge(id, keys, now_ms, &mut counts)? {
                                    n += 1;
                                    gone.push((id.to_string(), 0));
                                }
                            }
                            let mut target = Target {
                                records: gone,
                                peer: origin.to_string(),
                                ..Target::default()
                            };
                            target.detail = "the peer was removed".into();
                            let draft = Draft {
                                at_ms: now_ms,
                                ..Draft::new(actor.clone(), "replica.purged", target, Outcome::ok())
                            };
                            if n > 0 {
                                super::audit::append_tx(entries, head, &self.office, &[draft])?;
                            }
                            add_counts_tx(counters, counts)?;
                            Ok(n)
                        },
                    ),
            )?;
        }
        self.audit_appended();
        if n > 0 {
            self.blob_wake.sweep.notify_one();
        }
        Ok(n)
    }

    /// Keys of every stored version of a record.
    fn version_keys(&self, id: &RecordId) -> Result<Vec<sled::IVec>> {
        self.recordversion_signed
            .scan_prefix(versions_prefix(id))
            .keys()
            .map(|k| Ok(k?))
            .collect()
    }

    pub fn purge_stub(&self, id: &RecordId) -> Result<Option<PurgeStub>> {
        self.recordid_purged
            .get(id.as_str())?
            .map(|v| decode_stub(&v).map_err(corrupt("recordid_purged")))
            .transpose()
    }

    /// Purge acknowledgements we signed for `origin` that it has not
    /// confirmed yet.
    pub fn undelivered_acks(&self, origin: &OfficeId) -> Result<Vec<PurgeAck>> {
        let mut out = Vec::new();
        for kv in self.grantid_ourack.iter() {
            let (_, v) = kv?;
            let (ack, delivered) = decode_our_ack(&v).map_err(corrupt("grantid_ourack"))?;
            if !delivered && &ack.origin == origin {
                out.push(ack);
            }
        }
        Ok(out)
    }

    pub fn mark_ack_delivered(&self, grant: &str) -> Result<()> {
        if let Some(v) = self.grantid_ourack.get(grant)? {
            let (ack, _) = decode_our_ack(&v).map_err(corrupt("grantid_ourack"))?;
            self.grantid_ourack
                .insert(grant, encode_our_ack(&ack, true))?;
        }
        Ok(())
    }
}
