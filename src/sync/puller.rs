//! The pulling side: one task per pinned peer keeps a `Pull` stream open,
//! verifies every version (signature by the peer's office key, origin equal
//! to the peer), applies each batch with its checkpoint in one transaction,
//! makes it durable, then acknowledges it; a version it refuses is logged
//! here and reported to the origin, so that the origin's admins see it.
//! Lost connections are retried with capped, jittered exponential backoff.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::backoff::Backoff;
use super::error::{PullError, Rejection, source_chain};
use super::heard::{Heard, Listening};
use super::{HEARTBEAT, MAX_MESSAGE, SyncContext};
use crate::domain::NodeAddr;
use crate::domain::audit::{Actor, Draft, Outcome, Target};
use crate::domain::record::{RECORD_ENCODING, peek_id_version};
use crate::domain::rejection::clip_reason;
use crate::domain::sharing::{GrantId, Peer, PurgeAck};
use crate::domain::{OfficeId, RecordId, SignedVersion, now_ms};
use crate::identity::tls::{PemIdentity, client_config};
use crate::identity::{OfficeSigner, OfficeVerifier};
use crate::protocol::convert::purge_ack_to_pb;
use crate::protocol::pb::{
    self, feed_entry, pull_down, pull_up, replication_client::ReplicationClient,
};
use crate::protocol::transport;
use crate::service::LinkStatus;
use crate::store::{ApplyItem, StoreError};

type Status = Arc<Mutex<LinkStatus>>;

fn update(status: &Status, f: impl FnOnce(&mut LinkStatus)) {
    f(&mut status.lock().unwrap_or_else(|p| p.into_inner()));
}

/// How often a puller stopped by a full disk looks for room again.
const SPACE_POLL: Duration = Duration::from_secs(5);

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
        // The disk below its reserve, or the store failed: nothing more
        // can be applied, and dialing again would only have the origin
        // serve (and log) the same batch again. Wait for room first.
        let stalled = matches!(
            &outcome,
            Err(PullError::Store(
                StoreError::DiskFull { .. } | StoreError::Failed(_)
            ))
        );
        let err = match outcome {
            Ok(()) => "stream ended".to_owned(),
            Err(e) => e.to_string(),
        };
        tracing::info!(peer = %peer.office, error = %err, "pull stream down");
        update(&status, |s| {
            s.connected = false;
            s.last_error = err;
        });
        if stalled {
            let room = async {
                while ctx.store.check_space().is_err() {
                    tokio::time::sleep(SPACE_POLL).await;
                }
            };
            tokio::select! {
                _ = room => {}
                _ = stop.changed() => return,
                _ = shutdown.changed() => return,
            }
        }
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
) -> Result<(), PullError> {
    let verifier = OfficeVerifier::from_ca_cert(peer.office.clone(), &peer.ca_der)?;
    let heard = Heard::now();
    let mut client =
        ReplicationClient::new(Listening::new(channel(ctx, peer).await?, heard.clone()))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);

    let (up, up_rx) = mpsc::channel::<pb::PullUp>(64);
    let checkpoint = ctx.store.checkpoint(&peer.office)?;
    let send = |kind| pb::PullUp { kind: Some(kind) };
    up.send(send(pull_up::Kind::Start(pb::PullStart {
        after_seq: checkpoint,
        record_encoding: RECORD_ENCODING,
    })))
    .await
    .map_err(|_| PullError::Stopped("the call's sender"))?;
    let mut down = client
        .pull(ReceiverStream::new(up_rx))
        .await
        .map_err(PullError::Refused)?
        .into_inner();
    // Only now is anyone reading `up`: purge acknowledgements the origin has
    // not confirmed yet go out after the call is open.
    for ack in ctx.store.undelivered_acks(&peer.office)? {
        up.send(send(pull_up::Kind::PurgeAck(purge_ack_to_pb(&ack))))
            .await
            .map_err(|_| PullError::Stopped("the pull stream"))?;
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
    let receiving = receive(
        &mut down,
        &heard,
        verifier.clone(),
        ready_tx,
        status,
        backoff,
    );
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
) -> Result<ReplicationClient<tonic::transport::Channel>, PullError> {
    Ok(ReplicationClient::new(channel(ctx, peer).await?)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE))
}

