//! Entry points of the fuzz targets in `fuzz/`, and the seeds they start
//! from. Not part of casemesh's interface: hidden from its documentation,
//! for the fuzz crate only, which sees nothing but the public API.
//!
//! Each entry point takes any bytes and runs one surface that reads what
//! comes from outside: a stored value, the canonical encoding of a record
//! version, an audit entry or signed head, a feed item, a case bundle, a
//! request a client or a peer sends. It returns on every input and panics
//! only when a property fails: decoding then encoding gives the same value
//! back, and an encoding the decoders accept is the only one of its value.

use std::io::Cursor;

use bytes::Bytes;
use prost::Message;

use crate::domain::audit::{Actor, ChainWalk, Draft, Entry, Outcome, SignedHead, Target, clip};
use crate::domain::codec::{Reader, Writer};
use crate::domain::rejection::{FeedRejection, PeerRejections};
use crate::domain::sharing::encoding::{decode_item, encode_item, read_ack, write_ack};
use crate::domain::sharing::{FeedItem, GrantId, PurgeAck};
use crate::domain::{
    Attachment, BlobHash, Limits, OfficeId, RecordId, RecordVersion, SignedVersion, UserName,
    format_time,
};
use crate::grpc::{server_admin, server_records};
use crate::identity::{Fingerprint, IdentityError, OfficeCa, OfficeSigner, OfficeVerifier};
use crate::protocol::convert;
use crate::protocol::pb::{self, feed_entry, pull_down, pull_up};

/// The stored values and keys: every decoder of [`crate::store`].
pub fn store_values(bytes: &[u8]) {
    crate::store::fuzzing::decode_any(bytes);
}

/// The canonical encoding that offices sign: bytes that decode are the
/// encoding of the version they decode to, byte for byte.
pub fn record_canonical(bytes: &[u8]) {
    let Ok(v) = RecordVersion::from_canonical(bytes) else {
        return;
    };
    assert_eq!(
        hex::encode(v.canonical()),
        hex::encode(bytes),
        "a version decoded from bytes that are not its canonical encoding"
    );
    let _ = v.check_replica_shape();
}

/// An audit entry as the log stores it, the walk that checks it, and a
/// signed head.
pub fn audit_entry(bytes: &[u8]) {
    if let Ok(e) = Entry::decode(bytes) {
        // The chain covers the body's bytes: they must be the entry's.
        assert_eq!(
            hex::encode(e.body()),
            hex::encode(&bytes[64..]),
            "an entry's body is not the encoding of its fields"
        );
        assert_eq!(Entry::decode(&e.encode()).as_ref(), Ok(&e));
        let _ = (
            e.actor.describe(),
            e.outcome.to_string(),
            format_time(e.at_ms),
        );
    }
    let _ = ChainWalk::default().step_stored(1, bytes);
    if let Ok(h) = SignedHead::decode(bytes) {
        assert_eq!(hex::encode(h.encode()), hex::encode(bytes));
        let _ = (h.canonical(), format_time(h.at_ms));
    }
}

/// A feed item, and a purge acknowledgement as a grant stores it: both
/// encodings are strict, so what decodes encodes to the same bytes.
pub fn feed_item(bytes: &[u8]) {
    if let Ok(item) = decode_item(bytes) {
        assert_eq!(hex::encode(encode_item(&item)), hex::encode(bytes));
    }
    let mut r = Reader::new(bytes);
    if let Ok(ack) = read_ack(&mut r) {
        let read = r.consumed();
        let mut w = Writer::default();
        write_ack(&mut w, &ack);
        assert_eq!(hex::encode(w.finish()), hex::encode(read));
        let _ = ack.canonical();
    }
}

/// A case bundle, as `verify-bundle` reads it: a report or an error. Half
/// of the inputs are checked against a fingerprint given with `--trust`.
pub fn bundle_verify(bytes: &[u8]) {
    let trusted = [Fingerprint([7; 32])];
    let trusted = if bytes.len() % 2 == 1 {
        &trusted[..]
    } else {
        &[]
    };
    if let Ok(report) = crate::bundle::verify(Cursor::new(bytes), trusted) {
        let _ = report.to_string();
    }
}

