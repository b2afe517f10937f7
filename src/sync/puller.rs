//! The pulling side: one task per pinned peer keeps a `Pull` stream open,
//! verifies every version (signature by the peer's office key, origin equal
//! to the peer), applies each batch with its checkpoint in one transaction,
//! makes it durable, then acknowledges it. Lost connections are retried
//! with capped, jittered exponential backoff.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::backoff::Backoff;
use super::{HEARTBEAT, MAX_MESSAGE, SyncContext};
use crate::domain::NodeAddr;
use crate::domain::audit::{Actor, Draft, Outcome, Target};
use crate::domain::sharing::{GrantId, Peer, PurgeAck};
use crate::domain::{RecordId, SignedVersion, now_ms};
use crate::identity::tls::{PemIdentity, client_config};
use crate::identity::{OfficeSigner, OfficeVerifier};
use crate::protocol::convert::purge_ack_to_pb;
use crate::protocol::pb::{
    self, feed_entry, pull_down, pull_up, replication_client::ReplicationClient,
};
use crate::protocol::transport;
use crate::service::LinkStatus;
use crate::store::ApplyItem;

type Status = Arc<Mutex<LinkStatus>>;

fn update(status: &Status, f: impl FnOnce(&mut LinkStatus)) {
    f(&mut status.lock().unwrap_or_else(|p| p.into_inner()));
}

/// Runs until `stop` is set or the node shuts down.
pub async fn run(
    ctx: Arc<SyncContext>,
    peer: Peer,
    status: Status,
    mut stop: watch::Receiver<bool>,
) {
    let mut shutdown = ctx.shutdown.clone();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        let outcome = tokio::select! {
            r = pull_once(&ctx, &peer, &status, &mut backoff) => r,
            _ = stop.changed() => return,
            _ = shutdown.changed() => return,
        };
        let err = match outcome {
            Ok(()) => "stream ended".to_owned(),
            Err(e) => e,
        };
        tracing::info!(peer = %peer.office, error = %err, "pull stream down");
        update(&status, |s| {
            s.connected = false;
            s.last_error = err;
        });
        let delay = backoff.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
            _ = shutdown.changed() => return,
        }
    }
}

async fn pull_once(
    ctx: &SyncContext,
    peer: &Peer,
    status: &Status,
    backoff: &mut Backoff,
) -> Result<(), String> {
    let verifier = OfficeVerifier::from_ca_cert(peer.office.clone(), &peer.ca_der)
        .map_err(|e| e.to_string())?;
    let mut client = connect(ctx, peer).await?;

    let (up, up_rx) = mpsc::channel::<pb::PullUp>(64);
    let checkpoint = ctx
        .store
        .checkpoint(&peer.office)
        .map_err(|e| e.to_string())?;
    let send = |kind| pb::PullUp { kind: Some(kind) };
    up.send(send(pull_up::Kind::Start(pb::PullStart {
        after_seq: checkpoint,
    })))
    .await
    .map_err(|_| "internal channel closed".to_owned())?;
    let mut down = client
        .pull(ReceiverStream::new(up_rx))
        .await
        .map_err(|s| status_text(&s))?
        .into_inner();
    // Only now is anyone reading `up`: purge acknowledgements the origin has
    // not confirmed yet go out after the call is open.
    for ack in ctx
        .store
        .undelivered_acks(&peer.office)
        .map_err(|e| e.to_string())?
    {
        up.send(send(pull_up::Kind::PurgeAck(purge_ack_to_pb(&ack))))
            .await
            .map_err(|_| "pull stream closed".to_owned())?;
    }
    update(status, |s| {
        s.connected = true;
        s.last_error.clear();
    });
    tracing::info!(peer = %peer.office, checkpoint, "pulling");
    // Two stages: receiving starts each batch's signature checks as it
    // arrives, applying takes the batches in order. Checking the next batch
    // thus overlaps applying and committing this one.
    let (ready_tx, ready_rx) = mpsc::channel::<Received>(PIPELINE_DEPTH);
    let receiving = receive(&mut down, verifier.clone(), ready_tx, status, backoff);
    let applying = apply_in_order(ctx, peer, &verifier, ready_rx, &up);
    tokio::pin!(receiving, applying);
    tokio::select! {
        r = &mut applying => r,
        r = &mut receiving => {
            // The stream is over; what already arrived is still applied.
            let applied = applying.await;
            applied.and(r)
        }
    }
}

