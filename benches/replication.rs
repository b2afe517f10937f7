//! `cargo bench --bench replication [-- --quick]`
//!
//! Real casemesh nodes in this process (the origins of the backfill, fan-out
//! and memory measures and the `blobs` phase's two nodes in `casemesh
//! serve` child processes), real mutual TLS on loopback, and the ceilings
//! measured in the same run: sled batch ingest, sled insert-then-flush, a
//! raw tonic mTLS stream of the same payload, and a raw mTLS byte stream;
//! the verified-ingest ceiling (the backfill's versions verified on every
//! core and applied through the store, no network) and the write ceiling
//! (puts' versions signed and written through the store's group commit,
//! no gRPC); for files, a tonic mTLS stream of 1 MiB messages, the same
//! written to a file and fsynced, and BLAKE3.
//! Each figure is the median of several repetitions; results print as one Markdown table with the
//! ratios the targets are stated in. `--quick` shrinks everything to a smoke
//! test of the harness (for CI), not a measurement.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use casemesh::cluster::{self, Office};
use casemesh::domain::NodeAddr;
use casemesh::domain::OfficeId;
use casemesh::domain::audit::{Actor, Draft, Outcome, Target};
use casemesh::domain::record::RecordVersion;
use casemesh::domain::{RecordId, SignedVersion};
use casemesh::identity::tls::{PemIdentity, TrustStore, client_config, server_config};
use casemesh::identity::{OfficeCa, OfficeSigner, OfficeVerifier};
use casemesh::protocol::pb::{self, records_client::RecordsClient, records_server};
use casemesh::protocol::transport;
use casemesh::store::{ApplyItem, Store, StoreOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

#[path = "replication/scale.rs"]
mod scale;
#[path = "../tests/suite/scripted.rs"]
mod scripted;
#[path = "replication/search.rs"]
mod search;
use scripted::{Say, ScriptedOrigin};

/// The same allocator as the `casemesh` binary, for the in-process nodes.
#[global_allocator]
static ALLOC: casemesh::alloc::Allocator = casemesh::alloc::Allocator {};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const RECORD: usize = 1024;
const MIB: usize = 1 << 20;

#[derive(Clone, Copy)]
struct Sizes {
    reps: usize,
    ingest: usize,
    single_flush: usize,
    stream: usize,
    tls_bytes: usize,
    backfill: usize,
    live: usize,
    live_rate: u64,
    puts_1: usize,
    puts_32: usize,
    idle_records: usize,
    /// The `blobs` phase's large file, in bytes.
    blob: usize,
    /// The `blobs` phase's files of 1 MiB.
    small_files: usize,
    search: search::Sizes,
}

const FULL: Sizes = Sizes {
    reps: 3,
    ingest: 100_000,
    single_flush: 3_000,
    stream: 500_000,
    tls_bytes: 1 << 30,
    backfill: 100_000,
    live: 2_000,
    live_rate: 200,
    puts_1: 3_000,
    puts_32: 40_000,
    idle_records: 1_000_000,
    blob: 1 << 30,
    small_files: 100,
    search: search::FULL,
};

const QUICK: Sizes = Sizes {
    reps: 1,
    ingest: 5_000,
    single_flush: 200,
    stream: 20_000,
    tls_bytes: 16 << 20,
    backfill: 2_000,
    live: 100,
    live_rate: 200,
    puts_1: 200,
    puts_32: 2_000,
    idle_records: 5_000,
    blob: 64 << 20,
    small_files: 10,
    search: search::QUICK,
};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn body(i: usize) -> Vec<u8> {
    let mut b = vec![b'x'; RECORD];
    let tag = format!("{i:016}");
    b[..16].copy_from_slice(tag.as_bytes());
    b
}

// ---- ceilings ---------------------------------------------------------

/// A fresh sled database for a ceiling, flushed only when asked.
fn ceiling_db() -> Res<(tempfile::TempDir, sled::Db)> {
    let dir = tempfile::tempdir()?;
    let db = sled::Config::new()
        .path(dir.path())
        .cache_capacity(64 << 20)
        .flush_every_ms(None)
        .open()?;
    Ok((dir, db))
}

fn sled_batch_ingest(n: usize) -> Res<f64> {
    let (_dir, db) = ceiling_db()?;
    let start = Instant::now();
    for i in 0..n {
        db.insert(format!("{i:016}").as_bytes(), body(i))?;
        if (i + 1) % 1000 == 0 {
            db.flush()?;
        }
    }
    db.flush()?;
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn sled_insert_then_flush(n: usize) -> Res<f64> {
    let (_dir, db) = ceiling_db()?;
    let start = Instant::now();
    for i in 0..n {
        db.insert(format!("{i:016}").as_bytes(), body(i))?;
        db.flush()?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Two in-memory offices: a server identity and a client node identity
/// that the server trusts.
struct Pki {
    trust: Arc<TrustStore>,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

fn pki() -> Res<Pki> {
    let admin = casemesh::domain::UserName::parse("admin")?;
    let a = OfficeId::parse("bench-a")?;
    let b = OfficeId::parse("bench-b")?;
    let (ca_a, ma) = OfficeCa::create(&a, &[], &admin)?;
    let (ca_b, mb) = OfficeCa::create(&b, &[], &admin)?;
    let trust = Arc::new(TrustStore::new(a, ca_a.cert_der.clone(), HashMap::new())?);
    trust.set_peers(vec![(b, ca_b.cert_der.clone())])?;
    let server = server_config(
        PemIdentity::from_pem(ma.node_cert_pem.as_bytes(), ma.node_key_pem.as_bytes())?,
        &trust,
    )?;
    let client = client_config(
        std::slice::from_ref(&ca_a.cert_der),
        PemIdentity::from_pem(mb.node_cert_pem.as_bytes(), mb.node_key_pem.as_bytes())?,
    )?;
    Ok(Pki {
        trust,
        server: Arc::new(server),
        client: Arc::new(client),
    })
}

/// A loopback listener that accepts mTLS connections as a node does, for a
/// raw tonic server; returns its port and its stream of connections.
async fn mtls_listener(
    pki: &Pki,
    max_connections: usize,
) -> Res<(
    u16,
    tokio_stream::wrappers::ReceiverStream<Result<transport::TlsConn, std::io::Error>>,
)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let (incoming, _accept) = transport::incoming(
        listener,
        pki.server.clone(),
        pki.trust.clone(),
        Arc::new(|_, _| Box::pin(async {})),
        transport::AcceptOptions {
            handshake_timeout: Duration::from_secs(5),
            max_connections,
            max_handshakes_per_source: 64,
        },
    );
    Ok((port, incoming))
}

async fn grpc_stream(pki: &Pki, n: usize) -> Res<f64> {
    let (port, incoming) = mtls_listener(pki, 8).await?;
    // Streams `n` entries of 1 KiB in messages of 100, as fast as it can:
    // no store, no signatures.
    let server = ScriptedOrigin::new(move |say: Say| async move {
        let payload = bytes::Bytes::from(body(0));
        let mut sent = 0;
        while sent < n {
            let entries = (0..100.min(n - sent))
                .map(|i| pb::FeedEntry {
                    seq: (sent + i) as u64,
                    kind: Some(pb::feed_entry::Kind::Version(pb::ReplicatedVersion {
                        canonical: payload.clone(),
                        signature: bytes::Bytes::from_static(&[0; 72]),
                    })),
                })
                .collect::<Vec<_>>();
            sent += entries.len();
            let msg = pb::PullDown {
                kind: Some(pb::pull_down::Kind::Batch(pb::Batch {
                    entries,
                    last_seq: sent as u64,
                    audit_head: None,
                })),
            };
            if say.send(Ok(msg)).await.is_err() {
                return;
            }
        }
    })
    .serve(incoming);
    let ch = transport::connect(
        &NodeAddr {
            host: "127.0.0.1".into(),
            port,
        },
        pki.client.clone(),
    )
    .await?;
    let start = Instant::now();
    let mut down = pb::replication_client::ReplicationClient::new(ch)
        .pull(tokio_stream::iter(vec![pb::PullUp::default()]))
        .await?
        .into_inner();
    let mut got = 0;
    while let Some(msg) = down.message().await? {
        if let Some(pb::pull_down::Kind::Batch(b)) = msg.kind {
            got += b.entries.len();
            if got >= n {
                break;
            }
        }
    }
    let rate = got as f64 / start.elapsed().as_secs_f64();
    server.abort();
    Ok(rate)
}

/// Answers every `Put` at once and stores nothing: the cost of a unary call
/// over mutual TLS, the transport's own share of a durable put. `GetBlob`
/// streams `blob` from memory in 1 MiB messages, whatever the hash asked
/// for: the transport's share of moving a file.
struct NoopRecords {
    blob: bytes::Bytes,
}

#[tonic::async_trait]
impl records_server::Records for NoopRecords {
    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(pb::PutResponse {
            id: r.title,
            version: 1,
            digest: bytes::Bytes::from_static(&[0; 32]),
            updated_at_ms: 0,
        }))
    }

    async fn get(&self, _: Request<pb::GetRequest>) -> Result<Response<pb::Record>, Status> {
        Err(Status::unimplemented("this server only takes puts"))
    }

    async fn history(
        &self,
        _: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        Err(Status::unimplemented("this server only takes puts"))
    }

    async fn list(
        &self,
        _: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        Err(Status::unimplemented("this server only takes puts"))
    }

    async fn delete(
        &self,
        _: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        Err(Status::unimplemented("this server only takes puts"))
    }

    async fn put_blob(
        &self,
        _: Request<Streaming<pb::PutBlobRequest>>,
    ) -> Result<Response<pb::BlobInfo>, Status> {
        Err(Status::unimplemented("this server only takes puts"))
    }

    async fn search(
        &self,
        _: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        Err(Status::unimplemented("this server only takes puts"))
    }

    type GetBlobStream = casemesh::grpc::server_records::BlobStream;

    async fn get_blob(
        &self,
        _: Request<pb::GetBlobRequest>,
    ) -> Result<Response<Self::GetBlobStream>, Status> {
        let chunks = pieces(&self.blob).map(|(offset, data)| Ok(pb::BlobChunk { offset, data }));
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
}

/// [`NoopRecords`] serving `blob` on a loopback port over mutual TLS, as a
/// node accepts connections; abort the task when done.
async fn noop_records(
    pki: &Pki,
    blob: bytes::Bytes,
    max_connections: usize,
) -> Res<(
    NodeAddr,
    tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
)> {
    let (port, incoming) = mtls_listener(pki, max_connections).await?;
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(records_server::RecordsServer::new(NoopRecords { blob }))
            .serve_with_incoming(incoming),
    );
    let node = NodeAddr {
        host: "127.0.0.1".into(),
        port,
    };
    Ok((node, server))
}

/// Unary `Put` calls with the records' payload against [`NoopRecords`],
/// `n` in all from `clients` connections: (calls/s for 1 client, for
/// `clients`).
async fn grpc_unary(pki: &Pki, n_1: usize, n: usize, clients: usize) -> Res<(f64, f64)> {
    let (node, server) = noop_records(pki, bytes::Bytes::new(), clients + 1).await?;
    let connect = async |count: usize| -> Res<Vec<RecordsClient<Channel>>> {
        let mut v = Vec::with_capacity(count);
        for _ in 0..count {
            v.push(RecordsClient::new(
                transport::connect(&node, pki.client.clone()).await?,
            ));
        }
        Ok(v)
    };
    let (one, _) = put_many(connect(1).await?, "c", n_1).await?;
    let (many, _) = put_many(connect(clients).await?, "c", n).await?;
    server.abort();
    Ok((one, many))
}

async fn tls_bytes(pki: &Pki, total: usize) -> Res<f64> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.server.clone());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let mut tls = acceptor.accept(tcp).await?;
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0usize;
        while got < total {
            let n = tls.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            got += n;
        }
        tls.write_all(b"k").await?;
        tls.flush().await?;
        tls.shutdown().await?;
        Ok::<usize, std::io::Error>(got)
    });
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let connector = tokio_rustls::TlsConnector::from(pki.client.clone());
    let mut tls = connector
        .connect(rustls_pki_types::ServerName::try_from("127.0.0.1")?, tcp)
        .await?;
    let chunk = vec![7u8; 1 << 20];
    let start = Instant::now();
    let mut sent = 0;
    while sent < total {
        tls.write_all(&chunk).await?;
        sent += chunk.len();
    }
    tls.flush().await?;
    let mut ack = [0u8; 1];
    tls.read_exact(&mut ack).await?;
    let secs = start.elapsed().as_secs_f64();
    server.await??;
    Ok(total as f64 / secs / 1e6)
}

