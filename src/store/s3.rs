//! Attachment bytes in an S3-compatible object store (AWS S3, MinIO, Ceph,
//! Garage, s3s-fs): the [`BlobStore`] that keeps each blob as one object,
//! `<prefix>blobs/<hex hash>`, in a bucket this node may read and write.
//!
//! It owns the bucket's `blobs/` folder under its prefix and nothing else:
//! it never creates or deletes buckets, and ignores (with a warning) keys
//! there that are not blob hashes. What is known about blobs lives in sled,
//! never here (see [`crate::domain::blobstore`]).
//!
//! A big file goes up as a multipart upload, which S3 shows whole or not
//! at all. One that fails is aborted; one cut short by a crash stays in
//! the bucket, invisible, until the bucket's lifecycle rule
//! (`AbortIncompleteMultipartUpload`) clears it.
//!
//! Credentials come from a file named in the config or from the
//! environment, never from the config itself, and no message ever holds the
//! secret. Only ring does TLS and request signing: aws-lc-rs is not built.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{
    ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart,
};
use tokio::io::AsyncReadExt;
use tokio_stream::StreamExt;

pub use crate::config::S3Config;
use crate::domain::BlobHash;
use crate::domain::blobstore::{BlobResult, BlobStore, BlobStoreError, BoxFuture};

/// Parts of a multipart upload are at least this big (S3 wants 5 MiB but
/// for the last).
const PART_BYTES: usize = 8 << 20;
/// S3 accepts at most this many parts in one upload; a bigger file gets
/// bigger parts.
const MAX_PARTS: u64 = 10_000;
/// Parts uploading at once. An adoption holds at most this many parts and
/// one more being read, whatever the size of the file.
const PARTS_IN_FLIGHT: usize = 2;

/// The access key of one S3 user.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// For temporary credentials only.
    pub session_token: Option<String>,
}

/// Never shows the secret or the token.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Reads a credentials file in the format of AWS's own
    /// (`~/.aws/credentials`) with one profile:
    ///
    /// ```text
    /// [default]                       # optional
    /// aws_access_key_id = AKIA…
    /// aws_secret_access_key = …
    /// aws_session_token = …           # optional
    /// ```
    ///
    /// Blank lines and lines starting with `#` or `;` are skipped. Errors
    /// name the file, the line and the key, never a value.
    pub fn from_file(path: &Path) -> Result<Self, BlobStoreError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            BlobStoreError::Failed(format!(
                "cannot read the S3 credentials file {}: {e}",
                path.display()
            ))
        })?;
        Self::parse(&text).map_err(|why| {
            BlobStoreError::Failed(format!(
                "the S3 credentials file {} is not usable: {why}",
                path.display()
            ))
        })
    }

    /// The credentials in `text` (see [`Credentials::from_file`]), or what
    /// is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (mut id, mut secret, mut token) = (None, None, None);
        for (n, line) in text.lines().enumerate() {
            let n = n + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if line.starts_with('[') {
                if line == "[default]" {
                    continue;
                }
                return Err(format!(
                    "line {n}: only one profile, [default], is read from this file"
                ));
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(format!("line {n} is not `key = value`"));
            };
            let (key, value) = (key.trim(), value.trim());
            let slot = match key {
                "aws_access_key_id" => &mut id,
                "aws_secret_access_key" => &mut secret,
                "aws_session_token" => &mut token,
                _ => {
                    return Err(format!(
                        "line {n}: unknown key {key:?} (expected aws_access_key_id, aws_secret_access_key, aws_session_token)"
                    ));
                }
            };
            if value.is_empty() {
                return Err(format!("line {n}: {key} is empty"));
            }
            if slot.replace(value.to_owned()).is_some() {
                return Err(format!("line {n}: {key} is given twice"));
            }
        }
        match (id, secret) {
            (Some(access_key_id), Some(secret_access_key)) => Ok(Self {
                access_key_id,
                secret_access_key,
                session_token: token,
            }),
            (None, _) => Err("aws_access_key_id is missing".to_owned()),
            (_, None) => Err("aws_secret_access_key is missing".to_owned()),
        }
    }

    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`
    /// from the environment.
    pub fn from_env() -> Result<Self, BlobStoreError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(access_key_id), Some(secret_access_key)) => Ok(Self {
                access_key_id,
                secret_access_key,
                session_token: var("AWS_SESSION_TOKEN"),
            }),
            (id, _) => Err(BlobStoreError::Failed(format!(
                "no S3 credentials: the config names no credentials_file, and {} is not set in the environment",
                if id.is_none() {
                    "AWS_ACCESS_KEY_ID"
                } else {
                    "AWS_SECRET_ACCESS_KEY"
                }
            ))),
        }
    }
}

/// Blobs as objects in an S3 bucket. Cheap to share: requests go through
/// one connection pool.
#[derive(Debug)]
pub struct S3Blobs {
    store: Arc<AmazonS3>,
    bucket: String,
    /// The endpoint, or `AWS <region>`: for messages.
    server: String,
    /// `s3://bucket/prefix/blobs at <server>`, for messages.
    place: String,
    /// The folder of blob objects: `<prefix>/blobs`.
    dir: Key,
}

