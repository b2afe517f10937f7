//! Attached files: uploading, reading ranges, and who may read which.
//!
//! Local users may read a blob that some record on this node lists; a peer
//! may fetch a blob only while a record shared with its office lists it, and
//! is told the same thing for any other blob as for one that does not exist.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::BlobConfig;
use crate::domain::audit::Target;
use crate::domain::{Attachment, BlobHash, OfficeId, RecordId, now_ms};
use crate::error::{Error, Result};
use crate::service::{Call, Sharing};
use crate::store::Store;
use crate::store::blobs::{BlobError, BlobMeta, BlobPin, BlobState, PIECE, Upload};
use crate::store::encoding::Head;

/// Pieces of a blob queued between the store and the network, per reader.
const READ_AHEAD: usize = 4;

/// How many of this office's records listing a file are looked at when a
/// peer asks for it: always this many lookups, real or standing in, so that
/// a file the node holds and does not share is refused after the same work
/// as one it does not hold. (A file listed by more than this many records
/// of this office is served through the first of them, by record id.)
pub const CHECKED_RECORDS: usize = 64;

/// The reads that decide whether a peer may fetch a file: each small and
/// of a fixed shape (no version is decoded).
pub trait FileLookups {
    fn blob(&self, hash: &BlobHash) -> Result<Option<BlobMeta>>;
    /// The first records of `office` listing `hash` in some version, at
    /// most `at_most` (replicas from other offices are not looked at).
    fn listing(&self, hash: &BlobHash, office: &OfficeId, at_most: usize) -> Result<Vec<RecordId>>;
    fn head(&self, id: &RecordId) -> Result<Option<Head>>;
}

impl FileLookups for Store {
    fn blob(&self, hash: &BlobHash) -> Result<Option<BlobMeta>> {
        Ok(Store::blob(self, hash)?)
    }
    fn listing(&self, hash: &BlobHash, office: &OfficeId, at_most: usize) -> Result<Vec<RecordId>> {
        Ok(self.blob_records_of(hash, office, at_most)?)
    }
    fn head(&self, id: &RecordId) -> Result<Option<Head>> {
        Ok(Store::head(self, id)?)
    }
}

/// The file `hash` if a version of a record of `office` that the peer may
/// see (`visible`) lists it. A granted record travels with its whole
/// history, so the file of an earlier version, or of a record since
/// deleted, is served as well as the latest's. The same lookups are made in
/// the same order whatever the answer: the file's entry, its listing, then
/// the heads of [`CHECKED_RECORDS`] records (a record that cannot exist
/// stands in for the ones missing), nothing cut short.
pub fn shared_file(
    lookups: &impl FileLookups,
    office: &OfficeId,
    visible: &impl Fn(&RecordId, &str) -> bool,
    hash: &BlobHash,
) -> Result<Option<BlobMeta>> {
    let meta = lookups.blob(hash)?;
    let listing = lookups.listing(hash, office, CHECKED_RECORDS)?;
    let stand_in = RecordId::parse(&format!("{office}:{}", "0".repeat(32)))
        .map_err(|e| Error::Internal(format!("the stand-in record id: {e}")))?;
    let mut shared = false;
    for slot in 0..CHECKED_RECORDS {
        let id = listing.get(slot).unwrap_or(&stand_in);
        let head = lookups.head(id)?;
        let real = slot < listing.len();
        shared |= real && head.is_some_and(|h| visible(id, &h.collection));
    }
    Ok(meta.filter(|_| shared))
}

pub struct BlobService {
    store: Arc<Store>,
    sharing: Arc<Sharing>,
    config: BlobConfig,
    /// Set when the node shuts down: streams in progress end.
    shutdown: watch::Receiver<bool>,
    /// Streams in progress, joined at shutdown so none outlives the store.
    streams: Mutex<JoinSet<()>>,
}

