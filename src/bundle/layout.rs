//! Where each member of a bundle lies, and the manifest that lists them.

use serde::{Deserialize, Serialize};

use crate::domain::BlobHash;

/// The value of `format` in the manifest of bundles written now: the audit
/// excerpt carries inclusion proofs (`audit/excerpt/<n>.bin`).
pub const FORMAT: &str = "casemesh-bundle-v2";
/// The first format: the audit excerpt is bound to the head by the digest
/// of every entry of the log (`audit/digests.bin`). Still verified.
pub const FORMAT_V1: &str = "casemesh-bundle-v1";
/// The directory every member lies in.
pub const ROOT: &str = "casemesh-bundle/";

pub(super) const MANIFEST: &str = "manifest.json";
pub(super) const MANIFEST_SIG: &str = "manifest.sig";
pub(super) const DIGESTS: &str = "audit/digests.bin";
pub(super) const EXCERPT_DIR: &str = "audit/excerpt/";
pub(super) const HEAD: &str = "audit/head.bin";
pub(super) const DIGEST_LEN: u64 = 32;
/// Largest member the verifier reads into memory, one at a time: every
/// member but files and the audit digests, which it only streams. Twice
/// the largest record body a node accepts
/// ([`crate::domain::limits::MAX_BODY_BYTES_CAP`], 64 MiB), so any version
/// a node can sign fits with room for its labels and attachments, and so
/// does the manifest of a bundle of over half a million members (some 200
/// bytes of manifest each). A larger member is refused by its declared
/// size, unread.
pub(super) const MAX_MEMBER: u64 = 2 * crate::domain::limits::MAX_BODY_BYTES_CAP as u64;
/// Longest member name (a GNU long name) the verifier reads: the names a
/// bundle holds are under 200 bytes.
pub(super) const MAX_NAME: u64 = 1024;
pub(super) const BUF: usize = 64 * 1024;

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    pub collection: String,
    /// The exporting office's id.
    pub exported_by: String,
    pub exported_at_ms: u64,
    /// Origin offices of included versions whose certificate the exporter no
    /// longer holds (the peer was unpinned); their signatures cannot be
    /// checked from the bundle.
    #[serde(default)]
    pub missing_offices: Vec<String>,
    /// BLAKE3 (hex) of attachments the exporting node did not hold.
    #[serde(default)]
    pub missing_files: Vec<String>,
    /// Every member but `manifest.json` and `manifest.sig`.
    pub files: Vec<ManifestFile>,
}

/// One member listed in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    /// Relative to [`ROOT`].
    pub path: String,
    pub size: u64,
    /// SHA-256 of the member's bytes, hex.
    pub sha256: String,
}

pub(super) fn office_path(office: &str) -> String {
    format!("offices/{office}.der")
}

pub(super) fn version_path(id: &str, version: u64, ext: &str) -> String {
    format!("records/{id}/{version}.{ext}")
}

pub(super) fn file_path(hash: &BlobHash) -> String {
    format!("files/{}", hash.to_hex())
}

pub(super) fn entry_path(seq: u64) -> String {
    format!("audit/entries/{seq}.bin")
}

/// Piece `n` (from 1) of the audit excerpt.
pub(super) fn excerpt_path(n: u64) -> String {
    format!("{EXCERPT_DIR}{n}.bin")
}

// ---------------------------------------------------------------------------
// Writing
