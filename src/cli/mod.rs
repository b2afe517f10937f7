//! The `casemesh` command line: clap definitions and dispatch. Client
//! commands talk gRPC to a running node; `init` and `fingerprint` work on a
//! data directory; `serve` runs a node; `demo` runs a small federation.

mod audit;
mod blobs;
mod check;
mod check_store;
mod client;
mod demo;
pub mod errors;
mod health;
pub mod json;
mod output;
mod records;
mod search;
mod sharing;
pub mod users;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

pub use client::ClientOpts;

#[derive(Debug, Parser)]
#[command(
    name = "casemesh",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("CASEMESH_COMMIT"), ")"),
    about = "Federated, signed case-record sync between prosecutors' offices"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// How the node's log is written: set for `serve` and `demo`, the
    /// commands that log; others log warnings as text.
    pub fn log_format(&self) -> LogFormat {
        match &self.command {
            Command::Serve(a) => a.log_format,
            Command::Demo { log_format, .. } => *log_format,
            _ => LogFormat::Human,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line per event, for people (coloured only on a terminal).
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new office: office key, CA, node certificate, first admin.
    Init(InitArgs),
    /// Run this office's node.
    Serve(ServeArgs),
    /// Print the office fingerprint that peer offices pin.
    Fingerprint {
        /// The office's data directory.
        #[arg(long)]
        data: PathBuf,
        /// Print JSON instead of text (shapes: docs/cli.md, "JSON output").
        #[arg(long)]
        json: bool,
    },
    /// Write and read records.
    #[command(subcommand)]
    Record(records::RecordCommand),
    /// Find what this office holds — its own records and what peers shared
    /// with it — by words, subjects and filters (staff or admin).
    Search(search::SearchArgs),
    /// Download files attached to records.
    #[command(subcommand)]
    Blob(blobs::BlobCommand),
    /// Issue, revoke and list user certificates (admin only; an auditor may
    /// list).
    #[command(subcommand)]
    User(users::UserCommand),
    /// Pin, list and remove peer offices (admin only; an auditor may list).
    #[command(subcommand)]
    Peer(sharing::PeerCommand),
    /// Grant, revoke and list what peers receive (admin only; an auditor may
    /// list).
    #[command(subcommand)]
    Share(sharing::ShareCommand),
    /// Query and check the audit log (admin or auditor).
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Write a case bundle of one collection for court (admin only).
    Export {
        /// The collection (case number) to export.
        #[arg(long)]
        collection: String,
        /// The bundle file to write (must not exist).
        #[arg(long)]
        out: PathBuf,
        /// Write a bundle even if the collection holds no records (without
        /// it, an empty collection is refused as a likely typo).
        #[arg(long)]
        allow_empty: bool,
        /// Print JSON instead of text (shapes: docs/cli.md, "JSON output").
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Check a case bundle offline and print what it holds.
    VerifyBundle {
        /// The bundle file (.tar) that `casemesh export` wrote.
        file: PathBuf,
        /// An office CA fingerprint (sha256:…) you trust (repeatable); every
        /// office certificate in the bundle must then be one of them.
        /// Without the exporting office's, a bundle that checks out is only
        /// self-consistent, and the command exits 1.
        #[arg(long)]
        trust: Vec<String>,
        /// Print JSON instead of text (shapes: docs/cli.md, "JSON output").
        #[arg(long)]
        json: bool,
    },
    /// Show this office, its peers and replication lag, where its files
    /// are kept and any found damaged, the disk's free space and whether
    /// writes are accepted (admin or auditor).
    Status {
        #[command(flatten)]
        client: ClientOpts,
        /// Print JSON instead of text (shapes: docs/cli.md, "JSON output").
        #[arg(long)]
        json: bool,
    },
    /// Check this office's data directory: casemesh.toml, keys and
    /// certificates (present, modes, expiry, that they belong together) and
    /// the listen address. Exits 1 on a problem.
    CheckConfig {
        /// The office's data directory.
        #[arg(long)]
        data: PathBuf,
        /// Print JSON instead of text (shapes: docs/cli.md, "JSON output").
        #[arg(long)]
        json: bool,
    },
    /// Count again, in full, what `status` and `peer list` show from kept
    /// counts (records, versions, records per office, outbox entries per
    /// peer) in this office's store, and name every kept count that
    /// differs. The node must be stopped. Exits 1 when a count differs
    /// (unless --fix stored the counted values).
    CheckStore {
        /// The office's data directory.
        #[arg(long)]
        data: PathBuf,
        /// Store the counted values in place of the kept ones that differ.
        #[arg(long)]
        fix: bool,
        /// Print JSON instead of text (shapes: docs/cli.md, "JSON output").
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 if the node on this machine accepts writes; 1 if it says it
    /// does not (and why) or does not answer within 5 s; 3 if nothing
    /// listens there. Reads /healthz on the
    /// node's plain-HTTP metrics endpoint (`[metrics] listen`, a loopback
    /// address), so it needs no certificate: for container and supervisor
    /// health checks.
    Healthcheck {
        /// The node's `[metrics] listen` address.
        #[arg(long, default_value = "127.0.0.1:9464")]
        addr: SocketAddr,
    },
    /// Print shell completions for casemesh (e.g. `casemesh completions
    /// bash > /etc/bash_completion.d/casemesh`).
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write one page per command into --out.
    Man {
        /// Write casemesh.1 and a page per subcommand into this directory.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run three offices on this machine and show them federating.
    Demo {
        /// Leave the nodes running and print how to reach them.
        #[arg(long)]
        keep: bool,
        /// How the nodes' log is written.
        #[arg(long, value_enum, default_value_t = LogFormat::Human)]
        log_format: LogFormat,
    },
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Office id: lower-case letters, digits and '-', 3 to 63 characters.
    #[arg(long)]
    pub office: String,
    /// Data directory to create (must not exist, or be empty).
    #[arg(long)]
    pub data: PathBuf,
    /// Host name or IP address peers and users reach the node by
    /// (repeatable); `localhost` and `127.0.0.1` are always included.
    #[arg(long = "host", value_name = "HOST", value_parser = parse_host)]
    pub hosts: Vec<String>,
    /// Address to listen on.
    #[arg(long, default_value = crate::config::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Print JSON instead of text (shapes: docs/cli.md, "JSON output").
    #[arg(long)]
    pub json: bool,
}

fn parse_host(s: &str) -> Result<String, String> {
    crate::setup::check_host(s)
        .map(|()| s.to_owned())
        .map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The office's data directory.
    #[arg(long)]
    pub data: PathBuf,
    /// Listen here instead of the address in casemesh.toml.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// How the node's log is written (to stderr).
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
}

/// Runs `work` unless Ctrl-C comes first. Then `work` is dropped (which
/// ends any progress line) and the command fails with `interrupted; what`
/// (exit 130): `what` says what was and was not done.
pub async fn interruptible<T>(
    what: impl Into<String>,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::select! {
        done = work => done,
        _ = tokio::signal::ctrl_c() => Err(errors::CliError::Interrupted(what.into()).into()),
    }
}

/// What an interrupted command says when it has nothing more precise to
/// say.
const INTERRUPTED: &str = "the command did not finish; a change it asked for may have been made already: check (with `share list`, `peer list`, `user list` …) before running it again";

/// Runs a parsed command line. `serve` and `demo` handle Ctrl-C as a
/// request to stop; commands whose interruption leaves something worth
/// knowing (`record put`, `blob get`, `export`, `user issue`) say what;
/// commands that work on local files only keep the default (Ctrl-C ends
/// them at once); any other is interrupted as a whole.
pub async fn run(cli: Cli) -> Result<()> {
    use records::RecordCommand;
    use users::UserCommand;
    match cli.command {
        Command::Serve(a) => serve(a).await,
        Command::Demo { keep, .. } => demo::run(keep).await,
        Command::Record(RecordCommand::Put(a)) => records::put(a).await,
        command @ (Command::Blob(_)
        | Command::Export { .. }
        | Command::User(UserCommand::Issue { .. })
        | Command::Init(_)
        | Command::Fingerprint { .. }
        | Command::VerifyBundle { .. }
        | Command::CheckConfig { .. }
        | Command::CheckStore { .. }
        | Command::Healthcheck { .. }
        | Command::Completions { .. }
        | Command::Man { .. }) => dispatch(command).await,
        command => interruptible(INTERRUPTED, dispatch(command)).await,
    }
}

async fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Init(a) => init(a),
        Command::Serve(a) => serve(a).await,
        Command::Fingerprint { data, json } => fingerprint(data, json),
        Command::Record(c) => records::run(c).await,
        Command::Search(a) => search::run(a).await,
        Command::Blob(c) => blobs::run(c).await,
        Command::User(c) => users::run(c).await,
        Command::Peer(c) => sharing::run_peer(c).await,
        Command::Share(c) => sharing::run_share(c).await,
        Command::Audit(c) => audit::run(c).await,
        Command::Export {
            collection,
            out,
            allow_empty,
            json,
            client,
        } => audit::export(collection, out, allow_empty, json, client).await,
        Command::VerifyBundle { file, trust, json } => audit::verify_bundle(file, trust, json),
        Command::Status { client, json } => users::status(client, json).await,
        Command::CheckConfig { data, json } => check::run(&data, json).await,
        Command::CheckStore { data, fix, json } => check_store::run(&data, json, fix),
        Command::Healthcheck { addr } => health::run(addr),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "casemesh", &mut std::io::stdout());
            Ok(())
        }
        Command::Man { out } => man(out),
        Command::Demo { keep, .. } => demo::run(keep).await,
    }
}