/// A case bundle built from members the input describes (see
/// [`members_from`]), so that the fuzzer changes names, sizes and contents
/// without first having to forge tar headers and their checksums.
pub fn bundle_members(bytes: &[u8]) {
    if let Some(archive) = archive_of(&members_from(bytes)) {
        bundle_verify(&archive);
    }
}

/// Reads members as `name length (u8) ‖ name ‖ size (u16) ‖ contents`,
/// repeated; the last one takes what is left if it is short.
pub fn members_from(mut bytes: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut members = Vec::new();
    while let Some((&n, rest)) = bytes.split_first() {
        let (name, rest) = rest.split_at(usize::from(n).min(rest.len()));
        let (size, rest) = match rest {
            [a, b, rest @ ..] => (usize::from(u16::from_be_bytes([*a, *b])), rest),
            _ => (0, &[][..]),
        };
        let (contents, rest) = rest.split_at(size.min(rest.len()));
        members.push((name.to_vec(), contents.to_vec()));
        bytes = rest;
    }
    members
}

/// The inverse of [`members_from`], for seeds.
pub fn members_to(members: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, contents) in members {
        out.push(name.len().min(255) as u8);
        out.extend_from_slice(&name[..name.len().min(255)]);
        let size = contents.len().min(usize::from(u16::MAX));
        out.extend_from_slice(&(size as u16).to_be_bytes());
        out.extend_from_slice(&contents[..size]);
    }
    out
}

/// A tar archive of `members`, each under the bundle's root; none if a
/// name cannot be written in a tar header.
fn archive_of(members: &[(Vec<u8>, Vec<u8>)]) -> Option<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, contents) in members {
        let mut path = crate::bundle::ROOT.as_bytes().to_vec();
        path.extend_from_slice(name);
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        // Long names go as GNU long-name entries, as the writer makes them.
        tar.append_data(&mut header, bytes_path(&path)?, &contents[..])
            .ok()?;
    }
    tar.into_inner().ok()
}

fn bytes_path(path: &[u8]) -> Option<&std::path::Path> {
    std::str::from_utf8(path).ok().map(std::path::Path::new)
}

/// The kinds of request [`Requests::check`] reads, in the order of the
/// input's first byte (taken modulo their number): every request of the
/// `Records`, `Admin` and `Replication` services, and `PullDown`, what an
/// origin sends a puller.
pub const REQUESTS: [&str; 24] = [
    "Records.Put",
    "Records.Get",
    "Records.History",
    "Records.List",
    "Records.Delete",
    "Records.PutBlob",
    "Records.GetBlob",
    "Admin.IssueUser",
    "Admin.RevokeUser",
    "Admin.ListUsers",
    "Admin.Status",
    "Admin.AddPeer",
    "Admin.RemovePeer",
    "Admin.ListPeers",
    "Admin.Grant",
    "Admin.Revoke",
    "Admin.ListGrants",
    "Admin.QueryAudit",
    "Admin.VerifyAudit",
    "Admin.WitnessAudit",
    "Admin.Export",
    "Replication.Pull",
    "Replication.FetchBlob",
    "Replication.ProveAudit",
];

/// Requests from clients and peers, decoded from any bytes and converted
/// as the handlers convert them, with the checks a service makes before it
/// reads the store. Holds an office of its own, whose key checks what a
/// peer signs.
pub struct Requests {
    ca: OfficeCa,
    verifier: OfficeVerifier,
    limits: Limits,
}

/// The office [`Requests`] plays, as an origin and as a peer.
const FUZZ_OFFICE: &str = "fuzz-da";

