//! The audit log as a use case: the record a call leaves ([`Call`]),
//! queries, verification of the chain and signed heads, the task that signs
//! the head, and witnessing peers' logs.
//!
//! A change's entry is written in the change's own transaction: the service
//! making the change takes the entry from the [`Call`] ([`Call::entry`]).
//! Every other call (reads, refusals) is logged by the gRPC layer through
//! [`AuditLog::finish_call`] before its reply is sent.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::domain::audit::{
    Actor, ChainWalk, Draft, Entry, Fault, Outcome, SignedHead, Stored, Target, format_time,
};
use crate::domain::merkle::{self, Frontier};
use crate::domain::now_ms;
use crate::error::{Error, Result};
use crate::identity::{OfficeCa, OfficeSigner, OfficeVerifier};
use crate::store::{AuditField, Store};

/// Entries read from the store at a time.
const PAGE: usize = 4096;
/// Most entries one query page looks at; the page token then continues.
const SCAN_LIMIT: usize = 200_000;
/// Stored bytes after which a page of entries is returned: with entries at
/// most about 560 KiB each, a page stays under 4 MiB, the size any gRPC
/// client takes by default.
const PAGE_BYTES: usize = 2 * 1024 * 1024;
/// A changed head is signed at most this often; many changes share one
/// signature, as many writes share one flush, and a busy office keeps at
/// most 17,280 signed heads a day.
const SIGN_MIN_INTERVAL: Duration = Duration::from_secs(5);
/// An unchanged head is signed again this often, with a fresh time.
const SIGN_EVERY: Duration = Duration::from_secs(600);
/// A peer's heads are kept at most one per this interval (and always the
/// newest): enough to find when a log was rewritten, without keeping every
/// head of a busy peer.
const WITNESS_KEEP_EVERY_MS: u64 = 60_000;

/// One call in progress: who makes it, what it is, and what it concerns.
pub struct Call {
    actor: Actor,
    action: String,
    target: Mutex<Target>,
    /// Set when the call's entry went into a change's transaction.
    logged: AtomicBool,
}

impl Call {
    pub fn new(actor: Actor, action: impl Into<String>) -> Self {
        Self {
            actor,
            action: action.into(),
            target: Mutex::new(Target::default()),
            logged: AtomicBool::new(false),
        }
    }

    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// Says what the call concerns (refused calls are logged with it too).
    pub fn set_target(&self, t: Target) {
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = t;
    }

    /// The entry of a change that is about to be stored, to write in its
    /// transaction. The call then needs no other entry unless it fails.
    pub fn entry(&self, target: Target) -> Draft {
        self.set_target(target.clone());
        self.logged.store(true, Ordering::Release);
        Draft::new(
            self.actor.clone(),
            self.action.clone(),
            target,
            Outcome::ok(),
        )
    }

    /// The entry still owed when the call ends with `outcome`, if any.
    pub fn owed(&self, outcome: Outcome) -> Option<Draft> {
        if outcome.is_ok() && self.logged.load(Ordering::Acquire) {
            return None;
        }
        let target = self
            .target
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Some(Draft::new(
            self.actor.clone(),
            self.action.clone(),
            target,
            outcome,
        ))
    }
}

/// Which entries a query returns.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub from_ms: u64,
    /// 0: no upper bound.
    pub to_ms: u64,
    /// User name, office, certificate fingerprint or kind.
    pub actor: String,
    pub record: String,
    pub collection: String,
    pub peer: String,
    pub action: String,
    /// Continue after this sequence number (oldest first), or before it
    /// (newest first); 0: from the start.
    pub after_seq: u64,
    pub limit: usize,
    /// Newest entries first.
    pub newest_first: bool,
}

impl AuditQuery {
    fn matches(&self, e: &Entry) -> bool {
        let a = &e.actor;
        (self.actor.is_empty()
            || [&a.name, &a.office, &a.fingerprint, &a.kind].contains(&&self.actor))
            && (self.record.is_empty() || e.target.mentions_record(&self.record))
            && (self.collection.is_empty() || e.target.collection == self.collection)
            && (self.peer.is_empty()
                || e.target.peer == self.peer
                || (a.kind == "peer" && a.office == self.peer))
            && (self.action.is_empty() || e.action == self.action)
    }
}

