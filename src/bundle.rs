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
//! - `audit/digests.bin`: the body digest (32 bytes) of every entry `1..=n`
//!   of the exporting office's audit log, concatenated, where `n` is the
//!   signed head's entry.
//! - `audit/entries/<seq>.bin`: the stored bytes (`prev ‖ hash ‖ body`) of
//!   each entry that concerns the collection or one of its records.
//! - `audit/head.bin`: the exporting office's signed head at entry `n`.
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
//! the audit excerpt is bound by the hash chain to a head the exporting
//! office signed. Whose certificates these are is only as good as the
//! fingerprints compared out of band (`--trust`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::domain::audit::{ChainWalk, Entry, SignedHead, Stored, format_time};
use crate::domain::{Attachment, BlobHash, OfficeId, SignedVersion};
use crate::identity::{Fingerprint, IdentityError, OfficeSigner, OfficeVerifier};

/// The value of `format` in a version 1 manifest.
pub const FORMAT: &str = "casemesh-bundle-v1";
/// The directory every member lies in.
pub const ROOT: &str = "casemesh-bundle/";

const MANIFEST: &str = "manifest.json";
const MANIFEST_SIG: &str = "manifest.sig";
const DIGESTS: &str = "audit/digests.bin";
const HEAD: &str = "audit/head.bin";
const DIGEST_LEN: u64 = 32;
/// Largest member the verifier holds in memory (every member but files):
/// ample for record bodies (64 MiB at most) and 30 million audit digests.
const MAX_HELD: u64 = 1 << 30;
const BUF: usize = 64 * 1024;

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

fn office_path(office: &str) -> String {
    format!("offices/{office}.der")
}

fn version_path(id: &str, version: u64, ext: &str) -> String {
    format!("records/{id}/{version}.{ext}")
}

fn file_path(hash: &BlobHash) -> String {
    format!("files/{}", hash.to_hex())
}

fn entry_path(seq: u64) -> String {
    format!("audit/entries/{seq}.bin")
}

// ---------------------------------------------------------------------------
// Writing

/// Why a bundle could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("writing the bundle failed: {0}")]
    Io(#[from] io::Error),
    #[error("{path} was added to the bundle twice")]
    Duplicate { path: String },
    #[error("file {hash}: {reason}")]
    File { hash: BlobHash, reason: String },
    #[error("the audit log has too many entries for one bundle ({0})")]
    TooManyEntries(u64),
    #[error("signing the manifest failed: {0}")]
    Sign(#[from] IdentityError),
    #[error("the manifest cannot be encoded: {0}")]
    Manifest(#[from] serde_json::Error),
}

/// Writes a bundle member by member; [`BundleWriter::finish`] adds the
/// signed manifest last. Nothing is held in memory but the manifest.
pub struct BundleWriter<W: Write> {
    tar: tar::Builder<W>,
    manifest: Manifest,
    /// Export time in seconds: every member's modification time.
    mtime: u64,
    paths: BTreeSet<String>,
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

    fn with_manifest(out: W, manifest: Manifest) -> Self {
        Self {
            tar: tar::Builder::new(out),
            mtime: manifest.exported_at_ms / 1000,
            manifest,
            paths: BTreeSet::new(),
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

    /// The body digests of audit entries `1..=entries`, 32 bytes each, in
    /// order, streamed from `digests`.
    pub fn add_audit_digests(
        &mut self,
        entries: u64,
        digests: impl Read,
    ) -> Result<(), WriteError> {
        let size = entries
            .checked_mul(DIGEST_LEN)
            .ok_or(WriteError::TooManyEntries(entries))?;
        let mut reader = Hashing::new(digests.take(size), false);
        self.append(DIGESTS, size, &mut reader)?;
        if reader.count != size {
            return Err(WriteError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{} bytes of audit digests were given for {entries} entries",
                    reader.count
                ),
            )));
        }
        Ok(())
    }

    /// One audit entry, as stored.
    pub fn add_audit_entry(&mut self, seq: u64, stored: &[u8]) -> Result<(), WriteError> {
        self.append_bytes(&entry_path(seq), stored)
    }

    /// The signed head the digests lead to.
    pub fn add_audit_head(&mut self, head: &SignedHead) -> Result<(), WriteError> {
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

    fn append_bytes(&mut self, path: &str, bytes: &[u8]) -> Result<(), WriteError> {
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

/// A reader that counts and hashes what passes through it.
struct Hashing<R> {
    inner: R,
    sha256: ring::digest::Context,
    blake3: Option<blake3::Hasher>,
    count: u64,
}

impl<R> Hashing<R> {
    fn new(inner: R, blake3: bool) -> Self {
        Self {
            inner,
            sha256: ring::digest::Context::new(&ring::digest::SHA256),
            blake3: blake3.then(blake3::Hasher::new),
            count: 0,
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        self.sha256.update(bytes);
        if let Some(b) = &mut self.blake3 {
            b.update(bytes);
        }
        self.count += bytes.len() as u64;
    }

    fn sha256(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.sha256.clone().finish().as_ref());
        out
    }

    fn blake3(&self) -> Option<[u8; 32]> {
        self.blake3.as_ref().map(|b| *b.finalize().as_bytes())
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.update(&buf[..n]);
        Ok(n)
    }
}

// ---------------------------------------------------------------------------
// Verifying

/// The input is not a readable bundle at all. Anything wrong inside a
/// readable bundle is a failure in the [`Report`] instead.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read the bundle as a tar archive: {0}")]
    Read(#[source] io::Error),
    #[error("not a casemesh bundle: {0}")]
    NotABundle(String),
}

/// What [`verify`] found: what the bundle holds, item by item, and every
/// check that failed. Printed as text (`Display`) or, by
/// `casemesh verify-bundle --json`, as JSON (`Serialize`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// From the manifest; empty when it could not be read.
    pub collection: String,
    pub exported_by: String,
    pub exported_at_ms: Option<u64>,
    /// Whether fingerprints to trust were given.
    pub trust_given: bool,
    pub offices: Vec<OfficeFinding>,
    pub versions: Vec<VersionFinding>,
    pub audit: AuditFinding,
    /// Things a reader must know that are not failures (files the exporter
    /// did not hold, certificates it no longer had).
    pub notes: Vec<String>,
    /// Every check that failed, each naming its item first.
    pub failures: Vec<String>,
}

/// One office certificate, or one the exporter could not include.
#[derive(Debug, Clone, Serialize)]
pub struct OfficeFinding {
    pub office: String,
    /// `None`: not in the bundle (the exporter no longer pins the office).
    pub fingerprint: Option<String>,
    pub valid: bool,
    pub trust: Trust,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trust {
    /// No `--trust` given: compare the fingerprint out of band.
    NotCompared,
    Trusted,
    NotTrusted,
}

/// One record version in the bundle.
#[derive(Debug, Clone, Serialize)]
pub struct VersionFinding {
    pub record: String,
    pub version: u64,
    pub origin: String,
    pub collection: String,
    pub title: String,
    pub updated_at_ms: u64,
    pub deleted: bool,
    pub signature: Signature,
    pub attachments: Vec<AttachmentFinding>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signature {
    Ok,
    Fails,
    /// The exporter no longer held the origin's certificate (a note).
    NotCheckedNoCertificate,
    /// It could not be checked (a failure says why).
    NotChecked,
}

/// One attachment a version lists.
#[derive(Debug, Clone, Serialize)]
pub struct AttachmentFinding {
    pub file_name: String,
    pub media_type: String,
    pub size: u64,
    pub hash: String,
    pub state: FileState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileState {
    Ok,
    WrongSize,
    HashFails,
    /// Not held by the exporting office (a note).
    NotHeldByExporter,
    Missing,
}

/// The exporting office's audit excerpt.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditFinding {
    pub office: String,
    /// The signed head the excerpt is bound to: entry and time.
    pub head_seq: Option<u64>,
    pub head_at_ms: Option<u64>,
    pub entries: Vec<AuditEntryFinding>,
}

/// One included audit entry.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntryFinding {
    pub seq: u64,
    pub at_ms: u64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    /// Whether it checked out at its place in the chain.
    pub checks_out: bool,
}

impl Report {
    pub fn is_verified(&self) -> bool {
        self.failures.is_empty()
    }
}

impl fmt::Display for OfficeFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(fp) = &self.fingerprint else {
            return write!(
                f,
                "{:<20} (certificate not in the bundle: the exporting office no longer pins it)",
                self.office
            );
        };
        let trust = match self.trust {
            Trust::NotCompared => "not compared",
            Trust::Trusted => "trusted (given with --trust)",
            Trust::NotTrusted => "NOT TRUSTED: not among the fingerprints given",
        };
        let valid = if self.valid { "" } else { "  INVALID" };
        write!(f, "{:<20} {fp}  {trust}{valid}", self.office)
    }
}

impl VersionFinding {
    fn line(&self, bundle_collection: &str) -> String {
        let mut line = format!(
            "{} v{}  by {}  updated {}  {:?}",
            self.record,
            self.version,
            self.origin,
            format_time(self.updated_at_ms),
            self.title
        );
        if self.deleted {
            line.push_str("  DELETED");
        }
        if self.collection != bundle_collection {
            line.push_str(&format!("  (in collection {:?})", self.collection));
        }
        line.push_str(match self.signature {
            Signature::Ok => "  signature ok",
            Signature::Fails => "  SIGNATURE FAILS",
            Signature::NotCheckedNoCertificate => "  signature NOT CHECKED (no certificate)",
            Signature::NotChecked => "  signature NOT CHECKED",
        });
        line
    }
}

impl fmt::Display for AttachmentFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            FileState::Ok => "present, hash ok",
            FileState::WrongSize => "present, WRONG SIZE",
            FileState::HashFails => "present, HASH FAILS",
            FileState::NotHeldByExporter => "MISSING (not held by the exporting office)",
            FileState::Missing => "MISSING",
        };
        write!(
            f,
            "attachment {:?} ({}, {} bytes, BLAKE3 {}): {state}",
            self.file_name, self.media_type, self.size, self.hash
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unknown = |s: &str| {
            if s.is_empty() {
                "(unknown: manifest unreadable)".to_owned()
            } else {
                s.to_owned()
            }
        };
        writeln!(f, "casemesh case bundle ({FORMAT})")?;
        writeln!(f, "  collection:  {}", unknown(&self.collection))?;
        writeln!(f, "  exported by: {}", unknown(&self.exported_by))?;
        match self.exported_at_ms {
            Some(ms) => writeln!(f, "  exported at: {}", format_time(ms))?,
            None => writeln!(f, "  exported at: (unknown)")?,
        }
        writeln!(f)?;
        writeln!(f, "Office certificates ({}):", self.offices.len())?;
        for office in &self.offices {
            writeln!(f, "  {office}")?;
        }
        if !self.trust_given {
            writeln!(
                f,
                "  No --trust given: compare these fingerprints with each office out of band \
                 (as when pinning a peer), or pass them with --trust."
            )?;
        }
        writeln!(f)?;
        writeln!(f, "Record versions ({}):", self.versions.len())?;
        for v in &self.versions {
            writeln!(f, "  {}", v.line(&self.collection))?;
            for a in &v.attachments {
                writeln!(f, "      {a}")?;
            }
        }
        writeln!(f)?;
        let a = &self.audit;
        let signed = match (a.head_seq, a.head_at_ms) {
            (Some(seq), Some(at)) => format!("signed head at entry {seq} ({})", format_time(at)),
            _ => "no readable signed head".to_owned(),
        };
        let office = if a.office.is_empty() {
            "(unknown)"
        } else {
            &a.office
        };
        writeln!(
            f,
            "Audit log of {office}: {signed}; {} of its entries concern this collection:",
            a.entries.len()
        )?;
        for e in &a.entries {
            writeln!(
                f,
                "  #{:<6} {}  {}  {}  [{}]  {}{}",
                e.seq,
                format_time(e.at_ms),
                e.actor,
                e.action,
                e.target,
                e.outcome,
                if e.checks_out {
                    ""
                } else {
                    "  FAILS ITS CHECKS"
                }
            )?;
        }
        if !self.notes.is_empty() {
            writeln!(f)?;
            writeln!(f, "Notes:")?;
            for note in &self.notes {
                writeln!(f, "  - {note}")?;
            }
        }
        writeln!(f)?;
        if self.failures.is_empty() {
            writeln!(
                f,
                "VERIFIED: every signature, hash, certificate and audit entry above checked out."
            )
        } else {
            writeln!(f, "FAILED: {} check(s) did not pass:", self.failures.len())?;
            for failure in &self.failures {
                writeln!(f, "  - {failure}")?;
            }
            Ok(())
        }
    }
}

