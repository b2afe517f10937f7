//! Federation: three or more real nodes over mutual TLS on loopback.

use std::collections::BTreeMap;
use std::time::Duration;

use casemesh::protocol::pb;

use super::cluster::{TestCluster, TestNode, eventually, holdings};

const DEADLINE: Duration = Duration::from_secs(20);

fn rec(collection: &str, title: &str) -> pb::PutRequest {
    pb::PutRequest {
        collection: collection.into(),
        kind: "incident-report".into(),
        title: title.into(),
        body: format!("body of {title}").into_bytes().into(),
        content_type: "text/plain".into(),
        ..Default::default()
    }
}

/// Writes `n` records into `collection` at `node`; returns id → version.
async fn write(node: &TestNode, collection: &str, n: usize) -> BTreeMap<String, (u64, String)> {
    let mut c = node.records().await;
    let mut out = BTreeMap::new();
    for i in 0..n {
        let r = c
            .put(rec(collection, &format!("{collection}-{i}")))
            .await
            .unwrap()
            .into_inner();
        out.insert(r.id, (r.version, collection.to_owned()));
    }
    out
}

/// Waits until `node` holds exactly `expected` (ids and versions).
async fn converge(node: &TestNode, expected: &BTreeMap<String, (u64, String)>, what: &str) {
    eventually(DEADLINE, what, || async {
        let held = holdings(node).await;
        (&held == expected).then_some(())
    })
    .await;
}

#[tokio::test]
async fn only_granted_records_reach_a_peer() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da", "mpls-da"]).await;
    cluster.pin_all().await;
    let case1 = write(&cluster.nodes[0], "case-1", 5).await;
    let case2 = write(&cluster.nodes[0], "case-2", 3).await;
    cluster.grant_collection(0, 1, "case-1").await;

    converge(&cluster.nodes[1], &case1, "nyc-da to hold exactly case-1").await;
    let mut origin_all = case1.clone();
    origin_all.extend(case2.clone());
    assert_eq!(holdings(&cluster.nodes[0]).await, origin_all);
    // Records added to the granted collection later flow too.
    let later = write(&cluster.nodes[0], "case-1", 2).await;
    let mut expected = case1.clone();
    expected.extend(later);
    converge(
        &cluster.nodes[1],
        &expected,
        "later case-1 records to reach nyc-da",
    )
    .await;
    assert!(
        holdings(&cluster.nodes[2]).await.is_empty(),
        "mpls-da was granted nothing"
    );
    cluster.stop_all().await;
}

