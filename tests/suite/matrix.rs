//! The authorization matrix: every RPC the node serves, called by every
//! kind of caller, against a target granted to the calling peer and one
//! that is not, each with the status it must get.
//!
//! The RPCs come from the descriptor sets of the services the node serves
//! (and the node's reflection service confirms it serves no other), so a
//! new RPC without an entry here fails the test. The table it checks is
//! also written out in `docs/authorization.md`; the test fails when that
//! file differs from what it checked (`CASEMESH_BLESS=1` rewrites it).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};

use casemesh::domain::{OfficeId, UserName};
use casemesh::identity::OfficeCa;
use casemesh::protocol::pb::{
    self, admin_client::AdminClient, records_client::RecordsClient,
    replication_client::ReplicationClient,
};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::{v1, v1alpha};

use super::blobkit::upload;
use super::cluster::{TestCluster, TestNode};

/// Who calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Who {
    Admin,
    Staff,
    Auditor,
    /// A user revoked while its connection stays open.
    RevokedOpen,
    /// The same user connecting again after the revocation.
    RevokedNew,
    PeerNode,
    PeerAdmin,
    OtherNode,
    OwnNode,
}

const CALLERS: [Who; 9] = [
    Who::Admin,
    Who::Staff,
    Who::Auditor,
    Who::RevokedOpen,
    Who::RevokedNew,
    Who::PeerNode,
    Who::PeerAdmin,
    Who::OtherNode,
    Who::OwnNode,
];

impl Who {
    fn heading(self) -> &'static str {
        match self {
            Who::Admin => "admin",
            Who::Staff => "staff",
            Who::Auditor => "auditor",
            Who::RevokedOpen => "revoked user, open connection",
            Who::RevokedNew => "revoked user, new connection",
            Who::PeerNode => "pinned peer's node",
            Who::PeerAdmin => "pinned peer's admin",
            Who::OtherNode => "unpinned office's node",
            Who::OwnNode => "own node certificate",
        }
    }

    /// The TLS alert that refuses this caller's handshake, if it is
    /// refused there.
    fn refused_handshake(self) -> Option<&'static str> {
        match self {
            Who::RevokedNew => Some("CertificateRevoked"),
            Who::PeerAdmin | Who::OwnNode => Some("AccessDenied"),
            Who::OtherNode => Some("UnknownCA"),
            _ => None,
        }
    }
}

/// Whether the call's target is granted to the pinned peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Granted,
    Ungranted,
    /// The RPC names nothing a grant covers.
    None,
}

/// What a cell must come to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    Status(Code),
    /// Refused in the TLS handshake, with this alert.
    Handshake(&'static str),
}

impl std::fmt::Display for Want {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Want::Status(Code::Ok) => f.write_str("OK"),
            Want::Status(code) => f.write_str(&casemesh::grpc::auth::code_name(*code)),
            Want::Handshake(alert) => write!(f, "TLS {alert}"),
        }
    }
}

/// Which kind of caller a service is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Audience {
    /// Admins and staff.
    Users,
    Admins,
    Peers,
    /// Local users and, for `Health/Check` only, peers.
    Health,
    /// Local users.
    Reflection,
}

fn audience(path: &str) -> Audience {
    match service_of(path) {
        "casemesh.v1.Records" => Audience::Users,
        "casemesh.v1.Admin" => Audience::Admins,
        "casemesh.v1.Replication" => Audience::Peers,
        "grpc.health.v1.Health" => Audience::Health,
        "grpc.reflection.v1.ServerReflection" | "grpc.reflection.v1alpha.ServerReflection" => {
            Audience::Reflection
        }
        other => panic!("service {other} has no entry in the authorization matrix"),
    }
}

fn service_of(path: &str) -> &str {
    path.trim_start_matches('/')
        .split_once('/')
        .map_or("", |(s, _)| s)
}

/// The Admin calls an auditor may make: reads of the audit log and of the
/// node's state; never a bundle (it carries records) nor a change.
fn auditor_reads(path: &str) -> bool {
    matches!(
        path,
        "/casemesh.v1.Admin/Status"
            | "/casemesh.v1.Admin/ListPeers"
            | "/casemesh.v1.Admin/ListGrants"
            | "/casemesh.v1.Admin/ListUsers"
            | "/casemesh.v1.Admin/QueryAudit"
            | "/casemesh.v1.Admin/VerifyAudit"
            | "/casemesh.v1.Admin/WitnessAudit"
    )
}

