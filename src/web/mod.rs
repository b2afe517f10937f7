//! The node's web listeners, beside its gRPC one: Prometheus metrics
//! (`[metrics]`) and the status page (`[status_page]`). Both are read
//! only: no request changes anything.
//!
//! - Metrics on a loopback address are plain HTTP: Prometheus on the same
//!   machine, and nothing else, can reach them. Anywhere else, and the
//!   status page always, the listener is HTTPS with TLS 1.3 and a client
//!   certificate, checked by the same trust store as gRPC calls (and again
//!   at every request, so a revocation applies to connections already
//!   open); only this office's `admin` and `auditor` users are answered.
//! - A refused request is counted in the audit log as refusals are; a view
//!   of the status page is logged once per certificate per
//!   [`VIEW_LOG_INTERVAL`] (the page reloads itself every few seconds);
//!   scrapes, which carry counts only, are not logged.
//! - `/healthz` answers 200 while the store accepts writes and 503 with
//!   the reason otherwise (`casemesh healthcheck` reads it).

pub mod collector;
pub mod lag;
pub mod observe;
pub mod page;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_stream::StreamExt as _;
use tonic::transport::server::Connected as _;

use crate::domain::Role;
use crate::domain::audit::{Draft, Outcome, Target};
use crate::domain::time::now_ms;
use crate::identity::Caller;
use crate::identity::tls::TrustStore;
use crate::metrics::Metrics;
use crate::protocol::transport::{self, AcceptOptions, ConnInfo, RefusalHook};
use crate::service::audit::AuditQuery;
use crate::service::refusals::RefusalLog;
use crate::service::{AuditLog, Call};
use crate::store::Store;

use observe::Observer;

/// A certificate's views of the status page are logged at most this often.
pub const VIEW_LOG_INTERVAL: Duration = Duration::from_secs(600);
/// Audit entries the status page shows.
const PAGE_ENTRIES: usize = 25;
/// Connections served at once on a plain (loopback) listener.
const PLAIN_CONNECTIONS: usize = 64;
/// Time a client has to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the web listeners read from.
pub struct Web {
    pub observer: Arc<Observer>,
    pub metrics: Arc<Metrics>,
    pub store: Arc<Store>,
    pub audit: Arc<AuditLog>,
    pub trust: Arc<TrustStore>,
    pub refusals: Arc<RefusalLog>,
    pub refresh_secs: u64,
    /// When each certificate's last view of the page was logged.
    viewed: Mutex<HashMap<String, u64>>,
}

/// What a listener serves.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Routes {
    /// `/metrics` and `/healthz`.
    Metrics,
    /// The page (`/`), `/metrics` and `/healthz`.
    StatusPage,
}

impl Routes {
    /// The listener's name in metrics and logs.
    pub fn listener(self) -> &'static str {
        match self {
            Routes::Metrics => "metrics",
            Routes::StatusPage => "status_page",
        }
    }
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let headers = r.headers_mut();
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    // Nothing is loaded from anywhere, and the page may not be framed.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    r
}

/// `reply`, after which the connection is closed.
fn closing(mut reply: Reply) -> Reply {
    reply.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    reply
}

