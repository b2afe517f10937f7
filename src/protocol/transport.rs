//! Mutual TLS over TCP for tonic, on both ends.
//!
//! Server: an accept loop that sets `TCP_NODELAY` (Nagle adds ~40 ms stalls
//! to small messages), bounds concurrent connections, completes the TLS 1.3
//! handshake with a deadline, and yields connections that carry the client's
//! verified certificate ([`ConnInfo`]). Client: a connector that dials with
//! `TCP_NODELAY` and the same TLS settings, and waits for the node's first
//! bytes, so that a node refusing our certificate is known at connect time
//! (see [`Primed`]).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint};

use crate::domain::{AddrError, NodeAddr};
use crate::identity::tls::{Admission, TrustStore};

/// What the transport knows about a connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    /// Who the verified client certificate belongs to, decided once at the
    /// handshake.
    pub admission: Arc<Admission>,
}

/// An accepted, authenticated connection.
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: ConnInfo,
    _permit: OwnedSemaphorePermit,
}

impl Connected for TlsConn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// `AsyncWrite` for a wrapper that writes straight to its `inner` stream.
macro_rules! write_through_inner {
    ($($header:tt)*) => {
        $($header)* {
            fn poll_write(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                Pin::new(&mut self.inner).poll_write(cx, buf)
            }

            fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Pin::new(&mut self.inner).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<io::Result<()>> {
                Pin::new(&mut self.inner).poll_shutdown(cx)
            }

            fn poll_write_vectored(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }
        }
    };
}

write_through_inner!(impl AsyncWrite for TlsConn);

/// Told of every connection refused at the handshake (the node writes it to
/// the audit log).
pub type RefusalHook = Arc<
    dyn Fn(SocketAddr, String) -> Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

/// Settings of the accept loop.
#[derive(Debug, Clone)]
pub struct AcceptOptions {
    pub handshake_timeout: Duration,
    pub max_connections: usize,
    /// Most handshakes in progress at once from one IP address.
    pub max_handshakes_per_source: usize,
}

/// Handshakes in progress, by source address; an address leaves the map
/// when its last one ends, so it holds at most as many addresses as there
/// are connections.
#[derive(Default)]
struct Handshaking {
    by_source: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

impl Handshaking {
    /// A place for one more handshake from `source`, if it has fewer than
    /// `limit` in progress.
    fn begin(self: &Arc<Self>, source: std::net::IpAddr, limit: usize) -> Option<HandshakeSlot> {
        let source = source_of(source);
        let mut by_source = self.by_source.lock().unwrap_or_else(|p| p.into_inner());
        let n = by_source.entry(source).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(HandshakeSlot {
            table: self.clone(),
            source,
        })
    }
}

/// The source a handshake is counted under: an IPv4 address, or the /64
/// network of an IPv6 one (one host is given a whole /64 to pick from).
fn source_of(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            std::net::IpAddr::V6(std::net::Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

struct HandshakeSlot {
    table: Arc<Handshaking>,
    source: std::net::IpAddr,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut by_source = self
            .table
            .by_source
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                by_source.remove(&self.source);
            }
        }
    }
}

