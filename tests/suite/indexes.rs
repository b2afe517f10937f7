//! Costs that follow the work asked, not the history kept: audit queries
//! answered from the index over a long log (and over a log written before
//! the index, while and after it is indexed), and the kept counts `status`
//! and `peer list` show checked against a full count, by `check-store`.

use std::time::Duration;

use casemesh::domain::audit::{Actor, Draft, Entry, Outcome, Target};
use casemesh::protocol::pb;
use casemesh::store::{Store, StoreOptions};

use super::bin::{fails, json, ok};
use super::blobkit::status;
use super::cluster::{TestCluster, TestNode, eventually, holdings};

const DEADLINE: Duration = Duration::from_secs(60);

/// More entries than one page of a scan looks at (200,000): a query that
/// scanned would hand back a page token before reaching the last ones.
const UNRELATED: u64 = 210_000;

fn rec(collection: &str, title: &str) -> pb::PutRequest {
    pb::PutRequest {
        collection: collection.into(),
        kind: "witness-statement".into(),
        title: title.into(),
        body: b"statement".to_vec().into(),
        ..Default::default()
    }
}

/// The store of a stopped node, opened as the node opens it.
fn open_store(node: &TestNode) -> Store {
    let options = StoreOptions {
        cache_bytes: 16 << 20,
        reserve_bytes: 0,
    };
    Store::open(&node.paths().store(), node.office.as_str(), &options).expect("store opens")
}

/// Every page of a query by `record`, following tokens, as sequence
/// numbers, leaving out the entries of these queries themselves (a query
/// by record names the record).
async fn by_record(node: &TestNode, record: &str, page_size: u32, newest_first: bool) -> Vec<u64> {
    let mut admin = node.admin().await;
    let mut req = pb::QueryAuditRequest {
        record_id: record.into(),
        page_size,
        newest_first,
        ..Default::default()
    };
    let mut out = Vec::new();
    for _ in 0..10_000 {
        let page = admin.query_audit(req.clone()).await.unwrap().into_inner();
        assert!(page.entries.len() <= page_size as usize);
        out.extend(
            page.entries
                .iter()
                .filter(|e| e.action != "Admin.QueryAudit")
                .map(|e| e.seq),
        );
        if page.next_page_token.is_empty() {
            return out;
        }
        req.page_token = page.next_page_token;
    }
    panic!("the query by {record} never ended");
}

/// What a query by `record` must return, oldest first: every entry of
/// the stopped node's log that names it, read one by one.
fn naming(node: &TestNode, record: &str) -> Vec<u64> {
    let store = open_store(node);
    store
        .audit_raw(0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(_, raw)| Entry::decode(&raw).unwrap())
        .filter(|e| e.target.mentions_record(record) && e.action != "Admin.QueryAudit")
        .map(|e| e.seq)
        .collect()
}

