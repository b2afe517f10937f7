//! The composition root: builds a node from its data directory and serves
//! it on a listener until told to stop.
//!
//! Nothing here is global: several nodes can run in one process (the tests
//! and the demo do exactly that).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{BlobStoreKind, Config, Paths};
use crate::domain::blobstore::BlobStore;
use crate::grpc::auth::AuthLayer;
use crate::grpc::server_admin::AdminApi;
use crate::grpc::server_records::RecordsApi;
use crate::grpc::server_replication::ReplicationApi;
use crate::identity::OfficeCa;
use crate::identity::tls::{PemIdentity, TrustStore, server_config, web_server_config};
use crate::metrics::Metrics;
use crate::protocol::pb::replication_server::ReplicationServer;
use crate::protocol::pb::{admin_server::AdminServer, records_server::RecordsServer};
use crate::protocol::{pb, transport};
use crate::search::Search;
use crate::service::refusals::{self, RefusalLog};
use crate::service::{
    AuditLog, BlobService, PeerRuntime, RecordService, SearchService, Sharing, UserService,
    users::issued_users,
};
use crate::store::files::FileBlobs;
use crate::store::staging::Staging;
use crate::store::{Store, StoreOptions};
use crate::sync::fetch::{self, Transfers};
use crate::sync::{Replicator, SyncContext};

/// Why a node could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{path}: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Id(#[from] crate::domain::IdError),
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    #[error("opening the store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Service(#[from] crate::error::Error),
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("reflection service: {0}")]
    Reflection(String),
    #[error("the server task failed: {0}")]
    Join(String),
    #[error("the blob store: {0}")]
    BlobStore(String),
    #[error("the search index: {0}")]
    Search(String),
    #[error("{what} could not listen on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

fn read(path: &Path) -> Result<String, NodeError> {
    std::fs::read_to_string(path).map_err(|source| NodeError::Read {
        path: path.to_owned(),
        source,
    })
}

/// A running node.
pub struct NodeHandle {
    pub addr: SocketAddr,
    /// Where `/metrics` is served (`[metrics] listen`), once bound.
    pub metrics_addr: Option<SocketAddr>,
    /// Where the status page is served (`[status_page] listen`), once bound.
    pub status_page_addr: Option<SocketAddr>,
    pub config: Config,
    shutdown: Option<watch::Sender<bool>>,
    task: JoinHandle<Result<(), NodeError>>,
    applied: tokio::sync::broadcast::Sender<crate::sync::Applied>,
    versions: Arc<crate::sync::version_cache::VersionCache>,
    search: Option<Arc<Search>>,
}

impl NodeHandle {
    /// Stops accepting calls, lets calls in flight finish, flushes and
    /// closes the store. When this returns the data directory can be opened
    /// again.
    pub async fn shutdown(mut self) -> Result<(), NodeError> {
        // Ends feed streams and pullers first: long-lived streams would
        // otherwise hold the graceful shutdown open.
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        (&mut self.task)
            .await
            .map_err(|e| NodeError::Join(e.to_string()))?
    }

    /// Replicas applied from now on, as each batch becomes durable.
    pub fn subscribe_applied(&self) -> tokio::sync::broadcast::Receiver<crate::sync::Applied> {
        self.applied.subscribe()
    }

    /// How many versions this node's feeds served, and how many of them
    /// were read from the store (the rest were shared between streams).
    pub fn feed_counts(&self) -> crate::sync::version_cache::Counts {
        self.versions.counts()
    }

    /// Records in the search index as last committed (none when
    /// `[search]` turns it off): for a benchmark that waits until the
    /// indexer has caught up.
    pub fn search_indexed(&self) -> Option<u64> {
        self.search.as_ref().map(|s| s.indexed())
    }

    /// Waits until the node stops by itself (it does not, unless it fails).
    pub async fn wait(mut self) -> Result<(), NodeError> {
        (&mut self.task)
            .await
            .map_err(|e| NodeError::Join(e.to_string()))?
    }
}