impl Requests {
    pub fn new() -> Result<Self, IdentityError> {
        let office = OfficeId::parse(FUZZ_OFFICE).map_err(|e| IdentityError::parse("office", e))?;
        let admin = UserName::parse("admin").map_err(|e| IdentityError::parse("admin", e))?;
        let (ca, _) = OfficeCa::create(&office, &[], &admin)?;
        let verifier = OfficeVerifier::from_ca_cert(office, &ca.cert_der)?;
        Ok(Self {
            ca,
            verifier,
            limits: Limits::default(),
        })
    }

    /// The first byte picks the kind ([`REQUESTS`], or past them `PullDown`);
    /// the rest is the message.
    pub fn check(&self, bytes: &[u8]) {
        let Some((&kind, m)) = bytes.split_first() else {
            return;
        };
        match REQUESTS.get(usize::from(kind) % (REQUESTS.len() + 1)) {
            Some(kind) => self.request(kind, m),
            None => self.pull_down(m),
        }
    }

    fn request(&self, kind: &str, m: &[u8]) {
        match kind {
            "Records.Put" => {
                let Ok(r) = pb::PutRequest::decode(m) else {
                    return;
                };
                let _ = (clip(&r.id), clip(&r.collection));
                if let Ok(cmd) = server_records::put_command(r) {
                    let _ = cmd.draft.validate(&self.limits);
                }
            }
            "Records.Get" => {
                let Ok(r) = pb::GetRequest::decode(m) else {
                    return;
                };
                let _ = Target::record(&r.id, r.version.unwrap_or(0));
                let _ = convert::record_id(&r.id);
            }
            "Records.History" => record_id::<pb::HistoryRequest>(m, |r| &r.id),
            "Records.Delete" => record_id::<pb::DeleteRequest>(m, |r| &r.id),
            "Records.List" => {
                let Ok(r) = pb::ListRequest::decode(m) else {
                    return;
                };
                let _ = clip(&format!("origin {:?}, page {:?}", r.origin, r.page_token));
                if let Ok(page) = server_records::page_request(r) {
                    let _ = page.after();
                }
            }
            "Records.PutBlob" => {
                let _ = pb::PutBlobRequest::decode(m);
            }
            "Records.GetBlob" => {
                let Ok(r) = pb::GetBlobRequest::decode(m) else {
                    return;
                };
                let _ = convert::blob_hash(&r.hash);
            }
            "Admin.IssueUser" => {
                let Ok(r) = pb::IssueUserRequest::decode(m) else {
                    return;
                };
                if let Ok((name, role)) = server_admin::new_user(&r) {
                    let _ = self.ca.issue_user_from_csr(&name, role, &r.csr_der);
                }
            }
            "Admin.RevokeUser" => {
                let Ok(r) = pb::RevokeUserRequest::decode(m) else {
                    return;
                };
                let _ = server_admin::user_to_revoke(r);
            }
            "Admin.AddPeer" => {
                let Ok(r) = pb::AddPeerRequest::decode(m) else {
                    return;
                };
                let _ = clip(&format!("endpoint {}", r.endpoint));
                if let Ok((office, _)) = server_admin::peer_to_add(&r) {
                    let _ = crate::service::sharing::checked_peer_ca(
                        &office,
                        &r.endpoint,
                        &r.ca_certificate_pem,
                    );
                }
            }
            "Admin.RemovePeer" => {
                let Ok(r) = pb::RemovePeerRequest::decode(m) else {
                    return;
                };
                let _ = convert::office_id("office", &r.office);
            }
            "Admin.Grant" => {
                let Ok(r) = pb::GrantRequest::decode(m) else {
                    return;
                };
                let _ = server_admin::grant_request(&r.peer, r.target);
            }
            "Admin.Revoke" => {
                let Ok(r) = pb::RevokeRequest::decode(m) else {
                    return;
                };
                let _ = GrantId::parse(&r.grant_id);
            }
            "Admin.ListGrants" => {
                let Ok(r) = pb::ListGrantsRequest::decode(m) else {
                    return;
                };
                if !r.peer.is_empty() {
                    let _ = convert::office_id("peer", &r.peer);
                }
            }
            "Admin.QueryAudit" => {
                let Ok(r) = pb::QueryAuditRequest::decode(m) else {
                    return;
                };
                let _ = server_admin::audit_query(r);
            }
            "Admin.WitnessAudit" => {
                let Ok(r) = pb::WitnessAuditRequest::decode(m) else {
                    return;
                };
                let _ = convert::office_id("peer", &r.peer);
            }
            "Admin.Export" => {
                let Ok(r) = pb::ExportRequest::decode(m) else {
                    return;
                };
                let _ = clip(&r.collection);
            }
            "Replication.Pull" => self.pull_up(m),
            "Replication.FetchBlob" => {
                let Ok(r) = pb::FetchBlobRequest::decode(m) else {
                    return;
                };
                let _ = convert::blob_hash(&r.hash);
            }
            // Requests with no fields: decoding is all there is.
            _ => {
                let _ = pb::StatusRequest::decode(m);
            }
        }
    }

