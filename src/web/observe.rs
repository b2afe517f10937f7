//! One look at the node's state, for the metrics endpoint and the status
//! page alike: counts, peers and their lag, grants, files being fetched,
//! the audit log's head, and when each certificate expires.
//!
//! A snapshot names records only by count, never by id or title; the
//! status page adds the latest audit entries, which name actions, callers
//! and case numbers as the audit log does.

use std::sync::Arc;

use crate::domain::audit::SignedHead;
use crate::domain::sharing::{EndReason, Grant};
use crate::domain::time::now_ms;
use crate::domain::{OfficeId, Role};
use crate::error::Result;
use crate::service::sharing::PeerView;
use crate::service::{AuditLog, BlobService, Sharing};
use crate::store::Store;
use crate::sync::fetch::{TransferView, Transfers};

use super::lag::LagTracker;

/// What the node is made of, as far as looking goes.
pub struct Observer {
    pub office: OfficeId,
    pub fingerprint: String,
    pub store: Arc<Store>,
    pub sharing: Arc<Sharing>,
    pub blobs: Arc<BlobService>,
    pub transfers: Arc<Transfers>,
    pub audit: Arc<AuditLog>,
    pub node_cert_expires_at_ms: u64,
    pub ca_expires_at_ms: u64,
    pub lag: LagTracker,
}

/// A pinned peer, as a snapshot sees it.
pub struct PeerState {
    pub view: PeerView,
    /// Age of the oldest entry queued for it and not acknowledged.
    pub lag_ms: u64,
    /// Grants to it that ended and whose purge it has not acknowledged.
    pub purges_pending: u64,
    /// When the oldest of those ended (0: none).
    pub oldest_purge_since_ms: u64,
    pub ca_expires_at_ms: u64,
}

/// Which certificate an expiry is of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertKind {
    Node,
    OfficeCa,
    PeerCa(OfficeId),
    /// The earliest expiry among the valid user certificates of a role.
    User(Role),
}

pub struct Snapshot {
    pub at_ms: u64,
    pub office: OfficeId,
    pub fingerprint: String,
    /// Records held, by origin office: this office first, then each peer.
    pub records_by_origin: Vec<(String, u64)>,
    pub records: u64,
    pub versions: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
    pub transfers: Vec<TransferView>,
    pub disk_free_bytes: Option<u64>,
    pub writes_refused: Option<String>,
    pub peers: Vec<PeerState>,
    /// Newest first.
    pub grants: Vec<Grant>,
    pub audit_entries: u64,
    pub last_signed_head: Option<SignedHead>,
    /// When `audit verify` last passed on this node since it started (0:
    /// not yet).
    pub audit_verified_at_ms: u64,
    pub certificates: Vec<(CertKind, u64)>,
}

/// A grant whose peer must still confirm its purge: ended, not
/// acknowledged, and not ended by removing the peer (its node can no
/// longer be reached for one).
pub fn purge_pending(g: &Grant) -> bool {
    g.ended_at_ms != 0 && g.purge_ack.is_none() && g.end_reason != Some(EndReason::PeerRemoved)
}

impl Observer {
    /// Notes each peer's feed for the lag; called every second.
    pub fn tick(&self) -> Result<()> {
        let now = now_ms();
        let peers = self.store.peers()?;
        for p in &peers {
            let pending = self.store.outbox_pending(&p.office)?;
            self.lag_of(&p.office, pending, now)?;
        }
        let pinned: Vec<OfficeId> = peers.into_iter().map(|p| p.office).collect();
        self.lag.retain(&pinned);
        Ok(())
    }

    /// The lag of `peer`'s feed, which has `pending` entries queued.
    fn lag_of(&self, peer: &OfficeId, pending: u64, now: u64) -> Result<u64> {
        let end = self.store.feed_end(peer)?;
        // Nothing pending: whatever the numbering (a feed carried over from
        // an older store starts past 0 before its peer acknowledges
        // anything), there is no lag, and the notes are cleared.
        let acked = match pending {
            0 => end,
            _ => self.store.acked(peer)?,
        };
        Ok(self.lag.observe(peer, acked, end, now))
    }

    pub fn snapshot(&self) -> Result<Snapshot> {
        let at_ms = now_ms();
        let (records, versions) = self.store.counts()?;
        let (blobs, blob_bytes) = self.blobs.totals()?;
        let storage = self.store.storage();
        let grants = self.sharing.grants(None);
        let mut records_by_origin = vec![(
            self.office.to_string(),
            self.store.records_of(&self.office)?,
        )];
        let mut peers = Vec::new();
        for view in self.sharing.peers()? {
            let office = view.peer.office.clone();
            records_by_origin.push((office.to_string(), view.replicas));
            let pending: Vec<&Grant> = grants
                .iter()
                .filter(|g| g.peer == office && purge_pending(g))
                .collect();
            peers.push(PeerState {
                lag_ms: self.lag_of(&office, view.outbox_pending, at_ms)?,
                purges_pending: pending.len() as u64,
                oldest_purge_since_ms: pending.iter().map(|g| g.ended_at_ms).min().unwrap_or(0),
                ca_expires_at_ms: crate::identity::pki::expires_at_ms(&view.peer.ca_der)
                    .unwrap_or(0),
                view,
            });
        }
        let mut certificates = vec![
            (CertKind::Node, self.node_cert_expires_at_ms),
            (CertKind::OfficeCa, self.ca_expires_at_ms),
        ];
        for p in &peers {
            certificates.push((
                CertKind::PeerCa(p.view.peer.office.clone()),
                p.ca_expires_at_ms,
            ));
        }
        let users = self.store.users()?;
        for role in [Role::Admin, Role::Staff, Role::Auditor] {
            let earliest = users
                .iter()
                .filter(|u| u.user.role == role && u.user.revoked_at_ms == 0)
                .filter_map(|u| crate::identity::pki::expires_at_ms(&u.user.cert_der).ok())
                // An expired certificate is refused already; the next to
                // expire is the one worth a warning.
                .filter(|&expires| expires > at_ms)
                .min();
            if let Some(at) = earliest {
                certificates.push((CertKind::User(role), at));
            }
        }
        Ok(Snapshot {
            at_ms,
            office: self.office.clone(),
            fingerprint: self.fingerprint.clone(),
            records_by_origin,
            records,
            versions,
            blobs,
            blob_bytes,
            transfers: self.transfers.view(&self.blobs)?,
            disk_free_bytes: storage.free_bytes,
            writes_refused: storage.writes_refused,
            peers,
            grants,
            audit_entries: self.store.audit_head()?.seq,
            last_signed_head: self.store.latest_signed_head()?,
            audit_verified_at_ms: self.audit.verified_at_ms(),
            certificates,
        })
    }
}
