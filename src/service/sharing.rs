//! Sharing: pinned peers and grants, and what each change puts in the
//! peers' feeds.
//!
//! Consistency: every record write computes its feed entries and commits
//! them in the same transaction as the version, under a shared `gate`;
//! grant changes hold the gate exclusively while they store the grant and
//! queue their backfill or revocations. So no write can slip between a
//! grant and its backfill. Grant jobs (backfill, revocation) are marked in
//! the store before they start and re-run at start-up if a crash cut them
//! short; re-running is harmless because applying is idempotent.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock, Weak};

use rustls_pki_types::CertificateDer;

use crate::domain::audit::{Actor, Draft, Outcome, Target};
use crate::domain::sharing::{
    self, EndReason, FeedItem, Grant, GrantId, GrantJob, GrantTarget, Peer,
};
use crate::domain::{Limits, OfficeId, RecordId, RecordVersion, now_ms};
use crate::error::{Error, Result};
use crate::identity::tls::TrustStore;
use crate::identity::{Fingerprint, pki::certs_from_pem};
use crate::service::audit::Call;
use crate::store::{ListFilter, PeerRemoval, Store};

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
    /// Bumped on every grant change; a feed batch built under an older
    /// generation is rebuilt before it is sent.
    generation: AtomicU64,
    /// Serializes storing purge acknowledgements (they touch only ended
    /// grants, so they need not hold writes back).
    acks: tokio::sync::Mutex<()>,
}

