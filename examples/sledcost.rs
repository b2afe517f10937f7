//! What sled itself costs for the shapes of casemesh's writes, with nothing
//! else running: the measurement behind grouping version writes into shared
//! transactions (`store::commit`), and behind the limits in BENCHMARKS.md.
//!
//! ```text
//! cargo run --release --example sledcost -- put GROUP [N]
//! cargo run --release --example sledcost -- replica [N]
//! ```
//!
//! `put`: N (default 8,000) writes shaped like a local put (head read and
//! insert, collection index, a 1.3 KB version, two counters, a 400-byte
//! audit entry and the audit head, over six trees), GROUP writes per
//! transaction and a flush after each transaction, as the commit thread
//! does. `replica`: N (default 80,000) versions shaped like an applied
//! replica (version check and insert, purge stub removal, head read and
//! insert, collection index), 800 per transaction with a flush after each,
//! as a puller applies a batch. Prints writes per second, microseconds per
//! write, and the bytes sled wrote to disk per write.

use anyhow::{Context, Result, bail};
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

#[global_allocator]
static ALLOC: casemesh::alloc::Allocator = casemesh::alloc::Allocator {};

type Tx = std::result::Result<(), ConflictableTransactionError<()>>;

const VERSION: [u8; 1300] = [7; 1300];
const AUDIT_ENTRY: [u8; 400] = [9; 400];
const HEAD: &[u8] = b"0123456789012345678901234567";
const REPLICA_BATCH: u64 = 800;

/// Bytes this process has written to disk so far.
fn written() -> Result<u64> {
    let io = std::fs::read_to_string("/proc/self/io")?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .context("no write_bytes in /proc/self/io")?
        .trim()
        .parse()
        .context("write_bytes")
}

fn arg(n: usize, default: u64) -> Result<u64> {
    match std::env::args().nth(n) {
        Some(a) => a.parse().with_context(|| format!("argument {n}: {a:?}")),
        None => Ok(default),
    }
}

/// Record ids in the shape of casemesh's: office, time, random.
fn record_id(i: u64) -> String {
    format!(
        "bench-da:{:012x}{:020x}",
        1_000_000 + i,
        i.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    )
}

fn main() -> Result<()> {
    if let Err(e) = casemesh::alloc::restart_with_options() {
        eprintln!("running with mimalloc's default options: {e}");
    }
    let mode = std::env::args().nth(1).unwrap_or_default();
    let dir = tempfile::tempdir_in(std::env::current_dir()?)?;
    let db = sled::Config::new()
        .path(dir.path())
        .cache_capacity(32 << 20)
        .flush_every_ms(None)
        .open()?;
    let tree = |name: &str| db.open_tree(name);
    let (heads, versions, collections) = (tree("heads")?, tree("versions")?, tree("collections")?);
    let (counters, audit, audit_head) = (tree("counters")?, tree("audit")?, tree("audit_head")?);
    let purged = tree("purged")?;
    let (n, before, start) = match mode.as_str() {
        "put" => {
            let group = arg(2, 1)?.max(1);
            let n = arg(3, 8_000)? / group * group;
            let (before, start) = (written()?, std::time::Instant::now());
            for g in 0..n / group {
                (
                    &heads,
                    &versions,
                    &collections,
                    &counters,
                    &audit,
                    &audit_head,
                )
                    .transaction(|(h, v, c, cnt, a, ah)| -> Tx {
                        for i in g * group..(g + 1) * group {
                            let id = record_id(i);
                            let _ = h.get(id.as_bytes())?;
                            c.insert(format!("case-1\0{id}").as_bytes(), &[])?;
                            v.insert(format!("{id}\0{:016x}", 1).as_bytes(), &VERSION[..])?;
                            h.insert(id.as_bytes(), HEAD)?;
                            cnt.insert("count:records", &i.to_be_bytes())?;
                            cnt.insert("count:versions", &i.to_be_bytes())?;
                            a.insert(&i.to_be_bytes(), &AUDIT_ENTRY[..])?;
                            ah.insert("head", &[1u8; 48][..])?;
                        }
                        Ok(())
                    })
                    .map_err(|e| anyhow::anyhow!("transaction: {e:?}"))?;
                db.flush()?;
            }
            (n, before, start)
        }
        "replica" => {
            let n = arg(2, 80_000)? / REPLICA_BATCH * REPLICA_BATCH;
            let (before, start) = (written()?, std::time::Instant::now());
            for b in 0..n / REPLICA_BATCH {
                (&heads, &versions, &collections, &purged, &counters)
                    .transaction(|(h, v, c, p, cnt)| -> Tx {
                        for i in b * REPLICA_BATCH..(b + 1) * REPLICA_BATCH {
                            let id = record_id(i);
                            let key = format!("{id}\0{:016x}", 1);
                            if v.get(key.as_bytes())?.is_some() {
                                continue;
                            }
                            v.insert(key.as_bytes(), &VERSION[..])?;
                            p.remove(id.as_bytes())?;
                            let _ = h.get(id.as_bytes())?;
                            c.insert(format!("case-1\0{id}").as_bytes(), &[])?;
                            h.insert(id.as_bytes(), HEAD)?;
                        }
                        cnt.insert("checkpoint", &b.to_be_bytes())?;
                        Ok(())
                    })
                    .map_err(|e| anyhow::anyhow!("transaction: {e:?}"))?;
                db.flush()?;
            }
            (n, before, start)
        }
        _ => bail!("usage: sledcost put GROUP [N] | sledcost replica [N]"),
    };
    let secs = start.elapsed().as_secs_f64();
    let bytes = written()?.saturating_sub(before);
    println!(
        "{mode}: {:.0} writes/s, {:.1} µs per write, {:.1} KiB written per write",
        n as f64 / secs,
        secs * 1e6 / n as f64,
        bytes as f64 / n as f64 / 1024.0
    );
    Ok(())
}