    /// What a peer sends on `Pull`: where it starts, how far it applied,
    /// purge acknowledgements it signed, and versions it rejected.
    fn pull_up(&self, m: &[u8]) {
        let Ok(up) = pb::PullUp::decode(m) else {
            return;
        };
        match up.kind {
            Some(pull_up::Kind::PurgeAck(a)) => {
                let _ = clip(&format!("grant {}", a.grant_id));
                if let Ok(ack) = convert::purge_ack_from_pb(a) {
                    let _ = self.verifier.verify_bytes(&ack.canonical(), &ack.signature);
                }
            }
            Some(pull_up::Kind::Rejected(r)) => {
                let kept = FeedRejection::reported(
                    &self.ca.office,
                    r.seq,
                    &r.record_id,
                    r.version,
                    &r.reason,
                    1,
                );
                let mut held = PeerRejections::default();
                held.report(kept.clone());
                let _ = (kept.describe(), held.view());
            }
            _ => {}
        }
    }

    /// What an origin sends a puller: batches of feed entries, heartbeats,
    /// and confirmations of purge acknowledgements.
    fn pull_down(&self, m: &[u8]) {
        let Ok(down) = pb::PullDown::decode(m) else {
            return;
        };
        match down.kind {
            Some(pull_down::Kind::Batch(b)) => {
                for e in b.entries {
                    self.feed_entry(e);
                }
                self.head(b.audit_head);
            }
            Some(pull_down::Kind::Heartbeat(h)) => self.head(h.audit_head),
            Some(pull_down::Kind::PurgeAckStored(s)) => {
                let _ = GrantId::parse(&s.grant_id);
            }
            None => {}
        }
    }

    fn feed_entry(&self, e: pb::FeedEntry) {
        let origin = &self.ca.office;
        match e.kind {
            Some(feed_entry::Kind::Version(v)) => {
                let _ = crate::sync::puller::verify(
                    &self.verifier,
                    v.canonical.clone(),
                    v.signature.clone(),
                );
                // Made-up signatures never verify, which stops the check
                // before the version's shape: check that on its own too.
                if let Ok(s) = SignedVersion::from_parts(v.canonical, v.signature) {
                    let _ = s.record.check_replica_shape();
                }
            }
            Some(feed_entry::Kind::RevokeRecordId(id)) => {
                let _ = crate::sync::puller::revocation(origin, &id);
            }
            Some(feed_entry::Kind::GrantClosed(g)) => {
                let _ = GrantId::parse(&g);
            }
            None => {}
        }
    }

    fn head(&self, head: Option<pb::SignedAuditHead>) {
        let Some(h) = head else { return };
        if let Ok(h) = convert::signed_head_from_pb(&h) {
            let _ = crate::service::audit::check_peer_head(&self.ca.office, &self.verifier, &h);
        }
    }
}

/// A request whose only field the handler reads is a record id.
fn record_id<M: Message + Default>(m: &[u8], id: impl Fn(&M) -> &String) {
    if let Ok(r) = M::decode(m) {
        let _ = clip(id(&r));
        let _ = convert::record_id(id(&r));
    }
}

