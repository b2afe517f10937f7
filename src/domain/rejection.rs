//! What a peer could not take from this office's feed: the versions it
//! reported rejecting, and the versions this office sent it in an encoding
//! it declared it cannot read (a build from before versions had subjects,
//! which reports nothing itself). The serving side keeps them per peer
//! (`sync::rejections`) and `peer list` shows them until they clear.
//!
//! A peer's reports are bounded here, whatever it sends: a reason is cut to
//! [`MAX_REASON_BYTES`], a record id that is not one of this office's is
//! dropped, and a peer keeps at most [`MAX_KEPT`] reports (the newest);
//! older ones are only counted.
//!
//! When they clear:
//! - a reported rejection, once the peer acknowledges, without rejecting
//!   it again, a feed entry that carries a later version of the record
//!   (or the same version sent again): it then holds the record as it is
//!   now. A later version written before the report came counts from the
//!   end of the feed at that moment, which carries it;
//! - the older-build note, once the peer pulls declaring that it reads the
//!   encoding (it was upgraded).

use std::collections::VecDeque;

use super::ids::{OfficeId, RecordId};
use super::record::MAX_VERSION;

/// The most of a peer's reason kept, in bytes.
pub const MAX_REASON_BYTES: usize = 256;
/// The most reported rejections kept for one peer (the newest).
pub const MAX_KEPT: usize = 8;
/// What stands for a reason a peer left empty.
const NO_REASON: &str = "no reason given";

/// Why the note of an older build is there, for its admins.
pub const OLDER_BUILD: &str = "the peer runs an older casemesh that cannot read record versions with subjects; it rejects them until it is upgraded";

/// Who knows that the peer could not take the version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The peer said so.
    Reported,
    /// This node sent it in an encoding the peer declared it cannot read.
    OlderBuild,
}

/// A version of this office's feed that a peer could not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedRejection {
    pub cause: Cause,
    /// When this node learned it, ms since the Unix epoch.
    pub at_ms: u64,
    /// The entry's position in the peer's feed.
    pub seq: u64,
    /// The record, when known (always one of this office's).
    pub record: Option<RecordId>,
    /// Its version (0: unknown).
    pub version: u64,
    /// At most [`MAX_REASON_BYTES`], no control characters.
    pub reason: String,
}

impl FeedRejection {
    /// A peer's report about entry `seq` of its feed from `origin` (this
    /// office), as kept: a record id that does not parse or is not
    /// `origin`'s is dropped, a version out of range reads as unknown, and
    /// the reason is clipped ([`clip_reason`]).
    pub fn reported(
        origin: &OfficeId,
        seq: u64,
        record_id: &str,
        version: u64,
        reason: &str,
        at_ms: u64,
    ) -> Self {
        let record = RecordId::parse(record_id)
            .ok()
            .filter(|id| id.origin() == *origin);
        let version = if (1..=MAX_VERSION).contains(&version) {
            version
        } else {
            0
        };
        Self {
            cause: Cause::Reported,
            at_ms,
            seq,
            record,
            version,
            reason: clip_reason(reason),
        }
    }

    /// This node sent `version` of `record` at `seq` to a peer that
    /// declared it cannot read its encoding.
    pub fn older_build(seq: u64, record: RecordId, version: u64, at_ms: u64) -> Self {
        Self {
            cause: Cause::OlderBuild,
            at_ms,
            seq,
            record: Some(record),
            version,
            reason: OLDER_BUILD.to_owned(),
        }
    }

    /// One sentence for people (without the peer's name or the time).
    pub fn describe(&self) -> String {
        let record = self.record.as_ref().map(RecordId::as_str).unwrap_or("");
        describe(
            self.cause == Cause::OlderBuild,
            self.seq,
            record,
            self.version,
            &self.reason,
        )
    }
}

/// The sentence `peer list` and the status page show for a rejection:
/// `rejected version 2 of <id>: <reason>`, or for an older build its
/// reason and the latest version sent that it cannot read. `record` is
/// empty and `version` 0 when unknown.
pub fn describe(older_build: bool, seq: u64, record: &str, version: u64, reason: &str) -> String {
    let what = match (record.is_empty(), version) {
        (true, _) => format!("feed entry {seq}"),
        (false, 0) => format!("a version of {record} (feed entry {seq})"),
        (false, v) => format!("version {v} of {record}"),
    };
    if older_build {
        format!("{reason} (latest sent: {what})")
    } else {
        format!("rejected {what}: {reason}")
    }
}

/// A reason as kept: control characters (line breaks, escapes) become
/// spaces, at most [`MAX_REASON_BYTES`] bytes are kept (cut on a character
/// boundary and marked `…`), and an empty one says so.
pub fn clip_reason(raw: &str) -> String {
    const MARK: &str = "…";
    let mut out = String::with_capacity(raw.len().min(MAX_REASON_BYTES));
    for c in raw.trim().chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > MAX_REASON_BYTES {
            while out.len() + MARK.len() > MAX_REASON_BYTES {
                out.pop();
            }
            out.push_str(MARK);
            break;
        }
        out.push(c);
    }
    if out.is_empty() {
        return NO_REASON.to_owned();
    }
    out
}

