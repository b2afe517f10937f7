//! Every decoder of what the store keeps, run on any bytes: the entry point
//! of the `store_values` fuzz target (`fuzz/`) and of the property tests of
//! the encodings. Not part of the store's interface.
//!
//! The properties: no bytes make a decoder panic; a value that decodes
//! encodes to bytes that decode to the same value (earlier layouts are
//! written again in today's); a key that decodes is written back as the
//! very same bytes, since keys are looked up by their bytes.

use std::fmt::Debug;

use super::encoding::{
    AuditHead, BlobMeta, Fetch, Head, OurAck, PeerRemoval, PurgeStub, UserRecord,
};
use super::keys::{CollectionKey, GrantRecord, OfficeSeq, PairKey, RefKey, VersionKey};
use super::typed::{Key, KeyOf, Raw, Value};
use crate::domain::audit::{Entry, SignedHead};
use crate::domain::sharing::{FeedItem, Grant, GrantId, GrantJob, Peer};
use crate::domain::{BlobHash, OfficeId, RecordId, SignedVersion, UserName};
use crate::identity::Fingerprint;

/// Decodes `bytes` as every kind of value and key the trees hold
/// ([`super::trees::Trees`]), checking the properties above.
pub fn decode_any(bytes: &[u8]) {
    values(bytes);
    keys(bytes);
}

/// One line per value type of [`super::trees::Trees`].
fn values(bytes: &[u8]) {
    value::<SignedVersion>(bytes);
    value::<Head>(bytes);
    value::<UserRecord>(bytes);
    value::<Fingerprint>(bytes);
    value::<Peer>(bytes);
    value::<PeerRemoval>(bytes);
    value::<Grant>(bytes);
    value::<GrantJob>(bytes);
    value::<FeedItem>(bytes);
    value::<u64>(bytes);
    value::<PurgeStub>(bytes);
    value::<OurAck>(bytes);
    value::<BlobMeta>(bytes);
    value::<Raw>(bytes);
    value::<Fetch>(bytes);
    value::<Entry>(bytes);
    value::<AuditHead>(bytes);
    value::<SignedHead>(bytes);
    value::<()>(bytes);
}

/// Decodes `bytes` as a `V`; if they decode, checks that the value's
/// encoding decodes to it again, and returns it.
fn value<V: Value + PartialEq + Debug>(bytes: &[u8]) -> Option<V> {
    let v = V::decode(bytes).ok()?;
    let again = V::decode(&v.encode());
    assert_eq!(
        again.as_ref(),
        Ok(&v),
        "{} decoded from {} does not survive its own encoding",
        std::any::type_name::<V>(),
        hex::encode(bytes)
    );
    Some(v)
}

/// Checks that a decoded key is written back as `bytes`.
fn same_key(written: &[u8], bytes: &[u8], kind: &str) {
    assert_eq!(
        hex::encode(written),
        hex::encode(bytes),
        "a {kind} key is not written back as it was read"
    );
}

/// One block per key kind of [`super::keys`].
fn keys(bytes: &[u8]) {
    if let Ok(id) = RecordId::decode(bytes) {
        same_key(&KeyOf::<RecordId>::key(&&id), bytes, "record id");
    }
    if let Ok(office) = OfficeId::decode(bytes) {
        same_key(&KeyOf::<OfficeId>::key(&&office), bytes, "office id");
    }
    if let Ok(grant) = GrantId::decode(bytes) {
        same_key(&KeyOf::<GrantId>::key(&&grant), bytes, "grant id");
    }
    if let Ok(name) = UserName::decode(bytes) {
        same_key(&KeyOf::<UserName>::key(&&name), bytes, "user name");
    }
    if let Ok(n) = <u64 as Key>::decode(bytes) {
        same_key(&KeyOf::<u64>::key(&n), bytes, "number");
    }
    if let Ok(hash) = BlobHash::decode(bytes) {
        same_key(&KeyOf::<BlobHash>::key(&&hash), bytes, "blob hash");
    }
    if let Ok(fp) = <Fingerprint as Key>::decode(bytes) {
        same_key(&KeyOf::<Fingerprint>::key(&&fp), bytes, "fingerprint");
    }
    if let Ok((id, version)) = VersionKey::decode(bytes) {
        same_key(&KeyOf::<VersionKey>::key(&(&id, version)), bytes, "version");
    }
    if let Ok((hash, id, version)) = RefKey::decode(bytes) {
        same_key(
            &KeyOf::<RefKey>::key(&(&hash, &id, version)),
            bytes,
            "reference",
        );
    }
    if let Ok(parts) = PairKey::decode(bytes) {
        same_key(&KeyOf::<PairKey>::key(&parts), bytes, "chunk");
    }
    // These read back only the part after the separator (the caller
    // chose the rest), so only their decoding is checked.
    let _ = CollectionKey::decode(bytes);
    let _ = OfficeSeq::decode(bytes);
    let _ = GrantRecord::decode(bytes);
}

