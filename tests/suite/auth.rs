//! Who may connect and what they may call.

use std::sync::Arc;

use casemesh::domain::{OfficeId, Role, UserName};
use casemesh::identity::OfficeCa;
use casemesh::identity::pki::{certs_from_pem, new_csr};
use casemesh::identity::tls::{PemIdentity, provider};
use casemesh::protocol::pb::{self, admin_client::AdminClient, records_client::RecordsClient};
use casemesh::protocol::transport;
use rustls::RootCertStore;
use tonic::Code;

use super::cluster::{TestCluster, TestNode};

fn roots(node: &TestNode) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for c in certs_from_pem(&node.ca_pem()).unwrap() {
        roots.add(c).unwrap();
    }
    roots
}

/// A Records call over `cfg`: `Ok`, or why it failed, as the client saw
/// it (for a refused handshake, the TLS alert the node sent: the client
/// reads it at connect time).
async fn records_call(node: &TestNode, cfg: rustls::ClientConfig) -> Result<(), String> {
    let channel = transport::connect(&node.endpoint(), Arc::new(cfg))
        .await
        .map_err(|e| format!("{e:?}"))?;
    list(channel).await
}

async fn records_call_as(node: &TestNode, cert: &[u8], key: &[u8]) -> Result<(), String> {
    list(node.connect_as(cert, key).await?).await
}

async fn list(channel: tonic::transport::Channel) -> Result<(), String> {
    RecordsClient::new(channel)
        .list(pb::ListRequest::default())
        .await
        .map(|_| ())
        .map_err(|s| format!("{s:?}"))
}

/// The refusal `result` must be, naming `reason` (a TLS alert, say).
fn refused(result: Result<(), String>, reason: &str) {
    let why = result.expect_err("the call was refused");
    assert!(why.contains(reason), "refused for another reason: {why}");
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let mut cluster = TestCluster::start(&["phila-da"]).await;
    let node = cluster.node(0);
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots(node))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    refused(records_call(node, cfg).await, "CertificateRequired");
    // Control: the same client with the admin certificate gets through.
    let p = node.paths();
    let admin = (
        std::fs::read(p.admin_cert()).unwrap(),
        std::fs::read(p.admin_key()).unwrap(),
    );
    records_call_as(node, &admin.0, &admin.1).await.unwrap();
    cluster.stop_all().await;
}

#[tokio::test]
async fn tls_1_2_is_refused() {
    let mut cluster = TestCluster::start(&["phila-da"]).await;
    let node = cluster.node(0);
    let p = node.paths();
    let id = PemIdentity::from_pem(
        &std::fs::read(p.admin_cert()).unwrap(),
        &std::fs::read(p.admin_key()).unwrap(),
    )
    .unwrap();
    let config = |version: &'static rustls::SupportedProtocolVersion| {
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots(node))
            .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
            .unwrap();
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        cfg
    };
    refused(
        records_call(node, config(&rustls::version::TLS12)).await,
        "ProtocolVersion",
    );
    // Control: the same client speaking TLS 1.3 gets through.
    records_call(node, config(&rustls::version::TLS13))
        .await
        .unwrap();
    cluster.stop_all().await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let mut cluster = TestCluster::start(&["phila-da"]).await;
    let node = cluster.node(0);
    // Another office, and one claiming to be phila-da, both with their own
    // CA: the one by another name is unknown; the impostor's certificate
    // names phila-da's CA but its signature does not check against it.
    for (office, alert) in [("evil-da", "UnknownCA"), ("phila-da", "DecryptError")] {
        let (_, m) = OfficeCa::create(
            &OfficeId::parse(office).unwrap(),
            &[],
            &UserName::parse("admin").unwrap(),
        )
        .unwrap();
        refused(
            records_call_as(
                node,
                m.admin_cert_pem.as_bytes(),
                m.admin_key_pem.as_bytes(),
            )
            .await,
            alert,
        );
    }
    cluster.stop_all().await;
}

