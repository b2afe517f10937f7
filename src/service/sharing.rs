//! Sharing: pinned peers and grants, and what each change puts in the
//! peers' feeds.
//!
//! Consistency: every record write computes its feed entries and commits
//! them in the same transaction as the version, under a shared `gate`. A
//! grant change holds the gate exclusively only to store the grant (or its
//! end) and put it in force, a few milliseconds whatever the grant covers;
//! the work that grows with the grant — queueing a backfill, or the
//! revocations of a close — runs afterwards, with writes going on, as a
//! grant job (marked in the store with the grant, run to its end even if
//! the caller goes away, and re-run at start-up if a crash cut it short).
//! Why that loses nothing and reveals nothing:
//!
//! - **Backfill.** From the moment a grant is in force, every write queues
//!   its own version for the peer. The backfill walks the records the
//!   grant covers in id order, a bounded batch at a time, and queues each
//!   one's history up to the head it reads then; a batch and the cursor
//!   saying how far it got are one transaction, so a crash resumes after
//!   the last batch and loses none. A version written meanwhile is queued
//!   by its write, by the backfill, or by both (applying is idempotent). A
//!   write does not rely on a backfill still running to carry a record's
//!   history (the record may leave the case before the backfill reaches
//!   it): while any grant that showed the record is still being
//!   backfilled, the write queues the whole history itself. A backfill
//!   skips records the peer already sees only through grants whose own
//!   backfill is complete, and it stops as soon as its grant ends: what it
//!   queued is checked against the sharing rule when sent
//!   ([`crate::sync`]), so nothing it queued reaches a peer no longer
//!   granted.
//! - **Close** (revoke, expiry). The revocations must name exactly the
//!   records the grant covered when it ended: none added to the case later.
//!   While a close is queued, writes that move a record into or out of its
//!   case note where the record stood when the grant ended (the first move
//!   tells), and a record leaving the case gets its revocation from the
//!   write itself (durable with the version). The close reads the case as
//!   it is, then takes those notes: records moved in are left out, records
//!   moved out are put back. A revocation is not sent if the record is
//!   visible to the peer again by the time it is sent (granted anew, or
//!   moved into a case still granted): its versions follow in the feed.
//!   A close resumed after a crash (the notes are gone) reads what the
//!   grant showed from the records' signed versions and their times; the
//!   end is stamped a millisecond before any write that follows it.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

use rustls_pki_types::CertificateDer;

use crate::domain::audit::{Actor, Draft, Outcome, Target};
use crate::domain::rejection::FeedRejection;
use crate::domain::sharing::{
    self, EndReason, FeedItem, Grant, GrantId, GrantJob, GrantTarget, Peer,
};
use crate::domain::{Limits, OfficeId, RecordId, RecordVersion, now_ms};
use crate::error::{Error, Result};
use crate::identity::tls::TrustStore;
use crate::identity::{Fingerprint, pki::certs_from_pem};
use crate::search::Search;
use crate::service::audit::Call;
use crate::store::{ListFilter, PeerRemoval, Store, StoreError};

/// Records a backfill reads per batch: each batch is one short transaction,
/// so that writes, which share sled's one-transaction-at-a-time, never wait
/// long behind it.
const BACKFILL_BATCH: usize = 256;
/// Records queued by a backfill between two commits (each commit lets the
/// queued entries be served).
const BACKFILL_COMMIT: usize = 4096;

/// Live link state the replication runtime reports for a peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStatus {
    pub connected: bool,
    pub last_contact_ms: u64,
    pub last_error: String,
}

/// The replication runtime, as the sharing use cases see it. Implemented
/// by `sync::Replicator`; declared here so dependencies point one way.
pub trait PeerRuntime: Send + Sync {
    fn peer_added(&self, peer: &Peer);
    /// Stops replication with `office`; returns the puller task to wait for.
    fn peer_removed(&self, office: &OfficeId) -> Option<tokio::task::JoinHandle<()>>;
    fn link_status(&self, office: &OfficeId) -> LinkStatus;
    /// What `office` could not take from this office's feed, newest
    /// first, and how many of its reports were not kept.
    fn feed_rejections(&self, office: &OfficeId) -> (Vec<FeedRejection>, u64);
}

/// A peer with its live status, for `ListPeers`.
#[derive(Debug, Clone)]
pub struct PeerView {
    pub peer: Peer,
    pub fingerprint: Fingerprint,
    pub link: LinkStatus,
    pub checkpoint: u64,
    pub outbox_pending: u64,
    /// Records of the peer's office held here.
    pub replicas: u64,
    /// Versions of this office's feed the peer could not take, newest
    /// first ([`crate::domain::rejection`]).
    pub feed_rejections: Vec<FeedRejection>,
    /// The peer's reports that `feed_rejections` no longer holds.
    pub feed_rejections_dropped: u64,
}

pub struct Sharing {
    office: OfficeId,
    store: Arc<Store>,
    trust: Arc<TrustStore>,
    limits: Limits,
    grants: RwLock<Vec<Grant>>,
    gate: tokio::sync::RwLock<()>,
    /// Wakes the expiry sweeper when grants change.
    pub grants_changed: tokio::sync::Notify,
    /// Weak: the runtime holds this service, and the node must be able to
    /// drop both (and close the store) at shutdown.
    runtime: OnceLock<Weak<dyn PeerRuntime>>,
    /// Purged with the replicas of a removed peer (none when the node
    /// keeps no index).
    search: Option<Arc<Search>>,
    /// Bumped on every grant change; a feed batch built under an older
    /// generation is rebuilt before it is sent.
    generation: AtomicU64,
    /// Serializes storing purge acknowledgements (they touch only ended
    /// grants, so they need not hold writes back) with queueing closes,
    /// which read what a grant revealed (an acknowledgement lets it go).
    acks: tokio::sync::Mutex<()>,
    /// Grant jobs running now, and what writes that race them note for
    /// them.
    running: Mutex<Running>,
}

/// Grant jobs running outside the gate (see the module docs).
#[derive(Default)]
struct Running {
    /// Grants whose backfill is being queued, counted (a peer's re-queue
    /// may run beside a grant's own backfill).
    backfilling: HashMap<GrantId, usize>,
    /// Grants of a case whose close is being queued.
    closing: HashMap<GrantId, CaseAtEnd>,
}

/// For a grant of a case whose close is being queued: where each record
/// that moved into or out of the case since the grant ended stood when it
/// ended (`true`: in the case).
struct CaseAtEnd {
    peer: OfficeId,
    collection: String,
    moved: HashMap<RecordId, bool>,
}

/// Which backfill: a grant's own, that skips records the peer already sees
/// through grants already backfilled; or again, for a peer that lost its
/// state, that skips nothing.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Backfill {
    New,
    Again,
}

/// Counts a backfill as running while it lives.
struct BackfillRun {
    sharing: Arc<Sharing>,
    grant: GrantId,
}

