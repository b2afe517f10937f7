//! The audit log as plain data: entries, their encoding, the hash chain that
//! links them, signed heads, and the walk that checks a chain.
//!
//! Each entry stores the chain hash of the one before it (`prev`) and its
//! own (so a changed entry is named, not only the one after it). The chain
//! hash of entry `n` is
//! `BLAKE3("casemesh.audit.chain.v1\0" ‖ prev ‖ n (u64 BE) ‖ BLAKE3(body))`,
//! where `body` is the entry's encoding without `prev`. Because only the
//! body's digest enters the chain, a stretch of the chain can be proved with
//! 32 bytes per entry instead of the entries themselves: that is how a peer
//! checks that a head it witnessed is still in an office's log, and how a
//! case export carries only the entries that concern the case.
//!
//! Those digests go to every pinned peer, and many entries (what was served
//! to a third office, and when) hold only fields that could be guessed, so
//! a bare digest would let a peer confirm a guess. A body of version 2
//! therefore carries [`SALT_LEN`] random bytes right after its version
//! byte. Version 1 bodies, written before, have no salt; they still decode,
//! walk and re-encode to the very bytes that were hashed.
//!
//! A signed head is the office's ECDSA signature over
//! `"casemesh.audit.treehead.v1\0" ‖ office ‖ seq ‖ hash ‖ root ‖ at_ms`,
//! where `root` is the RFC 9162 Merkle tree hash of the chain hashes of
//! entries `1..=seq` ([`super::merkle`]). Heads signed before the tree
//! existed carry no root and were signed over
//! `"casemesh.audit.head.v1\0" ‖ office ‖ seq ‖ hash ‖ at_ms`; they still
//! verify.

use super::codec::{DecodeError, Reader, Writer};

/// Chain hash before the first entry.
pub const GENESIS: [u8; 32] = [0; 32];

const CHAIN_TAG: &[u8] = b"casemesh.audit.chain.v1\0";
const HEAD_TAG: &[u8] = b"casemesh.audit.head.v1\0";
const TREE_HEAD_TAG: &[u8] = b"casemesh.audit.treehead.v1\0";
const V1: u8 = 1;
/// Entry bodies with a salt; signed heads with a tree root.
const V2: u8 = 2;

/// Random bytes in a version 2 entry body.
pub const SALT_LEN: usize = 16;

/// Longest text kept in an entry's free-form fields: input from a refused
/// call is recorded, but a caller cannot make one entry arbitrarily large.
pub const MAX_FIELD: usize = 512;
/// Most records one entry names; a larger batch names the first ones and
/// says how many there were.
pub const MAX_RECORDS: usize = 4096;

/// Who did it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actor {
    /// `user`, `peer`, `node` (this node on its own account) or
    /// `unauthenticated` (a refused connection).
    pub kind: String,
    /// User name for users; empty otherwise.
    pub name: String,
    /// `admin` or `staff` for users.
    pub role: String,
    /// The actor's office.
    pub office: String,
    /// SHA-256 of its certificate, `sha256:<hex>`, when there was one.
    pub fingerprint: String,
    /// Network address it came from, when it came over the network.
    pub remote: String,
}

impl Actor {
    /// This node acting on its own (replication, expiry, removal of files).
    pub fn node(office: &str) -> Self {
        Self {
            kind: "node".into(),
            office: office.into(),
            ..Self::default()
        }
    }

    /// A peer office's node.
    pub fn peer(office: &str) -> Self {
        Self {
            kind: "peer".into(),
            office: office.into(),
            ..Self::default()
        }
    }

    /// A caller with no accepted certificate, from `remote` (if known).
    pub fn unauthenticated(remote: String) -> Self {
        Self {
            kind: "unauthenticated".into(),
            remote,
            ..Self::default()
        }
    }

    /// One line for people: `user alice (admin) of phila-da`.
    pub fn describe(&self) -> String {
        match self.kind.as_str() {
            "user" => format!("user {} ({}) of {}", self.name, self.role, self.office),
            "peer" => format!("peer node of {}", self.office),
            "node" => format!("node of {}", self.office),
            _ => format!("unauthenticated {}", self.remote),
        }
    }
}

