//! Users: issuing and revoking the certificates of an office's staff and
//! admins. The store keeps every certificate issued; the trust store mirrors
//! it so the TLS layer refuses a revoked certificate at once.

use std::collections::HashMap;
use std::sync::Arc;

use rustls_pki_types::{CertificateDer, pem::PemObject};

use crate::domain::audit::{Draft, Target};
use crate::domain::{Role, UserName, now_ms};
use crate::error::{Error, Result};
use crate::identity::tls::{IssuedUser, TrustStore};
use crate::identity::{Fingerprint, IdentityError, OfficeCa};
use crate::service::Call;
use crate::store::encoding::UserRecord;
use crate::store::{Store, UserEntry};

/// A freshly issued certificate.
pub struct Issued {
    pub entry: UserEntry,
    pub certificate_pem: String,
}

pub struct UserService {
    store: Arc<Store>,
    ca: Arc<OfficeCa>,
    trust: Arc<TrustStore>,
    /// Issues and revocations one at a time: each decides on what the
    /// store holds (is the name taken? is this the last admin?) and must
    /// not race another.
    changes: tokio::sync::Mutex<()>,
}

/// Stores a user certificate that was issued (by `init`, or by the service
/// below). Not yet durable: callers commit.
pub fn record_issued(
    store: &Store,
    name: UserName,
    role: Role,
    cert_pem: &str,
    audit: &[Draft],
) -> Result<UserEntry> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| IdentityError::parse("issued certificate", e))?;
    let entry = UserEntry {
        fingerprint: Fingerprint::of(&der),
        user: UserRecord {
            name,
            role,
            issued_at_ms: now_ms(),
            revoked_at_ms: 0,
            cert_der: der.to_vec(),
        },
    };
    store.insert_user(&entry, audit)?;
    Ok(entry)
}

/// The trust store's view of every issued user.
pub fn issued_users(store: &Store) -> Result<HashMap<Fingerprint, IssuedUser>> {
    Ok(store
        .users()?
        .into_iter()
        .map(|e| (e.fingerprint, issued(&e.user)))
        .collect())
}

fn issued(u: &UserRecord) -> IssuedUser {
    IssuedUser {
        name: u.name.clone(),
        role: u.role,
        revoked: u.revoked_at_ms != 0,
    }
}

impl UserService {
    pub fn new(store: Arc<Store>, ca: Arc<OfficeCa>, trust: Arc<TrustStore>) -> Self {
        Self {
            store,
            ca,
            trust,
            changes: tokio::sync::Mutex::new(()),
        }
    }

    pub async fn issue(
        &self,
        name: UserName,
        role: Role,
        csr_der: &[u8],
        call: &Call,
    ) -> Result<Issued> {
        let _one_at_a_time = self.changes.lock().await;
        // Checked again in the store's transaction; this spares signing a
        // certificate that would be refused.
        if let Some(current) = self.store.user_by_name(name.as_str())? {
            if current.user.revoked_at_ms == 0 {
                return Err(Error::UserExists(name.to_string()));
            }
        }
        let pem = self
            .ca
            .issue_user_from_csr(&name, role, csr_der)
            .map_err(|e| match e {
                IdentityError::Parse { what, reason } => Error::BadCsr { what, reason },
                other => Error::Identity(other),
            })?;
        let target = Target::detail(format!("user {name} ({role})"));
        let entry = record_issued(&self.store, name, role, &pem, &[call.entry(target)])?;
        self.store.commit().await?;
        self.trust
            .set_user(entry.fingerprint.clone(), issued(&entry.user))?;
        Ok(Issued {
            entry,
            certificate_pem: pem,
        })
    }

    /// Revokes a user's current certificate (only if it is `expected`,
    /// when given). Takes effect for new handshakes and for calls on
    /// connections that are already open.
    pub async fn revoke(
        &self,
        name: &str,
        expected: Option<&Fingerprint>,
        call: &Call,
    ) -> Result<UserEntry> {
        let _one_at_a_time = self.changes.lock().await;
        let target = self.store.user_by_name(name)?;
        if let (Some(expected), Some(t)) = (expected, &target) {
            if &t.fingerprint != expected {
                return Err(Error::NotCurrentCertificate {
                    name: name.to_owned(),
                    current: t.fingerprint.clone(),
                    expected: expected.clone(),
                });
            }
        }
        // Revoking the last valid admin would leave nobody able to manage
        // the office.
        let users = self.store.users()?;
        if let Some(t) = target.filter(|t| t.user.role == Role::Admin && t.user.revoked_at_ms == 0)
        {
            let other_admins = users
                .iter()
                .filter(|u| u.user.role == Role::Admin && u.user.revoked_at_ms == 0)
                .filter(|u| u.fingerprint != t.fingerprint)
                .count();
            if other_admins == 0 {
                return Err(Error::LastAdmin(name.to_owned()));
            }
        }
        let entry = self
            .store
            .revoke_user(
                name,
                now_ms(),
                &[call.entry(Target::detail(format!("user {name}")))],
            )?
            .ok_or_else(|| Error::UserNotFound(name.to_owned()))?;
        self.store.commit().await?;
        self.trust
            .set_user(entry.fingerprint.clone(), issued(&entry.user))?;
        Ok(entry)
    }

    pub fn list(&self) -> Result<Vec<UserEntry>> {
        Ok(self.store.users()?)
    }
}
