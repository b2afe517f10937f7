//! Versioned encodings of the values the store keeps. Every value starts
//! with a version byte; decoders accept every version ever written, and
//! tests decode frozen bytes of each.

use bytes::Bytes;

use crate::domain::codec::{DecodeError, Reader, Writer};
use crate::domain::{Role, SignedVersion, UserName};

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

    #[test]
    fn unknown_versions_are_refused() {
        assert!(matches!(
            decode_head(&[9, 0, 0]),
            Err(DecodeError::UnknownVersion(_))
        ));
    }
}