/// Writes connections refused at the handshake to the audit log, and
/// counts them under `listener`.
fn refusals_to(
    refusals: Arc<RefusalLog>,
    metrics: Arc<Metrics>,
    listener: &'static str,
) -> transport::RefusalHook {
    use crate::domain::audit::{Actor, Draft, Outcome, Target};
    metrics.listener_known(listener);
    Arc::new(move |remote, reason| {
        let refusals = refusals.clone();
        metrics.handshake_refused(listener);
        Box::pin(async move {
            let entry = Draft::new(
                Actor::unauthenticated(remote.to_string()),
                "connection.refused",
                Target::default(),
                Outcome::failed("REFUSED", reason),
            );
            // Counted per address: the port changes with every attempt.
            refusals.refuse(&remote.ip().to_string(), entry).await;
        })
    })
}

/// The office's keys and certificates, each read once.
struct Identity {
    office: crate::domain::OfficeId,
    ca: Arc<OfficeCa>,
    node_cert_pem: String,
    node_key_pem: String,
    node_cert_expires_at_ms: u64,
    ca_expires_at_ms: u64,
}

fn load_identity(paths: &Paths, config: &Config) -> Result<Identity, NodeError> {
    let office = config.office_id()?;
    let ca = Arc::new(OfficeCa::load(
        &office,
        &read(&paths.office_ca())?,
        &read(&paths.office_key())?,
    )?);
    let node_cert_pem = read(&paths.node_cert())?;
    let node_cert_expires_at_ms = crate::identity::pki::certs_from_pem(node_cert_pem.as_bytes())?
        .first()
        .map(|der| crate::identity::pki::expires_at_ms(der))
        .transpose()?
        .unwrap_or(0);
    let ca_expires_at_ms = crate::identity::pki::expires_at_ms(&ca.cert_der)?;
    Ok(Identity {
        office,
        ca_expires_at_ms,
        ca,
        node_cert_pem,
        node_key_pem: read(&paths.node_key())?,
        node_cert_expires_at_ms,
    })
}

/// gRPC reflection, v1 and (for older grpcurl releases) v1alpha.
fn reflection() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    NodeError,
> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = builder()
        .build_v1()
        .map_err(|e| NodeError::Reflection(e.to_string()))?;
    let v1alpha = builder()
        .build_v1alpha()
        .map_err(|e| NodeError::Reflection(e.to_string()))?;
    Ok((v1, v1alpha))
}

/// Keeps the health check's overall status (service `""`) in step with
/// whether the store accepts writes: `NOT_SERVING` while the disk is below
/// its reserve or the store has failed (`casemesh status` says why).
async fn watch_storage(
    store: Arc<Store>,
    health: tonic_health::server::HealthReporter,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
    let mut refused: Option<String> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
        let now = store.storage().writes_refused;
        if now.is_some() != refused.is_some() {
            let status = match &now {
                Some(why) => {
                    tracing::error!(reason = %why, "writes are refused");
                    tonic_health::ServingStatus::NotServing
                }
                None => {
                    tracing::info!("writes are accepted again");
                    tonic_health::ServingStatus::Serving
                }
            };
            health.set_service_status("", status).await;
        }
        refused = now;
    }
}

