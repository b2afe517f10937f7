//! Bytes on their way to becoming a blob: an upload, a fetch from a peer,
//! or a blob being moved out of sled. Each is a file in the staging
//! directory, hashed as it is written, fsynced, and handed to the blob
//! store only once its hash is known (an upload) or checked (a fetch).
//!
//! Names say what a file is, so a start can tidy up after a crash without
//! looking at anything else: `upload-<random>` and `migrate-<hash>` are
//! never resumed and are removed; `fetch-<hash>` is resumed from its length
//! if its fetch is still queued, and removed otherwise.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::domain::BlobHash;

/// Bytes hashed per read when a fetch resumes.
const REHASH_BUFFER: usize = 1 << 20;

/// The staging directory (`<data dir>/staging`).
#[derive(Debug, Clone)]
pub struct Staging {
    dir: PathBuf,
}

/// What kind of staged file a name belongs to.
#[derive(Debug, PartialEq, Eq)]
pub enum StagedName {
    Upload,
    Migrate,
    Fetch(BlobHash),
    /// Not a name this code writes.
    Other,
}

impl StagedName {
    pub fn parse(name: &str) -> Self {
        if name.starts_with("upload-") {
            return Self::Upload;
        }
        if name.starts_with("migrate-") {
            return Self::Migrate;
        }
        match name.strip_prefix("fetch-").map(BlobHash::parse_hex) {
            Some(Ok(hash)) => Self::Fetch(hash),
            _ => Self::Other,
        }
    }
}

/// A staged file being written: its bytes so far and their running hash.
pub struct StagedFile {
    file: File,
    path: PathBuf,
    hasher: blake3::Hasher,
    len: u64,
    /// Removed on drop unless [`StagedFile::keep`] was called.
    keep: bool,
}

impl Staging {
    /// Opens (creating if needed) the staging directory under `data_dir`.
    pub fn open(data_dir: &Path) -> io::Result<Self> {
        let dir = data_dir.join("staging");
        private_dir(&dir)?;
        Ok(Self { dir })
    }

    /// A new, empty file for an upload; removed when dropped unfinished.
    pub fn upload(&self) -> io::Result<StagedFile> {
        let mut id = [0u8; 12];
        crate::domain::random_bytes(&mut id);
        StagedFile::create(self.dir.join(format!("upload-{}", hex::encode(id))), false)
    }

    /// A new, empty file for moving a blob out of sled.
    pub fn migrate(&self, hash: &BlobHash) -> io::Result<StagedFile> {
        StagedFile::create(self.dir.join(format!("migrate-{hash}")), false)
    }

    pub fn fetch_path(&self, hash: &BlobHash) -> PathBuf {
        self.dir.join(format!("fetch-{hash}"))
    }

    /// The file of a fetch, opened where it stopped: the bytes already
    /// there are read back and hashed, so the transfer goes on from them
    /// and the whole is checked at the end. Kept when dropped (a later
    /// attempt resumes it). `at_most` bytes are kept; anything past that
    /// is cut (a file cannot be longer than its listed size).
    pub fn resume_fetch(&self, hash: &BlobHash, at_most: u64) -> io::Result<StagedFile> {
        let path = self.fetch_path(hash);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let mut len = file.metadata()?.len();
        if len > at_most {
            file.set_len(at_most)?;
            len = at_most;
        }
        let mut hasher = blake3::Hasher::new();
        file.seek(SeekFrom::Start(0))?;
        let mut buf = vec![0u8; REHASH_BUFFER];
        let mut left = len;
        while left > 0 {
            let want = (buf.len() as u64).min(left) as usize;
            let n = file.read(&mut buf[..want])?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            left -= n as u64;
        }
        Ok(StagedFile {
            file,
            path,
            hasher,
            len: len - left,
            keep: true,
        })
    }

    /// Bytes of `hash` already fetched (0 when none).
    pub fn fetched(&self, hash: &BlobHash) -> u64 {
        fs::metadata(self.fetch_path(hash)).map_or(0, |m| m.len())
    }

