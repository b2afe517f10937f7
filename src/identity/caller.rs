//! Turning a verified certificate into a [`Caller`].
//!
//! The only source of identity is the certificate chain that rustls
//! verified; the URI SAN names office, kind, role and user.

use std::fmt;

use super::{Fingerprint, IdentityError};
use crate::domain::{OfficeId, Role, UserName};

/// What a certificate says it is, read from its `urn:casemesh:` URI SAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertIdentity {
    /// A node of `office`.
    Node { office: OfficeId },
    /// A user of `office` with a role.
    User {
        office: OfficeId,
        role: Role,
        name: UserName,
    },
}

impl CertIdentity {
    pub fn office(&self) -> &OfficeId {
        match self {
            CertIdentity::Node { office } | CertIdentity::User { office, .. } => office,
        }
    }

    /// Parses the identity out of a certificate (DER). A certificate with no
    /// casemesh URI, or with more than one, is refused.
    pub fn of_cert(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| IdentityError::parse("client certificate", e))?;
        let mut found = None;
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::URI(uri) = name {
                    if uri.starts_with("urn:casemesh:") {
                        if found.is_some() {
                            return Err(IdentityError::Verify(
                                "certificate carries more than one casemesh identity".into(),
                            ));
                        }
                        found = Some(Self::parse_uri(uri)?);
                    }
                }
            }
        }
        found
            .ok_or_else(|| IdentityError::Verify("certificate carries no casemesh identity".into()))
    }

    fn parse_uri(uri: &str) -> Result<Self, IdentityError> {
        let bad = || IdentityError::parse("certificate identity", uri);
        let rest = uri.strip_prefix("urn:casemesh:").ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split(':').collect();
        match parts.as_slice() {
            [office, "node"] => Ok(Self::Node {
                office: OfficeId::parse(office).map_err(|_| bad())?,
            }),
            [office, "user", role, name] => Ok(Self::User {
                office: OfficeId::parse(office).map_err(|_| bad())?,
                role: role.parse().map_err(|_| bad())?,
                name: UserName::parse(name).map_err(|_| bad())?,
            }),
            _ => Err(bad()),
        }
    }
}

/// An authenticated caller, as handlers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A user of this office.
    Local {
        name: UserName,
        role: Role,
        fingerprint: Fingerprint,
    },
    /// The node of a pinned peer office.
    PeerNode {
        office: OfficeId,
        fingerprint: Fingerprint,
    },
}

impl Caller {
    pub fn fingerprint(&self) -> &Fingerprint {
        match self {
            Caller::Local { fingerprint, .. } | Caller::PeerNode { fingerprint, .. } => fingerprint,
        }
    }

    pub fn role(&self) -> Option<Role> {
        match self {
            Caller::Local { role, .. } => Some(*role),
            Caller::PeerNode { .. } => None,
        }
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Local { name, role, .. } => write!(f, "{role}:{name}"),
            Caller::PeerNode { office, .. } => write!(f, "peer:{office}"),
        }
    }
}