/// Checks a whole bundle offline: every member against the signed
/// manifest, every certificate, every version's signature, every file's
/// hash and size, and the audit excerpt against the chain and the signed
/// head. With `trusted` non-empty, every office certificate must be one of
/// those fingerprints.
pub fn verify(reader: impl Read, trusted: &[Fingerprint]) -> Result<Report, BundleError> {
    let mut report = Report {
        trust_given: !trusted.is_empty(),
        ..Report::default()
    };
    let members = read_members(reader, &mut report.failures)?;
    let mut check = Check {
        members,
        report,
        certs: BTreeMap::new(),
        missing_offices: BTreeSet::new(),
        missing_files: BTreeSet::new(),
    };
    let manifest = check.manifest();
    check.offices(trusted);
    if let Some(m) = &manifest {
        check.manifest_signature(m);
    }
    check.records_and_files();
    check.audit(manifest.as_ref().map(|m| m.exported_by.as_str()));
    Ok(check.report)
}

/// One member as read: its hashes, and its bytes unless it is a file.
struct Member {
    size: u64,
    sha256: [u8; 32],
    /// BLAKE3 of the bytes, for members under `files/`.
    blake3: Option<[u8; 32]>,
    /// The bytes, for every member but files (and none over [`MAX_HELD`]).
    data: Option<Vec<u8>>,
}

/// Reads every member in one pass. Damage that stops the archive from
/// being read further is a failure; only an archive with nothing readable
/// under [`ROOT`] is an error.
fn read_members(
    reader: impl Read,
    failures: &mut Vec<String>,
) -> Result<BTreeMap<String, Member>, BundleError> {
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(BundleError::Read)?;
    let mut members = BTreeMap::new();
    let mut last: Option<String> = None;
    for entry in entries {
        let after = || match &last {
            Some(p) => format!("after {p}"),
            None => "at its start".to_owned(),
        };
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) if last.is_none() => return Err(BundleError::Read(e)),
            Err(e) => {
                failures.push(format!(
                    "the archive is damaged {} ({e}); nothing after that could be read",
                    after()
                ));
                break;
            }
        };
        let Ok(path) = String::from_utf8(entry.path_bytes().into_owned()) else {
            failures.push(format!("a member {} has a name that is not UTF-8", after()));
            continue;
        };
        last = Some(path.clone());
        let Some(rel) = path.strip_prefix(ROOT).map(str::to_owned) else {
            failures.push(format!("{path}: lies outside {ROOT}"));
            continue;
        };
        if entry.header().entry_type() != tar::EntryType::Regular {
            failures.push(format!(
                "{rel}: is not a regular file ({:?})",
                entry.header().entry_type()
            ));
            continue;
        }
        let is_file = rel.starts_with("files/");
        let keep = !is_file && entry.size() <= MAX_HELD;
        if !is_file && !keep {
            failures.push(format!(
                "{rel}: is {} bytes, more than a bundle member of its kind can be",
                entry.size()
            ));
        }
        let mut hashing = Hashing::new(&mut entry, is_file);
        let mut data = keep.then(Vec::new);
        let mut buf = vec![0u8; BUF];
        let read = loop {
            match hashing.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    if let Some(d) = &mut data {
                        d.extend_from_slice(&buf[..n]);
                    }
                }
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = read {
            failures.push(format!(
                "{rel}: the archive is damaged here ({e}); nothing after that could be read"
            ));
            break;
        }
        let member = Member {
            size: hashing.count,
            sha256: hashing.sha256(),
            blake3: hashing.blake3(),
            data,
        };
        if members.insert(rel.clone(), member).is_some() {
            failures.push(format!("{rel}: appears twice in the archive"));
        }
    }
    if members.is_empty() {
        return Err(BundleError::NotABundle(format!(
            "the archive holds nothing under {ROOT}"
        )));
    }
    Ok(members)
}