/// Whether the request names a loopback address or `localhost` as its
/// host (HTTP/1.1 requires `Host`; a request without one is refused).
fn loopback_host<B>(req: &Request<B>) -> bool {
    let Some(host) = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
    else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        // `[::1]:9464`
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn text(status: StatusCode, body: impl Into<String>) -> Reply {
    let mut body = body.into();
    body.push('\n');
    reply(status, "text/plain; charset=utf-8", body)
}

impl Web {
    pub fn new(
        observer: Arc<Observer>,
        metrics: Arc<Metrics>,
        audit: Arc<AuditLog>,
        trust: Arc<TrustStore>,
        refusals: Arc<RefusalLog>,
        refresh_secs: u64,
    ) -> Self {
        Self {
            store: observer.store.clone(),
            observer,
            metrics,
            audit,
            trust,
            refusals,
            refresh_secs,
            viewed: Mutex::new(HashMap::new()),
        }
    }

    async fn handle(
        self: Arc<Self>,
        routes: Routes,
        conn: Option<ConnInfo>,
        req: Request<Incoming>,
    ) -> Result<Reply, Infallible> {
        let path = req.uri().path().to_owned();
        let caller = match &conn {
            // Plain HTTP is served on loopback only; a page elsewhere that
            // names this address (DNS rebinding) sends its own host name.
            None if !loopback_host(&req) => {
                return Ok(closing(text(
                    StatusCode::FORBIDDEN,
                    "this endpoint answers requests addressed to a loopback address or localhost only",
                )));
            }
            None => None,
            Some(info) => match self.authorize(info) {
                Ok(caller) => Some(caller),
                Err(why) => {
                    self.refuse(info, &path, &why).await;
                    // Refused callers do not keep the connection.
                    return Ok(closing(text(StatusCode::FORBIDDEN, why)));
                }
            },
        };
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Ok(text(
                StatusCode::METHOD_NOT_ALLOWED,
                "this page is read only: GET only",
            ));
        }
        Ok(match (routes, path.as_str()) {
            (_, "/metrics") => self.scrape().await,
            (_, "/healthz") => self.health(),
            (Routes::StatusPage, "/") => {
                let page = self.page().await;
                match (&conn, &caller, page.status()) {
                    // As with a gRPC call: a page whose view cannot be
                    // logged is not shown.
                    (Some(info), Some(caller), StatusCode::OK) => {
                        match self.log_view(info, caller).await {
                            Ok(()) => page,
                            Err(e) => {
                                tracing::error!(error = %e, "could not log a view of the status page");
                                text(
                                    StatusCode::SERVICE_UNAVAILABLE,
                                    "the audit log could not be written, so the page is not shown; the node's log has the details",
                                )
                            }
                        }
                    }
                    _ => page,
                }
            }
            _ => text(StatusCode::NOT_FOUND, format!("no page {path}")),
        })
    }

    /// The caller of a request on a TLS listener, if it may look: this
    /// office's admins and auditors, with certificates still valid.
    fn authorize(&self, info: &ConnInfo) -> Result<Caller, String> {
        self.trust
            .recheck(&info.admission)
            .map_err(|e| format!("certificate refused: {e}"))?;
        match &info.admission.caller {
            c @ Caller::Local {
                role: Role::Admin | Role::Auditor,
                ..
            } => Ok(c.clone()),
            other => Err(format!(
                "{other} may not read this node's status: it needs a certificate of role admin or auditor"
            )),
        }
    }

    /// Counts a refused request in the audit log, per certificate.
    async fn refuse(&self, info: &ConnInfo, path: &str, why: &str) {
        let who =
            crate::grpc::auth::actor(&info.admission.caller, self.audit.office(), info.remote);
        // Counted under the same source as a refused gRPC call.
        let source = crate::grpc::auth::source_of(&who);
        let call = Call::new(who, action_of(path));
        if let Some(entry) = call.owed(Outcome::failed("PERMISSION_DENIED", why)) {
            self.refusals.refuse(&source, entry).await;
        }
    }

    /// Logs a view of the page, unless this certificate's last view was
    /// logged less than [`VIEW_LOG_INTERVAL`] ago.
    async fn log_view(&self, info: &ConnInfo, caller: &Caller) -> crate::error::Result<()> {
        let Caller::Local { fingerprint, .. } = caller else {
            return Ok(());
        };
        let key = fingerprint.to_string();
        let now = now_ms();
        let logged_lately = |viewed: &HashMap<String, u64>| {
            viewed
                .get(&key)
                .is_some_and(|&at| now.saturating_sub(at) < VIEW_LOG_INTERVAL.as_millis() as u64)
        };
        if logged_lately(&self.viewed.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(());
        }
        let who = crate::grpc::auth::actor(caller, self.audit.office(), info.remote);
        let draft = Draft::new(who, "Web.StatusPage", Target::default(), Outcome::ok());
        self.audit.append(draft).await?;
        // Noted once written: one entry per user certificate, bounded by
        // the users issued.
        self.viewed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, now);
        Ok(())
    }

    async fn scrape(self: &Arc<Self>) -> Reply {
        let web = self.clone();
        let snapshot = tokio::task::spawn_blocking(move || web.observer.snapshot()).await;
        match snapshot {
            Ok(Ok(s)) => reply(
                StatusCode::OK,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                collector::render(&self.metrics, self.store.commit_stats(), s),
            ),
            Ok(Err(e)) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the node's state could not be read: {e}"),
            ),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }

    fn health(&self) -> Reply {
        match self.store.storage().writes_refused {
            None => text(StatusCode::OK, "serving"),
            Some(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not serving: {why}"),
            ),
        }
    }

    async fn page(self: &Arc<Self>) -> Reply {
        let web = self.clone();
        let built = tokio::task::spawn_blocking(move || {
            let snapshot = web.observer.snapshot()?;
            let (entries, _) = web.audit.query(&AuditQuery {
                newest_first: true,
                limit: PAGE_ENTRIES,
                ..AuditQuery::default()
            })?;
            let entries: Vec<_> = entries.into_iter().map(|(e, _)| e).collect();
            Ok::<_, crate::error::Error>(page::render(&snapshot, &entries, web.refresh_secs))
        })
        .await;
        match built {
            Ok(Ok(html)) => reply(StatusCode::OK, "text/html; charset=utf-8", html),
            Ok(Err(e)) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the node's state could not be read: {e}"),
            ),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

/// `Web.StatusPage` for `/`, `Web.Metrics` for `/metrics`, `Web.Other`
/// for anything else (a caller's invented path is not logged as a name).
fn action_of(path: &str) -> &'static str {
    match path {
        "/" => "Web.StatusPage",
        "/metrics" => "Web.Metrics",
        "/healthz" => "Web.Health",
        _ => "Web.Other",
    }
}