/// Whether the RPC names something a grant covers.
fn targeted(path: &str) -> bool {
    matches!(
        path,
        "/casemesh.v1.Records/Put"
            | "/casemesh.v1.Records/Get"
            | "/casemesh.v1.Records/History"
            | "/casemesh.v1.Records/List"
            | "/casemesh.v1.Records/Search"
            | "/casemesh.v1.Records/Delete"
            | "/casemesh.v1.Records/GetBlob"
            | "/casemesh.v1.Admin/Grant"
            | "/casemesh.v1.Admin/Revoke"
            | "/casemesh.v1.Admin/Export"
            | "/casemesh.v1.Replication/FetchBlob"
    )
}

/// The expected status of one cell: the table this test checks.
fn want(path: &str, who: Who, target: Target) -> Want {
    if let Some(alert) = who.refused_handshake() {
        return Want::Handshake(alert);
    }
    let denied = Want::Status(Code::PermissionDenied);
    if who == Who::RevokedOpen {
        return denied;
    }
    let may = match audience(path) {
        Audience::Users => matches!(who, Who::Admin | Who::Staff),
        Audience::Admins => who == Who::Admin || (who == Who::Auditor && auditor_reads(path)),
        Audience::Peers => who == Who::PeerNode,
        Audience::Health => who != Who::PeerNode || path == "/grpc.health.v1.Health/Check",
        Audience::Reflection => who != Who::PeerNode,
    };
    if !may {
        return denied;
    }
    Want::Status(match (path, target) {
        // Revoking a grant that has already ended.
        ("/casemesh.v1.Admin/Revoke", Target::Ungranted) => Code::FailedPrecondition,
        // The file is held but not shared with the caller; the answer
        // names it as not found either way (finding 10).
        ("/casemesh.v1.Replication/FetchBlob", Target::Ungranted) => Code::NotFound,
        _ => Code::Ok,
    })
}

/// Every RPC of every service the node serves, as `/service/method`.
fn rpcs() -> Vec<String> {
    casemesh::protocol::rpc_paths()
}

/// A record, with one file, in a collection of its own.
#[derive(Clone)]
struct Fixture {
    collection: String,
    id: String,
    hash: Vec<u8>,
}

/// The node under test and what the cells use.
struct Bench<'a> {
    phila: &'a TestNode,
    nyc_office: String,
    admin: AdminClient<Channel>,
    granted: Fixture,
    ungranted: Fixture,
    seq: AtomicUsize,
}

