//! Attached files: uploading, reading ranges, and who may read which; and
//! keeping the bytes whole (scrubbing, settling what a crash left, moving
//! blobs out of sled).
//!
//! Local users may read a blob that some record on this node lists; a peer
//! may fetch a blob only while a record shared with its office lists it, and
//! is told the same thing for any other blob as for one that does not exist.
//!
//! The bytes live in the blob store ([`BlobStore`]); sled knows which blobs
//! are whole ([`crate::store::blobs`]). Bytes arriving are staged in a local
//! file, hashed as they come, fsynced, and only then adopted by the blob
//! store and recorded in sled ([`BlobService::keep`]).

mod maintain;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::BlobConfig;
use crate::domain::audit::{Draft, Target};
use crate::domain::blobstore::{BlobStore, BlobStoreError};
use crate::domain::{Attachment, BlobHash, OfficeId, RecordId, now_ms};
use crate::error::{Error, Result};
use crate::service::{Call, Sharing};
use crate::store::Store;
use crate::store::blobs::{BlobMeta, BlobPin, BlobState};
use crate::store::encoding::Head;
use crate::store::staging::{StagedFile, Staging};

pub use maintain::{CopyReport, ScrubFinding, ScrubReport, copy_store, run_scrubber};

/// Size of the pieces files are read and streamed in.
pub const PIECE: usize = 1 << 20;

/// The pieces a peer gets when it does not say what it takes (peers from
/// before `FetchBlobRequest.max_piece_bytes` decode at most 512 KiB), and
/// the smallest it may ask for.
pub const LEGACY_PEER_PIECE: usize = 256 << 10;
const MIN_PIECE: usize = 64 << 10;

/// The piece size for a peer that asked for `asked` bytes (0: not said).
pub fn peer_piece(asked: u32) -> usize {
    match asked as usize {
        0 => LEGACY_PEER_PIECE,
        n => n.clamp(MIN_PIECE, PIECE),
    }
}

/// Pieces of a blob queued between the store and the network, per reader.
const READ_AHEAD: usize = 4;

/// An upload checks the disk's free space every this many bytes.
const SPACE_CHECK_BYTES: u64 = 1 << 20;

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
    /// Where the bytes are.
    bytes: Arc<dyn BlobStore>,
    staging: Staging,
    /// Set when the node shuts down: streams in progress end.
    shutdown: watch::Receiver<bool>,
    /// Streams in progress, joined at shutdown so none outlives the store.
    streams: Mutex<JoinSet<()>>,
}

/// An open range of a blob: pinned (so it is not removed while read).
pub struct BlobRange {
    pin: BlobPin,
    size: u64,
    offset: u64,
    end: u64,
    /// Bytes per piece sent.
    piece: usize,
}

/// Bytes being uploaded, staged in a local file. Dropping it unfinished
/// removes them.
pub struct Upload {
    staged: StagedFile,
    limit: u64,
    store: Arc<Store>,
    next_space_check: u64,
}

impl Upload {
    /// Appends bytes; refuses (and the upload is over) past the limit, or
    /// when the disk is down to its reserve.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        let len = self.staged.len() + data.len() as u64;
        if len > self.limit {
            return Err(Error::BlobTooLarge { limit: self.limit });
        }
        if len >= self.next_space_check {
            self.store.check_space()?;
            self.next_space_check = len + SPACE_CHECK_BYTES;
        }
        self.staged.write(data).map_err(staging_failed)
    }
}

