//! `casemesh.v1.Admin`: translate, call the services, translate back.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::auth::caller;
use super::convert;
use super::pb::{self, admin_server::Admin};
use crate::domain::UserName;
use crate::domain::sharing::{EndReason, GrantId, GrantTarget};
use crate::identity::Fingerprint;
use crate::service::{Sharing, UserService};
use crate::store::Store;

pub struct AdminApi {
    pub users: Arc<UserService>,
    pub sharing: Arc<Sharing>,
    pub store: Arc<Store>,
    pub office: String,
    pub fingerprint: Fingerprint,
    pub ca_pem: String,
    pub transfers: Arc<crate::sync::fetch::Transfers>,
}

impl AdminApi {
    fn peer_list(&self) -> Result<Vec<pb::Peer>, Status> {
        Ok(self
            .sharing
            .peers()?
            .iter()
            .map(convert::peer_view)
            .collect())
    }
}

#[tonic::async_trait]
impl Admin for AdminApi {
    async fn issue_user(
        &self,
        req: Request<pb::IssueUserRequest>,
    ) -> Result<Response<pb::IssueUserResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let name = UserName::parse(&r.name).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let role = convert::role_from_pb(r.role)?;
        if r.csr_der.is_empty() {
            return Err(Status::invalid_argument("csr_der is required"));
        }
        let issued = self.users.issue(name, role, &r.csr_der).await?;
        tracing::info!(%who, user = %issued.entry.user.name, %role, "user issued");
        Ok(Response::new(pb::IssueUserResponse {
            user: Some(convert::user(&issued.entry)),
            certificate_pem: issued.certificate_pem,
            ca_certificate_pem: self.ca_pem.clone(),
        }))
    }

    async fn revoke_user(
        &self,
        req: Request<pb::RevokeUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let who = caller(&req)?;
        let name = req.into_inner().name;
        if name.is_empty() {
            return Err(Status::invalid_argument("name is required"));
        }
        let entry = self.users.revoke(&name).await?;
        tracing::info!(%who, user = %name, "user revoked");
        Ok(Response::new(convert::user(&entry)))
    }

    async fn list_users(
        &self,
        _req: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let users = self.users.list()?;
        Ok(Response::new(pb::ListUsersResponse {
            users: users.iter().map(convert::user).collect(),
        }))
    }

    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let (records, versions) = self.store.counts();
        let (blobs, blob_bytes) = self
            .store
            .blob_totals()
            .map_err(crate::error::Error::from)?;
        Ok(Response::new(pb::StatusResponse {
            office: self.office.clone(),
            fingerprint: self.fingerprint.to_string(),
            records,
            versions,
            software_version: env!("CARGO_PKG_VERSION").to_owned(),
            peers: self.peer_list()?,
            blobs,
            blob_bytes,
            transfers: self
                .transfers
                .view(&self.store)
                .map_err(crate::error::Error::from)?
                .into_iter()
                .map(|t| pb::Transfer {
                    hash: bytes::Bytes::copy_from_slice(&t.hash.0),
                    origin: t.origin,
                    size: t.size,
                    received: t.received,
                    resumed_from: t.resumed_from,
                    active: t.active,
                    last_error: t.last_error,
                })
                .collect(),
        }))
    }

    async fn add_peer(
        &self,
        req: Request<pb::AddPeerRequest>,
    ) -> Result<Response<pb::Peer>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let office = convert::office_id("office", &r.office)?;
        let expected = match r.expected_fingerprint.as_str() {
            "" => None,
            fp => {
                Some(Fingerprint::parse(fp).map_err(|e| Status::invalid_argument(e.to_string()))?)
            }
        };
        let (peer, fingerprint) = self
            .sharing
            .add_peer(office, &r.endpoint, &r.ca_certificate_pem, expected)
            .await?;
        tracing::info!(%who, peer = %peer.office, %fingerprint, "peer pinned");
        let view = self
            .sharing
            .peers()?
            .into_iter()
            .find(|v| v.peer.office == peer.office)
            .ok_or_else(|| Status::internal("peer vanished"))?;
        Ok(Response::new(convert::peer_view(&view)))
    }

    async fn remove_peer(
        &self,
        req: Request<pb::RemovePeerRequest>,
    ) -> Result<Response<pb::RemovePeerResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let office = convert::office_id("office", &r.office)?;
        let (replicas_purged, grants_closed) =
            self.sharing.remove_peer(&office, r.purge_replicas).await?;
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
        let r = req.into_inner();
        let peer = convert::office_id("peer", &r.peer)?;
        let target = match r.target {
            Some(pb::grant_request::Target::Collection(c)) => GrantTarget::Collection(c),
            Some(pb::grant_request::Target::RecordId(id)) => {
                GrantTarget::Record(convert::record_id(&id)?)
            }
            None => {
                return Err(Status::invalid_argument(
                    "give a collection or a record_id to grant",
                ));
            }
        };
        let g = self.sharing.grant(peer, target, r.expires_at_ms).await?;
        tracing::info!(%who, grant = %g.id, peer = %g.peer, "grant made");
        Ok(Response::new(convert::grant(&g)))
    }

    async fn revoke(
        &self,
        req: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::GrantInfo>, Status> {
        let who = caller(&req)?;
        let id = GrantId::parse(&req.into_inner().grant_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let g = self.sharing.revoke(&id, EndReason::Revoked).await?;
        tracing::info!(%who, grant = %g.id, peer = %g.peer, "grant revoked");
        Ok(Response::new(convert::grant(&g)))
    }

    async fn list_grants(
        &self,
        req: Request<pb::ListGrantsRequest>,
    ) -> Result<Response<pb::ListGrantsResponse>, Status> {
        let r = req.into_inner();
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
