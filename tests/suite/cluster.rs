//! `TestCluster`: N offices of [`casemesh::cluster`], each node in this
//! process (or, for measures of one node's own memory, a `casemesh serve`
//! process: [`TestCluster::start_processes`]), with the conveniences tests
//! want: calls that fail the test instead of returning errors, and
//! `eventually`, the only way tests wait.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use casemesh::cluster::Office;
use casemesh::config::Paths;
use casemesh::domain::{NodeAddr, OfficeId};
use casemesh::protocol::pb::{self, admin_client::AdminClient, records_client::RecordsClient};
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
        // A check that hangs (a node that stopped answering) counts
        // against the same deadline.
        let left = deadline.saturating_sub(start.elapsed());
        if let Ok(Some(v)) = tokio::time::timeout(left, check()).await {
            return v;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// A field (`VmRSS:`, `VmHWM:`) of a process's /proc status, in KiB.
pub fn proc_kib(pid: &str, field: &str) -> u64 {
    let pid: u32 = pid.parse().expect("a process id");
    casemesh::cluster::proc_kib(pid, field).expect("the process's status")
}

/// One office of a test cluster: [`Office`], with calls that fail the test.
pub struct TestNode {
    pub office: OfficeId,
    pub dir: PathBuf,
    pub addr: SocketAddr,
    inner: Office,
}

impl TestNode {
    fn new(inner: Office) -> Self {
        Self {
            office: inner.office.clone(),
            dir: inner.dir.clone(),
            addr: inner.addr,
            inner,
        }
    }

    /// The kit's office, for its typed calls.
    pub fn kit(&self) -> &Office {
        &self.inner
    }

    /// The kit's office, to run it as a process, kill it, and so on.
    pub fn kit_mut(&mut self) -> &mut Office {
        &mut self.inner
    }

    pub fn paths(&self) -> Paths {
        self.inner.paths()
    }

    pub fn is_running(&self) -> bool {
        self.inner.is_running()
    }

    /// The process id of a node started by [`TestCluster::start_processes`].
    pub fn pid(&self) -> String {
        self.inner
            .pid()
            .expect("the node runs as a process")
            .to_string()
    }

    pub async fn stop(&mut self) {
        self.inner.stop().await.expect("node stops cleanly");
    }

    /// Starts the node again on the same data directory and address.
    pub async fn restart(&mut self) {
        self.inner.restart().await.expect("node restarts");
    }

    /// Changes the node's `casemesh.toml` and restarts it.
    pub async fn configure(&mut self, change: impl FnOnce(&mut casemesh::config::Config)) {
        self.inner
            .configure(change)
            .await
            .expect("node restarts with the new configuration");
    }

    /// Where this node serves `/metrics`, if configured.
    pub fn metrics_addr(&self) -> std::net::SocketAddr {
        self.inner.web_addrs().0.expect("the node serves /metrics")
    }

    /// Where this node serves its status page, if configured.
    pub fn status_page_addr(&self) -> std::net::SocketAddr {
        self.inner
            .web_addrs()
            .1
            .expect("the node serves its status page")
    }

    /// This node's own certificate and key, as it presents them to peers.
    pub fn node_identity(&self) -> (Vec<u8>, Vec<u8>) {
        self.inner
            .node_identity()
            .expect("node certificate and key")
    }

    pub fn endpoint(&self) -> NodeAddr {
        self.inner.endpoint()
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        self.inner.ca_pem().expect("office CA readable")
    }

    /// A channel to this node presenting the given certificate and key; the
    /// error as text, for tests that expect a refusal.
    pub async fn connect_as(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<Channel, String> {
        self.inner
            .connect_as(cert_pem, key_pem)
            .await
            .map_err(|e| format!("{e:?}"))
    }

    /// A channel as the office's first admin.
    pub async fn admin_channel(&self) -> Channel {
        self.inner.admin_channel().await.expect("admin connects")
    }

    pub async fn records(&self) -> RecordsClient<Channel> {
        self.inner.records().await.expect("admin connects")
    }

    pub async fn admin(&self) -> AdminClient<Channel> {
        self.inner.admin().await.expect("admin connects")
    }

    /// This node's link to `office`, as `ListPeers` reports it.
    pub async fn link(&self, office: &str) -> pb::Peer {
        self.admin()
            .await
            .list_peers(pb::ListPeersRequest {})
            .await
            .expect("ListPeers")
            .into_inner()
            .peers
            .into_iter()
            .find(|p| p.office == office)
            .expect("the office is pinned")
    }

    /// Issues a user through the node's Admin service; returns its
    /// certificate and key (PEM).
    pub async fn issue_user(&self, name: &str, role: pb::Role) -> (Vec<u8>, Vec<u8>) {
        let (key_pem, csr) = casemesh::identity::pki::new_csr().expect("a key and CSR");
        let issued = self
            .admin()
            .await
            .issue_user(pb::IssueUserRequest {
                name: name.into(),
                role: role as i32,
                csr_der: csr.into(),
            })
            .await
            .unwrap()
            .into_inner();
        (issued.certificate_pem.into_bytes(), key_pem.into_bytes())
    }
}

pub struct TestCluster {
    _root: TempDir,
    pub nodes: Vec<TestNode>,
}

impl TestCluster {
    /// Creates and starts one node per office id, in this process.
    pub async fn start(offices: &[&str]) -> Self {
        Self::start_in(&std::env::temp_dir(), offices).await
    }

    /// [`TestCluster::start`], with the data directories under `parent`
    /// (a small filesystem, say).
    pub async fn start_in(parent: &Path, offices: &[&str]) -> Self {
        // Logs show with RUST_LOG=casemesh=debug and --nocapture.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
        let root = tempfile::tempdir_in(parent).expect("temp dir");
        let mut nodes = Vec::new();
        for office in offices {
            let started = Office::start(root.path(), office)
                .await
                .expect("node starts");
            nodes.push(TestNode::new(started));
        }
        Self { _root: root, nodes }
    }

    /// Like [`TestCluster::start`], but each node is a `casemesh serve`
    /// process of its own, so that its memory can be measured alone. They
    /// cannot be restarted.
    pub async fn start_processes(offices: &[&str]) -> Self {
        let root = tempfile::tempdir().expect("temp dir");
        let bin = Path::new(env!("CARGO_BIN_EXE_casemesh"));
        let mut nodes = Vec::new();
        for office in offices {
            let started = Office::start_process(root.path(), office, bin)
                .await
                .expect("casemesh serve starts and answers");
            nodes.push(TestNode::new(started));
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
        self.nodes[i]
            .inner
            .pin(&self.nodes[j].inner)
            .await
            .expect("add peer");
    }

    /// Node `i` grants `collection` to node `j`; returns the grant id.
    pub async fn grant_collection(&mut self, i: usize, j: usize, collection: &str) -> String {
        let peer = self.nodes[j].office.clone();
        self.nodes[i]
            .inner
            .grant_collection(&peer, collection)
            .await
            .expect("grant")
            .id
    }
}

/// Entries of `action` in `node`'s log.
pub async fn of_action(node: &TestNode, action: &str) -> Vec<pb::AuditEntry> {
    node.admin()
        .await
        .query_audit(pb::QueryAuditRequest {
            action: action.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries
}

/// Every entry of `action` in `office`'s log, all pages, oldest first.
pub async fn all_of_action(office: &Office, action: &str) -> Vec<pb::AuditEntry> {
    let mut admin = office.admin().await.expect("admin connects");
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = admin
            .query_audit(pb::QueryAuditRequest {
                action: action.into(),
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        out.extend(page.entries);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

/// Every (record, version) named by `action` entries of `office`'s log, in
/// order, repeats included.
pub async fn audited(office: &Office, action: &str) -> Vec<(String, u64)> {
    all_of_action(office, action)
        .await
        .into_iter()
        .flat_map(|e| e.records.into_iter().map(|r| (r.record_id, r.version)))
        .collect()
}

/// Fails the test unless `office`'s whole audit log verifies.
pub async fn audit_intact(office: &Office) {
    let verified = office
        .admin()
        .await
        .expect("admin connects")
        .verify_audit(pb::VerifyAuditRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        verified.intact,
        "{}'s audit log: entry {}: {}",
        office.office, verified.fault_seq, verified.fault
    );
}

/// Every record a node lists (all origins), as id → (version, collection).
pub async fn holdings(node: &TestNode) -> std::collections::BTreeMap<String, (u64, String)> {
    node.inner.holdings().await.expect("list")
}
