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
    /// Stores a newly issued user certificate. A name is taken while a
    /// valid (unrevoked) certificate carries it; once revoked, the name may
    /// be issued again, and the revoked certificate stays on record. `audit`
    /// is appended in the same transaction.
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
                if let Some(current) = by_name.get(name.as_bytes())? {
                    let valid = match by_fp.get(&current)? {
                        Some(v) => {
                            let user = encoding::decode_user(&v).map_err(|e| {
                                ConflictableTransactionError::Abort(corrupt("fingerprint_user")(e))
                            })?;
                            user.revoked_at_ms == 0
                        }
                        None => false,
                    };
                    if valid {
                        return Err(ConflictableTransactionError::Abort(StoreError::UserExists(
                            name.clone(),
                        )));
                    }
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
        super::tx::unwrap_tx(
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

    /// Every certificate ever issued, revoked ones included, ordered by
    /// user name and then by when it was issued.
    pub fn users(&self) -> Result<Vec<UserEntry>> {
        let mut out = Vec::new();
        for kv in self.fingerprint_user.iter() {
            let (fp, value) = kv?;
            let Ok(fingerprint) = <[u8; 32]>::try_from(fp.as_ref()) else {
                return Err(StoreError::Inconsistent(
                    "a key of fingerprint_user is not 32 bytes".into(),
                ));
            };
            out.push(UserEntry {
                fingerprint: Fingerprint(fingerprint),
                user: encoding::decode_user(&value).map_err(corrupt("fingerprint_user"))?,
            });
        }
        out.sort_by(|a, b| {
            (a.user.name.as_str(), a.user.issued_at_ms)
                .cmp(&(b.user.name.as_str(), b.user.issued_at_ms))
        });
        Ok(out)
    }
}
