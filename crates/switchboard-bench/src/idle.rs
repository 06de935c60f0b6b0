//! Idle connections: open N WebSocket connections, hold them, and read the server's
//! resident memory from /proc before and after.
//!
//! One process may hold fewer than 20,000 descriptors here, so the connections are opened
//! by shard processes (this binary, `idle-shard`), each holding its share until the parent
//! has measured. Source addresses 127.0.0.2, .3, … spread the ephemeral ports.
//!
//! With a room per connection, each connection joins a room of its own once it is open
//! (`own<shard>-<i>`: one member per room) and waits for the reply before it idles, so the
//! figure is what a connection costs with one room in it.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Map, Value};
use switchboard_ws::{Message, OpCode};
use tokio::sync::{Mutex as AsyncMutex, Semaphore};
use tokio::task::JoinSet;

use crate::conn::{Conn, Control, Reader, ServerKind, Writer};
use crate::stats::{self, new_histogram};

pub struct IdleOpts {
    pub connections: usize,
    pub shards: Option<usize>,
    pub concurrency: usize,
    pub sources: usize,
    pub settle: Duration,
    pub server_pid: Option<u32>,
    /// Each connection joins a room of its own before idling.
    pub room_per_connection: bool,
}

/// What one shard reported once its connections were open.
#[derive(Default)]
struct Ready {
    ok: u64,
    failed: u64,
    secs: f64,
    p50_ms: f64,
    p99_ms: f64,
    first_error: String,
}

fn parse_ready(line: &str) -> Option<Ready> {
    let v: Value = serde_json::from_str(line.strip_prefix("READY ")?).ok()?;
    Some(Ready {
        ok: v["ok"].as_u64()?,
        failed: v["failed"].as_u64()?,
        secs: v["secs"].as_f64()?,
        p50_ms: v["p50_ms"].as_f64().unwrap_or(0.0),
        p99_ms: v["p99_ms"].as_f64().unwrap_or(0.0),
        first_error: v["first_error"].as_str().unwrap_or("").to_owned(),
    })
}

