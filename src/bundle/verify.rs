//! Checking a bundle offline, member by member: first an index of every
//! member ([`super::index`]), then each check reading again only the
//! members it needs, one at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, Read, Seek};

use super::excerpt::read_piece;
use super::index::{BundleError, Members};
use super::layout::*;
use super::report::*;
use crate::domain::audit::{ChainWalk, Entry, SignedHead, Stored, chain_hash};
use crate::domain::merkle;
use crate::domain::{Attachment, BlobHash, OfficeId, SignedVersion};
use crate::identity::{Fingerprint, OfficeVerifier};

/// Checks a whole bundle offline: every member against the signed
/// manifest, every certificate, every version's signature, every file's
/// hash and size, and the audit excerpt against the chain and the signed
/// head. With `trusted` non-empty, every office certificate must be one of
/// those fingerprints; without a trusted exporting office the report is
/// at best self-consistent ([`Verdict::UnknownOffice`]).
///
/// Memory is bounded by the number of members (their names and hashes)
/// and [`MAX_MEMBER`], never by their total size: the archive is read
/// twice, which is why it must be seekable.
pub fn verify(reader: impl Read + Seek, trusted: &[Fingerprint]) -> Result<Report, BundleError> {
    let mut report = Report {
        trust_given: !trusted.is_empty(),
        ..Report::default()
    };
    let members = Members::read(reader, &mut report.failures)?;
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
        check.exporter_trust(m);
    }
    check.records_and_files();
    check.audit(manifest.as_ref().map(|m| m.exported_by.as_str()));
    Ok(check.report)
}

/// (record id, version) → the paths of its canonical bytes and signature.
type VersionPaths = BTreeMap<(String, u64), [Option<String>; 2]>;

/// An included audit entry's place in the chain: its digest in
/// `digests.bin`, and the chain hashes before and after it.
struct Place {
    digest: [u8; 32],
    before: [u8; 32],
    after: [u8; 32],
}

/// An office certificate found in the bundle.
enum Cert {
    Valid(OfficeVerifier),
    /// Present but failed its checks (the failure is reported).
    Invalid,
}

struct Check<R> {
    members: Members<R>,
    report: Report,
    certs: BTreeMap<String, Cert>,
    missing_offices: BTreeSet<String>,
    missing_files: BTreeSet<String>,
}

impl<R: Read + Seek> Check<R> {
    fn fail(&mut self, failure: String) {
        self.report.failures.push(clipped(&failure));
    }

    fn note(&mut self, note: String) {
        self.report.notes.push(clipped(&note));
    }

    /// A member's bytes, read again: `None` if it is absent, was refused
    /// unread, or cannot be read again (a failure says so).
    fn load(&mut self, path: &str) -> Option<Vec<u8>> {
        self.members.load(path).unwrap_or_else(|failure| {
            self.fail(failure);
            None
        })
    }

