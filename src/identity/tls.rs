//! rustls configurations (TLS 1.3 only, client certificates always) and the
//! trust store that decides, during the handshake, which client certificates
//! a node accepts.
//!
//! A client certificate is accepted when it chains to the office CA and is a
//! user certificate this node issued and has not revoked, or when it chains
//! to a pinned peer office CA and is that office's node certificate. Anything
//! else fails the handshake. The trust store changes at run time (new users,
//! revocations, peers) without a restart.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime, pem::PemObject};

use super::{Caller, CertIdentity, Fingerprint, IdentityError};
use crate::domain::{OfficeId, Role, UserName};

/// The one crypto provider casemesh uses (ring), passed explicitly so that
/// no process-wide default is needed.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What the node knows about a user certificate it issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedUser {
    pub name: UserName,
    pub role: Role,
    pub revoked: bool,
}

/// A caller admitted at the handshake, and the CA that vouched for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    pub caller: Caller,
    pub ca: Fingerprint,
    /// When the caller's certificate expires (ms since the epoch): a call
    /// on a connection that outlives it is refused.
    pub not_after_ms: u64,
}

/// An office CA that a node trusts.
#[derive(Clone)]
struct TrustedCa {
    office: OfficeId,
    der: CertificateDer<'static>,
}

struct Snapshot {
    own: TrustedCa,
    peers: Vec<TrustedCa>,
    users: HashMap<Fingerprint, IssuedUser>,
    webpki: Arc<dyn ClientCertVerifier>,
}

/// The node's live view of whom to trust.
pub struct TrustStore {
    provider: Arc<CryptoProvider>,
    inner: RwLock<Arc<Snapshot>>,
}

impl std::fmt::Debug for TrustStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TrustStore")
    }
}

fn build_webpki(
    provider: &Arc<CryptoProvider>,
    own: &TrustedCa,
    peers: &[TrustedCa],
) -> Result<Arc<dyn ClientCertVerifier>, IdentityError> {
    let mut roots = RootCertStore::empty();
    for ca in std::iter::once(own).chain(peers) {
        roots.add(ca.der.clone())?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| IdentityError::Verify(format!("building the client verifier: {e}")))
}

