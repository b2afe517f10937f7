//! The audit log: one entry per call (refused ones too), tampering found and
//! named, peers as witnesses.

use std::time::Duration;

use casemesh::domain::audit::{Entry, GENESIS};
use casemesh::identity::pki::new_csr;
use casemesh::protocol::pb::{self, admin_client::AdminClient, records_client::RecordsClient};
use casemesh::store::disk::OnDisk;
use tonic::Code;

use super::blobkit::{download, upload};
use super::cluster::{TestCluster, TestNode, eventually, of_action};

const DEADLINE: Duration = Duration::from_secs(20);

/// Every entry after `after`, in order.
async fn entries_after(node: &TestNode, after: u64) -> Vec<pb::AuditEntry> {
    let mut admin = node.admin().await;
    let mut out = Vec::new();
    let mut token = after.to_string();
    loop {
        let page = admin
            .query_audit(pb::QueryAuditRequest {
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await
            .expect("query audit")
            .into_inner();
        out.extend(page.entries);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

/// The last sequence number now in the log.
async fn mark(node: &TestNode) -> u64 {
    entries_after(node, 0)
        .await
        .last()
        .map(|e| e.seq)
        .unwrap_or(0)
}

/// The one entry written since `mark`, apart from this test's own queries.
async fn only_entry(node: &TestNode, mark: u64, what: &str) -> pb::AuditEntry {
    let mut found: Vec<_> = entries_after(node, mark)
        .await
        .into_iter()
        .filter(|e| e.action != "Admin.QueryAudit")
        .collect();
    assert_eq!(found.len(), 1, "{what}: expected one entry, got {found:#?}");
    found.remove(0)
}

fn rec(collection: &str, title: &str) -> pb::PutRequest {
    pb::PutRequest {
        collection: collection.into(),
        kind: "witness-statement".into(),
        title: title.into(),
        body: b"statement".to_vec().into(),
        ..Default::default()
    }
}

fn assert_entry(e: &pb::AuditEntry, action: &str, actor: &str, outcome: &str) {
    assert_eq!(e.action, action, "{e:#?}");
    assert_eq!(e.actor_name, actor, "{e:#?}");
    assert_eq!(e.outcome_code, outcome, "{e:#?}");
    assert!(e.at_ms > 0 && e.node == "phila-da", "{e:#?}");
    if e.actor_kind == "user" {
        assert!(e.actor_fingerprint.starts_with("sha256:"), "{e:#?}");
        assert!(e.actor_remote.starts_with("127.0.0.1:"), "{e:#?}");
    }
}

#[tokio::test]
async fn every_call_leaves_exactly_its_entry_including_refused_ones() {
    let mut cluster = TestCluster::start(&["phila-da"]).await;
    let node = cluster.node(0);
    let mut records = node.records().await;
    let mut admin = node.admin().await;

    // A write: one entry, naming the record, version and collection.
    let m = mark(node).await;
    let put = records.put(rec("case-1", "a")).await.unwrap().into_inner();
    let e = only_entry(node, m, "put").await;
    assert_entry(&e, "Records.Put", "admin", "");
    assert_eq!(e.collection, "case-1");
    assert_eq!(
        (e.records[0].record_id.as_str(), e.records[0].version),
        (put.id.as_str(), 1)
    );

    // Reads.
    let m = mark(node).await;
    records
        .get(pb::GetRequest {
            id: put.id.clone(),
            version: None,
        })
        .await
        .unwrap();
    let e = only_entry(node, m, "get").await;
    assert_entry(&e, "Records.Get", "admin", "");
    assert_eq!(e.records[0].record_id, put.id);
    let m = mark(node).await;
    records
        .history(pb::HistoryRequest { id: put.id.clone() })
        .await
        .unwrap();
    assert_entry(
        &only_entry(node, m, "history").await,
        "Records.History",
        "admin",
        "",
    );
    let m = mark(node).await;
    records
        .list(pb::ListRequest {
            collection: "case-1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let e = only_entry(node, m, "list").await;
    assert_entry(&e, "Records.List", "admin", "");
    assert_eq!(e.records.len(), 1, "a list names the records it returned");

    // Refused: malformed id, unknown id, stale version.
    let m = mark(node).await;
    let bad = records
        .get(pb::GetRequest {
            id: "not an id".into(),
            version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let e = only_entry(node, m, "malformed get").await;
    assert_entry(&e, "Records.Get", "admin", "INVALID_ARGUMENT");
    assert_eq!(e.records[0].record_id, "not an id", "the input is recorded");
    let m = mark(node).await;
    let unknown = casemesh::domain::RecordId::generate(
        &casemesh::domain::OfficeId::parse("phila-da").unwrap(),
        1,
        [7; 10],
    )
    .to_string();
    let missing = records
        .get(pb::GetRequest {
            id: unknown.clone(),
            version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_entry(
        &only_entry(node, m, "unknown get").await,
        "Records.Get",
        "admin",
        "NOT_FOUND",
    );
    let m = mark(node).await;
    let mut stale = rec("case-1", "b");
    stale.id = put.id.clone();
    stale.expected_version = Some(7);
    assert_eq!(
        records.put(stale).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    let e = only_entry(node, m, "stale put").await;
    assert_entry(&e, "Records.Put", "admin", "FAILED_PRECONDITION");
    assert_eq!(e.records[0].record_id, put.id);

    // Files.
    let m = mark(node).await;
    let blob = upload(node, "audit", 100_000).await.unwrap();
    let e = only_entry(node, m, "put blob").await;
    assert_entry(&e, "Records.PutBlob", "admin", "");
    assert!(e.detail.contains(&hex::encode(&blob.hash)), "{e:#?}");
    let mut attach = rec("case-1", "with file");
    attach.attachments = vec![pb::Attachment {
        hash: blob.hash.clone(),
        size: blob.size,
        file_name: "f.bin".into(),
        media_type: "application/octet-stream".into(),
        ..Default::default()
    }];
    records.put(attach).await.unwrap();
    let m = mark(node).await;
    download(&mut records, &blob.hash).await.unwrap();
    assert_entry(
        &only_entry(node, m, "get blob").await,
        "Records.GetBlob",
        "admin",
        "",
    );

    // Delete.
    let m = mark(node).await;
    records
        .delete(pb::DeleteRequest {
            id: put.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();
    let e = only_entry(node, m, "delete").await;
    assert_entry(&e, "Records.Delete", "admin", "");
    assert_eq!(e.records[0].version, 2);

    // Users: issue, list, a refused call by the new staff user, revoke.
    let m = mark(node).await;
    let (key_pem, csr) = new_csr().unwrap();
    let issued = admin
        .issue_user(pb::IssueUserRequest {
            name: "bob".into(),
            role: pb::Role::Staff as i32,
            csr_der: csr.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let e = only_entry(node, m, "issue user").await;
    assert_entry(&e, "Admin.IssueUser", "admin", "");
    assert!(e.detail.contains("bob"));
    let m = mark(node).await;
    admin.list_users(pb::ListUsersRequest {}).await.unwrap();
    assert_entry(
        &only_entry(node, m, "list users").await,
        "Admin.ListUsers",
        "admin",
        "",
    );
    let staff = node
        .connect_as(issued.certificate_pem.as_bytes(), key_pem.as_bytes())
        .await
        .unwrap();
    let m = mark(node).await;
    let denied = AdminClient::new(staff.clone())
        .list_users(pb::ListUsersRequest {})
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let e = only_entry(node, m, "staff calling admin").await;
    assert_entry(&e, "Admin.ListUsers", "bob", "PERMISSION_DENIED");
    assert_eq!(e.actor_role, "staff");
    let m = mark(node).await;
    admin
        .revoke_user(pb::RevokeUserRequest {
            name: "bob".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_entry(
        &only_entry(node, m, "revoke user").await,
        "Admin.RevokeUser",
        "admin",
        "",
    );
    // A revoked user's call on a connection opened before: refused, logged.
    let m = mark(node).await;
    assert!(
        RecordsClient::new(staff)
            .list(pb::ListRequest::default())
            .await
            .is_err()
    );
    let e = only_entry(node, m, "revoked user's call").await;
    assert_entry(&e, "Records.List", "bob", "PERMISSION_DENIED");

    // Peers and grants, including refusals.
    let m = mark(node).await;
    let no_peer = admin
        .grant(pb::GrantRequest {
            peer: "nyc-da".into(),
            target: Some(pb::grant_request::Target::Collection("case-1".into())),
            expires_at_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(no_peer.code(), Code::NotFound);
    let e = only_entry(node, m, "grant to unknown peer").await;
    assert_entry(&e, "Admin.Grant", "admin", "NOT_FOUND");
    assert_eq!(
        (e.peer.as_str(), e.collection.as_str()),
        ("nyc-da", "case-1")
    );
    for (what, action) in [
        ("status", "Admin.Status"),
        ("list peers", "Admin.ListPeers"),
        ("list grants", "Admin.ListGrants"),
    ] {
        let m = mark(node).await;
        match action {
            "Admin.Status" => drop(admin.status(pb::StatusRequest {}).await.unwrap()),
            "Admin.ListPeers" => drop(admin.list_peers(pb::ListPeersRequest {}).await.unwrap()),
            _ => drop(
                admin
                    .list_grants(pb::ListGrantsRequest::default())
                    .await
                    .unwrap(),
            ),
        }
        assert_entry(&only_entry(node, m, what).await, action, "admin", "");
    }

    // Querying the log is itself logged.
    let m = mark(node).await;
    let after_query: Vec<_> = entries_after(node, m).await;
    assert_eq!(after_query.len(), 1, "{after_query:#?}");
    assert_entry(&after_query[0], "Admin.QueryAudit", "admin", "");

    // A connection refused at the handshake (a certificate of another CA).
    let m = mark(node).await;
    let stranger = casemesh::identity::OfficeCa::create(
        &casemesh::domain::OfficeId::parse("evil-da").unwrap(),
        &[],
        &casemesh::domain::UserName::parse("admin").unwrap(),
    )
    .unwrap()
    .1;
    if let Ok(ch) = node
        .connect_as(
            stranger.admin_cert_pem.as_bytes(),
            stranger.admin_key_pem.as_bytes(),
        )
        .await
    {
        assert!(
            RecordsClient::new(ch)
                .list(pb::ListRequest::default())
                .await
                .is_err()
        );
    }
    let e = eventually(DEADLINE, "the refused connection to be logged", || async {
        entries_after(node, m)
            .await
            .into_iter()
            .find(|e| e.action == "connection.refused")
    })
    .await;
    assert_eq!(e.actor_kind, "unauthenticated");
    assert_eq!(e.outcome_code, "REFUSED");
    assert!(e.actor_remote.starts_with("127.0.0.1:"));

    // And the chain of all of it verifies.
    let v = admin
        .verify_audit(pb::VerifyAuditRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(v.intact, "{v:?}");
    assert!(v.entries > 25, "{v:?}");
    cluster.stop_all().await;
}

/// The store of a stopped node, the way an attacker with the disk would
/// see it.
fn on_disk(node: &TestNode) -> OnDisk {
    OnDisk::open(&node.paths().store()).expect("store opens")
}

/// Pages of a query, following tokens, as the sequence numbers returned.
async fn query_seqs(node: &TestNode, mut req: pb::QueryAuditRequest) -> Vec<u64> {
    let mut admin = node.admin().await;
    let mut out = Vec::new();
    loop {
        let page = admin.query_audit(req.clone()).await.unwrap().into_inner();
        out.extend(page.entries.iter().map(|e| e.seq));
        if page.next_page_token.is_empty() {
            return out;
        }
        req.page_token = page.next_page_token;
    }
}

#[tokio::test]
async fn audit_queries_page_newest_first_exactly_as_oldest_first_reversed() {
    let cluster = TestCluster::start(&["phila-da"]).await;
    let node = &cluster.nodes[0];
    let mut records = node.records().await;
    for i in 0..25 {
        records.put(rec("case-q", &format!("r{i}"))).await.unwrap();
    }
    let puts = pb::QueryAuditRequest {
        action: "Records.Put".into(),
        page_size: 7,
        ..Default::default()
    };
    let oldest_first = query_seqs(node, puts.clone()).await;
    assert_eq!(oldest_first.len(), 25);
    let newest_first = query_seqs(
        node,
        pb::QueryAuditRequest {
            newest_first: true,
            ..puts.clone()
        },
    )
    .await;
    let mut reversed = oldest_first.clone();
    reversed.reverse();
    assert_eq!(newest_first, reversed);

    // A time window, newest first: bounded on both sides.
    let all = entries_after(node, 0).await;
    let at = |seq: u64| all.iter().find(|e| e.seq == seq).unwrap().at_ms;
    let (from_ms, to_ms) = (at(oldest_first[5]), at(oldest_first[15]));
    let window = query_seqs(
        node,
        pb::QueryAuditRequest {
            newest_first: true,
            from_ms,
            to_ms,
            ..puts
        },
    )
    .await;
    let mut expected: Vec<u64> = oldest_first
        .iter()
        .copied()
        .filter(|&s| (from_ms..=to_ms).contains(&at(s)))
        .collect();
    expected.reverse();
    assert_eq!(window, expected);
    assert!(window.len() >= 11);

    // A page that ends at the first entry ends the listing: no token.
    let logged = entries_after(node, 0).await.len() as u32;
    // That listing's own entry is in the log now too.
    let page = node
        .admin()
        .await
        .query_audit(pb::QueryAuditRequest {
            newest_first: true,
            page_size: logged + 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.entries.len() as u32, logged + 1);
    assert_eq!(page.entries.last().map(|e| e.seq), Some(1));
    assert_eq!(page.next_page_token, "", "nothing lies before entry 1");
}

async fn verify(node: &TestNode) -> pb::VerifyAuditResponse {
    node.admin()
        .await
        .verify_audit(pb::VerifyAuditRequest {})
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn a_changed_removed_or_reordered_entry_is_named_by_verify() {
    let mut cluster = TestCluster::start(&["phila-da"]).await;
    let node = cluster.node(0);
    let mut records = node.records().await;
    for i in 0..6 {
        records.put(rec("case-1", &format!("r{i}"))).await.unwrap();
    }
    drop(records);
    assert!(verify(node).await.intact);
    // Entries 1 (setup) and 2..=7 (the puts) are there; 4 is a put by admin.
    type Tamper = fn(&OnDisk);
    let cases: [(&str, u64, Tamper); 4] = [
        ("a changed actor", 4, |d| {
            let mut v = d.audit_entry(4).unwrap().unwrap();
            let at = v.windows(5).position(|w| w == b"admin").unwrap();
            v[at] = b'e';
            d.put_audit_entry(4, &v).unwrap();
        }),
        ("a changed entry with its own hash recomputed", 5, |d| {
            let mut e = Entry::decode(&d.audit_entry(4).unwrap().unwrap()).unwrap();
            e.actor.name = "mallory".into();
            d.put_audit_entry(4, &e.encode()).unwrap();
        }),
        ("a removed entry", 3, |d| {
            d.remove_audit_entry(3).unwrap();
        }),
        ("two swapped entries", 3, |d| {
            let a = d.audit_entry(3).unwrap().unwrap();
            let b = d.audit_entry(4).unwrap().unwrap();
            d.put_audit_entry(3, &b).unwrap();
            d.put_audit_entry(4, &a).unwrap();
        }),
    ];
    for (what, expected, tamper) in cases {
        node.stop().await;
        let original = {
            let disk = on_disk(node);
            let all = disk.audit_entries().unwrap();
            tamper(&disk);
            disk.flush().unwrap();
            all
        };
        node.restart().await;
        let v = verify(node).await;
        assert!(!v.intact, "{what}: not detected: {v:?}");
        assert_eq!(v.fault_seq, expected, "{what}: {v:?}");
        assert!(!v.fault.is_empty());
        // Put the log back (entries the restart added stay) for the next case.
        node.stop().await;
        {
            let disk = on_disk(node);
            for (seq, bytes) in original {
                disk.put_audit_entry(seq, &bytes).unwrap();
            }
            disk.flush().unwrap();
        }
        node.restart().await;
        assert!(verify(node).await.intact, "{what}: restored log verifies");
    }
    cluster.stop_all().await;
}

/// phila-da shares case-1 with nyc-da and writes three records into it;
/// returns once nyc-da holds them.
async fn replicate_a_case(cluster: &mut TestCluster) {
    cluster.pin_all().await;
    cluster.grant_collection(0, 1, "case-1").await;
    let mut records = cluster.nodes[0].records().await;
    for i in 0..3 {
        records.put(rec("case-1", &format!("r{i}"))).await.unwrap();
    }
    drop(records);
    eventually(DEADLINE, "nyc-da to hold phila-da's records", || async {
        (super::cluster::holdings(&cluster.nodes[1]).await.len() == 3).then_some(())
    })
    .await;
}

/// Rewrites a stopped node's history consistently: entry 2 changed, the
/// whole chain after it recomputed, its signed heads and its Merkle tree
/// dropped (the tree is rebuilt from the rewritten entries), so that its
/// own verification passes.
fn rewrite_history(disk: &OnDisk) {
    let mut prev = GENESIS;
    let mut last = (0, GENESIS, 0);
    for (seq, bytes) in disk.audit_entries().unwrap() {
        let mut e = Entry::decode(&bytes).unwrap();
        if e.seq == 2 {
            e.outcome.message = "never happened".into();
        }
        e.prev = prev;
        prev = e.hash();
        last = (e.seq, prev, e.at_ms);
        disk.put_audit_entry(seq, &e.encode()).unwrap();
    }
    disk.set_audit_head(last.0, last.1, last.2).unwrap();
    disk.clear_signed_heads().unwrap();
    disk.clear_audit_tree().unwrap();
    disk.flush().unwrap();
}

async fn witness(node: &TestNode) -> pb::WitnessAuditResponse {
    node.admin()
        .await
        .witness_audit(pb::WitnessAuditRequest {
            peer: "phila-da".into(),
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn a_rewritten_log_no_longer_matches_the_heads_its_peer_witnessed() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da"]).await;
    cluster.pin_all().await;
    cluster.grant_collection(0, 1, "case-1").await;
    let mut records = cluster.nodes[0].records().await;
    for i in 0..3 {
        records.put(rec("case-1", &format!("r{i}"))).await.unwrap();
    }
    drop(records);
    // nyc-da keeps the heads phila-da sends with its batches and heartbeats.
    let agreed = eventually(DEADLINE, "nyc-da to witness phila-da's log", || async {
        let r = witness(&cluster.nodes[1]).await;
        (r.agreed && r.heads_checked >= 1 && r.current.as_ref().is_some_and(|h| h.seq >= 5))
            .then_some(r)
    })
    .await;
    assert!(agreed.conflict.is_empty());

    // phila-da rewrites its history consistently.
    cluster.nodes[0].stop().await;
    rewrite_history(&on_disk(&cluster.nodes[0]));
    cluster.nodes[0].restart().await;
    assert!(
        verify(&cluster.nodes[0]).await.intact,
        "the rewrite is self-consistent"
    );
    let r = witness(&cluster.nodes[1]).await;
    assert!(!r.agreed, "{r:?}");
    assert!(r.conflict.contains("not in its log"), "{r:?}");
    cluster.stop_all().await;
}

/// A peer checks the heads it keeps on its own (`[audit]
/// witness_interval`): once the office rewrites its log, the peer's
/// audit log names the conflict without anyone running `audit witness`.
#[tokio::test]
async fn a_peer_finds_a_rewritten_log_on_its_own() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da"]).await;
    cluster.nodes[1]
        .configure(|c| c.audit.witness_interval = Duration::from_secs(10))
        .await;
    replicate_a_case(&mut cluster).await;
    // nyc-da holds a head past entry 2 (the heads a pull stream brings
    // may all be older: phila-da signs one per 5 s at most).
    assert!(witness(&cluster.nodes[1]).await.agreed);
    cluster.nodes[0].stop().await;
    rewrite_history(&on_disk(&cluster.nodes[0]));
    cluster.nodes[0].restart().await;
    // Two intervals and some: the check runs every 10 s (and a peer
    // answers one proof per 10 s).
    let found = eventually(
        Duration::from_secs(60),
        "nyc-da's own check to find the rewrite",
        || async {
            // Heads the stream brings may show the rewrite first (the same
            // entry signed twice); the check's own finding says more.
            let conflicts = of_action(&cluster.nodes[1], "witness.conflict").await;
            conflicts
                .into_iter()
                .find(|e| e.outcome_message.contains("not in its log"))
        },
    )
    .await;
    assert_eq!(found.peer, "phila-da", "{found:?}");
    cluster.stop_all().await;
}

/// A log begun before the audit log kept a Merkle tree: the office's heads
/// and the heads its peer witnessed carry no root. After the upgrade the
/// office builds the tree from its first entry and signs tree heads; the
/// peer proves every old head it kept against the new tree head (by the
/// inclusion of each old head's last entry), with a few hundred bytes.
#[tokio::test]
async fn heads_witnessed_before_the_tree_are_proven_after_the_upgrade() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da"]).await;
    replicate_a_case(&mut cluster).await;
    let first = witness(&cluster.nodes[1]).await;
    assert!(first.agreed, "{first:?}");

    // Both stores as the version before the tree left them.
    let phila_key = {
        let paths = cluster.nodes[0].paths();
        let office = casemesh::domain::OfficeId::parse("phila-da").unwrap();
        casemesh::identity::OfficeCa::load(
            &office,
            &std::fs::read_to_string(paths.office_ca()).unwrap(),
            &std::fs::read_to_string(paths.office_key()).unwrap(),
        )
        .unwrap()
    };
    let sign = |office: &str, bytes: &[u8]| {
        assert_eq!(office, "phila-da", "only phila-da's heads are re-signed");
        casemesh::identity::OfficeSigner::new(&phila_key)
            .sign_bytes(bytes)
            .unwrap()
    };
    cluster.nodes[0].stop().await;
    cluster.nodes[1].stop().await;
    let held_before = {
        let phila = on_disk(&cluster.nodes[0]);
        phila.clear_audit_tree().unwrap();
        phila.strip_tree_roots(&sign).unwrap();
        phila.flush().unwrap();
        let nyc = on_disk(&cluster.nodes[1]);
        // nyc-da's own heads are not touched: it signs none of phila-da's.
        nyc.strip_tree_roots(&|office, bytes| {
            if office == "phila-da" {
                sign(office, bytes)
            } else {
                Vec::new()
            }
        })
        .unwrap();
        nyc.flush().unwrap();
        nyc.witnessed_count().unwrap()
    };
    assert!(held_before >= 1);
    cluster.nodes[0].restart().await;
    cluster.nodes[1].restart().await;

    // The old heads verify in phila-da's own log beside the new ones.
    assert!(verify(&cluster.nodes[0]).await.intact);
    let r = witness(&cluster.nodes[1]).await;
    assert!(r.agreed, "{r:?}");
    assert!(r.heads_checked >= 1, "{r:?}");
    let current = r.current.as_ref().expect("a current head");
    assert_eq!(current.root.len(), 32, "a tree head after the upgrade");
    assert!(r.proof_bytes > 0 && r.proof_bytes < 4096, "{r:?}");
    cluster.stop_all().await;
}

/// Runs `Admin.Export` and collects the archive.
async fn export(node: &TestNode, collection: &str) -> Vec<u8> {
    let mut stream = node
        .admin()
        .await
        .export(pb::ExportRequest {
            collection: collection.into(),
            allow_empty: false,
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        out.extend_from_slice(&chunk.data);
    }
    out
}

/// The audit log says what became of an export: a client that goes away
/// mid-bundle leaves `export.finished` with the failure, not "ok".
#[tokio::test]
async fn an_export_the_client_abandons_is_logged_as_not_completed() {
    let cluster = TestCluster::start(&["phila-da"]).await;
    let phila = &cluster.nodes[0];
    let blob = upload(phila, "abandoned", 4 << 20).await.unwrap();
    let mut r = rec("case-7", "bodycam");
    r.attachments = vec![pb::Attachment {
        hash: blob.hash.clone(),
        size: blob.size,
        file_name: "bodycam.mp4".into(),
        media_type: "video/mp4".into(),
        ..Default::default()
    }];
    phila.records().await.put(r).await.unwrap();
    let mut stream = phila
        .admin()
        .await
        .export(pb::ExportRequest {
            collection: "case-7".into(),
            allow_empty: false,
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().expect("a first chunk");
    assert!(!first.data.is_empty());
    drop(stream);
    let entry = eventually(
        DEADLINE,
        "export.finished after the client left",
        || async { of_action(phila, "export.finished").await.pop() },
    )
    .await;
    assert!(
        !entry.outcome_code.is_empty() && entry.outcome_message.contains("the client went away"),
        "{entry:?}"
    );
    assert!(
        entry
            .detail
            .starts_with("case bundle not completed: stopped after"),
        "{entry:?}"
    );
    let started = of_action(phila, "Admin.Export").await;
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].detail, "case bundle export started");
}

fn check(bundle: &[u8], trusted: &[casemesh::identity::Fingerprint]) -> Vec<String> {
    casemesh::bundle::verify(std::io::Cursor::new(bundle), trusted)
        .map(|r| r.failures)
        .unwrap_or_else(|e| vec![format!("unreadable: {e}")])
}

#[tokio::test]
async fn a_case_bundle_verifies_offline_and_any_flipped_byte_is_named() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da"]).await;
    cluster.pin_all().await;
    // nyc-da shares its part of the case with phila-da, which exports it
    // together with its own records.
    cluster.grant_collection(1, 0, "case-9").await;
    let theirs = cluster.nodes[1]
        .records()
        .await
        .put(rec("case-9", "nyc statement"))
        .await
        .unwrap()
        .into_inner();
    let phila = &cluster.nodes[0];
    let blob = upload(phila, "bundle", 70_000).await.unwrap();
    let mut ours = rec("case-9", "phila report");
    ours.attachments = vec![pb::Attachment {
        hash: blob.hash.clone(),
        size: blob.size,
        file_name: "video.bin".into(),
        media_type: "application/octet-stream".into(),
        ..Default::default()
    }];
    let ours = phila.records().await.put(ours).await.unwrap().into_inner();
    let mut update = rec("case-9", "phila report, corrected");
    update.id = ours.id.clone();
    phila.records().await.put(update).await.unwrap();
    eventually(DEADLINE, "nyc-da's record to reach phila-da", || async {
        phila
            .records()
            .await
            .get(pb::GetRequest {
                id: theirs.id.clone(),
                version: None,
            })
            .await
            .ok()
    })
    .await;
    let bundle = export(phila, "case-9").await;

    let report =
        casemesh::bundle::verify(std::io::Cursor::new(&bundle), &[]).expect("a readable bundle");
    assert!(report.failures.is_empty(), "{report}");
    let text = report.to_string();
    for expected in [
        ours.id.as_str(),
        theirs.id.as_str(),
        "nyc-da",
        "phila-da",
        "Records.Put",
    ] {
        assert!(text.contains(expected), "report lacks {expected}:\n{text}");
    }
    // Trusting both offices' fingerprints passes; trusting only one fails.
    let fp = |n: &TestNode| {
        let der = casemesh::identity::pki::certs_from_pem(&n.ca_pem()).unwrap();
        casemesh::identity::Fingerprint::of(&der[0])
    };
    let both = [fp(&cluster.nodes[0]), fp(&cluster.nodes[1])];
    assert!(check(&bundle, &both).is_empty());
    let only_phila = check(&bundle, &both[..1]);
    assert!(
        only_phila.iter().any(|f| f.contains("nyc-da")),
        "{only_phila:?}"
    );

    // One flipped byte in any member is caught, and the failure names it.
    let mut archive = tar::Archive::new(&bundle[..]);
    let members: Vec<(String, u64, u64)> = archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            (path, e.raw_file_position(), e.size())
        })
        .collect();
    let mut kinds = std::collections::BTreeSet::new();
    for (path, at, size) in &members {
        if *size == 0 {
            continue;
        }
        let name = path.rsplit('/').next().unwrap_or(path);
        let mut flipped = bundle.clone();
        flipped[(*at + size / 2) as usize] ^= 0x01;
        let failures = check(&flipped, &[]);
        assert!(
            !failures.is_empty(),
            "a flipped byte in {path} went unnoticed"
        );
        assert!(
            failures.iter().any(|f| f.contains(name)),
            "the failures do not name {path}: {failures:?}"
        );
        kinds.insert(path.split('/').nth(1).unwrap_or("").to_owned());
    }
    for kind in ["records", "files", "offices", "audit", "manifest.json"] {
        assert!(
            kinds.contains(kind),
            "no {kind} member was tested: {kinds:?}"
        );
    }
    cluster.stop_all().await;
}

#[tokio::test]
async fn sharing_and_replication_leave_their_entries_on_both_sides() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da"]).await;
    cluster.pin_all().await;
    let grant = cluster.grant_collection(0, 1, "case-1").await;
    let put = cluster.nodes[0]
        .records()
        .await
        .put(rec("case-1", "shared"))
        .await
        .unwrap()
        .into_inner();
    let (phila, nyc) = (&cluster.nodes[0], &cluster.nodes[1]);

    let pinned = of_action(phila, "Admin.AddPeer").await;
    assert_eq!(pinned.len(), 1, "{pinned:#?}");
    assert_eq!(pinned[0].peer, "nyc-da");
    let granted = of_action(phila, "Admin.Grant").await;
    assert_eq!(granted.len(), 1, "{granted:#?}");
    assert_eq!(
        (
            granted[0].collection.as_str(),
            granted[0].outcome_code.as_str()
        ),
        ("case-1", "")
    );
    assert!(granted[0].detail.contains(&grant));
    let names = |e: &pb::AuditEntry| e.records.iter().any(|r| r.record_id == put.id);
    let served = eventually(DEADLINE, "the served batch to be logged", || async {
        of_action(phila, "feed.versions_served")
            .await
            .into_iter()
            .find(|e| names(e))
    })
    .await;
    assert_eq!(
        (served.actor_office.as_str(), served.peer.as_str()),
        ("nyc-da", "nyc-da")
    );
    let applied = eventually(DEADLINE, "the replica to be logged at nyc-da", || async {
        of_action(nyc, "replica.applied")
            .await
            .into_iter()
            .find(|e| names(e))
    })
    .await;
    assert_eq!(
        (applied.actor_kind.as_str(), applied.peer.as_str()),
        ("node", "phila-da")
    );
    assert!(!of_action(phila, "Replication.Pull").await.is_empty());

    phila
        .admin()
        .await
        .revoke(pb::RevokeRequest {
            grant_id: grant.clone(),
        })
        .await
        .unwrap();
    assert_eq!(of_action(phila, "Admin.Revoke").await.len(), 1);
    eventually(DEADLINE, "the purge to be logged at nyc-da", || async {
        of_action(nyc, "replica.purged")
            .await
            .into_iter()
            .find(|e| names(e))
    })
    .await;
    eventually(
        DEADLINE,
        "nyc-da's purge receipt to be logged at phila-da",
        || async {
            of_action(phila, "purge_ack.received")
                .await
                .into_iter()
                .find(|e| e.detail.contains(&grant))
        },
    )
    .await;

    phila
        .admin()
        .await
        .remove_peer(pb::RemovePeerRequest {
            office: "nyc-da".into(),
            purge_replicas: false,
        })
        .await
        .unwrap();
    let removed = of_action(phila, "Admin.RemovePeer").await;
    assert_eq!(removed.len(), 1, "{removed:#?}");
    assert_eq!(removed[0].peer, "nyc-da");
    cluster.stop_all().await;
}