impl BackfillRun {
    fn start(sharing: &Arc<Sharing>, grant: &GrantId) -> Self {
        *sharing
            .running()
            .backfilling
            .entry(grant.clone())
            .or_default() += 1;
        Self {
            sharing: sharing.clone(),
            grant: grant.clone(),
        }
    }
}

impl Drop for BackfillRun {
    fn drop(&mut self) {
        let mut running = self.sharing.running();
        if let Some(n) = running.backfilling.get_mut(&self.grant) {
            *n -= 1;
            if *n == 0 {
                running.backfilling.remove(&self.grant);
            }
        }
    }
}

/// Runs a grant job to its end in a task of its own, even if the caller
/// goes away (a cancelled call, a deadline).
async fn to_completion<T: Send + 'static>(
    job: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    tokio::spawn(job).await.map_err(|e| {
        Error::Store(StoreError::Inconsistent(format!(
            "a grant job's task failed: {e}"
        )))
    })?
}

/// Runs blocking store work of a grant job off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        Error::Store(StoreError::Inconsistent(format!(
            "a grant job's batch failed: {e}"
        )))
    })?
}

/// Waits (a few milliseconds at most) until the clock is past `ms`, so
/// that every write after a grant's end carries a later time than the end.
async fn past(ms: u64) {
    for _ in 0..5 {
        if now_ms() > ms {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

impl Sharing {
    pub fn new(
        office: OfficeId,
        store: Arc<Store>,
        trust: Arc<TrustStore>,
        limits: Limits,
        search: Option<Arc<Search>>,
    ) -> Result<Self> {
        let grants = store.grants()?;
        let peers = store.peers()?;
        trust.set_peers(
            peers
                .iter()
                .map(|p| (p.office.clone(), CertificateDer::from(p.ca_der.clone())))
                .collect(),
        )?;
        Ok(Self {
            office,
            store,
            trust,
            limits,
            grants: RwLock::new(grants),
            gate: tokio::sync::RwLock::new(()),
            grants_changed: tokio::sync::Notify::new(),
            runtime: OnceLock::new(),
            search,
            generation: AtomicU64::new(0),
            acks: tokio::sync::Mutex::new(()),
            running: Mutex::new(Running::default()),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// What an admin should be told about a grant just made: a collection
    /// that holds no record of this office yet may be a mistyped case
    /// number (granting a case before its first record is allowed).
    pub fn grant_warnings(&self, grant: &Grant) -> Result<Vec<String>> {
        let GrantTarget::Collection(c) = &grant.target else {
            return Ok(Vec::new());
        };
        let filter = ListFilter {
            collection: Some(c.clone()),
            origin: Some(self.office.clone()),
        };
        if self.store.list(&filter, None, 1)?.records.is_empty() {
            return Ok(vec![format!(
                "collection {c} holds no records of {} yet; {} receives them once they are written (check the case number if you expected some)",
                self.office, grant.peer
            )]);
        }
        Ok(Vec::new())
    }

    pub fn office(&self) -> &OfficeId {
        &self.office
    }

    pub fn set_runtime(&self, runtime: Weak<dyn PeerRuntime>) {
        let _ = self.runtime.set(runtime);
    }

    fn runtime(&self) -> Option<Arc<dyn PeerRuntime>> {
        self.runtime.get().and_then(Weak::upgrade)
    }

    fn grants_read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Grant>> {
        self.grants.read().unwrap_or_else(|p| p.into_inner())
    }

    fn grants_write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Grant>> {
        self.grants.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Taken after `grants` when both are held.
    fn running(&self) -> std::sync::MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether grant `id` is in force now (not ended, not expired).
    fn in_force(&self, id: &GrantId) -> bool {
        let now = now_ms();
        self.grants_read()
            .iter()
            .any(|g| &g.id == id && g.is_active(now))
    }

    /// The sharing rule for one peer, now.
    pub fn visible(&self, peer: &OfficeId, id: &RecordId, collection: &str) -> bool {
        let grants = self.grants_read();
        sharing::visible(
            grants.iter().filter(|g| &g.peer == peer),
            &self.office,
            id,
            collection,
            now_ms(),
        )
    }

    /// Holds writes back while a grant change is in progress.
    pub async fn write_guard(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.gate.read().await
    }

    /// Feed entries for a write that turns `prev` (id, collection) into
    /// `next`: the new version for every peer that sees the record now, and
    /// a revocation for a peer that saw it before but no longer does. Notes
    /// a move into or out of the case of a grant whose close is being
    /// queued (see the module docs).
    pub fn feed_for_write(
        &self,
        prev_collection: Option<&str>,
        next: &RecordVersion,
    ) -> Vec<(OfficeId, FeedItem)> {
        let now = now_ms();
        let grants = self.grants_read();
        let mut running = self.running();
        // Peers of closing grants whose case held this record when they
        // ended, and which it leaves now.
        let mut leaving: BTreeSet<OfficeId> = BTreeSet::new();
        for case in running.closing.values_mut() {
            let was_in = prev_collection == Some(case.collection.as_str());
            let is_in = next.collection == case.collection;
            if was_in != is_in {
                let at_end = *case.moved.entry(next.id.clone()).or_insert(was_in);
                if at_end && !is_in {
                    leaving.insert(case.peer.clone());
                }
            }
        }
        let mut peers: BTreeSet<OfficeId> = grants
            .iter()
            .filter(|g| g.is_active(now))
            .map(|g| g.peer.clone())
            .collect();
        peers.extend(leaving.iter().cloned());
        let mut feed = Vec::new();
        for peer in peers {
            let mine = || grants.iter().filter(|g| g.peer == peer);
            let after = sharing::visible(mine(), &self.office, &next.id, &next.collection, now);
            // "Before" counts grants that expired but are not swept yet: the
            // peer may still hold the record, and the sweep's revocations
            // only look at current membership.
            let before = leaving.contains(&peer)
                || prev_collection
                    .is_some_and(|c| mine().any(|g| g.ended_at_ms == 0 && g.covers(&next.id, c)));
            if after {
                // A record the peer could not see before (moved into a
                // granted case) travels with its whole history; so does one
                // it saw only through grants still being backfilled, which
                // may never reach it.
                let backfilled = || mine().filter(|g| !running.backfilling.contains_key(&g.id));
                let saw = prev_collection.is_some_and(|c| {
                    sharing::visible(backfilled(), &self.office, &next.id, c, now)
                });
                feed.push((
                    peer.clone(),
                    FeedItem::Versions {
                        id: next.id.clone(),
                        from: if saw { next.version } else { 1 },
                        to: next.version,
                    },
                ));
            } else if before {
                feed.push((
                    peer.clone(),
                    FeedItem::Revoke {
                        id: next.id.clone(),
                    },
                ));
            }
        }
        feed
    }

    // ---- peers -------------------------------------------------------

    pub async fn add_peer(
        self: &Arc<Self>,
        office: OfficeId,
        endpoint: &str,
        ca_pem: &str,
        expected: Option<Fingerprint>,
        call: &Call,
    ) -> Result<(Peer, Fingerprint)> {
        if office == self.office {
            return Err(Error::PinSelf);
        }
        let ca = checked_peer_ca(&office, endpoint, ca_pem)?;
        let fingerprint = Fingerprint::of(&ca);
        if let Some(expected) = expected {
            if expected != fingerprint {
                return Err(Error::FingerprintMismatch {
                    actual: fingerprint,
                    expected,
                });
            }
        }
        let gate = self.gate.write().await;
        if self.store.peer(&office)?.is_some() {
            return Err(Error::PeerAlreadyPinned(office));
        }
        // A removal of this office left unfinished (its purge failed) is
        // finished before it is pinned again, so no purge asked for is lost.
        let mut purged = 0;
        if let Some((_, removal)) = self
            .store
            .removals()?
            .into_iter()
            .find(|(o, _)| o == &office)
        {
            let actor = Actor::node(self.office.as_str());
            purged = self.finish_removal(&office, removal, now_ms(), &actor)?;
        }
        let peer = Peer {
            office,
            endpoint: endpoint.to_owned(),
            ca_der: ca.to_vec(),
            added_at_ms: now_ms(),
        };
        let entry = call.entry(Target {
            peer: peer.office.to_string(),
            detail: format!("pinned office CA {fingerprint}, endpoint {endpoint}"),
            ..Target::default()
        });
        self.store.put_peer(&peer, &[entry])?;
        drop(gate);
        if purged > 0 {
            self.store.commit().await?;
            self.purge_search().await?;
        }
        // A peer pinned again gets the revocations of grants that ended
        // while it was not pinned, so it does not keep those copies.
        self.requeue(&peer.office).await?;
        self.refresh_trust()?;
        if let Some(rt) = self.runtime() {
            rt.peer_added(&peer);
        }
        Ok((peer, fingerprint))
    }

    fn refresh_trust(&self) -> Result<()> {
        let peers = self.store.peers()?;
        self.trust.set_peers(
            peers
                .into_iter()
                .map(|p| (p.office, CertificateDer::from(p.ca_der)))
                .collect(),
        )?;
        Ok(())
    }

    /// Unpins a peer: both directions stop, its grants end, and with
    /// `purge_replicas` its records held here are deleted (leaving stubs).
    /// Returns (replicas purged, grants closed).
    pub async fn remove_peer(
        &self,
        office: &OfficeId,
        purge_replicas: bool,
        call: &Call,
    ) -> Result<(u64, u64)> {
        let gate = self.gate.write().await;
        if self.store.peer(office)?.is_none() {
            return Err(Error::PeerNotPinned(office.clone()));
        }
        // End the grants first (each with its revocations queued, in case
        // the unpin below never happens): an unpinned peer never keeps an
        // active grant, even after a crash in between.
        let now = now_ms();
        let active: Vec<Grant> = self
            .grants_read()
            .iter()
            .filter(|g| &g.peer == office && g.ended_at_ms == 0)
            .cloned()
            .collect();
        let closed = active.len() as u64;
        for mut g in active {
            g.ended_at_ms = now;
            g.end_reason = Some(EndReason::PeerRemoved);
            let ended = Draft::new(
                call.actor().clone(),
                "grant.ended",
                grant_target(&g),
                Outcome::ok(),
            );
            self.store
                .put_grant_with_feed(&g, &[], Some(GrantJob::Close), &[ended])?;
            self.replace_grant(g.clone());
            self.close(&g, Closing::UnderGate)?;
            self.store.clear_job(&g.id)?;
        }
        let entry = call.entry(Target {
            peer: office.to_string(),
            detail: format!("unpinned; {closed} grants closed; purge replicas: {purge_replicas}"),
            ..Target::default()
        });
        let removal = PeerRemoval { purge_replicas };
        self.store.unpin_peer(office, removal, &[entry])?;
        self.store.commit().await?;
        self.refresh_trust()?;
        // Wait for the puller, so nothing it applies lands after the purge.
        if let Some(task) = self.runtime().and_then(|rt| rt.peer_removed(office)) {
            let _ = task.await;
        }
        let purged = self.finish_removal(office, removal, now, call.actor())?;
        self.store.commit().await?;
        drop(gate);
        self.grants_changed.notify_one();
        if purged > 0 {
            self.purge_search().await?;
        }
        Ok((purged, closed))
    }

    /// Rewrites the search index files so that purged replicas' words are
    /// in none of them.
    async fn purge_search(&self) -> Result<()> {
        let Some(search) = self.search.clone() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || search.purge())
            .await
            .map_err(|e| Error::Internal(format!("the search purge's task failed: {e}")))??;
        Ok(())
    }

    /// The end of a peer's removal, once it is unpinned and its puller has
    /// stopped: its feeds are forgotten and, if asked, its replicas purged.
    /// Recorded as started with the unpin, so a crash in between is
    /// finished at the next start ([`Sharing::resume_jobs`]).
    fn finish_removal(
        &self,
        office: &OfficeId,
        removal: PeerRemoval,
        now: u64,
        actor: &Actor,
    ) -> Result<u64> {
        self.store.forget_peer_feeds(office)?;
        let purged = if removal.purge_replicas {
            self.store.purge_replicas_of(office, now, actor)?
        } else {
            0
        };
        self.store.finish_removal(office)?;
        Ok(purged)
    }

    /// Queues again everything `peer` may see, and the revocations of grants
    /// it never confirmed purging: for a peer that lost its state (it
    /// re-pinned this office, or was restored from a backup). Writes go on
    /// meanwhile (see the module docs).
    pub async fn requeue(self: &Arc<Self>, peer: &OfficeId) -> Result<()> {
        for g in self.grants(Some(peer)) {
            if g.ended_at_ms == 0 {
                let run = BackfillRun::start(self, &g.id);
                let this = self.clone();
                to_completion(async move { this.backfill(g, Backfill::Again, run).await }).await?;
            } else if g.purge_ack.is_none() {
                let this = self.clone();
                to_completion(async move { this.close_job(g, Closing::Again).await }).await?;
            }
        }
        self.store.commit().await?;
        Ok(())
    }

    /// The records `grant` showed its peer: those it covers that had a
    /// version inside it dated before it ended (or expired, if that came
    /// first: the sweep that ends an expired grant may come later, and
    /// nothing written after the expiry was sent).
    fn revealed_by(&self, grant: &Grant) -> Result<Vec<RecordId>> {
        let end = match grant.expires_at_ms {
            0 => grant.ended_at_ms,
            expiry => expiry.min(grant.ended_at_ms),
        };
        let mut out = Vec::new();
        for id in self.covered(&grant.target)? {
            let inside = |v: &crate::domain::RecordVersion| match &grant.target {
                GrantTarget::Collection(c) => &v.collection == c,
                GrantTarget::Record(_) => true,
            };
            let shown = match self.store.latest(&id)? {
                Some(latest) if latest.record.updated_at_ms <= end => inside(&latest.record),
                // Changed since: an earlier version may have been shown.
                Some(_) => self
                    .store
                    .history(&id)?
                    .iter()
                    .any(|v| v.record.updated_at_ms <= end && inside(&v.record)),
                None => false,
            };
            if shown {
                out.push(id);
            }
        }
        Ok(out)
    }

    pub fn peers(&self) -> Result<Vec<PeerView>> {
        let mut out = Vec::new();
        for peer in self.store.peers()? {
            let runtime = self.runtime();
            let link = runtime
                .as_ref()
                .map(|rt| rt.link_status(&peer.office))
                .unwrap_or_default();
            let (feed_rejections, feed_rejections_dropped) = runtime
                .map(|rt| rt.feed_rejections(&peer.office))
                .unwrap_or_default();
            out.push(PeerView {
                feed_rejections,
                feed_rejections_dropped,
                fingerprint: Fingerprint::of(&peer.ca_der),
                checkpoint: self.store.checkpoint(&peer.office)?,
                outbox_pending: self.store.outbox_pending(&peer.office)?,
                replicas: self.store.records_of(&peer.office)?,
                link,
                peer,
            });
        }
        Ok(out)
    }

    pub fn peer(&self, office: &OfficeId) -> Result<Option<Peer>> {
        Ok(self.store.peer(office)?)
    }

    // ---- grants ------------------------------------------------------

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    fn replace_grant(&self, g: Grant) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let mut grants = self.grants_write();
        match grants.iter_mut().find(|x| x.id == g.id) {
            Some(slot) => *slot = g,
            None => grants.push(g),
        }
    }

    pub fn grants(&self, peer: Option<&OfficeId>) -> Vec<Grant> {
        let mut out: Vec<Grant> = self
            .grants_read()
            .iter()
            .filter(|g| peer.is_none_or(|p| &g.peer == p))
            .cloned()
            .collect();
        out.sort_by(|a, b| b.created_at_ms.cmp(&a.created_at_ms).then(a.id.cmp(&b.id)));
        out
    }

    /// Record ids of this office that `target` covers, deleted ones included.
    fn covered(&self, target: &GrantTarget) -> Result<Vec<RecordId>> {
        Ok(match target {
            GrantTarget::Collection(c) => self.store.collection_ids(c, &self.office)?,
            GrantTarget::Record(id) => {
                if self.store.head(id)?.is_some() {
                    vec![id.clone()]
                } else {
                    Vec::new()
                }
            }
        })
    }

    pub async fn grant(
        self: &Arc<Self>,
        peer: OfficeId,
        target: GrantTarget,
        expires_at_ms: u64,
        call: &Call,
    ) -> Result<Grant> {
        let now = now_ms();
        if expires_at_ms != 0 && expires_at_ms <= now {
            return Err(Error::ExpiryInPast);
        }
        if expires_at_ms > crate::domain::MAX_TIME_MS {
            return Err(Error::ExpiryTooLate(crate::domain::format_time(
                crate::domain::MAX_TIME_MS,
            )));
        }
        match &target {
            GrantTarget::Collection(c) => {
                Limits::check_text("collection", c, self.limits.max_collection_bytes, true)?;
            }
            GrantTarget::Record(id) => {
                if id.origin() != self.office {
                    return Err(Error::NotOrigin {
                        id: id.to_string(),
                        origin: id.origin().to_string(),
                    });
                }
                if self.store.head(id)?.is_none() {
                    return Err(Error::RecordNotFound(id.to_string()));
                }
            }
        }
        let (grant, run) = {
            let _gate = self.gate.write().await;
            if self.store.peer(&peer)?.is_none() {
                return Err(Error::PeerNotPinned(peer));
            }
            let mut random = [0u8; 8];
            crate::domain::random_bytes(&mut random);
            let grant = Grant {
                id: GrantId::generate(random),
                peer,
                target,
                created_at_ms: now,
                expires_at_ms,
                ended_at_ms: 0,
                end_reason: None,
                purge_ack: None,
            };
            self.store.put_grant_with_feed(
                &grant,
                &[],
                Some(GrantJob::Backfill),
                &[call.entry(grant_target(&grant))],
            )?;
            // Counted as backfilling before any write sees it in force.
            let run = BackfillRun::start(self, &grant.id);
            self.replace_grant(grant.clone());
            (grant, run)
        };
        // In force: writes from now on queue for it themselves.
        let this = self.clone();
        let job = grant.clone();
        to_completion(async move { this.backfill(job, Backfill::New, run).await }).await?;
        self.grants_changed.notify_one();
        Ok(grant)
    }

    /// Queues, a batch at a time and with writes going on, the history of
    /// every record `grant` covers, and stops if the grant ends meanwhile.
    /// A grant's own backfill resumes from its cursor in the store, and
    /// ends its job.
    async fn backfill(
        self: Arc<Self>,
        grant: Grant,
        kind: Backfill,
        run: BackfillRun,
    ) -> Result<()> {
        let _run = run;
        let mut after = match kind {
            Backfill::New => self.store.backfill_cursor(&grant.id)?,
            Backfill::Again => None,
        };
        let mut uncommitted = 0;
        loop {
            let this = self.clone();
            let job = grant.clone();
            let from = after.clone();
            let step = blocking(move || this.backfill_batch(&job, from.as_ref(), kind)).await?;
            // None: the grant ended; what is queued is not sent.
            let Some((queued, next)) = step else { break };
            let Some(next) = next else { break };
            after = Some(next);
            uncommitted += queued;
            if uncommitted >= BACKFILL_COMMIT {
                self.store.commit().await?;
                uncommitted = 0;
            }
        }
        if kind == Backfill::New {
            self.store.finish_backfill(&grant.id)?;
        }
        self.store.commit().await?;
        Ok(())
    }

    /// One batch of a backfill: the records `grant` covers after `after`.
    /// Returns how many it queued and where the next batch starts (`None`
    /// when there is no more), or `None` if the grant is no longer in force.
    fn backfill_batch(
        &self,
        grant: &Grant,
        after: Option<&RecordId>,
        kind: Backfill,
    ) -> Result<Option<(usize, Option<RecordId>)>> {
        if !self.in_force(&grant.id) {
            return Ok(None);
        }
        let (ids, last, more) = match &grant.target {
            GrantTarget::Collection(c) => {
                let page = self
                    .store
                    .collection_page(c, &self.office, after, BACKFILL_BATCH)?;
                (page.ids, page.last, page.more)
            }
            GrantTarget::Record(id) if after.is_none() => {
                (vec![id.clone()], Some(id.clone()), false)
            }
            GrantTarget::Record(_) => (Vec::new(), None, false),
        };
        let mut heads = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(head) = self.store.head(&id)? {
                heads.push((id, head));
            }
        }
        let now = now_ms();
        let feed: Vec<(OfficeId, FeedItem)> = {
            let grants = self.grants_read();
            let running = self.running();
            // Grants that already queued all they cover for this peer.
            let backfilled = || {
                grants.iter().filter(|g| {
                    g.peer == grant.peer
                        && g.id != grant.id
                        && !running.backfilling.contains_key(&g.id)
                })
            };
            heads
                .into_iter()
                .filter(|(id, head)| {
                    kind == Backfill::Again
                        || !sharing::visible(backfilled(), &self.office, id, &head.collection, now)
                })
                // A granted record travels with its whole history.
                .map(|(id, head)| {
                    let item = FeedItem::Versions {
                        id,
                        from: 1,
                        to: head.version,
                    };
                    (grant.peer.clone(), item)
                })
                .collect()
        };
        match (&last, kind) {
            (Some(last), Backfill::New) => self.store.queue_backfill(&grant.id, &feed, last)?,
            _ => self.store.push_feed(&feed)?,
        }
        Ok(Some((feed.len(), if more { last } else { None })))
    }

    pub async fn revoke(
        self: &Arc<Self>,
        id: &GrantId,
        reason: EndReason,
        call: &Call,
    ) -> Result<Grant> {
        let grant = {
            let _gate = self.gate.write().await;
            let mut grant = self
                .store
                .grant(id)?
                .ok_or_else(|| Error::GrantNotFound(id.clone()))?;
            if grant.ended_at_ms != 0 {
                return Err(Error::GrantEnded {
                    id: id.clone(),
                    reason: grant
                        .end_reason
                        .map(EndReason::as_str)
                        .unwrap_or("ended")
                        .to_owned(),
                });
            }
            grant.ended_at_ms = now_ms();
            grant.end_reason = Some(reason);
            self.store.put_grant_with_feed(
                &grant,
                &[],
                Some(GrantJob::Close),
                &[call.entry(grant_target(&grant))],
            )?;
            // From now on, writes note moves into and out of its case.
            if let GrantTarget::Collection(c) = &grant.target {
                let case = CaseAtEnd {
                    peer: grant.peer.clone(),
                    collection: c.clone(),
                    moved: HashMap::new(),
                };
                self.running().closing.insert(grant.id.clone(), case);
            }
            self.replace_grant(grant.clone());
            // Every write after the end carries a later time, for a close
            // resumed after a crash (it reads what was shown from times).
            past(grant.ended_at_ms).await;
            grant
        };
        let this = self.clone();
        let job = grant.clone();
        to_completion(async move { this.close_job(job, Closing::Tracked).await }).await?;
        self.grants_changed.notify_one();
        Ok(grant)
    }

    /// Queues a grant's close with writes going on; a close that is the
    /// grant's job (not one queued again) ends it.
    async fn close_job(self: Arc<Self>, grant: Grant, closing: Closing) -> Result<()> {
        let _serial = self.acks.lock().await;
        let this = self.clone();
        let job = grant.clone();
        let plan = blocking(move || this.close_plan(&job, closing)).await?;
        if let Some(plan) = plan {
            // A batch per transaction, each off the async workers on its
            // own, so that writes get their turn in between.
            let id = plan.grant.id.clone();
            let peer = plan.grant.peer.clone();
            for chunk in plan.revealed.chunks(BACKFILL_BATCH) {
                let (store, id, chunk) = (self.store.clone(), id.clone(), chunk.to_vec());
                blocking(move || Ok(store.add_revealed(&id, &chunk)?)).await?;
            }
            let cut = plan.revoke.len().saturating_sub(1) / BACKFILL_BATCH * BACKFILL_BATCH;
            let (rest, last) = plan.revoke.split_at(cut);
            for chunk in rest.chunks(BACKFILL_BATCH) {
                let store = self.store.clone();
                let feed: Vec<(OfficeId, FeedItem)> = chunk
                    .iter()
                    .map(|r| (peer.clone(), FeedItem::Revoke { id: r.clone() }))
                    .collect();
                blocking(move || Ok(store.push_feed(&feed)?)).await?;
            }
            let (store, last, count) = (self.store.clone(), last.to_vec(), plan.revealed.len());
            blocking(move || Ok(store.finish_close(&id, &peer, &last, count as u64)?)).await?;
        }
        if closing != Closing::Again {
            self.store.clear_job(&grant.id)?;
        }
        self.store.commit().await?;
        Ok(())
    }

    /// Queues a revocation for every record the ended grant revealed and no
    /// other grant still shows the peer, then the grant's closing marker.
    /// What it revealed is fixed when it first closes (the records it
    /// covered then) and replayed as it was whenever the close is queued
    /// again: records added to a case after a revocation are never named
    /// to the revoked peer.
    fn close(&self, grant: &Grant, closing: Closing) -> Result<()> {
        if let Some(plan) = self.close_plan(grant, closing)? {
            self.store
                .close_grant_feed(&plan.grant, &plan.revealed, &plan.revoke)?;
        }
        Ok(())
    }

    /// What [`close`](Self::close) queues, or `None` when there is nothing
    /// to queue (the purge is acknowledged, or the grant is gone).
    fn close_plan(&self, grant: &Grant, closing: Closing) -> Result<Option<ClosePlan>> {
        let now = now_ms();
        let forget_case = || {
            if closing == Closing::Tracked {
                self.running().closing.remove(&grant.id);
            }
        };
        // As stored now: a purge acknowledged since the caller looked needs
        // nothing queued again.
        let grant = match self.store.grant(&grant.id)? {
            Some(g) if g.purge_ack.is_some() => {
                forget_case();
                return Ok(None);
            }
            Some(g) => g,
            None => {
                forget_case();
                return Ok(None);
            }
        };
        let others: Vec<Grant> = self.grants(Some(&grant.peer));
        let expired = grant.end_reason == Some(EndReason::Expired);
        let revealed = match (self.store.revealed(&grant.id)?, closing) {
            (Some(ids), _) => {
                forget_case();
                ids
            }
            // Ended under the gate: what it covers is what it showed. (Not
            // so for one that expired before the sweep ended it: what was
            // written in between was never sent.)
            (None, Closing::UnderGate) if !expired => self.covered(&grant.target)?,
            // Ended under the gate, let go since: what it covers now, with
            // the moves writes noted since it ended undone. Read before the
            // notes are taken, so that a move it sees is noted.
            (None, Closing::Tracked) => {
                let mut shown: BTreeSet<RecordId> = if expired {
                    self.revealed_by(&grant)?
                } else {
                    self.covered(&grant.target)?
                }
                .into_iter()
                .collect();
                if let Some(case) = self.running().closing.remove(&grant.id) {
                    shown.retain(|id| case.moved.get(id).copied().unwrap_or(true));
                    shown.extend(
                        case.moved
                            .into_iter()
                            .filter(|&(_, was_in)| was_in)
                            .map(|(id, _)| id),
                    );
                }
                shown.into_iter().collect()
            }
            // An expired grant, a close resumed after a crash, or one
            // closed before revealed sets were kept: read from the records'
            // signed versions.
            (None, _) => self.revealed_by(&grant)?,
        };
        let mut revoke = Vec::new();
        for id in &revealed {
            let collection = self
                .store
                .head(id)?
                .map(|h| h.collection)
                .unwrap_or_default();
            if !sharing::visible(&others, &self.office, id, &collection, now) {
                revoke.push(id.clone());
            }
        }
        Ok(Some(ClosePlan {
            grant,
            revealed,
            revoke,
        }))
    }

    /// Re-runs grant jobs and peer removals a crash cut short. Called once
    /// at start-up, before anything is served or pulled.
    pub async fn resume_jobs(self: &Arc<Self>) -> Result<()> {
        {
            let _gate = self.gate.write().await;
            for (office, removal) in self.store.removals()? {
                tracing::warn!(peer = %office, ?removal, "finishing an interrupted peer removal");
                let actor = Actor::node(self.office.as_str());
                self.finish_removal(&office, removal, now_ms(), &actor)?;
            }
        }
        self.store.drop_stale_cursors()?;
        let mut jobs = Vec::new();
        for (id, job) in self.store.jobs()? {
            let Some(grant) = self.store.grant(&id)? else {
                self.store.clear_job(&id)?;
                continue;
            };
            tracing::warn!(grant = %id, ?job, "resuming an interrupted grant job");
            // Every interrupted backfill counts as running before any of
            // them runs: none may skip a record for another.
            let run = (job == GrantJob::Backfill).then(|| BackfillRun::start(self, &grant.id));
            jobs.push((grant, run));
        }
        for (grant, run) in jobs {
            match run {
                Some(run) => self.clone().backfill(grant, Backfill::New, run).await?,
                None => self.clone().close_job(grant, Closing::Resumed).await?,
            }
        }
        self.store.commit().await?;
        Ok(())
    }

    /// Ends every grant whose expiry has passed; returns the next expiry.
    pub async fn expire_due(self: &Arc<Self>) -> Result<Option<u64>> {
        let now = now_ms();
        let due: Vec<GrantId> = self
            .grants_read()
            .iter()
            .filter(|g| g.ended_at_ms == 0 && g.expires_at_ms != 0 && g.expires_at_ms <= now)
            .map(|g| g.id.clone())
            .collect();
        for id in due {
            let call = Call::new(Actor::node(self.office.as_str()), "grant.expired");
            match self.revoke(&id, EndReason::Expired, &call).await {
                Ok(_) => tracing::info!(grant = %id, "grant expired"),
                // Revoked by hand while it was due: nothing left to do.
                Err(Error::GrantEnded { .. }) => {}
                // One failing grant must not hold back the others.
                Err(e) => tracing::error!(grant = %id, error = %e, "expiring a grant failed"),
            }
        }
        Ok(self
            .grants_read()
            .iter()
            .filter(|g| g.ended_at_ms == 0 && g.expires_at_ms != 0)
            .map(|g| g.expires_at_ms)
            .min())
    }

    /// Stores a peer's signed purge acknowledgement on its grant, after
    /// checking it against the peer's pinned key.
    pub async fn record_purge_ack(&self, from: &OfficeId, ack: sharing::PurgeAck) -> Result<()> {
        let _serial = self.acks.lock().await;
        // Not while a close is being queued: it reads what the grant
        // revealed, which an acknowledgement lets go.
        let _gate = self.gate.write().await;
        let mut grant = self
            .store
            .grant(&ack.grant)?
            .ok_or_else(|| Error::GrantNotFound(ack.grant.clone()))?;
        if &grant.peer != from || ack.purged_by != *from || ack.origin != self.office {
            return Err(Error::AckParties(ack.grant.clone()));
        }
        if grant.ended_at_ms == 0 {
            return Err(Error::GrantStillActive(ack.grant.clone()));
        }
        crate::domain::limits::check_time("purged_at", ack.purged_at_ms)?;
        let peer = self
            .store
            .peer(from)?
            .ok_or_else(|| Error::PeerNotPinned(from.clone()))?;
        let verifier = crate::identity::OfficeVerifier::from_ca_cert(from.clone(), &peer.ca_der)?;
        verifier.verify_bytes(&ack.canonical(), &ack.signature)?;
        if grant.purge_ack.is_none() {
            grant.purge_ack = Some(ack);
            let entry = Draft::new(
                Actor::peer(from.as_str()),
                "purge_ack.received",
                grant_target(&grant),
                Outcome::ok(),
            );
            self.store
                .put_grant_with_feed(&grant, &[], None, &[entry])?;
        }
        // Nothing will be revoked again: what it revealed may go (a large
        // case's worth of keys: off the async workers). Also when the
        // store held the acknowledgement already: a call cut short after
        // storing it (a shutdown) left the rest undone, and the peer sends
        // it again until it hears it was stored.
        let (store, id) = (self.store.clone(), grant.id.clone());
        blocking(move || Ok(store.forget_revealed(&id)?)).await?;
        self.store.commit().await?;
        if !self.grants_read().iter().any(|g| g == &grant) {
            self.replace_grant(grant);
        }
        Ok(())
    }
}

/// What a close queues: the records the grant revealed, and those of them
/// no other grant still shows the peer.
struct ClosePlan {
    grant: Grant,
    revealed: Vec<RecordId>,
    revoke: Vec<RecordId>,
}

/// How a grant's close finds what the grant revealed, when that is not
/// stored yet.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Closing {
    /// Ended just now under the gate, which is still held.
    UnderGate,
    /// Ended under the gate, let go since: writes note moves for it.
    Tracked,
    /// Its job resumed after a crash cut it short.
    Resumed,
    /// Queued again for a peer that lost its state.
    Again,
}

/// What an audit entry about a grant names.
fn grant_target(g: &Grant) -> Target {
    let mut t = Target {
        peer: g.peer.to_string(),
        detail: format!("grant {}", g.id),
        ..Target::default()
    };
    match &g.target {
        GrantTarget::Collection(c) => t.collection = c.clone(),
        GrantTarget::Record(r) => t.records = vec![(r.to_string(), 0)],
    }
    t
}

/// What pinning a peer checks before anything is stored: its endpoint is
/// a node address, and the PEM holds exactly one certificate, a CA
/// certificate naming `office`. Returns that certificate.
pub fn checked_peer_ca(
    office: &OfficeId,
    endpoint: &str,
    ca_pem: &str,
) -> Result<CertificateDer<'static>> {
    crate::domain::NodeAddr::parse(endpoint)?;
    let certs = certs_from_pem(ca_pem.as_bytes())
        .map_err(|e| Error::BadOfficeCa(format!("ca_certificate_pem: {e}")))?;
    let [ca] = <[_; 1]>::try_from(certs).map_err(|_| {
        Error::BadOfficeCa(
            "ca_certificate_pem must hold exactly one certificate: the peer's office-ca.pem".into(),
        )
    })?;
    check_office_ca(&ca, office)?;
    Ok(ca)
}

/// A peer's office CA must be a CA certificate naming that office.
fn check_office_ca(ca: &CertificateDer<'_>, office: &OfficeId) -> Result<()> {
    let (_, cert) = x509_parser::parse_x509_certificate(ca)
        .map_err(|e| Error::BadOfficeCa(format!("ca_certificate_pem: {e}")))?;
    if !cert.is_ca() {
        return Err(Error::BadOfficeCa(
            "ca_certificate_pem is not a CA certificate: send the peer's office-ca.pem".into(),
        ));
    }
    let names_office = cert
        .subject()
        .iter_organization()
        .any(|o| o.as_str().ok() == Some(office.as_str()));
    if !names_office {
        return Err(Error::BadOfficeCa(format!(
            "this CA certificate is not the office CA of {office}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UserName;
    use crate::identity::OfficeCa;
    use crate::identity::signing::test_support::signed;
    use crate::store::StoreOptions;

    struct Fixture {
        dir: tempfile::TempDir,
        ca: OfficeCa,
        office: OfficeId,
        peer: Peer,
        peer_ca: OfficeCa,
    }

    impl Fixture {
        fn new() -> Self {
            let office = OfficeId::parse("phila-da").unwrap();
            let nyc = OfficeId::parse("nyc-da").unwrap();
            let admin = UserName::parse("admin").unwrap();
            let (ca, _) = OfficeCa::create(&office, &[], &admin).unwrap();
            let (nyc_ca, _) = OfficeCa::create(&nyc, &[], &admin).unwrap();
            Self {
                dir: tempfile::tempdir().unwrap(),
                ca,
                office,
                peer: Peer {
                    office: nyc,
                    endpoint: "https://127.0.0.1:1".into(),
                    ca_der: nyc_ca.cert_der.to_vec(),
                    added_at_ms: 1,
                },
                peer_ca: nyc_ca,
            }
        }

        /// The store and the sharing service over it, as a node opens them.
        fn open(&self) -> (Arc<Store>, Arc<Sharing>) {
            let store = Store::open(
                &self.dir.path().join("store"),
                self.office.as_str(),
                &StoreOptions::for_tests(),
            )
            .unwrap();
            let store = Arc::new(store);
            if store.peer(&self.peer.office).unwrap().is_none() {
                store.put_peer(&self.peer, &[]).unwrap();
            }
            let trust = TrustStore::new(
                self.office.clone(),
                self.ca.cert_der.clone(),
                Default::default(),
            )
            .unwrap();
            let search =
                crate::search::Search::open(&self.dir.path().join("search"), store.clone())
                    .unwrap();
            let sharing = Sharing::new(
                self.office.clone(),
                store.clone(),
                Arc::new(trust),
                Limits::default(),
                Some(Arc::new(search)),
            )
            .unwrap();
            (store, Arc::new(sharing))
        }

        fn id(&self, n: u32) -> RecordId {
            let mut random = [0u8; 10];
            random[..4].copy_from_slice(&n.to_be_bytes());
            RecordId::generate(&self.office, 1_000, random)
        }

        /// Writes version `version` of `id` into `collection` with the
        /// feed the sharing service computes for it, as a local write does.
        async fn write(
            &self,
            store: &Store,
            sharing: &Sharing,
            id: &RecordId,
            version: u64,
            collection: &str,
        ) -> Vec<(OfficeId, FeedItem)> {
            let prev = store.head(id).unwrap().map(|h| h.collection);
            let v = signed(&self.ca, id, version, collection, Vec::new());
            let feed = sharing.feed_for_write(prev.as_deref(), &v.record);
            let expected = (version > 1).then(|| version - 1);
            store
                .write_version(&v, expected, feed.clone(), Vec::new())
                .await
                .unwrap();
            feed
        }
    }

    fn call() -> Call {
        Call::new(Actor::node("phila-da"), "test")
    }

    /// Every entry of `peer`'s feed.
    fn feed_of(store: &Store, peer: &OfficeId) -> Vec<FeedItem> {
        let end = store.last_seq(peer).unwrap();
        store
            .outbox_after(peer, 0, end, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(_, item)| item)
            .collect()
    }

    /// A crash part way through a grant's backfill: the batches queued
    /// before it and the cursor saying how far they got are on disk, the
    /// rest is not. At the next start the backfill goes on after the
    /// cursor: every record the grant covers is queued exactly once, and
    /// the job and its cursor are gone.
    #[tokio::test]
    async fn a_backfill_cut_short_resumes_after_its_cursor() {
        let f = Fixture::new();
        let n = 3 * BACKFILL_BATCH as u32 + 17;
        let grant = Grant {
            id: GrantId::parse("g-0123456789abcdef").unwrap(),
            peer: f.peer.office.clone(),
            target: GrantTarget::Collection("case-1".into()),
            created_at_ms: 1,
            expires_at_ms: 0,
            ended_at_ms: 0,
            end_reason: None,
            purge_ack: None,
        };
        let mut ids: Vec<RecordId> = (0..n).map(|i| f.id(i)).collect();
        ids.sort();
        {
            let (store, sharing) = f.open();
            for id in &ids {
                f.write(&store, &sharing, id, 1, "case-1").await;
            }
            // Not covered: another case.
            f.write(&store, &sharing, &f.id(n + 1), 1, "case-2").await;
            store
                .put_grant_with_feed(&grant, &[], Some(GrantJob::Backfill), &[])
                .unwrap();
            let done = BACKFILL_BATCH + 40;
            let first: Vec<(OfficeId, FeedItem)> = ids[..done]
                .iter()
                .map(|id| {
                    let item = FeedItem::Versions {
                        id: id.clone(),
                        from: 1,
                        to: 1,
                    };
                    (f.peer.office.clone(), item)
                })
                .collect();
            store
                .queue_backfill(&grant.id, &first, &ids[done - 1])
                .unwrap();
            store.flush_now().unwrap();
        }
        let (store, sharing) = f.open();
        sharing.resume_jobs().await.unwrap();
        let mut queued: Vec<RecordId> = feed_of(&store, &f.peer.office)
            .into_iter()
            .map(|item| match item {
                FeedItem::Versions { id, from: 1, to: 1 } => id,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(queued.len(), ids.len(), "each record queued once");
        queued.sort();
        assert_eq!(queued, ids);
        assert!(store.jobs().unwrap().is_empty());
        assert_eq!(store.backfill_cursor(&grant.id).unwrap(), None);
    }

    /// While a grant's close is being queued, writes move records into and
    /// out of its case. The close revokes exactly what the case held when
    /// the grant ended: a record moved out is revoked (by its write at
    /// once, and in the revealed set), a record moved in is never named.
    #[tokio::test]
    async fn a_close_names_what_the_case_held_when_the_grant_ended() {
        let f = Fixture::new();
        let (store, sharing) = f.open();
        let peer = f.peer.office.clone();
        let (a, b, c, d) = (f.id(1), f.id(2), f.id(3), f.id(4));
        for id in [&a, &b, &c] {
            f.write(&store, &sharing, id, 1, "case-1").await;
        }
        f.write(&store, &sharing, &d, 1, "case-2").await;
        let grant = sharing
            .grant(
                peer.clone(),
                GrantTarget::Collection("case-1".into()),
                0,
                &call(),
            )
            .await
            .unwrap();
        assert_eq!(feed_of(&store, &peer).len(), 3, "a, b and c backfilled");
        // What revoke does under the gate, without the close that follows.
        let mut ended = grant.clone();
        ended.ended_at_ms = now_ms();
        ended.end_reason = Some(EndReason::Revoked);
        store
            .put_grant_with_feed(&ended, &[], Some(GrantJob::Close), &[])
            .unwrap();
        sharing.running().closing.insert(
            ended.id.clone(),
            CaseAtEnd {
                peer: peer.clone(),
                collection: "case-1".into(),
                moved: HashMap::new(),
            },
        );
        sharing.replace_grant(ended.clone());
        // b leaves the case, then comes back and leaves again; d joins it.
        let out = f.write(&store, &sharing, &b, 2, "case-2").await;
        assert_eq!(
            out,
            vec![(peer.clone(), FeedItem::Revoke { id: b.clone() })]
        );
        assert!(f.write(&store, &sharing, &b, 3, "case-1").await.is_empty());
        let out = f.write(&store, &sharing, &b, 4, "case-2").await;
        assert_eq!(
            out,
            vec![(peer.clone(), FeedItem::Revoke { id: b.clone() })]
        );
        assert!(f.write(&store, &sharing, &d, 2, "case-1").await.is_empty());
        sharing.close(&ended, Closing::Tracked).unwrap();
        let mut revealed = store.revealed(&ended.id).unwrap().unwrap();
        revealed.sort();
        let mut expected = vec![a.clone(), b.clone(), c.clone()];
        expected.sort();
        assert_eq!(revealed, expected);
        let feed = feed_of(&store, &peer);
        let revoked: BTreeSet<&RecordId> = feed
            .iter()
            .filter_map(|item| match item {
                FeedItem::Revoke { id } => Some(id),
                _ => None,
            })
            .collect();
        assert_eq!(revoked, [&a, &b, &c].into_iter().collect());
        assert!(
            !feed.iter().any(|item| match item {
                FeedItem::Revoke { id } | FeedItem::Versions { id, .. } => id == &d,
                FeedItem::GrantClosed { .. } => false,
            }),
            "d, moved in after the end, is never named: {feed:?}"
        );
        assert!(matches!(feed.last(), Some(FeedItem::GrantClosed { .. })));
        assert!(sharing.running().closing.is_empty(), "the notes are taken");
        // Once closed, writes note nothing more.
        assert!(f.write(&store, &sharing, &c, 2, "case-2").await.is_empty());
    }

    /// A write to a record the peer sees only through a grant still being
    /// backfilled carries the record's whole history: the backfill may
    /// never reach it (it may leave that case first).
    #[tokio::test]
    async fn a_write_during_a_backfill_carries_the_whole_history() {
        let f = Fixture::new();
        let (store, sharing) = f.open();
        let peer = f.peer.office.clone();
        let a = f.id(1);
        f.write(&store, &sharing, &a, 1, "case-1").await;
        let grant = Grant {
            id: GrantId::parse("g-0123456789abcdef").unwrap(),
            peer: peer.clone(),
            target: GrantTarget::Collection("case-1".into()),
            created_at_ms: 1,
            expires_at_ms: 0,
            ended_at_ms: 0,
            end_reason: None,
            purge_ack: None,
        };
        let run = BackfillRun::start(&sharing, &grant.id);
        sharing.replace_grant(grant.clone());
        let full = FeedItem::Versions {
            id: a.clone(),
            from: 1,
            to: 2,
        };
        assert_eq!(
            f.write(&store, &sharing, &a, 2, "case-1").await,
            vec![(peer.clone(), full)]
        );
        drop(run);
        let next = FeedItem::Versions {
            id: a.clone(),
            from: 3,
            to: 3,
        };
        assert_eq!(
            f.write(&store, &sharing, &a, 3, "case-1").await,
            vec![(peer, next)],
            "once backfilled, only the new version"
        );
    }

    /// A purge acknowledgement whose recording was cut short after the
    /// store took it (its stream ended midway, or the node stopped) is
    /// shown, and what the grant revealed forgotten, once the peer sends
    /// it again, as a peer does until it is told the origin stored it.
    #[tokio::test]
    async fn an_acknowledgement_stored_but_not_shown_shows_when_sent_again() {
        let f = Fixture::new();
        let (store, sharing) = f.open();
        let peer = f.peer.office.clone();
        f.write(&store, &sharing, &f.id(1), 1, "case-1").await;
        let grant = sharing
            .grant(
                peer.clone(),
                GrantTarget::Collection("case-1".into()),
                0,
                &call(),
            )
            .await
            .unwrap();
        sharing
            .revoke(&grant.id, EndReason::Revoked, &call())
            .await
            .unwrap();
        let mut ack = crate::domain::sharing::PurgeAck {
            grant: grant.id.clone(),
            origin: f.office.clone(),
            purged_by: peer.clone(),
            purged_at_ms: now_ms(),
            signature: Vec::new(),
        };
        ack.signature = crate::identity::OfficeSigner::new(&f.peer_ca)
            .sign_bytes(&ack.canonical())
            .unwrap();
        // What the first recording left: the store holds the
        // acknowledgement, the list of grants does not.
        let mut stored = store.grant(&grant.id).unwrap().unwrap();
        stored.purge_ack = Some(ack.clone());
        store.put_grant_with_feed(&stored, &[], None, &[]).unwrap();
        let shown = |s: &Sharing| {
            s.grants(None)
                .into_iter()
                .find(|g| g.id == grant.id)
                .and_then(|g| g.purge_ack)
        };
        assert_eq!(shown(&sharing), None);

        assert!(store.revealed(&grant.id).unwrap().is_some());

        sharing.record_purge_ack(&peer, ack.clone()).await.unwrap();
        assert_eq!(shown(&sharing), Some(ack));
        assert_eq!(store.revealed(&grant.id).unwrap(), None, "forgotten");
    }
}