impl BlobService {
    pub fn new(
        store: Arc<Store>,
        sharing: Arc<Sharing>,
        config: BlobConfig,
        bytes: Arc<dyn BlobStore>,
        staging: Staging,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            store,
            sharing,
            config,
            bytes,
            staging,
            shutdown,
            streams: Mutex::new(JoinSet::new()),
        }
    }

    /// How many files this node holds, and their bytes.
    pub fn totals(&self) -> Result<(u64, u64)> {
        Ok(self.store.blob_totals()?)
    }

    /// Where the bytes are, as `casemesh status` says it.
    pub fn describe(&self) -> String {
        self.bytes.describe()
    }

    pub fn staging(&self) -> &Staging {
        &self.staging
    }

    /// Waits for every stream to end (they end on shutdown).
    pub async fn join_streams(&self) {
        let mut streams =
            std::mem::take(&mut *self.streams.lock().unwrap_or_else(|p| p.into_inner()));
        while streams.join_next().await.is_some() {}
    }

    pub fn begin_upload(&self) -> Result<Upload> {
        self.store.check_space()?;
        Ok(Upload {
            staged: self.staging.upload().map_err(staging_failed)?,
            limit: self.config.max_blob_bytes,
            store: self.store.clone(),
            next_space_check: SPACE_CHECK_BYTES,
        })
    }

    /// Makes the uploaded bytes a blob, kept for the grace time even if no
    /// record lists it; durable when this returns.
    pub async fn finish_upload(&self, upload: Upload, call: &Call) -> Result<(BlobHash, u64)> {
        let grace = self.config.unreferenced_grace.as_millis() as u64;
        let (hash, size) = (upload.staged.hash(), upload.staged.len());
        let audit = call.entry(Target::detail(format!("file {hash}, {size} bytes")));
        self.keep(upload.staged, now_ms().saturating_add(grace), Some(audit))
            .await
    }

    /// Makes whole staged bytes the blob they hash to: fsynced, adopted by
    /// the blob store (unless it holds them already), then recorded in
    /// sled with `audit`; durable when this returns. A fetch of the same
    /// bytes is then done with.
    pub async fn keep(
        &self,
        staged: StagedFile,
        keep_until_ms: u64,
        audit: Option<Draft>,
    ) -> Result<(BlobHash, u64)> {
        let (hash, size) = (staged.hash(), staged.len());
        let staged = tokio::task::spawn_blocking(move || staged.sync().map(|()| staged))
            .await
            .map_err(|e| Error::Internal(format!("fsync of a staged file failed to run: {e}")))?
            .map_err(staging_failed)?;
        let _pin = self.store.pin_for_write(hash).await;
        let held = self.store.blob(&hash)?.is_some_and(|m| m.legacy.is_none())
            && self.store.damaged(&hash)?.is_none();
        let resumable = staged.resumable();
        if held {
            drop(staged);
        } else {
            self.store.mark_unsettled(&hash)?;
            self.store.commit().await?;
            let path = staged.keep();
            let adopted = self.bytes.adopt(&hash, &path, size).await;
            // A fetch's whole, checked bytes stay for the next attempt to
            // adopt without fetching them again.
            if adopted.is_err() && !resumable {
                let _ = crate::store::staging::remove_if_there(&path);
            }
            adopted.map_err(blob_store_failed)?;
        }
        // A fetch of these bytes is done with (this one, or another the
        // same bytes just made needless): its staged file goes.
        if self.store.record_blob(&hash, size, keep_until_ms, audit)? || resumable {
            self.staging.drop_fetch(&hash).map_err(staging_failed)?;
        }
        self.store.commit().await?;
        Ok((hash, size))
    }

    pub fn state(&self, hash: &BlobHash) -> Result<BlobState> {
        Ok(self.store.blob_state(hash)?)
    }

    /// Files a scrub found changed, with when.
    pub fn damaged_files(&self) -> Result<Vec<(BlobHash, u64)>> {
        Ok(self.store.damaged_list()?)
    }

    /// Every fetch still queued.
    pub fn fetches(&self) -> Result<Vec<(BlobHash, crate::store::blobs::Fetch)>> {
        Ok(self.store.fetches()?)
    }

    /// Bytes of `hash` fetched so far and staged here.
    pub fn received(&self, hash: &BlobHash) -> u64 {
        self.staging.fetched(hash)
    }

    /// A range for a local user: the blob must be listed by a record here.
    pub fn open_local(&self, hash: BlobHash, offset: u64, length: u64) -> Result<BlobRange> {
        let not_found = || Error::BlobNotStored(hash);
        let pin = self.store.pin_blob(hash);
        let meta = self.store.blob(&hash)?.ok_or_else(not_found)?;
        if !self.store.blob_referenced(&hash)? {
            return Err(not_found());
        }
        self.refuse_damaged(&hash)?;
        range(pin, meta, offset, length)
    }

    /// A range for a peer office: some record shared with it must list the
    /// blob. Decided by [`shared_file`], after the same lookups whether the
    /// node holds the file or not.
    pub fn open_for_peer(
        &self,
        peer: &OfficeId,
        hash: BlobHash,
        offset: u64,
        piece: usize,
    ) -> Result<BlobRange> {
        let pin = self.store.pin_blob(hash);
        let visible = |id: &RecordId, collection: &str| self.sharing.visible(peer, id, collection);
        match shared_file(self.store.as_ref(), self.sharing.office(), &visible, &hash)? {
            Some(meta) => {
                self.refuse_damaged(&hash)?;
                let mut range = range(pin, meta, offset, 0)?;
                range.piece = piece;
                Ok(range)
            }
            None => Err(not_shared(&hash)),
        }
    }

    fn refuse_damaged(&self, hash: &BlobHash) -> Result<()> {
        match self.store.damaged(hash)? {
            Some(at_ms) => Err(Error::BlobDamaged { hash: *hash, at_ms }),
            None => Ok(()),
        }
    }

    /// Whether `peer` may still fetch `hash`.
    fn shared_with(&self, peer: &OfficeId, hash: &BlobHash) -> Result<bool> {
        let visible = |id: &RecordId, collection: &str| self.sharing.visible(peer, id, collection);
        Ok(shared_file(self.store.as_ref(), self.sharing.office(), &visible, hash)?.is_some())
    }

    /// Streams the range in order. For a peer, sharing is checked again
    /// before every piece, so a revoke stops a transfer in progress. A
    /// whole file is hashed as it goes: if its bytes no longer match, the
    /// last piece is not sent, the stream fails, and the file is dealt with
    /// as a scrub would ([`BlobService::damaged`]).
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
                size,
                mut offset,
                end,
                piece: piece_len,
            } = range;
            let hash = pin.hash();
            let mut whole = (offset == 0 && end == size).then(blake3::Hasher::new);
            while offset < end {
                if let Some(peer) = &peer {
                    match service.shared_with(peer, &hash) {
                        Ok(true) => {}
                        Ok(false) => {
                            let _ = tx.send(Err(not_shared(&hash))).await;
                            return;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    }
                }
                let want = (end - offset).min(piece_len as u64) as usize;
                let piece = match service.bytes.read(&hash, offset, want).await {
                    Ok(data) if data.len() == want => Ok((offset, data)),
                    Ok(data) => Err(service
                        .damaged(
                            &hash,
                            &format!(
                                "it ends at {} bytes, not {size}",
                                offset + data.len() as u64
                            ),
                        )
                        .await),
                    Err(BlobStoreError::NotFound(_)) => Err(service
                        .damaged(&hash, "it is missing from the blob store")
                        .await),
                    Err(e) => Err(blob_store_failed(e)),
                };
                let piece = match (piece, whole.as_mut()) {
                    (Ok((at, data)), Some(hasher)) => {
                        hasher.update(&data);
                        if at + data.len() as u64 == end && hasher.finalize().as_bytes() != &hash.0
                        {
                            Err(service
                                .damaged(&hash, "its bytes no longer hash to its name")
                                .await)
                        } else {
                            Ok((at, data))
                        }
                    }
                    (piece, _) => piece,
                };
                // A peer learns that the read failed, not where the bytes are.
                let piece = match (piece, &peer) {
                    (Err(Error::StorageFailed(detail)), Some(peer)) => {
                        tracing::error!(%hash, %peer, error = %detail, "reading a file for a peer failed");
                        Err(Error::StorageFailed(
                            "this node could not read the file just now; try again later".into(),
                        ))
                    }
                    (piece, _) => piece,
                };
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

    /// A blocking reader of a whole blob, for code that runs off the async
    /// threads (writing a court bundle). Each read waits on the blob store.
    pub fn reader(&self, hash: BlobHash, size: u64) -> Result<BlobReader<'_>> {
        self.refuse_damaged(&hash)?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| Error::Internal(format!("reading a file outside the runtime: {e}")))?;
        Ok(BlobReader {
            service: self,
            runtime,
            hash,
            size,
            at: 0,
            piece: Bytes::new(),
            hasher: blake3::Hasher::new(),
            error: None,
        })
    }
}

