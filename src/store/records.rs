//! Record versions, heads and the collection index.

use std::ops::Bound;

use sled::transaction::{
    ConflictableTransactionError, TransactionError, Transactional, TransactionalTree,
};

use super::encoding::{self, Head};
use super::{Result, Store, StoreError, corrupt};
use crate::domain::sharing::FeedItem;
use crate::domain::{OfficeId, RecordId, SignedVersion};

/// Which records `List` returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub collection: Option<String>,
    pub origin: Option<OfficeId>,
}

/// One page of latest versions, ordered by record id.
#[derive(Debug, Clone)]
pub struct ListPage {
    pub records: Vec<SignedVersion>,
    /// The id to continue after, when there are more.
    pub next_after: Option<RecordId>,
}

/// Keys in `counters` of how many records (heads) and versions are stored.
/// Every transaction that adds or removes one keeps them, so that
/// [`Store::counts`] reads two values instead of scanning both trees (a
/// million versions are a gigabyte to read, and sled keeps what it reads).
const RECORD_COUNT: &[u8] = b"count:records";
const VERSION_COUNT: &[u8] = b"count:versions";

/// What a transaction changed in the counts. Made inside the transaction's
/// closure, so that a retried transaction starts again from zero.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct CountDelta {
    pub records: i64,
    pub versions: i64,
}

