//! Users: every certificate the node issued, and whether it is revoked.

use super::encoding::{AuditHead, UserRecord};
use super::trees::tree_set;
use super::tx::{abort, unwrap_tx};
use super::{Result, Store, StoreError};
use crate::domain::UserName;
use crate::domain::audit::{Draft, Entry};
use crate::identity::Fingerprint;

tree_set! {
    /// Issuing a user certificate.
    IssueTx {
        users: Fingerprint => UserRecord,
        user_names: UserName => Fingerprint,
        audit_entries: u64 => Entry,
        audit_head: str => AuditHead,
        audit_terms: super::keys::AuditTerm => (),
    }
}

tree_set! {
    /// Revoking a user certificate.
    RevokeTx {
        users: Fingerprint => UserRecord,
        audit_entries: u64 => Entry,
        audit_head: str => AuditHead,
        audit_terms: super::keys::AuditTerm => (),
    }
}

/// A stored user with its certificate's fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    pub fingerprint: Fingerprint,
    pub user: UserRecord,
}

impl Store {
    /// Stores a newly issued user certificate. A name is taken while a
    /// valid (unrevoked) certificate carries it; once revoked, the name may
    /// be issued again, and the revoked certificate stays on record. `audit`
    /// is appended in the same transaction.
    pub fn insert_user(&self, entry: &UserEntry, audit: &[Draft]) -> Result<()> {
        self.check_space()?;
        let name = entry.user.name.as_str();
        unwrap_tx(IssueTx::run(&self.trees, |t| {
            if let Some(current) = t.user_names.get(name)? {
                let valid = t
                    .users
                    .get(&current)?
                    .is_some_and(|user| user.revoked_at_ms == 0);
                if valid {
                    return Err(abort(StoreError::UserExists(name.to_owned())));
                }
            }
            t.user_names.insert(name, &entry.fingerprint)?;
            t.users.insert(&entry.fingerprint, &entry.user)?;
            super::audit::append_tx(
                &t.audit_entries,
                &t.audit_head,
                &t.audit_terms,
                &self.office,
                audit,
            )?;
            Ok(())
        }))?;
        self.audit_appended();
        Ok(())
    }

    pub fn user_by_name(&self, name: &str) -> Result<Option<UserEntry>> {
        let Some(fingerprint) = self.trees.user_names.get(name)? else {
            return Ok(None);
        };
        Ok(self
            .trees
            .users
            .get(&fingerprint)?
            .map(|user| UserEntry { fingerprint, user }))
    }

    /// Marks a user revoked at `at_ms` and appends `audit`, in one
    /// transaction; returns the updated entry.
    pub fn revoke_user(
        &self,
        name: &str,
        at_ms: u64,
        audit: &[Draft],
    ) -> Result<Option<UserEntry>> {
        let Some(mut entry) = self.user_by_name(name)? else {
            return Ok(None);
        };
        if entry.user.revoked_at_ms == 0 {
            entry.user.revoked_at_ms = at_ms;
        }
        unwrap_tx(RevokeTx::run(&self.trees, |t| {
            t.users.insert(&entry.fingerprint, &entry.user)?;
            super::audit::append_tx(
                &t.audit_entries,
                &t.audit_head,
                &t.audit_terms,
                &self.office,
                audit,
            )?;
            Ok(())
        }))?;
        self.audit_appended();
        Ok(Some(entry))
    }

    /// Every certificate ever issued, revoked ones included, ordered by
    /// user name and then by when it was issued.
    pub fn users(&self) -> Result<Vec<UserEntry>> {
        let mut out = self
            .trees
            .users
            .iter()
            .map(|kv| kv.map(|(fingerprint, user)| UserEntry { fingerprint, user }))
            .collect::<Result<Vec<_>>>()?;
        out.sort_by(|a, b| {
            (a.user.name.as_str(), a.user.issued_at_ms)
                .cmp(&(b.user.name.as_str(), b.user.issued_at_ms))
        });
        Ok(out)
    }
}
