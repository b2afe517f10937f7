//! Driving the `casemesh` binary as an admin would: run a command and read
//! what it prints and its exit code; `init` an office; `serve` it as a
//! child process that is killed when the test ends.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::cluster::eventually;

pub const BIN: &str = env!("CARGO_BIN_EXE_casemesh");

/// Runs `casemesh ARGS` to completion.
pub fn casemesh(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run casemesh")
}

/// Runs `casemesh ARGS`, which must succeed; returns what it printed.
pub fn ok(args: &[&str]) -> String {
    let out = casemesh(args);
    assert!(
        out.status.success(),
        "casemesh {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Runs `casemesh ARGS`, which must fail with `code`; returns its stderr.
pub fn fails(code: i32, args: &[&str]) -> String {
    let out = casemesh(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "casemesh {args:?}: expected exit {code}; stdout: {} stderr: {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

/// `ok` for a command with `--json`: its output parsed.
pub fn json(args: &[&str]) -> serde_json::Value {
    let out = ok(args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("casemesh {args:?}: {e}: {out}"))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A `casemesh serve` child process, killed when dropped.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `casemesh init` of `office` in `tmp/NAME`, listening on a free loopback
/// port: (data directory, listen address, what init printed).
pub fn init_named(tmp: &tempfile::TempDir, office: &str, name: &str) -> (PathBuf, String, String) {
    let data = tmp.path().join(name);
    let listen = format!("127.0.0.1:{}", free_port());
    let out = ok(&[
        "init",
        "--office",
        office,
        "--data",
        data.to_str().unwrap(),
        "--listen",
        &listen,
    ]);
    (data, listen, out)
}

/// `casemesh init` of phila-da in `tmp/office`.
pub fn init_office(tmp: &tempfile::TempDir) -> (PathBuf, String, String) {
    init_named(tmp, "phila-da", "office")
}

/// Starts `casemesh serve` on `data`, its stderr going to `log` if given,
/// and waits until it answers.
pub async fn serve_logging(data: &Path, log: Option<&Path>) -> Server {
    let stderr = match log {
        Some(path) => Stdio::from(std::fs::File::create(path).expect("log file")),
        None => Stdio::null(),
    };
    let child = Command::new(BIN)
        .args(["serve", "--data", data.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start casemesh serve");
    let server = Server(child);
    let data = data.to_owned();
    eventually(Duration::from_secs(20), "casemesh serve to answer", || {
        let data = data.clone();
        async move {
            let out = casemesh(&["status", "--data", data.to_str().unwrap()]);
            out.status.success().then_some(())
        }
    })
    .await;
    server
}

/// Starts `casemesh serve` on `data` and waits until it answers.
pub async fn serve(data: &Path) -> Server {
    serve_logging(data, None).await
}
