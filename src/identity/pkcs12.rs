//! A user's certificate, private key and office CA in one
//! password-protected PKCS#12 file (`.p12`), the form browsers import a
//! client certificate in.
//!
//! Owns the encoding only; where the file goes and where its password comes
//! from are the CLI's business. Nothing here writes an unprotected key:
//! there is no way to ask for an empty password or for no encryption.
//!
//! The file uses what current browsers, OpenSSL 3 and Node.js read, and
//! nothing older: PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) for the key bag
//! and for the certificates, and an HMAC-SHA256 MAC over the whole.

use p12_keystore::{
    Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, PrivateKey,
    PrivateKeyChain,
};
use rcgen::KeyPair;

use super::IdentityError;
use super::pki::{Fingerprint, certs_from_pem, key_matches};

/// Iterations of PBKDF2 (encryption) and of the PKCS#12 key derivation
/// (the MAC). Java's default for new PKCS#12 files, which browsers and
/// OpenSSL read without complaint (OpenSSL's own default is 2048); the
/// password's length protects the key far more than this count does.
pub const ITERATIONS: u32 = 10_000;

/// Encodes the user certificate `cert_pem`, its key `key_pem` (PKCS#8 PEM,
/// as `casemesh user issue` writes it) and the office CA `ca_pem` as a
/// PKCS#12 file encrypted with `password`. Every bag's friendly name (the
/// nickname browsers list it under) is its certificate's subject, the
/// key's that of its certificate.
///
/// Refuses an empty password, and a key that is not the certificate's: a
/// file a browser would import but could never use.
pub fn user_pkcs12(
    cert_pem: &str,
    key_pem: &str,
    ca_pem: &str,
    password: &str,
) -> Result<Vec<u8>, IdentityError> {
    if password.is_empty() {
        return Err(IdentityError::Pkcs12(
            "an empty password would leave the private key readable by anyone".into(),
        ));
    }
    let cert_der = first_cert(cert_pem, "user certificate")?;
    let ca_der = first_cert(ca_pem, "office CA certificate")?;
    if !key_matches(key_pem, &cert_der)? {
        return Err(IdentityError::Verify(
            "the private key is not the one the user certificate was issued for".into(),
        ));
    }
    let key_der = KeyPair::from_pem(key_pem)
        .map_err(|e| IdentityError::parse("private key", e))?
        .serialize_der();
    let key = PrivateKey::from_der(&key_der).map_err(|e| pkcs12_error("private key", e))?;
    let cert = Certificate::from_der(&cert_der).map_err(|e| pkcs12_error("certificate", e))?;
    let ca = Certificate::from_der(&ca_der).map_err(|e| pkcs12_error("CA certificate", e))?;
    // The local key id ties the key bag to its certificate's bag; any
    // bytes do, and the fingerprint is unique to this certificate.
    let local_key_id = Fingerprint::of(&cert_der).0.to_vec();
    let label = cert.subject().to_owned();
    let mut store = KeyStore::new();
    store.add_entry(
        &label,
        KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(local_key_id, key, [cert, ca])),
    );
    store
        .writer(password)
        .encryption_algorithm(EncryptionAlgorithm::PbeWithHmacSha256AndAes256)
        .encryption_iterations(ITERATIONS)
        .mac_algorithm(MacAlgorithm::HmacSha256)
        .mac_iterations(ITERATIONS)
        .write()
        .map_err(|e| pkcs12_error("the file", e))
}

fn first_cert(pem: &str, what: &str) -> Result<Vec<u8>, IdentityError> {
    let mut certs = certs_from_pem(pem.as_bytes()).map_err(|e| match e {
        IdentityError::Parse { reason, .. } => IdentityError::parse(what, reason),
        other => other,
    })?;
    Ok(certs.swap_remove(0).to_vec())
}

fn pkcs12_error(what: &str, e: p12_keystore::error::Error) -> IdentityError {
    IdentityError::Pkcs12(format!("encoding {what} failed: {e}"))
}

#[cfg(test)]
mod tests {
    use p12_keystore::Pkcs12ImportPolicy;

    use super::*;
    use crate::domain::{OfficeId, Role, UserName};
    use crate::identity::OfficeCa;
    use crate::identity::pki::new_csr;

    fn issued() -> (String, String, String) {
        let office = OfficeId::parse("test-office").unwrap();
        let admin = UserName::parse("admin").unwrap();
        let (ca, m) = OfficeCa::create(&office, &[], &admin).unwrap();
        let (key_pem, csr) = new_csr().unwrap();
        let name = UserName::parse("alice").unwrap();
        let cert_pem = ca.issue_user_from_csr(&name, Role::Auditor, &csr).unwrap();
        (cert_pem, key_pem, m.ca_cert_pem)
    }

    #[test]
    fn the_file_holds_the_key_its_certificate_and_the_ca() {
        let (cert, key, ca) = issued();
        let p12 = user_pkcs12(&cert, &key, &ca, "correct horse").unwrap();
        let store =
            KeyStore::from_pkcs12(&p12, "correct horse", Pkcs12ImportPolicy::Strict).unwrap();
        let (alias, chain) = store.private_key_chain().unwrap();
        assert_eq!(alias, "O=test-office, CN=alice");
        let der = |pem: &str| first_cert(pem, "test").unwrap();
        let inside: Vec<&[u8]> = chain.certs().iter().map(|c| c.as_der()).collect();
        assert_eq!(inside, [der(&cert).as_slice(), der(&ca).as_slice()]);
        let key_der = KeyPair::from_pem(&key).unwrap().serialize_der();
        assert_eq!(chain.key().as_der(), key_der.as_slice());

        assert!(
            KeyStore::from_pkcs12(&p12, "wrong horse", Pkcs12ImportPolicy::Strict).is_err(),
            "the MAC fails with another password"
        );
    }

    #[test]
    fn an_empty_password_or_a_key_of_another_certificate_is_refused() {
        let (cert, key, ca) = issued();
        let empty = user_pkcs12(&cert, &key, &ca, "").unwrap_err();
        assert!(empty.to_string().contains("empty password"), "{empty}");

        let (_, other_key, _) = issued();
        let wrong = user_pkcs12(&cert, &other_key, &ca, "pw").unwrap_err();
        assert!(wrong.to_string().contains("not the one"), "{wrong}");
    }
}
