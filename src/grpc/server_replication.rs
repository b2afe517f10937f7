//! `casemesh.v1.Replication`: peer nodes only. The caller's office comes
//! from its verified certificate; the feed is served by [`crate::sync::feed`].

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::auth::caller;
use super::pb::{self, replication_server::Replication};
use crate::identity::Caller;
use crate::sync::{SyncContext, feed};

pub struct ReplicationApi {
    pub ctx: Arc<SyncContext>,
    pub blobs: Arc<crate::service::BlobService>,
}

type PullStream = Pin<Box<dyn Stream<Item = Result<pb::PullDown, Status>> + Send>>;

#[tonic::async_trait]
impl Replication for ReplicationApi {
    type PullStream = PullStream;

    async fn pull(
        &self,
        req: Request<Streaming<pb::PullUp>>,
    ) -> Result<Response<Self::PullStream>, Status> {
        let Caller::PeerNode { office, .. } = caller(&req)? else {
            return Err(Status::permission_denied("only peer nodes may pull"));
        };
        let (tx, rx) = mpsc::channel(4);
        self.ctx
            .spawn_feed(feed::serve(self.ctx.clone(), office, req.into_inner(), tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type FetchBlobStream = super::server_records::BlobStream;

    async fn fetch_blob(
        &self,
        req: Request<pb::FetchBlobRequest>,
    ) -> Result<Response<Self::FetchBlobStream>, Status> {
        let Caller::PeerNode { office, .. } = caller(&req)? else {
            return Err(Status::permission_denied("only peer nodes may fetch files"));
        };
        let r = req.into_inner();
        let hash = super::convert::blob_hash(&r.hash)?;
        let range = self.blobs.open_for_peer(&office, hash, r.offset)?;
        tracing::info!(peer = %office, %hash, offset = r.offset, "serving a file");
        Ok(Response::new(super::server_records::blob_stream(
            self.blobs.stream(range, Some(office)),
        )))
    }
}
