//! Blobs: the bytes of attached files, named by their BLAKE3 hash.
//!
//! A blob's bytes are stored in fixed-size chunks under a *storage id*, a
//! number sled hands out; the blob's entry maps its hash to that id and
//! records the chunk size ([`CHUNK`] for everything stored now; blobs and
//! fetches stored by v1 entries used [`V1_CHUNK`]).
//! Bytes arrive under a fresh storage id (an upload, or a fetch from a peer)
//! and become a blob in one step once their hash is known and checked, so a
//! half-received file is never mistaken for a whole one, and the same bytes
//! uploaded twice end up stored once.
//!
//! Every stored record version that lists an attachment holds a reference
//! (`blobhash_ref`). A blob with no reference is removed by
//! [`Store::sweep_blobs`] once its grace time has passed, unless someone is
//! reading or writing it right now (a [`BlobPin`]).
//!
//! Invariants:
//! - A storage id's chunks belong to exactly one of: a blob entry, a fetch
//!   entry, or `storage_doomed` (an upload in progress, or chunks being
//!   removed). What is doomed when the store opens is removed then.
//! - References change, and unreferenced blobs are removed, only while the
//!   blob gate is held; pins are taken under the same gate.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use sled::IVec;

use super::encoding::AuditHead;
use super::keys::{ChunkKey, RefKey};
use super::trees::tree_set;
use super::tx::{Tx, abort, unwrap_tx};
use super::typed::{Raw, TxTree};
use super::{Result, Store, StoreError};
use crate::domain::audit::Entry;
use crate::domain::{BlobHash, OfficeId, RecordId, SignedVersion};

pub use super::encoding::{BlobMeta, Fetch, PIECE, V1_CHUNK};

/// Size of the chunks new blobs are stored in. Small on purpose: sled
/// holds the values of the leaves it has touched beyond its configured
/// cache, so what a large file costs in memory grows with the chunk size,
/// not with the file. Measured with sled alone, writing then reading
/// 256 MiB with a 32 MiB cache (`cargo run --release --example sledmem --
/// CHUNK_BYTES`): 1 KiB chunks held 48 MiB, 2 KiB 56, 4 KiB 71, 8 KiB 126,
/// 16 KiB 332. With a 4 MiB cache, 2 KiB held 36 and 8 KiB still 123.
pub const CHUNK: usize = 2 * 1024;
/// An upload checks the disk's free space every this many chunks (1 MiB).
const SPACE_CHECK_CHUNKS: u64 = (1 << 20) / CHUNK as u64;

const _: () = assert!(PIECE % CHUNK == 0 && PIECE % V1_CHUNK == 0);

/// While a file streams in (uploaded or fetched), what has arrived is made
/// durable after this many bytes, so sled can write out and evict it and a
/// restart resumes close to where the transfer stopped.
pub const FLUSH_EVERY_BYTES: usize = 8 << 20;

/// Whether this node holds an attachment's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobState {
    Present,
    /// Not (yet) here; `received` bytes of it are.
    Pending {
        received: u64,
    },
}

/// Why a blob operation refused.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("the file is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn chunks(size: u64, chunk: u32) -> u64 {
    size.div_ceil(u64::from(chunk))
}

tree_set! {
    /// Making uploaded bytes a blob.
    FinishTx {
        blobs: BlobHash => BlobMeta,
        doomed: u64 => (),
        fetches: BlobHash => Fetch,
        audit_entries: u64 => Entry,
        audit_head: str => AuditHead,
    }
}

tree_set! {
    /// Storing the next bytes of a fetch.
    FetchAppendTx {
        fetches: BlobHash => Fetch,
        chunks: ChunkKey => Raw,
    }
}

tree_set! {
    /// Making a fetch a blob, or starting it again.
    FetchFinishTx {
        fetches: BlobHash => Fetch,
        blobs: BlobHash => BlobMeta,
        doomed: u64 => (),
    }
}

tree_set! {
    /// Removing a blob, its storage doomed at once.
    DoomBlobTx {
        blobs: BlobHash => BlobMeta,
        doomed: u64 => (),
    }
}

