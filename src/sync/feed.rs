//! The serving side of `Pull`: streams a peer its feed.
//!
//! Only what the peer may see is ever sent: each version entry is checked
//! against the sharing rule when its batch is built, and the batch is
//! rebuilt if any grant changed before it goes out. A revocation of a record
//! the peer may see again by then is not sent (grant changes queue their
//! work with writes going on, so a revocation may be queued after the
//! versions of a record that became visible again meanwhile). Only entries at or below
//! the durable watermark leave the node, and a version entry never reaches
//! past the head it was queued with, so a peer never holds a version that a
//! crash here could undo. The caller's office is passed in from its verified
//! certificate.
//!
//! What the peer could not take is kept for this office's admins
//! ([`super::rejections`]): the versions it reports rejecting, and those
//! sent in a record encoding it said it does not read (a build from before
//! that encoding reports nothing, but rejects them all the same).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::{HEARTBEAT, StreamError, SyncContext};
use crate::domain::audit::{Actor, Draft, MAX_RECORDS, Outcome, Target};
use crate::domain::record::{RECORD_ENCODING, encoding_of};
use crate::domain::rejection::{FeedRejection, OLDER_BUILD};
use crate::domain::sharing::FeedItem;
use crate::domain::{OfficeId, RecordId, now_ms};
use crate::protocol::pb::{self, feed_entry, pull_down, pull_up};

/// Payload bytes after which a batch is sent.
const BATCH_BYTES: usize = 1024 * 1024;
/// Outbox entries read per scan.
const SCAN: usize = 1024;
/// How long a new stream may take to say where it starts.
const START_TIMEOUT: Duration = Duration::from_secs(30);

type Down = mpsc::Sender<Result<pb::PullDown, StreamError>>;

/// Why sending stopped.
enum Stop {
    /// The stream is over (peer gone, node shutting down, error sent).
    End,
    /// A grant changed while the batch was being built: build it again.
    Rebuild,
}

/// Sends one message unless the node shuts down first or the peer has not
/// taken it within [`SEND_TIMEOUT`](crate::service::SEND_TIMEOUT).
async fn send(
    down: &Down,
    shutdown: &mut watch::Receiver<bool>,
    msg: Result<pb::PullDown, StreamError>,
) -> Result<(), Stop> {
    match crate::service::send_within(down, shutdown, msg).await {
        crate::service::Sent::Sent => Ok(()),
        _ => Err(Stop::End),
    }
}

/// Where a stream stands: the highest sequence number sent on it, which
/// bounds what the peer may acknowledge (and report rejected), and the
/// highest record encoding its peer said it reads.
struct Position {
    sent: AtomicU64,
    reads: u32,
}

/// Serves one `Pull` stream until the peer goes away, is removed, or the
/// node shuts down.
pub async fn serve(
    ctx: Arc<SyncContext>,
    peer: OfficeId,
    mut up: tonic::Streaming<pb::PullUp>,
    down: Down,
) {
    let mut shutdown = ctx.shutdown.clone();
    // This stream is now the peer's only one: an older one ends.
    let slot = ctx.guards.open_pull(&peer);
    let first = tokio::select! {
        m = tokio::time::timeout(START_TIMEOUT, up.message()) => m,
        _ = shutdown.wait_for(|s| *s) => return,
    };
    let start = match first {
        Ok(Ok(Some(pb::PullUp {
            kind: Some(pull_up::Kind::Start(s)),
        }))) => s,
        _ => {
            let _ = send(&down, &mut shutdown, Err(StreamError::NoStart)).await;
            return;
        }
    };
    // What the peer reads: callers from before the field read v1 and v2.
    let reads = start.record_encoding.max(2);
    tracing::info!(%peer, after = start.after_seq, reads, "peer pulling");
    if reads >= RECORD_ENCODING {
        ctx.rejections.upgraded(&peer);
    }
    let mut replaced = slot.replaced.clone();
    if let Err(e) = check_start(&ctx, &peer, start.after_seq).await {
        let _ = send(&down, &mut shutdown, Err(e)).await;
        return;
    }
    // Versions are kept for other streams only while there are some.
    let _open = ctx.versions.stream();
    let mut cursor = start.after_seq;
    if let Err(e) = ctx.store.ack_outbox(&peer, cursor) {
        tracing::error!(%peer, error = %e, "outbox cleanup failed");
    }
    let position = Arc::new(Position {
        sent: AtomicU64::new(cursor),
        reads,
    });
    let reader = tokio::spawn(read_up(
        ctx.clone(),
        peer.clone(),
        up,
        down.clone(),
        position.clone(),
    ));
    stream_feed(
        &ctx,
        &peer,
        &mut cursor,
        &position,
        &down,
        &mut shutdown,
        &mut replaced,
    )
    .await;
    reader.abort();
    let _ = reader.await;
    drop(slot);
    let counts = ctx.versions.counts();
    tracing::info!(
        %peer,
        node_versions_served = counts.served,
        node_versions_read = counts.read,
        "feed stream ended"
    );
}

