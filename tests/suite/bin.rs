//! Driving the `casemesh` binary as an admin would: run a command and read
//! what it prints and its exit code; `init` an office; `serve` it as a
//! child process that is killed when the test ends.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::cluster::eventually;

pub const BIN: &str = env!("CARGO_BIN_EXE_casemesh");

/// The longest any one command may take before the test fails (the demo,
/// in a debug build on a busy machine, is the slowest).
const COMMAND_LIMIT: Duration = Duration::from_secs(120);

/// Runs `casemesh ARGS` to completion, within [`COMMAND_LIMIT`].
pub fn casemesh(args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("RUST_LOG", "warn");
    run_bounded(&mut cmd, COMMAND_LIMIT)
}

/// Runs `cmd` to completion, collecting its output; kills it and fails the
/// test if it takes longer than `limit`.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = Server(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start casemesh"),
    );
    let collect = |mut from: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = from.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = collect(Box::new(child.0.stdout.take().expect("piped stdout")));
    let stderr = collect(Box::new(child.0.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait for casemesh") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "{cmd:?} did not finish within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
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

/// A loopback port free now, for a node configured to listen on it. Taken
/// at random below Linux's ephemeral range (32768–60999), where the ports
/// the kernel hands out to other tests' connections and listeners do not
/// fall, so it stays free until the node binds it.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let mut r = [0u8; 2];
        casemesh::domain::random_bytes(&mut r);
        let port = 20_000 + u16::from_be_bytes(r) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between 20000 and 32000");
}

/// A child process (`casemesh serve`, say), killed when dropped, so that a
/// failing test leaves none behind.
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
