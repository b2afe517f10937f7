//! Case export for court (issue 6): builds a [`crate::bundle`] of one
//! collection from this node's store.
//!
//! The bundle holds every stored version of every record in the collection,
//! of any origin (replicas included), the files they attach that this node
//! holds, the CA certificate of this office and of every origin it still
//! pins, and this office's audit entries that concern the collection or its
//! records, each bound by its inclusion proof to the tree root in a signed
//! head.
//!
//! [`Exporter::start`] is the use case behind `Admin.Export`: it logs the
//! export, signs the audit head, builds the bundle on a blocking thread into
//! pieces the caller streams, and logs how it ended (`export.finished`).
//! [`export`] itself is synchronous and streaming: files are copied
//! through, never held whole, and nothing is written to the store.

use std::collections::{BTreeSet, HashSet};
use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::bundle::{BundleWriter, WriteError};
use crate::domain::audit::{
    Draft, Entry, Outcome, SignedHead, Stored, Target, chain_hash, format_time,
};
use crate::domain::merkle;
use crate::domain::{BlobHash, Limits, OfficeId, now_ms};
use crate::error::{Error, Result};
use crate::identity::{OfficeCa, OfficeSigner, OfficeVerifier};
use crate::service::{AuditLog, Call};
use crate::store::{AuditField, Store, StoreError};

/// Audit entries read from the store at a time.
const AUDIT_PAGE: usize = 4096;

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportSummary {
    pub records: u64,
    pub versions: u64,
    /// Files included, and their bytes.
    pub files: u64,
    pub file_bytes: u64,
    /// Attachments this node does not hold (a replica's file not fetched
    /// yet); listed in the manifest.
    pub missing_files: Vec<BlobHash>,
    /// Origins of included versions that are no longer pinned, so their
    /// certificate could not be included; listed in the manifest.
    pub missing_offices: Vec<OfficeId>,
    /// Audit entries included (those that concern the collection).
    pub audit_entries: u64,
    /// The signed head the audit excerpt is bound to.
    pub audit_head_seq: u64,
}

/// Bytes of the bundle per piece handed to the caller.
const PIECE: usize = 256 * 1024;

/// The bundle's bytes as they are written, in pieces of about 256 KiB; an
/// `Err` ends it.
pub type Pieces = mpsc::Receiver<Result<Bytes>>;

/// Exporting case bundles of this node's collections.
pub struct Exporter {
    pub store: Arc<Store>,
    pub blobs: Arc<super::BlobService>,
    pub ca: Arc<OfficeCa>,
    pub office: OfficeId,
    pub audit: Arc<AuditLog>,
    pub limits: Limits,
}