/// What it was done to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    /// Records and versions (0: the record as a whole).
    pub records: Vec<(String, u64)>,
    pub collection: String,
    pub peer: String,
    /// Anything else that identifies the object: a user, a grant, a file
    /// hash, a filter.
    pub detail: String,
}

impl Target {
    pub fn record(id: &str, version: u64) -> Self {
        Self {
            records: vec![(clip(id), version)],
            ..Self::default()
        }
    }

    pub fn detail(detail: impl Into<String>) -> Self {
        Self {
            detail: clip(&detail.into()),
            ..Self::default()
        }
    }

    pub fn mentions_record(&self, id: &str) -> bool {
        self.records.iter().any(|(r, _)| r == id)
    }
}

/// How it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Empty when it succeeded; otherwise the gRPC code name
    /// (`PERMISSION_DENIED`, …) or `REJECTED` / `REFUSED`.
    pub code: String,
    pub message: String,
}

impl Outcome {
    pub fn ok() -> Self {
        Self::default()
    }

    pub fn failed(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: clip(&message.into()),
        }
    }

    pub fn is_ok(&self) -> bool {
        self.code.is_empty()
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_ok() {
            f.write_str("ok")
        } else {
            write!(f, "{}: {}", self.code, self.message)
        }
    }
}

/// An entry before the log gives it a place: the store assigns `seq`,
/// `at_ms` and `prev` when it appends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub actor: Actor,
    pub action: String,
    pub target: Target,
    pub outcome: Outcome,
    /// When it happened; the log never lets time run backwards, so an entry
    /// is stamped no earlier than the one before it.
    pub at_ms: u64,
}

impl Draft {
    pub fn new(actor: Actor, action: impl Into<String>, target: Target, outcome: Outcome) -> Self {
        Self {
            actor,
            action: action.into(),
            target,
            outcome,
            at_ms: super::now_ms(),
        }
    }
}

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub at_ms: u64,
    /// Office whose node wrote it.
    pub node: String,
    pub actor: Actor,
    pub action: String,
    pub target: Target,
    pub outcome: Outcome,
    /// Chain hash of the entry before (all zero for the first).
    pub prev: [u8; 32],
    /// Random bytes that keep the body's digest from being confirmed by
    /// guessing the other fields. `None` only in entries written as
    /// version 1, before entries were salted: such an entry is encoded as
    /// version 1 again, so its bytes and its hash never change.
    pub salt: Option<[u8; SALT_LEN]>,
}

pub use super::time::format_time;

