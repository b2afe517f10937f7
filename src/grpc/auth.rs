//! Authorization, decided in one place before any handler runs.
//!
//! The TLS layer attaches the caller's certificate identity to each
//! connection ([`ConnInfo`]). For every call, [`AuthLayer`] re-checks that
//! identity against the trust store (so a revocation applies to connections
//! already open), applies the role policy ([`allowed`]), opens a tracing span
//! naming the caller, and hands the handler an authenticated [`Caller`] in the
//! request extensions. Deny by default: a path not in the policy is refused.
//!
//! The same layer keeps the audit log's account of calls: each call to a
//! casemesh service carries a [`Call`]; a call that changes something has
//! its entry written in the change's transaction, and every other call —
//! reads and every refusal, including refusals here — gets its entry
//! written here, before the reply leaves.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::domain::Role;
use crate::domain::audit::{Actor, Outcome};
use crate::identity::Caller;
use crate::identity::tls::TrustStore;
use crate::metrics::Metrics;
use crate::protocol::transport::ConnInfo;
use crate::service::refusals::RefusalLog;
use crate::service::{AuditLog, Call};

/// Why a call was refused before its handler ran (or could not be
/// answered); `grpc::status` picks the code.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("no client certificate")]
    NoCertificate,
    /// The layer did not run: a wiring bug, not the caller's doing.
    #[error("no authenticated caller")]
    NoCaller,
    #[error("no audit record for this call")]
    NoAuditRecord,
    #[error("certificate refused: {0}")]
    Certificate(String),
    #[error("{caller} may not call {path}")]
    NotPermitted { caller: String, path: String },
    #[error("the audit log could not be written; the node's log has the details")]
    AuditUnwritable,
}

/// The Admin calls an auditor may make: the audit log and the node's
/// state, read only. Not `Export` (a bundle carries records and files) nor
/// `ScrubBlobs` (it reads every file and may quarantine some).
pub const AUDITOR_READS: [&str; 7] = [
    "/casemesh.v1.Admin/Status",
    "/casemesh.v1.Admin/ListPeers",
    "/casemesh.v1.Admin/ListGrants",
    "/casemesh.v1.Admin/ListUsers",
    "/casemesh.v1.Admin/QueryAudit",
    "/casemesh.v1.Admin/VerifyAudit",
    "/casemesh.v1.Admin/WitnessAudit",
];

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
        // A peer may check, not watch: a watch is a stream that never ends.
        (Caller::PeerNode { .. }, "grpc.health.v1.Health") => {
            path == "/grpc.health.v1.Health/Check"
        }
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
        (
            Caller::Local {
                role: Role::Auditor,
                ..
            },
            "casemesh.v1.Admin",
        ) => AUDITOR_READS.contains(&path),
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
        .ok_or_else(|| Refused::NoCaller.into())
}

/// The audit record of the call being handled, attached by [`AuthLayer`].
pub fn audit_call<T>(req: &tonic::Request<T>) -> Result<Arc<Call>, Status> {
    req.extensions()
        .get::<Arc<Call>>()
        .cloned()
        .ok_or_else(|| Refused::NoAuditRecord.into())
}

/// The audit log's name for a caller.
pub fn actor(caller: &Caller, office: &str, remote: SocketAddr) -> Actor {
    match caller {
        Caller::Local {
            name,
            role,
            fingerprint,
        } => Actor {
            kind: "user".into(),
            name: name.to_string(),
            role: role.as_str().into(),
            office: office.into(),
            fingerprint: fingerprint.to_string(),
            remote: remote.to_string(),
        },
        Caller::PeerNode {
            office: peer,
            fingerprint,
        } => Actor {
            fingerprint: fingerprint.to_string(),
            remote: remote.to_string(),
            ..Actor::peer(peer.as_str())
        },
    }
}

