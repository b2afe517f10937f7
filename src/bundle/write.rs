//! Writing a bundle: members first, the signed manifest last.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};

use super::excerpt::{PIECE_BYTES, PieceWriter};
use super::hashing::Hashing;
use super::layout::*;
use crate::domain::audit::SignedHead;
use crate::domain::merkle::Hash;
use crate::domain::{BlobHash, OfficeId, SignedVersion};
use crate::identity::{IdentityError, OfficeSigner};

/// Why a bundle could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("writing the bundle failed: {0}")]
    Io(#[from] io::Error),
    #[error("{path} was added to the bundle twice")]
    Duplicate { path: String },
    #[error("file {hash}: {reason}")]
    File { hash: BlobHash, reason: String },
    #[error("signing the manifest failed: {0}")]
    Sign(#[from] IdentityError),
    #[error("the manifest cannot be encoded: {0}")]
    Manifest(#[from] serde_json::Error),
}

/// Writes a bundle member by member; [`BundleWriter::finish`] adds the
/// signed manifest last. Nothing is held in memory but the manifest and
/// one piece of the audit excerpt (about 1 MiB).
pub struct BundleWriter<W: Write> {
    tar: tar::Builder<W>,
    pub(super) manifest: Manifest,
    /// Export time in seconds: every member's modification time.
    mtime: u64,
    paths: BTreeSet<String>,
    /// The audit excerpt's piece being filled, and how many were written.
    piece: Option<PieceWriter>,
    pieces: u64,
}

impl<W: Write> BundleWriter<W> {
    pub fn new(out: W, collection: &str, exported_by: &OfficeId, exported_at_ms: u64) -> Self {
        Self::with_manifest(
            out,
            Manifest {
                format: FORMAT.into(),
                collection: collection.into(),
                exported_by: exported_by.to_string(),
                exported_at_ms,
                missing_offices: Vec::new(),
                missing_files: Vec::new(),
                files: Vec::new(),
            },
        )
    }

    pub(super) fn with_manifest(out: W, manifest: Manifest) -> Self {
        Self {
            tar: tar::Builder::new(out),
            mtime: manifest.exported_at_ms / 1000,
            manifest,
            paths: BTreeSet::new(),
            piece: None,
            pieces: 0,
        }
    }

    /// An office's CA certificate (DER).
    pub fn add_office(&mut self, office: &OfficeId, ca_der: &[u8]) -> Result<(), WriteError> {
        self.append_bytes(&office_path(office.as_str()), ca_der)
    }

    /// An origin office whose certificate the exporter no longer holds.
    pub fn add_missing_office(&mut self, office: &OfficeId) {
        self.manifest.missing_offices.push(office.to_string());
    }

    /// A version, exactly as signed.
    pub fn add_version(&mut self, v: &SignedVersion) -> Result<(), WriteError> {
        let (id, version) = (v.record.id.as_str(), v.record.version);
        self.append_bytes(&version_path(id, version, "canonical"), &v.canonical)?;
        self.append_bytes(&version_path(id, version, "sig"), &v.signature)
    }

    /// An attached file, streamed from `bytes`, which must yield exactly
    /// `size` bytes that hash to `hash`; otherwise the bundle is unusable and
    /// an error says why.
    pub fn add_file(
        &mut self,
        hash: &BlobHash,
        size: u64,
        bytes: impl Read,
    ) -> Result<(), WriteError> {
        let mut reader = Hashing::new(bytes.take(size), true);
        let path = file_path(hash);
        self.append(&path, size, &mut reader)?;
        if reader.count != size {
            return Err(WriteError::File {
                hash: *hash,
                reason: format!("{} bytes were read, not {size}", reader.count),
            });
        }
        if reader.blake3() != Some(hash.0) {
            return Err(WriteError::File {
                hash: *hash,
                reason:
                    "the stored bytes do not hash to the file's name: the stored copy is damaged"
                        .into(),
            });
        }
        Ok(())
    }

    /// An attachment the exporting node does not hold.
    pub fn add_missing_file(&mut self, hash: &BlobHash) {
        self.manifest.missing_files.push(hash.to_hex());
    }

    /// One audit entry, as stored, with its inclusion proof in the tree of
    /// `tree_size` entries (the signed head's); entries in ascending order.
    pub fn add_audit_entry(
        &mut self,
        tree_size: u64,
        seq: u64,
        stored: &[u8],
        proof: &[Hash],
    ) -> Result<(), WriteError> {
        let piece = self
            .piece
            .get_or_insert_with(|| PieceWriter::new(tree_size));
        piece.push(seq, stored, proof);
        if piece.len() >= PIECE_BYTES {
            self.end_piece()?;
        }
        Ok(())
    }

    fn end_piece(&mut self) -> Result<(), WriteError> {
        match self.piece.take() {
            Some(piece) if !piece.is_empty() => {
                self.pieces += 1;
                self.append_bytes(&excerpt_path(self.pieces), &piece.finish())
            }
            _ => Ok(()),
        }
    }

    /// The signed head the excerpt's proofs lead to; ends the excerpt.
    pub fn add_audit_head(&mut self, head: &SignedHead) -> Result<(), WriteError> {
        self.end_piece()?;
        self.append_bytes(HEAD, &head.encode())
    }

    /// Writes `manifest.json` and its signature, ends the archive and
    /// returns the output.
    pub fn finish(mut self, signer: &OfficeSigner<'_>) -> Result<W, WriteError> {
        self.manifest.missing_offices.sort();
        self.manifest.missing_offices.dedup();
        self.manifest.missing_files.sort();
        self.manifest.missing_files.dedup();
        let mut json = serde_json::to_vec_pretty(&self.manifest)?;
        json.push(b'\n');
        let signature = signer.sign_bytes(&json)?;
        self.append_raw(MANIFEST, json.len() as u64, &json[..])?;
        self.append_raw(MANIFEST_SIG, signature.len() as u64, &signature[..])?;
        Ok(self.tar.into_inner()?)
    }

    pub(super) fn append_bytes(&mut self, path: &str, bytes: &[u8]) -> Result<(), WriteError> {
        let mut reader = Hashing::new(bytes, false);
        self.append(path, bytes.len() as u64, &mut reader)
    }

    /// Appends a member and lists it in the manifest.
    fn append<R: Read>(
        &mut self,
        path: &str,
        size: u64,
        reader: &mut Hashing<R>,
    ) -> Result<(), WriteError> {
        self.append_raw(path, size, &mut *reader)?;
        self.manifest.files.push(ManifestFile {
            path: path.to_owned(),
            size,
            sha256: hex::encode(reader.sha256()),
        });
        Ok(())
    }

    fn append_raw(&mut self, path: &str, size: u64, data: impl Read) -> Result<(), WriteError> {
        if !self.paths.insert(path.to_owned()) {
            return Err(WriteError::Duplicate {
                path: path.to_owned(),
            });
        }
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(size);
        header.set_mode(0o644);
        header.set_mtime(self.mtime);
        header.set_uid(0);
        header.set_gid(0);
        self.tar
            .append_data(&mut header, format!("{ROOT}{path}"), data)?;
        Ok(())
    }
}
