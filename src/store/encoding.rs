//! Versioned encodings of the values the store keeps, all in this one
//! place, as [`Value`]s of the trees ([`super::trees`]); feed items, audit
//! entries and signed heads are the domain's (peers and bundles carry them
//! too) and are stored as the domain writes them. Every value starts with a
//! version byte (an audit entry's body does: its first 64 bytes are the
//! chain hashes); values first stored without one (the audit head, counters,
//! a user name's fingerprint) are still read. Decoders accept every version
//! ever written, and tests decode frozen bytes of each.

use bytes::Bytes;

use super::typed::Value;
use crate::domain::audit::{Entry, SignedHead};
use crate::domain::codec::{DecodeError, Reader, Writer};
use crate::domain::sharing::encoding::{decode_item, encode_item, read_ack, write_ack};
use crate::domain::sharing::{
    EndReason, FeedItem, Grant, GrantId, GrantJob, GrantTarget, Peer, PurgeAck,
};
use crate::domain::{OfficeId, RecordId, Role, SignedVersion, UserName};
use crate::identity::Fingerprint;

const V1: u8 = 1;
/// Blob and fetch entries: v1 plus the chunk size.
const V2: u8 = 2;

fn expect_version(r: &mut Reader<'_>) -> Result<u8, DecodeError> {
    match r.u8()? {
        V1 => Ok(V1),
        other => Err(DecodeError::UnknownVersion(vec![other])),
    }
}

fn invalid(field: &'static str, e: impl ToString) -> DecodeError {
    DecodeError::Invalid {
        field,
        reason: e.to_string(),
    }
}

/// A signed version: `[1] digest(32) signature(len-prefixed) canonical…`.
/// The canonical bytes are stored as signed, so verification never
/// re-encodes.
impl Value for SignedVersion {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(1 + 32 + 4 + self.signature.len() + self.canonical.len());
        w.u8(V1)
            .raw(&self.digest)
            .bytes(&self.signature)
            .raw(&self.canonical);
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<SignedVersion, DecodeError> {
        let mut r = Reader::new(bytes);
        expect_version(&mut r)?;
        let mut digest = [0u8; 32];
        digest.copy_from_slice(r.raw(32)?);
        let signature = Bytes::copy_from_slice(r.bytes()?);
        let canonical = r.rest();
        let record = crate::domain::RecordVersion::from_canonical(canonical)?;
        Ok(SignedVersion {
            record,
            canonical: Bytes::copy_from_slice(canonical),
            digest,
            signature,
        })
    }
}

/// The head of a record: what `List` needs without reading the version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub version: u64,
    pub deleted: bool,
    pub collection: String,
}

impl Value for Head {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(16 + self.collection.len());
        w.u8(V1)
            .u64(self.version)
            .u8(u8::from(self.deleted))
            .str(&self.collection);
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Head, DecodeError> {
        let mut r = Reader::new(bytes);
        expect_version(&mut r)?;
        let version = r.u64()?;
        let deleted = r.u8()? != 0;
        let collection = r.str("collection")?.to_owned();
        r.finish()?;
        Ok(Head {
            version,
            deleted,
            collection,
        })
    }
}

/// A user certificate the node issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub name: UserName,
    pub role: Role,
    pub issued_at_ms: u64,
    /// 0 while valid.
    pub revoked_at_ms: u64,
    pub cert_der: Vec<u8>,
}

fn role_byte(role: Role) -> u8 {
    match role {
        Role::Admin => 1,
        Role::Staff => 2,
        Role::Auditor => 3,
    }
}

impl Value for UserRecord {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(64 + self.cert_der.len());
        w.u8(V1)
            .str(self.name.as_str())
            .u8(role_byte(self.role))
            .u64(self.issued_at_ms)
            .u64(self.revoked_at_ms)
            .bytes(&self.cert_der);
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<UserRecord, DecodeError> {
        let mut r = Reader::new(bytes);
        expect_version(&mut r)?;
        let name = UserName::parse(r.str("name")?).map_err(|e| invalid("name", e))?;
        let role = match r.u8()? {
            1 => Role::Admin,
            2 => Role::Staff,
            3 => Role::Auditor,
            b => return Err(invalid("role", format!("unknown role byte {b}"))),
        };
        let issued_at_ms = r.u64()?;
        let revoked_at_ms = r.u64()?;
        let cert_der = r.bytes()?.to_vec();
        r.finish()?;
        Ok(UserRecord {
            name,
            role,
            issued_at_ms,
            revoked_at_ms,
            cert_der,
        })
    }
}