/// One seed: the target it is for, a name, the input.
pub struct Seed {
    pub target: &'static str,
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Inputs that pass every check, one or a few per target, for the fuzzer
/// to start from (`cargo run --example fuzz_seeds`).
pub fn seeds() -> Result<Vec<Seed>, String> {
    let mut out = Vec::new();
    let mut seed = |target: &'static str, name: &str, bytes: Vec<u8>| {
        out.push(Seed {
            target,
            name: name.to_owned(),
            bytes,
        })
    };
    for (name, bytes) in crate::store::fuzzing::samples() {
        seed("store_values", name, bytes);
    }
    let requests = Requests::new().map_err(|e| e.to_string())?;
    let ca = &requests.ca;
    let signer = OfficeSigner::new(ca);
    let plain = sample_version(&ca.office, Vec::new());
    let attached = sample_version(
        &ca.office,
        vec![Attachment {
            hash: BlobHash::of(b"footage"),
            size: 7,
            file_name: "clip.mp4".into(),
            media_type: "video/mp4".into(),
        }],
    );
    seed("record_canonical", "v1", plain.canonical());
    seed("record_canonical", "v2", attached.canonical());
    let about = RecordVersion {
        subjects: crate::domain::subject::canonical_order(vec![
            crate::domain::Subject::new("badge", "#4471", "officer-involved")
                .map_err(|e| e.to_string())?,
            crate::domain::Subject::new("plate", "7XKD203", "").map_err(|e| e.to_string())?,
        ]),
        ..plain.clone()
    };
    seed("record_canonical", "v3", about.canonical());
    let (entries, head) = sample_log(ca)?;
    for (i, e) in entries.iter().enumerate() {
        seed("audit_entry", &format!("entry-v{}", i + 1), e.clone());
    }
    seed("audit_entry", "signed-head", head.encode());
    let id = plain.id.clone();
    for (name, item) in [
        (
            "versions",
            FeedItem::Versions {
                id: id.clone(),
                from: 1,
                to: 2,
            },
        ),
        ("revoke", FeedItem::Revoke { id: id.clone() }),
        (
            "grant-closed",
            FeedItem::GrantClosed {
                grant: GrantId::generate([1; 8]),
            },
        ),
    ] {
        seed("feed_item", name, encode_item(&item));
    }
    let ack = PurgeAck {
        grant: GrantId::generate([1; 8]),
        origin: ca.office.clone(),
        purged_by: ca.office.clone(),
        purged_at_ms: 1_790_000_000_000,
        signature: vec![1, 2, 3],
    };
    let mut w = Writer::default();
    write_ack(&mut w, &ack);
    seed("feed_item", "purge-ack", w.finish());

    let signed = signer.sign(attached.clone()).map_err(|e| e.to_string())?;
    let bundle = sample_bundle(ca, &signed, &entries, &head)?;
    seed("bundle_members", "bundle", members_to(&members_of(&bundle)));
    seed("bundle_verify", "bundle", bundle);

    for (kind, bytes) in sample_requests(ca, &signed, &head)? {
        seed("requests", kind, bytes);
    }
    Ok(out)
}

fn sample_version(office: &OfficeId, attachments: Vec<Attachment>) -> RecordVersion {
    let id = RecordId::generate(office, 1_790_000_000_000, [3; 10]);
    RecordVersion {
        id,
        version: 1,
        origin: office.clone(),
        collection: "2026-0042".into(),
        kind: "incident-report".into(),
        title: "Stop on Broad St".into(),
        content_type: "text/plain".into(),
        labels: [
            ("agency".to_owned(), "cbp".to_owned()),
            ("unit".to_owned(), "7".to_owned()),
        ]
        .into(),
        body: Bytes::from_static(b"witness saw ..."),
        created_at_ms: 1_790_000_000_000,
        updated_at_ms: 1_790_000_000_000,
        deleted: false,
        attachments,
        subjects: Vec::new(),
    }
}