/// A reported rejection and, once a later delivery of its record went
/// out, the feed entry whose acknowledgement clears it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    rejection: FeedRejection,
    clears_at: Option<u64>,
}

/// What one peer could not take, as the serving side keeps it (see the
/// module docs for when each part clears).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerRejections {
    /// Oldest first; at most [`MAX_KEPT`], one per record.
    reported: VecDeque<Held>,
    /// Reports pushed out of `reported` since it was last empty.
    dropped: u64,
    older_build: Option<FeedRejection>,
}

impl PeerRejections {
    /// Keeps `r`, newest: it replaces a report about the same record, and
    /// pushes the oldest out past [`MAX_KEPT`].
    pub fn report(&mut self, r: FeedRejection) {
        if let Some(id) = &r.record {
            self.reported
                .retain(|h| h.rejection.record.as_ref() != Some(id));
        }
        self.reported.push_back(Held {
            rejection: r,
            clears_at: None,
        });
        while self.reported.len() > MAX_KEPT {
            self.reported.pop_front();
            self.dropped += 1;
        }
    }

    /// The records with a reported rejection and their versions, for the
    /// feed to watch for a later delivery (empty, the usual case, costs
    /// the feed nothing).
    pub fn watched(&self) -> Vec<(RecordId, u64)> {
        self.reported
            .iter()
            .filter_map(|h| Some((h.rejection.record.clone()?, h.rejection.version)))
            .collect()
    }

    /// `version` of `record` went out again at `seq`: a rejection of that
    /// version or an earlier one clears once `seq` is acknowledged, unless
    /// the peer rejects it again first.
    pub fn sent(&mut self, record: &RecordId, version: u64, seq: u64) {
        for h in &mut self.reported {
            if h.rejection.record.as_ref() == Some(record) && version >= h.rejection.version {
                h.clears_at = Some(h.clears_at.map_or(seq, |at| at.min(seq)));
            }
        }
    }

    /// The peer acknowledged every entry up to `seq`.
    pub fn acked(&mut self, seq: u64) {
        self.reported
            .retain(|h| h.clears_at.is_none_or(|at| at > seq));
        if self.reported.is_empty() {
            self.dropped = 0;
        }
    }

    /// Notes a version sent in an encoding the peer cannot read (the
    /// latest such is kept).
    pub fn older_build(&mut self, r: FeedRejection) {
        self.older_build = Some(r);
    }

    /// The peer declared that it reads every encoding this node writes.
    pub fn upgraded(&mut self) {
        self.older_build = None;
    }

    pub fn is_empty(&self) -> bool {
        self.reported.is_empty() && self.older_build.is_none()
    }