/// Checks where a stream says it starts against this feed: past its end is
/// refused; before what the peer acknowledged means it lost state, and the
/// feed is queued again for it — at most once per interval, since that
/// holds local writes back.
async fn check_start(ctx: &SyncContext, peer: &OfficeId, after: u64) -> Result<(), StreamError> {
    let internal = |e: crate::store::StoreError| {
        tracing::error!(%peer, error = %e, "reading the feed's position failed");
        StreamError::Internal
    };
    let end = ctx.store.last_seq(peer).map_err(internal)?;
    if after > end {
        tracing::warn!(%peer, after, end, "peer asked to start past the end of its feed");
        return Err(StreamError::AheadOfFeed { after, end });
    }
    let acked = ctx.store.acked(peer).map_err(internal)?;
    if after >= acked {
        return Ok(());
    }
    // The peer lost state it had acknowledged (it re-pinned us, or was
    // restored from a backup): queue everything it may see again.
    if let Err(wait) = ctx.guards.may_requeue(peer) {
        tracing::warn!(%peer, after, acked, "peer restarted its feed again too soon");
        return Err(StreamError::RequeueTooSoon {
            retry_after_secs: wait.as_secs().max(1),
        });
    }
    tracing::warn!(%peer, after, acked, "peer restarted its feed; re-queuing its grants");
    // The acknowledged position restarts from the peer's, so a peer
    // reconnecting with the same low checkpoint triggers nothing more.
    match ctx.sharing.requeue(peer).await {
        Ok(()) => {
            if let Err(e) = ctx.store.reset_acked(peer, after) {
                tracing::error!(%peer, error = %e, "resetting the acknowledged position failed");
            }
        }
        Err(e) => tracing::error!(%peer, error = %e, "re-queuing failed"),
    }
    Ok(())
}

async fn stream_feed(
    ctx: &SyncContext,
    peer: &OfficeId,
    cursor: &mut u64,
    position: &Position,
    down: &Down,
    shutdown: &mut watch::Receiver<bool>,
    replaced: &mut watch::Receiver<bool>,
) {
    let mut watermark = ctx.store.watermark();
    let mut removed = ctx.removed.subscribe();
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    loop {
        if !matches!(ctx.sharing.peer(peer), Ok(Some(_))) {
            let _ = send(down, shutdown, Err(StreamError::NotAPeer)).await;
            return;
        }
        if *replaced.borrow() {
            let _ = send(down, shutdown, Err(StreamError::Replaced)).await;
            return;
        }
        let upto = watermark.borrow_and_update().of(peer);
        match send_pending(ctx, peer, *cursor, upto, position, down, shutdown).await {
            Ok(Some(next)) => {
                *cursor = next;
                continue;
            }
            Ok(None) => {}
            Err(Stop::Rebuild) => continue,
            Err(Stop::End) => return,
        }
        let beat = tokio::select! {
            changed = watermark.changed() => if changed.is_err() { return } else { false },
            _ = heartbeat.tick() => true,
            _ = shutdown.wait_for(|s| *s) => return,
            _ = removed.changed() => false,
            _ = replaced.changed() => false,
            _ = down.closed() => return,
        };
        if beat {
            let hb = pb::PullDown {
                kind: Some(pull_down::Kind::Heartbeat(pb::Heartbeat {
                    now_ms: now_ms(),
                    audit_head: audit_head(ctx),
                })),
            };
            if send(down, shutdown, Ok(hb)).await.is_err() {
                return;
            }
        }
    }
}