impl S3Blobs {
    /// Connects to the bucket of `config` and checks that it is there and
    /// that the credentials are accepted, by listing it.
    pub async fn open(config: &S3Config) -> Result<Self, BlobStoreError> {
        let failed = BlobStoreError::Failed;
        let (credentials, from) = match &config.credentials_file {
            Some(path) => (
                Credentials::from_file(path)?,
                format!("credentials file {}", path.display()),
            ),
            None => (Credentials::from_env()?, "environment".to_owned()),
        };
        let dir = blob_dir(config.prefix.as_deref()).map_err(failed)?;
        // `http://host:9000/` and `http://host:9000` are one server; the
        // slash would double in path-style URLs.
        let endpoint = config.endpoint.as_deref().map(|e| e.trim_end_matches('/'));
        let server = match endpoint {
            Some(endpoint) => endpoint.to_owned(),
            None => format!("AWS {}", config.region),
        };
        let place = format!("s3://{}/{dir} at {server}", config.bucket);
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_access_key_id(&credentials.access_key_id)
            .with_secret_access_key(&credentials.secret_access_key)
            .with_allow_http(config.allow_http)
            // One DELETE per blob: bulk deletion is a POST that not every
            // S3-compatible server takes.
            .with_disable_bulk_delete(true)
            .with_retry(RetryConfig {
                backoff: Default::default(),
                max_retries: 4,
                retry_timeout: Duration::from_secs(60),
            })
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(config.allow_http)
                    .with_connect_timeout(Duration::from_secs(5))
                    // Per read of the response, not for the whole request:
                    // a part of many MiB on a slow link is not a stall.
                    .with_timeout_disabled()
                    .with_read_timeout(Duration::from_secs(60)),
            );
        if let Some(token) = &credentials.session_token {
            builder = builder.with_token(token);
        }
        if let Some(endpoint) = endpoint {
            check_endpoint(endpoint, config.allow_http).map_err(failed)?;
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
        }
        ensure_tls_provider();
        let store = builder.build().map_err(|e| {
            failed(format!(
                "the S3 settings for {place} are not usable: {}",
                with_causes(&e)
            ))
        })?;
        let blobs = Self {
            store: Arc::new(store),
            bucket: config.bucket.clone(),
            server,
            place,
            dir,
        };
        blobs.check_reachable(&from).await?;
        Ok(blobs)
    }

    /// Lists one page of the blob folder: the bucket exists, the server
    /// answers, and it accepts the credentials.
    async fn check_reachable(&self, from: &str) -> Result<(), BlobStoreError> {
        let mut listing = self.store.list(Some(&self.dir));
        let Some(Err(e)) = listing.next().await else {
            return Ok(());
        };
        // object_store reports most failed listings as generic errors;
        // S3's own error code in the answer says which this is.
        let code = s3_error_code(&e.to_string());
        let why = with_causes(&e);
        Err(BlobStoreError::Failed(match (&e, code.as_deref()) {
            (object_store::Error::NotFound { .. }, _) | (_, Some("NoSuchBucket")) => format!(
                "bucket {:?} does not exist ({}); create it, or correct `bucket` (this node never creates buckets): {why}",
                self.bucket, self.place
            ),
            (
                object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. },
                _,
            )
            | (
                _,
                Some(
                    "AccessDenied"
                    | "InvalidAccessKeyId"
                    | "SignatureDoesNotMatch"
                    | "ExpiredToken"
                    | "InvalidToken",
                ),
            ) => format!(
                "the S3 server refused the access key from the {from} for {}: check the key and its secret, and that this user may list and write the bucket: {why}",
                self.place
            ),
            _ => format!("cannot use {}: listing it failed: {why}", self.place),
        }))
    }

    fn key(&self, hash: &BlobHash) -> Key {
        self.dir.clone().join(hash.to_hex())
    }

    /// A [`BlobStoreError::Failed`] naming what was being done to which
    /// blob's object, and why it failed.
    fn failed(&self, doing: &str, key: &Key, e: object_store::Error) -> BlobStoreError {
        BlobStoreError::Failed(format!(
            "{doing} s3://{}/{key} at {} failed: {}",
            self.bucket,
            self.server,
            with_causes(&e)
        ))
    }

    async fn adopt_file(&self, hash: &BlobHash, staged: &Path, size: u64) -> BlobResult<()> {
        let key = self.key(hash);
        let read_failed = |e: std::io::Error| {
            BlobStoreError::Failed(format!("reading staged file {}: {e}", staged.display()))
        };
        let mut file = tokio::fs::File::open(staged).await.map_err(read_failed)?;
        let on_disk = file.metadata().await.map_err(read_failed)?.len();
        if on_disk != size {
            return Err(BlobStoreError::Failed(format!(
                "staged file {} is {on_disk} bytes, not the {size} of blob {hash}",
                staged.display()
            )));
        }
        let part = part_bytes(size);
        if size <= part as u64 {
            let bytes = read_part(&mut file, part).await.map_err(read_failed)?;
            self.store
                .put(&key, PutPayload::from(bytes))
                .await
                .map_err(|e| self.failed("uploading", &key, e))?;
        } else {
            let upload = self
                .store
                .put_multipart(&key)
                .await
                .map_err(|e| self.failed("starting the upload of", &key, e))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, part);
            let sent = self
                .send_parts(&mut writer, &mut file, staged, part, &key)
                .await;
            if let Err(e) = sent {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(key = %key, error = %abort, "could not abort a failed multipart upload; the bucket's lifecycle rules must clear it");
                }
                return Err(e);
            }
            writer
                .finish()
                .await
                .map_err(|e| self.failed("uploading", &key, e))?;
        }
        drop(file);
        // The blob is stored: a staged file left behind is litter, not a
        // failed adoption.
        if let Err(e) = tokio::fs::remove_file(staged).await {
            tracing::warn!(file = %staged.display(), error = %e, "blob adopted, but its staged file could not be removed");
        }
        Ok(())
    }

    /// Reads `file` part by part into `writer`, at most
    /// [`PARTS_IN_FLIGHT`] parts uploading at once.
    async fn send_parts(
        &self,
        writer: &mut WriteMultipart,
        file: &mut tokio::fs::File,
        staged: &Path,
        part: usize,
        key: &Key,
    ) -> BlobResult<()> {
        loop {
            writer
                .wait_for_capacity(PARTS_IN_FLIGHT)
                .await
                .map_err(|e| self.failed("uploading a part of", key, e))?;
            let bytes = read_part(file, part).await.map_err(|e| {
                BlobStoreError::Failed(format!(
                    "reading staged file {} for {key}: {e}",
                    staged.display()
                ))
            })?;
            if bytes.is_empty() {
                return Ok(());
            }
            writer.put(bytes);
        }
    }

    async fn read_range(&self, hash: &BlobHash, offset: u64, len: usize) -> BlobResult<Bytes> {
        let key = self.key(hash);
        let not_found = |e: &object_store::Error| matches!(e, object_store::Error::NotFound { .. });
        if len > 0 {
            let end = offset.saturating_add(len as u64);
            match self.store.get_range(&key, offset..end).await {
                Ok(bytes) => return Ok(bytes),
                Err(e) if not_found(&e) => return Err(BlobStoreError::NotFound(*hash)),
                // Perhaps a range that starts at or past the end, which S3
                // refuses: the object's size tells.
                Err(e) => match self.store.head(&key).await {
                    Ok(meta) if meta.size <= offset => return Ok(Bytes::new()),
                    Err(e) if not_found(&e) => return Err(BlobStoreError::NotFound(*hash)),
                    _ => return Err(self.failed("reading", &key, e)),
                },
            }
        }
        match self.store.head(&key).await {
            Ok(_) => Ok(Bytes::new()),
            Err(e) if not_found(&e) => Err(BlobStoreError::NotFound(*hash)),
            Err(e) => Err(self.failed("reading", &key, e)),
        }
    }

    async fn list_blobs(&self) -> BlobResult<Vec<(BlobHash, u64)>> {
        let mut listing = self.store.list(Some(&self.dir));
        let mut blobs = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| self.failed("listing", &self.dir, e))?;
            match blob_of(&self.dir, &meta.location) {
                Some(hash) => blobs.push((hash, meta.size)),
                None => {
                    tracing::warn!(key = %meta.location, "skipping an object in the blob folder whose name is not a blob hash");
                }
            }
        }
        Ok(blobs)
    }
}

