//! Where attachment bytes live: one small interface with two homes, files
//! under the data directory (`store::files`) and an S3-compatible object
//! store (`store::s3`).
//!
//! The store holds only whole, verified blobs, each under its BLAKE3 hash.
//! Bytes in transit (an upload, a fetch from a peer) are staged by the node
//! in a local file, hashed as they arrive, fsynced, and handed over with
//! [`BlobStore::adopt`] only once their hash checks out; so a crash at any
//! point leaves either no blob or a whole one. What is known *about* blobs
//! (sizes, references, fetch progress) lives in sled, never here.
//!
//! This module only declares the interface; it does no I/O itself.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use bytes::Bytes;

use super::BlobHash;

/// A boxed future, so that the node can hold either store as
/// `Arc<dyn BlobStore>`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why the blob store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum BlobStoreError {
    #[error("file {0} is not in the blob store")]
    NotFound(BlobHash),
    #[error("the blob store has no room: {0}")]
    Full(String),
    /// Anything else (the disk, the object store's server, the network);
    /// the message says which and why.
    #[error("the blob store failed: {0}")]
    Failed(String),
}

pub type BlobResult<T> = Result<T, BlobStoreError>;

/// The bytes of whole blobs, by hash.
pub trait BlobStore: Send + Sync + 'static {
    /// Where the bytes are, for logs and `casemesh status`
    /// (`files in /var/lib/casemesh/blobs`, `s3://bucket/prefix at …`).
    fn describe(&self) -> String;

    /// Makes the local file `staged` — `size` bytes, already fsynced, whose
    /// BLAKE3 hash is `hash` — the blob `hash`, durably: when this returns,
    /// a crash of the node or its machine keeps the blob. The staged file is
    /// consumed (moved into place, or copied and removed). Adopting a hash
    /// that is already stored replaces it with the same bytes.
    fn adopt<'a>(
        &'a self,
        hash: &'a BlobHash,
        staged: &'a Path,
        size: u64,
    ) -> BoxFuture<'a, BlobResult<()>>;

    /// Up to `len` bytes of the blob from `offset` (fewer only at its end).
    fn read<'a>(
        &'a self,
        hash: &'a BlobHash,
        offset: u64,
        len: usize,
    ) -> BoxFuture<'a, BlobResult<Bytes>>;

    /// Removes the blob; a blob that is not there is not an error.
    fn delete<'a>(&'a self, hash: &'a BlobHash) -> BoxFuture<'a, BlobResult<()>>;

    /// Every stored blob and its size in bytes, in no set order (what
    /// `casemesh blob move` finds already copied).
    fn list(&self) -> BoxFuture<'_, BlobResult<Vec<(BlobHash, u64)>>>;

    /// Whether the bytes go to the disk of the data directory (so that
    /// moving files there needs room on that disk).
    fn on_local_disk(&self) -> bool {
        false
    }
}