/// Shortens free text to [`MAX_FIELD`] bytes on a character boundary.
pub fn clip(s: &str) -> String {
    if s.len() <= MAX_FIELD {
        return s.to_owned();
    }
    let mut end = MAX_FIELD;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl Entry {
    /// A new entry, salted with fresh random bytes.
    pub fn from_draft(d: Draft, seq: u64, node: &str, prev: [u8; 32]) -> Self {
        let mut salt = [0u8; SALT_LEN];
        super::random_bytes(&mut salt);
        Self::salted(d, seq, node, prev, salt)
    }

    /// A new entry with the salt given (for bytes a test can freeze).
    pub fn salted(d: Draft, seq: u64, node: &str, prev: [u8; 32], salt: [u8; SALT_LEN]) -> Self {
        Self {
            seq,
            at_ms: d.at_ms,
            node: node.to_owned(),
            actor: d.actor,
            action: d.action,
            target: d.target,
            outcome: d.outcome,
            prev,
            salt: Some(salt),
        }
    }

    /// The encoding without `prev`; its digest enters the chain.
    /// Version 1: `[1] seq at_ms node actor action target outcome`;
    /// version 2: `[2] salt(16)` and then the same fields.
    pub fn body(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(256);
        match &self.salt {
            None => w.u8(V1),
            Some(salt) => w.u8(V2).raw(salt),
        };
        w.u64(self.seq).u64(self.at_ms).str(&self.node);
        let a = &self.actor;
        w.str(&a.kind)
            .str(&a.name)
            .str(&a.role)
            .str(&a.office)
            .str(&a.fingerprint)
            .str(&a.remote);
        w.str(&self.action);
        let t = &self.target;
        w.u32(t.records.len() as u32);
        for (id, v) in &t.records {
            w.str(id).u64(*v);
        }
        w.str(&t.collection).str(&t.peer).str(&t.detail);
        w.str(&self.outcome.code).str(&self.outcome.message);
        w.finish()
    }

    /// What the store keeps: `prev ‖ hash ‖ body`.
    pub fn encode(&self) -> Vec<u8> {
        let body = self.body();
        let hash = chain_hash(&self.prev, self.seq, &body_digest(&body));
        let mut out = Vec::with_capacity(64 + body.len());
        out.extend_from_slice(&self.prev);
        out.extend_from_slice(&hash);
        out.extend_from_slice(&body);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let Stored { prev, body, .. } = Stored::split(bytes)?;
        let mut r = Reader::new(body);
        let salt = read_salt(&mut r)?;
        let seq = r.u64()?;
        let at_ms = r.u64()?;
        let node = r.str("node")?.to_owned();
        let actor = Actor {
            kind: r.str("actor kind")?.to_owned(),
            name: r.str("actor name")?.to_owned(),
            role: r.str("actor role")?.to_owned(),
            office: r.str("actor office")?.to_owned(),
            fingerprint: r.str("actor fingerprint")?.to_owned(),
            remote: r.str("actor remote")?.to_owned(),
        };
        let action = r.str("action")?.to_owned();
        let n = r.u32()? as usize;
        if n > MAX_RECORDS {
            return Err(DecodeError::Invalid {
                field: "records",
                reason: format!("{n} records in one entry"),
            });
        }
        let mut records = Vec::with_capacity(n);
        for _ in 0..n {
            let id = r.str("record")?.to_owned();
            records.push((id, r.u64()?));
        }
        let target = Target {
            records,
            collection: r.str("collection")?.to_owned(),
            peer: r.str("peer")?.to_owned(),
            detail: r.str("detail")?.to_owned(),
        };
        let outcome = Outcome {
            code: r.str("outcome code")?.to_owned(),
            message: r.str("outcome message")?.to_owned(),
        };
        r.finish()?;
        Ok(Self {
            seq,
            at_ms,
            node,
            actor,
            action,
            target,
            outcome,
            prev,
            salt,
        })
    }

    /// This entry's chain hash.
    pub fn hash(&self) -> [u8; 32] {
        chain_hash(&self.prev, self.seq, &body_digest(&self.body()))
    }
}

/// Reads a body's version byte and, from version 2 on, the salt after it.
fn read_salt(r: &mut Reader<'_>) -> Result<Option<[u8; SALT_LEN]>, DecodeError> {
    match r.u8()? {
        V1 => Ok(None),
        V2 => {
            let mut salt = [0u8; SALT_LEN];
            salt.copy_from_slice(r.raw(SALT_LEN)?);
            Ok(Some(salt))
        }
        v => Err(DecodeError::UnknownVersion(vec![v])),
    }
}

/// A stored entry's parts, without decoding the body.
pub struct Stored<'a> {
    pub prev: [u8; 32],
    /// The chain hash stored with the entry.
    pub hash: [u8; 32],
    pub body: &'a [u8],
}

impl<'a> Stored<'a> {
    pub fn split(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        if bytes.len() < 65 {
            return Err(DecodeError::Truncated {
                offset: bytes.len(),
                needed: 65 - bytes.len(),
            });
        }
        let mut prev = [0u8; 32];
        prev.copy_from_slice(&bytes[..32]);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&bytes[32..64]);
        Ok(Self {
            prev,
            hash,
            body: &bytes[64..],
        })
    }

    pub fn body_digest(&self) -> [u8; 32] {
        body_digest(self.body)
    }
}