fn init(a: InitArgs) -> Result<()> {
    let office = crate::domain::OfficeId::parse(&a.office)?;
    let report = crate::setup::init(&a.data, &office, &a.hosts, a.listen)?;
    let paths = crate::config::Paths::new(&a.data);
    if a.json {
        json::print(&serde_json::json!({
            "office": office.as_str(),
            "data_dir": a.data.display().to_string(),
            "fingerprint": report.fingerprint.to_string(),
            "office_ca": paths.office_ca().display().to_string(),
            "admin_certificate": paths.admin_cert().display().to_string(),
            "listen": report.config.listen.to_string(),
        }));
        return Ok(());
    }
    println!("created office {office} in {}", a.data.display());
    println!();
    println!("office fingerprint: {}", report.fingerprint);
    println!();
    println!("  send to peer offices:    {}", paths.office_ca().display());
    println!(
        "  first admin certificate: {}",
        paths.admin_cert().display()
    );
    println!(
        "  never leaves this node:  {}",
        paths.private_dir().display()
    );
    println!();
    println!(
        "start the node with: casemesh serve --data {}",
        a.data.display()
    );
    Ok(())
}

async fn serve(a: ServeArgs) -> Result<()> {
    // From the start, so that a stop asked for while the node starts is
    // carried out once it has started.
    let mut stop = StopSignals::new()?;
    let paths = crate::config::Paths::new(&a.data);
    let config = crate::config::Config::load(&paths.config())?;
    let listen = a.listen.unwrap_or(config.listen);
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "cannot listen on {listen}: the address is in use (is a node already running on this data directory, or another program on that port?)"
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot listen on {listen}")),
    };
    let node = crate::node::start(&a.data, listener).await?;
    // For the CLI's --data and for whoever started this process: where it
    // listens, port 0 resolved.
    let addr_file = paths.serve_addr();
    if let Err(e) = std::fs::write(&addr_file, node.addr.to_string()) {
        tracing::warn!(file = %addr_file.display(), error = %e, "could not record the listen address");
    }
    // The web listeners first: the last line names the gRPC address
    // (scripts read it as the sign that the node serves).
    if let Some(addr) = node.metrics_addr {
        let scheme = if crate::web::plain_allowed(addr) {
            "http"
        } else {
            "https"
        };
        println!("serving /metrics on {scheme}://{addr}/metrics");
    }
    if let Some(addr) = node.status_page_addr {
        println!("serving the status page on https://{addr}/");
    }
    println!(
        "casemesh node for office {} listening on {}",
        config.office, node.addr
    );
    stop.recv().await;
    let _ = std::fs::remove_file(&addr_file);
    tracing::info!("shutting down: finishing calls in flight");
    node.shutdown().await?;
    Ok(())
}

