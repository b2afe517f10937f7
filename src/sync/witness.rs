//! Peers as witnesses of each other's audit logs.
//!
//! Serving side: `ProveAudit` answers with this office's newest signed tree
//! head and, for each range of tree sizes asked, an RFC 9162 consistency
//! proof and the inclusion proof of the older size's last entry: a few
//! hundred bytes per range, whatever the log's length. Callers from before
//! tree heads still get the body digest of every entry.
//!
//! Checking side: [`check`] proves every head this node kept from the
//! peer's `Pull` streams since the last check against the next one (each
//! head against the next that carries a tree root, the last against the
//! peer's current head), then keeps the current head and remembers it as
//! proven, so the next check starts there. A peer that still answers with
//! digests is checked the old way, from the first entry. [`run_checks`]
//! makes that check of every pinned peer on its own, at the interval
//! `[audit] witness_interval` sets, so each head kept is proven against
//! the next without an admin asking.

use std::sync::Arc;

use prost::Message;
use tokio::sync::{mpsc, watch};
use tonic::Status;

use super::StreamError;

use super::SyncContext;
use crate::domain::OfficeId;
use crate::domain::audit::{SignedHead, format_time};
use crate::domain::merkle;
use crate::error::{Error, Result};
use crate::identity::OfficeVerifier;
use crate::protocol::convert::{signed_head, signed_head_from_pb};
use crate::protocol::pb;
use crate::service::audit::{WitnessCheck, WitnessReport, check_peer_head};
use crate::service::{AuditLog, Sent};

/// Digests per proof message (32 bytes each: 256 KiB).
const DIGESTS_PER_MESSAGE: usize = 8192;

/// Most ranges one `ProveAudit` call may ask (about 1.5 KiB of proof each
/// in a log of millions of entries: under 2 MiB in all).
pub const MAX_RANGES: usize = 1024;

/// Streams the proof of this office's current log into `tx`, while
/// `slot` holds the peer's place; stops if the peer stops reading or the
/// node shuts down.
pub async fn prove(
    audit: Arc<AuditLog>,
    req: pb::ProveAuditRequest,
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
    if req.tree_proofs {
        let answer = {
            let (audit, head) = (audit.clone(), head.clone());
            tokio::task::spawn_blocking(move || range_proofs(&audit, &head, &req.ranges))
                .await
                .unwrap_or_else(|e| {
                    tracing::error!(error = %e, "proving the audit log stopped");
                    Err(StreamError::Internal)
                })
        };
        let msg = answer.map(|proofs| pb::AuditProof {
            head: Some(signed_head(&head)),
            proofs,
            ..pb::AuditProof::default()
        });
        send(msg).await;
        return;
    }
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
            ..pb::AuditProof::default()
        };
        after += digests.len() as u64;
        if !send(Ok(msg)).await {
            return;
        }
    }
    let last = pb::AuditProof {
        first_seq: head.seq + 1,
        head: Some(signed_head(&head)),
        ..pb::AuditProof::default()
    };
    send(Ok(last)).await;
}

/// The proofs of each range asked, against `head`.
fn range_proofs(
    audit: &AuditLog,
    head: &SignedHead,
    ranges: &[pb::AuditProofRange],
) -> std::result::Result<Vec<pb::AuditRangeProof>, StreamError> {
    if ranges.len() > MAX_RANGES {
        return Err(StreamError::BadProofRange(format!(
            "{} ranges were asked; at most {MAX_RANGES} at a time",
            ranges.len()
        )));
    }
    let hashes = |h: Vec<[u8; 32]>| h.iter().map(|n| bytes::Bytes::copy_from_slice(n)).collect();
    ranges
        .iter()
        .map(|r| {
            let new = match r.new_size {
                0 => head.seq,
                n => n,
            };
            if r.old_size == 0 || r.old_size > new || new > head.seq {
                return Err(StreamError::BadProofRange(format!(
                    "the range from {} to {} entries is not within this office's log of {} entries (sizes run from 1 to the current head's, the older first)",
                    r.old_size, r.new_size, head.seq
                )));
            }
            let proof = audit.range_proof(r.old_size, new)?;
            Ok(pb::AuditRangeProof {
                old_size: r.old_size,
                new_size: new,
                consistency: hashes(proof.consistency),
                inclusion: hashes(proof.inclusion),
            })
        })
        .collect()
}