// ---- ceilings that do a node's work without the network ---------------

/// The store a node opens, with the default `[store]` settings, in `dir`.
fn bench_store(dir: &Path, office: &str) -> Res<Store> {
    let options = StoreOptions::from(&casemesh::config::StoreConfig {
        min_free_mb: 0,
        ..Default::default()
    });
    Ok(Store::open(&dir.join("store"), office, &options)?)
}

/// `versions` in batches as a feed sends them: up to 1 MiB of versions
/// each.
fn feed_batches(versions: &[(Bytes, Bytes)]) -> Vec<Vec<(Bytes, Bytes)>> {
    let mut batches = Vec::new();
    let mut batch = Vec::new();
    let mut bytes = 0;
    for v in versions {
        bytes += v.0.len() + v.1.len();
        batch.push(v.clone());
        if bytes >= MIB {
            batches.push(std::mem::take(&mut batch));
            bytes = 0;
        }
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    batches
}

/// Checks a batch as a puller must (signature, origin, shape) on every
/// core: one part per core on a thread of its own.
fn verify_on_all_cores(
    verifier: &OfficeVerifier,
    batch: Vec<(Bytes, Bytes)>,
) -> Res<Vec<ApplyItem>> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let part = batch.len().div_ceil(cores).max(1);
    std::thread::scope(|scope| {
        let parts: Vec<_> = batch
            .chunks(part)
            .map(|p| {
                scope.spawn(move || {
                    p.iter()
                        .map(|(c, s)| {
                            casemesh::sync::puller::verify(verifier, c.clone(), s.clone())
                                .map(|v| ApplyItem::Version(Box::new(v)))
                                .map_err(|e| e.to_string())
                        })
                        .collect::<Result<Vec<_>, String>>()
                })
            })
            .collect();
        let mut items = Vec::with_capacity(batch.len());
        for p in parts {
            items.extend(p.join().map_err(|_| "a verifying thread panicked")??);
        }
        Ok(items)
    })
}