/// Sends the entries after `cursor` up to `upto`, if any; returns the new
/// cursor. On a storage error the stream ends without moving the cursor, so
/// nothing is skipped. A version in an encoding the peer does not read is
/// sent all the same (it rejects it, as a peer should), and noted.
async fn send_pending(
    ctx: &SyncContext,
    peer: &OfficeId,
    cursor: u64,
    upto: u64,
    position: &Position,
    down: &Down,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<u64>, Stop> {
    let internal = |e: &dyn std::fmt::Display| {
        tracing::error!(%peer, error = %e, "reading the feed failed");
        Err(StreamError::Internal)
    };
    let generation = ctx.sharing.generation();
    let entries = match ctx.store.outbox_after(peer, cursor, upto, SCAN) {
        Ok(e) => e,
        Err(e) => {
            let _ = send(down, shutdown, internal(&e)).await;
            return Err(Stop::End);
        }
    };
    let Some(&(last, _)) = entries.last() else {
        return Ok(None);
    };
    // Records whose rejection by the peer a new delivery may clear.
    let watched = ctx.rejections.watched(peer);
    let mut batch = Vec::new();
    let mut served = Served::default();
    let mut bytes = 0;
    let mut done_seq = cursor;
    for (seq, item) in entries {
        match item {
            FeedItem::Versions { id, from, to } => {
                let head = match ctx.store.head(&id) {
                    Ok(h) => h,
                    Err(e) => {
                        let _ = send(down, shutdown, internal(&e)).await;
                        return Err(Stop::End);
                    }
                };
                // The sharing rule: not visible now, not sent.
                if let Some(head) = head.filter(|h| ctx.sharing.visible(peer, &id, &h.collection)) {
                    for version in from.max(1)..=to.min(head.version) {
                        // Visible to this peer now (above); only the read is
                        // shared with the other peers' streams.
                        let v = match ctx.versions.get(&ctx.store, &id, version) {
                            Ok(Some(v)) => v,
                            Ok(None) => continue,
                            Err(e) => {
                                let _ = send(down, shutdown, internal(&e)).await;
                                return Err(Stop::End);
                            }
                        };
                        bytes += v.canonical.len() + v.signature.len();
                        served.versions.push((id.to_string(), version));
                        if watched.iter().any(|(w, _)| *w == id) {
                            served.resent.push((id.clone(), version, seq));
                        }
                        if encoding_of(&v.canonical).is_some_and(|e| e > position.reads) {
                            served.unreadable = Some((id.clone(), version, seq));
                        }
                        batch.push(pb::FeedEntry {
                            seq,
                            kind: Some(feed_entry::Kind::Version(pb::ReplicatedVersion {
                                canonical: v.canonical,
                                signature: v.signature,
                            })),
                        });
                        if bytes >= BATCH_BYTES {
                            // Entries before this one are complete.
                            let out = Outgoing {
                                generation,
                                entries: std::mem::take(&mut batch),
                                served: std::mem::take(&mut served),
                                last_seq: done_seq,
                            };
                            send_batch(ctx, peer, out, position, down, shutdown).await?;
                            bytes = 0;
                        }
                    }
                }
            }
            FeedItem::Revoke { id } => {
                // Visible again by now (granted anew, or moved into a case
                // still granted, since this was queued): the peer keeps it,
                // and the versions it may see follow in the feed.
                let shown = match ctx.store.head(&id) {
                    Ok(head) => head.is_some_and(|h| ctx.sharing.visible(peer, &id, &h.collection)),
                    Err(e) => {
                        let _ = send(down, shutdown, internal(&e)).await;
                        return Err(Stop::End);
                    }
                };
                if !shown {
                    served.revoked.push((id.to_string(), 0));
                    batch.push(pb::FeedEntry {
                        seq,
                        kind: Some(feed_entry::Kind::RevokeRecordId(id.to_string())),
                    })
                }
            }
            FeedItem::GrantClosed { grant } => batch.push(pb::FeedEntry {
                seq,
                kind: Some(feed_entry::Kind::GrantClosed(grant.to_string())),
            }),
        }
        done_seq = seq;
    }
    let out = Outgoing {
        generation,
        entries: batch,
        served,
        last_seq: last,
    };
    send_batch(ctx, peer, out, position, down, shutdown).await?;
    Ok(Some(last))
}

/// What a batch carries, for its audit entry, and what it means for the
/// peer's rejections.
#[derive(Default)]
struct Served {
    versions: Vec<(String, u64)>,
    revoked: Vec<(String, u64)>,
    /// Versions of records the peer rejected a version of: (record,
    /// version, seq).
    resent: Vec<(RecordId, u64, u64)>,
    /// The last version in an encoding the peer cannot read.
    unreadable: Option<(RecordId, u64, u64)>,
}

/// This office's newest signed audit head, sent with every batch and
/// heartbeat so that peers witness it.
fn audit_head(ctx: &SyncContext) -> Option<pb::SignedAuditHead> {
    match ctx.store.latest_signed_head() {
        Ok(h) => h.as_ref().map(crate::protocol::convert::signed_head),
        Err(e) => {
            tracing::error!(error = %e, "reading the signed audit head failed");
            None
        }
    }
}

/// A batch ready to go: its entries, what they serve, the last sequence
/// number they complete, and the grant generation visibility was decided
/// under.
struct Outgoing {
    generation: u64,
    entries: Vec<pb::FeedEntry>,
    served: Served,
    last_seq: u64,
}

async fn send_batch(
    ctx: &SyncContext,
    peer: &OfficeId,
    out: Outgoing,
    position: &Position,
    down: &Down,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), Stop> {
    let Outgoing {
        generation,
        entries,
        served,
        last_seq,
    } = out;
    // Visibility was decided under `generation`; if a grant changed since,
    // decide again rather than send what may no longer be granted.
    if ctx.sharing.generation() != generation {
        return Err(Stop::Rebuild);
    }
    // The batch is in the audit log, durably, before it leaves.
    let actor = Actor::peer(peer.as_str());
    let mut drafts = Vec::new();
    for (records, action, detail) in [
        (&served.versions, "feed.versions_served", ""),
        (
            &served.revoked,
            "feed.revocations_served",
            "revocations sent",
        ),
    ] {
        for chunk in records.chunks(MAX_RECORDS) {
            let target = Target {
                records: chunk.to_vec(),
                peer: peer.to_string(),
                detail: detail.into(),
                ..Target::default()
            };
            drafts.push(Draft::new(actor.clone(), action, target, Outcome::ok()));
        }
    }
    if !drafts.is_empty() {
        let logged = match ctx.store.audit(&drafts) {
            Ok(()) => ctx.store.commit().await,
            Err(e) => Err(e),
        };
        if let Err(e) = logged {
            tracing::error!(%peer, error = %e, "could not log a batch; not sending it");
            let _ = send(down, shutdown, Err(StreamError::Internal)).await;
            return Err(Stop::End);
        }
    }
    // Logging took a moment: if a grant changed meanwhile, decide again.
    if ctx.sharing.generation() != generation {
        return Err(Stop::Rebuild);
    }
    let msg = pb::PullDown {
        kind: Some(pull_down::Kind::Batch(pb::Batch {
            entries,
            last_seq,
            audit_head: audit_head(ctx),
        })),
    };
    // Counted as sent before it is: the peer may acknowledge it at once.
    position.sent.fetch_max(last_seq, Ordering::SeqCst);
    ctx.rejections.sent(peer, &served.resent);
    ctx.metrics
        .batch_sent(peer.as_str(), prost::Message::encoded_len(&msg));
    send(down, shutdown, Ok(msg)).await?;
    if let Some((id, version, seq)) = served.unreadable {
        note_unreadable(ctx, peer, id, version, seq).await;
    }
    Ok(())
}

/// Notes that `peer` was sent a version in an encoding it declared it
/// cannot read: it rejects the version, and says nothing about it. Logged
/// once a minute per peer at most.
async fn note_unreadable(ctx: &SyncContext, peer: &OfficeId, id: RecordId, version: u64, seq: u64) {
    tracing::warn!(%peer, record = %id, version, seq, "{OLDER_BUILD}");
    let entry = Draft::new(
        Actor::node(ctx.office.as_str()),
        "feed.peer_cannot_read",
        Target {
            records: vec![(id.to_string(), version)],
            peer: peer.to_string(),
            detail: format!("feed entry {seq}"),
            ..Target::default()
        },
        Outcome::failed("FAILED_PRECONDITION", OLDER_BUILD),
    );
    ctx.refusals.refuse(peer.as_str(), entry).await;
    let note = FeedRejection::older_build(seq, id, version, now_ms());
    ctx.rejections.older_build(peer, note);
}

/// Reads the peer's acknowledgements: applied checkpoints (never past what
/// was sent on this stream) and signed purge acknowledgements.
async fn read_up(
    ctx: Arc<SyncContext>,
    peer: OfficeId,
    mut up: tonic::Streaming<pb::PullUp>,
    down: Down,
    position: Arc<Position>,
) {
    let mut shutdown = ctx.shutdown.clone();
    while let Ok(Some(msg)) = up.message().await {
        match msg.kind {
            Some(pull_up::Kind::Ack(a)) => {
                let sent = position.sent.load(Ordering::SeqCst);
                if a.seq > sent {
                    refuse_ack(&ctx, &peer, a.seq, sent).await;
                    let refused = StreamError::AckBeyondSent { acked: a.seq, sent };
                    let _ = send(&down, &mut shutdown, Err(refused)).await;
                    return;
                }
                if let Err(e) = ctx.store.ack_outbox(&peer, a.seq) {
                    tracing::error!(%peer, error = %e, "outbox cleanup failed");
                }
                ctx.rejections.acked(&peer, a.seq);
            }
            Some(pull_up::Kind::Rejected(r)) => {
                let sent = position.sent.load(Ordering::SeqCst);
                rejected(&ctx, &peer, r, sent).await;
            }
            Some(pull_up::Kind::PurgeAck(a)) => {
                let grant = a.grant_id.clone();
                match crate::protocol::convert::purge_ack_from_pb(a) {
                    Ok(ack) => match record_purge_ack(&ctx, &peer, ack).await {
                        Ok(()) => {
                            tracing::info!(%peer, %grant, "purge acknowledged");
                            let stored = pb::PullDown {
                                kind: Some(pull_down::Kind::PurgeAckStored(pb::PurgeAckStored {
                                    grant_id: grant,
                                })),
                            };
                            if send(&down, &mut shutdown, Ok(stored)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(%peer, %grant, error = %e, "purge acknowledgement refused");
                            refuse_purge_ack(&ctx, &peer, &grant, &e).await;
                        }
                    },
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "malformed purge acknowledgement");
                        refuse_purge_ack(&ctx, &peer, &grant, &e).await;
                    }
                }
            }
            _ => tracing::warn!(%peer, "unexpected message on Pull"),
        }
    }
}