/// Two stored entries (the first unsalted, as version 1 wrote them) and
/// a head signed at the second.
fn sample_log(ca: &OfficeCa) -> Result<(Vec<Vec<u8>>, SignedHead), String> {
    let mut prev = crate::domain::audit::GENESIS;
    let mut stored = Vec::new();
    let mut tree = crate::domain::merkle::Frontier::default();
    for seq in 1..=2u64 {
        let draft = Draft {
            at_ms: 1_790_000_000_000 + seq,
            ..Draft::new(
                Actor::peer("nyc-da"),
                "Records.Get",
                Target::record("fuzz-da:0123456789abcdef0123456789abcdef", seq),
                Outcome::failed("NOT_FOUND", "no such record"),
            )
        };
        let mut e = Entry::salted(draft, seq, ca.office.as_str(), prev, [9; 16]);
        if seq == 1 {
            e.salt = None;
        }
        prev = e.hash();
        tree.push(crate::domain::merkle::leaf_hash(&prev));
        stored.push(e.encode());
    }
    let mut head = SignedHead {
        office: ca.office.to_string(),
        seq: 2,
        hash: prev,
        root: Some(tree.root()),
        at_ms: 1_790_000_000_100,
        signature: Vec::new(),
    };
    head.signature = OfficeSigner::new(ca)
        .sign_bytes(&head.canonical())
        .map_err(|e| e.to_string())?;
    Ok((stored, head))
}

fn sample_bundle(
    ca: &OfficeCa,
    v: &SignedVersion,
    entries: &[Vec<u8>],
    head: &SignedHead,
) -> Result<Vec<u8>, String> {
    let failed = |e: crate::bundle::WriteError| e.to_string();
    let mut w =
        crate::bundle::BundleWriter::new(Vec::new(), "2026-0042", &ca.office, 1_790_000_000_200);
    w.add_office(&ca.office, &ca.cert_der).map_err(failed)?;
    w.add_version(v).map_err(failed)?;
    let a = &v.record.attachments[0];
    w.add_file(&a.hash, a.size, &b"footage"[..])
        .map_err(failed)?;
    // Entry 2's proof in a tree of two: the leaf of entry 1.
    let first = crate::domain::audit::Stored::split(&entries[0]).map_err(|e| e.to_string())?;
    let proof = [crate::domain::merkle::leaf_hash(&first.hash)];
    w.add_audit_entry(head.seq, 2, &entries[1], &proof)
        .map_err(failed)?;
    w.add_audit_head(head).map_err(failed)?;
    w.finish(&OfficeSigner::new(ca)).map_err(failed)
}

/// The members of a bundle, named relative to its root.
fn members_of(bundle: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(bundle);
    let Ok(entries) = archive.entries() else {
        return out;
    };
    for mut entry in entries.flatten() {
        let name = entry.path_bytes().into_owned();
        let name = name
            .strip_prefix(crate::bundle::ROOT.as_bytes())
            .unwrap_or(&name)
            .to_vec();
        let mut contents = Vec::new();
        if std::io::Read::read_to_end(&mut entry, &mut contents).is_ok() {
            out.push((name, contents));
        }
    }
    out
}

