//! `casemesh.v1.Admin`: translate, call the services, translate back.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::auth::caller;
use super::convert;
use super::pb::{self, admin_server::Admin};
use crate::domain::UserName;
use crate::identity::Fingerprint;
use crate::service::UserService;
use crate::store::Store;

pub struct AdminApi {
    pub users: Arc<UserService>,
    pub store: Arc<Store>,
    pub office: String,
    pub fingerprint: Fingerprint,
    pub ca_pem: String,
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
        Ok(Response::new(pb::StatusResponse {
            office: self.office.clone(),
            fingerprint: self.fingerprint.to_string(),
            records,
            versions,
            software_version: env!("CARGO_PKG_VERSION").to_owned(),
        }))
    }
}
