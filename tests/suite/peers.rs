//! What a peer node, or anyone holding a peer office's certificates, can
//! and cannot do.

use std::time::Duration;

use casemesh::domain::RecordVersion;
use casemesh::identity::OfficeSigner;
use casemesh::protocol::pb::{
    self, admin_client::AdminClient, records_client::RecordsClient,
    replication_client::ReplicationClient,
};
use tonic::Code;

use super::cluster::{TestCluster, TestNode, eventually, holdings, of_action};
use super::hostile::{impersonate, office_ca, version};

fn admin_identity(node: &TestNode) -> (Vec<u8>, Vec<u8>) {
    let p = node.paths();
    (
        std::fs::read(p.admin_cert()).unwrap(),
        std::fs::read(p.admin_key()).unwrap(),
    )
}

/// A health check presenting `cert`: `Ok`, or why it failed (for a
/// refused certificate, the TLS alert the node sent, as the client saw it).
async fn health(node: &TestNode, cert: &[u8], key: &[u8]) -> Result<(), String> {
    let ch = node.connect_as(cert, key).await?;
    tonic_health::pb::health_client::HealthClient::new(ch)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .map(|_| ())
        .map_err(|s| format!("{s:?}"))
}

#[tokio::test]
async fn a_pinned_peers_node_certificate_may_only_replicate() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da", "mpls-da"]).await;
    cluster.pin_all().await;
    let (cert, key) = cluster.nodes[1].node_identity();
    let origin = &cluster.nodes[0];
    health(origin, &cert, &key)
        .await
        .expect("control: the handshake succeeds");
    let ch = origin.connect_as(&cert, &key).await.unwrap();
    let err = RecordsClient::new(ch.clone())
        .list(pb::ListRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = RecordsClient::new(ch.clone())
        .get(pb::GetRequest {
            id: "phila-da:0123456789abcdef0123456789abcdef".into(),
            version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "asking for an id reveals nothing"
    );
    let err = AdminClient::new(ch)
        .list_peers(pb::ListPeersRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    cluster.stop_all().await;
}

#[tokio::test]
async fn a_pinned_peers_admin_certificate_gets_nothing() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da", "mpls-da"]).await;
    cluster.pin_all().await;
    let origin = &cluster.nodes[0];
    let (node_cert, node_key) = cluster.nodes[1].node_identity();
    health(origin, &node_cert, &node_key)
        .await
        .expect("control: the same office's node certificate is accepted");
    // Its admin's certificate chains to the same pinned CA, but only a
    // node may connect: refused at the handshake, with access_denied.
    let (cert, key) = admin_identity(&cluster.nodes[1]);
    let refused = origin.connect_as(&cert, &key).await.unwrap_err();
    assert!(refused.contains("AccessDenied"), "{refused}");
    cluster.stop_all().await;
}

#[tokio::test]
async fn a_node_certificate_from_an_unpinned_ca_fails_the_handshake() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da", "mpls-da"]).await;
    cluster.pin(0, 1).await; // phila-da pins nyc-da only
    let (pinned_cert, pinned_key) = cluster.nodes[1].node_identity();
    let (cert, key) = cluster.nodes[2].node_identity();
    health(&cluster.nodes[0], &pinned_cert, &pinned_key)
        .await
        .expect("control: the pinned office's node is accepted");
    let refused = health(&cluster.nodes[0], &cert, &key).await.unwrap_err();
    assert!(refused.contains("UnknownCA"), "{refused}");
    cluster.stop_all().await;
}

fn start(after_seq: u64) -> pb::PullUp {
    pb::PullUp {
        kind: Some(pb::pull_up::Kind::Start(pb::PullStart {
            after_seq,
            record_encoding: casemesh::domain::record::RECORD_ENCODING,
        })),
    }
}