impl Exporter {
    /// Starts the export of `collection` for `call`: refuses a collection
    /// with no records unless `allow_empty`, logs the export (the last
    /// entry the bundle's excerpt holds), and builds the bundle on a
    /// blocking thread. Once it ends, `export.finished` says how much was
    /// handed on, or why it stopped.
    pub async fn start(
        &self,
        call: &Call,
        collection: String,
        allow_empty: bool,
    ) -> Result<Pieces> {
        Limits::check_text(
            "collection",
            &collection,
            self.limits.max_collection_bytes,
            true,
        )?;
        if !allow_empty && !self.store.collection_has_records(&collection)? {
            return Err(Error::EmptyCollection(collection));
        }
        let mut draft = call.entry(Target {
            collection: collection.clone(),
            ..Target::default()
        });
        draft.target.detail = "case bundle export started".into();
        self.audit.append(draft).await?;
        let head = self.audit.sign_head(false).await?.ok_or_else(|| {
            Error::Store(StoreError::Inconsistent(
                "the audit log has no signed head".into(),
            ))
        })?;
        let (tx, rx) = mpsc::channel(4);
        let (store, ca, office) = (self.store.clone(), self.ca.clone(), self.office.clone());
        let blobs = self.blobs.clone();
        let name = collection.clone();
        let building = tokio::task::spawn_blocking(move || {
            let mut out = PieceWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(PIECE),
                sent: 0,
            };
            let done = export(&store, blobs.as_ref(), &ca, &office, &name, &head, &mut out)
                .and_then(|summary| {
                    out.flush().map_err(|e| write_error(WriteError::Io(e)))?;
                    Ok(summary)
                });
            // The caller gets the error as it is (the gRPC layer hides
            // internal details); the audit log keeps its text.
            let done = done.map_err(|e| {
                let reason = e.to_string();
                tracing::warn!(collection = %name, error = %reason, "export failed");
                let _ = tx.blocking_send(Err(e));
                reason
            });
            (done, out.sent)
        });
        let audit = self.audit.clone();
        let actor = call.actor().clone();
        tokio::spawn(async move {
            let (outcome, detail) = match building.await {
                Ok((Ok(summary), sent)) => (
                    Outcome::ok(),
                    format!(
                        "case bundle sent: {} records, {} versions, {} files, {sent} bytes handed to the connection",
                        summary.records, summary.versions, summary.files
                    ),
                ),
                Ok((Err(reason), sent)) => (
                    Outcome::failed("NOT_COMPLETED", reason),
                    format!("case bundle not completed: stopped after {sent} bytes"),
                ),
                Err(e) => (
                    Outcome::failed("NOT_COMPLETED", e.to_string()),
                    "case bundle not completed: the export stopped".into(),
                ),
            };
            let target = Target {
                collection,
                detail,
                ..Target::default()
            };
            let entry = Draft::new(actor, "export.finished", target, outcome);
            if let Err(e) = audit.append(entry).await {
                tracing::error!(error = %e, "could not log the end of an export");
            }
        });
        Ok(rx)
    }
}

/// Bytes written by the (blocking) exporter, handed on in pieces.
struct PieceWriter {
    tx: mpsc::Sender<Result<Bytes>>,
    buf: Vec<u8>,
    /// Bytes handed on so far.
    sent: u64,
}

impl PieceWriter {
    fn send(&mut self) -> io::Result<()> {
        let piece = Bytes::from(std::mem::take(&mut self.buf));
        let len = piece.len() as u64;
        self.tx
            .blocking_send(Ok(piece))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))?;
        self.sent += len;
        Ok(())
    }
}

impl Write for PieceWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= PIECE {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        Ok(())
    }
}

/// Writes the bundle of `collection` to `out`. `head` must be a head of this
/// office's log that `ca` signed (the newest, so the excerpt is current);
/// the log up to it must check out, or the export fails.
pub fn export(
    store: &Store,
    files: &dyn FileSource,
    ca: &OfficeCa,
    office: &OfficeId,
    collection: &str,
    head: &SignedHead,
    out: impl Write,
) -> Result<ExportSummary> {
    check_head(ca, office, head)?;
    let mut summary = ExportSummary {
        audit_head_seq: head.seq,
        ..ExportSummary::default()
    };
    let mut w = BundleWriter::new(out, collection, office, now_ms());
    let held = add_versions(store, collection, &mut w, &mut summary)?;
    add_offices(store, ca, office, &held.origins, &mut w, &mut summary)?;
    add_files(store, files, &held.attachments, &mut w, &mut summary)?;
    add_audit_excerpt(store, collection, &held.ids, head, &mut w, &mut summary)?;
    w.finish(&OfficeSigner::new(ca)).map_err(write_error)?;
    Ok(summary)
}

/// The head must be this office's, signed by its key: one it did not sign
/// would make a bundle that fails verification.
fn check_head(ca: &OfficeCa, office: &OfficeId, head: &SignedHead) -> Result<()> {
    if ca.office != *office || head.office != office.as_str() {
        return Err(Error::Internal(format!(
            "the office key ({}) and the audit head to export ({}) must both be this office's ({office})",
            ca.office, head.office
        )));
    }
    OfficeVerifier::from_ca_cert(office.clone(), &ca.cert_der)?
        .verify_bytes(&head.canonical(), &head.signature)
        .map_err(|_| {
            Error::Internal(format!(
                "the audit head at entry {} does not carry this office's signature",
                head.seq
            ))
        })
}