/// The root of a perfect subtree of the audit log's Merkle tree:
/// `[1] hash(32)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeHash(pub [u8; 32]);

impl Value for NodeHash {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(33);
        w.u8(V1).raw(&self.0);
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<NodeHash, DecodeError> {
        let mut r = Reader::new(bytes);
        expect_version(&mut r)?;
        let mut h = [0u8; 32];
        h.copy_from_slice(r.raw(32)?);
        r.finish()?;
        Ok(NodeHash(h))
    }
}

/// The certificate a user name points to: `[1] fingerprint(32)`; first
/// stored as the 32 bytes alone.
impl Value for Fingerprint {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(33);
        w.u8(V1).raw(&self.0);
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Fingerprint, DecodeError> {
        let mut r = Reader::new(bytes);
        if bytes.len() != 32 {
            expect_version(&mut r)?;
        }
        let mut fp = [0u8; 32];
        fp.copy_from_slice(r.raw(32)?);
        r.finish()?;
        Ok(Fingerprint(fp))
    }
}

/// A number (a counter, how far a peer got): `[1] u64`; first stored as
/// the 8 bytes alone.
impl Value for u64 {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(9);
        w.u8(V1).u64(*self);
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<u64, DecodeError> {
        let mut r = Reader::new(bytes);
        if bytes.len() != 8 {
            expect_version(&mut r)?;
        }
        let n = r.u64()?;
        r.finish()?;
        Ok(n)
    }
}

impl Value for Peer {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(V1)
            .str(self.office.as_str())
            .str(&self.endpoint)
            .bytes(&self.ca_der)
            .u64(self.added_at_ms);
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Peer, DecodeError> {
        let mut r = Reader::new(bytes);
        expect_version(&mut r)?;
        let peer = Peer {
            office: OfficeId::parse(r.str("office")?).map_err(|e| invalid("office", e))?,
            endpoint: r.str("endpoint")?.to_owned(),
            ca_der: r.bytes()?.to_vec(),
            added_at_ms: r.u64()?,
        };
        r.finish()?;
        Ok(peer)
    }
}

impl Value for Grant {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(V1).str(self.id.as_str()).str(self.peer.as_str());
        match &self.target {
            GrantTarget::Collection(c) => w.u8(1).str(c),
            GrantTarget::Record(r) => w.u8(2).str(r.as_str()),
        };
        w.u64(self.created_at_ms)
            .u64(self.expires_at_ms)
            .u64(self.ended_at_ms)
            .u8(match self.end_reason {
                None => 0,
                Some(EndReason::Revoked) => 1,
                Some(EndReason::Expired) => 2,
                Some(EndReason::PeerRemoved) => 3,
            });
        match &self.purge_ack {
            None => {
                w.u8(0);
            }
            Some(a) => {
                w.u8(1);
                write_ack(&mut w, a);
            }
        }
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Grant, DecodeError> {
        let mut r = Reader::new(bytes);
        expect_version(&mut r)?;
        let id = GrantId::parse(r.str("id")?).map_err(|e| invalid("id", e))?;
        let peer = OfficeId::parse(r.str("peer")?).map_err(|e| invalid("peer", e))?;
        let target = match r.u8()? {
            1 => GrantTarget::Collection(r.str("collection")?.to_owned()),
            2 => GrantTarget::Record(
                RecordId::parse(r.str("record")?).map_err(|e| invalid("record", e))?,
            ),
            k => return Err(invalid("target", format!("kind {k}"))),
        };
        let created_at_ms = r.u64()?;
        let expires_at_ms = r.u64()?;
        let ended_at_ms = r.u64()?;
        let end_reason = match r.u8()? {
            0 => None,
            1 => Some(EndReason::Revoked),
            2 => Some(EndReason::Expired),
            3 => Some(EndReason::PeerRemoved),
            k => return Err(invalid("end_reason", format!("kind {k}"))),
        };
        let purge_ack = match r.u8()? {
            0 => None,
            _ => Some(read_ack(&mut r)?),
        };
        r.finish()?;
        Ok(Grant {
            id,
            peer,
            target,
            created_at_ms,
            expires_at_ms,
            ended_at_ms,
            end_reason,
            purge_ack,
        })
    }
}

