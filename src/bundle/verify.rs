//! Checking a bundle offline, member by member.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};

use super::hashing::Hashing;
use super::layout::*;
use super::report::*;
use crate::domain::audit::{ChainWalk, Entry, SignedHead, Stored};
use crate::domain::{Attachment, BlobHash, OfficeId, SignedVersion};
use crate::identity::{Fingerprint, OfficeVerifier};

/// The input is not a readable bundle at all. Anything wrong inside a
/// readable bundle is a failure in the [`Report`] instead.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read the bundle as a tar archive: {0}")]
    Read(#[source] io::Error),
    #[error("not a casemesh bundle: {0}")]
    NotABundle(String),
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

/// (record id, version) → the paths of its canonical bytes and signature.
type VersionPaths = BTreeMap<(String, u64), [Option<String>; 2]>;

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
        let (versions, files) = self.versions_and_files();
        let mut referenced = BTreeSet::new();
        for (version, paths) in versions {
            self.check_version(version, paths, &mut referenced);
        }
        self.check_files(files, &referenced);
    }

    /// Sorts the members under `records/` and `files/` by what they hold;
    /// any other member a bundle cannot hold is a failure.
    fn versions_and_files(&mut self) -> (VersionPaths, BTreeMap<String, BlobHash>) {
        // (record id, version) → (canonical path, signature path)
        let mut versions: VersionPaths = BTreeMap::new();
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
        (versions, files)
    }

    /// Checks one version: both its members, its name, its signature and
    /// its attachments (each noted in `referenced`).
    fn check_version(
        &mut self,
        (id, version): (String, u64),
        [canonical, sig]: [Option<String>; 2],
        referenced: &mut BTreeSet<BlobHash>,
    ) {
        let item = format!("record {id} version {version}");
        let (canonical, sig) = match (canonical, sig) {
            (Some(c), Some(s)) => (c, s),
            (c, _) => {
                let ext = if c.is_none() { "canonical" } else { "sig" };
                self.fail(format!(
                    "{item}: {} is missing",
                    version_path(&id, version, ext)
                ));
                return;
            }
        };
        let (Some(c), Some(s)) = (self.data(&canonical), self.data(&sig)) else {
            return;
        };
        let signed = match SignedVersion::from_parts(c.to_vec().into(), s.to_vec().into()) {
            Ok(v) => v,
            Err(e) => {
                self.fail(format!(
                    "{item} ({canonical}): cannot be decoded ({e}); the bytes were changed"
                ));
                return;
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

    /// Every file must hash to its name and be listed by some version.
    fn check_files(&mut self, files: BTreeMap<String, BlobHash>, referenced: &BTreeSet<BlobHash>) {
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
        let head = self.signed_head(exporter);
        let office = exporter
            .map(str::to_owned)
            .or_else(|| head.as_ref().map(|h| h.office.clone()))
            .unwrap_or_default();
        let digests = self.digests(head.as_ref());
        let entries = self.included_entries();
        self.report.audit.office = office;
        self.report.audit.head_seq = head.as_ref().map(|h| h.seq);
        self.report.audit.head_at_ms = head.as_ref().map(|h| h.at_ms);
        self.walk_chain(head.as_ref(), digests, entries);
    }

    /// The signed head, checked against the exporting office's certificate.
    fn signed_head(&mut self, exporter: Option<&str>) -> Option<SignedHead> {
        let head = match self.data(HEAD).map(SignedHead::decode) {
            None => {
                self.fail(format!("{HEAD} is missing"));
                return None;
            }
            Some(Err(e)) => {
                self.fail(format!("{HEAD}: the signed head cannot be decoded ({e})"));
                return None;
            }
            Some(Ok(h)) => h,
        };
        let office = exporter.unwrap_or(&head.office).to_owned();
        if head.office != office {
            self.fail(format!(
                "{HEAD}: is a head of office {}'s log, not of the exporting office {office}",
                head.office
            ));
        }
        let checked = self.verifier(&head.office).and_then(|v| {
            v.verify_bytes(&head.canonical(), &head.signature)
                .map_err(|_| {
                    "the signature does not verify (the head or its signature was changed)"
                        .to_owned()
                })
        });
        if let Err(reason) = checked {
            self.fail(format!(
                "{HEAD}: the head office {} signed at entry {} cannot be trusted: {reason}",
                head.office, head.seq
            ));
        }
        Some(head)
    }

    /// The digests of every entry up to the head, if whole and as many as
    /// the head says.
    fn digests(&mut self, head: Option<&SignedHead>) -> Option<Vec<u8>> {
        let digests = match self.data(DIGESTS) {
            None => {
                self.fail(format!("{DIGESTS} is missing"));
                return None;
            }
            Some(d) if d.len() as u64 % DIGEST_LEN != 0 => {
                self.fail(format!(
                    "{DIGESTS}: {} bytes is not a whole number of 32-byte digests",
                    d.len()
                ));
                return None;
            }
            Some(d) => d.to_vec(),
        };
        let count = digests.len() as u64 / DIGEST_LEN;
        if let Some(h) = head {
            if count != h.seq {
                self.fail(format!(
                    "{DIGESTS}: holds {count} digests, but {HEAD} is signed at entry {}",
                    h.seq
                ));
            }
        }
        Some(digests)
    }

    /// The entries included in full, by sequence number.
    fn included_entries(&mut self) -> BTreeMap<u64, Vec<u8>> {
        let mut entries = BTreeMap::new();
        let paths: Vec<String> = self
            .members
            .keys()
            .filter(|p| p.starts_with("audit/") && *p != HEAD && *p != DIGESTS)
            .cloned()
            .collect();
        for path in paths {
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
        entries
    }

    /// Walks the whole chain by digests, checking each included entry at
    /// its place, and that the chain ends at the signed head's hash.
    fn walk_chain(
        &mut self,
        head: Option<&SignedHead>,
        digests: Option<Vec<u8>>,
        mut entries: BTreeMap<u64, Vec<u8>>,
    ) {
        let count = digests.as_ref().map_or(0, |d| d.len() as u64 / DIGEST_LEN);
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
        for (seq, bytes) in entries {
            self.entry(seq, &bytes, None);
        }
        if let Some(h) = head {
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