/// What runs beside the server, wound down in order once it stops.
struct Background {
    expiry: JoinHandle<()>,
    storage_watch: JoinHandle<()>,
    fetcher: JoinHandle<()>,
    sweeper: JoinHandle<()>,
    scrubber: JoinHandle<()>,
    signer: JoinHandle<()>,
    /// Indexes audit entries written before the index existed.
    indexer: JoinHandle<()>,
    /// Keeps the search index up to date (and rebuilds it at start when
    /// it must).
    search_indexer: Option<JoinHandle<()>>,
    search: Option<Arc<Search>>,
    /// Checks pinned peers' audit logs against the heads kept from them.
    witnesses: JoinHandle<()>,
    refusals_flusher: JoinHandle<()>,
    accept_loop: JoinHandle<()>,
    /// The metrics and status page listeners, and the lag notes.
    web: Vec<JoinHandle<()>>,
    refusals: Arc<RefusalLog>,
    records: Arc<RecordService>,
    blobs: Arc<BlobService>,
    replicator: Arc<Replicator>,
    runtime: Arc<dyn PeerRuntime>,
    store: Arc<Store>,
    office: crate::domain::OfficeId,
}

impl Background {
    /// Once the server has stopped: writes whose callers went away run to
    /// their end, pullers and streams stop, the final head is signed, the
    /// listener closes, and the store is flushed.
    async fn wind_down(self) -> Result<(), NodeError> {
        self.records.join_writes().await;
        self.replicator.stop_all().await;
        self.replicator.context().join_feeds().await;
        self.blobs.join_streams().await;
        let _ = self.expiry.await;
        let _ = self.storage_watch.await;
        let _ = self.fetcher.await;
        let _ = self.sweeper.await;
        let _ = self.scrubber.await;
        let _ = self.indexer.await;
        if let Some(search) = &self.search {
            search.close();
        }
        if let Some(task) = self.search_indexer {
            let _ = task.await;
        }
        let _ = self.witnesses.await;
        for task in self.web {
            let _ = task.await;
        }
        // The listener is closed once the accept loop has ended, so the
        // address can be bound again as soon as shutdown returns.
        let _ = self.accept_loop.await;
        // No refusal can come any more: write the counts still held.
        let _ = self.refusals_flusher.await;
        self.refusals.flush_all().await;
        // Signs the final head once every call has finished.
        let _ = self.signer.await;
        drop(self.runtime);
        drop(self.replicator);
        // In-flight calls have finished; make everything durable.
        // Every write was acknowledged only once on disk: a store that had
        // failed loses nothing acknowledged by stopping. A final flush that
        // fails for the first time is reported.
        let failed_before = self.store.has_failed();
        let flushed = match self.store.flush_now() {
            Err(e) if failed_before => {
                tracing::error!(error = %e, "the store had failed; stopping without a final flush");
                Ok(())
            }
            other => other,
        };
        tracing::info!(office = %self.office, "node stopped");
        Ok(flushed?)
    }
}

/// A node's use cases and replication, wired together over its store.
struct Services {
    search: Option<Arc<Search>>,
    store: Arc<Store>,
    trust: Arc<TrustStore>,
    sharing: Arc<Sharing>,
    records: Arc<RecordService>,
    users: Arc<UserService>,
    blobs: Arc<BlobService>,
    audit: Arc<AuditLog>,
    /// Refusals counted per source instead of logged one by one.
    refusals: Arc<RefusalLog>,
    sync_ctx: Arc<SyncContext>,
    replicator: Arc<Replicator>,
    runtime: Arc<dyn PeerRuntime>,
    metrics: Arc<Metrics>,
    shutdown_tx: watch::Sender<bool>,
    shutdown_rx: watch::Receiver<bool>,
}

/// The blob store `config` names: files under the data directory, or an
/// S3 bucket (checked reachable before the node serves).
pub async fn open_blob_store(
    paths: &Paths,
    config: &crate::config::BlobConfig,
    kind: BlobStoreKind,
) -> Result<Arc<dyn BlobStore>, NodeError> {
    match kind {
        BlobStoreKind::Files => {
            let files = FileBlobs::open(&paths.blobs()).map_err(|source| NodeError::Read {
                path: paths.blobs(),
                source,
            })?;
            Ok(Arc::new(files))
        }
        BlobStoreKind::S3 => open_s3(config).await,
    }
}

