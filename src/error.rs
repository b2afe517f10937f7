//! The error type of the service layer: what a use case can fail with,
//! each variant named by its cause. `grpc::status` maps each variant to
//! one gRPC status, the only place a code is chosen; nothing here knows
//! about tonic.

use crate::domain::sharing::GrantId;
use crate::domain::{AddrError, BlobHash, IdError, LimitError, OfficeId};
use crate::identity::{Fingerprint, IdentityError};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // The request itself is wrong.
    #[error(transparent)]
    InvalidId(#[from] IdError),
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error("{0} is required")]
    MissingField(&'static str),
    #[error(transparent)]
    BadEndpoint(#[from] AddrError),
    #[error("{0}")]
    BadFingerprint(String),
    #[error("could not parse {what}: {reason}")]
    BadCsr { what: String, reason: String },
    /// A peer's office CA that is not one: the reason says how.
    #[error("{0}")]
    BadOfficeCa(String),
    #[error("an office cannot pin itself as a peer")]
    PinSelf,
    #[error(
        "the certificate's fingerprint is {actual}, not the expected {expected}: do not pin it"
    )]
    FingerprintMismatch {
        actual: Fingerprint,
        expected: Fingerprint,
    },
    #[error("expires_at is in the past")]
    ExpiryInPast,
    #[error("expires_at is after {0}, the last time casemesh can record")]
    ExpiryTooLate(String),
    #[error(
        "expected_version {0} makes no sense for a new record: give the record's id to update it"
    )]
    VersionOnNewRecord(u64),
    #[error("page_token is not a token this node issued")]
    BadPageToken,
    #[error(
        "page_token was issued for other filters; keep collection and origin the same while paging"
    )]
    PageTokenForOtherFilters,
    #[error("to_ms is before from_ms")]
    TimeRangeReversed,
    #[error("{0}")]
    BadSearch(String),
    #[error("attachment {file_name:?} ({hash}) is {stored} bytes, not {listed}")]
    AttachmentSize {
        file_name: String,
        hash: BlobHash,
        stored: u64,
        listed: u64,
    },
    #[error("offset {offset} is past the end of the file ({size} bytes)")]
    OffsetPastEnd { offset: u64, size: u64 },
    #[error("purge acknowledgement for grant {0} does not match its parties")]
    AckParties(GrantId),
    #[error("audit head names office {named}, not {peer}")]
    HeadOfAnotherOffice { named: String, peer: OfficeId },
    #[error("the file is larger than this node's limit of {limit} bytes (blobs.max_blob_bytes)")]
    BlobTooLarge { limit: u64 },

    // What the request names does not exist (or is not for this caller).
    #[error("record {0} not found")]
    RecordNotFound(String),
    #[error("record {id} has no version {version}")]
    VersionNotFound { id: String, version: u64 },
    #[error("user {0} not found")]
    UserNotFound(String),
    #[error("peer {0} is not pinned: `casemesh peer list` shows the pinned offices")]
    PeerNotPinned(OfficeId),
    #[error("grant {0} not found")]
    GrantNotFound(GrantId),
    #[error("no file {0} is stored on this node")]
    BlobNotStored(BlobHash),
    /// Said the same way whether or not the file exists: a peer learns
    /// nothing of what it was not granted.
    #[error("no file {0} is shared with your office")]
    BlobNotShared(BlobHash),

    // It exists already.
    #[error("user {0} holds a valid certificate already; revoke it before issuing a new one")]
    UserExists(String),
    #[error("peer {0} is already pinned")]
    PeerAlreadyPinned(OfficeId),

    // The state does not allow it.
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
        "attachment {file_name:?} ({hash}) is not stored on this node: upload it with PutBlob first"
    )]
    FileNotUploaded { hash: BlobHash, file_name: String },
    #[error("{0} is the last valid admin; issue another admin before revoking it")]
    LastAdmin(String),
    #[error("user {name}'s current certificate is {current}, not {expected}")]
    NotCurrentCertificate {
        name: String,
        current: Fingerprint,
        expected: Fingerprint,
    },
    #[error("grant {id} already ended ({reason})")]
    GrantEnded { id: GrantId, reason: String },
    #[error("grant {0} is still active")]
    GrantStillActive(GrantId),
    #[error(
        "collection {0} holds no records on this node: check the case number, or allow an empty bundle (`casemesh export --allow-empty`)"
    )]
    EmptyCollection(String),

    /// The search index cannot answer now: being rebuilt, or failed.
    #[error("{0}")]
    SearchUnavailable(String),
    #[error("search is turned off on this node ([search] enabled = false in casemesh.toml)")]
    SearchTurnedOff,

    // Not this caller's to do.
    #[error(
        "record {id} belongs to office {origin}; it is a read-only replica here and only its origin can change it"
    )]
    NotOrigin { id: String, origin: String },
    #[error("only peer nodes may {0}")]
    PeersOnly(&'static str),
    #[error("your office is fetching {limit} files from this node already; wait for one to finish")]
    TooManyTransfers { limit: usize },
    #[error(
        "{what} was answered less than {interval_secs} s ago; ask again in {retry_after_secs} s"
    )]
    TooSoon {
        what: &'static str,
        interval_secs: u64,
        retry_after_secs: u64,
    },

    // This node's audit log does not check out.
    #[error("audit entry {seq} cannot be read: {reason}")]
    AuditEntryUnreadable { seq: u64, reason: String },
    #[error("entry {0} is missing from this node's audit log")]
    AuditEntryMissing(u64),
    /// The log up to a signed head is not the log that was signed; says
    /// where, and to run `casemesh audit verify`.
    #[error("{0}")]
    AuditLogBroken(String),

    // Try again later.
    #[error("record {id} kept changing while this write was prepared ({tries} tries); try again")]
    RecordBusy { id: String, tries: usize },
    #[error(
        "the audit log is being verified already (it walks the whole log); try again when that ends"
    )]
    VerifyRunning,
    #[error("the node is shutting down; resume the transfer later")]
    ShuttingDown,
    #[error("cannot reach {peer}: {reason}")]
    PeerUnreachable { peer: OfficeId, reason: String },
    #[error("the bundle could not be written: {0}")]
    BundleNotWritten(String),

    // Stored bytes are not what they should be.
    #[error(
        "file {hash} failed its integrity check ({}): its stored bytes changed; a replica's copy is fetched again from its origin, and an own file must be uploaded again",
        crate::domain::format_time(*at_ms)
    )]
    BlobDamaged { hash: BlobHash, at_ms: u64 },

    // The node cannot write now: the message says why and what to do.
    #[error("{0}")]
    DiskFull(String),
    #[error("{0}")]
    StorageFailed(String),

    // The node's own fault; details are logged, never sent.
    #[error("storage failure: {0}")]
    Store(StoreError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UserExists(name) => Error::UserExists(name),
            StoreError::MissingBlob { hash, file_name } => {
                Error::FileNotUploaded { hash, file_name }
            }
            StoreError::DiskFull { .. } => Error::DiskFull(e.to_string()),
            StoreError::Failed(_) => Error::StorageFailed(e.to_string()),
            other => Error::Store(other),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