/// The parent: starts the shards, measures, tells them to close, reports.
pub fn run(
    kind: ServerKind,
    addr: SocketAddr,
    opts: &IdleOpts,
) -> anyhow::Result<Map<String, Value>> {
    let shards = opts
        .shards
        .unwrap_or_else(|| opts.connections.div_ceil(15_000))
        .max(1);
    let rss_before = opts.server_pid.and_then(stats::rss_bytes);
    let exe = std::env::current_exe().context("finding our own executable")?;
    let mut children: Vec<(Child, BufReader<std::process::ChildStdout>)> = Vec::new();
    for s in 0..shards {
        let n = opts.connections / shards + usize::from(s < opts.connections % shards);
        let mut child = Command::new(&exe)
            .args(["--server", kind.name(), "--addr", &addr.to_string()])
            .args(["--sources", &opts.sources.to_string()])
            .args(["idle-shard", "--connections", &n.to_string()])
            .args(["--concurrency", &opts.concurrency.to_string()])
            .args(["--shard", &s.to_string()])
            .args(opts.room_per_connection.then_some("--room-per-connection"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting an idle-shard process")?;
        let out = BufReader::new(child.stdout.take().context("shard stdout")?);
        children.push((child, out));
    }
    let mut readies = Vec::new();
    for (child, out) in &mut children {
        let mut line = String::new();
        loop {
            line.clear();
            if out.read_line(&mut line)? == 0 {
                let _ = child.kill();
                bail!("an idle shard exited before it was ready");
            }
            if let Some(r) = parse_ready(line.trim()) {
                readies.push(r);
                break;
            }
        }
    }
    // Time to open every connection: the slowest shard (process start not included).
    let all_open = readies.iter().map(|r| r.secs).fold(0.0, f64::max);
    std::thread::sleep(opts.settle);
    let rss_after = opts.server_pid.and_then(stats::rss_bytes);
    // Tell the shards to close, and collect what they saw while holding.
    let mut dropped = 0u64;
    for (child, out) in &mut children {
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(b"STOP\n");
        }
        let mut line = String::new();
        while out.read_line(&mut line).unwrap_or(0) > 0 {
            if let Some(rest) = line.trim().strip_prefix("DONE dropped=") {
                dropped += rest.parse::<u64>().unwrap_or(0);
            }
            line.clear();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait()? {
                Some(_) => break,
                None if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
    let ok: u64 = readies.iter().map(|r| r.ok).sum();
    let failed: u64 = readies.iter().map(|r| r.failed).sum();
    let mut r = Map::new();
    r.insert("server".into(), json!(kind.name()));
    r.insert("requested".into(), json!(opts.connections));
    r.insert("connections".into(), json!(ok));
    r.insert("failed".into(), json!(failed));
    r.insert("dropped_while_idle".into(), json!(dropped));
    r.insert("shards".into(), json!(shards));
    // Each connection in a room of its own (joined, reply received), or bare.
    r.insert(
        "room_per_connection".into(),
        json!(opts.room_per_connection),
    );
    r.insert(
        "rooms_joined".into(),
        json!(if opts.room_per_connection { ok } else { 0 }),
    );
    r.insert("sources".into(), json!(opts.sources));
    r.insert("connect_secs".into(), json!(round3(all_open)));
    r.insert(
        "connects_per_s".into(),
        json!((ok as f64 / all_open.max(1e-9)).round()),
    );
    let p50 = readies.iter().map(|r| r.p50_ms).fold(0.0, f64::max);
    let p99 = readies.iter().map(|r| r.p99_ms).fold(0.0, f64::max);
    r.insert("connect_p50_ms".into(), json!(round3(p50)));
    r.insert("connect_p99_ms".into(), json!(round3(p99)));
    r.insert("server_rss_before".into(), json!(rss_before));
    r.insert("server_rss_after".into(), json!(rss_after));
    let per_conn = match (rss_before, rss_after) {
        (Some(b), Some(a)) if ok > 0 => Some((a.saturating_sub(b) as f64 / ok as f64).round()),
        _ => None,
    };
    r.insert("rss_per_connection_bytes".into(), json!(per_conn));
    if let Some(e) = readies.iter().find(|r| !r.first_error.is_empty()) {
        r.insert("first_error".into(), json!(e.first_error));
    }
    let pass = failed == 0 && dropped == 0 && ok as usize == opts.connections;
    r.insert("pass".into(), json!(pass));
    Ok(r)
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Source addresses 127.0.0.2 … 127.0.0.(n + 1); none when n is 0.
pub fn source_addrs(n: usize) -> Vec<IpAddr> {
    (0..n.min(250))
        .map(|i| IpAddr::from([127, 0, 0, 2 + i as u8]))
        .collect()
}

/// The room of its own that connection `i` of shard `shard` joins.
pub fn own_room(shard: usize, i: usize) -> String {
    format!("own{shard}-{i}")
}

/// One shard: opens `n` connections (each joining a room of its own when
/// `room_per_connection`), prints `READY {...}`, holds them until a line (or EOF) on stdin,
/// prints `DONE dropped=<n>`, closes.
pub async fn shard(
    kind: ServerKind,
    addr: SocketAddr,
    n: usize,
    concurrency: usize,
    sources: Vec<IpAddr>,
    shard: usize,
    room_per_connection: bool,
) -> anyhow::Result<()> {
    let proto = kind.proto();
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let dropped = Arc::new(AtomicU64::new(0));
    let mut opening = JoinSet::new();
    let began = Instant::now();
    for i in 0..n {
        let sem = sem.clone();
        // Offset by shard so that shards spread over the sources too.
        let source = (!sources.is_empty()).then(|| sources[(i * 7 + shard) % sources.len()]);
        opening.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let t = Instant::now();
            let timeout = Duration::from_secs(30);
            let conn = async {
                let mut conn = Conn::open(addr, source, proto, timeout).await?;
                if room_per_connection {
                    let room = own_room(shard, i);
                    conn.join(&room, 1, Duration::from_secs(10))
                        .await
                        .with_context(|| format!("join {room}"))?;
                }
                anyhow::Ok(conn)
            }
            .await;
            (conn, t.elapsed())
        });
    }
    let mut hist = new_histogram();
    let mut ok = 0u64;
    let mut failed = 0u64;
    let mut first_error = String::new();
    let mut writers = Vec::with_capacity(n);
    let mut readers = JoinSet::new();
    while let Some(res) = opening.join_next().await {
        let (conn, took) = res.context("connect task")?;
        match conn {
            Ok(conn) => {
                ok += 1;
                hist.saturating_record((took.as_micros() as u64).max(1));
                let (rd, wr) = conn.into_split();
                let wr = Arc::new(AsyncMutex::new(wr));
                readers.spawn(hold(rd, wr.clone(), dropped.clone()));
                writers.push(wr);
            }
            Err(e) => {
                failed += 1;
                if first_error.is_empty() {
                    first_error = format!("{e:#}");
                }
            }
        }
    }
    let secs = began.elapsed().as_secs_f64();
    let q = |p: f64| {
        if hist.is_empty() {
            0.0
        } else {
            hist.value_at_quantile(p) as f64 / 1000.0
        }
    };
    let ready = json!({
        "ok": ok, "failed": failed, "secs": secs,
        "p50_ms": q(0.5), "p99_ms": q(0.99), "first_error": first_error,
    });
    println!("READY {ready}");
    std::io::stdout().flush()?;
    // Hold until the parent says so (a line or EOF on stdin), at most ten minutes.
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        let _ = tx.send(());
    });
    let _ = tokio::time::timeout(Duration::from_secs(600), rx).await;
    println!("DONE dropped={}", dropped.load(Ordering::Relaxed));
    std::io::stdout().flush()?;
    // Close politely (a close frame each), give the server a moment, then drop.
    for w in &writers {
        let mut w = w.lock().await;
        let _ = tokio::time::timeout(Duration::from_millis(50), w.close(1000)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    readers.abort_all();
    drop(writers);
    Ok(())
}

/// An idle connection: answers pings, notes if the server drops it.
async fn hold(mut rd: Reader, wr: Arc<AsyncMutex<Writer>>, dropped: Arc<AtomicU64>) {
    let proto = rd.proto;
    loop {
        if rd.fill(4096).await.is_err() {
            dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        loop {
            match rd.next() {
                Ok(Some(Message::Ping(p))) => {
                    let mut w = wr.lock().await;
                    w.push(OpCode::Pong, &p);
                    let _ = w.flush().await;
                }
                Ok(Some(Message::Text(t))) => {
                    if let Control::Reply(r) = proto.control(&t) {
                        let mut w = wr.lock().await;
                        w.push_text(r);
                        let _ = w.flush().await;
                    }
                }
                Ok(Some(Message::Close(_))) | Err(_) => {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
            }
        }
    }
}

pub const COLUMNS: &[&str] = &[
    "server",
    "connections",
    "failed",
    "connect s",
    "conn/s",
    "p99 connect ms",
    "RSS before",
    "RSS after",
    "bytes/conn",
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
        stats::cell(&v, "connections"),
        stats::cell(&v, "failed"),
        stats::cell(&v, "connect_secs"),
        stats::cell(&v, "connects_per_s"),
        stats::cell(&v, "connect_p99_ms"),
        mib("server_rss_before"),
        mib("server_rss_after"),
        stats::cell(&v, "rss_per_connection_bytes"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_of_their_own_differ_across_shards_and_connections() {
        assert_eq!(own_room(1, 23), "own1-23");
        // Shard 1's connection 23 and shard 12's connection 3 must not share a room.
        assert_ne!(own_room(1, 23), own_room(12, 3));
    }

    #[test]
    fn ready_lines_are_parsed() {
        let r = parse_ready(
            r#"READY {"ok":3,"failed":1,"secs":0.5,"p50_ms":1.0,"p99_ms":2.0,"first_error":"x"}"#,
        )
        .expect("a READY line");
        assert_eq!((r.ok, r.failed, r.first_error.as_str()), (3, 1, "x"));
        assert!(parse_ready("DONE dropped=0").is_none());
    }
}
