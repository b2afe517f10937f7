//! `casemesh.v1.Records`: translate, call [`RecordService`], translate back.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::auth::caller;
use super::convert::{self, Body};
use super::pb::{self, records_server::Records};
use crate::domain::{Draft, OfficeId};
use crate::service::{PageRequest, PutCommand, RecordService};
use crate::store::ListFilter;

pub struct RecordsApi {
    pub service: Arc<RecordService>,
}

#[tonic::async_trait]
impl Records for RecordsApi {
    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let id = match r.id.as_str() {
            "" => None,
            s => Some(convert::record_id(s)?),
        };
        let cmd = PutCommand {
            id,
            expected_version: r.expected_version,
            draft: Draft {
                collection: r.collection,
                kind: r.kind,
                title: r.title,
                content_type: r.content_type,
                labels: r.labels.into_iter().collect(),
                body: r.body,
            },
        };
        let v = self.service.put(cmd).await?;
        tracing::info!(%who, id = %v.record.id, version = v.record.version, "record written");
        Ok(Response::new(pb::PutResponse {
            id: v.record.id.to_string(),
            version: v.record.version,
            digest: bytes::Bytes::copy_from_slice(&v.digest),
            updated_at_ms: v.record.updated_at_ms,
        }))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::Record>, Status> {
        let r = req.into_inner();
        let id = convert::record_id(&r.id)?;
        let v = self.service.get(&id, r.version)?;
        Ok(Response::new(convert::record(&v, Body::Include)))
    }

    async fn history(
        &self,
        req: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        let id = convert::record_id(&req.into_inner().id)?;
        let versions = self.service.history(&id)?;
        Ok(Response::new(pb::HistoryResponse {
            versions: versions
                .iter()
                .map(|v| convert::record(v, Body::Omit))
                .collect(),
        }))
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let r = req.into_inner();
        let origin = match r.origin.as_str() {
            "" => None,
            s => Some(OfficeId::parse(s).map_err(|e| Status::invalid_argument(e.to_string()))?),
        };
        let page = PageRequest {
            filter: ListFilter {
                collection: (!r.collection.is_empty()).then_some(r.collection),
                origin,
            },
            page_size: r.page_size as usize,
            page_token: r.page_token,
        };
        let (records, next_page_token) = self.service.list(&page)?;
        Ok(Response::new(pb::ListResponse {
            records: records
                .iter()
                .map(|v| convert::record(v, Body::Omit))
                .collect(),
            next_page_token,
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let id = convert::record_id(&r.id)?;
        let v = self.service.delete(&id, r.expected_version).await?;
        tracing::info!(%who, %id, version = v.record.version, "record deleted");
        Ok(Response::new(pb::DeleteResponse {
            version: v.record.version,
        }))
    }
}
