//! `switchboard-bench`: the load generator of the side-by-side benchmark.
//!
//! Scenarios: `fanout` (R rooms × M members, P publishers at a rate), `saturation` (a
//! ladder of rates until p99 or loss crosses a limit), `idle` (N idle connections, server
//! memory per connection), `churn` (connections opened and closed while a room publishes),
//! `after-load` (server memory once a load has ended: what the allocator gave back),
//! `join-storm` (N clients joining one room at a rate: join latency, memory per member,
//! and whether a message then reaches every member).
//! Each prints a table and one JSON line per run; `--json FILE` appends the lines to a file.
//! It speaks Switchboard's protocol and those of the peer servers in bench/peers/.

mod afterload;
mod churn;
mod conn;
mod fanout;
mod idle;
mod joinstorm;
mod redisinfo;
mod stats;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Map, Value};

use conn::ServerKind;
use fanout::{Limits, Noise, Procs, Shape, Timing, World};
use stats::Table;

#[derive(Debug, Parser)]
#[command(
    name = "switchboard-bench",
    version,
    about = "Load generator for Switchboard and peer servers"
)]
struct Cli {
    /// Which server is listening (decides the protocol spoken).
    #[arg(long, value_enum, default_value = "switchboard", global = true)]
    server: ServerKind,
    /// The server's address; for fanout and saturation, several (comma-separated: nodes of
    /// one server sharing a broker), over which each room's members and the publishers are
    /// spread in turn. The other scenarios use the first.
    #[arg(long, default_value = "127.0.0.1:8080", global = true, value_parser = parse_addrs)]
    addr: Addrs,
    /// The server's process id: its CPU use and resident memory are read from /proc.
    /// Several (comma-separated, one per node): their CPU is summed, and the first one's
    /// memory is read.
    #[arg(long, global = true, value_parser = parse_pids)]
    server_pid: Option<Pids>,
    /// The process id of a broker the nodes share (Redis): its CPU counts as the server's
    /// too, and is reported on its own (`broker_cpu`).
    #[arg(long, global = true)]
    broker_pid: Option<u32>,
    /// A Redis the nodes share: its `INFO` (commands, script time, reads, bytes) is read at
    /// the start and end of every fan-out step and reported per message published.
    #[arg(long, global = true)]
    redis: Option<SocketAddr>,
    /// Append each JSON line to this file as well.
    #[arg(long, global = true, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Connect from this many source addresses, 127.0.0.2 onwards (0: let the kernel pick).
    #[arg(long, default_value_t = 0, global = true)]
    sources: usize,
    /// Record results under this name instead of the server's (one configuration of it,
    /// e.g. switchboard-history).
    #[arg(long, global = true)]
    name: Option<String>,
    /// A label added to every JSON line as "tag" (e.g. run=2).
    #[arg(long, global = true)]
    tag: Option<String>,
    /// Exit with status 1 if any step misses any criterion (timing included); without it,
    /// only loss, errors and dropped connections fail the run.
    #[arg(long, global = true)]
    strict: bool,
    /// A step during which other work used more CPUs than this is noisy: measured again.
    #[arg(long, default_value_t = 0.15, global = true)]
    max_other_cpu: f64,
    /// How many times a noisy step is measured again (0: never).
    #[arg(long, default_value_t = 3, global = true)]
    retries: u32,
    /// Measurements again in all, over a whole run (a saturation ladder, say).
    #[arg(long, default_value_t = 8, global = true)]
    retry_budget: u32,
    /// Seconds to wait, before a step, for the machine to be quiet (other work under
    /// --max-other-cpu).
    #[arg(long, default_value_t = 5.0, global = true)]
    quiet_wait: f64,
    #[command(subcommand)]
    command: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// R rooms × M members, P publishers at a fixed rate: throughput, latency, loss.
    Fanout(FanoutArgs),
    /// Raises the rate step by step until p99 or loss crosses a limit.
    Saturation(SaturationArgs),
    /// Opens N connections and reports server memory per connection and connect time.
    Idle(IdleArgs),
    /// Opens and closes connections as fast as W workers can while a room publishes.
    Churn(ChurnArgs),
    /// A fan-out with a burst of idle connections during it, then no client at all: the
    /// server's memory after the load (needs --server-pid).
    AfterLoad(AfterLoadArgs),
    /// N clients join one room, started at R per second: join latency, server memory per
    /// member, connections closed, and how many members one message then reaches.
    JoinStorm(JoinStormArgs),
    /// (internal) One process of the idle scenario.
    #[command(hide = true)]
    IdleShard(ShardArgs),
}