/// An office certificate found in the bundle.
enum Cert {
    Valid(OfficeVerifier),
    /// Present but failed its checks (the failure is reported).
    Invalid,
}

struct Check {
    members: BTreeMap<String, Member>,
    report: Report,
    certs: BTreeMap<String, Cert>,
    missing_offices: BTreeSet<String>,
    missing_files: BTreeSet<String>,
}

impl Check {
    fn fail(&mut self, failure: String) {
        self.report.failures.push(failure);
    }

    fn data(&self, path: &str) -> Option<&[u8]> {
        self.members.get(path).and_then(|m| m.data.as_deref())
    }

    /// Parses the manifest and checks every member against it.
    fn manifest(&mut self) -> Option<Manifest> {
        let Some(bytes) = self.data(MANIFEST) else {
            self.fail(format!(
                "{MANIFEST} is missing: the bundle cannot be tied to an exporting office"
            ));
            return None;
        };
        let manifest: Manifest = match serde_json::from_slice(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.fail(format!("{MANIFEST} cannot be read ({e})"));
                return None;
            }
        };
        if manifest.format != FORMAT {
            self.fail(format!(
                "{MANIFEST}: format is {:?}, not {FORMAT:?}",
                manifest.format
            ));
        }
        self.report.collection = manifest.collection.clone();
        self.report.exported_by = manifest.exported_by.clone();
        self.report.exported_at_ms = Some(manifest.exported_at_ms);
        self.missing_offices = manifest.missing_offices.iter().cloned().collect();
        self.missing_files = manifest.missing_files.iter().cloned().collect();

