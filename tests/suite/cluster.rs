//! `TestCluster`: N real nodes in this process, each with its own temporary
//! data directory, freshly generated certificates and an ephemeral loopback
//! port; nodes can be stopped and restarted on the same data and address.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use casemesh::config::Paths;
use casemesh::domain::OfficeId;
use casemesh::grpc::pb::{admin_client::AdminClient, records_client::RecordsClient};
use casemesh::grpc::transport::{self, NodeAddr};
use casemesh::identity::pki::certs_from_pem;
use casemesh::identity::tls::{PemIdentity, client_config};
use casemesh::node::{self, NodeHandle};
use tempfile::TempDir;
use tonic::transport::Channel;

/// Polls `check` until it returns `Some`, failing the test with `what` once
/// `deadline` has passed. The only way tests wait.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

pub struct TestNode {
    pub office: OfficeId,
    pub dir: PathBuf,
    pub addr: SocketAddr,
    handle: Option<NodeHandle>,
}

impl TestNode {
    pub fn paths(&self) -> Paths {
        Paths::new(&self.dir)
    }

    pub fn is_running(&self) -> bool {
        self.handle.is_some()
    }

    pub async fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await.expect("node shuts down cleanly");
        }
    }

    /// Starts the node again on the same data directory and address.
    pub async fn restart(&mut self) {
        self.stop().await;
        let addr = self.addr;
        let listener = eventually(
            Duration::from_secs(10),
            "the node's port to be free",
            || async move { tokio::net::TcpListener::bind(addr).await.ok() },
        )
        .await;
        self.handle = Some(
            node::start(&self.dir, listener)
                .await
                .expect("node restarts"),
        );
    }

    /// Changes the node's `casemesh.toml` and restarts it.
    pub async fn configure(&mut self, change: impl FnOnce(&mut casemesh::config::Config)) {
        let path = self.paths().config();
        let mut config = casemesh::config::Config::load(&path).expect("config loads");
        change(&mut config);
        std::fs::write(&path, config.to_toml()).expect("config written");
        self.restart().await;
    }

    /// This node's own certificate and key, as it presents them to peers.
    pub fn node_identity(&self) -> (Vec<u8>, Vec<u8>) {
        let p = self.paths();
        (
            std::fs::read(p.node_cert()).unwrap(),
            std::fs::read(p.node_key()).unwrap(),
        )
    }

    pub fn endpoint(&self) -> NodeAddr {
        NodeAddr {
            host: "127.0.0.1".into(),
            port: self.addr.port(),
        }
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.paths().office_ca()).expect("office CA readable")
    }

    /// A channel to this node presenting the given certificate and key.
    pub async fn connect_as(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<Channel, String> {
        let tls = client_config(
            &certs_from_pem(&self.ca_pem()).map_err(|e| e.to_string())?,
            PemIdentity::from_pem(cert_pem, key_pem).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        transport::connect(&self.endpoint(), Arc::new(tls))
            .await
            .map_err(|e| format!("{e:?}"))
    }

    /// A channel as the office's first admin.
    pub async fn admin_channel(&self) -> Channel {
        let p = self.paths();
        self.connect_as(
            &std::fs::read(p.admin_cert()).unwrap(),
            &std::fs::read(p.admin_key()).unwrap(),
        )
        .await
        .expect("admin connects")
    }

    pub async fn records(&self) -> RecordsClient<Channel> {
        RecordsClient::new(self.admin_channel().await)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    pub async fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.admin_channel().await)
    }
}

pub struct TestCluster {
    _root: TempDir,
    pub nodes: Vec<TestNode>,
}

impl TestCluster {
    /// Creates and starts one node per office id.
    pub async fn start(offices: &[&str]) -> Self {
        // Logs show with RUST_LOG=casemesh=debug and --nocapture.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
        let root = tempfile::tempdir().expect("temp dir");
        let mut nodes = Vec::new();
        for office in offices {
            let office = OfficeId::parse(office).expect("valid office id");
            let dir = root.path().join(office.as_str());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("local addr");
            casemesh::setup::init(&dir, &office, &[], addr).expect("init office");
            let handle = node::start(&dir, listener).await.expect("node starts");
            nodes.push(TestNode {
                office,
                dir,
                addr,
                handle: Some(handle),
            });
        }
        Self { _root: root, nodes }
    }

    pub fn node(&mut self, i: usize) -> &mut TestNode {
        &mut self.nodes[i]
    }

    pub async fn stop_all(&mut self) {
        for n in &mut self.nodes {
            n.stop().await;
        }
    }
}

/// Every record a node lists (all origins), as id → (version, collection).
pub async fn holdings(node: &TestNode) -> std::collections::BTreeMap<String, (u64, String)> {
    let mut c = node.records().await;
    let mut out = std::collections::BTreeMap::new();
    let mut token = String::new();
    loop {
        let page = c
            .list(casemesh::grpc::pb::ListRequest {
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        for r in page.records {
            out.insert(r.id, (r.version, r.collection));
        }
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

impl TestCluster {
    /// Pins every pair of nodes to each other.
    pub async fn pin_all(&mut self) {
        for i in 0..self.nodes.len() {
            for j in 0..self.nodes.len() {
                if i != j {
                    self.pin(i, j).await;
                }
            }
        }
    }

    /// Node `i` pins node `j`.
    pub async fn pin(&mut self, i: usize, j: usize) {
        let (office, endpoint, pem) = {
            let n = &self.nodes[j];
            (
                n.office.to_string(),
                n.endpoint().to_string(),
                String::from_utf8(n.ca_pem()).unwrap(),
            )
        };
        self.nodes[i]
            .admin()
            .await
            .add_peer(casemesh::grpc::pb::AddPeerRequest {
                office,
                endpoint,
                ca_certificate_pem: pem,
                expected_fingerprint: String::new(),
            })
            .await
            .expect("add peer");
    }

    /// Node `i` grants `collection` to node `j`; returns the grant id.
    pub async fn grant_collection(&mut self, i: usize, j: usize, collection: &str) -> String {
        let peer = self.nodes[j].office.to_string();
        self.nodes[i]
            .admin()
            .await
            .grant(casemesh::grpc::pb::GrantRequest {
                peer,
                target: Some(casemesh::grpc::pb::grant_request::Target::Collection(
                    collection.into(),
                )),
                expires_at_ms: 0,
            })
            .await
            .expect("grant")
            .into_inner()
            .id
    }
}