impl Bench<'_> {
    fn next(&self) -> usize {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// A new record with a file in a new collection, granted to the peer
    /// when `grant`; returns it and the grant's id.
    async fn fixture(&self, grant: bool) -> (Fixture, String) {
        let n = self.next();
        let collection = format!("case-{n}");
        let info = upload(self.phila, &format!("file-{n}"), 4096)
            .await
            .unwrap();
        let id = self
            .phila
            .records()
            .await
            .put(pb::PutRequest {
                collection: collection.clone(),
                kind: "video".into(),
                title: format!("exhibit {n}"),
                attachments: vec![pb::Attachment {
                    hash: info.hash.clone(),
                    size: 4096,
                    file_name: "exhibit.mp4".into(),
                    media_type: "video/mp4".into(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .id;
        let grant_id = if grant {
            self.admin
                .clone()
                .grant(pb::GrantRequest {
                    peer: self.nyc_office.clone(),
                    target: Some(pb::grant_request::Target::Collection(collection.clone())),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .id
        } else {
            String::new()
        };
        let fixture = Fixture {
            collection,
            id,
            hash: info.hash.to_vec(),
        };
        (fixture, grant_id)
    }

    fn shared(&self, target: Target) -> &Fixture {
        match target {
            Target::Ungranted => &self.ungranted,
            _ => &self.granted,
        }
    }

    /// Makes the call `path` names over `ch` (preparing, as the admin,
    /// what it needs); `Ok` once the reply's headers say so.
    async fn call(&self, path: &str, ch: Channel, target: Target) -> Result<(), Status> {
        let n = self.next();
        let shared = self.shared(target).clone();
        let mut records = RecordsClient::new(ch.clone());
        let mut admin = AdminClient::new(ch.clone());
        let mut peer = ReplicationClient::new(ch.clone());
        match path {
            "/casemesh.v1.Records/Put" => records
                .put(pb::PutRequest {
                    collection: shared.collection,
                    kind: "note".into(),
                    title: format!("note {n}"),
                    ..Default::default()
                })
                .await
                .map(ok),
            "/casemesh.v1.Records/Get" => records
                .get(pb::GetRequest {
                    id: shared.id,
                    version: None,
                })
                .await
                .map(ok),
            "/casemesh.v1.Records/History" => records
                .history(pb::HistoryRequest { id: shared.id })
                .await
                .map(ok),
            "/casemesh.v1.Records/List" => records
                .list(pb::ListRequest {
                    collection: shared.collection,
                    ..Default::default()
                })
                .await
                .map(ok),
            "/casemesh.v1.Records/Search" => records
                .search(pb::SearchRequest {
                    collection: shared.collection,
                    ..Default::default()
                })
                .await
                .map(ok),
            "/casemesh.v1.Records/Delete" => {
                let (own, _) = self.fixture(target == Target::Granted).await;
                records
                    .delete(pb::DeleteRequest {
                        id: own.id,
                        expected_version: Some(1),
                    })
                    .await
                    .map(ok)
            }
            "/casemesh.v1.Records/PutBlob" => {
                let data = format!("bytes {n}").into_bytes();
                records
                    .put_blob(tokio_stream::iter([pb::PutBlobRequest {
                        data: data.into(),
                    }]))
                    .await
                    .map(ok)
            }
            "/casemesh.v1.Records/GetBlob" => records
                .get_blob(pb::GetBlobRequest {
                    hash: shared.hash.into(),
                    offset: 0,
                    length: 0,
                })
                .await
                .map(ok),
            "/casemesh.v1.Admin/IssueUser" => {
                let (_, csr) = casemesh::identity::pki::new_csr().unwrap();
                admin
                    .issue_user(pb::IssueUserRequest {
                        name: format!("user-{n}"),
                        role: pb::Role::Staff as i32,
                        csr_der: csr.into(),
                    })
                    .await
                    .map(ok)
            }
            "/casemesh.v1.Admin/RevokeUser" => {
                let name = format!("leaver-{n}");
                let (_, csr) = casemesh::identity::pki::new_csr().unwrap();
                self.admin
                    .clone()
                    .issue_user(pb::IssueUserRequest {
                        name: name.clone(),
                        role: pb::Role::Staff as i32,
                        csr_der: csr.into(),
                    })
                    .await
                    .unwrap();
                admin
                    .revoke_user(pb::RevokeUserRequest {
                        name,
                        ..Default::default()
                    })
                    .await
                    .map(ok)
            }
            "/casemesh.v1.Admin/ListUsers" => {
                admin.list_users(pb::ListUsersRequest {}).await.map(ok)
            }
            "/casemesh.v1.Admin/Status" => admin.status(pb::StatusRequest {}).await.map(ok),
            "/casemesh.v1.Admin/AddPeer" => {
                let office = OfficeId::parse(&format!("added-{n}")).unwrap();
                let (_, m) =
                    OfficeCa::create(&office, &[], &UserName::parse("admin").unwrap()).unwrap();
                admin
                    .add_peer(pb::AddPeerRequest {
                        office: office.to_string(),
                        endpoint: "https://127.0.0.1:9".into(),
                        ca_certificate_pem: m.ca_cert_pem,
                        ..Default::default()
                    })
                    .await
                    .map(ok)
            }
            "/casemesh.v1.Admin/RemovePeer" => {
                let office = OfficeId::parse(&format!("removed-{n}")).unwrap();
                let (_, m) =
                    OfficeCa::create(&office, &[], &UserName::parse("admin").unwrap()).unwrap();
                self.admin
                    .clone()
                    .add_peer(pb::AddPeerRequest {
                        office: office.to_string(),
                        endpoint: "https://127.0.0.1:9".into(),
                        ca_certificate_pem: m.ca_cert_pem,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                admin
                    .remove_peer(pb::RemovePeerRequest {
                        office: office.to_string(),
                        purge_replicas: true,
                    })
                    .await
                    .map(ok)
            }
            "/casemesh.v1.Admin/ListPeers" => {
                admin.list_peers(pb::ListPeersRequest {}).await.map(ok)
            }
            "/casemesh.v1.Admin/Grant" => admin
                .grant(pb::GrantRequest {
                    peer: self.nyc_office.clone(),
                    target: Some(pb::grant_request::Target::Collection(shared.collection)),
                    ..Default::default()
                })
                .await
                .map(ok),
            "/casemesh.v1.Admin/Revoke" => {
                let (_, grant_id) = self.fixture(true).await;
                if target == Target::Ungranted {
                    self.admin
                        .clone()
                        .revoke(pb::RevokeRequest {
                            grant_id: grant_id.clone(),
                        })
                        .await
                        .unwrap();
                }
                admin.revoke(pb::RevokeRequest { grant_id }).await.map(ok)
            }
            "/casemesh.v1.Admin/ListGrants" => admin
                .list_grants(pb::ListGrantsRequest::default())
                .await
                .map(ok),
            "/casemesh.v1.Admin/QueryAudit" => admin
                .query_audit(pb::QueryAuditRequest::default())
                .await
                .map(ok),
            "/casemesh.v1.Admin/VerifyAudit" => {
                admin.verify_audit(pb::VerifyAuditRequest {}).await.map(ok)
            }
            "/casemesh.v1.Admin/WitnessAudit" => {
                // The peer gives one proof per interval: a second caller
                // permitted to witness waits its turn (bounded), so the
                // cell shows what the caller may do, not the peer's limit.
                let deadline = std::time::Instant::now()
                    + casemesh::sync::guard::PROOF_INTERVAL
                    + std::time::Duration::from_secs(10);
                loop {
                    let got = admin
                        .witness_audit(pb::WitnessAuditRequest {
                            peer: self.nyc_office.clone(),
                        })
                        .await;
                    match got {
                        Err(s)
                            if s.code() == Code::Unavailable
                                && s.message().contains("again in")
                                && std::time::Instant::now() < deadline =>
                        {
                            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                        }
                        other => break other.map(ok),
                    }
                }
            }
            "/casemesh.v1.Admin/ReindexSearch" => admin
                .reindex_search(pb::ReindexSearchRequest {})
                .await
                .map(ok),
            "/casemesh.v1.Admin/ScrubBlobs" => {
                admin.scrub_blobs(pb::ScrubBlobsRequest {}).await.map(ok)
            }
            "/casemesh.v1.Admin/Export" => admin
                .export(pb::ExportRequest {
                    collection: shared.collection,
                    allow_empty: false,
                })
                .await
                .map(ok),
            "/casemesh.v1.Replication/Pull" => {
                let start = pb::PullUp {
                    kind: Some(pb::pull_up::Kind::Start(pb::PullStart {
                        after_seq: 0,
                        record_encoding: casemesh::domain::record::RECORD_ENCODING,
                    })),
                };
                peer.pull(tokio_stream::iter([start])).await.map(ok)
            }
            "/casemesh.v1.Replication/FetchBlob" => peer
                .fetch_blob(pb::FetchBlobRequest {
                    hash: shared.hash.into(),
                    offset: 0,
                    ..Default::default()
                })
                .await
                .map(ok),
            "/casemesh.v1.Replication/ProveAudit" => peer
                .prove_audit(pb::ProveAuditRequest::default())
                .await
                .map(ok),
            "/grpc.health.v1.Health/Check" => HealthClient::new(ch)
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .map(ok),
            "/grpc.health.v1.Health/Watch" => HealthClient::new(ch)
                .watch(tonic_health::pb::HealthCheckRequest::default())
                .await
                .map(ok),
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo" => {
                let ask = v1::ServerReflectionRequest {
                    host: String::new(),
                    message_request: Some(
                        v1::server_reflection_request::MessageRequest::ListServices(String::new()),
                    ),
                };
                v1::server_reflection_client::ServerReflectionClient::new(ch)
                    .server_reflection_info(tokio_stream::iter([ask]))
                    .await
                    .map(ok)
            }
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo" => {
                let ask = v1alpha::ServerReflectionRequest {
                    host: String::new(),
                    message_request: Some(
                        v1alpha::server_reflection_request::MessageRequest::ListServices(
                            String::new(),
                        ),
                    ),
                };
                v1alpha::server_reflection_client::ServerReflectionClient::new(ch)
                    .server_reflection_info(tokio_stream::iter([ask]))
                    .await
                    .map(ok)
            }
            other => panic!("{other} has no call in the authorization matrix: add one"),
        }
    }
}

/// Forgets a reply: a cell needs only its status.
fn ok<T>(_: T) {}

/// The services the node lists through reflection.
async fn served_services(ch: Channel) -> BTreeSet<String> {
    let ask = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut replies = v1::server_reflection_client::ServerReflectionClient::new(ch)
        .server_reflection_info(tokio_stream::iter([ask]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().expect("a reply");
    match reply.message_response {
        Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("not a list of services: {other:?}"),
    }
}

/// What one cell came to.
fn outcome(result: Result<(), String>, got: Result<(), Status>) -> Result<Want, String> {
    result?;
    match got {
        Ok(()) => Ok(Want::Status(Code::Ok)),
        Err(status) => {
            let text = format!("{status:?}");
            for alert in ["CertificateRevoked", "AccessDenied", "UnknownCA"] {
                if text.contains(alert) {
                    return Ok(Want::Handshake(alert));
                }
            }
            Ok(Want::Status(status.code()))
        }
    }
}

#[tokio::test]
async fn every_rpc_answers_every_caller_as_the_table_says() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da"]).await;
    cluster.pin(0, 1).await;
    cluster.pin(1, 0).await;
    let phila = &cluster.nodes[0];
    let nyc = &cluster.nodes[1];
    let admin = phila.admin().await;
    let mut bench = Bench {
        phila,
        nyc_office: nyc.office.to_string(),
        admin,
        granted: Fixture {
            collection: String::new(),
            id: String::new(),
            hash: Vec::new(),
        },
        ungranted: Fixture {
            collection: String::new(),
            id: String::new(),
            hash: Vec::new(),
        },
        seq: AtomicUsize::new(0),
    };
    bench.granted = bench.fixture(true).await.0;
    bench.ungranted = bench.fixture(false).await.0;

    // The identities.
    let paths = phila.paths();
    let read = |p: std::path::PathBuf| std::fs::read(p).unwrap();
    let admin_id = (read(paths.admin_cert()), read(paths.admin_key()));
    let staff_id = phila.issue_user("clerk", pb::Role::Staff).await;
    let auditor_id = phila.issue_user("reviewer", pb::Role::Auditor).await;
    let revoked_id = phila.issue_user("leaver", pb::Role::Staff).await;
    let nyc_paths = nyc.paths();
    let peer_admin_id = (read(nyc_paths.admin_cert()), read(nyc_paths.admin_key()));
    let (_, boston) = OfficeCa::create(
        &OfficeId::parse("boston-da").unwrap(),
        &[],
        &UserName::parse("admin").unwrap(),
    )
    .unwrap();
    let other_id = (
        boston.node_cert_pem.into_bytes(),
        boston.node_key_pem.into_bytes(),
    );
    let own_id = (read(paths.node_cert()), read(paths.node_key()));
    let identity = |who: Who| match who {
        Who::Admin => admin_id.clone(),
        Who::Staff => staff_id.clone(),
        Who::Auditor => auditor_id.clone(),
        Who::RevokedOpen | Who::RevokedNew => revoked_id.clone(),
        Who::PeerNode => nyc.node_identity(),
        Who::PeerAdmin => peer_admin_id.clone(),
        Who::OtherNode => other_id.clone(),
        Who::OwnNode => own_id.clone(),
    };
    // The revoked user's connection is opened (and used) before the
    // revocation, and kept.
    let revoked_open = phila
        .connect_as(&revoked_id.0, &revoked_id.1)
        .await
        .unwrap();
    RecordsClient::new(revoked_open.clone())
        .list(pb::ListRequest::default())
        .await
        .expect("control: the user may list before the revocation");
    bench
        .admin
        .clone()
        .revoke_user(pb::RevokeUserRequest {
            name: "leaver".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut open = std::collections::HashMap::new();
    for who in [Who::Admin, Who::Staff, Who::Auditor, Who::PeerNode] {
        let (cert, key) = identity(who);
        open.insert(who, phila.connect_as(&cert, &key).await.unwrap());
    }
    open.insert(Who::RevokedOpen, revoked_open);

    // The RPCs: every one the descriptors name, and nothing the node
    // serves beyond them.
    let rpcs = rpcs();
    let described: BTreeSet<String> = rpcs.iter().map(|p| service_of(p).to_owned()).collect();
    // Reflection lists itself in its v1 form only; v1alpha is served too.
    let mut served = served_services(open[&Who::Admin].clone()).await;
    served.insert("grpc.reflection.v1alpha.ServerReflection".into());
    assert_eq!(
        served, described,
        "the node serves exactly the services described"
    );

    let mut table = String::new();
    let mut wrong = Vec::new();
    let mut cells = 0;
    writeln!(table, "| RPC | target | {} |", {
        let heads: Vec<_> = CALLERS.iter().map(|w| w.heading()).collect();
        heads.join(" | ")
    })
    .unwrap();
    writeln!(table, "|---|---|{}", "---|".repeat(CALLERS.len())).unwrap();
    for path in &rpcs {
        let targets: &[Target] = if targeted(path) {
            &[Target::Granted, Target::Ungranted]
        } else {
            &[Target::None]
        };
        for &target in targets {
            let mut row = format!(
                "| `{}` | {} |",
                path.trim_start_matches('/'),
                match target {
                    Target::Granted => "granted",
                    Target::Ungranted => "not granted",
                    Target::None => "–",
                }
            );
            for who in CALLERS {
                let expected = want(path, who, target);
                let (connected, ch) = match open.get(&who) {
                    Some(ch) => (Ok(()), Some(ch.clone())),
                    None => {
                        let (cert, key) = identity(who);
                        match phila.connect_as(&cert, &key).await {
                            Ok(ch) => (Ok(()), Some(ch)),
                            Err(e) => (Err(e), None),
                        }
                    }
                };
                let got = match ch {
                    Some(ch) => bench.call(path, ch, target).await,
                    None => Ok(()),
                };
                let got = match (outcome(connected, got), who.refused_handshake()) {
                    (Ok(w), _) => w,
                    // Refused while connecting: the alert is in the error.
                    (Err(e), Some(alert)) if e.contains(alert) => Want::Handshake(alert),
                    (Err(e), _) => {
                        wrong.push(format!("{path} as {who:?}: could not connect: {e}"));
                        continue;
                    }
                };
                cells += 1;
                if got != expected {
                    wrong.push(format!(
                        "{path} as {who:?} ({target:?}): expected {expected}, got {got}"
                    ));
                }
                write!(row, " {expected} |").unwrap();
            }
            writeln!(table, "{row}").unwrap();
        }
    }
    assert!(
        wrong.is_empty(),
        "{} cells wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(cells > 200, "only {cells} cells");

    let doc = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/authorization.md");
    let rendered = render(&table, rpcs.len(), cells);
    if std::env::var_os("CASEMESH_BLESS").is_some() {
        std::fs::write(&doc, &rendered).unwrap();
    }
    let written = std::fs::read_to_string(&doc).unwrap_or_default();
    assert!(
        written == rendered,
        "docs/authorization.md does not show the matrix this test checked; \
         rerun with CASEMESH_BLESS=1 to rewrite it"
    );
    cluster.stop_all().await;
}

fn render(table: &str, rpcs: usize, cells: usize) -> String {
    format!(
        "# Authorization matrix\n\n\
         Generated by `cargo test --test integration matrix` (the test \
         `every_rpc_answers_every_caller_as_the_table_says` checks every cell \
         against real nodes over mTLS, then compares this file with what it \
         checked). {rpcs} RPCs, {cells} cells.\n\n\
         Callers: the office's admin, a staff user and an auditor; a user revoked while its \
         connection stays open, and the same user connecting again; a pinned \
         peer office's node and that office's admin; the node of an office not \
         pinned; this office's own node certificate. The target is a record and \
         its file in a collection granted to the pinned peer, or in one that is \
         not (\"–\": the RPC names nothing a grant covers).\n\n\
         `TLS <alert>`: the handshake is refused with that alert, before any \
         call. `Admin/Revoke` on a grant that has already ended is \
         `FAILED_PRECONDITION`; `Replication/FetchBlob` of a file held but not \
         shared is `NOT_FOUND`, the same answer as for a file not held.\n\n\
         {table}"
    )
}