impl AuditQuery {
    /// The filters the index can answer, the likeliest to be rare first
    /// (a record's entries are few; an action's, many).
    fn indexed<'q>(&'q self, store: &Store) -> Vec<(AuditField, &'q str)> {
        [
            (AuditField::Record, &self.record),
            (AuditField::Collection, &self.collection),
            (AuditField::Peer, &self.peer),
            (AuditField::Actor, &self.actor),
            (AuditField::Action, &self.action),
        ]
        .into_iter()
        .filter(|(field, value)| !value.is_empty() && store.audit_term_indexed(*field, value))
        .map(|(field, value)| (field, value.as_str()))
        .collect()
    }
}

/// Where a query's walk is at `at` (inside `lo..=hi`): whether it must
/// read every entry there (`unindexed`, the entries `(after, upto]` the
/// index does not hold yet) or may follow the index, and the far end of
/// that stretch in the walk's direction.
fn segment(
    at: u64,
    lo: u64,
    hi: u64,
    unindexed: Option<(u64, u64)>,
    newest_first: bool,
) -> (bool, u64) {
    let Some((after, upto)) = unindexed else {
        return (false, if newest_first { lo } else { hi });
    };
    let scanned = after < at && at <= upto;
    let edge = match (newest_first, scanned) {
        (false, true) => upto.min(hi),
        (false, false) if at <= after => after.min(hi),
        (false, false) => hi,
        (true, true) => (after + 1).max(lo),
        (true, false) if at > upto => (upto + 1).max(lo),
        (true, false) => lo,
    };
    (scanned, edge)
}

/// The sequence number after `seq` in the walk's direction.
fn step(seq: u64, newest_first: bool) -> Option<u64> {
    if newest_first {
        seq.checked_sub(1)
    } else {
        seq.checked_add(1)
    }
}

#[cfg(test)]
mod query_tests;

/// Entries indexed per transaction while a log written before the index
/// is indexed: small enough that writes waiting on the same trees are not
/// held up for long.
const INDEX_BATCH: usize = 2048;

/// Indexes a log written before the index existed, a batch at a time, off
/// the async workers, until done or shut down (it resumes where it stopped
/// when the node starts again). Queries scan what it has not reached yet.
pub async fn run_indexer(log: Arc<AuditLog>, shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut indexed = 0u64;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let store = log.store.clone();
        match tokio::task::spawn_blocking(move || store.index_audit_step(INDEX_BATCH)).await {
            Ok(Ok(true)) => indexed += INDEX_BATCH as u64,
            Ok(Ok(false)) => break,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "indexing the audit log failed; queries scan the rest");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "the audit indexing task failed");
                return;
            }
        }
    }
    if indexed > 0 {
        tracing::info!("the audit log written before its index is indexed");
    }
}

/// An entry and its chain hash.
pub type Hashed = (Entry, [u8; 32]);

/// The proofs [`AuditLog::range_proof`] makes, RFC 9162 node hashes each.
pub struct RangeProof {
    pub consistency: Vec<[u8; 32]>,
    pub inclusion: Vec<[u8; 32]>,
}

/// What [`AuditLog::verify`] found.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    pub entries: u64,
    pub signed_heads: u64,
    pub fault: Option<Fault>,
}

/// What witnessing a peer's log found.
#[derive(Debug, Clone)]
pub struct WitnessReport {
    /// Heads held for the peer that were checked.
    pub heads_checked: u64,
    /// The peer's current signed head.
    pub current: Option<SignedHead>,
    /// The first disagreement, if any.
    pub conflict: Option<String>,
    /// Bytes of proof the peer sent.
    pub proof_bytes: u64,
}

/// The node's audit log.
pub struct AuditLog {
    office: String,
    store: Arc<Store>,
    ca: Arc<OfficeCa>,
    /// Held while a head is signed (and the tree extended for it).
    signing: tokio::sync::Mutex<()>,
    /// When [`AuditLog::verify`] last found the whole log sound (0: not
    /// since the node started).
    verified_at_ms: std::sync::atomic::AtomicU64,
    /// Held while the whole log is verified: one walk at a time, however
    /// many callers ask.
    verifying: std::sync::Mutex<()>,
}