/// Pulls as `peer` from `origin` until the first heartbeat; returns the
/// record ids of every version received, or the status the stream ended
/// with.
async fn pull_until_idle(
    origin: &TestNode,
    peer: &TestNode,
    after_seq: u64,
) -> Result<Vec<String>, tonic::Status> {
    let (cert, key) = peer.node_identity();
    let ch = origin.connect_as(&cert, &key).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(start(after_seq)).await.unwrap();
    let mut down = ReplicationClient::new(ch)
        .pull(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut ids = Vec::new();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), down.message())
            .await
            .expect("a message within 10 s")?
            .expect("stream open");
        match msg.kind {
            Some(pb::pull_down::Kind::Batch(b)) => {
                for e in b.entries {
                    if let Some(pb::feed_entry::Kind::Version(v)) = e.kind {
                        let r = RecordVersion::from_canonical(&v.canonical).unwrap();
                        ids.push(r.id.to_string());
                    }
                }
            }
            Some(pb::pull_down::Kind::Heartbeat(_)) => return Ok(ids),
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_peer_receives_only_its_grants_whatever_checkpoint_it_sends() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da", "mpls-da"]).await;
    // phila-da accepts both peers, but they do not pull by themselves: the
    // test pulls by hand as nyc-da.
    cluster.pin(0, 1).await;
    cluster.pin(0, 2).await;
    let mut c = cluster.nodes[0].records().await;
    let mut granted = std::collections::BTreeSet::new();
    for i in 0..6 {
        let case = if i % 2 == 0 { "case-1" } else { "case-2" };
        let id = c
            .put(pb::PutRequest {
                collection: case.into(),
                kind: "k".into(),
                title: format!("t{i}"),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .id;
        if case == "case-1" {
            granted.insert(id);
        }
    }
    cluster.grant_collection(0, 1, "case-1").await;
    cluster.grant_collection(0, 2, "case-2").await;
    for after in [0, 1, 3] {
        let ids = pull_until_idle(&cluster.nodes[0], &cluster.nodes[1], after)
            .await
            .unwrap();
        assert!(
            ids.iter().all(|id| granted.contains(id)),
            "after {after}: received an ungranted record"
        );
        if after == 0 {
            let got: std::collections::BTreeSet<_> = ids.into_iter().collect();
            assert_eq!(got, granted, "from the start, exactly the grant");
        }
    }
    // Past the end of its own feed, a peer gets nothing, and is told so.
    for after in [u64::MAX / 2, u64::MAX] {
        let refused = pull_until_idle(&cluster.nodes[0], &cluster.nodes[1], after)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        assert!(refused.message().contains("past the end"), "{refused:?}");
    }
    cluster.stop_all().await;
}

fn entry(seq: u64, canonical: Vec<u8>, signature: Vec<u8>) -> pb::FeedEntry {
    pb::FeedEntry {
        seq,
        kind: Some(pb::feed_entry::Kind::Version(pb::ReplicatedVersion {
            canonical: canonical.into(),
            signature: signature.into(),
        })),
    }
}

#[tokio::test]
async fn versions_with_a_broken_signature_or_another_origin_are_rejected() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da", "mpls-da"]).await;
    cluster.pin_all().await;
    let phila = cluster.nodes[0].office.clone();
    let mpls = cluster.nodes[2].office.clone();
    let phila_ca = office_ca(&cluster.nodes[0]);
    let mpls_ca = office_ca(&cluster.nodes[2]);

    let good = OfficeSigner::new(&phila_ca)
        .sign(version(&phila, "genuine"))
        .unwrap();
    let tampered = {
        let s = OfficeSigner::new(&phila_ca)
            .sign(version(&phila, "tampered"))
            .unwrap();
        let mut bytes = s.canonical.to_vec();
        let last = bytes.len() - 2;
        bytes[last] ^= 1;
        (bytes, s.signature.to_vec())
    };
    let other_origin = OfficeSigner::new(&mpls_ca)
        .sign(version(&mpls, "not phila's"))
        .unwrap();
    let wrong_key = OfficeSigner::new(&mpls_ca)
        .sign(version(&phila, "signed by mpls"))
        .unwrap();
    let bad_shape = {
        let mut v = version(&phila, "bad collection");
        v.collection = "case-1\0phila-da:0000".into();
        OfficeSigner::new(&phila_ca).sign(v).unwrap()
    };
    let forged_revoke = pb::FeedEntry {
        seq: 5,
        kind: Some(pb::feed_entry::Kind::RevokeRecordId(
            other_origin.record.id.to_string(),
        )),
    };
    let batch = pb::Batch {
        entries: vec![
            entry(1, tampered.0, tampered.1),
            entry(
                2,
                other_origin.canonical.to_vec(),
                other_origin.signature.to_vec(),
            ),
            entry(
                3,
                wrong_key.canonical.to_vec(),
                wrong_key.signature.to_vec(),
            ),
            entry(4, good.canonical.to_vec(), good.signature.to_vec()),
            forged_revoke,
            entry(
                6,
                bad_shape.canonical.to_vec(),
                bad_shape.signature.to_vec(),
            ),
        ],
        last_seq: 6,
        audit_head: None,
    };

    // Replace the real phila-da with an impostor holding its node
    // certificate, on the same address.
    let forged = batch.entries.len() - 1;
    let server = impersonate(&mut cluster, 0, vec![batch]).await;

    let nyc = &cluster.nodes[1];
    let good_id = good.record.id.to_string();
    eventually(
        Duration::from_secs(30),
        "the genuine version to arrive",
        || async { holdings(nyc).await.contains_key(&good_id).then_some(()) },
    )
    .await;
    let held = holdings(nyc).await;
    assert_eq!(
        held.len(),
        1,
        "only the genuine version is stored: {held:?}"
    );
    let applied = of_action(nyc, "replica.applied").await;
    assert!(
        applied
            .iter()
            .any(|e| e.records.iter().any(|r| r.record_id == good_id)),
        "{applied:#?}"
    );
    server.abort();
    // Each refused entry is in the audit log, named: the first at once,
    // the others in the entry that counts them, written at the latest when
    // the node stops.
    cluster.nodes[1].restart().await;
    let nyc = &cluster.nodes[1];
    let rejected = of_action(nyc, "replica.rejected").await;
    assert!(
        rejected
            .iter()
            .all(|e| e.outcome_code == "REJECTED" && e.peer == "phila-da"),
        "{rejected:#?}"
    );
    let details: Vec<&str> = rejected.iter().map(|e| e.detail.as_str()).collect();
    assert_eq!(details[0], "feed entry 1", "{details:?}");
    let revoked = format!("revocation of {} (feed entry 5)", other_origin.record.id);
    let expected = [
        "feed entry 1",
        "feed entry 2",
        "feed entry 3",
        revoked.as_str(),
        "feed entry 6",
    ];
    assert_eq!(details.len(), 2, "{details:?}");
    let (count, named) = details[1].split_once(" s: ").unwrap();
    assert_eq!(count, "4 more refused within 60");
    assert_eq!(named.split("; ").collect::<Vec<_>>(), expected[1..]);
    assert_eq!(expected.len(), forged);
    cluster.stop_all().await;
}