#[cfg(feature = "s3")]
async fn open_s3(config: &crate::config::BlobConfig) -> Result<Arc<dyn BlobStore>, NodeError> {
    let s3 = config.s3.as_ref().ok_or_else(|| {
        NodeError::BlobStore("blobs.store = \"s3\" needs a [blobs.s3] table".into())
    })?;
    let store = crate::store::s3::S3Blobs::open(s3)
        .await
        .map_err(|e| NodeError::BlobStore(e.to_string()))?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "s3"))]
async fn open_s3(_: &crate::config::BlobConfig) -> Result<Arc<dyn BlobStore>, NodeError> {
    Err(NodeError::BlobStore(
        "this casemesh was built without S3 support (cargo feature `s3`); rebuild with it, or set blobs.store = \"files\"".into(),
    ))
}

/// The search index, or none when `[search]` turns it off: then its
/// directory is deleted (it holds the records' text) and the queue of
/// changes for it forgotten (an index made again is rebuilt).
fn open_search(
    paths: &Paths,
    config: &Config,
    store: &Arc<Store>,
) -> Result<Option<Arc<Search>>, NodeError> {
    let dir = paths.search();
    if config.search.enabled {
        let search =
            Search::open(&dir, store.clone()).map_err(|e| NodeError::Search(e.to_string()))?;
        return Ok(Some(Arc::new(search)));
    }
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(NodeError::Search(format!(
                "search is turned off, but its index {} could not be deleted: {e}",
                dir.display()
            )));
        }
        _ => {}
    }
    store.clear_search_queue()?;
    Ok(None)
}

/// Opens the store and builds every service on it; grant jobs a crash cut
/// short are finished before anything is served.
async fn services(paths: &Paths, config: &Config, id: &Identity) -> Result<Services, NodeError> {
    let (office, ca) = (&id.office, &id.ca);
    let store = Arc::new(Store::open(
        &paths.store(),
        office.as_str(),
        &StoreOptions::from(&config.store),
    )?);
    let trust = Arc::new(TrustStore::new(
        office.clone(),
        ca.cert_der.clone(),
        issued_users(&store)?,
    )?);
    let search = open_search(paths, config, &store)?;
    let sharing = Arc::new(Sharing::new(
        office.clone(),
        store.clone(),
        trust.clone(),
        config.limits.clone(),
        search.clone(),
    )?);
    let records = Arc::new(RecordService::new(
        office.clone(),
        store.clone(),
        ca.clone(),
        config.limits.clone(),
        sharing.clone(),
    ));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let audit = Arc::new(AuditLog::new(office.to_string(), store.clone(), ca.clone()));
    let refusals = Arc::new(RefusalLog::new(audit.clone()));
    let metrics = Arc::new(Metrics::new(crate::protocol::rpc_paths()));
    let sync_ctx = Arc::new(SyncContext {
        metrics: metrics.clone(),
        audit: audit.clone(),
        refusals: refusals.clone(),
        office: office.clone(),
        store: store.clone(),
        ca: ca.clone(),
        sharing: sharing.clone(),
        node_cert_pem: id.node_cert_pem.clone().into_bytes(),
        node_key_pem: id.node_key_pem.clone().into_bytes(),
        shutdown: shutdown_rx.clone(),
        removed: watch::Sender::new(0),
        feeds: std::sync::Mutex::new(tokio::task::JoinSet::new()),
        applied: tokio::sync::broadcast::Sender::new(4096),
        guards: Default::default(),
        versions: Default::default(),
        search: search.clone(),
        rejections: Default::default(),
    });
    let replicator = Arc::new(Replicator::new(sync_ctx.clone()));
    let runtime: Arc<dyn PeerRuntime> = replicator.clone();
    sharing.set_runtime(Arc::downgrade(&runtime));
    sharing.resume_jobs().await?;
    let users = Arc::new(UserService::new(store.clone(), ca.clone(), trust.clone()));
    let staging = Staging::open(&paths.root).map_err(|source| NodeError::Read {
        path: paths.root.join("staging"),
        source,
    })?;
    let blobs = Arc::new(BlobService::new(
        store.clone(),
        sharing.clone(),
        config.blobs.clone(),
        open_blob_store(paths, &config.blobs, config.blobs.store).await?,
        staging,
        shutdown_rx.clone(),
    ));
    blobs.recover().await?;
    Ok(Services {
        search,
        store,
        trust,
        sharing,
        records,
        users,
        blobs,
        audit,
        refusals,
        sync_ctx,
        replicator,
        runtime,
        metrics,
        shutdown_tx,
        shutdown_rx,
    })
}

