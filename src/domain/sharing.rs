//! Sharing between offices: pinned peers, grants, the sharing rule, feed
//! entries, and purge acknowledgements.
//!
//! The sharing rule: a peer office may see a record while the record's
//! origin is this office and at least one of its grants covers the record
//! and is active (not revoked, not expired). Nothing else is ever sent.

use std::fmt;

use super::codec::{DecodeError, Reader, Writer};
use super::ids::{IdError, OfficeId, RecordId};

/// A pinned peer office.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub office: OfficeId,
    /// `https://HOST:PORT` of its node.
    pub endpoint: String,
    /// Its office CA certificate (DER).
    pub ca_der: Vec<u8>,
    pub added_at_ms: u64,
}

/// A grant id, `g-<16 hex digits>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GrantId(String);

impl GrantId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = s.len() == 18
            && s.starts_with("g-")
            && s[2..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::Grant(s.to_owned()))
        }
    }

    pub fn generate(random: [u8; 8]) -> Self {
        Self(format!("g-{}", hex::encode(random)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GrantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a grant covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantTarget {
    Collection(String),
    Record(RecordId),
}

/// Why a grant ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    Revoked,
    Expired,
    PeerRemoved,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Revoked => "revoked",
            EndReason::Expired => "expired",
            EndReason::PeerRemoved => "peer removed",
        }
    }
}

/// Permission for one peer office to receive one collection or one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub id: GrantId,
    pub peer: OfficeId,
    pub target: GrantTarget,
    pub created_at_ms: u64,
    /// 0: no expiry.
    pub expires_at_ms: u64,
    /// When it ended (0: it has not), and why.
    pub ended_at_ms: u64,
    pub end_reason: Option<EndReason>,
    /// The peer's signed acknowledgement that it purged this grant.
    pub purge_ack: Option<PurgeAck>,
}

impl Grant {
    /// Active: not ended, and not past its expiry at `now_ms`.
    pub fn is_active(&self, now_ms: u64) -> bool {
        self.ended_at_ms == 0 && (self.expires_at_ms == 0 || now_ms < self.expires_at_ms)
    }

    /// Whether the grant's target includes this record (active or not).
    pub fn covers(&self, id: &RecordId, collection: &str) -> bool {
        match &self.target {
            GrantTarget::Collection(c) => c == collection,
            GrantTarget::Record(r) => r == id,
        }
    }
}

/// The sharing rule, for one peer's grants.
pub fn visible<'a>(
    grants: impl IntoIterator<Item = &'a Grant>,
    own_office: &OfficeId,
    id: &RecordId,
    collection: &str,
    now_ms: u64,
) -> bool {
    id.origin() == *own_office
        && grants
            .into_iter()
            .any(|g| g.is_active(now_ms) && g.covers(id, collection))
}

/// An entry in a peer's feed (its outbox at the origin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedItem {
    /// Send versions `from..=to` of the record, if it is still visible to
    /// the peer when sent. `to` was the head when the entry was queued, so
    /// nothing newer than what was committed with the entry is sent.
    Versions { id: RecordId, from: u64, to: u64 },
    /// The peer must delete its replica.
    Revoke { id: RecordId },
    /// Every revocation of this grant has been queued before this entry.
    GrantClosed { grant: GrantId },
}

/// Work a grant change must finish, marked in the store with the change
/// and cleared when done, so that a crash in between is finished at the
/// next start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantJob {
    /// Queue every record the new grant reveals.
    Backfill,
    /// Queue the revocations of an ended grant, then its closing marker.
    Close,
}

/// A signed statement by `purged_by` that it deleted its replicas of
/// `origin`'s revoked grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeAck {
    pub grant: GrantId,
    pub origin: OfficeId,
    pub purged_by: OfficeId,
    pub purged_at_ms: u64,
    pub signature: Vec<u8>,
}

const PURGE_ACK_V1: &[u8; 20] = b"casemesh.purge.v1\0\0\0";

impl PurgeAck {
    /// The bytes the purging office signs.
    pub fn canonical(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.raw(PURGE_ACK_V1)
            .str(self.grant.as_str())
            .str(self.origin.as_str())
            .str(self.purged_by.as_str())
            .u64(self.purged_at_ms);
        w.finish()
    }
}

/// Encodings of feed items and purge acknowledgements as the store keeps
/// them (version byte first).
pub mod encoding {
    use super::*;

    const V1: u8 = 1;

    fn invalid(field: &'static str, e: impl ToString) -> DecodeError {
        DecodeError::Invalid {
            field,
            reason: e.to_string(),
        }
    }