impl BlobStore for S3Blobs {
    fn describe(&self) -> String {
        self.place.clone()
    }

    /// Uploads the staged file: one PUT for a file of one part, else a
    /// multipart upload of 8 MiB parts (bigger where a file would need
    /// more than 10,000), which S3 makes visible whole or not at all. An
    /// object already there is overwritten, so adopting again repairs a
    /// damaged copy.
    fn adopt<'a>(
        &'a self,
        hash: &'a BlobHash,
        staged: &'a Path,
        size: u64,
    ) -> BoxFuture<'a, BlobResult<()>> {
        Box::pin(self.adopt_file(hash, staged, size))
    }

    /// One ranged GET. A range that starts at or past the blob's end gives
    /// no bytes (as reading a file there does), not an error.
    fn read<'a>(
        &'a self,
        hash: &'a BlobHash,
        offset: u64,
        len: usize,
    ) -> BoxFuture<'a, BlobResult<Bytes>> {
        Box::pin(self.read_range(hash, offset, len))
    }

    fn delete<'a>(&'a self, hash: &'a BlobHash) -> BoxFuture<'a, BlobResult<()>> {
        Box::pin(async move {
            let key = self.key(hash);
            match self.store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.failed("deleting", &key, e)),
            }
        })
    }

    fn list(&self) -> BoxFuture<'_, BlobResult<Vec<(BlobHash, u64)>>> {
        Box::pin(self.list_blobs())
    }
}

