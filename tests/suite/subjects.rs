//! Subjects (badge=4471, plate=7XKD203, …) are signed with a version and
//! travel with it: written through the binary, shown by `record get`, and
//! held by a peer exactly as the origin signed them.

use std::time::Duration;

use casemesh::protocol::pb;

use super::bin::{fails, init_office, json, ok, serve};
use super::cluster::{TestCluster, eventually};

#[tokio::test(flavor = "multi_thread")]
async fn subjects_are_written_and_shown_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _) = init_office(&tmp);
    let d = data.to_str().unwrap();
    let _server = serve(&data).await;
    let help = ok(&["record", "put", "--help"]);
    assert!(
        help.contains("--subject <KIND=VALUE>") && help.contains("badge=4471"),
        "{help}"
    );
    let id = ok(&[
        "record",
        "put",
        "--collection",
        "2026-0042",
        "--kind",
        "incident-report",
        "--title",
        "Canal Street raid",
        "--subject",
        "plate=7xkd-203",
        "--subject",
        "badge@officer-involved=#4471",
        "--subject",
        "incident-date=10/21/2026",
        "--subject",
        "plate=7xkd-203",
        "--data",
        d,
    ]);
    let id = id.trim();
    let text = ok(&["record", "get", id, "--data", d]);
    for line in [
        "subject:      badge=#4471 (officer-involved)",
        "subject:      incident-date=10/21/2026",
        "subject:      plate=7xkd-203",
    ] {
        assert!(text.contains(line), "{line:?} in:\n{text}");
    }
    assert_eq!(
        text.matches("subject:").count(),
        3,
        "a repeat is kept once:\n{text}"
    );
    let record = json(&["record", "get", id, "--json", "--data", d]);
    assert_eq!(
        record["subjects"],
        serde_json::json!([
            {"kind": "badge", "value": "#4471", "role": "officer-involved"},
            {"kind": "incident-date", "value": "10/21/2026", "role": null},
            {"kind": "plate", "value": "7xkd-203", "role": null},
        ])
    );
    for (bad, says) in [
        ("badge", "is not a subject: use KIND=VALUE"),
        ("Badge=1", "subject kind \"Badge\" must be"),
        ("incident-date=yesterday", "is not a date"),
    ] {
        let err = fails(
            2,
            &[
                "record",
                "put",
                "--collection",
                "c",
                "--kind",
                "k",
                "--title",
                "t",
                "--subject",
                bad,
                "--data",
                d,
            ],
        );
        assert!(err.contains(says), "{bad}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_holds_the_subjects_its_origin_signed() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da"]).await;
    cluster.pin_all().await;
    let subject = |kind: &str, value: &str, role: &str| pb::Subject {
        kind: kind.into(),
        value: value.into(),
        role: role.into(),
    };
    let put = cluster
        .node(0)
        .records()
        .await
        .put(pb::PutRequest {
            collection: "2026-0042".into(),
            kind: "witness-statement".into(),
            title: "grey SUV".into(),
            subjects: vec![
                subject("plate", "7XKD203", ""),
                subject("agent-name", "John Smith", "subject"),
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // Too many, or malformed: refused, nothing written.
    let mut records = cluster.node(0).records().await;
    let many = (0..65)
        .map(|i| subject("badge", &i.to_string(), ""))
        .collect();
    let err = records
        .put(pb::PutRequest {
            collection: "c".into(),
            kind: "k".into(),
            title: "t".into(),
            subjects: many,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("65 subjects given; the limit is 64"),
        "{err:?}"
    );
    let err = records
        .put(pb::PutRequest {
            collection: "c".into(),
            kind: "k".into(),
            title: "t".into(),
            subjects: vec![subject("badge", "1\u{0}", "")],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    cluster.grant_collection(0, 1, "2026-0042").await;
    let nyc = cluster.node(1).records().await;
    let held = eventually(Duration::from_secs(30), "nyc-da holds the record", || {
        let mut nyc = nyc.clone();
        let id = put.id.clone();
        async move {
            nyc.get(pb::GetRequest { id, version: None })
                .await
                .ok()
                .map(|r| r.into_inner())
        }
    })
    .await;
    let record = held;
    let kinds: Vec<(&str, &str, &str)> = record
        .subjects
        .iter()
        .map(|s| (s.kind.as_str(), s.value.as_str(), s.role.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("agent-name", "John Smith", "subject"),
            ("plate", "7XKD203", "")
        ],
        "sorted, as signed"
    );
    // The copy checks out against phila-da's signature.
    let signed = casemesh::protocol::convert::signed_from_pb(&record).unwrap();
    assert_eq!(signed.digest.to_vec(), record.digest.to_vec());
    cluster.stop_all().await;
}