/// The three casemesh servers: records, admin, replication.
type Servers = (
    RecordsServer<RecordsApi>,
    AdminServer<AdminApi>,
    ReplicationServer<ReplicationApi>,
);

/// The three casemesh servers over the services.
/// Largest request the Admin service takes.
const MAX_ADMIN_REQUEST: usize = 1024 * 1024;

fn servers(
    s: &Services,
    config: &Config,
    id: &Identity,
    transfers: Arc<Transfers>,
) -> Result<Servers, NodeError> {
    // Requests: room for the largest body plus the rest of a record.
    // Replies: a List page or a History of metadata can be larger.
    let max_request = config.limits.max_body_bytes + 1024 * 1024;
    let search = Arc::new(SearchService::new(s.search.clone()));
    let records = RecordsServer::new(RecordsApi {
        service: s.records.clone(),
        blobs: s.blobs.clone(),
        search: search.clone(),
    })
    .max_decoding_message_size(max_request)
    .max_encoding_message_size(max_request + 64 * 1024 * 1024);
    let replication = ReplicationServer::new(ReplicationApi {
        ctx: s.sync_ctx.clone(),
        blobs: s.blobs.clone(),
    })
    .max_decoding_message_size(crate::sync::MAX_PEER_REQUEST)
    .max_encoding_message_size(crate::sync::MAX_MESSAGE);
    let admin = AdminServer::new(AdminApi {
        users: s.users.clone(),
        sharing: s.sharing.clone(),
        records: s.records.clone(),
        blobs: s.blobs.clone(),
        office: id.office.to_string(),
        fingerprint: id.ca.fingerprint(),
        ca_pem: id.ca.cert_pem.clone(),
        node_cert_expires_at_ms: id.node_cert_expires_at_ms,
        ca_expires_at_ms: id.ca_expires_at_ms,
        transfers,
        audit: s.audit.clone(),
        sync: s.sync_ctx.clone(),
        exporter: Arc::new(crate::service::export::Exporter {
            store: s.store.clone(),
            blobs: s.blobs.clone(),
            ca: id.ca.clone(),
            office: id.office.clone(),
            audit: s.audit.clone(),
            limits: config.limits.clone(),
        }),
        search,
    })
    // Every admin request is small; the largest carries a CA certificate.
    .max_decoding_message_size(MAX_ADMIN_REQUEST);
    Ok((records, admin, replication))
}

/// The web listeners `[metrics]` and `[status_page]` ask for, bound
/// before anything is served so that a port in use stops the start.
struct WebListeners {
    metrics: Option<TcpListener>,
    status_page: Option<TcpListener>,
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, NodeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| NodeError::Bind { what, addr, source })
}

impl WebListeners {
    async fn bind(config: &Config) -> Result<Self, NodeError> {
        Ok(Self {
            metrics: match config.metrics.listen {
                Some(a) => Some(bind("the metrics endpoint ([metrics] listen)", a).await?),
                None => None,
            },
            status_page: match config.status_page.listen {
                Some(a) => Some(bind("the status page ([status_page] listen)", a).await?),
                None => None,
            },
        })
    }

    fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    fn status_page_addr(&self) -> Option<SocketAddr> {
        self.status_page.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves each bound listener: metrics as plain HTTP on a loopback
    /// address, HTTPS elsewhere; the status page always over HTTPS. The
    /// lag notes run only while something can read them.
    fn spawn(
        self,
        web: Arc<crate::web::Web>,
        tls: Arc<rustls::ServerConfig>,
        hook: impl Fn(&'static str) -> transport::RefusalHook,
        options: transport::AcceptOptions,
        shutdown: &watch::Receiver<bool>,
    ) -> Vec<JoinHandle<()>> {
        use crate::web::{Routes, plain_allowed, serve_plain, serve_tls};
        let mut tasks = Vec::new();
        let listeners = [
            (self.metrics, Routes::Metrics),
            (self.status_page, Routes::StatusPage),
        ];
        for (listener, routes) in listeners {
            let Some(listener) = listener else { continue };
            let addr = listener.local_addr().ok();
            let plain = routes == Routes::Metrics && addr.is_some_and(plain_allowed);
            tracing::info!(
                listener = routes.listener(),
                addr = ?addr,
                scheme = if plain { "http" } else { "https" },
                "web listener serving"
            );
            tasks.push(if plain {
                tokio::spawn(serve_plain(web.clone(), listener, routes, shutdown.clone()))
            } else {
                tokio::spawn(serve_tls(
                    web.clone(),
                    listener,
                    tls.clone(),
                    routes,
                    hook(routes.listener()),
                    options.clone(),
                    shutdown.clone(),
                ))
            });
        }
        if !tasks.is_empty() {
            tasks.push(tokio::spawn(crate::web::run_lag_notes(
                web.observer.clone(),
                shutdown.clone(),
            )));
        }
        tasks
    }
}

/// Loads the node's identity and state from `data_dir` and serves on
/// `listener`.
pub async fn start(data_dir: &Path, listener: TcpListener) -> Result<NodeHandle, NodeError> {
    let paths = Paths::new(data_dir);
    let config = Config::load(&paths.config())?;
    let id = load_identity(&paths, &config)?;
    let s = services(&paths, &config, &id).await?;
    let tls = Arc::new(server_config(
        PemIdentity::from_pem(id.node_cert_pem.as_bytes(), id.node_key_pem.as_bytes())?,
        &s.trust,
    )?);
    let transfers = Arc::new(Transfers::default());
    let (records_api, admin_api, replication_api) = servers(&s, &config, &id, transfers.clone())?;
    let web = WebListeners::bind(&config).await?;
    let observer = Arc::new(crate::web::observe::Observer {
        office: id.office.clone(),
        fingerprint: id.ca.fingerprint().to_string(),
        store: s.store.clone(),
        sharing: s.sharing.clone(),
        blobs: s.blobs.clone(),
        transfers: transfers.clone(),
        audit: s.audit.clone(),
        node_cert_expires_at_ms: id.node_cert_expires_at_ms,
        ca_expires_at_ms: id.ca_expires_at_ms,
        lag: Default::default(),
    });
    let web_state = Arc::new(crate::web::Web::new(
        observer,
        s.metrics.clone(),
        s.audit.clone(),
        s.trust.clone(),
        s.refusals.clone(),
        config.status_page.refresh_secs,
    ));
    let web_tls = Arc::new(web_server_config(
        PemIdentity::from_pem(id.node_cert_pem.as_bytes(), id.node_key_pem.as_bytes())?,
        &s.trust,
    )?);
    let Services {
        search,
        store,
        trust,
        sharing,
        records,
        blobs,
        audit,
        refusals,
        sync_ctx,
        replicator,
        runtime,
        metrics,
        shutdown_tx,
        shutdown_rx,
        ..
    } = s;
    let (office, ca) = (id.office, id.ca);
    let applied = sync_ctx.applied.clone();
    let versions = sync_ctx.versions.clone();

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<RecordsServer<RecordsApi>>().await;
    health.set_serving::<AdminServer<AdminApi>>().await;
    health
        .set_serving::<ReplicationServer<ReplicationApi>>()
        .await;
    let (reflection, reflection_alpha) = reflection()?;

    let addr = listener.local_addr().map_err(|source| NodeError::Read {
        path: "listener".into(),
        source,
    })?;
    let accept_options = transport::AcceptOptions {
        handshake_timeout: Duration::from_secs(config.server.handshake_timeout_secs),
        max_connections: config.server.max_connections,
        max_handshakes_per_source: config.server.max_handshakes_per_source,
    };
    let (incoming, accept_loop) = transport::incoming(
        listener,
        tls,
        trust.clone(),
        refusals_to(refusals.clone(), metrics.clone(), "grpc"),
        accept_options.clone(),
    );
    // HTTP/2 only (tonic's default): the server speaks first, which clients
    // rely on to learn at connect time whether their certificate was
    // accepted (`protocol::transport::Primed`). Do not enable HTTP/1.
    let router = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(config.server.max_streams_per_connection))
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .layer(AuthLayer::new(
            trust,
            audit.clone(),
            refusals.clone(),
            config.limits.max_body_bytes,
            metrics.clone(),
        ))
        .add_service(records_api)
        .add_service(admin_api)
        .add_service(replication_api)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha);