impl Sharing {
    pub fn new(
        office: OfficeId,
        store: Arc<Store>,
        trust: Arc<TrustStore>,
        limits: Limits,
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
            generation: AtomicU64::new(0),
            acks: tokio::sync::Mutex::new(()),
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
    /// a revocation for a peer that saw it before but no longer does.
    pub fn feed_for_write(
        &self,
        prev_collection: Option<&str>,
        next: &RecordVersion,
    ) -> Vec<(OfficeId, FeedItem)> {
        let now = now_ms();
        let grants = self.grants_read();
        let peers: BTreeSet<&OfficeId> = grants
            .iter()
            .filter(|g| g.is_active(now))
            .map(|g| &g.peer)
            .collect();
        let mut feed = Vec::new();
        for peer in peers {
            let mine = || grants.iter().filter(|g| &g.peer == peer);
            let after = sharing::visible(mine(), &self.office, &next.id, &next.collection, now);
            // "Before" counts grants that expired but are not swept yet: the
            // peer may still hold the record, and the sweep's revocations
            // only look at current membership.
            let before = prev_collection
                .is_some_and(|c| mine().any(|g| g.ended_at_ms == 0 && g.covers(&next.id, c)));
            if after {
                // A record the peer could not see before (moved into a
                // granted case) travels with its whole history.
                let saw = prev_collection
                    .is_some_and(|c| sharing::visible(mine(), &self.office, &next.id, c, now));
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
        &self,
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
        let _gate = self.gate.write().await;
        if self.store.peer(&office)?.is_some() {
            return Err(Error::PeerAlreadyPinned(office));
        }
        // A removal of this office left unfinished (its purge failed) is
        // finished before it is pinned again, so no purge asked for is lost.
        if let Some((_, removal)) = self
            .store
            .removals()?
            .into_iter()
            .find(|(o, _)| o == &office)
        {
            let actor = Actor::node(self.office.as_str());
            self.finish_removal(&office, removal, now_ms(), &actor)?;
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
        // A peer pinned again gets the revocations of grants that ended
        // while it was not pinned, so it does not keep those copies.
        self.requeue_locked(&peer.office)?;
        self.store.commit().await?;
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
        let _gate = self.gate.write().await;
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
            self.close(&g, Closing::First)?;
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
        self.grants_changed.notify_one();
        Ok((purged, closed))
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
    /// re-pinned this office, or was restored from a backup).
    pub async fn requeue(&self, peer: &OfficeId) -> Result<()> {
        let _gate = self.gate.write().await;
        self.requeue_locked(peer)?;
        self.store.commit().await?;
        Ok(())
    }

    fn requeue_locked(&self, peer: &OfficeId) -> Result<()> {
        for g in self.grants(Some(peer)) {
            if g.ended_at_ms == 0 {
                self.backfill(&g, &[])?;
            } else if g.purge_ack.is_none() {
                self.close(&g, Closing::Again)?;
            }
        }
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
            let link = self
                .runtime()
                .map(|rt| rt.link_status(&peer.office))
                .unwrap_or_default();
            out.push(PeerView {
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
        &self,
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
        let visible_before: Vec<Grant> = self.grants(Some(&grant.peer));
        self.replace_grant(grant.clone());
        self.backfill(&grant, &visible_before)?;
        self.store.clear_job(&grant.id)?;
        self.store.commit().await?;
        self.grants_changed.notify_one();
        Ok(grant)
    }

    /// Queues every record the grant newly makes visible.
    fn backfill(&self, grant: &Grant, others: &[Grant]) -> Result<()> {
        let now = now_ms();
        let mut feed = Vec::new();
        for id in self.covered(&grant.target)? {
            let Some(head) = self.store.head(&id)? else {
                continue;
            };
            let already = sharing::visible(
                others.iter().filter(|g| g.id != grant.id),
                &self.office,
                &id,
                &head.collection,
                now,
            );
            if !already {
                // A granted record travels with its whole history.
                feed.push((
                    grant.peer.clone(),
                    FeedItem::Versions {
                        id,
                        from: 1,
                        to: head.version,
                    },
                ));
            }
        }
        self.store.push_feed(&feed)?;
        Ok(())
    }

    pub async fn revoke(&self, id: &GrantId, reason: EndReason, call: &Call) -> Result<Grant> {
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
        self.replace_grant(grant.clone());
        self.close(&grant, Closing::First)?;
        self.store.clear_job(&grant.id)?;
        self.store.commit().await?;
        self.grants_changed.notify_one();
        Ok(grant)
    }

    /// Queues a revocation for every record the ended grant revealed and no
    /// other grant still shows the peer, then the grant's closing marker.
    /// What it revealed is fixed when it first closes (the records it
    /// covered then) and replayed as it was whenever the close is queued
    /// again: records added to a case after a revocation are never named
    /// to the revoked peer.
    fn close(&self, grant: &Grant, closing: Closing) -> Result<()> {
        let now = now_ms();
        // As stored now: a purge acknowledged since the caller looked needs
        // nothing queued again.
        let grant = match self.store.grant(&grant.id)? {
            Some(g) if g.purge_ack.is_some() => return Ok(()),
            Some(g) => g,
            None => return Ok(()),
        };
        let others: Vec<Grant> = self.grants(Some(&grant.peer));
        let revealed = match (self.store.revealed(&grant.id)?, closing) {
            (Some(ids), _) => ids,
            // Ended just now, under the gate: what it covers is what it
            // showed. (Not so for one that expired before the sweep ended
            // it: what was written in between was never sent.)
            (None, Closing::First) if grant.end_reason != Some(EndReason::Expired) => {
                self.covered(&grant.target)?
            }
            // An expired grant, or one closed before revealed sets were
            // kept: read from the records' signed versions.
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
        self.store.close_grant_feed(&grant, &revealed, &revoke)?;
        Ok(())
    }

    /// Re-runs grant jobs and peer removals a crash cut short. Called once
    /// at start-up, before anything is served or pulled.
    pub async fn resume_jobs(&self) -> Result<()> {
        let _gate = self.gate.write().await;
        for (office, removal) in self.store.removals()? {
            tracing::warn!(peer = %office, ?removal, "finishing an interrupted peer removal");
            let actor = Actor::node(self.office.as_str());
            self.finish_removal(&office, removal, now_ms(), &actor)?;
        }
        for (id, job) in self.store.jobs()? {
            let Some(grant) = self.store.grant(&id)? else {
                self.store.clear_job(&id)?;
                continue;
            };
            tracing::warn!(grant = %id, ?job, "resuming an interrupted grant job");
            match job {
                GrantJob::Backfill => {
                    let others = self.grants(Some(&grant.peer));
                    self.backfill(&grant, &others)?
                }
                GrantJob::Close => self.close(&grant, Closing::First)?,
            }
            self.store.clear_job(&id)?;
        }
        self.store.commit().await?;
        Ok(())
    }

    /// Ends every grant whose expiry has passed; returns the next expiry.
    pub async fn expire_due(&self) -> Result<Option<u64>> {
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
            // Nothing will be revoked again: what it revealed may go.
            self.store.forget_revealed(&grant.id)?;
            self.store.commit().await?;
            self.replace_grant(grant);
        }
        Ok(())
    }
}

/// Whether a grant's close is queued as it ends (or as its interrupted job
/// resumes), or again for a peer that lost its state.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Closing {
    First,
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
