//! Storage: the only module that names sled.
//!
//! Typed trees named `key_value` ([`trees`], [`typed`]), values in
//! versioned encodings ([`encoding`]), keys written one way ([`keys`]),
//! multi-tree transactions over named sets of trees for every change that
//! touches more than one, and group commit ([`commit`]): a write is durable when
//! [`Store::commit`] returns, and many concurrent writers share one fsync
//! (and version writes that list no files one transaction as well,
//! [`Store::write_version`]). Attachment bytes in an S3 bucket instead of
//! files: `s3` (feature `s3`), which names no sled.

pub mod audit;
mod audit_index;
mod audit_search;
mod backfill;
pub mod blobs;
mod commit;
mod counts;
pub mod disk;
pub mod encoding;
pub mod files;
#[doc(hidden)]
pub mod fuzzing;
mod keys;
mod merkle;
mod records;
mod recount;
mod replica;
#[cfg(feature = "s3")]
pub mod s3;
mod search_queue;
mod sharing;
mod space;
pub mod staging;
mod trees;
mod tx;
mod typed;
mod users;

use std::path::Path;

pub use audit_index::AuditField;
pub use backfill::CollectionPage;
pub use encoding::PeerRemoval;
pub use records::{ListFilter, ListPage};
pub use recount::{CountDiff, StoreCounts};
pub use replica::{ApplyItem, ApplyOutcome, PurgeStub};
pub use search_queue::Queued;
pub use sharing::FeedEnds;
pub use space::Storage;
pub use users::UserEntry;

use crate::domain::codec::DecodeError;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine error: {0}")]
    Engine(#[from] sled::Error),
    #[error("corrupt value in tree {tree}: {source}")]
    Corrupt {
        tree: &'static str,
        #[source]
        source: DecodeError,
    },
    #[error("the record's latest version is now {actual:?}, not {expected:?}")]
    HeadMoved {
        expected: Option<u64>,
        actual: Option<u64>,
    },
    #[error("user {0} holds a valid certificate already; revoke it before issuing a new one")]
    UserExists(String),
    #[error("flushing to disk failed: {0}")]
    Flush(String),
    /// The commit thread is gone or failed on a request: this node's own
    /// fault, not the disk's.
    #[error("{0}")]
    CommitThread(String),
    #[error("this data directory belongs to office {found}, not {expected}")]
    WrongOffice { expected: String, found: String },
    #[error(
        "another casemesh node is already running on this data directory (its store {} is locked); stop it first",
        .0.display()
    )]
    Locked(std::path::PathBuf),
    #[error(
        "this store was written by a newer casemesh (store schema {found}; this build reads up to {known}); run that version, or restore a backup"
    )]
    NewerSchema { found: u8, known: u8 },
    #[error("inconsistent store: {0}")]
    Inconsistent(String),
    #[error(
        "the disk holding the data directory has {} free, less than the {} kept in reserve (store.min_free_mb): writes are refused until space is freed",
        crate::domain::format_size(*free),
        crate::domain::format_size(*reserve)
    )]
    DiskFull { free: u64, reserve: u64 },
    #[error(
        "the store failed ({0}); writes are refused until the node is restarted, once the disk has space again (docs/operating.md)"
    )]
    Failed(String),
    #[error(
        "attachment {file_name:?} ({hash}) is not stored on this node: upload it with PutBlob first"
    )]
    MissingBlob {
        hash: crate::domain::BlobHash,
        file_name: String,
    },
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Storage settings, from the `[store]` section of `casemesh.toml`.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// sled's page cache, in bytes.
    pub cache_bytes: u64,
    /// Writes that grow the store are refused while the disk holding it
    /// has less free space than this ([`space`]); 0: never.
    pub reserve_bytes: u64,
}

impl From<&crate::config::StoreConfig> for StoreOptions {
    /// The settings of `[store]`, in bytes (a size past what a u64 holds
    /// is taken as the largest one).
    fn from(c: &crate::config::StoreConfig) -> Self {
        const MIB: u64 = 1024 * 1024;
        Self {
            cache_bytes: c.cache_mb.saturating_mul(MIB),
            reserve_bytes: c.min_free_mb.saturating_mul(MIB),
        }
    }
}

#[cfg(test)]
impl StoreOptions {
    /// A 1 MiB cache and no reserve: the unit tests' store.
    pub(crate) fn for_tests() -> Self {
        Self {
            cache_bytes: 1 << 20,
            reserve_bytes: 0,
        }
    }
}

