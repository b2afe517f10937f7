//! What each peer could not take from this office's feed, kept by the
//! serving side for `peer list` ([`crate::domain::rejection`] says what is
//! kept and when it clears). In memory only: one small entry per pinned
//! peer that has something outstanding, forgotten when the peer is removed
//! or the node restarts (the audit log keeps every report).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::domain::rejection::{FeedRejection, PeerRejections};
use crate::domain::{OfficeId, RecordId};

#[derive(Default)]
pub struct FeedRejections {
    peers: Mutex<HashMap<OfficeId, PeerRejections>>,
}

impl FeedRejections {
    fn peers(&self) -> MutexGuard<'_, HashMap<OfficeId, PeerRejections>> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes `peer`'s entry, and drops it once nothing is left in it.
    fn change(&self, peer: &OfficeId, create: bool, f: impl FnOnce(&mut PeerRejections)) {
        let mut peers = self.peers();
        if !create && !peers.contains_key(peer) {
            return;
        }
        let entry = peers.entry(peer.clone()).or_default();
        f(entry);
        if entry.is_empty() {
            peers.remove(peer);
        }
    }

    /// `peer` reported rejecting a version.
    pub fn report(&self, peer: &OfficeId, r: FeedRejection) {
        self.change(peer, true, |p| p.report(r));
    }

    /// `peer` was sent a version in an encoding it cannot read.
    pub fn older_build(&self, peer: &OfficeId, r: FeedRejection) {
        self.change(peer, true, |p| p.older_build(r));
    }

    /// `peer` declared that it reads every encoding this node writes.
    pub fn upgraded(&self, peer: &OfficeId) {
        self.change(peer, false, PeerRejections::upgraded);
    }

    /// The records `peer` rejected a version of, and those versions.
    pub fn watched(&self, peer: &OfficeId) -> Vec<(RecordId, u64)> {
        self.peers()
            .get(peer)
            .map(PeerRejections::watched)
            .unwrap_or_default()
    }

    /// Versions of watched records went out again to `peer`, each at its
    /// feed entry.
    pub fn sent(&self, peer: &OfficeId, sent: &[(RecordId, u64, u64)]) {
        if sent.is_empty() {
            return;
        }
        self.change(peer, false, |p| {
            for (id, version, seq) in sent {
                p.sent(id, *version, *seq);
            }
        });
    }

    /// `peer` acknowledged every entry up to `seq`.
    pub fn acked(&self, peer: &OfficeId, seq: u64) {
        self.change(peer, false, |p| p.acked(seq));
    }

    /// The peer was removed: nothing of it is kept.
    pub fn forget(&self, peer: &OfficeId) {
        self.peers().remove(peer);
    }

    /// What `peer`'s entry shows: newest first, and how many reports were
    /// pushed out.
    pub fn view(&self, peer: &OfficeId) -> (Vec<FeedRejection>, u64) {
        self.peers()
            .get(peer)
            .map(PeerRejections::view)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry lives only while something in it is outstanding, so the
    /// map never holds more than the peers with a problem.
    #[test]
    fn a_peer_with_nothing_outstanding_holds_no_entry() {
        let peers = FeedRejections::default();
        let nyc = OfficeId::parse("nyc-da").unwrap();
        let origin = OfficeId::parse("phila-da").unwrap();
        let id = RecordId::parse("phila-da:0190a1b2c3d4aaaaaaaaaaaaaaaaaaaa").unwrap();
        peers.upgraded(&nyc);
        peers.acked(&nyc, 9);
        assert!(peers.peers().is_empty());
        peers.report(
            &nyc,
            FeedRejection::reported(&origin, 3, id.as_str(), 2, "why", 1),
        );
        assert_eq!(peers.watched(&nyc), vec![(id.clone(), 2)]);
        peers.sent(&nyc, &[(id.clone(), 3, 5)]);
        peers.acked(&nyc, 5);
        assert!(peers.peers().is_empty());
        peers.older_build(&nyc, FeedRejection::older_build(6, id, 1, 1));
        assert_eq!(peers.view(&nyc).0.len(), 1);
        peers.forget(&nyc);
        assert!(peers.peers().is_empty());
    }
}