tree_set! {
    /// Removing a fetch, its storage doomed at once.
    DoomFetchTx {
        fetches: BlobHash => Fetch,
        doomed: u64 => (),
    }
}

/// Who is reading or writing which blob right now; its lock is the blob
/// gate.
pub(super) type Pins = Arc<Mutex<HashMap<BlobHash, usize>>>;

pub(super) fn gate(pins: &Pins) -> MutexGuard<'_, HashMap<BlobHash, usize>> {
    pins.lock().unwrap_or_else(|p| p.into_inner())
}

/// Signals for the background blob tasks.
#[derive(Default)]
pub struct Wake {
    /// A replica listed attachments this node lacks.
    pub fetch: tokio::sync::Notify,
    /// References went away: blobs may be unreferenced now.
    pub sweep: tokio::sync::Notify,
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
        let mut pins = gate(&self.pins);
        if let Some(n) = pins.get_mut(&self.hash) {
            *n -= 1;
            if *n == 0 {
                pins.remove(&self.hash);
            }
        }
    }
}

/// Bytes being uploaded. Dropping it unfinished removes what was written.
pub struct Upload<'a> {
    store: &'a Store,
    storage: u64,
    size: u64,
    next_index: u64,
    limit: u64,
    hasher: blake3::Hasher,
    buf: Vec<u8>,
    done: bool,
}

impl Upload<'_> {
    /// Appends bytes; refuses (and the upload is over) past the limit.
    pub fn write(&mut self, mut data: &[u8]) -> std::result::Result<(), BlobError> {
        if self.size + data.len() as u64 > self.limit {
            return Err(BlobError::TooLarge { limit: self.limit });
        }
        self.size += data.len() as u64;
        self.hasher.update(data);
        while !data.is_empty() {
            let take = (CHUNK - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == CHUNK {
                self.flush_chunk()?;
            }
        }
        Ok(())
    }

    fn flush_chunk(&mut self) -> Result<()> {
        if self.next_index % SPACE_CHECK_CHUNKS == 0 {
            self.store.check_space()?;
        }
        self.store
            .trees
            .chunks
            .insert(
                (self.storage, self.next_index),
                &Raw(IVec::from(self.buf.as_slice())),
            )
            .map_err(|e| self.store.space.note(e))?;
        self.next_index += 1;
        self.buf.clear();
        Ok(())
    }

    /// Stores the last bytes and makes them a blob (or, if the same bytes are
    /// stored already, drops this copy). The blob is kept for `grace_ms`
    /// even if no record lists it. The audit entry `audit` makes of the hash
    /// and size is stored in the same transaction. Durable after
    /// [`Store::commit`].
    pub fn finish(
        mut self,
        grace_ms: u64,
        now_ms: u64,
        audit: impl Fn(&BlobHash, u64) -> crate::domain::audit::Draft,
    ) -> Result<(BlobHash, u64)> {
        if !self.buf.is_empty() {
            self.flush_chunk()?;
        }
        let hash = BlobHash(*self.hasher.finalize().as_bytes());
        let keep_until_ms = now_ms.saturating_add(grace_ms);
        let store = self.store;
        let _gate = gate(&store.blob_pins);
        let fetched = store.fetch(&hash)?;
        let entry = [audit(&hash, self.size)];
        let kept_ours = unwrap_tx(FinishTx::run(&store.trees, |t| {
            super::audit::append_tx(&t.audit_entries, &t.audit_head, &store.office, &entry)?;
            // A fetch of the same bytes is no longer needed.
            if let Some(f) = &fetched {
                t.fetches.remove(&hash)?;
                t.doomed.insert(f.storage, &())?;
            }
            let ours = match t.blobs.get(&hash)? {
                Some(mut existing) => {
                    existing.keep_until_ms = existing.keep_until_ms.max(keep_until_ms);
                    t.blobs.insert(&hash, &existing)?;
                    false
                }
                None => {
                    let meta = BlobMeta {
                        storage: self.storage,
                        size: self.size,
                        keep_until_ms,
                        chunk: CHUNK as u32,
                    };
                    t.blobs.insert(&hash, &meta)?;
                    t.doomed.remove(self.storage)?;
                    true
                }
            };
            Ok(ours)
        }))?;
        self.done = kept_ours;
        drop(_gate);
        store.audit_appended();
        if let Some(f) = fetched {
            store.remove_storage(f.storage)?;
        }
        // When not kept, Drop removes this copy's chunks.
        Ok((hash, self.size))
    }
}

