//! Blobs: what sled knows of the attached files this node holds, named by
//! their BLAKE3 hash. The bytes themselves live in the blob store
//! ([`crate::domain::blobstore`]): files under the data directory, or an
//! S3-compatible object store.
//!
//! sled keeps each blob's size and grace time (`blobhash_blob`: present
//! means whole and verified), the versions that list it (`blobhash_ref`),
//! the fetches queued from peers (`blobhash_fetch`), the files a scrub
//! found changed (`blobhash_damaged`), and the hashes whose bytes the blob
//! store may hold with no entry (`blobhash_unsettled`): marked before a
//! blob is adopted and in the same transaction as an entry is removed, so a
//! crash between the two steps is finished at the next start
//! ([`Store::unsettled`]).
//!
//! Every stored record version that lists an attachment holds a reference.
//! A blob with no reference is removed once its grace time has passed,
//! unless someone is reading or writing it right now (a [`BlobPin`]).
//!
//! Invariants:
//! - References change, and blobs are doomed, only while the blob gate is
//!   held; pins are taken under the same gate.
//! - A hash being deleted from the blob store is not adopted again until
//!   the deletion is over ([`Store::pin_for_write`]).

use std::collections::{HashMap, HashSet};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use sled::IVec;

use super::encoding::AuditHead;
use super::keys::RefKey;
use super::trees::tree_set;
use super::tx::{Tx, unwrap_tx};
use super::typed::{Raw, TxTree};
use super::{Result, Store, StoreError};
use crate::domain::audit::{Draft, Entry};
use crate::domain::{BlobHash, OfficeId, RecordId, SignedVersion};

pub use super::encoding::{BlobMeta, Fetch, PIECE, SledChunks, V1_CHUNK};

/// Whether this node holds an attachment's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobState {
    Present,
    /// Not (yet) here.
    Pending,
}

tree_set! {
    /// Recording a whole blob (uploaded, fetched or moved out of sled).
    RecordBlobTx {
        blobs: BlobHash => BlobMeta,
        doomed: u64 => (),
        unsettled: BlobHash => (),
        damaged: BlobHash => u64,
        fetches: BlobHash => Fetch,
        audit_entries: u64 => Entry,
        audit_head: str => AuditHead,
        audit_terms: super::keys::AuditTerm => (),
    }
}

tree_set! {
    /// Removing a blob's entry; its bytes are deleted next.
    DoomBlobTx {
        blobs: BlobHash => BlobMeta,
        unsettled: BlobHash => (),
        damaged: BlobHash => u64,
    }
}

tree_set! {
    /// A damaged replica's file: removed, and fetched again from `origin`.
    RefetchTx {
        blobs: BlobHash => BlobMeta,
        doomed: u64 => (),
        unsettled: BlobHash => (),
        damaged: BlobHash => u64,
        fetches: BlobHash => Fetch,
        audit_entries: u64 => Entry,
        audit_head: str => AuditHead,
        audit_terms: super::keys::AuditTerm => (),
    }
}

tree_set! {
    /// A damaged file of this office's own, marked.
    DamagedTx {
        damaged: BlobHash => u64,
        audit_entries: u64 => Entry,
        audit_head: str => AuditHead,
        audit_terms: super::keys::AuditTerm => (),
    }
}

tree_set! {
    /// A fetch moved out of sled: its entry no longer points at chunks,
    /// which are doomed.
    FetchMigratedTx {
        fetches: BlobHash => Fetch,
        doomed: u64 => (),
    }
}

/// Who is reading or writing which blob right now, and which are being
/// deleted; its lock is the blob gate.
#[derive(Default)]
pub(super) struct PinState {
    pins: HashMap<BlobHash, usize>,
    deleting: HashSet<BlobHash>,
}

pub(super) type Pins = Arc<Mutex<PinState>>;

pub(super) fn gate(pins: &Pins) -> MutexGuard<'_, PinState> {
    pins.lock().unwrap_or_else(|p| p.into_inner())
}