fn read_count(value: Option<&[u8]>) -> u64 {
    value
        .and_then(|v| <[u8; 8]>::try_from(v).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

/// Applies `d` to the counts, in the transaction that made the change.
pub(super) fn add_counts_tx(
    counters: &TransactionalTree,
    d: CountDelta,
) -> std::result::Result<(), ConflictableTransactionError<StoreError>> {
    for (key, delta) in [(RECORD_COUNT, d.records), (VERSION_COUNT, d.versions)] {
        if delta != 0 {
            let now = read_count(counters.get(key)?.as_deref());
            counters.insert(key, &now.saturating_add_signed(delta).to_be_bytes())?;
        }
    }
    Ok(())
}

impl Store {
    /// Counts the records and versions of a store written before the
    /// counts were kept: once, when it is opened.
    pub(super) fn init_counts(&self) -> Result<()> {
        if self.counters.get(RECORD_COUNT)?.is_some() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        let records = self.recordid_head.len() as u64;
        let versions = self.recordversion_signed.len() as u64;
        batch.insert(RECORD_COUNT, &records.to_be_bytes());
        batch.insert(VERSION_COUNT, &versions.to_be_bytes());
        self.counters.apply_batch(batch)?;
        Ok(())
    }

    /// Number of records and of versions stored.
    pub fn counts(&self) -> Result<(u64, u64)> {
        Ok((
            read_count(self.counters.get(RECORD_COUNT)?.as_deref()),
            read_count(self.counters.get(VERSION_COUNT)?.as_deref()),
        ))
    }
}

pub(super) fn version_key(id: &RecordId, version: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.as_str().len() + 9);
    k.extend_from_slice(id.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

pub(super) fn versions_prefix(id: &RecordId) -> Vec<u8> {
    let mut k = id.as_str().as_bytes().to_vec();
    k.push(0);
    k
}

fn collection_prefix(collection: &str) -> Vec<u8> {
    let mut k = collection.as_bytes().to_vec();
    k.push(0);
    k
}

pub(super) fn collection_key(collection: &str, id: &RecordId) -> Vec<u8> {
    let mut k = collection_prefix(collection);
    k.extend_from_slice(id.as_str().as_bytes());
    k
}

impl Store {
    pub fn head(&self, id: &RecordId) -> Result<Option<Head>> {
        self.recordid_head
            .get(id.as_str())?
            .map(|v| encoding::decode_head(&v).map_err(corrupt("recordid_head")))
            .transpose()
    }

    pub fn version(&self, id: &RecordId, version: u64) -> Result<Option<SignedVersion>> {
        self.recordversion_signed
            .get(version_key(id, version))?
            .map(|v| encoding::decode_signed(&v).map_err(corrupt("recordversion_signed")))
            .transpose()
    }

    pub fn latest(&self, id: &RecordId) -> Result<Option<SignedVersion>> {
        match self.head(id)? {
            Some(h) => self.version(id, h.version),
            None => Ok(None),
        }
    }

    /// Every stored version of a record, oldest first.
    pub fn history(&self, id: &RecordId) -> Result<Vec<SignedVersion>> {
        self.recordversion_signed
            .scan_prefix(versions_prefix(id))
            .map(|kv| {
                let (_, v) = kv?;
                encoding::decode_signed(&v).map_err(corrupt("recordversion_signed"))
            })
            .collect()
    }

    /// Stores `v` as the new head of its record, provided the head is still
    /// `expected_head` (None: the record must not exist), and appends `feed`
    /// to the peers' outboxes and `audit` to the audit log. Version, head,
    /// index, outboxes and audit entry change in one transaction. Durable
    /// after [`Store::commit`].
    pub fn append_version(
        &self,
        v: &SignedVersion,
        expected_head: Option<u64>,
        feed: &[(OfficeId, FeedItem)],
        audit: &[crate::domain::audit::Draft],
    ) -> Result<()> {
        let id = &v.record.id;
        let value = encoding::encode_signed(v);
        let new_head = Head {
            version: v.record.version,
            deleted: v.record.deleted,
            collection: v.record.collection.clone(),
        };
        let head_bytes = encoding::encode_head(&new_head);
        // References to blobs change only under the blob gate.
        let _gate = (!v.record.attachments.is_empty()).then(|| super::blobs::gate(&self.blob_pins));
        let outcome = (
            &self.recordid_head,
            &self.recordversion_signed,
            &self.collection_recordid,
            &self.counters,
            &self.peerseq_outbox,
            &self.blobhash_ref,
            &self.blobhash_blob,
            &self.auditseq_entry,
            &self.audit_head,
        )
            .transaction(
                |(
                    heads,
                    versions,
                    collections,
                    counters,
                    outbox,
                    refs,
                    blobs,
                    entries,
                    audit_head,
                )| {
                    let old = match heads.get(id.as_str())? {
                        Some(b) => Some(encoding::decode_head(&b).map_err(|e| {
                            ConflictableTransactionError::Abort(corrupt("recordid_head")(e))
                        })?),
                        None => None,
                    };
                    let actual = old.as_ref().map(|h| h.version);
                    if actual != expected_head {
                        return Err(ConflictableTransactionError::Abort(StoreError::HeadMoved {
                            expected: expected_head,
                            actual,
                        }));
                    }
                    // The index holds deleted records too: revoking a collection
                    // must reach their tombstones at peers.
                    if let Some(old) = &old {
                        collections.remove(collection_key(&old.collection, id))?;
                    }
                    collections.insert(collection_key(&new_head.collection, id), &[])?;
                    super::blobs::add_local_refs_tx(refs, blobs, &v.record)?;
                    let replaced =
                        versions.insert(version_key(id, v.record.version), value.as_slice())?;
                    heads.insert(id.as_str(), head_bytes.as_slice())?;
                    add_counts_tx(
                        counters,
                        CountDelta {
                            records: old.is_none().into(),
                            versions: replaced.is_none().into(),
                        },
                    )?;
                    super::sharing::push_feed(counters, outbox, feed)?;
                    super::audit::append_tx(entries, audit_head, &self.office, audit)?;
                    Ok(())
                },
            );
        outcome.map_err(|e| match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => StoreError::Engine(e),
        })?;
        self.audit_appended();
        Ok(())
    }

    /// Latest versions of records that are not deleted, by id, after
    /// `after`, at most `limit`.
    pub fn list(
        &self,
        filter: &ListFilter,
        after: Option<&RecordId>,
        limit: usize,
    ) -> Result<ListPage> {
        let origin_prefix = filter
            .origin
            .as_ref()
            .map(|o| format!("{o}:").into_bytes())
            .unwrap_or_default();
        let mut ids = Vec::with_capacity(limit + 1);
        match &filter.collection {
            Some(collection) => {
                let prefix = collection_prefix(collection);
                let lower = match after {
                    Some(a) => Bound::Excluded(collection_key(collection, a)),
                    None => Bound::Included(prefix.clone()),
                };
                for kv in self
                    .collection_recordid
                    .range::<Vec<u8>, _>((lower, Bound::Unbounded))
                {
                    let (k, _) = kv?;
                    if !k.starts_with(&prefix) || ids.len() > limit {
                        break;
                    }
                    let id_bytes = &k[prefix.len()..];
                    if !id_bytes.starts_with(&origin_prefix) {
                        continue;
                    }
                    let id = parse_id(id_bytes)?;
                    if self.head(&id)?.is_some_and(|h| !h.deleted) {
                        ids.push(id);
                    }
                }
            }
            None => {
                let lower = match after {
                    Some(a) => Bound::Excluded(a.as_str().as_bytes().to_vec()),
                    None => Bound::Included(origin_prefix.clone()),
                };
                for kv in self
                    .recordid_head
                    .range::<Vec<u8>, _>((lower, Bound::Unbounded))
                {
                    let (k, v) = kv?;
                    if !k.starts_with(&origin_prefix) || ids.len() > limit {
                        break;
                    }
                    let head = encoding::decode_head(&v).map_err(corrupt("recordid_head"))?;
                    if !head.deleted {
                        ids.push(parse_id(&k)?);
                    }
                }
            }
        }
        let next_after = if ids.len() > limit {
            ids.truncate(limit);
            ids.last().cloned()
        } else {
            None
        };
        let mut records = Vec::with_capacity(ids.len());
        for id in &ids {
            // A record deleted between the scan and here is simply skipped.
            if let Some(v) = self.latest(id)?.filter(|v| !v.record.deleted) {
                records.push(v);
            }
        }
        Ok(ListPage {
            records,
            next_after,
        })
    }
}

fn parse_id(bytes: &[u8]) -> Result<RecordId> {
    let s = std::str::from_utf8(bytes).map_err(|_| StoreError::Corrupt {
        tree: "recordid_head",
        source: crate::domain::codec::DecodeError::NotUtf8("record id"),
    })?;
    RecordId::parse(s).map_err(|e| StoreError::Corrupt {
        tree: "recordid_head",
        source: crate::domain::codec::DecodeError::Invalid {
            field: "record id",
            reason: e.to_string(),
        },
    })
}

impl Store {
    /// Every record id in `collection`, deleted ones included, of `origin`.
    pub fn collection_ids(&self, collection: &str, origin: &OfficeId) -> Result<Vec<RecordId>> {
        let prefix = collection_prefix(collection);
        let origin_prefix = format!("{origin}:");
        let mut out = Vec::new();
        for k in self.collection_recordid.scan_prefix(&prefix).keys() {
            let k = k?;
            let id_bytes = &k[prefix.len()..];
            if id_bytes.starts_with(origin_prefix.as_bytes()) {
                out.push(parse_id(id_bytes)?);
            }
        }
        Ok(out)
    }

    /// Every record id in `collection`, deleted ones included, of any
    /// origin (this office's records and replicas alike).
    pub fn collection_record_ids(&self, collection: &str) -> Result<Vec<RecordId>> {
        let prefix = collection_prefix(collection);
        self.collection_recordid
            .scan_prefix(&prefix)
            .keys()
            .map(|k| parse_id(&k?[prefix.len()..]))
            .collect()
    }
}
