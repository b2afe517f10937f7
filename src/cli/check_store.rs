//! `casemesh check-store`: counts again, in full, what `status` and
//! `peer list` show from kept counts (records, versions, records per
//! office, outbox entries per peer) in a stopped node's store, and names
//! every kept count that differs; with `--fix`, stores what it counted.
//! Also says how far the audit log's index is, after an upgrade.

use std::path::Path;

use anyhow::Result;
use serde_json::json;

use super::errors::CliError;
use crate::config::{Config, Paths};
use crate::store::{Store, StoreError, StoreOptions};

pub fn run(data: &Path, json: bool, fix: bool) -> Result<()> {
    let paths = Paths::new(data);
    // Not a data directory at all: say so as `--data` would anywhere else.
    let config = Config::load(&paths.config())?;
    // Only counted here (and, with --fix, a few counts written): no free
    // space is needed.
    let options = StoreOptions {
        reserve_bytes: 0,
        ..StoreOptions::from(&config.store)
    };
    let store = match Store::open_unless_locked(&paths.store(), &config.office, &options) {
        Ok(store) => store,
        Err(StoreError::Locked(path)) => {
            return Err(CliError::Failed(format!(
                "the node is running: it holds the store ({}); stop it, then run check-store again (its counts would change while being counted)",
                path.display()
            ))
            .into());
        }
        Err(e) => return Err(CliError::Failed(format!("the store cannot be opened: {e}")).into()),
    };
    let counted = store.recount()?;
    let stored = store.stored_counts()?;
    let differences = stored.differences(&counted);
    let unindexed = store.audit_unindexed()?.map_or(0, |(done, end)| end - done);
    let fixed = fix && !differences.is_empty();
    if fixed {
        store.set_counts(&counted)?;
        store.flush_now()?;
    }
    let data_dir = data.display().to_string();
    if json {
        super::json::print(&json!({
            "data_dir": data_dir,
            "office": config.office,
            "ok": differences.is_empty() || fixed,
            "records": counted.records,
            "versions": counted.versions,
            "records_by_office": counted.origins,
            "outbox_by_peer": counted.outbox,
            "differences": differences.iter().map(|d| json!({
                "count": d.name,
                "stored": d.stored,
                "counted": d.counted,
            })).collect::<Vec<_>>(),
            "fixed": fixed,
            "audit_entries_unindexed": unindexed,
        }));
    } else {
        println!(
            "counted: {} records, {} versions",
            counted.records, counted.versions
        );
        for (office, n) in &counted.origins {
            println!("  records of {office}: {n}");
        }
        for (office, n) in &counted.outbox {
            println!("  outbox of {office}: {n} waiting");
        }
        for d in &differences {
            println!(
                "differs  {}: kept {}, counted {}{}",
                d.name,
                d.stored,
                d.counted,
                if fixed { " (fixed)" } else { "" }
            );
        }
        if differences.is_empty() {
            println!("ok       every kept count is what counting finds");
        }
        if unindexed > 0 {
            println!(
                "note     audit index: {unindexed} entries written before the upgrade are not indexed yet; the node indexes them when it runs"
            );
        }
    }
    if !differences.is_empty() && !fixed {
        return Err(CliError::Failed(format!(
            "{} kept count(s) differ from what is stored in {}: `casemesh check-store --data {} --fix` stores the counted values (with the node stopped)",
            differences.len(),
            data_dir,
            data_dir
        ))
        .into());
    }
    Ok(())
}