/// Signals for the background blob tasks.
#[derive(Default)]
pub struct Wake {
    /// A replica listed attachments this node lacks.
    pub fetch: tokio::sync::Notify,
    /// References went away: blobs may be unreferenced now.
    pub sweep: tokio::sync::Notify,
    /// A deletion from the blob store finished.
    pub deleted: tokio::sync::Notify,
}

/// Keeps a blob (or its fetch) from being removed while held.
pub struct BlobPin {
    pins: Pins,
    hash: BlobHash,
}

impl BlobPin {
    pub fn hash(&self) -> BlobHash {
        self.hash
    }
}

impl Drop for BlobPin {
    fn drop(&mut self) {
        let mut state = gate(&self.pins);
        if let Some(n) = state.pins.get_mut(&self.hash) {
            *n -= 1;
            if *n == 0 {
                state.pins.remove(&self.hash);
            }
        }
    }
}

/// What a sweep took off the books: blobs whose bytes are to be deleted
/// from the blob store (then [`Store::deleted`]), and fetches whose staged
/// bytes are to be removed.
#[derive(Debug, Default)]
pub struct Doomed {
    pub blobs: Vec<BlobHash>,
    pub fetches: Vec<BlobHash>,
}

/// Blobs and fetches whose bytes are still in sled chunks.
pub struct Legacy {
    pub blobs: Vec<(BlobHash, BlobMeta)>,
    pub fetches: Vec<(BlobHash, Fetch)>,
}

/// What a scrub's finding did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DamageAction {
    /// A replica's file: removed, and queued to be fetched again from its
    /// origin (whose bytes are to be deleted from the blob store now).
    Refetch(OfficeId),
    /// A file this office's own records list: kept marked, never served.
    Marked,
    /// No record lists it (any more): left to the sweep.
    Unlisted,
}

impl Store {
    pub fn blob(&self, hash: &BlobHash) -> Result<Option<BlobMeta>> {
        self.trees.blobs.get(hash)
    }

    /// Keeps `hash` from being removed until the pin is dropped.
    pub fn pin_blob(&self, hash: BlobHash) -> BlobPin {
        *gate(&self.blob_pins).pins.entry(hash).or_insert(0) += 1;
        BlobPin {
            pins: self.blob_pins.clone(),
            hash,
        }
    }

    /// A pin on `hash` taken once no deletion of its bytes is under way,
    /// for putting bytes under that hash into the blob store.
    pub async fn pin_for_write(&self, hash: BlobHash) -> BlobPin {
        loop {
            let deleted = self.blob_wake.deleted.notified();
            {
                let mut state = gate(&self.blob_pins);
                if !state.deleting.contains(&hash) {
                    *state.pins.entry(hash).or_insert(0) += 1;
                    return BlobPin {
                        pins: self.blob_pins.clone(),
                        hash,
                    };
                }
            }
            deleted.await;
        }
    }

    /// Deleting `hash`'s bytes failed: it stays unsettled (deleted again at
    /// the next start), and writers of the same bytes wait no longer.
    pub fn delete_failed(&self, hash: &BlobHash) {
        gate(&self.blob_pins).deleting.remove(hash);
        self.blob_wake.deleted.notify_waiters();
    }

    /// Notes, durably after the next commit, that the blob store is about
    /// to hold `hash` before sled lists it.
    pub fn mark_unsettled(&self, hash: &BlobHash) -> Result<()> {
        self.trees.unsettled.insert(hash, &())
    }

    /// Hashes whose bytes the blob store may hold with no entry, as a crash
    /// left them: each is deleted from the blob store, then
    /// [`Store::deleted`]. Run at start, before anything else touches blobs.
    pub fn unsettled(&self) -> Result<Vec<BlobHash>> {
        let mut out = Vec::new();
        for hash in self.trees.unsettled.keys() {
            let hash = hash?;
            if self.trees.blobs.contains(&hash)? {
                // Adopted and recorded; only the mark was left.
                self.trees.unsettled.remove(&hash)?;
            } else {
                out.push(hash);
            }
        }
        Ok(out)
    }