/// Keeps a peer's report that it rejected a version of its feed, and logs
/// it (counted per peer, and in the node's log only at debug level: a peer
/// may send reports as fast as it likes); a report of an entry past the
/// last one sent on this stream is ignored. Whatever the peer sends, what
/// is kept is bounded ([`crate::domain::rejection`]).
async fn rejected(ctx: &SyncContext, peer: &OfficeId, r: pb::VersionRejected, sent: u64) {
    if r.seq == 0 || r.seq > sent {
        tracing::debug!(%peer, seq = r.seq, sent, "ignored a report of a rejected entry not sent");
        return;
    }
    let report = FeedRejection::reported(
        &ctx.office,
        r.seq,
        &r.record_id,
        r.version,
        &r.reason,
        now_ms(),
    );
    tracing::debug!(%peer, seq = r.seq, rejection = %report.describe(), "peer rejected a version");
    let entry = Draft::new(
        Actor::peer(peer.as_str()),
        "feed.rejected_by_peer",
        Target {
            records: report
                .record
                .iter()
                .map(|id| (id.to_string(), report.version))
                .collect(),
            peer: peer.to_string(),
            detail: format!("feed entry {}", r.seq),
            ..Target::default()
        },
        Outcome::failed("REJECTED", report.reason.clone()),
    );
    let later = report
        .record
        .clone()
        .and_then(|id| later_queued(ctx, peer, id, report.version));
    ctx.rejections.report(peer, report);
    // A later version written before the report came is in the feed
    // already, at or before its end: the report clears once the peer
    // acknowledges that far without rejecting the record again.
    if let Some(later) = later {
        ctx.rejections.sent(peer, &[later]);
    }
    ctx.refusals.refuse(peer.as_str(), entry).await;
}