/// What the versions of a collection name: its records, their origins and
/// the files they attach.
struct Held {
    ids: Vec<crate::domain::RecordId>,
    origins: BTreeSet<OfficeId>,
    attachments: BTreeSet<BlobHash>,
}

/// Every version of every record of the collection.
fn add_versions<W: Write>(
    store: &Store,
    collection: &str,
    w: &mut BundleWriter<W>,
    summary: &mut ExportSummary,
) -> Result<Held> {
    let ids = store.collection_record_ids(collection)?;
    let mut origins = BTreeSet::new();
    let mut attachments = BTreeSet::new();
    for id in &ids {
        summary.records += 1;
        origins.insert(id.origin());
        for v in store.history(id)? {
            for a in &v.record.attachments {
                attachments.insert(a.hash);
            }
            w.add_version(&v).map_err(write_error)?;
            summary.versions += 1;
        }
    }
    Ok(Held {
        ids,
        origins,
        attachments,
    })
}

/// This office's CA certificate and every origin's it still pins.
fn add_offices<W: Write>(
    store: &Store,
    ca: &OfficeCa,
    office: &OfficeId,
    origins: &BTreeSet<OfficeId>,
    w: &mut BundleWriter<W>,
    summary: &mut ExportSummary,
) -> Result<()> {
    w.add_office(office, &ca.cert_der).map_err(write_error)?;
    for origin in origins.iter().filter(|o| *o != office) {
        match store.peer(origin)? {
            Some(peer) => w.add_office(origin, &peer.ca_der).map_err(write_error)?,
            None => {
                w.add_missing_office(origin);
                summary.missing_offices.push(origin.clone());
            }
        }
    }
    Ok(())
}

/// The attached files this node holds, each pinned while it is copied.
fn add_files<W: Write>(
    store: &Store,
    files: &dyn FileSource,
    attachments: &BTreeSet<BlobHash>,
    w: &mut BundleWriter<W>,
    summary: &mut ExportSummary,
) -> Result<()> {
    for hash in attachments {
        let _pin = store.pin_blob(*hash);
        let Some(meta) = store.blob(hash)? else {
            w.add_missing_file(hash);
            summary.missing_files.push(*hash);
            continue;
        };
        let mut reader = files.open(hash, meta.size)?;
        let added = w.add_file(hash, meta.size, &mut reader);
        if let Some(e) = reader.error() {
            return Err(e);
        }
        added.map_err(write_error)?;
        summary.files += 1;
        summary.file_bytes += meta.size;
    }
    Ok(())
}

