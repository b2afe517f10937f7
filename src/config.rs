//! `casemesh.toml` → a validated [`Config`], and the layout of a node's data
//! directory ([`Paths`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::domain::{Limits, OfficeId};

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{} does not exist: is {} the data directory you gave `casemesh init`?", path.display(), dir.display())]
    Missing { path: PathBuf, dir: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not valid: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

/// The node's settings. Every field is documented in
/// `deploy/casemesh.example.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This office's id.
    pub office: String,
    /// Address the node listens on for gRPC over mutual TLS.
    pub listen: SocketAddr,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub blobs: BlobConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub status_page: StatusPageConfig,
    #[serde(default)]
    pub search: SearchConfig,
}

/// `[search]`: the search index (`docs/comparing-notes.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// Keep a search index of the records this node holds, and answer
    /// `Records.Search`. Default true. Turned off, the node deletes the
    /// index at start (it holds the records' text) and refuses searches;
    /// turned on again, it rebuilds it from the store.
    pub enabled: bool,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// `[metrics]`: the Prometheus endpoint, `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where to serve it; absent: not served. On a loopback address it is
    /// plain HTTP (for a Prometheus on the same machine); on any other, it
    /// is HTTPS (TLS 1.3) and asks for a client certificate of role
    /// `admin` or `auditor`. Also serves `/healthz`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
}

/// `[status_page]`: the read-only web page of the node's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatusPageConfig {
    /// Where to serve it, always HTTPS (TLS 1.3) with a client certificate
    /// of role `admin` or `auditor`; absent: not served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// How often the page reloads itself, in seconds. Default 10.
    pub refresh_secs: u64,
}

impl Default for StatusPageConfig {
    fn default() -> Self {
        Self {
            listen: None,
            refresh_secs: 10,
        }
    }
}

/// `[audit]`: the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// How often every pinned peer's audit log is checked against the
    /// heads kept from it (`audit witness` on its own): each check proves
    /// the heads kept since the last one with a few hundred bytes per head.
    /// Default 10m; at least 10s (a peer answers one proof per 10 s).
    #[serde(with = "humantime_serde_compat")]
    pub witness_interval: std::time::Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            witness_interval: std::time::Duration::from_secs(600),
        }
    }
}

/// `[blobs]`: attached files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlobConfig {
    /// Largest file accepted by `PutBlob`, in bytes. Default 64 GiB.
    pub max_blob_bytes: u64,
    /// How long an uploaded file that no record references is kept.
    /// Default 24 hours.
    #[serde(with = "humantime_serde_compat")]
    pub unreferenced_grace: std::time::Duration,
    /// Files fetched from peers at once. Default 3.
    pub fetch_concurrency: usize,
    /// Cap on the bytes per second all fetches together take; 0 for none.
    pub fetch_bytes_per_sec: u64,
    /// How often the node re-hashes every stored file (a scrub); 0 for
    /// never. Default 168h (weekly).
    #[serde(with = "humantime_serde_compat")]
    pub scrub_interval: std::time::Duration,
    /// Cap on the bytes per second the periodic scrub reads, so it does not
    /// crowd out transfers; 0 for none. Default 32 MiB/s.
    pub scrub_bytes_per_sec: u64,
    /// Where whole files are kept: `files` (under the data directory, the
    /// default) or `s3` (the bucket `[blobs.s3]` names).
    pub store: BlobStoreKind,
    /// `[blobs.s3]`: the S3-compatible bucket, for `store = "s3"` (and for
    /// `casemesh blob move` to or from it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Config>,
}

/// Which blob store keeps whole files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobStoreKind {
    #[default]
    Files,
    S3,
}

impl std::fmt::Display for BlobStoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Files => "files",
            Self::S3 => "s3",
        })
    }
}

/// `[blobs.s3]`: where files are kept in an S3-compatible object store.
/// Holds no secret: the access key comes from `credentials_file` or the
/// environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The server's URL (`https://s3.example.org`, `http://127.0.0.1:9000`)
    /// for a server that is not AWS (MinIO, Ceph, Garage); buckets are then
    /// addressed by path (`<endpoint>/<bucket>/<key>`). Absent: AWS itself,
    /// in `region`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The bucket; it must exist (this node never creates one).
    pub bucket: String,
    /// The region requests are signed for. Default `us-east-1`, which most
    /// servers that are not AWS accept.
    #[serde(default = "default_region")]
    pub region: String,
    /// A folder inside the bucket for this node's objects, so that several
    /// offices can share one bucket (`minn-da/` or `minn-da`: the same).
    /// Default: the bucket's top level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// A file holding the access key, in the format of AWS's own
    /// credentials file. Absent: `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`, if set) from the
    /// environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
    /// Allow an `http://` endpoint (no TLS: keys are not sent, but every
    /// byte of every file is). Default false; for tests on loopback.
    #[serde(default)]
    pub allow_http: bool,
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