pub fn body_digest(body: &[u8]) -> [u8; 32] {
    *blake3::hash(body).as_bytes()
}

pub fn chain_hash(prev: &[u8; 32], seq: u64, body_digest: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(CHAIN_TAG);
    h.update(prev);
    h.update(&seq.to_be_bytes());
    h.update(body_digest);
    *h.finalize().as_bytes()
}

/// An office's signed statement: "my log has `seq` entries ending in
/// `hash`, and its Merkle tree over them has `root`" — a signed tree head
/// in RFC 9162's sense, with the chain hash beside the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHead {
    pub office: String,
    /// The tree size: how many entries the log had.
    pub seq: u64,
    pub hash: [u8; 32],
    /// The Merkle tree hash over entries `1..=seq`; `None` in heads signed
    /// before the log kept a tree.
    pub root: Option<[u8; 32]>,
    pub at_ms: u64,
    /// ECDSA P-256/SHA-256 (DER) by the office key over [`Self::canonical`].
    pub signature: Vec<u8>,
}

impl SignedHead {
    /// The bytes the office signs.
    pub fn canonical(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match &self.root {
            Some(root) => w
                .raw(TREE_HEAD_TAG)
                .str(&self.office)
                .u64(self.seq)
                .raw(&self.hash)
                .raw(root)
                .u64(self.at_ms),
            None => w
                .raw(HEAD_TAG)
                .str(&self.office)
                .u64(self.seq)
                .raw(&self.hash)
                .u64(self.at_ms),
        };
        w.finish()
    }

    /// Version 2 with a root, version 1 (the first layout) without.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(if self.root.is_some() { V2 } else { V1 })
            .str(&self.office)
            .u64(self.seq)
            .raw(&self.hash);
        if let Some(root) = &self.root {
            w.raw(root);
        }
        w.u64(self.at_ms).bytes(&self.signature);
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let v = r.u8()?;
        if v != V1 && v != V2 {
            return Err(DecodeError::UnknownVersion(vec![v]));
        }
        let office = r.str("office")?.to_owned();
        let seq = r.u64()?;
        let hash = r.array::<32>()?;
        let root = if v == V2 {
            Some(r.array::<32>()?)
        } else {
            None
        };
        let at_ms = r.u64()?;
        let signature = r.bytes()?.to_vec();
        r.finish()?;
        Ok(Self {
            office,
            seq,
            hash,
            root,
            at_ms,
            signature,
        })
    }
}

/// The first thing in a chain that does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit entry {seq}: {reason}")]
pub struct Fault {
    pub seq: u64,
    pub reason: String,
}

/// Walks a chain entry by entry, from a known position.
#[derive(Debug, Clone)]
pub struct ChainWalk {
    /// Sequence number of the last entry walked (0: none).
    pub seq: u64,
    /// Chain hash after it.
    pub hash: [u8; 32],
}

impl Default for ChainWalk {
    fn default() -> Self {
        Self {
            seq: 0,
            hash: GENESIS,
        }
    }
}

impl ChainWalk {
    pub fn from(seq: u64, hash: [u8; 32]) -> Self {
        Self { seq, hash }
    }

    /// Takes the next stored entry (`key_seq` is where the store keeps it).
    pub fn step_stored(&mut self, key_seq: u64, stored: &[u8]) -> Result<Entry, Fault> {
        let expected = self.seq + 1;
        let fault = |seq, reason: String| Fault { seq, reason };
        if key_seq != expected {
            return Err(fault(
                expected,
                if key_seq > expected {
                    format!(
                        "missing: the log jumps from entry {} to {key_seq}",
                        self.seq
                    )
                } else {
                    format!("out of order: found {key_seq} after {}", self.seq)
                },
            ));
        }
        let entry = Entry::decode(stored)
            .map_err(|e| fault(key_seq, format!("cannot be decoded ({e})")))?;
        if entry.seq != key_seq {
            return Err(fault(
                key_seq,
                format!(
                    "says it is entry {}: entries were moved or reordered",
                    entry.seq
                ),
            ));
        }
        if entry.prev != self.hash {
            return Err(fault(
                key_seq,
                format!(
                    "does not follow entry {}: the hash it holds of the entry before does not match (entry {} was rewritten, or entries were removed or reordered)",
                    self.seq, self.seq
                ),
            ));
        }
        let parts = Stored::split(stored).map_err(|e| fault(key_seq, e.to_string()))?;
        let hash = chain_hash(&self.hash, key_seq, &parts.body_digest());
        if hash != parts.hash {
            return Err(fault(
                key_seq,
                "its contents do not match the hash stored with it: the entry was changed".into(),
            ));
        }
        self.hash = hash;
        self.seq = key_seq;
        Ok(entry)
    }