/// The node's store: all trees of one sled database.
pub struct Store {
    db: sled::Db,
    trees: trees::Trees,
    /// Wakes the task that signs the audit head.
    pub audit_wake: tokio::sync::Notify,
    /// This office's id, written into every audit entry.
    office: String,
    /// Blobs being read or written now; its lock is the blob gate.
    blob_pins: blobs::Pins,
    /// Wakes the tasks that fetch and remove blobs.
    pub blob_wake: blobs::Wake,
    /// Wakes the search indexer: records were queued for it
    /// ([`search_queue`]).
    pub search_wake: tokio::sync::Notify,
    /// How far each peer's feed is known to be on disk; serving streams
    /// never send past it, so a peer never holds what a crash could undo.
    watermark: tokio::sync::watch::Sender<FeedEnds>,
    /// Where feeds without a number of their own start ([`sharing`]).
    feed_floor: u64,
    /// Applies version writes; the commit thread has a copy.
    writer: records::VersionWriter,
    committer: commit::GroupCommit,
    /// What group commit has done: batch sizes and flush times.
    commit_stats: crate::metrics::CommitStats,
    /// Free space, checked before writes that grow the store.
    space: space::Space,
}

const SCHEMA_KEY: &[u8] = b"schema";
const OFFICE_KEY: &[u8] = b"office";
/// 2: counters, checkpoints and user-name fingerprints carry a version
/// byte (version 1's bytes still read).
/// 3: the audit log is indexed by term, and records are counted per
/// origin and outbox entries per peer, in the transactions that change
/// them: a build before would write without keeping them, so it must not
/// open the store (a store of schema 2 is indexed and counted when opened).
const SCHEMA_VERSION: u8 = 3;

impl Store {
    /// Opens (or creates) the store at `path` for `office`. Refuses a store
    /// that belongs to another office.
    pub fn open(path: &Path, office: &str, options: &StoreOptions) -> Result<Self> {
        Self::open_waiting(path, office, options, std::time::Duration::from_secs(3))
    }

    /// [`Store::open`], but `Locked` at once when another process holds
    /// the store (a running node), for tools that read it only if free.
    pub fn open_unless_locked(path: &Path, office: &str, options: &StoreOptions) -> Result<Self> {
        Self::open_waiting(path, office, options, std::time::Duration::ZERO)
    }

    /// Opens the store, waiting up to `wait` for a process that is closing
    /// it (a node restarting) to let go of its lock.
    fn open_waiting(
        path: &Path,
        office: &str,
        options: &StoreOptions,
        wait: std::time::Duration,
    ) -> Result<Self> {
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(options.cache_bytes)
            // Durability comes from explicit group commits, not a timer.
            .flush_every_ms(None);
        let db = open_when_unlocked(&config, wait)?;
        check_meta(&db, office)?;
        let trees = trees::Trees::open(&db)?;
        let feed_floor = sharing::feed_floor(&trees)?;
        let durable = sharing::feed_ends(&trees, feed_floor)?;
        let writer = records::VersionWriter {
            trees: trees.clone(),
            feed_floor,
            office: office.to_owned(),
            blob_pins: Default::default(),
            // Everything there at opening is on disk.
            search_durable: std::sync::Arc::new(db.generate_id()?.into()),
        };
        let commit_stats = crate::metrics::CommitStats::default();
        let store = Self {
            trees,
            audit_wake: tokio::sync::Notify::new(),
            office: office.to_owned(),
            blob_pins: writer.blob_pins.clone(),
            blob_wake: Default::default(),
            search_wake: tokio::sync::Notify::new(),
            watermark: tokio::sync::watch::Sender::new(durable),
            feed_floor,
            committer: commit::GroupCommit::start(db.clone(), writer.clone(), commit_stats.clone()),
            commit_stats,
            writer,
            db,
            space: space::Space::new(path.to_owned(), options.reserve_bytes),
        };
        store.remove_doomed()?;
        store.init_counts()?;
        store.init_office_counts()?;
        store.init_audit_index()?;
        store.move_legacy_jobs()?;
        Ok(store)
    }

    /// Waits until everything written before this call is on disk. Concurrent
    /// callers share one flush.
    pub async fn commit(&self) -> Result<()> {
        let assigned = self
            .committer
            .commit()
            .await
            .map_err(|e| self.space.note(e))?;
        self.watermark_reached(assigned);
        // What the flush made durable may be taken in now.
        self.search_wake.notify_one();
        Ok(())
    }

    /// Every feed entry up to `assigned` is on disk.
    fn watermark_reached(&self, assigned: FeedEnds) {
        self.watermark
            .send_if_modified(|w| match w.advanced(&assigned) {
                Some(further) => {
                    *w = further;
                    true
                }
                None => false,
            });
    }

    /// Watches how far each feed is on disk.
    pub fn watermark(&self) -> tokio::sync::watch::Receiver<FeedEnds> {
        self.watermark.subscribe()
    }

    /// Group commit's batch sizes and flush times, for metrics.
    pub fn commit_stats(&self) -> &crate::metrics::CommitStats {
        &self.commit_stats
    }

    /// Whether the store has failed (it refuses writes until reopened).
    pub fn has_failed(&self) -> bool {
        self.space.check_not_failed().is_err()
    }

    /// Free space and whether writes are accepted.
    pub fn storage(&self) -> Storage {
        self.space.storage()
    }

