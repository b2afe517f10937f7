//! The evidence store: files kept whole on disk, found out when they
//! change, moved out of sled chunks written by earlier versions, and left
//! whole by a node killed at any moment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use casemesh::domain::{BlobHash, OfficeId};
use casemesh::protocol::pb;
use casemesh::store::disk::OnDisk;
use tonic::Code;

use super::bin::{casemesh, ok};
use super::blobkit::*;
use super::cluster::{TestNode, all_of_action, eventually};

const BIN: &str = env!("CARGO_BIN_EXE_casemesh");

/// Where a node keeps the file `hash` (the file store's layout).
fn file_path(node: &TestNode, hash: &[u8]) -> PathBuf {
    let hex = hex::encode(hash);
    node.paths()
        .blobs()
        .join(&hex[0..2])
        .join(&hex[2..4])
        .join(&hex)
}

/// Flips one byte in the middle of a stored file, as a failing disk might.
fn damage(path: &Path) {
    let mut bytes = std::fs::read(path).expect("the stored file");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(path, bytes).expect("write the damaged file");
}

fn data(node: &TestNode) -> String {
    node.dir.display().to_string()
}

/// `casemesh blob scrub` of a node that finds damage: exit status 1, the
/// report on stdout and the reason on stderr; returns both.
fn scrub_finds_damage(node: &TestNode) -> String {
    let out = casemesh(&["blob", "scrub", "--data", &data(node)]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{}: {text}", node.office);
    assert!(text.contains("stored files were damaged"), "{text}");
    text
}

/// Stored files and what sled lists agree: every file is listed, every
/// listed file is there at its size, and nothing is left staged.
async fn no_orphans(node: &TestNode) {
    let s = status(node).await;
    let files = stored_files(node);
    assert_eq!(files.len() as u64, s.blobs, "files {files:?} vs {s:?}");
    assert_eq!(files.iter().map(|(_, n)| n).sum::<u64>(), s.blob_bytes);
    let staged: Vec<_> = staged_files(node)
        .into_iter()
        .filter(|n| !n.starts_with("fetch-"))
        .collect();
    assert!(staged.is_empty(), "left staged: {staged:?}");
}

/// A changed file is never served as good; `casemesh blob scrub` finds it;
/// a replica's copy is fetched again from its origin, an own file is marked
/// (status and audit say so) until the original is uploaded again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_is_found_by_scrub_never_served_and_a_replica_fetched_again() {
    let mut c = two_offices().await;
    c.grant_collection(0, 1, "case-9").await;
    let info = upload(&c.nodes[0], "bodycam", 3 * MIB).await.unwrap();
    let id = put_with(&c.nodes[0], "case-9", vec![attachment(&info, "cam.mp4")]).await;
    wait_present(&c.nodes[1], &id, Duration::from_secs(30)).await;
    let intact = ok(&["blob", "scrub", "--data", &data(&c.nodes[1])]);
    assert!(
        intact.contains("checked 1 files") && intact.contains("all intact"),
        "{intact}"
    );

    damage(&file_path(&c.nodes[0], &info.hash));
    damage(&file_path(&c.nodes[1], &info.hash));

    // The replica: scrub finds it and it comes again from its origin...
    // which finds its own copy damaged when reading it for the peer.
    let out = scrub_finds_damage(&c.nodes[1]);
    assert!(out.contains("1 DAMAGED"), "{out}");
    assert!(out.contains("no longer hash to its name"), "{out}");
    assert!(out.contains("fetching again from phila-da"), "{out}");
    let pending = attachment_state(&c.nodes[1], &id).await.unwrap();
    assert_eq!(pending.0, pb::AttachmentState::Pending as i32);

    // The origin's own copy: a whole read fails instead of serving it.
    let mut local = c.nodes[0].records().await;
    let err = download(&mut local, &info.hash).await.unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
    assert!(err.message().contains("integrity check"), "{err:?}");
    let s = status(&c.nodes[0]).await;
    assert_eq!(s.damaged_files.len(), 1, "{s:?}");
    assert_eq!(s.damaged_files[0].hash, info.hash);
    let shown = super::bin::casemesh(&["status", "--data", &data(&c.nodes[0])]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&shown.stdout),
        String::from_utf8_lossy(&shown.stderr),
    );
    assert!(shown.status.success(), "{stderr}");
    assert!(stdout.contains("blob store:  files in "), "{stdout}");
    assert!(stderr.contains("failed its integrity check"), "{stderr}");
    let shown = super::bin::json(&["status", "--data", &data(&c.nodes[0]), "--json"]);
    let damaged = &shown["damaged_files"][0]["hash"];
    assert_eq!(damaged, &hex::encode(&info.hash), "{shown}");
    let again = scrub_finds_damage(&c.nodes[0]);
    assert!(again.contains("still marked damaged"), "{again}");
    let logged = all_of_action(c.nodes[0].kit(), "Node.BlobDamaged").await;
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(logged[0].detail.contains("marked damaged"), "{logged:?}");

    // The original uploaded again: served again, and the peer gets it.
    upload(&c.nodes[0], "bodycam", 3 * MIB).await.unwrap();
    assert!(status(&c.nodes[0]).await.damaged_files.is_empty());
    assert_eq!(
        download(&mut local, &info.hash).await.unwrap(),
        (hash_of("bodycam", 3 * MIB), 3 * MIB)
    );
    wait_present(&c.nodes[1], &id, Duration::from_secs(90)).await;
    let mut remote = c.nodes[1].records().await;
    assert_eq!(
        download(&mut remote, &info.hash).await.unwrap().0,
        hash_of("bodycam", 3 * MIB)
    );
    let logged = all_of_action(c.nodes[1].kit(), "Node.BlobDamaged").await;
    assert!(
        logged[0].detail.contains("fetching it again from phila-da"),
        "{logged:?}"
    );
    c.stop_all().await;
    no_orphans_stopped(&c.nodes[0]);
    no_orphans_stopped(&c.nodes[1]);
}

