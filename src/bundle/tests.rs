//! The writer and the verifier together: what a bundle holds, and every
//! way of damaging one that verification must name.

use bytes::Bytes;

use std::io::{self, Cursor, Read, Seek, SeekFrom};

use super::layout::*;
use super::*;
use crate::domain::audit::{
    Actor, Draft, Entry, GENESIS, Outcome, SignedHead, Stored, Target, format_time,
};
use crate::domain::merkle::{self, Frontier, Hash, Leaves};
use crate::domain::{Attachment, BlobHash, OfficeId, RecordId, RecordVersion, UserName};
use crate::identity::{Fingerprint, OfficeCa, OfficeSigner};

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
        subjects: Vec::new(),
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
/// entry 2 does not. Entry 1 is unsalted, as version 1 wrote entries
/// before salting: a log begun then and continued since must still
/// verify. Returns the stored entries and the signed head.
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
        let mut e = Entry::from_draft(draft, i as u64 + 1, ca.office.as_str(), prev);
        if i == 0 {
            e.salt = None;
        }
        prev = e.hash();
        stored.push(e.encode());
    }
    let mut head = SignedHead {
        office: ca.office.to_string(),
        seq: 3,
        hash: prev,
        root: Some(leaves(&stored).root()),
        at_ms: 1_790_000_090_000,
        signature: Vec::new(),
    };
    head.signature = OfficeSigner::new(ca).sign_bytes(&head.canonical()).unwrap();
    (stored, head)
}

/// The log's tree over its stored entries.
fn leaves(stored: &[Vec<u8>]) -> Frontier {
    let mut tree = Frontier::default();
    for e in stored {
        tree.push(merkle::leaf_hash(&Stored::split(e).unwrap().hash));
    }
    tree
}

/// Entry `seq`'s inclusion proof in the tree of all of `stored`.
fn proof(stored: &[Vec<u8>], seq: u64) -> Vec<Hash> {
    let hashes = stored
        .iter()
        .map(|e| merkle::leaf_hash(&Stored::split(e).unwrap().hash))
        .collect();
    merkle::inclusion_proof(&Leaves(hashes), seq - 1, stored.len() as u64).unwrap()
}

/// The same head as a node signed it before the log kept a tree.
fn without_root(head: &SignedHead, ca: &OfficeCa) -> SignedHead {
    let mut old = SignedHead {
        root: None,
        ..head.clone()
    };
    old.signature = OfficeSigner::new(ca).sign_bytes(&old.canonical()).unwrap();
    old
}

/// Adds the excerpt of `entries` (1 and 3 concern the case) and the head.
fn add_excerpt(w: &mut BundleWriter<Vec<u8>>, entries: &[Vec<u8>], head: &SignedHead) {
    for seq in [1, 3] {
        let e = &entries[seq as usize - 1];
        w.add_audit_entry(3, seq, e, &proof(entries, seq)).unwrap();
    }
    w.add_audit_head(head).unwrap();
}

/// Adds the excerpt as bundles of the first format held it: the digest of
/// every entry, the entries that concern the case, and a head without a
/// root.
fn add_first_format_excerpt(w: &mut BundleWriter<Vec<u8>>, entries: &[Vec<u8>], head: &SignedHead) {
    let digests: Vec<u8> = entries
        .iter()
        .flat_map(|e| Stored::split(e).unwrap().body_digest())
        .collect();
    w.append_bytes(DIGESTS, &digests).unwrap();
    w.append_bytes(&entry_path(1), &entries[0]).unwrap();
    w.append_bytes(&entry_path(3), &entries[2]).unwrap();
    w.add_audit_head(head).unwrap();
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

    /// The fingerprints of both offices, as given with `--trust`.
    fn trusted(&self) -> [Fingerprint; 2] {
        [self.home.fingerprint(), self.other.fingerprint()]
    }
}

/// A bundle of phila-da with two versions of its own record (the second
/// with a file), and a replica from camden-da whose file phila-da does
/// not hold.
fn fixture() -> Fixture {
    fixture_in(FORMAT)
}

