//! The kinds of keys the trees use: how each is written from its parts,
//! which prefixes group them, and how a stored key reads back. Ids are
//! stored as their text; sequence numbers, versions and storage ids as
//! big-endian `u64`, so that keys sort in number order.

use std::borrow::Cow;

use super::typed::{Key, KeyOf, PrefixOf};
use crate::domain::codec::DecodeError;
use crate::domain::sharing::GrantId;
use crate::domain::{BlobHash, OfficeId, RecordId, UserName};
use crate::identity::Fingerprint;

fn invalid(field: &'static str, e: impl ToString) -> DecodeError {
    DecodeError::Invalid {
        field,
        reason: e.to_string(),
    }
}

fn text<'a>(bytes: &'a [u8], field: &'static str) -> Result<&'a str, DecodeError> {
    std::str::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8(field))
}

fn be_u64(bytes: &[u8], field: &'static str) -> Result<u64, DecodeError> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| invalid(field, format!("{} bytes, not 8", bytes.len())))
}

/// `bytes` split at its first 0: the text before, the bytes after.
fn split_at_zero<'a>(
    bytes: &'a [u8],
    field: &'static str,
) -> Result<(&'a str, &'a [u8]), DecodeError> {
    let at = bytes
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| invalid(field, "no separator"))?;
    Ok((text(&bytes[..at], field)?, &bytes[at + 1..]))
}

fn joined(text: &str, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(text.len() + 1 + rest.len());
    k.extend_from_slice(text.as_bytes());
    k.push(0);
    k.extend_from_slice(rest);
    k
}

/// Keys that are one id's text.
macro_rules! text_key {
    ($id:ty, $field:literal) => {
        impl Key for $id {
            type Owned = $id;
            fn decode(bytes: &[u8]) -> Result<$id, DecodeError> {
                <$id>::parse(text(bytes, $field)?).map_err(|e| invalid($field, e))
            }
        }
        impl KeyOf<$id> for &$id {
            fn key(&self) -> Cow<'_, [u8]> {
                Cow::Borrowed(self.as_str().as_bytes())
            }
        }
    };
}

text_key!(RecordId, "record id");
text_key!(OfficeId, "office id");
text_key!(GrantId, "grant id");
text_key!(UserName, "user name");

/// The records of one origin (`origin:`), or of every origin.
pub(super) struct OfOrigin<'a>(pub Option<&'a OfficeId>);

impl PrefixOf<RecordId> for OfOrigin<'_> {
    fn prefix(&self) -> Cow<'_, [u8]> {
        match self.0 {
            Some(origin) => Cow::Owned(format!("{origin}:").into_bytes()),
            None => Cow::Borrowed(&[]),
        }
    }
}

/// A sequence number, an id sled handed out: big-endian.
impl Key for u64 {
    type Owned = u64;
    fn decode(bytes: &[u8]) -> Result<u64, DecodeError> {
        be_u64(bytes, "number")
    }
}

impl KeyOf<u64> for u64 {
    fn key(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.to_be_bytes().to_vec())
    }
}

/// A named slot (`outbox_seq`, `head`, …).
impl KeyOf<str> for &str {
    fn key(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.as_bytes())
    }
}

impl Key for BlobHash {
    type Owned = BlobHash;
    fn decode(bytes: &[u8]) -> Result<BlobHash, DecodeError> {
        BlobHash::from_slice(bytes).map_err(|e| invalid("hash", e))
    }
}

impl KeyOf<BlobHash> for &BlobHash {
    fn key(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.0)
    }
}

impl Key for Fingerprint {
    type Owned = Fingerprint;
    fn decode(bytes: &[u8]) -> Result<Fingerprint, DecodeError> {
        <[u8; 32]>::try_from(bytes)
            .map(Fingerprint)
            .map_err(|_| invalid("fingerprint", format!("{} bytes, not 32", bytes.len())))
    }
}

impl KeyOf<Fingerprint> for &Fingerprint {
    fn key(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.0)
    }
}

/// A user's current certificate is found by name.
impl KeyOf<UserName> for &str {
    fn key(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.as_bytes())
    }
}

/// `record id ‖ 0 ‖ version`: one version of a record. Prefix: the
/// record id and its 0, every version of it.
pub(super) struct VersionKey;