/// The entries that concern the collection or its records, each with its
/// inclusion proof in the tree the head signed, then the head. Each proof
/// is checked before it is written, so a damaged entry or tree node fails
/// the export instead of making a bundle that fails verification.
fn add_audit_excerpt<W: Write>(
    store: &Store,
    collection: &str,
    ids: &[crate::domain::RecordId],
    head: &SignedHead,
    w: &mut BundleWriter<W>,
    summary: &mut ExportSummary,
) -> Result<()> {
    let root = match head.root {
        Some(root) => root,
        None => {
            return Err(Error::Internal(format!(
                "the audit head at entry {} carries no tree root: sign a new head to export",
                head.seq
            )));
        }
    };
    let log = store.audit_head()?;
    if log.seq < head.seq {
        return Err(Error::AuditLogBroken(format!(
            "this office's audit log ends at entry {}, before its signed head at entry {}",
            log.seq, head.seq
        )));
    }
    let hash_there = match head.seq {
        0 => crate::domain::audit::GENESIS,
        seq => store
            .audit_entry(seq)?
            .ok_or_else(|| broken(seq, "it is missing"))?
            .hash(),
    };
    let signed_tree =
        store.audit_tree_size()? >= head.seq && store.audit_tree_root(head.seq)? == root;
    if hash_there != head.hash || !signed_tree {
        return Err(Error::AuditLogBroken(format!(
            "this office's audit log up to entry {} is not the log it signed at {}: run `casemesh audit verify`",
            head.seq,
            format_time(head.at_ms)
        )));
    }
    for seq in concerning_entries(store, collection, ids, head.seq)? {
        let stored = match store.audit_raw(seq - 1, 1)?.pop() {
            Some((s, bytes)) if s == seq => bytes,
            _ => return Err(broken(seq, "it is missing")),
        };
        let parts = Stored::split(&stored).map_err(|e| broken(seq, e))?;
        let hash = chain_hash(&parts.prev, seq, &parts.body_digest());
        let proof = store.audit_inclusion_proof(seq, head.seq)?;
        if hash != parts.hash
            || !merkle::verify_inclusion(
                &merkle::leaf_hash(&hash),
                seq - 1,
                head.seq,
                &proof,
                &root,
            )
        {
            return Err(broken(seq, "it is not the entry the signed tree holds"));
        }
        w.add_audit_entry(head.seq, seq, &stored, &proof)
            .map_err(write_error)?;
        summary.audit_entries += 1;
    }
    w.add_audit_head(head).map_err(write_error)
}

/// The entries up to `upto` that concern the collection or one of its
/// records, in order: found by the audit index, reading only those (and
/// any part of a log written before the index that is not indexed yet).
fn concerning_entries(
    store: &Store,
    collection: &str,
    ids: &[crate::domain::RecordId],
    upto: u64,
) -> Result<Vec<u64>> {
    let mut found = BTreeSet::new();
    let terms = ids
        .iter()
        .map(|id| (AuditField::Record, id.as_str()))
        .chain([(AuditField::Collection, collection)]);
    for (field, value) in terms {
        found.extend(store.audit_term_seqs(field, value, upto)?);
    }
    if let Some((done, end)) = store.audit_unindexed()? {
        let names: HashSet<&str> = ids.iter().map(|id| id.as_str()).collect();
        let mut after = done;
        let end = end.min(upto);
        while after < end {
            let page = store.audit_raw(after, (end - after).min(AUDIT_PAGE as u64) as usize)?;
            let Some((last, _)) = page.last() else {
                return Err(broken(after + 1, "it is missing"));
            };
            after = *last;
            for (seq, bytes) in page.into_iter().filter(|(seq, _)| *seq <= end) {
                let e = Entry::decode(&bytes).map_err(|e| broken(seq, e))?;
                let concerns = e.target.collection == collection
                    || e.target
                        .records
                        .iter()
                        .any(|(r, _)| names.contains(r.as_str()));
                if concerns {
                    found.insert(seq);
                }
            }
        }
    }
    Ok(found.into_iter().collect())
}

fn broken(seq: u64, why: impl std::fmt::Display) -> Error {
    Error::AuditLogBroken(format!(
        "audit entry {seq} cannot be exported: {why}; run `casemesh audit verify`"
    ))
}

fn write_error(e: WriteError) -> Error {
    match e {
        WriteError::Io(e) => Error::BundleNotWritten(e.to_string()),
        WriteError::Sign(e) => Error::Identity(e),
        e @ WriteError::File { .. } => Error::Store(StoreError::Inconsistent(e.to_string())),
        e => Error::Internal(e.to_string()),
    }
}

/// Where a bundle's files are read from.
pub trait FileSource {
    /// A reader of the whole file `hash` of `size` bytes; it fails if the
    /// bytes read do not hash to `hash`.
    fn open(&self, hash: &BlobHash, size: u64) -> Result<Box<dyn FileReader + '_>>;
}