/// The folder of blob objects under `prefix`, or why the prefix cannot be
/// one.
fn blob_dir(prefix: Option<&str>) -> Result<Key, String> {
    let prefix = prefix.unwrap_or_default().trim_matches('/');
    if prefix.is_empty() {
        return Ok(Key::from("blobs"));
    }
    let parsed = Key::parse(prefix).map_err(|e| {
        format!(
            "the S3 prefix {prefix:?} is not a folder name (`office/` or `offices/minn-da/`): {e}"
        )
    })?;
    if parsed.parts().any(|p| matches!(p.as_ref(), "." | "..")) {
        return Err(format!(
            "the S3 prefix {prefix:?} may not hold `.` or `..` folders"
        ));
    }
    Ok(parsed.join("blobs"))
}

/// The hash a key in `dir` names: `dir/<64 lowercase hex digits>`, nothing
/// else.
fn blob_of(dir: &Key, key: &Key) -> Option<BlobHash> {
    let mut rest = key.prefix_match(dir)?;
    let name = rest.next()?;
    let name = name.as_ref();
    let hex_digit = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
    if rest.next().is_some() || name.len() != 64 || !name.bytes().all(hex_digit) {
        return None;
    }
    BlobHash::parse_hex(name).ok()
}

/// `e` and, after it, each cause its message leaves out (object_store's
/// says "error sending request" but not "connection refused").
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// The S3 error code (`NoSuchBucket`) in the text of a failed request's
/// answer, if it has one.
fn s3_error_code(text: &str) -> Option<String> {
    let (_, rest) = text.split_once("<Code>")?;
    let (code, _) = rest.split_once("</Code>")?;
    Some(code.trim().to_owned())
}

