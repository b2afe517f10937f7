//! `/metrics` follows what the federation does, names no record, and off
//! the plain loopback endpoint answers only admins and auditors.

use std::time::Duration;

use casemesh::domain::{OfficeId, UserName};
use casemesh::identity::OfficeCa;
use casemesh::protocol::pb;

use super::cluster::{TestCluster, eventually};
use super::webkit::{KeptAlive, http_get, http_get_as, https_get, parse_metrics, value};

const WAIT: Duration = Duration::from_secs(60);

async fn scrape(addr: std::net::SocketAddr) -> prometheus_parse::Scrape {
    let (code, body) = http_get(addr, "/metrics").await;
    assert_eq!(code, 200, "{body}");
    parse_metrics(&body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_follow_replication_grants_and_refused_handshakes() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da"]).await;
    for i in 0..2 {
        cluster
            .node(i)
            .configure(|c| c.metrics.listen = Some("127.0.0.1:0".parse().unwrap()))
            .await;
    }
    cluster.pin_all().await;
    let phila_addr = cluster.node(0).metrics_addr();
    let nyc_addr = cluster.node(1).metrics_addr();
    let peer = [("peer", "nyc-da")];

    // Records written before any grant; their titles must never show.
    let mut ids = Vec::new();
    for i in 0..12 {
        let put = cluster
            .node(0)
            .kit()
            .put(
                "2026-0042",
                "incident-report",
                &format!("unique-title-{i}"),
                "body",
            )
            .await
            .unwrap();
        ids.push(put.id);
    }
    let m = scrape(phila_addr).await;
    let ok_puts = [
        ("service", "casemesh.v1.Records"),
        ("method", "Put"),
        ("code", "OK"),
    ];
    assert_eq!(
        value(&m, "casemesh_rpc_handled_total", &ok_puts),
        Some(12.0)
    );
    assert_eq!(
        value(&m, "casemesh_records", &[("origin", "phila-da")]),
        Some(12.0)
    );
    assert_eq!(value(&m, "casemesh_peer_outbox_pending", &peer), Some(0.0));
    assert!(value(&m, "casemesh_commit_batch_size_count", &[]).unwrap_or(0.0) >= 1.0);
    let (_, text) = http_get(phila_addr, "/metrics").await;
    for (i, id) in ids.iter().enumerate() {
        assert!(!text.contains(id.as_str()), "a record id is in the metrics");
        assert!(!text.contains(&format!("unique-title-{i}")));
    }
    assert!(
        !text.contains("2026-0042"),
        "a case number is in the metrics"
    );

    // The peer is down: a grant raises its pending count, which stays.
    eventually(WAIT, "nyc-da connected", || async {
        let m = scrape(phila_addr).await;
        (value(&m, "casemesh_peer_up", &peer) == Some(1.0)).then_some(())
    })
    .await;
    cluster.node(1).stop().await;
    eventually(WAIT, "nyc-da seen down", || async {
        let m = scrape(phila_addr).await;
        (value(&m, "casemesh_peer_up", &peer) == Some(0.0)).then_some(())
    })
    .await;
    cluster.grant_collection(0, 1, "2026-0042").await;
    let pending = eventually(WAIT, "the backfill queued for nyc-da", || async {
        let m = scrape(phila_addr).await;
        value(&m, "casemesh_peer_outbox_pending", &peer).filter(|n| *n >= 12.0)
    })
    .await;
    assert_eq!(pending, 12.0, "one entry per record");
    // Its age grows while nobody acknowledges it.
    eventually(WAIT, "the lag counted in seconds", || async {
        let m = scrape(phila_addr).await;
        value(&m, "casemesh_peer_lag_seconds", &peer).filter(|s| *s >= 1.0)
    })
    .await;

    // Back up: everything is applied and acknowledged.
    cluster.node(1).restart().await;
    let nyc_addr_now = cluster.node(1).metrics_addr();
    assert_eq!(nyc_addr_now.ip(), nyc_addr.ip());
    eventually(WAIT, "nyc-da acknowledged everything", || async {
        let m = scrape(phila_addr).await;
        let drained = value(&m, "casemesh_peer_outbox_pending", &peer) == Some(0.0)
            && value(&m, "casemesh_peer_lag_seconds", &peer) == Some(0.0);
        drained.then_some(m)
    })
    .await;
    let m = scrape(phila_addr).await;
    assert!(value(&m, "casemesh_peer_batches_sent_total", &peer).unwrap_or(0.0) >= 1.0);
    assert!(value(&m, "casemesh_peer_bytes_sent_total", &peer).unwrap_or(0.0) > 0.0);
    let n = scrape(nyc_addr_now).await;
    let from_phila = [("peer", "phila-da")];
    assert_eq!(
        value(&n, "casemesh_records", &[("origin", "phila-da")]),
        Some(12.0)
    );
    assert!(value(&n, "casemesh_peer_batches_applied_total", &from_phila).unwrap_or(0.0) >= 1.0);
    assert_eq!(
        value(&n, "casemesh_peer_versions_rejected_total", &from_phila).unwrap_or(0.0),
        0.0
    );

    // A revocation leaves a purge pending until nyc-da acknowledges it.
    let grant = cluster.node(0).kit().grants().await.unwrap()[0].id.clone();
    cluster.node(0).kit().revoke(&grant).await.unwrap();
    eventually(WAIT, "the purge acknowledged", || async {
        let m = scrape(phila_addr).await;
        let n = scrape(nyc_addr_now).await;
        (value(&m, "casemesh_peer_purges_pending", &peer) == Some(0.0)
            && value(&m, "casemesh_peer_oldest_purge_pending_seconds", &peer) == Some(0.0)
            && value(&n, "casemesh_records", &[("origin", "phila-da")]) == Some(0.0))
        .then_some(())
    })
    .await;

    // A refused handshake counts once.
    let before = value(
        &scrape(phila_addr).await,
        "casemesh_handshakes_refused_total",
        &[("listener", "grpc")],
    )
    .unwrap_or(0.0);
    let (_, boston) = OfficeCa::create(
        &OfficeId::parse("boston-da").unwrap(),
        &[],
        &UserName::parse("admin").unwrap(),
    )
    .unwrap();
    let refused = cluster
        .node(0)
        .connect_as(
            boston.node_cert_pem.as_bytes(),
            boston.node_key_pem.as_bytes(),
        )
        .await;
    assert!(refused.is_err(), "an unpinned office is refused");
    let after = eventually(WAIT, "the refusal counted", || async {
        value(
            &scrape(phila_addr).await,
            "casemesh_handshakes_refused_total",
            &[("listener", "grpc")],
        )
        .filter(|v| *v > before)
    })
    .await;
    assert_eq!(after, before + 1.0, "one refused handshake, counted once");

    // The audit log and the certificates.
    let m = scrape(phila_addr).await;
    let status = cluster
        .node(0)
        .admin()
        .await
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        value(
            &m,
            "casemesh_certificate_expiry_timestamp_seconds",
            &[("certificate", "node")]
        ),
        Some((status.node_certificate_expires_at_ms / 1000) as f64)
    );
    assert!(
        value(
            &m,
            "casemesh_certificate_expiry_timestamp_seconds",
            &[("certificate", "peer_ca"), ("peer", "nyc-da")]
        )
        .is_some()
    );
    assert!(value(&m, "casemesh_audit_entries", &[]).unwrap_or(0.0) > 12.0);
    // Every metric the alert rules and the dashboard in deploy/ use is
    // one this node exports (an alert on a name nobody exports never
    // fires).
    let used = super::deploy_files::metric_names_used();
    assert!(used.len() >= 15, "{used:?}");
    // The one family that waits on something: the first signed head.
    let text = eventually(WAIT, "a signed audit head", || async {
        let (_, text) = http_get(phila_addr, "/metrics").await;
        text.contains("\ncasemesh_audit_head_age_seconds ")
            .then_some(text)
    })
    .await;
    let exported = exported_families(&text);
    let missing: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "deploy/ uses metrics this node does not export: {missing:?}"
    );
    let (code, body) = http_get(phila_addr, "/healthz").await;
    assert_eq!((code, body.trim()), (200, "serving"));
    // A page elsewhere reaching it through a name that resolves here
    // (DNS rebinding) names its own host, and is refused.
    let (code, body) = http_get_as(phila_addr, "evil.example:9464", "/metrics").await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("loopback address or localhost only"),
        "{body}"
    );
    cluster.stop_all().await;
}

