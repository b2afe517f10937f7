//! What a peer could not take from an office's feed reaches that office's
//! `peer list` (issue 21): a version a peer of this build rejected and
//! reported, and versions sent to a peer of an older build that declared
//! it cannot read them. Bounded whatever a peer reports.

use std::time::Duration;

use casemesh::domain::record::{MAX_SUBJECTS_ACCEPTED, RECORD_ENCODING, encoding_of};
use casemesh::domain::rejection::{MAX_KEPT, MAX_REASON_BYTES, OLDER_BUILD};
use casemesh::protocol::pb;
use prost::Message as _;

use super::bin::{fails, init_office, json, ok};
use super::cluster::{TestCluster, TestNode, eventually, of_action};
use super::hostile::RawPull;

const DEADLINE: Duration = Duration::from_secs(60);

fn subject(kind: &str, value: &str) -> pb::Subject {
    pb::Subject {
        kind: kind.into(),
        value: value.into(),
        role: String::new(),
    }
}

/// `casemesh peer list` at `node`, as text and as JSON, through the
/// binary (off the runtime's threads: the node answers it meanwhile).
async fn peer_list(node: &TestNode) -> (String, serde_json::Value) {
    let data = node.dir.to_str().unwrap().to_owned();
    tokio::task::spawn_blocking(move || {
        (
            ok(&["peer", "list", "--data", &data]),
            json(&["peer", "list", "--json", "--data", &data]),
        )
    })
    .await
    .unwrap()
}

/// The item of `office` in `peer list --json`.
fn item<'a>(list: &'a serde_json::Value, office: &str) -> &'a serde_json::Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|p| p["office"] == office)
        .unwrap_or_else(|| panic!("{office} in {list}"))
}

