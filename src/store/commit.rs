//! Group commit: many writers, one transaction where they can share it, one
//! fsync.
//!
//! A dedicated thread takes every request waiting at that moment. Version
//! writes among them are applied together, in as few transactions as
//! [`transaction_groups`] allows (sled writes its log buffer out for every
//! transaction, so sharing one is most of the gain). Then the thread
//! reads where each feed ends, flushes once, and answers them all. A plain
//! commit request is sent after its writer's own transaction completed, and
//! the flush starts after the request was taken, so each answered writer's
//! data is on disk; every feed entry up to the ends read before the flush
//! is on disk too.

use std::sync::mpsc;

use tokio::sync::oneshot;

use super::records::{VersionWrite, VersionWriter, transaction_groups};
use super::sharing::FeedEnds;
use super::{Result, StoreError};
use crate::metrics::CommitStats;

/// Answered with the ends of the feeds that the flush covered.
type Reply = oneshot::Sender<Result<FeedEnds>>;

struct Request {
    write: Option<VersionWrite>,
    reply: Reply,
}

pub(super) struct GroupCommit {
    requests: Option<mpsc::Sender<Request>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GroupCommit {
    pub(super) fn start(db: sled::Db, writer: VersionWriter, stats: CommitStats) -> Self {
        let (tx, rx) = mpsc::channel::<Request>();
        // The thread ends when the store (the only sender) is dropped.
        let spawned = std::thread::Builder::new()
            .name("casemesh-commit".into())
            .spawn(move || run(db, writer, rx, stats));
        let thread = match spawned {
            Ok(t) => Some(t),
            Err(e) => {
                // Without the thread every commit reports an error below.
                tracing::error!(error = %e, "could not start the commit thread");
                None
            }
        };
        Self {
            requests: Some(tx),
            thread,
        }
    }

    /// Waits until everything written before this call is on disk; returns
    /// the ends of the feeds the flush covered.
    pub(super) async fn commit(&self) -> Result<FeedEnds> {
        self.send(None).await
    }

    /// Applies `write` and waits until it is on disk; returns the ends of
    /// the feeds the flush covered.
    pub(super) async fn write(&self, write: VersionWrite) -> Result<FeedEnds> {
        self.send(Some(write)).await
    }

    async fn send(&self, write: Option<VersionWrite>) -> Result<FeedEnds> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .as_ref()
            .ok_or_else(|| StoreError::CommitThread("the store is closing".into()))?
            .send(Request { write, reply })
            .map_err(|_| StoreError::CommitThread("the commit thread has stopped".into()))?;
        answer.await.map_err(|_| {
            StoreError::CommitThread(
                "the commit thread failed on this request; its write may or may not be applied"
                    .into(),
            )
        })?
    }
}

fn run(db: sled::Db, writer: VersionWriter, rx: mpsc::Receiver<Request>, stats: CommitStats) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        stats.batch_size.observe(batch.len() as f64);
        // A panic fails this batch's requests (their replies are dropped,
        // so their writers hear of it), not every later one.
        let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            handle(&db, &writer, batch, &stats)
        }));
        if handled.is_err() {
            tracing::error!(
                "the commit thread panicked; the requests it held failed, their writes may or may not be applied"
            );
        }
    }
}

/// Applies the batch's version writes, flushes once, and answers every
/// request.
fn handle(db: &sled::Db, writer: &VersionWriter, batch: Vec<Request>, stats: &CommitStats) {
    let mut failed: Vec<Option<StoreError>> = batch.iter().map(|_| None).collect();
    let writes: Vec<(usize, &VersionWrite)> = batch
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.write.as_ref().map(|w| (i, w)))
        .collect();
    for group in transaction_groups(&writes, |(_, w)| w.version_bytes()) {
        let applied = writer.apply(&group.iter().map(|&(_, w)| w).collect::<Vec<_>>());
        for (&(i, _), outcome) in group.iter().zip(applied) {
            failed[i] = outcome.err();
        }
    }
    // Read before the flush, so the flush covers every entry up to them.
    // Unreadable, they claim nothing new, and a later commit catches up.
    let assigned =
        super::sharing::feed_ends(&writer.trees, writer.feed_floor).unwrap_or_else(|e| {
            tracing::error!(error = %e, "reading the ends of the feeds failed");
            FeedEnds::default()
        });
    // Every search queue token below this was written before the flush.
    let search_mark = db.generate_id();
    let started = std::time::Instant::now();
    let flushed = db.flush().map(|_| assigned).map_err(|e| e.to_string());
    stats.flush_seconds.observe(started.elapsed().as_secs_f64());
    if let (Ok(_), Ok(mark)) = (&flushed, search_mark) {
        writer
            .search_durable
            .fetch_max(mark, std::sync::atomic::Ordering::SeqCst);
    }
    for (request, failure) in batch.into_iter().zip(failed) {
        let answer = match failure {
            Some(e) => Err(e),
            None => flushed.clone().map_err(StoreError::Flush),
        };
        // A writer that gave up waiting is not an error.
        let _ = request.reply.send(answer);
    }
}

impl Drop for GroupCommit {
    /// Stops the thread and waits for it, so that the database is closed
    /// (and its directory lock released) when the store is dropped.
    fn drop(&mut self) {
        self.requests.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