/// Checks what this node holds of `peer`'s log against its log now.
pub async fn check(ctx: &SyncContext, audit: &AuditLog, peer: &OfficeId) -> Result<WitnessReport> {
    let pinned = ctx
        .sharing
        .peer(peer)?
        .ok_or_else(|| Error::PeerNotPinned(peer.clone()))?;
    let held = ctx.store.witnessed(peer)?;
    let proven = ctx.store.witness_proven(peer)?;
    let verifier = OfficeVerifier::from_ca_cert(peer.clone(), &pinned.ca_der)?;
    let mut client =
        super::puller::connect(ctx, &pinned)
            .await
            .map_err(|e| Error::PeerUnreachable {
                peer: peer.clone(),
                reason: e.to_string(),
            })?;
    // The heads since the last check (the last one proven included): each
    // is proven against the next one that carries a root, or the current.
    // A head of an empty log (size 0) proves nothing and has no leaf.
    let pending: Vec<&SignedHead> = held.iter().filter(|h| h.seq >= proven.max(1)).collect();
    let skipped = pending.len().saturating_sub(MAX_RANGES);
    let pending = &pending[skipped..];
    let ranges: Vec<pb::AuditProofRange> = pending
        .iter()
        .enumerate()
        .map(|(i, h)| pb::AuditProofRange {
            old_size: h.seq,
            new_size: pending[i + 1..]
                .iter()
                .find(|n| n.root.is_some())
                .map_or(0, |n| n.seq),
        })
        .collect();
    let mut proof = client
        .prove_audit(pb::ProveAuditRequest {
            tree_proofs: true,
            ranges: ranges.clone(),
        })
        .await
        .map_err(|s| unavailable(peer, &s))?
        .into_inner();
    let first = match next_proof(&mut proof, peer, held.len()).await? {
        Ok(m) => m,
        Err(report) => return Ok(report),
    };
    if first.head.is_none() || !first.digests.is_empty() {
        // A peer from before tree heads: every digest, from the first.
        return by_digests(audit, peer, &verifier, &held, first, &mut proof).await;
    }
    let current = match first.head.as_ref().map(signed_head_from_pb) {
        Some(Ok(h)) => h,
        _ => {
            return Ok(conflict(
                held.len(),
                format!("{peer} sent a malformed signed head"),
            ));
        }
    };
    if let Err(e) = check_peer_head(peer, &verifier, &current) {
        return Ok(conflict(
            held.len(),
            format!("{peer}'s current head does not check out: {e}"),
        ));
    }
    let mut report = TreeCheck {
        peer,
        pending,
        current: &current,
    }
    .check(&ranges, &first.proofs);
    if report.conflict.is_none() {
        match audit.witness(peer, &verifier, &current) {
            Ok(None) => ctx.store.set_witness_proven(peer, current.seq)?,
            Ok(Some(c)) => report.conflict = Some(c),
            Err(e) => {
                report.conflict = Some(format!("{peer}'s current head does not check out: {e}"))
            }
        }
    }
    if skipped > 0 && report.conflict.is_none() {
        tracing::warn!(%peer, skipped, "older witnessed heads were not checked");
    }
    report.proof_bytes = first.encoded_len() as u64;
    report.current = Some(current);
    Ok(report)
}

/// Checks a tree answer against the heads it was asked about.
struct TreeCheck<'a> {
    peer: &'a OfficeId,
    pending: &'a [&'a SignedHead],
    current: &'a SignedHead,
}

impl TreeCheck<'_> {
    fn check(
        &self,
        asked: &[pb::AuditProofRange],
        proofs: &[pb::AuditRangeProof],
    ) -> WitnessReport {
        let mut report = WitnessReport {
            heads_checked: self.pending.len() as u64,
            current: None,
            conflict: None,
            proof_bytes: 0,
        };
        if proofs.len() != asked.len() {
            report.conflict = Some(format!(
                "{} answered {} proofs for the {} heads asked about",
                self.peer,
                proofs.len(),
                asked.len()
            ));
            return report;
        }
        for ((head, range), proof) in self.pending.iter().zip(asked).zip(proofs) {
            if let Err(why) = self.one(head, range, proof) {
                report.conflict = Some(why);
                break;
            }
        }
        report
    }

    /// Checks that `head` is in the log of the range's newer head.
    fn one(
        &self,
        head: &SignedHead,
        range: &pb::AuditProofRange,
        proof: &pb::AuditRangeProof,
    ) -> std::result::Result<(), String> {
        let peer = self.peer;
        let newer = match range.new_size {
            0 => self.current,
            n => self
                .pending
                .iter()
                .find(|h| h.seq == n)
                .copied()
                .unwrap_or(self.current),
        };
        let malformed = |what: &str| format!("{peer} sent a malformed proof: {what}");
        if proof.old_size != head.seq || proof.new_size != newer.seq {
            return Err(malformed("its sizes are not the ones asked"));
        }
        let Some(new_root) = newer.root else {
            return Err(malformed("its current head carries no tree root"));
        };
        let nodes = |list: &[bytes::Bytes]| -> std::result::Result<Vec<[u8; 32]>, String> {
            list.iter()
                .map(|b| {
                    <[u8; 32]>::try_from(b.as_ref())
                        .map_err(|_| malformed("a node is not 32 bytes"))
                })
                .collect()
        };
        let (consistency, inclusion) = (nodes(&proof.consistency)?, nodes(&proof.inclusion)?);
        let changed = || {
            format!(
                "the head it signed at entry {} ({}) is not in its log at entry {}: entries up to {} were changed",
                head.seq,
                format_time(head.at_ms),
                newer.seq,
                head.seq
            )
        };
        let leaf = merkle::leaf_hash(&head.hash);
        if !merkle::verify_inclusion(&leaf, head.seq - 1, newer.seq, &inclusion, &new_root) {
            return Err(changed());
        }
        if let Some(old_root) = head.root {
            if !merkle::verify_consistency(head.seq, newer.seq, &old_root, &new_root, &consistency)
            {
                return Err(changed());
            }
        }
        Ok(())
    }
}

