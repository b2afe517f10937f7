//! HTTP/1.1 GETs against a node's web listeners, plain and over mutual
//! TLS, and the Prometheus text read back as Prometheus reads it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use casemesh::identity::pki::certs_from_pem;
use casemesh::identity::tls::{PemIdentity, client_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(30);

/// Status code and body of a response read to its end.
fn parse(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (code, body.to_owned())
}

fn request(path: &str) -> String {
    request_for("127.0.0.1", path)
}

fn request_for(host: &str, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

/// `GET path` over plain HTTP.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_get_as(addr, "127.0.0.1", path).await
}

/// `GET path` over plain HTTP, naming `host` in the request.
pub async fn http_get_as(addr: SocketAddr, host: &str, path: &str) -> (u16, String) {
    tokio::time::timeout(LIMIT, async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(request_for(host, path).as_bytes())
            .await
            .expect("send");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.expect("read");
        parse(&raw)
    })
    .await
    .expect("the web listener answered in time")
}

/// `GET path` over TLS 1.3, presenting `cert`/`key` (none: no client
/// certificate) and trusting the office CA `ca`; `Err` with the error if
/// the connection was refused.
pub async fn https_get(
    addr: SocketAddr,
    path: &str,
    identity: Option<(&[u8], &[u8])>,
    ca: &[u8],
) -> Result<(u16, String), String> {
    let roots = certs_from_pem(ca).map_err(|e| e.to_string())?;
    let mut cfg = match identity {
        Some((cert, key)) => client_config(
            &roots,
            PemIdentity::from_pem(cert, key).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?,
        None => {
            let mut store = rustls::RootCertStore::empty();
            for r in roots {
                store.add(r).map_err(|e| e.to_string())?;
            }
            rustls::ClientConfig::builder_with_provider(casemesh::identity::tls::provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(|e| e.to_string())?
                .with_root_certificates(store)
                .with_no_client_auth()
        }
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    tokio::time::timeout(LIMIT, async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name =
            rustls_pki_types::ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
        let mut s = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(request(path).as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        // TLS 1.3 reports a refused client certificate on the first read.
        match s.read_to_end(&mut raw).await {
            Ok(_) => {}
            Err(e) if raw.is_empty() => return Err(e.to_string()),
            Err(_) => {}
        }
        if raw.is_empty() {
            return Err("the connection closed without an answer".into());
        }
        Ok(parse(&raw))
    })
    .await
    .map_err(|_| "no answer in time".to_owned())?
}

/// A kept-alive HTTPS connection: several GETs, one after another.
pub struct KeptAlive {
    stream: tokio_rustls::client::TlsStream<TcpStream>,
}

impl KeptAlive {
    pub async fn open(addr: SocketAddr, cert: &[u8], key: &[u8], ca: &[u8]) -> Self {
        let roots = certs_from_pem(ca).unwrap();
        let mut cfg = client_config(&roots, PemIdentity::from_pem(cert, key).unwrap()).unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let stream = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .unwrap();
        Self { stream }
    }

    /// `GET path` on this connection: status, whether the server closes
    /// the connection after it, and the body.
    pub async fn get(&mut self, path: &str) -> (u16, bool, String) {
        tokio::time::timeout(LIMIT, async {
            let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
            self.stream.write_all(req.as_bytes()).await.unwrap();
            let mut raw = Vec::new();
            let mut byte = [0u8; 1];
            while !raw.ends_with(b"\r\n\r\n") {
                let n = self.stream.read(&mut byte).await.unwrap();
                assert!(n == 1, "the connection closed inside a response's headers");
                raw.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&raw).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("a content-length");
            let closes = head.lines().any(|l| l.trim() == "connection: close");
            let mut body = vec![0u8; length];
            self.stream.read_exact(&mut body).await.unwrap();
            let code = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap();
            (code, closes, String::from_utf8_lossy(&body).into_owned())
        })
        .await
        .expect("an answer in time")
    }
}

/// The scrape, parsed by an independent Prometheus text parser.
pub fn parse_metrics(text: &str) -> prometheus_parse::Scrape {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text")
}

/// The value of `name` whose labels include every one of `labels`; `None`
/// if no sample matches.
pub fn value(
    scrape: &prometheus_parse::Scrape,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
}