/// What is left of a purged replica: no content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeStub {
    pub id: RecordId,
    pub version: u64,
    pub digest: [u8; 32],
    pub purged_at_ms: u64,
}

impl Value for PurgeStub {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(V1)
            .str(self.id.as_str())
            .u64(self.version)
            .raw(&self.digest)
            .u64(self.purged_at_ms);
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<PurgeStub, DecodeError> {
        let mut r = Reader::new(bytes);
        expect_version(&mut r)?;
        let id = RecordId::parse(r.str("id")?).map_err(|e| invalid("id", e))?;
        let version = r.u64()?;
        let mut digest = [0u8; 32];
        digest.copy_from_slice(r.raw(32)?);
        let purged_at_ms = r.u64()?;
        r.finish()?;
        Ok(PurgeStub {
            id,
            version,
            digest,
            purged_at_ms,
        })
    }
}

/// A purge acknowledgement this office signed, and whether its origin
/// confirmed receiving it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OurAck {
    pub ack: PurgeAck,
    pub delivered: bool,
}

impl Value for OurAck {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(V1).u8(u8::from(self.delivered));
        write_ack(&mut w, &self.ack);
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<OurAck, DecodeError> {
        let mut r = Reader::new(bytes);
        expect_version(&mut r)?;
        let delivered = r.u8()? != 0;
        let ack = read_ack(&mut r)?;
        r.finish()?;
        Ok(OurAck { ack, delivered })
    }
}

impl Value for GrantJob {
    fn encode(&self) -> Vec<u8> {
        let kind = match self {
            GrantJob::Backfill => 1,
            GrantJob::Close => 2,
        };
        vec![V1, kind]
    }

    fn decode(bytes: &[u8]) -> Result<GrantJob, DecodeError> {
        let mut r = Reader::new(bytes);
        expect_version(&mut r)?;
        let job = match r.u8()? {
            1 => GrantJob::Backfill,
            2 => GrantJob::Close,
            k => return Err(invalid("grant job", format!("kind {k}"))),
        };
        r.finish()?;
        Ok(job)
    }
}

/// A peer's removal, unpinned and not yet finished: its feeds are still to
/// be forgotten and, if asked, its replicas purged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerRemoval {
    pub purge_replicas: bool,
}

impl Value for PeerRemoval {
    fn encode(&self) -> Vec<u8> {
        vec![V1, u8::from(self.purge_replicas)]
    }

    fn decode(bytes: &[u8]) -> Result<PeerRemoval, DecodeError> {
        let mut r = Reader::new(bytes);
        expect_version(&mut r)?;
        let purge_replicas = r.u8()? != 0;
        r.finish()?;
        Ok(PeerRemoval { purge_replicas })
    }
}

/// How far a grant's backfill has queued: every record of this office it
/// covers up to `after` (in id order) is in the peer's feed. Kept with the
/// batch it completes, so a backfill cut short resumes after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillCursor {
    pub after: RecordId,
}

/// Version 1: the version byte, then the record id.
impl Value for BackfillCursor {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(1 + 4 + self.after.as_str().len());
        w.u8(V1).str(self.after.as_str());
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<BackfillCursor, DecodeError> {
        let mut r = Reader::new(bytes);
        expect_version(&mut r)?;
        let after = RecordId::parse(r.str("after")?).map_err(|e| invalid("after", e))?;
        r.finish()?;
        Ok(BackfillCursor { after })
    }
}

