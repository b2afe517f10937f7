//! The S3 blob store (`store::s3`) against a real S3 server (`s3s-fs`, see
//! [`super::s3server`]), through its `BlobStore` interface: what goes up
//! comes back, whole and by ranges; listing, re-adopting and deleting; and
//! the errors a person sees when the bucket or the key is wrong.

use std::path::{Path, PathBuf};

use casemesh::domain::BlobHash;
use casemesh::domain::blobstore::{BlobStore, BlobStoreError};
use casemesh::store::s3::{S3Blobs, S3Config};
use object_store::ObjectStoreExt;
use object_store::aws::AmazonS3Builder;

use super::s3server::{ACCESS_KEY, BUCKET, S3Server, SECRET_KEY};

const MIB: usize = 1 << 20;
/// The store's part size (8 MiB): a 20 MiB file goes up in three parts.
const PART: u64 = 8 << 20;

/// `len` bytes that no compressor or deduplicator could shorten.
fn random_bytes(len: usize, seed: &str) -> Vec<u8> {
    let mut out = vec![0; len];
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// Writes `bytes` to a staged file in `dir`, as the node does before
/// adopting; returns its path and hash.
fn stage(dir: &Path, bytes: &[u8]) -> (PathBuf, BlobHash) {
    let hash = BlobHash::of(bytes);
    let path = dir.join(format!("staged-{}", hash.to_hex()));
    std::fs::write(&path, bytes).unwrap();
    (path, hash)
}

/// Stages `bytes` and adopts them.
async fn put(blobs: &S3Blobs, bytes: &[u8]) -> BlobHash {
    let staging = tempfile::tempdir().unwrap();
    let (path, hash) = stage(staging.path(), bytes);
    blobs.adopt(&hash, &path, bytes.len() as u64).await.unwrap();
    assert!(!path.exists(), "the staged file is consumed");
    hash
}

async fn open(server: &S3Server, prefix: Option<&str>) -> S3Blobs {
    S3Blobs::open(&server.config(prefix)).await.unwrap()
}

/// The open error's message.
async fn refused(config: &S3Config) -> String {
    match S3Blobs::open(config).await {
        Ok(_) => panic!("{config:?} opened"),
        Err(e @ BlobStoreError::Failed(_)) => e.to_string(),
        Err(e) => panic!("refused with the wrong kind of error: {e:?}"),
    }
}

#[tokio::test]
async fn s3_a_large_file_goes_up_in_parts_and_reads_back_whole_and_by_ranges() {
    let test = "s3_a_large_file_goes_up_in_parts_and_reads_back_whole_and_by_ranges";
    let Some(server) = S3Server::start_or_skip(test) else {
        return;
    };
    let blobs = open(&server, Some("minn-da/")).await;
    assert!(blobs.describe().contains("s3://evidence/minn-da/blobs"));
    let bytes = random_bytes(20 * MIB, "large");
    let size = bytes.len() as u64;
    let hash = put(&blobs, &bytes).await;

    // Stored in parts: S3 marks a multipart object's ETag with their count.
    let key = format!("minn-da/blobs/{}", hash.to_hex());
    let raw = AmazonS3Builder::new()
        .with_endpoint(server.endpoint())
        .with_allow_http(true)
        .with_bucket_name(BUCKET)
        .with_region("us-east-1")
        .with_access_key_id(ACCESS_KEY)
        .with_secret_access_key(SECRET_KEY)
        .build()
        .unwrap();
    let meta = raw.head(&key.as_str().into()).await.unwrap();
    assert_eq!(meta.size, size);
    assert!(
        meta.e_tag.as_deref().is_some_and(|t| t.ends_with("-3\"")),
        "{:?}",
        meta.e_tag
    );

    let whole = blobs.read(&hash, 0, bytes.len()).await.unwrap();
    assert!(whole == bytes[..], "the whole blob reads back as written");
    let at = |offset: u64, len: usize| {
        let blobs = &blobs;
        async move { blobs.read(&hash, offset, len).await.unwrap() }
    };
    assert_eq!(at(0, 1).await, bytes[..1]);
    let across = (PART - 100) as usize;
    assert_eq!(at(PART - 100, 200).await, bytes[across..across + 200]);
    assert_eq!(at(size - 1, 1).await, bytes[bytes.len() - 1..]);
    // A range that runs past the end is cut at the end; one that starts
    // there or after gives nothing.
    assert_eq!(at(size - 10, 100).await, bytes[bytes.len() - 10..]);
    assert!(at(size, 10).await.is_empty());
    assert!(at(size + 1000, 10).await.is_empty());
    assert!(at(5, 0).await.is_empty());

    assert_eq!(blobs.list().await.unwrap(), vec![(hash, size)]);
}

#[tokio::test]
async fn s3_small_and_empty_files_go_up_in_one_put() {
    let test = "s3_small_and_empty_files_go_up_in_one_put";
    let Some(server) = S3Server::start_or_skip(test) else {
        return;
    };
    // An endpoint with a trailing slash is the same server.
    let mut config = server.config(None);
    config.endpoint = Some(server.endpoint() + "/");
    let blobs = S3Blobs::open(&config).await.unwrap();
    let small = random_bytes(100 * 1024, "small");
    let exactly_a_part = random_bytes(PART as usize, "one part");
    let mut expected = Vec::new();
    for bytes in [&small[..], &exactly_a_part[..], &[][..]] {
        let hash = put(&blobs, bytes).await;
        let len = bytes.len().max(1);
        assert!(blobs.read(&hash, 0, len).await.unwrap() == bytes);
        expected.push((hash, bytes.len() as u64));
    }
    let mut listed = blobs.list().await.unwrap();
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected);
    // The object is where the store's key layout says.
    let empty = BlobHash::of(b"");
    assert!(
        server
            .bucket_dir(BUCKET)
            .join("blobs")
            .join(empty.to_hex())
            .is_file()
    );
}

