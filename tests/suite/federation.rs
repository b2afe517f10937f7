//! Federation: three or more real nodes over mutual TLS on loopback.

use std::collections::BTreeMap;
use std::time::Duration;

use casemesh::grpc::pb;

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
        let r = c.put(rec(collection, &format!("{collection}-{i}"))).await.unwrap().into_inner();
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
    converge(&cluster.nodes[1], &expected, "later case-1 records to reach nyc-da").await;
    assert!(holdings(&cluster.nodes[2]).await.is_empty(), "mpls-da was granted nothing");
    cluster.stop_all().await;
}