fn no_orphans_stopped(node: &TestNode) {
    assert!(staged_files(node).is_empty(), "{:?}", staged_files(node));
}

/// Rewrites a stopped node's file `hash` into sled chunks as the store kept
/// files before the blob store (or, with `fetch`, as a fetch that got that
/// far), and removes the file.
fn make_legacy(node: &TestNode, hash: &[u8], chunk: usize, fetch: Option<(&str, u64)>) {
    let path = file_path(node, hash);
    let bytes = std::fs::read(&path).expect("the stored file");
    let disk = OnDisk::open(&node.paths().store()).unwrap();
    let hash = BlobHash::from_slice(hash).unwrap();
    if fetch.is_some() {
        disk.remove_blob_entry(&hash).unwrap();
    }
    let fetch = fetch.map(|(o, n)| (OfficeId::parse(o).unwrap(), n));
    assert_eq!(disk.write_legacy_blob(&bytes, chunk, fetch).unwrap(), hash);
    disk.flush().unwrap();
    std::fs::remove_file(path).unwrap();
}

fn legacy_counts(node: &TestNode) -> (usize, usize) {
    OnDisk::open(&node.paths().store())
        .unwrap()
        .legacy_counts()
        .unwrap()
}

/// A data directory whose files are in sled chunks (as casemesh stored
/// them before the blob store): on start, a whole file moves into the blob
/// store and its chunks go; a fetch part-way resumes from the bytes it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_in_sled_chunks_move_to_the_blob_store_and_a_fetch_resumes() {
    let mut c = two_offices().await;
    c.grant_collection(0, 1, "case-9").await;
    let own = upload(&c.nodes[0], "statement", 5 * MIB).await.unwrap();
    let id = put_with(&c.nodes[0], "case-9", vec![attachment(&own, "s.pdf")]).await;
    wait_present(&c.nodes[1], &id, Duration::from_secs(30)).await;
    c.stop_all().await;
    // The origin's file: a whole blob in 2 KiB chunks. The peer's: a fetch
    // in 8 KiB chunks that had received 2 MiB.
    make_legacy(&c.nodes[0], &own.hash, 2048, None);
    make_legacy(&c.nodes[1], &own.hash, 8192, Some(("phila-da", 2 * MIB)));
    assert_eq!(legacy_counts(&c.nodes[0]), (1, 5 * 512));
    assert_eq!(legacy_counts(&c.nodes[1]), (0, 256));

    c.node(0).restart().await;
    c.node(1).restart().await;
    let mut local = c.nodes[0].records().await;
    assert_eq!(
        download(&mut local, &own.hash).await.unwrap(),
        (hash_of("statement", 5 * MIB), 5 * MIB)
    );
    wait_present(&c.nodes[1], &id, Duration::from_secs(60)).await;
    let mut remote = c.nodes[1].records().await;
    assert_eq!(
        download(&mut remote, &own.hash).await.unwrap().0,
        hash_of("statement", 5 * MIB)
    );
    // The peer asked for the rest only, from where its chunks ended.
    let asked = all_of_action(c.nodes[0].kit(), "Replication.FetchBlob").await;
    let from = format!("file {}, offset {}", hex::encode(&own.hash), 2 * MIB);
    assert!(asked.iter().any(|e| e.detail == from), "{asked:?}");
    no_orphans(&c.nodes[0]).await;
    no_orphans(&c.nodes[1]).await;
    c.stop_all().await;
    assert_eq!(legacy_counts(&c.nodes[0]), (0, 0));
    assert_eq!(legacy_counts(&c.nodes[1]), (0, 0));
}

