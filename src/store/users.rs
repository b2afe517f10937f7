//! Users: every certificate the node issued, and whether it is revoked.

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use super::encoding::{self, UserRecord};
use super::{Result, Store, StoreError, corrupt};
use crate::domain::audit::Draft;
use crate::identity::Fingerprint;

/// A stored user with its certificate's fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    pub fingerprint: Fingerprint,
    pub user: UserRecord,
}

impl Store {
    /// Stores a newly issued user; refuses a name already taken (revoked
    /// users keep their name, so the record of who held it stays clear).
    /// `audit` is appended in the same transaction.
    pub fn insert_user(&self, entry: &UserEntry, audit: &[Draft]) -> Result<()> {
        let name = entry.user.name.as_str().to_owned();
        let value = encoding::encode_user(&entry.user);
        let outcome = (
            &self.fingerprint_user,
            &self.username_fingerprint,
            &self.auditseq_entry,
            &self.audit_head,
        )
            .transaction(|(by_fp, by_name, entries, head)| {
                if by_name.get(name.as_bytes())?.is_some() {
                    return Err(ConflictableTransactionError::Abort(StoreError::UserExists(
                        name.clone(),
                    )));
                }
                by_name.insert(name.as_bytes(), &entry.fingerprint.0[..])?;
                by_fp.insert(&entry.fingerprint.0[..], value.as_slice())?;
                super::audit::append_tx(entries, head, &self.office, audit)?;
                Ok(())
            });
        outcome.map_err(|e| match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => StoreError::Engine(e),
        })?;
        self.audit_appended();
        Ok(())
    }

    pub fn user_by_name(&self, name: &str) -> Result<Option<UserEntry>> {
        let Some(fp) = self.username_fingerprint.get(name.as_bytes())? else {
            return Ok(None);
        };
        let Some(value) = self.fingerprint_user.get(&fp)? else {
            return Ok(None);
        };
        let mut arr = [0u8; 32];
        if fp.len() == 32 {
            arr.copy_from_slice(&fp);
        }
        Ok(Some(UserEntry {
            fingerprint: Fingerprint(arr),
            user: encoding::decode_user(&value).map_err(corrupt("fingerprint_user"))?,
        }))
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
        let value = encoding::encode_user(&entry.user);
        super::sharing::unwrap_tx(
            (
                &self.fingerprint_user,
                &self.auditseq_entry,
                &self.audit_head,
            )
                .transaction(|(by_fp, entries, head)| {
                    by_fp.insert(&entry.fingerprint.0[..], value.as_slice())?;
                    super::audit::append_tx(entries, head, &self.office, audit)?;
                    Ok(())
                }),
        )?;
        self.audit_appended();
        Ok(Some(entry))
    }

    /// Every user, ordered by name.
    pub fn users(&self) -> Result<Vec<UserEntry>> {
        let mut out = Vec::new();
        for kv in self.username_fingerprint.iter() {
            let (name, _) = kv?;
            if let Some(e) = self.user_by_name(&String::from_utf8_lossy(&name))? {
                out.push(e);
            }
        }
        Ok(out)
    }
}