/// Reads a blob in order through the blob store, checking at the end that
/// the bytes hash to its name. A changed or missing file fails the read and
/// is dealt with as a scrub would; [`BlobReader::error`] says why.
pub struct BlobReader<'a> {
    service: &'a BlobService,
    runtime: tokio::runtime::Handle,
    hash: BlobHash,
    size: u64,
    at: u64,
    piece: Bytes,
    hasher: blake3::Hasher,
    error: Option<Error>,
}

impl BlobReader<'_> {
    /// Why the last read failed, as the node's error.
    pub fn error(&mut self) -> Option<Error> {
        self.error.take()
    }

    fn fail(&mut self, e: Error) -> std::io::Error {
        let io = std::io::Error::other(e.to_string());
        self.error = Some(e);
        io
    }

    fn damaged(&mut self, problem: &str) -> std::io::Error {
        let e = self
            .runtime
            .block_on(self.service.damaged(&self.hash, problem));
        self.fail(e)
    }
}

impl std::io::Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.piece.is_empty() {
            if self.at >= self.size {
                return Ok(0);
            }
            let want = (self.size - self.at).min(PIECE as u64) as usize;
            let piece = match self
                .runtime
                .block_on(self.service.bytes.read(&self.hash, self.at, want))
            {
                Ok(piece) => piece,
                Err(BlobStoreError::NotFound(_)) => {
                    return Err(self.damaged("it is missing from the blob store"));
                }
                Err(e) => return Err(self.fail(blob_store_failed(e))),
            };
            if piece.len() != want {
                let end = self.at + piece.len() as u64;
                return Err(self.damaged(&format!("it ends at {end} bytes, not {}", self.size)));
            }
            self.hasher.update(&piece);
            self.at += piece.len() as u64;
            if self.at == self.size && self.hasher.finalize().as_bytes() != &self.hash.0 {
                return Err(self.damaged("its bytes no longer hash to its name"));
            }
            self.piece = piece;
        }
        let n = buf.len().min(self.piece.len());
        buf[..n].copy_from_slice(&self.piece.split_to(n));
        Ok(n)
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
        size: meta.size,
        offset,
        end,
        piece: PIECE,
    })
}

fn staging_failed(e: std::io::Error) -> Error {
    if e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) {
        Error::DiskFull(format!("the disk is full: staging a file failed: {e}"))
    } else {
        Error::StorageFailed(format!("staging a file failed: {e}"))
    }
}

pub(crate) fn blob_store_failed(e: BlobStoreError) -> Error {
    match e {
        BlobStoreError::NotFound(hash) => Error::BlobNotStored(hash),
        BlobStoreError::Full(m) => Error::DiskFull(format!("the blob store is full: {m}")),
        BlobStoreError::Failed(m) => Error::StorageFailed(format!("the blob store failed: {m}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            size: 3,
            keep_until_ms: 0,
            legacy: None,
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
