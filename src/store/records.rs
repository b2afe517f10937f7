//! Record versions, heads and the collection index.

use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::encoding::{AuditHead, BlobMeta, Head};
use super::keys::{CollectionKey, OfOrigin, OfficeSeq, RefKey, VersionKey};
use super::trees::Trees;
use super::trees::tree_set;
use super::tx::{Tx, unwrap_tx};
use super::typed::{Encoded, TxTree};
use super::{Result, Store, StoreError};
use crate::domain::audit::Entry;
use crate::domain::sharing::FeedItem;
use crate::domain::{BlobHash, OfficeId, RecordId, SignedVersion};

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
const RECORD_COUNT: &str = "count:records";
const VERSION_COUNT: &str = "count:versions";
/// Both count keys, for the store's disk view.
pub(super) const COUNT_KEYS: [&str; 2] = [RECORD_COUNT, VERSION_COUNT];

/// What a transaction changed in the counts. Made inside the transaction's
/// closure, so that a retried transaction starts again from zero.
#[derive(Debug, Default, Clone)]
pub(super) struct CountDelta {
    pub records: i64,
    pub versions: i64,
    /// Records added (removed: negative) per origin office
    /// ([`super::counts`]).
    pub origins: Vec<(OfficeId, i64)>,
}

impl CountDelta {
    /// One record of `id`'s origin more (`n` = 1) or less (-1).
    pub(super) fn record(&mut self, id: &RecordId, n: i64) {
        self.records += n;
        let origin = id.origin();
        match self.origins.iter_mut().find(|(o, _)| *o == origin) {
            Some((_, d)) => *d += n,
            None => self.origins.push((origin, n)),
        }
    }
}

/// Applies `d` to the counts, in the transaction that made the change.
pub(super) fn add_counts_tx(counters: &TxTree<'_, str, u64>, d: &CountDelta) -> Tx<()> {
    for (key, delta) in [(RECORD_COUNT, d.records), (VERSION_COUNT, d.versions)] {
        if delta != 0 {
            let now = counters.get(key)?.unwrap_or(0);
            counters.insert(key, &now.saturating_add_signed(delta))?;
        }
    }
    for (origin, delta) in &d.origins {
        super::counts::add_tx(
            counters,
            &super::counts::origin_key(origin.as_str()),
            *delta,
        )?;
    }
    Ok(())
}

tree_set! {
    /// Setting the counts.
    CountTx {
        counters: str => u64,
    }
}

impl Store {
    /// Counts the records and versions of a store written before the
    /// counts were kept: once, when it is opened.
    pub(super) fn init_counts(&self) -> Result<()> {
        if self.trees.counters.get(RECORD_COUNT)?.is_some() {
            return Ok(());
        }
        let records = self.trees.heads.len() as u64;
        let versions = self.trees.versions.len() as u64;
        unwrap_tx(CountTx::run(&self.trees, |t| {
            t.counters.insert(RECORD_COUNT, &records)?;
            t.counters.insert(VERSION_COUNT, &versions)?;
            Ok(())
        }))
    }

    /// Number of records and of versions stored.
    pub fn counts(&self) -> Result<(u64, u64)> {
        let count = |key| Ok::<_, StoreError>(self.trees.counters.get(key)?.unwrap_or(0));
        Ok((count(RECORD_COUNT)?, count(VERSION_COUNT)?))
    }
}

impl Store {
    pub fn head(&self, id: &RecordId) -> Result<Option<Head>> {
        self.trees.heads.get(id)
    }

    pub fn version(&self, id: &RecordId, version: u64) -> Result<Option<SignedVersion>> {
        self.trees.versions.get((id, version))
    }

    pub fn latest(&self, id: &RecordId) -> Result<Option<SignedVersion>> {
        match self.head(id)? {
            Some(h) => self.version(id, h.version),
            None => Ok(None),
        }
    }