    /// The blob store no longer holds `hash`'s bytes.
    pub fn deleted(&self, hash: &BlobHash) -> Result<()> {
        let mut state = gate(&self.blob_pins);
        state.deleting.remove(hash);
        let settled = match self.trees.blobs.contains(hash) {
            Ok(true) => Ok(()),
            Ok(false) => self.trees.unsettled.remove(hash).map(|_| ()),
            Err(e) => Err(e),
        };
        drop(state);
        self.blob_wake.deleted.notify_waiters();
        settled
    }

    /// Records the whole blob `hash` of `size` bytes, now in the blob
    /// store; kept until `keep_until_ms` even if no record lists it (a blob
    /// held already keeps the later of the two times). Clears any damage
    /// mark, and a fetch of the same bytes (returns whether there was one,
    /// whose staged bytes are then to be removed). `audit`, if any, is
    /// logged in the same transaction. Durable after [`Store::commit`].
    pub fn record_blob(
        &self,
        hash: &BlobHash,
        size: u64,
        keep_until_ms: u64,
        audit: Option<Draft>,
    ) -> Result<bool> {
        let _gate = gate(&self.blob_pins);
        let entry: Vec<Draft> = audit.into_iter().collect();
        let (had_fetch, chunks) = unwrap_tx(RecordBlobTx::run(&self.trees, |t| {
            super::audit::append_tx(
                &t.audit_entries,
                &t.audit_head,
                &t.audit_terms,
                &self.office,
                &entry,
            )?;
            let old = t.blobs.get(hash)?;
            let keep = old.map_or(keep_until_ms, |o| o.keep_until_ms.max(keep_until_ms));
            // Bytes held in sled chunks before are not needed any more.
            let chunks = old.and_then(|o| o.legacy).map(|l| l.storage);
            if let Some(storage) = chunks {
                t.doomed.insert(storage, &())?;
            }
            let meta = BlobMeta {
                size,
                keep_until_ms: keep,
                legacy: None,
            };
            t.blobs.insert(hash, &meta)?;
            t.unsettled.remove(hash)?;
            t.damaged.remove(hash)?;
            Ok((t.fetches.remove(hash)?, chunks))
        }))
        .map_err(|e| self.space.note(e))?;
        if !entry.is_empty() {
            self.audit_appended();
        }
        if let Some(storage) = chunks {
            self.remove_storage(storage)?;
        }
        Ok(had_fetch)
    }

    /// Whether any stored version lists `hash`.
    pub fn blob_referenced(&self, hash: &BlobHash) -> Result<bool> {
        self.trees.refs.any_with(hash)
    }

    /// The first `at_most` records of `office` (each once) whose stored
    /// versions list `hash`.
    pub fn blob_records_of(
        &self,
        hash: &BlobHash,
        office: &OfficeId,
        at_most: usize,
    ) -> Result<Vec<RecordId>> {
        let mut out: Vec<RecordId> = Vec::new();
        for key in self.trees.refs.scan_keys((hash, office)) {
            let (_, id, _) = key?;
            if out.last() != Some(&id) {
                if out.len() == at_most {
                    break;
                }
                out.push(id);
            }
        }
        Ok(out)
    }

    /// The offices whose records list `hash` (each once, in order).
    fn blob_listed_by(&self, hash: &BlobHash) -> Result<Vec<OfficeId>> {
        let mut out: Vec<OfficeId> = Vec::new();
        for key in self.trees.refs.scan_keys(hash) {
            let (_, id, _) = key?;
            let office = id.origin();
            if !out.contains(&office) {
                out.push(office);
            }
        }
        Ok(out)
    }