/// Checks that the endpoint is an `http(s)://host[:port]` URL, and that it
/// is https unless plain http was allowed.
fn check_endpoint(endpoint: &str, allow_http: bool) -> Result<(), String> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e| format!("the S3 endpoint {endpoint:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if allow_http => {}
        Some("http") => {
            return Err(format!(
                "the S3 endpoint {endpoint} is plain http, which would send every file unencrypted; use https, or set allow_http = true"
            ));
        }
        _ => {
            return Err(format!(
                "the S3 endpoint {endpoint:?} must start with https:// (or http://)"
            ));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("the S3 endpoint {endpoint:?} names no host"));
    }
    Ok(())
}

/// The part size for a file of `size` bytes: [`PART_BYTES`], or bigger
/// (whole MiB) to stay within [`MAX_PARTS`].
fn part_bytes(size: u64) -> usize {
    const MIB: u64 = 1 << 20;
    let needed = size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
    usize::try_from(needed).map_or(usize::MAX, |n| n.max(PART_BYTES))
}

/// Up to `part` bytes from `file`: fewer only at its end.
async fn read_part(file: &mut tokio::fs::File, part: usize) -> std::io::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(part);
    while buf.len() < part {
        if file.read_buf(&mut buf).await? == 0 {
            break;
        }
    }
    Ok(buf.freeze())
}

