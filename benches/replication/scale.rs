//! The `scale` phase (`cargo bench --bench replication -- --only scale`):
//! what an office pays for a long history. One node is filled through the
//! store layer (not by RPC) in three steps — a small node, then about
//! 100,000 records and 500,000 audit entries, then 1,000,000 records and
//! 5,000,000 entries — and after each step the costs that must not grow
//! with history are measured on the running node: `audit witness` (bytes
//! and time, by a pinned peer), a case bundle's audit excerpt, `QueryAudit`
//! by record, `Status` and `ListPeers`, one client's puts, and (at the
//! largest size) writes while a 100,000-record grant is queued.
//!
//! The measured node runs as a `casemesh serve` process (the bench fills
//! its store while it is stopped); its peer runs in this process. Not part
//! of `--quick` or CI: the largest step writes several GB.

use std::sync::Arc;
use std::time::{Duration, Instant};

use casemesh::cluster::Office;
use casemesh::domain::audit::{Actor, Draft, Outcome, Target};
use casemesh::domain::{OfficeId, RecordId, RecordVersion, SignedVersion};
use casemesh::identity::{OfficeCa, OfficeSigner};
use casemesh::protocol::pb;
use casemesh::store::{Store, StoreOptions};

use super::{Res, percentile, pin_both, put_req, wait_applied, writers};

/// One step of growth: totals after it.
#[derive(Clone, Copy)]
pub struct Step {
    pub records: u64,
    pub entries: u64,
}

pub const QUICK: [Step; 3] = [
    Step {
        records: 200,
        entries: 1_000,
    },
    Step {
        records: 1_000,
        entries: 5_000,
    },
    Step {
        records: 3_000,
        entries: 15_000,
    },
];

pub const FULL: [Step; 3] = [
    Step {
        records: 1_000,
        entries: 5_000,
    },
    Step {
        records: 100_000,
        entries: 500_000,
    },
    Step {
        records: 1_000_000,
        entries: 5_000_000,
    },
];

/// Records in each step's case (its bundle is measured).
const CASE: u64 = 100;
/// Records of the collection granted at the last step (at most a third
/// of the step's records).
const GRANTED: u64 = 100_000;

fn granted(step: Step, from: Step) -> u64 {
    GRANTED.min((step.records - from.records) / 3)
}
/// Samples per latency measure.
const SAMPLES: usize = 200;

/// What one step measured.
pub struct Point {
    pub step: Step,
    pub fill_secs: f64,
    pub witness_bytes: u64,
    pub witness: Duration,
    pub excerpt_bytes: u64,
    pub excerpt_entries: u64,
    pub query_p99: Duration,
    pub status_p99: Duration,
    pub peers_p99: Duration,
    pub put_p50: Duration,
    /// Records granted, and the write latency p99 while the grant was
    /// queued (last step only).
    pub grant_write_p99: Option<(u64, Duration)>,
    pub disk_bytes: u64,
}

/// Runs the phase over `steps`; prints progress to stderr.
pub async fn run(steps: &[Step]) -> Res<Vec<Point>> {
    let root = tempfile::tempdir()?;
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_casemesh"));
    let (mut phila, listener) = Office::create(root.path(), "phila-da").await?;
    drop(listener);
    let mut nyc = Office::start(root.path(), "nyc-da").await?;
    let ca = Arc::new(office_ca(&phila)?);
    let mut written = Step {
        records: 0,
        entries: 0,
    };
    let mut points = Vec::new();
    let mut cases = std::collections::HashSet::new();
    for (n, step) in steps.iter().enumerate() {
        let last = n + 1 == steps.len();
        phila.stop().await?;
        let t = Instant::now();
        let case = format!("case-{n}");
        let store = Store::open(
            &phila.paths().store(),
            phila.office.as_str(),
            &StoreOptions {
                cache_bytes: 256 << 20,
                reserve_bytes: 0,
            },
        )?;
        let store = Arc::new(store);
        let (now, in_grant) = fill(&store, &ca, written, *step, &case, last, &mut cases).await?;
        written = now;
        store.commit().await?;
        drop(store);
        // What the fill left for the kernel to write back is written now,
        // not while the node is measured.
        rustix::fs::sync();
        let fill_secs = t.elapsed().as_secs_f64();
        eprintln!(
            "  filled to {} records, {} entries in {fill_secs:.0} s",
            written.records, written.entries
        );
        // The office's node runs as a process of its own: sled serializes
        // transactions across a whole process, so the peer applying here
        // must not share one with it.
        phila.serve_process_in_place(bin).await?;
        if n == 0 {
            pin_both(&phila, &nyc).await?;
        }
        let grant = last.then_some(in_grant);
        points.push(measure(&phila, &nyc, *step, &case, grant, fill_secs).await?);
    }
    phila.stop().await?;
    nyc.stop().await?;
    Ok(points)
}

