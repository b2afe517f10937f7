//! Offices whose files live in an S3-compatible bucket (`[blobs.s3]`),
//! against a real S3 server (`s3s-fs` on loopback): what differs from the
//! file store — where the bytes go, resuming into it, removal from it, and
//! a large file replicated from an office on files to one on S3. Everything
//! else about attachments is the same code and is tested once, on files.

use std::time::Duration;

use casemesh::config::BlobStoreKind;
use casemesh::protocol::pb;

use super::bin::ok;
use super::blobkit::*;
use super::cluster::{TestCluster, TestNode, eventually};
use super::s3server::{BUCKET, S3Server};

/// The objects under `prefix`'s `blobs/` folder in the server's bucket, by
/// hash, with their sizes.
fn objects(server: &S3Server, prefix: &str) -> Vec<(String, u64)> {
    let dir = server.bucket_dir(BUCKET).join(prefix).join("blobs");
    let mut out: Vec<(String, u64)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            // s3s-fs keeps its own metadata beside each object.
            (name.len() == 64).then(|| (name, e.metadata().map(|m| m.len()).unwrap_or(0)))
        })
        .collect();
    out.sort();
    out
}

async fn on_s3(node: &mut TestNode, server: &S3Server) {
    let office = node.office.to_string();
    let s3 = server.config(Some(&office));
    node.configure(|cfg| {
        cfg.blobs.store = BlobStoreKind::S3;
        cfg.blobs.s3 = Some(s3);
    })
    .await;
}

async fn range(node: &TestNode, hash: &[u8], offset: u64, length: u64) -> Vec<u8> {
    let mut stream = node
        .records()
        .await
        .get_blob(pb::GetBlobRequest {
            hash: hash.to_vec().into(),
            offset,
            length,
        })
        .await
        .expect("get blob")
        .into_inner();
    let mut out = Vec::new();
    while let Some(piece) = stream.message().await.expect("a piece") {
        out.extend_from_slice(&piece.data);
    }
    out
}

/// Bytes `offset..offset + length` of the made-up file `seed`.
fn expected(seed: &str, size: u64, offset: u64, length: u64) -> Vec<u8> {
    let all: Vec<u8> = pieces(seed, size).flatten().collect();
    all[offset as usize..(offset + length) as usize].to_vec()
}

/// An office on S3: its uploads become objects (the same bytes twice, one
/// object), read back whole and by ranges, survive a restart, pass a scrub
/// through the binary, and nothing is left staged on its disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_an_office_keeps_its_files_in_the_bucket() {
    let Some(server) = S3Server::start_or_skip("s3_an_office_keeps_its_files_in_the_bucket") else {
        return;
    };
    let mut c = TestCluster::start(&["phila-da"]).await;
    on_s3(c.node(0), &server).await;
    let size = 20 * MIB + 123;
    let first = upload(&c.nodes[0], "scene video", size).await.unwrap();
    let again = upload(&c.nodes[0], "scene video", size).await.unwrap();
    assert_eq!(first.hash, again.hash);
    put_with(&c.nodes[0], "case-1", vec![attachment(&first, "scene.mp4")]).await;
    let hex = hex::encode(&first.hash);
    assert_eq!(objects(&server, "phila-da"), vec![(hex.clone(), size)]);
    assert!(stored_files(&c.nodes[0]).is_empty(), "nothing in blobs/");
    assert!(staged_files(&c.nodes[0]).is_empty());
    let s = status(&c.nodes[0]).await;
    assert!(
        s.blob_store.starts_with("s3://evidence/phila-da"),
        "{}",
        s.blob_store
    );

    c.node(0).restart().await;
    let mut records = c.nodes[0].records().await;
    assert_eq!(
        download(&mut records, &first.hash).await.unwrap(),
        (hash_of("scene video", size), size)
    );
    for (offset, length) in [(0, 1), (8 * MIB - 5, 10), (size - 7, 7)] {
        assert_eq!(
            range(&c.nodes[0], &first.hash, offset, length).await,
            expected("scene video", size, offset, length),
            "{offset}+{length}"
        );
    }
    let data = c.nodes[0].dir.display().to_string();
    let scrubbed = ok(&["blob", "scrub", "--data", &data]);
    assert!(
        scrubbed.contains("checked 1 files") && scrubbed.contains("all intact"),
        "{scrubbed}"
    );
    c.stop_all().await;
}