    /// Whether this node holds the bytes of `hash`.
    pub fn blob_state(&self, hash: &BlobHash) -> Result<BlobState> {
        Ok(match self.trees.blobs.get(hash)? {
            Some(m) if m.legacy.is_none() => BlobState::Present,
            _ => BlobState::Pending,
        })
    }

    /// Number of whole blobs and their total size.
    pub fn blob_totals(&self) -> Result<(u64, u64)> {
        let mut n = 0;
        let mut bytes = 0;
        for m in self.trees.blobs.values() {
            n += 1;
            bytes += m?.size;
        }
        Ok((n, bytes))
    }

    /// Every whole blob and its size.
    pub fn blob_list(&self) -> Result<Vec<(BlobHash, u64)>> {
        self.trees
            .blobs
            .iter()
            .map(|e| e.map(|(hash, m)| (hash, m.size)))
            .collect()
    }

    // ---- damage found by a scrub ---------------------------------------

    /// When a scrub found the stored bytes of `hash` changed, if it did.
    pub fn damaged(&self, hash: &BlobHash) -> Result<Option<u64>> {
        self.trees.damaged.get(hash)
    }

    /// Every file marked damaged, with when it was found.
    pub fn damaged_list(&self) -> Result<Vec<(BlobHash, u64)>> {
        self.trees.damaged.iter().collect()
    }

    /// Acts on stored bytes of `hash` that no longer hash to it: a file
    /// only replicas list is taken off the books and fetched again from an
    /// office that lists it; one this office's records list is marked (and
    /// so never served) until the same bytes are uploaded again. `audit`
    /// makes the entry that says which, logged in the same transaction.
    ///
    /// The damaged bytes of a replica are not deleted here: the fetch
    /// replaces them when it adopts the good ones, and the hash stays
    /// unsettled meanwhile (so a start deletes them if no fetch did).
    /// Deleting them now could race an upload of the same bytes and delete
    /// the good copy it just recorded.
    pub fn blob_damaged(
        &self,
        hash: &BlobHash,
        now_ms: u64,
        audit: impl Fn(&DamageAction) -> Draft,
    ) -> Result<DamageAction> {
        let listed = self.blob_listed_by(hash)?;
        let _gate = gate(&self.blob_pins);
        let Some(meta) = self.trees.blobs.get(hash)? else {
            return Ok(DamageAction::Unlisted);
        };
        let action = if listed.is_empty() {
            DamageAction::Unlisted
        } else if listed.iter().any(|o| o.as_str() == self.office) {
            DamageAction::Marked
        } else {
            // Any office listing the file holds its bytes; picking one at
            // random keeps a peer that lists it and will not send it from
            // being the only one ever asked.
            let mut pick = [0u8; 8];
            crate::domain::random_bytes(&mut pick);
            let at = (u64::from_le_bytes(pick) % listed.len() as u64) as usize;
            DamageAction::Refetch(listed[at].clone())
        };
        let entry = [audit(&action)];
        match &action {
            DamageAction::Refetch(origin) => {
                unwrap_tx(RefetchTx::run(&self.trees, |t| {
                    super::audit::append_tx(
                        &t.audit_entries,
                        &t.audit_head,
                        &t.audit_terms,
                        &self.office,
                        &entry,
                    )?;
                    t.blobs.remove(hash)?;
                    if let Some(l) = meta.legacy {
                        t.doomed.insert(l.storage, &())?;
                    }
                    t.unsettled.insert(hash, &())?;
                    t.damaged.remove(hash)?;
                    let f = Fetch {
                        origin: origin.clone(),
                        size: meta.size,
                        legacy: None,
                    };
                    t.fetches.insert(hash, &f)?;
                    Ok(())
                }))?;
            }
            DamageAction::Marked | DamageAction::Unlisted => {
                unwrap_tx(DamagedTx::run(&self.trees, |t| {
                    super::audit::append_tx(
                        &t.audit_entries,
                        &t.audit_head,
                        &t.audit_terms,
                        &self.office,
                        &entry,
                    )?;
                    t.damaged.insert(hash, &now_ms)?;
                    Ok(())
                }))?;
            }
        }
        drop(_gate);
        self.audit_appended();
        if let (DamageAction::Refetch(_), Some(l)) = (&action, meta.legacy) {
            self.remove_storage(l.storage)?;
        }
        if matches!(action, DamageAction::Refetch(_)) {
            self.blob_wake.fetch.notify_one();
        }
        Ok(action)
    }

