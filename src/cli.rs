//! The command line: `swarmgate serve` and `swarmgate config`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::config::{Config, DEFAULT_CONFIG_TOML};
use crate::server;

/// swarmgate: a BitTorrent tracker for a container registry's layer torrents.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the tracker (built-in defaults unless --config names a file).
    Serve {
        /// A TOML configuration file; see `swarmgate config`.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print the default configuration, every key commented.
    Config,
}

/// Runs the command line; the binary's whole `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config => {
            print!("{DEFAULT_CONFIG_TOML}");
            ExitCode::SUCCESS
        }
        Command::Serve { config } => serve(config),
    }
}

fn serve(path: Option<PathBuf>) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let config = match path {
        Some(path) => match Config::from_file(&path) {
            Ok(config) => config,
            Err(error) => {
                eprintln!("swarmgate: {error}");
                return ExitCode::FAILURE;
            }
        },
        None => Config::default(),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("swarmgate: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let server = match server::start(config.clone()).await {
            Ok(server) => server,
            Err(error) => {
                tracing::error!("{error}");
                return ExitCode::FAILURE;
            }
        };
        match server.http_addr {
            Some(addr) => {
                tracing::info!(http = %addr, admin = %server.admin_addr, auth = ?config.auth.mode,
                "swarmgate is serving; announce at http://{addr}/announce")
            }
            None => {
                tracing::info!(admin = %server.admin_addr, "swarmgate is serving (HTTP disabled)")
            }
        }
        shutdown_signal().await;
        tracing::info!("shutting down");
        server.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
