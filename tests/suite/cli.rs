//! The `casemesh` binary end to end: `init`, `serve` in the background,
//! `record put`, `record get --json`, durability across `kill -9`, and
//! attached files (`record put --attach`, `blob get`).

use std::time::Duration;

use super::bin::{casemesh, fails, init_office, json, ok, serve};
use super::cluster::eventually;

#[tokio::test]
async fn init_serve_put_and_get_through_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, out) = init_office(&tmp);
    let d = data.to_str().unwrap();
    assert!(out.contains("office fingerprint: sha256:"), "{out}");
    let fp = ok(&["fingerprint", "--data", d]);
    assert!(
        out.contains(fp.trim()),
        "init and fingerprint print the same"
    );

    let key_mode = std::fs::metadata(data.join("private/office-key.pem")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(key_mode.permissions().mode() & 0o777, 0o600);

    let again = casemesh(&["init", "--office", "phila-da", "--data", d]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to touch it"));
    let bad = casemesh(&[
        "init",
        "--office",
        "Phila DA",
        "--data",
        tmp.path().join("x").to_str().unwrap(),
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("lower-case letters, digits and '-'"));

    let server = serve(&data).await;
    let id = ok(&[
        "record",
        "put",
        "--data",
        d,
        "--collection",
        "2026-0042",
        "--kind",
        "incident-report",
        "--title",
        "Stop on Broad St",
        "--body",
        "witness saw the badge",
        "--label",
        "agency=cbp",
    ]);
    let id = id.trim();
    assert!(
        id.starts_with("phila-da:"),
        "put prints the id alone: {id:?}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["record", "get", id, "--json", "--data", d])).unwrap();
    assert_eq!(json["id"], id);
    assert_eq!(json["version"], 1);
    assert_eq!(json["body"], "witness saw the badge");
    assert_eq!(json["labels"]["agency"], "cbp");

    let updated = ok(&[
        "record",
        "put",
        "--data",
        d,
        "--id",
        id,
        "--expected-version",
        "1",
        "--collection",
        "2026-0042",
        "--kind",
        "incident-report",
        "--title",
        "v2",
    ]);
    assert_eq!(updated.trim(), id);
    let stale = casemesh(&[
        "record",
        "put",
        "--data",
        d,
        "--id",
        id,
        "--expected-version",
        "1",
        "--collection",
        "2026-0042",
        "--kind",
        "incident-report",
        "--title",
        "v3",
    ]);
    assert_eq!(stale.status.code(), Some(1), "a refused write exits 1");
    assert!(String::from_utf8_lossy(&stale.stderr).contains("(FAILED_PRECONDITION)"));

    // A body over the limit is refused before it is sent, with the limit
    // and what to do instead.
    let big = tmp.path().join("report.txt");
    std::fs::write(&big, vec![b'x'; 6_600_000]).unwrap();
    let text = fails(
        2,
        &[
            "record",
            "put",
            "--data",
            d,
            "--collection",
            "2026-0042",
            "--kind",
            "incident-report",
            "--title",
            "too big",
            "--body-file",
            big.to_str().unwrap(),
        ],
    );
    assert!(
        text.contains("is 6.3 MiB (6600000 bytes); a record body may be at most 4.0 MiB (4194304 bytes) on this node: attach large files with --attach instead"),
        "{text}"
    );

    // A file that does not say its size (a device, a pipe) is read only
    // up to the limit.
    let endless = fails(
        2,
        &[
            "record",
            "put",
            "--data",
            d,
            "--collection",
            "2026-0042",
            "--kind",
            "incident-report",
            "--title",
            "endless",
            "--body-file",
            "/dev/zero",
        ],
    );
    assert!(
        endless.contains("/dev/zero holds more than 4194304 bytes"),
        "{endless}"
    );

    let list: serde_json::Value =
        serde_json::from_str(&ok(&["record", "list", "--json", "--data", d])).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(1));

    let users_dir = tmp.path().join("users");
    ok(&[
        "user",
        "issue",
        "--name",
        "clerk",
        "--role",
        "staff",
        "--out",
        users_dir.to_str().unwrap(),
        "--data",
        d,
    ]);
    let endpoint = server.endpoint.clone();
    let as_clerk = |extra: &[&str]| {
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        for (flag, file) in [
            ("--cert", "clerk-cert.pem"),
            ("--key", "clerk-key.pem"),
            ("--ca", "ca.pem"),
        ] {
            args.push(flag.into());
            args.push(users_dir.join(file).to_str().unwrap().into());
        }
        args.push("--endpoint".into());
        args.push(endpoint.clone());
        casemesh(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    assert!(as_clerk(&["record", "get", id]).status.success());
    // From another machine the CLI cannot read the node's limit: the node
    // answers with it.
    let over = as_clerk(&[
        "record",
        "put",
        "--collection",
        "2026-0042",
        "--kind",
        "incident-report",
        "--title",
        "too big",
        "--body-file",
        big.to_str().unwrap(),
    ]);
    assert_eq!(over.status.code(), Some(1));
    let text = String::from_utf8_lossy(&over.stderr);
    assert!(
        text.contains("a record body may be at most 4194304 bytes on this node")
            && text.contains("(RESOURCE_EXHAUSTED)"),
        "{text}"
    );
    let denied = as_clerk(&["user", "list"]);
    assert_eq!(denied.status.code(), Some(1), "a refused call exits 1");
    assert!(String::from_utf8_lossy(&denied.stderr).contains("(PERMISSION_DENIED)"));
    ok(&["user", "revoke", "--name", "clerk", "--data", d]);
    let revoked = as_clerk(&["record", "get", id]);
    assert_eq!(
        revoked.status.code(),
        Some(3),
        "a refused certificate exits 3"
    );
    assert_eq!(
        String::from_utf8_lossy(&revoked.stderr).trim(),
        format!("error: node {endpoint}: the node refused this certificate: it has been revoked")
    );
    let users = ok(&["user", "list", "--data", d]);
    assert!(
        users.contains("clerk") && users.contains("revoked"),
        "{users}"
    );
}

/// A put that returned is on disk: the node is killed with SIGKILL right
/// after the reply (no shutdown, no flush), and the record is there after a
/// restart.
#[tokio::test]
async fn an_acknowledged_put_survives_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _) = init_office(&tmp);
    let d = data.to_str().unwrap();
    let mut ids = Vec::new();
    {
        let server = serve(&data).await;
        for i in 0..5 {
            let id = ok(&[
                "record",
                "put",
                "--data",
                d,
                "--collection",
                "c",
                "--kind",
                "k",
                "--title",
                &format!("t{i}"),
                "--body",
                "must survive",
            ]);
            ids.push(id.trim().to_owned());
        }
        server.process.kill().unwrap(); // SIGKILL
    }
    let _server = serve(&data).await;
    for id in &ids {
        let json: serde_json::Value =
            serde_json::from_str(&ok(&["record", "get", id, "--json", "--data", d])).unwrap();
        assert_eq!(json["body"], "must survive");
    }
}

/// A file attached with `record put --attach` is listed by `record get` and
/// comes back identical from `blob get`, also when the download resumes from
/// a `.part` file; a `.part` with wrong bytes fails the hash check and leaves
/// nothing behind; an unknown hash is refused.
#[tokio::test]
async fn an_attached_file_downloads_whole_and_resumes_from_a_part_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _) = init_office(&tmp);
    let d = data.to_str().unwrap();
    let _server = serve(&data).await;

    // A little over 3 MiB that never repeats (BLAKE3's extendable output),
    // so that a piece written at the wrong offset cannot go unnoticed.
    let mut content = vec![0u8; 3 * 1024 * 1024 + 12_345];
    blake3::Hasher::new()
        .update(b"bodycam-0412")
        .finalize_xof()
        .fill(&mut content);
    let clip = tmp.path().join("bodycam-0412.mp4");
    std::fs::write(&clip, &content).unwrap();
    let hash = blake3::hash(&content).to_hex().to_string();

    let id = ok(&[
        "record",
        "put",
        "--data",
        d,
        "--collection",
        "2026-0042",
        "--kind",
        "evidence",
        "--title",
        "Bodycam, Broad St",
        "--attach",
        clip.to_str().unwrap(),
    ]);
    let id = id.trim();
    // The same file twice (by another path) is refused before any upload.
    let twice_path = tmp.path().join(".").join("bodycam-0412.mp4");
    let twice = fails(
        2,
        &[
            "record",
            "put",
            "--data",
            d,
            "--collection",
            "2026-0042",
            "--kind",
            "evidence",
            "--title",
            "twice",
            "--attach",
            clip.to_str().unwrap(),
            "--attach",
            twice_path.to_str().unwrap(),
        ],
    );
    assert!(twice.contains("is given to --attach twice"), "{twice}");
    let shown = ok(&["record", "get", id, "--data", d]);
    for expected in [
        "attachment:   bodycam-0412.mp4",
        &format!("size:       {} bytes", content.len()),
        "media type: video/mp4",
        &format!("hash:       {hash}"),
        "state:      present",
    ] {
        assert!(shown.contains(expected), "{expected:?} in:\n{shown}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["record", "get", id, "--json", "--data", d])).unwrap();
    let attachment = &json["attachments"][0];
    assert_eq!(attachment["hash"], hash.as_str());
    assert_eq!(attachment["size"], content.len());
    assert_eq!(attachment["state"], "present");
    let status: serde_json::Value =
        serde_json::from_str(&ok(&["status", "--json", "--data", d])).unwrap();
    assert_eq!(status["blobs"], 1);
    assert_eq!(status["blob_bytes"], content.len());

    let out = tmp.path().join("download.mp4");
    let o = out.to_str().unwrap();
    ok(&["blob", "get", &hash, "--out", o, "--data", d]);
    assert!(std::fs::read(&out).unwrap() == content, "download differs");
    let again = casemesh(&["blob", "get", &hash, "--out", o, "--data", d]);
    assert!(!again.status.success(), "an existing file is not replaced");
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    ok(&["blob", "get", &hash, "--out", o, "--force", "--data", d]);
    assert!(
        std::fs::read(&out).unwrap() == content,
        "forced download differs"
    );

    // An interrupted download: the first MiB is already there.
    let resumed = tmp.path().join("resumed.mp4");
    let resumed_part = tmp.path().join("resumed.mp4.part");
    std::fs::write(&resumed_part, &content[..1 << 20]).unwrap();
    ok(&[
        "blob",
        "get",
        &hash,
        "--out",
        resumed.to_str().unwrap(),
        "--data",
        d,
    ]);
    assert!(
        std::fs::read(&resumed).unwrap() == content,
        "resumed download differs"
    );
    assert!(!resumed_part.exists(), "the .part file is renamed away");

    // A .part whose bytes are wrong: resuming from it cannot match the hash.
    let bad = tmp.path().join("bad.mp4");
    let bad_part = tmp.path().join("bad.mp4.part");
    let mut prefix = content[..1 << 20].to_vec();
    prefix[1000] ^= 0xff;
    std::fs::write(&bad_part, &prefix).unwrap();
    let failed = casemesh(&[
        "blob",
        "get",
        &hash,
        "--out",
        bad.to_str().unwrap(),
        "--data",
        d,
    ]);
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("hash to"), "{stderr}");
    assert!(!bad.exists() && !bad_part.exists(), "nothing is kept");

    let unknown = blake3::hash(b"never uploaded").to_hex().to_string();
    let missing = tmp.path().join("missing.bin");
    let refused = casemesh(&[
        "blob",
        "get",
        &unknown,
        "--out",
        missing.to_str().unwrap(),
        "--data",
        d,
    ]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("(NOT_FOUND)"), "{stderr}");
    assert!(!missing.exists() && !tmp.path().join("missing.bin.part").exists());
}

#[tokio::test]
async fn audit_export_and_verify_bundle_through_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _) = init_office(&tmp);
    let d = data.to_str().unwrap();
    let _server = serve(&data).await;
    let id = ok(&[
        "record",
        "put",
        "--data",
        d,
        "--collection",
        "2026-0042",
        "--kind",
        "statement",
        "--title",
        "Statement",
        "--body",
        "the agent wore no badge",
    ]);
    let id = id.trim();

    let list = ok(&["audit", "list", "--data", d, "--record", id, "--json"]);
    let entries: serde_json::Value = serde_json::from_str(&list).unwrap();
    let actions: Vec<&str> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["Records.Put"], "{list}");
    assert!(ok(&["audit", "verify", "--data", d]).contains("audit log intact"));

    // Paging: the oldest N with a note that more exist, the newest N with
    // --reverse, and everything with --limit 0.
    let all = json(&["audit", "list", "--data", d, "--limit", "0", "--json"]);
    let all = all.as_array().unwrap().clone();
    assert!(all.len() >= 4, "{all:?}");
    let first = casemesh(&["audit", "list", "--data", d, "--limit", "2", "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(shown.as_array().unwrap()[..], all[..2]);
    let note = String::from_utf8_lossy(&first.stderr);
    assert!(
        note.contains("showing the oldest 2 matching entries; more match"),
        "{note}"
    );
    let last = casemesh(&[
        "audit",
        "list",
        "--data",
        d,
        "--limit",
        "2",
        "--reverse",
        "--json",
    ]);
    let shown: serde_json::Value = serde_json::from_slice(&last.stdout).unwrap();
    let seqs: Vec<u64> = shown
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs.len(), 2);
    assert!(seqs[0] > seqs[1], "newest first: {seqs:?}");
    assert!(
        seqs[1] > all.last().unwrap()["seq"].as_u64().unwrap(),
        "the newest entries, written after the full listing: {seqs:?}"
    );

    // An output that cannot be written stops the export before the node
    // is asked: its audit log records no export.
    let text = fails(
        2,
        &[
            "export",
            "--data",
            d,
            "--collection",
            "2026-0042",
            "--out",
            "/nonexistent/dir/x.tar",
        ],
    );
    assert!(
        text.contains("cannot write /nonexistent/dir/x.tar.part"),
        "{text}"
    );
    let exports = json(&[
        "audit",
        "list",
        "--data",
        d,
        "--action",
        "Admin.Export",
        "--json",
    ]);
    assert_eq!(exports.as_array().map(Vec::len), Some(0), "{exports}");

    // A collection with no records is most likely a typo.
    let empty = tmp.path().join("empty.tar");
    let e = empty.to_str().unwrap();
    let text = fails(
        1,
        &[
            "export",
            "--data",
            d,
            "--collection",
            "2026-0024",
            "--out",
            e,
        ],
    );
    assert!(
        text.contains("collection 2026-0024 holds no records on this node")
            && text.contains("--allow-empty")
            && text.contains("(FAILED_PRECONDITION)"),
        "{text}"
    );
    assert!(!empty.exists() && !tmp.path().join("empty.tar.part").exists());
    let exported = ok(&[
        "export",
        "--data",
        d,
        "--collection",
        "2026-0024",
        "--out",
        e,
        "--allow-empty",
    ]);
    // It says how to check it, with the fingerprint to trust.
    assert!(
        exported.contains(&format!(
            "check it with: casemesh verify-bundle {e} --trust FINGERPRINT"
        )),
        "{exported}"
    );
    // Verified only against the office's fingerprint, as read from it.
    let fp = ok(&["fingerprint", "--data", d]);
    let fp = fp.trim();
    assert!(ok(&["verify-bundle", e, "--trust", fp]).contains("VERIFIED"));

    // A collection whose records were all deleted still has a history.
    let gone = ok(&[
        "record",
        "put",
        "--data",
        d,
        "--collection",
        "2026-0099",
        "--kind",
        "statement",
        "--title",
        "withdrawn",
    ]);
    ok(&["record", "delete", gone.trim(), "--data", d]);
    let deleted = tmp.path().join("deleted.tar");
    let del = deleted.to_str().unwrap();
    ok(&[
        "export",
        "--data",
        d,
        "--collection",
        "2026-0099",
        "--out",
        del,
    ]);
    let report = ok(&["verify-bundle", del, "--trust", fp]);
    assert!(
        report.contains(gone.trim()) && report.contains("VERIFIED"),
        "{report}"
    );

    let bundle = tmp.path().join("case.tar");
    let b = bundle.to_str().unwrap();
    ok(&[
        "export",
        "--data",
        d,
        "--collection",
        "2026-0042",
        "--out",
        b,
    ]);
    // The export is logged when it starts, and again once the bundle has
    // been streamed (the client's own file is beyond the node's sight).
    let finished = eventually(Duration::from_secs(10), "export.finished", || {
        let entries = json(&[
            "audit",
            "list",
            "--data",
            d,
            "--action",
            "export.finished",
            "--json",
        ]);
        let entries = entries.as_array().cloned().unwrap_or_default();
        std::future::ready((entries.len() == 3).then_some(entries))
    })
    .await;
    let last = &finished[2];
    assert_eq!(last["collection"], "2026-0042");
    assert_eq!(last["outcome"], "ok", "{last}");
    assert!(
        last["detail"]
            .as_str()
            .unwrap()
            .starts_with("case bundle sent: 1 records, 1 versions"),
        "{last}"
    );

    let report = ok(&["verify-bundle", b, "--trust", fp]);
    assert!(
        report.contains("VERIFIED") && report.contains(id),
        "{report}"
    );

    // Without --trust it checks out, but proves nothing about who made it.
    let out = casemesh(&["verify-bundle", b]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("NOT CHECKED AGAINST A KNOWN OFFICE") && !text.contains("VERIFIED"),
        "{text}"
    );

    // One changed byte in the record's body: refused, and named.
    let mut bytes = std::fs::read(&bundle).unwrap();
    let at = bytes
        .windows(8)
        .position(|w| w == b"no badge")
        .expect("the body is in the bundle");
    bytes[at] = b'N';
    std::fs::write(&bundle, bytes).unwrap();
    let out = casemesh(&["verify-bundle", b, "--trust", fp]);
    assert!(!out.status.success(), "a changed bundle verified");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(id) && text.contains("FAILED"), "{text}");
    // The same findings as data: the version whose bytes changed is named.
    let out = casemesh(&["verify-bundle", b, "--trust", fp, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["verified"], false);
    assert_eq!(report["verdict"], "failed");
    let failures = report["failures"].as_array().unwrap();
    assert!(
        failures
            .iter()
            .any(|f| f.as_str().unwrap().starts_with(&format!("record {id}"))),
        "{report}"
    );
}

