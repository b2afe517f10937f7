//! The case bundle for court (issue 6): one tar archive holding everything
//! needed to check a collection's records offline, its writer, and the
//! verifier behind `casemesh verify-bundle`.
//!
//! Pure code: no store, no network, no async. The exporter
//! ([`crate::service::export`]) feeds a [`BundleWriter`]; [`verify`] reads a
//! bundle from any reader and checks all of it.
//!
//! # Layout
//!
//! Every member lies under `casemesh-bundle/`; paths below (and in the
//! manifest and in reports) are relative to it.
//!
//! - `offices/<office>.der`: the office CA certificate (DER) of the exporting
//!   office and of every origin office the exporter still pins.
//! - `records/<record-id>/<version>.canonical` and `<version>.sig`: the exact
//!   bytes the origin signed, and its signature (ECDSA P-256, DER).
//! - `files/<blake3 hex>`: the bytes of an attached file.
//! - `audit/excerpt/<n>.bin`: the exporting office's audit entries that
//!   concern the collection or one of its records, as stored (`prev ‖ hash
//!   ‖ body`), each with its RFC 9162 inclusion proof in the log's Merkle
//!   tree of `n` entries, in pieces of about 1 MiB ([`excerpt`]).
//! - `audit/head.bin`: the exporting office's signed tree head at entry `n`:
//!   the tree root the proofs lead to.
//! - `manifest.json`: format, collection, exporter, time, the offices and
//!   files the exporter could not include, and the size and SHA-256 of every
//!   other member.
//! - `manifest.sig`: the exporting office's signature over the exact bytes
//!   of `manifest.json`.
//!
//! Members are written with mode 0644, owner 0, and the export time as
//! modification time, so nothing about the exporting machine leaks in.
//!
//! # What verification proves
//!
//! Each version is signed by its origin's key and each file is named by its
//! BLAKE3 hash, which the signed version lists: neither can be changed
//! without the change being named. The manifest binds the whole archive to
//! the exporting office (no member can be added, removed or changed), and
//! each audit entry is bound by its inclusion proof to the tree root in a
//! head the exporting office signed: the excerpt's size depends on the
//! case, not on the length of the log. Whose certificates these are is only as good as the
//! fingerprints compared out of band (`--trust`): without the exporting
//! office's, a bundle is only self-consistent ([`Verdict::UnknownOffice`]),
//! never verified.
//!
//! # Bounded memory
//!
//! The verifier reads the archive twice: once to index every member (its
//! place, size and hashes), then again member by member as each check
//! needs it. It holds the index and at most a few members at once, each of
//! at most `MAX_MEMBER` bytes (128 MiB, in `layout.rs`); a larger member other
//! than a file or the audit digests is refused unread, by its declared
//! size. Files and the digests are only streamed.
//!
//! # Bundles of the first format
//!
//! Bundles written before the log kept a Merkle tree (`format`
//! `casemesh-bundle-v1` in the manifest) still verify. Their excerpt is
//! `audit/digests.bin`, the body digest (32 bytes) of every entry `1..=n`
//! of the log, concatenated, and `audit/entries/<seq>.bin`, each included
//! entry as stored; the verifier walks the whole chain from the digests to
//! the signed head's hash.

mod excerpt;
mod hashing;
mod index;
mod layout;
mod report;
#[cfg(test)]
mod tests;
mod verify;
mod write;

pub use index::BundleError;
pub use layout::{FORMAT, FORMAT_V1, Manifest, ManifestFile, ROOT};
pub use report::*;
pub use verify::verify;
pub use write::{BundleWriter, WriteError};
