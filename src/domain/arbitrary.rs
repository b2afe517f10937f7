//! Strategies for property tests: well-formed values of the domain's
//! types, with free text drawn from all of Unicode (control characters
//! included) wherever a type takes any text.

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;

use super::audit::{Actor, Entry, Outcome, SALT_LEN, SignedHead, Target};
use super::sharing::{EndReason, FeedItem, Grant, GrantId, GrantTarget, PurgeAck};
use super::{Attachment, BlobHash, OfficeId, RecordId, RecordVersion, UserName};

/// Any text, short: printable or not, ASCII or not.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9 -]{0,12}",
        "\\PC{0,12}",
        any::<String>().prop_map(|s| s.chars().take(24).collect()),
    ]
}

pub fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max)
}

pub fn office_id() -> impl Strategy<Value = OfficeId> {
    "[a-z0-9][a-z0-9-]{1,20}[a-z0-9]".prop_map(|s| OfficeId::parse(&s).unwrap())
}

pub fn record_id() -> impl Strategy<Value = RecordId> {
    (office_id(), any::<u64>(), any::<[u8; 10]>())
        .prop_map(|(office, ms, random)| RecordId::generate(&office, ms, random))
}

pub fn grant_id() -> impl Strategy<Value = GrantId> {
    any::<[u8; 8]>().prop_map(GrantId::generate)
}

pub fn user_name() -> impl Strategy<Value = UserName> {
    "[a-z0-9._-]{1,63}".prop_map(|s| UserName::parse(&s).unwrap())
}

pub fn attachment() -> impl Strategy<Value = Attachment> {
    (any::<[u8; 32]>(), any::<u64>(), text(), text()).prop_map(
        |(hash, size, file_name, media_type)| Attachment {
            hash: BlobHash(hash),
            size,
            file_name,
            media_type,
        },
    )
}

/// A version as any origin could have signed it (not only as this
/// node's limits allow).
pub fn record_version() -> impl Strategy<Value = RecordVersion> {
    let head = (record_id(), any::<u64>(), text(), text(), text(), text());
    let content = (
        btree_map(text(), text(), 0..4),
        bytes(48),
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
        vec(attachment(), 0..3),
        subjects(),
    );
    (head, content).prop_map(
        |(
            (id, version, collection, kind, title, content_type),
            (labels, body, created_at_ms, updated_at_ms, deleted, attachments, subjects),
        )| RecordVersion {
            origin: id.origin(),
            id,
            version,
            collection,
            kind,
            title,
            content_type,
            labels: labels.into_iter().collect::<BTreeMap<_, _>>(),
            body: Bytes::from(body),
            created_at_ms,
            updated_at_ms,
            deleted,
            attachments,
            subjects,
        },
    )
}

/// Subjects as a version keeps them: valid, sorted, unique.
fn subjects() -> impl Strategy<Value = Vec<crate::domain::Subject>> {
    let kinds = ["badge", "plate", "agent-name", "unit", "location", "x-1"];
    vec(
        (0..kinds.len(), "[a-zA-Z0-9 #-]{1,12}", any::<bool>()),
        0..4,
    )
    .prop_map(move |raw| {
        let made = raw.into_iter().filter_map(|(k, value, witness)| {
            crate::domain::Subject::new(kinds[k], &value, if witness { "witness" } else { "" }).ok()
        });
        crate::domain::subject::canonical_order(made.collect())
    })
}

pub fn entry() -> impl Strategy<Value = Entry> {
    let actor = (text(), text(), text(), text(), text(), text()).prop_map(
        |(kind, name, role, office, fingerprint, remote)| Actor {
            kind,
            name,
            role,
            office,
            fingerprint,
            remote,
        },
    );
    let target = (vec((text(), any::<u64>()), 0..4), text(), text(), text()).prop_map(
        |(records, collection, peer, detail)| Target {
            records,
            collection,
            peer,
            detail,
        },
    );
    let outcome = (text(), text()).prop_map(|(code, message)| Outcome { code, message });
    (
        (any::<u64>(), any::<u64>(), text(), text()),
        (actor, target, outcome),
        (any::<[u8; 32]>(), any::<Option<[u8; SALT_LEN]>>()),
    )
        .prop_map(
            |((seq, at_ms, node, action), (actor, target, outcome), (prev, salt))| Entry {
                seq,
                at_ms,
                node,
                actor,
                action,
                target,
                outcome,
                prev,
                salt,
            },
        )
}

pub fn signed_head() -> impl Strategy<Value = SignedHead> {
    (
        text(),
        any::<u64>(),
        any::<[u8; 32]>(),
        proptest::option::of(any::<[u8; 32]>()),
        any::<u64>(),
        bytes(80),
    )
        .prop_map(|(office, seq, hash, root, at_ms, signature)| SignedHead {
            office,
            seq,
            hash,
            root,
            at_ms,
            signature,
        })
}

pub fn feed_item() -> impl Strategy<Value = FeedItem> {
    prop_oneof![
        (record_id(), any::<u64>(), any::<u64>()).prop_map(|(id, from, to)| FeedItem::Versions {
            id,
            from,
            to
        }),
        record_id().prop_map(|id| FeedItem::Revoke { id }),
        grant_id().prop_map(|grant| FeedItem::GrantClosed { grant }),
    ]
}

pub fn purge_ack() -> impl Strategy<Value = PurgeAck> {
    (
        grant_id(),
        office_id(),
        office_id(),
        any::<u64>(),
        bytes(80),
    )
        .prop_map(
            |(grant, origin, purged_by, purged_at_ms, signature)| PurgeAck {
                grant,
                origin,
                purged_by,
                purged_at_ms,
                signature,
            },
        )
}

pub fn grant() -> impl Strategy<Value = Grant> {
    let target = prop_oneof![
        text().prop_map(GrantTarget::Collection),
        record_id().prop_map(GrantTarget::Record),
    ];
    let end_reason = prop_oneof![
        Just(None),
        Just(Some(EndReason::Revoked)),
        Just(Some(EndReason::Expired)),
        Just(Some(EndReason::PeerRemoved)),
    ];
    (
        (grant_id(), office_id(), target),
        (any::<u64>(), any::<u64>(), any::<u64>()),
        (end_reason, proptest::option::of(purge_ack())),
    )
        .prop_map(
            |(
                (id, peer, target),
                (created_at_ms, expires_at_ms, ended_at_ms),
                (end_reason, purge_ack),
            )| Grant {
                id,
                peer,
                target,
                created_at_ms,
                expires_at_ms,
                ended_at_ms,
                end_reason,
                purge_ack,
            },
        )
}

/// `bytes` with a few bytes changed (each XORed with a non-zero mask) and
/// perhaps cut short: an encoding damaged in transit or on disk.
pub fn damaged(
    bytes: Vec<u8>,
    flips: &[(prop::sample::Index, u8)],
    cut: Option<prop::sample::Index>,
) -> Vec<u8> {
    let mut out = bytes;
    if out.is_empty() {
        return out;
    }
    for (at, mask) in flips {
        let at = at.index(out.len());
        out[at] ^= (*mask).max(1);
    }
    if let Some(cut) = cut {
        out.truncate(cut.index(out.len()));
    }
    out
}

/// Flips and a cut for [`damaged`].
pub fn damage()
-> impl Strategy<Value = (Vec<(prop::sample::Index, u8)>, Option<prop::sample::Index>)> {
    (
        vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        proptest::option::weighted(0.2, any::<prop::sample::Index>()),
    )
}