/// One valid message of each kind of [`REQUESTS`], and `PullDown`s.
fn sample_requests(
    ca: &OfficeCa,
    v: &SignedVersion,
    head: &SignedHead,
) -> Result<Vec<(&'static str, Vec<u8>)>, String> {
    let id = v.record.id.to_string();
    let office = ca.office.to_string();
    let hash = Bytes::copy_from_slice(&BlobHash::of(b"footage").0);
    let grant = GrantId::generate([1; 8]).to_string();
    let (_, csr) = crate::identity::pki::new_csr().map_err(|e| e.to_string())?;
    let r = convert::record(v, convert::Body::Include);
    let messages: Vec<(&'static str, Vec<u8>)> = vec![
        (
            "Records.Put",
            pb::PutRequest {
                id: id.clone(),
                collection: r.collection.clone(),
                kind: r.kind.clone(),
                title: r.title.clone(),
                content_type: r.content_type.clone(),
                labels: r.labels.clone(),
                body: r.body.clone(),
                expected_version: Some(1),
                attachments: r.attachments.clone(),
                subjects: vec![pb::Subject {
                    kind: "badge".into(),
                    value: "4471".into(),
                    role: String::new(),
                }],
            }
            .encode_to_vec(),
        ),
        (
            "Records.Get",
            pb::GetRequest {
                id: id.clone(),
                version: Some(1),
            }
            .encode_to_vec(),
        ),
        (
            "Records.List",
            pb::ListRequest {
                collection: "2026-0042".into(),
                origin: office.clone(),
                page_size: 10,
                page_token: "00112233".into(),
            }
            .encode_to_vec(),
        ),
        (
            "Records.GetBlob",
            pb::GetBlobRequest {
                hash: hash.clone(),
                offset: 0,
                length: 10,
            }
            .encode_to_vec(),
        ),
        (
            "Admin.IssueUser",
            pb::IssueUserRequest {
                name: "alice".into(),
                role: pb::Role::Staff as i32,
                csr_der: csr.into(),
            }
            .encode_to_vec(),
        ),
        (
            "Admin.RevokeUser",
            pb::RevokeUserRequest {
                name: "alice".into(),
                fingerprint: ca.fingerprint().to_string(),
            }
            .encode_to_vec(),
        ),
        (
            "Admin.AddPeer",
            pb::AddPeerRequest {
                office: office.clone(),
                endpoint: "https://127.0.0.1:7443".into(),
                ca_certificate_pem: ca.cert_pem.clone(),
                expected_fingerprint: ca.fingerprint().to_string(),
            }
            .encode_to_vec(),
        ),
        (
            "Admin.Grant",
            pb::GrantRequest {
                peer: "nyc-da".into(),
                expires_at_ms: 0,
                target: Some(pb::grant_request::Target::RecordId(id.clone())),
            }
            .encode_to_vec(),
        ),
        (
            "Admin.Revoke",
            pb::RevokeRequest {
                grant_id: grant.clone(),
            }
            .encode_to_vec(),
        ),
        (
            "Admin.QueryAudit",
            pb::QueryAuditRequest {
                from_ms: 1,
                to_ms: 2,
                record_id: id.clone(),
                page_token: "7".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "Replication.Pull",
            pb::PullUp {
                kind: Some(pull_up::Kind::PurgeAck(pb::PurgeAck {
                    grant_id: grant.clone(),
                    origin: "nyc-da".into(),
                    purged_by: office.clone(),
                    purged_at_ms: 1_790_000_000_000,
                    signature: Bytes::from_static(&[0x30, 0x02, 0x01, 0x01]),
                })),
            }
            .encode_to_vec(),
        ),
        (
            "Replication.FetchBlob",
            pb::FetchBlobRequest {
                hash,
                offset: 3,
                max_piece_bytes: 0,
            }
            .encode_to_vec(),
        ),
    ];
    let mut out: Vec<(&'static str, Vec<u8>)> = messages
        .into_iter()
        .map(|(kind, m)| {
            let at = REQUESTS.iter().position(|k| *k == kind).unwrap_or(0) as u8;
            let mut bytes = vec![at];
            bytes.extend_from_slice(&m);
            (kind, bytes)
        })
        .collect();
    let batch = pb::PullDown {
        kind: Some(pull_down::Kind::Batch(pb::Batch {
            entries: vec![
                pb::FeedEntry {
                    seq: 1,
                    kind: Some(feed_entry::Kind::Version(pb::ReplicatedVersion {
                        canonical: v.canonical.clone(),
                        signature: v.signature.clone(),
                    })),
                },
                pb::FeedEntry {
                    seq: 2,
                    kind: Some(feed_entry::Kind::RevokeRecordId(id)),
                },
                pb::FeedEntry {
                    seq: 3,
                    kind: Some(feed_entry::Kind::GrantClosed(grant)),
                },
            ],
            last_seq: 3,
            audit_head: Some(convert::signed_head(head)),
        })),
    };
    let mut bytes = vec![REQUESTS.len() as u8];
    bytes.extend_from_slice(&batch.encode_to_vec());
    out.push(("PullDown", bytes));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seeds pass: each is accepted by its target's decoders, not only
    /// survived, so the fuzzer starts from inputs that reach every check.
    #[test]
    fn every_seed_is_valid_input_for_its_target() {
        let requests = Requests::new().unwrap();
        for s in seeds().unwrap() {
            let b = &s.bytes[..];
            match s.target {
                "store_values" => store_values(b),
                "record_canonical" => {
                    RecordVersion::from_canonical(b).unwrap();
                    record_canonical(b);
                }
                "audit_entry" => {
                    assert!(Entry::decode(b).is_ok() || SignedHead::decode(b).is_ok());
                    audit_entry(b);
                }
                "feed_item" => feed_item(b),
                "bundle_verify" => {
                    crate::bundle::verify(Cursor::new(b), &[]).unwrap();
                    bundle_verify(b);
                }
                "bundle_members" => {
                    let archive = archive_of(&members_from(b)).unwrap();
                    let report = crate::bundle::verify(Cursor::new(archive), &[]).unwrap();
                    assert!(report.failures.is_empty(), "{report}");
                }
                "requests" => requests.check(b),
                other => panic!("a seed for no target: {other}"),
            }
        }
    }

    /// Bytes shaped like protobuf messages (fields of the tags and wire
    /// types requests use, strings that look like ids or not, messages
    /// inside messages), for each kind of request: converted or refused,
    /// never a panic.
    #[test]
    fn requests_of_every_kind_convert_or_are_refused() {
        let requests = Requests::new().unwrap();
        let cases = (0..=REQUESTS.len() as u8, message());
        let config = proptest::test_runner::Config {
            cases: 1024,
            ..Default::default()
        };
        proptest::test_runner::TestRunner::new(config)
            .run(&cases, |(kind, message)| {
                let mut bytes = vec![kind];
                bytes.extend_from_slice(&message);
                requests.check(&bytes);
                Ok(())
            })
            .unwrap();
    }

    /// A protobuf message: fields 1 to 9, each a varint or a
    /// length-delimited string, bytes or message.
    fn message() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let text = prop_oneof![
            Just("fuzz-da:0123456789abcdef0123456789abcdef".to_owned()),
            Just("g-0123456789abcdef".to_owned()),
            Just("nyc-da".to_owned()),
            Just("https://127.0.0.1:7443".to_owned()),
            "[a-z0-9:-]{0,40}",
            "\\PC{0,20}",
        ];
        let leaf = prop_oneof![
            text.prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..40),
        ];
        let value = leaf.prop_recursive(2, 32, 6, |inner| {
            proptest::collection::vec((1u32..10, inner), 0..6).prop_map(|fields| {
                fields
                    .into_iter()
                    .flat_map(|(tag, v)| field(tag, &v))
                    .collect()
            })
        });
        let field = prop_oneof![
            (1u32..10, any::<u64>()).prop_map(|(tag, n)| {
                let mut out = Vec::new();
                prost::encoding::encode_key(tag, prost::encoding::WireType::Varint, &mut out);
                prost::encoding::encode_varint(n, &mut out);
                out
            }),
            (1u32..10, value).prop_map(|(tag, v)| field(tag, &v)),
        ];
        proptest::collection::vec(field, 0..8).prop_map(|fields| fields.concat())
    }

    /// A length-delimited field.
    fn field(tag: u32, v: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, &mut out);
        prost::encoding::encode_varint(v.len() as u64, &mut out);
        out.extend_from_slice(v);
        out
    }

    #[test]
    fn members_read_back_as_written() {
        let members = vec![
            (b"manifest.json".to_vec(), b"{}".to_vec()),
            (Vec::new(), Vec::new()),
            (b"files/x".to_vec(), vec![0; 300]),
        ];
        assert_eq!(members_from(&members_to(&members)), members);
    }
}