impl Default for BlobConfig {
    fn default() -> Self {
        Self {
            max_blob_bytes: 64 << 30,
            unreferenced_grace: std::time::Duration::from_secs(24 * 3600),
            fetch_concurrency: 3,
            fetch_bytes_per_sec: 0,
            scrub_interval: std::time::Duration::from_secs(7 * 24 * 3600),
            scrub_bytes_per_sec: 32 << 20,
            store: BlobStoreKind::Files,
            s3: None,
        }
    }
}

/// Durations in `casemesh.toml` are written like `24h` or `90s`.
mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// In the largest unit of hours, minutes and seconds that writes it
    /// whole (`24h`, `90m`), as the example configuration does.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    pub fn format(d: Duration) -> String {
        let secs = d.as_secs();
        match (d.subsec_nanos(), secs) {
            (0, 0) => "0s".into(),
            (0, s) if s % 3600 == 0 => format!("{}h", s / 3600),
            (0, s) if s % 60 == 0 => format!("{}m", s / 60),
            (0, s) => format!("{s}s"),
            _ => humantime::format_duration(d).to_string(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// `[store]`: the embedded database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// sled page cache, in MiB. Default 32: sled holds more than this (see
    /// `deploy/casemesh.example.toml`).
    pub cache_mb: u64,
    /// Writes that grow the store (records, files, replicas, grants,
    /// users, peers) are refused while the disk holding the data directory
    /// has less free space than this, in MiB; 0: never. Default 256.
    pub min_free_mb: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            cache_mb: 32,
            min_free_mb: 256,
        }
    }
}

/// `[server]`: connection handling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Seconds a client has to complete the TLS handshake. Default 10.
    pub handshake_timeout_secs: u64,
    /// Most concurrent connections; further ones wait. Default 1024.
    pub max_connections: usize,
    /// Most TLS handshakes in progress at once from one address; further
    /// connections from it are closed at once (and counted in the audit
    /// log). Default 64.
    pub max_handshakes_per_source: usize,
    /// Most calls in progress at once on one connection (HTTP/2 streams).
    /// Default 256.
    pub max_streams_per_connection: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            handshake_timeout_secs: 10,
            max_connections: 1024,
            max_handshakes_per_source: 64,
            max_streams_per_connection: 256,
        }
    }
}

/// Default listen address written by `casemesh init`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7443";

