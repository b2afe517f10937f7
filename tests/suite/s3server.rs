//! A real S3 server for tests: `s3s-fs` (crates.io; `.ci/run` installs it
//! with `cargo install s3s-fs --version 0.14.1 --features binary`),
//! serving a temporary directory on `127.0.0.1` at a port it picks itself.
//!
//! The binary is `$CASEMESH_S3S_FS`, or `s3s-fs` on `PATH`. Where there is
//! none, a test that needs it says it is skipped, unless
//! `CASEMESH_REQUIRE_S3` is set (as `.ci/run` does): then it fails.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use casemesh::store::s3::S3Config;
use tempfile::TempDir;

/// The one bucket each server starts with.
pub const BUCKET: &str = "evidence";
pub const ACCESS_KEY: &str = "casemesh-test";
pub const SECRET_KEY: &str = "casemesh-test-secret";

/// How long the server may take to start and accept a connection.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// A running `s3s-fs`, killed when dropped.
pub struct S3Server {
    child: Child,
    addr: SocketAddr,
    /// Holds `data/` (the served root; a bucket is a folder in it) and
    /// `credentials` (the access key, in the format `S3Config` reads).
    dir: TempDir,
}

impl S3Server {
    /// Starts a server with the bucket [`BUCKET`], or returns `None` after
    /// saying `test` is skipped because there is no `s3s-fs` here.
    pub fn start_or_skip(test: &str) -> Option<Self> {
        let bin = match find_binary() {
            Ok(bin) => bin,
            Err(why) => {
                assert!(
                    std::env::var_os("CASEMESH_REQUIRE_S3").is_none(),
                    "{test}: {why}"
                );
                eprintln!("SKIPPED {test}: {why}");
                return None;
            }
        };
        Some(Self::start(&bin).unwrap_or_else(|why| panic!("{test}: {why}")))
    }

    fn start(bin: &Path) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("a temporary directory: {e}"))?;
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join(BUCKET))
            .map_err(|e| format!("creating the bucket's folder: {e}"))?;
        std::fs::write(
            dir.path().join("credentials"),
            format!("[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"),
        )
        .map_err(|e| format!("writing the credentials file: {e}"))?;
        // Port 0: the server binds a free port and logs it (at info), so
        // no other process can take it between choosing and binding.
        let mut child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&data)
            .env("RUST_LOG", "s3s_fs=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{} could not start: {e}", bin.display()))?;
        let (stdout, stderr) = match (child.stdout.take(), child.stderr.take()) {
            (Some(out), Some(err)) => (out, err),
            _ => return Err("s3s-fs's output was not piped".into()),
        };
        let (found, announced) = mpsc::channel();
        std::thread::spawn(move || watch_for_address(stdout, found));
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut text);
            text
        });
        let mut server = Self {
            child,
            // Replaced below; dropping `server` on an error kills the child.
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
        };
        let deadline = Instant::now() + START_DEADLINE;
        server.addr = match announced.recv_timeout(START_DEADLINE) {
            Ok(Ok(addr)) => addr,
            Ok(Err(stdout)) => {
                let status = server.child.wait().map_err(|e| e.to_string())?;
                let stderr = stderr.join().unwrap_or_default();
                return Err(format!(
                    "s3s-fs ({}) stopped ({status}) without serving:\n{stdout}{stderr}",
                    bin.display()
                ));
            }
            Err(_) => {
                return Err(format!(
                    "s3s-fs ({}) did not say where it listens within {START_DEADLINE:?}",
                    bin.display()
                ));
            }
        };
        wait_until_accepting(server.addr, deadline)?;
        Ok(server)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The folder the server keeps `bucket` in: each object is a file at
    /// its key's path.
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.dir.path().join("data").join(bucket)
    }

    /// The file with the right access key.
    pub fn credentials_file(&self) -> PathBuf {
        self.dir.path().join("credentials")
    }

    /// A config for the bucket [`BUCKET`] under `prefix`, with the right
    /// credentials, over plain http.
    pub fn config(&self, prefix: Option<&str>) -> S3Config {
        S3Config {
            endpoint: Some(self.endpoint()),
            bucket: BUCKET.into(),
            region: "us-east-1".into(),
            prefix: prefix.map(Into::into),
            credentials_file: Some(self.credentials_file()),
            allow_http: true,
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `$CASEMESH_S3S_FS`, or `s3s-fs` on `PATH`, or how to get one.
fn find_binary() -> Result<PathBuf, String> {
    const INSTALL: &str = "install it with `cargo install s3s-fs --version 0.14.1 --features binary --locked` (as .ci/run does) and put it on PATH or name it in CASEMESH_S3S_FS";
    if let Some(named) = std::env::var_os("CASEMESH_S3S_FS") {
        let path = PathBuf::from(named);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "CASEMESH_S3S_FS names {}, which is not a file; {INSTALL}",
                path.display()
            ))
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("s3s-fs"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| format!("there is no s3s-fs on PATH; {INSTALL}"))
}

/// Reads the server's log until it says `server is running at
/// http://<addr>`, sends the address (or, at the end of the output,
/// everything it read), then keeps reading so the server never blocks on
/// a full pipe.
fn watch_for_address(stdout: impl Read, found: mpsc::Sender<Result<SocketAddr, String>>) {
    const SAYS: &str = "server is running at http://";
    let mut seen = String::new();
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let Ok(line) = line else { break };
        let addr = line
            .split_once(SAYS)
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok());
        if let Some(addr) = addr {
            let _ = found.send(Ok(addr));
            lines.for_each(drop);
            return;
        }
        seen.push_str(&line);
        seen.push('\n');
    }
    let _ = found.send(Err(seen));
}

/// Polls until `addr` accepts a TCP connection, up to `deadline`.
fn wait_until_accepting(addr: SocketAddr, deadline: Instant) -> Result<(), String> {
    let mut pause = Duration::from_millis(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match TcpStream::connect_timeout(&addr, left.max(Duration::from_millis(1))) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!(
                    "s3s-fs said it listens at {addr}, but a connection there failed until the deadline: {e}"
                ));
            }
            Err(_) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
        }
    }
}