/// A bundle of one record of `office`, written without a node: the file
/// and the office's fingerprint.
fn bundle_of(dir: &std::path::Path, office: &str) -> (std::path::PathBuf, String) {
    use casemesh::bundle::BundleWriter;
    use casemesh::domain::audit::{GENESIS, SignedHead};
    use casemesh::domain::{OfficeId, RecordId, RecordVersion, UserName};
    use casemesh::identity::{OfficeCa, OfficeSigner};

    let id = OfficeId::parse(office).unwrap();
    let (ca, _) = OfficeCa::create(&id, &[], &UserName::parse("admin").unwrap()).unwrap();
    let record = RecordId::generate(&id, 1_790_000_000_000, [1; 10]);
    let signer = OfficeSigner::new(&ca);
    let version = signer
        .sign(RecordVersion {
            id: record.clone(),
            version: 1,
            origin: id.clone(),
            collection: "2026-0042".into(),
            kind: "statement".into(),
            title: "Statement".into(),
            content_type: "text/plain".into(),
            labels: Default::default(),
            body: "the agent wore no badge".into(),
            created_at_ms: 1_790_000_000_000,
            updated_at_ms: 1_790_000_000_000,
            deleted: false,
            attachments: Vec::new(),
            subjects: Vec::new(),
        })
        .unwrap();
    let mut head = SignedHead {
        office: id.to_string(),
        seq: 0,
        hash: GENESIS,
        root: Some(casemesh::domain::merkle::empty_root()),
        at_ms: 1_790_000_000_000,
        signature: Vec::new(),
    };
    head.signature = signer.sign_bytes(&head.canonical()).unwrap();
    let mut w = BundleWriter::new(Vec::new(), "2026-0042", &id, 1_790_000_100_000);
    w.add_office(&id, &ca.cert_der).unwrap();
    w.add_version(&version).unwrap();
    w.add_audit_head(&head).unwrap();
    let path = dir.join(format!("{office}.tar"));
    std::fs::write(&path, w.finish(&signer).unwrap()).unwrap();
    (path, ca.fingerprint().to_string())
}

