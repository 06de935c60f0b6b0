//! Memory after load: does the server give back what a load made it take?
//!
//! On a freshly started server: a fan-out (the fan-out world at `--rate`) and, while it
//! runs, a burst of idle connections (opened by shard processes as in `idle`, held for
//! `--hold` seconds, closed); then every client closes, and nothing more happens. The server's resident memory (`VmRSS`) is read before, at the end of each phase,
//! and every second for `--wait` seconds after the last client closed; its peak (`VmHWM`)
//! at the end. What the server keeps once nobody is connected is what its allocator did not
//! return to the system.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::conn::ServerKind;
use crate::fanout::{Limits, Procs, Shape, Timing, World};
use crate::idle::{self, IdleOpts};
use crate::stats;

pub struct AfterLoadOpts {
    pub shape: Shape,
    /// Messages published per second during the fan-out (0: no fan-out).
    pub rate: f64,
    pub timing: Timing,
    pub limits: Limits,
    /// Idle connections in the burst (0: no burst).
    pub connections: usize,
    pub shards: Option<usize>,
    pub sources: usize,
    /// How long the burst's connections are held before they close.
    pub hold: Duration,
    /// How long to watch the server's memory after the last client closed.
    pub wait: Duration,
    pub server_pid: u32,
}

/// Runs the phases, returns the record and whether every phase went through without loss
/// or failure.
pub fn run(
    kind: ServerKind,
    addr: SocketAddr,
    opts: &AfterLoadOpts,
) -> anyhow::Result<(Map<String, Value>, bool)> {
    let pid = opts.server_pid;
    let rss = || stats::rss_bytes(pid);
    let mut r = Map::new();
    r.insert("server".into(), json!(kind.name()));
    r.insert("rss_start".into(), json!(rss()));
    r.insert("hwm_start".into(), json!(stats::hwm_bytes(pid)));
    let mut ok = true;
    let mut rss_loaded: Option<u64> = None;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let world = if opts.rate > 0.0 {
        Some(rt.block_on(World::build(kind, &[addr], opts.shape.clone()))?)
    } else {
        None
    };
    // The burst opens while the fan-out runs: connections come and go while messages are
    // in flight, so what they leave behind is interleaved with what the fan-out allocates.
    let burst = (opts.connections > 0).then(|| {
        let idle_opts = IdleOpts {
            connections: opts.connections,
            shards: opts.shards,
            concurrency: 64,
            sources: opts.sources,
            settle: opts.hold,
            server_pid: Some(pid),
            room_per_connection: false,
        };
        std::thread::spawn(move || idle::run(kind, addr, &idle_opts))
    });
    if let Some(mut world) = world {
        let (step, held) = rt.block_on(async {
            let step = world
                .step(
                    opts.rate,
                    opts.timing,
                    opts.limits,
                    &Procs::single(Some(pid)),
                )
                .await?;
            // Read while the fan-out's connections are still open.
            let held = rss();
            world.close().await;
            anyhow::Ok((step, held))
        })?;
        let rec = &step.record;
        let n = |k: &str| rec.get(k).and_then(Value::as_u64).unwrap_or(0);
        let fanout_ok = n("missing") == 0
            && n("gaps") == 0
            && n("duplicates") == 0
            && n("errors") == 0
            && n("closed_connections") == 0
            && !rec.contains_key("publish_error");
        ok &= fanout_ok;
        for k in [
            "rooms",
            "members",
            "publishers",
            "payload_bytes",
            "offered_deliveries_per_s",
            "delivered_per_s",
            "p50_ms",
            "p99_ms",
            "missing",
            "server_cpu",
        ] {
            if let Some(v) = rec.get(k) {
                r.insert(format!("fanout_{k}"), v.clone());
            }
        }
        r.insert("fanout_ok".into(), json!(fanout_ok));
        r.insert("rss_fanout".into(), json!(held));
        rss_loaded = rss_loaded.max(held);
    }
    drop(rt);
    if let Some(burst) = burst {
        let rec = burst
            .join()
            .map_err(|_| anyhow::anyhow!("the burst thread panicked"))??;
        let burst_ok = rec.get("pass") == Some(&json!(true));
        ok &= burst_ok;
        r.insert("burst_connections".into(), json!(rec.get("connections")));
        r.insert("burst_failed".into(), json!(rec.get("failed")));
        r.insert("burst_ok".into(), json!(burst_ok));
        // Read with the burst's connections open (and the fan-out running, unless it was
        // shorter than the burst).
        let held = rec.get("server_rss_after").and_then(Value::as_u64);
        r.insert("rss_burst".into(), json!(held));
        rss_loaded = rss_loaded.max(held);
    }
    r.insert("rss_loaded".into(), json!(rss_loaded));

    // Every client has closed (the idle shards have exited; the fan-out world is dropped).
    let closed = Instant::now();
    let mut series = Vec::new();
    let mut at = Duration::ZERO;
    loop {
        series.push(json!([at.as_secs(), rss()]));
        if at >= opts.wait {
            break;
        }
        at += Duration::from_secs(1);
        if let Some(d) = (closed + at).checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    let last = rss();
    // VmHWM is updated from the process's memory counters lazily, so a reading of VmRSS
    // taken during the load may be a little above it: the peak is the higher of the two.
    let hwm = stats::hwm_bytes(pid).max(rss_loaded);
    let after_1s = series.get(1).and_then(|v| v.get(1)).and_then(Value::as_u64);
    r.insert("wait_s".into(), json!(opts.wait.as_secs_f64()));
    r.insert("rss_after_1s".into(), json!(after_1s));
    r.insert("rss_after".into(), json!(last));
    r.insert("hwm".into(), json!(hwm));
    r.insert("rss_series".into(), Value::Array(series));
    // Share of what the load added (peak over the start) that was given back by the end.
    let start = r.get("rss_start").and_then(Value::as_u64);
    if let (Some(s), Some(p), Some(a)) = (start, hwm, last) {
        if p > s {
            let share = (p.saturating_sub(a) as f64 / (p - s) as f64).clamp(0.0, 1.0);
            r.insert(
                "returned_share".into(),
                json!((share * 1000.0).round() / 1000.0),
            );
        }
    }
    r.insert("pass".into(), json!(ok));
    Ok((r, ok))
}

pub const COLUMNS: &[&str] = &[
    "server",
    "delivered/s",
    "p99 ms",
    "burst conns",
    "RSS start",
    "RSS loaded",
    "peak (HWM)",
    "RSS +1 s",
    "RSS after",
    "returned",
];

pub fn table_row(r: &Map<String, Value>) -> Vec<String> {
    let v = Value::Object(r.clone());
    let mib = |k: &str| {
        r.get(k)
            .and_then(Value::as_f64)
            .map_or("-".to_owned(), |b| format!("{:.1} MiB", b / 1048576.0))
    };
    vec![
        stats::cell(&v, "server"),
        r.get("fanout_delivered_per_s")
            .and_then(Value::as_f64)
            .map_or("-".to_owned(), stats::si),
        stats::cell(&v, "fanout_p99_ms"),
        stats::cell(&v, "burst_connections"),
        mib("rss_start"),
        mib("rss_loaded"),
        mib("hwm"),
        mib("rss_after_1s"),
        format!("{} (+{:.0} s)", mib("rss_after"), opts_wait(r)),
        r.get("returned_share")
            .and_then(Value::as_f64)
            .map_or("-".to_owned(), |s| format!("{:.0}%", s * 100.0)),
    ]
}

fn opts_wait(r: &Map<String, Value>) -> f64 {
    r.get("wait_s").and_then(Value::as_f64).unwrap_or(0.0)
}
