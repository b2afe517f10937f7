//! Authorization, decided in one place before any handler runs.
//!
//! The TLS layer attaches the caller's certificate identity to each
//! connection ([`ConnInfo`]). For every call, [`AuthLayer`] re-checks that
//! identity against the trust store (so a revocation applies to connections
//! already open), applies the role policy ([`allowed`]), opens a tracing span
//! naming the caller, and hands the handler an authenticated [`Caller`] in the
//! request extensions. Deny by default: a path not in the policy is refused.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::domain::Role;
use crate::identity::Caller;
use crate::identity::tls::{Admission, TrustStore};

/// What the transport knows about a connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    /// Who the verified client certificate belongs to, decided once at the
    /// handshake.
    pub admission: Arc<Admission>,
}

/// Which callers may use which service. The one place roles are checked.
#[allow(clippy::match_like_matches_macro)] // a table reads better as a match
pub fn allowed(caller: &Caller, path: &str) -> bool {
    let service = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .map(|(s, _)| s)
        .unwrap_or("");
    match (caller, service) {
        (Caller::Local { .. }, "grpc.health.v1.Health") => true,
        (Caller::PeerNode { .. }, "grpc.health.v1.Health") => true,
        (
            Caller::Local { .. },
            "grpc.reflection.v1.ServerReflection" | "grpc.reflection.v1alpha.ServerReflection",
        ) => true,
        (
            Caller::Local {
                role: Role::Admin | Role::Staff,
                ..
            },
            "casemesh.v1.Records",
        ) => true,
        (
            Caller::Local {
                role: Role::Admin, ..
            },
            "casemesh.v1.Admin",
        ) => true,
        (Caller::PeerNode { .. }, "casemesh.v1.Replication") => true,
        _ => false,
    }
}

/// Reads the authenticated caller that [`AuthLayer`] attached. Its absence
/// is a wiring bug, answered as `UNAUTHENTICATED` rather than a panic.
pub fn caller<T>(req: &tonic::Request<T>) -> Result<Caller, Status> {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no authenticated caller"))
}

#[derive(Clone)]
pub struct AuthLayer {
    trust: Arc<TrustStore>,
}

impl AuthLayer {
    pub fn new(trust: Arc<TrustStore>) -> Self {
        Self { trust }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            trust: self.trust.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    trust: Arc<TrustStore>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

fn authorize<B>(trust: &TrustStore, req: &http::Request<B>) -> Result<Caller, Status> {
    let info = req
        .extensions()
        .get::<ConnInfo>()
        .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
    trust.recheck(&info.admission).map_err(|e| {
        tracing::warn!(remote = %info.remote, reason = %e, "refused call");
        Status::permission_denied(format!("certificate refused: {e}"))
    })?;
    let caller = info.admission.caller.clone();
    let path = req.uri().path();
    if !allowed(&caller, path) {
        tracing::warn!(remote = %info.remote, %caller, path, "call not permitted");
        return Err(Status::permission_denied(format!(
            "{caller} may not call {path}"
        )));
    }
    Ok(caller)
}

impl<S, B> Service<http::Request<B>> for Auth<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match authorize(&self.trust, &req) {
            Err(status) => Box::pin(async move { Ok(status.into_http()) }),
            Ok(caller) => {
                let span = tracing::info_span!(
                    "rpc",
                    method = %req.uri().path(),
                    caller = %caller,
                );
                req.extensions_mut().insert(caller);
                // The clone that was made ready is the one to call.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(async move { inner.call(req).await }.instrument(span))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{OfficeId, UserName};
    use crate::identity::Fingerprint;

    fn local(role: Role) -> Caller {
        Caller::Local {
            name: UserName::parse("u").unwrap(),
            role,
            fingerprint: Fingerprint([0; 32]),
        }
    }

    #[test]
    fn policy_matches_the_design() {
        let admin = local(Role::Admin);
        let staff = local(Role::Staff);
        let peer = Caller::PeerNode {
            office: OfficeId::parse("nyc-da").unwrap(),
            fingerprint: Fingerprint([0; 32]),
        };
        let records = "/casemesh.v1.Records/Put";
        let admin_call = "/casemesh.v1.Admin/IssueUser";
        assert!(allowed(&admin, records) && allowed(&staff, records));
        assert!(allowed(&admin, admin_call));
        assert!(!allowed(&staff, admin_call));
        assert!(!allowed(&peer, records) && !allowed(&peer, admin_call));
        assert!(allowed(&peer, "/grpc.health.v1.Health/Check"));
        assert!(allowed(&peer, "/casemesh.v1.Replication/Pull"));
        assert!(!allowed(&admin, "/casemesh.v1.Replication/Pull"));
        assert!(!allowed(&staff, "/casemesh.v1.Replication/Pull"));
        assert!(!allowed(&admin, "/unknown.Service/Call"));
        assert!(!allowed(&admin, "garbage"));
    }
}