/// An open range of a blob: pinned (so it is not removed while read), with
/// the stored location of its bytes.
pub struct BlobRange {
    pin: BlobPin,
    meta: BlobMeta,
    offset: u64,
    end: u64,
}

impl BlobService {
    /// How many files this node holds, and their bytes.
    pub fn totals(&self) -> Result<(u64, u64)> {
        Ok(self.store.blob_totals()?)
    }

    pub fn new(
        store: Arc<Store>,
        sharing: Arc<Sharing>,
        config: BlobConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            store,
            sharing,
            config,
            shutdown,
            streams: Mutex::new(JoinSet::new()),
        }
    }

    /// Waits for every stream to end (they end on shutdown).
    pub async fn join_streams(&self) {
        let mut streams =
            std::mem::take(&mut *self.streams.lock().unwrap_or_else(|p| p.into_inner()));
        while streams.join_next().await.is_some() {}
    }

    pub fn begin_upload(&self) -> Result<Upload<'_>> {
        Ok(self.store.begin_upload(self.config.max_blob_bytes)?)
    }

    pub async fn flush(&self) -> Result<()> {
        Ok(self.store.commit().await?)
    }

    /// Makes the uploaded bytes a blob; durable when this returns.
    pub async fn finish_upload(&self, upload: Upload<'_>, call: &Call) -> Result<(BlobHash, u64)> {
        let grace = self.config.unreferenced_grace.as_millis() as u64;
        let stored = upload.finish(grace, now_ms(), |hash, size| {
            call.entry(Target::detail(format!("file {hash}, {size} bytes")))
        })?;
        self.store.commit().await?;
        Ok(stored)
    }

    pub fn state(&self, hash: &BlobHash) -> Result<BlobState> {
        Ok(self.store.blob_state(hash)?)
    }

    /// A range for a local user: the blob must be listed by a record here.
    pub fn open_local(&self, hash: BlobHash, offset: u64, length: u64) -> Result<BlobRange> {
        let not_found = || Error::BlobNotStored(hash);
        let pin = self.store.pin_blob(hash);
        let meta = self.store.blob(&hash)?.ok_or_else(not_found)?;
        if !self.store.blob_referenced(&hash)? {
            return Err(not_found());
        }
        range(pin, meta, offset, length)
    }

    /// A range for a peer office: some record shared with it must list the
    /// blob. Decided by [`shared_file`], after the same lookups whether the
    /// node holds the file or not.
    pub fn open_for_peer(&self, peer: &OfficeId, hash: BlobHash, offset: u64) -> Result<BlobRange> {
        let pin = self.store.pin_blob(hash);
        let visible = |id: &RecordId, collection: &str| self.sharing.visible(peer, id, collection);
        match shared_file(self.store.as_ref(), self.sharing.office(), &visible, &hash)? {
            Some(meta) => range(pin, meta, offset, 0),
            None => Err(not_shared(&hash)),
        }
    }

    /// Whether `peer` may still fetch `hash`.
    fn shared_with(&self, peer: &OfficeId, hash: &BlobHash) -> Result<bool> {
        let visible = |id: &RecordId, collection: &str| self.sharing.visible(peer, id, collection);
        Ok(shared_file(self.store.as_ref(), self.sharing.office(), &visible, hash)?.is_some())
    }

    /// Streams the range in order. For a peer, sharing is checked again
    /// before every piece, so a revoke stops a transfer in progress.
    pub fn stream(
        self: &Arc<Self>,
        range: BlobRange,
        peer: Option<OfficeId>,
    ) -> mpsc::Receiver<Result<(u64, Bytes)>> {
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let service = self.clone();
        let mut shutdown = self.shutdown.clone();
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        while streams.try_join_next().is_some() {}
        streams.spawn(async move {
            let BlobRange {
                pin,
                meta,
                mut offset,
                end,
            } = range;
            while offset < end {
                if let Some(peer) = &peer {
                    match service.shared_with(peer, &pin.hash()) {
                        Ok(true) => {}
                        Ok(false) => {
                            let _ = tx.send(Err(not_shared(&pin.hash()))).await;
                            return;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    }
                }
                let piece = read_piece(&service.store, &meta, offset, end);
                let failed = piece.is_err();
                if let Ok((_, data)) = &piece {
                    offset += data.len() as u64;
                }
                match super::send_within(&tx, &mut shutdown, piece).await {
                    super::Sent::Sent if !failed => {}
                    super::Sent::ShuttingDown => {
                        let _ = tx.try_send(Err(Error::ShuttingDown));
                        return;
                    }
                    _ => return,
                }
            }
            drop(pin);
        });
        rx
    }
}

