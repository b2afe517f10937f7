//! Search over what an office holds: its own records and the replicas
//! peers shared with it, by full text and by subject, origin, collection,
//! kind, label and time.
//!
//! The index ([`index::SearchIndex`], tantivy files beside the store) is
//! derived data. It holds exactly what the store holds, no more: every
//! transaction that changes a record queues its id
//! (`store::search_queue`), and [`Search::take_in`] indexes what the store
//! holds for the queued ids, commits, and only then forgets them — so a
//! crash loses nothing, and a lost or damaged index is rebuilt from the
//! store ([`Search::rebuild`]). A search first takes in every change made
//! before it, so it sees the writes that finished before it began; and
//! every hit is read back from the store, so nothing the store no longer
//! holds is ever answered. A purge ([`Search::purge`]) rewrites the index
//! files, so that a revoked replica's words are gone from the disk, not
//! only marked deleted.

mod index;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::domain::{RecordId, SignedVersion};
use crate::store::{Queued, Store, StoreError};

pub use index::{Hit, MAX_PAGE, SearchError, SearchIndex, SearchQuery};

/// Records taken from the queue and indexed per commit.
const TAKE_BATCH: usize = 1024;
/// Records read from the store per step of a rebuild.
const REBUILD_BATCH: usize = 1024;
/// How long a search waits for a rebuild to finish before it answers
/// that the index is being rebuilt.
const REBUILD_WAIT: Duration = Duration::from_secs(5);

/// Why a search, or keeping the index, failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Index(#[from] SearchError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the search index is being rebuilt ({done} of {total} records so far); try again shortly"
    )]
    Rebuilding { done: u64, total: u64 },
    #[error("the node is shutting down")]
    Closing,
}

pub type Result<T> = std::result::Result<T, Error>;

/// A page of records found, read back from the store.
#[derive(Debug, Clone)]
pub struct Found {
    /// How many records the index matched (the page is some of them).
    pub total: u64,
    pub hits: Vec<FoundRecord>,
}

/// One record found: its latest version, as the store holds it.
#[derive(Debug, Clone)]
pub struct FoundRecord {
    pub version: SignedVersion,
    /// Relevance to the words asked (0 when none were).
    pub score: f32,
}

/// A rebuild under way: records indexed so far, and how many there are.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    done: u64,
    total: u64,
}

/// The office's search: the index and the store it is derived from.
pub struct Search {
    index: SearchIndex,
    store: Arc<Store>,
    /// Held by whoever changes the index (taking in, rebuilding, purging):
    /// one at a time.
    writing: Mutex<()>,
    /// `Some` while a rebuild runs; signalled when it ends.
    rebuilding: Mutex<Option<Progress>>,
    rebuilt: Condvar,
    /// Set when the node stops: a rebuild under way gives up.
    closing: AtomicBool,
}

