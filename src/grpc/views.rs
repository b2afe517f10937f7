//! What the services keep, as the messages the Admin service answers with.

use crate::domain::rejection::{Cause, FeedRejection};
use crate::protocol::convert::role_to_pb;
use crate::protocol::pb;
use crate::service::PeerView;
use crate::store::UserEntry;

pub fn user(e: &UserEntry) -> pb::User {
    pb::User {
        name: e.user.name.to_string(),
        role: role_to_pb(e.user.role) as i32,
        fingerprint: e.fingerprint.to_string(),
        issued_at_ms: e.user.issued_at_ms,
        revoked_at_ms: e.user.revoked_at_ms,
        expires_at_ms: crate::identity::pki::expires_at_ms(&e.user.cert_der).unwrap_or(0),
    }
}

pub fn peer(v: &PeerView) -> pb::Peer {
    pb::Peer {
        office: v.peer.office.to_string(),
        endpoint: v.peer.endpoint.clone(),
        fingerprint: v.fingerprint.to_string(),
        added_at_ms: v.peer.added_at_ms,
        connected: v.link.connected,
        last_contact_ms: v.link.last_contact_ms,
        checkpoint: v.checkpoint,
        outbox_pending: v.outbox_pending,
        replicas: v.replicas,
        last_error: v.link.last_error.clone(),
        ca_expires_at_ms: crate::identity::pki::expires_at_ms(&v.peer.ca_der).unwrap_or(0),
        feed_rejections: v.feed_rejections.iter().map(feed_rejection).collect(),
        feed_rejections_dropped: v.feed_rejections_dropped,
    }
}

pub fn feed_rejection(r: &FeedRejection) -> pb::FeedRejection {
    pb::FeedRejection {
        older_build: r.cause == Cause::OlderBuild,
        record_id: r
            .record
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        version: r.version,
        seq: r.seq,
        reason: r.reason.clone(),
        at_ms: r.at_ms,
    }
}

/// The search index's state; `None`: search is turned off.
pub fn search_index(s: Option<crate::search::State>) -> pb::SearchIndexStatus {
    let Some(s) = s else {
        return pb::SearchIndexStatus {
            state: "off".into(),
            ..Default::default()
        };
    };
    let state = match (s.complete, s.rebuilding) {
        (_, Some(_)) => "rebuilding",
        (true, None) => "complete",
        (false, None) => "incomplete",
    };
    let (rebuilt, rebuild_total) = s.rebuilding.unwrap_or_default();
    pb::SearchIndexStatus {
        state: state.into(),
        records: s.records,
        waiting: s.waiting,
        rebuilt,
        rebuild_total,
    }
}
