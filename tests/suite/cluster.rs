//! `TestCluster`: N real nodes in this process, each with its own temporary
//! data directory, freshly generated certificates and an ephemeral loopback
//! port; nodes can be stopped and restarted on the same data and address.
//! For measures of one node's own memory, the nodes can instead run as
//! `casemesh serve` processes ([`TestCluster::start_processes`]).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use casemesh::config::Paths;
use casemesh::domain::NodeAddr;
use casemesh::domain::OfficeId;
use casemesh::identity::pki::certs_from_pem;
use casemesh::identity::tls::{PemIdentity, client_config};
use casemesh::node::{self, NodeHandle};
use casemesh::protocol::pb::{admin_client::AdminClient, records_client::RecordsClient};
use casemesh::protocol::transport;
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
    process: Option<NodeProcess>,
}

/// A node running as a `casemesh serve` process; killed if the test ends
/// without stopping it.
struct NodeProcess(std::process::Child);

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A field (`VmRSS:`, `VmHWM:`) of a process's /proc status, in KiB.
pub fn proc_kib(pid: &str, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

impl TestNode {
    pub fn paths(&self) -> Paths {
        Paths::new(&self.dir)
    }

    pub fn is_running(&self) -> bool {
        self.handle.is_some() || self.process.is_some()
    }

    /// The process id of a node started by [`TestCluster::start_processes`].
    pub fn pid(&self) -> String {
        let p = self.process.as_ref().expect("the node runs as a process");
        p.0.id().to_string()
    }

    pub async fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await.expect("node shuts down cleanly");
        }
        if let Some(mut p) = self.process.take() {
            let pid = p.0.id().to_string();
            let killed = std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .expect("run kill");
            assert!(killed.success(), "kill -TERM {pid}");
            let exited = eventually(Duration::from_secs(30), "the node process to exit", || {
                std::future::ready(p.0.try_wait().expect("wait for the node").map(Some))
            })
            .await;
            assert!(
                exited.is_some_and(|s| s.success()),
                "node exited badly: {exited:?}"
            );
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

/// Creates an office's data directory under `root`, with certificates and
/// a configuration listening on the returned loopback listener's port.
async fn init_office(
    root: &TempDir,
    office: &str,
) -> (OfficeId, PathBuf, tokio::net::TcpListener, SocketAddr) {
    let office = OfficeId::parse(office).expect("valid office id");
    let dir = root.path().join(office.as_str());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    casemesh::setup::init(&dir, &office, &[], addr).expect("init office");
    (office, dir, listener, addr)
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
            let (office, dir, listener, addr) = init_office(&root, office).await;
            let handle = node::start(&dir, listener).await.expect("node starts");
            nodes.push(TestNode {
                office,
                dir,
                addr,
                handle: Some(handle),
                process: None,
            });
        }
        Self { _root: root, nodes }
    }

    /// Like [`TestCluster::start`], but each node is a `casemesh serve`
    /// process of its own, so that its memory can be measured alone. They
    /// cannot be restarted.
    pub async fn start_processes(offices: &[&str]) -> Self {
        let root = tempfile::tempdir().expect("temp dir");
        let mut nodes = Vec::new();
        for office in offices {
            // The port is free once the listener is dropped; the process
            // binds it again from its configuration.
            let (office, dir, _, addr) = init_office(&root, office).await;
            let child = std::process::Command::new(env!("CARGO_BIN_EXE_casemesh"))
                .args(["serve", "--data"])
                .arg(&dir)
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("start casemesh serve");
            let node = TestNode {
                office,
                dir,
                addr,
                handle: None,
                process: Some(NodeProcess(child)),
            };
            let (cert, key) = (
                std::fs::read(node.paths().admin_cert()).expect("admin certificate"),
                std::fs::read(node.paths().admin_key()).expect("admin key"),
            );
            eventually(
                Duration::from_secs(30),
                "casemesh serve to answer",
                || async {
                    let channel = node.connect_as(&cert, &key).await.ok()?;
                    AdminClient::new(channel)
                        .status(casemesh::protocol::pb::StatusRequest {})
                        .await
                        .ok()
                },
            )
            .await;
            nodes.push(node);
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

/// Entries of `action` in `node`'s log.
pub async fn of_action(node: &TestNode, action: &str) -> Vec<casemesh::protocol::pb::AuditEntry> {
    node.admin()
        .await
        .query_audit(casemesh::protocol::pb::QueryAuditRequest {
            action: action.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries
}

/// Every record a node lists (all origins), as id → (version, collection).
pub async fn holdings(node: &TestNode) -> std::collections::BTreeMap<String, (u64, String)> {
    let mut c = node.records().await;
    let mut out = std::collections::BTreeMap::new();
    let mut token = String::new();
    loop {
        let page = c
            .list(casemesh::protocol::pb::ListRequest {
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
            .add_peer(casemesh::protocol::pb::AddPeerRequest {
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
            .grant(casemesh::protocol::pb::GrantRequest {
                peer,
                target: Some(casemesh::protocol::pb::grant_request::Target::Collection(
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
