//! The verifier's first pass over a bundle: where each member lies in the
//! archive, its size and hashes, and none of its bytes.
//!
//! The checks then read a member again by its place, one at a time
//! ([`Members::load`]), or stream it ([`Members::reread`]), so memory holds
//! this index and at most a few members of at most [`MAX_MEMBER`] bytes
//! each, whatever the archive holds or declares. Files and the audit
//! digests are only ever streamed. Nothing here may trust a size or a name
//! the archive declares before it is checked against a limit.

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom};

use super::hashing::Hashing;
use super::layout::*;

/// The input is not a readable bundle at all. Anything wrong inside a
/// readable bundle is a failure in the [`super::Report`] instead.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read the bundle as a tar archive: {0}")]
    Read(#[source] io::Error),
    #[error("not a casemesh bundle: {0}")]
    NotABundle(String),
}

/// Every member under [`ROOT`] by its path relative to it, and the archive
/// to read them again from.
pub(super) struct Members<R> {
    reader: R,
    index: BTreeMap<String, Member>,
}

/// One member as indexed.
pub(super) struct Member {
    /// Where its bytes start in the archive.
    at: u64,
    /// As declared in its header, and as read when it was read whole.
    pub(super) size: u64,
    /// `None`: refused unread, being larger than [`MAX_MEMBER`] (a failure
    /// says so).
    pub(super) sha256: Option<[u8; 32]>,
    /// BLAKE3 of the bytes, for members under `files/`.
    pub(super) blake3: Option<[u8; 32]>,
}

impl<R: Read + Seek> Members<R> {
    /// Indexes every member in one pass. Damage that stops the archive
    /// from being read further is a failure; only an archive with nothing
    /// readable under [`ROOT`] is an error.
    pub(super) fn read(mut reader: R, failures: &mut Vec<String>) -> Result<Self, BundleError> {
        let index = index(&mut reader, failures)?;
        if index.is_empty() {
            return Err(BundleError::NotABundle(format!(
                "the archive holds nothing under {ROOT}"
            )));
        }
        Ok(Self { reader, index })
    }

    pub(super) fn get(&self, path: &str) -> Option<&Member> {
        self.index.get(path)
    }

    pub(super) fn paths(&self) -> impl Iterator<Item = &String> {
        self.index.keys()
    }

    /// The paths under `prefix`, in order.
    pub(super) fn paths_under(&self, prefix: &str) -> Vec<String> {
        self.index
            .keys()
            .filter(|p| p.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// A member's bytes, read again and checked against the index: `None`
    /// if it is absent or was refused unread. Only for members of at most
    /// [`MAX_MEMBER`] bytes, which is every member the index did not refuse
    /// but files and the audit digests; those are [`Members::reread`].
    pub(super) fn load(&mut self, path: &str) -> Result<Option<Vec<u8>>, String> {
        let Some(size) = self.index.get(path).map(|m| m.size) else {
            return Ok(None);
        };
        if size > MAX_MEMBER {
            return Ok(None);
        }
        let Some(mut reread) = self.reread(path)? else {
            return Ok(None);
        };
        // `size` is within MAX_MEMBER, so this fits in memory.
        let mut bytes = Vec::with_capacity(size as usize);
        reread
            .read_to_end(&mut bytes)
            .map_err(|e| reread.unreadable(e))?;
        reread.finish()?;
        Ok(Some(bytes))
    }

    /// A reader of a member's bytes, read again: `None` if it is absent or
    /// was refused unread. [`Reread::finish`] checks that they are the
    /// bytes the index hashed.
    pub(super) fn reread(&mut self, path: &str) -> Result<Option<Reread<'_, R>>, String> {
        let Some(member) = self.index.get(path) else {
            return Ok(None);
        };
        let Some(sha256) = member.sha256 else {
            return Ok(None);
        };
        let (at, size) = (member.at, member.size);
        let path = path.to_owned();
        if let Err(e) = self.reader.seek(SeekFrom::Start(at)) {
            return Err(unreadable(&path, e));
        }
        Ok(Some(Reread {
            bytes: Hashing::new((&mut self.reader).take(size), false),
            path,
            size,
            sha256,
        }))
    }
}

/// A member's bytes read a second time, hashed as they pass.
pub(super) struct Reread<'a, R> {
    bytes: Hashing<io::Take<&'a mut R>>,
    path: String,
    size: u64,
    sha256: [u8; 32],
}

impl<R: Read> Reread<'_, R> {
    /// The failure of a read that went wrong.
    pub(super) fn unreadable(&self, e: io::Error) -> String {
        unreadable(&self.path, e)
    }

    /// Checks that all of the member was read and is what the first pass
    /// hashed: the archive may have changed in between.
    pub(super) fn finish(self) -> Result<(), String> {
        if self.bytes.count != self.size || self.bytes.sha256() != self.sha256 {
            return Err(format!(
                "{}: its bytes changed while the bundle was being verified",
                self.path
            ));
        }
        Ok(())
    }
}

impl<R: Read> Read for Reread<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.bytes.read(buf)
    }
}

fn unreadable(path: &str, e: io::Error) -> String {
    format!("{path}: cannot be read a second time ({e})")
}