impl KeyOf<VersionKey> for (&RecordId, u64) {
    fn key(&self) -> Cow<'_, [u8]> {
        Cow::Owned(joined(self.0.as_str(), &self.1.to_be_bytes()))
    }
}

impl PrefixOf<VersionKey> for &RecordId {
    fn prefix(&self) -> Cow<'_, [u8]> {
        Cow::Owned(joined(self.as_str(), &[]))
    }
}

impl Key for VersionKey {
    type Owned = (RecordId, u64);
    fn decode(bytes: &[u8]) -> Result<(RecordId, u64), DecodeError> {
        let (id, version) = split_at_zero(bytes, "version key")?;
        Ok((
            RecordId::parse(id).map_err(|e| invalid("record id", e))?,
            be_u64(version, "version")?,
        ))
    }
}

/// `collection ‖ 0 ‖ record id`: a record in the collection index.
/// Prefix: the collection and its 0.
pub(super) struct CollectionKey;

impl KeyOf<CollectionKey> for (&str, &RecordId) {
    fn key(&self) -> Cow<'_, [u8]> {
        Cow::Owned(joined(self.0, self.1.as_str().as_bytes()))
    }
}

impl PrefixOf<CollectionKey> for &str {
    fn prefix(&self) -> Cow<'_, [u8]> {
        Cow::Owned(joined(self, &[]))
    }
}

impl Key for CollectionKey {
    type Owned = RecordId;
    /// The record id (the caller chose the collection).
    fn decode(bytes: &[u8]) -> Result<RecordId, DecodeError> {
        let (_, id) = split_at_zero(bytes, "collection key")?;
        RecordId::parse(text(id, "record id")?).map_err(|e| invalid("record id", e))
    }
}

/// `office ‖ 0 ‖ seq`: an entry of a peer's outbox, or a head of a
/// peer's log witnessed here. Prefix: the office and its 0, all of its
/// entries.
pub(super) struct OfficeSeq;

impl KeyOf<OfficeSeq> for (&OfficeId, u64) {
    fn key(&self) -> Cow<'_, [u8]> {
        Cow::Owned(joined(self.0.as_str(), &self.1.to_be_bytes()))
    }
}

impl PrefixOf<OfficeSeq> for &OfficeId {
    fn prefix(&self) -> Cow<'_, [u8]> {
        Cow::Owned(joined(self.as_str(), &[]))
    }
}

impl Key for OfficeSeq {
    type Owned = u64;
    /// The sequence number (the caller chose the office).
    fn decode(bytes: &[u8]) -> Result<u64, DecodeError> {
        let (_, seq) = split_at_zero(bytes, "office and seq")?;
        be_u64(seq, "seq")
    }
}

/// `grant id ‖ 0 ‖ record id`: a record a grant revealed. Prefix: the
/// grant and its 0, all of them.
pub(super) struct GrantRecord;

impl KeyOf<GrantRecord> for (&GrantId, &RecordId) {
    fn key(&self) -> Cow<'_, [u8]> {
        Cow::Owned(joined(self.0.as_str(), self.1.as_str().as_bytes()))
    }
}

impl PrefixOf<GrantRecord> for &GrantId {
    fn prefix(&self) -> Cow<'_, [u8]> {
        Cow::Owned(joined(self.as_str(), &[]))
    }
}

impl Key for GrantRecord {
    type Owned = RecordId;
    /// The record id (the caller chose the grant).
    fn decode(bytes: &[u8]) -> Result<RecordId, DecodeError> {
        let (_, id) = split_at_zero(bytes, "grant and record")?;
        RecordId::parse(text(id, "record id")?).map_err(|e| invalid("record id", e))
    }
}

/// `hash ‖ record id ‖ 0 ‖ version`: a version that lists a blob.
/// Prefix: the hash, every version listing it.
pub(super) struct RefKey;

impl KeyOf<RefKey> for (&BlobHash, &RecordId, u64) {
    fn key(&self) -> Cow<'_, [u8]> {
        let mut k = self.0.0.to_vec();
        k.extend_from_slice(&joined(self.1.as_str(), &self.2.to_be_bytes()));
        Cow::Owned(k)
    }
}

impl PrefixOf<RefKey> for &BlobHash {
    fn prefix(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.0)
    }
}