/// HTTP/1.1 with a deadline on each request's headers; `keep_alive`
/// off on the plain listener, whose few slots must not be held idle.
fn http1(keep_alive: bool) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(keep_alive);
    b
}

/// Serves `routes` over plain HTTP on `listener` (a loopback address:
/// [`crate::node`] refuses anything else) until `shutdown`.
pub async fn serve_plain(
    web: Arc<Web>,
    listener: TcpListener,
    routes: Routes,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(PLAIN_CONNECTIONS));
    let mut conns = JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            a = listener.accept() => a,
        };
        let (tcp, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        while conns.try_join_next().is_some() {}
        let web = web.clone();
        conns.spawn(async move {
            let service =
                hyper::service::service_fn(move |req| web.clone().handle(routes, None, req));
            let _ = http1(false)
                .serve_connection(TokioIo::new(tcp), service)
                .await;
            drop(permit);
        });
    }
    conns.shutdown().await;
}

/// Serves `routes` over HTTPS on `listener`: TLS 1.3, a client certificate
/// required, each request authorized (admins and auditors of this office).
pub async fn serve_tls(
    web: Arc<Web>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    routes: Routes,
    on_refused: RefusalHook,
    options: AcceptOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut incoming, accept_loop) =
        transport::incoming(listener, tls, web.trust.clone(), on_refused, options);
    let mut conns = JoinSet::new();
    loop {
        let next = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            c = incoming.next() => c,
        };
        let conn = match next {
            Some(Ok(conn)) => conn,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
            None => break,
        };
        while conns.try_join_next().is_some() {}
        let info = conn.connect_info();
        let web = web.clone();
        conns.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                web.clone().handle(routes, Some(info.clone()), req)
            });
            let _ = http1(true)
                .serve_connection(TokioIo::new(conn), service)
                .await;
        });
    }
    drop(incoming);
    conns.shutdown().await;
    let _ = accept_loop.await;
    tracing::debug!(listener = routes.listener(), "web listener stopped");
}

/// Notes each peer's feed for the lag every second, until `shutdown`.
pub async fn run_lag_notes(observer: Arc<Observer>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
        let o = observer.clone();
        match tokio::task::spawn_blocking(move || o.tick()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "reading the feeds' ends failed"),
            Err(e) => tracing::warn!(error = %e, "noting the feeds' ends failed to run"),
        }
    }
}

/// Whether `addr` may serve plain HTTP: a loopback address.
pub fn plain_allowed(addr: SocketAddr) -> bool {
    addr.ip().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_host(host: Option<&str>) -> Request<()> {
        let mut b = Request::builder().uri("/metrics");
        if let Some(h) = host {
            b = b.header(header::HOST, h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn plain_http_answers_loopback_hosts_only() {
        for ok in [
            "127.0.0.1:9464",
            "localhost:9464",
            "LOCALHOST",
            "[::1]:9464",
            "127.0.0.2",
        ] {
            assert!(loopback_host(&with_host(Some(ok))), "{ok}");
        }
        for refused in [
            "evil.example:9464",
            "10.0.0.1:9464",
            "[2001:db8::1]:9464",
            "",
        ] {
            assert!(!loopback_host(&with_host(Some(refused))), "{refused}");
        }
        assert!(!loopback_host(&with_host(None)));
    }
}
