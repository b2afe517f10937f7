//! Storage: the only module that names sled.
//!
//! Typed trees named `key_value`, values in versioned encodings
//! ([`encoding`]), multi-tree transactions for every change that touches
//! more than one tree, and group commit ([`commit`]): a write is durable when
//! [`Store::commit`] returns, and many concurrent writers share one fsync
//! (and version writes that list no files one transaction as well,
//! [`Store::write_version`]).

pub mod audit;
pub mod blobs;
mod commit;
pub mod disk;
pub mod encoding;
mod keys;
mod records;
mod replica;
mod sharing;
mod tx;
mod users;

use std::path::Path;

pub use records::{ListFilter, ListPage};
pub use replica::{ApplyItem, ApplyOutcome, PurgeStub};
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
    #[error("this data directory belongs to office {found}, not {expected}")]
    WrongOffice { expected: String, found: String },
    #[error(
        "another casemesh node is already running on this data directory (its store {} is locked); stop it first",
        .0.display()
    )]
    Locked(std::path::PathBuf),
    #[error("inconsistent store: {0}")]
    Inconsistent(String),
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
}

/// The node's store: all trees of one sled database.
pub struct Store {
    db: sled::Db,
    /// record id → head (latest version number, collection, deleted flag).
    recordid_head: sled::Tree,
    /// record id ‖ 0x00 ‖ version (u64 BE) → signed version.
    recordversion_signed: sled::Tree,
    /// collection ‖ 0x00 ‖ record id → () for every record, deleted or not.
    collection_recordid: sled::Tree,
    /// certificate fingerprint → user entry.
    fingerprint_user: sled::Tree,
    /// user name → certificate fingerprint.
    username_fingerprint: sled::Tree,
    /// office id → pinned peer.
    office_peer: sled::Tree,
    /// grant id → grant.
    grantid_grant: sled::Tree,
    /// Grant jobs started and not yet finished (`GrantJob`).
    grantid_job: sled::Tree,
    /// peer office ‖ 0x00 ‖ seq (u64 BE) → feed item: each peer's outbox.
    peerseq_outbox: sled::Tree,
    /// "outbox_seq" → last sequence number assigned (u64 BE).
    counters: sled::Tree,
    /// peer office → highest seq it acknowledged (serving side).
    office_acked: sled::Tree,
    /// peer office → our checkpoint in its feed (pulling side).
    office_checkpoint: sled::Tree,
    /// record id → stub of a purged replica.
    recordid_purged: sled::Tree,
    /// grant id → purge acknowledgement we signed, and whether delivered.
    grantid_ourack: sled::Tree,
    /// blob hash → where its chunks are ([`blobs`]).
    blobhash_blob: sled::Tree,
    /// storage id ‖ chunk index → bytes.
    storage_chunk: sled::Tree,
    /// storage id → (): uploads in progress and chunks being removed.
    storage_doomed: sled::Tree,
    /// blob hash → a fetch from a peer in progress.
    blobhash_fetch: sled::Tree,
    /// blob hash ‖ record id ‖ 0 ‖ version → (): versions listing a blob.
    blobhash_ref: sled::Tree,
    /// audit seq (u64 BE) → `prev ‖ hash ‖ body` ([`crate::domain::audit`]).
    auditseq_entry: sled::Tree,
    /// "head" → the last entry's seq, chain hash and time.
    audit_head: sled::Tree,
    /// audit seq → a head of this office's log, signed.
    auditseq_signedhead: sled::Tree,
    /// peer office ‖ 0 ‖ seq → a head of its log it signed, witnessed here.
    officeseq_witnessed: sled::Tree,
    /// Wakes the task that signs the audit head.
    pub audit_wake: tokio::sync::Notify,
    /// This office's id, written into every audit entry.
    office: String,
    /// Blobs being read or written now; its lock is the blob gate.
    blob_pins: blobs::Pins,
    /// Wakes the tasks that fetch and remove blobs.
    pub blob_wake: blobs::Wake,
    /// Highest outbox sequence number known to be on disk; serving streams
    /// never send past it, so a peer never holds what a crash could undo.
    watermark: tokio::sync::watch::Sender<u64>,
    /// Applies version writes; the commit thread has a copy.
    writer: records::VersionWriter,
    committer: commit::GroupCommit,
}