    /// Takes the next entry by its body digest only (a proof).
    pub fn step_digest(&mut self, seq: u64, digest: &[u8; 32]) -> Result<(), Fault> {
        if seq != self.seq + 1 {
            return Err(Fault {
                seq: self.seq + 1,
                reason: format!("missing: the proof jumps from entry {} to {seq}", self.seq),
            });
        }
        self.hash = chain_hash(&self.hash, seq, digest);
        self.seq = seq;
        Ok(())
    }
}

/// Longest record id kept in an entry: every id casemesh makes is far
/// shorter; a longer one came from input and names nothing.
pub const MAX_RECORD_ID: usize = 128;

impl Draft {
    /// The draft with every text field at most [`MAX_FIELD`] bytes (record
    /// ids at most [`MAX_RECORD_ID`]) and at most [`MAX_RECORDS`] records,
    /// so that no input makes one entry large: an entry is at most about
    /// 560 KiB whatever it describes.
    pub fn clipped(mut self) -> Self {
        for field in [
            &mut self.actor.kind,
            &mut self.actor.name,
            &mut self.actor.role,
            &mut self.actor.office,
            &mut self.actor.fingerprint,
            &mut self.actor.remote,
            &mut self.action,
            &mut self.target.collection,
            &mut self.target.peer,
            &mut self.target.detail,
            &mut self.outcome.code,
            &mut self.outcome.message,
        ] {
            if field.len() > MAX_FIELD {
                *field = clip(field);
            }
        }
        self.target.records.truncate(MAX_RECORDS);
        for (id, _) in &mut self.target.records {
            if id.len() > MAX_RECORD_ID {
                *id = clip_to(id, MAX_RECORD_ID);
            }
        }
        self
    }
}