/// A job marked by a version before jobs had their own tree: its raw
/// kind, as it was kept under `job:<grant id>` in `counters`.
pub fn legacy_job(raw: &[u8]) -> GrantJob {
    if raw == b"backfill" {
        GrantJob::Backfill
    } else {
        GrantJob::Close
    }
}

/// The last entry of the log: its sequence number, chain hash and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditHead {
    pub seq: u64,
    pub hash: [u8; 32],
    pub at_ms: u64,
}

/// Version 1: the version byte, then sequence number, hash and time. The
/// first layout had no version byte (48 bytes) and is still read.
impl Value for AuditHead {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(V1).u64(self.seq).raw(&self.hash).u64(self.at_ms);
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        if bytes.len() != 48 {
            expect_version(&mut r)?;
        }
        let seq = r.u64()?;
        let mut hash = [0u8; 32];
        hash.copy_from_slice(r.raw(32)?);
        let at_ms = r.u64()?;
        r.finish()?;
        Ok(Self { seq, hash, at_ms })
    }
}

/// As peers receive it in their feeds.
impl Value for FeedItem {
    fn encode(&self) -> Vec<u8> {
        encode_item(self)
    }
    fn decode(bytes: &[u8]) -> Result<FeedItem, DecodeError> {
        decode_item(bytes)
    }
}

/// `prev(32) ‖ hash(32) ‖ body`, the body starting with its version byte:
/// the log's format, as bundles carry it.
impl Value for Entry {
    fn encode(&self) -> Vec<u8> {
        Entry::encode(self)
    }
    fn decode(bytes: &[u8]) -> Result<Entry, DecodeError> {
        Entry::decode(bytes)
    }
}

/// As signed, and as peers and bundles carry it.
impl Value for SignedHead {
    fn encode(&self) -> Vec<u8> {
        SignedHead::encode(self)
    }
    fn decode(bytes: &[u8]) -> Result<SignedHead, DecodeError> {
        SignedHead::decode(bytes)
    }
}

/// Size of the pieces legacy chunk stores were written in: a whole number
/// of chunks of every size ever stored.
pub const PIECE: usize = 256 * 1024;

/// The chunk size of blobs and fetches stored before the size was recorded.
pub const V1_CHUNK: usize = 8 * 1024;

/// Blob and fetch entries from v3 on: the bytes live in the blob store.
const V3: u8 = 3;

/// Where a blob or fetch written before v3 keeps its bytes: in sled, in
/// chunks of `chunk` bytes under the storage id `storage`. Moved into the
/// blob store when the node starts (`service::blobs::migrate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SledChunks {
    pub storage: u64,
    pub chunk: u32,
}

/// A whole blob this node holds: its size, and until when it is kept even
/// with no record listing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobMeta {
    pub size: u64,
    pub keep_until_ms: u64,
    /// Set only for a blob still in sled chunks, not yet migrated.
    pub legacy: Option<SledChunks>,
}

/// A blob a replica lists that is still being fetched from its origin. The
/// bytes received so far are in the node's staging directory, not here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    pub origin: OfficeId,
    pub size: u64,
    /// Set only for a fetch begun in sled chunks, not yet migrated:
    /// where its bytes are and how many arrived.
    pub legacy: Option<(SledChunks, u64)>,
}

/// The version byte of a blob or fetch entry (v1 had no chunk size, v3
/// keeps no bytes in sled).
fn blob_version(r: &mut Reader<'_>) -> Result<u8, DecodeError> {
    match r.u8()? {
        v @ (V1 | V2 | V3) => Ok(v),
        other => Err(DecodeError::UnknownVersion(vec![other])),
    }
}

/// The chunk size: stored from v2 on, [`V1_CHUNK`] before. Pieces are
/// stored a whole number of chunks at a time, so a size that does not divide
/// [`PIECE`] (zero among them) cannot have been written by this code.
fn chunk_field(r: &mut Reader<'_>, version: u8) -> Result<u32, DecodeError> {
    if version == V1 {
        return Ok(V1_CHUNK as u32);
    }
    match r.u32()? {
        n if n > 0 && PIECE % n as usize == 0 => Ok(n),
        n => Err(invalid(
            "chunk size",
            format!("{n} bytes does not divide the {PIECE}-byte piece"),
        )),
    }
}

