//! Signing record versions with the office key, and verifying them against
//! an office CA certificate.

use bytes::Bytes;
use rcgen::SigningKey;
use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};

use super::{IdentityError, OfficeCa, pki::public_key_of};
use crate::domain::{OfficeId, RecordVersion, SignedVersion, record::sha256};

/// Signs versions written by this office.
pub struct OfficeSigner<'a> {
    ca: &'a OfficeCa,
}

impl<'a> OfficeSigner<'a> {
    pub fn new(ca: &'a OfficeCa) -> Self {
        Self { ca }
    }

    /// Signs arbitrary canonical bytes (purge acknowledgements).
    pub fn sign_bytes(&self, bytes: &[u8]) -> Result<Vec<u8>, IdentityError> {
        self.ca
            .key()
            .sign(bytes)
            .map_err(|e| IdentityError::Sign(e.to_string()))
    }

    pub fn sign(&self, record: RecordVersion) -> Result<SignedVersion, IdentityError> {
        let canonical = Bytes::from(record.canonical());
        let signature = self
            .ca
            .key()
            .sign(&canonical)
            .map_err(|e| IdentityError::Sign(e.to_string()))?;
        Ok(SignedVersion {
            digest: sha256(&canonical),
            record,
            canonical,
            signature: Bytes::from(signature),
        })
    }
}

/// Verifies versions claimed by one office, against its CA certificate.
#[derive(Clone)]
pub struct OfficeVerifier {
    office: OfficeId,
    public_key: Vec<u8>,
}

impl OfficeVerifier {
    pub fn from_ca_cert(office: OfficeId, ca_cert_der: &[u8]) -> Result<Self, IdentityError> {
        Ok(Self {
            office,
            public_key: public_key_of(ca_cert_der)?,
        })
    }

    /// Checks a signature by this office's key over `bytes`.
    pub fn verify_bytes(&self, bytes: &[u8], signature: &[u8]) -> Result<(), IdentityError> {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &self.public_key)
            .verify(bytes, signature)
            .map_err(|_| {
                IdentityError::Verify(format!(
                    "signature does not verify against the office key of {}",
                    self.office
                ))
            })
    }

    /// Checks that `v` is signed by this office's key and that this office
    /// is its origin.
    pub fn verify(&self, v: &SignedVersion) -> Result<(), IdentityError> {
        if v.record.origin != self.office {
            return Err(IdentityError::Verify(format!(
                "record {} claims origin {}, expected {}",
                v.record.id, v.record.origin, self.office
            )));
        }
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &self.public_key)
            .verify(&v.canonical, &v.signature)
            .map_err(|_| {
                IdentityError::Verify(format!(
                    "signature on {} version {} does not verify against the office key of {}",
                    v.record.id, v.record.version, self.office
                ))
            })
    }
}

/// Signed versions for the tests of the layers above.
#[cfg(test)]
pub(crate) mod test_support {
    use bytes::Bytes;

    use super::OfficeSigner;
    use crate::domain::{Attachment, RecordId, RecordVersion, SignedVersion};
    use crate::identity::OfficeCa;

    /// A version of `id` signed by `ca`, with a small fixed body.
    pub(crate) fn signed(
        ca: &OfficeCa,
        id: &RecordId,
        version: u64,
        collection: &str,
        attachments: Vec<Attachment>,
    ) -> SignedVersion {
        OfficeSigner::new(ca)
            .sign(RecordVersion {
                id: id.clone(),
                version,
                origin: id.origin(),
                collection: collection.into(),
                kind: "report".into(),
                title: format!("{id} v{version}"),
                content_type: "text/plain".into(),
                labels: Default::default(),
                body: Bytes::from_static(b"body"),
                created_at_ms: 1,
                updated_at_ms: version,
                deleted: false,
                attachments,
                subjects: Vec::new(),
            })
            .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{RecordId, UserName};

    fn office() -> (OfficeCa, OfficeId) {
        let id = OfficeId::parse("phila-da").unwrap();
        let (ca, _) = OfficeCa::create(&id, &[], &UserName::parse("admin").unwrap()).unwrap();
        (ca, id)
    }

    fn record(origin: &OfficeId) -> RecordVersion {
        RecordVersion {
            id: RecordId::generate(origin, 1, [1; 10]),
            version: 1,
            origin: origin.clone(),
            collection: "c".into(),
            kind: "k".into(),
            title: "t".into(),
            content_type: "text/plain".into(),
            labels: Default::default(),
            body: Bytes::from_static(b"body"),
            created_at_ms: 1,
            updated_at_ms: 1,
            deleted: false,
            attachments: Vec::new(),
            subjects: Vec::new(),
        }
    }

    #[test]
    fn signatures_verify_against_the_office_ca_and_a_flipped_byte_fails() {
        let (ca, id) = office();
        let signed = OfficeSigner::new(&ca).sign(record(&id)).unwrap();
        let verifier = OfficeVerifier::from_ca_cert(id.clone(), &ca.cert_der).unwrap();
        verifier.verify(&signed).unwrap();

        for i in [0, signed.canonical.len() / 2, signed.canonical.len() - 1] {
            let mut bytes = signed.canonical.to_vec();
            bytes[i] ^= 0x01;
            let tampered = SignedVersion {
                canonical: Bytes::from(bytes),
                ..signed.clone()
            };
            assert!(verifier.verify(&tampered).is_err(), "flip at {i}");
        }
        let mut sig = signed.signature.to_vec();
        let last = sig.len() - 1;
        sig[last] ^= 0x01;
        let bad_sig = SignedVersion {
            signature: Bytes::from(sig),
            ..signed
        };
        assert!(verifier.verify(&bad_sig).is_err());
    }

    #[test]
    fn another_office_key_does_not_verify() {
        let (ca, id) = office();
        let (other, _) = office();
        let signed = OfficeSigner::new(&other).sign(record(&id)).unwrap();
        let verifier = OfficeVerifier::from_ca_cert(id, &ca.cert_der).unwrap();
        assert!(verifier.verify(&signed).is_err());
    }
}
