//! Why a stream that sync serves to a peer (`Pull`, `ProveAudit`) ends
//! early. Named by cause; `grpc::status` alone picks the gRPC code.

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
