//! Offices on this machine: each created in a directory of its own (office
//! key, CA, certificates, `casemesh.toml`), its node running in this
//! process on a loopback port the kernel chose, or as a `casemesh serve`
//! child process; and typed calls an office's admin makes (pin, put,
//! grant, revoke, remove a peer). The demo runs on it; the integration
//! tests and the benchmark build on it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tonic::transport::Channel;

use crate::config::{Config, Paths};
use crate::domain::{NodeAddr, OfficeId};
use crate::identity::pki::certs_from_pem;
use crate::identity::tls::{PemIdentity, client_config};
use crate::node::{self, NodeHandle};
use crate::protocol::pb::{self, admin_client::AdminClient, records_client::RecordsClient};
use crate::protocol::transport;

/// Largest message the kit's clients send or accept.
const MAX_MESSAGE: usize = 96 * 1024 * 1024;

/// Why something the kit was asked to do failed.
#[derive(Debug, thiserror::Error)]
pub enum KitError {
    #[error(transparent)]
    Setup(#[from] crate::setup::SetupError),
    #[error(transparent)]
    Node(#[from] crate::node::NodeError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Id(#[from] crate::domain::IdError),
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    #[error(transparent)]
    Connect(#[from] transport::ConnectError),
    #[error(transparent)]
    Call(#[from] tonic::Status),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Process(String),
}

pub type Result<T> = std::result::Result<T, KitError>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> KitError {
    let what = what.into();
    move |source| KitError::Io { what, source }
}

/// One office and its node, if running.
pub struct Office {
    pub office: OfficeId,
    pub dir: PathBuf,
    /// Where its node listens (127.0.0.1 and the port first bound).
    pub addr: SocketAddr,
    handle: Option<NodeHandle>,
    process: Option<ServeProcess>,
}

impl Office {
    /// Creates office `name` under `root` and starts its node in this
    /// process on a port the kernel chose.
    pub async fn start(root: &Path, name: &str) -> Result<Self> {
        let (mut office, listener) = Self::create(root, name).await?;
        office.handle = Some(node::start(&office.dir, listener).await?);
        Ok(office)
    }

    /// Creates office `name` under `root`, configured to listen on a port
    /// bound now and handed back, not yet serving.
    pub async fn create(root: &Path, name: &str) -> Result<(Self, TcpListener)> {
        let office = OfficeId::parse(name)?;
        let dir = root.join(name);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(io("binding a loopback port"))?;
        let addr = listener
            .local_addr()
            .map_err(io("reading the bound port"))?;
        crate::setup::init(&dir, &office, &[], addr)?;
        Ok((
            Self {
                office,
                dir,
                addr,
                handle: None,
                process: None,
            },
            listener,
        ))
    }

    /// Creates office `name` under `root` and runs its node as a
    /// `casemesh serve` process of `bin` (its memory then is its own).
    pub async fn start_process(root: &Path, name: &str, bin: &Path) -> Result<Self> {
        let (mut office, listener) = Self::create(root, name).await?;
        drop(listener);
        // The child binds a port of its own choosing and says which: no
        // port is handed over between processes.
        office.serve_process(bin).await?;
        Ok(office)
    }

    /// [`Office::start_process`], the node's log (at `info`) written to
    /// `log`: for a benchmark that reads what the node reports.
    pub async fn start_process_logging(
        root: &Path,
        name: &str,
        bin: &Path,
        log: &Path,
    ) -> Result<Self> {
        let (mut office, listener) = Self::create(root, name).await?;
        drop(listener);
        let process = ServeProcess::start_logging(bin, &office.dir, Some(log)).await?;
        office.addr = process.addr;
        office.process = Some(process);
        office.wait_until_serving(Duration::from_secs(60)).await?;
        Ok(office)
    }

    /// Another handle on the same office for calls to its node (which it
    /// neither runs nor stops): for a client that keeps calling while the
    /// node is killed and started again.
    pub fn caller(&self) -> Office {
        Office {
            office: self.office.clone(),
            dir: self.dir.clone(),
            addr: self.addr,
            handle: None,
            process: None,
        }
    }

    pub fn paths(&self) -> Paths {
        Paths::new(&self.dir)
    }

    pub fn is_running(&self) -> bool {
        self.handle.is_some() || self.process.is_some()
    }

    /// Announcements of replicas applied here, for a node in this process.
    pub fn subscribe_applied(
        &self,
    ) -> Option<tokio::sync::broadcast::Receiver<crate::sync::Applied>> {
        self.handle.as_ref().map(NodeHandle::subscribe_applied)
    }

    /// Where its node serves `/metrics` and the status page, for a node in
    /// this process whose `casemesh.toml` asks for them.
    pub fn web_addrs(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        self.handle
            .as_ref()
            .map_or((None, None), |h| (h.metrics_addr, h.status_page_addr))
    }

    /// Versions its feeds served and read, for a node in this process.
    pub fn feed_counts(&self) -> Option<crate::sync::version_cache::Counts> {
        self.handle.as_ref().map(NodeHandle::feed_counts)
    }

    /// Records in the search index of a node in this process (none when
    /// it keeps no index).
    pub fn search_indexed(&self) -> Option<u64> {
        self.handle.as_ref().and_then(NodeHandle::search_indexed)
    }

    /// Runs the (stopped) node again, as a `casemesh serve` process of
    /// `bin` on a port it chooses.
    pub async fn serve_process(&mut self, bin: &Path) -> Result<()> {
        self.stop().await?;
        let process = ServeProcess::start(bin, &self.dir).await?;
        self.addr = process.addr;
        self.process = Some(process);
        self.wait_until_serving(Duration::from_secs(60)).await
    }

    /// Runs the (stopped) node as a `casemesh serve` process of `bin` on
    /// the address its configuration names (the port bound when it was
    /// created), so that its peers find it where they pinned it after every
    /// restart.
    pub async fn serve_process_in_place(&mut self, bin: &Path) -> Result<()> {
        self.serve_process_in_place_with(bin, &[]).await
    }

    /// [`Office::serve_process_in_place`], with `env` set for the process
    /// (a fake clock, say).
    pub async fn serve_process_in_place_with(
        &mut self,
        bin: &Path,
        env: &[(&str, &str)],
    ) -> Result<()> {
        self.stop().await?;
        let process = ServeProcess::start_with(bin, &self.dir, None, None, env).await?;
        self.process = Some(process);
        self.wait_until_serving(Duration::from_secs(60)).await
    }

    /// Kills its `casemesh serve` process with SIGKILL, as a crash would.
    pub fn kill(&mut self) -> Result<()> {
        match self.process.take() {
            Some(p) => p.kill(),
            None => Ok(()),
        }
    }

    /// The process id of a node run by [`Office::start_process`].
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ServeProcess::id)
    }

    /// Stops the node: in this process, cleanly; a child, with SIGTERM,
    /// waiting for it to exit.
    pub async fn stop(&mut self) -> Result<()> {
        if let Some(h) = self.handle.take() {
            h.shutdown().await?;
        }
        if let Some(p) = self.process.take() {
            p.stop(Duration::from_secs(60)).await?;
        }
        Ok(())
    }

    /// Starts the node again (in this process) on the same data and
    /// address, waiting (bounded) for the port to be free.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if Instant::now() > deadline => {
                    return Err(io(format!("binding {} again", self.addr))(e));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        self.handle = Some(node::start(&self.dir, listener).await?);
        Ok(())
    }

    /// Changes the node's `casemesh.toml` and restarts it.
    pub async fn configure(&mut self, change: impl FnOnce(&mut Config)) -> Result<()> {
        let path = self.paths().config();
        let mut config = Config::load(&path)?;
        change(&mut config);
        std::fs::write(&path, config.to_toml())
            .map_err(io(format!("writing {}", path.display())))?;
        self.restart().await
    }

    pub fn endpoint(&self) -> NodeAddr {
        NodeAddr {
            host: "127.0.0.1".into(),
            port: self.addr.port(),
        }
    }

    fn read(&self, path: PathBuf) -> Result<Vec<u8>> {
        std::fs::read(&path).map_err(io(format!("reading {}", path.display())))
    }

    /// The office CA certificate, as sent to peers.
    pub fn ca_pem(&self) -> Result<Vec<u8>> {
        self.read(self.paths().office_ca())
    }

    /// This node's own certificate and key, as it presents them to peers.
    pub fn node_identity(&self) -> Result<(Vec<u8>, Vec<u8>)> {
        let p = self.paths();
        Ok((self.read(p.node_cert())?, self.read(p.node_key())?))
    }

    /// A channel to this node presenting the given certificate and key.
    pub async fn connect_as(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<Channel> {
        let tls = client_config(
            &certs_from_pem(&self.ca_pem()?)?,
            PemIdentity::from_pem(cert_pem, key_pem)?,
        )?;
        Ok(transport::connect(&self.endpoint(), Arc::new(tls)).await?)
    }

    /// A channel as the office's first admin.
    pub async fn admin_channel(&self) -> Result<Channel> {
        let p = self.paths();
        self.connect_as(&self.read(p.admin_cert())?, &self.read(p.admin_key())?)
            .await
    }

    pub async fn records(&self) -> Result<RecordsClient<Channel>> {
        Ok(RecordsClient::new(self.admin_channel().await?)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }

    pub async fn admin(&self) -> Result<AdminClient<Channel>> {
        Ok(AdminClient::new(self.admin_channel().await?))
    }

    /// Waits (bounded) until the node answers its admin.
    async fn wait_until_serving(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(mut admin) = self.admin().await {
                if admin.status(pb::StatusRequest {}).await.is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(KitError::Process(format!(
                    "{}'s node did not answer within {limit:?}",
                    self.office
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Pins `peer`: trusts its office CA and pulls from its node.
    pub async fn pin(&self, peer: &Office) -> Result<pb::Peer> {
        let pem = String::from_utf8_lossy(&peer.ca_pem()?).into_owned();
        Ok(self
            .admin()
            .await?
            .add_peer(pb::AddPeerRequest {
                office: peer.office.to_string(),
                endpoint: peer.endpoint().to_string(),
                ca_certificate_pem: pem,
                expected_fingerprint: String::new(),
            })
            .await?
            .into_inner())
    }

    /// Writes a new text record; returns what the node wrote.
    pub async fn put(
        &self,
        collection: &str,
        kind: &str,
        title: &str,
        body: &str,
    ) -> Result<pb::PutResponse> {
        self.put_naming(collection, kind, title, body, &[]).await
    }

    /// [`Office::put`] of a record that names `subjects`.
    pub async fn put_naming(
        &self,
        collection: &str,
        kind: &str,
        title: &str,
        body: &str,
        subjects: &[crate::domain::Subject],
    ) -> Result<pb::PutResponse> {
        Ok(self
            .records()
            .await?
            .put(pb::PutRequest {
                collection: collection.into(),
                kind: kind.into(),
                title: title.into(),
                body: body.as_bytes().to_vec().into(),
                content_type: "text/plain".into(),
                subjects: subjects
                    .iter()
                    .map(crate::protocol::convert::subject_to_pb)
                    .collect(),
                ..Default::default()
            })
            .await?
            .into_inner())
    }

    /// Grants `peer` a collection, or a record (`Target::RecordId`).
    pub async fn grant(
        &self,
        peer: &OfficeId,
        target: pb::grant_request::Target,
    ) -> Result<pb::GrantInfo> {
        Ok(self
            .admin()
            .await?
            .grant(pb::GrantRequest {
                peer: peer.to_string(),
                target: Some(target),
                expires_at_ms: 0,
            })
            .await?
            .into_inner())
    }

    /// Grants `peer` the collection `collection`.
    pub async fn grant_collection(
        &self,
        peer: &OfficeId,
        collection: &str,
    ) -> Result<pb::GrantInfo> {
        self.grant(
            peer,
            pb::grant_request::Target::Collection(collection.into()),
        )
        .await
    }

    pub async fn revoke(&self, grant_id: &str) -> Result<pb::GrantInfo> {
        Ok(self
            .admin()
            .await?
            .revoke(pb::RevokeRequest {
                grant_id: grant_id.into(),
            })
            .await?
            .into_inner())
    }

    pub async fn grants(&self) -> Result<Vec<pb::GrantInfo>> {
        Ok(self
            .admin()
            .await?
            .list_grants(pb::ListGrantsRequest::default())
            .await?
            .into_inner()
            .grants)
    }

    pub async fn remove_peer(
        &self,
        peer: &OfficeId,
        purge_replicas: bool,
    ) -> Result<pb::RemovePeerResponse> {
        Ok(self
            .admin()
            .await?
            .remove_peer(pb::RemovePeerRequest {
                office: peer.to_string(),
                purge_replicas,
            })
            .await?
            .into_inner())
    }

    /// Every record the node lists (all origins): id → (version,
    /// collection).
    pub async fn holdings(&self) -> Result<BTreeMap<String, (u64, String)>> {
        let mut records = self.records().await?;
        let mut out = BTreeMap::new();
        let mut token = String::new();
        loop {
            let page = records
                .list(pb::ListRequest {
                    page_size: 1000,
                    page_token: token,
                    ..Default::default()
                })
                .await?
                .into_inner();
            for r in page.records {
                out.insert(r.id, (r.version, r.collection));
            }
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            token = page.next_page_token;
        }
    }
}

/// Offices that pin each other.
pub async fn pin_all(offices: &[Office]) -> Result<()> {
    for a in offices {
        for b in offices {
            if a.office != b.office {
                a.pin(b).await?;
            }
        }
    }
    Ok(())
}

/// A child process, killed (and reaped) when dropped, so that a failure
/// leaves none behind.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `casemesh serve` child process, killed if dropped while running.
pub struct ServeProcess {
    child: ChildGuard,
    /// The address it reported it listens on.
    pub addr: SocketAddr,
    /// Where it reported serving `/metrics` and the status page.
    pub metrics_addr: Option<SocketAddr>,
    pub status_page_addr: Option<SocketAddr>,
}

impl ServeProcess {
    /// Runs `bin serve --data dir --listen 127.0.0.1:0` and waits (bounded)
    /// for the line that names the address it bound.
    pub async fn start(bin: &Path, dir: &Path) -> Result<Self> {
        Self::start_logging(bin, dir, None).await
    }

    /// [`ServeProcess::start`], the node's log (stderr) written to `log`.
    pub async fn start_logging(bin: &Path, dir: &Path, log: Option<&Path>) -> Result<Self> {
        Self::start_with(bin, dir, Some("127.0.0.1:0"), log, &[]).await
    }

    /// Runs `bin serve --data dir`, on `listen` or (`None`) the address
    /// the configuration names, with `env` set, and waits (bounded) for the
    /// line that names the address it bound.
    pub async fn start_with(
        bin: &Path,
        dir: &Path,
        listen: Option<&str>,
        log: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let stderr = match log {
            Some(path) => Stdio::from(
                std::fs::File::create(path).map_err(io(format!("creating {}", path.display())))?,
            ),
            None => Stdio::inherit(),
        };
        let mut command = Command::new(bin);
        command.arg("serve").arg("--data").arg(dir);
        if let Some(listen) = listen {
            command.args(["--listen", listen]);
        }
        command.envs(env.iter().copied());
        let mut child = command
            .env("RUST_LOG", if log.is_some() { "info" } else { "warn" })
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(io(format!("starting {} serve", bin.display())))?;
        let stdout = child.stdout.take();
        let mut guard = Self {
            child: ChildGuard(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_addr: None,
            status_page_addr: None,
        };
        let stdout = stdout.ok_or_else(|| KitError::Process("no stdout to read".into()))?;
        // Lines naming the web listeners come first; the last names the
        // gRPC address.
        let lines = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::task::spawn_blocking(move || {
                use std::io::BufRead;
                let mut reader = std::io::BufReader::new(stdout);
                let mut lines = Vec::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line)? == 0 || !line.starts_with("serving ") {
                        lines.push(line);
                        return Ok::<_, std::io::Error>(lines);
                    }
                    lines.push(line);
                }
            }),
        )
        .await
        .map_err(|_| KitError::Process("casemesh serve said nothing for 60 s".into()))?
        .map_err(|e| KitError::Process(format!("reading casemesh serve's output: {e}")))?
        .map_err(io("reading casemesh serve's output"))?;
        let web = |prefix: &str| {
            lines
                .iter()
                .find_map(|l| l.strip_prefix(prefix))
                .and_then(|url| url.split("://").nth(1))
                .and_then(|rest| rest.split('/').next())
                .and_then(|a| a.parse().ok())
        };
        guard.metrics_addr = web("serving /metrics on ");
        guard.status_page_addr = web("serving the status page on ");
        let line = lines.last().cloned().unwrap_or_default();
        guard.addr = listening_on(&line).ok_or_else(|| {
            KitError::Process(format!(
                "casemesh serve did not say where it listens: {line:?}"
            ))
        })?;
        Ok(guard)
    }

    pub fn id(&self) -> u32 {
        self.child.0.id()
    }

    /// Kills it with SIGKILL, as a crash would: no shutdown, no flush.
    pub fn kill(mut self) -> Result<()> {
        self.child.0.kill().map_err(io("killing casemesh serve"))?;
        self.child
            .0
            .wait()
            .map_err(io("waiting for casemesh serve"))?;
        Ok(())
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit.
    pub async fn stop(mut self, limit: Duration) -> Result<()> {
        let pid = self.child.0.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .map_err(io("running kill"))?;
        if !sent.success() {
            return Err(KitError::Process(format!("kill -TERM {pid} failed")));
        }
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self
                .child
                .0
                .try_wait()
                .map_err(io("waiting for casemesh serve"))?
            {
                return if status.success() {
                    Ok(())
                } else {
                    Err(KitError::Process(format!(
                        "casemesh serve exited with {status}"
                    )))
                };
            }
            if Instant::now() > deadline {
                return Err(KitError::Process(format!(
                    "casemesh serve did not stop within {limit:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The address in `casemesh serve`'s first line, `… listening on ADDR`.
pub fn listening_on(line: &str) -> Option<SocketAddr> {
    line.trim().rsplit(' ').next()?.parse().ok()
}

/// A field (`VmRSS:`, `VmHWM:`) of a process's `/proc/PID/status`, in KiB.
pub fn proc_kib(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(io(format!("reading {path}")))?;
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| KitError::Process(format!("no {field} in {path}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_address_serve_reports_is_read_back() {
        let line = "casemesh node for office phila-da listening on 127.0.0.1:41234\n";
        assert_eq!(
            super::listening_on(line),
            Some("127.0.0.1:41234".parse().unwrap())
        );
        assert_eq!(super::listening_on("something else"), None);
    }
}
