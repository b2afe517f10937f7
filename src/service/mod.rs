//! Use cases: what a caller can ask of the node, independent of transport.
//! Each takes already-validated domain values, talks to the store, and
//! returns domain values or an [`Error`](crate::error::Error). No tonic here.

pub mod audit;
pub mod blobs;
pub mod export;
pub mod records;
pub mod refusals;
pub mod search;
pub mod sharing;
pub mod users;

pub use audit::{AuditLog, Call};
pub use blobs::BlobService;
pub use records::{PageRequest, PutCommand, RecordService};
pub use search::SearchService;
pub use sharing::{LinkStatus, PeerRuntime, PeerView, Sharing};
pub use users::UserService;

/// How long a stream waits for a reader that stopped reading before it
/// gives up (the stream holds what it was sending meanwhile).
pub const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// How a send into a served stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Sent,
    /// The reader is gone (the call ended).
    Gone,
    /// The reader took nothing for [`SEND_TIMEOUT`].
    Stalled,
    ShuttingDown,
}

/// Sends `msg` unless the reader has gone, stops reading for
/// [`SEND_TIMEOUT`], or the node shuts down first.
pub async fn send_within<T>(
    tx: &tokio::sync::mpsc::Sender<T>,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
    msg: T,
) -> Sent {
    tokio::select! {
        r = tokio::time::timeout(SEND_TIMEOUT, tx.send(msg)) => match r {
            Ok(Ok(())) => Sent::Sent,
            Ok(Err(_)) => Sent::Gone,
            Err(_) => {
                tracing::warn!("a reader stopped reading; ending its stream");
                Sent::Stalled
            }
        },
        _ = shutdown.wait_for(|s| *s) => Sent::ShuttingDown,
    }
}
