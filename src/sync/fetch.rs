//! Fetching attachments of replicas from their origin offices, and removing
//! blobs nothing lists any more.
//!
//! A replica applied here may list files this node lacks; the store queues
//! a fetch for each (in the same transaction as the version). The fetcher
//! runs a few fetches at a time, so one large video does not hold up every
//! small file. Each writes into a staged file, resumes from the bytes
//! already there (hashing them again), and hands the file to the blob store
//! only once the whole hashes to its name: no byte counts as present
//! before. A failed attempt is retried with backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::FetchError;
use super::SyncContext;
use super::backoff::Backoff;
use super::error::status_text;
use super::puller::connect;
use crate::domain::sharing::Peer;
use crate::domain::{BlobHash, OfficeId, now_ms};
use crate::protocol::pb;
use crate::service::BlobService;
use crate::service::blobs::PIECE;
use crate::store::blobs::Fetch;

/// While bytes stream in, whether the fetch is still wanted is checked
/// after this many.
const RECHECK_EVERY_BYTES: u64 = 64 << 20;

/// A transfer whose origin sends nothing for this long is dropped (and
/// retried later), so a stalled origin does not hold a fetch slot.
const IDLE: Duration = Duration::from_secs(60);

/// A transfer as `casemesh status` shows it.
#[derive(Debug, Clone)]
pub struct TransferView {
    pub hash: BlobHash,
    pub origin: String,
    pub size: u64,
    pub received: u64,
    pub resumed_from: u64,
    pub active: bool,
    pub last_error: String,
    /// Not tried again while the node runs (the failure was for good).
    pub gave_up: bool,
}

#[derive(Debug)]
struct Attempt {
    active: bool,
    resumed_from: u64,
    last_error: String,
    backoff: Backoff,
    retry_at: Instant,
    /// Failed for good (`FetchError::is_transient` said no): not tried
    /// again while the node runs, or (`until_news`) until something new
    /// comes from the file's origin.
    gave_up: bool,
    until_news: Option<OfficeId>,
}

impl Default for Attempt {
    fn default() -> Self {
        Self {
            active: false,
            resumed_from: 0,
            last_error: String::new(),
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(60)),
            retry_at: Instant::now(),
            gave_up: false,
            until_news: None,
        }
    }
}

/// What the fetcher is doing, per blob; shared with the admin API.
#[derive(Default)]
pub struct Transfers {
    attempts: Mutex<HashMap<BlobHash, Attempt>>,
}

impl Transfers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BlobHash, Attempt>> {
        self.attempts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Something new came from `origin` (or, `None`, from someone: news
    /// was missed): the files it would not share may be tried again.
    fn news_from(&self, origin: Option<&OfficeId>) {
        for a in self.lock().values_mut() {
            if a.until_news
                .as_ref()
                .is_some_and(|o| origin.is_none_or(|n| n == o))
            {
                a.gave_up = false;
                a.until_news = None;
            }
        }
    }

    /// Every fetch still queued in the node's store, with what is known of
    /// its attempts.
    pub fn view(&self, blobs: &BlobService) -> crate::error::Result<Vec<TransferView>> {
        let attempts = self.lock();
        Ok(blobs
            .fetches()?
            .into_iter()
            .map(|(hash, f)| {
                let a = attempts.get(&hash);
                TransferView {
                    hash,
                    origin: f.origin.to_string(),
                    size: f.size,
                    received: blobs.received(&hash),
                    resumed_from: a.map(|a| a.resumed_from).unwrap_or(0),
                    active: a.is_some_and(|a| a.active),
                    last_error: a.map(|a| a.last_error.clone()).unwrap_or_default(),
                    gave_up: a.is_some_and(|a| a.gave_up),
                }
            })
            .collect())
    }
}

/// One connection per origin, shared by its fetches (HTTP/2 carries them
/// side by side), so that a case of many small files does not pay a TLS
/// handshake per file. Made again after a failed transfer, or when the
/// peer's pin (endpoint, CA) changed.
#[derive(Default)]
struct Links(Mutex<HashMap<OfficeId, (Peer, Client)>>);

type Client = pb::replication_client::ReplicationClient<tonic::transport::Channel>;

impl Links {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<OfficeId, (Peer, Client)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn client(&self, ctx: &SyncContext, peer: &Peer) -> Result<Client, FetchError> {
        if let Some((pinned, client)) = self.lock().get(&peer.office) {
            if pinned == peer {
                return Ok(client.clone());
            }
        }
        // One piece per message: no need for the feed's large limit.
        let client = connect(ctx, peer)
            .await
            .map_err(|e| FetchError::Transfer(e.to_string()))?
            .max_decoding_message_size(2 * PIECE);
        self.lock()
            .insert(peer.office.clone(), (peer.clone(), client.clone()));
        Ok(client)
    }

