use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use switchboard::config::{Cli, Config, LogFormat};
use tracing::{error, info};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

fn main() -> ExitCode {
    let args = Cli::parse().serve_args();
    let config = match Config::load(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchboard: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = init_logging(&config) {
        eprintln!("switchboard: {e:#}");
        return ExitCode::from(2);
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // A publish to a room wakes every member's task at once. A worker's own run queue holds
    // 256 tasks; the rest overflow to the shared queue, which by default is looked at only
    // every few dozen polls, so the members that overflowed (the ones woken first) waited
    // many rounds: under fan-out load, p99 latency was 5-10x the median. Looking at the
    // shared queue every other poll keeps tasks in roughly the order they were woken
    // (docs/benchmarks.md, "What the profiles show").
    builder.global_queue_interval(2);
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchboard: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("switchboard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    info!(
        addr = %addr,
        version = env!("CARGO_PKG_VERSION"),
        echo_endpoint = config.echo_endpoint,
        "listening"
    );
    switchboard::server::serve(config, listener, shutdown_signal()).await;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!(signal = "SIGINT", "signal received"),
        _ = term => info!(signal = "SIGTERM", "signal received"),
    }
}

fn init_logging(config: &Config) -> anyhow::Result<()> {
    let filter: Targets = config
        .log
        .parse()
        .with_context(|| format!("config: invalid log filter {:?}", config.log))?;
    let registry = tracing_subscriber::registry().with(filter);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    match config.log_format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr),
            )
            .init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .init(),
    }
    Ok(())
}
