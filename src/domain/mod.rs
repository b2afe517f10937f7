//! The vocabulary of casemesh as plain data: office ids, record ids, records
//! and their versions, roles, limits, and the canonical encoding that origin
//! offices sign.
//!
//! Pure code: nothing here does I/O, talks to sled, or knows about gRPC.

pub mod addr;
#[cfg(test)]
pub(crate) mod arbitrary;
pub mod audit;
pub mod blob;
pub mod blobstore;
pub mod codec;
pub mod ids;
pub mod limits;
pub mod merkle;
pub mod record;
pub mod rejection;
pub mod role;
pub mod sharing;
pub mod subject;
pub mod time;

pub use addr::{AddrError, NodeAddr};
pub use blob::{Attachment, BlobHash};
pub use ids::{IdError, OfficeId, RecordId, UserName};
pub use limits::{LimitError, Limits, format_size};
pub use record::{Draft, RecordVersion, SignedVersion};
pub use role::Role;
pub use subject::Subject;
pub use time::{MAX_TIME_MS, format_time, now_ms};

/// Fills `buf` from the operating system's secure random source.
pub fn random_bytes(buf: &mut [u8]) {
    use ring::rand::SecureRandom;
    // The OS generator (getrandom) does not fail on supported Linux kernels;
    // carrying on without randomness would be worse than stopping.
    #[allow(clippy::expect_used)]
    ring::rand::SystemRandom::new()
        .fill(buf)
        .expect("the operating system's random source failed");
}
