//! Peers as witnesses of each other's audit logs.
//!
//! Serving side: `ProveAudit` streams the body digest of every entry of this
//! office's log, then its newest signed head. Checking side: [`check`]
//! recomputes the peer's chain from those digests and compares it, head by
//! head, with every head this node kept from the peer's `Pull` streams.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tonic::Status;

use super::StreamError;

use super::SyncContext;
use crate::domain::OfficeId;
use crate::error::{Error, Result};
use crate::identity::OfficeVerifier;
use crate::protocol::convert::{signed_head, signed_head_from_pb};
use crate::protocol::pb;
use crate::service::audit::{WitnessCheck, WitnessReport};
use crate::service::{AuditLog, Sent};

/// Digests per proof message (32 bytes each: 256 KiB).
const DIGESTS_PER_MESSAGE: usize = 8192;

/// Streams the proof of this office's current log into `tx`, while
/// `slot` holds the peer's place; stops if the peer stops reading or the
/// node shuts down.
pub async fn prove(
    audit: Arc<AuditLog>,
    tx: mpsc::Sender<std::result::Result<pb::AuditProof, StreamError>>,
    mut shutdown: watch::Receiver<bool>,
    slot: super::guard::ProofSlot,
) {
    let _slot = slot;
    let mut send =
        async |msg| crate::service::send_within(&tx, &mut shutdown, msg).await == Sent::Sent;
    let head = match audit.sign_head(false).await {
        Ok(Some(h)) => h,
        Ok(None) => {
            send(Err(StreamError::EmptyLog)).await;
            return;
        }
        Err(e) => {
            send(Err(StreamError::from(e))).await;
            return;
        }
    };
    let mut after = 0;
    while after < head.seq {
        let digests = {
            let audit = audit.clone();
            let upto = head.seq;
            tokio::task::spawn_blocking(move || audit.digests(after, upto, DIGESTS_PER_MESSAGE))
                .await
                .map_err(|e| Error::Internal(format!("reading the audit log stopped: {e}")))
                .and_then(|r| r)
        };
        let digests = match digests {
            Ok(d) if d.is_empty() => {
                send(Err(StreamError::MissingEntry(after + 1))).await;
                return;
            }
            Ok(d) => d,
            Err(e) => {
                send(Err(StreamError::from(e))).await;
                return;
            }
        };
        let msg = pb::AuditProof {
            first_seq: after + 1,
            digests: digests.concat().into(),
            head: None,
        };
        after += digests.len() as u64;
        if !send(Ok(msg)).await {
            return;
        }
    }
    let last = pb::AuditProof {
        first_seq: head.seq + 1,
        digests: Default::default(),
        head: Some(signed_head(&head)),
    };
    send(Ok(last)).await;
}

/// Checks what this node holds of `peer`'s log against its log now.
pub async fn check(ctx: &SyncContext, audit: &AuditLog, peer: &OfficeId) -> Result<WitnessReport> {
    let pinned = ctx
        .sharing
        .peer(peer)?
        .ok_or_else(|| Error::PeerNotPinned(peer.clone()))?;
    let held = ctx.store.witnessed(peer)?;
    let verifier = OfficeVerifier::from_ca_cert(peer.clone(), &pinned.ca_der)?;
    let mut client =
        super::puller::connect(ctx, &pinned)
            .await
            .map_err(|e| Error::PeerUnreachable {
                peer: peer.clone(),
                reason: e.to_string(),
            })?;
    let mut proof = client
        .prove_audit(pb::ProveAuditRequest {})
        .await
        .map_err(|s| unavailable(peer, &s))?
        .into_inner();
    let mut walk = WitnessCheck::new(&held);
    loop {
        let msg = match proof.message().await {
            Ok(Some(m)) => m,
            Ok(None) => {
                return Ok(conflict(
                    held.len(),
                    format!("{peer} ended its proof without a signed head"),
                ));
            }
            // The peer says its own log is not whole (it answers
            // `StreamError::EmptyLog` or `MissingEntry` as DATA_LOSS):
            // that is the answer.
            Err(s) if s.code() == tonic::Code::DataLoss => {
                return Ok(conflict(held.len(), format!("{peer}: {}", s.message())));
            }
            Err(s) => return Err(unavailable(peer, &s)),
        };
        if let Err(e) = walk.digests(msg.first_seq, &msg.digests) {
            return Ok(conflict(
                held.len(),
                format!("{peer} sent a broken proof: {e}"),
            ));
        }
        if let Some(h) = msg.head {
            let head = match signed_head_from_pb(&h) {
                Ok(head) => head,
                Err(e) => {
                    return Ok(conflict(
                        held.len(),
                        format!("{peer} sent a malformed signed head: {e}"),
                    ));
                }
            };
            if let Err(e) = audit.witness(peer, &verifier, &head) {
                return Ok(conflict(
                    held.len(),
                    format!("{peer}'s current head does not check out: {e}"),
                ));
            }
            return Ok(walk.finish(head));
        }
    }
}

fn unavailable(peer: &OfficeId, s: &Status) -> Error {
    Error::PeerUnreachable {
        peer: peer.clone(),
        reason: super::error::status_text(s),
    }
}

fn conflict(held: usize, why: String) -> WitnessReport {
    WitnessReport {
        heads_checked: held as u64,
        current: None,
        conflict: Some(why),
    }
}