    /// Removes the staged bytes of a fetch (it is no longer wanted, or they
    /// did not check out).
    pub fn drop_fetch(&self, hash: &BlobHash) -> io::Result<()> {
        remove_if_there(&self.fetch_path(hash))
    }

    /// Every file in the staging directory, with what its name says it is.
    pub fn entries(&self) -> io::Result<Vec<(PathBuf, StagedName)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let kind = StagedName::parse(&name.to_string_lossy());
            out.push((entry.path(), kind));
        }
        Ok(out)
    }
}

impl StagedFile {
    fn create(path: PathBuf, keep: bool) -> io::Result<Self> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        Ok(Self {
            file,
            path,
            hasher: blake3::Hasher::new(),
            len: 0,
            keep,
        })
    }

    /// Appends bytes and hashes them.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        self.hasher.update(data);
        self.len += data.len() as u64;
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The hash of the bytes written so far.
    pub fn hash(&self) -> BlobHash {
        BlobHash(*self.hasher.finalize().as_bytes())
    }

    /// Makes the bytes durable (blocking: call off the async threads).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    /// Empties the file, to start again from its first byte.
    pub fn restart(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.hasher = blake3::Hasher::new();
        self.len = 0;
        Ok(())
    }

    /// Whether a later attempt resumes from this file (a fetch's), rather
    /// than it being removed when dropped (an upload's).
    pub fn resumable(&self) -> bool {
        self.keep
    }

    /// Keeps the file on drop: it is someone else's to move or remove now
    /// (the blob store adopts it).
    pub fn keep(mut self) -> PathBuf {
        self.keep = true;
        std::mem::take(&mut self.path)
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.keep {
            if let Err(e) = remove_if_there(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove a staged file; it is removed at the next start");
            }
        }
    }
}

/// Creates `dir` (and missing parents) readable by the node's user only,
/// as the rest of the data directory.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

pub fn remove_if_there(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_fetch_hashes_what_was_there_and_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let staging = Staging::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let hash = BlobHash::of(&data);
        {
            let mut f = staging.resume_fetch(&hash, data.len() as u64).unwrap();
            f.write(&data[..1_234_567]).unwrap();
        }
        assert_eq!(staging.fetched(&hash), 1_234_567);
        let mut f = staging.resume_fetch(&hash, data.len() as u64).unwrap();
        assert_eq!(f.len(), 1_234_567);
        f.write(&data[1_234_567..]).unwrap();
        assert_eq!(f.hash(), hash);
        drop(f);
        // Longer than the file can be: cut to its size.
        let mut f = staging.resume_fetch(&hash, 1000).unwrap();
        assert_eq!(f.len(), 1000);
        f.restart().unwrap();
        assert!(f.is_empty());
        staging.drop_fetch(&hash).unwrap();
        assert_eq!(staging.fetched(&hash), 0);
    }

    #[test]
    fn an_unfinished_upload_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let staging = Staging::open(dir.path()).unwrap();
        let mut up = staging.upload().unwrap();
        up.write(b"half a video").unwrap();
        assert_eq!(staging.entries().unwrap().len(), 1);
        drop(up);
        assert!(staging.entries().unwrap().is_empty());
    }

    #[test]
    fn names_say_what_a_staged_file_is() {
        let hash = BlobHash([7; 32]);
        assert_eq!(
            StagedName::parse(&format!("fetch-{hash}")),
            StagedName::Fetch(hash)
        );
        assert_eq!(StagedName::parse("upload-00ff"), StagedName::Upload);
        assert_eq!(
            StagedName::parse(&format!("migrate-{hash}")),
            StagedName::Migrate
        );
        assert_eq!(StagedName::parse("fetch-nothex"), StagedName::Other);
        assert_eq!(StagedName::parse("notes.txt"), StagedName::Other);
    }
}
