//! The default blob store: one file per blob under the data directory,
//! named by its hash and fanned out by the hash's first two bytes
//! (`blobs/65/04/6504…`), as Garage, Syncthing and iroh-blobs keep content.
//!
//! A blob arrives as a whole, fsynced staged file on the same filesystem
//! (see [`super::staging`]); adopting it is a rename into place followed by
//! an fsync of the directory, so after a crash the blob is either there
//! whole or not there at all.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::domain::BlobHash;
use crate::domain::blobstore::{BlobResult, BlobStore, BlobStoreError, BoxFuture};

/// Blobs as files under `root`.
#[derive(Debug, Clone)]
pub struct FileBlobs {
    root: PathBuf,
}

impl FileBlobs {
    /// Opens (creating if needed) the store at `root` (`<data dir>/blobs`).
    pub fn open(root: &Path) -> io::Result<Self> {
        super::staging::private_dir(root)?;
        Ok(Self {
            root: root.to_owned(),
        })
    }

    /// Where the blob `hash` is kept.
    pub fn path_of(&self, hash: &BlobHash) -> PathBuf {
        let hex = hash.to_hex();
        self.root.join(&hex[0..2]).join(&hex[2..4]).join(hex)
    }

    fn adopt_now(&self, hash: &BlobHash, staged: &Path, size: u64) -> io::Result<()> {
        let len = fs::metadata(staged)?.len();
        if len != size {
            return Err(io::Error::other(format!(
                "the staged file {} has {len} bytes, not {size}",
                staged.display()
            )));
        }
        let path = self.path_of(hash);
        let dir = path.parent().unwrap_or(&self.root);
        make_dirs(&self.root, dir)?;
        fs::rename(staged, &path)?;
        sync_dir(dir)?;
        if let Some(staging) = staged.parent() {
            sync_dir(staging)?;
        }
        Ok(())
    }

    fn read_now(&self, hash: &BlobHash, offset: u64, len: usize) -> BlobResult<Bytes> {
        let file = File::open(self.path_of(hash)).map_err(|e| self.failed(hash, e))?;
        let size = file.metadata().map_err(|e| self.failed(hash, e))?.len();
        let want = (size.saturating_sub(offset)).min(len as u64) as usize;
        let mut buf = vec![0u8; want];
        file.read_exact_at(&mut buf, offset)
            .map_err(|e| self.failed(hash, e))?;
        Ok(Bytes::from(buf))
    }

    fn delete_now(&self, hash: &BlobHash) -> io::Result<()> {
        let path = self.path_of(hash);
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(path.parent().unwrap_or(&self.root)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn list_now(&self) -> io::Result<Vec<(BlobHash, u64)>> {
        let mut out = Vec::new();
        for first in read_dir_if_any(&self.root)? {
            for second in read_dir_if_any(&first)? {
                for file in read_dir_if_any(&second)? {
                    let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
                    match name.as_deref().map(BlobHash::parse_hex) {
                        Some(Ok(hash)) if self.path_of(&hash) == file => {
                            out.push((hash, fs::metadata(&file)?.len()));
                        }
                        _ => {
                            tracing::warn!(path = %file.display(), "a file in the blob store that is not a blob; left alone")
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    fn failed(&self, hash: &BlobHash, e: io::Error) -> BlobStoreError {
        match e.kind() {
            io::ErrorKind::NotFound => BlobStoreError::NotFound(*hash),
            io::ErrorKind::UnexpectedEof => BlobStoreError::Failed(format!(
                "{} is shorter than its listed size",
                self.path_of(hash).display()
            )),
            _ => io_failed(&self.path_of(hash), e),
        }
    }
}

impl BlobStore for FileBlobs {
    fn describe(&self) -> String {
        format!("files in {}", self.root.display())
    }

    fn on_local_disk(&self) -> bool {
        true
    }

    fn adopt<'a>(
        &'a self,
        hash: &'a BlobHash,
        staged: &'a Path,
        size: u64,
    ) -> BoxFuture<'a, BlobResult<()>> {
        let this = self.clone();
        let (hash, staged) = (*hash, staged.to_owned());
        Box::pin(blocking(move || {
            this.adopt_now(&hash, &staged, size)
                .map_err(|e| io_failed(&staged, e))
        }))
    }

    fn read<'a>(
        &'a self,
        hash: &'a BlobHash,
        offset: u64,
        len: usize,
    ) -> BoxFuture<'a, BlobResult<Bytes>> {
        let this = self.clone();
        let hash = *hash;
        Box::pin(blocking(move || this.read_now(&hash, offset, len)))
    }

    fn delete<'a>(&'a self, hash: &'a BlobHash) -> BoxFuture<'a, BlobResult<()>> {
        let this = self.clone();
        let hash = *hash;
        Box::pin(blocking(move || {
            this.delete_now(&hash)
                .map_err(|e| io_failed(&this.path_of(&hash), e))
        }))
    }

    fn list(&self) -> BoxFuture<'_, BlobResult<Vec<(BlobHash, u64)>>> {
        let this = self.clone();
        Box::pin(blocking(move || {
            this.list_now().map_err(|e| io_failed(&this.root, e))
        }))
    }
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> BlobResult<T> + Send + 'static,
) -> BlobResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| BlobStoreError::Failed(format!("file work failed to run: {e}")))?
}

fn io_failed(path: &Path, e: io::Error) -> BlobStoreError {
    let text = format!("{}: {e}", path.display());
    if e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) {
        BlobStoreError::Full(text)
    } else {
        BlobStoreError::Failed(text)
    }
}

