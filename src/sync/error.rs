//! Sync's errors, named by cause: why a stream it serves to a peer
//! (`Pull`, `ProveAudit`) ends early — `grpc::status` alone picks the gRPC
//! code — and why fetching a file failed, transient or for good.

/// The error a served stream ends with.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("the first message must be PullStart")]
    NoStart,
    #[error("this office is no longer a peer")]
    NotAPeer,
    #[error("this office's audit log is empty")]
    EmptyLog,
    #[error("entry {0} is missing from this node's audit log")]
    MissingEntry(u64),
    /// Details are logged here, never sent.
    #[error("internal error")]
    Internal,
    #[error(transparent)]
    Service(#[from] crate::error::Error),
}

/// Why one attempt at fetching a file from its origin failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Retrying cannot help: the file is over this node's limit. It is not
    /// tried again until the node restarts (with a new limit, say).
    #[error(
        "the file is listed as {size} bytes, over this node's limit of {limit} (blobs.max_blob_bytes)"
    )]
    TooLarge { size: u64, limit: u64 },
    #[error("office {0} is not a pinned peer")]
    OriginNotPinned(crate::domain::OfficeId),
    /// The origin, the network or the bytes: tried again with backoff.
    #[error("{0}")]
    Transfer(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl FetchError {
    /// Whether trying again (after backoff) may succeed.
    pub fn is_transient(&self) -> bool {
        !matches!(self, FetchError::TooLarge { .. })
    }
}
