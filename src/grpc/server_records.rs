//! `casemesh.v1.Records`: translate, call [`RecordService`], translate back.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::auth::{audit_call, caller};
use crate::domain::audit::{Target, clip};
use crate::domain::{Draft, OfficeId};
use crate::protocol::convert::{self, Body};
use crate::protocol::pb::{self, records_server::Records};
use crate::search::SearchQuery;
use crate::service::{BlobService, PageRequest, PutCommand, RecordService, SearchService};
use crate::store::ListFilter;
use crate::store::blobs::BlobState;

pub struct RecordsApi {
    pub service: Arc<RecordService>,
    pub blobs: Arc<BlobService>,
    pub search: Arc<SearchService>,
}

pub type BlobStream = Pin<Box<dyn Stream<Item = Result<pb::BlobChunk, Status>> + Send>>;

/// Turns a service blob stream into a gRPC one.
pub fn blob_stream(
    rx: tokio::sync::mpsc::Receiver<crate::error::Result<(u64, bytes::Bytes)>>,
) -> BlobStream {
    Box::pin(
        tokio_stream::wrappers::ReceiverStream::new(rx).map(|piece| {
            piece
                .map(|(offset, data)| pb::BlobChunk { offset, data })
                .map_err(Status::from)
        }),
    )
}

/// What a `Put` asks the record service to write: the record (none for a
/// new one), the version it expects, and the draft with its attachments.
/// The draft's limits are the service's to check.
pub fn put_command(r: pb::PutRequest) -> Result<PutCommand, Status> {
    let id = match r.id.as_str() {
        "" => None,
        s => Some(convert::record_id(s)?),
    };
    Ok(PutCommand {
        id,
        expected_version: r.expected_version,
        draft: Draft {
            collection: r.collection,
            kind: r.kind,
            title: r.title,
            content_type: r.content_type,
            labels: r.labels.into_iter().collect(),
            body: r.body,
            attachments: r
                .attachments
                .into_iter()
                .map(convert::attachment_from_pb)
                .collect::<Result<_, _>>()?,
            subjects: r
                .subjects
                .into_iter()
                .map(convert::subject_from_pb)
                .collect::<Result<_, _>>()?,
        },
    })
}

/// The page a `List` asks for; its token is the service's to read.
pub fn page_request(r: pb::ListRequest) -> Result<PageRequest, Status> {
    let origin = match r.origin.as_str() {
        "" => None,
        s => Some(OfficeId::parse(s).map_err(crate::error::Error::from)?),
    };
    Ok(PageRequest {
        filter: ListFilter {
            collection: (!r.collection.is_empty()).then_some(r.collection),
            origin,
        },
        page_size: r.page_size as usize,
        page_token: r.page_token,
    })
}

/// What a `Search` asks for; its bounds are the service's to check.
pub fn search_query(r: pb::SearchRequest) -> Result<SearchQuery, Status> {
    let text = |s: String| (!s.is_empty()).then_some(s);
    Ok(SearchQuery {
        text: r.text,
        subjects: r
            .subjects
            .into_iter()
            .map(convert::subject_from_pb)
            .collect::<Result<_, _>>()?,
        collection: text(r.collection),
        origin: text(r.origin),
        kind: text(r.kind),
        labels: r.labels,
        from_ms: r.from_ms,
        to_ms: r.to_ms,
        limit: r.limit as usize,
        offset: r.offset as usize,
    })
}

/// What the audit entry of a search says was asked: every part given.
fn search_detail(q: &SearchQuery) -> String {
    let mut parts = Vec::new();
    if !q.text.is_empty() {
        parts.push(format!("text {:?}", q.text));
    }
    for s in &q.subjects {
        parts.push(format!("subject {s}"));
    }
    let named = [
        ("collection", &q.collection),
        ("origin", &q.origin),
        ("kind", &q.kind),
    ];
    for (what, value) in named {
        if let Some(v) = value {
            parts.push(format!("{what} {v:?}"));
        }
    }
    for l in &q.labels {
        parts.push(format!("label {l:?}"));
    }
    if q.from_ms != 0 || q.to_ms != 0 {
        parts.push(format!("updated {}..{}", q.from_ms, q.to_ms));
    }
    if q.offset != 0 {
        parts.push(format!("offset {}", q.offset));
    }
    match parts.is_empty() {
        true => "everything".into(),
        false => parts.join(", "),
    }
}

impl RecordsApi {
    /// A record with each attachment's state on this node.
    fn with_states(&self, mut r: pb::Record) -> Result<pb::Record, Status> {
        for a in &mut r.attachments {
            let hash = convert::blob_hash(&a.hash)?;
            match self.blobs.state(&hash)? {
                BlobState::Present => {
                    a.state = pb::AttachmentState::Present as i32;
                    a.bytes_present = a.size;
                }
                BlobState::Pending => {
                    a.state = pb::AttachmentState::Pending as i32;
                    a.bytes_present = self.blobs.received(&hash);
                }
            }
        }
        Ok(r)
    }
}