impl TrustStore {
    pub fn new(
        own_office: OfficeId,
        own_ca: CertificateDer<'static>,
        users: HashMap<Fingerprint, IssuedUser>,
    ) -> Result<Self, IdentityError> {
        let provider = provider();
        let own = TrustedCa {
            office: own_office,
            der: own_ca,
        };
        let webpki = build_webpki(&provider, &own, &[])?;
        Ok(Self {
            provider,
            inner: RwLock::new(Arc::new(Snapshot {
                own,
                peers: Vec::new(),
                users,
                webpki,
            })),
        })
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        match self.inner.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn update(
        &self,
        f: impl FnOnce(&Snapshot) -> Result<Snapshot, IdentityError>,
    ) -> Result<(), IdentityError> {
        let mut guard = match self.inner.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let next = f(&guard)?;
        *guard = Arc::new(next);
        Ok(())
    }

    /// Records a newly issued, or newly revoked, user certificate.
    pub fn set_user(
        &self,
        fingerprint: Fingerprint,
        user: IssuedUser,
    ) -> Result<(), IdentityError> {
        self.update(|s| {
            let mut users = s.users.clone();
            users.insert(fingerprint, user);
            Ok(Snapshot {
                own: s.own.clone(),
                peers: s.peers.clone(),
                users,
                webpki: s.webpki.clone(),
            })
        })
    }

    /// Replaces the set of pinned peer office CAs.
    pub fn set_peers(
        &self,
        peers: Vec<(OfficeId, CertificateDer<'static>)>,
    ) -> Result<(), IdentityError> {
        let provider = self.provider.clone();
        self.update(|s| {
            let peers: Vec<TrustedCa> = peers
                .into_iter()
                .map(|(office, der)| TrustedCa { office, der })
                .collect();
            let webpki = build_webpki(&provider, &s.own, &peers)?;
            Ok(Snapshot {
                own: s.own.clone(),
                peers,
                users: s.users.clone(),
                webpki,
            })
        })
    }

    /// Decides who the holder of a chain-verified client certificate is, or
    /// why it is refused. Called once per connection, during the handshake;
    /// each call then only needs [`TrustStore::recheck`].
    pub fn classify(&self, leaf: &CertificateDer<'_>) -> Result<Caller, IdentityError> {
        self.admit(leaf).map(|a| a.caller)
    }

    /// [`TrustStore::classify`], keeping which CA admitted the certificate.
    pub fn admit(&self, leaf: &CertificateDer<'_>) -> Result<Admission, IdentityError> {
        let snap = self.snapshot();
        let issuer = issuing_ca(&snap, leaf)?;
        let ca = Fingerprint::of(&issuer.der);
        let caller = Self::classify_in(&snap, issuer, leaf)?;
        let not_after_ms = super::pki::expires_at_ms(leaf)?;
        Ok(Admission {
            caller,
            ca,
            not_after_ms,
        })
    }

    /// Checks, cheaply and on every call, that an admitted caller still may
    /// connect: a local user not revoked since, a peer still pinned with the
    /// same CA.
    pub fn recheck(&self, a: &Admission) -> Result<(), IdentityError> {
        if crate::domain::now_ms() > a.not_after_ms {
            return Err(IdentityError::Verify(format!(
                "the certificate of {} expired at {}",
                a.caller,
                crate::domain::format_time(a.not_after_ms)
            )));
        }
        let snap = self.snapshot();
        match &a.caller {
            Caller::Local { name, .. } => match snap.users.get(a.caller.fingerprint()) {
                Some(u) if !u.revoked && Fingerprint::of(&snap.own.der) == a.ca => Ok(()),
                Some(u) if u.revoked => Err(IdentityError::Revoked(name.to_string())),
                _ => Err(IdentityError::Verify(format!(
                    "user {name} is no longer known"
                ))),
            },
            Caller::PeerNode { office, .. } => {
                if snap
                    .peers
                    .iter()
                    .any(|p| &p.office == office && Fingerprint::of(&p.der) == a.ca)
                {
                    Ok(())
                } else {
                    Err(IdentityError::Verify(format!(
                        "office {office} is no longer a pinned peer"
                    )))
                }
            }
        }
    }

    fn classify_in(
        snap: &Snapshot,
        issuer: &TrustedCa,
        leaf: &CertificateDer<'_>,
    ) -> Result<Caller, IdentityError> {
        let identity = CertIdentity::of_cert(leaf)?;
        if identity.office() != &issuer.office {
            return Err(IdentityError::Verify(format!(
                "certificate names office {} but was issued by the CA of {}",
                identity.office(),
                issuer.office
            )));
        }
        let fingerprint = Fingerprint::of(leaf);
        let is_own = issuer.office == snap.own.office;
        match identity {
            CertIdentity::User { role, name, .. } if is_own => match snap.users.get(&fingerprint) {
                Some(u) if u.revoked => Err(IdentityError::Revoked(name.to_string())),
                Some(u) if u.role == role && u.name == name => Ok(Caller::Local {
                    name,
                    role,
                    fingerprint,
                }),
                _ => Err(IdentityError::Verify(format!(
                    "certificate for user {name} was not issued by this node"
                ))),
            },
            CertIdentity::Node { .. } if is_own => Err(IdentityError::Verify(
                "this office's own node certificate is not a user certificate".into(),
            )),
            CertIdentity::Node { office } => Ok(Caller::PeerNode {
                office,
                fingerprint,
            }),
            CertIdentity::User { office, .. } => Err(IdentityError::Verify(format!(
                "a user certificate of peer office {office} is not accepted here; only its node may connect"
            ))),
        }
    }

    /// The server side of TLS: a verifier that consults this store.
    pub fn client_verifier(self: &Arc<Self>) -> Arc<dyn ClientCertVerifier> {
        Arc::new(StoreVerifier {
            store: self.clone(),
        })
    }
}

fn issuing_ca<'s>(
    snap: &'s Snapshot,
    leaf: &CertificateDer<'_>,
) -> Result<&'s TrustedCa, IdentityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| IdentityError::parse("client certificate", e))?;
    for ca in std::iter::once(&snap.own).chain(&snap.peers) {
        let Ok((_, ca_cert)) = x509_parser::parse_x509_certificate(&ca.der) else {
            continue;
        };
        if cert.verify_signature(Some(ca_cert.public_key())).is_ok() {
            return Ok(ca);
        }
    }
    Err(IdentityError::Verify(
        "certificate was not issued by a trusted office CA".into(),
    ))
}

