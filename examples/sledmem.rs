//! How much memory sled holds while a large file is written into it in
//! chunks and read back, by chunk size: the measurement behind
//! `store::blobs::CHUNK`.
//!
//! ```text
//! cargo run --release --example sledmem -- [CHUNK_BYTES [CACHE_MIB [MIB]]]
//! ```
//!
//! Writes MIB (default 256) MiB in CHUNK_BYTES (default 2048) values, with a
//! flush every 8 MiB as an upload does, then reads every chunk back twice,
//! one `get` at a time as `GetBlob` does. Prints how far the resident set
//! grew after each step, in MiB. Runs with the allocator and options of
//! `casemesh serve`.

use anyhow::{Context, Result};

#[global_allocator]
static ALLOC: casemesh::alloc::Allocator = casemesh::alloc::Allocator {};

fn rss_mib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .context("no VmRSS in /proc/self/status")?
        .parse::<u64>()?;
    Ok(kib / 1024)
}

fn arg(n: usize, default: u64) -> Result<u64> {
    match std::env::args().nth(n) {
        Some(a) => a.parse().with_context(|| format!("argument {n}: {a:?}")),
        None => Ok(default),
    }
}

fn key(index: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&1u64.to_be_bytes());
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

fn main() -> Result<()> {
    if let Err(e) = casemesh::alloc::restart_with_options() {
        eprintln!("running with mimalloc's default options: {e}");
    }
    let chunk = arg(1, 2048)? as usize;
    let cache_mib = arg(2, 32)?;
    let total = arg(3, 256)? << 20;
    anyhow::ensure!(chunk >= 8, "chunks must be at least 8 bytes");

    let dir = tempfile::tempdir()?;
    let db = sled::Config::new()
        .path(dir.path())
        .cache_capacity(cache_mib << 20)
        .flush_every_ms(None)
        .open()?;
    let chunks = db.open_tree("chunks")?;
    let base = rss_mib()?;

    let count = total.div_ceil(chunk as u64);
    let mut value = vec![7u8; chunk];
    let mut since_flush = 0;
    for index in 0..count {
        value[..8].copy_from_slice(&index.to_be_bytes());
        chunks.insert(key(index), value.as_slice())?;
        since_flush += chunk;
        if since_flush >= 8 << 20 {
            db.flush()?;
            since_flush = 0;
        }
    }
    db.flush()?;
    print!(
        "chunk {chunk} B, cache {cache_mib} MiB, {} MiB: ",
        total >> 20
    );
    print!("write +{} MiB", rss_mib()?.saturating_sub(base));
    for pass in 1..=2 {
        for index in 0..count {
            let got = chunks.get(key(index))?.context("a chunk is missing")?;
            anyhow::ensure!(got[..8] == index.to_be_bytes(), "chunk {index} is wrong");
        }
        print!(", read {pass} +{} MiB", rss_mib()?.saturating_sub(base));
    }
    println!();
    Ok(())
}