/// `casemesh serve` killed with SIGKILL while a file is uploaded, while a
/// peer fetches one, and while it moves files out of sled chunks: each
/// time, started again on the same directory, it holds only whole, verified
/// files, nothing orphaned, and the fetch goes on from its bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_upload_mid_fetch_and_mid_migration_keeps_only_whole_files() {
    let bin = Path::new(BIN);
    let mut c = two_offices().await;
    c.node(1)
        .configure(|cfg| cfg.blobs.fetch_bytes_per_sec = 8 * MIB)
        .await;
    c.nodes[0]
        .kit_mut()
        .serve_process_in_place(bin)
        .await
        .unwrap();
    c.nodes[1]
        .kit_mut()
        .serve_process_in_place(bin)
        .await
        .unwrap();

    // 1. Mid-upload: the client is part-way through 32 MiB.
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::PutBlobRequest>(1);
    let mut records = c.nodes[0].records().await;
    let uploading = tokio::spawn(async move {
        records
            .put_blob(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    for data in pieces("cut short", 32 * MIB).take(40) {
        tx.send(pb::PutBlobRequest { data: data.into() })
            .await
            .unwrap();
    }
    eventually(Duration::from_secs(30), "bytes staged", || async {
        (!staged_files(&c.nodes[0]).is_empty()).then_some(())
    })
    .await;
    c.nodes[0].kit_mut().kill().unwrap();
    assert!(uploading.await.unwrap().is_err());
    drop(tx);
    c.nodes[0]
        .kit_mut()
        .serve_process_in_place(bin)
        .await
        .unwrap();
    no_orphans(&c.nodes[0]).await;
    assert_eq!(status(&c.nodes[0]).await.blobs, 0);

    // 2. Mid-fetch: the peer is killed with part of 40 MiB.
    c.grant_collection(0, 1, "case-9").await;
    let info = upload(&c.nodes[0], "video", 40 * MIB).await.unwrap();
    let id = put_with(&c.nodes[0], "case-9", vec![attachment(&info, "v.mp4")]).await;
    let part = transfer_where(&c.nodes[1], "8 MiB fetched", |t| t.received >= 8 * MIB).await;
    c.nodes[1].kit_mut().kill().unwrap();
    c.nodes[1]
        .kit_mut()
        .serve_process_in_place(bin)
        .await
        .unwrap();
    resumes_from(&c.nodes[1], &part).await;
    wait_present(&c.nodes[1], &id, Duration::from_secs(120)).await;
    no_orphans(&c.nodes[1]).await;
    let mut remote = c.nodes[1].records().await;
    assert_eq!(
        download(&mut remote, &info.hash).await.unwrap().0,
        hash_of("video", 40 * MIB)
    );

    // 3. Mid-migration: many files in sled chunks, killed as they move.
    let mut hashes = Vec::new();
    for i in 0..12 {
        let f = upload(&c.nodes[0], &format!("old-{i}"), 8 * MIB)
            .await
            .unwrap();
        put_with(&c.nodes[0], "case-old", vec![attachment(&f, "old.bin")]).await;
        hashes.push(f.hash);
    }
    c.nodes[0].kit_mut().stop().await.unwrap();
    for h in &hashes {
        make_legacy(&c.nodes[0], h, 2048, None);
    }
    let mut landed = false;
    for _ in 0..5 {
        // Start, and kill as soon as some (not all) files have moved.
        let start = {
            let office = c.nodes[0].kit_mut();
            office.serve_process_in_place(bin)
        };
        let killed = tokio::time::timeout(Duration::from_millis(300), start).await;
        c.nodes[0].kit_mut().kill().unwrap();
        let (legacy, _) = legacy_counts(&c.nodes[0]);
        eprintln!(
            "killed with {legacy} of 12 files still in chunks (started: {})",
            killed.is_ok()
        );
        if legacy == 0 {
            break;
        }
        landed |= legacy < 12;
    }
    c.nodes[0]
        .kit_mut()
        .serve_process_in_place(bin)
        .await
        .unwrap();
    let mut local = c.nodes[0].records().await;
    for (i, h) in hashes.iter().enumerate() {
        assert_eq!(
            download(&mut local, h).await.unwrap().0,
            hash_of(&format!("old-{i}"), 8 * MIB)
        );
    }
    no_orphans(&c.nodes[0]).await;
    assert!(landed, "no kill landed while files were moving");
    c.nodes[0].kit_mut().stop().await.unwrap();
    c.nodes[1].kit_mut().stop().await.unwrap();
    assert_eq!(legacy_counts(&c.nodes[0]), (0, 0));
}

/// A file store that is not there (a volume not mounted) is not taken for
/// every file damaged: the scrub stops and says so, nothing is marked, and
/// once the files are back all is well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrub_of_an_empty_store_stops_instead_of_marking_every_file() {
    let mut c = super::cluster::TestCluster::start(&["phila-da"]).await;
    let info = upload(&c.nodes[0], "report", MIB).await.unwrap();
    put_with(&c.nodes[0], "case-1", vec![attachment(&info, "r.pdf")]).await;
    c.node(0).stop().await;
    let blobs = c.nodes[0].paths().blobs();
    let aside = c.nodes[0].dir.join("blobs-unmounted");
    std::fs::rename(&blobs, &aside).unwrap();
    c.node(0).restart().await;

    let out = casemesh(&["blob", "scrub", "--data", &data(&c.nodes[0])]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("holds no files at all") && stderr.contains("mounted"),
        "{stderr}"
    );
    assert!(status(&c.nodes[0]).await.damaged_files.is_empty());

    c.node(0).stop().await;
    std::fs::remove_dir_all(&blobs).unwrap();
    std::fs::rename(&aside, &blobs).unwrap();
    c.node(0).restart().await;
    let scrubbed = ok(&["blob", "scrub", "--data", &data(&c.nodes[0])]);
    assert!(scrubbed.contains("all intact"), "{scrubbed}");
    c.stop_all().await;
}

/// `blob move` and `blob scrub` as an admin first meets them: their help,
/// and a move to S3 with no bucket named, refused before anything is read.
#[tokio::test]
async fn blob_move_without_a_bucket_is_refused_and_the_help_says_how() {
    let help = ok(&["blob", "move", "--help"]);
    assert!(
        help.contains("stopped node") && help.contains("--to"),
        "{help}"
    );
    let help = ok(&["blob", "scrub", "--help"]);
    assert!(
        help.contains("re-hash") || help.contains("Re-hash"),
        "{help}"
    );
    let mut c = super::cluster::TestCluster::start(&["phila-da"]).await;
    c.node(0).stop().await;
    let err = super::bin::fails(
        2,
        &["blob", "move", "--to", "s3", "--data", &data(&c.nodes[0])],
    );
    assert!(err.contains("no [blobs.s3] table"), "{err}");
    let err = super::bin::fails(
        2,
        &[
            "blob",
            "move",
            "--to",
            "files",
            "--data",
            &data(&c.nodes[0]),
        ],
    );
    assert!(err.contains("naming the bucket to copy from"), "{err}");
    let help = ok(&["status", "--help"]);
    assert!(help.contains("where its files"), "{help}");
    let err = super::bin::fails(
        2,
        &["blob", "move", "--to", "tape", "--data", &data(&c.nodes[0])],
    );
    assert!(err.contains("files") && err.contains("s3"), "{err}");
}