/// SIGINT and SIGTERM, listened for from the moment this is made: a
/// signal that arrives before [`StopSignals::recv`] is awaited is kept,
/// not lost (nor does it kill the process).
pub struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    pub fn new() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
        })
    }

    /// Resolves on the next SIGINT or SIGTERM.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {},
            _ = self.terminate.recv() => {},
        }
    }
}

/// `casemesh man`: the page of `casemesh` on stdout, or every page (one per
/// command) written into a directory.
fn man(out: Option<PathBuf>) -> Result<()> {
    let cmd = <Cli as clap::CommandFactory>::command();
    match out {
        None => clap_mangen::Man::new(cmd)
            .render(&mut std::io::stdout())
            .context("cannot write the man page"),
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(cmd, &dir)
                .with_context(|| format!("cannot write man pages into {}", dir.display()))
        }
    }
}

fn fingerprint(data: PathBuf, json: bool) -> Result<()> {
    let paths = crate::config::Paths::new(&data);
    // Not an office's directory: said as `--data` says it everywhere.
    crate::config::Config::load(&paths.config())?;
    let pem = std::fs::read(paths.office_ca())
        .with_context(|| format!("cannot read {}", paths.office_ca().display()))?;
    let certs = crate::identity::pki::certs_from_pem(&pem)?;
    let first = certs.first().context("no certificate in office-ca.pem")?;
    let fp = crate::identity::Fingerprint::of(first);
    if json {
        json::print(&serde_json::json!({ "fingerprint": fp.to_string() }));
    } else {
        println!("{fp}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// clap's own consistency check: clashing names, bad defaults, broken
    /// `requires`/`conflicts_with` references. It runs only in debug builds
    /// and only for the command line parsed, so a clash in a subcommand
    /// nobody ran in a test would reach a user.
    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn every_command(cmd: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
        out.push((path.clone(), cmd.clone()));
        for sub in cmd.get_subcommands() {
            every_command(sub, format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_command_and_argument_has_help() {
        let mut commands = Vec::new();
        every_command(&Cli::command(), "casemesh".into(), &mut commands);
        let mut missing = Vec::new();
        for (path, cmd) in &commands {
            if path != "casemesh" && cmd.get_about().is_none() {
                missing.push(path.clone());
            }
            for arg in cmd.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
        }
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }

    #[test]
    fn log_format_is_offered_only_where_something_logs() {
        let mut commands = Vec::new();
        every_command(&Cli::command(), "casemesh".into(), &mut commands);
        let with: Vec<_> = commands
            .iter()
            .filter(|(_, c)| c.get_arguments().any(|a| a.get_id() == "log_format"))
            .map(|(p, _)| p.as_str())
            .collect();
        assert_eq!(with, ["casemesh serve", "casemesh demo"]);
    }
}
