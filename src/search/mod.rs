//! Search over what an office holds: its own records and the replicas
//! peers shared with it, by full text and by subject, origin, collection,
//! kind, label and time.
//!
//! The index ([`index::SearchIndex`], tantivy files beside the store) is
//! derived data, and holds what the store holds on disk, no more: every
//! transaction that changes a record queues its id
//! (`store::search_queue`); [`Search::take_in`] indexes, for the queued
//! changes a flush has made durable, what the store holds, commits, and
//! only then forgets them — so a crash loses nothing, and the index never
//! takes in what a crash could take back. An index that is lost, damaged,
//! or whose rebuild was cut short is known to be incomplete: searches
//! are refused until it is rebuilt from the store ([`Search::rebuild`]),
//! which the indexer does by itself. A search first takes in every change
//! made before it, and every hit is read back from the store. A purge
//! ([`Search::purge`]) rewrites the index files that held removed records
//! and deletes the old ones, so that a revoked replica's words are in no
//! file of the index directory, not only marked deleted.

mod index;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::domain::{RecordId, SignedVersion};
use crate::store::{Queued, Store, StoreError};

pub use index::{Hit, MAX_PAGE, SearchError, SearchIndex, SearchQuery};

/// Records taken from the queue and indexed per commit: a commit (segment
/// files written and synced, merges) costs more than indexing a thousand
/// records, so a backfill's changes are taken in by the many thousand.
const TAKE_BATCH: usize = 16_384;
/// Records read from the store per step of a rebuild.
const REBUILD_BATCH: usize = 1024;
/// How long a search waits for a rebuild to finish before it answers
/// that the index is being rebuilt.
const REBUILD_WAIT: Duration = Duration::from_secs(5);
/// How long a search waits for the index's writer (busy with a commit, a
/// merge, a purge or a rebuild) to take in the changes made before it;
/// past it, it answers from the index as last committed.
const TAKE_IN_WAIT: Duration = Duration::from_secs(2);

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
    #[error(
        "the search index is incomplete ({0}); the node rebuilds it from the store as soon as it can, or `casemesh search --reindex` does now"
    )]
    Incomplete(String),
    #[error("the node is shutting down")]
    Closing,
}

pub type Result<T> = std::result::Result<T, Error>;

/// A page of records found, read back from the store.
#[derive(Debug, Clone)]
pub struct Found {
    /// How many documents of the index matched (the page is some of them;
    /// a document the store no longer holds is counted, not answered).
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

/// Where the index stands ([`Search::state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    pub complete: bool,
    /// Records indexed so far, and of how many, while a rebuild runs.
    pub rebuilding: Option<(u64, u64)>,
    pub records: u64,
    pub waiting: u64,
}

/// A rebuild under way: records indexed so far, and how many there are.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    done: u64,
    total: u64,
}

/// What only the holder of the writing lock changes.
#[derive(Default)]
struct Writing {
    /// Records the store no longer holds, removed from the index since its
    /// last purge: the segments holding their words are the ones a purge
    /// rewrites.
    gone: HashSet<RecordId>,
    /// Whether the index holds documents of records since gone whose
    /// segments were not rewritten, not known by id (at start).
    gone_unknown: bool,
}

/// The office's search: the index and the store it is derived from.
pub struct Search {
    index: SearchIndex,
    store: Arc<Store>,
    /// Held by whoever changes the index (taking in, rebuilding, purging):
    /// one at a time.
    writing: Mutex<Writing>,
    /// Whether the index holds every record of the store (as of the
    /// queue): false for a new, damaged or half-rebuilt index, or one
    /// dropped to free its words on a full disk. Searches are refused
    /// while it is false.
    complete: AtomicBool,
    /// `Some` while a rebuild runs; signalled when it ends.
    rebuilding: Mutex<Option<Progress>>,
    rebuilt: Condvar,
    /// Set when the node stops: a rebuild under way gives up.
    closing: AtomicBool,
}

