//! The Records service over real mutual TLS.

use std::collections::BTreeSet;

use casemesh::identity::OfficeVerifier;
use casemesh::identity::pki::certs_from_pem;
use casemesh::protocol::{convert, pb};
use tonic::Code;

use super::cluster::TestCluster;

fn put(collection: &str, title: &str, body: &[u8]) -> pb::PutRequest {
    pb::PutRequest {
        collection: collection.into(),
        kind: "incident-report".into(),
        title: title.into(),
        body: body.to_vec().into(),
        content_type: "text/plain".into(),
        labels: [("agency".to_owned(), "ice".to_owned())].into(),
        ..Default::default()
    }
}

async fn count(c: &mut pb::records_client::RecordsClient<tonic::transport::Channel>) -> usize {
    let mut n = 0;
    let mut token = String::new();
    loop {
        let page = c
            .list(pb::ListRequest {
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        n += page.records.len();
        if page.next_page_token.is_empty() {
            return n;
        }
        token = page.next_page_token;
    }
}

#[tokio::test]
async fn put_get_history_list_delete_round_trip() {
    let mut cluster = TestCluster::start(&["phila-da"]).await;
    let mut c = cluster.node(0).records().await;

    let created = c
        .put(put("2026-0042", "first", b"body one"))
        .await
        .unwrap()
        .into_inner();
    assert!(created.id.starts_with("phila-da:"));
    assert_eq!(created.version, 1);

    let got = c
        .get(pb::GetRequest {
            id: created.id.clone(),
            version: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.body.as_ref(), b"body one");
    assert_eq!(got.collection, "2026-0042");
    assert_eq!(got.labels.get("agency").map(String::as_str), Some("ice"));
    assert_eq!(got.origin, "phila-da");
    assert_eq!(got.digest.as_ref(), created.digest.as_ref());

    let mut update = put("2026-0042", "second", b"body two");
    update.id = created.id.clone();
    let v2 = c.put(update).await.unwrap().into_inner();
    assert_eq!((v2.id.as_str(), v2.version), (created.id.as_str(), 2));

    let v1 = c
        .get(pb::GetRequest {
            id: created.id.clone(),
            version: Some(1),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v1.title, "first");
    assert_eq!(v1.created_at_ms, got.created_at_ms);

    let history = c
        .history(pb::HistoryRequest {
            id: created.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .versions;
    assert_eq!(
        history.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(
        history
            .iter()
            .all(|v| v.body.is_empty() && v.body_size == 8)
    );

    let deleted = c
        .delete(pb::DeleteRequest {
            id: created.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.version, 3);
    let tomb = c
        .get(pb::GetRequest {
            id: created.id.clone(),
            version: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(tomb.deleted && tomb.body.is_empty());
    assert_eq!(count(&mut c).await, 0, "a deleted record is not listed");
    let history = c
        .history(pb::HistoryRequest {
            id: created.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .versions;
    assert_eq!(history.len(), 3, "the history stays after a delete");
    let again = c
        .delete(pb::DeleteRequest {
            id: created.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    cluster.stop_all().await;
}

#[tokio::test]
async fn pagination_walks_every_record_exactly_once() {
    let mut cluster = TestCluster::start(&["phila-da"]).await;
    let mut c = cluster.node(0).records().await;
    let mut in_case = BTreeSet::new();
    let mut all = BTreeSet::new();
    for i in 0..123 {
        let case = if i % 3 == 0 { "case-a" } else { "case-b" };
        let id = c
            .put(put(case, &format!("r{i}"), b"x"))
            .await
            .unwrap()
            .into_inner()
            .id;
        if case == "case-a" {
            in_case.insert(id.clone());
        }
        all.insert(id);
    }
    for (collection, expected) in [("", &all), ("case-a", &in_case)] {
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let page = c
                .list(pb::ListRequest {
                    collection: collection.into(),
                    page_size: 7,
                    page_token: token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert!(page.records.len() <= 7);
            seen.extend(page.records.into_iter().map(|r| r.id));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let unique: BTreeSet<_> = seen.iter().cloned().collect();
        assert_eq!(unique.len(), seen.len(), "no record twice ({collection:?})");
        assert_eq!(&unique, expected, "every record once ({collection:?})");
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(sorted, seen, "stable order by id");
    }
    let by_origin = c
        .list(pb::ListRequest {
            origin: "someone-else".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(by_origin.records.is_empty());

    // A token only fits the filters it was issued with, and garbage is refused.
    let first = c
        .list(pb::ListRequest {
            page_size: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for (collection, token) in [("case-a", first.next_page_token.clone()), ("", "zz".into())] {
        let err = c
            .list(pb::ListRequest {
                collection: collection.into(),
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    }
    cluster.stop_all().await;
}

#[tokio::test]
async fn a_stale_expected_version_is_a_conflict() {
    let mut cluster = TestCluster::start(&["phila-da"]).await;
    let mut c = cluster.node(0).records().await;
    let id = c.put(put("c", "t", b"1")).await.unwrap().into_inner().id;
    let mut ok = put("c", "t2", b"2");
    ok.id = id.clone();
    ok.expected_version = Some(1);
    c.put(ok.clone()).await.unwrap();
    let err = c.put(ok).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message()
            .contains("expected latest version 1, but it is 2"),
        "{}",
        err.message()
    );
    let err = c
        .delete(pb::DeleteRequest {
            id: id.clone(),
            expected_version: Some(1),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let latest = c
        .get(pb::GetRequest { id, version: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((latest.version, latest.title.as_str()), (2, "t2"));
    cluster.stop_all().await;
}

#[tokio::test]
async fn bad_input_gets_a_precise_status_and_stores_nothing() {
    let mut cluster = TestCluster::start(&["phila-da"]).await;
    let mut c = cluster.node(0).records().await;
    let existing = c.put(put("c", "t", b"1")).await.unwrap().into_inner().id;

    let mut too_big = put("c", "big", &vec![0u8; 4 * 1024 * 1024 + 1]);
    too_big.content_type = "application/octet-stream".into();
    // Past what the server decodes at all (body limit + 1 MiB): tonic's
    // own refusal, which the node words as the same limit.
    let mut far_too_big = put("c", "far", &vec![0u8; 6_600_000]);
    far_too_big.content_type = "application/octet-stream".into();
    let mut many_labels = put("c", "labels", b"");
    many_labels.labels = (0..65).map(|i| (format!("k{i}"), "v".into())).collect();
    let mut long_key = put("c", "key", b"");
    long_key.labels = [("k".repeat(257), "v".into())].into();
    let mut long_value = put("c", "value", b"");
    long_value.labels = [("k".into(), "v".repeat(257))].into();
    let mut no_title = put("c", "", b"");
    no_title.title = String::new();
    let long_title = put("c", &"t".repeat(1025), b"");
    let long_collection = put(&"c".repeat(129), "t", b"");
    let mut bad_id = put("c", "t", b"");
    bad_id.id = "not-an-id".into();
    let mut unknown = put("c", "t", b"");
    unknown.id = "phila-da:0123456789abcdef0123456789abcdef".into();
    let mut foreign = put("c", "t", b"");
    foreign.id = "other-da:0123456789abcdef0123456789abcdef".into();
    let mut new_with_version = put("c", "t", b"");
    new_with_version.expected_version = Some(3);

    let cases = [
        (too_big, Code::ResourceExhausted, "limit is 4194304 bytes"),
        (
            far_too_big,
            Code::ResourceExhausted,
            "a record body may be at most 4194304 bytes on this node (limits.max_body_bytes); attach larger files",
        ),
        (many_labels, Code::InvalidArgument, "limit is 64"),
        (long_key, Code::InvalidArgument, "limit is 256 bytes"),
        (long_value, Code::InvalidArgument, "limit is 256 bytes"),
        (no_title, Code::InvalidArgument, "title must not be empty"),
        (long_title, Code::InvalidArgument, "limit is 1024 bytes"),
        (long_collection, Code::InvalidArgument, "limit is 128 bytes"),
        (bad_id, Code::InvalidArgument, "not valid"),
        (unknown, Code::NotFound, "not found"),
        (foreign, Code::PermissionDenied, "read-only replica"),
        (new_with_version, Code::InvalidArgument, "expected_version"),
    ];
    for (req, code, text) in cases {
        let title = req.title.chars().take(20).collect::<String>();
        let err = c.put(req).await.unwrap_err();
        assert_eq!(err.code(), code, "{title}: {err:?}");
        assert!(
            err.message().contains(text),
            "{title}: {:?} lacks {text:?}",
            err.message()
        );
    }
    for (id, code) in [
        ("", Code::InvalidArgument),
        ("garbage", Code::InvalidArgument),
        ("phila-da:0123456789abcdef0123456789abcdef", Code::NotFound),
    ] {
        let err = c
            .get(pb::GetRequest {
                id: id.into(),
                version: None,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "get {id:?}");
        let err = c
            .history(pb::HistoryRequest { id: id.into() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "history {id:?}");
        let err = c
            .delete(pb::DeleteRequest {
                id: id.into(),
                expected_version: None,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "delete {id:?}");
    }
    let err = c
        .get(pb::GetRequest {
            id: existing.clone(),
            version: Some(9),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .list(pb::ListRequest {
            origin: "Not An Office".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    assert_eq!(
        count(&mut c).await,
        1,
        "nothing was stored by refused calls"
    );
    let history = c
        .history(pb::HistoryRequest { id: existing })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(history.versions.len(), 1);
    cluster.stop_all().await;
}

#[tokio::test]
async fn data_survives_a_node_restart() {
    let mut cluster = TestCluster::start(&["phila-da"]).await;
    let mut ids = Vec::new();
    {
        let mut c = cluster.node(0).records().await;
        for i in 0..20 {
            ids.push(
                c.put(put("c", &format!("t{i}"), b"keep me"))
                    .await
                    .unwrap()
                    .into_inner()
                    .id,
            );
        }
        let mut update = put("c", "updated", b"v2");
        update.id = ids[0].clone();
        c.put(update).await.unwrap();
    }
    cluster.node(0).restart().await;
    let mut c = cluster.node(0).records().await;
    assert_eq!(count(&mut c).await, 20);
    let first = c
        .get(pb::GetRequest {
            id: ids[0].clone(),
            version: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((first.version, first.body.as_ref()), (2, &b"v2"[..]));
    // Writing after the restart continues the version sequence.
    let mut update = put("c", "after restart", b"v3");
    update.id = ids[0].clone();
    assert_eq!(c.put(update).await.unwrap().into_inner().version, 3);
    cluster.stop_all().await;
}

#[tokio::test]
async fn every_version_verifies_against_the_office_ca() {
    let mut cluster = TestCluster::start(&["phila-da"]).await;
    let node = cluster.node(0);
    let ca = certs_from_pem(&node.ca_pem()).unwrap();
    let verifier = OfficeVerifier::from_ca_cert(node.office.clone(), &ca[0]).unwrap();
    let mut c = node.records().await;
    let id = c
        .put(put("c", "signed", b"evidence"))
        .await
        .unwrap()
        .into_inner()
        .id;
    c.delete(pb::DeleteRequest {
        id: id.clone(),
        expected_version: None,
    })
    .await
    .unwrap();
    for version in [1, 2] {
        let r = c
            .get(pb::GetRequest {
                id: id.clone(),
                version: Some(version),
            })
            .await
            .unwrap()
            .into_inner();
        let signed = convert::signed_from_pb(&r).unwrap();
        verifier.verify(&signed).unwrap();
        assert_eq!(
            signed.digest.as_slice(),
            r.digest.as_ref(),
            "digest covers the canonical bytes"
        );
        let mut flipped = r.clone();
        let mut title = flipped.title.into_bytes();
        title[0] ^= 0x01;
        flipped.title = String::from_utf8(title).unwrap();
        assert!(
            verifier
                .verify(&convert::signed_from_pb(&flipped).unwrap())
                .is_err()
        );
    }
    cluster.stop_all().await;
}

/// Writers to one record share transactions with other writers but take
/// turns on the record: a hundred at once all succeed, each with its own
/// version, and concurrent deletes of a record leave exactly one tombstone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_to_one_record_each_get_a_distinct_version() {
    const WRITERS: u64 = 100;
    let mut cluster = TestCluster::start(&["phila-da"]).await;
    let node = cluster.node(0);
    let mut c = node.records().await;
    let id = c.put(put("c", "t", b"0")).await.unwrap().into_inner().id;
    let mut tasks = Vec::new();
    for i in 0..WRITERS {
        let mut c = c.clone();
        let mut req = put("c", &format!("w{i}"), b"x");
        req.id = id.clone();
        tasks.push(tokio::spawn(async move {
            c.put(req).await.unwrap().into_inner().version
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(t.await.unwrap());
    }
    versions.sort();
    assert_eq!(versions, (2..=WRITERS + 1).collect::<Vec<_>>());

    let history = c
        .history(pb::HistoryRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner()
        .versions;
    assert_eq!(history.len() as u64, WRITERS + 1);

    // Eight deletes of one record at once, ten times over: each time
    // exactly one writes the tombstone.
    for round in 0..10 {
        let id = c
            .put(put("c", &format!("doomed {round}"), b"x"))
            .await
            .unwrap()
            .into_inner()
            .id;
        let mut deletes = Vec::new();
        for _ in 0..8 {
            let mut c = c.clone();
            let id = id.clone();
            deletes.push(tokio::spawn(async move {
                c.delete(pb::DeleteRequest {
                    id,
                    expected_version: None,
                })
                .await
            }));
        }
        let mut deleted = 0;
        for d in deletes {
            match d.await.unwrap() {
                Ok(r) => {
                    assert_eq!(r.into_inner().version, 2);
                    deleted += 1;
                }
                Err(s) => assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}"),
            }
        }
        assert_eq!(
            deleted, 1,
            "round {round}: exactly one delete writes the tombstone"
        );
        let history = c
            .history(pb::HistoryRequest { id })
            .await
            .unwrap()
            .into_inner()
            .versions;
        assert_eq!(history.len(), 2, "round {round}");
    }
    cluster.stop_all().await;
}