    /// Parses the manifest and checks every member against it.
    fn manifest(&mut self) -> Option<Manifest> {
        let Some(bytes) = self.load(MANIFEST) else {
            if self.members.get(MANIFEST).is_none() {
                self.fail(format!(
                    "{MANIFEST} is missing: the bundle cannot be tied to an exporting office"
                ));
            }
            return None;
        };
        let manifest: Manifest = match serde_json::from_slice(&bytes) {
            Ok(m) => m,
            Err(e) => {
                self.fail(format!("{MANIFEST} cannot be read ({e})"));
                return None;
            }
        };
        if manifest.format != FORMAT && manifest.format != FORMAT_V1 {
            self.fail(format!(
                "{MANIFEST}: format is {:?}, not {FORMAT:?} or {FORMAT_V1:?}",
                manifest.format
            ));
        }
        self.report.format = clipped(&manifest.format);
        self.report.collection = clipped(&manifest.collection);
        self.report.exported_by = clipped(&manifest.exported_by);
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
            // Refused unread: a failure names it already.
            let Some(sha256) = sha256 else {
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
            .paths()
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
        let paths = self.members.paths_under("offices/");
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
            let Some(der) = self.load(&path) else {
                // Refused unread, or unreadable: a failure names it.
                self.certs.insert(office.to_string(), Cert::Invalid);
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
            self.note(format!(
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
        let Some(sig) = self.load(MANIFEST_SIG) else {
            if self.members.get(MANIFEST_SIG).is_none() {
                self.fail(format!("{MANIFEST_SIG} is missing"));
            }
            return;
        };
        let Some(json) = self.load(MANIFEST) else {
            return;
        };
        let result = match self.verifier(&exporter) {
            Ok(v) => v.verify_bytes(&json, &sig).map_err(|_| {
                format!(
                    "{MANIFEST_SIG}: the signature over {MANIFEST} does not verify against the certificate of office {exporter} (the manifest or its signature was changed)"
                )
            }),
            Err(reason) => Err(format!(
                "{MANIFEST_SIG}: the manifest's signature cannot be checked: {reason}"
            )),
        };
        if let Err(f) = result {
            self.fail(f);
        }
    }

    /// Whether the exporting office's certificate is one given with
    /// `--trust`: without that, a bundle is at best self-consistent.
    fn exporter_trust(&mut self, m: &Manifest) {
        self.report.exporter_trusted = self
            .report
            .offices
            .iter()
            .any(|o| o.office == m.exported_by && o.valid && o.trust == Trust::Trusted);
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
        for path in self.members.paths() {
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
        // One version at a time: at most two members in memory.
        let (Some(c), Some(s)) = (self.load(&canonical), self.load(&sig)) else {
            return;
        };
        let signed = match SignedVersion::from_parts(c.into(), s.into()) {
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
                self.note(format!(
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
            collection: clipped(&r.collection),
            title: clipped(&r.title),
            updated_at_ms: r.updated_at_ms,
            deleted: r.deleted,
            signature,
            attachments: Vec::new(),
        };
        for a in r.attachments.clone() {
            referenced.insert(a.hash);
            let state = self.attachment(&item, &a);
            finding.attachments.push(AttachmentFinding {
                file_name: clipped(&a.file_name),
                media_type: clipped(&a.media_type),
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
                self.note(format!(
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

    /// Checks the audit excerpt against the signed head: by the inclusion
    /// proofs of `audit/excerpt/` in bundles of today's format, or by the
    /// digests of the whole log in bundles of the first
    /// ([`FORMAT_V1`], `audit/digests.bin`).
    fn audit(&mut self, exporter: Option<&str>) {
        let head = self.signed_head(exporter);
        let office = exporter
            .map(str::to_owned)
            .or_else(|| head.as_ref().map(|h| h.office.clone()))
            .unwrap_or_default();
        self.report.audit.office = clipped(&office);
        self.report.audit.head_seq = head.as_ref().map(|h| h.seq);
        self.report.audit.head_at_ms = head.as_ref().map(|h| h.at_ms);
        let first_format = match self.report.format.as_str() {
            FORMAT_V1 => true,
            FORMAT => false,
            // The manifest is unreadable: the members say which.
            _ => self.members.get(DIGESTS).is_some(),
        };
        if first_format {
            self.audit_by_digests(head.as_ref());
        } else {
            self.audit_by_proofs(head.as_ref());
        }
    }

    /// Checks every entry of the excerpt by its inclusion proof against
    /// the tree root in the signed head.
    fn audit_by_proofs(&mut self, head: Option<&SignedHead>) {
        let mut pieces = Vec::new();
        for path in self.members.paths_under("audit/") {
            if path == HEAD {
                continue;
            }
            let n = path
                .strip_prefix(EXCERPT_DIR)
                .and_then(|s| s.strip_suffix(".bin"))
                .and_then(|s| s.parse::<u64>().ok())
                .filter(|n| excerpt_path(*n) == path);
            match n {
                Some(n) => pieces.push(n),
                None => self.fail(format!("{path}: not a member a bundle can hold")),
            }
        }
        pieces.sort_unstable();
        if let Some(gap) = (1..).zip(&pieces).find(|(want, n)| *want != **n) {
            self.fail(format!(
                "{}: is missing (the excerpt's pieces are numbered from 1 without gaps)",
                excerpt_path(gap.0)
            ));
        }
        let tree = head.and_then(|h| match h.root {
            Some(root) => Some((h.seq, root)),
            None => {
                self.fail(format!(
                    "{HEAD}: carries no tree root, so the excerpt's proofs cannot be checked"
                ));
                None
            }
        });
        let mut last = 0;
        for n in pieces {
            let path = excerpt_path(n);
            let Some(bytes) = self.load(&path) else {
                continue;
            };
            let (size, entries) = match read_piece(&bytes) {
                Ok(p) => p,
                Err(e) => {
                    self.fail(format!("{path}: cannot be read ({e})"));
                    continue;
                }
            };
            if let Some((seq, _)) = tree.filter(|(seq, _)| *seq != size) {
                self.fail(format!(
                    "{path}: holds proofs for a log of {size} entries, but {HEAD} is signed at entry {seq}"
                ));
            }
            for e in entries {
                let item = format!("audit entry {} ({path})", e.seq);
                let failures_before = self.report.failures.len();
                if e.seq <= last {
                    self.fail(format!(
                        "{item}: comes after entry {last} (entries must be in ascending order, each once)"
                    ));
                    continue;
                }
                last = e.seq;
                self.proven(&item, e.seq, e.stored, &e.proof, tree);
                self.describe_entry(&item, e.seq, e.stored, failures_before);
            }
        }
    }

    /// Checks one entry's proof: its chain hash, recomputed from its bytes,
    /// is leaf `seq - 1` of the tree the head signed.
    fn proven(
        &mut self,
        item: &str,
        seq: u64,
        bytes: &[u8],
        proof: &[merkle::Hash],
        tree: Option<(u64, merkle::Hash)>,
    ) {
        let stored = match Stored::split(bytes) {
            Ok(s) => s,
            Err(e) => {
                self.fail(format!("{item}: cannot be read ({e})"));
                return;
            }
        };
        let hash = chain_hash(&stored.prev, seq, &stored.body_digest());
        if hash != stored.hash {
            self.fail(format!(
                "{item}: its contents do not hash to the chain hash stored with it (the entry was changed)"
            ));
            return;
        }
        let Some((size, root)) = tree else {
            return;
        };
        if seq == 0 || seq > size {
            self.fail(format!(
                "{item}: lies beyond the log the signed head covers (entry {size})"
            ));
        } else if !merkle::verify_inclusion(&merkle::leaf_hash(&hash), seq - 1, size, proof, &root)
        {
            self.fail(format!(
                "{item}: its proof does not lead to the tree root in {HEAD} (the entry, its proof or the head was changed)"
            ));
        }
    }

    /// Checks the excerpt of a bundle of the first format: the signed head,
    /// the digests chained up to it, and every included entry against its
    /// place in the chain.
    fn audit_by_digests(&mut self, head: Option<&SignedHead>) {
        let count = self.digest_count(head);
        let entries = self.included_entries();
        let places = self.walk_chain(head, count, &entries);
        for (seq, path) in entries {
            if let Some(bytes) = self.load(&path) {
                self.entry(seq, &bytes, places.get(&seq));
            }
        }
    }

    /// The signed head, checked against the exporting office's certificate.
    fn signed_head(&mut self, exporter: Option<&str>) -> Option<SignedHead> {
        let head = match self.load(HEAD).map(|b| SignedHead::decode(&b)) {
            None => {
                if self.members.get(HEAD).is_none() {
                    self.fail(format!("{HEAD} is missing"));
                }
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

    /// How many digests `digests.bin` holds, if it is whole; they should
    /// be as many as the head says.
    fn digest_count(&mut self, head: Option<&SignedHead>) -> Option<u64> {
        let size = match self.members.get(DIGESTS) {
            None => {
                self.fail(format!("{DIGESTS} is missing"));
                return None;
            }
            Some(m) if m.size % DIGEST_LEN != 0 => {
                self.fail(format!(
                    "{DIGESTS}: {} bytes is not a whole number of 32-byte digests",
                    m.size
                ));
                return None;
            }
            Some(m) => m.size,
        };
        let count = size / DIGEST_LEN;
        if let Some(h) = head {
            if count != h.seq {
                self.fail(format!(
                    "{DIGESTS}: holds {count} digests, but {HEAD} is signed at entry {}",
                    h.seq
                ));
            }
        }
        Some(count)
    }

    /// The entries included in full: their paths by sequence number.
    fn included_entries(&mut self) -> BTreeMap<u64, String> {
        let mut entries = BTreeMap::new();
        let paths: Vec<String> = self
            .members
            .paths_under("audit/")
            .into_iter()
            .filter(|p| p != HEAD && p != DIGESTS)
            .collect();
        for path in paths {
            let seq = path
                .strip_prefix("audit/entries/")
                .and_then(|s| s.strip_suffix(".bin"))
                .and_then(|s| s.parse::<u64>().ok())
                .filter(|s| entry_path(*s) == path);
            match seq {
                Some(seq) => {
                    entries.insert(seq, path);
                }
                None => self.fail(format!("{path}: not a member a bundle can hold")),
            }
        }
        entries
    }

    /// Walks the whole chain by the digests, streamed, noting the place of
    /// each included entry, and checks that it ends at the signed head's
    /// hash. An entry the walk does not reach has no place.
    fn walk_chain(
        &mut self,
        head: Option<&SignedHead>,
        count: Option<u64>,
        included: &BTreeMap<u64, String>,
    ) -> BTreeMap<u64, Place> {
        let mut walk = ChainWalk::default();
        let mut places = BTreeMap::new();
        if let Some(count) = count {
            if let Err(failure) = self.walk_digests(count, included, &mut walk, &mut places) {
                self.fail(failure);
            }
        }
        let count = count.unwrap_or(0);
        if let Some(h) = head {
            if count == h.seq && walk.seq == count && walk.hash != h.hash {
                self.fail(format!(
                    "{DIGESTS}: the digests do not chain to the hash in {HEAD} at entry {} (a digest, or the head, was changed)",
                    h.seq
                ));
            }
        }
        places
    }

    /// Reads `count` digests from `digests.bin`, 32 bytes at a time, and
    /// steps `walk` through them.
    fn walk_digests(
        &mut self,
        count: u64,
        included: &BTreeMap<u64, String>,
        walk: &mut ChainWalk,
        places: &mut BTreeMap<u64, Place>,
    ) -> Result<(), String> {
        let Some(reread) = self.members.reread(DIGESTS)? else {
            return Ok(());
        };
        let mut digests = BufReader::with_capacity(BUF, reread);
        let mut digest = [0u8; DIGEST_LEN as usize];
        for seq in 1..=count {
            if let Err(e) = digests.read_exact(&mut digest) {
                return Err(digests.get_ref().unreadable(e));
            }
            let before = walk.hash;
            walk.step_digest(seq, &digest)
                .map_err(|fault| format!("{DIGESTS}: {fault}"))?;
            if included.contains_key(&seq) {
                places.insert(
                    seq,
                    Place {
                        digest,
                        before,
                        after: walk.hash,
                    },
                );
            }
        }
        digests.into_inner().finish()
    }

    /// Checks one included entry at its place in the chain, when the
    /// digests reach it.
    fn entry(&mut self, seq: u64, bytes: &[u8], place: Option<&Place>) {
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
            Some(place) => {
                if stored.body_digest() != place.digest {
                    self.fail(format!(
                        "{item}: its contents differ from the digest the log holds for entry {seq} (the entry was changed)"
                    ));
                }
                if stored.prev != place.before {
                    self.fail(format!(
                        "{item}: the chain hash it holds of entry {} does not match the log",
                        seq - 1
                    ));
                }
                if stored.hash != place.after {
                    self.fail(format!(
                        "{item}: the chain hash stored with it does not match the log"
                    ));
                }
            }
        }
        self.describe_entry(&item, seq, bytes, failures_before);
    }

    /// Adds an included entry to the report, marked as checking out when
    /// no failure was found since `failures_before`.
    fn describe_entry(&mut self, item: &str, seq: u64, bytes: &[u8], failures_before: usize) {
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
                    actor: clipped(&e.actor.describe()),
                    action: clipped(&e.action),
                    target: clipped(&target.join("; ")),
                    outcome: clipped(&e.outcome.to_string()),
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
