//! Join storm: N clients join one room, started at R per second (paced, not all at once).
//!
//! Each client opens a connection, sends `join`, and times the reply (`joined`); then it
//! keeps reading as a member does: presence frames are discarded (a Switchboard room with
//! full presence tells every member of every join), WebSocket pings answered. The server's
//! memory is read before the first connection and once every join is answered (+ a settle),
//! its CPU over the storm. Then one member publishes one message to the room, and the
//! generator counts the members that receive it within the reach timeout.
//!
//! With `deaf`, one more client joins the room before the storm and then reads nothing for
//! that long (at least until the storm's end): the bad input of a big room. Then it reads
//! what reached it, to tell how it ended (the server's close code, the connection dropped,
//! or still open).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use switchboard_ws::{CloseCode, Message, OpCode};
use tokio::sync::Mutex as AsyncMutex;
use tokio::task::JoinSet;

use crate::conn::{Conn, Control, Ended, Proto, ServerKind, Writer};
use crate::fanout::{marker_data, parse_marker};
use crate::stats::{self, new_histogram, now_ns, CpuMeter, MachineMeter};

pub struct StormOpts {
    pub members: usize,
    /// Clients started per second.
    pub rate: f64,
    pub room: String,
    pub sources: Vec<IpAddr>,
    pub server_pid: Option<u32>,
    /// A join not answered within this is timed out (so is opening the connection).
    pub join_timeout: Duration,
    /// How long the published message has to reach every member.
    pub reach_timeout: Duration,
    /// Wait after the last join was answered before reading the server's memory.
    pub settle: Duration,
    /// One more member joins before the storm and reads nothing for this long (not
    /// counted in `members`).
    pub deaf: Option<Duration>,
}

/// The reply a frame is, for a client that has sent `join` with id 1 and waits.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A presence frame (of others joining): discarded.
    Presence,
    /// The reply to our join.
    Joined,
    /// The server refused something.
    Error,
    /// A benchmark message (publisher, sequence number, send time).
    Marker(usize, u64, u64),
    /// Anything else (Engine.IO pings are answered by the reader).
    Other,
}

/// Sorts one text frame the server sent a member of the storm.
pub fn classify(proto: Proto, text: &[u8], joined: bool) -> Frame {
    // Presence first, by its prefix: batches of a big room are the bulk of what a member
    // reads, and must not be scanned for markers.
    if text.starts_with(br#"{"type":"presence""#) {
        return Frame::Presence;
    }
    if !joined && proto.is_join_reply(text, 1) {
        return Frame::Joined;
    }
    if let Some((p, seq, ns)) = parse_marker(text) {
        return Frame::Marker(p, seq, ns);
    }
    match proto.control(text) {
        Control::Error => Frame::Error,
        _ => Frame::Other,
    }
}

/// The name under which an ending is counted: the close code, `eof` or `error`.
pub fn end_key(e: &Ended) -> String {
    match e {
        Ended::Closed(code) => code.to_string(),
        Ended::Eof => "eof".to_owned(),
        Ended::Error(_) => "error".to_owned(),
    }
}

#[derive(Default)]
struct Counts {
    answered: AtomicU64,
    connect_failed: AtomicU64,
    refused: AtomicU64,
    /// Closed (or failed) after the join was sent and before its reply.
    lost: AtomicU64,
    timed_out: AtomicU64,
    late: AtomicU64,
    /// Clients whose join has an outcome: answered, failed or timed out.
    resolved: AtomicU64,
    ended: AtomicU64,
    server_errors: AtomicU64,
    presence_frames: AtomicU64,
    wire_bytes: AtomicU64,
    reached: AtomicU64,
}

struct Shared {
    n: Counts,
    stopping: AtomicBool,
    /// Only members that have not received it yet count the message (one publish).
    join_hist: Mutex<Histogram<u64>>,
    connect_hist: Mutex<Histogram<u64>>,
    reach_hist: Mutex<Histogram<u64>>,
    closes: Mutex<BTreeMap<String, u64>>,
    first_error: Mutex<String>,
    /// Writers of the members that joined, by client index.
    writers: Mutex<Vec<(usize, Arc<AsyncMutex<Writer>>)>>,
}

impl Shared {
    fn note(&self, what: String) {
        let mut f = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_empty() {
            eprintln!("switchboard-bench: join-storm: {what}");
            *f = what;
        }
    }