#[derive(Debug, Args)]
struct ShapeArgs {
    #[arg(long, default_value_t = 10)]
    rooms: usize,
    /// Members per room (publishers are members too).
    #[arg(long, default_value_t = 100)]
    members: usize,
    /// Publishers in all, spread over the rooms.
    #[arg(long, default_value_t = 10)]
    publishers: usize,
    /// Bytes of each message's data.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Pad each message's data with words (compresses about as chat text does) instead
    /// of one repeated letter.
    #[arg(long)]
    text: bool,
    /// Members offer permessage-deflate as browsers do; the run fails if the server does
    /// not accept it.
    #[arg(long)]
    compression: bool,
    /// Connections being opened at once during setup.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

#[derive(Debug, Args, Clone, Copy)]
struct TimingArgs {
    /// Seconds of publishing before the measured window.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds of the measured window.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds to wait, after publishing stops, for every message to arrive.
    #[arg(long, default_value_t = 5.0)]
    drain: f64,
    /// A step whose p99 latency is above this (ms) is not sustained.
    #[arg(long, default_value_t = 50.0)]
    max_p99_ms: f64,
    /// A step delivering less than this share of the offered deliveries is not sustained.
    #[arg(long, default_value_t = 0.95)]
    min_ratio: f64,
}

impl TimingArgs {
    fn timing(&self) -> Timing {
        Timing {
            warmup: Duration::from_secs_f64(self.warmup),
            duration: Duration::from_secs_f64(self.duration),
            drain: Duration::from_secs_f64(self.drain),
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            max_p99_ms: self.max_p99_ms,
            min_delivered_ratio: self.min_ratio,
        }
    }
}

#[derive(Debug, Args)]
struct FanoutArgs {
    #[command(flatten)]
    shape: ShapeArgs,
    #[command(flatten)]
    timing: TimingArgs,
    /// Messages published per second, all publishers together (each is delivered to the
    /// M members of its room).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
}

#[derive(Debug, Args)]
struct SaturationArgs {
    #[command(flatten)]
    shape: ShapeArgs,
    #[command(flatten)]
    timing: TimingArgs,
    /// First step, in messages published per second.
    #[arg(long, default_value_t = 100.0)]
    start_rate: f64,
    /// Each step multiplies the rate by this.
    #[arg(long, default_value_t = 1.5)]
    factor: f64,
    /// Last step at most (published per second).
    #[arg(long, default_value_t = 1_000_000.0)]
    max_rate: f64,
    /// Stop after this many steps in a row are not sustained (one may be a blip).
    #[arg(long, default_value_t = 2)]
    stop_after: u32,
}

#[derive(Debug, Args)]
struct IdleArgs {
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Load-generator processes (default: one per 15,000 connections).
    #[arg(long)]
    shards: Option<usize>,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds to wait after the last connection opened before reading memory.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Each connection joins a room of its own (waiting for the reply) before idling.
    #[arg(long)]
    room_per_connection: bool,
}

#[derive(Debug, Args)]
struct ChurnArgs {
    /// Steady members of the publishing room.
    #[arg(long, default_value_t = 20)]
    members: usize,
    /// Messages published per second to the room.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Workers, each opening, joining and closing one connection after another.
    #[arg(long, default_value_t = 16)]
    workers: usize,
    #[arg(long, default_value_t = 64)]
    payload: usize,
    #[command(flatten)]
    timing: TimingArgs,
}

#[derive(Debug, Args)]
struct AfterLoadArgs {
    #[command(flatten)]
    shape: ShapeArgs,
    #[command(flatten)]
    timing: TimingArgs,
    /// Messages published per second during the fan-out phase (0: no fan-out).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Idle connections opened (held, then closed) during the fan-out (0: no burst).
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Load-generator processes for the burst (default: one per 15,000 connections).
    #[arg(long)]
    shards: Option<usize>,
    /// Seconds the burst's connections are held open.
    #[arg(long, default_value_t = 2.0)]
    hold: f64,
    /// Seconds to watch the server's memory after the last client closed.
    #[arg(long, default_value_t = 10.0)]
    wait: f64,
}

#[derive(Debug, Args)]
struct JoinStormArgs {
    /// Clients, each joining the room once.
    #[arg(long, default_value_t = 10_000)]
    members: usize,
    /// Clients started per second (each opens its connection, then joins).
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// The room's name.
    #[arg(long, default_value = "storm")]
    room: String,
    /// Seconds a join (and opening its connection) may take before it counts as timed out.
    #[arg(long, default_value_t = 10.0)]
    join_timeout: f64,
    /// Seconds the one message published afterwards has to reach every member.
    #[arg(long, default_value_t = 10.0)]
    reach_timeout: f64,
    /// Seconds to wait after the last join before reading the server's memory.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// One more member joins before the storm and reads nothing for this many seconds
    /// (at least until the storm's end); then it reads, to tell how the server dealt with it
    /// (`deaf_ending`: `closed <code>`, `dropped`, `open`).
    #[arg(long)]
    deaf: Option<f64>,
}

#[derive(Debug, Args)]
struct ShardArgs {
    #[arg(long)]
    connections: usize,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    #[arg(long, default_value_t = 0)]
    shard: usize,
    #[arg(long)]
    room_per_connection: bool,
}

#[derive(Debug, Clone)]
struct Addrs(Vec<SocketAddr>);

#[derive(Debug, Clone)]
struct Pids(Vec<u32>);

fn parse_addrs(s: &str) -> Result<Addrs, String> {
    let v = s
        .split(',')
        .map(|a| {
            a.trim()
                .parse::<SocketAddr>()
                .map_err(|e| format!("{a}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Addrs(v))
}

fn parse_pids(s: &str) -> Result<Pids, String> {
    let v = s
        .split(',')
        .map(|p| p.trim().parse::<u32>().map_err(|e| format!("{p}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Pids(v))
}

impl Cli {
    /// The first address: the one server of the scenarios that use one.
    fn addr(&self) -> SocketAddr {
        self.addr.0[0]
    }

    /// The first server process (the one whose memory is read).
    fn server_pid(&self) -> Option<u32> {
        self.server_pid.as_ref().and_then(|p| p.0.first().copied())
    }

    /// Every process of the server side, for the fan-out steps.
    fn procs(&self) -> Procs {
        Procs {
            nodes: self
                .server_pid
                .as_ref()
                .map(|p| p.0.clone())
                .unwrap_or_default(),
            broker: self.broker_pid,
            redis: self.redis,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        // The idle parent only starts shards and reads /proc: no runtime needed.
        Scenario::Idle(a) => run_idle(&cli, a),
        Scenario::AfterLoad(a) => run_after_load(&cli, a),
        _ => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(run_async(&cli)),
            Err(e) => Err(e.into()),
        },
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("switchboard-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn noise(cli: &Cli) -> Noise {
    Noise {
        max_other_cpu: cli.max_other_cpu,
        retries: cli.retries,
        budget: cli.retry_budget,
        quiet_wait: Duration::from_secs_f64(cli.quiet_wait),
    }
}

fn shape(cli: &Cli, a: &ShapeArgs, prefix: &str) -> Shape {
    Shape {
        rooms: a.rooms,
        members: a.members,
        publishers: a.publishers,
        payload: a.payload,
        text: a.text,
        compression: a.compression,
        connect_concurrency: a.concurrency,
        sources: idle::source_addrs(cli.sources),
        room_prefix: prefix.to_owned(),
    }
}

/// Adds the common fields and prints/appends the JSON line.
fn emit(cli: &Cli, scenario: &str, mut record: Map<String, Value>) -> anyhow::Result<()> {
    let mut r = Map::new();
    r.insert("scenario".into(), json!(scenario));
    if let Some(tag) = &cli.tag {
        r.insert("tag".into(), json!(tag));
    }
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    r.insert("unix_time".into(), json!(ts));
    r.append(&mut record);
    if let Some(name) = &cli.name {
        r.insert("server".into(), json!(name));
    }
    stats::emit(&Value::Object(r), cli.json.as_deref())
}

/// Whether a step failed on correctness (not timing): loss, errors, dropped connections.
fn correctness_failed(r: &Map<String, Value>) -> bool {
    let n = |k: &str| r.get(k).and_then(Value::as_u64).unwrap_or(0);
    n("missing") > 0
        || n("gaps") > 0
        || n("duplicates") > 0
        || n("errors") > 0
        || n("closed_connections") > 0
        || r.contains_key("publish_error")
}

async fn run_async(cli: &Cli) -> anyhow::Result<bool> {
    match &cli.command {
        Scenario::Fanout(a) => {
            let mut world =
                World::build(cli.server, &cli.addr.0, shape(cli, &a.shape, "fanout")).await?;
            eprintln!(
                "switchboard-bench: {} connections joined in {:.2}s",
                a.shape.rooms * a.shape.members,
                world.setup_secs
            );
            let step = world
                .step_quietly(
                    a.rate,
                    a.timing.timing(),
                    a.timing.limits(),
                    &cli.procs(),
                    noise(cli),
                )
                .await?;
            world.close().await;
            let mut t = Table::new(fanout::COLUMNS);
            t.row(fanout::table_row(&step.record));
            t.print();
            let ok = if cli.strict {
                step.pass
            } else {
                !correctness_failed(&step.record)
            };
            emit(cli, "fanout", step.record)?;
            Ok(ok)
        }
        Scenario::Saturation(a) => run_saturation(cli, a).await,
        Scenario::Churn(a) => {
            let opts = churn::ChurnOpts {
                members: a.members,
                rate: a.rate,
                workers: a.workers,
                payload: a.payload,
                timing: a.timing.timing(),
                limits: a.timing.limits(),
                sources: idle::source_addrs(cli.sources),
                server_pid: cli.server_pid(),
                noise: noise(cli),
            };
            let (record, pass) = churn::run(cli.server, cli.addr(), &opts).await?;
            let mut t = Table::new(churn::COLUMNS);
            t.row(churn::table_row(&record));
            t.print();
            let n = |k: &str| record.get(k).and_then(Value::as_u64).unwrap_or(0);
            let ok = if cli.strict {
                pass
            } else {
                n("churn_errors") == 0
                    && n("room_missing") == 0
                    && n("room_gaps") == 0
                    && n("room_errors") == 0
                    && n("room_closed_connections") == 0
            };
            emit(cli, "churn", record)?;
            Ok(ok)
        }
        Scenario::JoinStorm(a) => {
            let opts = joinstorm::StormOpts {
                members: a.members,
                rate: a.rate,
                room: a.room.clone(),
                sources: idle::source_addrs(cli.sources),
                server_pid: cli.server_pid(),
                join_timeout: Duration::from_secs_f64(a.join_timeout),
                reach_timeout: Duration::from_secs_f64(a.reach_timeout),
                settle: Duration::from_secs_f64(a.settle),
                deaf: a.deaf.map(Duration::from_secs_f64),
            };
            let (record, pass) = joinstorm::run(cli.server, cli.addr(), &opts).await?;
            let mut t = Table::new(joinstorm::COLUMNS);
            t.row(joinstorm::table_row(&record));
            t.print();
            // Without --strict, only server errors fail the run: a server that cannot take
            // the storm is a result to report.
            let ok = if cli.strict {
                pass
            } else {
                record.get("server_errors").and_then(Value::as_u64) == Some(0)
            };
            emit(cli, "join-storm", record)?;
            Ok(ok)
        }
        Scenario::IdleShard(a) => {
            idle::shard(
                cli.server,
                cli.addr(),
                a.connections,
                a.concurrency,
                idle::source_addrs(cli.sources),
                a.shard,
                a.room_per_connection,
            )
            .await?;
            Ok(true)
        }
        Scenario::Idle(_) | Scenario::AfterLoad(_) => unreachable!("handled without a runtime"),
    }
}

async fn run_saturation(cli: &Cli, a: &SaturationArgs) -> anyhow::Result<bool> {
    if a.factor <= 1.0 || a.start_rate <= 0.0 {
        anyhow::bail!("--factor must be above 1 and --start-rate above 0");
    }
    let mut world = World::build(cli.server, &cli.addr.0, shape(cli, &a.shape, "sat")).await?;
    eprintln!(
        "switchboard-bench: {} connections joined in {:.2}s",
        a.shape.rooms * a.shape.members,
        world.setup_secs
    );
    let mut table = Table::new(fanout::COLUMNS);
    let mut best: Option<(f64, f64)> = None; // (delivered/s, offered deliveries/s)
    let mut first_fail: Option<(f64, String)> = None;
    let mut steps = 0;
    let mut consecutive_fails = 0;
    let mut stopped = false;
    let mut ok = true;
    let mut rate = a.start_rate;
    while rate <= a.max_rate * 1.000_001 {
        let step = world
            .step_quietly(
                rate,
                a.timing.timing(),
                a.timing.limits(),
                &cli.procs(),
                noise(cli),
            )
            .await?;
        steps += 1;
        let row = fanout::table_row(&step.record);
        eprintln!("switchboard-bench: {}", row.join("  "));
        table.row(row);
        let offered = rate * a.shape.members as f64;
        let fail = step
            .record
            .get("fail")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let mut rec = step.record;
        rec.insert("step".into(), json!(steps));
        if !step.pass && (cli.strict || correctness_failed(&rec) && !timing_failed(&rec)) {
            // Strict runs fail on any miss; otherwise, loss with latency still in bounds
            // is loss below saturation.
            ok = false;
        }
        let dropped = rec
            .get("closed_connections")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            > 0;
        emit(cli, "saturation-step", rec)?;
        if step.pass {
            consecutive_fails = 0;
            match best {
                Some((d, _)) if d >= step.delivered_per_s => {}
                _ => best = Some((step.delivered_per_s, offered)),
            }
        } else {
            if first_fail.is_none() {
                first_fail = Some((offered, fail));
            }
            consecutive_fails += 1;
            // One step over the limit may be a blip; two in a row is saturation. Dropped
            // connections end the ladder at once: the world is no longer whole.
            if consecutive_fails >= a.stop_after || dropped {
                stopped = true;
                break;
            }
        }
        rate *= a.factor;
    }
    world.close().await;
    table.print();
    let mut r = Map::new();
    r.insert("server".into(), json!(cli.server.name()));
    r.insert("rooms".into(), json!(a.shape.rooms));
    r.insert("members".into(), json!(a.shape.members));
    r.insert("publishers".into(), json!(a.shape.publishers));
    r.insert("payload_bytes".into(), json!(a.shape.payload));
    r.insert("max_p99_ms".into(), json!(a.timing.max_p99_ms));
    r.insert("steps".into(), json!(steps));
    r.insert(
        "saturation_delivered_per_s".into(),
        json!(best.map(|b| b.0.round())),
    );
    r.insert(
        "saturation_offered_per_s".into(),
        json!(best.map(|b| b.1.round())),
    );
    r.insert(
        "first_fail_offered_per_s".into(),
        json!(first_fail.as_ref().map(|f| f.0.round())),
    );
    r.insert(
        "first_fail_reason".into(),
        json!(first_fail.as_ref().map(|f| f.1.clone())),
    );
    r.insert("reached_max_rate".into(), json!(!stopped));
    println!(
        "saturation: {} delivered/s sustained (p99 <= {} ms, no loss){}",
        best.map_or("none".to_owned(), |b| stats::si(b.0)),
        a.timing.max_p99_ms,
        match (&first_fail, stopped) {
            (_, false) => " — max rate reached".to_owned(),
            (Some(f), true) => format!(
                "; first step not sustained at {} offered: {}",
                stats::si(f.0),
                f.1
            ),
            (None, true) => String::new(),
        }
    );
    emit(cli, "saturation", r)?;
    Ok(ok)
}

/// Whether a step missed a timing criterion (p99, delivered share, schedule).
fn timing_failed(r: &Map<String, Value>) -> bool {
    let fail = r.get("fail").and_then(Value::as_str).unwrap_or("");
    fail.contains("p99") || fail.contains("behind") || fail.contains("below offered")
}

fn run_idle(cli: &Cli, a: &IdleArgs) -> anyhow::Result<bool> {
    let opts = idle::IdleOpts {
        connections: a.connections,
        shards: a.shards,
        concurrency: a.concurrency,
        sources: cli.sources,
        settle: Duration::from_secs_f64(a.settle),
        server_pid: cli.server_pid(),
        room_per_connection: a.room_per_connection,
    };
    let record = idle::run(cli.server, cli.addr(), &opts)?;
    let mut t = Table::new(idle::COLUMNS);
    t.row(idle::table_row(&record));
    t.print();
    let pass = record.get("pass") == Some(&json!(true));
    emit(cli, "idle", record)?;
    Ok(pass)
}

fn run_after_load(cli: &Cli, a: &AfterLoadArgs) -> anyhow::Result<bool> {
    let Some(server_pid) = cli.server_pid() else {
        anyhow::bail!("after-load reads the server's memory: give --server-pid");
    };
    let opts = afterload::AfterLoadOpts {
        shape: shape(cli, &a.shape, "after"),
        rate: a.rate,
        timing: a.timing.timing(),
        limits: a.timing.limits(),
        connections: a.connections,
        shards: a.shards,
        sources: cli.sources,
        hold: Duration::from_secs_f64(a.hold),
        wait: Duration::from_secs_f64(a.wait),
        server_pid,
    };
    let (record, ok) = afterload::run(cli.server, cli.addr(), &opts)?;
    let mut t = Table::new(afterload::COLUMNS);
    t.row(afterload::table_row(&record));
    t.print();
    emit(cli, "after-load", record)?;
    Ok(ok)
}