#[tokio::test]
async fn a_certificate_the_node_did_not_issue_is_refused_even_from_the_office_ca() {
    let mut cluster = TestCluster::start(&["phila-da"]).await;
    let node = cluster.node(0);
    let p = node.paths();
    let ca = OfficeCa::load(
        &node.office,
        &std::fs::read_to_string(p.office_ca()).unwrap(),
        &std::fs::read_to_string(p.office_key()).unwrap(),
    )
    .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = ca
        .issue_user(&UserName::parse("ghost").unwrap(), Role::Admin, &key)
        .unwrap();
    refused(
        records_call_as(node, cert.as_bytes(), key.serialize_pem().as_bytes()).await,
        "AccessDenied",
    );
    // The node's own server certificate is not a user certificate either.
    refused(
        records_call_as(
            node,
            &std::fs::read(p.node_cert()).unwrap(),
            &std::fs::read(p.node_key()).unwrap(),
        )
        .await,
        "AccessDenied",
    );
    cluster.stop_all().await;
}

#[tokio::test]
async fn staff_may_use_records_but_not_admin() {
    let mut cluster = TestCluster::start(&["phila-da"]).await;
    let node = cluster.node(0);
    let (cert, key) = node.issue_user("clerk", pb::Role::Staff).await;
    let channel = node.connect_as(&cert, &key).await.unwrap();
    let mut records = RecordsClient::new(channel.clone());
    records
        .put(pb::PutRequest {
            collection: "c".into(),
            kind: "k".into(),
            title: "by staff".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut admin = AdminClient::new(channel);
    let err = admin.list_users(pb::ListUsersRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let (_, csr) = new_csr().unwrap();
    let err = admin
        .issue_user(pb::IssueUserRequest {
            name: "sneaky".into(),
            role: pb::Role::Admin as i32,
            csr_der: csr.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let users = node
        .admin()
        .await
        .list_users(pb::ListUsersRequest {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = users.users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["admin", "clerk"],
        "the refused call issued nobody"
    );
    cluster.stop_all().await;
}

#[tokio::test]
async fn a_revoked_user_is_refused_on_open_and_new_connections() {
    let mut cluster = TestCluster::start(&["phila-da"]).await;
    let node = cluster.node(0);
    let (cert, key) = node.issue_user("leaver", pb::Role::Admin).await;
    let channel = node.connect_as(&cert, &key).await.unwrap();
    let mut open = RecordsClient::new(channel);
    open.list(pb::ListRequest::default()).await.unwrap();

    let revoked = node
        .admin()
        .await
        .revoke_user(pb::RevokeUserRequest {
            name: "leaver".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revoked_at_ms > 0);

    let err = open.list(pb::ListRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("revoked"), "{}", err.message());
    refused(
        records_call_as(node, &cert, &key).await,
        "CertificateRevoked",
    );

    // Still revoked after a restart.
    cluster.node(0).restart().await;
    refused(
        records_call_as(cluster.node(0), &cert, &key).await,
        "CertificateRevoked",
    );
    cluster.stop_all().await;
}

#[tokio::test]
async fn user_administration_rejects_bad_input() {
    let mut cluster = TestCluster::start(&["phila-da"]).await;
    let node = cluster.node(0);
    let mut admin = node.admin().await;
    let (_, csr) = new_csr().unwrap();
    let cases = [
        (
            "Bad Name",
            pb::Role::Staff as i32,
            csr.clone(),
            Code::InvalidArgument,
        ),
        ("ok", 0, csr.clone(), Code::InvalidArgument),
        ("ok", 99, csr.clone(), Code::InvalidArgument),
        ("ok", pb::Role::Staff as i32, vec![], Code::InvalidArgument),
        (
            "ok",
            pb::Role::Staff as i32,
            b"junk".to_vec(),
            Code::InvalidArgument,
        ),
        (
            "admin",
            pb::Role::Staff as i32,
            csr.clone(),
            Code::AlreadyExists,
        ),
    ];
    for (name, role, csr, code) in cases {
        let err = admin
            .issue_user(pb::IssueUserRequest {
                name: name.into(),
                role,
                csr_der: csr.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{name} {role}: {err:?}");
    }
    let err = admin
        .revoke_user(pb::RevokeUserRequest {
            name: "nobody".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let users = admin
        .list_users(pb::ListUsersRequest {})
        .await
        .unwrap()
        .into_inner()
        .users;
    assert_eq!(users.len(), 1);
    cluster.stop_all().await;
}

#[tokio::test]
async fn health_and_reflection_answer_local_users() {
    let mut cluster = TestCluster::start(&["phila-da"]).await;
    let node = cluster.node(0);
    let mut health = tonic_health::pb::health_client::HealthClient::new(node.admin_channel().await);
    let resp = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "casemesh.v1.Records".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let status = node
        .admin()
        .await
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.office, "phila-da");
    assert!(status.fingerprint.starts_with("sha256:"));
    cluster.stop_all().await;
}
