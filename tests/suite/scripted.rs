//! A replication origin that serves a scripted `Pull` stream, over the
//! connections it is given, and nothing else: what a hostile peer sends
//! (the tests), or a feed that costs its origin nothing (the bench's
//! ceiling). Shared by the integration tests and `benches/replication.rs`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use casemesh::protocol::pb::{self, replication_server};
use casemesh::protocol::transport::TlsConn;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Where a script sends what the origin says on a `Pull` stream.
pub type Say = mpsc::Sender<Result<pb::PullDown, Status>>;

/// Serves `script(say)` to each `Pull` call: it runs in a task of its
/// own, and the stream ends when it returns.
pub struct ScriptedOrigin<F> {
    script: F,
    /// `FetchBlob` calls so far (each answered `NOT_FOUND`).
    fetches: Arc<AtomicUsize>,
}

impl<F, Fut> ScriptedOrigin<F>
where
    F: Fn(Say) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    pub fn new(script: F) -> Self {
        Self {
            script,
            fetches: Arc::default(),
        }
    }

    /// Counts `FetchBlob` calls into `fetches`.
    #[allow(dead_code)] // the tests use it; the bench, which shares this file, does not
    pub fn counting_fetches(mut self, fetches: Arc<AtomicUsize>) -> Self {
        self.fetches = fetches;
        self
    }

    /// Serves the replication service on `incoming` (mutual TLS
    /// connections from `transport::incoming`) until aborted.
    pub fn serve(
        self,
        incoming: ReceiverStream<Result<TlsConn, std::io::Error>>,
    ) -> tokio::task::JoinHandle<Result<(), tonic::transport::Error>> {
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(replication_server::ReplicationServer::new(self))
                .serve_with_incoming(incoming),
        )
    }
}

#[tonic::async_trait]
impl<F, Fut> replication_server::Replication for ScriptedOrigin<F>
where
    F: Fn(Say) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    type PullStream = Stream_<pb::PullDown>;
    type FetchBlobStream = casemesh::grpc::server_records::BlobStream;
    type ProveAuditStream = Stream_<pb::AuditProof>;

    async fn fetch_blob(
        &self,
        _req: Request<pb::FetchBlobRequest>,
    ) -> Result<Response<Self::FetchBlobStream>, Status> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        Err(Status::not_found("this origin shares no file"))
    }

    async fn prove_audit(
        &self,
        _req: Request<pb::ProveAuditRequest>,
    ) -> Result<Response<Self::ProveAuditStream>, Status> {
        Err(Status::unimplemented("this origin only serves its script"))
    }

    async fn pull(
        &self,
        _req: Request<Streaming<pb::PullUp>>,
    ) -> Result<Response<Self::PullStream>, Status> {
        let (say, rx) = mpsc::channel(8);
        tokio::spawn((self.script)(say));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