    /// The stored bytes of `hash` check out again: the mark goes, logged
    /// with `audit`.
    pub fn damage_cleared(&self, hash: &BlobHash, audit: Draft) -> Result<()> {
        let entry = [audit];
        unwrap_tx(DamagedTx::run(&self.trees, |t| {
            super::audit::append_tx(
                &t.audit_entries,
                &t.audit_head,
                &t.audit_terms,
                &self.office,
                &entry,
            )?;
            t.damaged.remove(hash)?;
            Ok(())
        }))?;
        self.audit_appended();
        Ok(())
    }

    // ---- fetching from peers -------------------------------------------

    pub fn fetch(&self, hash: &BlobHash) -> Result<Option<Fetch>> {
        self.trees.fetches.get(hash)
    }

    /// Every blob still to fetch.
    pub fn fetches(&self) -> Result<Vec<(BlobHash, Fetch)>> {
        self.trees.fetches.iter().collect()
    }

    /// Takes off the books every blob and fetch that no stored version
    /// lists, that is past its grace time and that nobody holds a pin on.
    /// The blobs' hashes stay unsettled (and are not adopted again) until
    /// their bytes are deleted and [`Store::deleted`] is called.
    pub fn doom_unreferenced(&self, now_ms: u64) -> Result<Doomed> {
        let mut doomed = Doomed::default();
        let mut state = gate(&self.blob_pins);
        let outcome = self.doom_under_gate(&mut state, now_ms, &mut doomed);
        if outcome.is_err() {
            // Those doomed so far stay unsettled (a start deletes them);
            // no writer may wait on them meanwhile.
            for hash in &doomed.blobs {
                state.deleting.remove(hash);
            }
            drop(state);
            self.blob_wake.deleted.notify_waiters();
        }
        outcome.map(|()| doomed)
    }

    fn doom_under_gate(
        &self,
        state: &mut PinState,
        now_ms: u64,
        doomed: &mut Doomed,
    ) -> Result<()> {
        for entry in self.trees.blobs.iter() {
            let (hash, m) = match entry {
                Ok(entry) => entry,
                // One damaged entry must not stop removal of the rest.
                Err(e @ StoreError::Corrupt { .. }) => {
                    tracing::error!(error = %e, "skipped a damaged blob entry in the sweep");
                    continue;
                }
                Err(e) => return Err(e),
            };
            if m.keep_until_ms > now_ms
                || m.legacy.is_some()
                || state.pins.contains_key(&hash)
                || self.blob_referenced(&hash)?
            {
                continue;
            }
            unwrap_tx(DoomBlobTx::run(&self.trees, |t| {
                t.blobs.remove(&hash)?;
                t.unsettled.insert(&hash, &())?;
                t.damaged.remove(&hash)?;
                Ok(())
            }))?;
            state.deleting.insert(hash);
            doomed.blobs.push(hash);
        }
        for entry in self.trees.fetches.keys() {
            let hash = match entry {
                Ok(hash) => hash,
                Err(e @ StoreError::Corrupt { .. }) => {
                    tracing::error!(error = %e, "skipped a damaged fetch entry in the sweep");
                    continue;
                }
                Err(e) => return Err(e),
            };
            if state.pins.contains_key(&hash) || self.blob_referenced(&hash)? {
                continue;
            }
            self.trees.fetches.remove(&hash)?;
            doomed.fetches.push(hash);
        }
        Ok(())
    }

