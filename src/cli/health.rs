//! `casemesh healthcheck`: whether the node on this machine accepts
//! writes, read from its metrics listener's `/healthz` (plain HTTP, on a
//! loopback address). Made for a container's or a supervisor's health
//! check: it needs no certificate, and exits 0 only when the node says
//! `serving`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::errors::CliError;

/// The longest the check waits to connect, and then for the whole answer.
const LIMIT: Duration = Duration::from_secs(5);
/// Most bytes of an answer read (it is a word and a reason).
const MAX_ANSWER: u64 = 64 * 1024;

pub fn run(addr: SocketAddr) -> Result<()> {
    if !addr.ip().is_loopback() {
        return Err(CliError::Usage(format!(
            "--addr {addr} is not a loopback address: the check reads the plain-HTTP metrics endpoint, which is served on loopback addresses only"
        ))
        .into());
    }
    let unreachable = |e: std::io::Error| {
        CliError::NotRunning(format!(
            "no answer from http://{addr}/healthz: {e} (is the node running, with [metrics] listen = \"{addr}\" in its casemesh.toml?)"
        ))
    };
    let mut stream = TcpStream::connect_timeout(&addr, LIMIT).map_err(unreachable)?;
    // Connected: from here on, silence is a node that does not answer.
    let silent = |e: std::io::Error| {
        CliError::Failed(format!(
            "http://{addr}/healthz accepted the connection but did not answer within {} s: {e}",
            LIMIT.as_secs()
        ))
    };
    let deadline = Instant::now() + LIMIT;
    stream.set_write_timeout(Some(LIMIT)).map_err(silent)?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(silent)?;
    // One deadline for the whole answer, however slowly it trickles.
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(silent(std::io::ErrorKind::TimedOut.into()).into());
        }
        stream.set_read_timeout(Some(left)).map_err(silent)?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(silent(e).into()),
        }
        if raw.len() as u64 > MAX_ANSWER {
            return Err(CliError::Failed(format!(
                "http://{addr}/healthz answered more than {MAX_ANSWER} bytes: not a casemesh node"
            ))
            .into());
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head.split(' ').nth(1).unwrap_or("");
    let body = body.trim();
    match code {
        "200" => {
            println!("{body}");
            Ok(())
        }
        "" => Err(CliError::Failed(format!("http://{addr}/healthz did not answer in HTTP")).into()),
        _ => Err(CliError::Failed(format!("{body} (HTTP {code})")).into()),
    }
}