impl Search {
    /// Opens the index in `dir` for `store`. An index that cannot be read
    /// is moved aside and started anew; whether it must be rebuilt from
    /// the store is [`Search::needs_rebuild`].
    pub fn open(dir: &Path, store: Arc<Store>) -> Result<Self> {
        let index = match SearchIndex::open(dir) {
            Ok(index) => index,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "the search index cannot be read; it is rebuilt from the store");
                set_aside(dir)?;
                SearchIndex::open(dir)?
            }
        };
        Ok(Self {
            index,
            store,
            writing: Mutex::new(()),
            rebuilding: Mutex::new(None),
            rebuilt: Condvar::new(),
            closing: AtomicBool::new(false),
        })
    }

    /// Whether the index is not known to hold the store: new, of another
    /// schema, or its last rebuild was cut short.
    pub fn needs_rebuild(&self) -> Result<bool> {
        Ok(!self.index.is_complete()?)
    }

    /// Indexes every change queued before this call (and perhaps some
    /// after), committing every [`TAKE_BATCH`] records; returns how many
    /// records it took in. Blocking.
    pub fn take_in(&self) -> Result<usize> {
        let mark = self.store.search_mark()?;
        let _writing = lock(&self.writing);
        let mut n = 0;
        loop {
            let batch = self.store.search_queue(mark, TAKE_BATCH)?;
            if batch.is_empty() {
                return Ok(n);
            }
            self.index_batch(&batch)?;
            n += batch.len();
        }
    }

    /// Indexes what the store holds for `batch`, commits, then forgets
    /// the entries (each unless queued again meanwhile).
    fn index_batch(&self, batch: &[Queued]) -> Result<()> {
        for q in batch {
            match self.store.latest(&q.id)? {
                Some(v) => self.index.put(&v.record)?,
                None => self.index.remove(&q.id),
            }
        }
        self.index.commit()?;
        self.store.search_queue_done(batch)?;
        Ok(())
    }

    /// Indexes every record of the store anew; returns how many records
    /// the index holds. Searches meanwhile see the index as it was (and
    /// wait, for a while, if it was not complete). Blocking.
    pub fn rebuild(&self) -> Result<u64> {
        let writing = lock(&self.writing);
        let (total, _) = self.store.counts()?;
        *lock(&self.rebuilding) = Some(Progress { done: 0, total });
        let outcome = self.rebuild_locked();
        *lock(&self.rebuilding) = None;
        self.rebuilt.notify_all();
        outcome?;
        drop(writing);
        // Changes queued while it ran (and before: all taken in by now).
        self.take_in()?;
        Ok(self.index.len())
    }

    fn rebuild_locked(&self) -> Result<()> {
        self.index.clear()?;
        let mut after: Option<RecordId> = None;
        loop {
            if self.closing.load(Ordering::Relaxed) {
                return Err(Error::Closing);
            }
            let ids = self.store.record_ids_after(after.as_ref(), REBUILD_BATCH)?;
            let Some(last) = ids.last().cloned() else {
                break;
            };
            for id in &ids {
                if let Some(v) = self.store.latest(id)? {
                    self.index.put(&v.record)?;
                }
            }
            if let Some(p) = lock(&self.rebuilding).as_mut() {
                p.done += ids.len() as u64;
            }
            after = Some(last);
        }
        // One commit: a rebuild cut short leaves the index as it was.
        self.index.purge()?;
        Ok(())
    }

    /// Takes in every queued change, then rewrites the index files that
    /// hold removed records, and deletes the old files: a purged
    /// replica's words are then in no file of the index. Blocking; call
    /// before anyone is told a purge is done.
    pub fn purge(&self) -> Result<()> {
        self.take_in()?;
        let _writing = lock(&self.writing);
        self.index.purge()?;
        Ok(())
    }

    /// The records matching `q` that the store holds, after taking in
    /// every change made before the call. Blocking.
    pub fn search(&self, q: &SearchQuery) -> Result<Found> {
        self.wait_for_rebuild()?;
        self.take_in()?;
        let (total, hits) = self.index.search(q)?;
        let mut found = Vec::with_capacity(hits.len());
        for hit in hits {
            // The store is the truth: a hit it no longer holds (a crash
            // lost a write the index had taken in) is not answered.
            let Ok(id) = RecordId::parse(&hit.id) else {
                continue;
            };
            match self.store.latest(&id)? {
                Some(v) if !v.record.deleted && v.record.version == hit.version => {
                    found.push(FoundRecord {
                        version: v,
                        score: hit.score,
                    })
                }
                _ => {
                    tracing::debug!(id = %hit.id, "a search hit the store no longer holds as indexed")
                }
            }
        }
        Ok(Found { total, hits: found })
    }

    /// Waits up to [`REBUILD_WAIT`] for a rebuild under way.
    fn wait_for_rebuild(&self) -> Result<()> {
        let guard = lock(&self.rebuilding);
        let (guard, _) = self
            .rebuilt
            .wait_timeout_while(guard, REBUILD_WAIT, |r| r.is_some())
            .unwrap_or_else(|p| p.into_inner());
        match *guard {
            Some(p) => Err(Error::Rebuilding {
                done: p.done,
                total: p.total,
            }),
            None => Ok(()),
        }
    }

    /// Makes a rebuild under way give up (its index stays as it was, and
    /// is rebuilt at the next start): the node is stopping.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    /// Records in the index, and records waiting to be taken in.
    pub fn sizes(&self) -> (u64, usize) {
        (self.index.len(), self.store.search_queue_len())
    }

    /// Whether any index file's dictionary of `field` holds `word`
    /// (deleted documents included, until a purge).
    pub fn holds_term(&self, field: &str, word: &str) -> Result<bool> {
        Ok(self.index.holds_term(field, word)?)
    }
}

/// Keeps the index up to date until `shutdown`. First, at start, it
/// rebuilds an index that does not hold the store, or rewrites the files
/// of one that still hold removed records (a purge a crash cut short).
/// Then it takes in what writes queue, a moment after they do (so that a
/// burst shares one commit). A failure (a full disk) is logged and tried
/// again later; the queue keeps every change meanwhile.
pub async fn run_indexer(search: Arc<Search>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    /// How long changes gather before a commit.
    const GATHER: Duration = Duration::from_millis(200);
    /// How long to wait after a failure.
    const RETRY: Duration = Duration::from_secs(5);
    let s = search.clone();
    let start = tokio::task::spawn_blocking(move || match s.needs_rebuild()? {
        true => {
            let started = std::time::Instant::now();
            let n = s.rebuild()?;
            tracing::info!(
                records = n,
                took_ms = started.elapsed().as_millis() as u64,
                "search index rebuilt from the store"
            );
            Ok(())
        }
        false => s.purge(),
    });
    match start.await {
        Ok(Ok(())) | Ok(Err(Error::Closing)) => {}
        Ok(Err(e)) => {
            tracing::error!(error = %e, "the search index could not be made whole at start; searches may miss records until `casemesh search --reindex`")
        }
        Err(e) => tracing::error!(error = %e, "the search index's start task failed"),
    }
    loop {
        tokio::select! {
            _ = search.store.search_wake.notified() => {}
            _ = shutdown.changed() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(GATHER) => {}
            _ = shutdown.changed() => return,
        }
        let s = search.clone();
        match tokio::task::spawn_blocking(move || s.take_in()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the search index could not take in changes; trying again");
                search.store.search_wake.notify_one();
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => {}
                    _ = shutdown.changed() => return,
                }
            }
            Err(e) => tracing::error!(error = %e, "the search indexer's task failed"),
        }
    }
}

/// Moves an unreadable index directory aside (kept, for a person to look
/// at; the next one set aside replaces it).
fn set_aside(dir: &Path) -> Result<()> {
    let aside = dir.with_extension("unreadable");
    let moved = std::fs::remove_dir_all(&aside)
        .or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(e)
            }
        })
        .and_then(|()| std::fs::rename(dir, &aside));
    moved.map_err(|e| {
        Error::Index(SearchError::Directory {
            path: dir.display().to_string(),
            reason: format!("cannot move it aside to {}: {e}", aside.display()),
        })
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests;
