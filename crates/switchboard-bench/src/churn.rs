//! Churn: connections opened, joined to a room and closed as fast as W workers can, while
//! that room keeps publishing to its steady members (who must still get every message).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tokio::task::JoinSet;

use crate::conn::{Conn, ServerKind};
use crate::fanout::{wait_quiet, Limits, Noise, Procs, Shape, Timing, World};
use crate::stats::{self, new_histogram};

pub struct ChurnOpts {
    pub members: usize,
    pub rate: f64,
    pub workers: usize,
    pub payload: usize,
    pub timing: Timing,
    pub limits: Limits,
    pub sources: Vec<IpAddr>,
    pub server_pid: Option<u32>,
    pub noise: Noise,
}

#[derive(Default)]
struct Counters {
    cycles: AtomicU64,
    errors: AtomicU64,
}

pub async fn run(
    kind: ServerKind,
    addr: SocketAddr,
    opts: &ChurnOpts,
) -> anyhow::Result<(Map<String, Value>, bool)> {
    let shape = Shape {
        rooms: 1,
        members: opts.members,
        publishers: 1,
        payload: opts.payload,
        text: false,
        compression: false,
        connect_concurrency: 64,
        sources: opts.sources.clone(),
        room_prefix: "churn".into(),
    };
    let room = "churn0".to_owned();
    let mut world = World::build(kind, &[addr], shape).await?;
    // Churn is not measured again when noisy (the churners' work is not repeatable step by
    // step), but it starts on a quiet machine when it can.
    let busy_before = wait_quiet(opts.noise.max_other_cpu, opts.noise.quiet_wait).await;
    let stop = Arc::new(AtomicBool::new(false));
    let counting = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let hist = Arc::new(Mutex::new(new_histogram()));
    let first_error = Arc::new(Mutex::new(String::new()));
    let proto = kind.proto();
    let mut workers = JoinSet::new();
    for w in 0..opts.workers {
        let (stop, counting, counters, hist, first_error, room) = (
            stop.clone(),
            counting.clone(),
            counters.clone(),
            hist.clone(),
            first_error.clone(),
            room.clone(),
        );
        let sources = opts.sources.clone();
        workers.spawn(async move {
            let mut k = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let source = (!sources.is_empty()).then(|| sources[(w + k) % sources.len()]);
                k += 1;
                let t = Instant::now();
                let timeout = Duration::from_secs(10);
                let result = async {
                    let mut conn = Conn::open(addr, source, proto, timeout).await?;
                    conn.join(&room, 1, timeout).await?;
                    let joined = t.elapsed();
                    conn.close(Duration::from_secs(2)).await?;
                    anyhow::Ok(joined)
                }
                .await;
                let count = counting.load(Ordering::Relaxed);
                match result {
                    Ok(joined) if count => {
                        counters.cycles.fetch_add(1, Ordering::Relaxed);
                        hist.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .saturating_record((joined.as_micros() as u64).max(1));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if count {
                            counters.errors.fetch_add(1, Ordering::Relaxed);
                        }
                        {
                            let mut f = first_error.lock().unwrap_or_else(|e| e.into_inner());
                            if f.is_empty() {
                                *f = format!("{e:#}");
                                eprintln!("switchboard-bench: churn: {}", *f);
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
    }
    // Count churn cycles during the step's measured window only.
    let timing = opts.timing;
    let flag = counting.clone();
    let c0 = Arc::new(Mutex::new((0u64, Instant::now(), 0.0f64)));
    let c0w = c0.clone();
    let countersw = counters.clone();
    let window_watch = tokio::spawn(async move {
        tokio::time::sleep(timing.warmup + Duration::from_millis(20)).await;
        flag.store(true, Ordering::Relaxed);
        let start = Instant::now();
        tokio::time::sleep(timing.duration).await;
        flag.store(false, Ordering::Relaxed);
        let secs = start.elapsed().as_secs_f64();
        *c0w.lock().unwrap_or_else(|e| e.into_inner()) =
            (countersw.cycles.load(Ordering::Relaxed), start, secs);
    });
    let step = world
        .step(
            opts.rate,
            timing,
            opts.limits,
            &Procs::single(opts.server_pid),
        )
        .await?;
    let _ = window_watch.await;
    stop.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(15), async {
        while workers.join_next().await.is_some() {}
    })
    .await;
    workers.abort_all();
    world.close().await;

    let (cycles, _, secs) = *c0.lock().unwrap_or_else(|e| e.into_inner());
    let errors = counters.errors.load(Ordering::Relaxed);
    let hist = hist.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut r = Map::new();
    r.insert("server".into(), json!(kind.name()));
    r.insert("workers".into(), json!(opts.workers));
    r.insert("members".into(), json!(opts.members));
    r.insert(
        "churn_per_s".into(),
        json!((cycles as f64 / secs.max(1e-9)).round()),
    );
    r.insert("churn_cycles".into(), json!(cycles));
    r.insert("churn_errors".into(), json!(errors));
    let fe = first_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if !fe.is_empty() {
        r.insert("churn_first_error".into(), json!(fe));
    }
    stats::latency_fields(&hist, "open_join_", &mut r);
    // The room's figures, prefixed.
    for key in [
        "offered_publish_per_s",
        "offered_deliveries_per_s",
        "delivered_per_s",
        "p50_ms",
        "p99_ms",
        "p999_ms",
        "max_ms",
        "missing",
        "gaps",
        "errors",
        "closed_connections",
        "server_cpu",
        "generator_cpu",
        "fail",
    ] {
        if let Some(v) = step.record.get(key) {
            r.insert(format!("room_{key}"), v.clone());
        }
    }
    r.insert(
        "busy_before".into(),
        json!(busy_before.map(|b| (b * 100.0).round() / 100.0)),
    );
    if let Some(v) = step.record.get("other_cpu") {
        r.insert("other_cpu".into(), v.clone());
    }
    let pass = step.pass && errors == 0;
    r.insert("pass".into(), json!(pass));
    Ok((r, pass))
}

pub const COLUMNS: &[&str] = &[
    "server",
    "churn/s",
    "errors",
    "open+join p50 ms",
    "open+join p99 ms",
    "room p50 ms",
    "room p99 ms",
    "room missing",
    "srv cpu",
    "pass",
];

pub fn table_row(r: &Map<String, Value>) -> Vec<String> {
    let v = Value::Object(r.clone());
    [
        "server",
        "churn_per_s",
        "churn_errors",
        "open_join_p50_ms",
        "open_join_p99_ms",
        "room_p50_ms",
        "room_p99_ms",
        "room_missing",
        "room_server_cpu",
        "pass",
    ]
    .iter()
    .map(|k| stats::cell(&v, k))
    .collect()
}