/// One value of each kind and one key of each kind that reads back
/// whole, encoded: seeds for the fuzzer.
pub fn samples() -> Vec<(&'static str, Vec<u8>)> {
    let office = OfficeId::parse("phila-da").ok();
    let id = office
        .as_ref()
        .map(|o| RecordId::generate(o, 1_790_000_000_000, [2; 10]));
    let grant = GrantId::generate([1; 8]);
    let (Some(office), Some(id)) = (office, id) else {
        return Vec::new();
    };
    let ack = crate::domain::sharing::PurgeAck {
        grant: grant.clone(),
        origin: office.clone(),
        purged_by: office.clone(),
        purged_at_ms: 1_790_000_000_000,
        signature: vec![0xaa],
    };
    let hash = BlobHash([7; 32]);
    vec![
        (
            "head",
            Head {
                version: 3,
                deleted: false,
                collection: "2026 004".into(),
            }
            .encode(),
        ),
        (
            "grant",
            Grant {
                id: grant.clone(),
                peer: office.clone(),
                target: crate::domain::sharing::GrantTarget::Record(id.clone()),
                created_at_ms: 1,
                expires_at_ms: 2,
                ended_at_ms: 3,
                end_reason: Some(crate::domain::sharing::EndReason::Revoked),
                purge_ack: Some(ack.clone()),
            }
            .encode(),
        ),
        (
            "our-ack",
            OurAck {
                ack,
                delivered: true,
            }
            .encode(),
        ),
        (
            "purge-stub",
            PurgeStub {
                id: id.clone(),
                version: 2,
                digest: [7; 32],
                purged_at_ms: 9,
            }
            .encode(),
        ),
        (
            "blob",
            BlobMeta {
                size: 300_000,
                keep_until_ms: 9,
                legacy: None,
            }
            .encode(),
        ),
        (
            "fetch",
            Fetch {
                origin: office.clone(),
                size: 5,
                legacy: None,
            }
            .encode(),
        ),
        (
            "audit-head",
            AuditHead {
                seq: 4,
                hash: [3; 32],
                at_ms: 6,
            }
            .encode(),
        ),
        (
            "version-key",
            KeyOf::<VersionKey>::key(&(&id, 3)).into_owned(),
        ),
        (
            "ref-key",
            KeyOf::<RefKey>::key(&(&hash, &id, 3)).into_owned(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any bytes: every decoder returns a value or an error, and the
        /// properties hold.
        #[test]
        fn any_bytes_decode_as_every_stored_kind_or_fail_cleanly(
            bytes in proptest::collection::vec(any::<u8>(), 0..200)
        ) {
            decode_any(&bytes);
        }

        /// Bytes that begin like a stored value (a version byte of 1 or 2,
        /// then a length that fits), so decoders get past their first
        /// field more often than on random bytes.
        #[test]
        fn value_shaped_bytes_decode_or_fail_cleanly(
            version in 0u8..4,
            len in 0u32..24,
            rest in proptest::collection::vec(any::<u8>(), 0..120)
        ) {
            let mut bytes = vec![version];
            bytes.extend_from_slice(&len.to_be_bytes());
            bytes.extend_from_slice(&rest);
            decode_any(&bytes);
        }
    }
}