fn office_ca(o: &Office) -> Res<OfficeCa> {
    let paths = o.paths();
    Ok(OfficeCa::load(
        &o.office,
        &std::fs::read_to_string(paths.office_ca())?,
        &std::fs::read_to_string(paths.office_key())?,
    )?)
}

/// Writes records and audit entries until the totals reach `to`: the
/// case's records spread evenly through the step (noted in `cases`), reads
/// of earlier records outside any case by a few dozen peer offices between
/// them, and (with `grant`) the
/// collection a grant will share. Records are signed, then written as
/// concurrent writes share the store's group commit. The Merkle tree is
/// extended at the end, as the head signer would.
async fn fill(
    store: &Arc<Store>,
    ca: &Arc<OfficeCa>,
    from: Step,
    to: Step,
    case: &str,
    grant: bool,
    cases: &mut std::collections::HashSet<u64>,
) -> Res<(Step, u64)> {
    const CHUNK: u64 = 1024;
    let mut in_grant = 0;
    let office = ca.office.clone();
    let records = to.records - from.records;
    let entries = to.entries.saturating_sub(from.entries + records);
    let reads_per_record = entries.div_ceil(records.max(1));
    let case_every = (records / CASE).max(1);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut written_entries = 0;
    for chunk in (0..records).step_by(CHUNK as usize) {
        let versions: Vec<RecordVersion> = (chunk..(chunk + CHUNK).min(records))
            .map(|i| {
                let n = from.records + i;
                let collection = if i % case_every == case_every / 2 && i / case_every < CASE {
                    cases.insert(n);
                    case.to_owned()
                } else if grant && i < granted(to, from) {
                    in_grant += 1;
                    "granted".to_owned()
                } else {
                    format!("archive-{}", n / 10_000)
                };
                version(&office, n, &collection)
            })
            .collect();
        let signed = {
            let ca = ca.clone();
            tokio::task::spawn_blocking(move || {
                let signer = OfficeSigner::new(&ca);
                versions
                    .into_iter()
                    .map(|v| signer.sign(v))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await??
        };
        let count = signed.len() as u64;
        write_signed(store, &office, signed).await?;
        written_entries += count;
        let mut reads = Vec::new();
        let newest = from.records + chunk + count;
        for _ in 0..reads_per_record * count {
            if written_entries >= to.entries - from.entries {
                break;
            }
            // Reads of records outside every case: a case's excerpt holds
            // its own entries only, the same number at every size.
            let mut seen = next() % newest;
            while cases.contains(&seen) {
                seen = seen.saturating_sub(1);
            }
            reads.push(Draft::new(
                Actor::peer(&format!("office-{}-da", next() % 40)),
                "Records.Get",
                Target::record(record_id(&office, seen).as_str(), 1),
                Outcome::ok(),
            ));
            written_entries += 1;
        }
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            reads.chunks(1024).try_for_each(|page| store.audit(page))
        })
        .await??;
    }
    let tree = store.clone();
    tokio::task::spawn_blocking(move || tree.extend_audit_tree(u64::MAX)).await??;
    let step = Step {
        records: to.records,
        entries: store.audit_head()?.seq,
    };
    Ok((step, in_grant))
}

fn record_id(office: &OfficeId, n: u64) -> RecordId {
    let mut rand = [0u8; 10];
    rand[2..].copy_from_slice(&n.to_be_bytes());
    RecordId::generate(office, 1_790_000_000_000, rand)
}

fn version(office: &OfficeId, n: u64, collection: &str) -> RecordVersion {
    RecordVersion {
        id: record_id(office, n),
        version: 1,
        origin: office.clone(),
        collection: collection.into(),
        kind: "incident-report".into(),
        title: format!("record {n}"),
        content_type: "text/plain".into(),
        labels: Default::default(),
        body: bytes::Bytes::from(vec![b'x'; 256]),
        created_at_ms: 1_790_000_000_000 + n,
        updated_at_ms: 1_790_000_000_000 + n,
        deleted: false,
        attachments: Vec::new(),
        subjects: Vec::new(),
    }
}

/// p99 of `f` over [`SAMPLES`] calls.
async fn p99<F, Fut>(mut f: F) -> Res<Duration>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Res<()>>,
{
    let mut lat = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let t = Instant::now();
        f(i).await?;
        lat.push(t.elapsed());
    }
    lat.sort();
    Ok(percentile(&lat, 0.99))
}