impl Config {
    pub fn new(office: &OfficeId, listen: SocketAddr) -> Self {
        Self {
            office: office.to_string(),
            listen,
            store: StoreConfig::default(),
            limits: Limits::default(),
            server: ServerConfig::default(),
            blobs: BlobConfig::default(),
            audit: AuditConfig::default(),
            metrics: MetricsConfig::default(),
            status_page: StatusPageConfig::default(),
            search: SearchConfig::default(),
        }
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                let dir = path.parent().unwrap_or(Path::new(".")).to_owned();
                ConfigError::Missing {
                    path: path.to_owned(),
                    dir,
                }
            } else {
                ConfigError::Read {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let cfg: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.office_id().map_err(|e| e.to_string())?;
        if cfg.limits.max_body_bytes > crate::domain::limits::MAX_BODY_BYTES_CAP {
            return Err(
                "limits.max_body_bytes may be at most 64 MiB (use attachments for larger files)"
                    .into(),
            );
        }
        if cfg.blobs.store == BlobStoreKind::S3 && cfg.blobs.s3.is_none() {
            return Err(
                "blobs.store = \"s3\" needs a [blobs.s3] table naming the bucket (deploy/casemesh.example.toml shows one)"
                    .into(),
            );
        }
        if cfg.server.handshake_timeout_secs == 0 {
            return Err("server.handshake_timeout_secs must be at least 1".into());
        }
        if cfg.blobs.unreferenced_grace < std::time::Duration::from_secs(60) {
            return Err(
                "blobs.unreferenced_grace must be at least 1m: an upload needs time to be listed by its record"
                    .into(),
            );
        }
        if cfg.blobs.fetch_concurrency == 0 {
            return Err("blobs.fetch_concurrency must be at least 1".into());
        }
        if cfg.audit.witness_interval < std::time::Duration::from_secs(10) {
            return Err(
                "audit.witness_interval must be at least 10s: a peer answers one proof of its log per 10 s"
                    .into(),
            );
        }
        if cfg.server.max_connections == 0 {
            return Err("server.max_connections must be at least 1".into());
        }
        if cfg.server.max_streams_per_connection == 0 {
            return Err("server.max_streams_per_connection must be at least 1".into());
        }
        if cfg.server.max_handshakes_per_source == 0 {
            return Err("server.max_handshakes_per_source must be at least 1".into());
        }
        if cfg.status_page.refresh_secs == 0 {
            return Err("status_page.refresh_secs must be at least 1".into());
        }
        let listeners = [
            ("listen", Some(cfg.listen)),
            ("metrics.listen", cfg.metrics.listen),
            ("status_page.listen", cfg.status_page.listen),
        ];
        for (i, (a, x)) in listeners.iter().enumerate() {
            for (b, y) in &listeners[i + 1..] {
                if let (Some(x), Some(y)) = (x, y) {
                    if x == y && x.port() != 0 {
                        return Err(format!("{a} and {b} are both {x}: each needs its own port"));
                    }
                }
            }
        }
        Ok(cfg)
    }

    pub fn office_id(&self) -> Result<OfficeId, crate::domain::IdError> {
        OfficeId::parse(&self.office)
    }

    pub fn to_toml(&self) -> String {
        // Serialising plain structs of strings and numbers cannot fail.
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

/// Where things live in a node's data directory.
#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
}

impl Paths {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    /// The node's settings.
    pub fn config(&self) -> PathBuf {
        self.root.join("casemesh.toml")
    }
    /// The office CA certificate: public, the file sent to peer offices.
    pub fn office_ca(&self) -> PathBuf {
        self.root.join("office-ca.pem")
    }
    /// Private keys; the directory is 0700 and the files 0600.
    pub fn private_dir(&self) -> PathBuf {
        self.root.join("private")
    }
    /// The office key: signs the CA, every certificate and every record.
    pub fn office_key(&self) -> PathBuf {
        self.private_dir().join("office-key.pem")
    }
    pub fn node_key(&self) -> PathBuf {
        self.private_dir().join("node-key.pem")
    }
    pub fn node_cert(&self) -> PathBuf {
        self.root.join("node-cert.pem")
    }
    /// The first admin's certificate and key, used by the CLI's `--data`.
    pub fn admin_dir(&self) -> PathBuf {
        self.root.join("admin")
    }
    pub fn admin_cert(&self) -> PathBuf {
        self.admin_dir().join("admin-cert.pem")
    }
    pub fn admin_key(&self) -> PathBuf {
        self.admin_dir().join("admin-key.pem")
    }
    pub fn store(&self) -> PathBuf {
        self.root.join("store")
    }
    /// The search index: derived from the store, rebuilt from it when
    /// missing.
    pub fn search(&self) -> PathBuf {
        self.root.join("search")
    }
    /// Attached files, when they are kept as files (the default).
    pub fn blobs(&self) -> PathBuf {
        self.root.join("blobs")
    }
    /// Attached files on their way in (uploads, fetches), whichever store
    /// keeps them once whole.
    pub fn staging(&self) -> PathBuf {
        self.root.join("staging")
    }
    /// The address a running node bound (`serve` writes it at start and
    /// removes it at a clean stop): the truth when `listen` names port 0
    /// or `--listen` overrode it.
    pub fn serve_addr(&self) -> PathBuf {
        self.root.join("serve.addr")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_config_reads_back() {
        let office = OfficeId::parse("phila-da").unwrap();
        let cfg = Config::new(&office, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(Config::parse(&cfg.to_toml()).unwrap(), cfg);
    }

    #[test]
    fn the_documented_example_config_is_valid() {
        let text = include_str!("../deploy/casemesh.example.toml");
        let cfg = Config::parse(text).unwrap();
        assert_eq!(
            cfg.limits,
            Limits::default(),
            "the example shows the defaults"
        );
        assert_eq!(cfg.store, StoreConfig::default());
        assert_eq!(cfg.server, ServerConfig::default());
        assert_eq!(cfg.blobs, BlobConfig::default());
        assert_eq!(cfg.audit, AuditConfig::default());
        assert_eq!(cfg.metrics, MetricsConfig::default());
        assert_eq!(cfg.status_page, StatusPageConfig::default());
    }

    #[test]
    fn a_witness_interval_under_a_peers_proof_interval_is_refused() {
        let base = "office = \"phila-da\"\nlisten = \"127.0.0.1:1\"\n[audit]\n";
        let err = Config::parse(&format!("{base}witness_interval = \"5s\"\n")).unwrap_err();
        assert!(
            err.contains("audit.witness_interval must be at least 10s"),
            "{err}"
        );
        let cfg = Config::parse(&format!("{base}witness_interval = \"1h\"\n")).unwrap();
        assert_eq!(
            cfg.audit.witness_interval,
            std::time::Duration::from_secs(3600)
        );
    }

    #[test]
    fn durations_are_written_as_the_docs_write_them() {
        use std::time::Duration;
        let f = humantime_serde_compat::format;
        assert_eq!(f(Duration::from_secs(86_400)), "24h");
        assert_eq!(f(Duration::from_secs(5_400)), "90m");
        assert_eq!(f(Duration::from_secs(61)), "61s");
        assert_eq!(f(Duration::from_millis(1_500)), "1s 500ms");
        let office = OfficeId::parse("phila-da").unwrap();
        let written = Config::new(&office, DEFAULT_LISTEN.parse().unwrap()).to_toml();
        assert!(
            written.contains("unreferenced_grace = \"24h\""),
            "{written}"
        );
    }

    #[test]
    fn unknown_settings_and_bad_office_ids_are_refused() {
        let err = Config::parse("office = \"phila-da\"\nlisten = \"127.0.0.1:1\"\ntypo = 1\n")
            .unwrap_err();
        assert!(err.contains("typo"), "{err}");
        let err = Config::parse("office = \"PHILA\"\nlisten = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(err.contains("lower-case"), "{err}");
    }
}