#[derive(Debug)]
struct StoreVerifier {
    store: Arc<TrustStore>,
}

impl ClientCertVerifier for StoreVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints are optional; clients here hold exactly one certificate.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let snap = self.store.snapshot();
        snap.webpki
            .verify_client_cert(end_entity, intermediates, now)?;
        self.store.classify(end_entity).map_err(|e| {
            tracing::warn!(reason = %e, "refused client certificate");
            // The alert tells the client why, without details: revoked, or
            // not a certificate this node accepts (`access_denied`).
            rustls::Error::InvalidCertificate(match e {
                IdentityError::Revoked(_) => rustls::CertificateError::Revoked,
                _ => rustls::CertificateError::ApplicationVerificationFailure,
            })
        })?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.store
            .snapshot()
            .webpki
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.store
            .snapshot()
            .webpki
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.store.snapshot().webpki.supported_verify_schemes()
    }
}

/// A certificate chain and its private key, as PEM text.
pub struct PemIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl PemIdentity {
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, IdentityError> {
        let chain = super::pki::certs_from_pem(cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| IdentityError::parse("private key PEM", e))?;
        Ok(Self { chain, key })
    }
}

const ALPN_H2: &[u8] = b"h2";

/// The node's TLS server configuration (gRPC over HTTP/2).
pub fn server_config(
    identity: PemIdentity,
    trust: &Arc<TrustStore>,
) -> Result<ServerConfig, IdentityError> {
    server_config_for(identity, trust, ALPN_H2)
}

/// The TLS server configuration of the node's web listeners (the status
/// page, metrics): the same certificates and client verification, over
/// HTTP/1.1.
pub fn web_server_config(
    identity: PemIdentity,
    trust: &Arc<TrustStore>,
) -> Result<ServerConfig, IdentityError> {
    server_config_for(identity, trust, b"http/1.1")
}

fn server_config_for(
    identity: PemIdentity,
    trust: &Arc<TrustStore>,
    alpn: &[u8],
) -> Result<ServerConfig, IdentityError> {
    let mut cfg = ServerConfig::builder_with_provider(trust.provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(trust.client_verifier())
        .with_single_cert(identity.chain, identity.key)?;
    cfg.alpn_protocols = vec![alpn.to_vec()];
    Ok(cfg)
}

/// A client configuration that trusts exactly `roots` (an office CA) and
/// presents `identity`.
pub fn client_config(
    roots: &[CertificateDer<'static>],
    identity: PemIdentity,
) -> Result<ClientConfig, IdentityError> {
    let mut store = RootCertStore::empty();
    for r in roots {
        store.add(r.clone())?;
    }
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(store)
        .with_client_auth_cert(identity.chain, identity.key)?;
    cfg.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::OfficeCa;
    use crate::identity::pki::certs_from_pem;

    /// A store trusting a new office's CA, with one user issued by it;
    /// returns the store and the user's certificate.
    fn store_with_user() -> (TrustStore, CertificateDer<'static>) {
        let office = OfficeId::parse("phila-da").unwrap();
        let admin = UserName::parse("admin").unwrap();
        let (ca, _) = OfficeCa::create(&office, &[], &admin).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let name = UserName::parse("clerk").unwrap();
        let pem = ca.issue_user(&name, Role::Staff, &key).unwrap();
        let leaf = certs_from_pem(pem.as_bytes()).unwrap().remove(0);
        let store = TrustStore::new(office, ca.cert_der.clone(), HashMap::new()).unwrap();
        let user = IssuedUser {
            name,
            role: Role::Staff,
            revoked: false,
        };
        store.set_user(Fingerprint::of(&leaf), user).unwrap();
        (store, leaf)
    }

    #[test]
    fn a_call_after_the_certificate_expired_is_refused() {
        let (store, leaf) = store_with_user();
        let admitted = store.admit(&leaf).unwrap();
        assert!(admitted.not_after_ms > crate::domain::now_ms());
        store.recheck(&admitted).expect("control: valid now");
        // The same connection, once the certificate's time is past.
        let expired = Admission {
            not_after_ms: crate::domain::now_ms() - 1,
            ..admitted
        };
        let refused = store.recheck(&expired).unwrap_err();
        assert!(refused.to_string().contains("expired"), "{refused}");
    }
}
