//! How long the oldest entry queued for each peer has waited.
//!
//! Feed entries carry no time of their own. Instead, every second (and at
//! each look) the end of each peer's feed is noted with the time it was
//! first seen; the oldest entry not yet acknowledged was queued no later
//! than the first note that covers it. So the age is exact to the second
//! for the latest [`MAX_NOTES`] moves of a backlog; past that, the oldest
//! notes are merged and the age is counted from the earlier one (it may
//! read high, never low). After a restart, entries already queued are
//! counted from the start.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::domain::OfficeId;

/// Notes kept per peer.
pub const MAX_NOTES: usize = 1024;

/// `(feed end, when first seen)`, oldest first.
type Notes = VecDeque<(u64, u64)>;

#[derive(Default)]
pub struct LagTracker {
    peers: Mutex<HashMap<OfficeId, Notes>>,
}

impl LagTracker {
    /// Notes `peer`'s feed as acknowledged up to `acked` and queued up to
    /// `end` at `now_ms`; returns the age in ms of the oldest entry not
    /// acknowledged (0 when there is none).
    pub fn observe(&self, peer: &OfficeId, acked: u64, end: u64, now_ms: u64) -> u64 {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let notes = peers.entry(peer.clone()).or_default();
        // Notes wholly acknowledged say nothing any more.
        while notes.front().is_some_and(|&(e, _)| e <= acked) {
            notes.pop_front();
        }
        if end > acked && notes.back().is_none_or(|&(e, _)| e < end) {
            if notes.len() == MAX_NOTES {
                // Merge the two oldest: the first's time, the second's end.
                if let (Some((_, t)), Some(second)) = (notes.pop_front(), notes.front_mut()) {
                    second.1 = t;
                }
            }
            notes.push_back((end, now_ms));
        }
        match notes.front() {
            Some(&(_, t)) if end > acked => now_ms.saturating_sub(t),
            _ => 0,
        }
    }

    /// Forgets peers no longer pinned.
    pub fn retain(&self, pinned: &[OfficeId]) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.retain(|office, _| pinned.contains(office));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn office() -> OfficeId {
        OfficeId::parse("nyc-da").unwrap()
    }

    #[test]
    fn age_is_that_of_the_oldest_entry_not_acknowledged() {
        let t = LagTracker::default();
        let p = office();
        assert_eq!(t.observe(&p, 0, 0, 1_000), 0, "nothing queued");
        assert_eq!(t.observe(&p, 0, 5, 2_000), 0, "just queued");
        assert_eq!(t.observe(&p, 0, 9, 3_000), 1_000);
        // 1..=5 acknowledged: the oldest left (6) was first seen at 3 s.
        assert_eq!(t.observe(&p, 5, 9, 4_000), 1_000);
        assert_eq!(t.observe(&p, 9, 9, 5_000), 0, "all acknowledged");
        assert_eq!(t.observe(&p, 9, 12, 6_000), 0);
        assert_eq!(t.observe(&p, 9, 12, 9_000), 3_000);
    }

    #[test]
    fn a_long_backlog_keeps_bounded_notes_and_never_reads_low() {
        let t = LagTracker::default();
        let p = office();
        for i in 1..=(3 * MAX_NOTES as u64) {
            t.observe(&p, 0, i, i * 1_000);
        }
        let len = t.peers.lock().unwrap()[&p].len();
        assert_eq!(len, MAX_NOTES);
        let now = 3 * MAX_NOTES as u64 * 1_000 + 1;
        // Entry 1 was queued at 1 s.
        assert_eq!(t.observe(&p, 0, 3 * MAX_NOTES as u64, now), now - 1_000);
        // Half acknowledged: the truth is the time entry (acked + 1) was
        // queued; the merged notes may say earlier, never later.
        let acked = 3 * MAX_NOTES as u64 / 2;
        let truth = now - (acked + 1) * 1_000;
        let age = t.observe(&p, acked, 3 * MAX_NOTES as u64, now);
        assert!(age >= truth, "{age} < {truth}");
    }
}
