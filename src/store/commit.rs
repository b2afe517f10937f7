//! Group commit: many writers, one fsync.
//!
//! A writer finishes its sled write, then asks for a commit. A dedicated
//! thread takes every request waiting at that moment, flushes once, and
//! answers them all. Every request was sent after its write completed and the
//! flush starts after the request was taken, so each answered writer's data
//! is on disk.

use std::sync::mpsc;

use tokio::sync::oneshot;

use super::{Result, StoreError};

type Reply = oneshot::Sender<std::result::Result<(), String>>;

pub(super) struct GroupCommit {
    requests: Option<mpsc::Sender<Reply>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GroupCommit {
    pub(super) fn start(db: sled::Db) -> Self {
        let (tx, rx) = mpsc::channel::<Reply>();
        // The thread ends when the store (the only sender) is dropped.
        let spawned = std::thread::Builder::new()
            .name("casemesh-commit".into())
            .spawn(move || run(db, rx));
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

    pub(super) async fn commit(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .as_ref()
            .ok_or_else(|| StoreError::Flush("the store is closing".into()))?
            .send(tx)
            .map_err(|_| StoreError::Flush("the commit thread has stopped".into()))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Flush(e)),
            Err(_) => Err(StoreError::Flush("the commit thread has stopped".into())),
        }
    }
}

fn run(db: sled::Db, rx: mpsc::Receiver<Reply>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let outcome = db.flush().map(|_| ()).map_err(|e| e.to_string());
        for reply in batch {
            // A writer that gave up waiting is not an error.
            let _ = reply.send(outcome.clone());
        }
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