/// The references of one office's records to a blob (record ids begin
/// with their origin office and a colon).
impl PrefixOf<RefKey> for (&BlobHash, &OfficeId) {
    fn prefix(&self) -> Cow<'_, [u8]> {
        let mut k = self.0.0.to_vec();
        k.extend_from_slice(self.1.as_str().as_bytes());
        k.push(b':');
        Cow::Owned(k)
    }
}

impl Key for RefKey {
    type Owned = (BlobHash, RecordId, u64);
    fn decode(bytes: &[u8]) -> Result<(BlobHash, RecordId, u64), DecodeError> {
        if bytes.len() < 32 {
            return Err(invalid("reference key", "shorter than a hash"));
        }
        let hash = BlobHash::decode(&bytes[..32])?;
        let (id, version) = VersionKey::decode(&bytes[32..])?;
        Ok((hash, id, version))
    }
}

/// Two numbers, `u64 ‖ u64`: a chunk of stored bytes (storage id, chunk
/// index), or a node of the audit log's Merkle tree (level, index).
pub(super) struct PairKey;

impl KeyOf<PairKey> for (u64, u64) {
    fn key(&self) -> Cow<'_, [u8]> {
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&self.0.to_be_bytes());
        k[8..].copy_from_slice(&self.1.to_be_bytes());
        Cow::Owned(k.to_vec())
    }
}

impl Key for PairKey {
    type Owned = (u64, u64);
    fn decode(bytes: &[u8]) -> Result<(u64, u64), DecodeError> {
        if bytes.len() != 16 {
            return Err(invalid(
                "pair key",
                format!("{} bytes, not 16", bytes.len()),
            ));
        }
        Ok((
            be_u64(&bytes[..8], "first number")?,
            be_u64(&bytes[8..], "second number")?,
        ))
    }
}

/// `field ‖ length (u16) ‖ term ‖ seq`: an audit entry found by one of
/// its terms ([`super::audit_index`]). Prefix: the field, length and term,
/// every entry with that term, oldest first. A term longer than
/// [`MAX_TERM`] is cut there on both sides (when indexed and when looked
/// up), so equal terms always meet; a longer one only finds candidates,
/// which the query checks against the entry itself.
pub(super) struct AuditTerm;

/// Longest term kept in a key, in bytes (entries are clipped to far less
/// since they were clipped at all; older ones may hold more).
pub(super) const MAX_TERM: usize = 1024;

fn term_prefix(field: u8, term: &str) -> Vec<u8> {
    let term = &term.as_bytes()[..term.len().min(MAX_TERM)];
    let mut k = Vec::with_capacity(3 + term.len() + 8);
    k.push(field);
    // At most MAX_TERM, so it fits.
    k.extend_from_slice(&(term.len() as u16).to_be_bytes());
    k.extend_from_slice(term);
    k
}

impl KeyOf<AuditTerm> for (u8, &str, u64) {
    fn key(&self) -> Cow<'_, [u8]> {
        let mut k = term_prefix(self.0, self.1);
        k.extend_from_slice(&self.2.to_be_bytes());
        Cow::Owned(k)
    }
}

impl PrefixOf<AuditTerm> for (u8, &str) {
    fn prefix(&self) -> Cow<'_, [u8]> {
        Cow::Owned(term_prefix(self.0, self.1))
    }
}