    /// Marks `hash` as being deleted from the blob store (at start, for
    /// the unsettled ones), so it is not adopted meanwhile.
    pub fn deleting(&self, hash: &BlobHash) {
        gate(&self.blob_pins).deleting.insert(*hash);
    }

    // ---- blobs stored in sled before the blob store --------------------

    /// Blobs and fetches whose bytes are still in sled chunks.
    pub fn legacy_blobs(&self) -> Result<Legacy> {
        let mut blobs = Vec::new();
        for entry in self.trees.blobs.iter() {
            let (hash, m) = entry?;
            if m.legacy.is_some() {
                blobs.push((hash, m));
            }
        }
        let fetches = self
            .fetches()?
            .into_iter()
            .filter(|(_, f)| f.legacy.is_some())
            .collect();
        Ok(Legacy { blobs, fetches })
    }

    /// The stored bytes of chunk `index` of a storage id.
    pub fn chunk(&self, storage: u64, index: u64) -> Result<Option<IVec>> {
        Ok(self
            .trees
            .chunks
            .get((storage, index))?
            .map(|Raw(bytes)| bytes))
    }

    /// The fetch of `hash`, its received bytes now staged, no longer
    /// points at its chunks, which are removed.
    pub fn fetch_migrated(&self, hash: &BlobHash) -> Result<()> {
        let Some((SledChunks { storage, .. }, _)) = self.fetch(hash)?.and_then(|f| f.legacy) else {
            return Ok(());
        };
        unwrap_tx(FetchMigratedTx::run(&self.trees, |t| {
            if let Some(mut f) = t.fetches.get(hash)? {
                f.legacy = None;
                t.fetches.insert(hash, &f)?;
            }
            t.doomed.insert(storage, &())?;
            Ok(())
        }))?;
        self.remove_storage(storage)
    }

    /// Removes a storage id's chunks, then its doomed mark.
    fn remove_storage(&self, storage: u64) -> Result<()> {
        self.trees.doomed.insert(storage, &())?;
        self.trees.chunks.remove_range(
            Bound::Included((storage, 0)),
            Bound::Included((storage, u64::MAX)),
        )?;
        self.trees.doomed.remove(storage)?;
        Ok(())
    }

    /// Finishes removals of chunks a crash interrupted. Run at open.
    pub(super) fn remove_doomed(&self) -> Result<()> {
        let mut doomed = Vec::new();
        for storage in self.trees.doomed.keys() {
            match storage {
                Ok(storage) => doomed.push(storage),
                Err(e @ StoreError::Corrupt { .. }) => {
                    tracing::error!(error = %e, "malformed key in storage_doomed; left alone");
                }
                Err(e) => return Err(e),
            }
        }
        for storage in doomed {
            self.remove_storage(storage)?;
        }
        Ok(())
    }
}

/// Inside a local write's transaction: the first attachment this node does
/// not hold (at the size listed), if any.
pub(super) fn missing_local_blob_tx(
    blobs: &TxTree<'_, BlobHash, BlobMeta>,
    v: &crate::domain::RecordVersion,
) -> Tx<Option<StoreError>> {
    for a in &v.attachments {
        match blobs.get(&a.hash)? {
            Some(m) if m.size == a.size => {}
            _ => {
                return Ok(Some(StoreError::MissingBlob {
                    hash: a.hash,
                    file_name: a.file_name.clone(),
                }));
            }
        }
    }
    Ok(None)
}

/// Inside a local write's transaction, once [`missing_local_blob_tx`] found
/// nothing: records that the version lists its attachments.
pub(super) fn add_local_refs_tx(
    refs: &TxTree<'_, RefKey, ()>,
    v: &crate::domain::RecordVersion,
) -> Tx<()> {
    for a in &v.attachments {
        refs.insert((&a.hash, &v.id, v.version), &())?;
    }
    Ok(())
}