    pub fn encode_item(item: &FeedItem) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(V1);
        match item {
            FeedItem::Versions { id, from, to } => w.u8(1).str(id.as_str()).u64(*from).u64(*to),
            FeedItem::Revoke { id } => w.u8(2).str(id.as_str()),
            FeedItem::GrantClosed { grant } => w.u8(3).str(grant.as_str()),
        };
        w.finish()
    }

    pub fn decode_item(bytes: &[u8]) -> Result<FeedItem, DecodeError> {
        let mut r = Reader::new(bytes);
        let v = r.u8()?;
        if v != V1 {
            return Err(DecodeError::UnknownVersion(vec![v]));
        }
        let item = match r.u8()? {
            1 => FeedItem::Versions {
                id: RecordId::parse(r.str("id")?).map_err(|e| invalid("id", e))?,
                from: r.u64()?,
                to: r.u64()?,
            },
            2 => FeedItem::Revoke {
                id: RecordId::parse(r.str("id")?).map_err(|e| invalid("id", e))?,
            },
            3 => FeedItem::GrantClosed {
                grant: GrantId::parse(r.str("grant")?).map_err(|e| invalid("grant", e))?,
            },
            k => return Err(invalid("kind", format!("unknown feed item kind {k}"))),
        };
        r.finish()?;
        Ok(item)
    }

    pub fn write_ack(w: &mut Writer, a: &PurgeAck) {
        w.str(a.grant.as_str())
            .str(a.origin.as_str())
            .str(a.purged_by.as_str())
            .u64(a.purged_at_ms)
            .bytes(&a.signature);
    }

    pub fn read_ack(r: &mut Reader<'_>) -> Result<PurgeAck, DecodeError> {
        Ok(PurgeAck {
            grant: GrantId::parse(r.str("grant")?).map_err(|e| invalid("grant", e))?,
            origin: OfficeId::parse(r.str("origin")?).map_err(|e| invalid("origin", e))?,
            purged_by: OfficeId::parse(r.str("purged_by")?).map_err(|e| invalid("purged_by", e))?,
            purged_at_ms: r.u64()?,
            signature: r.bytes()?.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(target: GrantTarget) -> Grant {
        Grant {
            id: GrantId::generate([1; 8]),
            peer: OfficeId::parse("nyc-da").unwrap(),
            target,
            created_at_ms: 0,
            expires_at_ms: 0,
            ended_at_ms: 0,
            end_reason: None,
            purge_ack: None,
        }
    }

    #[test]
    fn the_sharing_rule() {
        let own = OfficeId::parse("phila-da").unwrap();
        let id = RecordId::generate(&own, 1, [2; 10]);
        let other = RecordId::generate(&own, 1, [3; 10]);
        let replica = RecordId::generate(&OfficeId::parse("nyc-da").unwrap(), 1, [4; 10]);
        let by_case = grant(GrantTarget::Collection("case-1".into()));
        let by_record = grant(GrantTarget::Record(id.clone()));

        assert!(visible([&by_case], &own, &id, "case-1", 5));
        assert!(!visible([&by_case], &own, &id, "case-2", 5));
        assert!(visible([&by_record], &own, &id, "case-2", 5));
        assert!(!visible([&by_record], &own, &other, "case-2", 5));
        assert!(
            !visible([&by_case], &own, &replica, "case-1", 5),
            "never re-share replicas"
        );
        assert!(!visible([], &own, &id, "case-1", 5));

        let mut expiring = by_case.clone();
        expiring.expires_at_ms = 10;
        assert!(visible([&expiring], &own, &id, "case-1", 9));
        assert!(!visible([&expiring], &own, &id, "case-1", 10));
        let mut ended = by_case;
        ended.ended_at_ms = 3;
        assert!(!visible([&ended], &own, &id, "case-1", 5));
    }

    #[test]
    fn feed_items_round_trip() {
        let id = RecordId::generate(&OfficeId::parse("phila-da").unwrap(), 1, [2; 10]);
        for item in [
            FeedItem::Versions {
                id: id.clone(),
                from: 3,
                to: 4,
            },
            FeedItem::Revoke { id },
            FeedItem::GrantClosed {
                grant: GrantId::generate([9; 8]),
            },
        ] {
            assert_eq!(
                encoding::decode_item(&encoding::encode_item(&item)).unwrap(),
                item
            );
        }
    }

    #[test]
    fn grant_ids_are_checked() {
        assert!(GrantId::parse("g-0123456789abcdef").is_ok());
        for bad in [
            "",
            "g-",
            "g-0123",
            "x-0123456789abcdef",
            "g-0123456789ABCDEF",
        ] {
            assert!(GrantId::parse(bad).is_err(), "{bad}");
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::encoding::*;
        use super::super::*;
        use crate::domain::arbitrary::{bytes, damage, damaged, feed_item, purge_ack};

        proptest! {
            /// Feed items are encoded one way only: what decodes encodes
            /// to the same bytes.
            #[test]
            fn feed_items_round_trip_and_decode_only_from_their_encoding(
                item in feed_item(),
                (flips, cut) in damage(),
            ) {
                prop_assert_eq!(decode_item(&encode_item(&item)), Ok(item.clone()));
                let bytes = damaged(encode_item(&item), &flips, cut);
                if let Ok(d) = decode_item(&bytes) {
                    prop_assert_eq!(encode_item(&d), bytes);
                }
            }

            #[test]
            fn any_bytes_decode_as_a_feed_item_only_from_its_encoding(b in bytes(96)) {
                if let Ok(d) = decode_item(&b) {
                    prop_assert_eq!(encode_item(&d), b);
                }
            }

            #[test]
            fn purge_acks_round_trip(ack in purge_ack()) {
                let mut w = Writer::default();
                write_ack(&mut w, &ack);
                let bytes = w.finish();
                let mut r = Reader::new(&bytes);
                prop_assert_eq!(read_ack(&mut r), Ok(ack));
                prop_assert!(r.finish().is_ok());
            }
        }
    }
}
