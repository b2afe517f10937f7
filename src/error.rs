//! The error type of the service layer: what a use case can fail with.
//! `grpc::status` maps each variant to one gRPC status; nothing here knows
//! about tonic.

use crate::domain::{IdError, LimitError};
use crate::identity::IdentityError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    InvalidId(#[from] IdError),
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("record {0} not found")]
    RecordNotFound(String),
    #[error("record {id} has no version {version}")]
    VersionNotFound { id: String, version: u64 },
    #[error(
        "version conflict on record {id}: expected latest version {expected}, but it is {actual}"
    )]
    VersionConflict {
        id: String,
        expected: u64,
        actual: u64,
    },
    #[error("record {id} is already deleted (version {version})")]
    AlreadyDeleted { id: String, version: u64 },
    #[error(
        "record {id} belongs to office {origin}; it is a read-only replica here and only its origin can change it"
    )]
    NotOrigin { id: String, origin: String },
    #[error("user {0} not found")]
    UserNotFound(String),
    #[error("user {0} holds a valid certificate already; revoke it before issuing a new one")]
    UserExists(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("the file is larger than this node's limit of {limit} bytes (blobs.max_blob_bytes)")]
    BlobTooLarge { limit: u64 },
    #[error("{0}")]
    Unavailable(String),
    #[error(
        "collection {0} holds no records on this node: check the case number, or allow an empty bundle (`casemesh export --allow-empty`)"
    )]
    EmptyCollection(String),
    #[error("storage failure: {0}")]
    Store(StoreError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UserExists(name) => Error::UserExists(name),
            e @ StoreError::MissingBlob { .. } => Error::FailedPrecondition(e.to_string()),
            other => Error::Store(other),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