async fn grants(node: &TestNode) -> Vec<pb::GrantInfo> {
    node.admin()
        .await
        .list_grants(pb::ListGrantsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .grants
}

#[tokio::test]
async fn a_live_update_reaches_a_connected_peer_quickly() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da", "mpls-da"]).await;
    cluster.pin_all().await;
    let mut expected = write(&cluster.nodes[0], "case-1", 3).await;
    cluster.grant_collection(0, 1, "case-1").await;
    converge(&cluster.nodes[1], &expected, "backfill").await;

    let (id, _) = expected
        .iter()
        .next()
        .map(|(k, v)| (k.clone(), v.clone()))
        .unwrap();
    let mut c = cluster.nodes[0].records().await;
    let mut update = rec("case-1", "updated title");
    update.id = id.clone();
    let started = std::time::Instant::now();
    let v = c.put(update).await.unwrap().into_inner().version;
    let mut peer = cluster.nodes[1].records().await;
    eventually(
        Duration::from_secs(5),
        "the update to be readable at nyc-da",
        || {
            let mut peer = peer.clone();
            let id = id.clone();
            async move {
                let r = peer
                    .get(pb::GetRequest { id, version: None })
                    .await
                    .ok()?
                    .into_inner();
                (r.version == v && r.title == "updated title").then_some(())
            }
        },
    )
    .await;
    let latency = started.elapsed();
    assert!(
        latency < Duration::from_secs(2),
        "live update took {latency:?}"
    );
    expected.insert(id.clone(), (v, "case-1".into()));
    // A replica is read-only at the peer.
    let mut overwrite = rec("case-1", "forged");
    overwrite.id = id.clone();
    let err = peer.put(overwrite).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let err = peer
        .delete(pb::DeleteRequest {
            id: id.clone(),
            expected_version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    // `record list --origin` shows what nyc-da holds from phila-da.
    let from_phila = peer
        .list(pb::ListRequest {
            origin: "phila-da".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .records;
    assert_eq!(from_phila.len(), 3);
    // A delete at the origin reaches the peer as a signed tombstone.
    c.delete(pb::DeleteRequest {
        id: id.clone(),
        expected_version: None,
    })
    .await
    .unwrap();
    eventually(DEADLINE, "the tombstone to reach nyc-da", || {
        let mut peer = peer.clone();
        let id = id.clone();
        async move {
            let r = peer
                .get(pb::GetRequest { id, version: None })
                .await
                .ok()?
                .into_inner();
            r.deleted.then_some(())
        }
    })
    .await;
    cluster.stop_all().await;
}

#[tokio::test]
async fn revoking_purges_the_peer_and_it_confirms_with_a_signed_ack() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da", "mpls-da"]).await;
    cluster.pin_all().await;
    let case1 = write(&cluster.nodes[0], "case-1", 4).await;
    let case2 = write(&cluster.nodes[0], "case-2", 2).await;
    let g1 = cluster.grant_collection(0, 1, "case-1").await;
    cluster.grant_collection(0, 1, "case-2").await;
    // One case-1 record is also granted on its own: it must survive.
    let kept = case1.keys().next().unwrap().clone();
    let g_record = cluster.nodes[0]
        .admin()
        .await
        .grant(pb::GrantRequest {
            peer: "nyc-da".into(),
            target: Some(pb::grant_request::Target::RecordId(kept.clone())),
            expires_at_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(g_record.id.starts_with("g-"));
    let mut all = case1.clone();
    all.extend(case2.clone());
    converge(&cluster.nodes[1], &all, "nyc-da to hold both cases").await;

    let revoked = cluster.nodes[0]
        .admin()
        .await
        .revoke(pb::RevokeRequest {
            grant_id: g1.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.end_reason, "revoked");
    let mut expected = case2.clone();
    expected.insert(kept.clone(), case1[&kept].clone());
    converge(
        &cluster.nodes[1],
        &expected,
        "case-1 (but the separately granted record) purged",
    )
    .await;

    // A purged replica answers like an unknown record.
    let gone = case1.keys().find(|k| **k != kept).unwrap().clone();
    let err = cluster.nodes[1]
        .records()
        .await
        .get(pb::GetRequest {
            id: gone,
            version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    let node0 = &cluster.nodes[0];
    let ack = eventually(
        DEADLINE,
        "nyc-da's signed purge acknowledgement",
        || async {
            grants(node0)
                .await
                .into_iter()
                .find(|g| g.id == g1)?
                .purge_ack
        },
    )
    .await;
    assert_eq!(ack.purged_by, "nyc-da");
    assert_eq!(ack.origin, "phila-da");
    assert!(!ack.signature.is_empty());
    // Revoking twice is refused and changes nothing.
    let err = node0
        .admin()
        .await
        .revoke(pb::RevokeRequest { grant_id: g1 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    cluster.stop_all().await;
}

/// An end no calendar can write would make every reader of the grant fail
/// to show it; the node refuses it and keeps no grant.
#[tokio::test]
async fn a_grant_ending_after_year_9999_is_refused() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da"]).await;
    cluster.pin(0, 1).await;
    for expires_at_ms in [u64::MAX, casemesh::domain::MAX_TIME_MS + 1] {
        let err = cluster.nodes[0]
            .admin()
            .await
            .grant(pb::GrantRequest {
                peer: "nyc-da".into(),
                target: Some(pb::grant_request::Target::Collection("case-1".into())),
                expires_at_ms,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("9999-12-31"), "{err:?}");
    }
    assert!(grants(&cluster.nodes[0]).await.is_empty());
    cluster.stop_all().await;
}

#[tokio::test]
async fn an_expired_grant_purges_the_peer_without_admin_action() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da", "mpls-da"]).await;
    cluster.pin_all().await;
    let case1 = write(&cluster.nodes[0], "case-1", 3).await;
    let expires_at_ms = casemesh::domain::now_ms() + 1500;
    let g = cluster.nodes[0]
        .admin()
        .await
        .grant(pb::GrantRequest {
            peer: "nyc-da".into(),
            target: Some(pb::grant_request::Target::Collection("case-1".into())),
            expires_at_ms,
        })
        .await
        .unwrap()
        .into_inner();
    converge(
        &cluster.nodes[1],
        &case1,
        "nyc-da to hold case-1 before expiry",
    )
    .await;
    converge(
        &cluster.nodes[1],
        &BTreeMap::new(),
        "nyc-da to be purged at expiry",
    )
    .await;
    let node0 = &cluster.nodes[0];
    let ended = eventually(DEADLINE, "the grant to be ended and confirmed", || async {
        grants(node0)
            .await
            .into_iter()
            .find(|x| x.id == g.id && x.purge_ack.is_some())
    })
    .await;
    assert_eq!(ended.end_reason, "expired");
    assert!(ended.revoked_at_ms >= expires_at_ms);
    cluster.stop_all().await;
}

#[tokio::test]
async fn removing_a_peer_stops_both_directions_and_can_purge_its_replicas() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da", "mpls-da"]).await;
    cluster.pin_all().await;
    let case1 = write(&cluster.nodes[0], "case-1", 3).await;
    cluster.grant_collection(0, 1, "case-1").await;
    cluster.grant_collection(0, 2, "case-1").await;
    converge(&cluster.nodes[1], &case1, "nyc-da backfill").await;
    converge(&cluster.nodes[2], &case1, "mpls-da backfill").await;

    // The receiving side drops phila-da and purges what it held from it.
    let r = cluster.nodes[1]
        .admin()
        .await
        .remove_peer(pb::RemovePeerRequest {
            office: "phila-da".into(),
            purge_replicas: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.replicas_purged, 3);
    assert!(holdings(&cluster.nodes[1]).await.is_empty());

    // The origin drops mpls-da: its grant closes and new writes stop flowing.
    let r = cluster.nodes[0]
        .admin()
        .await
        .remove_peer(pb::RemovePeerRequest {
            office: "mpls-da".into(),
            purge_replicas: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.grants_closed, 1);
    let later = write(&cluster.nodes[0], "case-1", 1).await;
    let later_id = later.keys().next().unwrap().clone();
    let node2 = &cluster.nodes[2];
    eventually(
        DEADLINE,
        "mpls-da's link to phila-da to go down",
        || async {
            let peers = node2
                .admin()
                .await
                .list_peers(pb::ListPeersRequest {})
                .await
                .ok()?
                .into_inner();
            let p = peers.peers.into_iter().find(|p| p.office == "phila-da")?;
            (!p.connected).then_some(())
        },
    )
    .await;
    // A positive control: the write does flow to a peer still granted and
    // connected (nyc-da, pinning phila-da again) — and only then is its
    // absence at mpls-da evidence.
    cluster.pin(1, 0).await;
    let mut both = case1.clone();
    both.extend(later.clone());
    converge(
        &cluster.nodes[1],
        &both,
        "nyc-da, pinned again, to receive the later write",
    )
    .await;
    assert!(!holdings(&cluster.nodes[2]).await.contains_key(&later_id));
    let err = cluster.nodes[0]
        .admin()
        .await
        .remove_peer(pb::RemovePeerRequest {
            office: "mpls-da".into(),
            purge_replicas: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    cluster.stop_all().await;
}

#[tokio::test]
async fn restarts_in_the_middle_of_a_large_backfill_lose_nothing() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da", "mpls-da"]).await;
    cluster.pin_all().await;
    let mut expected = write(&cluster.nodes[0], "big", 1500).await;
    let _noise = write(&cluster.nodes[0], "other", 50).await;
    cluster.grant_collection(0, 1, "big").await;

    // The receiver stops once it holds some but not all of the case.
    let node1 = &cluster.nodes[1];
    eventually(
        DEADLINE,
        "nyc-da to be part-way through the backfill",
        || async { (!holdings(node1).await.is_empty()).then_some(()) },
    )
    .await;
    cluster.nodes[1].stop().await;
    // Meanwhile the origin updates records and is restarted itself.
    let mut c = cluster.nodes[0].records().await;
    for id in expected.keys().take(20).cloned().collect::<Vec<_>>() {
        let mut u = rec("big", "updated while peer down");
        u.id = id.clone();
        let v = c.put(u).await.unwrap().into_inner().version;
        expected.insert(id, (v, "big".into()));
    }
    drop(c);
    cluster.nodes[0].restart().await;
    cluster.nodes[1].restart().await;
    // And the origin once more while the peer catches up.
    cluster.nodes[0].restart().await;
    converge(
        &cluster.nodes[1],
        &expected,
        "nyc-da to hold exactly the granted case",
    )
    .await;
    assert!(holdings(&cluster.nodes[2]).await.is_empty());
    cluster.stop_all().await;
}

#[tokio::test]
async fn a_peer_that_purged_and_pinned_an_office_again_receives_its_grants_again() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da", "mpls-da"]).await;
    cluster.pin_all().await;
    let case1 = write(&cluster.nodes[0], "case-1", 4).await;
    cluster.grant_collection(0, 1, "case-1").await;
    converge(&cluster.nodes[1], &case1, "backfill").await;
    cluster.nodes[1]
        .admin()
        .await
        .remove_peer(pb::RemovePeerRequest {
            office: "phila-da".into(),
            purge_replicas: true,
        })
        .await
        .unwrap();
    assert!(holdings(&cluster.nodes[1]).await.is_empty());
    cluster.pin(1, 0).await;
    converge(
        &cluster.nodes[1],
        &case1,
        "the grant to flow again after re-pinning",
    )
    .await;
    cluster.stop_all().await;
}

#[tokio::test]
async fn a_peer_removed_and_pinned_again_purges_what_its_ended_grants_covered() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da", "mpls-da"]).await;
    cluster.pin_all().await;
    let case1 = write(&cluster.nodes[0], "case-1", 3).await;
    cluster.grant_collection(0, 1, "case-1").await;
    converge(&cluster.nodes[1], &case1, "backfill").await;
    // The origin unpins nyc-da (which keeps its copies: it was not told),
    // then pins it again: the closed grant's revocations now reach it.
    cluster.nodes[0]
        .admin()
        .await
        .remove_peer(pb::RemovePeerRequest {
            office: "nyc-da".into(),
            purge_replicas: false,
        })
        .await
        .unwrap();
    assert_eq!(holdings(&cluster.nodes[1]).await, case1);
    cluster.pin(0, 1).await;
    converge(
        &cluster.nodes[1],
        &BTreeMap::new(),
        "nyc-da to purge the ended grant",
    )
    .await;
    cluster.stop_all().await;
}

#[tokio::test]
async fn a_silent_pull_stream_does_not_hold_up_shutdown() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da"]).await;
    cluster.pin(0, 1).await;
    let p = cluster.nodes[1].paths();
    let (cert, key) = (
        std::fs::read(p.node_cert()).unwrap(),
        std::fs::read(p.node_key()).unwrap(),
    );
    let ch = cluster.nodes[0].connect_as(&cert, &key).await.unwrap();
    // Opens Pull and never says where to start.
    let (_tx, rx) = tokio::sync::mpsc::channel::<pb::PullUp>(1);
    let _stream = pb::replication_client::ReplicationClient::new(ch)
        .pull(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), cluster.nodes[0].stop())
        .await
        .expect("shutdown finishes while a peer's stream is open");
    // The store was released: the node starts again on the same directory.
    tokio::time::timeout(Duration::from_secs(10), cluster.nodes[0].restart())
        .await
        .expect("restart");
    cluster.stop_all().await;
}

/// Records and versions stored, as `Status` reports them.
async fn counts(node: &TestNode) -> (u64, u64) {
    let s = node
        .admin()
        .await
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    (s.records, s.versions)
}

/// The counts `Status` reports are kept by the writes themselves (it does
/// not scan the store): they follow puts, a second version, deletes,
/// replicas arriving and being purged, survive a restart, and are counted
/// afresh for a store written before they were kept.
#[tokio::test]
async fn status_counts_follow_puts_replicas_and_purges() {
    let mut c = TestCluster::start(&["phila-da", "nyc-da"]).await;
    c.pin_all().await;
    let case = write(&c.nodes[0], "case-1", 3).await;
    write(&c.nodes[0], "case-2", 2).await;
    let mut records = c.nodes[0].records().await;
    let (first, (version, _)) = case.iter().next().unwrap();
    let mut update = rec("case-1", "amended");
    update.id = first.clone();
    update.expected_version = Some(*version);
    let updated = records.put(update).await.unwrap().into_inner();
    records
        .delete(pb::DeleteRequest {
            id: first.clone(),
            expected_version: Some(updated.version),
        })
        .await
        .unwrap();
    // 5 records; 5 first versions, an update and a deletion.
    assert_eq!(counts(&c.nodes[0]).await, (5, 7));

    let grant = c.grant_collection(0, 1, "case-1").await;
    eventually(
        DEADLINE,
        "the case's 3 records and 5 versions at nyc-da",
        || async { (counts(&c.nodes[1]).await == (3, 5)).then_some(()) },
    )
    .await;
    c.node(1).restart().await;
    assert_eq!(counts(&c.nodes[1]).await, (3, 5));

    c.nodes[0]
        .admin()
        .await
        .revoke(pb::RevokeRequest { grant_id: grant })
        .await
        .unwrap();
    eventually(DEADLINE, "nyc-da to purge the case", || async {
        (counts(&c.nodes[1]).await == (0, 0)).then_some(())
    })
    .await;

    // A store from before the counts were kept has no count keys: they
    // are counted when it opens.
    c.node(0).stop().await;
    {
        let disk = casemesh::store::disk::OnDisk::open(&c.nodes[0].paths().store()).unwrap();
        disk.forget_counts().unwrap();
        disk.flush().unwrap();
    }
    c.node(0).restart().await;
    assert_eq!(counts(&c.nodes[0]).await, (5, 7));
    c.stop_all().await;
}

/// Whether `node`'s puller is connected to `origin`.
async fn pulling_from(node: &TestNode, origin: &str) -> bool {
    node.admin()
        .await
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .peers
        .iter()
        .any(|p| p.office == origin && p.connected)
}

/// Three peers granted the same case each receive exactly that case, and
/// the origin reads each version from its store about once for all three
/// feeds, not once per peer: the feeds share what they read, while each
/// still decides per peer what that peer may receive.
#[tokio::test]
async fn peers_granted_the_same_case_share_the_origins_reads() {
    let mut c = TestCluster::start(&["phila-da", "nyc-da", "mpls-da", "pitt-da"]).await;
    c.pin_all().await;
    for i in 1..4 {
        let node = &c.nodes[i];
        eventually(DEADLINE, "each peer to pull from phila-da", || async {
            pulling_from(node, "phila-da").await.then_some(())
        })
        .await;
    }
    const N: u64 = 60;
    let case = write(&c.nodes[0], "case-1", N as usize).await;
    write(&c.nodes[0], "case-2", 10).await;
    let before = c.nodes[0].kit().feed_counts().unwrap();
    for peer in 1..4 {
        c.grant_collection(0, peer, "case-1").await;
    }
    for peer in 1..4 {
        converge(&c.nodes[peer], &case, "each peer to hold exactly case-1").await;
    }
    let after = c.nodes[0].kit().feed_counts().unwrap();
    let served = after.served - before.served;
    let read = after.read - before.read;
    // A batch built again after a grant changed counts again.
    assert!(served >= 3 * N, "{served} versions served to 3 peers");
    assert!(
        served - read >= N,
        "{read} of {served} versions served were read from the store: not shared"
    );
    // The ungranted case reached nobody.
    for peer in 1..4 {
        assert_eq!(holdings(&c.nodes[peer]).await, case);
    }
    c.stop_all().await;
}