impl Drop for Upload<'_> {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = self.store.remove_storage(self.storage) {
                tracing::error!(storage = self.storage, error = %e, "could not remove an unfinished upload; it is removed at the next start");
            }
        }
    }
}

impl Store {
    /// Starts an upload of at most `limit` bytes.
    pub fn begin_upload(&self, limit: u64) -> Result<Upload<'_>> {
        self.check_space()?;
        let storage = self.db.generate_id()?;
        // Doomed until finished: a crash mid-upload leaves nothing behind.
        self.trees.doomed.insert(storage, &())?;
        Ok(Upload {
            store: self,
            storage,
            size: 0,
            next_index: 0,
            limit,
            hasher: blake3::Hasher::new(),
            buf: Vec::with_capacity(CHUNK),
            done: false,
        })
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

    /// Finishes removals a crash interrupted, and drops uploads that were in
    /// progress. Run at open.
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

    pub fn blob(&self, hash: &BlobHash) -> Result<Option<BlobMeta>> {
        self.trees.blobs.get(hash)
    }

    /// The stored bytes of chunk `index` of a storage id. Read one by one
    /// on purpose: a range scan over a large file measured 300 MiB more
    /// memory through the 256 MiB test.
    pub fn chunk(&self, storage: u64, index: u64) -> Result<Option<IVec>> {
        Ok(self
            .trees
            .chunks
            .get((storage, index))?
            .map(|Raw(bytes)| bytes))
    }

    /// Stores `data` as a blob in chunks of `chunk` bytes, as stores that
    /// wrote other chunk sizes hold them.
    #[cfg(test)]
    pub(crate) fn store_blob_in_chunks(&self, data: &[u8], chunk: usize) -> Result<BlobMeta> {
        let storage = self.db.generate_id()?;
        for (i, piece) in data.chunks(chunk).enumerate() {
            self.trees
                .chunks
                .insert((storage, i as u64), &Raw(IVec::from(piece)))?;
        }
        let meta = BlobMeta {
            storage,
            size: data.len() as u64,
            keep_until_ms: 0,
            chunk: chunk as u32,
        };
        let hash = BlobHash(*blake3::hash(data).as_bytes());
        self.trees.blobs.insert(&hash, &meta)?;
        Ok(meta)
    }