/// [`fixture`] in the given format.
fn fixture_in(format: &str) -> Fixture {
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

    let mut w = BundleWriter::new(Vec::new(), COLLECTION, &home_id, EXPORTED_AT);
    w.manifest.format = format.into();
    w.add_office(&home_id, &home.cert_der).unwrap();
    w.add_office(&other_id, &other.cert_der).unwrap();
    for v in &signed {
        w.add_version(v).unwrap();
    }
    w.add_file(&footage.hash, footage.size, FOOTAGE).unwrap();
    w.add_missing_file(&absent.hash);
    if format == FORMAT_V1 {
        add_first_format_excerpt(&mut w, &entries, &without_root(&head, &home));
    } else {
        add_excerpt(&mut w, &entries, &head);
    }
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
    verify(Cursor::new(bundle), trusted).unwrap()
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
    let report = check(&fx.bundle, &fx.trusted());
    assert!(report.is_verified(), "{report}");
    assert_eq!(report.verdict(), Verdict::Verified);
    assert!(report.exporter_trusted);
    assert_eq!(report.collection, COLLECTION);
    assert_eq!(report.exported_by, "phila-da");
    assert_eq!(report.exported_at_ms, Some(EXPORTED_AT));

    let text = report.to_string();
    for expected in [
        "VERIFIED",
        "the certificate of the exporting office phila-da is one given with --trust",
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

/// Every check passes against the certificates inside the bundle, but
/// whoever made it chose those too: without the exporting office's
/// fingerprint nothing ties the bundle to the office it names.
#[test]
fn a_self_consistent_bundle_from_an_unknown_office_is_not_verified() {
    let fx = fixture();
    let report = check(&fx.bundle, &[]);
    assert!(report.failures.is_empty(), "{report}");
    assert!(report.is_self_consistent());
    assert!(!report.is_verified(), "{report}");
    assert_eq!(report.verdict(), Verdict::UnknownOffice);
    assert!(!report.exporter_trusted && !report.trust_given);
    assert!(
        report.offices.iter().all(|o| o.trust == Trust::NotCompared),
        "{report}"
    );

    let text = report.to_string();
    assert!(!text.contains("VERIFIED"), "{text}");
    let (home, other) = (fx.home.fingerprint(), fx.other.fingerprint());
    for expected in [
        "out of band",
        "NOT CHECKED AGAINST A KNOWN OFFICE: the bundle is self-consistent",
        "nothing was checked against an office you know",
        &format!("(the exporting office phila-da's is {home})"),
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    // One --trust per certificate, as every one must then be trusted.
    let last = text.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("  --trust ")
            && last.contains(&format!("--trust {home}"))
            && last.contains(&format!("--trust {other}")),
        "{text}"
    );

    // Trusting an office that did not export it does not make it verified:
    // the other office's certificate is then not trusted.
    let report = check(&fx.bundle, &[other]);
    assert_eq!(report.verdict(), Verdict::Failed, "{report}");
    assert!(!report.exporter_trusted);
}

/// The bytes of the excerpt's first piece.
fn excerpt(bundle: &[u8]) -> Vec<u8> {
    let all = members(bundle);
    all.into_iter()
        .find(|(p, _)| *p == excerpt_path(1))
        .unwrap()
        .1
}

#[test]
fn entries_from_before_and_after_salting_both_verify_in_a_bundle() {
    let fx = fixture();
    let piece = excerpt(&fx.bundle);
    let (size, entries) = super::excerpt::read_piece(&piece).unwrap();
    assert_eq!(size, 3);
    let versions: Vec<(u64, u8)> = entries
        .iter()
        .map(|e| (e.seq, Stored::split(e.stored).unwrap().body[0]))
        .collect();
    assert_eq!(versions, [(1, 1), (3, 2)]);
    let report = check(&fx.bundle, &fx.trusted());
    assert!(report.is_verified(), "{report}");
    let checked: Vec<u64> = report
        .audit
        .entries
        .iter()
        .filter(|e| e.checks_out)
        .map(|e| e.seq)
        .collect();
    assert_eq!(checked, [1, 3], "{report}");
}

/// A bundle exported before the log kept a tree (its excerpt bound by
/// the digest of every entry, its head without a root) still verifies,
/// and each kind of damage to its excerpt is still named.
#[test]
fn a_bundle_of_the_first_format_still_verifies_and_its_damage_is_named() {
    let fx = fixture_in(FORMAT_V1);
    let report = check(&fx.bundle, &fx.trusted());
    assert!(report.is_verified(), "{report}");
    assert_eq!(report.format, FORMAT_V1);
    assert!(report.to_string().contains("(casemesh-bundle-v1)"));
    let checked: Vec<u64> = report.audit.entries.iter().map(|e| e.seq).collect();
    assert_eq!(checked, [1, 3], "{report}");
    let held: Vec<String> = members(&fx.bundle).into_iter().map(|(p, _)| p).collect();
    assert!(held.contains(&DIGESTS.to_owned()) && !held.contains(&excerpt_path(1)));

    let cases: [(String, usize, &str); 4] = [
        // A byte of the actor's kind, past the version byte and the salt.
        (
            entry_path(3),
            116,
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
    ];
    for (rel, at, needle) in cases {
        let changed = repack(&fx.bundle, Some(&fx.home), |all| flip_member(all, &rel, at));
        assert_names(&check(&changed, &[]), &format!("{rel} at {at}"), needle);
    }
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
    // The whole excerpt is one piece; no digest of every entry.
    assert!(held.contains(&"audit/excerpt/1.bin"));
    assert!(!held.contains(&"audit/excerpt/2.bin"));
    assert!(!held.contains(&DIGESTS));
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
        excerpt_path(1),
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
    let report = check(&same, &fx.trusted());
    assert!(report.is_verified(), "{report}");

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
    // Where entry 3's stored bytes and entry 1's proof lie in the piece:
    // after the header (9 bytes), entry 1's sequence number (8) and length
    // (4), its bytes, and its proof's length (1) and first node's tag (1).
    let piece = excerpt(&fx.bundle);
    let (_, entries) = super::excerpt::read_piece(&piece).unwrap();
    let len1 = entries[0].stored.len();
    let proof1 = 9 + 12 + len1 + 1 + 1;
    let entry3 = 9 + 12 + len1 + 1 + 2 * 33 + 12;
    let entry3_changed = "audit entry 3 (audit/excerpt/1.bin): its contents do not hash".to_owned();
    let proof1_changed =
        "audit entry 1 (audit/excerpt/1.bin): its proof does not lead to the tree root".to_owned();
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
        // In the excerpt: a byte of entry 3's actor kind (past the
        // version byte and the salt), of the chain hash it holds of entry
        // 2, of its own chain hash, and of entry 1's proof.
        (excerpt_path(1), entry3 + 116, &entry3_changed),
        (excerpt_path(1), entry3 + 5, &entry3_changed),
        (excerpt_path(1), entry3 + 40, &entry3_changed),
        (excerpt_path(1), proof1 + 5, &proof1_changed),
        (HEAD.into(), 20, HEAD),
    ];
    for (rel, at, needle) in cases {
        let changed = repack(&fx.bundle, Some(&fx.home), |all| flip_member(all, &rel, at));
        let report = check(&changed, &[]);
        assert_names(&report, &format!("{rel} at {at}"), needle);
        if let Some(seq) = [(3, &entry3_changed), (1, &proof1_changed)]
            .iter()
            .find(|(_, n)| needle == n.as_str())
            .map(|(seq, _)| *seq)
        {
            let marked = report
                .audit
                .entries
                .iter()
                .any(|e| e.seq == seq && !e.checks_out);
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

    let piece = excerpt_path(1);
    let removed = repack(&fx.bundle, None, |all| all.retain(|(p, _)| *p != piece));
    assert_names(&check(&removed, &[]), "removed excerpt", &piece);

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
    let build = |declare: bool| {
        let mut w = BundleWriter::new(Vec::new(), COLLECTION, &home_id, EXPORTED_AT);
        w.add_office(&home_id, &home.cert_der).unwrap();
        if declare {
            w.add_missing_office(&gone_id);
        }
        w.add_version(&replica).unwrap();
        add_excerpt(&mut w, &entries, &head);
        w.finish(&OfficeSigner::new(&home)).unwrap()
    };
    let report = check(&build(true), &[home.fingerprint()]);
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
        verify(Cursor::new(b""), &[]),
        Err(BundleError::NotABundle(_))
    ));
    assert!(matches!(
        verify(Cursor::new([0x55u8; 2048]), &[]),
        Err(BundleError::Read(_))
    ));
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    tar.append_data(&mut h, "notes.txt", &b"hi"[..]).unwrap();
    let other = tar.into_inner().unwrap();
    assert!(matches!(
        verify(Cursor::new(other), &[]),
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
        root: Some(merkle::empty_root()),
        at_ms: u64::MAX,
        signature: Vec::new(),
    };
    head.signature = OfficeSigner::new(&home)
        .sign_bytes(&head.canonical())
        .unwrap();
    w.add_audit_head(&head).unwrap();
    let bundle = w.finish(&OfficeSigner::new(&home)).unwrap();
    let shown = verify(Cursor::new(bundle), &[]).unwrap().to_string();
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
        if let Ok(report) = verify(Cursor::new(bytes), &[]) {
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

/// Any bytes at all: a report or an error, never a panic.
#[test]
fn no_bytes_make_the_verifier_panic() {
    let cases = proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048);
    proptest::test_runner::TestRunner::default()
        .run(&cases, |bytes| {
            if let Ok(report) = verify(Cursor::new(&bytes), &[]) {
                let _ = report.to_string();
            }
            Ok(())
        })
        .unwrap();
}

/// Random damage to a real bundle: a few bytes flipped anywhere (headers,
/// padding, contents) and perhaps the archive cut short. Never a panic,
/// and a change inside a member's contents never verifies.
#[test]
fn random_damage_to_a_real_bundle_is_reported_and_never_panics() {
    use proptest::prelude::*;
    let fx = fixture();
    let contents: Vec<(usize, usize)> = members(&fx.bundle)
        .iter()
        .map(|(rel, _)| member_range(&fx.bundle, rel))
        .collect();
    let damage = crate::domain::arbitrary::damage();
    proptest::test_runner::TestRunner::default()
        .run(&damage, |(flips, cut)| {
            let bundle = crate::domain::arbitrary::damaged(fx.bundle.clone(), &flips, cut);
            let changed: Vec<usize> = (0..bundle.len().min(fx.bundle.len()))
                .filter(|&i| bundle[i] != fx.bundle[i])
                .collect();
            let Ok(report) = verify(Cursor::new(&bundle), &fx.trusted()) else {
                return Ok(());
            };
            let _ = report.to_string();
            let in_contents = changed.iter().any(|&i| {
                contents
                    .iter()
                    .any(|&(at, len)| (at..at + len).contains(&i))
            });
            prop_assert!(
                !in_contents || !report.failures.is_empty(),
                "a changed member verified: bytes {:?}",
                changed
            );
            Ok(())
        })
        .unwrap();
}

/// An archive of which one stretch is never stored: `head`, then `gap`
/// zero bytes, then `tail`. Counts the bytes of the gap read, so a test
/// can tell that a member declared there was never read.
struct Sparse {
    head: Vec<u8>,
    gap: u64,
    tail: Vec<u8>,
    pos: u64,
    gap_read: u64,
}

impl Sparse {
    /// `head` (whole 512-byte blocks) declaring a member of `declared`
    /// bytes, which are not stored, then `tail`.
    fn new(head: Vec<u8>, declared: u64, tail: Vec<u8>) -> Self {
        Self {
            head,
            gap: declared.div_ceil(512) * 512,
            tail,
            pos: 0,
            gap_read: 0,
        }
    }

    fn len(&self) -> u64 {
        self.head.len() as u64 + self.gap + self.tail.len() as u64
    }
}

impl Read for Sparse {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let head = self.head.len() as u64;
        let n = if self.pos < head {
            (&self.head[self.pos as usize..]).read(buf)?
        } else if self.pos < head + self.gap {
            let n = (head + self.gap - self.pos).min(buf.len() as u64) as usize;
            buf[..n].fill(0);
            self.gap_read += n as u64;
            n
        } else {
            let at = (self.pos - head - self.gap) as usize;
            self.tail.get(at..).unwrap_or_default().read(buf)?
        };
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Sparse {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len().checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| io::Error::other("seek before the start"))?;
        Ok(self.pos)
    }
}

/// A tar header of a regular member (or a GNU long name) of `size`.
fn header(path: &str, size: u64, kind: tar::EntryType) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_path(path).unwrap();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    h.as_bytes().to_vec()
}

/// The bundle, without the two zero blocks that end the archive, so that
/// members can follow it.
fn without_end(bundle: &[u8]) -> Vec<u8> {
    assert!(bundle.len() >= 1024 && bundle[bundle.len() - 1024..].iter().all(|b| *b == 0));
    bundle[..bundle.len() - 1024].to_vec()
}

#[test]
fn a_member_over_the_cap_is_refused_by_name_unread() {
    let fx = fixture();
    let giant = version_path(fx.record.as_str(), 9, "canonical");
    for declared in [MAX_MEMBER + 1, 1 << 40] {
        // First in the archive, so every member after it must still be
        // found: the verifier seeks past it.
        let head = header(&format!("{ROOT}{giant}"), declared, tar::EntryType::Regular);
        let mut archive = Sparse::new(head, declared, fx.bundle.clone());
        let report = verify(&mut archive, &fx.trusted()).unwrap();
        assert_eq!(archive.gap_read, 0, "the member's bytes were read");
        assert_names(
            &report,
            "giant",
            &format!(
                "{giant}: declares {declared} bytes, more than the 128 MiB a bundle member other than a file or the audit digests may hold; refused unread"
            ),
        );
        assert_names(
            &report,
            "giant",
            &format!("{giant}: is in the archive but not listed"),
        );
        // Nothing else is wrong (but the signature that version 9 lacks):
        // the rest of the bundle was checked.
        assert!(
            report
                .failures
                .iter()
                .all(|f| f.contains(&giant) || f.contains("version 9: ")),
            "{report}"
        );
        assert_eq!(report.versions.len(), 3, "{report}");
        assert!(report.versions.iter().all(|v| v.signature == Signature::Ok));
    }

    // Last in the archive, with nothing stored after its header.
    let mut tail = without_end(&fx.bundle);
    tail.extend(header(
        &format!("{ROOT}{MANIFEST}"),
        1 << 40,
        tar::EntryType::Regular,
    ));
    let report = check(&tail, &fx.trusted());
    assert_names(
        &report,
        "giant manifest",
        &format!("{MANIFEST}: appears twice"),
    );
    assert_names(
        &report,
        "giant manifest",
        &format!("{MANIFEST}: declares 1099511627776 bytes"),
    );
}

#[test]
fn the_member_cap_fits_any_version_a_node_can_sign() {
    assert!(MAX_MEMBER >= 2 * crate::domain::limits::MAX_BODY_BYTES_CAP as u64);
}

#[test]
fn a_member_name_over_the_limit_is_refused_unread() {
    let fx = fixture();
    let declared = 1 << 30;
    let head = header("././@LongLink", declared, tar::EntryType::GNULongName);
    // The member the name belonged to, then the bundle.
    let mut tail = header(&format!("{ROOT}named"), 0, tar::EntryType::Regular);
    tail.extend(&fx.bundle);
    let mut archive = Sparse::new(head, declared, tail);
    let report = verify(&mut archive, &fx.trusted()).unwrap();
    assert_eq!(archive.gap_read, 0, "the name was read");
    assert_names(
        &report,
        "giant name",
        "a member at its start has a name of 1073741824 bytes, longer than any a bundle holds (1024 at most); refused unread",
    );
    assert_eq!(report.failures.len(), 1, "{report}");
    assert_eq!(report.versions.len(), 3, "{report}");
}

/// Names over 100 bytes take a GNU long name entry; the verifier reads
/// those itself.
#[test]
fn a_bundle_with_long_member_names_verifies() {
    let name = format!("office-{}", "x".repeat(56));
    let (home, home_id) = office(&name);
    let record = RecordId::generate(&home_id, 1_790_000_000_000, [4; 10]);
    let path = version_path(record.as_str(), 1, "canonical");
    assert!(ROOT.len() + path.len() > 100, "{path}");
    let signed = OfficeSigner::new(&home)
        .sign(version(&record, 1, "long names", Vec::new()))
        .unwrap();
    let (entries, head) = audit_log(&home, &record);
    let mut w = BundleWriter::new(Vec::new(), COLLECTION, &home_id, EXPORTED_AT);
    w.add_office(&home_id, &home.cert_der).unwrap();
    w.add_version(&signed).unwrap();
    add_excerpt(&mut w, &entries, &head);
    let bundle = w.finish(&OfficeSigner::new(&home)).unwrap();
    let report = check(&bundle, &[home.fingerprint()]);
    assert!(report.is_verified(), "{report}");
    assert_eq!(report.versions.len(), 1);
    assert_eq!(report.versions[0].record, record.as_str());
}

/// An archive whose bytes at `at` read differently once the verifier goes
/// back for a second pass.
struct Changing {
    bytes: Cursor<Vec<u8>>,
    at: u64,
    rewound: bool,
}

impl Read for Changing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let from = self.bytes.position();
        let n = self.bytes.read(buf)?;
        if self.rewound && (from..from + n as u64).contains(&self.at) {
            buf[(self.at - from) as usize] ^= 0x01;
        }
        Ok(n)
    }
}

impl Seek for Changing {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let before = self.bytes.position();
        let after = self.bytes.seek(to)?;
        self.rewound |= after < before;
        Ok(after)
    }
}

#[test]
fn a_member_that_changes_between_the_two_passes_fails() {
    let fx = fixture();
    let rel = fx.canonical(1);
    let (start, _) = member_range(&fx.bundle, &rel);
    let mut archive = Changing {
        bytes: Cursor::new(fx.bundle.clone()),
        at: start as u64 + 10,
        rewound: false,
    };
    let report = verify(&mut archive, &fx.trusted()).unwrap();
    assert_names(
        &report,
        "changed",
        &format!("{rel}: its bytes changed while the bundle was being verified"),
    );
}

#[test]
fn text_a_hostile_bundle_makes_long_is_clipped_in_the_report() {
    let long = "é".repeat(MAX_SHOWN);
    let shown = clipped(&long);
    assert!(shown.len() < MAX_SHOWN + 40, "{}", shown.len());
    assert!(shown.ends_with(&format!("… ({} bytes in all)", long.len())));
    assert_eq!(clipped("short"), "short");
}