    fn forget(&self, office: &OfficeId) {
        self.lock().remove(office);
    }
}

/// Shares a byte rate among all transfers: each piece waits its turn.
struct RateLimit {
    bytes_per_sec: u64,
    next_free: Mutex<Instant>,
}

impl RateLimit {
    /// How long to wait before sending on `n` bytes.
    fn reserve(&self, n: usize) -> Duration {
        if self.bytes_per_sec == 0 {
            return Duration::ZERO;
        }
        let mut next = self.next_free.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let start = (*next).max(now);
        *next = start + Duration::from_secs_f64(n as f64 / self.bytes_per_sec as f64);
        start - now
    }
}

/// Runs fetches until shutdown.
pub async fn run_fetcher(
    ctx: Arc<SyncContext>,
    blobs: Arc<BlobService>,
    transfers: Arc<Transfers>,
    config: crate::config::BlobConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let shared = Arc::new(Shared {
        ctx: ctx.clone(),
        blobs: blobs.clone(),
        links: Links::default(),
        transfers: transfers.clone(),
        limit: RateLimit {
            bytes_per_sec: config.fetch_bytes_per_sec,
            next_free: Mutex::new(Instant::now()),
        },
        max_bytes: config.max_blob_bytes,
    });
    let mut running: JoinSet<()> = JoinSet::new();
    let mut news = ctx.applied.subscribe();
    loop {
        match ctx.store.fetches() {
            Ok(fetches) => {
                let now = Instant::now();
                let mut attempts = transfers.lock();
                let active = attempts.values().filter(|a| a.active).count();
                let mut free = config.fetch_concurrency.saturating_sub(active);
                attempts.retain(|h, _| fetches.iter().any(|(f, _)| f == h));
                for (hash, fetch) in fetches {
                    if free == 0 {
                        break;
                    }
                    let a = attempts.entry(hash).or_default();
                    if a.active || a.gave_up || a.retry_at > now {
                        continue;
                    }
                    a.active = true;
                    a.resumed_from = blobs.received(&hash);
                    free -= 1;
                    running.spawn(attempt(shared.clone(), hash, fetch));
                }
            }
            Err(e) => tracing::error!(error = %e, "listing fetches failed"),
        }
        tokio::select! {
            _ = ctx.store.blob_wake.fetch.notified() => {}
            heard = news.recv() => match heard {
                Ok(applied) => transfers.news_from(Some(&applied.origin)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => transfers.news_from(None),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {}
            },
            Some(_) = running.join_next() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => {
                running.shutdown().await;
                return;
            }
        }
    }
}

/// What every fetch attempt shares.
struct Shared {
    ctx: Arc<SyncContext>,
    blobs: Arc<BlobService>,
    links: Links,
    transfers: Arc<Transfers>,
    limit: RateLimit,
    max_bytes: u64,
}

/// One attempt at one fetch; records its outcome in `transfers`.
async fn attempt(shared: Arc<Shared>, hash: BlobHash, fetch: Fetch) {
    let outcome = transfer(&shared, hash, &fetch).await;
    if outcome.is_err() {
        shared.links.forget(&fetch.origin);
    }
    let ctx = &shared.ctx;
    let mut attempts = shared.transfers.lock();
    let a = attempts.entry(hash).or_default();
    a.active = false;
    match outcome {
        Ok(()) => {
            a.last_error.clear();
            a.backoff.reset();
            a.retry_at = Instant::now();
        }
        Err(e) if e.is_transient() => {
            tracing::warn!(%hash, origin = %fetch.origin, error = %e, "fetching a file failed; will retry");
            a.last_error = e.to_string();
            a.retry_at = Instant::now() + a.backoff.next_delay();
        }
        Err(e) => {
            tracing::error!(%hash, origin = %fetch.origin, error = %e, "fetching a file failed; not trying again until something changes");
            a.last_error = e.to_string();
            a.gave_up = true;
            if matches!(e, FetchError::NotShared(_)) {
                a.until_news = Some(fetch.origin.clone());
            }
        }
    }
    drop(attempts);
    ctx.store.blob_wake.fetch.notify_one();
}

async fn transfer(shared: &Shared, hash: BlobHash, fetch: &Fetch) -> Result<(), FetchError> {
    use FetchError::Transfer;
    let Shared {
        ctx,
        blobs,
        links,
        limit,
        max_bytes,
        ..
    } = shared;
    let max_bytes = *max_bytes;
    // Not removed while this runs, even if its records are purged meanwhile.
    let _pin = ctx.store.pin_blob(hash);
    if fetch.size > max_bytes {
        return Err(FetchError::TooLarge {
            size: fetch.size,
            limit: max_bytes,
        });
    }
    if ctx.store.fetch(&hash)?.is_none() {
        return not_wanted(blobs, &hash);
    }
    let size = fetch.size;
    let staging = blobs.staging().clone();
    let mut staged = tokio::task::spawn_blocking(move || staging.resume_fetch(&hash, size))
        .await
        .map_err(|e| Transfer(format!("opening the staged file failed to run: {e}")))?
        .map_err(|e| Transfer(format!("the staged file: {e}")))?;
    if staged.len() < size {
        ctx.store.check_space()?;
        let peer = ctx
            .store
            .peer(&fetch.origin)?
            .ok_or_else(|| FetchError::OriginNotPinned(fetch.origin.clone()))?;
        let mut client = links.client(ctx, &peer).await?;
        let mut stream = client
            .fetch_blob(pb::FetchBlobRequest {
                hash: bytes::Bytes::copy_from_slice(&hash.0),
                offset: staged.len(),
                max_piece_bytes: PIECE as u32,
            })
            .await
            .map_err(|s| match s.code() {
                tonic::Code::NotFound => FetchError::NotShared(status_text(&s)),
                _ => Transfer(status_text(&s)),
            })?
            .into_inner();
        tracing::info!(%hash, origin = %fetch.origin, from = staged.len(), size, "fetching a file");
        // The bytes are written and hashed on a thread of their own while
        // the next pieces arrive.
        let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(WRITE_AHEAD);
        let span = staged.len()..size;
        let writer = tokio::task::spawn_blocking(move || write_pieces(staged, rx));
        let received = receive(ctx, limit, &hash, span, &mut stream, tx).await;
        staged = writer
            .await
            .map_err(|e| Transfer(format!("the writer failed to run: {e}")))?
            .map_err(|e| Transfer(format!("writing the staged file: {e}")))?;
        match received? {
            Received::All => {}
            Received::NotWanted => return not_wanted(blobs, &hash),
        }
    }
    if staged.hash() != hash {
        staged
            .restart()
            .map_err(|e| Transfer(format!("emptying the staged file: {e}")))?;
        return Err(Transfer(format!(
            "the bytes received do not hash to {hash}; starting again"
        )));
    }
    if ctx.store.fetch(&hash)?.is_none() {
        return not_wanted(blobs, &hash);
    }
    blobs.keep(staged, 0, None).await?;
    ctx.metrics.fetched(fetch.origin.as_str(), size);
    tracing::info!(%hash, origin = %fetch.origin, size, at = now_ms(), "file fetched and checked");
    Ok(())
}

/// Pieces queued between receiving and writing, per fetch.
const WRITE_AHEAD: usize = 4;

/// How receiving a file's bytes ended, when it did not fail.
enum Received {
    All,
    /// The fetch was dropped meanwhile.
    NotWanted,
}

/// Receives the bytes `span` of the file from `stream` (checking each
/// piece is where it belongs) and hands them to the writer.
async fn receive(
    ctx: &SyncContext,
    limit: &RateLimit,
    hash: &BlobHash,
    span: std::ops::Range<u64>,
    stream: &mut tonic::Streaming<pb::BlobChunk>,
    to_writer: tokio::sync::mpsc::Sender<bytes::Bytes>,
) -> Result<Received, FetchError> {
    use FetchError::Transfer;
    let (mut at, size) = (span.start, span.end);
    let mut next_check = at + RECHECK_EVERY_BYTES;
    while at < size {
        let next = tokio::time::timeout(IDLE, stream.message())
            .await
            .map_err(|_| Transfer(format!("the origin sent nothing for {IDLE:?}")))?;
        let Some(piece) = next.map_err(|s| Transfer(status_text(&s)))? else {
            return Err(Transfer(format!(
                "the origin ended the transfer at {at} of {size} bytes"
            )));
        };
        if piece.offset != at {
            return Err(Transfer(format!(
                "the origin sent bytes at {}, expected {at}",
                piece.offset
            )));
        }
        if piece.data.len() as u64 > size - at {
            return Err(Transfer(
                "the origin sent more bytes than the file has".into(),
            ));
        }
        let wait = limit.reserve(piece.data.len());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        at += piece.data.len() as u64;
        if to_writer.send(piece.data).await.is_err() {
            // The writer stopped: its error says why.
            return Ok(Received::All);
        }
        if at >= next_check {
            next_check = at + RECHECK_EVERY_BYTES;
            ctx.store.check_space()?;
            if ctx.store.fetch(hash)?.is_none() {
                // Not wanted any more (no record lists it, or the same
                // bytes were uploaded here).
                return Ok(Received::NotWanted);
            }
        }
    }
    Ok(Received::All)
}

/// Writes and hashes pieces as they come; returns the staged file once
/// the sender is done.
fn write_pieces(
    mut staged: crate::store::staging::StagedFile,
    mut pieces: tokio::sync::mpsc::Receiver<bytes::Bytes>,
) -> std::io::Result<crate::store::staging::StagedFile> {
    while let Some(piece) = pieces.blocking_recv() {
        staged.write(&piece)?;
    }
    Ok(staged)
}

/// A fetch no longer wanted: its staged bytes go.
fn not_wanted(blobs: &BlobService, hash: &BlobHash) -> Result<(), FetchError> {
    blobs
        .staging()
        .drop_fetch(hash)
        .map_err(|e| FetchError::Transfer(format!("removing the staged file: {e}")))
}

/// Removes unreferenced blobs when references go away, and every minute
/// (uploads whose grace time ran out).
pub async fn run_sweeper(
    ctx: Arc<SyncContext>,
    blobs: Arc<BlobService>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        match blobs.sweep().await {
            Ok((0, 0)) => {}
            Ok((blobs, fetches)) => {
                tracing::info!(blobs, fetches, "removed files no record lists");
            }
            Err(e) => tracing::error!(error = %e, "removing unreferenced files failed"),
        }
        tokio::select! {
            _ = ctx.store.blob_wake.sweep.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_spaces_pieces_by_their_size() {
        let limit = RateLimit {
            bytes_per_sec: 1000,
            next_free: Mutex::new(Instant::now()),
        };
        assert!(limit.reserve(500) < Duration::from_millis(50));
        let second = limit.reserve(500);
        assert!(
            second > Duration::from_millis(400) && second <= Duration::from_millis(500),
            "{second:?}"
        );
        let none = RateLimit {
            bytes_per_sec: 0,
            next_free: Mutex::new(Instant::now()),
        };
        assert_eq!(none.reserve(1 << 30), Duration::ZERO);
    }
}