/// The verified-ingest ceiling: what one process does with `versions`
/// (signed by `origin`) when nothing but checking and storing them costs
/// anything. Batches as a feed sends them are verified on every core, a
/// batch ahead of the one being applied, and applied through the store's
/// replica path (`apply_batch`, one transaction with its checkpoint and
/// audit entry) and group commit, as a puller does; records/s.
async fn verified_ingest(
    origin: &OfficeId,
    verifier: &OfficeVerifier,
    versions: &[(Bytes, Bytes)],
) -> Res<f64> {
    let dir = tempfile::tempdir()?;
    let store = bench_store(dir.path(), "ceiling-da")?;
    let batches = feed_batches(versions);
    let start = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Res<Vec<ApplyItem>>>(1);
    let checker = verifier.clone();
    let verifying = tokio::task::spawn_blocking(move || {
        for batch in batches {
            if tx
                .blocking_send(verify_on_all_cores(&checker, batch))
                .is_err()
            {
                return;
            }
        }
    });
    let mut seq = 0;
    let mut stored = 0;
    while let Some(items) = rx.recv().await {
        let items = items?;
        seq += 1;
        let outcome = store.apply_batch(origin, &items, seq, casemesh::domain::now_ms(), &[])?;
        store.commit().await?;
        stored += outcome.applied;
    }
    verifying.await?;
    let rate = stored as f64 / start.elapsed().as_secs_f64();
    if stored != versions.len() {
        return Err(format!("the ceiling stored {stored} of {} versions", versions.len()).into());
    }
    Ok(rate)
}

/// Every version of `collection` in the (stopped) node `office`'s store,
/// as a feed sends them, with a verifier of its office's signatures.
fn stored_versions(
    office: &Office,
    collection: &str,
) -> Res<(Vec<(Bytes, Bytes)>, OfficeVerifier)> {
    let store = bench_store(&office.dir, office.office.as_str())?;
    let mut out = Vec::new();
    for id in store.collection_record_ids(collection)? {
        for v in store.history(&id)? {
            out.push((v.canonical, v.signature));
        }
    }
    let ca = casemesh::identity::pki::certs_from_pem(&office.ca_pem()?)?;
    let ca = ca.first().ok_or("no office CA certificate")?;
    let verifier = OfficeVerifier::from_ca_cert(office.office.clone(), ca.as_ref())?;
    Ok((out, verifier))
}

/// A version as a `Put` of record `i` writes it: a new record with the
/// bench's 1 KiB body, signed by the office key.
fn signed_put(ca: &OfficeCa, office: &OfficeId, collection: &str, i: usize) -> Res<SignedVersion> {
    let now = casemesh::domain::now_ms();
    let mut random = [0u8; 10];
    casemesh::domain::random_bytes(&mut random);
    let req = put_req(collection, i);
    let record = RecordVersion {
        id: RecordId::generate(office, now, random),
        version: 1,
        origin: office.clone(),
        collection: req.collection,
        kind: req.kind,
        title: req.title,
        content_type: req.content_type,
        labels: Default::default(),
        body: req.body,
        created_at_ms: now,
        updated_at_ms: now,
        deleted: false,
        attachments: Vec::new(),
        subjects: Vec::new(),
    };
    Ok(OfficeSigner::new(ca).sign(record)?)
}

/// The write ceiling: `n` puts' versions built, signed and written with
/// their audit entry through the store's group commit by `writers`
/// concurrent tasks in this process, each waiting until its write is
/// durable, as `Put` does — without gRPC, TLS, authorization or the
/// sharing rule; (puts/s, latencies sorted).
async fn write_ceiling(n: usize, writers: usize) -> Res<(f64, Vec<Duration>)> {
    let dir = tempfile::tempdir()?;
    let office = OfficeId::parse("writer-da")?;
    let admin = casemesh::domain::UserName::parse("admin")?;
    let (ca, _) = OfficeCa::create(&office, &[], &admin)?;
    let ca = Arc::new(ca);
    let store = Arc::new(bench_store(dir.path(), office.as_str())?);
    let actor = Actor {
        kind: "user".into(),
        name: "admin".into(),
        role: "admin".into(),
        office: office.to_string(),
        fingerprint: format!("sha256:{}", "0".repeat(64)),
        remote: "127.0.0.1:40000".into(),
    };
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let share = n / writers + usize::from(w < n % writers);
        let (ca, store, office, actor) = (ca.clone(), store.clone(), office.clone(), actor.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(share);
            for i in 0..share {
                let t = Instant::now();
                let signed = signed_put(&ca, &office, "c", w * 1_000_000 + i)?;
                let mut target = Target::record(signed.record.id.as_str(), signed.record.version);
                target.collection = signed.record.collection.clone();
                let entry = Draft::new(actor.clone(), "Records.Put", target, Outcome::ok());
                store
                    .write_version(&signed, None, Vec::new(), vec![entry])
                    .await?;
                lat.push(t.elapsed());
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(lat)
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await??);
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    all.sort();
    Ok((rate, all))
}

/// CPU time (user + system, every thread) process `pid` has used, in
/// seconds, from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> Res<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces): state is
    // field 3, utime 14 and stime 15, in clock ticks.
    let rest = stat
        .rsplit_once(')')
        .ok_or("no command name in /proc/PID/stat")?
        .1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Res<f64> {
        Ok(fields
            .get(i)
            .ok_or("short /proc/PID/stat")?
            .parse::<f64>()?)
    };
    Ok((ticks(11)? + ticks(12)?) / clock_ticks()?)
}

