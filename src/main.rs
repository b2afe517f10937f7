//! The `casemesh` binary: parse the command line, set up logging, run, and
//! turn the outcome into one line and an exit code (`cli::errors`).

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
    // Colour only where a person reads it: not in files or the journal.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match cli.log_format() {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
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
            let (text, code) = casemesh::cli::errors::report(&e);
            eprintln!("error: {text}");
            std::process::ExitCode::from(code as u8)
        }
    }
}