/// The families a scrape exports, by the names their `# TYPE` lines give
/// (a counter's with `_total`, a histogram's without its suffixes).
fn exported_families(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn web_listeners_over_tls_answer_only_admins_and_auditors() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da"]).await;
    cluster
        .node(0)
        .configure(|c| c.status_page.listen = Some("127.0.0.1:0".parse().unwrap()))
        .await;
    cluster.pin_all().await;
    let addr = cluster.node(0).status_page_addr();
    let ca = cluster.node(0).ca_pem();
    let auditor = cluster
        .node(0)
        .issue_user("reviewer", pb::Role::Auditor)
        .await;
    let staff = cluster.node(0).issue_user("clerk", pb::Role::Staff).await;
    let paths = cluster.node(0).paths();
    let admin = (
        std::fs::read(paths.admin_cert()).unwrap(),
        std::fs::read(paths.admin_key()).unwrap(),
    );
    let peer = cluster.node(1).node_identity();

    for (who, id) in [("auditor", &auditor), ("admin", &admin)] {
        let (code, body) = https_get(addr, "/metrics", Some((&id.0, &id.1)), &ca)
            .await
            .unwrap_or_else(|e| panic!("{who}: {e}"));
        assert_eq!(code, 200, "{who}: {body}");
        assert!(value(&parse_metrics(&body), "casemesh_audit_entries", &[]).is_some());
        let (code, page) = https_get(addr, "/", Some((&id.0, &id.1)), &ca)
            .await
            .unwrap();
        assert_eq!(code, 200, "{who}");
        assert!(page.contains("<h2 id=\"peers\">Peers</h2>") && page.contains("nyc-da"));
    }
    for (who, id) in [("staff", &staff), ("a peer's node", &peer)] {
        let (code, body) = https_get(addr, "/", Some((&id.0, &id.1)), &ca)
            .await
            .unwrap();
        assert_eq!(code, 403, "{who}: {body}");
        assert!(
            body.contains("needs a certificate of role admin or auditor"),
            "{body}"
        );
        let (code, _) = https_get(addr, "/metrics", Some((&id.0, &id.1)), &ca)
            .await
            .unwrap();
        assert_eq!(code, 403, "{who}");
    }
    // No certificate: refused in the handshake, and counted.
    let refused = https_get(addr, "/", None, &ca).await;
    assert!(refused.is_err(), "{refused:?}");
    let (_, body) = https_get(addr, "/metrics", Some((&auditor.0, &auditor.1)), &ca)
        .await
        .unwrap();
    assert_eq!(
        value(
            &parse_metrics(&body),
            "casemesh_handshakes_refused_total",
            &[("listener", "status_page")]
        ),
        Some(1.0)
    );
    // Nothing can be changed from it.
    let (code, _) = https_get(addr, "/nothing", Some((&admin.0, &admin.1)), &ca)
        .await
        .unwrap();
    assert_eq!(code, 404);
    // A revoked auditor is refused, on a connection already open (each
    // request is checked again) and on a new one.
    let mut open = KeptAlive::open(addr, &auditor.0, &auditor.1, &ca).await;
    let (code, closes, _) = open.get("/metrics").await;
    assert_eq!((code, closes), (200, false), "kept alive while allowed");
    cluster
        .node(0)
        .admin()
        .await
        .revoke_user(pb::RevokeUserRequest {
            name: "reviewer".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (code, closes, body) = open.get("/").await;
    assert_eq!((code, closes), (403, true), "{body}");
    assert!(body.contains("certificate refused"), "{body}");
    assert!(
        https_get(addr, "/", Some((&auditor.0, &auditor.1)), &ca)
            .await
            .is_err()
    );
    // The view was logged once, however often the page was read.
    let views = super::cluster::of_action(cluster.node(0), "Web.StatusPage").await;
    let by: Vec<_> = views
        .iter()
        .filter(|e| e.outcome_code.is_empty())
        .map(|e| e.actor_name.clone())
        .collect();
    assert_eq!(by, ["reviewer", "admin"], "{views:?}");
    cluster.stop_all().await;
}