/// Inside a replica's transaction: records that the version lists its
/// attachments, and queues fetches from `origin` of those this node lacks.
/// Returns how many were queued.
pub(super) fn add_replica_refs_tx(
    refs: &TxTree<'_, RefKey, ()>,
    blobs: &TxTree<'_, BlobHash, BlobMeta>,
    fetches: &TxTree<'_, BlobHash, Fetch>,
    v: &crate::domain::RecordVersion,
    origin: &OfficeId,
) -> Tx<usize> {
    let mut queued = 0;
    for a in &v.attachments {
        refs.insert((&a.hash, &v.id, v.version), &())?;
        if blobs.contains(&a.hash)? || fetches.contains(&a.hash)? {
            continue;
        }
        let f = Fetch {
            origin: origin.clone(),
            size: a.size,
            legacy: None,
        };
        fetches.insert(&a.hash, &f)?;
        queued += 1;
    }
    Ok(queued)
}

/// Inside a purge's transaction: the version `v`, removed, no longer
/// lists its attachments.
pub(super) fn drop_refs_tx(refs: &TxTree<'_, RefKey, ()>, v: &SignedVersion) -> Tx<()> {
    for a in &v.record.attachments {
        refs.remove((&a.hash, &v.record.id, v.record.version))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &tempfile::TempDir) -> Store {
        let options = crate::store::StoreOptions::for_tests();
        Store::open(dir.path(), "minn-da", &options).unwrap()
    }

    /// A sweep dooms a blob no record lists; until its bytes are deleted
    /// the hash stays unsettled and a writer waits; then both clear.
    #[tokio::test]
    async fn a_doomed_blob_is_unsettled_until_deleted_and_writers_wait() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open(&dir));
        let hash = BlobHash([3; 32]);
        store.record_blob(&hash, 10, 0, None).unwrap();
        let doomed = store.doom_unreferenced(1).unwrap();
        assert_eq!(doomed.blobs, vec![hash]);
        assert_eq!(store.blob(&hash).unwrap(), None);
        assert_eq!(store.unsettled().unwrap(), vec![hash]);

        let writer = {
            let store = store.clone();
            tokio::spawn(async move { store.pin_for_write(hash).await.hash() })
        };
        tokio::task::yield_now().await;
        assert!(!writer.is_finished(), "a writer waits out the deletion");
        store.deleted(&hash).unwrap();
        let pinned = tokio::time::timeout(std::time::Duration::from_secs(10), writer)
            .await
            .expect("the writer goes on once the deletion is over")
            .unwrap();
        assert_eq!(pinned, hash);
        assert!(store.unsettled().unwrap().is_empty());
    }

    /// A deletion that failed lets writers go on, and leaves the hash
    /// unsettled so that the next start deletes it again.
    #[tokio::test]
    async fn a_failed_deletion_frees_writers_and_stays_unsettled() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open(&dir));
        let hash = BlobHash([5; 32]);
        store.record_blob(&hash, 10, 0, None).unwrap();
        assert_eq!(store.doom_unreferenced(1).unwrap().blobs, vec![hash]);
        let writer = {
            let store = store.clone();
            tokio::spawn(async move { store.pin_for_write(hash).await.hash() })
        };
        tokio::task::yield_now().await;
        assert!(!writer.is_finished());
        store.delete_failed(&hash);
        tokio::time::timeout(std::time::Duration::from_secs(10), writer)
            .await
            .expect("the writer goes on")
            .unwrap();
        assert_eq!(store.unsettled().unwrap(), vec![hash]);
    }

    /// A blob recorded while its hash was marked for adoption leaves no
    /// mark behind, and keeps the later grace time.
    #[test]
    fn recording_a_blob_settles_it_and_keeps_the_later_grace() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let hash = BlobHash([4; 32]);
        store.mark_unsettled(&hash).unwrap();
        store.record_blob(&hash, 10, 500, None).unwrap();
        store.record_blob(&hash, 10, 100, None).unwrap();
        assert!(store.unsettled().unwrap().is_empty());
        assert_eq!(store.blob(&hash).unwrap().unwrap().keep_until_ms, 500);
    }
}
