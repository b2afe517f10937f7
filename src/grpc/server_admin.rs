//! `casemesh.v1.Admin`: translate, call the services, translate back.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::auth::{audit_call, caller};
use crate::domain::audit::{Target, clip};
use crate::domain::sharing::{EndReason, GrantId, GrantTarget};
use crate::domain::{OfficeId, Role, UserName};
use crate::error::Error;
use crate::identity::Fingerprint;
use crate::protocol::convert;
use crate::protocol::pb::{self, admin_server::Admin};
use crate::service::audit::AuditQuery;
use crate::service::{AuditLog, Sharing, UserService};

pub struct AdminApi {
    pub users: Arc<UserService>,
    pub sharing: Arc<Sharing>,
    pub records: Arc<crate::service::RecordService>,
    pub blobs: Arc<crate::service::BlobService>,
    pub office: String,
    pub fingerprint: Fingerprint,
    pub ca_pem: String,
    /// When the node's server certificate and the office CA expire.
    pub node_cert_expires_at_ms: u64,
    pub ca_expires_at_ms: u64,
    pub transfers: Arc<crate::sync::fetch::Transfers>,
    pub audit: Arc<AuditLog>,
    pub sync: Arc<crate::sync::SyncContext>,
    pub exporter: Arc<crate::service::export::Exporter>,
    pub search: Arc<crate::service::SearchService>,
}

pub type ExportStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::ExportChunk, Status>> + Send>>;

/// The query a `QueryAudit` asks for: a time range that does not run
/// backwards, and a page token as this node writes them.
pub fn audit_query(r: pb::QueryAuditRequest) -> Result<AuditQuery, Status> {
    if r.to_ms != 0 && r.to_ms < r.from_ms {
        return Err(Error::TimeRangeReversed.into());
    }
    let after_seq = match r.page_token.as_str() {
        "" => 0,
        t => t
            .parse::<u64>()
            .map_err(|_| Status::from(Error::BadPageToken))?,
    };
    Ok(AuditQuery {
        from_ms: r.from_ms,
        to_ms: r.to_ms,
        actor: r.actor,
        record: r.record_id,
        collection: r.collection,
        peer: r.peer,
        action: r.action,
        after_seq,
        limit: match r.page_size {
            0 => 100,
            n => n as usize,
        },
        newest_first: r.newest_first,
    })
}

/// The user an `IssueUser` names and the role it gives; the request must
/// carry a CSR, which the user service reads.
pub fn new_user(r: &pb::IssueUserRequest) -> Result<(UserName, Role), Status> {
    let name = UserName::parse(&r.name).map_err(Error::from)?;
    let role = convert::role_from_pb(r.role)?;
    if r.csr_der.is_empty() {
        return Err(Error::MissingField("csr_der").into());
    }
    Ok((name, role))
}

/// The user a `RevokeUser` names, and the certificate it expects that
/// user to hold, if it says.
pub fn user_to_revoke(r: pb::RevokeUserRequest) -> Result<(String, Option<Fingerprint>), Status> {
    if r.name.is_empty() {
        return Err(Error::MissingField("name").into());
    }
    Ok((r.name, expected_fingerprint(&r.fingerprint)?))
}

/// The office an `AddPeer` pins, and the fingerprint its CA must have, if
/// it says; the endpoint and the certificate are the sharing service's to
/// check.
pub fn peer_to_add(r: &pb::AddPeerRequest) -> Result<(OfficeId, Option<Fingerprint>), Status> {
    let office = convert::office_id("office", &r.office)?;
    Ok((office, expected_fingerprint(&r.expected_fingerprint)?))
}

/// An optional fingerprint field: empty for none.
fn expected_fingerprint(raw: &str) -> Result<Option<Fingerprint>, Error> {
    match raw {
        "" => Ok(None),
        fp => Fingerprint::parse(fp)
            .map(Some)
            .map_err(|e| Error::BadFingerprint(e.to_string())),
    }
}

/// The peer a `Grant` is for, and what it covers.
pub fn grant_request(
    peer: &str,
    target: Option<pb::grant_request::Target>,
) -> Result<(OfficeId, GrantTarget), Status> {
    let peer = convert::office_id("peer", peer)?;
    let target = match target {
        Some(pb::grant_request::Target::Collection(c)) => GrantTarget::Collection(c),
        Some(pb::grant_request::Target::RecordId(id)) => {
            GrantTarget::Record(convert::record_id(&id)?)
        }
        None => {
            return Err(Error::MissingField("a collection or a record_id to grant").into());
        }
    };
    Ok((peer, target))
}