impl Key for AuditTerm {
    type Owned = u64;
    /// The entry's sequence number (the caller chose the term).
    fn decode(bytes: &[u8]) -> Result<u64, DecodeError> {
        let len = match bytes {
            [_, hi, lo, ..] => usize::from(u16::from_be_bytes([*hi, *lo])),
            _ => return Err(invalid("audit term key", "shorter than its header")),
        };
        if bytes.len() != 3 + len + 8 {
            return Err(invalid(
                "audit term key",
                format!("{} bytes for a term of {len}", bytes.len()),
            ));
        }
        be_u64(&bytes[3 + len..], "seq")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> RecordId {
        RecordId::parse("phila-da:0123456789abcdef0123456789abcdef").unwrap()
    }

    /// Keys as they have always been written: these bytes are on disk.
    #[test]
    fn keys_are_written_as_frozen_and_read_back() {
        let hash = BlobHash([7; 32]);
        let office = OfficeId::parse("nyc-da").unwrap();
        let version = KeyOf::<VersionKey>::key(&(&id(), 3)).into_owned();
        assert_eq!(
            hex::encode(&version),
            "7068696c612d64613a303132333435363738396162636465663031323334353637383961626364656600\
             0000000000000003"
        );
        assert_eq!(VersionKey::decode(&version).unwrap(), (id(), 3));
        let r = KeyOf::<RefKey>::key(&(&hash, &id(), 3)).into_owned();
        assert_eq!(&r[..32], &[7; 32]);
        assert_eq!(&r[32..], &version[..]);
        assert_eq!(RefKey::decode(&r).unwrap(), (hash, id(), 3));
        let c = KeyOf::<CollectionKey>::key(&("2026 004", &id())).into_owned();
        assert_eq!(&c[..9], b"2026 004\0");
        assert_eq!(CollectionKey::decode(&c).unwrap(), id());
        let o = KeyOf::<OfficeSeq>::key(&(&office, 9)).into_owned();
        assert_eq!(hex::encode(&o), "6e79632d6461000000000000000009");
        assert_eq!(OfficeSeq::decode(&o).unwrap(), 9);
        let term = KeyOf::<AuditTerm>::key(&(b'r', "ab", 5)).into_owned();
        assert_eq!(hex::encode(&term), "72000261620000000000000005");
        assert_eq!(AuditTerm::decode(&term).unwrap(), 5);
        let long = "x".repeat(MAX_TERM + 10);
        let cut = KeyOf::<AuditTerm>::key(&(b'a', long.as_str(), 1)).into_owned();
        assert_eq!(cut.len(), 3 + MAX_TERM + 8);
        assert!(cut.starts_with(&PrefixOf::<AuditTerm>::prefix(&(b'a', &long[..MAX_TERM]))));
        let chunk = KeyOf::<PairKey>::key(&(1, 2)).into_owned();
        assert_eq!(hex::encode(&chunk), "00000000000000010000000000000002");
        assert_eq!(PairKey::decode(&chunk).unwrap(), (1, 2));
    }

    #[test]
    fn malformed_keys_are_errors() {
        assert!(VersionKey::decode(b"no separator").is_err());
        assert!(VersionKey::decode(b"phila-da:x\0\0\0").is_err());
        assert!(RefKey::decode(&[0; 10]).is_err());
        assert!(PairKey::decode(&[0; 15]).is_err());
        assert!(AuditTerm::decode(&[b'r', 0]).is_err());
        assert!(AuditTerm::decode(&[b'r', 0, 2, b'a', 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(<u64 as Key>::decode(&[1, 2]).is_err());
        assert!(RecordId::decode(&[0xff, 0xfe]).is_err());
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;
        use crate::domain::arbitrary::{grant_id, office_id, record_id};

        proptest! {
            /// What a key kind reads back is what it was written from.
            #[test]
            fn keys_read_back_as_written(
                id in record_id(),
                office in office_id(),
                grant in grant_id(),
                n in any::<(u64, u64)>(),
                hash in any::<[u8; 32]>(),
                collection in "[^\\x00]{0,16}",
            ) {
                let hash = BlobHash(hash);
                let version = KeyOf::<VersionKey>::key(&(&id, n.0)).into_owned();
                prop_assert_eq!(VersionKey::decode(&version), Ok((id.clone(), n.0)));
                let r = KeyOf::<RefKey>::key(&(&hash, &id, n.1)).into_owned();
                prop_assert_eq!(RefKey::decode(&r), Ok((hash, id.clone(), n.1)));
                let c = KeyOf::<CollectionKey>::key(&(collection.as_str(), &id)).into_owned();
                prop_assert_eq!(CollectionKey::decode(&c), Ok(id.clone()));
                let o = KeyOf::<OfficeSeq>::key(&(&office, n.0)).into_owned();
                prop_assert_eq!(OfficeSeq::decode(&o), Ok(n.0));
                let g = KeyOf::<GrantRecord>::key(&(&grant, &id)).into_owned();
                prop_assert_eq!(GrantRecord::decode(&g), Ok(id.clone()));
                let chunk = KeyOf::<PairKey>::key(&n).into_owned();
                prop_assert_eq!(PairKey::decode(&chunk), Ok(n));
                let term = KeyOf::<AuditTerm>::key(&(b'c', collection.as_str(), n.0)).into_owned();
                prop_assert_eq!(AuditTerm::decode(&term), Ok(n.0));
                prop_assert_eq!(RecordId::decode(KeyOf::<RecordId>::key(&&id).as_ref()), Ok(id));
            }
        }
    }
}
