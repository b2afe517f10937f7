//! The counts `status` and `peer list` show beside the record and version
//! counts ([`super::records`]): records held per origin office, and
//! outbox entries waiting per peer. Each is a key of `counters`, changed
//! in the transaction that changes what it counts, so showing them reads
//! one value per origin or peer instead of the trees they count.
//!
//! A store written before they were kept is counted once, in full, when
//! it is opened ([`super::recount`]); `casemesh check-store` counts again
//! and compares.

use super::tx::Tx;
use super::typed::TxTree;

/// Prefix of the per-origin record counts: `count:origin:<office>`.
pub(super) const ORIGIN_PREFIX: &str = "count:origin:";
/// Prefix of the per-peer outbox counts: `count:outbox:<office>`.
pub(super) const OUTBOX_PREFIX: &str = "count:outbox:";
/// Present once the counts above are kept (or were counted in full).
pub(super) const KEPT: &str = "count:per_office";

pub(super) fn origin_key(office: &str) -> String {
    format!("{ORIGIN_PREFIX}{office}")
}

pub(super) fn outbox_key(peer: &str) -> String {
    format!("{OUTBOX_PREFIX}{peer}")
}

/// Adds `delta` to the count at `key` inside a transaction (never below
/// 0; a count that reaches 0 is removed, so a count of an office that
/// holds nothing any more takes no room).
pub(super) fn add_tx(counters: &TxTree<'_, str, u64>, key: &str, delta: i64) -> Tx<()> {
    if delta == 0 {
        return Ok(());
    }
    let now = counters.get(key)?.unwrap_or(0).saturating_add_signed(delta);
    if now == 0 {
        counters.remove(key)?;
    } else {
        counters.insert(key, &now)?;
    }
    Ok(())
}