/// Fills in the stored size of each attachment, checked against what the
/// writer gave; every attachment must be held here.
pub fn resolve(store: &Store, attachments: &mut [Attachment]) -> Result<()> {
    for a in attachments {
        let Some(meta) = store.blob(&a.hash)? else {
            return Err(crate::store::StoreError::MissingBlob {
                hash: a.hash,
                file_name: a.file_name.clone(),
            }
            .into());
        };
        if a.size != 0 && a.size != meta.size {
            return Err(Error::AttachmentSize {
                file_name: a.file_name.clone(),
                hash: a.hash,
                stored: meta.size,
                listed: a.size,
            });
        }
        a.size = meta.size;
    }
    Ok(())
}

fn not_shared(hash: &BlobHash) -> Error {
    Error::BlobNotShared(*hash)
}

fn range(pin: BlobPin, meta: BlobMeta, offset: u64, length: u64) -> Result<BlobRange> {
    if offset > meta.size {
        return Err(Error::OffsetPastEnd {
            offset,
            size: meta.size,
        });
    }
    let end = match length {
        0 => meta.size,
        n => offset.saturating_add(n).min(meta.size),
    };
    Ok(BlobRange {
        pin,
        meta,
        offset,
        end,
    })
}

/// Up to [`PIECE`] bytes from `offset`, ending at a piece boundary or `end`.
fn read_piece(store: &Store, meta: &BlobMeta, offset: u64, end: u64) -> Result<(u64, Bytes)> {
    let stop = ((offset / PIECE as u64 + 1) * PIECE as u64).min(end);
    let mut out = Vec::with_capacity((stop - offset) as usize);
    let mut at = offset;
    let chunk_len = meta.chunk_len();
    while at < stop {
        let index = at / chunk_len;
        let damaged = |what: &str| {
            Error::Store(crate::store::StoreError::Inconsistent(format!(
                "chunk {index} of storage {} is {what}",
                meta.storage
            )))
        };
        let chunk = store
            .chunk(meta.storage, index)?
            .ok_or_else(|| damaged("missing"))?;
        let from = (at - index * chunk_len) as usize;
        let to = ((stop - index * chunk_len) as usize).min(chunk.len());
        if from >= to {
            return Err(damaged("short"));
        }
        out.extend_from_slice(&chunk[from..to]);
        at += (to - from) as u64;
    }
    Ok((offset, Bytes::from(out)))
}

impl From<BlobError> for Error {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::TooLarge { limit } => Error::BlobTooLarge { limit },
            BlobError::Store(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;
    use crate::store::blobs::{CHUNK, V1_CHUNK};

    /// Any range of a blob reads back right, whatever size of chunks it is
    /// stored in (blobs stored before the chunk size was recorded use
    /// 8 KiB).
    #[test]
    fn ranges_read_right_in_either_chunk_size() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions::for_tests();
        let store = Store::open(dir.path(), "phila-da", &options).unwrap();
        let data: Vec<u8> = (0..PIECE + 3 * V1_CHUNK + 77)
            .map(|i| (i % 249) as u8)
            .collect();
        let size = data.len() as u64;
        for chunk in [CHUNK, V1_CHUNK] {
            let meta = store.store_blob_in_chunks(&data, chunk).unwrap();
            for offset in [
                0,
                1,
                CHUNK as u64 - 1,
                V1_CHUNK as u64 + 3,
                PIECE as u64 - 5,
                size - 1,
                size,
            ] {
                let mut got = Vec::new();
                let mut at = offset;
                while at < size {
                    let (from, piece) = read_piece(&store, &meta, at, size).unwrap();
                    assert_eq!(from, at);
                    assert!(!piece.is_empty() && piece.len() <= PIECE);
                    at += piece.len() as u64;
                    got.extend_from_slice(&piece);
                }
                assert_eq!(
                    got,
                    &data[offset as usize..],
                    "chunk {chunk}, offset {offset}"
                );
            }
        }
    }

