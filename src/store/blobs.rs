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
use std::sync::{Arc, Mutex, MutexGuard};

use sled::transaction::{Transactional, TransactionalTree};

use super::keys::ref_key;
use super::tx::{Tx, abort, unwrap_tx};
use super::{Result, Store, StoreError, corrupt};
use crate::domain::codec::{DecodeError, Reader, Writer};
use crate::domain::{BlobHash, OfficeId, RecordId};

/// Size of the chunks new blobs are stored in. Small on purpose: sled
/// holds the values of the leaves it has touched beyond its configured
/// cache, so what a large file costs in memory grows with the chunk size,
/// not with the file. Measured with sled alone, writing then reading
/// 256 MiB with a 32 MiB cache (`cargo run --release --example sledmem --
/// CHUNK_BYTES`): 1 KiB chunks held 48 MiB, 2 KiB 56, 4 KiB 71, 8 KiB 126,
/// 16 KiB 332. With a 4 MiB cache, 2 KiB held 36 and 8 KiB still 123.
pub const CHUNK: usize = 2 * 1024;

/// The chunk size of blobs and fetches stored before the size was recorded.
pub const V1_CHUNK: usize = 8 * 1024;

/// Size of the pieces blobs are streamed in: a whole number of chunks of
/// either size.
pub const PIECE: usize = 256 * 1024;
const _: () = assert!(PIECE % CHUNK == 0 && PIECE % V1_CHUNK == 0);

/// While a file streams in (uploaded or fetched), what has arrived is made
/// durable after this many bytes, so sled can write out and evict it and a
/// restart resumes close to where the transfer stopped.
pub const FLUSH_EVERY_BYTES: usize = 8 << 20;

const V1: u8 = 1;
/// v1 plus the chunk size.
const V2: u8 = 2;

/// A whole blob: where its chunks are, and until when it is kept even with
/// no record listing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobMeta {
    pub storage: u64,
    pub size: u64,
    pub keep_until_ms: u64,
    /// Bytes per stored chunk (the last may be shorter).
    pub chunk: u32,
}

impl BlobMeta {
    pub fn chunk_len(&self) -> u64 {
        u64::from(self.chunk)
    }
}

/// A blob a replica lists that is still being fetched from its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    pub origin: OfficeId,
    pub size: u64,
    pub storage: u64,
    /// Bytes stored so far: always a whole number of chunks, or `size`.
    pub received: u64,
    /// Bytes per stored chunk.
    pub chunk: u32,
}

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

fn encode_meta(m: &BlobMeta) -> Vec<u8> {
    let mut w = Writer::default();
    w.u8(V2)
        .u64(m.storage)
        .u64(m.size)
        .u64(m.keep_until_ms)
        .u32(m.chunk);
    w.finish()
}

fn decode_meta(bytes: &[u8]) -> std::result::Result<BlobMeta, DecodeError> {
    let mut r = Reader::new(bytes);
    let v = r.u8()?;
    if v != V1 && v != V2 {
        return Err(DecodeError::UnknownVersion(vec![v]));
    }
    let storage = r.u64()?;
    let size = r.u64()?;
    let keep_until_ms = r.u64()?;
    let chunk = chunk_field(&mut r, v)?;
    r.finish()?;
    Ok(BlobMeta {
        storage,
        size,
        keep_until_ms,
        chunk,
    })
}

/// The chunk size: stored from v2 on, [`V1_CHUNK`] before. Pieces are
/// stored a whole number of chunks at a time, so a size that does not divide
/// [`PIECE`] (zero among them) cannot have been written by this code.
fn chunk_field(r: &mut Reader<'_>, version: u8) -> std::result::Result<u32, DecodeError> {
    if version == V1 {
        return Ok(V1_CHUNK as u32);
    }
    match r.u32()? {
        n if n > 0 && PIECE % n as usize == 0 => Ok(n),
        n => Err(DecodeError::Invalid {
            field: "chunk size",
            reason: format!("{n} bytes does not divide the {PIECE}-byte piece"),
        }),
    }
}