/// Creates `dir` and any parents below `root`, fsyncing each parent that
/// gained an entry, so a new directory survives a crash.
fn make_dirs(root: &Path, dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| p.starts_with(root) && *p != dir) {
        make_dirs(root, parent)?;
        match super::staging::private_dir(dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        sync_dir(parent)?;
    }
    Ok(())
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The entries of `dir`; none when it is missing or not a directory (a
/// stray file, `lost+found` the node may not read).
fn read_dir_if_any(dir: &Path) -> io::Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    match fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.map(|e| e.path())).collect(),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            tracing::warn!(path = %dir.display(), "a directory in the blob store the node may not read; left alone");
            Ok(Vec::new())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::staging::Staging;

    #[tokio::test]
    async fn a_staged_file_becomes_a_blob_read_by_ranges_listed_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let staging = Staging::open(dir.path()).unwrap();
        let blobs = FileBlobs::open(&dir.path().join("blobs")).unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let mut f = staging.upload().unwrap();
        f.write(&data).unwrap();
        f.sync().unwrap();
        let hash = f.hash();
        let staged = f.keep();
        blobs
            .adopt(&hash, &staged, data.len() as u64)
            .await
            .unwrap();
        assert!(!staged.exists(), "the staged file moved");
        let hex = hash.to_hex();
        assert!(
            blobs
                .path_of(&hash)
                .ends_with(format!("{}/{}/{hex}", &hex[..2], &hex[2..4]))
        );

        assert_eq!(blobs.read(&hash, 0, 10).await.unwrap(), &data[..10]);
        assert_eq!(
            blobs.read(&hash, 99_990, 100).await.unwrap(),
            &data[99_990..]
        );
        assert!(blobs.read(&hash, 100_000, 10).await.unwrap().is_empty());
        assert_eq!(blobs.list().await.unwrap(), vec![(hash, 100_000)]);

        blobs.delete(&hash).await.unwrap();
        blobs.delete(&hash).await.unwrap();
        assert!(matches!(
            blobs.read(&hash, 0, 1).await,
            Err(BlobStoreError::NotFound(h)) if h == hash
        ));
        assert!(blobs.list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_staged_file_of_the_wrong_size_is_not_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let staging = Staging::open(dir.path()).unwrap();
        let blobs = FileBlobs::open(&dir.path().join("blobs")).unwrap();
        let mut f = staging.upload().unwrap();
        f.write(b"abc").unwrap();
        let hash = f.hash();
        let staged = f.keep();
        assert!(blobs.adopt(&hash, &staged, 4).await.is_err());
        assert!(blobs.list().await.unwrap().is_empty());
    }
}