async fn measure(
    phila: &Office,
    nyc: &Office,
    step: Step,
    case: &str,
    grant: Option<u64>,
    fill_secs: f64,
) -> Res<Point> {
    let mut admin = phila.admin().await?;
    // The peer holds a head of the log from its pull stream (or from the
    // last step's check); it proves it against the current one. The first
    // check of all only fetches a head.
    let mut nyc_admin = nyc.admin().await?;
    let deadline = Instant::now() + Duration::from_secs(90);
    // Three checks, 11 s apart (a peer answers one proof per 10 s): the
    // bytes of the first (every head kept since the last step), the
    // median time.
    let mut checks: Vec<(u64, Duration)> = Vec::new();
    while checks.len() < 3 {
        let t = Instant::now();
        let asked = nyc_admin
            .witness_audit(pb::WitnessAuditRequest {
                peer: "phila-da".into(),
            })
            .await;
        match asked {
            Ok(r) => {
                let took = t.elapsed();
                let r = r.into_inner();
                if !r.agreed {
                    return Err(format!("witness disagreed: {}", r.conflict).into());
                }
                if r.heads_checked > 0 {
                    checks.push((r.proof_bytes, took));
                }
            }
            Err(s) if s.message().contains("ask again") => {}
            Err(s) => return Err(s.into()),
        }
        if Instant::now() > deadline {
            return Err("three witness checks did not complete within 90 s".into());
        }
        if checks.len() < 3 {
            tokio::time::sleep(Duration::from_secs(11)).await;
        }
    }
    let witness_bytes = checks[0].0;
    let mut times: Vec<Duration> = checks.iter().map(|c| c.1).collect();
    times.sort();
    let witness_took = times[1];
    eprintln!(
        "    witness checks: {:?}",
        checks
            .iter()
            .map(|(b, t)| format!("{b} B in {:.1} ms", t.as_secs_f64() * 1e3))
            .collect::<Vec<_>>()
    );

    eprintln!("    witnessed; exporting the case");
    // The case bundle's audit excerpt.
    let mut stream = admin
        .export(pb::ExportRequest {
            collection: case.into(),
            allow_empty: false,
        })
        .await?
        .into_inner();
    let mut bundle = Vec::new();
    while let Some(piece) = stream.message().await? {
        bundle.extend_from_slice(&piece.data);
    }
    let (excerpt_bytes, excerpt_entries) = excerpt_size(&bundle)?;

    eprintln!("    exported; querying");
    // QueryAudit by record: records of the case, each with its entries.
    let ids: Vec<String> = {
        let mut records = phila.records().await?;
        records
            .list(pb::ListRequest {
                collection: case.into(),
                page_size: 100,
                ..Default::default()
            })
            .await?
            .into_inner()
            .records
            .into_iter()
            .map(|r| r.id)
            .collect()
    };
    let query_p99 = p99(|i| {
        let mut a = admin.clone();
        let record = ids[i % ids.len()].clone();
        async move {
            a.query_audit(pb::QueryAuditRequest {
                record_id: record,
                page_size: 100,
                ..Default::default()
            })
            .await?;
            Ok(())
        }
    })
    .await?;
    let status_p99 = p99(|_| {
        let mut a = admin.clone();
        async move {
            a.status(pb::StatusRequest {}).await?;
            Ok(())
        }
    })
    .await?;
    let peers_p99 = p99(|_| {
        let mut a = admin.clone();
        async move {
            a.list_peers(pb::ListPeersRequest {}).await?;
            Ok(())
        }
    })
    .await?;
    eprintln!("    queried; putting");
    let mut one = phila.records().await?;
    let mut lat = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let t = Instant::now();
        one.put(put_req("scale-puts", i)).await?;
        lat.push(t.elapsed());
    }
    lat.sort();
    let put_p50 = percentile(&lat, 0.5);

    eprintln!("    put; granting");
    let grant_write_p99 = match grant {
        Some(n) => Some((n, write_latency_during_grant(phila, nyc, n).await?)),
        None => None,
    };
    Ok(Point {
        step,
        fill_secs,
        witness_bytes,
        witness: witness_took,
        excerpt_bytes,
        excerpt_entries,
        query_p99,
        status_p99,
        peers_p99,
        put_p50,
        grant_write_p99,
        disk_bytes: super::disk_use(&phila.paths().store())?,
    })
}

/// Bytes of a bundle's audit members (their contents, tar headers and
/// padding, and their manifest lines), and how many entries it holds (as
/// `verify-bundle` finds them, the bundle checking out).
fn excerpt_size(bundle: &[u8]) -> Res<(u64, u64)> {
    let report = casemesh::bundle::verify(std::io::Cursor::new(bundle), &[])?;
    if !report.failures.is_empty() {
        return Err(format!("the bundle does not verify: {:?}", report.failures).into());
    }
    let mut archive = tar::Archive::new(bundle);
    let mut bytes = 0;
    let mut manifest = Vec::new();
    for e in archive.entries()? {
        let mut e = e?;
        let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        if path.ends_with("manifest.json") {
            std::io::Read::read_to_end(&mut e, &mut manifest)?;
        }
        if path.contains("/audit/") {
            bytes += 512 + e.size().div_ceil(512) * 512;
        }
    }
    let manifest: serde_json::Value = serde_json::from_slice(&manifest)?;
    for f in manifest["files"].as_array().into_iter().flatten() {
        if f["path"].as_str().is_some_and(|p| p.starts_with("audit/")) {
            bytes += f.to_string().len() as u64;
        }
    }
    Ok((bytes, report.audit.entries.len() as u64))
}

