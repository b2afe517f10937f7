//! Versioned encodings of the values the store keeps, all in this one
//! place (feed items and signed heads are the domain's, as peers see them
//! too). Every value starts with a version byte (the audit head's first
//! layout had none and is still read); decoders accept every version ever
//! written, and tests decode frozen bytes of each.

use bytes::Bytes;

use crate::domain::codec::{DecodeError, Reader, Writer};
use crate::domain::sharing::encoding::{read_ack, write_ack};
use crate::domain::sharing::{EndReason, Grant, GrantId, GrantJob, GrantTarget, Peer, PurgeAck};
use crate::domain::{OfficeId, RecordId, Role, SignedVersion, UserName};

const V1: u8 = 1;

fn expect_version(r: &mut Reader<'_>) -> Result<u8, DecodeError> {
    match r.u8()? {
        V1 => Ok(V1),
        other => Err(DecodeError::UnknownVersion(vec![other])),
    }
}

/// A signed version: `[1] digest(32) signature(len-prefixed) canonical…`.
/// The canonical bytes are stored as signed, so verification never
/// re-encodes.
pub fn encode_signed(v: &SignedVersion) -> Vec<u8> {
    let mut w = Writer::with_capacity(1 + 32 + 4 + v.signature.len() + v.canonical.len());
    w.u8(V1)
        .raw(&v.digest)
        .bytes(&v.signature)
        .raw(&v.canonical);
    w.finish()
}

pub fn decode_signed(bytes: &[u8]) -> Result<SignedVersion, DecodeError> {
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

/// The head of a record: what `List` needs without reading the version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub version: u64,
    pub deleted: bool,
    pub collection: String,
}

pub fn encode_head(h: &Head) -> Vec<u8> {
    let mut w = Writer::with_capacity(16 + h.collection.len());
    w.u8(V1)
        .u64(h.version)
        .u8(u8::from(h.deleted))
        .str(&h.collection);
    w.finish()
}

pub fn decode_head(bytes: &[u8]) -> Result<Head, DecodeError> {
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
    }
}

pub fn encode_user(u: &UserRecord) -> Vec<u8> {
    let mut w = Writer::with_capacity(64 + u.cert_der.len());
    w.u8(V1)
        .str(u.name.as_str())
        .u8(role_byte(u.role))
        .u64(u.issued_at_ms)
        .u64(u.revoked_at_ms)
        .bytes(&u.cert_der);
    w.finish()
}