/// Opens a `Replication` client to `peer`, presenting this node's
/// certificate and trusting only the peer's pinned CA.
pub(super) async fn connect(
    ctx: &SyncContext,
    peer: &Peer,
) -> Result<ReplicationClient<tonic::transport::Channel>, String> {
    let roots = [rustls_pki_types::CertificateDer::from(peer.ca_der.clone())];
    let identity =
        PemIdentity::from_pem(&ctx.node_cert_pem, &ctx.node_key_pem).map_err(|e| e.to_string())?;
    let tls = client_config(&roots, identity).map_err(|e| e.to_string())?;
    let addr = NodeAddr::parse(&peer.endpoint).map_err(|e| e.to_string())?;
    let channel = transport::connect(&addr, Arc::new(tls))
        .await
        .map_err(|e| format!("{e}: {}", source_chain(&e)))?;
    Ok(ReplicationClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE))
}

/// Batches whose checks may run ahead of the one being applied.
const PIPELINE_DEPTH: usize = 2;

type Verification = tokio::task::JoinHandle<Vec<Result<SignedVersion, String>>>;

/// A message from the origin, handed from receiving to applying in order.
enum Received {
    Batch(pb::Batch, Verification),
    AckStored(String),
    Heartbeat(Option<pb::SignedAuditHead>),
}

/// Reads the stream until it ends, starting verification of each batch.
async fn receive(
    down: &mut tonic::Streaming<pb::PullDown>,
    verifier: OfficeVerifier,
    ready: mpsc::Sender<Received>,
    status: &Status,
    backoff: &mut Backoff,
) -> Result<(), String> {
    loop {
        let msg = match tokio::time::timeout(HEARTBEAT * 3, down.message()).await {
            Err(_) => return Err("no message or heartbeat for three intervals".into()),
            Ok(Err(s)) => return Err(status_text(&s)),
            Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(m))) => m,
        };
        update(status, |s| s.last_contact_ms = now_ms());
        backoff.reset();
        let next = match msg.kind {
            Some(pull_down::Kind::Batch(batch)) => {
                // Signature checks dominate the cost of a backfill: run them
                // on every core, off the async workers.
                let signed: Vec<(Bytes, Bytes)> = batch
                    .entries
                    .iter()
                    .filter_map(|e| match &e.kind {
                        Some(feed_entry::Kind::Version(v)) => {
                            Some((v.canonical.clone(), v.signature.clone()))
                        }
                        _ => None,
                    })
                    .collect();
                let checker = verifier.clone();
                let task = tokio::task::spawn_blocking(move || verify_all(&checker, signed));
                Received::Batch(batch, task)
            }
            Some(pull_down::Kind::PurgeAckStored(s)) => Received::AckStored(s.grant_id),
            Some(pull_down::Kind::Heartbeat(h)) => Received::Heartbeat(h.audit_head),
            None => Received::Heartbeat(None),
        };
        if ready.send(next).await.is_err() {
            return Err("applying stopped".into());
        }
    }
}

