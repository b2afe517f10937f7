//! Certificates: creating an office (key, CA, node certificate, first admin)
//! and issuing user certificates from certificate signing requests.
//!
//! Every certificate a node issues names its office and what it is for in a
//! URI SAN, `urn:casemesh:<office>:node` or
//! `urn:casemesh:<office>:user:<role>:<name>`; [`super::caller`] reads it back.

use std::fmt;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer, pem::PemObject};

use super::IdentityError;
use crate::domain::{OfficeId, Role, UserName, record::sha256};

/// SHA-256 of a certificate's DER, shown as `sha256:<hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of(der: &[u8]) -> Self {
        Self(sha256(der))
    }

    /// Parses `sha256:<64 hex digits>` (the prefix is optional; `:` between
    /// byte pairs is tolerated, as some tools print them that way).
    pub fn parse(s: &str) -> Result<Self, IdentityError> {
        let hex_part = s.strip_prefix("sha256:").unwrap_or(s).replace(':', "");
        let bytes = hex::decode(hex_part.to_ascii_lowercase())
            .map_err(|e| IdentityError::parse(format!("fingerprint {s:?}"), e))?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| {
            IdentityError::parse(
                format!("fingerprint {s:?}"),
                "expected 32 bytes (64 hex digits)",
            )
        })?;
        Ok(Self(arr))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

/// The URI SAN of a node certificate.
pub fn node_uri(office: &OfficeId) -> String {
    format!("urn:casemesh:{office}:node")
}

/// The URI SAN of a user certificate.
pub fn user_uri(office: &OfficeId, role: Role, name: &UserName) -> String {
    format!("urn:casemesh:{office}:user:{role}:{name}")
}

/// Validity of issued certificates. Offices rotate by issuing new ones;
/// revocation is the deny list, not expiry.
const VALIDITY_DAYS: i64 = 3 * 365;

fn validity(params: &mut CertificateParams) {
    let now = rcgen::date_time_ymd(1970, 1, 1)
        + std::time::Duration::from_millis(crate::domain::now_ms());
    // Allow a day of clock skew between offices.
    params.not_before = now - time_days(1);
    params.not_after = now + time_days(VALIDITY_DAYS);
}

fn time_days(days: i64) -> std::time::Duration {
    std::time::Duration::from_secs(days.unsigned_abs() * 86_400)
}

fn random_serial() -> rcgen::SerialNumber {
    let mut bytes = [0u8; 16];
    crate::domain::random_bytes(&mut bytes);
    bytes[0] &= 0x7f; // keep it positive
    rcgen::SerialNumber::from_slice(&bytes)
}

fn leaf_params(
    office: &OfficeId,
    common_name: &str,
    uri: String,
    dns_or_ip: &[String],
    server: bool,
) -> Result<CertificateParams, IdentityError> {
    let mut params = CertificateParams::new(dns_or_ip.to_vec())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, office.as_str());
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.subject_alt_names.push(SanType::URI(
        uri.try_into()
            .map_err(|e| IdentityError::parse("certificate URI", e))?,
    ));
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if server {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    validity(&mut params);
    Ok(params)
}

/// Everything `casemesh init` creates, in PEM.
pub struct OfficeMaterial {
    pub office_key_pem: String,
    pub ca_cert_pem: String,
    pub fingerprint: Fingerprint,
    pub node_key_pem: String,
    pub node_cert_pem: String,
    pub admin_key_pem: String,
    pub admin_cert_pem: String,
}