pub fn decode_user(bytes: &[u8]) -> Result<UserRecord, DecodeError> {
    let mut r = Reader::new(bytes);
    expect_version(&mut r)?;
    let name = UserName::parse(r.str("name")?).map_err(|e| DecodeError::Invalid {
        field: "name",
        reason: e.to_string(),
    })?;
    let role = match r.u8()? {
        1 => Role::Admin,
        2 => Role::Staff,
        b => {
            return Err(DecodeError::Invalid {
                field: "role",
                reason: format!("unknown role byte {b}"),
            });
        }
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

pub fn encode_peer(p: &Peer) -> Vec<u8> {
    let mut w = Writer::default();
    w.u8(V1)
        .str(p.office.as_str())
        .str(&p.endpoint)
        .bytes(&p.ca_der)
        .u64(p.added_at_ms);
    w.finish()
}

fn invalid(field: &'static str, e: impl ToString) -> DecodeError {
    DecodeError::Invalid {
        field,
        reason: e.to_string(),
    }
}

pub fn decode_peer(bytes: &[u8]) -> std::result::Result<Peer, DecodeError> {
    let mut r = Reader::new(bytes);
    let v = r.u8()?;
    if v != V1 {
        return Err(DecodeError::UnknownVersion(vec![v]));
    }
    let peer = Peer {
        office: OfficeId::parse(r.str("office")?).map_err(|e| invalid("office", e))?,
        endpoint: r.str("endpoint")?.to_owned(),
        ca_der: r.bytes()?.to_vec(),
        added_at_ms: r.u64()?,
    };
    r.finish()?;
    Ok(peer)
}

pub fn encode_grant(g: &Grant) -> Vec<u8> {
    let mut w = Writer::default();
    w.u8(V1).str(g.id.as_str()).str(g.peer.as_str());
    match &g.target {
        GrantTarget::Collection(c) => w.u8(1).str(c),
        GrantTarget::Record(r) => w.u8(2).str(r.as_str()),
    };
    w.u64(g.created_at_ms)
        .u64(g.expires_at_ms)
        .u64(g.ended_at_ms)
        .u8(match g.end_reason {
            None => 0,
            Some(EndReason::Revoked) => 1,
            Some(EndReason::Expired) => 2,
            Some(EndReason::PeerRemoved) => 3,
        });
    match &g.purge_ack {
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

pub fn decode_grant(bytes: &[u8]) -> std::result::Result<Grant, DecodeError> {
    let mut r = Reader::new(bytes);
    let v = r.u8()?;
    if v != V1 {
        return Err(DecodeError::UnknownVersion(vec![v]));
    }
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

/// What is left of a purged replica: no content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeStub {
    pub id: RecordId,
    pub version: u64,
    pub digest: [u8; 32],
    pub purged_at_ms: u64,
}

pub fn encode_stub(s: &PurgeStub) -> Vec<u8> {
    let mut w = Writer::default();
    w.u8(V1)
        .str(s.id.as_str())
        .u64(s.version)
        .raw(&s.digest)
        .u64(s.purged_at_ms);
    w.finish()
}

pub fn decode_stub(bytes: &[u8]) -> std::result::Result<PurgeStub, DecodeError> {
    let mut r = Reader::new(bytes);
    let v = r.u8()?;
    if v != V1 {
        return Err(DecodeError::UnknownVersion(vec![v]));
    }
    let id = RecordId::parse(r.str("id")?).map_err(|e| DecodeError::Invalid {
        field: "id",
        reason: e.to_string(),
    })?;
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

pub fn encode_our_ack(ack: &PurgeAck, delivered: bool) -> Vec<u8> {
    let mut w = Writer::default();
    w.u8(V1).u8(u8::from(delivered));
    write_ack(&mut w, ack);
    w.finish()
}

pub fn decode_our_ack(bytes: &[u8]) -> std::result::Result<(PurgeAck, bool), DecodeError> {
    let mut r = Reader::new(bytes);
    let v = r.u8()?;
    if v != V1 {
        return Err(DecodeError::UnknownVersion(vec![v]));
    }
    let delivered = r.u8()? != 0;
    let ack = read_ack(&mut r)?;
    r.finish()?;
    Ok((ack, delivered))
}

pub fn encode_job(job: GrantJob) -> Vec<u8> {
    let kind = match job {
        GrantJob::Backfill => 1,
        GrantJob::Close => 2,
    };
    vec![V1, kind]
}

pub fn decode_job(bytes: &[u8]) -> Result<GrantJob, DecodeError> {
    let mut r = Reader::new(bytes);
    expect_version(&mut r)?;
    let job = match r.u8()? {
        1 => GrantJob::Backfill,
        2 => GrantJob::Close,
        k => {
            return Err(DecodeError::Invalid {
                field: "grant job",
                reason: format!("kind {k}"),
            });
        }
    };
    r.finish()?;
    Ok(job)
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

impl AuditHead {
    /// Version 1: the version byte, then sequence number, hash and time.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(V1).u64(self.seq).raw(&self.hash).u64(self.at_ms);
        w.finish()
    }

    /// Also reads the first layout, which had no version byte (48 bytes:
    /// sequence number, hash, time).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes written by version 1 of the head encoding.
    #[test]
    fn frozen_v1_head_decodes() {
        let bytes = hex::decode("01000000000000000300000000083230323620303034").unwrap();
        assert_eq!(
            decode_head(&bytes).unwrap(),
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
        let u = decode_user(&bytes).unwrap();
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

    /// One value of every stored kind not covered above, encoded now.
    fn fixtures() -> Vec<(&'static str, Vec<u8>)> {
        use crate::domain::audit::SignedHead;
        use crate::domain::sharing::FeedItem;
        use crate::domain::sharing::encoding::encode_item;
        vec![
            ("grant job", encode_job(GrantJob::Close)),
            (
                "peer",
                encode_peer(&Peer {
                    office: OfficeId::parse("nyc-da").unwrap(),
                    endpoint: "https://n:1".into(),
                    ca_der: vec![1, 2],
                    added_at_ms: 5,
                }),
            ),
            (
                "grant",
                encode_grant(&Grant {
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
                encode_stub(&PurgeStub {
                    id: id(),
                    version: 2,
                    digest: [7; 32],
                    purged_at_ms: 9,
                }),
            ),
            ("our ack", encode_our_ack(&ack(), true)),
            (
                "feed item",
                encode_item(&FeedItem::Versions {
                    id: id(),
                    from: 1,
                    to: 3,
                }),
            ),
            (
                "signed head",
                SignedHead {
                    office: "phila-da".into(),
                    seq: 4,
                    hash: [3; 32],
                    at_ms: 6,
                    signature: vec![0xcc],
                }
                .encode(),
            ),
            (
                "audit head",
                AuditHead {
                    seq: 4,
                    hash: [3; 32],
                    at_ms: 6,
                }
                .encode(),
            ),
        ]
    }

    /// Bytes each encoding wrote when it was frozen (version 1). Today's
    /// encoder must write them exactly, and the decoder must read them back
    /// to the same value, so that nothing stored can drift.
    const FROZEN: [(&str, &str); 8] = [
        ("grant job", "0102"),
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
            "audit head",
            "01000000000000000403030303030303030303030303030303030303030303030303030303030303030000000000000006",
        ),
    ];

    #[test]
    fn every_stored_encoding_writes_and_reads_its_frozen_bytes() {
        use crate::domain::audit::SignedHead;
        use crate::domain::sharing::encoding::decode_item;
        let frozen: std::collections::BTreeMap<_, _> = FROZEN.into_iter().collect();
        for (name, bytes) in fixtures() {
            let want = hex::decode(frozen[name]).unwrap();
            assert_eq!(bytes, want, "{name} is no longer written as frozen");
            // Decoding the frozen bytes and encoding again gives them back.
            let again = match name {
                "peer" => encode_peer(&decode_peer(&want).unwrap()),
                "grant job" => encode_job(decode_job(&want).unwrap()),
                "grant" => encode_grant(&decode_grant(&want).unwrap()),
                "purge stub" => encode_stub(&decode_stub(&want).unwrap()),
                "our ack" => {
                    let (ack, delivered) = decode_our_ack(&want).unwrap();
                    encode_our_ack(&ack, delivered)
                }
                "feed item" => {
                    crate::domain::sharing::encoding::encode_item(&decode_item(&want).unwrap())
                }
                "signed head" => SignedHead::decode(&want).unwrap().encode(),
                "audit head" => AuditHead::decode(&want).unwrap().encode(),
                other => panic!("no decoder for {other}"),
            };
            assert_eq!(again, want, "{name} does not read back");
        }
        assert_eq!(frozen.len(), fixtures().len());
    }

    /// Audit heads stored before they carried a version byte still read.
    #[test]
    fn an_audit_head_of_the_first_layout_decodes() {
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
    }

    #[test]
    fn unknown_versions_are_refused() {
        assert!(matches!(
            decode_head(&[9, 0, 0]),
            Err(DecodeError::UnknownVersion(_))
        ));
    }
}
