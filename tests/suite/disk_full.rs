//! A full disk: the data directory on a small tmpfs the test mounts (the
//! test says it is skipped where mounting is not permitted), filled by
//! another file until the node's writes are refused.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use casemesh::protocol::pb;
use tempfile::TempDir;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::blobkit::{status, upload};
use super::cluster::{TestCluster, TestNode, audit_intact, eventually};

const MIB: u64 = 1 << 20;

/// A tmpfs of a given size, unmounted when dropped.
struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    /// Mounts one, or says why not (no permission to mount, most often).
    fn mount(size_mib: u64) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("mount could not run: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn free(&self) -> u64 {
        let s = rustix::fs::statvfs(self.path()).unwrap();
        s.f_bavail * s.f_frsize
    }

    /// Writes a file of zeros until at most `leave` bytes are free (or the
    /// disk is full); returns its path.
    fn fill(&self, leave: u64) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 256 * 1024];
        while self.free() > leave {
            let take = (self.free() - leave).min(block.len() as u64) as usize;
            match file.write_all(&block[..take]) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling the disk: {e}"),
            }
            file.sync_all().unwrap();
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// The tmpfs, or `None` after saying the test is skipped.
fn tmpfs_or_skip(size_mib: u64, test: &str) -> Option<Tmpfs> {
    match Tmpfs::mount(size_mib) {
        Ok(t) => Some(t),
        Err(why) => {
            assert!(
                std::env::var_os("CASEMESH_REQUIRE_TMPFS").is_none(),
                "{test}: cannot mount a tmpfs ({why})"
            );
            eprintln!("SKIPPED {test}: cannot mount a tmpfs here ({why})");
            None
        }
    }
}

async fn put(node: &TestNode, title: &str) -> Result<String, tonic::Status> {
    node.records()
        .await
        .put(pb::PutRequest {
            collection: "case-1".into(),
            kind: "note".into(),
            title: title.into(),
            body: vec![7u8; 16 * 1024].into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().id)
}

/// Waits (bounded) until `node`'s health check answers `wanted`.
async fn health_becomes(node: &TestNode, wanted: ServingStatus) {
    eventually(
        Duration::from_secs(10),
        &format!("health to say {wanted:?}"),
        || async { (health(node).await == wanted).then_some(()) },
    )
    .await;
}

async fn health(node: &TestNode) -> ServingStatus {
    let reply = HealthClient::new(node.admin_channel().await)
        .check(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    ServingStatus::try_from(reply.status).unwrap()
}

/// Below the reserve, writes are refused with RESOURCE_EXHAUSTED and a
/// message; reads go on; status and health say why; once space is freed,
/// writes are accepted again.
#[tokio::test]
async fn writes_are_refused_below_the_reserve_and_accepted_once_space_is_freed() {
    let test = "writes_are_refused_below_the_reserve_and_accepted_once_space_is_freed";
    let Some(disk) = tmpfs_or_skip(128, test) else {
        return;
    };
    let mut cluster = TestCluster::start_in(disk.path(), &["phila-da"]).await;
    cluster.nodes[0]
        .configure(|c| c.store.min_free_mb = 16)
        .await;
    let node = &cluster.nodes[0];
    let before = put(node, "before the disk filled").await.unwrap();
    assert_eq!(health(node).await, ServingStatus::Serving, "control");

    // Another program takes the disk down to 8 MiB above the reserve; the
    // node's own files take it the rest of the way.
    let filler = disk.fill(24 * MIB);
    let mut uploaded = 0;
    // A refused upload's staged bytes are removed at once, leaving the
    // disk less than one file above the reserve.
    let refused = loop {
        assert!(uploaded < 64, "64 MiB uploaded past the reserve");
        match upload(node, &format!("fill-{uploaded}"), MIB).await {
            Ok(_) => uploaded += 1,
            Err(status) => break status,
        }
    };
    assert!(
        uploaded > 0,
        "control: files were accepted above the reserve"
    );
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("kept in reserve (store.min_free_mb)"),
        "{refused:?}"
    );
    assert!(
        disk.free() < 17 * MIB,
        "within one file of the reserve: {}",
        disk.free()
    );
    // The other program writes on, below the reserve.
    let below = disk.path().join("more");
    std::fs::write(&below, vec![0u8; MIB as usize]).unwrap();
    let put_refused = put(node, "below the reserve").await.unwrap_err();
    assert_eq!(
        put_refused.code(),
        Code::ResourceExhausted,
        "{put_refused:?}"
    );

    // Reads go on.
    let got = node
        .records()
        .await
        .get(pb::GetRequest {
            id: before.clone(),
            version: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.title, "before the disk filled");
    let s = status(node).await;
    assert!(s.writes_refused.contains("kept in reserve"), "{s:?}");
    assert!(s.disk_free_bytes.unwrap() < 16 * MIB, "{s:?}");
    assert_eq!(s.disk_reserve_bytes, 16 * MIB);
    health_becomes(node, ServingStatus::NotServing).await;

    std::fs::remove_file(filler).unwrap();
    std::fs::remove_file(below).unwrap();
    let after = put(node, "after space was freed").await.unwrap();
    health_becomes(node, ServingStatus::Serving).await;
    assert!(status(node).await.writes_refused.is_empty());
    let listed = node
        .records()
        .await
        .list(pb::ListRequest::default())
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = listed.records.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&before) && ids.contains(&after));
    audit_intact(node.kit()).await;
    cluster.stop_all().await;
}