/// Clock ticks per second (`getconf CLK_TCK`).
fn clock_ticks() -> Res<f64> {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()?;
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

/// The node-wide feed counters a `casemesh serve` log reports last when a
/// feed stream ends: (versions served, versions read from the store).
fn feed_counts(log: &Path) -> Res<(u64, u64)> {
    let text = std::fs::read_to_string(log)?;
    let field = |line: &str, key: &str| -> Option<u64> {
        let at = line.find(key)? + key.len();
        line[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    text.lines()
        .filter(|l| l.contains("feed stream ended"))
        .filter_map(|l| {
            Some((
                field(l, "node_versions_served=")?,
                field(l, "node_versions_read=")?,
            ))
        })
        .max()
        .ok_or_else(|| format!("no feed counters in {}", log.display()).into())
}

// ---- file ceilings ----------------------------------------------------

/// `n` random bytes (BLAKE3's output stream from `seed`): nothing a store
/// could compress or find twice.
fn random_bytes(seed: &str, n: usize) -> bytes::Bytes {
    let mut b = vec![0; n];
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut b);
    b.into()
}

/// `bytes` in pieces of 1 MiB, each with its offset (no copies).
fn pieces(bytes: &bytes::Bytes) -> impl Iterator<Item = (u64, bytes::Bytes)> + Send + 'static {
    let bytes = bytes.clone();
    (0..bytes.len())
        .step_by(MIB)
        .map(move |at| (at as u64, bytes.slice(at..(at + MIB).min(bytes.len()))))
}

fn mb_per_s(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / took.as_secs_f64() / 1e6
}

/// Takes a blob stream to its end, each piece checked against `expected`
/// as it arrives (the downloads and the ceilings do the same work per
/// byte), and with `file`, writes the bytes there and fsyncs at the end.
async fn receive(
    down: &mut Streaming<pb::BlobChunk>,
    expected: &[u8],
    mut file: Option<tokio::fs::File>,
) -> Res<()> {
    let mut at = 0;
    while let Some(piece) = down.message().await? {
        let end = at + piece.data.len();
        if piece.offset != at as u64 || expected.get(at..end) != Some(&piece.data[..]) {
            return Err(format!("the bytes at offset {at} are not the ones sent").into());
        }
        if let Some(f) = &mut file {
            f.write_all(&piece.data).await?;
        }
        at = end;
    }
    if at != expected.len() {
        return Err(format!("{at} of {} bytes came back", expected.len()).into());
    }
    if let Some(f) = &mut file {
        f.sync_all().await?;
    }
    Ok(())
}

/// Ceilings (a) and (b): a `GetBlob` stream of `blob` from [`NoopRecords`]
/// in 1 MiB messages, received as the downloads are, and with `into`,
/// written to that file and fsynced; MB/s.
async fn grpc_blob(pki: &Pki, blob: &bytes::Bytes, into: Option<&Path>) -> Res<f64> {
    let (node, server) = noop_records(pki, blob.clone(), 2).await?;
    let mut client = RecordsClient::new(transport::connect(&node, pki.client.clone()).await?);
    let file = match into {
        Some(path) => Some(tokio::fs::File::create(path).await?),
        None => None,
    };
    let start = Instant::now();
    let mut down = client
        .get_blob(pb::GetBlobRequest::default())
        .await?
        .into_inner();
    receive(&mut down, blob, file).await?;
    let rate = mb_per_s(blob.len(), start.elapsed());
    server.abort();
    if let Some(path) = into {
        std::fs::remove_file(path)?;
    }
    Ok(rate)
}

/// Ceiling (c): BLAKE3 over `blob` on one thread, in 1 MiB pieces; MB/s
/// and the hash.
fn blake3_rate(blob: &bytes::Bytes) -> (f64, blake3::Hash) {
    let start = Instant::now();
    let mut h = blake3::Hasher::new();
    for (_, piece) in pieces(blob) {
        h.update(&piece);
    }
    let hash = h.finalize();
    (mb_per_s(blob.len(), start.elapsed()), hash)
}

// ---- nodes ------------------------------------------------------------

/// Writers for an office of the kit: `count` clients, each on its own
/// connection.
async fn writers(office: &Office, count: usize) -> Res<Vec<RecordsClient<Channel>>> {
    let mut v = Vec::with_capacity(count);
    for _ in 0..count {
        v.push(office.records().await?);
    }
    Ok(v)
}

/// Pins both ways.
async fn pin_both(a: &Office, b: &Office) -> Res<()> {
    a.pin(b).await?;
    b.pin(a).await?;
    Ok(())
}

fn put_req(collection: &str, i: usize) -> pb::PutRequest {
    pb::PutRequest {
        collection: collection.into(),
        kind: "incident-report".into(),
        title: format!("record {i}"),
        body: body(i).into(),
        content_type: "application/octet-stream".into(),
        ..Default::default()
    }
}

/// `n` puts shared out over `clients`, each on its own connection, all
/// at once; returns (puts/s, latencies sorted).
async fn put_many(
    clients: Vec<RecordsClient<Channel>>,
    collection: &str,
    n: usize,
) -> Res<(f64, Vec<Duration>)> {
    let mut tasks = Vec::new();
    let count = clients.len();
    let start = Instant::now();
    for (c, mut rc) in clients.into_iter().enumerate() {
        let collection = collection.to_owned();
        let share = n / count + usize::from(c < n % count);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(share);
            for i in 0..share {
                let t = Instant::now();
                rc.put(put_req(&collection, c * 1_000_000 + i)).await?;
                lat.push(t.elapsed());
            }
            Ok::<_, Status>(lat)
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await??);
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    all.sort();
    Ok((rate, all))
}

/// Counts applied versions at a node until `n`, or fails after `limit`.
async fn wait_applied(
    mut rx: tokio::sync::broadcast::Receiver<casemesh::sync::Applied>,
    n: usize,
    limit: Duration,
) -> Res<Instant> {
    // Distinct versions: a batch re-sent after a reconnect is applied (as a
    // no-op) and announced again, and must not count twice.
    let mut seen = std::collections::HashSet::new();
    let deadline = Instant::now() + limit;
    while seen.len() < n {
        let got = seen.len();
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Ok(a)) => seen.extend(a.versions.iter().cloned()),
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(k))) => {
                return Err(format!("fell behind by {k} batches").into());
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(format!("only {got} of {n} applied after {limit:?}").into()),
        }
    }
    Ok(Instant::now())
}

struct FanOut {
    backfill_per_peer: Vec<f64>,
    live: Vec<Duration>,
    /// The origin's CPU time (user + system, all threads) from the grants
    /// until every peer applied the last version, in seconds.
    origin_cpu: f64,
    /// The part of it spent until the grant calls returned (queueing).
    grant_cpu: f64,
    /// The origin's feed counters when it stopped: versions served, and
    /// versions read from its store for that.
    feed: (u64, u64),
    /// The verified-ingest ceiling over the case's versions, when asked.
    ceiling: Option<f64>,
}

/// One origin (a `casemesh serve` process) and `peers` peers (in this
/// process): backfill of `n` records, then live writes; with `ceiling`,
/// the verified-ingest ceiling over the same versions afterwards, with
/// every node stopped.
async fn fan_out(s: Sizes, peers: usize, live: bool, ceiling: bool) -> Res<FanOut> {
    let root = tempfile::tempdir()?;
    let bin = Path::new(env!("CARGO_BIN_EXE_casemesh"));
    let log = root.path().join("origin.log");
    let mut origin = Office::start_process_logging(root.path(), "origin-da", bin, &log).await?;
    let pid = origin.pid().ok_or("origin not a process")?;
    let mut nodes = Vec::new();
    for i in 0..peers {
        let p = Office::start(root.path(), &format!("peer-{i}-da")).await?;
        pin_both(&origin, &p).await?;
        nodes.push(p);
    }
    put_many(writers(&origin, 32).await?, "big-case", s.backfill).await?;
    let receivers: Vec<_> = nodes
        .iter()
        .map(Office::subscribe_applied)
        .collect::<Option<_>>()
        .ok_or("node not running")?;
    let cpu_before = cpu_seconds(pid)?;
    let start = Instant::now();
    for p in &nodes {
        origin.grant_collection(&p.office, "big-case").await?;
    }
    let grant_cpu = cpu_seconds(pid)? - cpu_before;
    eprintln!(
        "  grants queued in {:?}, origin CPU {grant_cpu:.2} s",
        start.elapsed()
    );
    let mut waits = Vec::new();
    for rx in receivers {
        waits.push(tokio::spawn(wait_applied(
            rx,
            s.backfill,
            Duration::from_secs(600),
        )));
    }
    let mut per_peer = Vec::new();
    for w in waits {
        let done = w.await??;
        per_peer.push(s.backfill as f64 / (done - start).as_secs_f64());
    }
    let origin_cpu = cpu_seconds(pid)? - cpu_before;

    let mut latencies = Vec::new();
    if live {
        latencies = live_latency(&origin, &nodes, s).await?;
    }
    for mut n in nodes {
        n.stop().await?;
    }
    origin.stop().await?;
    let feed = feed_counts(&log)?;
    let ceiling = if ceiling {
        let (versions, verifier) = stored_versions(&origin, "big-case")?;
        Some(verified_ingest(&origin.office, &verifier, &versions).await?)
    } else {
        None
    };
    Ok(FanOut {
        backfill_per_peer: per_peer,
        live: latencies,
        origin_cpu,
        grant_cpu,
        feed,
        ceiling,
    })
}