/// Checks a peer that answers with the digest of every entry.
async fn by_digests(
    audit: &AuditLog,
    peer: &OfficeId,
    verifier: &OfficeVerifier,
    held: &[SignedHead],
    first: pb::AuditProof,
    proof: &mut tonic::Streaming<pb::AuditProof>,
) -> Result<WitnessReport> {
    let mut walk = WitnessCheck::new(held);
    let mut next = Some(first);
    let mut bytes = 0u64;
    loop {
        let msg = match next.take() {
            Some(m) => m,
            None => match next_proof(proof, peer, held.len()).await? {
                Ok(m) => m,
                Err(report) => return Ok(report),
            },
        };
        bytes += msg.encoded_len() as u64;
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
            if let Err(e) = audit.witness(peer, verifier, &head) {
                return Ok(conflict(
                    held.len(),
                    format!("{peer}'s current head does not check out: {e}"),
                ));
            }
            let mut report = walk.finish(head);
            report.proof_bytes = bytes;
            return Ok(report);
        }
    }
}

/// The next message of a peer's proof; `Ok(Err(report))` when the peer's
/// answer already settles the check (it ended without a head, or says its
/// own log is not whole: `StreamError::EmptyLog` or `MissingEntry`,
/// answered as DATA_LOSS).
async fn next_proof(
    proof: &mut tonic::Streaming<pb::AuditProof>,
    peer: &OfficeId,
    held: usize,
) -> Result<std::result::Result<pb::AuditProof, WitnessReport>> {
    match proof.message().await {
        Ok(Some(m)) => Ok(Ok(m)),
        Ok(None) => Ok(Err(conflict(
            held,
            format!("{peer} ended its proof without a signed head"),
        ))),
        Err(s) if s.code() == tonic::Code::DataLoss => {
            Ok(Err(conflict(held, format!("{peer}: {}", s.message()))))
        }
        Err(s) => Err(unavailable(peer, &s)),
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
        proof_bytes: 0,
    }
}

/// Checks every pinned peer's log every `every` (the first time one
/// interval after start), until shutdown. A conflict is logged, and
/// written to the audit log as `witness.conflict` (counted per peer, as
/// for heads that do not check out); a peer that cannot be reached, or
/// asks to be asked later, is tried at the next interval.
pub async fn run_checks(
    ctx: Arc<SyncContext>,
    audit: Arc<AuditLog>,
    every: std::time::Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let peers = match ctx.store.peers() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "listing peers to witness failed");
                continue;
            }
        };
        for peer in peers {
            let office = peer.office;
            let checked = tokio::select! {
                r = check(&ctx, &audit, &office) => r,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            let conflict = match checked {
                Ok(r) => match r.conflict {
                    Some(c) => c,
                    None => {
                        tracing::debug!(peer = %office, heads = r.heads_checked, "audit witness agreed");
                        continue;
                    }
                },
                Err(e) => {
                    tracing::debug!(peer = %office, error = %e, "audit witness not made");
                    continue;
                }
            };
            tracing::error!(peer = %office, problem = %conflict, "audit witness");
            let entry = crate::domain::audit::Draft::new(
                crate::domain::audit::Actor::node(ctx.office.as_str()),
                "witness.conflict",
                crate::domain::audit::Target {
                    peer: office.to_string(),
                    detail: crate::domain::audit::clip(&conflict),
                    ..Default::default()
                },
                crate::domain::audit::Outcome::failed("CONFLICT", conflict.clone()),
            );
            // Counted apart from the heads the peer's streams bring, so
            // that a conflict this check finds is logged even when those
            // were found already.
            let source = format!("{office} (witness check)");
            ctx.refusals.refuse(&source, entry).await;
        }
    }
}