/// Where the archive's reading stands: the last member named, and a GNU
/// long name waiting for the member it names.
#[derive(Default)]
struct Progress {
    last: Option<String>,
    /// `Some(None)`: the long name was refused; so is its member.
    long_name: Option<Option<Vec<u8>>>,
}

impl Progress {
    fn after(&self) -> String {
        match &self.last {
            Some(p) => format!("after {p}"),
            None => "at its start".to_owned(),
        }
    }
}

/// Reads the archive once, member by member, keeping only their metadata.
/// Entries are read raw so that a GNU long name is read here, within
/// [`MAX_NAME`], rather than whole by the tar reader; a member over
/// [`MAX_MEMBER`] is skipped by seeking past it.
fn index<R: Read + Seek>(
    reader: &mut R,
    failures: &mut Vec<String>,
) -> Result<BTreeMap<String, Member>, BundleError> {
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries_with_seek()
        .map_err(BundleError::Read)?
        .raw(true);
    let mut index = BTreeMap::new();
    let mut progress = Progress::default();
    let mut buf = vec![0u8; BUF];
    for entry in entries {
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) if progress.last.is_none() => return Err(BundleError::Read(e)),
            Err(e) => {
                failures.push(format!(
                    "the archive is damaged {} ({e}); nothing after that could be read",
                    progress.after()
                ));
                break;
            }
        };
        match index_entry(&mut entry, &mut progress, &mut buf, failures) {
            Indexed::Member(rel, member) => {
                if index.insert(rel.clone(), member).is_some() {
                    failures.push(format!("{rel}: appears twice in the archive"));
                }
            }
            Indexed::Skipped => {}
            Indexed::Damaged => break,
        }
    }
    Ok(index)
}

/// What one tar entry came to.
enum Indexed {
    Member(String, Member),
    /// Not a member (a long name), or not one a bundle can hold (a failure
    /// says so).
    Skipped,
    /// The archive cannot be read past it (a failure says so).
    Damaged,
}

/// One entry: a member's place, size and hashes (its bytes read through
/// `buf` and dropped), or why it is not one.
fn index_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    progress: &mut Progress,
    buf: &mut [u8],
    failures: &mut Vec<String>,
) -> Indexed {
    if entry.header().entry_type() == tar::EntryType::GNULongName {
        return long_name(entry, progress, failures);
    }
    let name = match progress.long_name.take() {
        Some(Some(name)) => name,
        Some(None) => return Indexed::Skipped,
        None => entry.path_bytes().into_owned(),
    };
    let Ok(path) = String::from_utf8(name) else {
        failures.push(format!(
            "a member {} has a name that is not UTF-8",
            progress.after()
        ));
        return Indexed::Skipped;
    };
    progress.last = Some(path.clone());
    let Some(rel) = path.strip_prefix(ROOT).map(str::to_owned) else {
        failures.push(format!("{path}: lies outside {ROOT}"));
        return Indexed::Skipped;
    };
    if entry.header().entry_type() != tar::EntryType::Regular {
        failures.push(format!(
            "{rel}: is not a regular file ({:?})",
            entry.header().entry_type()
        ));
        return Indexed::Skipped;
    }
    let at = entry.raw_file_position();
    let size = entry.size();
    let is_file = rel.starts_with("files/");
    if !is_file && rel != DIGESTS && size > MAX_MEMBER {
        failures.push(format!(
            "{rel}: declares {size} bytes, more than the {} MiB a bundle member other than a file or the audit digests may hold; refused unread",
            MAX_MEMBER >> 20
        ));
        let refused = Member {
            at,
            size,
            sha256: None,
            blake3: None,
        };
        return Indexed::Member(rel, refused);
    }
    let mut hashing = Hashing::new(entry, is_file);
    if let Err(e) = drain(&mut hashing, buf) {
        failures.push(format!(
            "{rel}: the archive is damaged here ({e}); nothing after that could be read"
        ));
        return Indexed::Damaged;
    }
    let member = Member {
        at,
        size: hashing.count,
        sha256: Some(hashing.sha256()),
        blake3: hashing.blake3(),
    };
    Indexed::Member(rel, member)
}

/// Reads `reader` to its end, through `buf`.
fn drain(mut reader: impl Read, buf: &mut [u8]) -> io::Result<()> {
    loop {
        match reader.read(buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// A GNU long name: the name of the member that follows, unless it is
/// longer than any a bundle holds.
fn long_name<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    progress: &mut Progress,
    failures: &mut Vec<String>,
) -> Indexed {
    let size = entry.size();
    if size > MAX_NAME {
        failures.push(format!(
            "a member {} has a name of {size} bytes, longer than any a bundle holds ({MAX_NAME} at most); refused unread",
            progress.after()
        ));
        progress.long_name = Some(None);
        return Indexed::Skipped;
    }
    let mut name = Vec::new();
    if let Err(e) = entry.read_to_end(&mut name) {
        failures.push(format!(
            "the archive is damaged {} ({e}); nothing after that could be read",
            progress.after()
        ));
        return Indexed::Damaged;
    }
    while name.last() == Some(&0) {
        name.pop();
    }
    progress.long_name = Some(Some(name));
    Indexed::Skipped
}