fn encode_fetch(f: &Fetch) -> Vec<u8> {
    let mut w = Writer::default();
    w.u8(V2)
        .str(f.origin.as_str())
        .u64(f.size)
        .u64(f.storage)
        .u64(f.received)
        .u32(f.chunk);
    w.finish()
}

fn decode_fetch(bytes: &[u8]) -> std::result::Result<Fetch, DecodeError> {
    let mut r = Reader::new(bytes);
    let v = r.u8()?;
    if v != V1 && v != V2 {
        return Err(DecodeError::UnknownVersion(vec![v]));
    }
    let origin = OfficeId::parse(r.str("origin")?).map_err(|e| DecodeError::Invalid {
        field: "origin",
        reason: e.to_string(),
    })?;
    let size = r.u64()?;
    let storage = r.u64()?;
    let received = r.u64()?;
    let chunk = chunk_field(&mut r, v)?;
    r.finish()?;
    Ok(Fetch {
        origin,
        size,
        storage,
        received,
        chunk,
    })
}

fn chunk_key(storage: u64, index: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&storage.to_be_bytes());
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

fn chunks(size: u64, chunk: u32) -> u64 {
    size.div_ceil(u64::from(chunk))
}

pub(super) fn read_meta_tx(blobs: &TransactionalTree, hash: &BlobHash) -> Tx<Option<BlobMeta>> {
    match blobs.get(hash.0)? {
        Some(b) => Ok(Some(
            decode_meta(&b).map_err(|e| abort(corrupt("blobhash_blob")(e)))?,
        )),
        None => Ok(None),
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
        self.store.storage_chunk.insert(
            chunk_key(self.storage, self.next_index),
            self.buf.as_slice(),
        )?;
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
        let kept_ours = unwrap_tx(
            (
                &store.blobhash_blob,
                &store.storage_doomed,
                &store.blobhash_fetch,
                &store.auditseq_entry,
                &store.audit_head,
            )
                .transaction(|(blobs, doomed, fetches, entries, head)| {
                    super::audit::append_tx(entries, head, &store.office, &entry)?;
                    // A fetch of the same bytes is no longer needed.
                    if let Some(f) = &fetched {
                        fetches.remove(&hash.0)?;
                        doomed.insert(&f.storage.to_be_bytes(), &[])?;
                    }
                    let ours = match read_meta_tx(blobs, &hash)? {
                        Some(mut existing) => {
                            existing.keep_until_ms = existing.keep_until_ms.max(keep_until_ms);
                            blobs.insert(&hash.0, encode_meta(&existing))?;
                            false
                        }
                        None => {
                            let meta = BlobMeta {
                                storage: self.storage,
                                size: self.size,
                                keep_until_ms,
                                chunk: CHUNK as u32,
                            };
                            blobs.insert(&hash.0, encode_meta(&meta))?;
                            doomed.remove(&self.storage.to_be_bytes())?;
                            true
                        }
                    };
                    Ok(ours)
                }),
        )?;
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
        let storage = self.db.generate_id()?;
        // Doomed until finished: a crash mid-upload leaves nothing behind.
        self.storage_doomed.insert(storage.to_be_bytes(), &[])?;
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
        self.storage_doomed.insert(storage.to_be_bytes(), &[])?;
        let start = chunk_key(storage, 0);
        let end = chunk_key(storage, u64::MAX);
        for key in self.storage_chunk.range(start..=end).keys() {
            self.storage_chunk.remove(key?)?;
        }
        self.storage_doomed.remove(storage.to_be_bytes())?;
        Ok(())
    }

    /// Finishes removals a crash interrupted, and drops uploads that were in
    /// progress. Run at open.
    pub(super) fn remove_doomed(&self) -> Result<()> {
        let doomed: Vec<u64> = self
            .storage_doomed
            .iter()
            .keys()
            .filter_map(|k| match k {
                Ok(k) => match <[u8; 8]>::try_from(k.as_ref()) {
                    Ok(b) => Some(Ok(u64::from_be_bytes(b))),
                    Err(_) => {
                        tracing::error!(key = ?k, "malformed key in storage_doomed; left alone");
                        None
                    }
                },
                Err(e) => Some(Err(e.into())),
            })
            .collect::<Result<_>>()?;
        for storage in doomed {
            self.remove_storage(storage)?;
        }
        Ok(())
    }

    pub fn blob(&self, hash: &BlobHash) -> Result<Option<BlobMeta>> {
        self.blobhash_blob
            .get(hash.0)?
            .map(|v| decode_meta(&v).map_err(corrupt("blobhash_blob")))
            .transpose()
    }

    /// The stored bytes of chunk `index` of a storage id. Read one by one
    /// on purpose: a range scan over a large file measured 300 MiB more
    /// memory through the 256 MiB test.
    pub fn chunk(&self, storage: u64, index: u64) -> Result<Option<sled::IVec>> {
        Ok(self.storage_chunk.get(chunk_key(storage, index))?)
    }

    /// Stores `data` as a blob in chunks of `chunk` bytes, as stores that
    /// wrote other chunk sizes hold them.
    #[cfg(test)]
    pub(crate) fn store_blob_in_chunks(&self, data: &[u8], chunk: usize) -> Result<BlobMeta> {
        let storage = self.db.generate_id()?;
        for (i, piece) in data.chunks(chunk).enumerate() {
            self.storage_chunk
                .insert(chunk_key(storage, i as u64), piece)?;
        }
        let meta = BlobMeta {
            storage,
            size: data.len() as u64,
            keep_until_ms: 0,
            chunk: chunk as u32,
        };
        let hash = blake3::hash(data);
        self.blobhash_blob
            .insert(hash.as_bytes(), encode_meta(&meta))?;
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
        Ok(self
            .blobhash_ref
            .scan_prefix(hash.0)
            .next()
            .transpose()?
            .is_some())
    }

    /// The records (each once) whose stored versions list `hash`.
    pub fn blob_records(&self, hash: &BlobHash) -> Result<Vec<RecordId>> {
        let mut out: Vec<RecordId> = Vec::new();
        for key in self.blobhash_ref.scan_prefix(hash.0).keys() {
            let key = key?;
            let rest = &key[32..];
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            let id = RecordId::parse(&String::from_utf8_lossy(&rest[..end])).map_err(|e| {
                StoreError::Corrupt {
                    tree: "blobhash_ref",
                    source: DecodeError::Invalid {
                        field: "record id",
                        reason: e.to_string(),
                    },
                }
            })?;
            if out.last() != Some(&id) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Whether this node holds the bytes of `hash`, or how many of them.
    pub fn blob_state(&self, hash: &BlobHash) -> Result<BlobState> {
        if self.blobhash_blob.contains_key(hash.0)? {
            return Ok(BlobState::Present);
        }
        let received = self.fetch(hash)?.map(|f| f.received).unwrap_or(0);
        Ok(BlobState::Pending { received })
    }

    /// Number of whole blobs and their total size.
    pub fn blob_totals(&self) -> Result<(u64, u64)> {
        let mut n = 0;
        let mut bytes = 0;
        for v in self.blobhash_blob.iter().values() {
            let m = decode_meta(&v?).map_err(corrupt("blobhash_blob"))?;
            n += 1;
            bytes += m.size;
        }
        Ok((n, bytes))
    }

    /// Number of chunks stored, whatever they belong to (tests use it to
    /// show that nothing was left behind).
    pub fn chunk_count(&self) -> usize {
        self.storage_chunk.len()
    }

    // ---- fetching from peers -------------------------------------------

    pub fn fetch(&self, hash: &BlobHash) -> Result<Option<Fetch>> {
        self.blobhash_fetch
            .get(hash.0)?
            .map(|v| decode_fetch(&v).map_err(corrupt("blobhash_fetch")))
            .transpose()
    }

    /// Every blob still to fetch.
    pub fn fetches(&self) -> Result<Vec<(BlobHash, Fetch)>> {
        self.blobhash_fetch
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let hash = BlobHash::from_slice(&k).map_err(|e| StoreError::Corrupt {
                    tree: "blobhash_fetch",
                    source: DecodeError::Invalid {
                        field: "hash",
                        reason: e.to_string(),
                    },
                })?;
                Ok((hash, decode_fetch(&v).map_err(corrupt("blobhash_fetch"))?))
            })
            .collect()
    }

    /// Stores the next whole chunks of a fetch (the last may be short) at
    /// `received`; returns the new count, or None when the fetch is gone.
    pub fn fetch_append(&self, hash: &BlobHash, at: u64, data: &[u8]) -> Result<Option<u64>> {
        unwrap_tx(
            (&self.blobhash_fetch, &self.storage_chunk).transaction(|(fetches, chunks)| {
                let Some(bytes) = fetches.get(hash.0)? else {
                    return Ok(None);
                };
                let mut f =
                    decode_fetch(&bytes).map_err(|e| abort(corrupt("blobhash_fetch")(e)))?;
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
                    chunks.insert(&chunk_key(f.storage, first + i as u64), piece)?;
                }
                f.received += data.len() as u64;
                fetches.insert(&hash.0, encode_fetch(&f))?;
                Ok(Some(f.received))
            }),
        )
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
        let discard = unwrap_tx(
            (
                &self.blobhash_fetch,
                &self.blobhash_blob,
                &self.storage_doomed,
            )
                .transaction(|(fetches, blobs, doomed)| {
                    if matched {
                        fetches.remove(&hash.0)?;
                        if blobs.get(hash.0)?.is_some() {
                            // The same bytes were uploaded meanwhile: keep
                            // that copy (and its grace time), drop ours.
                            doomed.insert(&f.storage.to_be_bytes(), &[])?;
                            return Ok(true);
                        }
                        let meta = BlobMeta {
                            storage: f.storage,
                            size: f.size,
                            keep_until_ms: 0,
                            chunk: f.chunk,
                        };
                        blobs.insert(&hash.0, encode_meta(&meta))?;
                    } else {
                        let restart = Fetch {
                            storage: fresh,
                            received: 0,
                            chunk: CHUNK as u32,
                            ..f.clone()
                        };
                        fetches.insert(&hash.0, encode_fetch(&restart))?;
                        doomed.insert(&f.storage.to_be_bytes(), &[])?;
                        return Ok(true);
                    }
                    Ok(false)
                }),
        )?;
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
            for kv in self.blobhash_blob.iter() {
                let (k, v) = kv?;
                let m = decode_meta(&v).map_err(corrupt("blobhash_blob"))?;
                let Ok(hash) = BlobHash::from_slice(&k) else {
                    continue;
                };
                if m.keep_until_ms > now_ms
                    || pins.contains_key(&hash)
                    || self.blob_referenced(&hash)?
                {
                    continue;
                }
                self.doom(&self.blobhash_blob, &hash, m.storage)?;
                storages.push(m.storage);
                blobs_removed += 1;
            }
            for (hash, f) in self.fetches()? {
                if pins.contains_key(&hash) || self.blob_referenced(&hash)? {
                    continue;
                }
                self.doom(&self.blobhash_fetch, &hash, f.storage)?;
                storages.push(f.storage);
                fetches_removed += 1;
            }
        }
        for storage in storages {
            self.remove_storage(storage)?;
        }
        Ok((blobs_removed, fetches_removed))
    }

    /// Removes a blob or fetch entry and marks its storage doomed, at once.
    fn doom(&self, tree: &sled::Tree, hash: &BlobHash, storage: u64) -> Result<()> {
        unwrap_tx(
            (tree, &self.storage_doomed).transaction(|(entries, doomed)| {
                entries.remove(&hash.0)?;
                doomed.insert(&storage.to_be_bytes(), &[])?;
                Ok(())
            }),
        )
    }
}