        let mut listed = BTreeSet::new();
        for file in &manifest.files {
            let path = &file.path;
            if !listed.insert(path.as_str()) {
                self.fail(format!("{path}: listed twice in {MANIFEST}"));
                continue;
            }
            if path == MANIFEST || path == MANIFEST_SIG {
                self.fail(format!("{MANIFEST} lists {path}, which it cannot cover"));
                continue;
            }
            let Some((size, sha256)) = self.members.get(path).map(|m| (m.size, m.sha256)) else {
                self.fail(format!(
                    "{path}: listed in {MANIFEST} but not in the archive (removed)"
                ));
                continue;
            };
            if size != file.size {
                self.fail(format!(
                    "{path}: is {size} bytes, but {MANIFEST} says {} (changed)",
                    file.size
                ));
            } else if hex::encode(sha256) != file.sha256 {
                self.fail(format!(
                    "{path}: its contents differ from what {MANIFEST} lists (SHA-256 does not match: changed)"
                ));
            }
        }
        let unlisted: Vec<String> = self
            .members
            .keys()
            .filter(|p| *p != MANIFEST && *p != MANIFEST_SIG && !listed.contains(p.as_str()))
            .cloned()
            .collect();
        for path in unlisted {
            self.fail(format!(
                "{path}: is in the archive but not listed in {MANIFEST} (added)"
            ));
        }
        Some(manifest)
    }

    /// Checks every office certificate and, when fingerprints were given,
    /// that each is trusted.
    fn offices(&mut self, trusted: &[Fingerprint]) {
        let paths: Vec<String> = self
            .members
            .keys()
            .filter(|p| p.starts_with("offices/"))
            .cloned()
            .collect();
        let mut matched = BTreeSet::new();
        for path in paths {
            let name = path
                .strip_prefix("offices/")
                .and_then(|n| n.strip_suffix(".der"))
                .unwrap_or("");
            let office = match OfficeId::parse(name) {
                Ok(o) => o,
                Err(_) => {
                    self.fail(format!(
                        "{path}: not an office certificate (expected offices/<office-id>.der)"
                    ));
                    continue;
                }
            };
            let Some(der) = self.data(&path).map(<[u8]>::to_vec) else {
                continue;
            };
            let fp = Fingerprint::of(&der);
            let state = match check_cert(&office, &der) {
                Ok(verifier) => Cert::Valid(verifier),
                Err(reason) => {
                    self.fail(format!(
                        "office {office} ({path}): the certificate {reason}"
                    ));
                    Cert::Invalid
                }
            };
            let trust = if trusted.is_empty() {
                Trust::NotCompared
            } else if trusted.contains(&fp) {
                matched.insert(fp.clone());
                Trust::Trusted
            } else {
                self.fail(format!(
                    "office {office} ({path}): its certificate fingerprint {fp} is not among the fingerprints given with --trust"
                ));
                Trust::NotTrusted
            };
            self.report.offices.push(OfficeFinding {
                office: office.to_string(),
                fingerprint: Some(fp.to_string()),
                valid: matches!(state, Cert::Valid(_)),
                trust,
            });
            self.certs.insert(office.to_string(), state);
        }
        for fp in trusted.iter().filter(|fp| !matched.contains(*fp)) {
            self.report.notes.push(format!(
                "the fingerprint {fp} given with --trust matches no certificate in the bundle"
            ));
        }
        for office in &self.missing_offices {
            self.report.offices.push(OfficeFinding {
                office: office.clone(),
                fingerprint: None,
                valid: false,
                trust: Trust::NotCompared,
            });
        }
    }

    /// The verifier of `office`, or why there is none.
    fn verifier(&self, office: &str) -> Result<&OfficeVerifier, String> {
        match self.certs.get(office) {
            Some(Cert::Valid(v)) => Ok(v),
            Some(Cert::Invalid) => Err(format!(
                "the certificate of office {office} in the bundle is not valid"
            )),
            None => Err(format!(
                "the certificate of office {office} is not in the bundle ({} is missing)",
                office_path(office)
            )),
        }
    }

    fn manifest_signature(&mut self, m: &Manifest) {
        let exporter = m.exported_by.clone();
        let result = match (self.data(MANIFEST), self.data(MANIFEST_SIG)) {
            (_, None) => Err(format!("{MANIFEST_SIG} is missing")),
            (None, _) => return,
            (Some(json), Some(sig)) => match self.verifier(&exporter) {
                Ok(v) => v.verify_bytes(json, sig).map_err(|_| {
                    format!(
                        "{MANIFEST_SIG}: the signature over {MANIFEST} does not verify against the certificate of office {exporter} (the manifest or its signature was changed)"
                    )
                }),
                Err(reason) => Err(format!(
                    "{MANIFEST_SIG}: the manifest's signature cannot be checked: {reason}"
                )),
            },
        };
        if let Err(f) = result {
            self.fail(f);
        }
    }

    /// Checks every version (signature, name, attachments) and every file.
    fn records_and_files(&mut self) {
        // (record id, version) → (canonical path, signature path)
        let mut versions: BTreeMap<(String, u64), [Option<String>; 2]> = BTreeMap::new();
        let mut files: BTreeMap<String, BlobHash> = BTreeMap::new();
        let mut other = Vec::new();
        for path in self.members.keys() {
            if let Some(rest) = path.strip_prefix("records/") {
                let parsed = rest.rsplit_once('/').and_then(|(id, file)| {
                    let (v, ext) = file.split_once('.')?;
                    let slot = ["canonical", "sig"].iter().position(|e| *e == ext)?;
                    let v = v.parse::<u64>().ok()?;
                    // Only the one spelling the writer uses ("1", not "01").
                    (version_path(id, v, ext) == *path).then(|| (id.to_owned(), v, slot))
                });
                match parsed {
                    Some((id, v, slot)) => {
                        versions.entry((id, v)).or_default()[slot] = Some(path.clone());
                    }
                    None => other.push(path.clone()),
                }
            } else if let Some(name) = path.strip_prefix("files/") {
                match BlobHash::parse_hex(name) {
                    Ok(h) if h.to_hex() == name => {
                        files.insert(path.clone(), h);
                    }
                    _ => other.push(path.clone()),
                }
            } else if !(path.starts_with("offices/")
                || path.starts_with("audit/")
                || path == MANIFEST
                || path == MANIFEST_SIG)
            {
                other.push(path.clone());
            }
        }
        for path in other {
            self.fail(format!("{path}: not a member a bundle can hold"));
        }

        let mut referenced = BTreeSet::new();
        for ((id, version), [canonical, sig]) in versions {
            let item = format!("record {id} version {version}");
            let (canonical, sig) = match (canonical, sig) {
                (Some(c), Some(s)) => (c, s),
                (c, _) => {
                    let ext = if c.is_none() { "canonical" } else { "sig" };
                    self.fail(format!(
                        "{item}: {} is missing",
                        version_path(&id, version, ext)
                    ));
                    continue;
                }
            };
            let (Some(c), Some(s)) = (self.data(&canonical), self.data(&sig)) else {
                continue;
            };
            let signed = match SignedVersion::from_parts(c.to_vec().into(), s.to_vec().into()) {
                Ok(v) => v,
                Err(e) => {
                    self.fail(format!(
                        "{item} ({canonical}): cannot be decoded ({e}); the bytes were changed"
                    ));
                    continue;
                }
            };
            let r = &signed.record;
            if r.id.as_str() != id || r.version != version {
                self.fail(format!(
                    "{item} ({canonical}): holds record {} version {}: moved or renamed",
                    r.id, r.version
                ));
            }
            let origin = r.origin.to_string();
            let signature = match self.verifier(&origin) {
                Ok(v) => match v.verify(&signed) {
                    Ok(()) => Signature::Ok,
                    Err(_) => {
                        self.fail(format!(
                            "{item} ({canonical}, {sig}): the signature does not verify against the certificate of its origin office {origin} (the version or its signature was changed)"
                        ));
                        Signature::Fails
                    }
                },
                Err(_) if self.missing_offices.contains(&origin) => {
                    self.report.notes.push(format!(
                        "{item}: signature not checked: the exporting office no longer held the certificate of its origin {origin}"
                    ));
                    Signature::NotCheckedNoCertificate
                }
                Err(reason) => {
                    self.fail(format!("{item}: its signature cannot be checked: {reason}"));
                    Signature::NotChecked
                }
            };
            let mut finding = VersionFinding {
                record: id.clone(),
                version,
                origin,
                collection: r.collection.clone(),
                title: r.title.clone(),
                updated_at_ms: r.updated_at_ms,
                deleted: r.deleted,
                signature,
                attachments: Vec::new(),
            };
            for a in r.attachments.clone() {
                referenced.insert(a.hash);
                let state = self.attachment(&item, &a);
                finding.attachments.push(AttachmentFinding {
                    file_name: a.file_name,
                    media_type: a.media_type,
                    size: a.size,
                    hash: a.hash.to_string(),
                    state,
                });
            }
            self.report.versions.push(finding);
        }

        for (path, hash) in files {
            let Some(m) = self.members.get(&path) else {
                continue;
            };
            if m.blake3 != Some(hash.0) {
                self.fail(format!(
                    "{path}: its bytes do not hash (BLAKE3) to its name: the file was changed"
                ));
            }
            if !referenced.contains(&hash) {
                self.fail(format!(
                    "{path}: no record version in the bundle lists this file"
                ));
            }
        }
    }

    /// Checks one attachment of a version; returns its state for the report.
    fn attachment(&mut self, item: &str, a: &Attachment) -> FileState {
        let path = file_path(&a.hash);
        let Some(m) = self.members.get(&path) else {
            if self.missing_files.contains(&a.hash.to_hex()) {
                self.report.notes.push(format!(
                    "{item}: attachment {:?} ({}) was not held by the exporting office and is not in the bundle",
                    a.file_name, a.hash
                ));
                return FileState::NotHeldByExporter;
            }
            self.fail(format!(
                "{item}: attachment {:?} ({path}) is missing from the bundle",
                a.file_name
            ));
            return FileState::Missing;
        };
        let (size, hash_ok) = (m.size, m.blake3 == Some(a.hash.0));
        if size != a.size {
            self.fail(format!(
                "{item}: attachment {:?} ({path}) is {size} bytes, but the version lists {}",
                a.file_name, a.size
            ));
            return FileState::WrongSize;
        }
        if hash_ok {
            FileState::Ok
        } else {
            // Named as a failure once, by the file check.
            FileState::HashFails
        }
    }

    /// Checks the audit excerpt: the signed head, the digests chained up to
    /// it, and every included entry against its place in the chain.
    fn audit(&mut self, exporter: Option<&str>) {
        let head = match self.data(HEAD).map(SignedHead::decode) {
            None => {
                self.fail(format!("{HEAD} is missing"));
                None
            }
            Some(Err(e)) => {
                self.fail(format!("{HEAD}: the signed head cannot be decoded ({e})"));
                None
            }
            Some(Ok(h)) => Some(h),
        };
        let office = exporter
            .map(str::to_owned)
            .or_else(|| head.as_ref().map(|h| h.office.clone()))
            .unwrap_or_default();
        if let Some(h) = &head {
            if h.office != office {
                self.fail(format!(
                    "{HEAD}: is a head of office {}'s log, not of the exporting office {office}",
                    h.office
                ));
            }
            let checked = self.verifier(&h.office).and_then(|v| {
                v.verify_bytes(&h.canonical(), &h.signature).map_err(|_| {
                    "the signature does not verify (the head or its signature was changed)"
                        .to_owned()
                })
            });
            if let Err(reason) = checked {
                self.fail(format!(
                    "{HEAD}: the head office {} signed at entry {} cannot be trusted: {reason}",
                    h.office, h.seq
                ));
            }
        }

        let digests = match self.data(DIGESTS) {
            None => {
                self.fail(format!("{DIGESTS} is missing"));
                None
            }
            Some(d) if d.len() as u64 % DIGEST_LEN != 0 => {
                self.fail(format!(
                    "{DIGESTS}: {} bytes is not a whole number of 32-byte digests",
                    d.len()
                ));
                None
            }
            Some(d) => Some(d.to_vec()),
        };
        let count = digests.as_ref().map_or(0, |d| d.len() as u64 / DIGEST_LEN);
        if let Some(h) = &head {
            if digests.is_some() && count != h.seq {
                self.fail(format!(
                    "{DIGESTS}: holds {count} digests, but {HEAD} is signed at entry {}",
                    h.seq
                ));
            }
        }

        let mut entries = BTreeMap::new();
        let paths: Vec<String> = self
            .members
            .keys()
            .filter(|p| p.starts_with("audit/"))
            .cloned()
            .collect();
        for path in paths {
            if path == HEAD || path == DIGESTS {
                continue;
            }
            let seq = path
                .strip_prefix("audit/entries/")
                .and_then(|s| s.strip_suffix(".bin"))
                .and_then(|s| s.parse::<u64>().ok())
                .filter(|s| entry_path(*s) == path);
            match seq {
                Some(seq) => {
                    if let Some(bytes) = self.data(&path) {
                        entries.insert(seq, bytes.to_vec());
                    }
                }
                None => self.fail(format!("{path}: not a member a bundle can hold")),
            }
        }

        self.report.audit.office = office.clone();
        self.report.audit.head_seq = head.as_ref().map(|h| h.seq);
        self.report.audit.head_at_ms = head.as_ref().map(|h| h.at_ms);

        // Walk the whole chain by digests, checking each included entry at
        // its place.
        let mut walk = ChainWalk::default();
        let digests = digests.unwrap_or_default();
        for (i, digest) in digests.chunks_exact(DIGEST_LEN as usize).enumerate() {
            let seq = i as u64 + 1;
            let before = walk.hash;
            let mut d = [0u8; 32];
            d.copy_from_slice(digest);
            if let Err(fault) = walk.step_digest(seq, &d) {
                self.fail(format!("{DIGESTS}: {fault}"));
                break;
            }
            if let Some(bytes) = entries.remove(&seq) {
                self.entry(seq, &bytes, Some((&d, &before, &walk.hash)));
            }
        }
        // Entries the digests do not reach.
        for (seq, bytes) in std::mem::take(&mut entries) {
            self.entry(seq, &bytes, None);
        }
        if let Some(h) = &head {
            if count == h.seq && walk.hash != h.hash {
                self.fail(format!(
                    "{DIGESTS}: the digests do not chain to the hash in {HEAD} at entry {} (a digest, or the head, was changed)",
                    h.seq
                ));
            }
        }
    }

    /// Checks one included entry; `place` is its digest in `digests.bin` and
    /// the chain hashes before and after it, when the digests reach it.
    fn entry(&mut self, seq: u64, bytes: &[u8], place: Option<(&[u8; 32], &[u8; 32], &[u8; 32])>) {
        let item = format!("audit entry {seq} ({})", entry_path(seq));
        let failures_before = self.report.failures.len();
        let stored = match Stored::split(bytes) {
            Ok(s) => s,
            Err(e) => {
                self.fail(format!("{item}: cannot be read ({e})"));
                return;
            }
        };
        match place {
            None => self.fail(format!(
                "{item}: lies beyond the log the digests and signed head cover"
            )),
            Some((digest, before, after)) => {
                if stored.body_digest() != *digest {
                    self.fail(format!(
                        "{item}: its contents differ from the digest the log holds for entry {seq} (the entry was changed)"
                    ));
                }
                if stored.prev != *before {
                    self.fail(format!(
                        "{item}: the chain hash it holds of entry {} does not match the log",
                        seq - 1
                    ));
                }
                if stored.hash != *after {
                    self.fail(format!(
                        "{item}: the chain hash stored with it does not match the log"
                    ));
                }
            }
        }
        match Entry::decode(bytes) {
            Ok(e) => {
                if e.seq != seq {
                    self.fail(format!("{item}: says it is entry {}", e.seq));
                }
                let mut target: Vec<String> = e
                    .target
                    .records
                    .iter()
                    .take(3)
                    .map(|(id, v)| {
                        if *v == 0 {
                            id.clone()
                        } else {
                            format!("{id} v{v}")
                        }
                    })
                    .collect();
                if e.target.records.len() > 3 {
                    target.push(format!("and {} more", e.target.records.len() - 3));
                }
                if !e.target.collection.is_empty() {
                    target.push(format!("collection {}", e.target.collection));
                }
                if !e.target.detail.is_empty() {
                    target.push(e.target.detail.clone());
                }
                self.report.audit.entries.push(AuditEntryFinding {
                    seq,
                    at_ms: e.at_ms,
                    actor: e.actor.describe(),
                    action: e.action.clone(),
                    target: target.join("; "),
                    outcome: e.outcome.to_string(),
                    checks_out: self.report.failures.len() == failures_before,
                });
            }
            Err(e) => self.fail(format!("{item}: cannot be decoded ({e})")),
        }
    }
}

