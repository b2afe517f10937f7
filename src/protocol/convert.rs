//! Conversions between protobuf messages and domain values. A message
//! that does not make a valid value is a [`BadMessage`], which the gRPC
//! layer answers as `INVALID_ARGUMENT` and a puller rejects.

use super::pb;
use crate::domain::sharing::{GrantId, PurgeAck};
use crate::domain::{Attachment, BlobHash, OfficeId, RecordId, Role, SignedVersion};

/// A message that does not make a valid domain value; says which field
/// and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadMessage(pub String);

fn bad(e: impl std::fmt::Display) -> BadMessage {
    BadMessage(e.to_string())
}

/// Whether a converted record carries its body.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Body {
    Include,
    Omit,
}

pub fn record(v: &SignedVersion, body: Body) -> pb::Record {
    let r = &v.record;
    pb::Record {
        id: r.id.to_string(),
        version: r.version,
        origin: r.origin.to_string(),
        collection: r.collection.clone(),
        kind: r.kind.clone(),
        title: r.title.clone(),
        content_type: r.content_type.clone(),
        labels: r
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        body: match body {
            Body::Include => r.body.clone(),
            Body::Omit => Default::default(),
        },
        body_size: r.body.len() as u64,
        created_at_ms: r.created_at_ms,
        updated_at_ms: r.updated_at_ms,
        deleted: r.deleted,
        digest: bytes::Bytes::copy_from_slice(&v.digest),
        signature: v.signature.clone(),
        attachments: r.attachments.iter().map(attachment_to_pb).collect(),
        subjects: r.subjects.iter().map(subject_to_pb).collect(),
    }
}

/// An attachment as listed in a record; its state is filled in by the
/// caller, which knows what the node holds.
pub fn attachment_to_pb(a: &Attachment) -> pb::Attachment {
    pb::Attachment {
        hash: bytes::Bytes::copy_from_slice(&a.hash.0),
        size: a.size,
        file_name: a.file_name.clone(),
        media_type: a.media_type.clone(),
        state: pb::AttachmentState::Unspecified as i32,
        bytes_present: 0,
    }
}

pub fn attachment_from_pb(a: pb::Attachment) -> Result<Attachment, BadMessage> {
    Ok(Attachment {
        hash: blob_hash(&a.hash)?,
        size: a.size,
        file_name: a.file_name,
        media_type: a.media_type,
    })
}

pub fn blob_hash(bytes: &[u8]) -> Result<BlobHash, BadMessage> {
    BlobHash::from_slice(bytes).map_err(bad)
}

pub fn record_id(s: &str) -> Result<RecordId, BadMessage> {
    if s.is_empty() {
        return Err(bad("id is required"));
    }
    RecordId::parse(s).map_err(bad)
}

pub fn role_to_pb(role: Role) -> pb::Role {
    match role {
        Role::Admin => pb::Role::Admin,
        Role::Staff => pb::Role::Staff,
        Role::Auditor => pb::Role::Auditor,
    }
}

pub fn role_from_pb(value: i32) -> Result<Role, BadMessage> {
    match pb::Role::try_from(value) {
        Ok(pb::Role::Admin) => Ok(Role::Admin),
        Ok(pb::Role::Staff) => Ok(Role::Staff),
        Ok(pb::Role::Auditor) => Ok(Role::Auditor),
        _ => Err(bad("role must be ROLE_ADMIN, ROLE_STAFF or ROLE_AUDITOR")),
    }
}

/// A subject as a message names it, checked.
pub fn subject_from_pb(s: pb::Subject) -> Result<crate::domain::Subject, BadMessage> {
    crate::domain::Subject::new(&s.kind, &s.value, &s.role).map_err(|e| bad(e.to_string()))
}

pub fn subject_to_pb(s: &crate::domain::Subject) -> pb::Subject {
    pb::Subject {
        kind: s.kind.clone(),
        value: s.value.clone(),
        role: s.role.clone(),
    }
}

/// Rebuilds the signed version a `Record` message describes (it must carry
/// its body), so a client can check the origin's signature itself.
pub fn signed_from_pb(r: &pb::Record) -> Result<SignedVersion, BadMessage> {
    let bad = |e: String| BadMessage(format!("record is malformed: {e}"));
    let record = crate::domain::RecordVersion {
        id: RecordId::parse(&r.id).map_err(|e| bad(e.to_string()))?,
        version: r.version,
        origin: OfficeId::parse(&r.origin).map_err(|e| bad(e.to_string()))?,
        collection: r.collection.clone(),
        kind: r.kind.clone(),
        title: r.title.clone(),
        content_type: r.content_type.clone(),
        labels: r
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        body: r.body.clone(),
        created_at_ms: r.created_at_ms,
        updated_at_ms: r.updated_at_ms,
        deleted: r.deleted,
        attachments: r
            .attachments
            .iter()
            .map(|a| attachment_from_pb(a.clone()))
            .collect::<Result<_, _>>()?,
        subjects: r
            .subjects
            .iter()
            .map(|s| subject_from_pb(s.clone()))
            .collect::<Result<_, _>>()?,
    };
    let canonical = bytes::Bytes::from(record.canonical());
    SignedVersion::from_parts(canonical, r.signature.clone()).map_err(|e| bad(e.to_string()))
}