/// Accepts connections on `listener` until the returned stream is dropped;
/// the task then ends and closes the listener.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    trust: Arc<TrustStore>,
    on_refused: RefusalHook,
    options: AcceptOptions,
) -> (
    ReceiverStream<Result<TlsConn, io::Error>>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(tls);
    let limit = Arc::new(Semaphore::new(options.max_connections));
    let handshaking = Arc::new(Handshaking::default());
    let task = tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                _ = tx.closed() => break,
                p = limit.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let accepted = tokio::select! {
                _ = tx.closed() => break,
                a = listener.accept() => a,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let on_refused = on_refused.clone();
            let Some(slot) = handshaking.begin(remote.ip(), options.max_handshakes_per_source)
            else {
                // Closed at once: one address cannot hold every slot.
                drop((tcp, permit));
                tracing::info!(%remote, "too many handshakes in progress from this address");
                tokio::spawn(async move {
                    on_refused(
                        remote,
                        "too many TLS handshakes in progress from this address".into(),
                    )
                    .await;
                });
                continue;
            };
            let acceptor = acceptor.clone();
            let trust = trust.clone();
            let tx = tx.clone();
            let timeout = options.handshake_timeout;
            tokio::spawn(async move {
                let shaken = handshake(acceptor, &trust, tcp, remote, timeout).await;
                drop(slot);
                match shaken {
                    Ok((inner, info)) => {
                        let conn = TlsConn {
                            inner,
                            info,
                            _permit: permit,
                        };
                        // The server is shutting down when this fails.
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Err(e) => {
                        tracing::info!(%remote, error = %e, "TLS handshake refused");
                        on_refused(remote, e.to_string()).await;
                    }
                }
            });
        }
    });
    (ReceiverStream::new(rx), task)
}

async fn handshake(
    acceptor: TlsAcceptor,
    trust: &TrustStore,
    tcp: TcpStream,
    remote: SocketAddr,
    timeout: Duration,
) -> io::Result<(tokio_rustls::server::TlsStream<TcpStream>, ConnInfo)> {
    tcp.set_nodelay(true)?;
    let stream = tokio::time::timeout(timeout, acceptor.accept(tcp))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"))??;
    let leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned())
        .ok_or_else(|| io::Error::new(io::ErrorKind::PermissionDenied, "no client certificate"))?;
    // The verifier accepted this certificate a moment ago; classify it once
    // here so that calls only need a cheap re-check.
    let admission = trust
        .admit(&leaf)
        .map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e.to_string()))?;
    Ok((
        stream,
        ConnInfo {
            remote,
            admission: Arc::new(admission),
        },
    ))
}

/// Why a client could not reach a node.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    BadEndpoint(#[from] AddrError),
    #[error("could not connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// An endpoint that dials `addr` over mutual TLS. `lazy` channels connect
