//! Helpers for attachment tests: files made up on the fly (never held
//! whole), uploads, downloads, and what a node reports.

#![allow(dead_code)]

use std::time::Duration;

use casemesh::protocol::pb::{self, records_client::RecordsClient};
use tonic::transport::Channel;

use super::cluster::{TestCluster, TestNode, eventually};

pub const MIB: u64 = 1 << 20;
pub const PIECE: usize = 256 * 1024;

/// `size` bytes that never repeat, made from `seed`, in pieces: the test
/// never holds a whole file either.
pub fn pieces(seed: &str, size: u64) -> impl Iterator<Item = Vec<u8>> + Send + 'static {
    let mut xof = blake3::Hasher::new().update(seed.as_bytes()).finalize_xof();
    let mut left = size;
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let n = left.min(PIECE as u64) as usize;
        let mut buf = vec![0u8; n];
        xof.fill(&mut buf);
        left -= n as u64;
        Some(buf)
    })
}

pub fn hash_of(seed: &str, size: u64) -> Vec<u8> {
    let mut h = blake3::Hasher::new();
    for p in pieces(seed, size) {
        h.update(&p);
    }
    h.finalize().as_bytes().to_vec()
}

pub async fn upload(node: &TestNode, seed: &str, size: u64) -> Result<pb::BlobInfo, tonic::Status> {
    let stream =
        tokio_stream::iter(pieces(seed, size).map(|data| pb::PutBlobRequest { data: data.into() }));
    node.records()
        .await
        .put_blob(stream)
        .await
        .map(|r| r.into_inner())
}

/// Streams a whole blob back; returns its BLAKE3 hash and length.
pub async fn download(
    records: &mut RecordsClient<Channel>,
    hash: &[u8],
) -> Result<(Vec<u8>, u64), tonic::Status> {
    let mut stream = records
        .get_blob(pb::GetBlobRequest {
            hash: hash.to_vec().into(),
            offset: 0,
            length: 0,
        })
        .await?
        .into_inner();
    let mut h = blake3::Hasher::new();
    let mut n = 0u64;
    while let Some(piece) = stream.message().await? {
        assert_eq!(piece.offset, n, "pieces arrive in order");
        h.update(&piece.data);
        n += piece.data.len() as u64;
    }
    Ok((h.finalize().as_bytes().to_vec(), n))
}

pub fn attachment(info: &pb::BlobInfo, name: &str) -> pb::Attachment {
    pb::Attachment {
        hash: info.hash.clone(),
        file_name: name.into(),
        media_type: "video/mp4".into(),
        ..Default::default()
    }
}

pub async fn put_with(
    node: &TestNode,
    collection: &str,
    attachments: Vec<pb::Attachment>,
) -> String {
    node.records()
        .await
        .put(pb::PutRequest {
            collection: collection.into(),
            kind: "video".into(),
            title: "bodycam".into(),
            attachments,
            ..Default::default()
        })
        .await
        .expect("put with attachments")
        .into_inner()
        .id
}

/// The attachment's state and bytes present, as `node` reports them.
pub async fn attachment_state(node: &TestNode, id: &str) -> Option<(i32, u64)> {
    let r = node
        .records()
        .await
        .get(pb::GetRequest {
            id: id.into(),
            version: None,
        })
        .await
        .ok()?
        .into_inner();
    r.attachments.first().map(|a| (a.state, a.bytes_present))
}

pub async fn wait_present(node: &TestNode, id: &str, deadline: Duration) {
    eventually(
        deadline,
        "the attachment to be present at the peer",
        || async {
            let (state, _) = attachment_state(node, id).await?;
            (state == pb::AttachmentState::Present as i32).then_some(())
        },
    )
    .await;
}

pub async fn status(node: &TestNode) -> pb::StatusResponse {
    node.admin()
        .await
        .status(pb::StatusRequest {})
        .await
        .expect("status")
        .into_inner()
}

pub async fn two_offices() -> TestCluster {
    let mut c = TestCluster::start(&["phila-da", "minn-da"]).await;
    c.pin_all().await;
    c
}

/// The files in a node's blob store on disk (`<data dir>/blobs`), by hash,
/// with their sizes.
pub fn stored_files(node: &TestNode) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let root = node.paths().blobs();
    let Ok(first) = std::fs::read_dir(&root) else {
        return out;
    };
    for a in first.flatten() {
        for b in std::fs::read_dir(a.path()).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(b.path()).into_iter().flatten().flatten() {
                let size = f.metadata().map(|m| m.len()).unwrap_or(0);
                out.push((f.file_name().to_string_lossy().into_owned(), size));
            }
        }
    }
    out.sort();
    out
}

/// The names in a node's staging directory (bytes on their way in).
pub fn staged_files(node: &TestNode) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(node.paths().root.join("staging"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// Waits (bounded) for a transfer on `node` that `pick` accepts.
pub async fn transfer_where(
    node: &TestNode,
    what: &str,
    pick: impl Fn(&pb::Transfer) -> bool,
) -> pb::Transfer {
    eventually(Duration::from_secs(60), what, || async {
        status(node).await.transfers.into_iter().find(|t| pick(t))
    })
    .await
}

/// After a restart part-way through a fetch that had `part` received, the
/// fetch goes on from at least there, not from 0.
pub async fn resumes_from(node: &TestNode, part: &pb::Transfer) {
    let resumed = transfer_where(node, "the fetch to resume", |t| t.active).await;
    assert!(
        resumed.resumed_from >= part.received,
        "resumed at {} after {} had arrived",
        resumed.resumed_from,
        part.received
    );
}