/// The office CA: its certificate and the office key, able to issue
/// certificates and (through [`super::OfficeSigner`]) sign records.
pub struct OfficeCa {
    pub office: OfficeId,
    pub cert_der: CertificateDer<'static>,
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl OfficeCa {
    /// Creates a new office: office key, self-signed CA, node certificate
    /// for `hosts` (plus `localhost` and `127.0.0.1`) and a first admin.
    pub fn create(
        office: &OfficeId,
        hosts: &[String],
        admin: &UserName,
    ) -> Result<(Self, OfficeMaterial), IdentityError> {
        let office_key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, office.as_str());
        dn.push(DnType::CommonName, format!("casemesh office CA {office}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial());
        validity(&mut params);
        params.not_after += time_days(7 * 365);
        let ca_cert = params.self_signed(&office_key)?;
        let office_key_pem = office_key.serialize_pem();
        let ca = Self {
            office: office.clone(),
            cert_der: ca_cert.der().clone(),
            cert_pem: ca_cert.pem(),
            issuer: Issuer::new(params, office_key),
        };

        let mut names: Vec<String> = hosts.to_vec();
        for default in ["localhost", "127.0.0.1"] {
            if !names.iter().any(|h| h == default) {
                names.push(default.to_owned());
            }
        }
        let node_key = KeyPair::generate()?;
        let node_cert = ca.issue_node(&node_key, &names)?;
        let admin_key = KeyPair::generate()?;
        let admin_cert = ca.issue_user(admin, Role::Admin, &admin_key)?;

        let material = OfficeMaterial {
            office_key_pem,
            ca_cert_pem: ca.cert_pem.clone(),
            fingerprint: ca.fingerprint(),
            node_key_pem: node_key.serialize_pem(),
            node_cert_pem: node_cert,
            admin_key_pem: admin_key.serialize_pem(),
            admin_cert_pem: admin_cert,
        };
        Ok((ca, material))
    }

    /// Loads the CA from its certificate and the office key (both PEM).
    pub fn load(office: &OfficeId, cert_pem: &str, key_pem: &str) -> Result<Self, IdentityError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| IdentityError::parse("office key", e))?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| IdentityError::parse("office CA certificate", e))?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| IdentityError::parse("office CA certificate", e))?;
        let ca = Self {
            office: office.clone(),
            cert_der,
            cert_pem: cert_pem.to_owned(),
            issuer,
        };
        if ca.public_key_raw()? != ca.issuer.key().public_key_raw() {
            return Err(IdentityError::Verify(
                "the office key does not belong to the office CA certificate".into(),
            ));
        }
        Ok(ca)
    }

    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.cert_der)
    }

    /// The office public key as found in the CA certificate.
    pub fn public_key_raw(&self) -> Result<Vec<u8>, IdentityError> {
        public_key_of(&self.cert_der)
    }

    /// The office key, for signing records.
    pub fn key(&self) -> &KeyPair {
        self.issuer.key()
    }

    fn issue_node(&self, key: &KeyPair, names: &[String]) -> Result<String, IdentityError> {
        let params = leaf_params(
            &self.office,
            &format!("casemesh node {}", self.office),
            node_uri(&self.office),
            names,
            true,
        )?;
        Ok(params.signed_by(key, &self.issuer)?.pem())
    }

    /// Issues a user certificate for `public_key`; returns the PEM.
    pub fn issue_user(
        &self,
        name: &UserName,
        role: Role,
        public_key: &impl rcgen::PublicKeyData,
    ) -> Result<String, IdentityError> {
        let params = leaf_params(
            &self.office,
            name.as_str(),
            user_uri(&self.office, role, name),
            &[],
            false,
        )?;
        Ok(params.signed_by(public_key, &self.issuer)?.pem())
    }

    /// Issues a user certificate for the key in a PKCS#10 request (DER),
    /// whose signature must verify. The request's subject is ignored.
    pub fn issue_user_from_csr(
        &self,
        name: &UserName,
        role: Role,
        csr_der: &[u8],
    ) -> Result<String, IdentityError> {
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(|e| IdentityError::parse("certificate signing request", e))?;
        self.issue_user(name, role, &csr.public_key)
    }
}

/// A certificate signing request for a fresh key (what `casemesh user issue`
/// sends). Returns the key (PEM) and the request (DER).
pub fn new_csr() -> Result<(String, Vec<u8>), IdentityError> {
    let key = KeyPair::generate()?;
    let csr = CertificateParams::default().serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.der().to_vec()))
}

/// The raw public key (for P-256, the uncompressed point) of a certificate.
pub fn public_key_of(cert_der: &[u8]) -> Result<Vec<u8>, IdentityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| IdentityError::parse("certificate", e))?;
    Ok(cert.public_key().subject_public_key.data.to_vec())
}