    tracing::info!(%office, %addr, fingerprint = %ca.fingerprint(), "node serving");
    let (metrics_addr, status_page_addr) = (web.metrics_addr(), web.status_page_addr());
    let web_tasks = web.spawn(
        web_state,
        web_tls,
        |listener| refusals_to(refusals.clone(), metrics.clone(), listener),
        accept_options,
        &shutdown_rx,
    );
    replicator.start_all()?;
    let search_handle = search.clone();
    let background = Background {
        expiry: tokio::spawn(crate::sync::run_expiry(sharing, shutdown_rx.clone())),
        storage_watch: tokio::spawn(watch_storage(
            store.clone(),
            health.clone(),
            shutdown_rx.clone(),
        )),
        fetcher: tokio::spawn(fetch::run_fetcher(
            sync_ctx.clone(),
            blobs.clone(),
            transfers,
            config.blobs.clone(),
            shutdown_rx.clone(),
        )),
        sweeper: tokio::spawn(fetch::run_sweeper(
            sync_ctx.clone(),
            blobs.clone(),
            shutdown_rx.clone(),
        )),
        scrubber: tokio::spawn(crate::service::blobs::run_scrubber(
            blobs.clone(),
            config.blobs.clone(),
            shutdown_rx.clone(),
        )),
        indexer: tokio::spawn(crate::service::audit::run_indexer(
            audit.clone(),
            shutdown_rx.clone(),
        )),
        search_indexer: search
            .clone()
            .map(|search| tokio::spawn(crate::search::run_indexer(search, shutdown_rx.clone()))),
        search,
        witnesses: tokio::spawn(crate::sync::witness::run_checks(
            sync_ctx,
            audit.clone(),
            config.audit.witness_interval,
            shutdown_rx.clone(),
        )),
        signer: tokio::spawn(crate::service::audit::run_signer(
            audit,
            shutdown_rx.clone(),
        )),
        refusals_flusher: tokio::spawn(refusals::run_flusher(
            refusals.clone(),
            shutdown_rx.clone(),
        )),
        accept_loop,
        web: web_tasks,
        refusals,
        records,
        blobs,
        replicator,
        runtime,
        store,
        office,
    };
    let mut stop = shutdown_rx;
    let task = tokio::spawn(async move {
        let served = router
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
        let flushed = background.wind_down().await;
        served?;
        flushed
    });
    Ok(NodeHandle {
        addr,
        metrics_addr,
        status_page_addr,
        config,
        shutdown: Some(shutdown_tx),
        task,
        applied,
        versions,
        search: search_handle,
    })
}