#[tonic::async_trait]
impl Records for RecordsApi {
    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let who = caller(&req)?;
        let call = audit_call(&req)?;
        let r = req.into_inner();
        let mut target = Target::record(&r.id, 0);
        target.collection = clip(&r.collection);
        call.set_target(target);
        let cmd = put_command(r)?;
        let v = self.service.put(cmd, call).await?;
        tracing::info!(%who, id = %v.record.id, version = v.record.version, "record written");
        Ok(Response::new(pb::PutResponse {
            id: v.record.id.to_string(),
            version: v.record.version,
            digest: bytes::Bytes::copy_from_slice(&v.digest),
            updated_at_ms: v.record.updated_at_ms,
        }))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::Record>, Status> {
        let call = audit_call(&req)?;
        let r = req.into_inner();
        call.set_target(Target::record(&r.id, r.version.unwrap_or(0)));
        let id = convert::record_id(&r.id)?;
        let v = self.service.get(&id, r.version)?;
        let mut target = Target::record(v.record.id.as_str(), v.record.version);
        target.collection = v.record.collection.clone();
        call.set_target(target);
        Ok(Response::new(
            self.with_states(convert::record(&v, Body::Include))?,
        ))
    }

    async fn history(
        &self,
        req: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        let call = audit_call(&req)?;
        let raw = req.into_inner().id;
        call.set_target(Target::record(&raw, 0));
        let id = convert::record_id(&raw)?;
        let versions = self.service.history(&id)?;
        if let Some(v) = versions.last() {
            let mut target = Target::record(id.as_str(), 0);
            target.collection = v.record.collection.clone();
            call.set_target(target);
        }
        Ok(Response::new(pb::HistoryResponse {
            versions: versions
                .iter()
                .map(|v| self.with_states(convert::record(v, Body::Omit)))
                .collect::<Result<_, _>>()?,
        }))
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let call = audit_call(&req)?;
        let r = req.into_inner();
        call.set_target(Target {
            collection: clip(&r.collection),
            detail: clip(&format!("origin {:?}, page {:?}", r.origin, r.page_token)),
            ..Target::default()
        });
        let page = page_request(r)?;
        let (records, next_page_token) = self.service.list(&page)?;
        call.set_target(Target {
            records: records
                .iter()
                .map(|v| (v.record.id.to_string(), v.record.version))
                .collect(),
            collection: page.filter.collection.clone().unwrap_or_default(),
            detail: clip(&format!(
                "origin {:?}, page {:?}",
                page.filter
                    .origin
                    .as_ref()
                    .map(|o| o.as_str())
                    .unwrap_or(""),
                page.page_token
            )),
            ..Target::default()
        });
        Ok(Response::new(pb::ListResponse {
            records: records
                .iter()
                .map(|v| self.with_states(convert::record(v, Body::Omit)))
                .collect::<Result<_, _>>()?,
            next_page_token,
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let who = caller(&req)?;
        let call = audit_call(&req)?;
        let r = req.into_inner();
        call.set_target(Target::record(&r.id, 0));
        let id = convert::record_id(&r.id)?;
        let v = self
            .service
            .delete(id.clone(), r.expected_version, call)
            .await?;
        tracing::info!(%who, %id, version = v.record.version, "record deleted");
        Ok(Response::new(pb::DeleteResponse {
            version: v.record.version,
        }))
    }

    async fn put_blob(
        &self,
        req: Request<Streaming<pb::PutBlobRequest>>,
    ) -> Result<Response<pb::BlobInfo>, Status> {
        let who = caller(&req)?;
        let call = audit_call(&req)?;
        let mut stream = req.into_inner();
        // Dropped unfinished (an error, or the client going away), the
        // upload removes what it staged.
        let mut upload = self.blobs.begin_upload()?;
        while let Some(msg) = stream.message().await? {
            upload.write(&msg.data)?;
        }
        let (hash, size) = self.blobs.finish_upload(upload, &call).await?;
        tracing::info!(%who, %hash, size, "file stored");
        Ok(Response::new(pb::BlobInfo {
            hash: bytes::Bytes::copy_from_slice(&hash.0),
            size,
        }))
    }

    async fn search(
        &self,
        req: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        let call = audit_call(&req)?;
        let r = req.into_inner();
        call.set_target(Target::detail(format!("search {:?}", r.text)));
        let q = search_query(r)?;
        let asked = search_detail(&q);
        call.set_target(Target::detail(format!("search {asked}")));
        let found = self.search.search(q).await?;
        call.set_target(Target {
            records: found
                .hits
                .iter()
                .map(|h| (h.version.record.id.to_string(), h.version.record.version))
                .collect(),
            detail: clip(&format!(
                "search {asked}: {} of {} found",
                found.hits.len(),
                found.total
            )),
            ..Target::default()
        });
        Ok(Response::new(pb::SearchResponse {
            hits: found
                .hits
                .iter()
                .map(|h| {
                    Ok(pb::SearchHit {
                        record: Some(self.with_states(convert::record(&h.version, Body::Omit))?),
                        score: h.score,
                    })
                })
                .collect::<Result<_, Status>>()?,
            total: found.total,
        }))
    }

    type GetBlobStream = BlobStream;

    async fn get_blob(
        &self,
        req: Request<pb::GetBlobRequest>,
    ) -> Result<Response<Self::GetBlobStream>, Status> {
        let call = audit_call(&req)?;
        let r = req.into_inner();
        call.set_target(Target::detail(format!(
            "file {}, offset {}, length {}",
            hex::encode(&r.hash),
            r.offset,
            r.length
        )));
        let hash = convert::blob_hash(&r.hash)?;
        let range = self.blobs.open_local(hash, r.offset, r.length)?;
        Ok(Response::new(blob_stream(self.blobs.stream(range, None))))
    }
}