/// A channel to `peer` over mutual TLS, as [`connect`] uses.
async fn channel(ctx: &SyncContext, peer: &Peer) -> Result<tonic::transport::Channel, PullError> {
    let roots = [rustls_pki_types::CertificateDer::from(peer.ca_der.clone())];
    let identity = PemIdentity::from_pem(&ctx.node_cert_pem, &ctx.node_key_pem)?;
    let tls = client_config(&roots, identity)?;
    let addr = NodeAddr::parse(&peer.endpoint)
        .map_err(|e| PullError::Unreachable(format!("{e}: {}", source_chain(&e))))?;
    transport::connect(&addr, Arc::new(tls))
        .await
        .map_err(|e| PullError::Unreachable(format!("{e}: {}", source_chain(&e))))
}

/// Batches whose checks may run ahead of the one being applied.
const PIPELINE_DEPTH: usize = 2;

type Verification = tokio::task::JoinHandle<Vec<Result<SignedVersion, Rejection>>>;

/// A message from the origin, handed from receiving to applying in order.
enum Received {
    Batch(pb::Batch, Verification),
    AckStored(String),
    Heartbeat(Option<pb::SignedAuditHead>),
}

/// Reads the stream until it ends, starting verification of each batch.
/// Gives up once nothing at all arrived for three heartbeat intervals: a
/// message still arriving, however slowly, is not silence.
async fn receive(
    down: &mut tonic::Streaming<pb::PullDown>,
    heard: &Heard,
    verifier: OfficeVerifier,
    ready: mpsc::Sender<Received>,
    status: &Status,
    backoff: &mut Backoff,
) -> Result<(), PullError> {
    let silence = HEARTBEAT * 3;
    loop {
        // Time spent handing a batch on is not the origin's silence.
        let listening = std::time::Instant::now();
        let msg = loop {
            let quiet = heard.silent_for().min(listening.elapsed());
            if quiet >= silence {
                return Err(PullError::Silent);
            }
            // `message` keeps what arrived of a message when it times out.
            if let Ok(msg) = tokio::time::timeout(silence - quiet, down.message()).await {
                break msg;
            }
        };
        let msg = match msg {
            Err(s) => return Err(PullError::Refused(s)),
            Ok(None) => return Ok(()),
            Ok(Some(m)) => m,
        };
        update(status, |s| s.last_contact_ms = now_ms());
        backoff.reset();
        let next = match msg.kind {
            Some(pull_down::Kind::Batch(batch)) => {
                if batch.entries.len() > MAX_BATCH_ENTRIES {
                    return Err(PullError::BatchTooLarge {
                        entries: batch.entries.len(),
                        max: MAX_BATCH_ENTRIES,
                    });
                }
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
            return Err(PullError::Stopped("applying"));
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
) -> Result<(), PullError> {
    let send = |kind| pb::PullUp { kind: Some(kind) };
    while let Some(next) = ready.recv().await {
        match next {
            Received::Batch(mut batch, verification) => {
                let verified = verification
                    .await
                    .map_err(|_| PullError::Stopped("the verification task"))?;
                witness(ctx, peer, verifier, batch.audit_head.take()).await;
                for ack in apply(ctx, peer, batch, verified, up).await? {
                    let _ = up
                        .send(send(pull_up::Kind::PurgeAck(purge_ack_to_pb(&ack))))
                        .await;
                }
            }
            Received::AckStored(grant) => match GrantId::parse(&grant) {
                Ok(grant) => ctx.store.mark_ack_delivered(&grant)?,
                Err(e) => {
                    tracing::warn!(peer = %peer.office, error = %e, "the peer confirmed an acknowledgement of a malformed grant id");
                }
            },
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
    // Counted per peer: heads cost an origin nothing to send, and the first
    // entry already shows the conflict.
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
    ctx.refusals.refuse(peer.office.as_str(), entry).await;
}

/// Applies one batch whose versions were checked (`verified`, in the order
/// they appear); returns purge acknowledgements signed for grants it closed.
async fn apply(
    ctx: &SyncContext,
    peer: &Peer,
    batch: pb::Batch,
    verified: Vec<Result<SignedVersion, Rejection>>,
    up: &mpsc::Sender<pb::PullUp>,
) -> Result<Vec<PurgeAck>, PullError> {
    let now = now_ms();
    let last_seq = batch.last_seq;
    let bytes = prost::Message::encoded_len(&batch);
    let mut sorted = sort_entries(ctx, peer, batch.entries, verified)?;
    sign_acks(ctx, peer, &mut sorted, now).await?;
    let mut kept_applied = false;
    let outcome = loop {
        match ctx
            .store
            .apply_batch(&peer.office, &sorted.items, last_seq, now, &[])
        {
            // Below the disk reserve. Revocations (which shrink the store)
            // and purge acknowledgements go on at once, without moving the
            // checkpoint (both may be applied again), and the
            // acknowledgements go up; the versions wait for room, the
            // stream held (the origin ends it if it waits too long).
            Err(StoreError::DiskFull { .. }) => {
                if !kept_applied {
                    kept_applied = true;
                    apply_all_but_versions(ctx, peer, &sorted, now, up).await?;
                }
                tokio::time::sleep(SPACE_POLL).await;
            }
            other => break other?,
        }
    };
    ctx.store.commit().await?;
    // The origin hears of the versions refused before the acknowledgement
    // that covers them, so it knows which acknowledgement they precede.
    for r in sorted.reports {
        let kind = pull_up::Kind::Rejected(r);
        let _ = up.send(pb::PullUp { kind: Some(kind) }).await;
    }
    ctx.metrics
        .batch_applied(peer.office.as_str(), bytes, sorted.refusals.len());
    // Counted per peer: junk sent as fast as a peer can send it must not
    // grow the log at that rate.
    for refusal in &sorted.refusals {
        ctx.refusals
            .refuse(peer.office.as_str(), refusal.clone())
            .await;
    }
    announce_applied(ctx, peer, &sorted.items);
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
        seq = last_seq,
        applied = outcome.applied,
        held = outcome.already_held,
        purged = outcome.purged,
        rejected = sorted.refusals.len(),
        "batch applied"
    );
    Ok(sorted.acks)
}

/// Signs the purge acknowledgements `sorted` owes, once what they
/// acknowledge is gone: the batch's revocations (the origin sends a grant's
/// revocations before its closing, so the rest were applied with earlier
/// batches) are applied first, without moving the checkpoint (applying
/// them again with the batch changes nothing), and the search index files
/// are rewritten without the purged replicas' words.
async fn sign_acks(
    ctx: &SyncContext,
    peer: &Peer,
    sorted: &mut Sorted,
    now: u64,
) -> Result<(), PullError> {
    if sorted.to_sign.is_empty() {
        return Ok(());
    }
    let revocations: Vec<ApplyItem> = sorted
        .items
        .iter()
        .filter(|i| matches!(i, ApplyItem::Revoke(_)))
        .cloned()
        .collect();
    if !revocations.is_empty() {
        let at = ctx.store.checkpoint(&peer.office)?;
        ctx.store
            .apply_batch(&peer.office, &revocations, at, now, &[])?;
        // On disk, so that the index takes the purges in.
        ctx.store.commit().await?;
    }
    if let Some(search) = ctx.search.clone() {
        tokio::task::spawn_blocking(move || search.purge())
            .await
            .map_err(|e| PullError::Search(format!("the search index's purge task failed: {e}")))?
            .map_err(|e| PullError::Search(e.to_string()))?;
    }
    // Purged as of now, not as of the batch's arrival.
    let purged_at = now_ms();
    for grant in std::mem::take(&mut sorted.to_sign) {
        let ack = sign_ack(ctx, peer, grant, purged_at)?;
        sorted.items.push(ApplyItem::Ack(ack.clone()));
        sorted.acks.push(ack);
    }
    Ok(())
}

/// Applies a batch's revocations and purge acknowledgements without its
/// versions or its checkpoint, and sends the acknowledgements up.
async fn apply_all_but_versions(
    ctx: &SyncContext,
    peer: &Peer,
    sorted: &Sorted,
    now: u64,
    up: &mpsc::Sender<pb::PullUp>,
) -> Result<(), PullError> {
    let kept: Vec<ApplyItem> = sorted
        .items
        .iter()
        .filter(|i| !matches!(i, ApplyItem::Version(_)))
        .cloned()
        .collect();
    if kept.is_empty() {
        return Ok(());
    }
    let at = ctx.store.checkpoint(&peer.office)?;
    ctx.store.apply_batch(&peer.office, &kept, at, now, &[])?;
    ctx.store.commit().await?;
    tracing::warn!(peer = %peer.office, "below the disk reserve: applied revocations, versions wait for room");
    for ack in &sorted.acks {
        let kind = pull_up::Kind::PurgeAck(purge_ack_to_pb(ack));
        let _ = up.send(pb::PullUp { kind: Some(kind) }).await;
    }
    Ok(())
}

/// Most purge acknowledgements signed for one batch: a real grant closes
/// with one, and an origin that sends thousands is refused past these.
const MAX_NEW_ACKS_PER_BATCH: usize = 64;
/// Most acknowledgements kept for one origin, confirmed by it or not (they
/// are kept for good): an origin that closed more grants to this office
/// than this gets no further acknowledgement, and its `share list` shows
/// their purges as pending.
const MAX_ACKS_PER_ORIGIN: usize = 4096;
/// Most entries a batch from an origin may hold: the feed breaks batches
/// at 1 MiB of versions, and scans 1,024 feed items at a time.
pub const MAX_BATCH_ENTRIES: usize = 16_384;

/// A batch's entries sorted into what the store applies, the purge
/// acknowledgements to send (signed for it, or signed before and sent
/// again), the refused entries' audit drafts, and the reports of refused
/// versions to send the origin.
struct Sorted {
    items: Vec<ApplyItem>,
    acks: Vec<PurgeAck>,
    /// Closed grants to acknowledge with a new signature ([`sign_acks`]).
    to_sign: Vec<GrantId>,
    refusals: Vec<Draft>,
    reports: Vec<pb::VersionRejected>,
}

/// Most refused versions of one batch reported to the origin: it shows
/// its admins the newest few, and the rest are in this node's audit log.
const MAX_REPORTS_PER_BATCH: usize = 8;

/// What the origin is told about a version refused at entry `seq`: the
/// record and version its bytes name, when they can be read, and why.
fn report(seq: u64, canonical: &[u8], reason: &Rejection) -> pb::VersionRejected {
    let (record_id, version) = peek_id_version(canonical)
        .map(|(id, v)| (id.to_string(), v))
        .unwrap_or_default();
    pb::VersionRejected {
        seq,
        record_id,
        version,
        reason: clip_reason(&reason.to_string()),
    }
}

/// Sorts `entries`: checked versions, revocations of records the peer owns
/// and closed grants (acknowledged, signed) are kept; the rest is refused.
fn sort_entries(
    ctx: &SyncContext,
    peer: &Peer,
    entries: Vec<pb::FeedEntry>,
    verified: Vec<Result<SignedVersion, Rejection>>,
) -> Result<Sorted, PullError> {
    let mut verified = verified.into_iter();
    let mut sorted = Sorted {
        items: Vec::with_capacity(entries.len()),
        acks: Vec::new(),
        to_sign: Vec::new(),
        refusals: Vec::new(),
        reports: Vec::new(),
    };
    let mut acks = AckBudget {
        signed: 0,
        kept: None,
        seen: std::collections::HashSet::new(),
    };
    for entry in entries {
        match entry.kind {
            Some(feed_entry::Kind::Version(v)) => {
                match verified.next().unwrap_or(Err(Rejection::Unchecked)) {
                    Ok(signed) => sorted.items.push(ApplyItem::Version(Box::new(signed))),
                    Err(reason) => {
                        tracing::warn!(peer = %peer.office, seq = entry.seq, %reason, "rejected a replicated version");
                        let what = format!("feed entry {}", entry.seq);
                        sorted.refusals.push(refused(ctx, peer, what, &reason));
                        if sorted.reports.len() < MAX_REPORTS_PER_BATCH {
                            sorted
                                .reports
                                .push(report(entry.seq, &v.canonical, &reason));
                        }
                    }
                }
            }
            Some(feed_entry::Kind::RevokeRecordId(id)) => match revocation(&peer.office, &id) {
                Some(id) => sorted.items.push(ApplyItem::Revoke(id)),
                None => {
                    tracing::warn!(peer = %peer.office, record = %id, "rejected a revocation of a record the peer does not own");
                    let what = format!("revocation of {id} (feed entry {})", entry.seq);
                    sorted
                        .refusals
                        .push(refused(ctx, peer, what, &Rejection::NotOwner));
                }
            },
            Some(feed_entry::Kind::GrantClosed(grant)) => match GrantId::parse(&grant) {
                Ok(grant) => {
                    let what = format!("closing of grant {grant} (feed entry {})", entry.seq);
                    if let Err(reason) = acks.take(ctx, peer, grant, &mut sorted)? {
                        tracing::warn!(peer = %peer.office, %reason, "refused to acknowledge a closed grant");
                        sorted.refusals.push(refused(ctx, peer, what, &reason));
                    }
                }
                Err(e) => tracing::warn!(peer = %peer.office, error = %e, "malformed grant id"),
            },
            None => {}
        }
    }
    Ok(sorted)
}

/// The record a revocation from `origin` names, if it is a record of
/// `origin`'s: an office revokes only what it shared.
pub fn revocation(origin: &OfficeId, raw: &str) -> Option<RecordId> {
    RecordId::parse(raw)
        .ok()
        .filter(|id| id.origin() == *origin)
}

/// What one batch may still have this node sign.
struct AckBudget {
    signed: usize,
    /// Acknowledgements kept for this origin, with those signed now;
    /// counted (a scan) only for a batch that closes a grant.
    kept: Option<usize>,
    seen: std::collections::HashSet<GrantId>,
}

impl AckBudget {
    /// Acknowledges the closing of `grant`: the acknowledgement signed for
    /// it before is sent again; a new one is signed within the budget.
    fn take(
        &mut self,
        ctx: &SyncContext,
        peer: &Peer,
        grant: GrantId,
        sorted: &mut Sorted,
    ) -> Result<Result<(), Rejection>, PullError> {
        if !self.seen.insert(grant.clone()) {
            return Ok(Ok(()));
        }
        if let Some(ack) = ctx.store.our_ack(&grant)? {
            if ack.origin != peer.office {
                return Ok(Err(Rejection::AnotherOriginsGrant));
            }
            sorted.acks.push(ack);
            return Ok(Ok(()));
        }
        let kept = match self.kept {
            Some(n) => n,
            None => ctx.store.ack_count(&peer.office)?,
        };
        if self.signed >= MAX_NEW_ACKS_PER_BATCH || kept >= MAX_ACKS_PER_ORIGIN {
            self.kept = Some(kept);
            return Ok(Err(Rejection::TooManyAcks));
        }
        self.signed += 1;
        self.kept = Some(kept + 1);
        sorted.to_sign.push(grant);
        Ok(Ok(()))
    }
}

/// The audit draft of an entry `peer` sent that this node refused.
fn refused(ctx: &SyncContext, peer: &Peer, what: String, reason: &Rejection) -> Draft {
    Draft::new(
        Actor::node(ctx.office.as_str()),
        "replica.rejected",
        Target {
            peer: peer.office.to_string(),
            detail: crate::domain::audit::clip(&what),
            ..Target::default()
        },
        Outcome::failed("REJECTED", reason.to_string()),
    )
}

/// This office's signed acknowledgement that it purged what `grant` of
/// `peer` had shared.
fn sign_ack(
    ctx: &SyncContext,
    peer: &Peer,
    grant: GrantId,
    now: u64,
) -> Result<PurgeAck, PullError> {
    let mut ack = PurgeAck {
        grant,
        origin: peer.office.clone(),
        purged_by: ctx.office.clone(),
        purged_at_ms: now,
        signature: Vec::new(),
    };
    ack.signature = OfficeSigner::new(&ctx.ca).sign_bytes(&ack.canonical())?;
    Ok(ack)
}

/// Tells whoever listens (monitoring, benchmarks) which versions arrived.
fn announce_applied(ctx: &SyncContext, peer: &Peer, items: &[ApplyItem]) {
    if ctx.applied.receiver_count() == 0 {
        return;
    }
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

/// Verifies versions in order, spread over the machine's cores when there
/// are enough of them to be worth a thread.
fn verify_all(
    verifier: &OfficeVerifier,
    versions: Vec<(Bytes, Bytes)>,
) -> Vec<Result<SignedVersion, Rejection>> {
    const PER_THREAD_MIN: usize = 32;
    let threads = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .min(versions.len() / PER_THREAD_MIN)
        .max(1);
    in_parts(
        &versions,
        threads,
        |(c, s)| verify(verifier, c.clone(), s.clone()),
        || Err(Rejection::VerifierPanicked),
    )
}

/// `f` of every item, in order, computed in `threads` parts on threads of
/// their own (one part: on this thread). Exactly one result per item,
/// whatever happens: the items of a part whose thread panicked get
/// `failed()`, and the parts after it keep their places, since results
/// are matched to entries by position.
fn in_parts<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
    failed: impl Fn() -> R,
) -> Vec<R> {
    if threads <= 1 || items.len() < 2 {
        return items.iter().map(&f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                let handle = scope.spawn(move || part.iter().map(f).collect::<Vec<_>>());
                (part.len(), handle)
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|(len, h)| match h.join() {
                Ok(results) if results.len() == len => results,
                _ => std::iter::repeat_with(&failed).take(len).collect(),
            })
            .collect()
    })
}

/// A version from `verifier`'s office, checked; never stored otherwise.
pub fn verify(
    verifier: &OfficeVerifier,
    canonical: Bytes,
    signature: Bytes,
) -> Result<SignedVersion, Rejection> {
    let signed = SignedVersion::from_parts(canonical, signature)?;
    verifier.verify(&signed)?;
    // Signed is not the same as well formed: a peer's bug or malice must
    // not put values here that local writes could never have made.
    signed.record.check_replica_shape()?;
    Ok(signed)
}

#[cfg(test)]
mod tests {
    use super::{Rejection, in_parts, report};

    /// A version refused whole (here, in an encoding from a later build)
    /// is still named to its origin by the id and version its bytes start
    /// with; bytes that do not name one are reported by position alone,
    /// and a reason is cut to what the origin keeps.
    #[test]
    fn a_report_names_what_the_bytes_name_and_clips_the_reason() {
        let id = "phila-da:0190a1b2c3d4aaaaaaaaaaaaaaaaaaaa";
        let mut w = crate::domain::codec::Writer::with_capacity(64);
        w.raw(b"casemesh.record.v9\0\0").str(id).u64(7).raw(b"more");
        let later = w.finish();
        let refused = crate::domain::RecordVersion::from_canonical(&later).unwrap_err();
        let r = report(12, &later, &Rejection::Malformed(refused));
        assert_eq!((r.seq, r.record_id.as_str(), r.version), (12, id, 7));
        assert!(!r.reason.is_empty());
        let r = report(13, b"junk", &Rejection::Unchecked);
        assert_eq!((r.record_id.as_str(), r.version), ("", 0));
        assert_eq!(r.reason, "verification result missing");
        let long = crate::domain::limits::LimitError::FieldTooLong {
            field: "x".repeat(10_000),
            actual: 1,
            limit: 0,
        };
        let r = report(14, b"", &Rejection::Shape(long));
        assert!(r.reason.len() <= crate::domain::rejection::MAX_REASON_BYTES);
    }

    /// Results keep their entries' places across parts, and a part whose
    /// thread panics fails each of its own items, no more and no fewer:
    /// the versions after it are still matched to their own checks.
    #[test]
    fn a_panicking_part_fails_its_own_items_and_keeps_the_rest_in_place() {
        let items: Vec<u32> = (0..100).collect();
        let doubled = in_parts(&items, 4, |x| Some(x * 2), || None);
        assert_eq!(doubled, (0..100).map(|x| Some(x * 2)).collect::<Vec<_>>());

        // Parts of 25: the second (25..50) panics.
        let got = in_parts(
            &items,
            4,
            |&x| {
                assert!(!(25..50).contains(&x), "a verifier bug");
                Some(x)
            },
            || None,
        );
        assert_eq!(got.len(), 100);
        for (i, r) in got.iter().enumerate() {
            let i = i as u32;
            if (25..50).contains(&i) {
                assert_eq!(*r, None, "item {i}");
            } else {
                assert_eq!(*r, Some(i), "item {i}");
            }
        }
    }
}