/// Checks that `der` is `office`'s CA certificate: it parses, names the
/// office, is a CA and its self-signature verifies (so no byte of it was
/// changed). Returns the verifier of the office's signatures.
fn check_cert(office: &OfficeId, der: &[u8]) -> Result<OfficeVerifier, String> {
    let (rest, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("cannot be parsed ({e})"))?;
    if !rest.is_empty() {
        return Err(format!("has {} bytes after its end", rest.len()));
    }
    let org = cert
        .subject()
        .iter_organization()
        .next()
        .and_then(|a| a.as_str().ok());
    if org != Some(office.as_str()) {
        return Err(format!(
            "names office {}, not {office}",
            org.unwrap_or("(none)")
        ));
    }
    if !cert.is_ca() {
        return Err("is not a CA certificate".into());
    }
    cert.verify_signature(None)
        .map_err(|_| "does not carry a valid self-signature (it was changed)".to_owned())?;
    OfficeVerifier::from_ca_cert(office.clone(), der).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::domain::audit::{Actor, Draft, GENESIS, Outcome, Target};
    use crate::domain::{RecordId, RecordVersion, UserName};
    use crate::identity::OfficeCa;

    const COLLECTION: &str = "2026-0042";
    const EXPORTED_AT: u64 = 1_790_000_100_000;
    const FOOTAGE: &[u8] = b"bodycam footage, 0412, Broad St";

    fn office(name: &str) -> (OfficeCa, OfficeId) {
        let id = OfficeId::parse(name).unwrap();
        let (ca, _) = OfficeCa::create(&id, &[], &UserName::parse("admin").unwrap()).unwrap();
        (ca, id)
    }

    fn version(
        id: &RecordId,
        version: u64,
        title: &str,
        attachments: Vec<Attachment>,
    ) -> RecordVersion {
        RecordVersion {
            id: id.clone(),
            version,
            origin: id.origin(),
            collection: COLLECTION.into(),
            kind: "incident-report".into(),
            title: title.into(),
            content_type: "text/plain".into(),
            labels: Default::default(),
            body: Bytes::from_static(b"witness saw ..."),
            created_at_ms: 1_790_000_000_000,
            updated_at_ms: 1_790_000_000_000 + version * 60_000,
            deleted: false,
            attachments,
        }
    }

    fn attachment(bytes: &[u8], name: &str) -> Attachment {
        Attachment {
            hash: BlobHash::of(bytes),
            size: bytes.len() as u64,
            file_name: name.into(),
            media_type: "video/mp4".into(),
        }
    }

    /// A three-entry log of `office`: entries 1 and 3 concern the case,
    /// entry 2 does not. Returns the stored entries and the signed head.
    fn audit_log(ca: &OfficeCa, record: &RecordId) -> (Vec<Vec<u8>>, SignedHead) {
        let alice = Actor {
            kind: "user".into(),
            name: "alice".into(),
            role: "staff".into(),
            office: ca.office.to_string(),
            fingerprint: "sha256:00".into(),
            remote: "127.0.0.1:1".into(),
        };
        let targets = [
            Target::record(record.as_str(), 1),
            Target::detail("user bob"),
            Target::record(record.as_str(), 2),
        ];
        let actions = ["Records.Put", "Admin.IssueUser", "Records.Put"];
        let mut prev = GENESIS;
        let mut stored = Vec::new();
        for (i, (target, action)) in targets.into_iter().zip(actions).enumerate() {
            let draft = Draft {
                at_ms: 1_790_000_000_000 + i as u64 * 60_000,
                ..Draft::new(alice.clone(), action, target, Outcome::ok())
            };
            let e = Entry::from_draft(draft, i as u64 + 1, ca.office.as_str(), prev);
            prev = e.hash();
            stored.push(e.encode());
        }
        let mut head = SignedHead {
            office: ca.office.to_string(),
            seq: 3,
            hash: prev,
            at_ms: 1_790_000_090_000,
            signature: Vec::new(),
        };
        head.signature = OfficeSigner::new(ca).sign_bytes(&head.canonical()).unwrap();
        (stored, head)
    }

    struct Fixture {
        bundle: Vec<u8>,
        home: OfficeCa,
        other: OfficeCa,
        record: RecordId,
        replica: RecordId,
        file: BlobHash,
        missing: BlobHash,
    }

    impl Fixture {
        fn canonical(&self, v: u64) -> String {
            version_path(self.record.as_str(), v, "canonical")
        }
    }

    /// A bundle of phila-da with two versions of its own record (the second
    /// with a file), and a replica from camden-da whose file phila-da does
    /// not hold.
    fn fixture() -> Fixture {
        let (home, home_id) = office("phila-da");
        let (other, other_id) = office("camden-da");
        let record = RecordId::generate(&home_id, 1_790_000_000_000, [1; 10]);
        let replica = RecordId::generate(&other_id, 1_790_000_000_000, [2; 10]);
        let footage = attachment(FOOTAGE, "bodycam-0412.mp4");
        let absent = attachment(b"not fetched yet", "statement.pdf");
        let signed = [
            OfficeSigner::new(&home)
                .sign(version(&record, 1, "Stop on Broad St", Vec::new()))
                .unwrap(),
            OfficeSigner::new(&home)
                .sign(version(
                    &record,
                    2,
                    "Stop on Broad St (with footage)",
                    vec![footage.clone()],
                ))
                .unwrap(),
            OfficeSigner::new(&other)
                .sign(version(
                    &replica,
                    1,
                    "Witness statement",
                    vec![absent.clone()],
                ))
                .unwrap(),
        ];
        let (entries, head) = audit_log(&home, &record);
        let digests: Vec<u8> = entries
            .iter()
            .flat_map(|e| Stored::split(e).unwrap().body_digest())
            .collect();

        let mut w = BundleWriter::new(Vec::new(), COLLECTION, &home_id, EXPORTED_AT);
        w.add_office(&home_id, &home.cert_der).unwrap();
        w.add_office(&other_id, &other.cert_der).unwrap();
        for v in &signed {
            w.add_version(v).unwrap();
        }
        w.add_file(&footage.hash, footage.size, FOOTAGE).unwrap();
        w.add_missing_file(&absent.hash);
        w.add_audit_digests(3, &digests[..]).unwrap();
        w.add_audit_entry(1, &entries[0]).unwrap();
        w.add_audit_entry(3, &entries[2]).unwrap();
        w.add_audit_head(&head).unwrap();
        let bundle = w.finish(&OfficeSigner::new(&home)).unwrap();
        Fixture {
            bundle,
            home,
            other,
            record,
            replica,
            file: footage.hash,
            missing: absent.hash,
        }
    }

    fn check(bundle: &[u8], trusted: &[Fingerprint]) -> Report {
        verify(bundle, trusted).unwrap()
    }

    /// Where a member's bytes lie in the archive.
    fn member_range(bundle: &[u8], rel: &str) -> (usize, usize) {
        let mut archive = tar::Archive::new(bundle);
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            if entry.path_bytes().as_ref() == format!("{ROOT}{rel}").as_bytes() {
                return (entry.raw_file_position() as usize, entry.size() as usize);
            }
        }
        panic!("no member {rel}");
    }

    /// The bundle with one byte flipped in place, `at` bytes into `rel`.
    fn flipped(bundle: &[u8], rel: &str, at: usize) -> Vec<u8> {
        let (start, size) = member_range(bundle, rel);
        assert!(at < size, "{rel} has {size} bytes");
        let mut out = bundle.to_vec();
        out[start + at] ^= 0x01;
        out
    }

    /// Every member, in order, as (path relative to the root, bytes).
    fn members(bundle: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut archive = tar::Archive::new(bundle);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
                let mut bytes = Vec::new();
                e.read_to_end(&mut bytes).unwrap();
                (path[ROOT.len()..].to_owned(), bytes)
            })
            .collect()
    }

    /// Rewrites the archive after `change`. With `resign`, the manifest is
    /// made anew over the changed members and signed with `resign`'s key
    /// (what only the exporting office could do), so only the checks of
    /// the items themselves can catch the change; without, the original
    /// manifest and signature are kept.
    fn repack(
        bundle: &[u8],
        resign: Option<&OfficeCa>,
        change: impl FnOnce(&mut Vec<(String, Vec<u8>)>),
    ) -> Vec<u8> {
        let mut all = members(bundle);
        let manifest_bytes = all.iter().find(|(p, _)| p == MANIFEST).unwrap().1.clone();
        let mut manifest: Manifest = serde_json::from_slice(&manifest_bytes).unwrap();
        change(&mut all);
        match resign {
            Some(ca) => {
                manifest.files.clear();
                let mut w = BundleWriter::with_manifest(Vec::new(), manifest);
                for (path, bytes) in all
                    .iter()
                    .filter(|(p, _)| p != MANIFEST && p != MANIFEST_SIG)
                {
                    w.append_bytes(path, bytes).unwrap();
                }
                w.finish(&OfficeSigner::new(ca)).unwrap()
            }
            None => {
                let mut tar = tar::Builder::new(Vec::new());
                for (path, bytes) in &all {
                    let mut h = tar::Header::new_gnu();
                    h.set_size(bytes.len() as u64);
                    h.set_mode(0o644);
                    tar.append_data(&mut h, format!("{ROOT}{path}"), &bytes[..])
                        .unwrap();
                }
                tar.into_inner().unwrap()
            }
        }
    }

    fn flip_member(all: &mut [(String, Vec<u8>)], rel: &str, at: usize) {
        let (_, bytes) = all.iter_mut().find(|(p, _)| p == rel).unwrap();
        bytes[at] ^= 0x01;
    }

    fn assert_names(report: &Report, what: &str, needle: &str) {
        assert!(!report.is_verified(), "{what}: verified:\n{report}");
        assert!(
            report.failures.iter().any(|f| f.contains(needle)),
            "{what}: no failure names {needle:?}:\n{report}"
        );
        assert!(!report.to_string().contains("VERIFIED"), "{what}");
    }

    #[test]
    fn an_untouched_bundle_verifies_and_says_what_it_holds() {
        let fx = fixture();
        let report = check(&fx.bundle, &[]);
        assert!(report.is_verified(), "{report}");
        assert_eq!(report.collection, COLLECTION);
        assert_eq!(report.exported_by, "phila-da");
        assert_eq!(report.exported_at_ms, Some(EXPORTED_AT));

        let text = report.to_string();
        for expected in [
            "VERIFIED",
            "out of band",
            &fx.home.fingerprint().to_string(),
            &fx.other.fingerprint().to_string(),
            &format!("{} v1  by phila-da", fx.record),
            &format!("{} v2  by phila-da", fx.record),
            &format!("{} v1  by camden-da", fx.replica),
            "\"Stop on Broad St\"",
            &format_time(1_790_000_120_000),
            "\"bodycam-0412.mp4\"",
            "present, hash ok",
            "MISSING (not held by the exporting office)",
            "signed head at entry 3",
            "#1 ",
            "#3 ",
            "user alice (staff) of phila-da  Records.Put",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        assert!(
            !text.contains("#2 "),
            "entry 2 does not concern the case:\n{text}"
        );
        assert_eq!(
            report
                .versions
                .iter()
                .filter(|v| v.signature == Signature::Ok)
                .count(),
            3
        );
        assert!(
            report
                .notes
                .iter()
                .any(|n| n.contains(&fx.missing.to_hex())),
            "{report}"
        );
    }

    #[test]
    fn members_have_fixed_metadata_and_the_manifest_lists_every_other_member() {
        let fx = fixture();
        let mut archive = tar::Archive::new(&fx.bundle[..]);
        let mut paths = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let h = entry.header();
            assert_eq!(h.mode().unwrap(), 0o644);
            assert_eq!(h.mtime().unwrap(), EXPORTED_AT / 1000);
            assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
            paths.push(String::from_utf8(entry.path_bytes().into_owned()).unwrap());
        }
        assert!(paths.iter().all(|p| p.starts_with(ROOT)));
        assert_eq!(
            paths[paths.len() - 2..],
            [format!("{ROOT}{MANIFEST}"), format!("{ROOT}{MANIFEST_SIG}")]
        );
        let all = members(&fx.bundle);
        let manifest: Manifest = serde_json::from_slice(&all[all.len() - 2].1).unwrap();
        let listed: Vec<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
        let held: Vec<&str> = all[..all.len() - 2]
            .iter()
            .map(|(p, _)| p.as_str())
            .collect();
        assert_eq!(listed, held);
        assert_eq!(manifest.missing_files, [fx.missing.to_hex()]);
        assert!(held.contains(&file_path(&fx.file).as_str()));
        assert!(held.contains(&"audit/entries/3.bin"));
        assert!(!held.contains(&"audit/entries/2.bin"));
    }

    #[test]
    fn a_flipped_byte_in_any_member_fails_verification_and_names_the_member() {
        let fx = fixture();
        let items = [
            fx.canonical(1),
            version_path(fx.record.as_str(), 2, "sig"),
            file_path(&fx.file),
            office_path("phila-da"),
            office_path("camden-da"),
            entry_path(3),
            DIGESTS.into(),
            HEAD.into(),
            MANIFEST.into(),
            MANIFEST_SIG.into(),
        ];
        for rel in items {
            let (_, size) = member_range(&fx.bundle, &rel);
            for at in [0, size / 2, size - 1] {
                let report = check(&flipped(&fx.bundle, &rel, at), &[]);
                assert_names(&report, &format!("{rel} at {at}"), &rel);
                if rel != MANIFEST && rel != MANIFEST_SIG {
                    // The manifest catches it, whatever the item's own
                    // checks find.
                    let listed = format!("{rel}: its contents differ from what {MANIFEST} lists");
                    assert_names(&report, &format!("{rel} at {at}"), &listed);
                }
            }
        }
    }

    #[test]
    fn a_change_under_a_re_signed_manifest_is_still_caught_by_the_item_itself() {
        let fx = fixture();
        // Repacking alone changes nothing: the checks below fail because of
        // the flipped byte, not because of the repacking.
        let same = repack(&fx.bundle, Some(&fx.home), |_| {});
        assert!(check(&same, &[]).is_verified(), "{}", check(&same, &[]));

        // A byte of the CA certificate's common name: only its
        // self-signature covers it.
        let camden = office_path("camden-da");
        let cert = &members(&fx.bundle)
            .into_iter()
            .find(|(p, _)| *p == camden)
            .unwrap()
            .1;
        let in_name = cert
            .windows(b"casemesh office CA".len())
            .position(|w| w == b"casemesh office CA")
            .unwrap();
        let record_v1 = format!("record {} version 1", fx.record);
        let record_v2 = format!("record {} version 2", fx.record);
        let cases: [(String, usize, &str); 11] = [
            (fx.canonical(1), 0, &record_v1),
            (fx.canonical(1), 60, &record_v1),
            (version_path(fx.record.as_str(), 2, "sig"), 40, &record_v2),
            (file_path(&fx.file), 3, &file_path(&fx.file)),
            (
                camden.clone(),
                in_name,
                "office camden-da (offices/camden-da.der): the certificate",
            ),
            (
                camden.clone(),
                cert.len() - 3,
                "office camden-da (offices/camden-da.der): the certificate",
            ),
            (
                entry_path(3),
                100,
                "audit entry 3 (audit/entries/3.bin): its contents differ",
            ),
            (
                entry_path(3),
                5,
                "audit entry 3 (audit/entries/3.bin): the chain hash it holds of entry 2",
            ),
            (
                entry_path(3),
                40,
                "audit entry 3 (audit/entries/3.bin): the chain hash stored with it",
            ),
            // Entry 2's digest: entry 2 is not in the bundle, so only the
            // chain up to the signed head can tell.
            (DIGESTS.into(), 32 + 5, DIGESTS),
            (HEAD.into(), 20, HEAD),
        ];
        for (rel, at, needle) in cases {
            let changed = repack(&fx.bundle, Some(&fx.home), |all| flip_member(all, &rel, at));
            let report = check(&changed, &[]);
            assert_names(&report, &format!("{rel} at {at}"), needle);
            if rel == entry_path(3) {
                let marked = report
                    .audit
                    .entries
                    .iter()
                    .any(|e| e.seq == 3 && !e.checks_out);
                assert!(marked, "{report}");
            }
            assert!(
                !report
                    .failures
                    .iter()
                    .any(|f| f.contains("differ from what")),
                "{rel}: the manifest should match the changed member:\n{report}"
            );
        }
    }

    #[test]
    fn only_the_fingerprints_given_are_trusted() {
        let fx = fixture();
        let both = [fx.home.fingerprint(), fx.other.fingerprint()];
        let report = check(&fx.bundle, &both);
        assert!(report.is_verified(), "{report}");
        assert!(report.to_string().contains("trusted (given with --trust)"));
        assert!(!report.to_string().contains("out of band"));

        let report = check(&fx.bundle, &[fx.home.fingerprint()]);
        assert_names(&report, "camden-da not trusted", "office camden-da");
        assert_eq!(report.failures.len(), 1, "{report}");

        let report = check(&fx.bundle, &[Fingerprint([7; 32])]);
        assert_names(&report, "wrong fingerprint", "office phila-da");
        assert_names(&report, "wrong fingerprint", "office camden-da");
        assert!(
            report
                .notes
                .iter()
                .any(|n| n.contains(&Fingerprint([7; 32]).to_string()))
        );
    }

    #[test]
    fn a_file_the_manifest_lists_but_the_archive_lacks_fails() {
        let fx = fixture();
        let path = file_path(&fx.file);
        // Removed, manifest kept: the manifest names it.
        let removed = repack(&fx.bundle, None, |all| all.retain(|(p, _)| *p != path));
        assert_names(&check(&removed, &[]), "removed file", &path);
        // Removed and the manifest re-signed without it: the version that
        // lists it names it (it is not listed as missing).
        let removed = repack(&fx.bundle, Some(&fx.home), |all| {
            all.retain(|(p, _)| *p != path)
        });
        let report = check(&removed, &[]);
        assert_names(
            &report,
            "removed file, re-signed",
            "attachment \"bodycam-0412.mp4\"",
        );
        assert_names(
            &report,
            "removed file, re-signed",
            &record_name(&fx.record, 2),
        );
    }

    fn record_name(id: &RecordId, v: u64) -> String {
        format!("record {id} version {v}")
    }

    #[test]
    fn members_added_or_removed_without_the_manifest_fail() {
        let fx = fixture();
        let added = repack(&fx.bundle, None, |all| {
            all.insert(0, ("records/extra/1.canonical".into(), b"x".to_vec()));
        });
        assert_names(&check(&added, &[]), "added", "records/extra/1.canonical");

        let entry = entry_path(1);
        let removed = repack(&fx.bundle, None, |all| all.retain(|(p, _)| *p != entry));
        assert_names(&check(&removed, &[]), "removed entry", &entry);

        let sig = version_path(fx.record.as_str(), 1, "sig");
        let removed = repack(&fx.bundle, Some(&fx.home), |all| {
            all.retain(|(p, _)| *p != sig)
        });
        assert_names(&check(&removed, &[]), "removed signature, re-signed", &sig);
    }

    #[test]
    fn an_origin_no_longer_pinned_is_reported_but_a_certificate_dropped_silently_fails() {
        let (home, home_id) = office("phila-da");
        let (gone, gone_id) = office("gone-da");
        let record = RecordId::generate(&gone_id, 1, [3; 10]);
        let replica = OfficeSigner::new(&gone)
            .sign(version(
                &record,
                1,
                "From an office since unpinned",
                Vec::new(),
            ))
            .unwrap();
        let (entries, head) = audit_log(&home, &record);
        let digests: Vec<u8> = entries
            .iter()
            .flat_map(|e| Stored::split(e).unwrap().body_digest())
            .collect();
        let build = |declare: bool| {
            let mut w = BundleWriter::new(Vec::new(), COLLECTION, &home_id, EXPORTED_AT);
            w.add_office(&home_id, &home.cert_der).unwrap();
            if declare {
                w.add_missing_office(&gone_id);
            }
            w.add_version(&replica).unwrap();
            w.add_audit_digests(3, &digests[..]).unwrap();
            w.add_audit_head(&head).unwrap();
            w.finish(&OfficeSigner::new(&home)).unwrap()
        };
        let report = check(&build(true), &[]);
        assert!(report.is_verified(), "{report}");
        let text = report.to_string();
        assert!(
            text.contains("signature NOT CHECKED (no certificate)"),
            "{text}"
        );
        assert!(report.notes.iter().any(|n| n.contains("gone-da")), "{text}");

        let report = check(&build(false), &[]);
        assert_names(&report, "undeclared", "offices/gone-da.der is missing");
    }

    #[test]
    fn a_file_no_version_lists_or_a_certificate_under_another_name_fails() {
        let fx = fixture();
        let stray = b"not attached to anything";
        let stray_path = file_path(&BlobHash::of(stray));
        let added = repack(&fx.bundle, Some(&fx.home), |all| {
            all.insert(0, (stray_path.clone(), stray.to_vec()));
        });
        assert_names(
            &check(&added, &[]),
            "stray file",
            &format!("{stray_path}: no record version"),
        );

        let camden = office_path("camden-da");
        let renamed = repack(&fx.bundle, Some(&fx.home), |all| {
            let home = all
                .iter()
                .find(|(p, _)| *p == office_path("phila-da"))
                .unwrap()
                .1
                .clone();
            all.iter_mut().find(|(p, _)| *p == camden).unwrap().1 = home;
        });
        assert_names(
            &check(&renamed, &[]),
            "renamed certificate",
            "names office phila-da, not camden-da",
        );
    }

    #[test]
    fn a_version_or_a_head_moved_to_another_place_fails() {
        let fx = fixture();
        let id = fx.record.as_str();
        let swapped = repack(&fx.bundle, Some(&fx.home), |all| {
            for (path, _) in all.iter_mut() {
                for ext in ["canonical", "sig"] {
                    let (one, two) = (version_path(id, 1, ext), version_path(id, 2, ext));
                    if *path == one {
                        *path = two;
                    } else if *path == two {
                        *path = one;
                    }
                }
            }
        });
        let report = check(&swapped, &[]);
        assert_names(
            &report,
            "swapped",
            &format!(
                "{} ({}): holds record {id} version 2",
                record_name(&fx.record, 1),
                fx.canonical(1)
            ),
        );
        assert_names(
            &report,
            "swapped",
            &format!("{}): holds record {id} version 1", fx.canonical(2)),
        );

        // A head camden-da really signed, of its own log.
        let (_, theirs) = audit_log(&fx.other, &fx.record);
        let replaced = repack(&fx.bundle, Some(&fx.home), |all| {
            all.iter_mut().find(|(p, _)| p == HEAD).unwrap().1 = theirs.encode();
        });
        assert_names(
            &check(&replaced, &[]),
            "their head",
            "is a head of office camden-da's log, not of the exporting office phila-da",
        );
    }

    #[test]
    fn a_version_signed_by_another_key_fails() {
        let fx = fixture();
        let (impostor, _) = office("phila-da");
        let forged = OfficeSigner::new(&impostor)
            .sign(version(&fx.record, 1, "Stop on Broad St", Vec::new()))
            .unwrap();
        let sig = version_path(fx.record.as_str(), 1, "sig");
        let changed = repack(&fx.bundle, Some(&fx.home), |all| {
            all.iter_mut().find(|(p, _)| *p == sig).unwrap().1 = forged.signature.to_vec();
        });
        assert_names(&check(&changed, &[]), "forged", &record_name(&fx.record, 1));
    }

    #[test]
    fn what_is_not_a_bundle_is_an_error() {
        assert!(matches!(
            verify(&b""[..], &[]),
            Err(BundleError::NotABundle(_))
        ));
        assert!(matches!(
            verify(&[0x55u8; 2048][..], &[]),
            Err(BundleError::Read(_))
        ));
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        tar.append_data(&mut h, "notes.txt", &b"hi"[..]).unwrap();
        let other = tar.into_inner().unwrap();
        assert!(matches!(
            verify(&other[..], &[]),
            Err(BundleError::NotABundle(_))
        ));
    }

    #[test]
    fn the_writer_refuses_a_file_whose_bytes_do_not_match() {
        let (_, id) = office("phila-da");
        let mut w = BundleWriter::new(Vec::new(), COLLECTION, &id, EXPORTED_AT);
        let hash = BlobHash::of(FOOTAGE);
        let err = w.add_file(
            &hash,
            FOOTAGE.len() as u64,
            &b"other bytes, same length.......!"[..FOOTAGE.len()],
        );
        assert!(matches!(err, Err(WriteError::File { .. })), "{err:?}");
        let mut w = BundleWriter::new(Vec::new(), COLLECTION, &id, EXPORTED_AT);
        let err = w.add_file(&hash, FOOTAGE.len() as u64, &FOOTAGE[..4]);
        assert!(matches!(err, Err(WriteError::File { .. })), "{err:?}");
    }

    /// Times come from whoever signed the items; any u64 must print.
    #[test]
    fn a_bundle_with_times_past_year_9999_verifies_and_prints() {
        let (home, home_id) = office("phila-da");
        let record = RecordId::generate(&home_id, 1_790_000_000_000, [3; 10]);
        let mut v = version(&record, 1, "from the far future", Vec::new());
        v.created_at_ms = u64::MAX;
        v.updated_at_ms = u64::MAX - 1;
        let signed = OfficeSigner::new(&home).sign(v).unwrap();
        let mut w = BundleWriter::new(Vec::new(), COLLECTION, &home_id, u64::MAX);
        w.add_office(&home_id, &home.cert_der).unwrap();
        w.add_version(&signed).unwrap();
        let mut head = SignedHead {
            office: home_id.to_string(),
            seq: 0,
            hash: GENESIS,
            at_ms: u64::MAX,
            signature: Vec::new(),
        };
        head.signature = OfficeSigner::new(&home)
            .sign_bytes(&head.canonical())
            .unwrap();
        w.add_audit_head(&head).unwrap();
        let bundle = w.finish(&OfficeSigner::new(&home)).unwrap();
        let shown = verify(&bundle[..], &[]).unwrap().to_string();
        assert!(shown.contains("out-of-range time"), "{shown}");
    }

    /// Whatever a bundle holds, checking it ends in a report or an error,
    /// never a panic: every byte position flipped (at a stride that covers
    /// headers and contents alike) and the archive cut at many lengths.
    #[test]
    fn no_damage_to_a_bundle_makes_the_verifier_panic() {
        let fx = fixture();
        let n = fx.bundle.len();
        let check = |bytes: &[u8]| {
            if let Ok(report) = verify(bytes, &[]) {
                let _ = report.to_string();
            }
        };
        for at in (0..n).step_by(13) {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut damaged = fx.bundle.clone();
                damaged[at] ^= mask;
                check(&damaged);
            }
        }
        for len in (0..n).step_by(97) {
            check(&fx.bundle[..len]);
        }
    }
}
