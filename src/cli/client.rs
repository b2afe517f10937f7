//! How the CLI reaches a node: from a data directory (`--data`: the office's
//! first admin certificate and listen address) or from explicit files.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, bail};
use clap::Args;
use tonic::transport::Channel;

use crate::config::{Config, Paths};
use crate::domain::NodeAddr;
use crate::identity::pki::certs_from_pem;
use crate::identity::tls::{PemIdentity, client_config};
use crate::protocol::pb::{admin_client::AdminClient, records_client::RecordsClient};
use crate::protocol::transport;

/// Largest message the CLI accepts from a node.
const MAX_MESSAGE: usize = 80 * 1024 * 1024;

#[derive(Debug, Clone, Args, Default)]
#[command(next_help_heading = "Which node, as whom")]
pub struct ClientOpts {
    /// Use this office's data directory: its admin certificate and address.
    #[arg(long, conflicts_with_all = ["endpoint", "cert", "key", "ca"])]
    pub data: Option<PathBuf>,
    /// The node to talk to, https://HOST:PORT (with --cert, --key and --ca).
    #[arg(long, value_name = "URL", requires_all = ["cert", "key", "ca"])]
    pub endpoint: Option<String>,
    /// Your certificate (PEM).
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// Your private key (PEM).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// The office CA certificate (PEM) the node's certificate must chain to.
    #[arg(long)]
    pub ca: Option<PathBuf>,
}

/// Reads a file the command line named (directly, or through `--data`).
fn read(option: &str, path: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| super::errors::unreadable(option, path, e))
}

impl ClientOpts {
    pub fn for_data(data: impl Into<PathBuf>) -> Self {
        Self {
            data: Some(data.into()),
            ..Self::default()
        }
    }

    pub async fn channel(&self) -> Result<Channel> {
        let (addr, cert, key, ca) = match (&self.data, &self.endpoint) {
            (Some(data), _) => {
                let paths = Paths::new(data);
                let cfg = Config::load(&paths.config())?;
                // A running node's own word on where it listens comes first.
                let mut listen = std::fs::read_to_string(paths.serve_addr())
                    .ok()
                    .and_then(|a| a.trim().parse().ok())
                    .unwrap_or(cfg.listen);
                if listen.port() == 0 {
                    return Err(super::errors::CliError::NotRunning(format!(
                        "no node is running on {}: its port is chosen when it starts (listen = {} in casemesh.toml), and it has not said which (serve.addr); start it with `casemesh serve --data {}`",
                        data.display(),
                        cfg.listen,
                        data.display()
                    ))
                    .into());
                }
                if listen.ip().is_unspecified() {
                    listen.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                (
                    NodeAddr::parse(&format!("https://{listen}"))?,
                    read("--data", &paths.admin_cert())?,
                    read("--data", &paths.admin_key())?,
                    read("--data", &paths.office_ca())?,
                )
            }
            (None, Some(endpoint)) => {
                let (Some(cert), Some(key), Some(ca)) = (&self.cert, &self.key, &self.ca) else {
                    bail!("--endpoint needs --cert, --key and --ca");
                };
                (
                    NodeAddr::parse(endpoint)?,
                    read("--cert", cert)?,
                    read("--key", key)?,
                    read("--ca", ca)?,
                )
            }
            (None, None) => bail!(
                "say which node to use: --data DIR, or --endpoint https://HOST:PORT with --cert, --key and --ca"
            ),
        };
        let tls = client_config(&certs_from_pem(&ca)?, PemIdentity::from_pem(&cert, &key)?)?;
        Ok(transport::connect(&addr, Arc::new(tls)).await?)
    }

    pub async fn records(&self) -> Result<RecordsClient<Channel>> {
        Ok(RecordsClient::new(self.channel().await?)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }

    pub async fn admin(&self) -> Result<AdminClient<Channel>> {
        Ok(AdminClient::new(self.channel().await?))
    }
}