    /// Every stored version of a record, oldest first.
    pub fn history(&self, id: &RecordId) -> Result<Vec<SignedVersion>> {
        self.trees
            .versions
            .scan(id)
            .map(|kv| kv.map(|(_, v)| v))
            .collect()
    }

    /// Appends `v` after the head `expected_head` (`None`: a new record)
    /// with its feed entries and audit entries, in one transaction, and
    /// waits until it is durable. Concurrent writes share one transaction
    /// (those that list files only the flush) and one flush
    /// ([`commit`](super::commit)); each still succeeds or fails on its own.
    pub async fn write_version(
        &self,
        v: &SignedVersion,
        expected_head: Option<u64>,
        feed: Vec<(OfficeId, FeedItem)>,
        audit: Vec<crate::domain::audit::Draft>,
    ) -> Result<()> {
        self.check_space()?;
        let write = VersionWrite::new(v, expected_head, feed, audit);
        let assigned = if v.record.attachments.is_empty() {
            self.committer
                .write(write)
                .await
                .map_err(|e| self.space.note(e))?
        } else {
            // A write that lists files takes the blob gate, which a sweep
            // or a replica batch may hold for a while: it goes on its own,
            // off the async workers, so that neither they nor the commit
            // thread wait for the gate.
            let writer = self.writer.clone();
            tokio::task::spawn_blocking(move || writer.apply_one(&write))
                .await
                .map_err(|e| StoreError::Inconsistent(format!("a write's task failed: {e}")))?
                .map_err(|e| self.space.note(e))?;
            self.committer
                .commit()
                .await
                .map_err(|e| self.space.note(e))?
        };
        self.audit_appended();
        self.search_wake.notify_one();
        self.watermark_reached(assigned);
        Ok(())
    }