impl Search {
    /// Opens the index in `dir` for `store`. An index that cannot be read
    /// (damaged, of another schema) is deleted — it holds records' text —
    /// and started anew, incomplete; one in use by another node is an
    /// error.
    pub fn open(dir: &Path, store: Arc<Store>) -> Result<Self> {
        let index = match SearchIndex::open(dir) {
            Ok(index) => index,
            Err(e @ SearchError::Busy(_)) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "the search index cannot be read; it is deleted and rebuilt from the store");
                delete_dir(dir)?;
                SearchIndex::open(dir)?
            }
        };
        let complete = index.is_complete()?;
        Ok(Self {
            index,
            store,
            writing: Mutex::new(Writing {
                // Purges cut short by a stop are not known by id.
                gone_unknown: true,
                ..Writing::default()
            }),
            complete: AtomicBool::new(complete),
            rebuilding: Mutex::new(None),
            rebuilt: Condvar::new(),
            closing: AtomicBool::new(false),
        })
    }

    /// Whether the index is not known to hold the store, and must be
    /// rebuilt before it answers searches.
    pub fn needs_rebuild(&self) -> bool {
        !self.complete.load(Ordering::SeqCst)
    }

    /// Indexes every durable change queued before this call (and perhaps
    /// some after), committing every [`TAKE_BATCH`] records; returns how
    /// many records it took in. Blocking.
    pub fn take_in(&self) -> Result<usize> {
        let mut writing = lock(&self.writing);
        self.take_in_locked(&mut writing)
    }

    fn take_in_locked(&self, writing: &mut Writing) -> Result<usize> {
        self.take_in_batches(writing, usize::MAX)
    }

    /// [`Search::take_in`], at most `batches` commits of it.
    fn take_in_batches(&self, writing: &mut Writing, batches: usize) -> Result<usize> {
        let mark = self.store.search_mark();
        let mut n = 0;
        let mut after: Option<RecordId> = None;
        for _ in 0..batches {
            let batch = self.store.search_queue(mark, after.as_ref(), TAKE_BATCH)?;
            let Some(last) = batch.last() else {
                return Ok(n);
            };
            after = Some(last.id.clone());
            // Indexing grows the disk: not past the store's reserve (the
            // queue keeps the changes until there is room).
            self.store.check_space()?;
            self.index_batch(&batch, writing)?;
            n += batch.len();
        }
        Ok(n)
    }

    /// Indexes what the store holds for `batch`, commits, then forgets
    /// the entries (each unless queued again meanwhile). On a failure,
    /// everything not committed is dropped, with the writer.
    fn index_batch(&self, batch: &[Queued], writing: &mut Writing) -> Result<()> {
        let mut gone = Vec::new();
        let indexed = (|| {
            for q in batch {
                match self.store.latest(&q.id)? {
                    Some(v) => self.index.put(&v.record)?,
                    None => {
                        self.index.remove(&q.id);
                        gone.push(q.id.clone());
                    }
                }
            }
            self.index.commit(self.complete.load(Ordering::SeqCst))?;
            Ok::<_, Error>(())
        })();
        if let Err(e) = indexed {
            self.roll_back();
            return Err(e);
        }
        writing.gone.extend(gone);
        self.store.search_queue_done(batch)?;
        Ok(())
    }

    /// Drops what was not committed, with the writer; an index whose
    /// writer cannot be made again is no longer complete.
    fn roll_back(&self) {
        if let Err(e) = self.index.rollback() {
            tracing::error!(error = %e, "the search index's writer could not be made again; searches are refused until it is rebuilt");
            self.complete.store(false, Ordering::SeqCst);
        }
    }

    /// Indexes every record of the store anew; returns how many records
    /// the index holds. Searches meanwhile answer from the index as it
    /// was if it was complete (else they wait, for a while). Blocking.
    pub fn rebuild(&self) -> Result<u64> {
        let mut writing = lock(&self.writing);
        let (total, _) = self.store.counts()?;
        *lock(&self.rebuilding) = Some(Progress { done: 0, total });
        let outcome = self.rebuild_locked();
        if outcome.is_err() {
            // Back to the last commit: a rebuild cut short leaves the index
            // as it was, complete or not.
            self.roll_back();
        } else {
            *writing = Writing::default();
        }
        {
            let mut rebuilding = lock(&self.rebuilding);
            if outcome.is_ok() {
                self.complete.store(true, Ordering::SeqCst);
            }
            *rebuilding = None;
        }
        self.rebuilt.notify_all();
        outcome?;
        // Changes queued while it ran (and before: all taken in by now).
        self.take_in_locked(&mut writing)?;
        Ok(self.index.len())
    }

    fn rebuild_locked(&self) -> Result<()> {
        self.store.check_space()?;
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
        // One commit, marked complete, and the old files deleted.
        self.index.purge(true, None)?;
        Ok(())
    }

    /// Takes in every queued change, then rewrites the index files that
    /// hold records the store no longer holds, and deletes the old files:
    /// a purged replica's words are then in no file of the index. On a
    /// disk below the store's reserve, where a rewrite may not fit, the
    /// index is emptied instead (and rebuilt once there is room). Does
    /// nothing when nothing was removed. Blocking; call before anyone is
    /// told a purge is done.
    pub fn purge(&self) -> Result<()> {
        let mut writing = lock(&self.writing);
        if self.store.check_space().is_err() {
            return self.drop_index(&mut writing);
        }
        let started = Instant::now();
        let taken = match self.take_in_locked(&mut writing) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "the search index could not take in the purge; it is emptied instead");
                return self.drop_index(&mut writing);
            }
        };
        if writing.gone.is_empty() && !writing.gone_unknown {
            return Ok(());
        }
        let complete = self.complete.load(Ordering::SeqCst);
        let only: Vec<RecordId> = writing.gone.iter().cloned().collect();
        let only = (!writing.gone_unknown).then_some(&only[..]);
        if let Err(e) = self.index.purge(complete, only) {
            tracing::warn!(error = %e, "the search index files could not be rewritten; the index is emptied instead");
            self.roll_back();
            return self.drop_index(&mut writing);
        }
        tracing::info!(
            records = writing.gone.len(),
            taken_in = taken,
            took_ms = started.elapsed().as_millis() as u64,
            "search index purged"
        );
        *writing = Writing::default();
        Ok(())
    }

    /// Empties the index and deletes its files (an empty commit needs
    /// next to no room), marked incomplete: no word of any record stays
    /// in it, and it is rebuilt when the disk allows.
    fn drop_index(&self, writing: &mut Writing) -> Result<()> {
        self.complete.store(false, Ordering::SeqCst);
        self.index.clear()?;
        self.index.purge(false, None)?;
        *writing = Writing::default();
        tracing::warn!(
            "the search index was emptied to purge records; searches are refused until it is rebuilt"
        );
        Ok(())
    }

    /// The records matching `q` that the store holds, after taking in
    /// the changes made before the call — unless the index's writer stays
    /// busy for [`TAKE_IN_WAIT`], or more than one commit's worth
    /// ([`TAKE_BATCH`]) waits (a backfill: the indexer's work, not a
    /// search's). Blocking.
    pub fn search(&self, q: &SearchQuery) -> Result<Found> {
        self.wait_for_rebuild()?;
        if let Some(mut writing) = self.lock_within(TAKE_IN_WAIT) {
            if let Err(e) = self.take_in_batches(&mut writing, 1) {
                // The committed index still answers; the queue keeps what
                // it could not take in.
                tracing::warn!(error = %e, "a search could not take in the latest changes");
            }
        }
        if !self.complete.load(Ordering::SeqCst) {
            return Err(Error::Incomplete(
                "it was emptied, or its writer failed".into(),
            ));
        }
        let (total, hits) = self.index.search(q)?;
        let mut found = Vec::with_capacity(hits.len());
        for hit in hits {
            // The store is the truth: a hit it no longer holds as indexed
            // is not answered.
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

    /// The writing lock, if it comes within `wait`.
    fn lock_within(&self, wait: Duration) -> Option<MutexGuard<'_, Writing>> {
        let deadline = Instant::now() + wait;
        loop {
            match self.writing.try_lock() {
                Ok(guard) => return Some(guard),
                Err(std::sync::TryLockError::Poisoned(p)) => return Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(std::sync::TryLockError::WouldBlock) => return None,
            }
        }
    }

    /// Waits up to [`REBUILD_WAIT`] for an index that is not complete to
    /// be rebuilt (a complete one answers meanwhile, even while it is
    /// rebuilt again).
    fn wait_for_rebuild(&self) -> Result<()> {
        let guard = lock(&self.rebuilding);
        let (guard, _) = self
            .rebuilt
            .wait_timeout_while(guard, REBUILD_WAIT, |_| {
                !self.complete.load(Ordering::SeqCst)
            })
            .unwrap_or_else(|p| p.into_inner());
        match (*guard, self.complete.load(Ordering::SeqCst)) {
            (_, true) => Ok(()),
            (Some(p), false) => Err(Error::Rebuilding {
                done: p.done,
                total: p.total,
            }),
            (None, false) => Err(Error::Incomplete(
                "it was lost, damaged, cut short or emptied".into(),
            )),
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

    /// Records in the index as last committed (cheap, unlike
    /// [`Search::sizes`], which counts the queue).
    pub fn indexed(&self) -> u64 {
        self.index.len()
    }

    /// Where the index stands, for `status`.
    pub fn state(&self) -> State {
        let (records, waiting) = self.sizes();
        let rebuilding = *lock(&self.rebuilding);
        State {
            complete: self.complete.load(Ordering::SeqCst),
            rebuilding: rebuilding.map(|p| (p.done, p.total)),
            records,
            waiting: waiting as u64,
        }
    }

    /// Whether any index file's dictionary of `field` holds `word`
    /// (deleted documents included, until a purge).
    pub fn holds_term(&self, field: &str, word: &str) -> Result<bool> {
        Ok(self.index.holds_term(field, word)?)
    }
}

/// Keeps the index up to date until `shutdown`. At start, it rebuilds an
/// index that is not complete, or rewrites the files of one that still
/// hold removed records (a purge a stop cut short). Then it takes in what
/// writes queue, a moment after they are durable (so that a burst shares
/// one commit), and rebuilds the index whenever it is not complete (lost
/// writer, emptied on a full disk) and the disk allows. A failure is
/// logged and tried again later; the queue keeps every change meanwhile.
pub async fn run_indexer(search: Arc<Search>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    /// How long changes gather before a commit.
    const GATHER: Duration = Duration::from_millis(200);
    /// How long to wait after a failure, or before trying a rebuild again.
    const RETRY: Duration = Duration::from_secs(5);
    let mut first = true;
    loop {
        if !first {
            tokio::select! {
                _ = search.store.search_wake.notified() => {}
                _ = tokio::time::sleep(RETRY), if search.needs_rebuild() => {}
                _ = shutdown.changed() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(GATHER) => {}
                _ = shutdown.changed() => return,
            }
        }
        let s = search.clone();
        let at_start = std::mem::take(&mut first);
        let work = tokio::task::spawn_blocking(move || {
            if s.needs_rebuild() {
                let started = Instant::now();
                let n = s.rebuild()?;
                tracing::info!(
                    records = n,
                    took_ms = started.elapsed().as_millis() as u64,
                    "search index rebuilt from the store"
                );
                Ok(())
            } else if at_start {
                s.purge()
            } else {
                s.take_in().map(|_| ())
            }
        });
        match work.await {
            Ok(Ok(())) | Ok(Err(Error::Closing)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the search index could not be brought up to date; trying again");
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

/// Deletes an index directory that cannot be read (it holds records'
/// text; the index is rebuilt from the store).
fn delete_dir(dir: &Path) -> Result<()> {
    std::fs::remove_dir_all(dir).map_err(|e| {
        Error::Index(SearchError::Directory {
            path: dir.display().to_string(),
            reason: format!("cannot delete it to start anew: {e}"),
        })
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests;