/// on first use and reconnect by themselves.
fn endpoint(addr: &NodeAddr) -> Result<Endpoint, ConnectError> {
    // tonic sees plain http: TLS is done by our connector below.
    let plain = if addr.host.contains(':') {
        format!("http://[{}]:{}", addr.host, addr.port)
    } else {
        format!("http://{}:{}", addr.host, addr.port)
    };
    Ok(Endpoint::from_shared(plain)
        .map_err(|_| AddrError(addr.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true))
}

/// How long a client waits, after its TLS handshake, for the node's first
/// bytes (its HTTP/2 settings, or an alert refusing our certificate). Less
/// than the endpoint's connect timeout, which covers the whole connector.
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(3);

/// A client's TLS stream after the node's first bytes have been read.
///
/// In TLS 1.3 the client's handshake completes before the server has
/// checked the client's certificate; a refusal arrives afterwards, as an
/// alert. Without waiting for it, a refused certificate would surface only
/// at the first call, as an opaque "transport error". The server speaks
/// first in HTTP/2 (its SETTINGS frame), so reading once after the
/// handshake yields either those bytes, kept here and handed to hyper
/// first, or the alert, as an error that names it.
pub struct Primed<S> {
    first: Vec<u8>,
    read: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> Primed<S> {
    async fn new(inner: S) -> io::Result<Self> {
        Self::within(inner, FIRST_BYTES_TIMEOUT).await
    }

    async fn within(mut inner: S, timeout: Duration) -> io::Result<Self> {
        use tokio::io::AsyncReadExt;
        let mut first = vec![0u8; 16 * 1024];
        let n = tokio::time::timeout(timeout, inner.read(&mut first))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the node said nothing after the TLS handshake",
                )
            })??;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the node closed the connection right after the TLS handshake",
            ));
        }
        first.truncate(n);
        Ok(Self {
            first,
            read: 0,
            inner,
        })
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Primed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.read < self.first.len() {
            let n = (self.first.len() - self.read).min(buf.remaining());
            let from = self.read;
            buf.put_slice(&self.first[from..from + n]);
            self.read += n;
            if self.read == self.first.len() {
                self.first = Vec::new();
                self.read = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

write_through_inner!(impl<S: AsyncWrite + Unpin> AsyncWrite for Primed<S>);

fn connector(
    addr: NodeAddr,
    tls: Arc<ClientConfig>,
) -> Result<
    impl tower::Service<
        http::Uri,
        Response = TokioIo<Primed<tokio_rustls::client::TlsStream<TcpStream>>>,
        Error = io::Error,
        Future = impl Send,
    > + Clone
    + Send,
    ConnectError,
> {
    let server_name =
        ServerName::try_from(addr.host.clone()).map_err(|_| AddrError(addr.to_string()))?;
    let tls = TlsConnector::from(tls);
    let target = (addr.host, addr.port);
    Ok(tower::service_fn(move |_: http::Uri| {
        let tls = tls.clone();
        let server_name = server_name.clone();
        let target = target.clone();
        async move {
            let tcp = TcpStream::connect((target.0.as_str(), target.1)).await?;
            tcp.set_nodelay(true)?;
            let stream = tls.connect(server_name, tcp).await?;
            Ok::<_, io::Error>(TokioIo::new(Primed::new(stream).await?))
        }
    }))
}

/// Connects now; fails if the node cannot be reached or refuses us.
pub async fn connect(addr: &NodeAddr, tls: Arc<ClientConfig>) -> Result<Channel, ConnectError> {
    endpoint(addr)?
        .connect_with_connector(connector(addr.clone(), tls)?)
        .await
        .map_err(|source| ConnectError::Connect {
            endpoint: addr.to_string(),
            source,
        })
}

/// A channel that connects on first use.
pub fn connect_lazy(addr: &NodeAddr, tls: Arc<ClientConfig>) -> Result<Channel, ConnectError> {
    Ok(endpoint(addr)?.connect_with_connector_lazy(connector(addr.clone(), tls)?))
}

#[cfg(test)]
mod tests {

    #[test]
    fn handshakes_from_one_ipv6_network_count_together() {
        let table = Arc::new(Handshaking::default());
        let a: std::net::IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: std::net::IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: std::net::IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let first = table.begin(a, 2).unwrap();
        let _second = table.begin(b, 2).unwrap();
        assert!(table.begin(a, 2).is_none(), "the /64 holds its 2");
        assert!(table.begin(other, 2).is_some(), "another /64 is apart");
        let v4: std::net::IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(source_of(v4), v4);
        drop(first);
        assert!(table.begin(b, 2).is_some(), "a place freed");
    }

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What the server sent first reaches the reader whole and in order,
    /// also through reads smaller than it, and then the rest follows.
    #[tokio::test]
    async fn a_primed_stream_replays_the_first_bytes_then_reads_on() {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let sent: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        server.write_all(&sent[..20_000]).await.unwrap();
        let mut primed = Primed::new(client).await.unwrap();
        server.write_all(&sent[20_000..]).await.unwrap();
        drop(server);
        let mut got = Vec::new();
        let mut piece = [0u8; 1000];
        loop {
            let n = primed.read(&mut piece).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&piece[..n]);
        }
        assert!(got == sent, "{} bytes read, {} sent", got.len(), sent.len());
    }

    #[tokio::test]
    async fn a_server_that_closes_or_says_nothing_is_an_error() {
        let (client, server) = tokio::io::duplex(1024);
        drop(server);
        let closed = Primed::new(client).await.err().unwrap();
        assert_eq!(closed.kind(), io::ErrorKind::UnexpectedEof);
        let (client, _silent) = tokio::io::duplex(1024);
        let waited = Primed::within(client, Duration::from_millis(50))
            .await
            .err()
            .unwrap();
        assert_eq!(waited.kind(), io::ErrorKind::TimedOut);
    }
}