/// 256 MiB from an office on the file store to one on S3: the fetch is
/// staged locally, resumes after a restart of the receiving node, and ends
/// as one object in the bucket; when the grant is revoked the object goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_a_large_file_replicates_from_files_to_s3_resuming_and_goes_when_revoked() {
    let Some(server) = S3Server::start_or_skip(
        "s3_a_large_file_replicates_from_files_to_s3_resuming_and_goes_when_revoked",
    ) else {
        return;
    };
    const SIZE: u64 = 256 * MIB;
    let mut c = two_offices().await;
    on_s3(c.node(1), &server).await;
    c.node(1)
        .configure(|cfg| cfg.blobs.fetch_bytes_per_sec = 64 * MIB)
        .await;
    let grant = c.grant_collection(0, 1, "case-9").await;
    let info = upload(&c.nodes[0], "bodycam", SIZE).await.unwrap();
    let id = put_with(&c.nodes[0], "case-9", vec![attachment(&info, "cam.mp4")]).await;

    let part = transfer_where(&c.nodes[1], "32 MiB at the peer", |t| {
        t.received >= 32 * MIB
    })
    .await;
    c.node(1).restart().await;
    resumes_from(&c.nodes[1], &part).await;
    wait_present(&c.nodes[1], &id, Duration::from_secs(180)).await;
    let hex = hex::encode(&info.hash);
    assert_eq!(objects(&server, "minn-da"), vec![(hex.clone(), SIZE)]);
    assert!(stored_files(&c.nodes[1]).is_empty() && staged_files(&c.nodes[1]).is_empty());
    let mut remote = c.nodes[1].records().await;
    assert_eq!(
        download(&mut remote, &info.hash).await.unwrap(),
        (hash_of("bodycam", SIZE), SIZE)
    );

    c.nodes[0]
        .admin()
        .await
        .revoke(pb::RevokeRequest { grant_id: grant })
        .await
        .expect("revoke");
    eventually(Duration::from_secs(60), "the object removed", || async {
        objects(&server, "minn-da").is_empty().then_some(())
    })
    .await;
    assert_eq!(status(&c.nodes[1]).await.blobs, 0);
    c.stop_all().await;
}

/// `casemesh blob move`, as `docs/operating.md` tells an admin to use it:
/// refused while the node runs; on the stopped node, every file copied into
/// the bucket (again: nothing left to copy); the node started on S3 serves
/// them and scrubs clean; and the same way back to files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_blob_move_takes_an_office_from_files_to_s3_and_back() {
    let Some(server) =
        S3Server::start_or_skip("s3_blob_move_takes_an_office_from_files_to_s3_and_back")
    else {
        return;
    };
    let mut c = TestCluster::start(&["phila-da"]).await;
    let s3 = server.config(Some("phila-da"));
    c.node(0).configure(|cfg| cfg.blobs.s3 = Some(s3)).await;
    let a = upload(&c.nodes[0], "interview", 9 * MIB).await.unwrap();
    let b = upload(&c.nodes[0], "photo", 300_000).await.unwrap();
    put_with(
        &c.nodes[0],
        "case-1",
        vec![attachment(&a, "i.mp4"), attachment(&b, "p.jpg")],
    )
    .await;
    let data = c.nodes[0].dir.display().to_string();
    let running = super::bin::fails(2, &["blob", "move", "--to", "s3", "--data", &data]);
    assert!(running.contains("the node is running"), "{running}");

    c.node(0).stop().await;
    let moved = ok(&["blob", "move", "--to", "s3", "--data", &data]);
    assert!(moved.contains("copied 2 files"), "{moved}");
    let again = super::bin::json(&["blob", "move", "--to", "s3", "--data", &data, "--json"]);
    assert_eq!(
        (again["copied"].as_u64(), again["already"].as_u64()),
        (Some(0), Some(2)),
        "{again}"
    );
    let shape: std::collections::BTreeSet<String> =
        super::cli_json::documented_shapes()["blob move"]
            .iter()
            .cloned()
            .collect();
    assert_eq!(
        super::cli_json::keys(&again),
        shape,
        "docs/cli.md's shape of blob move"
    );
    let mut listed = vec![
        (hex::encode(&a.hash), 9 * MIB),
        (hex::encode(&b.hash), 300_000),
    ];
    listed.sort();
    assert_eq!(objects(&server, "phila-da"), listed);

    // The admin switches the store, starts the node, and removes the old
    // copies once satisfied.
    c.node(0)
        .configure(|cfg| cfg.blobs.store = BlobStoreKind::S3)
        .await;
    std::fs::remove_dir_all(c.nodes[0].paths().blobs()).unwrap();
    let mut records = c.nodes[0].records().await;
    assert_eq!(
        download(&mut records, &a.hash).await.unwrap().0,
        hash_of("interview", 9 * MIB)
    );
    assert_eq!(
        download(&mut records, &b.hash).await.unwrap().0,
        hash_of("photo", 300_000)
    );
    let scrubbed = ok(&["blob", "scrub", "--data", &data]);
    assert!(
        scrubbed.contains("checked 2 files") && scrubbed.contains("all intact"),
        "{scrubbed}"
    );

    // And back.
    c.node(0).stop().await;
    let back = ok(&["blob", "move", "--to", "files", "--data", &data]);
    assert!(back.contains("copied 2 files"), "{back}");
    c.node(0)
        .configure(|cfg| cfg.blobs.store = BlobStoreKind::Files)
        .await;
    assert_eq!(stored_files(&c.nodes[0]), listed);
    let mut records = c.nodes[0].records().await;
    assert_eq!(
        download(&mut records, &a.hash).await.unwrap().0,
        hash_of("interview", 9 * MIB)
    );
    c.stop_all().await;
}