async fn put(node: &TestNode, id: &str, subjects: Vec<pb::Subject>) -> pb::PutResponse {
    node.records()
        .await
        .put(pb::PutRequest {
            id: id.into(),
            collection: "2026-0042".into(),
            kind: "witness-statement".into(),
            title: "grey SUV".into(),
            subjects,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// phila-da lets its own writes name more subjects than any node takes
/// from a peer (1,024): nyc-da, a node of this build, refuses the version
/// for real, logs it, and reports it; phila-da's `peer list` shows it
/// until a later version of the record reaches nyc-da.
#[tokio::test(flavor = "multi_thread")]
async fn the_origins_peer_list_shows_a_version_its_peer_rejected_until_a_later_one_arrives() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da"]).await;
    cluster
        .node(0)
        .configure(|c| c.limits.max_subjects = 2 * MAX_SUBJECTS_ACCEPTED)
        .await;
    cluster.pin_all().await;
    cluster.grant_collection(0, 1, "2026-0042").await;
    let too_many = (0..=MAX_SUBJECTS_ACCEPTED)
        .map(|i| subject("badge", &i.to_string()))
        .collect();
    let id = put(&cluster.nodes[0], "", too_many).await.id;
    let limit = format!(
        "{} subjects given; the limit is {MAX_SUBJECTS_ACCEPTED}",
        MAX_SUBJECTS_ACCEPTED + 1
    );

    let (origin, nyc) = (&cluster.nodes[0], &cluster.nodes[1]);
    let view = eventually(
        DEADLINE,
        "phila-da hears that nyc-da rejected it",
        || async {
            let v = origin.link("nyc-da").await;
            (!v.feed_rejections.is_empty()).then_some(v)
        },
    )
    .await;
    assert_eq!(view.feed_rejections.len(), 1, "{view:?}");
    let r = &view.feed_rejections[0];
    assert!(!r.older_build);
    assert_eq!((r.record_id.as_str(), r.version), (id.as_str(), 1));
    assert_eq!(r.reason, limit);
    // nyc-da refused it for real: not held, and in its own audit log.
    assert!(
        !super::cluster::holdings(nyc).await.contains_key(&id),
        "nyc-da must not hold the version it refused"
    );
    let refused = of_action(nyc, "replica.rejected").await;
    assert!(
        refused.iter().any(|e| e.outcome_message == limit),
        "{refused:?}"
    );
    // phila-da's log has nyc-da's report.
    let reported = of_action(origin, "feed.rejected_by_peer").await;
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert_eq!(reported[0].actor_office, "nyc-da");
    assert_eq!(reported[0].outcome_message, limit);

    let (text, list) = peer_list(origin).await;
    let said = format!("nyc-da: rejected version 1 of {id}: {limit} (");
    assert!(text.contains(&said), "{said:?} in:\n{text}");
    let nyc_item = item(&list, "nyc-da");
    assert_eq!(nyc_item["feed_rejections_dropped"], 0, "{nyc_item}");
    let rejections = nyc_item["feed_rejections"].as_array().unwrap();
    assert_eq!(rejections.len(), 1, "{nyc_item}");
    let shown = &rejections[0];
    assert_eq!(shown["cause"], "rejected");
    assert_eq!(shown["record"], id.as_str());
    assert_eq!(shown["version"], 1);
    assert_eq!(shown["reason"], limit.as_str());
    assert_eq!(shown["feed_seq"], r.seq);
    assert!(shown["at"].is_string(), "{shown}");
    // nyc-da's own list shows nothing of the kind: phila-da took all it sent.
    let (nyc_text, _) = peer_list(nyc).await;
    assert!(!nyc_text.contains("rejected"), "{nyc_text}");

    // Version 2 names two subjects: nyc-da takes it, and the report clears.
    let two = vec![subject("badge", "4471"), subject("plate", "7XKD203")];
    assert_eq!(put(origin, &id, two).await.version, 2);
    let mut records = nyc.records().await;
    eventually(DEADLINE, "nyc-da holds version 2", || {
        let (mut records, id) = (records.clone(), id.clone());
        async move {
            let r = records
                .get(pb::GetRequest { id, version: None })
                .await
                .ok()?;
            (r.into_inner().version == 2).then_some(())
        }
    })
    .await;
    eventually(DEADLINE, "the report clears at phila-da", || async {
        origin
            .link("nyc-da")
            .await
            .feed_rejections
            .is_empty()
            .then_some(())
    })
    .await;
    let (text, list) = peer_list(origin).await;
    assert!(!text.contains("rejected"), "{text}");
    assert_eq!(
        item(&list, "nyc-da")["feed_rejections"],
        serde_json::json!([])
    );
    // Version 1 stays refused at nyc-da: it holds only what checked out.
    let err = records
        .get(pb::GetRequest {
            id: id.clone(),
            version: Some(1),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    cluster.stop_all().await;
}

/// A peer running a build from before record versions had subjects sends
/// a `PullStart` without `record_encoding`. The origin still sends it a
/// version with subjects (the old node rejects it, as it should), and
/// its `peer list` says why the peer will not hold it, until the peer
/// pulls declaring that it reads the encoding.
#[tokio::test(flavor = "multi_thread")]
async fn an_older_peer_sent_a_version_with_subjects_shows_in_the_origins_peer_list() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da"]).await;
    // phila-da serves nyc-da; nyc-da's own node does not pull (it has not
    // pinned phila-da): the test pulls as its node, by hand.
    cluster.pin(0, 1).await;
    cluster.grant_collection(0, 1, "2026-0042").await;
    let plain = put(&cluster.nodes[0], "", Vec::new()).await.id;
    let with_subjects = put(&cluster.nodes[0], "", vec![subject("badge", "4471")])
        .await
        .id;
    let (origin, nyc) = (&cluster.nodes[0], &cluster.nodes[1]);

    // Exactly the bytes an older build sends: the start position alone.
    let start = pb::PullStart {
        after_seq: 0,
        ..Default::default()
    };
    let up = pb::PullUp {
        kind: Some(pb::pull_up::Kind::Start(start)),
    };
    assert_eq!(
        up.encode_to_vec(),
        [0x0a, 0x00],
        "field 2 is not on the wire"
    );
    let mut old = RawPull::open_with(origin, nyc, start).await;
    let got = old
        .until(|r| r.versions.contains(&with_subjects) && r.versions.contains(&plain))
        .await;
    // Sent all the same; the older peer acknowledges the batch, as it does
    // after logging the versions it cannot decode.
    old.ack(got.last_seq).await;
    let view = eventually(DEADLINE, "phila-da notes nyc-da's older build", || async {
        let v = origin.link("nyc-da").await;
        (!v.feed_rejections.is_empty()).then_some(v)
    })
    .await;
    assert_eq!(view.feed_rejections.len(), 1, "{view:?}");
    let r = &view.feed_rejections[0];
    assert!(r.older_build);
    assert_eq!(r.reason, OLDER_BUILD);
    assert_eq!(
        (r.record_id.as_str(), r.version),
        (with_subjects.as_str(), 1)
    );

    let (text, list) = peer_list(origin).await;
    let said = format!("nyc-da: {OLDER_BUILD} (latest sent: version 1 of {with_subjects}) (");
    assert!(text.contains(&said), "{said:?} in:\n{text}");
    let shown = &item(&list, "nyc-da")["feed_rejections"][0];
    assert_eq!(shown["cause"], "older_build", "{list}");
    assert_eq!(shown["record"], with_subjects.as_str());
    assert_eq!(shown["reason"], OLDER_BUILD);
    let noted = of_action(origin, "feed.peer_cannot_read").await;
    assert_eq!(noted.len(), 1, "{noted:?}");
    assert_eq!(noted[0].records[0].record_id, with_subjects);

    // A version without subjects is in an encoding it reads: no new note.
    let again = put(origin, &plain, Vec::new()).await;
    let got = old.until(|r| r.versions.contains(&plain)).await;
    old.ack(got.last_seq).await;
    assert_eq!(again.version, 2);
    let r = &origin.link("nyc-da").await.feed_rejections[0];
    assert_eq!(
        r.record_id, with_subjects,
        "still the version with subjects"
    );

    // Upgraded: it now says it reads v3, and the note clears.
    let start = pb::PullStart {
        after_seq: got.last_seq,
        record_encoding: RECORD_ENCODING,
    };
    let mut upgraded = RawPull::open_with(origin, nyc, start).await;
    upgraded.until_idle().await.unwrap();
    eventually(DEADLINE, "the note clears once nyc-da reads v3", || async {
        origin
            .link("nyc-da")
            .await
            .feed_rejections
            .is_empty()
            .then_some(())
    })
    .await;
    // A version with subjects to a peer that reads them: nothing noted.
    let third = put(origin, "", vec![subject("plate", "7XKD203")]).await.id;
    let got = upgraded.until(|r| r.versions.contains(&third)).await;
    upgraded.ack(got.last_seq).await;
    assert!(
        origin.link("nyc-da").await.feed_rejections.is_empty(),
        "nothing noted for a peer that reads v3"
    );
    assert_eq!(of_action(origin, "feed.peer_cannot_read").await.len(), 1);
    let bytes = origin
        .records()
        .await
        .get(pb::GetRequest {
            id: third,
            version: None,
        })
        .await
        .unwrap()
        .into_inner();
    let signed = casemesh::protocol::convert::signed_from_pb(&bytes).unwrap();
    assert_eq!(encoding_of(&signed.canonical), Some(3));
    cluster.stop_all().await;
}

/// A hostile peer reporting rejections as fast as it can, with huge
/// reasons, ids of other offices' records and entries it was never sent:
/// the origin keeps the newest few, clipped, counts the rest, and logs
/// them counted rather than one by one.
#[tokio::test(flavor = "multi_thread")]
async fn a_peers_reports_of_rejections_are_bounded() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da"]).await;
    cluster.pin(0, 1).await;
    cluster.grant_collection(0, 1, "2026-0042").await;
    let id = put(&cluster.nodes[0], "", Vec::new()).await.id;
    let (origin, nyc) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut raw = RawPull::open(origin, nyc, 0).await;
    let got = raw.until(|r| r.versions.contains(&id)).await;
    let sent = got.last_seq;
    let rejected = |seq: u64, record_id: &str, reason: String| {
        pb::pull_up::Kind::Rejected(pb::VersionRejected {
            seq,
            record_id: record_id.into(),
            version: 1,
            reason,
        })
    };
    // Entries never sent on this stream: ignored.
    raw.send(rejected(sent + 1, &id, "not sent".into())).await;
    raw.send(rejected(0, &id, "not sent".into())).await;
    const REPORTS: u64 = 300;
    let huge = "\u{1b}[31m".to_owned() + &"x".repeat(60 * 1024);
    for i in 0..REPORTS {
        let record = if i % 2 == 0 {
            "nyc-da:0190a1b2c3d4aaaaaaaaaaaaaaaaaaaa"
        } else {
            "not a record id"
        };
        raw.send(rejected(sent, record, huge.clone())).await;
    }
    // One about a record of phila-da's, last.
    raw.send(rejected(sent, &id, "the last one".into())).await;
    let view = eventually(DEADLINE, "every report is taken", || async {
        let v = origin.link("nyc-da").await;
        (v.feed_rejections_dropped == REPORTS + 1 - MAX_KEPT as u64).then_some(v)
    })
    .await;
    assert_eq!(view.feed_rejections.len(), MAX_KEPT);
    let newest = &view.feed_rejections[0];
    assert_eq!(
        (newest.record_id.as_str(), newest.reason.as_str()),
        (id.as_str(), "the last one")
    );
    for r in &view.feed_rejections[1..] {
        assert_eq!(r.record_id, "", "another office's id is not kept: {r:?}");
        assert!(r.reason.len() <= MAX_REASON_BYTES, "{}", r.reason.len());
        assert!(!r.reason.contains('\u{1b}'), "{:?}", r.reason);
    }
    assert!(
        !view.feed_rejections.iter().any(|r| r.reason == "not sent"),
        "{view:?}"
    );
    // Logged counted: the first at once, the rest when the minute ends.
    let logged = of_action(origin, "feed.rejected_by_peer").await;
    assert!(logged.len() <= 2, "{logged:?}");
    assert!(
        logged
            .iter()
            .all(|e| e.outcome_message.len() <= MAX_REASON_BYTES),
        "{logged:?}"
    );
    let (text, list) = peer_list(origin).await;
    let dropped = REPORTS + 1 - MAX_KEPT as u64;
    assert!(
        text.contains(&format!(
            "nyc-da: and {dropped} earlier rejected versions not kept"
        )),
        "{text}"
    );
    assert_eq!(item(&list, "nyc-da")["feed_rejections_dropped"], dropped);
    // Removing the peer forgets them.
    origin
        .admin()
        .await
        .remove_peer(pb::RemovePeerRequest {
            office: "nyc-da".into(),
            purge_replicas: false,
        })
        .await
        .unwrap();
    cluster.pin(0, 1).await;
    let view = &cluster.nodes[0].link("nyc-da").await;
    assert!(view.feed_rejections.is_empty(), "{view:?}");
    assert_eq!(view.feed_rejections_dropped, 0);
    cluster.stop_all().await;
}

/// `peer list` as an admin types it, beyond the lists above: its help, a
/// data directory that is not one, a node that is not running, and an
/// option it does not take.
#[test]
fn peer_list_help_and_errors_through_the_binary() {
    let help = ok(&["peer", "list", "--help"]);
    assert!(
        help.contains("List pinned peers with replication status") && help.contains("--json"),
        "{help}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nowhere");
    let err = fails(2, &["peer", "list", "--data", missing.to_str().unwrap()]);
    assert!(
        err.contains("casemesh.toml does not exist") && err.contains("casemesh init"),
        "{err}"
    );
    let (data, _) = init_office(&tmp);
    let err = fails(3, &["peer", "list", "--data", data.to_str().unwrap()]);
    assert!(
        err.contains("no node is running on") && err.contains("casemesh serve --data"),
        "{err}"
    );
    let err = fails(2, &["peer", "list", "--bogus"]);
    assert!(err.contains("unexpected argument '--bogus'"), "{err}");
}
