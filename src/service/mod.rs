//! Use cases: what a caller can ask of the node, independent of transport.
//! Each takes already-validated domain values, talks to the store, and
//! returns domain values or an [`Error`](crate::error::Error). No tonic here.

pub mod audit;
pub mod blobs;
pub mod export;
pub mod records;
pub mod refusals;
pub mod sharing;
pub mod users;

pub use audit::{AuditLog, Call};
pub use blobs::BlobService;
pub use records::{PageRequest, PutCommand, RecordService};
pub use sharing::{LinkStatus, PeerRuntime, PeerView, Sharing};
pub use users::UserService;
