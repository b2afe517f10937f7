//! Grants without stalls: a grant of a large case, and its revocation,
//! while local writers keep writing. Each write's latency is recorded and
//! bounded, and the peer ends up holding exactly what was granted (and,
//! after the revocation, none of it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use casemesh::cluster::Office;
use casemesh::domain::{RecordId, RecordVersion, now_ms};
use casemesh::identity::OfficeSigner;
use casemesh::protocol::pb;
use casemesh::store::{Store, StoreOptions};
use tokio::sync::watch;

use super::cluster::{TestCluster, TestNode, audited, eventually, holdings};
use super::hostile::office_ca;

/// Records in the granted case, written through the store directly.
const SEEDED: usize = 100_000;
/// Concurrent local writers.
const WRITERS: usize = 4;
/// The bound on a write's p99 latency while a grant or its revocation
/// runs. The target is 20 ms; this is the debug build of the whole
/// test binary, on two cores shared with the peer process, the writers and
/// whatever else the machine runs, where a quiet put's p99 is 10-40 ms.
/// Holding writes back for the whole queueing, as grants used to, stalls
/// them for seconds here (a debug grant of this case takes 2-3 s). The same
/// test in release (`cargo test --release`) measured p99 27 ms while
/// granting and 74 ms while revoking, against 3 ms quiet: not yet 20 ms.
/// When the whole suite runs at once, everything is slower (measured in
/// full CI runs: p99 194 and 249 ms while revoking, the revocation taking
/// 11.8 s): the bound is then a tenth of the operation's own duration, if
/// that is more. Writes held back for the whole queueing, as before, wait
/// about the whole duration, so this still tells the two apart.
const P99_BOUND: Duration = Duration::from_millis(150);
/// The share of a grant's or revocation's duration a write may wait.
const P99_SHARE_OF_OPERATION: u32 = 10;