/// `PERMISSION_DENIED` for [`tonic::Code::PermissionDenied`].
pub fn code_name(code: tonic::Code) -> String {
    let camel = format!("{code:?}");
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Whether a peer's call with `outcome` is counted rather than logged on
/// its own: a refusal, or the opening of a `Pull` stream (which names no
/// record; what the stream sends is logged batch by batch). Files served
/// and proofs given are logged one by one.
fn counted(path: &str, outcome: &Outcome) -> bool {
    !outcome.is_ok() || path == "/casemesh.v1.Replication/Pull"
}

/// The source a caller's counted calls are counted under: a peer's office
/// (an office can issue its node new certificates at will), a user's
/// certificate, or the address of a caller without one.
pub fn source_of(who: &Actor) -> String {
    if who.kind == "peer" {
        return format!("office {}", who.office);
    }
    if who.fingerprint.is_empty() {
        // By address, not port: the port changes with every connection.
        who.remote
            .parse::<SocketAddr>()
            .map(|a| a.ip().to_string())
            .unwrap_or_else(|_| who.remote.clone())
    } else {
        who.fingerprint.clone()
    }
}

/// `Records.Put` for `/casemesh.v1.Records/Put`; other paths as they are.
fn action_of(path: &str) -> String {
    path.strip_prefix("/casemesh.v1.")
        .map(|p| p.replace('/', "."))
        .unwrap_or_else(|| path.to_owned())
}

#[derive(Clone)]
pub struct AuthLayer {
    trust: Arc<TrustStore>,
    audit: Arc<AuditLog>,
    /// Where calls a caller can repeat at will are counted (see
    /// [`counted`]).
    refusals: Arc<RefusalLog>,
    /// `limits.max_body_bytes`, named when a request is refused as too
    /// large before its handler runs.
    max_body_bytes: usize,
    /// Calls answered, by method and code, and how long they took.
    metrics: Arc<Metrics>,
}

impl AuthLayer {
    pub fn new(
        trust: Arc<TrustStore>,
        audit: Arc<AuditLog>,
        refusals: Arc<RefusalLog>,
        max_body_bytes: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            trust,
            audit,
            refusals,
            max_body_bytes,
            metrics,
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            trust: self.trust.clone(),
            audit: self.audit.clone(),
            refusals: self.refusals.clone(),
            max_body_bytes: self.max_body_bytes,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    trust: Arc<TrustStore>,
    audit: Arc<AuditLog>,
    refusals: Arc<RefusalLog>,
    max_body_bytes: usize,
    metrics: Arc<Metrics>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Why a call was refused here, and who made it when that is known.
type Refusal = Box<(Status, Option<Actor>)>;

fn authorize<B>(
    trust: &TrustStore,
    office: &str,
    req: &http::Request<B>,
) -> Result<(Caller, Actor), Refusal> {
    let info = req
        .extensions()
        .get::<ConnInfo>()
        .ok_or_else(|| Box::new((Refused::NoCertificate.into(), None)))?;
    let who = actor(&info.admission.caller, office, info.remote);
    authorize_conn(trust, info, req.uri().path())
        .map(|caller| (caller, who.clone()))
        .map_err(|status| Box::new((status, Some(who))))
}

fn authorize_conn(trust: &TrustStore, info: &ConnInfo, path: &str) -> Result<Caller, Status> {
    trust.recheck(&info.admission).map_err(|e| {
        tracing::warn!(remote = %info.remote, reason = %e, "refused call");
        Status::from(Refused::Certificate(e.to_string()))
    })?;
    let caller = info.admission.caller.clone();
    if !allowed(&caller, path) {
        tracing::warn!(remote = %info.remote, %caller, path, "call not permitted");
        return Err(Refused::NotPermitted {
            caller: caller.to_string(),
            path: path.to_owned(),
        }
        .into());
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
        let path = req.uri().path().to_owned();
        let audit = self.audit.clone();
        let refusals = self.refusals.clone();
        let metrics = self.metrics.clone();
        let started = std::time::Instant::now();
        match authorize(&self.trust, audit.office(), &req) {
            // Refused before any handler: counted per caller, since a
            // caller can repeat it as fast as it can send.
            Err(refusal) => Box::pin(async move {
                let (status, who) = *refusal;
                let code = code_name(status.code());
                metrics.rpc(&path, &code, started.elapsed().as_secs_f64());
                let who = who.unwrap_or_else(|| Actor::unauthenticated(String::new()));
                let source = source_of(&who);
                let call = Call::new(who, action_of(&path));
                let outcome = Outcome::failed(code, status.message());
                if let Some(entry) = call.owed(outcome) {
                    refusals.refuse(&source, entry).await;
                }
                Ok(status.into_http())
            }),
            Ok((caller, who)) => {
                let peer = matches!(caller, Caller::PeerNode { .. }).then(|| source_of(&who));
                let admission = req
                    .extensions()
                    .get::<ConnInfo>()
                    .map(|info| info.admission.clone());
                let trust = self.trust.clone();
                let span = tracing::info_span!("rpc", method = %path, caller = %caller);
                // Health checks and reflection touch no case data.
                let call = path
                    .starts_with("/casemesh.v1.")
                    .then(|| Arc::new(Call::new(who, action_of(&path))));
                if let Some(call) = &call {
                    req.extensions_mut().insert(call.clone());
                }
                req.extensions_mut().insert(caller);
                // The clone that was made ready is the one to call.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let max_body_bytes = self.max_body_bytes;
                Box::pin(
                    async move {
                        let mut resp = inner.call(req).await?;
                        // Checked again before every message of the
                        // reply: a revocation, an unpinning or the expiry
                        // of the certificate also ends a stream in progress.
                        if let Some(admission) = admission {
                            resp = resp.map(|body| {
                                tonic::body::Body::new(Rechecked {
                                    inner: body,
                                    trust,
                                    admission,
                                    ended: false,
                                    idle: Box::pin(tokio::time::sleep(IDLE_RECHECK)),
                                })
                            });
                        }
                        let refused = Status::from_header_map(resp.headers());
                        if let Some(status) = refused.and_then(|s| {
                            super::status::oversized_request(&s, &path, max_body_bytes)
                        }) {
                            resp = status.into_http();
                        }
                        // One line per call, reads included, inside the
                        // span that names the method and the caller. A
                        // stream is answered when its first reply starts.
                        let code = Status::from_header_map(resp.headers())
                            .map(|s| code_name(s.code()))
                            .unwrap_or_else(|| "OK".into());
                        let elapsed = started.elapsed().as_secs_f64();
                        metrics.rpc(&path, &code, elapsed);
                        let elapsed_ms = elapsed * 1000.0;
                        if call.is_some() {
                            tracing::info!(%code, elapsed_ms, "call answered");
                        } else {
                            tracing::debug!(%code, elapsed_ms, "call answered");
                        }
                        let Some(call) = call else { return Ok(resp) };
                        let outcome = match Status::from_header_map(resp.headers()) {
                            Some(s) if s.code() != tonic::Code::Ok => {
                                Outcome::failed(code_name(s.code()), s.message())
                            }
                            _ => Outcome::ok(),
                        };
                        if let Some(peer) = peer.filter(|_| counted(&path, &outcome)) {
                            if let Some(entry) = call.owed(outcome) {
                                refusals.refuse(&peer, entry).await;
                            }
                            return Ok(resp);
                        }
                        // The entry is durable before the reply leaves; a
                        // reply whose entry cannot be written is not sent.
                        if let Err(e) = audit.finish_call(&call, outcome).await {
                            tracing::error!(error = %e, "could not write the audit entry of a call");
                            // A failed store says so, and what to do.
                            let status = match e {
                                crate::error::Error::StorageFailed(_) => Status::from(e),
                                _ => Status::from(Refused::AuditUnwritable),
                            };
                            return Ok(status.into_http());
                        }
                        Ok(resp)
                    }
                    .instrument(span),
                )
            }
        }
    }
}

/// How often a reply that sends nothing (a health watch, a stalled export)
/// checks its caller anyway.
const IDLE_RECHECK: std::time::Duration = std::time::Duration::from_secs(5);

type Frame = Poll<Option<Result<http_body::Frame<bytes::Bytes>, Status>>>;

/// A reply whose caller is checked again before each message, and every
/// [`IDLE_RECHECK`] while it sends none: once its certificate is revoked
/// or expired (or its office unpinned), the reply ends with
/// `PERMISSION_DENIED` instead of its next message.
struct Rechecked {
    inner: tonic::body::Body,
    trust: Arc<TrustStore>,
    admission: Arc<crate::identity::tls::Admission>,
    ended: bool,
    idle: Pin<Box<tokio::time::Sleep>>,
}

impl Rechecked {
    /// The trailers that end the reply, if its caller is refused now.
    fn cut_if_refused(&mut self) -> Option<Frame> {
        let e = self.trust.recheck(&self.admission).err()?;
        self.ended = true;
        tracing::warn!(caller = %self.admission.caller, reason = %e, "reply cut off");
        let status = Status::from(Refused::Certificate(e.to_string()));
        let mut trailers = http::HeaderMap::new();
        Some(Poll::Ready(Some(match status.add_header(&mut trailers) {
            Ok(()) => Ok(http_body::Frame::trailers(trailers)),
            Err(status) => Err(status),
        })))
    }
}

impl http_body::Body for Rechecked {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Frame {
        if self.ended {
            return Poll::Ready(None);
        }
        if self.idle.as_mut().poll(cx).is_ready() {
            if let Some(cut) = self.cut_if_refused() {
                return cut;
            }
            let next = tokio::time::Instant::now() + IDLE_RECHECK;
            self.idle.as_mut().reset(next);
            // Registers the new deadline with this task.
            let _ = self.idle.as_mut().poll(cx);
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        if frame.is_data() {
            if let Some(cut) = self.cut_if_refused() {
                return cut;
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
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
        let auditor = local(Role::Auditor);
        assert!(allowed(&auditor, "/casemesh.v1.Admin/QueryAudit"));
        assert!(allowed(&auditor, "/casemesh.v1.Admin/Status"));
        assert!(!allowed(&auditor, "/casemesh.v1.Admin/Export"));
        assert!(!allowed(&auditor, "/casemesh.v1.Admin/Grant"));
        assert!(!allowed(&auditor, "/casemesh.v1.Records/Get"));
        assert!(!allowed(&auditor, "/casemesh.v1.Records/List"));
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