    /// Keeps `hash` from being removed until the pin is dropped.
    pub fn pin_blob(&self, hash: BlobHash) -> BlobPin {
        *gate(&self.blob_pins).entry(hash).or_insert(0) += 1;
        BlobPin {
            pins: self.blob_pins.clone(),
            hash,
        }
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

    /// Whether this node holds the bytes of `hash`, or how many of them.
    pub fn blob_state(&self, hash: &BlobHash) -> Result<BlobState> {
        if self.trees.blobs.contains(hash)? {
            return Ok(BlobState::Present);
        }
        let received = self.fetch(hash)?.map(|f| f.received).unwrap_or(0);
        Ok(BlobState::Pending { received })
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

    /// Number of chunks stored, whatever they belong to (tests use it to
    /// show that nothing was left behind).
    pub fn chunk_count(&self) -> usize {
        self.trees.chunks.len()
    }

    // ---- fetching from peers -------------------------------------------

    pub fn fetch(&self, hash: &BlobHash) -> Result<Option<Fetch>> {
        self.trees.fetches.get(hash)
    }

    /// Every blob still to fetch.
    pub fn fetches(&self) -> Result<Vec<(BlobHash, Fetch)>> {
        self.trees.fetches.iter().collect()
    }

    /// Stores the next whole chunks of a fetch (the last may be short) at
    /// `received`; returns the new count, or None when the fetch is gone.
    pub fn fetch_append(&self, hash: &BlobHash, at: u64, data: &[u8]) -> Result<Option<u64>> {
        self.check_space()?;
        unwrap_tx(FetchAppendTx::run(&self.trees, |t| {
            let Some(mut f) = t.fetches.get(hash)? else {
                return Ok(None);
            };
            if f.received != at {
                // The fetch was removed and queued again meanwhile.
                return Ok(None);
            }
            let chunk = f.chunk as usize;
            let first = f.received / chunk as u64;
            let whole = data.len() % chunk == 0;
            let last = f.received + data.len() as u64 == f.size;
            if f.received % chunk as u64 != 0
                || !(whole || last)
                || data.is_empty()
                || f.received + data.len() as u64 > f.size
            {
                return Err(abort(StoreError::Inconsistent(format!(
                    "fetch of {hash} got {} bytes at {} of {}",
                    data.len(),
                    f.received,
                    f.size
                ))));
            }
            for (i, piece) in data.chunks(chunk).enumerate() {
                t.chunks
                    .insert((f.storage, first + i as u64), &Raw(IVec::from(piece)))?;
            }
            f.received += data.len() as u64;
            t.fetches.insert(hash, &f)?;
            Ok(Some(f.received))
        }))
        .map_err(|e| self.space.note(e))
    }

    /// Hashes the received bytes of a complete fetch. When they match,
    /// the fetch becomes a blob; otherwise its bytes are dropped and it
    /// starts again from 0. Returns whether they matched.
    pub fn fetch_finish(&self, hash: &BlobHash) -> Result<bool> {
        let Some(f) = self.fetch(hash)? else {
            return Ok(false);
        };
        let mut hasher = blake3::Hasher::new();
        for index in 0..chunks(f.size, f.chunk) {
            match self.chunk(f.storage, index)? {
                Some(c) => {
                    hasher.update(&c);
                }
                None => break,
            }
        }
        let matched = hasher.finalize().as_bytes() == &hash.0;
        let fresh = self.db.generate_id()?;
        let _gate = gate(&self.blob_pins);
        let discard = unwrap_tx(FetchFinishTx::run(&self.trees, |t| {
            if matched {
                t.fetches.remove(hash)?;
                if t.blobs.contains(hash)? {
                    // The same bytes were uploaded meanwhile: keep that
                    // copy (and its grace time), drop ours.
                    t.doomed.insert(f.storage, &())?;
                    return Ok(true);
                }
                let meta = BlobMeta {
                    storage: f.storage,
                    size: f.size,
                    keep_until_ms: 0,
                    chunk: f.chunk,
                };
                t.blobs.insert(hash, &meta)?;
                Ok(false)
            } else {
                let restart = Fetch {
                    storage: fresh,
                    received: 0,
                    chunk: CHUNK as u32,
                    ..f.clone()
                };
                t.fetches.insert(hash, &restart)?;
                t.doomed.insert(f.storage, &())?;
                Ok(true)
            }
        }))?;
        drop(_gate);
        if discard {
            self.remove_storage(f.storage)?;
        }
        Ok(matched)
    }

    /// Removes every blob and fetch that no stored version lists, that is
    /// past its grace time and that nobody holds a pin on. Returns how many
    /// blobs and fetches were removed.
    pub fn sweep_blobs(&self, now_ms: u64) -> Result<(usize, usize)> {
        let mut storages = Vec::new();
        let (mut blobs_removed, mut fetches_removed) = (0, 0);
        {
            let pins = gate(&self.blob_pins);
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
                    || pins.contains_key(&hash)
                    || self.blob_referenced(&hash)?
                {
                    continue;
                }
                unwrap_tx(DoomBlobTx::run(&self.trees, |t| {
                    t.blobs.remove(&hash)?;
                    t.doomed.insert(m.storage, &())?;
                    Ok(())
                }))?;
                storages.push(m.storage);
                blobs_removed += 1;
            }
            for (hash, f) in self.fetches()? {
                if pins.contains_key(&hash) || self.blob_referenced(&hash)? {
                    continue;
                }
                unwrap_tx(DoomFetchTx::run(&self.trees, |t| {
                    t.fetches.remove(&hash)?;
                    t.doomed.insert(f.storage, &())?;
                    Ok(())
                }))?;
                storages.push(f.storage);
                fetches_removed += 1;
            }
        }
        for storage in storages {
            self.remove_storage(storage)?;
        }
        Ok((blobs_removed, fetches_removed))
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
/// attachments, and queues fetches from `origin` of those this node lacks
/// (storage ids from `fresh`). Returns how many were queued.
pub(super) fn add_replica_refs_tx(
    refs: &TxTree<'_, RefKey, ()>,
    blobs: &TxTree<'_, BlobHash, BlobMeta>,
    fetches: &TxTree<'_, BlobHash, Fetch>,
    v: &crate::domain::RecordVersion,
    origin: &OfficeId,
    fresh: &mut impl Iterator<Item = u64>,
) -> Tx<usize> {
    let mut queued = 0;
    for a in &v.attachments {
        refs.insert((&a.hash, &v.id, v.version), &())?;
        if blobs.contains(&a.hash)? || fetches.contains(&a.hash)? {
            continue;
        }
        let Some(storage) = fresh.next() else {
            return Err(abort(StoreError::Inconsistent(
                "fewer storage ids than attachments".into(),
            )));
        };
        let f = Fetch {
            origin: origin.clone(),
            size: a.size,
            storage,
            received: 0,
            chunk: CHUNK as u32,
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

    fn read_all(store: &Store, meta: &BlobMeta) -> Vec<u8> {
        let mut out = Vec::new();
        for index in 0..chunks(meta.size, meta.chunk) {
            out.extend_from_slice(&store.chunk(meta.storage, index).unwrap().unwrap());
        }
        out
    }

    /// A fetch stored by a v1 entry, part-way through in 8 KiB chunks,
    /// resumes in 8 KiB chunks and becomes a blob that says so.
    #[test]
    fn a_v1_fetch_resumes_in_its_own_chunk_size() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let data: Vec<u8> = (0..3 * V1_CHUNK + 100).map(|i| (i % 251) as u8).collect();
        let hash = BlobHash(*blake3::hash(&data).as_bytes());
        let received = 2 * V1_CHUNK;
        let chunks = &store.trees.chunks;
        chunks
            .insert((40, 0), &Raw(IVec::from(&data[..V1_CHUNK])))
            .unwrap();
        chunks
            .insert((40, 1), &Raw(IVec::from(&data[V1_CHUNK..received])))
            .unwrap();
        // A fetch entry as v1 wrote it, without the chunk size.
        let mut w = crate::domain::codec::Writer::default();
        w.u8(1)
            .str("phila-da")
            .u64(data.len() as u64)
            .u64(40)
            .u64(received as u64);
        store
            .trees
            .fetches
            .raw()
            .insert(hash.0, w.finish())
            .unwrap();
        assert_eq!(store.fetch(&hash).unwrap().unwrap().chunk, V1_CHUNK as u32);

        let at = received as u64;
        assert_eq!(
            store.fetch_append(&hash, at, &data[received..]).unwrap(),
            Some(data.len() as u64)
        );
        assert!(store.fetch_finish(&hash).unwrap());
        let meta = store.blob(&hash).unwrap().unwrap();
        assert_eq!((meta.storage, meta.chunk), (40, V1_CHUNK as u32));
        assert_eq!(store.chunk(40, 2).unwrap().unwrap().len(), V1_CHUNK);
        assert_eq!(read_all(&store, &meta), data);
    }

    /// New uploads are stored in [`CHUNK`]s, and say so.
    #[test]
    fn uploads_are_stored_in_small_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let data: Vec<u8> = (0..3 * CHUNK + 100).map(|i| (i % 253) as u8).collect();
        let mut up = store.begin_upload(1 << 20).unwrap();
        up.write(&data).unwrap();
        let (hash, _) = up
            .finish(60_000, 0, |_, _| {
                use crate::domain::audit::{Actor, Draft, Outcome, Target};
                Draft::new(
                    Actor::node("minn-da"),
                    "Records.PutBlob",
                    Target::detail("test"),
                    Outcome::ok(),
                )
            })
            .unwrap();
        let meta = store.blob(&hash).unwrap().unwrap();
        assert_eq!(meta.chunk, CHUNK as u32);
        assert_eq!(store.chunk_count(), 4);
        assert_eq!(read_all(&store, &meta), data);
    }
}