/// reqwest builds its TLS settings on rustls's process default provider
/// (this build compiles no other: ring, as the rest of casemesh uses), and
/// panics without one; install ring unless the process chose already.
fn ensure_tls_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // An error means another thread installed one first: as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credentials_file_gives_its_key_and_secret() {
        let parsed = Credentials::parse(
            "# casemesh's S3 user\n[default]\naws_access_key_id = AKIAEXAMPLE\n\n  aws_secret_access_key=s3cr3t/with=equals \n",
        )
        .unwrap();
        assert_eq!(parsed.access_key_id, "AKIAEXAMPLE");
        assert_eq!(parsed.secret_access_key, "s3cr3t/with=equals");
        assert_eq!(parsed.session_token, None);
        assert!(!format!("{parsed:?}").contains("s3cr3t"));
        let with_token = Credentials::parse(
            "aws_access_key_id = a\naws_secret_access_key = b\naws_session_token = t\n",
        )
        .unwrap();
        assert_eq!(with_token.session_token.as_deref(), Some("t"));
    }

    #[test]
    fn a_bad_credentials_file_is_refused_naming_the_line_not_the_secret() {
        for (text, expected) in [
            (
                "aws_access_key_id = a\n",
                "aws_secret_access_key is missing",
            ),
            (
                "aws_secret_access_key = hush\n",
                "aws_access_key_id is missing",
            ),
            (
                "aws_access_key_id = a\naws_secret_access_key =\n",
                "line 2: aws_secret_access_key is empty",
            ),
            (
                "aws_access_key_id = a\naws_secret_access_key: hush\n",
                "line 2 is not `key = value`",
            ),
            (
                "aws_access_key_id = a\naws_secret_key = hush\n",
                "line 2: unknown key \"aws_secret_key\"",
            ),
            (
                "aws_access_key_id = a\naws_access_key_id = b\n",
                "line 2: aws_access_key_id is given twice",
            ),
            (
                "[default]\naws_access_key_id = a\n[prod]\n",
                "line 3: only one profile",
            ),
        ] {
            let why = Credentials::parse(text).unwrap_err();
            assert!(why.contains(expected), "{text:?}: {why}");
            assert!(!why.contains("hush"), "{text:?}: {why}");
        }
    }

    #[test]
    fn an_unreadable_credentials_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s3-credentials");
        let e = Credentials::from_file(&path).unwrap_err().to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
        std::fs::write(&path, "aws_access_key_id = a\n").unwrap();
        let e = Credentials::from_file(&path).unwrap_err().to_string();
        assert!(
            e.contains(&path.display().to_string()) && e.contains("aws_secret_access_key"),
            "{e}"
        );
    }

    #[test]
    fn blob_keys_sit_in_the_prefix_folder_and_only_hashes_are_blobs() {
        let hash = BlobHash::of(b"x");
        for (prefix, dir) in [
            (None, "blobs"),
            (Some(""), "blobs"),
            (Some("minn-da/"), "minn-da/blobs"),
            (Some("/offices/minn-da"), "offices/minn-da/blobs"),
        ] {
            let dir_key = blob_dir(prefix).unwrap();
            assert_eq!(dir_key.as_ref(), dir);
            let key = dir_key.clone().join(hash.to_hex());
            assert_eq!(blob_of(&dir_key, &key), Some(hash));
        }
        assert!(blob_dir(Some("a//b")).is_err());
        assert!(blob_dir(Some("a/../b")).is_err());
        let dir = blob_dir(None).unwrap();
        for stray in [
            "blobs/notes.txt".to_owned(),
            format!("blobs/{}", hash.to_hex().to_uppercase()),
            format!("blobs/{}/x", hash.to_hex()),
            format!("blobs/{}0", hash.to_hex()),
        ] {
            assert_eq!(blob_of(&dir, &Key::from(stray.as_str())), None, "{stray}");
        }
    }

    #[test]
    fn s3_error_codes_are_read_from_the_answer() {
        assert_eq!(
            s3_error_code(
                "404 Not Found: <?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code></Error>"
            )
            .as_deref(),
            Some("NoSuchBucket")
        );
        assert_eq!(s3_error_code("connection refused"), None);
    }

    #[test]
    fn endpoints_must_be_https_unless_http_is_allowed() {
        assert!(check_endpoint("https://s3.example.org", false).is_ok());
        assert!(check_endpoint("http://127.0.0.1:9000", true).is_ok());
        let e = check_endpoint("http://127.0.0.1:9000", false).unwrap_err();
        assert!(e.contains("allow_http"), "{e}");
        assert!(check_endpoint("s3.example.org", true).is_err());
        assert!(check_endpoint("ftp://s3.example.org", true).is_err());
    }

    #[test]
    fn parts_grow_only_to_stay_within_ten_thousand() {
        assert_eq!(part_bytes(0), PART_BYTES);
        assert_eq!(part_bytes(64 << 30), PART_BYTES);
        let big = 200u64 << 30;
        let part = part_bytes(big) as u64;
        assert!(part > PART_BYTES as u64 && big.div_ceil(part) <= MAX_PARTS);
    }

    #[test]
    fn the_config_reads_from_toml_with_defaults_and_refuses_unknown_keys() {
        let config: S3Config = toml::from_str("bucket = \"evidence\"\n").unwrap();
        assert_eq!(config.region, "us-east-1");
        assert_eq!(config.endpoint, None);
        assert!(!config.allow_http);
        let e =
            toml::from_str::<S3Config>("bucket = \"b\"\nsecret_access_key = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        let back: S3Config = toml::from_str(&toml::to_string(&config).unwrap()).unwrap();
        assert_eq!(back, config);
    }
}