/// A file's bytes for a bundle, and why reading them failed.
pub trait FileReader: Read {
    /// Why the last read failed, as the node's error (the bundle writer
    /// sees only an I/O error).
    fn error(&mut self) -> Option<Error>;
}

impl FileSource for super::BlobService {
    fn open(&self, hash: &BlobHash, size: u64) -> Result<Box<dyn FileReader + '_>> {
        Ok(Box::new(self.reader(*hash, size)?))
    }
}

impl FileReader for super::blobs::BlobReader<'_> {
    fn error(&mut self) -> Option<Error> {
        super::blobs::BlobReader::error(self)
    }
}

#[cfg(test)]
pub(crate) mod tests {

    use super::*;
    use crate::bundle::verify;
    use crate::domain::audit::{Actor, Draft, Outcome, Target};
    use crate::domain::sharing::Peer;
    use crate::domain::{Attachment, RecordId, SignedVersion, UserName};

    /// Files held in memory, for the bundle's logic alone.
    #[derive(Default)]
    struct Files(std::collections::HashMap<BlobHash, Vec<u8>>);

    impl FileSource for Files {
        fn open(&self, hash: &BlobHash, _: u64) -> Result<Box<dyn FileReader + '_>> {
            Ok(Box::new(&self.0[hash][..]))
        }
    }

    impl FileReader for &[u8] {
        fn error(&mut self) -> Option<Error> {
            None
        }
    }
    use crate::store::{ApplyItem, StoreOptions};

    const CASE: &str = "case-9";

    fn office(name: &str) -> (OfficeCa, OfficeId) {
        let id = OfficeId::parse(name).unwrap();
        let (ca, _) = OfficeCa::create(&id, &[], &UserName::parse("admin").unwrap()).unwrap();
        (ca, id)
    }

    fn open(dir: &tempfile::TempDir) -> Store {
        Store::open(dir.path(), "phila-da", &StoreOptions::for_tests()).unwrap()
    }

    use crate::identity::signing::test_support::signed;

    fn put(store: &Store, v: &SignedVersion) {
        let draft = Draft::new(
            Actor::node("phila-da"),
            "Records.Put",
            Target::record(v.record.id.as_str(), v.record.version),
            Outcome::ok(),
        );
        let expected = (v.record.version > 1).then(|| v.record.version - 1);
        store.append_version(v, expected, &[], &[draft]).unwrap();
    }

    fn upload(store: &Store, files: &mut Files, bytes: &[u8]) -> Attachment {
        let (hash, size) = (BlobHash::of(bytes), bytes.len() as u64);
        store
            .record_blob(&hash, size, now_ms() + 60_000, None)
            .unwrap();
        files.0.insert(hash, bytes.to_vec());
        Attachment {
            hash,
            size,
            file_name: "video.bin".into(),
            media_type: "application/octet-stream".into(),
        }
    }

    fn sign_head(store: &Store, ca: &OfficeCa) -> SignedHead {
        let h = store.audit_head().unwrap();
        let (_, root) = store.extend_audit_tree(h.seq).unwrap();
        let mut head = SignedHead {
            office: ca.office.to_string(),
            seq: h.seq,
            hash: h.hash,
            root: Some(root),
            at_ms: now_ms(),
            signature: Vec::new(),
        };
        head.signature = OfficeSigner::new(ca).sign_bytes(&head.canonical()).unwrap();
        head
    }

    /// phila-da holds two versions of its own record in the case (the
    /// second with a file of several chunks), one record in another case, a
    /// replica from camden-da (pinned) whose file it has not fetched, and a
    /// replica from gone-da (no longer pinned).
    struct Node {
        _dir: tempfile::TempDir,
        store: Store,
        files: Files,
        home: OfficeCa,
        home_id: OfficeId,
        camden: OfficeCa,
        ours: RecordId,
        elsewhere: RecordId,
        not_fetched: BlobHash,
    }

    /// The node's case bundle up to `head`, written to `out`.
    fn export_of(n: &Node, head: &SignedHead, out: impl Write) -> Result<ExportSummary> {
        export(&n.store, &n.files, &n.home, &n.home_id, CASE, head, out)
    }

    fn node() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let (home, home_id) = office("phila-da");
        let (camden, camden_id) = office("camden-da");
        let (gone, gone_id) = office("gone-da");

        let ours = RecordId::generate(&home_id, 1, [1; 10]);
        let elsewhere = RecordId::generate(&home_id, 1, [2; 10]);
        let bytes: Vec<u8> = (0..3 * 2048 + 100).map(|i| (i % 251) as u8).collect();
        let mut files = Files::default();
        let file = upload(&store, &mut files, &bytes);
        put(&store, &signed(&home, &ours, 1, CASE, Vec::new()));
        put(&store, &signed(&home, &ours, 2, CASE, vec![file]));
        put(&store, &signed(&home, &elsewhere, 1, "case-10", Vec::new()));

        let peer = Peer {
            office: camden_id.clone(),
            endpoint: "https://camden.example:7000".into(),
            ca_der: camden.cert_der.to_vec(),
            added_at_ms: 1,
        };
        store.put_peer(&peer, &[]).unwrap();
        let not_fetched = Attachment {
            hash: BlobHash::of(b"a statement camden-da holds"),
            size: 27,
            file_name: "statement.pdf".into(),
            media_type: "application/pdf".into(),
        };
        let theirs = RecordId::generate(&camden_id, 1, [3; 10]);
        let replica = signed(&camden, &theirs, 1, CASE, vec![not_fetched.clone()]);
        let items = [ApplyItem::Version(Box::new(replica))];
        store
            .apply_batch(&camden_id, &items, 1, now_ms(), &[])
            .unwrap();
        let orphan = RecordId::generate(&gone_id, 1, [4; 10]);
        let items = [ApplyItem::Version(Box::new(signed(
            &gone,
            &orphan,
            1,
            CASE,
            Vec::new(),
        )))];
        store
            .apply_batch(&gone_id, &items, 1, now_ms(), &[])
            .unwrap();

        store
            .audit(&[Draft::new(
                Actor::node("phila-da"),
                "Admin.ListUsers",
                Target::default(),
                Outcome::ok(),
            )])
            .unwrap();
        Node {
            _dir: dir,
            files,
            store,
            home,
            home_id,
            camden,
            ours,
            elsewhere,
            not_fetched: not_fetched.hash,
        }
    }

    #[test]
    fn a_collection_exports_to_a_bundle_that_verifies_offline() {
        let n = node();
        let head = sign_head(&n.store, &n.home);
        let mut out = Vec::new();
        let summary = export_of(&n, &head, &mut out).unwrap();

        assert_eq!((summary.records, summary.versions), (3, 4), "{summary:?}");
        assert_eq!(summary.files, 1);
        assert_eq!(summary.file_bytes, 3 * 2048 + 100);
        assert_eq!(summary.missing_files, [n.not_fetched]);
        assert_eq!(
            summary.missing_offices,
            [OfficeId::parse("gone-da").unwrap()]
        );
        assert_eq!(summary.audit_head_seq, head.seq);
        // Both puts of our record, and one applied batch per replica; not
        // the upload, the other case, or the listing of users.
        assert_eq!(summary.audit_entries, 4, "{summary:?}");

        let trusted = [n.home.fingerprint(), n.camden.fingerprint()];
        let report = verify(std::io::Cursor::new(&out), &trusted).unwrap();
        assert!(report.is_verified(), "{report}");
        let text = report.to_string();
        for expected in [
            n.ours.as_str(),
            "by camden-da",
            "by gone-da",
            "signature NOT CHECKED (no certificate)",
            "present, hash ok",
            "MISSING (not held by the exporting office)",
            "Records.Put",
            "replica.applied",
        ] {
            assert!(text.contains(expected), "missing {expected:?}:\n{text}");
        }
        assert!(!text.contains(n.elsewhere.as_str()), "{text}");
        assert!(!text.contains("Admin.ListUsers"), "{text}");
    }

    /// A log written before the audit index: until the index reaches them,
    /// its entries are found by reading them, and the bundle holds the
    /// same excerpt.
    #[test]
    fn entries_not_indexed_yet_are_found_for_the_excerpt() {
        let n = node();
        let head = sign_head(&n.store, &n.home);
        let indexed = export_of(&n, &head, Vec::new()).unwrap();
        n.store.forget_audit_index().unwrap();
        // Opened again, as by a node of this version on an older store.
        let Node {
            _dir,
            store,
            files,
            home,
            home_id,
            camden,
            ours,
            elsewhere,
            not_fetched,
        } = n;
        drop(store);
        let n = Node {
            store: open(&_dir),
            _dir,
            files,
            home,
            home_id,
            camden,
            ours,
            elsewhere,
            not_fetched,
        };
        assert!(n.store.audit_unindexed().unwrap().is_some());
        let mut out = Vec::new();
        let scanned = export_of(&n, &head, &mut out).unwrap();
        assert_eq!(scanned.audit_entries, indexed.audit_entries);
        let trusted = [n.home.fingerprint(), n.camden.fingerprint()];
        let report = verify(std::io::Cursor::new(&out), &trusted).unwrap();
        assert!(report.is_verified(), "{report}");
        // Half indexed: the rest is read.
        n.store.index_audit_step(2).unwrap();
        let half = export_of(&n, &head, Vec::new()).unwrap();
        assert_eq!(half.audit_entries, indexed.audit_entries);
    }

    #[test]
    fn a_head_that_does_not_match_this_log_is_refused() {
        let n = node();
        let mut head = sign_head(&n.store, &n.home);
        head.hash[0] ^= 1;
        head.signature = OfficeSigner::new(&n.home)
            .sign_bytes(&head.canonical())
            .unwrap();
        let err = export_of(&n, &head, Vec::new()).unwrap_err();
        assert!(matches!(err, Error::AuditLogBroken(_)), "{err}");
        assert!(err.to_string().contains("not the log it signed"), "{err}");

        // A head beyond the log's end.
        let mut head = sign_head(&n.store, &n.home);
        head.seq += 5;
        head.signature = OfficeSigner::new(&n.home)
            .sign_bytes(&head.canonical())
            .unwrap();
        let err = export_of(&n, &head, Vec::new()).unwrap_err();
        assert!(err.to_string().contains("ends at entry"), "{err}");

        // A head changed after it was signed.
        let mut head = sign_head(&n.store, &n.home);
        head.at_ms += 1;
        let err = export_of(&n, &head, Vec::new()).unwrap_err();
        assert!(err.to_string().contains("signature"), "{err}");

        // Another office's head.
        let head = sign_head(&n.store, &n.camden);
        let err = export_of(&n, &head, Vec::new()).unwrap_err();
        assert!(err.to_string().contains("camden-da"), "{err}");
    }

    #[test]
    fn a_head_older_than_the_log_exports_the_log_up_to_it() {
        let n = node();
        let head = sign_head(&n.store, &n.home);
        put(&n.store, &signed(&n.home, &n.ours, 3, CASE, Vec::new()));
        let mut out = Vec::new();
        let summary = export_of(&n, &head, &mut out).unwrap();
        // Version 3 is in, its entry is past the head and not.
        assert_eq!(summary.versions, 5);
        assert_eq!(summary.audit_entries, 4);
        let trusted = [n.home.fingerprint(), n.camden.fingerprint()];
        let report = verify(std::io::Cursor::new(&out), &trusted).unwrap();
        assert!(report.is_verified(), "{report}");
    }
}
