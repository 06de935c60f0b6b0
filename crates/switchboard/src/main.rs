use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use switchboard::config::{Cli, Config, LogFormat, Run};
use tracing::{error, info};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

// The global allocator, chosen at build time by this crate's features (docs/benchmarks.md,
// "Memory after load"): jemalloc by default, `mimalloc`, or the system's (glibc) with
// `--no-default-features`, optionally with `malloc-trim`.
#[cfg(all(feature = "jemalloc", feature = "mimalloc"))]
compile_error!(
    "the `jemalloc` and `mimalloc` features are exclusive: \
     build with `--no-default-features --features mimalloc`"
);

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it initialises (the `_RJEM_MALLOC_CONF` environment
/// variable is read after them and overrides them). A background thread purges unused
/// dirty pages after a second, straight back to the system (`muzzy_decay_ms:0`: no lazy
/// `MADV_FREE` stage, which would still count in RSS), even when the server has gone
/// quiet and no allocation would trigger a purge.
#[cfg(feature = "jemalloc")]
#[export_name = "_rjem_malloc_conf"]
static JEMALLOC_CONF: &u8 = &b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0"[0];

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// glibc keeps freed memory in its heaps (it gives back only the top of each heap, past
/// `M_TRIM_THRESHOLD`). With `malloc-trim`, a thread calls `malloc_trim(0)` once each time
/// the process goes quiet (under 2% of a core for 2 s), which returns every free page.
#[cfg(all(
    feature = "malloc-trim",
    not(feature = "jemalloc"),
    not(feature = "mimalloc"),
    target_os = "linux",
    target_env = "gnu"
))]
fn start_malloc_trim() {
    extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    fn cpu_ticks() -> Option<u64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let mut after_name = stat.get(stat.rfind(')')? + 2..)?.split_whitespace();
        // utime and stime: fields 14 and 15 of the line, 12 and 13 after the name.
        let utime: u64 = after_name.nth(11)?.parse().ok()?;
        let stime: u64 = after_name.next()?.parse().ok()?;
        Some(utime + stime)
    }
    let spawned = std::thread::Builder::new()
        .name("malloc-trim".into())
        .spawn(|| {
            const EVERY: std::time::Duration = std::time::Duration::from_secs(2);
            let mut last = cpu_ticks();
            let mut trimmed = true;
            loop {
                std::thread::sleep(EVERY);
                let now = cpu_ticks();
                // Clock ticks are 1/100 s: at most 4 in 2 s is under 2% of a core.
                let quiet = matches!((last, now), (Some(a), Some(b)) if b.saturating_sub(a) <= 4);
                last = now;
                if !quiet {
                    trimmed = false;
                } else if !trimmed {
                    // SAFETY: malloc_trim has no preconditions; it takes glibc's arena locks.
                    unsafe { malloc_trim(0) };
                    trimmed = true;
                }
            }
        });
    if let Err(e) = spawned {
        eprintln!("switchboard: cannot start the malloc-trim thread: {e}");
    }
}

#[cfg(not(all(
    feature = "malloc-trim",
    not(feature = "jemalloc"),
    not(feature = "mimalloc"),
    target_os = "linux",
    target_env = "gnu"
)))]
fn start_malloc_trim() {}

fn main() -> ExitCode {
    let args = match Cli::parse().into_run() {
        Run::Serve(args) => args,
        Run::Token(args) => {
            return match switchboard::mint::mint(args) {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("switchboard: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
    };
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
    start_malloc_trim();
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
    // Keys are read before listening: a bad key file stops start-up, naming the setting.
    let access = switchboard::auth::Access::from_config(&config)?;
    // So is an unreadable history store (its file is named).
    let broker = switchboard::server::open_broker(&config).await?;
    // And the certificate and its key (the message names the file).
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            Some(std::sync::Arc::new(switchboard::tls::Tls::load(cert, key)?))
        }
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let redirect = match config.tls_redirect {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (tls_redirect)"))?,
        ),
        None => None,
    };
    let addr = listener.local_addr()?;
    let redirect_addr = match &redirect {
        Some(r) => r.local_addr()?.to_string(),
        None => "none".to_owned(),
    };
    info!(
        addr = %addr,
        version = env!("CARGO_PKG_VERSION"),
        echo_endpoint = config.echo_endpoint,
        tls = tls.is_some(),
        redirect = %redirect_addr,
        "listening"
    );
    let listeners = switchboard::server::Listeners {
        main: listener,
        tls,
        redirect,
    };
    switchboard::server::serve(config, access, broker, listeners, shutdown_signal()).await;
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
