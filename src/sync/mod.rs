//! Replication at run time: one puller per pinned peer ([`puller`]), the
//! serving side of `Pull` ([`feed`]) with the versions its streams share
//! ([`version_cache`]) and what peers could not take from it
//! ([`rejections`]), and the expiry sweeper.
//!
//! The wire types come from `protocol::pb` and connections from
//! `protocol::transport`; the gRPC servers call in here, never the other
//! way round.

pub mod backoff;
mod error;
pub mod feed;
pub mod fetch;
pub mod guard;
mod heard;
pub mod puller;
pub mod rejections;
pub mod version_cache;
pub mod witness;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use error::{FetchError, PullError, Rejection, StreamError};

use crate::domain::OfficeId;
use crate::domain::rejection::FeedRejection;
use crate::domain::sharing::Peer;
use crate::identity::OfficeCa;
use crate::service::{LinkStatus, PeerRuntime, Sharing};
use crate::store::Store;

/// How often an idle `Pull` stream carries a heartbeat; a puller that hears
/// nothing for three of these reconnects.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// Largest replication message a node sends (a batch) and takes from an
/// origin.
pub const MAX_MESSAGE: usize = 96 * 1024 * 1024;
/// Largest message a node takes from a peer pulling from it: starts,
/// acknowledgements, purge acknowledgements and file requests are all small.
pub const MAX_PEER_REQUEST: usize = 64 * 1024;

/// What pullers and feed streams share.
pub struct SyncContext {
    pub office: OfficeId,
    pub store: Arc<Store>,
    pub ca: Arc<OfficeCa>,
    pub sharing: Arc<Sharing>,
    /// This node's certificate and key (PEM), presented to peers.
    pub node_cert_pem: Vec<u8>,
    pub node_key_pem: Vec<u8>,
    /// Set when the node shuts down: every stream and puller ends.
    pub shutdown: watch::Receiver<bool>,
    /// Bumped whenever a peer is removed, so open feed streams check at
    /// once whether their peer is still pinned.
    pub removed: watch::Sender<u64>,
    /// Serving streams, joined at shutdown so nothing holds the store.
    pub feeds: Mutex<tokio::task::JoinSet<()>>,
    /// Announces replicas once they are durable here (for monitoring and
    /// benchmarks; nobody needs to listen).
    pub applied: tokio::sync::broadcast::Sender<Applied>,
    /// The audit log: batches served, replicas applied or rejected.
    pub audit: Arc<crate::service::AuditLog>,
    /// Refusals of a peer's entries and messages, counted per peer.
    pub refusals: Arc<crate::service::refusals::RefusalLog>,
    /// What each peer may ask at once, and how often.
    pub guards: Arc<guard::PeerGuards>,
    /// Versions recently read for a feed, shared by every feed stream.
    pub versions: Arc<version_cache::VersionCache>,
    /// Batches sent and applied, entries refused, files fetched.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The search index, purged before a purge acknowledgement is signed
    /// (none when the node keeps no index).
    pub search: Option<Arc<crate::search::Search>>,
    /// What each peer could not take from this office's feed.
    pub rejections: rejections::FeedRejections,
}

/// Versions from one peer's batch that are now durable and readable here.
#[derive(Debug, Clone)]
pub struct Applied {
    pub origin: OfficeId,
    pub versions: Arc<Vec<(crate::domain::RecordId, u64)>>,
}

impl SyncContext {
    /// Runs a serving stream as a tracked task.
    pub fn spawn_feed(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        while feeds.try_join_next().is_some() {}
        feeds.spawn(fut);
    }

    /// Waits for every serving stream to end (they end on shutdown).
    pub async fn join_feeds(&self) {
        let mut feeds = std::mem::take(&mut *self.feeds.lock().unwrap_or_else(|p| p.into_inner()));
        while feeds.join_next().await.is_some() {}
    }
}

struct Link {
    status: Arc<Mutex<LinkStatus>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The pullers of a node; implements [`PeerRuntime`] for the sharing use
/// cases.
pub struct Replicator {
    ctx: Arc<SyncContext>,
    links: Mutex<HashMap<OfficeId, Link>>,
}

impl Replicator {
    pub fn new(ctx: Arc<SyncContext>) -> Self {
        Self {
            ctx,
            links: Mutex::new(HashMap::new()),
        }
    }

    pub fn context(&self) -> &Arc<SyncContext> {
        &self.ctx
    }

    fn links(&self) -> std::sync::MutexGuard<'_, HashMap<OfficeId, Link>> {
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a puller for every pinned peer.
    pub fn start_all(&self) -> crate::error::Result<()> {
        for peer in self.ctx.store.peers()? {
            self.peer_added(&peer);
        }
        Ok(())
    }

    /// Stops every puller and waits for them.
    pub async fn stop_all(&self) {
        let links: Vec<Link> = self.links().drain().map(|(_, l)| l).collect();
        for link in links {
            let _ = link.stop.send(true);
            let _ = link.task.await;
        }
    }
}

impl PeerRuntime for Replicator {
    fn peer_added(&self, peer: &Peer) {
        let status = Arc::new(Mutex::new(LinkStatus::default()));
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(puller::run(
            self.ctx.clone(),
            peer.clone(),
            status.clone(),
            stop_rx,
        ));
        if let Some(old) = self
            .links()
            .insert(peer.office.clone(), Link { status, stop, task })
        {
            let _ = old.stop.send(true);
        }
    }

    fn peer_removed(&self, office: &OfficeId) -> Option<JoinHandle<()>> {
        self.ctx.removed.send_modify(|n| *n += 1);
        // Its live Pull is told to end, and its rations start afresh if
        // it is pinned again.
        self.ctx.guards.forget(office);
        self.ctx.rejections.forget(office);
        let link = self.links().remove(office)?;
        let _ = link.stop.send(true);
        Some(link.task)
    }

    fn link_status(&self, office: &OfficeId) -> LinkStatus {
        self.links()
            .get(office)
            .map(|l| l.status.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .unwrap_or_default()
    }

    fn feed_rejections(&self, office: &OfficeId) -> (Vec<FeedRejection>, u64) {
        self.ctx.rejections.view(office)
    }
}

/// Ends grants as their expiry passes, with no admin action.
pub async fn run_expiry(sharing: Arc<Sharing>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let next = match sharing.expire_due().await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "expiring grants failed; retrying");
                Some(crate::domain::now_ms() + 1000)
            }
        };
        let wait = next
            .map(|at| Duration::from_millis(at.saturating_sub(crate::domain::now_ms())))
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = sharing.grants_changed.notified() => {}
            _ = shutdown.changed() => return,
        }
    }
}