/// Steady writes at `s.live_rate`/s; for each write and each peer, the time
/// from `Put` returning to the version being durable and readable there.
async fn live_latency(origin: &Office, peers: &[Office], s: Sizes) -> Res<Vec<Duration>> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let mut listeners = Vec::new();
    for p in peers {
        let mut sub = p.subscribe_applied().ok_or("node not running")?;
        let tx = tx.clone();
        listeners.push(tokio::spawn(async move {
            while let Ok(a) = sub.recv().await {
                let now = Instant::now();
                for (id, _) in a.versions.iter() {
                    let _ = tx.send((id.to_string(), now));
                }
            }
        }));
    }
    drop(tx);
    let mut rc = origin.records().await?;
    let mut returned = HashMap::new();
    let mut arrivals: HashMap<String, Vec<Instant>> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / s.live_rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for i in 0..s.live {
        tick.tick().await;
        let id = rc
            .put(put_req("big-case", 50_000_000 + i))
            .await?
            .into_inner()
            .id;
        returned.insert(id, Instant::now());
        while let Ok((id, at)) = rx.try_recv() {
            arrivals.entry(id).or_default().push(at);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let expected = s.live * peers.len();
    let mut seen: usize = arrivals.values().map(Vec::len).sum();
    while seen < expected && Instant::now() < deadline {
        if let Ok(Some((id, at))) = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
            arrivals.entry(id).or_default().push(at);
            seen += 1;
        }
    }
    for l in listeners {
        l.abort();
    }
    let mut lat = Vec::new();
    for (id, t0) in &returned {
        for at in arrivals.get(id).into_iter().flatten() {
            // A batch applied before Put returned at the origin counts as 0.
            lat.push(at.saturating_duration_since(*t0));
        }
    }
    if lat.len() < expected {
        return Err(format!("only {} of {expected} live writes arrived", lat.len()).into());
    }
    lat.sort();
    Ok(lat)
}

// ---- memory (a node in a child process) -------------------------------

struct Memory {
    backfill_peak_mib: f64,
    idle_mib: f64,
    idle_records: usize,
}

/// The origin runs as its own process: its peak RSS through writing and
/// backfilling `s.backfill` records to an in-process peer, then its idle RSS
/// after a restart with `s.idle_records` stored.
async fn memory(s: Sizes) -> Res<Memory> {
    let root = tempfile::tempdir()?;
    let bin = Path::new(env!("CARGO_BIN_EXE_casemesh"));
    let mut origin = Office::start_process(root.path(), "origin-da", bin).await?;
    let pid = origin.pid().ok_or("origin not a process")?;
    let peer = Office::start(root.path(), "peer-da").await?;
    pin_both(&origin, &peer).await?;
    put_many(writers(&origin, 32).await?, "big-case", s.backfill).await?;
    let rx = peer.subscribe_applied().ok_or("peer not running")?;
    origin.grant_collection(&peer.office, "big-case").await?;
    wait_applied(rx, s.backfill, Duration::from_secs(600)).await?;
    let backfill_peak = cluster::proc_kib(pid, "VmHWM:")?;
    let mut peer = peer;
    peer.stop().await?;

    // Fill up to the idle size, then restart and let it settle.
    let more = s.idle_records.saturating_sub(s.backfill);
    put_many(writers(&origin, 32).await?, "archive", more).await?;
    origin.serve_process(bin).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = cluster::proc_kib(origin.pid().ok_or("origin not a process")?, "VmRSS:")?;
    origin.stop().await?;
    Ok(Memory {
        backfill_peak_mib: backfill_peak as f64 / 1024.0,
        idle_mib: idle as f64 / 1024.0,
        idle_records: s.idle_records,
    })
}

// ---- blobs (two nodes, each a `casemesh serve` process) ---------------

/// How long a file may take to reach the peer before the phase fails.
const BLOB_WAIT: Duration = Duration::from_secs(300);

/// One repetition of the `blobs` phase: the ceilings, then a fresh pair of
/// nodes. Rates in MB/s; growths in MiB; disk per byte of the file.
struct BlobRun {
    stream: f64,
    into_file: f64,
    blake3: f64,
    upload: f64,
    replicate: f64,
    download: f64,
    small: f64,
    rss_origin: f64,
    rss_peer: f64,
    disk_origin: f64,
    disk_peer: f64,
}

/// `PutBlob` of `bytes` from memory in 1 MiB messages, through the Records
/// API as the CLI uploads a file (in messages of 256 KiB).
async fn put_blob(records: &mut RecordsClient<Channel>, bytes: &bytes::Bytes) -> Res<pb::BlobInfo> {
    let stream = tokio_stream::iter(pieces(bytes).map(|(_, data)| pb::PutBlobRequest { data }));
    Ok(records.put_blob(stream).await?.into_inner())
}

