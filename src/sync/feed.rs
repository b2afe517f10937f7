//! The serving side of `Pull`: streams a peer its feed.
//!
//! Only what the peer may see is ever sent: each version entry is checked
//! against the sharing rule at the moment it is sent, and only entries at or
//! below the durable watermark leave the node (so a peer never holds a
//! version that a crash here could undo). The caller's office is passed in
//! from its verified certificate.

use std::sync::Arc;

use tokio::sync::mpsc;
use tonic::Status;

use super::{HEARTBEAT, SyncContext};
use crate::domain::sharing::{FeedItem, GrantId, PurgeAck};
use crate::domain::{OfficeId, now_ms};
use crate::grpc::pb::{self, feed_entry, pull_down, pull_up};

/// Payload bytes after which a batch is sent.
const BATCH_BYTES: usize = 1024 * 1024;
/// Outbox entries read per scan.
const SCAN: usize = 1024;

type Down = mpsc::Sender<Result<pb::PullDown, Status>>;

/// Serves one `Pull` stream until the peer goes away, is removed, or the
/// node shuts down.
pub async fn serve(
    ctx: Arc<SyncContext>,
    peer: OfficeId,
    mut up: tonic::Streaming<pb::PullUp>,
    down: Down,
) {
    let start = match up.message().await {
        Ok(Some(pb::PullUp {
            kind: Some(pull_up::Kind::Start(s)),
        })) => s,
        _ => {
            let _ = down
                .send(Err(Status::invalid_argument(
                    "the first message must be PullStart",
                )))
                .await;
            return;
        }
    };
    tracing::info!(%peer, after = start.after_seq, "peer pulling");
    let mut cursor = start.after_seq;
    if let Err(e) = ctx.store.ack_outbox(&peer, cursor) {
        tracing::error!(%peer, error = %e, "outbox cleanup failed");
    }
    let reader = tokio::spawn(read_up(ctx.clone(), peer.clone(), up, down.clone()));
    let _abort_reader = AbortOnDrop(reader);
    let mut watermark = ctx.store.watermark();
    let mut shutdown = ctx.shutdown.clone();
    let mut removed = ctx.removed.subscribe();
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    loop {
        let upto = *watermark.borrow_and_update();
        match send_pending(&ctx, &peer, cursor, upto, &down).await {
            Ok(Some(next)) => {
                cursor = next;
                continue;
            }
            Ok(None) => {}
            Err(Stop) => return,
        }
        tokio::select! {
            changed = watermark.changed() => if changed.is_err() { return },
            _ = heartbeat.tick() => {
                let hb = pb::PullDown { kind: Some(pull_down::Kind::Heartbeat(pb::Heartbeat { now_ms: now_ms() })) };
                if down.send(Ok(hb)).await.is_err() { return }
            }
            _ = shutdown.changed() => return,
            _ = removed.changed() => {
                if removed.borrow_and_update().as_ref() == Some(&peer) {
                    let _ = down.send(Err(Status::permission_denied("this office is no longer a peer"))).await;
                    return;
                }
            }
            _ = down.closed() => return,
        }
    }
}

struct Stop;

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends the entries after `cursor` up to `upto`, if any; returns the new
/// cursor.
async fn send_pending(
    ctx: &SyncContext,
    peer: &OfficeId,
    cursor: u64,
    upto: u64,
    down: &Down,
) -> Result<Option<u64>, Stop> {
    let entries = match ctx.store.outbox_after(peer, cursor, upto, SCAN) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(%peer, error = %e, "reading the outbox failed");
            let _ = down.send(Err(Status::internal("internal error"))).await;
            return Err(Stop);
        }
    };
    let Some(&(last, _)) = entries.last() else {
        return Ok(None);
    };
    let mut batch = Vec::new();
    let mut bytes = 0;
    let mut done_seq = cursor;
    let flush = |batch: &mut Vec<pb::FeedEntry>, last_seq: u64| {
        let msg = pb::PullDown {
            kind: Some(pull_down::Kind::Batch(pb::Batch {
                entries: std::mem::take(batch),
                last_seq,
            })),
        };
        down.send(Ok(msg))
    };
    for (seq, item) in entries {
        match item {
            FeedItem::Versions { id, from } => {
                let head = match ctx.store.head(&id) {
                    Ok(h) => h,
                    Err(e) => {
                        tracing::error!(%id, error = %e, "reading a head failed");
                        None
                    }
                };
                // The sharing rule, checked now: not visible, not sent.
                if let Some(head) = head.filter(|h| ctx.sharing.visible(peer, &id, &h.collection)) {
                    for version in from.max(1)..=head.version {
                        let Ok(Some(v)) = ctx.store.version(&id, version) else {
                            continue;
                        };
                        bytes += v.canonical.len() + v.signature.len();
                        batch.push(pb::FeedEntry {
                            seq,
                            kind: Some(feed_entry::Kind::Version(pb::ReplicatedVersion {
                                canonical: v.canonical,
                                signature: v.signature,
                            })),
                        });
                        if bytes >= BATCH_BYTES {
                            // Entries before this one are complete.
                            flush(&mut batch, done_seq).await.map_err(|_| Stop)?;
                            bytes = 0;
                        }
                    }
                }
            }
            FeedItem::Revoke { id } => batch.push(pb::FeedEntry {
                seq,
                kind: Some(feed_entry::Kind::RevokeRecordId(id.to_string())),
            }),
            FeedItem::GrantClosed { grant } => batch.push(pb::FeedEntry {
                seq,
                kind: Some(feed_entry::Kind::GrantClosed(grant.to_string())),
            }),
        }
        done_seq = seq;
    }
    flush(&mut batch, last).await.map_err(|_| Stop)?;
    Ok(Some(last))
}

/// Reads the peer's acknowledgements: applied checkpoints and signed
/// purge acknowledgements.
async fn read_up(
    ctx: Arc<SyncContext>,
    peer: OfficeId,
    mut up: tonic::Streaming<pb::PullUp>,
    down: Down,
) {
    while let Ok(Some(msg)) = up.message().await {
        match msg.kind {
            Some(pull_up::Kind::Ack(a)) => {
                if let Err(e) = ctx.store.ack_outbox(&peer, a.seq) {
                    tracing::error!(%peer, error = %e, "outbox cleanup failed");
                }
            }
            Some(pull_up::Kind::PurgeAck(a)) => {
                let grant = a.grant_id.clone();
                match purge_ack_from_pb(a) {
                    Ok(ack) => match ctx.sharing.record_purge_ack(&peer, ack).await {
                        Ok(()) => {
                            tracing::info!(%peer, %grant, "purge acknowledged");
                            let stored = pb::PullDown {
                                kind: Some(pull_down::Kind::PurgeAckStored(pb::PurgeAckStored {
                                    grant_id: grant,
                                })),
                            };
                            let _ = down.send(Ok(stored)).await;
                        }
                        Err(e) => {
                            tracing::warn!(%peer, %grant, error = %e, "purge acknowledgement refused")
                        }
                    },
                    Err(e) => tracing::warn!(%peer, error = %e, "malformed purge acknowledgement"),
                }
            }
            _ => tracing::warn!(%peer, "unexpected message on Pull"),
        }
    }
}

pub fn purge_ack_from_pb(a: pb::PurgeAck) -> Result<PurgeAck, String> {
    Ok(PurgeAck {
        grant: GrantId::parse(&a.grant_id).map_err(|e| e.to_string())?,
        origin: OfficeId::parse(&a.origin).map_err(|e| e.to_string())?,
        purged_by: OfficeId::parse(&a.purged_by).map_err(|e| e.to_string())?,
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