#[test]
fn verify_bundle_without_the_exporting_office_trusted_exits_1_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let (bundle, fp) = bundle_of(tmp.path(), "phila-da");
    let b = bundle.to_str().unwrap();

    // Self-consistent, but checked against nothing anyone knows.
    let out = casemesh(&["verify-bundle", b]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "NOT CHECKED AGAINST A KNOWN OFFICE: the bundle is self-consistent",
        "nothing was checked against an office you know",
        &format!("(the exporting office phila-da's is {fp})"),
        &format!("\n  --trust {fp}\n"),
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(!text.contains("VERIFIED"), "{text}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not checked against a known office") && stderr.contains("--trust"),
        "{stderr}"
    );
    let out = casemesh(&["verify-bundle", b, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["verified"], false, "{report}");
    assert_eq!(report["verdict"], "unknown_office", "{report}");
    assert_eq!(report["exporter_trusted"], false, "{report}");
    assert_eq!(report["failures"].as_array().map(Vec::len), Some(0));

    // Another office's fingerprint: the certificate is not trusted.
    let (_, other) = bundle_of(tmp.path(), "camden-da");
    let out = casemesh(&["verify-bundle", b, "--trust", &other]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAILED"));

    // The fingerprint it names: verified.
    assert!(ok(&["verify-bundle", b, "--trust", &fp]).contains("VERIFIED"));
    let report = json(&["verify-bundle", b, "--trust", &fp, "--json"]);
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(report["verdict"], "verified", "{report}");
    assert_eq!(report["exporter_trusted"], true, "{report}");
}