impl AdminApi {
    fn peer_list(&self) -> Result<Vec<pb::Peer>, Status> {
        Ok(self
            .sharing
            .peers()?
            .iter()
            .map(super::views::peer)
            .collect())
    }
}

#[tonic::async_trait]
impl Admin for AdminApi {
    async fn query_audit(
        &self,
        req: Request<pb::QueryAuditRequest>,
    ) -> Result<Response<pb::QueryAuditResponse>, Status> {
        let call = audit_call(&req)?;
        let r = req.into_inner();
        call.set_target(Target {
            records: if r.record_id.is_empty() {
                Vec::new()
            } else {
                vec![(clip(&r.record_id), 0)]
            },
            collection: clip(&r.collection),
            peer: clip(&r.peer),
            detail: clip(&format!(
                "from {} to {} actor {:?} action {:?} page {:?}",
                r.from_ms, r.to_ms, r.actor, r.action, r.page_token
            )),
        });
        let q = audit_query(r)?;
        let (entries, next) = self.audit.query(&q)?;
        Ok(Response::new(pb::QueryAuditResponse {
            entries: entries
                .iter()
                .map(|(e, h)| convert::audit_entry(e, h))
                .collect(),
            next_page_token: if next == 0 {
                String::new()
            } else {
                next.to_string()
            },
        }))
    }

    async fn verify_audit(
        &self,
        _req: Request<pb::VerifyAuditRequest>,
    ) -> Result<Response<pb::VerifyAuditResponse>, Status> {
        let audit = self.audit.clone();
        let report = tokio::task::spawn_blocking(move || audit.verify())
            .await
            .map_err(|e| Error::Internal(format!("verification stopped: {e}")))??;
        Ok(Response::new(pb::VerifyAuditResponse {
            intact: report.fault.is_none(),
            entries: report.entries,
            signed_heads: report.signed_heads,
            fault_seq: report.fault.as_ref().map(|f| f.seq).unwrap_or(0),
            fault: report.fault.map(|f| f.reason).unwrap_or_default(),
        }))
    }

    async fn scrub_blobs(
        &self,
        req: Request<pb::ScrubBlobsRequest>,
    ) -> Result<Response<pb::ScrubBlobsResponse>, Status> {
        let call = audit_call(&req)?;
        let report = self.blobs.scrub(0).await?;
        call.set_target(Target::detail(format!(
            "{} files, {} bytes checked; {} damaged",
            report.files,
            report.bytes,
            report.damaged.len()
        )));
        Ok(Response::new(pb::ScrubBlobsResponse {
            files: report.files,
            bytes: report.bytes,
            damaged: report
                .damaged
                .into_iter()
                .map(|f| pb::ScrubFinding {
                    hash: bytes::Bytes::copy_from_slice(&f.hash.0),
                    size: f.size,
                    problem: f.problem,
                    action: f.action,
                })
                .collect(),
        }))
    }

    async fn reindex_search(
        &self,
        req: Request<pb::ReindexSearchRequest>,
    ) -> Result<Response<pb::ReindexSearchResponse>, Status> {
        let call = audit_call(&req)?;
        let started = std::time::Instant::now();
        let records = self.search.reindex().await?;
        let took_ms = started.elapsed().as_millis() as u64;
        call.set_target(Target::detail(format!(
            "rebuilt the search index: {records} records, {took_ms} ms"
        )));
        Ok(Response::new(pb::ReindexSearchResponse {
            records,
            took_ms,
        }))
    }

    async fn witness_audit(
        &self,
        req: Request<pb::WitnessAuditRequest>,
    ) -> Result<Response<pb::WitnessAuditResponse>, Status> {
        let call = audit_call(&req)?;
        let raw = req.into_inner().peer;
        call.set_target(Target {
            peer: clip(&raw),
            ..Target::default()
        });
        let peer = convert::office_id("peer", &raw)?;
        let report = crate::sync::witness::check(&self.sync, &self.audit, &peer).await?;
        call.set_target(Target {
            peer: peer.to_string(),
            detail: match &report.conflict {
                None => format!("agreed; {} heads checked", report.heads_checked),
                Some(c) => clip(&format!("CONFLICT: {c}")),
            },
            ..Target::default()
        });
        Ok(Response::new(pb::WitnessAuditResponse {
            agreed: report.conflict.is_none(),
            heads_checked: report.heads_checked,
            current: report.current.as_ref().map(convert::signed_head),
            conflict: report.conflict.unwrap_or_default(),
            proof_bytes: report.proof_bytes,
        }))
    }