    /// What to show, newest first (the older-build note, if any, first),
    /// and how many reports were pushed out.
    pub fn view(&self) -> (Vec<FeedRejection>, u64) {
        let shown = self
            .older_build
            .iter()
            .cloned()
            .chain(self.reported.iter().rev().map(|h| h.rejection.clone()))
            .collect();
        (shown, self.dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn office() -> OfficeId {
        OfficeId::parse("phila-da").unwrap()
    }

    fn id(n: u32) -> RecordId {
        RecordId::parse(&format!("phila-da:0190a1b2c3d4{n:020x}")).unwrap()
    }

    fn report(seq: u64, record: &RecordId, version: u64) -> FeedRejection {
        FeedRejection::reported(&office(), seq, record.as_str(), version, "bad", seq)
    }

    #[test]
    fn a_reason_is_clipped_on_a_character_boundary_without_control_characters() {
        assert_eq!(
            clip_reason("  too many\nsubjects\u{1b}[2J "),
            "too many subjects [2J"
        );
        assert_eq!(clip_reason(""), NO_REASON);
        assert_eq!(clip_reason(" \n "), NO_REASON);
        let exact = "a".repeat(MAX_REASON_BYTES);
        assert_eq!(clip_reason(&exact), exact);
        for long in [
            "a".repeat(70_000),
            "é".repeat(40_000),
            "日本".repeat(20_000),
        ] {
            let kept = clip_reason(&long);
            assert!(kept.len() <= MAX_REASON_BYTES, "{}", kept.len());
            assert!(kept.ends_with('…'), "{kept}");
            assert!(kept.len() > MAX_REASON_BYTES - 8, "{}", kept.len());
        }
    }

    #[test]
    fn a_report_keeps_only_this_offices_record_ids_and_sane_versions() {
        let ours = id(1);
        let r = FeedRejection::reported(&office(), 7, ours.as_str(), 2, "why", 5);
        assert_eq!((r.record.as_ref(), r.version, r.seq), (Some(&ours), 2, 7));
        assert_eq!(r.describe(), format!("rejected version 2 of {ours}: why"));
        let theirs = "nyc-da:0190a1b2c3d4aaaaaaaaaaaaaaaaaaaa";
        let r = FeedRejection::reported(&office(), 7, theirs, 2, "why", 5);
        assert_eq!(r.record, None);
        assert_eq!(r.describe(), "rejected feed entry 7: why");
        let junk = "x".repeat(100_000);
        let r = FeedRejection::reported(&office(), 7, &junk, u64::MAX, &junk, 5);
        assert_eq!((r.record, r.version), (None, 0));
        assert!(r.reason.len() <= MAX_REASON_BYTES);
        let r = FeedRejection::reported(&office(), 7, ours.as_str(), 0, "", 5);
        assert_eq!(
            r.describe(),
            format!("rejected a version of {ours} (feed entry 7): {NO_REASON}")
        );
    }

    #[test]
    fn a_peer_keeps_its_newest_reports_one_per_record() {
        let mut p = PeerRejections::default();
        for n in 0..100u32 {
            p.report(report(u64::from(n) + 1, &id(n), 1));
        }
        // Junk from a hostile peer names no record: kept apart, still bounded.
        for seq in 0..1000 {
            p.report(FeedRejection::reported(&office(), seq, "junk", 0, "x", 0));
        }
        let (shown, dropped) = p.view();
        assert_eq!(shown.len(), MAX_KEPT);
        assert_eq!(dropped, 1100 - MAX_KEPT as u64);
        assert_eq!(shown[0].seq, 999, "newest first");

        // A second report about a record replaces the first.
        let mut p = PeerRejections::default();
        p.report(report(3, &id(1), 2));
        p.report(report(4, &id(2), 1));
        p.report(report(9, &id(1), 3));
        let (shown, dropped) = p.view();
        let seqs: Vec<u64> = shown.iter().map(|r| r.seq).collect();
        assert_eq!((seqs, dropped), (vec![9, 4], 0));
    }

    #[test]
    fn a_rejection_clears_once_a_later_delivery_of_its_record_is_acknowledged() {
        let mut p = PeerRejections::default();
        p.report(report(3, &id(1), 2));
        p.report(report(4, &id(2), 5));
        assert_eq!(p.watched(), vec![(id(1), 2), (id(2), 5)]);
        // Acknowledging past the rejected entries clears nothing.
        p.acked(10);
        assert_eq!(p.view().0.len(), 2);
        // An earlier version of the record, or another record, sent again:
        // nothing clears.
        p.sent(&id(2), 4, 11);
        p.sent(&id(3), 9, 11);
        p.acked(11);
        assert_eq!(p.view().0.len(), 2);
        // The same version sent again (re-queued) and a later one.
        p.sent(&id(1), 2, 12);
        p.sent(&id(2), 6, 13);
        // Rejected again before the acknowledgement: it stays.
        p.report(report(13, &id(2), 6));
        p.acked(13);
        let (shown, _) = p.view();
        assert_eq!(shown.len(), 1);
        assert_eq!(
            (shown[0].record.clone(), shown[0].version),
            (Some(id(2)), 6)
        );
        p.sent(&id(2), 7, 14);
        p.acked(13);
        assert!(!p.is_empty());
        p.acked(14);
        assert!(p.is_empty());
    }

    #[test]
    fn pushed_out_reports_are_counted_until_the_kept_ones_clear() {
        let mut p = PeerRejections::default();
        for n in 0..10u32 {
            p.report(report(u64::from(n) + 1, &id(n), 1));
        }
        assert_eq!(p.view().1, 2);
        for n in 2..10u32 {
            p.sent(&id(n), 1, 20);
        }
        p.acked(20);
        assert_eq!(p.view(), (Vec::new(), 0));
    }

    #[test]
    fn the_older_build_note_shows_the_latest_version_and_clears_on_upgrade() {
        let mut p = PeerRejections::default();
        p.older_build(FeedRejection::older_build(3, id(1), 1, 10));
        p.older_build(FeedRejection::older_build(5, id(2), 4, 11));
        p.report(report(6, &id(3), 1));
        let (shown, _) = p.view();
        assert_eq!(shown.len(), 2);
        assert_eq!(shown[0].cause, Cause::OlderBuild);
        assert_eq!(
            shown[0].describe(),
            format!("{OLDER_BUILD} (latest sent: version 4 of {})", id(2))
        );
        // Acknowledgements do not clear it: the peer rejected those.
        p.acked(100);
        assert_eq!(p.view().0.len(), 2);
        p.upgraded();
        let (shown, _) = p.view();
        assert_eq!(shown.len(), 1);
        assert_eq!(shown[0].cause, Cause::Reported);
    }
}