/// If this office's record `id` is past `version`, the record, its head
/// version and the end of `peer`'s feed, which carries that head if the
/// peer may see it (a write queues its version in the same transaction).
fn later_queued(
    ctx: &SyncContext,
    peer: &OfficeId,
    id: RecordId,
    version: u64,
) -> Option<(RecordId, u64, u64)> {
    let read = || -> Result<_, crate::store::StoreError> {
        Ok((ctx.store.head(&id)?, ctx.store.last_seq(peer)?))
    };
    match read() {
        Ok((Some(head), end)) if head.version > version => Some((id, head.version, end)),
        Ok(_) => None,
        Err(e) => {
            tracing::error!(%peer, error = %e, "reading a rejected record's head failed");
            None
        }
    }
}

/// Records a peer's purge acknowledgement in a task of its own: this
/// stream's reader is aborted when the stream ends (a new one from the
/// peer replaces it, say), and a recording cut short there would leave the
/// grant's acknowledgement stored but not shown until a restart.
async fn record_purge_ack(
    ctx: &Arc<SyncContext>,
    peer: &OfficeId,
    ack: crate::domain::sharing::PurgeAck,
) -> Result<(), crate::error::Error> {
    let (sharing, peer) = (ctx.sharing.clone(), peer.clone());
    tokio::spawn(async move { sharing.record_purge_ack(&peer, ack).await })
        .await
        .map_err(|e| {
            crate::error::Error::Store(crate::store::StoreError::Inconsistent(format!(
                "recording a purge acknowledgement failed: {e}"
            )))
        })?
}