/// Applies what `receive` hands over, in order; after each batch is
/// durable, acknowledges it and sends the purge acknowledgements it signed.
async fn apply_in_order(
    ctx: &SyncContext,
    peer: &Peer,
    verifier: &OfficeVerifier,
    mut ready: mpsc::Receiver<Received>,
    up: &mpsc::Sender<pb::PullUp>,
) -> Result<(), String> {
    let send = |kind| pb::PullUp { kind: Some(kind) };
    while let Some(next) = ready.recv().await {
        match next {
            Received::Batch(mut batch, verification) => {
                let verified = verification
                    .await
                    .map_err(|e| format!("verification task failed: {e}"))?;
                witness(ctx, peer, verifier, batch.audit_head.take()).await;
                for ack in apply(ctx, peer, batch, verified).await? {
                    let _ = up
                        .send(send(pull_up::Kind::PurgeAck(purge_ack_to_pb(&ack))))
                        .await;
                }
            }
            Received::AckStored(grant) => {
                ctx.store
                    .mark_ack_delivered(&grant)
                    .map_err(|e| e.to_string())?;
            }
            Received::Heartbeat(head) => witness(ctx, peer, verifier, head).await,
        }
        // Everything applied so far is committed: the origin may forget it.
        if let Ok(seq) = ctx.store.checkpoint(&peer.office) {
            let _ = up.try_send(send(pull_up::Kind::Ack(pb::Ack { seq })));
        }
    }
    Ok(())
}

