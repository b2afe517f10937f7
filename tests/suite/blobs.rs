//! Attachments: large files streamed in and out, stored once per content,
//! fetched by granted peers with resume, removed when nothing lists them.

use std::time::Duration;

use casemesh::protocol::pb::{self, replication_client::ReplicationClient};
use tonic::Code;

use super::blobkit::*;
use super::cluster::{TestCluster, TestNode, eventually};

/// The offsets a node was asked to serve `hash` from, in order, as its own
/// audit log recorded the peer's `FetchBlob` calls: what the serving side
/// saw, not what the fetching side reports.
async fn served_offsets(node: &TestNode, hash: &[u8]) -> Vec<u64> {
    let entries = node
        .admin()
        .await
        .query_audit(pb::QueryAuditRequest {
            action: "Replication.FetchBlob".into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("query audit")
        .into_inner()
        .entries;
    let prefix = format!("file {}, offset ", hex::encode(hash));
    entries
        .iter()
        .filter_map(|e| e.detail.strip_prefix(&prefix)?.parse().ok())
        .collect()
}

/// Stopping the origin part-way, and then restarting the peer part-way,
/// each time the transfer resumes from the bytes already stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_fetch_resumes_where_it_stopped() {
    const SIZE: u64 = 40 * MIB;
    let mut c = two_offices().await;
    // Slow the peer's fetches so that they can be interrupted part-way.
    c.node(1)
        .configure(|cfg| cfg.blobs.fetch_bytes_per_sec = 4 * MIB)
        .await;
    c.grant_collection(0, 1, "case-9").await;
    let info = upload(&c.nodes[0], "interview", SIZE).await.unwrap();
    let id = put_with(
        &c.nodes[0],
        "case-9",
        vec![attachment(&info, "interview.mp4")],
    )
    .await;

    let transfer = |node_status: pb::StatusResponse| node_status.transfers.into_iter().next();
    // 1. The origin stops with part of the file at the peer.
    eventually(Duration::from_secs(60), "8 MiB at the peer", || async {
        transfer(status(&c.nodes[1]).await).filter(|t| t.received >= 8 * MIB)
    })
    .await;
    c.node(0).stop().await;
    let stopped = eventually(Duration::from_secs(30), "the transfer to fail", || async {
        transfer(status(&c.nodes[1]).await).filter(|t| !t.active)
    })
    .await;
    assert!(stopped.received >= 8 * MIB && stopped.received < SIZE);
    assert!(!stopped.last_error.is_empty());
    c.node(0).restart().await;
    let resumed = eventually(
        Duration::from_secs(60),
        "the transfer to resume",
        || async { transfer(status(&c.nodes[1]).await).filter(|t| t.active) },
    )
    .await;
    assert_eq!(
        resumed.resumed_from, stopped.received,
        "it resumed where it stopped, not at 0"
    );

    // 2. The peer restarts part-way.
    let before_restart = eventually(Duration::from_secs(60), "more bytes", || async {
        transfer(status(&c.nodes[1]).await).filter(|t| t.received >= stopped.received + 8 * MIB)
    })
    .await;
    c.node(1).restart().await;
    let resumed = eventually(
        Duration::from_secs(60),
        "the transfer to resume after the peer's restart",
        || async { transfer(status(&c.nodes[1]).await).filter(|t| t.active) },
    )
    .await;
    assert!(
        resumed.resumed_from >= before_restart.received,
        "resumed at {} after {} were stored",
        resumed.resumed_from,
        before_restart.received
    );

    wait_present(&c.nodes[1], &id, Duration::from_secs(120)).await;
    let mut remote = c.nodes[1].records().await;
    assert_eq!(
        download(&mut remote, &info.hash).await.unwrap(),
        (hash_of("interview", SIZE), SIZE)
    );
    assert!(status(&c.nodes[1]).await.transfers.is_empty());

    // What the origin was asked for: from 0 once, then each request from
    // where the previous one stopped, never from the start again.
    let offsets = served_offsets(&c.nodes[0], &info.hash).await;
    eprintln!("the origin served from offsets {offsets:?}");
    assert_eq!(offsets.first(), Some(&0), "served: {offsets:?}");
    assert!(
        offsets[1..].iter().all(|&o| o > 0) && offsets.is_sorted(),
        "each request continued where the last stopped: {offsets:?}"
    );
    assert!(
        offsets.contains(&stopped.received),
        "after its restart the origin was asked from {}: {offsets:?}",
        stopped.received
    );
    assert!(
        offsets.iter().any(|&o| o >= before_restart.received),
        "after the peer's restart it asked from {} or later: {offsets:?}",
        before_restart.received
    );
    c.stop_all().await;
}

/// A peer asking for the file of a record not shared with it learns
/// nothing: the answer is the one for a hash that does not exist.
#[tokio::test]
async fn a_peer_cannot_tell_an_unshared_blob_from_a_made_up_one() {
    let mut c = two_offices().await;
    c.grant_collection(0, 1, "shared").await;
    let shared = upload(&c.nodes[0], "shared", MIB).await.unwrap();
    let secret = upload(&c.nodes[0], "secret", MIB).await.unwrap();
    let shared_id = put_with(&c.nodes[0], "shared", vec![attachment(&shared, "a.mp4")]).await;
    put_with(&c.nodes[0], "internal", vec![attachment(&secret, "b.mp4")]).await;
    wait_present(&c.nodes[1], &shared_id, Duration::from_secs(30)).await;

    let (cert, key) = c.nodes[1].node_identity();
    let channel = c.nodes[0].connect_as(&cert, &key).await.unwrap();
    let mut peer = ReplicationClient::new(channel);
    let mut fetch = async |hash: &[u8]| -> Result<u64, tonic::Status> {
        let mut s = peer
            .fetch_blob(pb::FetchBlobRequest {
                hash: hash.to_vec().into(),
                offset: 0,
                ..Default::default()
            })
            .await?
            .into_inner();
        let mut n = 0;
        while let Some(p) = s.message().await? {
            n += p.data.len() as u64;
        }
        Ok(n)
    };
    // Positive control: the shared one comes.
    assert_eq!(fetch(&shared.hash).await.unwrap(), MIB);
    // In the pieces asked for: 256 KiB to a peer that does not say (as
    // peers before the field could take no more), at most 1 MiB.
    for (asked, piece) in [(0, 256 << 10), (128 << 10, 128 << 10), (64 << 20, 1 << 20)] {
        let mut s = ReplicationClient::new(c.nodes[0].connect_as(&cert, &key).await.unwrap())
            .fetch_blob(pb::FetchBlobRequest {
                hash: shared.hash.clone(),
                offset: 0,
                max_piece_bytes: asked,
            })
            .await
            .unwrap()
            .into_inner();
        let first = s.message().await.unwrap().unwrap();
        assert_eq!(first.data.len(), piece, "asked for {asked}");
    }
    let made_up = [7u8; 32];
    let unshared = fetch(&secret.hash).await.unwrap_err();
    let unknown = fetch(&made_up).await.unwrap_err();
    assert_eq!(unshared.code(), Code::NotFound);
    assert_eq!(unknown.code(), Code::NotFound);
    // A new version without the file: still served, since the record is
    // still shared and its history, which travels with it, lists the file.
    let mut records = c.nodes[0].records().await;
    let next = |collection: &str, expected: u64| pb::PutRequest {
        id: shared_id.clone(),
        expected_version: Some(expected),
        collection: collection.into(),
        kind: "video".into(),
        title: "file removed".into(),
        ..Default::default()
    };
    records.put(next("shared", 1)).await.unwrap();
    assert_eq!(fetch(&shared.hash).await.unwrap(), MIB);
    // Moved out of the shared case: no longer served.
    records.put(next("internal", 2)).await.unwrap();
    assert_eq!(
        fetch(&shared.hash).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        unshared
            .message()
            .replace(&hex::encode(&secret.hash), "HASH"),
        unknown.message().replace(&hex::encode(made_up), "HASH"),
    );
    c.stop_all().await;
}

/// The same bytes attached to two records are stored once; the peer keeps
/// them while either record is shared with it and removes them when
/// neither is.
#[tokio::test]
async fn one_file_on_two_records_is_stored_once_and_removed_with_the_last() {
    let mut c = two_offices().await;
    let first = upload(&c.nodes[0], "photo", 3 * MIB).await.unwrap();
    let second = upload(&c.nodes[0], "photo", 3 * MIB).await.unwrap();
    assert_eq!(first.hash, second.hash);
    let a = put_with(&c.nodes[0], "case-a", vec![attachment(&first, "p.jpg")]).await;
    let b = put_with(&c.nodes[0], "case-b", vec![attachment(&second, "p.jpg")]).await;
    let origin = status(&c.nodes[0]).await;
    assert_eq!((origin.blobs, origin.blob_bytes), (1, 3 * MIB));

    let grant_a = c.grant_collection(0, 1, "case-a").await;
    let grant_b = c.grant_collection(0, 1, "case-b").await;
    wait_present(&c.nodes[1], &a, Duration::from_secs(30)).await;
    wait_present(&c.nodes[1], &b, Duration::from_secs(30)).await;
    let peer = status(&c.nodes[1]).await;
    assert_eq!((peer.blobs, peer.blob_bytes), (1, 3 * MIB));
    // On disk, at the peer too: once, and nothing left staged.
    let once = vec![(hex::encode(&first.hash), 3 * MIB)];
    assert_eq!(stored_files(&c.nodes[1]), once);
    assert!(staged_files(&c.nodes[1]).is_empty());

    let revoke = async |grant: &str| {
        c.nodes[0]
            .admin()
            .await
            .revoke(pb::RevokeRequest {
                grant_id: grant.into(),
            })
            .await
            .expect("revoke");
    };
    revoke(&grant_a).await;
    eventually(
        Duration::from_secs(30),
        "record a purged at the peer",
        || async {
            attachment_state(&c.nodes[1], &a)
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
    // b still lists it: still there, still readable.
    let mut remote = c.nodes[1].records().await;
    assert_eq!(download(&mut remote, &first.hash).await.unwrap().1, 3 * MIB);
    assert_eq!(status(&c.nodes[1]).await.blobs, 1);

    revoke(&grant_b).await;
    eventually(
        Duration::from_secs(30),
        "the file removed at the peer",
        || async {
            let s = status(&c.nodes[1]).await;
            (s.blobs == 0 && s.blob_bytes == 0).then_some(())
        },
    )
    .await;
    let gone = download(&mut remote, &first.hash).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    // The origin keeps it: its records still list it.
    assert_eq!(status(&c.nodes[0]).await.blobs, 1);

    // On disk: the origin holds the bytes once, the peer not at all.
    c.stop_all().await;
    assert_eq!(stored_files(&c.nodes[0]), once);
    assert!(stored_files(&c.nodes[1]).is_empty());
    assert!(staged_files(&c.nodes[0]).is_empty() && staged_files(&c.nodes[1]).is_empty());
}

/// Over the size limit: refused while streaming, and nothing is kept.
/// A record may list only files the node holds.
#[tokio::test]
async fn a_file_over_the_limit_is_refused_and_leaves_nothing_behind() {
    let mut c = TestCluster::start(&["phila-da"]).await;
    c.node(0)
        .configure(|cfg| cfg.blobs.max_blob_bytes = 2 * MIB)
        .await;
    let at_limit = upload(&c.nodes[0], "fits", 2 * MIB).await.unwrap();
    assert_eq!(at_limit.size, 2 * MIB);
    let err = upload(&c.nodes[0], "too big", 2 * MIB + 1)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("2097152"), "{}", err.message());

    let missing = pb::BlobInfo {
        hash: vec![9u8; 32].into(),
        size: 0,
    };
    let err = c.nodes[0]
        .records()
        .await
        .put(pb::PutRequest {
            collection: "c".into(),
            kind: "k".into(),
            title: "t".into(),
            attachments: vec![attachment(&missing, "x.mp4")],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("x.mp4"), "{}", err.message());
    let s = status(&c.nodes[0]).await;
    assert_eq!((s.records, s.blobs, s.blob_bytes), (0, 1, 2 * MIB));

    // On disk: the file that fits, nothing else (nothing staged either).
    c.node(0).stop().await;
    assert_eq!(
        stored_files(&c.nodes[0]),
        vec![(hex::encode(&at_limit.hash), 2 * MIB)]
    );
    assert!(staged_files(&c.nodes[0]).is_empty());
}

/// A peer's file over this node's limit cannot arrive by trying again: the
/// fetch fails once, says why, and is not retried (nor asked of the
/// origin) while the node runs.
#[tokio::test]
async fn a_peers_file_over_the_limit_is_not_fetched_again_and_again() {
    let mut c = two_offices().await;
    c.node(1)
        .configure(|cfg| cfg.blobs.max_blob_bytes = MIB)
        .await;
    c.grant_collection(0, 1, "case-big").await;
    let info = upload(&c.nodes[0], "too big for nyc", 2 * MIB)
        .await
        .unwrap();
    put_with(&c.nodes[0], "case-big", vec![attachment(&info, "big.mp4")]).await;
    let failed = eventually(Duration::from_secs(20), "the fetch to give up", || async {
        status(&c.nodes[1])
            .await
            .transfers
            .into_iter()
            .find(|t| t.gave_up)
    })
    .await;
    assert!(!failed.active, "{failed:?}");
    assert!(
        failed
            .last_error
            .contains("over this node's limit of 1048576"),
        "{failed:?}"
    );
    assert!(
        served_offsets(&c.nodes[0], &info.hash).await.is_empty(),
        "the origin was never asked for it"
    );
}

/// A granted record travels with its whole history: when a new version
/// drops a file, the peer keeps (and fetches) the files of every version it
/// holds, and does not ask again and again for one it cannot get.
#[tokio::test]
async fn a_file_dropped_in_a_new_version_stays_with_the_peer_and_is_not_asked_for_again() {
    let mut c = two_offices().await;
    c.grant_collection(0, 1, "shared").await;
    let first = upload(&c.nodes[0], "first", MIB).await.unwrap();
    let second = upload(&c.nodes[0], "second", MIB).await.unwrap();
    let mut records = c.nodes[0].records().await;
    let id = records
        .put(pb::PutRequest {
            collection: "shared".into(),
            kind: "video".into(),
            title: "v1".into(),
            attachments: vec![attachment(&first, "a.mp4")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    records
        .put(pb::PutRequest {
            id: id.clone(),
            expected_version: Some(1),
            collection: "shared".into(),
            kind: "video".into(),
            title: "v2, another file".into(),
            attachments: vec![attachment(&second, "b.mp4")],
            ..Default::default()
        })
        .await
        .unwrap();
    let (origin, peer) = (&c.nodes[0], &c.nodes[1]);
    eventually(
        Duration::from_secs(30),
        "the peer to hold the files of both versions",
        || async {
            let mut held = 0;
            for info in [&first, &second] {
                let got = peer
                    .records()
                    .await
                    .get_blob(pb::GetBlobRequest {
                        hash: info.hash.clone(),
                        offset: 0,
                        length: 1,
                    })
                    .await;
                if got.is_ok() {
                    held += 1;
                }
            }
            (held == 2).then_some(())
        },
    )
    .await;
    let refused: Vec<_> = super::cluster::of_action(origin, "Replication.FetchBlob")
        .await
        .into_iter()
        .filter(|e| !e.outcome_code.is_empty())
        .collect();
    assert!(
        refused.is_empty(),
        "the peer asked for what it may not have: {refused:#?}"
    );
    c.stop_all().await;
}