    /// [`write_version`](Self::write_version) for synchronous tests,
    /// without waiting for the write to be durable.
    #[cfg(test)]
    pub fn append_version(
        &self,
        v: &SignedVersion,
        expected_head: Option<u64>,
        feed: &[(OfficeId, FeedItem)],
        audit: &[crate::domain::audit::Draft],
    ) -> Result<()> {
        let write = VersionWrite::new(v, expected_head, feed.to_vec(), audit.to_vec());
        self.writer.apply_one(&write)?;
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
        let mut ids = Vec::with_capacity(limit + 1);
        match &filter.collection {
            Some(collection) => {
                let after = after.map(|a| (collection.as_str(), a));
                for id in self.trees.collections.page(collection.as_str(), after) {
                    if ids.len() > limit {
                        break;
                    }
                    let (id, ()) = id?;
                    if filter.origin.as_ref().is_some_and(|o| id.origin() != *o) {
                        continue;
                    }
                    if self.head(&id)?.is_some_and(|h| !h.deleted) {
                        ids.push(id);
                    }
                }
            }
            None => {
                let origin = OfOrigin(filter.origin.as_ref());
                for entry in self.trees.heads.page(origin, after) {
                    if ids.len() > limit {
                        break;
                    }
                    let (id, head) = entry?;
                    if !head.deleted {
                        ids.push(id);
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

impl Store {
    /// Every record id in `collection`, deleted ones included, of `origin`.
    pub fn collection_ids(&self, collection: &str, origin: &OfficeId) -> Result<Vec<RecordId>> {
        let mut out = Vec::new();
        for id in self.trees.collections.scan_keys(collection) {
            let id = id?;
            if id.origin() == *origin {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Whether `collection` holds any record, deleted ones included, of any
    /// origin.
    pub fn collection_has_records(&self, collection: &str) -> Result<bool> {
        self.trees.collections.any_with(collection)
    }

    /// Every record id in `collection`, deleted ones included, of any
    /// origin (this office's records and replicas alike).
    pub fn collection_record_ids(&self, collection: &str) -> Result<Vec<RecordId>> {
        self.trees.collections.scan_keys(collection).collect()
    }
}

/// Most version writes applied in one transaction, and most bytes of
/// versions (a single larger write still gets a transaction of its own):
/// sled holds a transaction's writes in memory until it commits. More
/// waiting writes take further transactions before the shared flush.
const MAX_WRITES_PER_TRANSACTION: usize = 64;
const MAX_BYTES_PER_TRANSACTION: usize = 8 << 20;

/// Splits `writes` into consecutive runs, one transaction each, within
/// the limits above.
pub(super) fn transaction_groups<T>(
    writes: &[T],
    version_bytes: impl Fn(&T) -> usize,
) -> Vec<&[T]> {
    let mut groups = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, w) in writes.iter().enumerate() {
        let size = version_bytes(w);
        let full = i - start == MAX_WRITES_PER_TRANSACTION
            || (i > start && bytes + size > MAX_BYTES_PER_TRANSACTION);
        if full {
            groups.push(&writes[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < writes.len() {
        groups.push(&writes[start..]);
    }
    groups
}

/// A version write, encoded and ready for its transaction.
pub(super) struct VersionWrite {
    version: crate::domain::RecordVersion,
    value: Encoded<SignedVersion>,
    head: Head,
    head_value: Encoded<Head>,
    expected_head: Option<u64>,
    feed: Vec<(OfficeId, FeedItem)>,
    audit: Vec<crate::domain::audit::Draft>,
}

impl VersionWrite {
    /// Size of the encoded version.
    pub(super) fn version_bytes(&self) -> usize {
        self.value.len()
    }

    pub(super) fn new(
        v: &SignedVersion,
        expected_head: Option<u64>,
        feed: Vec<(OfficeId, FeedItem)>,
        audit: Vec<crate::domain::audit::Draft>,
    ) -> Self {
        let head = Head {
            version: v.record.version,
            deleted: v.record.deleted,
            collection: v.record.collection.clone(),
        };
        Self {
            value: Encoded::of(v),
            head_value: Encoded::of(&head),
            head,
            version: v.record.clone(),
            expected_head,
            feed,
            audit,
        }
    }
}

tree_set! {
    /// What a version write changes.
    VersionTx {
        heads: RecordId => Head,
        versions: VersionKey => SignedVersion,
        collections: CollectionKey => (),
        counters: str => u64,
        last_seqs: OfficeId => u64,
        outbox: OfficeSeq => FeedItem,
        refs: RefKey => (),
        blobs: BlobHash => BlobMeta,
        audit_entries: u64 => Entry,
        audit_head: str => AuditHead,
        audit_terms: super::keys::AuditTerm => (),
        search_queue: RecordId => u64,
    }
}

/// Applies version writes. The commit thread holds one and applies every
/// waiting write in as few transactions as it can (the store holds
/// another, for writes that list files): sled writes out its log buffer
/// for every transaction, so one transaction per write cost more than all
/// of its inserts together.
#[derive(Clone)]
pub(super) struct VersionWriter {
    pub(super) trees: Trees,
    /// Where feeds without a number of their own start.
    pub(super) feed_floor: u64,
    pub(super) office: String,
    pub(super) blob_pins: super::blobs::Pins,
    /// Every search queue token below this is on disk
    /// ([`Store::search_queue`]): raised after each group-commit flush.
    pub(super) search_durable: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl VersionWriter {
    /// Applies `writes` as if one after another, each all or nothing: one
    /// outcome per write, in order. A write whose checks fail (its head
    /// moved, a file it lists is missing) is skipped and leaves no trace;
    /// the others are applied.
    pub(super) fn apply(&self, writes: &[&VersionWrite]) -> Vec<Result<()>> {
        // References to blobs change only under the blob gate.
        let _gate = writes
            .iter()
            .any(|w| !w.version.attachments.is_empty())
            .then(|| super::blobs::gate(&self.blob_pins));
        let mut outcomes: Vec<Option<Result<()>>> = writes.iter().map(|_| None).collect();
        loop {
            let pending: Vec<usize> = (0..writes.len())
                .filter(|&i| outcomes[i].is_none())
                .collect();
            if pending.is_empty() {
                break;
            }
            match self.transaction(writes, &pending) {
                Ok(skipped) => {
                    for (i, skip) in pending.into_iter().zip(skipped) {
                        outcomes[i] = Some(skip.map_or(Ok(()), Err));
                    }
                }
                // An unexpected failure inside a write's changes: that
                // write alone fails, and the rest are tried again.
                Err(TransactionError::Abort((i, e))) => outcomes[i] = Some(Err(e)),
                Err(TransactionError::Storage(e)) => {
                    for i in pending {
                        outcomes[i] = Some(Err(StoreError::Engine(e.clone())));
                    }
                }
            }
        }
        outcomes.into_iter().flatten().collect()
    }

    /// [`apply`](Self::apply) for one write.
    pub(super) fn apply_one(&self, write: &VersionWrite) -> Result<()> {
        self.apply(&[write]).pop().unwrap_or_else(|| {
            Err(StoreError::Inconsistent(
                "a version write had no outcome".into(),
            ))
        })
    }

    /// One transaction over the writes numbered `which`. Returns, for each,
    /// why it was skipped (`None`: applied); aborts with the number of a
    /// write whose changes failed.
    fn transaction(
        &self,
        writes: &[&VersionWrite],
        which: &[usize],
    ) -> std::result::Result<Vec<Option<StoreError>>, TransactionError<(usize, StoreError)>> {
        VersionTx::run(&self.trees, |t| {
            let mut skipped = Vec::with_capacity(which.len());
            for &i in which {
                let tagged = |e| match e {
                    ConflictableTransactionError::Abort(e) => {
                        ConflictableTransactionError::Abort((i, e))
                    }
                    ConflictableTransactionError::Conflict => {
                        ConflictableTransactionError::Conflict
                    }
                    ConflictableTransactionError::Storage(e) => {
                        ConflictableTransactionError::Storage(e)
                    }
                };
                match Self::check_tx(t, writes[i]) {
                    Ok(Ok(old)) => {
                        self.write_tx(t, writes[i], old).map_err(tagged)?;
                        skipped.push(None);
                    }
                    Ok(Err(why)) => skipped.push(Some(why)),
                    // A head that does not decode refuses this write alone.
                    Err(ConflictableTransactionError::Abort(why)) => skipped.push(Some(why)),
                    Err(e) => return Err(tagged(e)),
                }
            }
            Ok(skipped)
        })
    }

    /// Everything that may refuse `w`, read before anything is written:
    /// the head it expects, and the files it lists. Returns the current
    /// head, or why `w` is refused.
    fn check_tx(
        t: &VersionTx<'_>,
        w: &VersionWrite,
    ) -> Tx<std::result::Result<Option<Head>, StoreError>> {
        let old = t.heads.get(&w.version.id)?;
        let actual = old.as_ref().map(|h| h.version);
        if actual != w.expected_head {
            return Ok(Err(StoreError::HeadMoved {
                expected: w.expected_head,
                actual,
            }));
        }
        match super::blobs::missing_local_blob_tx(&t.blobs, &w.version)? {
            Some(missing) => Ok(Err(missing)),
            None => Ok(Ok(old)),
        }
    }

    /// The changes of a checked write; `old` is the head it replaces.
    fn write_tx(&self, t: &VersionTx<'_>, w: &VersionWrite, old: Option<Head>) -> Tx<()> {
        let id = &w.version.id;
        // The index holds deleted records too: revoking a collection
        // must reach their tombstones at peers.
        if let Some(old) = &old {
            t.collections.remove((old.collection.as_str(), id))?;
        }
        t.collections
            .insert((w.head.collection.as_str(), id), &())?;
        super::blobs::add_local_refs_tx(&t.refs, &w.version)?;
        let replaced = t
            .versions
            .insert_encoded((id, w.version.version), &w.value)?;
        t.heads.insert_encoded(id, &w.head_value)?;
        super::search_queue::queue_tx(&t.search_queue, id)?;
        let mut counts = CountDelta {
            versions: (!replaced).into(),
            ..CountDelta::default()
        };
        if old.is_none() {
            counts.record(id, 1);
        }
        add_counts_tx(&t.counters, &counts)?;
        super::sharing::push_feed(
            self.feed_floor,
            &t.last_seqs,
            &t.outbox,
            &t.counters,
            &w.feed,
        )?;
        super::audit::append_tx(
            &t.audit_entries,
            &t.audit_head,
            &t.audit_terms,
            &self.office,
            &w.audit,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::audit::{Actor, Draft, Outcome, Target};
    use crate::domain::{Attachment, BlobHash, UserName};
    use crate::identity::OfficeCa;
    use crate::store::StoreOptions;

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Store,
        ca: OfficeCa,
        office: OfficeId,
        peer: OfficeId,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let office = OfficeId::parse("phila-da").unwrap();
        let (ca, _) = OfficeCa::create(&office, &[], &UserName::parse("admin").unwrap()).unwrap();
        let store = Store::open(dir.path(), office.as_str(), &StoreOptions::for_tests()).unwrap();
        Fixture {
            _dir: dir,
            store,
            ca,
            office,
            peer: OfficeId::parse("nyc-da").unwrap(),
        }
    }

    impl Fixture {
        fn id(&self, n: u8) -> RecordId {
            RecordId::generate(&self.office, 1_000 + u64::from(n), [n; 10])
        }

        fn version(
            &self,
            id: &RecordId,
            version: u64,
            attachments: Vec<Attachment>,
        ) -> SignedVersion {
            crate::identity::signing::test_support::signed(
                &self.ca,
                id,
                version,
                "case-1",
                attachments,
            )
        }

        /// A write of `v` after `expected`, with one feed entry for the
        /// peer and one audit entry.
        fn write(&self, v: &SignedVersion, expected: Option<u64>) -> VersionWrite {
            let id = v.record.id.clone();
            let item = FeedItem::Versions {
                id: id.clone(),
                from: v.record.version,
                to: v.record.version,
            };
            let entry = Draft::new(
                Actor::node("phila-da"),
                "Records.Put",
                Target::record(id.as_str(), v.record.version),
                Outcome::ok(),
            );
            VersionWrite::new(v, expected, vec![(self.peer.clone(), item)], vec![entry])
        }

        fn apply(&self, writes: &[VersionWrite]) -> Vec<Result<()>> {
            let refs: Vec<&VersionWrite> = writes.iter().collect();
            self.store.writer.apply(&refs)
        }

        fn audit_entries(&self) -> u64 {
            self.store.audit_head().unwrap().seq
        }
    }

    /// Writes in one transaction act as if applied one after another: a
    /// later write may build on an earlier one, and one that fails leaves
    /// no trace (version, head, index, feed, audit entry, counts) while the
    /// others are applied.
    #[test]
    fn grouped_writes_succeed_or_fail_each_on_its_own() {
        let f = fixture();
        let (a, b, c) = (f.id(1), f.id(2), f.id(3));
        let a1 = f.version(&a, 1, vec![]);
        let a2 = f.version(&a, 2, vec![]);
        let b1 = f.version(&b, 1, vec![]);
        let c1 = f.version(&c, 1, vec![]);
        let missing = Attachment {
            hash: BlobHash([9; 32]),
            size: 3,
            file_name: "photo.jpg".into(),
            media_type: "image/jpeg".into(),
        };
        let c1_missing_blob = f.version(&c, 1, vec![missing]);
        let outcomes = f.apply(&[
            f.write(&a1, None),
            // Builds on the write before it in the same transaction.
            f.write(&a2, Some(1)),
            // Expects b at version 4; b does not exist yet.
            f.write(&b1, Some(4)),
            // Lists a file this node does not hold.
            f.write(&c1_missing_blob, None),
            f.write(&b1, None),
        ]);
        assert_eq!(outcomes.len(), 5);
        assert!(outcomes[0].is_ok() && outcomes[1].is_ok() && outcomes[4].is_ok());
        assert!(
            matches!(
                outcomes[2],
                Err(StoreError::HeadMoved {
                    expected: Some(4),
                    actual: None
                })
            ),
            "{:?}",
            outcomes[2]
        );
        assert!(
            matches!(outcomes[3], Err(StoreError::MissingBlob { .. })),
            "{:?}",
            outcomes[3]
        );
        assert_eq!(f.store.head(&a).unwrap().unwrap().version, 2);
        assert_eq!(f.store.head(&b).unwrap().unwrap().version, 1);
        assert!(f.store.head(&c).unwrap().is_none());
        assert_eq!(f.store.counts().unwrap(), (2, 3));
        assert_eq!(f.audit_entries(), 3);
        let feed = f.store.outbox_after(&f.peer, 0, u64::MAX, 100).unwrap();
        assert_eq!(feed.len(), 3, "{feed:?}");
        let listed = f
            .store
            .list(
                &ListFilter {
                    collection: Some("case-1".into()),
                    origin: None,
                },
                None,
                10,
            )
            .unwrap();
        let ids: Vec<&RecordId> = listed.records.iter().map(|v| &v.record.id).collect();
        assert_eq!(ids, vec![&a, &b]);

        // The write that failed alone goes through once its blob is there
        // (here: once it lists none).
        let outcomes = f.apply(&[f.write(&c1, None)]);
        assert!(outcomes[0].is_ok(), "{:?}", outcomes[0]);
        assert_eq!(f.store.counts().unwrap(), (3, 4));
        assert_eq!(f.audit_entries(), 4);
    }

    #[test]
    fn transactions_are_bounded_by_count_and_bytes() {
        let sizes = |groups: Vec<&[usize]>| groups.iter().map(|g| g.len()).collect::<Vec<_>>();
        let id = |w: &usize| *w;
        assert!(transaction_groups(&[] as &[usize], id).is_empty());
        assert_eq!(
            sizes(transaction_groups(&[1usize; 150], id)),
            vec![64, 64, 22]
        );
        let mib = 1 << 20;
        // 3 MiB each: two fit in 8 MiB, the third starts a new one.
        assert_eq!(sizes(transaction_groups(&[3 * mib; 5], id)), vec![2, 2, 1]);
        // One write over the limit still goes, alone.
        assert_eq!(
            sizes(transaction_groups(&[1, 9 * mib, 1, 1], id)),
            vec![1, 1, 2]
        );
        assert_eq!(sizes(transaction_groups(&[8 * mib, 1], id)), vec![1, 1]);
    }

    /// Concurrent writers through the commit thread: each is durable and
    /// answered with its own outcome, and the durable watermark covers
    /// every feed entry written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_version_writes_share_the_commit_thread() {
        let f = std::sync::Arc::new(fixture());
        let mut tasks = Vec::new();
        for n in 0..40u8 {
            let f = f.clone();
            tasks.push(tokio::spawn(async move {
                let v = f.version(&f.id(n), 1, vec![]);
                let w = f.write(&v, None);
                // Every fourth one claims a head its record does not have.
                let expected = (n % 4 == 0).then_some(7);
                f.store.write_version(&v, expected, w.feed, w.audit).await
            }));
        }
        let mut ok = 0;
        for (n, t) in tasks.into_iter().enumerate() {
            match t.await.unwrap() {
                Ok(_) => {
                    assert_ne!(n % 4, 0);
                    ok += 1;
                }
                Err(e) => {
                    assert_eq!(n % 4, 0, "{e}");
                    assert!(matches!(e, StoreError::HeadMoved { .. }), "{e}");
                }
            }
        }
        assert_eq!(ok, 30);
        assert_eq!(f.store.counts().unwrap(), (30, 30));
        assert_eq!(f.audit_entries(), 30);
        // One feed entry each, all durable.
        let peer = f.write(&f.version(&f.id(0), 1, vec![]), None).feed[0]
            .0
            .clone();
        assert_eq!(f.store.watermark().borrow().of(&peer), 30);
    }
}