/// When a certificate stops being valid (its notAfter), in milliseconds
/// since the Unix epoch.
pub fn expires_at_ms(der: &[u8]) -> Result<u64, IdentityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| IdentityError::parse("certificate", e))?;
    let secs = cert.validity().not_after.timestamp();
    // An end before 1970 is long past: 1 ms, not 0 (which means none).
    Ok(u64::try_from(secs).unwrap_or(0).saturating_mul(1000).max(1))
}

/// How far ahead an expiring certificate is warned about.
pub const EXPIRY_WARNING_DAYS: u64 = 30;

/// A warning when the certificate `what` has expired or expires within
/// [`EXPIRY_WARNING_DAYS`] of `now_ms`.
pub fn expiry_warning(what: &str, expires_at_ms: u64, now_ms: u64) -> Option<String> {
    let when = crate::domain::format_time(expires_at_ms);
    if expires_at_ms == 0 {
        return None;
    }
    if expires_at_ms <= now_ms {
        return Some(format!("{what} expired at {when}"));
    }
    let days = (expires_at_ms - now_ms) / 86_400_000;
    (days < EXPIRY_WARNING_DAYS).then(|| format!("{what} expires at {when}, in {days} days"))
}

/// Whether `key_pem` is the private key of the certificate `cert_der`.
pub fn key_matches(key_pem: &str, cert_der: &[u8]) -> Result<bool, IdentityError> {
    let key = KeyPair::from_pem(key_pem).map_err(|e| IdentityError::parse("private key", e))?;
    Ok(key.public_key_raw() == public_key_of(cert_der)?)
}

/// Whether `cert_der` carries a valid signature by the CA `ca_der`.
pub fn is_signed_by(cert_der: &[u8], ca_der: &[u8]) -> Result<bool, IdentityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| IdentityError::parse("certificate", e))?;
    let (_, ca) = x509_parser::parse_x509_certificate(ca_der)
        .map_err(|e| IdentityError::parse("CA certificate", e))?;
    Ok(cert.verify_signature(Some(ca.public_key())).is_ok())
}

/// Reads every certificate in a PEM file's contents.
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| IdentityError::parse("certificate PEM", e))?;
    if certs.is_empty() {
        return Err(IdentityError::parse(
            "certificate PEM",
            "no certificate found",
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_print_and_parse() {
        let fp = Fingerprint([0xab; 32]);
        let s = fp.to_string();
        assert!(s.starts_with("sha256:abab"));
        assert_eq!(Fingerprint::parse(&s).unwrap(), fp);
        assert_eq!(
            Fingerprint::parse(&s.to_uppercase().replace("SHA256:", "")).unwrap(),
            fp
        );
        assert!(Fingerprint::parse("sha256:abcd").is_err());
    }

    #[test]
    fn a_created_office_reloads_from_its_pem_files() {
        let office = OfficeId::parse("test-office").unwrap();
        let admin = UserName::parse("admin").unwrap();
        let (ca, m) = OfficeCa::create(&office, &["node.example".into()], &admin).unwrap();
        let again = OfficeCa::load(&office, &m.ca_cert_pem, &m.office_key_pem).unwrap();
        assert_eq!(again.fingerprint(), ca.fingerprint());
        assert_eq!(m.fingerprint, ca.fingerprint());

        let (other, om) = OfficeCa::create(&office, &[], &admin).unwrap();
        assert_ne!(other.fingerprint(), ca.fingerprint());
        assert!(OfficeCa::load(&office, &m.ca_cert_pem, &om.office_key_pem).is_err());
    }

    #[test]
    fn users_are_issued_from_a_csr_without_the_node_seeing_their_key() {
        let office = OfficeId::parse("test-office").unwrap();
        let admin = UserName::parse("admin").unwrap();
        let (ca, _) = OfficeCa::create(&office, &[], &admin).unwrap();
        let (_key_pem, csr) = new_csr().unwrap();
        let name = UserName::parse("alice").unwrap();
        let pem = ca.issue_user_from_csr(&name, Role::Staff, &csr).unwrap();
        assert!(pem.contains("BEGIN CERTIFICATE"));
        assert!(
            ca.issue_user_from_csr(&name, Role::Staff, b"not a csr")
                .is_err()
        );
    }
}