impl AuditLog {
    pub fn new(office: String, store: Arc<Store>, ca: Arc<OfficeCa>) -> Self {
        Self {
            office,
            store,
            ca,
            signing: tokio::sync::Mutex::new(()),
            verified_at_ms: Default::default(),
            verifying: std::sync::Mutex::new(()),
        }
    }

    /// When `verify` last passed on this node since it started (0: not
    /// yet).
    pub fn verified_at_ms(&self) -> u64 {
        self.verified_at_ms
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn office(&self) -> &str {
        &self.office
    }

    /// Writes the entry a call still owes (reads, refusals) and makes it
    /// durable; called before the reply is sent.
    pub async fn finish_call(&self, call: &Call, outcome: Outcome) -> Result<()> {
        match call.owed(outcome) {
            Some(d) => self.append(d).await,
            None => Ok(()),
        }
    }

    /// Appends one entry that goes with no stored change, durably.
    pub async fn append(&self, d: Draft) -> Result<()> {
        self.store.audit(&[d])?;
        self.store.commit().await?;
        Ok(())
    }

    /// One page of entries matching `q`, each with its chain hash, and the
    /// page token: the sequence number to continue after (oldest first) or
    /// before (newest first); 0 when the end was reached.
    ///
    /// With a filter the index holds ([`AuditQuery::indexed`]), only the
    /// entries that carry every such filter's term are read (the index's
    /// keys are walked together, each jumping to the next the others
    /// agree on), so a page costs what it returns, not the log; entries
    /// written before the index and not indexed yet are scanned. Without
    /// one, entries are scanned in order, at most [`SCAN_LIMIT`] a page.
    pub fn query(&self, q: &AuditQuery) -> Result<(Vec<Hashed>, u64)> {
        let indexed = q.indexed(&self.store);
        if indexed.is_empty() {
            return self.scan(q);
        }
        let limit = q.limit.clamp(1, 1000);
        let Some((lo, hi)) = self.window(q)? else {
            return Ok((Vec::new(), 0));
        };
        let unindexed = self.store.audit_unindexed()?;
        let token = |seq: u64| if q.newest_first && seq <= 1 { 0 } else { seq };
        let mut out = Vec::new();
        let (mut looked, mut page_bytes) = (0, 0);
        // The next sequence number to look at, walking from `lo` up (from
        // `hi` down, newest first); `None` past the far end.
        let mut cursor = Some(if q.newest_first { hi } else { lo });
        while let Some(at) = cursor.filter(|at| (lo..=hi).contains(at)) {
            // Entries are read one by one only where the index is not
            // written yet; elsewhere the index says which to read.
            let (scanned, edge) = segment(at, lo, hi, unindexed, q.newest_first);
            let next = if scanned {
                Some(at)
            } else {
                self.next_hit(&indexed, at, edge, q.newest_first)?
            };
            let Some(seq) = next else {
                cursor = step(edge, q.newest_first);
                continue;
            };
            cursor = step(seq, q.newest_first);
            looked += 1;
            let Some(raw) = self.store.audit_raw_at(seq)? else {
                continue;
            };
            let parts = Stored::split(&raw).map_err(|e| bad_entry(seq, e))?;
            let e = Entry::decode(&raw).map_err(|e| bad_entry(seq, e))?;
            if q.matches(&e) && e.at_ms >= q.from_ms && (q.to_ms == 0 || e.at_ms <= q.to_ms) {
                page_bytes += raw.len();
                out.push((e, parts.hash));
                if out.len() >= limit || page_bytes >= PAGE_BYTES {
                    return Ok((out, token(seq)));
                }
            }
            if looked >= SCAN_LIMIT {
                return Ok((out, token(seq)));
            }
        }
        Ok((out, 0))
    }

    /// How many entries written before the index are not indexed yet.
    pub fn unindexed(&self) -> Result<u64> {
        Ok(self
            .store
            .audit_unindexed()?
            .map_or(0, |(done, end)| end - done))
    }

    /// The sequence numbers `lo..=hi` a query may return: after (or
    /// before) its page token, and inside its time window (entry times
    /// never decrease, so the window is a range of sequence numbers).
    /// `None` when the range is empty.
    fn window(&self, q: &AuditQuery) -> Result<Option<(u64, u64)>> {
        let head = self.store.audit_head()?.seq;
        let mut lo = if q.from_ms > 0 {
            self.store.audit_seq_at(q.from_ms)?
        } else {
            1
        };
        let mut hi = if q.to_ms > 0 {
            self.store
                .audit_seq_at(q.to_ms.saturating_add(1))?
                .saturating_sub(1)
                .min(head)
        } else {
            head
        };
        if q.after_seq > 0 {
            if q.newest_first {
                hi = hi.min(q.after_seq - 1);
            } else {
                lo = lo.max(q.after_seq.saturating_add(1));
            }
        }
        Ok((lo.max(1) <= hi).then_some((lo.max(1), hi)))
    }

    /// The first entry from `at` towards `edge` (both included) that
    /// carries every term of `indexed`: each term's keys jump to where the
    /// others are, until all agree.
    fn next_hit(
        &self,
        indexed: &[(AuditField, &str)],
        at: u64,
        edge: u64,
        newest_first: bool,
    ) -> Result<Option<u64>> {
        let mut target = at;
        loop {
            let mut agreed = true;
            for &(field, value) in indexed {
                let (lo, hi) = if newest_first {
                    (edge, target)
                } else {
                    (target, edge)
                };
                match self
                    .store
                    .audit_term_seek(field, value, lo, hi, newest_first)?
                {
                    None => return Ok(None),
                    Some(seq) if seq != target => {
                        target = seq;
                        agreed = false;
                    }
                    Some(_) => {}
                }
            }
            if agreed {
                return Ok(Some(target));
            }
        }
    }

    /// [`query`](Self::query) without an indexed filter: every entry in
    /// order, at most [`SCAN_LIMIT`] looked at per page.
    fn scan(&self, q: &AuditQuery) -> Result<(Vec<Hashed>, u64)> {
        let limit = q.limit.clamp(1, 1000);
        // The cursor is the last sequence number looked at; the window's
        // far end stops the walk.
        let mut cursor = if q.newest_first {
            let mut before = match q.after_seq {
                0 => self.store.audit_head()?.seq + 1,
                seq => seq,
            };
            if q.to_ms > 0 {
                // Everything before the first entry after `to_ms` is in range.
                before = before.min(self.store.audit_seq_at(q.to_ms.saturating_add(1))?);
            }
            before
        } else if q.from_ms > 0 {
            q.after_seq
                .max(self.store.audit_seq_at(q.from_ms)?.saturating_sub(1))
        } else {
            q.after_seq
        };
        // Newest first, nothing lies before entry 1: the end is reached.
        let token = |seq: u64| if q.newest_first && seq <= 1 { 0 } else { seq };
        let mut out = Vec::new();
        let mut scanned = 0;
        let mut page_bytes = 0;
        loop {
            let page = if q.newest_first {
                self.store.audit_raw_before(cursor, PAGE)?
            } else {
                self.store.audit_raw(cursor, PAGE)?
            };
            if page.is_empty() {
                return Ok((out, 0));
            }
            for (seq, raw) in page {
                cursor = seq;
                scanned += 1;
                let parts = Stored::split(&raw).map_err(|e| bad_entry(seq, e))?;
                let e = Entry::decode(&raw).map_err(|e| bad_entry(seq, e))?;
                let past_window = if q.newest_first {
                    e.at_ms < q.from_ms
                } else {
                    q.to_ms != 0 && e.at_ms > q.to_ms
                };
                if past_window {
                    return Ok((out, 0));
                }
                if q.matches(&e) {
                    page_bytes += raw.len();
                    out.push((e, parts.hash));
                    // A page fits any client's default message size.
                    if out.len() >= limit || page_bytes >= PAGE_BYTES {
                        return Ok((out, token(seq)));
                    }
                }
                if scanned >= SCAN_LIMIT {
                    return Ok((out, token(seq)));
                }
            }
        }
    }

    /// Walks the whole chain and every signed head; reports the first entry
    /// or head that does not check out.
    pub fn verify(&self) -> Result<VerifyReport> {
        let _walking = match self.verifying.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Err(Error::VerifyRunning),
        };
        let started = crate::domain::time::now_ms();
        let report = self.verify_walk()?;
        if report.fault.is_none() {
            self.verified_at_ms
                .fetch_max(started, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(report)
    }

    fn verify_walk(&self) -> Result<VerifyReport> {
        let verifier = OfficeVerifier::from_ca_cert(
            crate::domain::OfficeId::parse(&self.office)?,
            &self.ca.cert_der,
        )?;
        // Heads are read alongside the entries, never all at once.
        let mut heads = self.store.signed_heads_raw().peekable();
        let mut walk = ChainWalk::default();
        // The Merkle tree over the entries walked, to check each signed
        // root and the tree the node keeps.
        let mut tree = Frontier::default();
        let tree_size = self.store.audit_tree_size()?;
        let mut report = VerifyReport {
            entries: 0,
            signed_heads: 0,
            fault: None,
        };
        let fail = |mut r: VerifyReport, f: Fault| {
            r.fault = Some(f);
            Ok(r)
        };
        loop {
            let page = self.store.audit_raw(walk.seq, PAGE)?;
            if page.is_empty() {
                break;
            }
            for (seq, bytes) in page {
                if let Err(f) = walk.step_stored(seq, &bytes) {
                    return fail(report, f);
                }
                tree.push(merkle::leaf_hash(&walk.hash));
                if seq == tree_size && self.store.audit_tree_root(seq)? != tree.root() {
                    return fail(
                        report,
                        Fault {
                            seq,
                            reason: "the log's Merkle tree up to here does not match its entries (tree nodes were changed)".into(),
                        },
                    );
                }
                report.entries += 1;
                while let Some(Ok((hseq, _))) = heads
                    .peek()
                    .filter(|h| h.as_ref().map_or(true, |(s, _)| *s <= seq))
                {
                    let hseq = *hseq;
                    let Some((_, raw)) = heads.next().transpose()? else {
                        break;
                    };
                    if let Err(f) = check_head(&verifier, hseq, &raw, &walk, &tree) {
                        return fail(report, f);
                    }
                    report.signed_heads += 1;
                }
            }
        }
        if let Some((hseq, raw)) = heads.next().transpose()? {
            let when = SignedHead::decode(&raw)
                .map(|h| format!(" at {}", format_time(h.at_ms)))
                .unwrap_or_default();
            return fail(
                report,
                Fault {
                    seq: walk.seq + 1,
                    reason: format!(
                        "missing: the log ends at entry {}, but the office signed a head at entry {hseq}{when} (entries were removed from the end)",
                        walk.seq
                    ),
                },
            );
        }
        let head = self.store.audit_head()?;
        if head.seq != walk.seq || head.hash != walk.hash {
            return fail(
                report,
                Fault {
                    seq: head.seq.max(walk.seq),
                    reason: format!(
                        "the log's recorded head (entry {}) is not its last entry ({})",
                        head.seq, walk.seq
                    ),
                },
            );
        }
        Ok(report)
    }

    /// Signs the current head if it changed since the last signed one, or
    /// if `always`; returns the newest signed head. The log's Merkle tree is
    /// first brought up to the head, and the head carries its root.
    pub async fn sign_head(&self, always: bool) -> Result<Option<SignedHead>> {
        // One signer at a time: the tree is extended by one writer.
        let _signing = self.signing.lock().await;
        let head = self.store.audit_head()?;
        let last = self.store.latest_signed_head()?;
        let unchanged = last
            .as_ref()
            .is_some_and(|l| l.seq == head.seq && l.root.is_some());
        if head.seq == 0 || (!always && unchanged) {
            return Ok(last);
        }
        let root = self.extend_tree(head.seq).await?;
        let mut signed = SignedHead {
            office: self.office.clone(),
            seq: head.seq,
            hash: head.hash,
            root: Some(root),
            at_ms: now_ms(),
            signature: Vec::new(),
        };
        signed.signature = OfficeSigner::new(&self.ca).sign_bytes(&signed.canonical())?;
        self.store.put_signed_head(&signed)?;
        self.store.commit().await?;
        Ok(Some(signed))
    }

    /// Brings the log's Merkle tree up to entry `seq` (made durable with
    /// the signed head); returns its root there.
    async fn extend_tree(&self, seq: u64) -> Result<[u8; 32]> {
        let store = self.store.clone();
        let root = tokio::task::spawn_blocking(move || {
            store.extend_audit_tree(seq)?;
            store.audit_tree_root(seq)
        })
        .await
        .map_err(|e| Error::Internal(format!("extending the audit tree stopped: {e}")))??;
        Ok(root)
    }

    /// The proofs that the log of `old` entries is a prefix of the log of
    /// `new` (RFC 9162 consistency) and that entry `old` is in the tree of
    /// `new` (inclusion of leaf `old - 1`). Both sizes within the signed
    /// tree.
    pub fn range_proof(&self, old: u64, new: u64) -> Result<RangeProof> {
        Ok(RangeProof {
            consistency: self.store.audit_consistency_proof(old, new)?,
            inclusion: self.store.audit_inclusion_proof(old, new)?,
        })
    }

    /// Keeps a head a peer sent, after checking its signature; returns a
    /// warning when it contradicts a head already held (the peer's log went
    /// backwards or was rewritten).
    pub fn witness(
        &self,
        peer: &crate::domain::OfficeId,
        verifier: &OfficeVerifier,
        h: &SignedHead,
    ) -> Result<Option<String>> {
        check_peer_head(peer, verifier, h)?;
        let latest = self.store.latest_witnessed(peer)?;
        let conflict = match &latest {
            Some(l) if l.seq == h.seq && l.hash != h.hash => Some(format!(
                "{peer} signed two different logs at entry {}",
                h.seq
            )),
            Some(l) if h.seq < l.seq => Some(format!(
                "{peer}'s log went back from entry {} to {}",
                l.seq, h.seq
            )),
            _ => None,
        };
        match latest {
            None => self.store.put_witnessed(peer, h)?,
            Some(l) if h.seq > l.seq => {
                self.store.put_witnessed(peer, h)?;
                // One head per interval is kept, the newest of each; the
                // head the last check proved stays, as the next check
                // starts from it.
                let same_interval =
                    l.at_ms / WITNESS_KEEP_EVERY_MS == h.at_ms / WITNESS_KEEP_EVERY_MS;
                if same_interval && self.store.witness_proven(peer)? != l.seq {
                    self.store.forget_witnessed(peer, l.seq)?;
                }
            }
            Some(_) => {}
        }
        Ok(conflict)
    }

    /// Body digests of entries `after + 1 ..= upto`, in order; fails naming
    /// the first missing entry.
    pub fn digests(&self, after: u64, upto: u64, limit: usize) -> Result<Vec<[u8; 32]>> {
        let mut out = Vec::with_capacity(limit);
        for (expected, (seq, bytes)) in (after + 1..).zip(self.store.audit_raw(after, limit)?) {
            if seq > upto {
                break;
            }
            if seq != expected {
                return Err(Error::AuditEntryMissing(expected));
            }
            out.push(
                Stored::split(&bytes)
                    .map_err(|e| bad_entry(seq, e))?
                    .body_digest(),
            );
        }
        Ok(out)
    }
}

fn bad_entry(seq: u64, e: impl std::fmt::Display) -> Error {
    Error::AuditEntryUnreadable {
        seq,
        reason: e.to_string(),
    }
}

/// Checks one signed head against the chain, and the tree, walked up to it.
fn check_head(
    verifier: &OfficeVerifier,
    seq: u64,
    raw: &[u8],
    walk: &ChainWalk,
    tree: &Frontier,
) -> std::result::Result<(), Fault> {
    let fault = |reason: String| Fault { seq, reason };
    let h = SignedHead::decode(raw)
        .map_err(|e| fault(format!("the signed head here cannot be decoded ({e})")))?;
    let when = format_time(h.at_ms);
    if h.seq != seq {
        return Err(fault(format!(
            "the signed head stored here says entry {}",
            h.seq
        )));
    }
    verifier
        .verify_bytes(&h.canonical(), &h.signature)
        .map_err(|_| {
            fault(format!(
                "the head signed at {when} does not carry a valid office signature"
            ))
        })?;
    let rewritten = walk.hash != h.hash || h.root.is_some_and(|r| r != tree.root());
    if walk.seq == seq && rewritten {
        return Err(fault(format!(
            "the log up to here is not the log the office signed at {when}: entries up to {seq} were rewritten"
        )));
    }
    Ok(())
}

/// Compares the heads held for a peer with a proof of its current log: the
/// body digest of every entry from the first, and its newest signed head.
pub struct WitnessCheck<'a> {
    held: &'a [SignedHead],
    next: usize,
    walk: ChainWalk,
    conflict: Option<String>,
}

impl<'a> WitnessCheck<'a> {
    pub fn new(held: &'a [SignedHead]) -> Self {
        Self {
            held,
            next: 0,
            walk: ChainWalk::default(),
            conflict: None,
        }
    }