    /// Lookups answered from a table, recorded in order.
    struct Recorded {
        blob: Option<BlobMeta>,
        /// Records listing the file, with the collection each is in.
        listing: Vec<(RecordId, String)>,
        calls: std::cell::RefCell<Vec<&'static str>>,
    }

    impl FileLookups for Recorded {
        fn blob(&self, _: &BlobHash) -> Result<Option<BlobMeta>> {
            self.calls.borrow_mut().push("blob");
            Ok(self.blob)
        }
        fn listing(&self, _: &BlobHash, _: &OfficeId, at_most: usize) -> Result<Vec<RecordId>> {
            self.calls.borrow_mut().push("listing");
            Ok(self
                .listing
                .iter()
                .take(at_most)
                .map(|(id, _)| id.clone())
                .collect())
        }
        fn head(&self, id: &RecordId) -> Result<Option<Head>> {
            self.calls.borrow_mut().push("head");
            Ok(self
                .listing
                .iter()
                .find(|(r, _)| r == id)
                .map(|(_, collection)| Head {
                    version: 1,
                    deleted: false,
                    collection: collection.clone(),
                }))
        }
    }

    fn listing(office: &OfficeId, n: usize) -> Vec<(RecordId, String)> {
        (1..=n)
            .map(|i| {
                let id = RecordId::parse(&format!("{office}:{i:032x}")).unwrap();
                (id, format!("case-{i}"))
            })
            .collect()
    }

    /// A file the office does not hold, one it holds but shares with no
    /// one, and one it shares: decided after the same lookups in the same
    /// order, so a peer cannot tell the first two apart by the time the
    /// answer takes.
    #[test]
    fn a_file_not_held_and_one_not_shared_take_the_same_lookups() {
        let office = OfficeId::parse("phila-da").unwrap();
        let hash = BlobHash([9; 32]);
        let meta = BlobMeta {
            storage: 1,
            size: 3,
            keep_until_ms: 0,
            chunk: CHUNK as u32,
        };
        let cases = [
            ("not held", None, Vec::new(), "case-none", false),
            (
                "held, not shared",
                Some(meta),
                listing(&office, 3),
                "case-none",
                false,
            ),
            (
                "held and shared",
                Some(meta),
                listing(&office, 3),
                "case-2",
                true,
            ),
            // Shared through the last record the lookups reach.
            (
                "listed by many, shared by the last looked at",
                Some(meta),
                listing(&office, CHECKED_RECORDS + 10),
                "case-64",
                true,
            ),
        ];
        let mut sequences = Vec::new();
        for (what, blob, listing, granted, shared) in cases {
            let lookups = Recorded {
                blob,
                listing,
                calls: Default::default(),
            };
            let visible = |_: &RecordId, collection: &str| collection == granted;
            let answer = shared_file(&lookups, &office, &visible, &hash).unwrap();
            assert_eq!(answer.is_some(), shared, "{what}");
            sequences.push(lookups.calls.into_inner());
        }
        let expected: Vec<&str> = ["blob", "listing"]
            .into_iter()
            .chain(std::iter::repeat_n("head", CHECKED_RECORDS))
            .collect();
        for calls in &sequences {
            assert_eq!(calls, &expected);
        }
    }
}