/// A record in `collection` that lists the file `info`.
async fn attach(
    records: &mut RecordsClient<Channel>,
    collection: &str,
    info: &pb::BlobInfo,
) -> Res<()> {
    records
        .put(pb::PutRequest {
            collection: collection.into(),
            kind: "video".into(),
            title: "bodycam".into(),
            attachments: vec![pb::Attachment {
                hash: info.hash.clone(),
                file_name: "bodycam.mp4".into(),
                media_type: "video/mp4".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await?;
    Ok(())
}

/// Polls a node's status until it holds `files` whole files of `bytes` in
/// all; fails after `limit`.
async fn wait_blobs(
    admin: &mut pb::admin_client::AdminClient<Channel>,
    files: u64,
    bytes: u64,
    limit: Duration,
) -> Res<()> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let s = tokio::time::timeout(left, admin.status(pb::StatusRequest {}))
            .await
            .map_err(|_| format!("the peer's status did not answer within {limit:?}"))??
            .into_inner();
        if s.blobs >= files && s.blob_bytes >= bytes {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "after {limit:?} the peer holds {} of {files} files, {} of {bytes} bytes",
                s.blobs, s.blob_bytes
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Bytes the files under `dir` take on disk, as `du` counts them
/// (allocated blocks).
fn disk_use(dir: &Path) -> Res<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut dirs = vec![dir.to_owned()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let meta = match entry.metadata() {
                Ok(m) => m,
                // Removed by the node since it was listed.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            total += meta.blocks() * 512;
            if meta.is_dir() {
                dirs.push(entry.path());
            }
        }
    }
    Ok(total)
}

/// How far the resident memory of processes grows over a stretch of work,
/// each above what it held at the start: VmRSS sampled every 50 ms, and the
/// kernel's high-water mark (reset at the start) for a peak between samples.
struct RssWatch {
    pids: Vec<u32>,
    base: Vec<u64>,
    hwm_reset: bool,
    stop: std::sync::mpsc::Sender<()>,
    sampler: std::thread::JoinHandle<Result<Vec<u64>, String>>,
}

impl RssWatch {
    fn start(pids: &[u32]) -> Res<Self> {
        // Should the kernel refuse the reset, only the samples count.
        let hwm_reset = pids
            .iter()
            .all(|pid| std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok());
        let base = pids
            .iter()
            .map(|&pid| cluster::proc_kib(pid, "VmRSS:"))
            .collect::<Result<Vec<_>, _>>()?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let watched = pids.to_vec();
        let sampler = std::thread::spawn(move || {
            let mut peak = vec![0; watched.len()];
            loop {
                for (p, &pid) in peak.iter_mut().zip(&watched) {
                    let kib = cluster::proc_kib(pid, "VmRSS:").map_err(|e| e.to_string())?;
                    *p = kib.max(*p);
                }
                match stopped.recv_timeout(Duration::from_millis(50)) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return Ok(peak),
                }
            }
        });
        Ok(Self {
            pids: pids.to_vec(),
            base,
            hwm_reset,
            stop,
            sampler,
        })
    }

    /// Each process's growth, in MiB.
    fn finish(self) -> Res<Vec<f64>> {
        drop(self.stop);
        let mut peak = self
            .sampler
            .join()
            .map_err(|_| "the RSS sampler panicked")??;
        if self.hwm_reset {
            for (p, &pid) in peak.iter_mut().zip(&self.pids) {
                *p = cluster::proc_kib(pid, "VmHWM:")?.max(*p);
            }
        }
        Ok(peak
            .iter()
            .zip(&self.base)
            .map(|(peak, base)| peak.saturating_sub(*base) as f64 / 1024.0)
            .collect())
    }
}

/// The ceilings, then on two fresh nodes: the large file uploaded,
/// replicated to a peer granted its case, downloaded (memory and disk
/// watched throughout), then the small files replicated after one grant.
async fn blob_run(pki: &Pki, big: &bytes::Bytes, small: &[bytes::Bytes]) -> Res<BlobRun> {
    // The ceiling's file and the nodes' data on the same filesystem.
    let root = tempfile::tempdir()?;
    let stream = grpc_blob(pki, big, None).await?;
    let into_file = grpc_blob(pki, big, Some(&root.path().join("ceiling"))).await?;
    let hashed = big.clone();
    let (blake3, hash) = tokio::task::spawn_blocking(move || blake3_rate(&hashed)).await?;
    eprintln!(
        "  ceilings: stream {stream:.0} MB/s, into a file {into_file:.0} MB/s, BLAKE3 {blake3:.0} MB/s"
    );

    let bin = Path::new(env!("CARGO_BIN_EXE_casemesh"));
    let mut origin = Office::start_process(root.path(), "origin-da", bin).await?;
    let mut peer = Office::start_process(root.path(), "peer-da", bin).await?;
    pin_both(&origin, &peer).await?;
    let mut records = origin.records().await?;
    let mut peer_admin = peer.admin().await?;
    let pids = [origin.pid(), peer.pid()]
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or("a node is not a process")?;
    let disk_before = [disk_use(&origin.dir)?, disk_use(&peer.dir)?];
    let rss = RssWatch::start(&pids)?;

    let start = Instant::now();
    let info = put_blob(&mut records, big).await?;
    let upload = mb_per_s(big.len(), start.elapsed());
    if info.hash != hash.as_bytes()[..] || info.size != big.len() as u64 {
        return Err("the node's hash or size of the upload is not the file's".into());
    }
    attach(&mut records, "blob-case", &info).await?;
    let start = Instant::now();
    origin.grant_collection(&peer.office, "blob-case").await?;
    wait_blobs(&mut peer_admin, 1, big.len() as u64, BLOB_WAIT).await?;
    let replicate = mb_per_s(big.len(), start.elapsed());
    let start = Instant::now();
    let mut down = records
        .get_blob(pb::GetBlobRequest {
            hash: info.hash.clone(),
            offset: 0,
            length: 0,
        })
        .await?
        .into_inner();
    receive(&mut down, big, None).await?;
    let download = mb_per_s(big.len(), start.elapsed());
    let rss = rss.finish()?;
    let disk = |dir: &Path, before: u64| -> Res<f64> {
        Ok(disk_use(dir)?.saturating_sub(before) as f64 / big.len() as f64)
    };
    let (disk_origin, disk_peer) = (
        disk(&origin.dir, disk_before[0])?,
        disk(&peer.dir, disk_before[1])?,
    );
    eprintln!(
        "  upload {upload:.0} MB/s, replicate {replicate:.0} MB/s, download {download:.0} MB/s; RSS growth {:.0} / {:.0} MiB, disk {disk_origin:.2} / {disk_peer:.2} × the file (origin / peer)",
        rss[0], rss[1]
    );

    let mut total = 0;
    for file in small {
        let info = put_blob(&mut records, file).await?;
        attach(&mut records, "small-case", &info).await?;
        total += file.len();
    }
    let start = Instant::now();
    origin.grant_collection(&peer.office, "small-case").await?;
    let files = 1 + small.len() as u64;
    wait_blobs(
        &mut peer_admin,
        files,
        (big.len() + total) as u64,
        BLOB_WAIT,
    )
    .await?;
    let small_rate = mb_per_s(total, start.elapsed());
    eprintln!(
        "  {} × 1 MiB after one grant: {small_rate:.0} MB/s",
        small.len()
    );
    origin.stop().await?;
    peer.stop().await?;
    Ok(BlobRun {
        stream,
        into_file,
        blake3,
        upload,
        replicate,
        download,
        small: small_rate,
        rss_origin: rss[0],
        rss_peer: rss[1],
        disk_origin,
        disk_peer,
    })
}

/// The `blobs` phase: each measure the median of `s.reps` runs.
async fn blobs(s: Sizes, pki: &Pki) -> Res<BlobRun> {
    let big = random_bytes("the large file", s.blob);
    let small: Vec<_> = (0..s.small_files)
        .map(|i| random_bytes(&format!("small file {i}"), MIB))
        .collect();
    let mut runs = Vec::new();
    for _ in 0..s.reps {
        runs.push(blob_run(pki, &big, &small).await?);
    }
    let m = |f: fn(&BlobRun) -> f64| median(runs.iter().map(f).collect());
    Ok(BlobRun {
        stream: m(|r| r.stream),
        into_file: m(|r| r.into_file),
        blake3: m(|r| r.blake3),
        upload: m(|r| r.upload),
        replicate: m(|r| r.replicate),
        download: m(|r| r.download),
        small: m(|r| r.small),
        rss_origin: m(|r| r.rss_origin),
        rss_peer: m(|r| r.rss_peer),
        disk_origin: m(|r| r.disk_origin),
        disk_peer: m(|r| r.disk_peer),
    })
}

// ---- report -----------------------------------------------------------

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Seconds as a duration; a phase that did not run (NaN) shows as zero.
fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::ZERO)
}

fn row(what: &str, value: String, ratio: String, target: &str) {
    println!("| {what} | {value} | {ratio} | {target} |");
}

/// `value / base` followed by `of`, or a note that the base was not
/// measured in this run (`--only` without `ceilings`).
fn ratio(value: f64, base: f64, of: &str) -> String {
    if base.is_nan() {
        format!("– ({of} not measured in this run)")
    } else {
        format!("{:.2} × {of}", value / base)
    }
}

const PHASES: [&str; 8] = [
    "ceilings", "puts", "backfill", "fanout", "memory", "blobs", "search", "scale",
];

/// Phases to run: all, or those named by `--only a,b` (ceilings, puts,
/// backfill, fanout, memory, blobs, search) — for profiling one at a time.
/// The `scale` phase runs only when named, and alone (`--only scale`).
struct Only(Option<Vec<String>>);

impl Only {
    fn has(&self, phase: &str) -> bool {
        self.0.as_ref().is_none_or(|v| v.iter().any(|p| p == phase))
    }
}

async fn run(s: Sizes, only: Only) -> Res<()> {
    let reps = s.reps;
    if only.has("ceilings") {
        eprintln!("ceilings…");
    }
    let mut ingest = Vec::new();
    let mut single = Vec::new();
    let mut stream = Vec::new();
    let mut bytes = Vec::new();
    let mut unary_1 = Vec::new();
    let mut unary_32 = Vec::new();
    let pki = pki()?;
    for _ in 0..if only.has("ceilings") { reps } else { 0 } {
        ingest.push(tokio::task::spawn_blocking(move || sled_batch_ingest(s.ingest)).await??);
        single.push(
            tokio::task::spawn_blocking(move || sled_insert_then_flush(s.single_flush)).await??,
        );
        stream.push(grpc_stream(&pki, s.stream).await?);
        bytes.push(tls_bytes(&pki, s.tls_bytes).await?);
        let (one, many) = grpc_unary(&pki, s.puts_1, s.puts_32, 32).await?;
        unary_1.push(one);
        unary_32.push(many);
    }
    let nan = |v: Vec<f64>| if v.is_empty() { f64::NAN } else { median(v) };
    let (ingest, single, stream, bytes) = (nan(ingest), nan(single), nan(stream), nan(bytes));
    let (unary_1, unary_32) = (nan(unary_1), nan(unary_32));
    if only.has("ceilings") {
        eprintln!(
            "  sled ingest {ingest:.0}/s, insert-then-flush {single:.0}/s, stream {stream:.0}/s, bytes {bytes:.0} MB/s, unary calls {unary_1:.0}/s (1 client), {unary_32:.0}/s (32)"
        );
    }

    if only.has("puts") {
        eprintln!("durable puts…");
    }
    let mut p1 = Vec::new();
    let mut p1_p99 = Vec::new();
    let mut p32 = Vec::new();
    let mut p32_p99 = Vec::new();
    let mut w1 = Vec::new();
    let mut w32 = Vec::new();
    let mut w32_p99 = Vec::new();
    for _ in 0..if only.has("puts") { reps } else { 0 } {
        let root = tempfile::tempdir()?;
        let mut n = Office::start(root.path(), "writer-da").await?;
        let (r, lat) = put_many(writers(&n, 1).await?, "c", s.puts_1).await?;
        p1.push(r);
        p1_p99.push(percentile(&lat, 0.99).as_secs_f64());
        let (r, lat) = put_many(writers(&n, 32).await?, "c", s.puts_32).await?;
        p32.push(r);
        p32_p99.push(percentile(&lat, 0.99).as_secs_f64());
        n.stop().await?;
        drop(root);
        // The same writes without the network, right after.
        w1.push(write_ceiling(s.puts_1, 1).await?.0);
        let (r, lat) = write_ceiling(s.puts_32, 32).await?;
        w32.push(r);
        w32_p99.push(percentile(&lat, 0.99).as_secs_f64());
        eprintln!(
            "  1 client {:.0}/s (ceiling {:.0}/s), 32 clients {:.0}/s (ceiling {:.0}/s)",
            p1.last().unwrap_or(&0.0),
            w1.last().unwrap_or(&0.0),
            p32.last().unwrap_or(&0.0),
            w32.last().unwrap_or(&0.0)
        );
    }
    let (p1, p1_p99, p32, p32_p99) = (nan(p1), nan(p1_p99), nan(p32), nan(p32_p99));
    let (w1, w32, w32_p99) = (nan(w1), nan(w32), nan(w32_p99));

    if only.has("backfill") {
        eprintln!("backfill and live, 1 peer…");
    }
    let mut b1 = Vec::new();
    let mut verified = Vec::new();
    let mut cpu1 = Vec::new();
    let mut live1 = Vec::new();
    let per_version_us =
        |f: &FanOut, peers: usize| f.origin_cpu * 1e6 / (s.backfill * peers) as f64;
    for rep in 0..if only.has("backfill") { reps } else { 0 } {
        let f = fan_out(s, 1, rep == 0, true).await?;
        let ceiling = f.ceiling.unwrap_or(f64::NAN);
        eprintln!(
            "  backfill {:.0}/s, verified-ingest ceiling {ceiling:.0}/s, origin CPU {:.1} µs per version ({:.1} µs queueing the grant)",
            f.backfill_per_peer[0],
            per_version_us(&f, 1),
            f.grant_cpu * 1e6 / s.backfill as f64
        );
        b1.push(f.backfill_per_peer[0]);
        verified.push(ceiling);
        cpu1.push(per_version_us(&f, 1));
        if rep == 0 {
            live1 = f.live;
        }
    }
    let (b1, verified, cpu1) = (nan(b1), nan(verified), nan(cpu1));
    if only.has("fanout") {
        eprintln!("backfill and live, 8 peers…");
    }
    let f8 = if only.has("fanout") {
        fan_out(s, 8, true, false).await?
    } else {
        FanOut {
            backfill_per_peer: vec![f64::NAN],
            live: Vec::new(),
            origin_cpu: f64::NAN,
            grant_cpu: f64::NAN,
            feed: (0, 0),
            ceiling: None,
        }
    };
    let cpu8 = per_version_us(&f8, 8);
    if only.has("fanout") {
        eprintln!(
            "  origin CPU {cpu8:.1} µs per version per peer ({:.1} µs queueing the grants); feeds served {} versions, read {}",
            f8.grant_cpu * 1e6 / (s.backfill * 8) as f64,
            f8.feed.0,
            f8.feed.1
        );
    }
    let b8 = median(f8.backfill_per_peer.clone());
    let b8_min = f8
        .backfill_per_peer
        .iter()
        .cloned()
        .fold(f64::NAN, f64::min);
    if only.has("memory") {
        eprintln!("memory…");
    }
    let mem = if only.has("memory") {
        memory(s).await?
    } else {
        Memory {
            backfill_peak_mib: f64::NAN,
            idle_mib: f64::NAN,
            idle_records: 0,
        }
    };
    if only.has("blobs") {
        eprintln!("blobs (two `casemesh serve` processes)…");
    }
    let blob_medians = if only.has("blobs") {
        Some(blobs(s, &pki).await?)
    } else {
        None
    };
    if only.has("search") {
        eprintln!(
            "search ({} records with subjects; backfills with and without search, then queries)…",
            s.search.records
        );
    }
    let searched = if only.has("search") {
        Some(search::run(s.search, &pki).await?)
    } else {
        None
    };

    println!();
    println!("| measure | result | ratio | target |");
    println!("|---|---|---|---|");
    if only.has("ceilings") {
        for (what, value) in [
            (
                "sled ingest, 1 KiB, flush per 1000",
                format!("{ingest:.0} rec/s"),
            ),
            (
                "sled insert-then-flush, 1 writer",
                format!("{single:.0} rec/s"),
            ),
            (
                "tonic mTLS stream, 100 × 1 KiB/msg",
                format!("{stream:.0} rec/s"),
            ),
            ("raw mTLS byte stream", format!("{bytes:.0} MB/s")),
            (
                "tonic mTLS unary Put that stores nothing, 1 client",
                format!("{unary_1:.0} calls/s"),
            ),
            (
                "tonic mTLS unary Put that stores nothing, 32 clients",
                format!("{unary_32:.0} calls/s"),
            ),
        ] {
            row(&format!("ceiling: {what}"), value, "1.00".into(), "");
        }
    }
    if only.has("backfill") {
        row(
            "ceiling: verified ingest (verify on every core, apply_batch + group commit, 1 process)",
            format!("{verified:.0} rec/s"),
            "1.00".into(),
            "",
        );
        row(
            &format!(
                "backfill {} × 1 KiB, 1 peer (origin a process of its own)",
                s.backfill
            ),
            format!("{b1:.0} rec/s"),
            ratio(b1, verified, "verified ingest"),
            "≥ 0.6",
        );
        row(
            "backfill, 1 peer, against sled alone",
            String::new(),
            ratio(b1, ingest, "sled ingest"),
            "",
        );
    }
    if only.has("fanout") {
        row(
            &format!(
                "backfill {} × 1 KiB, 8 peers (median / slowest peer)",
                s.backfill
            ),
            format!("{b8:.0} / {b8_min:.0} rec/s per peer"),
            ratio(b8_min, b1, "1-peer"),
            "",
        );
        row(
            "origin CPU (user + sys) per version per peer, backfill: 8 peers",
            format!("{cpu8:.1} µs (1 peer: {cpu1:.1} µs)"),
            ratio(cpu8, cpu1, "1-peer"),
            "≤ 0.6",
        );
        row(
            "origin's feeds, 8 peers: versions served / read from the store",
            format!("{} / {}", f8.feed.0, f8.feed.1),
            format!(
                "{:.2} reads per version served",
                f8.feed.1 as f64 / f8.feed.0.max(1) as f64
            ),
            "",
        );
    }
    for (phase, name, lat, p50t, p99t) in [
        (
            "backfill",
            "live write→peer, 1 peer",
            &live1,
            "≤ 2 ms",
            "≤ 10 ms",
        ),
        (
            "fanout",
            "live write→peer, 8 peers",
            &f8.live,
            "",
            "≤ 20 ms",
        ),
    ] {
        if !only.has(phase) {
            continue;
        }
        row(
            &format!(
                "{name} ({} writes at {}/s): p50 / p99 / max",
                s.live, s.live_rate
            ),
            format!(
                "{} / {} / {}",
                ms(percentile(lat, 0.5)),
                ms(percentile(lat, 0.99)),
                ms(*lat.last().unwrap_or(&Duration::ZERO))
            ),
            String::new(),
            &if p50t.is_empty() {
                format!("p99 {p99t}")
            } else {
                format!("p50 {p50t}, p99 {p99t}")
            },
        );
    }
    if only.has("puts") {
        row(
            "ceiling: write (sign + store.write_version, group commit, no gRPC), 1 / 32 writers",
            format!("{w1:.0} / {w32:.0} puts/s, p99 {} (32)", ms(secs(w32_p99))),
            "1.00".into(),
            "",
        );
        row(
            "durable puts, 1 client (puts/s, p99)",
            format!("{p1:.0} /s, {}", ms(secs(p1_p99))),
            ratio(p1, single, "insert-then-flush"),
            "",
        );
        row(
            "durable puts, 1 client, against the transport",
            String::new(),
            ratio(p1, unary_1, "unary Put that stores nothing"),
            "",
        );
        row(
            "durable puts, 1 client, against the write ceiling",
            String::new(),
            ratio(p1, w1, "write ceiling, 1 writer"),
            "",
        );
        row(
            "durable puts, 32 clients (puts/s, p99)",
            format!("{p32:.0} /s, {}", ms(secs(p32_p99))),
            ratio(p32, w32, "write ceiling, 32 writers"),
            "≥ 0.7",
        );
        row(
            "durable puts, 32 clients, against sled alone",
            String::new(),
            ratio(p32, single, "insert-then-flush"),
            "",
        );
        row(
            "durable puts, 32 clients, against the transport",
            String::new(),
            ratio(p32, unary_32, "unary Put that stores nothing"),
            "",
        );
    }
    if only.has("memory") {
        row(
            &format!(
                "peak RSS of the origin through the {}-record backfill",
                s.backfill
            ),
            format!("{:.0} MiB", mem.backfill_peak_mib),
            String::new(),
            "≤ 200 MiB",
        );
        row(
            &format!("idle RSS with {} records stored", mem.idle_records),
            format!("{:.0} MiB", mem.idle_mib),
            String::new(),
            "≤ 300 MiB",
        );
    }
    if let Some(b) = &blob_medians {
        let mib = s.blob / MIB;
        for (what, value) in [
            ("(a) tonic mTLS stream, 1 MiB messages", b.stream),
            ("(b) the same into a file, fsynced", b.into_file),
            ("(c) BLAKE3, 1 thread, 1 MiB pieces", b.blake3),
        ] {
            row(
                &format!("ceiling: {what}"),
                format!("{value:.0} MB/s"),
                "1.00".into(),
                "",
            );
        }
        // The ceiling of a file moved to or between nodes: the transport,
        // or the disk behind it, whichever is slower.
        let ceiling = b.stream.min(b.into_file);
        let of = "ceiling (lower of a, b)";
        for (what, value, base, of, target) in [
            (
                format!("upload (PutBlob) of {mib} MiB"),
                b.upload,
                ceiling,
                of,
                "≥ 0.5",
            ),
            (
                format!("replicate {mib} MiB to 1 peer, grant → present"),
                b.replicate,
                ceiling,
                of,
                "≥ 0.5",
            ),
            (
                format!("download (GetBlob) of {mib} MiB"),
                b.download,
                b.stream,
                "ceiling (a)",
                "≥ 0.7",
            ),
            (
                format!("{} × 1 MiB files, one grant → all present", s.small_files),
                b.small,
                ceiling,
                of,
                "≥ 0.3",
            ),
        ] {
            row(
                &what,
                format!("{value:.0} MB/s"),
                ratio(value, base, of),
                target,
            );
        }
        row(
            &format!("RSS growth through the {mib} MiB file: origin / peer"),
            format!("{:.0} / {:.0} MiB", b.rss_origin, b.rss_peer),
            String::new(),
            "≤ 32 MiB",
        );
        row(
            &format!("disk used for the {mib} MiB file: origin / peer"),
            format!(
                "{:.0} / {:.0} MiB",
                b.disk_origin * mib as f64,
                b.disk_peer * mib as f64
            ),
            format!("{:.2} / {:.2} × the file", b.disk_origin, b.disk_peer),
            "≤ 1.05",
        );
    }
    if let Some(r) = &searched {
        search::print(r);
    }
    println!();
    println!("medians of {reps} repetitions (live latency and 8-peer figures: one run)");
    Ok(())
}

fn main() {
    if let Err(e) = casemesh::alloc::restart_with_options() {
        eprintln!("could not start again with the allocator's options: {e}");
    }
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only = Only(
        args.iter()
            .position(|a| a == "--only")
            .and_then(|i| args.get(i + 1))
            .map(|v| v.split(',').map(str::to_owned).collect()),
    );
    if let Some(unknown) = only
        .0
        .iter()
        .flatten()
        .find(|p| !PHASES.contains(&p.as_str()))
    {
        eprintln!(
            "unknown phase {unknown:?} after --only: use {}",
            PHASES.join(", ")
        );
        std::process::exit(2);
    }
    let mut sizes = if quick { QUICK } else { FULL };
    // `--records N`: the backfill's size, for a profile of one phase.
    if let Some(n) = args
        .iter()
        .position(|a| a == "--records")
        .and_then(|i| args.get(i + 1))
    {
        match n.parse() {
            Ok(n) if n > 0 => sizes.backfill = n,
            _ => {
                eprintln!("--records takes a positive number, not {n:?}");
                std::process::exit(2);
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("runtime: {e}");
            std::process::exit(1);
        }
    };
    if only
        .0
        .as_ref()
        .is_some_and(|v| v.iter().any(|p| p == "scale"))
    {
        let steps = if quick { scale::QUICK } else { scale::FULL };
        eprintln!("scale (a node filled through the store, measured at each size)…");
        match runtime.block_on(scale::run(&steps)) {
            Ok(points) => {
                println!();
                println!("| measure | result | ratio | target |");
                println!("|---|---|---|---|");
                scale::print(&points);
            }
            Err(e) => {
                eprintln!("benchmark failed: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    if let Err(e) = runtime.block_on(run(sizes, only)) {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
}