    /// Takes the digests of the entries from `first_seq` on.
    pub fn digests(&mut self, first_seq: u64, digests: &[u8]) -> std::result::Result<(), String> {
        if digests.len() % 32 != 0 {
            return Err("malformed proof: digests are not 32 bytes each".into());
        }
        for (i, d) in digests.chunks_exact(32).enumerate() {
            let mut digest = [0u8; 32];
            digest.copy_from_slice(d);
            self.walk
                .step_digest(first_seq + i as u64, &digest)
                .map_err(|f| f.to_string())?;
            while let Some(h) = self.held.get(self.next).filter(|h| h.seq <= self.walk.seq) {
                if h.seq == self.walk.seq && h.hash != self.walk.hash && self.conflict.is_none() {
                    self.conflict = Some(format!(
                        "the head it signed at entry {} ({}) is not in its log any more: entries up to {} were changed",
                        h.seq,
                        format_time(h.at_ms),
                        h.seq
                    ));
                }
                self.next += 1;
            }
        }
        Ok(())
    }

    /// Ends the check with the peer's current signed head (its signature
    /// already checked).
    pub fn finish(self, current: SignedHead) -> WitnessReport {
        let mut conflict = self.conflict;
        if conflict.is_none() {
            if let Some(h) = self.held.get(self.next) {
                conflict = Some(format!(
                    "its log now ends at entry {}, but it signed a head at entry {} ({}): entries were removed",
                    self.walk.seq,
                    h.seq,
                    format_time(h.at_ms)
                ));
            } else if self.walk.seq != current.seq || self.walk.hash != current.hash {
                conflict = Some(format!(
                    "the proof it sent does not lead to the head it signed now (entry {})",
                    current.seq
                ));
            }
        }
        WitnessReport {
            heads_checked: self.next as u64,
            current: Some(current),
            conflict,
            proof_bytes: 0,
        }
    }
}

/// What a head a peer sent must be before it is kept: a head of that
/// peer's log, signed by its office key, at a time casemesh keeps.
pub fn check_peer_head(
    peer: &crate::domain::OfficeId,
    verifier: &OfficeVerifier,
    h: &SignedHead,
) -> Result<()> {
    if h.office != peer.as_str() {
        return Err(Error::HeadOfAnotherOffice {
            named: h.office.clone(),
            peer: peer.clone(),
        });
    }
    verifier.verify_bytes(&h.canonical(), &h.signature)?;
    crate::domain::limits::check_time("signed head time", h.at_ms)?;
    Ok(())
}

/// Signs the head when it changes (at most every five seconds) and every ten
/// minutes regardless, until shutdown; signs a last time on the way out.
pub async fn run_signer(log: Arc<AuditLog>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut last_signed = tokio::time::Instant::now();
    loop {
        let always = last_signed.elapsed() >= SIGN_EVERY;
        match log.sign_head(always).await {
            Ok(_) => last_signed = tokio::time::Instant::now(),
            Err(e) => tracing::error!(error = %e, "signing the audit head failed"),
        }
        tokio::select! {
            _ = log.store.audit_wake.notified() => {}
            _ = tokio::time::sleep(SIGN_EVERY) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
        tokio::select! {
            _ = tokio::time::sleep(SIGN_MIN_INTERVAL) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    if let Err(e) = log.sign_head(false).await {
        tracing::error!(error = %e, "signing the audit head at shutdown failed");
    }
}