const SCHEMA_KEY: &[u8] = b"schema";
const OFFICE_KEY: &[u8] = b"office";
const SCHEMA_VERSION: u8 = 1;

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
                meta.insert(SCHEMA_KEY, &[SCHEMA_VERSION])?;
                db.flush()?;
            }
        }
        let counters = db.open_tree("counters")?;
        let durable = sharing::read_counter(&counters)?;
        let writer = records::VersionWriter {
            heads: db.open_tree("recordid_head")?,
            versions: db.open_tree("recordversion_signed")?,
            collections: db.open_tree("collection_recordid")?,
            counters: counters.clone(),
            outbox: db.open_tree("peerseq_outbox")?,
            refs: db.open_tree("blobhash_ref")?,
            blobs: db.open_tree("blobhash_blob")?,
            audit_entries: db.open_tree("auditseq_entry")?,
            audit_head: db.open_tree("audit_head")?,
            office: office.to_owned(),
            blob_pins: Default::default(),
        };
        let store = Self {
            auditseq_entry: writer.audit_entries.clone(),
            audit_head: writer.audit_head.clone(),
            auditseq_signedhead: db.open_tree("auditseq_signedhead")?,
            officeseq_witnessed: db.open_tree("officeseq_witnessed")?,
            audit_wake: tokio::sync::Notify::new(),
            office: office.to_owned(),
            blobhash_blob: writer.blobs.clone(),
            storage_chunk: db.open_tree("storage_chunk")?,
            storage_doomed: db.open_tree("storage_doomed")?,
            blobhash_fetch: db.open_tree("blobhash_fetch")?,
            blobhash_ref: writer.refs.clone(),
            blob_pins: writer.blob_pins.clone(),
            blob_wake: Default::default(),
            office_peer: db.open_tree("office_peer")?,
            grantid_grant: db.open_tree("grantid_grant")?,
            grantid_job: db.open_tree("grantid_job")?,
            peerseq_outbox: writer.outbox.clone(),
            office_acked: db.open_tree("office_acked")?,
            office_checkpoint: db.open_tree("office_checkpoint")?,
            recordid_purged: db.open_tree("recordid_purged")?,
            grantid_ourack: db.open_tree("grantid_ourack")?,
            watermark: tokio::sync::watch::Sender::new(durable),
            counters,
            recordid_head: writer.heads.clone(),
            recordversion_signed: writer.versions.clone(),
            collection_recordid: writer.collections.clone(),
            fingerprint_user: db.open_tree("fingerprint_user")?,
            username_fingerprint: db.open_tree("username_fingerprint")?,
            committer: commit::GroupCommit::start(db.clone(), writer.clone()),
            writer,
            db,
        };
        store.remove_doomed()?;
        store.init_counts()?;
        store.move_legacy_jobs()?;
        Ok(store)
    }

    /// Waits until everything written before this call is on disk. Concurrent
    /// callers share one flush.
    pub async fn commit(&self) -> Result<()> {
        let assigned = self.committer.commit().await?;
        self.watermark_reached(assigned);
        Ok(())
    }

    /// Every outbox entry up to `assigned` is on disk.
    fn watermark_reached(&self, assigned: u64) {
        self.watermark.send_if_modified(|w| {
            let moved = assigned > *w;
            if moved {
                *w = assigned;
            }
            moved
        });
    }

    /// Watches the durable outbox watermark.
    pub fn watermark(&self) -> tokio::sync::watch::Receiver<u64> {
        self.watermark.subscribe()
    }

    /// Flushes synchronously (used at shutdown).
    pub fn flush_now(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
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