    type ExportStream = ExportStream;

    async fn export(
        &self,
        req: Request<pb::ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let call = audit_call(&req)?;
        let r = req.into_inner();
        call.set_target(Target {
            collection: clip(&r.collection),
            ..Target::default()
        });
        let pieces = self
            .exporter
            .start(&call, r.collection, r.allow_empty)
            .await?;
        use tokio_stream::StreamExt;
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(pieces)
                .map(|piece| Ok(pb::ExportChunk { data: piece? })),
        )))
    }

    async fn issue_user(
        &self,
        req: Request<pb::IssueUserRequest>,
    ) -> Result<Response<pb::IssueUserResponse>, Status> {
        let who = caller(&req)?;
        let call = audit_call(&req)?;
        let r = req.into_inner();
        call.set_target(Target::detail(format!("user {}", r.name)));
        let (name, role) = new_user(&r)?;
        let issued = self.users.issue(name, role, &r.csr_der, &call).await?;
        tracing::info!(%who, user = %issued.entry.user.name, %role, "user issued");
        Ok(Response::new(pb::IssueUserResponse {
            user: Some(super::views::user(&issued.entry)),
            certificate_pem: issued.certificate_pem,
            ca_certificate_pem: self.ca_pem.clone(),
        }))
    }

    async fn revoke_user(
        &self,
        req: Request<pb::RevokeUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let who = caller(&req)?;
        let call = audit_call(&req)?;
        let r = req.into_inner();
        call.set_target(Target::detail(format!("user {}", r.name)));
        let (name, expected) = user_to_revoke(r)?;
        let entry = self.users.revoke(&name, expected.as_ref(), &call).await?;
        tracing::info!(%who, user = %name, "user revoked");
        Ok(Response::new(super::views::user(&entry)))
    }

    async fn list_users(
        &self,
        _req: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let users = self.users.list()?;
        Ok(Response::new(pb::ListUsersResponse {
            users: users.iter().map(super::views::user).collect(),
        }))
    }

    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let (records, versions) = self.records.counts()?;
        let (blobs, blob_bytes) = self.blobs.totals()?;
        let storage = self.records.storage();
        Ok(Response::new(pb::StatusResponse {
            disk_free_bytes: storage.free_bytes,
            disk_reserve_bytes: storage.reserve_bytes,
            writes_refused: storage.writes_refused.unwrap_or_default(),
            blob_store: self.blobs.describe(),
            audit_entries_unindexed: self.audit.unindexed()?,
            search: Some(super::views::search_index(self.search.state())),
            damaged_files: self
                .blobs
                .damaged_files()?
                .into_iter()
                .map(|(hash, at)| pb::DamagedFile {
                    hash: bytes::Bytes::copy_from_slice(&hash.0),
                    found_at_ms: at,
                })
                .collect(),
            node_certificate_expires_at_ms: self.node_cert_expires_at_ms,
            office_ca_expires_at_ms: self.ca_expires_at_ms,
            office: self.office.clone(),
            fingerprint: self.fingerprint.to_string(),
            records,
            versions,
            software_version: concat!(
                env!("CARGO_PKG_VERSION"),
                " (",
                env!("CASEMESH_COMMIT"),
                ")"
            )
            .to_owned(),
            peers: self.peer_list()?,
            blobs,
            blob_bytes,
            transfers: self
                .transfers
                .view(&self.blobs)?
                .into_iter()
                .map(|t| pb::Transfer {
                    hash: bytes::Bytes::copy_from_slice(&t.hash.0),
                    origin: t.origin,
                    size: t.size,
                    received: t.received,
                    resumed_from: t.resumed_from,
                    active: t.active,
                    last_error: t.last_error,
                    gave_up: t.gave_up,
                })
                .collect(),
        }))
    }

    async fn add_peer(
        &self,
        req: Request<pb::AddPeerRequest>,
    ) -> Result<Response<pb::Peer>, Status> {
        let who = caller(&req)?;
        let call = audit_call(&req)?;
        let r = req.into_inner();
        call.set_target(Target {
            peer: clip(&r.office),
            detail: clip(&format!("endpoint {}", r.endpoint)),
            ..Target::default()
        });
        let (office, expected) = peer_to_add(&r)?;
        let (peer, fingerprint) = self
            .sharing
            .add_peer(office, &r.endpoint, &r.ca_certificate_pem, expected, &call)
            .await?;
        tracing::info!(%who, peer = %peer.office, %fingerprint, "peer pinned");
        let view = self
            .sharing
            .peers()?
            .into_iter()
            .find(|v| v.peer.office == peer.office)
            .ok_or_else(|| Error::Internal(format!("peer {} vanished once pinned", peer.office)))?;
        Ok(Response::new(super::views::peer(&view)))
    }

    async fn remove_peer(
        &self,
        req: Request<pb::RemovePeerRequest>,
    ) -> Result<Response<pb::RemovePeerResponse>, Status> {
        let who = caller(&req)?;
        let call = audit_call(&req)?;
        let r = req.into_inner();
        call.set_target(Target {
            peer: clip(&r.office),
            ..Target::default()
        });
        let office = convert::office_id("office", &r.office)?;
        let (replicas_purged, grants_closed) = self
            .sharing
            .remove_peer(&office, r.purge_replicas, &call)
            .await?;
        tracing::info!(%who, peer = %office, replicas_purged, grants_closed, "peer removed");
        Ok(Response::new(pb::RemovePeerResponse {
            replicas_purged,
            grants_closed,
        }))
    }

    async fn list_peers(
        &self,
        _req: Request<pb::ListPeersRequest>,
    ) -> Result<Response<pb::ListPeersResponse>, Status> {
        Ok(Response::new(pb::ListPeersResponse {
            peers: self.peer_list()?,
        }))
    }

    async fn grant(
        &self,
        req: Request<pb::GrantRequest>,
    ) -> Result<Response<pb::GrantInfo>, Status> {
        let who = caller(&req)?;
        let call = audit_call(&req)?;
        let r = req.into_inner();
        let mut t = Target {
            peer: clip(&r.peer),
            ..Target::default()
        };
        match &r.target {
            Some(pb::grant_request::Target::Collection(c)) => t.collection = clip(c),
            Some(pb::grant_request::Target::RecordId(id)) => t.records = vec![(clip(id), 0)],
            None => {}
        }
        call.set_target(t);
        let (peer, target) = grant_request(r.peer.as_str(), r.target)?;
        let g = self
            .sharing
            .grant(peer, target, r.expires_at_ms, &call)
            .await?;
        tracing::info!(%who, grant = %g.id, peer = %g.peer, "grant made");
        // The grant is made: a failure to look for warnings must not say
        // otherwise.
        let warnings = self.sharing.grant_warnings(&g).unwrap_or_else(|e| {
            tracing::warn!(grant = %g.id, error = %e, "could not check the grant for warnings");
            Vec::new()
        });
        Ok(Response::new(pb::GrantInfo {
            warnings,
            ..convert::grant(&g)
        }))
    }

    async fn revoke(
        &self,
        req: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::GrantInfo>, Status> {
        let who = caller(&req)?;
        let call = audit_call(&req)?;
        let raw = req.into_inner().grant_id;
        call.set_target(Target::detail(format!("grant {raw}")));
        let id = GrantId::parse(&raw).map_err(Error::from)?;
        let g = self.sharing.revoke(&id, EndReason::Revoked, &call).await?;
        tracing::info!(%who, grant = %g.id, peer = %g.peer, "grant revoked");
        Ok(Response::new(convert::grant(&g)))
    }

    async fn list_grants(
        &self,
        req: Request<pb::ListGrantsRequest>,
    ) -> Result<Response<pb::ListGrantsResponse>, Status> {
        let call = audit_call(&req)?;
        let r = req.into_inner();
        call.set_target(Target {
            peer: clip(&r.peer),
            ..Target::default()
        });
        let peer = match r.peer.as_str() {
            "" => None,
            p => Some(convert::office_id("peer", p)?),
        };
        Ok(Response::new(pb::ListGrantsResponse {
            grants: self
                .sharing
                .grants(peer.as_ref())
                .iter()
                .map(convert::grant)
                .collect(),
        }))
    }
}