/// With no reserve the disk fills under the store: the failing write is
/// refused (UNAVAILABLE, saying the store failed), writes stay refused, and
/// a restart once space is freed brings every acknowledged record back.
#[tokio::test]
async fn a_store_that_fails_on_a_full_disk_loses_nothing_acknowledged_after_a_restart() {
    let test = "a_store_that_fails_on_a_full_disk_loses_nothing_acknowledged_after_a_restart";
    let Some(disk) = tmpfs_or_skip(128, test) else {
        return;
    };
    let mut cluster = TestCluster::start_in(disk.path(), &["phila-da"]).await;
    cluster.nodes[0]
        .configure(|c| {
            c.store.min_free_mb = 0;
            let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
            c.metrics.listen = Some(any);
            c.status_page.listen = Some(any);
        })
        .await;
    let node = &cluster.nodes[0];
    let filler = disk.fill(4 * MIB);
    let mut acknowledged = Vec::new();
    let failed = loop {
        assert!(acknowledged.len() < 5000, "80 MiB of records fit in 4 MiB");
        match put(node, &format!("record {}", acknowledged.len())).await {
            Ok(id) => acknowledged.push(id),
            Err(status) => break status,
        }
    };
    assert!(!acknowledged.is_empty(), "control: writes went in first");
    assert_eq!(failed.code(), Code::Unavailable, "{failed:?}");
    assert!(failed.message().contains("the store failed"), "{failed:?}");
    let again = put(node, "after the failure").await.unwrap_err();
    assert_eq!(again.code(), Code::Unavailable, "{again:?}");
    // A call whose audit entry cannot be written is not answered; it says
    // why instead, and the health check (which is not logged) says so too.
    let status_refused = node
        .admin()
        .await
        .status(pb::StatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(status_refused.code(), Code::Unavailable);
    assert!(
        status_refused.message().contains("restarted"),
        "{status_refused:?}"
    );
    health_becomes(node, ServingStatus::NotServing).await;
    // The web listeners agree: /healthz says not serving, and the status
    // page, whose view cannot be logged, is not shown.
    let (code, body) = super::webkit::http_get(node.metrics_addr(), "/healthz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.starts_with("not serving: "), "{body}");
    // As a container's health check runs it: exit 1, and why.
    let addr = node.metrics_addr().to_string();
    let said = tokio::task::spawn_blocking(move || {
        super::bin::fails(1, &["healthcheck", "--addr", &addr])
    })
    .await
    .unwrap();
    assert!(
        said.contains("not serving: ") && said.contains("(HTTP 503)"),
        "{said}"
    );
    let paths = node.paths();
    let admin = (
        std::fs::read(paths.admin_cert()).unwrap(),
        std::fs::read(paths.admin_key()).unwrap(),
    );
    let (code, body) = super::webkit::https_get(
        node.status_page_addr(),
        "/",
        Some((&admin.0, &admin.1)),
        &node.ca_pem(),
    )
    .await
    .unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("the audit log could not be written, so the page is not shown"),
        "{body}"
    );

    // The documented recovery: free space, restart.
    std::fs::remove_file(filler).unwrap();
    let node = &mut cluster.nodes[0];
    node.restart().await;
    let held = super::cluster::holdings(node).await;
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|id| !held.contains_key(*id))
        .collect();
    assert!(lost.is_empty(), "{} acknowledged records lost", lost.len());
    audit_intact(node.kit()).await;
    put(node, "after the restart").await.unwrap();
    assert!(status(node).await.writes_refused.is_empty());
    cluster.stop_all().await;
}
