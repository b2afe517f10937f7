//! Who is who: the office key and CA, the certificates a node issues, record
//! signing and verification, the rustls configurations, and how a verified
//! certificate becomes a [`Caller`].
//!
//! Identity comes from verified certificates only, never from message fields.

pub mod caller;
pub mod pkcs12;
pub mod pki;
pub mod signing;
pub mod tls;

pub use caller::{Caller, CertIdentity};
pub use pki::{Fingerprint, OfficeCa, OfficeMaterial};
pub use signing::{OfficeSigner, OfficeVerifier};

/// Why an identity operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("could not parse {what}: {reason}")]
    Parse { what: String, reason: String },
    #[error("TLS configuration failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("signing failed: {0}")]
    Sign(String),
    /// A PKCS#12 file (`.p12`) could not be made; says which part failed.
    #[error("could not make the PKCS#12 file: {0}")]
    Pkcs12(String),
    #[error("{0}")]
    Verify(String),
    /// A user certificate this office issued and has since revoked; the
    /// TLS layer answers it with a `certificate_revoked` alert.
    #[error("the certificate of user {0} has been revoked")]
    Revoked(String),
}

impl IdentityError {
    pub(crate) fn parse(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        IdentityError::Parse {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}