    /// `Ok` if a write that grows the store may go ahead: the disk has more
    /// than the reserve free, and the store has not failed.
    pub fn check_space(&self) -> Result<()> {
        self.space.check()
    }

    /// Flushes synchronously (used at shutdown).
    pub fn flush_now(&self) -> Result<()> {
        let search_mark = self.db.generate_id()?;
        self.db
            .flush()
            .map_err(|e| self.space.note(StoreError::Engine(e)))?;
        self.writer
            .search_durable
            .fetch_max(search_mark, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

/// Checks that the store belongs to `office` and was written by a schema
/// this build reads; records both for a new store, and the schema this
/// build writes for an older one.
fn check_meta(db: &sled::Db, office: &str) -> Result<()> {
    let meta = db.open_tree("meta")?;
    match meta.get(OFFICE_KEY)? {
        Some(found) if found.as_ref() != office.as_bytes() => {
            return Err(StoreError::WrongOffice {
                expected: office.to_owned(),
                found: String::from_utf8_lossy(&found).into_owned(),
            });
        }
        Some(_) => {}
        None => {
            meta.insert(OFFICE_KEY, office.as_bytes())?;
        }
    }
    let schema = meta.get(SCHEMA_KEY)?.and_then(|v| v.first().copied());
    if let Some(found) = schema.filter(|&v| v > SCHEMA_VERSION) {
        return Err(StoreError::NewerSchema {
            found,
            known: SCHEMA_VERSION,
        });
    }
    if schema != Some(SCHEMA_VERSION) {
        meta.insert(SCHEMA_KEY, &[SCHEMA_VERSION])?;
        db.flush()?;
    }
    Ok(())
}

/// sled's I/O threads may keep a just-closed database's lock for a moment
/// (a node restarted in the same process); wait for it, briefly. Another
/// process holding the lock still gets the error.
fn open_when_unlocked(config: &sled::Config, wait: std::time::Duration) -> Result<sled::Db> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                return Err(StoreError::Locked(config.path.clone()));
            }
            other => return Ok(other?),
        }
    }
}

fn corrupt(tree: &'static str) -> impl FnOnce(DecodeError) -> StoreError {
    move |source| StoreError::Corrupt { tree, source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OfficeId;

    /// A store written by schema 1 (numbers as 8 bytes alone) opens, reads
    /// them, and is marked as the current schema; a store of a newer schema is
    /// refused with a message that says so, and left as it was.
    #[test]
    fn schema_1_stores_open_and_newer_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let nyc = OfficeId::parse("nyc-da").unwrap();
        {
            let store = Store::open(&path, "phila-da", &StoreOptions::for_tests()).unwrap();
            let raw = |tree: &str, key: &[u8], value: &[u8]| {
                store
                    .db
                    .open_tree(tree)
                    .unwrap()
                    .insert(key, value)
                    .unwrap();
            };
            raw("counters", b"outbox_seq", &5u64.to_be_bytes());
            raw("office_acked", b"nyc-da", &3u64.to_be_bytes());
            raw("office_checkpoint", b"nyc-da", &4u64.to_be_bytes());
            raw("meta", SCHEMA_KEY, &[1]);
            store.flush_now().unwrap();
        }
        let store = Store::open(&path, "phila-da", &StoreOptions::for_tests()).unwrap();
        // The shared numbering's end is where every feed starts.
        assert_eq!(store.last_seq(&nyc).unwrap(), 5);
        assert_eq!(store.watermark().borrow().of(&nyc), 5);
        assert_eq!(store.acked(&nyc).unwrap(), 3);
        assert_eq!(store.checkpoint(&nyc).unwrap(), 4);
        let meta = store.db.open_tree("meta").unwrap();
        assert_eq!(
            meta.get(SCHEMA_KEY).unwrap().unwrap().as_ref(),
            &[SCHEMA_VERSION]
        );
        // Written again, a number carries its version byte.
        store.reset_acked(&nyc, 6).unwrap();
        let stored = store.db.open_tree("office_acked").unwrap();
        assert_eq!(
            stored.get(b"nyc-da").unwrap().unwrap().as_ref(),
            &[1, 0, 0, 0, 0, 0, 0, 0, 6]
        );
        assert_eq!(store.acked(&nyc).unwrap(), 6);
        meta.insert(SCHEMA_KEY, &[SCHEMA_VERSION + 1]).unwrap();
        store.flush_now().unwrap();
        drop((meta, stored, store));

        let refused = Store::open(&path, "phila-da", &StoreOptions::for_tests());
        match refused {
            Err(e @ StoreError::NewerSchema { found, known })
                if found == SCHEMA_VERSION + 1 && known == SCHEMA_VERSION =>
            {
                assert!(e.to_string().contains("newer casemesh"), "{e}");
            }
            Err(e) => panic!("refused for another reason: {e}"),
            Ok(_) => panic!("a store of a newer schema opened"),
        }
    }
}
