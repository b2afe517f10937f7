//! What each pinned peer may ask of this node at once, and how often: one
//! live `Pull` stream (a new one replaces the old, so a peer restarted
//! after a crash is not locked out by its own half-open stream), a bounded
//! number of file transfers, a re-queue of its whole feed at most once per
//! interval, and an audit proof at most once per interval. State is kept
//! per pinned office only, so it is bounded by the number of peers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::domain::OfficeId;

/// Least time between two re-queues of one peer's feed: each holds local
/// writes back while it queues everything the peer may see.
pub const REQUEUE_INTERVAL: Duration = Duration::from_secs(60);
/// Least time between two audit proofs for one peer: each walks the whole
/// log.
pub const PROOF_INTERVAL: Duration = Duration::from_secs(10);
/// Most files one peer may fetch at once.
pub const MAX_FETCHES_PER_PEER: usize = 4;

#[derive(Default)]
struct PeerState {
    requeued_at: Option<Instant>,
    proved_at: Option<Instant>,
    /// An audit proof is being streamed.
    proving: bool,
    /// The live `Pull` stream: its number, and how to end it.
    pull: Option<(u64, watch::Sender<bool>)>,
    fetches: usize,
}

/// Per-peer limits, shared by every stream served.
#[derive(Default)]
pub struct PeerGuards {
    peers: Mutex<HashMap<OfficeId, PeerState>>,
    next_pull: std::sync::atomic::AtomicU64,
}

impl PeerGuards {
    fn with<T>(&self, peer: &OfficeId, f: impl FnOnce(&mut PeerState) -> T) -> T {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        f(peers.entry(peer.clone()).or_default())
    }

    /// Whether `peer`'s feed may be re-queued now (and if so, it counts as
    /// done now); otherwise how long until it may.
    pub fn may_requeue(&self, peer: &OfficeId) -> Result<(), Duration> {
        self.with(peer, |s| once_per(&mut s.requeued_at, REQUEUE_INTERVAL))
    }

    /// A place for an audit proof for `peer` now, if none is in progress
    /// and the last began at least [`PROOF_INTERVAL`] ago; otherwise how
    /// long until it may ask again.
    pub fn may_prove(self: &Arc<Self>, peer: &OfficeId) -> Result<ProofSlot, Duration> {
        self.with(peer, |s| {
            if s.proving {
                return Err(PROOF_INTERVAL);
            }
            once_per(&mut s.proved_at, PROOF_INTERVAL)?;
            s.proving = true;
            Ok(())
        })?;
        Ok(ProofSlot {
            guards: self.clone(),
            peer: peer.clone(),
        })
    }

    /// Makes the stream about to be served `peer`'s only `Pull`: the one
    /// it had (if any) is told to end. The slot's receiver turns true when
    /// a newer stream replaces this one.
    pub fn open_pull(self: &Arc<Self>, peer: &OfficeId) -> PullSlot {
        let id = self
            .next_pull
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, replaced) = watch::channel(false);
        let old = self.with(peer, |s| s.pull.replace((id, tx)));
        if let Some((_, old)) = old {
            let _ = old.send(true);
        }
        PullSlot {
            guards: self.clone(),
            peer: peer.clone(),
            id,
            replaced,
        }
    }

    /// A slot for one more file transfer to `peer`, if it has fewer than
    /// [`MAX_FETCHES_PER_PEER`].
    pub fn begin_fetch(self: &Arc<Self>, peer: &OfficeId) -> Option<FetchSlot> {
        let taken = self.with(peer, |s| {
            let free = s.fetches < MAX_FETCHES_PER_PEER;
            if free {
                s.fetches += 1;
            }
            free
        });
        taken.then(|| FetchSlot {
            guards: self.clone(),
            peer: peer.clone(),
        })
    }

    /// Forgets a peer that was removed.
    pub fn forget(&self, peer: &OfficeId) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = peers.remove(peer) {
            if let Some((_, live)) = state.pull {
                let _ = live.send(true);
            }
        }
    }
}