#[tokio::test]
async fn s3_adopting_a_stored_blob_again_keeps_one_object() {
    let test = "s3_adopting_a_stored_blob_again_keeps_one_object";
    let Some(server) = S3Server::start_or_skip(test) else {
        return;
    };
    let blobs = open(&server, Some("minn-da")).await;
    let bytes = random_bytes(9 * MIB, "twice");
    let first = put(&blobs, &bytes).await;
    let second = put(&blobs, &bytes).await;
    assert_eq!(first, second);
    assert_eq!(
        blobs.list().await.unwrap(),
        vec![(first, bytes.len() as u64)]
    );
    assert!(blobs.read(&first, 0, bytes.len()).await.unwrap() == bytes);
}

#[tokio::test]
async fn s3_a_deleted_blob_is_not_found_and_deleting_a_missing_one_is_fine() {
    let test = "s3_a_deleted_blob_is_not_found_and_deleting_a_missing_one_is_fine";
    let Some(server) = S3Server::start_or_skip(test) else {
        return;
    };
    let blobs = open(&server, None).await;
    let hash = put(&blobs, b"delete me").await;
    blobs.delete(&hash).await.unwrap();
    for (offset, len) in [(0, 9), (100, 1), (0, 0)] {
        match blobs.read(&hash, offset, len).await {
            Err(BlobStoreError::NotFound(h)) => assert_eq!(h, hash),
            other => panic!("read({offset}, {len}) of a deleted blob: {other:?}"),
        }
    }
    assert!(blobs.list().await.unwrap().is_empty());
    blobs.delete(&hash).await.unwrap();
    blobs.delete(&BlobHash::of(b"never stored")).await.unwrap();
}

#[tokio::test]
async fn s3_list_sees_only_hashes_under_its_own_prefix() {
    let test = "s3_list_sees_only_hashes_under_its_own_prefix";
    let Some(server) = S3Server::start_or_skip(test) else {
        return;
    };
    let minn = open(&server, Some("minn-da/")).await;
    let nyc = open(&server, Some("nyc-da/")).await;
    let ours = put(&minn, b"minneapolis").await;
    let theirs = put(&nyc, b"new york").await;
    // Litter in the blob folder, put there by hand: skipped, not an error.
    let folder = server.bucket_dir(BUCKET).join("minn-da/blobs");
    std::fs::write(folder.join("README.txt"), "not a blob").unwrap();
    std::fs::create_dir_all(folder.join(ours.to_hex() + ".d")).unwrap();
    std::fs::write(folder.join(ours.to_hex() + ".d/x"), "nested").unwrap();
    assert_eq!(minn.list().await.unwrap(), vec![(ours, 11)]);
    assert_eq!(nyc.list().await.unwrap(), vec![(theirs, 8)]);
    assert!(matches!(
        minn.read(&theirs, 0, 8).await,
        Err(BlobStoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn s3_wrong_credentials_are_refused_at_open_naming_where_they_came_from() {
    let test = "s3_wrong_credentials_are_refused_at_open_naming_where_they_came_from";
    let Some(server) = S3Server::start_or_skip(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wrong-credentials");
    std::fs::write(
        &file,
        format!("aws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = not-the-secret\n"),
    )
    .unwrap();
    let mut config = server.config(None);
    config.credentials_file = Some(file.clone());
    let e = refused(&config).await;
    assert!(
        e.contains("refused the access key")
            && e.contains(&file.display().to_string())
            && e.contains(BUCKET),
        "{e}"
    );
    assert!(!e.contains("not-the-secret"), "{e}");

    config.credentials_file = Some(dir.path().join("absent"));
    let e = refused(&config).await;
    assert!(
        e.contains("cannot read the S3 credentials file") && e.contains("absent"),
        "{e}"
    );
}

#[tokio::test]
async fn s3_a_bucket_that_does_not_exist_is_refused_at_open() {
    let test = "s3_a_bucket_that_does_not_exist_is_refused_at_open";
    let Some(server) = S3Server::start_or_skip(test) else {
        return;
    };
    let mut config = server.config(None);
    config.bucket = "no-such-bucket".into();
    let e = refused(&config).await;
    assert!(
        e.contains("bucket \"no-such-bucket\" does not exist") && e.contains("never creates"),
        "{e}"
    );
}

#[tokio::test]
async fn s3_an_endpoint_where_nothing_listens_is_refused_at_open() {
    let test = "s3_an_endpoint_where_nothing_listens_is_refused_at_open";
    let Some(server) = S3Server::start_or_skip(test) else {
        return;
    };
    let port = {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        free.local_addr().unwrap().port()
    };
    let mut config = server.config(None);
    config.endpoint = Some(format!("http://127.0.0.1:{port}"));
    let started = std::time::Instant::now();
    let e = refused(&config).await;
    assert!(
        e.contains("listing it failed")
            && e.contains(&port.to_string())
            && e.contains("Connection refused"),
        "{e}"
    );
    // A few quick retries, not minutes of them.
    assert!(started.elapsed().as_secs() < 20, "{:?}", started.elapsed());
    config.allow_http = false;
    config.endpoint = Some(server.endpoint());
    let e = refused(&config).await;
    assert!(e.contains("allow_http"), "{e}");
}
