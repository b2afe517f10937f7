//! Transactions across trees: the result type inside one, and turning its
//! outcome back into a [`Result`]. A leaf: every other store module may use
//! it, it uses none of them.

use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::{Result, StoreError};

/// What a step inside a transaction returns.
pub(super) type Tx<T> = std::result::Result<T, ConflictableTransactionError<StoreError>>;

/// Aborts the transaction with `e`.
pub(super) fn abort(e: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(e)
}

/// A finished transaction's outcome as a store result.
pub(super) fn unwrap_tx<T>(r: std::result::Result<T, TransactionError<StoreError>>) -> Result<T> {
    r.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Engine(e),
    })
}
