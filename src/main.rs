//! The `casemesh` binary: parse the command line, set up logging, run, and
//! turn the outcome into an exit code (0 ok, 1 failed, 2 usage).

use casemesh::cli::{Cli, Command, LogFormat};
use clap::Parser;
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOC: casemesh::alloc::Allocator = casemesh::alloc::Allocator {};

fn init_tracing(cli: &Cli) {
    let default = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format() {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Describes an error for a person: gRPC statuses by their code.
fn describe(e: &anyhow::Error) -> String {
    if let Some(s) = e.downcast_ref::<tonic::Status>() {
        return format!("{:?}: {}", s.code(), s.message());
    }
    format!("{e:#}")
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Long-running commands start again with the allocator's options set
    // (see `casemesh::alloc`); short ones are not worth an exec.
    let restarted = match cli.command {
        Command::Serve(_) | Command::Demo { .. } => casemesh::alloc::restart_with_options(),
        _ => Ok(()),
    };
    init_tracing(&cli);
    if let Err(e) = restarted {
        tracing::warn!(
            "could not start again with the allocator's options ({e}); \
             going on with its defaults, which hold more memory"
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(casemesh::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