impl Value for BlobMeta {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match self.legacy {
            None => {
                w.u8(V3).u64(self.size).u64(self.keep_until_ms);
            }
            Some(l) => {
                w.u8(V2)
                    .u64(l.storage)
                    .u64(self.size)
                    .u64(self.keep_until_ms)
                    .u32(l.chunk);
            }
        }
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<BlobMeta, DecodeError> {
        let mut r = Reader::new(bytes);
        let v = blob_version(&mut r)?;
        let meta = if v == V3 {
            BlobMeta {
                size: r.u64()?,
                keep_until_ms: r.u64()?,
                legacy: None,
            }
        } else {
            let storage = r.u64()?;
            let size = r.u64()?;
            let keep_until_ms = r.u64()?;
            let chunk = chunk_field(&mut r, v)?;
            BlobMeta {
                size,
                keep_until_ms,
                legacy: Some(SledChunks { storage, chunk }),
            }
        };
        r.finish()?;
        Ok(meta)
    }
}

impl Value for Fetch {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match &self.legacy {
            None => {
                w.u8(V3).str(self.origin.as_str()).u64(self.size);
            }
            Some((l, received)) => {
                w.u8(V2)
                    .str(self.origin.as_str())
                    .u64(self.size)
                    .u64(l.storage)
                    .u64(*received)
                    .u32(l.chunk);
            }
        }
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Fetch, DecodeError> {
        let mut r = Reader::new(bytes);
        let v = blob_version(&mut r)?;
        let origin = OfficeId::parse(r.str("origin")?).map_err(|e| invalid("origin", e))?;
        let size = r.u64()?;
        let legacy = if v == V3 {
            None
        } else {
            let storage = r.u64()?;
            let received = r.u64()?;
            let chunk = chunk_field(&mut r, v)?;
            Some((SledChunks { storage, chunk }, received))
        };
        r.finish()?;
        Ok(Fetch {
            origin,
            size,
            legacy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes written by version 1 of the head encoding.
    #[test]
    fn frozen_v1_head_decodes() {
        let bytes = hex::decode("01000000000000000300000000083230323620303034").unwrap();
        assert_eq!(
            Head::decode(&bytes).unwrap(),
            Head {
                version: 3,
                deleted: false,
                collection: "2026 004".into()
            }
        );
    }

    /// Bytes written by version 1 of the user encoding.
    #[test]
    fn frozen_v1_user_decodes() {
        let bytes =
            hex::decode("0100000005616c69636502000000000000000a000000000000000000000003010203")
                .unwrap();
        let u = UserRecord::decode(&bytes).unwrap();
        assert_eq!(u.name.as_str(), "alice");
        assert_eq!(u.role, Role::Staff);
        assert_eq!(u.issued_at_ms, 10);
        assert_eq!(u.revoked_at_ms, 0);
        assert_eq!(u.cert_der, vec![1, 2, 3]);
    }

    fn id() -> RecordId {
        RecordId::parse("phila-da:0123456789abcdef0123456789abcdef").unwrap()
    }

    fn ack() -> PurgeAck {
        PurgeAck {
            grant: GrantId::parse("g-0123456789abcdef").unwrap(),
            origin: OfficeId::parse("phila-da").unwrap(),
            purged_by: OfficeId::parse("nyc-da").unwrap(),
            purged_at_ms: 1_790_000_000_000,
            signature: vec![0xaa, 0xbb],
        }
    }

    /// A value encoded now, and a function that decodes bytes as the same
    /// type and encodes them again.
    type Case = (Vec<u8>, fn(&[u8]) -> Vec<u8>);

    fn case<V: Value + 'static>(v: V) -> Case {
        (v.encode(), |b| V::decode(b).unwrap().encode())
    }

    /// One value of every stored kind not covered above, encoded now.
    fn fixtures() -> Vec<(&'static str, Case)> {
        vec![
            ("grant job", case(GrantJob::Close)),
            (
                "peer removal",
                case(PeerRemoval {
                    purge_replicas: true,
                }),
            ),
            (
                "peer",
                case(Peer {
                    office: OfficeId::parse("nyc-da").unwrap(),
                    endpoint: "https://n:1".into(),
                    ca_der: vec![1, 2],
                    added_at_ms: 5,
                }),
            ),
            (
                "grant",
                case(Grant {
                    id: GrantId::parse("g-0123456789abcdef").unwrap(),
                    peer: OfficeId::parse("nyc-da").unwrap(),
                    target: GrantTarget::Collection("c".into()),
                    created_at_ms: 1,
                    expires_at_ms: 2,
                    ended_at_ms: 3,
                    end_reason: Some(EndReason::Revoked),
                    purge_ack: Some(ack()),
                }),
            ),
            (
                "purge stub",
                case(PurgeStub {
                    id: id(),
                    version: 2,
                    digest: [7; 32],
                    purged_at_ms: 9,
                }),
            ),
            (
                "our ack",
                case(OurAck {
                    ack: ack(),
                    delivered: true,
                }),
            ),
            (
                "feed item",
                case(FeedItem::Versions {
                    id: id(),
                    from: 1,
                    to: 3,
                }),
            ),
            (
                "signed head",
                case(SignedHead {
                    office: "phila-da".into(),
                    seq: 4,
                    hash: [3; 32],
                    root: None,
                    at_ms: 6,
                    signature: vec![0xcc],
                }),
            ),
            (
                "signed tree head",
                case(SignedHead {
                    office: "phila-da".into(),
                    seq: 4,
                    hash: [3; 32],
                    root: Some([7; 32]),
                    at_ms: 6,
                    signature: vec![0xcc],
                }),
            ),
            (
                "audit head",
                case(AuditHead {
                    seq: 4,
                    hash: [3; 32],
                    at_ms: 6,
                }),
            ),
            ("number", case(9u64)),
            ("tree node", case(NodeHash([4; 32]))),
            ("fingerprint", case(Fingerprint([5; 32]))),
            (
                "blob",
                case(BlobMeta {
                    size: 300_000,
                    keep_until_ms: 9,
                    legacy: None,
                }),
            ),
            (
                "fetch",
                case(Fetch {
                    origin: OfficeId::parse("phila-da").unwrap(),
                    size: 5,
                    legacy: None,
                }),
            ),
            (
                "blob in chunks",
                case(BlobMeta {
                    size: 300_000,
                    keep_until_ms: 9,
                    legacy: Some(SledChunks {
                        storage: 7,
                        chunk: 2048,
                    }),
                }),
            ),
            (
                "fetch in chunks",
                case(Fetch {
                    origin: OfficeId::parse("phila-da").unwrap(),
                    size: 5,
                    legacy: Some((
                        SledChunks {
                            storage: 2,
                            chunk: 2048,
                        },
                        0,
                    )),
                }),
            ),
        ]
    }

    /// Bytes each encoding wrote when it was frozen. Today's encoder must
    /// write them exactly, and the decoder must read them back to the same
    /// value, so that nothing stored can drift.
    const FROZEN: [(&str, &str); 17] = [
        ("grant job", "0102"),
        ("peer removal", "0101"),
        (
            "peer",
            "01000000066e79632d64610000000b68747470733a2f2f6e3a310000000201020000000000000005",
        ),
        (
            "grant",
            "0100000012672d30313233343536373839616263646566000000066e79632d6461010000000163000000000000000100000000000000020000000000000003010100000012672d30313233343536373839616263646566000000087068696c612d6461000000066e79632d6461000001a0c4506c0000000002aabb",
        ),
        (
            "purge stub",
            "01000000297068696c612d64613a3031323334353637383961626364656630313233343536373839616263646566000000000000000207070707070707070707070707070707070707070707070707070707070707070000000000000009",
        ),
        (
            "our ack",
            "010100000012672d30313233343536373839616263646566000000087068696c612d6461000000066e79632d6461000001a0c4506c0000000002aabb",
        ),
        (
            "feed item",
            "0101000000297068696c612d64613a303132333435363738396162636465663031323334353637383961626364656600000000000000010000000000000003",
        ),
        (
            "signed head",
            "01000000087068696c612d646100000000000000040303030303030303030303030303030303030303030303030303030303030303000000000000000600000001cc",
        ),
        (
            "signed tree head",
            "02000000087068696c612d6461000000000000000403030303030303030303030303030303030303030303030303030303030303030707070707070707070707070707070707070707070707070707070707070707000000000000000600000001cc",
        ),
        (
            "audit head",
            "01000000000000000403030303030303030303030303030303030303030303030303030303030303030000000000000006",
        ),
        ("number", "010000000000000009"),
        (
            "tree node",
            "010404040404040404040404040404040404040404040404040404040404040404",
        ),
        (
            "fingerprint",
            "010505050505050505050505050505050505050505050505050505050505050505",
        ),
        (
            "blob in chunks",
            "02000000000000000700000000000493e0000000000000000900000800",
        ),
        (
            "fetch in chunks",
            "02000000087068696c612d646100000000000000050000000000000002000000000000000000000800",
        ),
        ("blob", "0300000000000493e00000000000000009"),
        ("fetch", "03000000087068696c612d64610000000000000005"),
    ];

    #[test]
    fn every_stored_encoding_writes_and_reads_its_frozen_bytes() {
        let frozen: std::collections::BTreeMap<_, _> = FROZEN.into_iter().collect();
        for (name, (bytes, again)) in fixtures() {
            let want = hex::decode(frozen[name]).unwrap();
            assert_eq!(bytes, want, "{name} is no longer written as frozen");
            // Decoding the frozen bytes and encoding again gives them back.
            assert_eq!(again(&want), want, "{name} does not read back");
        }
        assert_eq!(frozen.len(), fixtures().len());
    }

    /// Values stored before they carried a version byte still read: the
    /// audit head, numbers, a user name's fingerprint.
    #[test]
    fn values_of_the_first_layouts_decode() {
        let mut legacy = 4u64.to_be_bytes().to_vec();
        legacy.extend_from_slice(&[3; 32]);
        legacy.extend_from_slice(&6u64.to_be_bytes());
        assert_eq!(
            AuditHead::decode(&legacy).unwrap(),
            AuditHead {
                seq: 4,
                hash: [3; 32],
                at_ms: 6
            }
        );
        assert!(AuditHead::decode(&legacy[..47]).is_err());
        assert_eq!(u64::decode(&9u64.to_be_bytes()).unwrap(), 9);
        assert!(u64::decode(&[0; 7]).is_err());
        assert_eq!(Fingerprint::decode(&[5; 32]).unwrap(), Fingerprint([5; 32]));
        assert!(Fingerprint::decode(&[5; 31]).is_err());
    }

    /// Blob and fetch entries written before the chunk size was recorded
    /// read as [`V1_CHUNK`].
    #[test]
    fn v1_blob_and_fetch_entries_read_with_the_old_chunk_size() {
        let v1_meta = "01000000000000000700000000000493e00000000000000009";
        assert_eq!(
            BlobMeta::decode(&hex::decode(v1_meta).unwrap()).unwrap(),
            BlobMeta {
                size: 300_000,
                keep_until_ms: 9,
                legacy: Some(SledChunks {
                    storage: 7,
                    chunk: V1_CHUNK as u32
                }),
            }
        );
        let v1_fetch = "01000000087068696c612d6461000000000000000500000000000000020000000000000000";
        assert_eq!(
            Fetch::decode(&hex::decode(v1_fetch).unwrap()).unwrap(),
            Fetch {
                origin: OfficeId::parse("phila-da").unwrap(),
                size: 5,
                legacy: Some((
                    SledChunks {
                        storage: 2,
                        chunk: V1_CHUNK as u32
                    },
                    0
                )),
            }
        );
    }

    #[test]
    fn a_chunk_size_that_does_not_divide_a_piece_is_corrupt() {
        let meta = |chunk: &str| {
            BlobMeta::decode(
                &hex::decode(format!(
                    "02{}{chunk}",
                    "000000000000000700000000000493e00000000000000009"
                ))
                .unwrap(),
            )
        };
        assert_eq!(meta("00000800").unwrap().legacy.unwrap().chunk, 2048);
        for bad in ["00000000", "00000bb8", "00080000"] {
            assert!(meta(bad).is_err(), "chunk size {bad} accepted");
        }
    }

    #[test]
    fn unknown_versions_are_refused() {
        assert!(matches!(
            Head::decode(&[9, 0, 0]),
            Err(DecodeError::UnknownVersion(_))
        ));
        assert!(matches!(
            BlobMeta::decode(&[4, 0, 0]),
            Err(DecodeError::UnknownVersion(_))
        ));
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;
        use crate::domain::arbitrary::{
            bytes, grant, office_id, purge_ack, record_id, record_version, text, user_name,
        };

        fn round_trips<V: Value + PartialEq + std::fmt::Debug>(v: V) -> Result<(), TestCaseError> {
            prop_assert_eq!(V::decode(&v.encode()), Ok(v));
            Ok(())
        }

        /// A chunk size this code could have written: one that divides
        /// a piece.
        fn chunk() -> impl Strategy<Value = u32> {
            (0u32..=18).prop_map(|shift| 1 << shift)
        }

        proptest! {
            #[test]
            fn signed_versions_round_trip(
                v in record_version(),
                digest in any::<[u8; 32]>(),
                signature in bytes(80),
            ) {
                let canonical = bytes::Bytes::from(v.canonical());
                round_trips(SignedVersion {
                    record: v,
                    canonical,
                    digest,
                    signature: signature.into(),
                })?;
            }

            #[test]
            fn heads_and_stubs_round_trip(
                version in any::<u64>(),
                deleted in any::<bool>(),
                collection in text(),
                id in record_id(),
                digest in any::<[u8; 32]>(),
                at in any::<u64>(),
            ) {
                round_trips(Head { version, deleted, collection })?;
                round_trips(PurgeStub { id, version, digest, purged_at_ms: at })?;
                round_trips(AuditHead { seq: version, hash: digest, at_ms: at })?;
                round_trips(Fingerprint(digest))?;
                round_trips(version)?;
            }

            #[test]
            fn users_and_peers_round_trip(
                name in user_name(),
                admin in any::<bool>(),
                times in any::<(u64, u64)>(),
                der in bytes(80),
                office in office_id(),
                endpoint in text(),
            ) {
                let role = if admin { Role::Admin } else { Role::Staff };
                round_trips(UserRecord {
                    name,
                    role,
                    issued_at_ms: times.0,
                    revoked_at_ms: times.1,
                    cert_der: der.clone(),
                })?;
                round_trips(Peer { office, endpoint, ca_der: der, added_at_ms: times.0 })?;
            }

            #[test]
            fn grants_acks_and_jobs_round_trip(
                g in grant(),
                ack in purge_ack(),
                flag in any::<bool>(),
            ) {
                round_trips(g)?;
                round_trips(OurAck { ack, delivered: flag })?;
                round_trips(PeerRemoval { purge_replicas: flag })?;
                round_trips(if flag { GrantJob::Backfill } else { GrantJob::Close })?;
            }

            #[test]
            fn blobs_and_fetches_round_trip(
                n in any::<(u64, u64, u64)>(),
                chunk in chunk(),
                origin in office_id(),
            ) {
                let legacy = SledChunks { storage: n.0, chunk };
                round_trips(BlobMeta { size: n.1, keep_until_ms: n.2, legacy: None })?;
                round_trips(BlobMeta { size: n.1, keep_until_ms: n.2, legacy: Some(legacy) })?;
                round_trips(Fetch { origin: origin.clone(), size: n.0, legacy: None })?;
                round_trips(Fetch { origin, size: n.0, legacy: Some((legacy, n.2)) })?;
            }
        }
    }
}
