//! `--json` output: every shape the CLI prints, in one place, under one
//! convention (documented in `docs/cli.md`, "JSON output", and checked against
//! it by a test):
//!
//! - times are `*_at` keys holding RFC 3339 (UTC, milliseconds), or `null`
//!   when there is none or it is past year 9999 (only a damaged or hostile
//!   source sends one; the text output shows its raw value);
//! - a value that is absent is `null`, never `""` or `0`;
//! - fields are structured (ids, states and reasons apart), never the
//!   display strings of the text output;
//! - one object shape per kind of thing, whichever command prints it (a
//!   record looks the same from `record get`, `record list` and
//!   `record history`).

use serde_json::{Value, json};

use crate::protocol::{convert, pb};

/// Prints a value as the command's whole output.
pub fn print(v: &Value) {
    // A `Value` always serialises.
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// A time: RFC 3339, or `null` for none (0) or one RFC 3339 cannot write.
pub fn time(ms: u64) -> Value {
    if ms == 0 {
        return Value::Null;
    }
    crate::domain::time::rfc3339(ms).map_or(Value::Null, Value::String)
}

/// Text that may be absent: `null` when empty.
pub fn text(s: &str) -> Value {
    if s.is_empty() { Value::Null } else { json!(s) }
}

/// A record version. `body` holds the body as text when it is UTF-8,
/// `body_hex` when it is not; both are `null` when the node did not send
/// the body.
pub fn record(r: &pb::Record) -> Value {
    let sent = r.body.len() as u64 == r.body_size;
    let (body, body_hex) = match std::str::from_utf8(&r.body) {
        _ if !sent => (Value::Null, Value::Null),
        Ok(t) => (json!(t), Value::Null),
        Err(_) => (Value::Null, json!(hex::encode(&r.body))),
    };
    json!({
        "id": r.id,
        "version": r.version,
        "origin": r.origin,
        "collection": r.collection,
        "kind": r.kind,
        "title": r.title,
        "content_type": text(&r.content_type),
        "labels": r.labels,
        "body_size": r.body_size,
        "body": body,
        "body_hex": body_hex,
        "created_at": time(r.created_at_ms),
        "updated_at": time(r.updated_at_ms),
        "deleted": r.deleted,
        "digest": hex::encode(&r.digest),
        "signature": hex::encode(&r.signature),
        "attachments": r.attachments.iter().map(attachment).collect::<Vec<_>>(),
        "subjects": r.subjects.iter().map(|s| json!({
            "kind": s.kind,
            "value": s.value,
            "role": text(&s.role),
        })).collect::<Vec<_>>(),
    })
}

pub fn attachment(a: &pb::Attachment) -> Value {
    json!({
        "file_name": a.file_name,
        "media_type": a.media_type,
        "size": a.size,
        "hash": hex::encode(&a.hash),
        "state": match a.state() {
            pb::AttachmentState::Present => json!("present"),
            pb::AttachmentState::Pending => json!("pending"),
            pb::AttachmentState::Unspecified => Value::Null,
        },
        "bytes_present": a.bytes_present,
    })
}

/// What `record put` wrote.
pub fn written(r: &pb::PutResponse) -> Value {
    json!({
        "id": r.id,
        "version": r.version,
        "digest": hex::encode(&r.digest),
        "updated_at": time(r.updated_at_ms),
    })
}

/// A grant. `state` is `active` or `ended`; `purge`, for an ended grant,
/// is `pending`, `confirmed` (with who and when) or `impossible` (the peer
/// was removed, so its node can no longer be asked).
pub fn grant(g: &pb::GrantInfo) -> Value {
    let (collection, record) = match &g.target {
        Some(pb::grant_info::Target::Collection(c)) => (json!(c), Value::Null),
        Some(pb::grant_info::Target::RecordId(r)) => (Value::Null, json!(r)),
        None => (Value::Null, Value::Null),
    };
    let ended = g.revoked_at_ms != 0;
    let purge = match (&g.purge_ack, ended) {
        (_, false) => Value::Null,
        (Some(_), true) => json!("confirmed"),
        (None, true) if g.end_reason == "peer removed" => json!("impossible"),
        (None, true) => json!("pending"),
    };
    json!({
        "id": g.id,
        "peer": g.peer,
        "collection": collection,
        "record": record,
        "created_at": time(g.created_at_ms),
        "expires_at": time(g.expires_at_ms),
        "state": if ended { "ended" } else { "active" },
        "ended_at": time(g.revoked_at_ms),
        "end_reason": text(&g.end_reason),
        "purge": purge,
        "purge_confirmed_by": g.purge_ack.as_ref().map(|a| a.purged_by.clone()),
        "purged_at": g.purge_ack.as_ref().map(|a| time(a.purged_at_ms)),
    })
}

pub fn peer(p: &pb::Peer) -> Value {
    json!({
        "office": p.office,
        "endpoint": p.endpoint,
        "fingerprint": p.fingerprint,
        "added_at": time(p.added_at_ms),
        "ca_expires_at": time(p.ca_expires_at_ms),
        "connected": p.connected,
        "last_contact_at": time(p.last_contact_ms),
        "checkpoint": p.checkpoint,
        "outbox_pending": p.outbox_pending,
        "replicas": p.replicas,
        "last_error": text(&p.last_error),
        "feed_rejections": p.feed_rejections.iter().map(feed_rejection).collect::<Vec<_>>(),
        "feed_rejections_dropped": p.feed_rejections_dropped,
    })
}

/// A version of this office's feed a peer could not take; `cause` is
/// `rejected` (the peer said so, `reason` is its reason) or `older_build`
/// (the peer cannot read the version's encoding).
pub fn feed_rejection(r: &pb::FeedRejection) -> Value {
    json!({
        "cause": if r.older_build { "older_build" } else { "rejected" },
        "record": text(&r.record_id),
        "version": if r.version == 0 { Value::Null } else { json!(r.version) },
        "feed_seq": r.seq,
        "reason": r.reason,
        "at": time(r.at_ms),
    })
}

/// A user certificate; `state` is `valid` or `revoked`.
pub fn user(u: &pb::User) -> Value {
    json!({
        "name": u.name,
        "role": convert::role_from_pb(u.role).map(|r| r.as_str()).ok(),
        "fingerprint": u.fingerprint,
        "state": if u.revoked_at_ms == 0 { "valid" } else { "revoked" },
        "issued_at": time(u.issued_at_ms),
        "expires_at": time(u.expires_at_ms),
        "revoked_at": time(u.revoked_at_ms),
    })
}

/// An audit entry; `outcome` is `ok` or `failed`, with the gRPC code and
/// message of a failure.
pub fn audit_entry(e: &pb::AuditEntry) -> Value {
    let failed = !e.outcome_code.is_empty();
    json!({
        "seq": e.seq,
        "at": time(e.at_ms),
        "node": e.node,
        "actor": {
            "kind": e.actor_kind,
            "name": text(&e.actor_name),
            "role": text(&e.actor_role),
            "office": text(&e.actor_office),
            "fingerprint": text(&e.actor_fingerprint),
            "remote": text(&e.actor_remote),
        },
        "action": e.action,
        "records": e.records.iter().map(|r| json!({
            "id": r.record_id,
            "version": (r.version != 0).then_some(r.version),
        })).collect::<Vec<_>>(),
        "collection": text(&e.collection),
        "peer": text(&e.peer),
        "detail": text(&e.detail),
        "outcome": if failed { "failed" } else { "ok" },
        "outcome_code": text(&e.outcome_code),
        "outcome_message": text(&e.outcome_message),
        "hash": hex::encode(&e.hash),
    })
}

pub fn signed_head(h: &pb::SignedAuditHead) -> Value {
    json!({
        "office": h.office,
        "seq": h.seq,
        "hash": hex::encode(&h.hash),
        "root": (!h.root.is_empty()).then(|| hex::encode(&h.root)),
        "signed_at": time(h.at_ms),
    })
}

pub fn transfer(t: &pb::Transfer) -> Value {
    json!({
        "hash": hex::encode(&t.hash),
        "origin": t.origin,
        "size": t.size,
        "received": t.received,
        "resumed_from": t.resumed_from,
        "active": t.active,
        "last_error": text(&t.last_error),
        "gave_up": t.gave_up,
    })
}

/// What `verify-bundle` found. `verified` says whether every check passed
/// and the exporting office was one given with `--trust`; `verdict` says
/// which of the two failed; `failures` name their item first.
pub fn bundle_report(r: &crate::bundle::Report) -> Value {
    let word = |v: serde_json::Result<Value>| v.unwrap_or(Value::Null);
    json!({
        "verified": r.is_verified(),
        "verdict": word(serde_json::to_value(r.verdict())),
        "format": text(&r.format),
        "collection": text(&r.collection),
        "exported_by": text(&r.exported_by),
        "exported_at": r.exported_at_ms.map_or(Value::Null, time),
        "trust_given": r.trust_given,
        "exporter_trusted": r.exporter_trusted,
        "offices": r.offices.iter().map(|o| json!({
            "office": o.office,
            "fingerprint": o.fingerprint,
            "valid": o.valid,
            "trust": word(serde_json::to_value(o.trust)),
        })).collect::<Vec<_>>(),
        "versions": r.versions.iter().map(|v| json!({
            "record": v.record,
            "version": v.version,
            "origin": v.origin,
            "collection": v.collection,
            "title": v.title,
            "updated_at": time(v.updated_at_ms),
            "deleted": v.deleted,
            "signature": word(serde_json::to_value(v.signature)),
            "attachments": v.attachments.iter().map(|a| json!({
                "file_name": a.file_name,
                "media_type": a.media_type,
                "size": a.size,
                "hash": a.hash,
                "state": word(serde_json::to_value(a.state)),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "audit": {
            "office": text(&r.audit.office),
            "head_seq": r.audit.head_seq,
            "head_signed_at": r.audit.head_at_ms.map_or(Value::Null, time),
            "entries": r.audit.entries.iter().map(|e| json!({
                "seq": e.seq,
                "at": time(e.at_ms),
                "actor": e.actor,
                "action": e.action,
                "target": text(&e.target),
                "outcome": e.outcome,
                "checks_out": e.checks_out,
            })).collect::<Vec<_>>(),
        },
        "notes": r.notes,
        "failures": r.failures,
    })
}

/// `casemesh status`, with the certificate warnings it printed.
pub fn status(s: &pb::StatusResponse, warnings: &[String]) -> Value {
    json!({
        "office": s.office,
        "fingerprint": s.fingerprint,
        "software_version": s.software_version,
        "records": s.records,
        "versions": s.versions,
        "blobs": s.blobs,
        "blob_bytes": s.blob_bytes,
        "blob_store": s.blob_store,
        "damaged_files": s.damaged_files.iter().map(|d| json!({
            "hash": hex::encode(&d.hash),
            "found_at": time(d.found_at_ms),
        })).collect::<Vec<_>>(),
        "node_certificate_expires_at": time(s.node_certificate_expires_at_ms),
        "office_ca_expires_at": time(s.office_ca_expires_at_ms),
        "disk_free_bytes": s.disk_free_bytes,
        "disk_reserve_bytes": s.disk_reserve_bytes,
        "writes_refused": text(&s.writes_refused),
        "audit_entries_unindexed": s.audit_entries_unindexed,
        "search": s.search.as_ref().map(|x| json!({
            "state": x.state,
            "records": x.records,
            "waiting": x.waiting,
            "rebuilt": x.rebuilt,
            "rebuild_total": x.rebuild_total,
        })),
        "peers": s.peers.iter().map(peer).collect::<Vec<_>>(),
        "transfers": s.transfers.iter().map(transfer).collect::<Vec<_>>(),
        "warnings": warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_values_are_null_and_times_rfc3339() {
        assert_eq!(time(0), Value::Null);
        assert_eq!(time(1_000), json!("1970-01-01T00:00:01.000Z"));
        assert_eq!(time(u64::MAX), Value::Null);
        assert_eq!(text(""), Value::Null);
        let r = record(&pb::Record {
            body_size: 10,
            ..Default::default()
        });
        assert_eq!((&r["body"], &r["body_hex"]), (&Value::Null, &Value::Null));
        let r = record(&pb::Record {
            body: bytes::Bytes::from_static(&[0xff, 0xfe]),
            body_size: 2,
            ..Default::default()
        });
        assert_eq!(r["body_hex"], "fffe");
    }
}
