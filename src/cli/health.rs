//! `casemesh healthcheck`: whether the node on this machine accepts
//! writes, read from its metrics listener's `/healthz` (plain HTTP, on a
//! loopback address). Made for a container's or a supervisor's health
//! check: it needs no certificate, and exits 0 only when the node says
//! `serving`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::Result;

use super::errors::CliError;

/// The longest the check waits, connecting and reading each.
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
    stream.set_read_timeout(Some(LIMIT)).map_err(unreachable)?;
    stream.set_write_timeout(Some(LIMIT)).map_err(unreachable)?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: casemesh\r\nConnection: close\r\n\r\n")
        .map_err(unreachable)?;
    let mut raw = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut raw)
        .map_err(unreachable)?;
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