/// Writes `n` records into `collection` of a stopped node's store, signed
/// with its office key, as a local write stores them (no grant exists yet,
/// so no feed entries).
async fn seed(node: &TestNode, collection: &str, n: usize) {
    let ca = Arc::new(office_ca(node));
    let office = node.office.clone();
    let collection = collection.to_owned();
    let versions = tokio::task::spawn_blocking(move || {
        let signer = OfficeSigner::new(&ca);
        let now = now_ms();
        (0..n)
            .map(|i| {
                let mut random = [0u8; 10];
                random[..8].copy_from_slice(&(i as u64).to_be_bytes());
                let record = RecordVersion {
                    id: RecordId::generate(&office, now, random),
                    version: 1,
                    origin: office.clone(),
                    collection: collection.clone(),
                    kind: "report".into(),
                    title: format!("seeded {i}"),
                    content_type: "text/plain".into(),
                    labels: Default::default(),
                    body: bytes::Bytes::from(vec![b'x'; 256]),
                    created_at_ms: now,
                    updated_at_ms: now,
                    deleted: false,
                    attachments: Vec::new(),
                    subjects: Vec::new(),
                };
                signer.sign(record).unwrap()
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let options = StoreOptions {
        cache_bytes: 64 << 20,
        reserve_bytes: 0,
    };
    let store =
        Arc::new(Store::open(&node.paths().store(), node.office.as_str(), &options).unwrap());
    let mut writes = tokio::task::JoinSet::new();
    for chunk in versions.chunks(n.div_ceil(64)) {
        let store = store.clone();
        let chunk = chunk.to_vec();
        writes.spawn(async move {
            for v in chunk {
                store
                    .write_version(&v, None, Vec::new(), Vec::new())
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(done) = writes.join_next().await {
        done.unwrap();
    }
    store.flush_now().unwrap();
}

/// One write: when it started, how long it took, and what it wrote.
#[derive(Clone)]
struct Write {
    at: Instant,
    took: Duration,
    id: String,
    version: u64,
}

type Writes = Arc<Mutex<Vec<Write>>>;

/// Writers, each on its own connection, writing until stopped: new
/// records into `big-case` (the granted case) and `private` (never
/// granted), and new versions of earlier ones.
struct Writers {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    writes: Writes,
}

impl Writers {
    fn start(origin: &Office, writes: &Writes) -> Self {
        let (stop, stopped) = watch::channel(false);
        let tasks = (0..WRITERS)
            .map(|n| {
                let origin = origin.caller();
                let writes = writes.clone();
                let stopped = stopped.clone();
                tokio::spawn(async move { keep_writing(origin, n, writes, stopped).await })
            })
            .collect();
        Self {
            stop,
            tasks,
            writes: writes.clone(),
        }
    }

    /// Waits until `n` more writes are done than now.
    async fn more(&self, n: usize) {
        let from = self.writes.lock().unwrap().len();
        eventually(Duration::from_secs(120), "more writes", || async {
            (self.writes.lock().unwrap().len() >= from + n).then_some(())
        })
        .await;
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        for t in self.tasks {
            t.await.unwrap();
        }
    }
}

async fn keep_writing(origin: Office, n: usize, writes: Writes, mut stop: watch::Receiver<bool>) {
    let mut records = origin.records().await.unwrap();
    let mut mine: Vec<(String, u64)> = Vec::new();
    let mut i = 0usize;
    while !*stop.borrow_and_update() {
        i += 1;
        let update = (i % 3 == 0 && !mine.is_empty()).then(|| i / 3 % mine.len());
        let (id, expected) = match update {
            Some(k) => (mine[k].0.clone(), Some(mine[k].1)),
            None => (String::new(), None),
        };
        let collection = if (i + n) % 2 == 0 {
            "big-case"
        } else {
            "private"
        };
        let request = pb::PutRequest {
            id,
            expected_version: expected,
            collection: collection.into(),
            kind: "note".into(),
            title: format!("writer {n} write {i}"),
            body: vec![b'y'; 256].into(),
            ..Default::default()
        };
        let at = Instant::now();
        let reply = records.put(request).await.expect("a local write succeeds");
        let took = at.elapsed();
        let v = reply.into_inner();
        match update {
            Some(k) => mine[k].1 = v.version,
            None => mine.push((v.id.clone(), v.version)),
        }
        writes.lock().unwrap().push(Write {
            at,
            took,
            id: v.id,
            version: v.version,
        });
    }
}

/// Latencies of the writes that started between `from` and `to`, sorted.
fn during(writes: &Writes, from: Instant, to: Instant) -> Vec<Duration> {
    let mut out: Vec<Duration> = writes
        .lock()
        .unwrap()
        .iter()
        .filter(|w| w.at >= from && w.at <= to)
        .map(|w| w.took)
        .collect();
    out.sort();
    out
}

fn p(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn report(what: &str, lat: &[Duration]) {
    eprintln!(
        "writes {what}: {} writes, p50 {:?}, p99 {:?}, max {:?}",
        lat.len(),
        p(lat, 0.5),
        p(lat, 0.99),
        lat.last().unwrap()
    );
}

/// Origin records in `collection`: id → (version, collection).
async fn records_in(node: &TestNode, collection: &str) -> BTreeMap<String, (u64, String)> {
    holdings(node)
        .await
        .into_iter()
        .filter(|(id, (_, c))| c == collection && id.starts_with("phila-da:"))
        .collect()
}

/// A grant of 100,000 records and then its revocation, with four writers
/// writing all along: no write waits behind either (p99 bounded), the peer
/// receives exactly the granted case at its latest versions (writes that
/// raced the backfill included, nothing of the private case), and after
/// the revocation it holds none of it and no version written after it
/// arrives.
///
/// The peer is a `casemesh serve` process of its own: sled runs one
/// transaction at a time per process, so a peer in this process would hold
/// the origin's writes back while it applies and purges, which a peer
/// never does to an origin in the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_grant_and_its_revocation_hold_no_write_back() {
    let mut cluster = TestCluster::start(&["phila-da"]).await;
    let root = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_casemesh"));
    // The peer's log, shown if the test fails.
    let log = root.path().join("nyc-da.log");
    let mut peer = Office::start_process_logging(root.path(), "nyc-da", bin, &log)
        .await
        .expect("the peer starts");
    cluster.nodes[0]
        .kit()
        .pin(&peer)
        .await
        .expect("pin the peer");
    peer.pin(cluster.nodes[0].kit())
        .await
        .expect("pin the origin");
    cluster.nodes[0].stop().await;
    let seeding = Instant::now();
    seed(&cluster.nodes[0], "big-case", SEEDED).await;
    eprintln!("seeded {SEEDED} records in {:?}", seeding.elapsed());
    cluster.nodes[0].restart().await;
    let writes: Writes = Arc::default();
    let nyc = peer.office.clone();

    // The grant, with writers writing before, during and after it.
    let writers = Writers::start(cluster.nodes[0].kit(), &writes);
    let quiet_from = Instant::now();
    writers.more(200).await;
    let quiet = during(&writes, quiet_from, Instant::now());
    let granting = Instant::now();
    let grant = cluster.nodes[0]
        .kit()
        .grant_collection(&nyc, "big-case")
        .await
        .expect("grant");
    let granted = Instant::now();
    writers.more(200).await;
    let written = Instant::now();
    writers.stop().await;
    // The peer holds exactly the case as it is now: every record at its
    // latest version, writes that raced the backfill included.
    let case = records_in(&cluster.nodes[0], "big-case").await;
    assert!(
        case.len() > SEEDED,
        "writes into the case: {}",
        case.len() - SEEDED
    );
    eventually(
        Duration::from_secs(600),
        "the peer to hold the case",
        || async { (peer.holdings().await.ok()? == case).then_some(()) },
    )
    .await;
    let caught_up = Instant::now();

    // The revocation, with writers writing before, during and after it.
    let writers = Writers::start(cluster.nodes[0].kit(), &writes);
    writers.more(100).await;
    let revoking = Instant::now();
    cluster.nodes[0]
        .kit()
        .revoke(&grant.id)
        .await
        .expect("revoke");
    let revoked = Instant::now();
    writers.more(200).await;
    writers.stop().await;

    let in_grant = during(&writes, granting, granted);
    let after_grant = during(&writes, granted, written);
    let in_revoke = during(&writes, revoking, revoked);
    report("before the grant", &quiet);
    report("while the grant ran", &in_grant);
    report("after the grant, the peer catching up", &after_grant);
    report("while the revocation ran", &in_revoke);
    eprintln!(
        "grant took {:?}, the peer caught up {:?} after it, revoke took {:?}",
        granted - granting,
        caught_up - granted,
        revoked - revoking
    );
    for (what, lat, took) in [
        ("while granting", &in_grant, granted - granting),
        (
            "while the peer caught up",
            &after_grant,
            caught_up - granted,
        ),
        ("while revoking", &in_revoke, revoked - revoking),
    ] {
        let bound = P99_BOUND.max(took / P99_SHARE_OF_OPERATION);
        assert!(
            lat.len() >= 20,
            "too few writes {what} to measure: {}",
            lat.len()
        );
        assert!(
            p(lat, 0.99) <= bound,
            "p99 {what}: {:?} (bound {bound:?})",
            p(lat, 0.99)
        );
    }

    // The peer purges the whole case and confirms it.
    let seen = Arc::new(Mutex::new(String::from("nothing yet")));
    let _dump = ShowOnFailure {
        log: log.clone(),
        seen: seen.clone(),
    };
    eventually(
        Duration::from_secs(300),
        "the peer to purge the case",
        || async {
            let note = |s: String| *seen.lock().unwrap() = s;
            let grants = match cluster.nodes[0].kit().grants().await {
                Ok(g) => g,
                Err(e) => {
                    note(format!("listing the origin's grants: {e}"));
                    return None;
                }
            };
            let acked = grants
                .iter()
                .any(|g| g.id == grant.id && g.purge_ack.is_some());
            let held = match peer.holdings().await {
                Ok(h) => h,
                Err(e) => {
                    note(format!("listing the peer's records: {e}"));
                    return None;
                }
            };
            note(format!(
                "purge acknowledged: {acked}; the peer holds {} records; \
                 the origin sees: {}; the peer sees: {}",
                held.len(),
                link(cluster.nodes[0].kit()).await,
                link(&peer).await,
            ));
            (acked && held.is_empty()).then_some(())
        },
    )
    .await;
    eprintln!(
        "the peer purged the case {:?} after the revocation",
        revoked.elapsed()
    );
    // No version written after the revocation ever reached it.
    let late: BTreeSet<(String, u64)> = writes
        .lock()
        .unwrap()
        .iter()
        .filter(|w| w.at >= revoked)
        .map(|w| (w.id.clone(), w.version))
        .collect();
    assert!(late.len() >= 100);
    let applied: BTreeSet<(String, u64)> = audited(&peer, "replica.applied")
        .await
        .into_iter()
        .collect();
    assert!(applied.len() > SEEDED, "{} applied", applied.len());
    let arrived: Vec<_> = late.intersection(&applied).collect();
    assert!(
        arrived.is_empty(),
        "written after the revocation, reached the peer: {arrived:?}"
    );
    peer.stop().await.expect("the peer stops");
    cluster.stop_all().await;
}

/// How `office` sees its link to its one peer, for a failure message.
async fn link(office: &Office) -> String {
    let peers = match office.admin().await {
        Ok(mut admin) => admin.list_peers(pb::ListPeersRequest::default()).await,
        Err(e) => return format!("no admin channel: {e}"),
    };
    match peers {
        Ok(r) => r
            .into_inner()
            .peers
            .iter()
            .map(|p| {
                format!(
                    "{} connected={} checkpoint={} outbox_pending={} replicas={} last_error={:?}",
                    p.office, p.connected, p.checkpoint, p.outbox_pending, p.replicas, p.last_error
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        Err(e) => format!("ListPeers failed: {e}"),
    }
}

/// On a panic, shows what a wait saw last and the end of a peer's log.
struct ShowOnFailure {
    log: std::path::PathBuf,
    seen: Arc<Mutex<String>>,
}

impl Drop for ShowOnFailure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let seen = self.seen.lock().map(|s| s.clone()).unwrap_or_default();
        eprintln!("last seen: {seen}");
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| !l.contains("call answered"))
            .collect();
        eprintln!("the peer's log, last lines (of {}):", lines.len());
        for line in &lines[lines.len().saturating_sub(60)..] {
            eprintln!("  {}", line.chars().take(300).collect::<String>());
        }
    }
}