/// `Ok` (and `last` is now) if `interval` has passed since `last`.
fn once_per(last: &mut Option<Instant>, interval: Duration) -> Result<(), Duration> {
    let now = Instant::now();
    match *last {
        Some(at) if now.duration_since(at) < interval => Err(interval - now.duration_since(at)),
        _ => {
            *last = Some(now);
            Ok(())
        }
    }
}

/// A peer's live `Pull` stream; frees its place when dropped.
pub struct PullSlot {
    guards: Arc<PeerGuards>,
    peer: OfficeId,
    id: u64,
    /// Turns true when a newer stream of the same peer replaces this one.
    pub replaced: watch::Receiver<bool>,
}

impl Drop for PullSlot {
    fn drop(&mut self) {
        self.guards.with(&self.peer, |s| {
            if s.pull.as_ref().is_some_and(|(id, _)| *id == self.id) {
                s.pull = None;
            }
        });
    }
}

/// An audit proof being streamed to a peer; frees its place when dropped.
pub struct ProofSlot {
    guards: Arc<PeerGuards>,
    peer: OfficeId,
}

impl Drop for ProofSlot {
    fn drop(&mut self) {
        self.guards.with(&self.peer, |s| s.proving = false);
    }
}

/// One file transfer to a peer; frees its place when dropped.
pub struct FetchSlot {
    guards: Arc<PeerGuards>,
    peer: OfficeId,
}

impl Drop for FetchSlot {
    fn drop(&mut self) {
        self.guards
            .with(&self.peer, |s| s.fetches = s.fetches.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn office(s: &str) -> OfficeId {
        OfficeId::parse(s).unwrap()
    }

    #[test]
    fn a_new_pull_replaces_the_old_and_only_the_live_one_frees_the_place() {
        let guards = Arc::new(PeerGuards::default());
        let nyc = office("nyc-da");
        let first = guards.open_pull(&nyc);
        assert!(!*first.replaced.borrow());
        let second = guards.open_pull(&nyc);
        assert!(*first.replaced.borrow(), "the first stream is told to end");
        assert!(!*second.replaced.borrow());
        // The replaced stream ending does not free the live one's place.
        drop(first);
        let third = guards.open_pull(&nyc);
        assert!(*second.replaced.borrow());
        drop(third);
        // Other peers are independent.
        let mpls = guards.open_pull(&office("mpls-da"));
        assert!(!*mpls.replaced.borrow());
    }

    #[test]
    fn requeues_and_proofs_are_rationed_per_peer() {
        let guards = Arc::new(PeerGuards::default());
        let (nyc, mpls) = (office("nyc-da"), office("mpls-da"));
        assert!(guards.may_requeue(&nyc).is_ok());
        let wait = guards.may_requeue(&nyc).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= REQUEUE_INTERVAL);
        assert!(guards.may_requeue(&mpls).is_ok());
        let proving = guards.may_prove(&nyc).unwrap();
        assert!(guards.may_prove(&nyc).is_err());
        drop(proving);
        assert!(guards.may_prove(&nyc).is_err(), "once per interval");
        // One in progress holds the place past the interval too.
        guards.with(&mpls, |s| {
            s.proving = true;
            s.proved_at = None;
        });
        assert!(guards.may_prove(&mpls).is_err());
    }

    #[test]
    fn fetches_are_bounded_per_peer_and_freed_on_drop() {
        let guards = Arc::new(PeerGuards::default());
        let nyc = office("nyc-da");
        let slots: Vec<_> = (0..MAX_FETCHES_PER_PEER)
            .map(|_| guards.begin_fetch(&nyc).unwrap())
            .collect();
        assert!(guards.begin_fetch(&nyc).is_none());
        assert!(guards.begin_fetch(&office("mpls-da")).is_some());
        drop(slots);
        assert!(guards.begin_fetch(&nyc).is_some());
    }
}