/// Logs (counted per peer) a purge acknowledgement that was refused.
async fn refuse_purge_ack(
    ctx: &SyncContext,
    peer: &OfficeId,
    grant: &str,
    why: &(dyn std::fmt::Display + Sync),
) {
    let entry = Draft::new(
        Actor::peer(peer.as_str()),
        "purge_ack.refused",
        Target {
            peer: peer.to_string(),
            detail: crate::domain::audit::clip(&format!("grant {grant}")),
            ..Target::default()
        },
        Outcome::failed("REJECTED", why.to_string()),
    );
    ctx.refusals.refuse(peer.as_str(), entry).await;
}

/// Logs an acknowledgement past what was sent: a peer claiming entries it
/// never received is broken or probing; nothing is forgotten for it.
async fn refuse_ack(ctx: &SyncContext, peer: &OfficeId, acked: u64, sent: u64) {
    tracing::warn!(%peer, acked, sent, "refused an acknowledgement past what was sent");
    let entry = Draft::new(
        Actor::peer(peer.as_str()),
        "feed.ack_refused",
        Target {
            peer: peer.to_string(),
            detail: format!("acknowledged entry {acked}; entries up to {sent} were sent"),
            ..Target::default()
        },
        Outcome::failed("INVALID_ARGUMENT", "acknowledged past what was sent"),
    );
    ctx.refusals.refuse(peer.as_str(), entry).await;
}