/// `s` shortened to at most `max` bytes on a character boundary.
fn clip_to(s: &str, max: usize) -> String {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(seq: u64) -> Draft {
        Draft {
            actor: Actor {
                kind: "user".into(),
                name: "alice".into(),
                role: "admin".into(),
                office: "phila-da".into(),
                fingerprint: "sha256:00".into(),
                remote: "127.0.0.1:1".into(),
            },
            action: "Records.Put".into(),
            target: Target::record("phila-da:x", seq),
            outcome: Outcome::ok(),
            at_ms: 1_000 + seq,
        }
    }

    fn entry(seq: u64, prev: [u8; 32]) -> Entry {
        Entry::from_draft(draft(seq), seq, "phila-da", prev)
    }

    /// An entry as version 1 wrote it: no salt.
    fn unsalted(seq: u64, prev: [u8; 32]) -> Entry {
        Entry {
            salt: None,
            ..entry(seq, prev)
        }
    }

    /// A chain whose entries up to `unsalted_upto` predate salting.
    fn mixed_chain(n: u64, unsalted_upto: u64) -> Vec<Vec<u8>> {
        let mut prev = GENESIS;
        (1..=n)
            .map(|seq| {
                let e = if seq <= unsalted_upto {
                    unsalted(seq, prev)
                } else {
                    entry(seq, prev)
                };
                prev = e.hash();
                e.encode()
            })
            .collect()
    }

    fn chain(n: u64) -> Vec<Vec<u8>> {
        mixed_chain(n, 0)
    }

    fn walk(stored: &[(u64, Vec<u8>)]) -> Result<ChainWalk, Fault> {
        let mut w = ChainWalk::default();
        for (k, v) in stored {
            w.step_stored(*k, v)?;
        }
        Ok(w)
    }

    #[test]
    fn an_untouched_chain_walks_and_digests_prove_the_same_head() {
        let c = chain(5);
        let stored: Vec<_> = c.iter().cloned().zip(1..).map(|(v, k)| (k, v)).collect();
        let full = walk(&stored).unwrap();
        let mut proof = ChainWalk::from(2, Entry::decode(&c[2]).unwrap().prev);
        for (seq, bytes) in stored.iter().skip(2) {
            let digest = Stored::split(bytes).unwrap().body_digest();
            proof.step_digest(*seq, &digest).unwrap();
        }
        assert_eq!(proof.hash, full.hash);
        assert_eq!(full.seq, 5);
    }

    #[test]
    fn a_changed_removed_or_swapped_entry_is_named() {
        let c = chain(5);
        let keyed =
            || -> Vec<(u64, Vec<u8>)> { c.iter().cloned().zip(1..).map(|(v, k)| (k, v)).collect() };

        // A changed name: the entry still decodes, but not to its hash.
        let mut changed = keyed();
        let at = changed[2].1.windows(5).position(|w| w == b"alice").unwrap();
        changed[2].1[at] = b'A';
        let fault = walk(&changed).unwrap_err();
        assert_eq!(fault.seq, 3, "{fault}");
        assert!(fault.reason.contains("changed"), "{fault}");

        let mut removed = keyed();
        removed.remove(1);
        assert_eq!(walk(&removed).unwrap_err().seq, 2);

        let mut swapped = keyed();
        let (a, b) = (swapped[1].1.clone(), swapped[2].1.clone());
        swapped[1].1 = b;
        swapped[2].1 = a;
        assert_eq!(walk(&swapped).unwrap_err().seq, 2);
    }

    #[test]
    fn long_input_is_clipped() {
        let s = "é".repeat(MAX_FIELD);
        let c = clip(&s);
        assert!(c.len() <= MAX_FIELD + 3);
        assert!(c.ends_with('…'));
    }

    #[test]
    fn a_log_begun_before_salting_walks_and_proves_across_the_change() {
        let c = mixed_chain(5, 2);
        assert_eq!(Stored::split(&c[1]).unwrap().body[0], V1);
        assert_eq!(Stored::split(&c[2]).unwrap().body[0], V2);
        let stored: Vec<_> = c.iter().cloned().zip(1..).map(|(v, k)| (k, v)).collect();
        let full = walk(&stored).unwrap();
        let mut proof = ChainWalk::default();
        for (seq, bytes) in &stored {
            let digest = Stored::split(bytes).unwrap().body_digest();
            proof.step_digest(*seq, &digest).unwrap();
        }
        assert_eq!(proof.hash, full.hash);
        for bytes in &c {
            assert_eq!(&Entry::decode(bytes).unwrap().encode(), bytes);
        }
    }

    #[test]
    fn entries_with_the_same_fields_have_different_body_digests() {
        let (a, b) = (entry(1, GENESIS), entry(1, GENESIS));
        assert_ne!(a.salt, b.salt);
        assert_ne!(body_digest(&a.body()), body_digest(&b.body()));
        assert_ne!(a.hash(), b.hash());
        let salted = Entry::decode(&a.encode()).unwrap();
        assert_eq!(salted.salt, a.salt, "decoding keeps the salt");
    }

    #[test]
    fn an_unknown_entry_version_is_refused() {
        let mut bytes = entry(1, GENESIS).encode();
        bytes[64] = 3;
        assert!(matches!(
            Entry::decode(&bytes),
            Err(DecodeError::UnknownVersion(v)) if v == [3]
        ));
    }

    /// Bytes written by version 1 of the entry encoding.
    #[test]
    fn frozen_v1_entry_decodes() {
        let e = unsalted(1, GENESIS);
        let bytes = hex::decode(FROZEN).unwrap();
        assert_eq!(Entry::decode(&bytes).unwrap(), e);
        assert_eq!(Entry::decode(&bytes).unwrap().encode(), bytes);
        assert_eq!(e.encode(), bytes);
        assert_eq!(e.hash()[..], bytes[32..64]);
    }

    /// Bytes written by version 2: the salt follows the version byte.
    #[test]
    fn frozen_v2_entry_decodes() {
        let e = Entry::salted(draft(1), 1, "phila-da", GENESIS, SALT);
        let bytes = hex::decode(FROZEN_V2).unwrap();
        assert_eq!(Entry::decode(&bytes).unwrap(), e);
        assert_eq!(Entry::decode(&bytes).unwrap().encode(), bytes);
        assert_eq!(e.encode(), bytes);
        assert_eq!(e.hash()[..], bytes[32..64]);
        // The same fields as version 1, behind the salt.
        let v1 = hex::decode(FROZEN).unwrap();
        assert_eq!(bytes[64], V2);
        assert_eq!(bytes[65..81], SALT);
        assert_eq!(bytes[81..], v1[65..]);
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;
        use crate::domain::arbitrary::{bytes, damage, damaged, entry, signed_head};

        proptest! {
            #[test]
            fn entries_round_trip_and_store_their_chain_hash(e in entry()) {
                let stored = e.encode();
                prop_assert_eq!(Entry::decode(&stored), Ok(e.clone()));
                prop_assert_eq!(Stored::split(&stored).unwrap().hash, e.hash());
            }

            /// The chain covers a body's bytes: an entry that decodes
            /// from them must encode its body as those very bytes.
            #[test]
            fn damaged_entries_decode_only_from_their_own_body(
                e in entry(),
                (flips, cut) in damage(),
            ) {
                let bytes = damaged(e.encode(), &flips, cut);
                if let Ok(d) = Entry::decode(&bytes) {
                    prop_assert_eq!(d.body(), bytes[64..].to_vec());
                }
                let _ = ChainWalk::default().step_stored(1, &bytes);
            }

            #[test]
            fn any_bytes_decode_as_an_entry_or_head_only_from_their_encoding(b in bytes(300)) {
                if let Ok(d) = Entry::decode(&b) {
                    prop_assert_eq!(d.body(), b[64..].to_vec());
                }
                if let Ok(h) = SignedHead::decode(&b) {
                    prop_assert_eq!(h.encode(), b);
                }
            }

            #[test]
            fn signed_heads_round_trip(h in signed_head(), (flips, cut) in damage()) {
                prop_assert_eq!(SignedHead::decode(&h.encode()), Ok(h.clone()));
                let bytes = damaged(h.encode(), &flips, cut);
                if let Ok(d) = SignedHead::decode(&bytes) {
                    prop_assert_eq!(d.encode(), bytes);
                }
            }
        }
    }

    const SALT: [u8; SALT_LEN] = *b"casemesh-salt-16";

    const FROZEN_V2: &str = "0000000000000000000000000000000000000000000000000000000000000000\
        b49c1719d488233f873fedb5bee3ecb2db3de92630ebfb1b093bd6c2209a0875\
        02636173656d6573682d73616c742d3136000000000000000100000000000003\
        e9000000087068696c612d6461000000047573657200000005616c6963650000\
        000561646d696e000000087068696c612d6461000000097368613235363a3030\
        0000000b3132372e302e302e313a310000000b5265636f7264732e5075740000\
        00010000000a7068696c612d64613a7800000000000000010000000000000000\
        000000000000000000000000";

    const FROZEN: &str = "0000000000000000000000000000000000000000000000000000000000000000\
        04cde1e639d0c3d1f7fb845fdb14bf9cdf36272247f27681df73f7c5ae55348b\
        01000000000000000100000000000003e9000000087068696c612d6461000000\
        047573657200000005616c6963650000000561646d696e000000087068696c61\
        2d6461000000097368613235363a30300000000b3132372e302e302e313a3100\
        00000b5265636f7264732e507574000000010000000a7068696c612d64613a78\
        00000000000000010000000000000000000000000000000000000000";
}