pub fn grant(g: &crate::domain::sharing::Grant) -> pb::GrantInfo {
    use crate::domain::sharing::GrantTarget;
    pb::GrantInfo {
        id: g.id.to_string(),
        peer: g.peer.to_string(),
        target: Some(match &g.target {
            GrantTarget::Collection(c) => pb::grant_info::Target::Collection(c.clone()),
            GrantTarget::Record(r) => pb::grant_info::Target::RecordId(r.to_string()),
        }),
        created_at_ms: g.created_at_ms,
        expires_at_ms: g.expires_at_ms,
        revoked_at_ms: g.ended_at_ms,
        warnings: Vec::new(),
        end_reason: g
            .end_reason
            .map(|r| r.as_str().to_owned())
            .unwrap_or_default(),
        purge_ack: g.purge_ack.as_ref().map(purge_ack_to_pb),
    }
}

pub fn office_id(field: &str, s: &str) -> Result<OfficeId, BadMessage> {
    if s.is_empty() {
        return Err(bad(format!("{field} is required")));
    }
    OfficeId::parse(s).map_err(bad)
}

pub fn purge_ack_from_pb(a: pb::PurgeAck) -> Result<PurgeAck, BadMessage> {
    Ok(PurgeAck {
        grant: GrantId::parse(&a.grant_id).map_err(bad)?,
        origin: OfficeId::parse(&a.origin).map_err(bad)?,
        purged_by: OfficeId::parse(&a.purged_by).map_err(bad)?,
        purged_at_ms: a.purged_at_ms,
        signature: a.signature.to_vec(),
    })
}

pub fn purge_ack_to_pb(a: &PurgeAck) -> pb::PurgeAck {
    pb::PurgeAck {
        grant_id: a.grant.to_string(),
        origin: a.origin.to_string(),
        purged_by: a.purged_by.to_string(),
        purged_at_ms: a.purged_at_ms,
        signature: a.signature.clone().into(),
    }
}

/// An audit entry and its chain hash, for the wire.
pub fn audit_entry(e: &crate::domain::audit::Entry, hash: &[u8; 32]) -> pb::AuditEntry {
    pb::AuditEntry {
        seq: e.seq,
        at_ms: e.at_ms,
        node: e.node.clone(),
        actor_kind: e.actor.kind.clone(),
        actor_name: e.actor.name.clone(),
        actor_role: e.actor.role.clone(),
        actor_office: e.actor.office.clone(),
        actor_fingerprint: e.actor.fingerprint.clone(),
        actor_remote: e.actor.remote.clone(),
        action: e.action.clone(),
        records: e
            .target
            .records
            .iter()
            .map(|(id, version)| pb::AuditRecordRef {
                record_id: id.clone(),
                version: *version,
            })
            .collect(),
        collection: e.target.collection.clone(),
        peer: e.target.peer.clone(),
        detail: e.target.detail.clone(),
        outcome_code: e.outcome.code.clone(),
        outcome_message: e.outcome.message.clone(),
        hash: bytes::Bytes::copy_from_slice(hash),
    }
}

pub fn signed_head(h: &crate::domain::audit::SignedHead) -> pb::SignedAuditHead {
    pb::SignedAuditHead {
        office: h.office.clone(),
        seq: h.seq,
        hash: bytes::Bytes::copy_from_slice(&h.hash),
        at_ms: h.at_ms,
        signature: bytes::Bytes::copy_from_slice(&h.signature),
        root: h
            .root
            .map(|r| bytes::Bytes::copy_from_slice(&r))
            .unwrap_or_default(),
    }
}

pub fn signed_head_from_pb(
    h: &pb::SignedAuditHead,
) -> Result<crate::domain::audit::SignedHead, BadMessage> {
    let hash: [u8; 32] = h
        .hash
        .as_ref()
        .try_into()
        .map_err(|_| bad("an audit head hash must be 32 bytes"))?;
    let root = match h.root.len() {
        0 => None,
        _ => Some(
            h.root
                .as_ref()
                .try_into()
                .map_err(|_| bad("an audit head's tree root must be 32 bytes or empty"))?,
        ),
    };
    Ok(crate::domain::audit::SignedHead {
        office: h.office.clone(),
        seq: h.seq,
        hash,
        root,
        at_ms: h.at_ms,
        signature: h.signature.to_vec(),
    })
}
