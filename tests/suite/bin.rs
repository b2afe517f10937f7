//! Driving the `casemesh` binary as an admin would: run a command and read
//! what it prints and its exit code; `init` an office; `serve` it as a
//! child process that is killed when the test ends.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub use casemesh::cluster::ChildGuard;
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

/// Runs `casemesh ARGS` with each of `vars` set to its value (`Some`) or
/// removed (`None`) in its environment.
pub fn casemesh_env(args: &[&str], vars: &[(&str, Option<&str>)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("RUST_LOG", "warn");
    for (name, value) in vars {
        match value {
            Some(v) => cmd.env(name, v),
            None => cmd.env_remove(name),
        };
    }
    run_bounded(&mut cmd, COMMAND_LIMIT)
}

/// Runs `cmd` to completion, collecting its output; kills it and fails the
/// test if it takes longer than `limit`.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = ChildGuard(
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

/// A `casemesh serve` child process (killed when dropped) and where it
/// listens, as it said.
pub struct Server {
    pub process: casemesh::cluster::ServeProcess,
    /// `https://127.0.0.1:PORT`, as an admin gives it to peer offices.
    pub endpoint: String,
}

/// `casemesh init` of `office` in `tmp/NAME`, listening on a port the node
/// picks when it starts (`serve` reports it): (data directory, what init
/// printed).
pub fn init_named(tmp: &tempfile::TempDir, office: &str, name: &str) -> (PathBuf, String) {
    let data = tmp.path().join(name);
    let out = ok(&[
        "init",
        "--office",
        office,
        "--data",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    (data, out)
}

/// `casemesh init` of phila-da in `tmp/office`.
pub fn init_office(tmp: &tempfile::TempDir) -> (PathBuf, String) {
    init_named(tmp, "phila-da", "office")
}

/// Starts `casemesh serve` on `data`, its stderr going to `log` if given,
/// and waits until it answers the CLI.
pub async fn serve_logging(data: &Path, log: Option<&Path>) -> Server {
    let process = casemesh::cluster::ServeProcess::start_logging(Path::new(BIN), data, log)
        .await
        .expect("casemesh serve starts and says where it listens");
    let endpoint = format!("https://{}", process.addr);
    let data = data.to_owned();
    eventually(Duration::from_secs(20), "casemesh serve to answer", || {
        let data = data.clone();
        async move {
            let out = casemesh(&["status", "--data", data.to_str().unwrap()]);
            out.status.success().then_some(())
        }
    })
    .await;
    Server { process, endpoint }
}

/// Starts `casemesh serve` on `data` and waits until it answers.
pub async fn serve(data: &Path) -> Server {
    serve_logging(data, None).await
}