/// Keeps the audit head a peer sent as witness of its log; a head that
/// contradicts one held already is logged as a conflict.
async fn witness(
    ctx: &SyncContext,
    peer: &Peer,
    verifier: &OfficeVerifier,
    head: Option<pb::SignedAuditHead>,
) {
    let Some(head) = head else { return };
    let outcome = match crate::protocol::convert::signed_head_from_pb(&head) {
        Ok(h) => ctx
            .audit
            .witness(&peer.office, verifier, &h)
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let problem = match outcome {
        Ok(None) => return,
        Ok(Some(conflict)) => conflict,
        Err(e) => format!("an audit head from {} does not check out: {e}", peer.office),
    };
    tracing::error!(peer = %peer.office, %problem, "audit witness");
    let entry = Draft::new(
        Actor::node(ctx.office.as_str()),
        "witness.conflict",
        Target {
            peer: peer.office.to_string(),
            detail: crate::domain::audit::clip(&problem),
            ..Target::default()
        },
        Outcome::failed("CONFLICT", problem.clone()),
    );
    if let Err(e) = ctx.audit.append(entry).await {
        tracing::error!(error = %e, "could not log an audit witness conflict");
    }
}

/// Applies one batch whose versions were checked (`verified`, in the order
/// they appear); returns purge acknowledgements signed for grants it closed.
async fn apply(
    ctx: &SyncContext,
    peer: &Peer,
    batch: pb::Batch,
    verified: Vec<Result<SignedVersion, String>>,
) -> Result<Vec<PurgeAck>, String> {
    let now = now_ms();
    let mut verified = verified.into_iter();
    let mut items = Vec::with_capacity(batch.entries.len());
    let mut acks = Vec::new();
    let mut rejected = 0usize;
    let mut refusals = Vec::new();
    let refused = |what: String, reason: &str| {
        Draft::new(
            Actor::node(ctx.office.as_str()),
            "replica.rejected",
            Target {
                peer: peer.office.to_string(),
                detail: crate::domain::audit::clip(&what),
                ..Target::default()
            },
            Outcome::failed("REJECTED", reason),
        )
    };
    for entry in batch.entries {
        match entry.kind {
            Some(feed_entry::Kind::Version(_)) => {
                let outcome = verified
                    .next()
                    .unwrap_or_else(|| Err("verification result missing".into()));
                match outcome {
                    Ok(signed) => items.push(ApplyItem::Version(Box::new(signed))),
                    Err(reason) => {
                        rejected += 1;
                        tracing::warn!(peer = %peer.office, seq = entry.seq, %reason, "rejected a replicated version");
                        refusals.push(refused(format!("feed entry {}", entry.seq), &reason));
                    }
                }
            }
            Some(feed_entry::Kind::RevokeRecordId(id)) => match RecordId::parse(&id) {
                Ok(id) if id.origin() == peer.office => items.push(ApplyItem::Revoke(id)),
                _ => {
                    rejected += 1;
                    tracing::warn!(peer = %peer.office, record = %id, "rejected a revocation of a record the peer does not own");
                    refusals.push(refused(
                        format!("revocation of {id} (feed entry {})", entry.seq),
                        "the peer does not own the record",
                    ));
                }
            },
            Some(feed_entry::Kind::GrantClosed(grant)) => match GrantId::parse(&grant) {
                Ok(grant) => {
                    let mut ack = PurgeAck {
                        grant,
                        origin: peer.office.clone(),
                        purged_by: ctx.office.clone(),
                        purged_at_ms: now,
                        signature: Vec::new(),
                    };
                    ack.signature = OfficeSigner::new(&ctx.ca)
                        .sign_bytes(&ack.canonical())
                        .map_err(|e| e.to_string())?;
                    items.push(ApplyItem::Ack(ack.clone()));
                    acks.push(ack);
                }
                Err(e) => tracing::warn!(peer = %peer.office, error = %e, "malformed grant id"),
            },
            None => {}
        }
    }
    let outcome = ctx
        .store
        .apply_batch(&peer.office, &items, batch.last_seq, now, &refusals)
        .map_err(|e| e.to_string())?;
    ctx.store.commit().await.map_err(|e| e.to_string())?;
    if ctx.applied.receiver_count() > 0 {
        let versions = items
            .iter()
            .filter_map(|i| match i {
                ApplyItem::Version(v) => Some((v.record.id.clone(), v.record.version)),
                _ => None,
            })
            .collect();
        let _ = ctx.applied.send(super::Applied {
            origin: peer.office.clone(),
            versions: Arc::new(versions),
        });
    }
    for (id, version) in &outcome.conflicts {
        tracing::error!(
            peer = %peer.office,
            %id,
            version,
            "peer sent a different signed copy of a version held here; kept the one held"
        );
    }
    tracing::debug!(
        peer = %peer.office,
        seq = batch.last_seq,
        applied = outcome.applied,
        held = outcome.already_held,
        purged = outcome.purged,
        rejected,
        "batch applied"
    );
    Ok(acks)
}

/// Verifies versions in order, spread over the machine's cores when there
/// are enough of them to be worth a thread.
fn verify_all(
    verifier: &OfficeVerifier,
    versions: Vec<(Bytes, Bytes)>,
) -> Vec<Result<SignedVersion, String>> {
    const PER_THREAD_MIN: usize = 32;
    let threads = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .min(versions.len() / PER_THREAD_MIN)
        .max(1);
    if threads == 1 {
        return versions
            .into_iter()
            .map(|(c, s)| verify(verifier, c, s))
            .collect();
    }
    let chunk = versions.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = versions
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|(c, s)| verify(verifier, c.clone(), s.clone()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec![Err("verification thread panicked".to_owned())])
            })
            .collect()
    })
}

/// A version from `verifier`'s office, checked; never stored otherwise.
fn verify(
    verifier: &OfficeVerifier,
    canonical: Bytes,
    signature: Bytes,
) -> Result<SignedVersion, String> {
    let signed = SignedVersion::from_parts(canonical, signature).map_err(|e| e.to_string())?;
    verifier.verify(&signed).map_err(|e| e.to_string())?;
    // Signed is not the same as well formed: a peer's bug or malice must
    // not put values here that local writes could never have made.
    signed
        .record
        .check_replica_shape()
        .map_err(|e| e.to_string())?;
    Ok(signed)
}

/// A status for a person: code, message, and the transport's reason.
pub(super) fn status_text(s: &tonic::Status) -> String {
    let chain = source_chain(s);
    if chain.is_empty() {
        format!("{:?}: {}", s.code(), s.message())
    } else {
        format!("{:?}: {}: {chain}", s.code(), s.message())
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}