/// Eight writers put continuously while `granted` (`n` records) is
/// granted to the peer and its backfill queued and sent; the p99 of their
/// latencies from the grant until the peer holds it all.
async fn write_latency_during_grant(phila: &Office, nyc: &Office, n: u64) -> Res<Duration> {
    let rx = nyc.subscribe_applied().ok_or("nyc-da not running")?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (c, mut w) in writers(phila, 8).await?.into_iter().enumerate() {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                w.put(put_req("during-grant", c * 1_000_000 + i)).await?;
                lat.push((t, t.elapsed()));
                i += 1;
            }
            Ok::<_, tonic::Status>(lat)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let granted_at = Instant::now();
    phila.grant_collection(&nyc.office, "granted").await?;
    let applied = wait_applied(rx, n as usize, Duration::from_secs(600)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        // Writes begun from the grant on.
        all.extend(
            t.await??
                .into_iter()
                .filter(|(at, _)| *at >= granted_at)
                .map(|(_, took)| took),
        );
    }
    applied?;
    all.sort();
    Ok(percentile(&all, 0.99))
}

/// Prints the phase's rows: each measure at every size, the larger sizes
/// as ratios to the smallest.
pub fn print(points: &[Point]) {
    use super::{ms, row};
    let Some(small) = points.first() else {
        return;
    };
    let size = |p: &Point| format!("{} records, {} entries", p.step.records, p.step.entries);
    let times = |v: f64, base: f64| {
        if base > 0.0 {
            format!("{:.2} × small", v / base)
        } else {
            "–".into()
        }
    };
    for p in points {
        let at = size(p);
        let d = |d: Duration| d.as_secs_f64();
        row(
            &format!("scale: filled through the store to {at}"),
            format!(
                "{:.0} s, {:.1} GB on disk",
                p.fill_secs,
                p.disk_bytes as f64 / 1e9
            ),
            String::new(),
            "≤ 15 min, ≤ 15 GB",
        );
        row(
            &format!("scale: `audit witness` bytes on the wire, {at}"),
            format!("{} B", p.witness_bytes),
            times(p.witness_bytes as f64, small.witness_bytes as f64),
            "≤ 4 KiB",
        );
        row(
            &format!("scale: `audit witness` time (median of 3), {at}"),
            ms(p.witness),
            times(d(p.witness), d(small.witness)),
            "≤ 50 ms",
        );
        row(
            &format!("scale: bundle audit excerpt, 100-record case, {at}"),
            format!(
                "{:.1} KiB ({} entries)",
                p.excerpt_bytes as f64 / 1024.0,
                p.excerpt_entries
            ),
            times(p.excerpt_bytes as f64, small.excerpt_bytes as f64),
            "≤ 100 KiB",
        );
        row(
            &format!("scale: QueryAudit by record p99, {at}"),
            ms(p.query_p99),
            times(d(p.query_p99), d(small.query_p99)),
            "≤ 10 ms",
        );
        row(
            &format!("scale: Status p99 / ListPeers p99, {at}"),
            format!("{} / {}", ms(p.status_p99), ms(p.peers_p99)),
            times(d(p.status_p99), d(small.status_p99)),
            "≤ 10 ms",
        );
        row(
            &format!("scale: put p50, 1 client, {at}"),
            ms(p.put_p50),
            times(d(p.put_p50), d(small.put_p50)),
            "≤ 1.2 × small",
        );
        if let Some((n, g)) = p.grant_write_p99 {
            row(
                &format!("scale: write p99, 8 writers, while a {n}-record grant is queued, {at}"),
                ms(g),
                String::new(),
                "≤ 20 ms",
            );
        }
    }
}

/// Writes `signed` (first versions) into `store` as concurrent local
/// writes do, each with its `Records.Put` audit entry.
pub(super) async fn write_signed(
    store: &Arc<Store>,
    office: &OfficeId,
    signed: Vec<SignedVersion>,
) -> Res<()> {
    let mut writes = tokio::task::JoinSet::new();
    for v in signed {
        let put = Draft::new(
            Actor::node(office.as_str()),
            "Records.Put",
            Target::record(v.record.id.as_str(), 1),
            Outcome::ok(),
        );
        let store = store.clone();
        writes.spawn(async move { store.write_version(&v, None, Vec::new(), vec![put]).await });
    }
    while let Some(done) = writes.join_next().await {
        done??;
    }
    Ok(())
}
