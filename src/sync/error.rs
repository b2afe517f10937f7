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
    #[error(
        "your checkpoint {after} is past the end of this office's feed for you ({end}): its store was restored from an older copy, or yours is from another installation; remove this peer and pin it again to start over"
    )]
    AheadOfFeed { after: u64, end: u64 },
    #[error("your feed was re-queued less than a minute ago; try again in {retry_after_secs} s")]
    RequeueTooSoon { retry_after_secs: u64 },
    #[error("acknowledged entry {acked}, but only entries up to {sent} were sent on this stream")]
    AckBeyondSent { acked: u64, sent: u64 },
    #[error("a newer Pull stream from your office replaced this one")]
    Replaced,
    #[error("this office's audit log is empty")]
    EmptyLog,
    #[error("entry {0} is missing from this node's audit log")]
    MissingEntry(u64),
    #[error("{0}")]
    BadProofRange(String),
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
    /// The origin says it does not share the file (any more): asking again
    /// cannot help until something comes from that origin (a new version,
    /// a grant, a revocation), or the node restarts.
    #[error("the origin does not share this file with this office: {0}")]
    NotShared(String),
    /// The origin, the network or the bytes: tried again with backoff.
    #[error("{0}")]
    Transfer(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Keeping the bytes failed here (staging, the blob store).
    #[error(transparent)]
    Here(#[from] crate::error::Error),
}

impl FetchError {
    /// Whether trying again (after backoff) may succeed.
    pub fn is_transient(&self) -> bool {
        !matches!(self, FetchError::TooLarge { .. } | FetchError::NotShared(_))
    }
}

/// Why a pull stream from a peer went down. Every cause is retried with
/// backoff while the peer stays pinned (a peer that is down, unreachable
/// or misconfigured today may be fine tomorrow); the text is what
/// `peer status` shows as the link's last error.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// This node's certificate, or the peer's pinned CA, cannot be used.
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    #[error("{0}")]
    Unreachable(String),
    /// The peer answered the call, or ended the stream, with an error.
    #[error("{}", status_text(.0))]
    Refused(tonic::Status),
    #[error("nothing heard for three heartbeat intervals")]
    Silent,
    /// A batch no honest origin sends: refused whole, before any of it
    /// is looked at.
    #[error("the peer sent a batch of {entries} entries; at most {max} are taken")]
    BatchTooLarge { entries: usize, max: usize },
    /// A task of this node's own pipeline stopped first.
    #[error("{0} stopped")]
    Stopped(&'static str),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The search index could not be purged: no purge acknowledgement is
    /// signed until it is.
    #[error("{0}")]
    Search(String),
}

/// Why a version, revocation or acknowledgement a peer sent was refused;
/// the text goes into the `replica.rejected` audit entry.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error("{0}")]
    Malformed(#[from] crate::domain::codec::DecodeError),
    #[error("{0}")]
    Signature(#[from] crate::identity::IdentityError),
    #[error("{0}")]
    Shape(#[from] crate::domain::limits::LimitError),
    #[error("verification result missing")]
    Unchecked,
    #[error("verification thread panicked")]
    VerifierPanicked,
    #[error("the peer does not own the record")]
    NotOwner,
    #[error(
        "too many purge acknowledgements asked for (at most 64 a batch, 4,096 kept for one origin)"
    )]
    TooManyAcks,
    #[error("the grant was acknowledged to another office")]
    AnotherOriginsGrant,
}

/// A status for a person: code, message, and the transport's reason.
pub(super) fn status_text(s: &tonic::Status) -> String {
    let chain = source_chain(s);
    if chain.is_empty() {
        format!("{:?}: {}", s.code(), s.message())
    } else {
        format!("{:?}: {}: {chain}", s.code(), s.message())
    }
}

/// The sources below `e`, joined, for errors whose own text omits them.
pub(super) fn source_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}