    fn record(h: &Mutex<Histogram<u64>>, took: Duration) {
        h.lock()
            .unwrap_or_else(|e| e.into_inner())
            .saturating_record((took.as_micros() as u64).max(1));
    }
}

/// One client: open, join, then read as a member until the run stops.
async fn member(
    i: usize,
    addr: SocketAddr,
    source: Option<IpAddr>,
    proto: Proto,
    room: Arc<str>,
    shared: Arc<Shared>,
    join_timeout: Duration,
) {
    let n = &shared.n;
    let t = Instant::now();
    let conn = match Conn::open(addr, source, proto, join_timeout).await {
        Ok(c) => c,
        Err(e) => {
            n.connect_failed.fetch_add(1, Ordering::Relaxed);
            n.resolved.fetch_add(1, Ordering::Relaxed);
            shared.note(format!("connect: {e:#}"));
            return;
        }
    };
    Shared::record(&shared.connect_hist, t.elapsed());
    let (mut rd, wr) = conn.into_split();
    let wr = Arc::new(AsyncMutex::new(wr));
    let sent = {
        let mut w = wr.lock().await;
        w.push_text(proto.join_frame(&room, 1).as_bytes());
        let r = w.flush().await;
        let sent = Instant::now();
        if let Err(e) = r {
            n.lost.fetch_add(1, Ordering::Relaxed);
            n.resolved.fetch_add(1, Ordering::Relaxed);
            shared.note(format!("sending join: {e}"));
            return;
        }
        sent
    };
    let deadline = sent + join_timeout;
    // Whether the join has an outcome yet (answered, refused or timed out).
    let mut resolved = false;
    let mut joined = false;
    let mut reached = false;
    let mut refused = false;
    let ended = loop {
        let filled = if resolved {
            rd.fill(16 * 1024).await
        } else {
            match tokio::time::timeout_at(deadline.into(), rd.fill(16 * 1024)).await {
                Ok(r) => r,
                Err(_) => {
                    resolved = true;
                    n.timed_out.fetch_add(1, Ordering::Relaxed);
                    n.resolved.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
        };
        if let Err(e) = filled {
            break e;
        }
        n.wire_bytes
            .fetch_add(rd.take_wire_bytes(), Ordering::Relaxed);
        let mut replies: Vec<(OpCode, Vec<u8>)> = Vec::new();
        let mut end = None;
        let mut presence = 0;
        loop {
            match rd.next() {
                Ok(Some(Message::Text(text))) => match classify(proto, &text, joined) {
                    Frame::Presence => presence += 1,
                    Frame::Joined => {
                        joined = true;
                        if resolved {
                            n.late.fetch_add(1, Ordering::Relaxed);
                        } else {
                            resolved = true;
                            Shared::record(&shared.join_hist, sent.elapsed());
                            n.answered.fetch_add(1, Ordering::Relaxed);
                            n.resolved.fetch_add(1, Ordering::Relaxed);
                        }
                        shared
                            .writers
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((i, wr.clone()));
                    }
                    Frame::Marker(_, _, ns) => {
                        if !reached {
                            reached = true;
                            n.reached.fetch_add(1, Ordering::Relaxed);
                            let us = now_ns().saturating_sub(ns) / 1000;
                            Shared::record(&shared.reach_hist, Duration::from_micros(us));
                        }
                    }
                    Frame::Error => {
                        shared.note(format!("server error: {}", String::from_utf8_lossy(&text)));
                        if joined {
                            n.server_errors.fetch_add(1, Ordering::Relaxed);
                        } else {
                            if !resolved {
                                resolved = true;
                                n.refused.fetch_add(1, Ordering::Relaxed);
                                n.resolved.fetch_add(1, Ordering::Relaxed);
                            }
                            refused = true;
                            end = Some(Ended::Error(anyhow::anyhow!("join refused")));
                            break;
                        }
                    }
                    Frame::Other => {
                        if let Control::Reply(r) = proto.control(&text) {
                            replies.push((OpCode::Text, r.to_vec()));
                        }
                    }
                },
                Ok(Some(Message::Ping(p))) => replies.push((OpCode::Pong, p.to_vec())),
                Ok(Some(Message::Close(f))) => {
                    let code = f.map_or(1005, |f| f.code.0);
                    replies.push((OpCode::Close, code.to_be_bytes().to_vec()));
                    end = Some(Ended::Closed(code));
                    break;
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    end = Some(e);
                    break;
                }
            }
        }
        if presence > 0 {
            n.presence_frames.fetch_add(presence, Ordering::Relaxed);
        }
        if !replies.is_empty() {
            let mut w = wr.lock().await;
            for (op, payload) in &replies {
                w.push(*op, payload);
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), w.flush()).await;
        }
        if let Some(e) = end {
            break e;
        }
    };
    if shared.stopping.load(Ordering::Relaxed) {
        return;
    }
    if !resolved {
        n.lost.fetch_add(1, Ordering::Relaxed);
        n.resolved.fetch_add(1, Ordering::Relaxed);
    }
    if refused {
        // Counted as a failed join; we closed it, not the server.
        return;
    }
    n.ended.fetch_add(1, Ordering::Relaxed);
    *shared
        .closes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(end_key(&ended))
        .or_insert(0) += 1;
    shared.note(format!("a member connection ended: {ended}"));
}

/// A member that joined and then stopped reading: what the server sent it stays in the
/// kernel's buffers, then in the server's queue for it.
async fn deaf_member(
    addr: SocketAddr,
    source: Option<IpAddr>,
    proto: Proto,
    room: &str,
    timeout: Duration,
) -> anyhow::Result<Conn> {
    let mut conn = Conn::open(addr, source, proto, timeout).await?;
    conn.join(room, 1, timeout).await?;
    Ok(conn)
}

/// How the deaf member ended, read at the end of the run: everything that reached it,
/// then the server's close frame (`closed <code>`), the connection's end without one
/// (`dropped`), nothing more for `idle` (`open`), or what went wrong (`error: …`). Also
/// the bytes it was sent.
async fn drain_deaf(conn: Conn, idle: Duration) -> (String, u64) {
    let (mut rd, mut wr) = conn.into_split();
    let mut bytes = 0;
    let ending = loop {
        match tokio::time::timeout(idle, rd.fill(256 * 1024)).await {
            Err(_) => break "open".to_owned(),
            Ok(Err(Ended::Eof)) => break "dropped".to_owned(),
            Ok(Err(e)) => break format!("error: {e}"),
            Ok(Ok(())) => {}
        }
        bytes += rd.take_wire_bytes();
        let end = loop {
            match rd.next() {
                Ok(Some(Message::Close(f))) => {
                    break Some(format!("closed {}", f.map_or(1005, |f| f.code.0)));
                }
                Ok(Some(_)) => {}
                Ok(None) => break None,
                Err(e) => break Some(format!("error: {e}")),
            }
        };
        if let Some(end) = end {
            break end;
        }
    };
    if ending == "open" {
        let _ = tokio::time::timeout(Duration::from_secs(1), wr.close(CloseCode::NORMAL.0)).await;
    }
    (ending, bytes)
}

/// Runs the storm; returns the record and whether every criterion was met.
pub async fn run(
    kind: ServerKind,
    addr: SocketAddr,
    opts: &StormOpts,
) -> anyhow::Result<(Map<String, Value>, bool)> {
    if opts.members == 0 || opts.rate <= 0.0 {
        anyhow::bail!("--members and --rate must be above 0");
    }
    let proto = kind.proto();
    let shared = Arc::new(Shared {
        n: Counts::default(),
        stopping: AtomicBool::new(false),
        join_hist: Mutex::new(new_histogram()),
        connect_hist: Mutex::new(new_histogram()),
        reach_hist: Mutex::new(new_histogram()),
        closes: Mutex::new(BTreeMap::new()),
        first_error: Mutex::new(String::new()),
        writers: Mutex::new(Vec::with_capacity(opts.members)),
    });
    let room: Arc<str> = Arc::from(opts.room.as_str());
    let deaf = if let Some(wait) = opts.deaf {
        let source = opts.sources.first().copied();
        match deaf_member(addr, source, proto, &room, opts.join_timeout).await {
            Ok(conn) => Some((conn, Instant::now() + wait)),
            Err(e) => anyhow::bail!("the deaf member could not join: {e:#}"),
        }
    } else {
        None
    };
    let rss_before = opts.server_pid.and_then(stats::rss_bytes);
    let srv_cpu = CpuMeter::start(opts.server_pid);
    let gen_cpu = CpuMeter::start(None);
    let srv_cpu_s0 = stats::cpu_seconds(opts.server_pid).filter(|_| opts.server_pid.is_some());
    let gen_cpu_s0 = stats::cpu_seconds(None);
    let machine = MachineMeter::start();
    let mut tasks = JoinSet::new();
    let t0 = Instant::now() + Duration::from_millis(20);
    let mut behind = Duration::ZERO;
    for i in 0..opts.members {
        let due = t0 + Duration::from_secs_f64(i as f64 / opts.rate);
        let now = Instant::now();
        if due > now {
            tokio::time::sleep_until(due.into()).await;
        } else {
            behind = behind.max(now - due);
        }
        let source = (!opts.sources.is_empty()).then(|| opts.sources[i % opts.sources.len()]);
        tasks.spawn(member(
            i,
            addr,
            source,
            proto,
            room.clone(),
            shared.clone(),
            opts.join_timeout,
        ));
    }
    let start_secs = t0.elapsed().as_secs_f64();
    // Every join has an outcome within the connect and join timeouts of the last client.
    let all_by = Instant::now() + opts.join_timeout * 2 + Duration::from_secs(1);
    let n = &shared.n;
    while n.resolved.load(Ordering::Relaxed) < opts.members as u64 && Instant::now() < all_by {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let storm_secs = t0.elapsed().as_secs_f64();
    let server_cpu = srv_cpu.share();
    let generator_cpu = gen_cpu.share();
    let busy = machine.busy_cpus();
    let wire_storm = n.wire_bytes.load(Ordering::Relaxed);
    let presence_storm = n.presence_frames.load(Ordering::Relaxed);
    tokio::time::sleep(opts.settle).await;
    let rss_after = opts.server_pid.and_then(stats::rss_bytes);
    let wire_settled = n.wire_bytes.load(Ordering::Relaxed);

    // Reach: the first member that joined publishes one message.
    let publisher = {
        let w = shared.writers.lock().unwrap_or_else(|e| e.into_inner());
        w.iter().min_by_key(|(i, _)| *i).cloned()
    };
    let mut publish_error = None;
    let reach_began = Instant::now();
    if let Some((_, w)) = &publisher {
        let mut data = Vec::with_capacity(96);
        marker_data(&mut data, 0, 1, now_ns(), 64, false);
        let mut text = Vec::with_capacity(160);
        proto.publish_text(&mut text, &room, &data);
        let mut w = w.lock().await;
        w.push_text(&text);
        match tokio::time::timeout(Duration::from_secs(5), w.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => publish_error = Some(e.to_string()),
            Err(_) => publish_error = Some("publish write timed out".to_owned()),
        }
    } else {
        publish_error = Some("no member joined".to_owned());
    }
    let reach_by = reach_began + opts.reach_timeout;
    while publish_error.is_none()
        && n.reached.load(Ordering::Relaxed) < opts.members as u64
        && Instant::now() < reach_by
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reach_secs = reach_began.elapsed().as_secs_f64();
    let reached = n.reached.load(Ordering::Relaxed);
    let rss_end = opts.server_pid.and_then(stats::rss_bytes);
    let hwm = opts.server_pid.and_then(stats::hwm_bytes);
    let srv_cpu_s = match (srv_cpu_s0, stats::cpu_seconds(opts.server_pid)) {
        (Some(a), Some(b)) if opts.server_pid.is_some() => Some(b - a),
        _ => None,
    };
    let gen_cpu_s = match (gen_cpu_s0, stats::cpu_seconds(None)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let wire_total = n.wire_bytes.load(Ordering::Relaxed);
    let deaf = match deaf {
        Some((conn, until)) => {
            tokio::time::sleep_until(until.into()).await;
            Some(drain_deaf(conn, Duration::from_secs(2)).await)
        }
        None => None,
    };

    // Close every member politely, bounded, then stop the readers.
    shared.stopping.store(true, Ordering::Relaxed);
    let ended = n.ended.load(Ordering::Relaxed);
    let writers: Vec<_> =
        std::mem::take(&mut *shared.writers.lock().unwrap_or_else(|e| e.into_inner()));
    let close_by = Instant::now() + Duration::from_secs(10);
    for (_, w) in &writers {
        if Instant::now() > close_by {
            break;
        }
        if let Ok(mut w) = tokio::time::timeout(Duration::from_millis(50), w.lock()).await {
            let _ =
                tokio::time::timeout(Duration::from_millis(50), w.close(CloseCode::NORMAL.0)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    tasks.abort_all();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    drop(writers);

    let answered = n.answered.load(Ordering::Relaxed);
    let connect_failed = n.connect_failed.load(Ordering::Relaxed);
    let refused = n.refused.load(Ordering::Relaxed);
    let lost = n.lost.load(Ordering::Relaxed);
    let timed_out = n.timed_out.load(Ordering::Relaxed);
    let resolved = n.resolved.load(Ordering::Relaxed);
    // Clients without an outcome by the deadline (none, unless the generator fell far behind)
    // count as timed out.
    let unresolved = (opts.members as u64).saturating_sub(resolved);
    let timed_out = timed_out + unresolved;
    let failed = connect_failed + refused + lost;
    let server_errors = n.server_errors.load(Ordering::Relaxed);
    let closes = copy_of(&shared.closes);
    let join_hist = copy_of(&shared.join_hist);
    let connect_hist = copy_of(&shared.connect_hist);
    let reach_hist = copy_of(&shared.reach_hist);

    let mut fail = Vec::new();
    if answered < opts.members as u64 {
        fail.push("joins not answered");
    }
    if ended > 0 {
        fail.push("connections closed");
    }
    if server_errors > 0 {
        fail.push("server errors");
    }
    if publish_error.is_some() {
        fail.push("publish failed");
    }
    if reached < opts.members as u64 {
        fail.push("reach below members");
    }
    let pass = fail.is_empty();

    let mut r = Map::new();
    r.insert("server".into(), json!(kind.name()));
    r.insert("members".into(), json!(opts.members));
    r.insert("rate".into(), json!(opts.rate));
    r.insert("sources".into(), json!(opts.sources.len()));
    r.insert("joins_answered".into(), json!(answered));
    r.insert("joins_failed".into(), json!(failed));
    r.insert("joins_timed_out".into(), json!(timed_out));
    r.insert("joins_late".into(), json!(n.late.load(Ordering::Relaxed)));
    r.insert("connect_failed".into(), json!(connect_failed));
    r.insert("joins_refused".into(), json!(refused));
    r.insert("joins_lost".into(), json!(lost));
    r.insert(
        "join_timeout_s".into(),
        json!(opts.join_timeout.as_secs_f64()),
    );
    stats::latency_fields(&join_hist, "join_", &mut r);
    stats::latency_fields(&connect_hist, "connect_", &mut r);
    r.insert("closed_connections".into(), json!(ended));
    r.insert("close_codes".into(), json!(closes));
    r.insert("server_errors".into(), json!(server_errors));
    r.insert("start_secs".into(), json!(round3(start_secs)));
    r.insert(
        "started_per_s".into(),
        json!((opts.members as f64 / start_secs.max(1e-9)).round()),
    );
    r.insert(
        "start_behind_ms".into(),
        json!(round3(behind.as_secs_f64() * 1000.0)),
    );
    r.insert("storm_secs".into(), json!(round3(storm_secs)));
    r.insert("server_rss_before".into(), json!(rss_before));
    r.insert("server_rss_after".into(), json!(rss_after));
    r.insert("server_rss_end".into(), json!(rss_end));
    r.insert("server_hwm".into(), json!(hwm));
    let per_member = match (rss_before, rss_after) {
        (Some(b), Some(a)) if answered > 0 => {
            Some((a.saturating_sub(b) as f64 / answered as f64).round())
        }
        _ => None,
    };
    r.insert("rss_per_member_bytes".into(), json!(per_member));
    r.insert("server_cpu".into(), json!(server_cpu));
    r.insert("generator_cpu".into(), json!(generator_cpu));
    r.insert("server_cpu_seconds".into(), json!(srv_cpu_s.map(round3)));
    r.insert("generator_cpu_seconds".into(), json!(gen_cpu_s.map(round3)));
    let other = match (busy, server_cpu, generator_cpu) {
        (Some(b), Some(s), Some(g)) => Some(((b - s - g).max(0.0) * 100.0).round() / 100.0),
        _ => None,
    };
    r.insert("other_cpu".into(), json!(other));
    // What members read: presence traffic, mostly.
    r.insert("presence_frames".into(), json!(presence_storm));
    r.insert(
        "presence_frames_total".into(),
        json!(n.presence_frames.load(Ordering::Relaxed)),
    );
    r.insert("wire_bytes_storm".into(), json!(wire_storm));
    r.insert("wire_bytes_settle".into(), json!(wire_settled - wire_storm));
    r.insert("wire_bytes_total".into(), json!(wire_total));
    r.insert(
        "wire_bytes_per_member".into(),
        json!((wire_total as f64 / opts.members as f64).round()),
    );
    r.insert(
        "wire_bytes_per_s_storm".into(),
        json!((wire_storm as f64 / storm_secs.max(1e-9)).round()),
    );
    r.insert("reach".into(), json!(reached));
    r.insert("reach_of".into(), json!(opts.members));
    r.insert("reach_secs".into(), json!(round3(reach_secs)));
    stats::latency_fields(&reach_hist, "reach_", &mut r);
    if let Some(e) = publish_error {
        r.insert("publish_error".into(), json!(e));
    }
    if let Some((ending, bytes)) = deaf {
        r.insert(
            "deaf_secs".into(),
            json!(opts.deaf.map(|d| round3(d.as_secs_f64()))),
        );
        r.insert("deaf_ending".into(), json!(ending));
        r.insert("deaf_bytes_read".into(), json!(bytes));
    }
    let fe = shared
        .first_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if !fe.is_empty() {
        r.insert("first_error".into(), json!(fe));
    }
    r.insert("pass".into(), json!(pass));
    r.insert("fail".into(), json!(fail.join(", ")));
    Ok((r, pass))
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

pub const COLUMNS: &[&str] = &[
    "server",
    "members",
    "answered",
    "failed",
    "timed out",
    "join p50 ms",
    "join p99 ms",
    "join max ms",
    "closed",
    "bytes/member",
    "reach",
    "deaf member",
    "srv cpu",
    "gen cpu",
    "pass",
];

pub fn table_row(r: &Map<String, Value>) -> Vec<String> {
    let v = Value::Object(r.clone());
    let mut row: Vec<String> = [
        "server",
        "members",
        "joins_answered",
        "joins_failed",
        "joins_timed_out",
        "join_p50_ms",
        "join_p99_ms",
        "join_max_ms",
        "closed_connections",
        "rss_per_member_bytes",
        "reach",
        "deaf_ending",
        "server_cpu",
        "generator_cpu",
    ]
    .iter()
    .map(|k| stats::cell(&v, k))
    .collect();
    row.push(if r.get("pass") == Some(&json!(true)) {
        "yes".into()
    } else {
        format!("no ({})", stats::cell(&v, "fail"))
    });
    row
}

/// A copy of what a mutex holds (a reader that panicked holding it left the value usable).
fn copy_of<T: Clone>(m: &Mutex<T>) -> T {
    m.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_of_a_storm_are_told_apart() {
        let sb = Proto::Switchboard;
        let batch = br#"{"type":"presence","room":"big","events":[{"event":"join","member":{"conn":"a.1","user":null,"presence":{}}}],"member_count":2}"#;
        assert_eq!(classify(sb, batch, false), Frame::Presence);
        assert_eq!(classify(sb, batch, true), Frame::Presence);
        let joined = br#"{"type":"joined","id":1,"room":"big","epoch":"e","offset":0,"members":[],"member_count":7,"messages":[]}"#;
        assert_eq!(classify(sb, joined, false), Frame::Joined);
        // A second reply (not ours: we joined once) is nothing to count.
        assert_eq!(classify(sb, joined, true), Frame::Other);
        let err = br#"{"type":"error","id":1,"code":"forbidden","message":"no"}"#;
        assert_eq!(classify(sb, err, false), Frame::Error);
        let mut msg = br#"{"type":"message","room":"big","data":""#.to_vec();
        marker_data(&mut msg, 0, 1, 42, 64, false);
        msg.extend_from_slice(br#"","from":{},"offset":1,"ts":1}"#);
        assert_eq!(classify(sb, &msg, true), Frame::Marker(0, 1, 42));
        let json = Proto::Json;
        assert_eq!(
            classify(json, br#"{"type":"joined","room":"big","id":1}"#, false),
            Frame::Joined
        );
        assert_eq!(
            classify(json, br#"{"type":"joined","room":"big","id":10}"#, false),
            Frame::Other
        );
    }

    #[test]
    fn endings_are_keyed_by_close_code() {
        assert_eq!(end_key(&Ended::Closed(4009)), "4009");
        assert_eq!(end_key(&Ended::Eof), "eof");
        assert_eq!(end_key(&Ended::Error(anyhow::anyhow!("x"))), "error");
    }
}
