//! `casemesh.v1.Replication`: peer nodes only. The caller's office comes
//! from its verified certificate; the feed is served by [`crate::sync::feed`].

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::auth::{audit_call, caller};
use crate::domain::audit::Target;
use crate::error::Error;
use crate::identity::Caller;
use crate::protocol::pb::{self, replication_server::Replication};
use crate::sync::{SyncContext, feed};

pub struct ReplicationApi {
    pub ctx: Arc<SyncContext>,
    pub blobs: Arc<crate::service::BlobService>,
}

type PullStream = Pin<Box<dyn Stream<Item = Result<pb::PullDown, Status>> + Send>>;

/// A stream sync serves, its errors as statuses.
fn statuses<T: Send + 'static>(
    rx: mpsc::Receiver<Result<T, crate::sync::StreamError>>,
) -> Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>> {
    use tokio_stream::StreamExt;
    Box::pin(ReceiverStream::new(rx).map(|r| r.map_err(Status::from)))
}

#[tonic::async_trait]
impl Replication for ReplicationApi {
    type PullStream = PullStream;

    async fn pull(
        &self,
        req: Request<Streaming<pb::PullUp>>,
    ) -> Result<Response<Self::PullStream>, Status> {
        let Caller::PeerNode { office, .. } = caller(&req)? else {
            return Err(Error::PeersOnly("pull").into());
        };
        audit_call(&req)?.set_target(Target {
            peer: office.to_string(),
            detail: "feed stream opened".into(),
            ..Target::default()
        });
        let (tx, rx) = mpsc::channel(4);
        self.ctx
            .spawn_feed(feed::serve(self.ctx.clone(), office, req.into_inner(), tx));
        Ok(Response::new(statuses(rx)))
    }

    type FetchBlobStream = super::server_records::BlobStream;

    async fn fetch_blob(
        &self,
        req: Request<pb::FetchBlobRequest>,
    ) -> Result<Response<Self::FetchBlobStream>, Status> {
        let Caller::PeerNode { office, .. } = caller(&req)? else {
            return Err(Error::PeersOnly("fetch files").into());
        };
        let call = audit_call(&req)?;
        let r = req.into_inner();
        call.set_target(Target {
            peer: office.to_string(),
            detail: format!("file {}, offset {}", hex::encode(&r.hash), r.offset),
            ..Target::default()
        });
        let hash = crate::protocol::convert::blob_hash(&r.hash)?;
        let slot = self
            .ctx
            .guards
            .begin_fetch(&office)
            .ok_or(Error::TooManyTransfers {
                limit: crate::sync::guard::MAX_FETCHES_PER_PEER,
            })?;
        let piece = crate::service::blobs::peer_piece(r.max_piece_bytes);
        let range = self.blobs.open_for_peer(&office, hash, r.offset, piece)?;
        tracing::info!(peer = %office, %hash, offset = r.offset, "serving a file");
        let stream = super::server_records::blob_stream(self.blobs.stream(range, Some(office)));
        // The transfer's place is freed when its stream ends.
        Ok(Response::new(Box::pin(tokio_stream::StreamExt::map(
            stream,
            move |piece| {
                let _held = &slot;
                piece
            },
        ))))
    }

    type ProveAuditStream = Pin<Box<dyn Stream<Item = Result<pb::AuditProof, Status>> + Send>>;

    async fn prove_audit(
        &self,
        req: Request<pb::ProveAuditRequest>,
    ) -> Result<Response<Self::ProveAuditStream>, Status> {
        let Caller::PeerNode { office, .. } = caller(&req)? else {
            return Err(Error::PeersOnly("ask for proofs").into());
        };
        audit_call(&req)?.set_target(Target {
            peer: office.to_string(),
            detail: "audit log proof".into(),
            ..Target::default()
        });
        // A digest answer walks the whole log: one proof per interval per
        // peer.
        let slot = self
            .ctx
            .guards
            .may_prove(&office)
            .map_err(|wait| Error::TooSoon {
                what: "an audit proof for your office",
                interval_secs: crate::sync::guard::PROOF_INTERVAL.as_secs(),
                retry_after_secs: wait.as_secs().max(1),
            })?;
        let (tx, rx) = mpsc::channel(4);
        self.ctx.spawn_feed(crate::sync::witness::prove(
            self.ctx.audit.clone(),
            req.into_inner(),
            tx,
            self.ctx.shutdown.clone(),
            slot,
        ));
        Ok(Response::new(statuses(rx)))
    }
}