/// The queries by `record`: pages of 2 both ways, and one page of up to
/// 1000 that must hold them all (no token: the log was not scanned).
async fn check_queries(node: &TestNode, record: &str, expected: &[u64], when: &str) {
    assert_eq!(by_record(node, record, 2, false).await, expected, "{when}");
    let mut reversed = expected.to_vec();
    reversed.reverse();
    assert_eq!(by_record(node, record, 2, true).await, reversed, "{when}");
    let page = node
        .admin()
        .await
        .query_audit(pb::QueryAuditRequest {
            record_id: record.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let seqs: Vec<u64> = page
        .entries
        .iter()
        .filter(|e| e.action != "Admin.QueryAudit")
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, expected, "{when}: one page");
    assert_eq!(page.next_page_token, "", "{when}: one page holds them all");
}

#[tokio::test]
async fn a_query_by_record_reads_its_entries_not_the_log_also_after_an_upgrade() {
    let mut c = TestCluster::start(&["phila-da"]).await;
    let mut records = c.nodes[0].records().await;
    let x = records
        .put(rec("case-x", "first"))
        .await
        .unwrap()
        .into_inner();
    c.node(0).stop().await;
    {
        // Written through the store: entries about other records, three
        // of them about x.
        let store = open_store(&c.nodes[0]);
        let mut batch = Vec::with_capacity(1000);
        for i in 0..UNRELATED {
            let record = if i % 70_000 == 35_000 {
                x.id.clone()
            } else {
                format!("phila-da:other{}", i % 5000)
            };
            batch.push(Draft::new(
                Actor::node("phila-da"),
                "Records.Get",
                Target::record(&record, 1),
                Outcome::ok(),
            ));
            if batch.len() == 1000 {
                store.audit(&batch).unwrap();
                batch.clear();
            }
        }
        store.flush_now().unwrap();
    }
    c.node(0).restart().await;
    let mut records = c.nodes[0].records().await;
    let mut update = rec("case-x", "second");
    update.id = x.id.clone();
    update.expected_version = Some(x.version);
    records.put(update).await.unwrap();
    records
        .get(pb::GetRequest {
            id: x.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    // Queried while running; checked against the log once stopped (the
    // queries add entries of their own, left out on both sides).
    let oldest = by_record(&c.nodes[0], &x.id, 2, false).await;
    let newest = by_record(&c.nodes[0], &x.id, 2, true).await;
    c.node(0).stop().await;
    let expected = naming(&c.nodes[0], &x.id);
    // The put, 3 written through the store, the update and the read.
    assert_eq!(expected.len(), 6, "{expected:?}");
    assert!(expected[4] > UNRELATED, "{expected:?}");
    assert_eq!(oldest, expected);
    let mut reversed = expected.clone();
    reversed.reverse();
    assert_eq!(newest, reversed);

    // The same log as a version before the index left it: no index.
    open_store(&c.nodes[0]).forget_audit_index().unwrap();
    c.node(0).restart().await;
    // `status` says so while it lasts: the text read while entries were
    // still left after it (the count only falls) was printed while they were.
    let data = c.nodes[0].dir.to_str().unwrap().to_owned();
    // Off the test's runtime, which serves the node.
    let text = tokio::task::spawn_blocking(move || ok(&["status", "--data", &data]))
        .await
        .unwrap();
    let left = status(&c.nodes[0]).await.audit_entries_unindexed;
    assert!(
        left > 0,
        "every entry was indexed before `status` ran: the log is too short to see it"
    );
    assert!(
        text.contains("audit index: ") && text.contains("still to index"),
        "{text}"
    );
    // Right while it is indexed (what is not yet is scanned) …
    assert_eq!(by_record(&c.nodes[0], &x.id, 2, false).await, expected);
    // … and once it is.
    eventually(DEADLINE, "the older entries to be indexed", || async {
        (status(&c.nodes[0]).await.audit_entries_unindexed == 0).then_some(())
    })
    .await;
    check_queries(&c.nodes[0], &x.id, &expected, "indexed after the upgrade").await;
    c.stop_all().await;
}

/// `peer list`'s outbox entries waiting and replicas held, as `status`
/// shows them.
async fn peer_counts(node: &TestNode, peer: &str) -> (u64, u64) {
    let s = status(node).await;
    let p = s
        .peers
        .iter()
        .find(|p| p.office == peer)
        .expect("the peer is listed");
    (p.outbox_pending, p.replicas)
}

#[tokio::test]
async fn kept_counts_match_a_full_count_and_check_store_names_a_damaged_one() {
    let mut c = TestCluster::start(&["phila-da", "nyc-da"]).await;
    c.pin_all().await;
    let mut phila = c.nodes[0].records().await;
    let mut shared = Vec::new();
    for i in 0..4 {
        let r = phila.put(rec("case-1", &format!("p{i}"))).await.unwrap();
        shared.push(r.into_inner());
    }
    phila.put(rec("case-2", "kept home")).await.unwrap();
    let mut nyc = c.nodes[1].records().await;
    for i in 0..3 {
        nyc.put(rec("case-n", &format!("n{i}"))).await.unwrap();
    }
    let grant = c.grant_collection(0, 1, "case-1").await;
    c.grant_collection(1, 0, "case-n").await;
    let mut update = rec("case-1", "amended");
    update.id = shared[0].id.clone();
    update.expected_version = Some(shared[0].version);
    phila.put(update).await.unwrap();
    eventually(DEADLINE, "each side's replicas, acknowledged", || async {
        let both = (
            peer_counts(&c.nodes[0], "nyc-da").await,
            peer_counts(&c.nodes[1], "phila-da").await,
        );
        (both == ((0, 3), (0, 4))).then_some(())
    })
    .await;
    c.nodes[0]
        .admin()
        .await
        .revoke(pb::RevokeRequest { grant_id: grant })
        .await
        .unwrap();
    eventually(DEADLINE, "nyc-da to purge case-1", || async {
        let held = holdings(&c.nodes[1]).await;
        let purged = shared.iter().all(|r| !held.contains_key(&r.id));
        (purged && peer_counts(&c.nodes[0], "nyc-da").await.0 == 0).then_some(())
    })
    .await;
    assert_eq!(peer_counts(&c.nodes[1], "phila-da").await, (0, 0));
    let phila_status = status(&c.nodes[0]).await;
    assert_eq!((phila_status.records, phila_status.versions), (8, 9));

    // A running node's store is not counted: it would change meanwhile.
    let dir = |i: usize| c.nodes[i].dir.to_str().unwrap().to_owned();
    let (p, n) = (dir(0), dir(1));
    let running = fails(1, &["check-store", "--data", &p]);
    assert!(running.contains("the node is running"), "{running}");

    c.stop_all().await;
    for d in [&p, &n] {
        let out = ok(&["check-store", "--data", d]);
        assert!(out.contains("ok       every kept count"), "{out}");
    }
    let counted = json(&["check-store", "--data", &p, "--json"]);
    assert_eq!(counted["ok"], true, "{counted}");
    assert_eq!(
        (counted["records"].as_u64(), counted["versions"].as_u64()),
        (Some(8), Some(9))
    );
    assert_eq!(counted["records_by_office"]["nyc-da"], 3, "{counted}");
    assert_eq!(counted["records_by_office"]["phila-da"], 5, "{counted}");
    assert_eq!(counted["differences"], serde_json::json!([]));

    // A count damaged on disk is named, with how to repair it.
    {
        let disk = casemesh::store::disk::OnDisk::open(&c.nodes[0].paths().store()).unwrap();
        disk.set_count("count:outbox:nyc-da", 7).unwrap();
        disk.set_count("count:origin:nyc-da", 1).unwrap();
        disk.flush().unwrap();
    }
    let out = super::bin::casemesh(&["check-store", "--data", &p]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("differs  outbox of nyc-da: kept 7, counted 0"),
        "{text}"
    );
    assert!(
        text.contains("differs  records of nyc-da: kept 1, counted 3"),
        "{text}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--fix"),
        "{out:?}"
    );
    let out = super::bin::casemesh(&["check-store", "--data", &p, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let damaged: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(damaged["ok"], false);
    assert_eq!(
        damaged["differences"].as_array().map(Vec::len),
        Some(2),
        "{damaged}"
    );
    let fixed = ok(&["check-store", "--data", &p, "--fix"]);
    assert!(fixed.contains("(fixed)"), "{fixed}");
    ok(&["check-store", "--data", &p]);

    let help = ok(&["check-store", "--help"]);
    assert!(help.contains("--fix") && help.contains("stopped"), "{help}");
    let nowhere = c.nodes[0].dir.join("no-such-office");
    fails(2, &["check-store", "--data", nowhere.to_str().unwrap()]);

    // The repaired counts are what the node shows again.
    c.node(0).restart().await;
    assert_eq!(peer_counts(&c.nodes[0], "nyc-da").await, (0, 3));
    c.stop_all().await;
}