/// Inside a local write's transaction: the first attachment this node does
/// not hold (at the size listed), if any.
pub(super) fn missing_local_blob_tx(
    blobs: &TransactionalTree,
    v: &crate::domain::RecordVersion,
) -> Tx<Option<StoreError>> {
    for a in &v.attachments {
        match read_meta_tx(blobs, &a.hash)? {
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
    refs: &TransactionalTree,
    v: &crate::domain::RecordVersion,
) -> Tx<()> {
    for a in &v.attachments {
        refs.insert(ref_key(&a.hash, &v.id, v.version), &[])?;
    }
    Ok(())
}

/// Inside a replica's transaction: records that the version lists its
/// attachments, and queues fetches from `origin` of those this node lacks
/// (storage ids from `fresh`). Returns how many were queued.
pub(super) fn add_replica_refs_tx(
    refs: &TransactionalTree,
    blobs: &TransactionalTree,
    fetches: &TransactionalTree,
    v: &crate::domain::RecordVersion,
    origin: &OfficeId,
    fresh: &mut impl Iterator<Item = u64>,
) -> Tx<usize> {
    let mut queued = 0;
    for a in &v.attachments {
        refs.insert(ref_key(&a.hash, &v.id, v.version), &[])?;
        if blobs.get(a.hash.0)?.is_some() || fetches.get(a.hash.0)?.is_some() {
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
        fetches.insert(&a.hash.0, encode_fetch(&f))?;
        queued += 1;
    }
    Ok(queued)
}

/// Inside a purge's transaction: the version stored as `value` no longer
/// lists its attachments.
pub(super) fn drop_refs_tx(refs: &TransactionalTree, value: &[u8]) -> Tx<()> {
    let v = super::encoding::decode_signed(value)
        .map_err(|e| abort(corrupt("recordversion_signed")(e)))?;
    for a in &v.record.attachments {
        refs.remove(ref_key(&a.hash, &v.record.id, v.record.version))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries written before the chunk size was recorded read as
    /// [`V1_CHUNK`]; entries written now carry it.
    #[test]
    fn frozen_meta_and_fetch_bytes() {
        let v1_meta = "01000000000000000700000000000493e00000000000000009";
        let meta = BlobMeta {
            storage: 7,
            size: 300_000,
            keep_until_ms: 9,
            chunk: V1_CHUNK as u32,
        };
        assert_eq!(decode_meta(&hex::decode(v1_meta).unwrap()).unwrap(), meta);
        let meta = BlobMeta {
            chunk: CHUNK as u32,
            ..meta
        };
        assert_eq!(
            hex::encode(encode_meta(&meta)),
            "02000000000000000700000000000493e0000000000000000900000800"
        );
        assert_eq!(decode_meta(&encode_meta(&meta)).unwrap(), meta);

        let v1_fetch = "01000000087068696c612d6461000000000000000500000000000000020000000000000000";
        let f = Fetch {
            origin: OfficeId::parse("phila-da").unwrap(),
            size: 5,
            storage: 2,
            received: 0,
            chunk: V1_CHUNK as u32,
        };
        assert_eq!(decode_fetch(&hex::decode(v1_fetch).unwrap()).unwrap(), f);
        let f = Fetch {
            chunk: CHUNK as u32,
            ..f
        };
        assert_eq!(
            hex::encode(encode_fetch(&f)),
            "02000000087068696c612d646100000000000000050000000000000002000000000000000000000800"
        );
        assert_eq!(decode_fetch(&encode_fetch(&f)).unwrap(), f);
    }

    fn open(dir: &tempfile::TempDir) -> Store {
        let options = super::super::StoreOptions {
            cache_bytes: 8 << 20,
        };
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
        store
            .storage_chunk
            .insert(chunk_key(40, 0), &data[..V1_CHUNK])
            .unwrap();
        store
            .storage_chunk
            .insert(chunk_key(40, 1), &data[V1_CHUNK..received])
            .unwrap();
        let mut w = Writer::default();
        w.u8(V1)
            .str("phila-da")
            .u64(data.len() as u64)
            .u64(40)
            .u64(received as u64);
        store.blobhash_fetch.insert(hash.0, w.finish()).unwrap();
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

    #[test]
    fn a_chunk_size_that_does_not_divide_a_piece_is_corrupt() {
        let meta = |chunk: &str| {
            decode_meta(
                &hex::decode(format!(
                    "02{}{chunk}",
                    "000000000000000700000000000493e00000000000000009"
                ))
                .unwrap(),
            )
        };
        assert_eq!(meta("00000800").unwrap().chunk, 2048);
        for bad in ["00000000", "00000bb8", "00080000"] {
            assert!(meta(bad).is_err(), "chunk size {bad} accepted");
        }
    }
}
