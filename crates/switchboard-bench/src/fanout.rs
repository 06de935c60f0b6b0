//! Fan-out and saturation: R rooms × M members, P publishers; every member must receive
//! every message published to its room (the publisher too: it is a member).
//!
//! Each published message carries `sb1 <publisher> <seq> <sent-ns> <padding>` as its data,
//! a JSON string. Members find the marker in whatever frame the server wraps it in, so one
//! reader serves every protocol; latency is receive time minus the timestamp (one process,
//! one monotonic clock), and sequence numbers tell loss, duplicates and reordering apart.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use switchboard_ws::{CloseCode, Message, OpCode};
use tokio::sync::{Mutex as AsyncMutex, Semaphore};
use tokio::task::JoinSet;

use crate::conn::{Conn, Control, Ended, Proto, Reader, ServerKind, Writer};
use crate::redisinfo;
use crate::stats::{self, new_histogram, now_ns, CpuMeter, MachineMeter};

/// The server side's processes, measured during each step: one or more nodes, and the
/// broker they share (Redis), if any. The server's CPU is all of them together.
#[derive(Debug, Clone, Default)]
pub struct Procs {
    /// The server's processes, one per node.
    pub nodes: Vec<u32>,
    /// A broker process the nodes share (Redis).
    pub broker: Option<u32>,
    /// The broker's address: Redis `INFO` is read at the start and end of each window.
    pub redis: Option<SocketAddr>,
}

impl Procs {
    /// One server process (or none known).
    pub fn single(pid: Option<u32>) -> Procs {
        Procs {
            nodes: pid.into_iter().collect(),
            ..Procs::default()
        }
    }

    fn known(&self) -> bool {
        !self.nodes.is_empty() || self.broker.is_some()
    }
}

/// Read and write system calls of several processes, summed.
fn syscalls_of(pids: &[u32]) -> Option<(u64, u64)> {
    pids.iter().try_fold((0, 0), |(r, w), pid| {
        let (r1, w1) = stats::syscalls(*pid)?;
        Some((r + r1, w + w1))
    })
}

/// How a fan-out world is built.
#[derive(Debug, Clone)]
pub struct Shape {
    pub rooms: usize,
    pub members: usize,
    pub publishers: usize,
    /// Bytes of each message's `data` string.
    pub payload: usize,
    /// Pad `data` with words (text that compresses about as chat does) instead of `x`.
    pub text: bool,
    /// Members offer permessage-deflate, as browsers do (and must all get it).
    pub compression: bool,
    pub connect_concurrency: usize,
    pub sources: Vec<IpAddr>,
    /// Room names are `<prefix><index>`.
    pub room_prefix: String,
}

/// The timing of one measured step.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub warmup: Duration,
    pub duration: Duration,
    /// How long to wait, after publishing stops, for every message to arrive.
    pub drain: Duration,
}

/// When a step counts as sustained.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_p99_ms: f64,
    /// Delivered per second over offered deliveries per second, at least.
    pub min_delivered_ratio: f64,
}

/// State every reader shares: counters, the measurement window, one histogram.
pub struct Shared {
    delivered: AtomicU64,
    errors: AtomicU64,
    ended: AtomicU64,
    stopping: AtomicBool,
    win_start: AtomicU64,
    win_end: AtomicU64,
    frame_bytes: AtomicU64,
    /// Bytes members read from their sockets: what deliveries cost on the wire.
    wire_bytes: AtomicU64,
    hist: Mutex<Histogram<u64>>,
    problems: Mutex<Vec<String>>,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            delivered: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            ended: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            win_start: AtomicU64::new(u64::MAX),
            win_end: AtomicU64::new(0),
            frame_bytes: AtomicU64::new(0),
            wire_bytes: AtomicU64::new(0),
            hist: Mutex::new(new_histogram()),
            problems: Mutex::new(Vec::new()),
        }
    }

    fn problem(&self, what: String) {
        let mut p = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        if p.len() < 10 {
            eprintln!("switchboard-bench: {what}");
            p.push(what);
        }
    }
}

/// What one member saw, per publisher of its room.
struct MemberStats {
    /// Distinct messages received from each publisher (by global publisher index).
    distinct: Vec<u64>,
    /// Highest sequence number seen from each publisher.
    last: Vec<u64>,
    gaps: u64,
    dups: u64,
}

impl MemberStats {
    fn new(publishers: usize) -> MemberStats {
        MemberStats {
            distinct: vec![0; publishers],
            last: vec![0; publishers],
            gaps: 0,
            dups: 0,
        }
    }

    fn record(&mut self, publisher: usize, seq: u64) -> bool {
        let Some(last) = self.last.get_mut(publisher) else {
            return false;
        };
        if seq > *last {
            self.gaps += seq - *last - 1;
            *last = seq;
            self.distinct[publisher] += 1;
        } else {
            self.dups += 1;
        }
        true
    }
}

/// Parses `sb1 <publisher> <seq> <ns>` out of a frame.
pub fn parse_marker(frame: &[u8]) -> Option<(usize, u64, u64)> {
    const MARKER: u32 = u32::from_le_bytes(*b"sb1 ");
    let at = frame
        .windows(4)
        .position(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]) == MARKER)?;
    let mut rest = &frame[at + 4..];
    let mut next = || -> Option<u64> {
        let end = rest.iter().position(|b| !b.is_ascii_digit())?;
        if end == 0 {
            return None;
        }
        let mut v: u64 = 0;
        for &d in &rest[..end] {
            v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        }
        rest = &rest[end + 1..];
        Some(v)
    };
    let publisher = next()? as usize;
    let seq = next()?;
    let ns = next()?;
    Some((publisher, seq, ns))
}

/// Writes the `data` of one message: the marker, then padding up to `payload` bytes —
/// `x`s, or with `text` words picked by a generator seeded from the publisher and the
/// sequence number (every message different, compressing like chat text does: about
/// 2–3× on its own).
pub fn marker_data(
    out: &mut Vec<u8>,
    publisher: usize,
    seq: u64,
    ns: u64,
    payload: usize,
    text: bool,
) {
    use std::io::Write;
    let start = out.len();
    let _ = write!(out, "sb1 {publisher} {seq} {ns} ");
    let marker = out.len() - start;
    if !text {
        if payload > marker {
            out.resize(start + payload, b'x');
        }
        return;
    }
    let mut rng = (publisher as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seq;
    while out.len() - start < payload {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let word = WORDS[(rng % WORDS.len() as u64) as usize];
        out.extend_from_slice(word.as_bytes());
        out.push(if rng >> 60 == 0 { b',' } else { b' ' });
    }
    out.truncate(start + payload.max(marker));
}

/// Common English words: chat-like padding (no quotes or backslashes, so it needs no
/// escaping inside a JSON string).
const WORDS: &[&str] = &[
    "the", "be", "to", "of", "and", "a", "in", "that", "have", "I", "it", "for", "not", "on",
    "with", "he", "as", "you", "do", "at", "this", "but", "his", "by", "from", "they", "we", "say",
    "her", "she", "or", "an", "will", "my", "one", "all", "would", "there", "their", "what", "so",
    "up", "out", "if", "about", "who", "get", "which", "go", "me", "when", "make", "can", "like",
    "time", "no", "just", "him", "know", "take", "people", "into", "year", "your", "good", "some",
    "could", "them", "see", "other", "than", "then", "now", "look", "only", "come", "its", "over",
    "think", "also", "back", "after", "use", "two", "how", "our", "work", "first", "well", "way",
    "even", "new", "want", "because", "any", "these", "give", "day", "most", "us", "meeting",
    "room", "message", "deploy", "server", "build", "review", "ship", "today", "tomorrow",
    "thanks", "sure", "okay", "great", "question", "change", "issue", "fixed", "test", "release",
    "document", "draft", "page",
];

/// A member's read loop: counts and times every benchmark message, answers pings.
async fn read_loop(
    mut rd: Reader,
    wr: Arc<AsyncMutex<Writer>>,
    stats: Arc<Mutex<MemberStats>>,
    shared: Arc<Shared>,
) {
    let proto = rd.proto;
    let ended = loop {
        if let Err(e) = rd.fill(64 * 1024).await {
            break e;
        }
        let mut replies: Vec<(OpCode, Vec<u8>)> = Vec::new();
        let mut ended = None;
        {
            let mut st = stats.lock().unwrap_or_else(|e| e.into_inner());
            let mut hist = shared.hist.lock().unwrap_or_else(|e| e.into_inner());
            let ws = shared.win_start.load(Ordering::Relaxed);
            let we = shared.win_end.load(Ordering::Relaxed);
            let mut n: u64 = 0;
            // One clock read per 32 messages: a batch is decoded in microseconds.
            let mut now = now_ns();
            loop {
                match rd.next() {
                    Ok(Some(Message::Text(t))) => {
                        if let Some((p, seq, sent)) = parse_marker(&t) {
                            n += 1;
                            if n & 31 == 0 {
                                now = now_ns();
                            }
                            if !st.record(p, seq) {
                                shared.errors.fetch_add(1, Ordering::Relaxed);
                            }
                            if sent >= ws && sent <= we {
                                let us = now.saturating_sub(sent) / 1000;
                                hist.saturating_record(us.max(1));
                            }
                            if shared.frame_bytes.load(Ordering::Relaxed) == 0 {
                                shared.frame_bytes.store(t.len() as u64, Ordering::Relaxed);
                            }
                        } else {
                            match proto.control(&t) {
                                Control::Ignore => {}
                                Control::Reply(r) => replies.push((OpCode::Text, r.to_vec())),
                                Control::Error => {
                                    shared.errors.fetch_add(1, Ordering::Relaxed);
                                    shared.problem(format!(
                                        "server error: {}",
                                        String::from_utf8_lossy(&t)
                                    ));
                                }
                            }
                        }
                    }
                    Ok(Some(Message::Ping(p))) => replies.push((OpCode::Pong, p.to_vec())),
                    Ok(Some(Message::Close(f))) => {
                        let code = f.map_or(1005, |f| f.code.0);
                        replies.push((OpCode::Close, code.to_be_bytes().to_vec()));
                        ended = Some(Ended::Closed(code));
                        break;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        ended = Some(e);
                        break;
                    }
                }
            }
            shared.delivered.fetch_add(n, Ordering::Relaxed);
            shared
                .wire_bytes
                .fetch_add(rd.take_wire_bytes(), Ordering::Relaxed);
        }
        if !replies.is_empty() {
            let mut w = wr.lock().await;
            for (op, payload) in &replies {
                w.push(*op, payload);
            }
            let _ = w.flush().await;
        }
        if let Some(e) = ended {
            break e;
        }
    };
    if !shared.stopping.load(Ordering::Relaxed) {
        shared.ended.fetch_add(1, Ordering::Relaxed);
        shared.problem(format!("a member connection ended: {ended}"));
    }
}

struct Publisher {
    index: usize,
    room: usize,
    writer: Arc<AsyncMutex<Writer>>,
    /// Messages sent so far (the last sequence number used).
    seq: Arc<AtomicU64>,
}

/// Connections set up and joined, readers running.
pub struct World {
    pub kind: ServerKind,
    pub shape: Shape,
    shared: Arc<Shared>,
    members: Vec<(usize, Arc<Mutex<MemberStats>>)>,
    writers: Vec<Arc<AsyncMutex<Writer>>>,
    publishers: Vec<Publisher>,
    readers: JoinSet<()>,
    pub setup_secs: f64,
    retries_used: u32,
    /// Addresses (nodes) the members are spread over.
    nodes: usize,
}

/// How to deal with other work on the machine (see [`World::step_quietly`]).
#[derive(Debug, Clone, Copy)]
pub struct Noise {
    pub max_other_cpu: f64,
    pub retries: u32,
    /// Measurements again in all, over every step of this world.
    pub budget: u32,
    pub quiet_wait: Duration,
}

/// Waits until the machine's CPUs are busy less than `max_busy` (over half a second), or
/// `within` has passed. Returns the last busy figure. Meant for moments when the server
/// and the generator are idle, so what is busy is other work.
pub async fn wait_quiet(max_busy: f64, within: Duration) -> Option<f64> {
    let deadline = Instant::now() + within;
    loop {
        let m = MachineMeter::start();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let busy = m.busy_cpus()?;
        if busy <= max_busy || Instant::now() >= deadline {
            return Some(busy);
        }
    }
}

/// The result of one step, as a JSON object.
pub struct StepResult {
    pub record: Map<String, Value>,
    pub pass: bool,
    pub delivered_per_s: f64,
}

impl World {
    /// Opens R × M connections, joins them to their rooms and starts their readers.
    ///
    /// With several addresses (nodes of one server sharing a broker), each room's members
    /// are spread over them in turn, and so are the publishers: member `slot` of room `r`
    /// connects to address `(slot + r) % addrs.len()`.
    pub async fn build(
        kind: ServerKind,
        addrs: &[SocketAddr],
        shape: Shape,
    ) -> anyhow::Result<World> {
        if addrs.is_empty() {
            bail!("need at least one address");
        }
        if shape.rooms == 0 || shape.members == 0 {
            bail!("need at least one room and one member");
        }
        if shape.publishers > shape.rooms * shape.members {
            bail!("more publishers than connections");
        }
        let began = Instant::now();
        let shared = Arc::new(Shared::new());
        let proto = kind.proto();
        let total = shape.rooms * shape.members;
        let sem = Arc::new(Semaphore::new(shape.connect_concurrency.max(1)));
        let mut setup = JoinSet::new();
        for i in 0..total {
            let room = i % shape.rooms;
            let slot = i / shape.rooms;
            let room_name = format!("{}{room}", shape.room_prefix);
            let addr = addrs[(slot + room) % addrs.len()];
            let source =
                (!shape.sources.is_empty()).then(|| shape.sources[i % shape.sources.len()]);
            let sem = sem.clone();
            let compress = shape.compression;
            setup.spawn(async move {
                let _permit = sem.acquire_owned().await;
                let timeout = Duration::from_secs(15);
                let mut conn = Conn::open_with(addr, source, proto, timeout, compress).await?;
                if compress && !conn.compressed {
                    bail!("the server did not accept permessage-deflate");
                }
                conn.join(&room_name, 1, timeout)
                    .await
                    .with_context(|| format!("join {room_name}"))?;
                anyhow::Ok((i, room, slot, conn))
            });
        }
        let mut conns = Vec::with_capacity(total);
        while let Some(res) = setup.join_next().await {
            match res.context("setup task")? {
                Ok(c) => conns.push(c),
                Err(e) => {
                    setup.abort_all();
                    return Err(e.context("opening member connections"));
                }
            }
        }
        conns.sort_by_key(|c| c.0);
        let mut world = World {
            kind,
            shape: shape.clone(),
            shared: shared.clone(),
            members: Vec::with_capacity(total),
            writers: Vec::with_capacity(total),
            publishers: Vec::new(),
            readers: JoinSet::new(),
            setup_secs: 0.0,
            retries_used: 0,
            nodes: addrs.len(),
        };
        for (i, room, _slot, conn) in conns {
            let (rd, wr) = conn.into_split();
            let wr = Arc::new(AsyncMutex::new(wr));
            let stats = Arc::new(Mutex::new(MemberStats::new(shape.publishers)));
            world
                .readers
                .spawn(read_loop(rd, wr.clone(), stats.clone(), shared.clone()));
            world.members.push((room, stats));
            // Publisher p is member (p / R) of room (p % R): the member with index p.
            if i < shape.publishers {
                world.publishers.push(Publisher {
                    index: i,
                    room,
                    writer: wr.clone(),
                    seq: Arc::new(AtomicU64::new(0)),
                });
            }
            world.writers.push(wr);
        }
        world.setup_secs = began.elapsed().as_secs_f64();
        Ok(world)
    }

    /// Every message goes to each of the M members of its room, its publisher included.
    fn expected_deliveries(&self) -> u64 {
        self.published() * self.shape.members as u64
    }

    fn published(&self) -> u64 {
        self.publishers
            .iter()
            .map(|p| p.seq.load(Ordering::Relaxed))
            .sum()
    }

    /// Messages not (yet) received, summed over members; gaps, duplicates.
    fn missing(&self) -> (u64, u64, u64) {
        let mut missing = 0;
        let mut gaps = 0;
        let mut dups = 0;
        for (room, stats) in &self.members {
            let st = stats.lock().unwrap_or_else(|e| e.into_inner());
            for p in self.publishers.iter().filter(|p| p.room == *room) {
                missing += p
                    .seq
                    .load(Ordering::Relaxed)
                    .saturating_sub(st.distinct[p.index]);
            }
            gaps += st.gaps;
            dups += st.dups;
        }
        (missing, gaps, dups)
    }

    /// [`step`](World::step), measured again (up to `noise.retries` times) when other work
    /// on the machine used more than `noise.max_other_cpu` CPUs during it; each attempt
    /// first waits (up to `noise.quiet_wait`) for the machine to be quiet. A step that lost
    /// messages or connections is not measured again: that is a result, not noise.
    pub async fn step_quietly(
        &mut self,
        rate: f64,
        timing: Timing,
        limits: Limits,
        procs: &Procs,
        noise: Noise,
    ) -> anyhow::Result<StepResult> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let idle_busy = wait_quiet(noise.max_other_cpu, noise.quiet_wait).await;
            let mut res = self.step(rate, timing, limits, procs).await?;
            let other = res
                .record
                .get("other_cpu")
                .and_then(Value::as_f64)
                .unwrap_or(0.0);
            let noisy = other > noise.max_other_cpu;
            let broken = self.shared.ended.load(Ordering::Relaxed) > 0
                || res
                    .record
                    .get("missing")
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
                    > 0;
            // At most `noise.budget` measurements again in all, so that a machine that
            // stays busy cannot stretch a run without bound.
            let out_of_budget = noisy && !broken && attempt <= noise.retries && {
                self.retries_used += 1;
                self.retries_used > noise.budget
            };
            if !noisy || broken || attempt > noise.retries || out_of_budget {
                res.record.insert("attempts".into(), json!(attempt));
                res.record.insert("noisy".into(), json!(noisy));
                if let Some(b) = idle_busy {
                    res.record
                        .insert("busy_before".into(), json!((b * 100.0).round() / 100.0));
                }
                return Ok(res);
            }
            eprintln!(
                "switchboard-bench: other work used {other:.2} CPUs during the step at {} \
                 offered/s; measuring it again",
                stats::si(rate * self.shape.members as f64)
            );
        }
    }

    /// Publishes at `rate` messages per second (all publishers together) for the warm-up
    /// and the measured window, then waits for every message to arrive.
    pub async fn step(
        &mut self,
        rate: f64,
        timing: Timing,
        limits: Limits,
        procs: &Procs,
    ) -> anyhow::Result<StepResult> {
        let shared = &self.shared;
        let per_pub = rate / self.publishers.len().max(1) as f64;
        let now_i = Instant::now();
        let now_n = now_ns();
        let to_ns = |t: Instant| now_n + t.duration_since(now_i).as_nanos() as u64;
        let start = now_i + Duration::from_millis(20);
        let win_start = start + timing.warmup;
        let win_end = win_start + timing.duration;
        shared.win_start.store(to_ns(win_start), Ordering::Relaxed);
        shared.win_end.store(to_ns(win_end), Ordering::Relaxed);
        *shared.hist.lock().unwrap_or_else(|e| e.into_inner()) = new_histogram();
        let errors0 = shared.errors.load(Ordering::Relaxed);
        let (_, gaps0, dups0) = self.missing();

        let mut pubs = JoinSet::new();
        if per_pub > 0.0 {
            let count = self.publishers.len() as f64;
            for (k, p) in self.publishers.iter().enumerate() {
                // Publishers are out of phase, evenly: together they publish at regular
                // intervals instead of all at the same instants (bursts of R × M frames).
                let phase = Duration::from_secs_f64(k as f64 / count / per_pub);
                pubs.spawn(publish(
                    p.writer.clone(),
                    p.seq.clone(),
                    p.index,
                    format!("{}{}", self.shape.room_prefix, p.room),
                    (self.shape.payload, self.shape.text),
                    per_pub,
                    start + phase,
                    win_end,
                ));
            }
        }
        tokio::time::sleep_until(win_start.into()).await;
        let d0 = shared.delivered.load(Ordering::Relaxed);
        let b0 = shared.wire_bytes.load(Ordering::Relaxed);
        let p0 = self.published();
        let gen_cpu = CpuMeter::start(None);
        let machine = MachineMeter::start();
        let node_cpu: Vec<CpuMeter> = procs
            .nodes
            .iter()
            .map(|pid| CpuMeter::start(Some(*pid)))
            .collect();
        let broker_cpu = procs.broker.map(|pid| CpuMeter::start(Some(pid)));
        let srv_sys0 = (!procs.nodes.is_empty())
            .then(|| syscalls_of(&procs.nodes))
            .flatten();
        let info0 = match procs.redis {
            Some(a) => redisinfo::read(a).await,
            None => None,
        };
        let t0 = Instant::now();
        tokio::time::sleep_until(win_end.into()).await;
        let d1 = shared.delivered.load(Ordering::Relaxed);
        let b1 = shared.wire_bytes.load(Ordering::Relaxed);
        let p1 = self.published();
        let window = t0.elapsed().as_secs_f64();
        let gen_share = gen_cpu.share();
        let node_shares: Option<Vec<f64>> = node_cpu.iter().map(CpuMeter::share).collect();
        let broker_share = broker_cpu.and_then(|m| m.share());
        // The server side: every node, and the broker they share.
        let srv_share = if !procs.known() {
            None
        } else {
            match (&node_shares, procs.broker.is_some(), broker_share) {
                (Some(n), false, _) => Some(n.iter().sum::<f64>()),
                (Some(n), true, Some(b)) => Some(n.iter().sum::<f64>() + b),
                _ => None,
            }
            .map(|v| (v * 100.0).round() / 100.0)
        };
        let srv_sys1 = (!procs.nodes.is_empty())
            .then(|| syscalls_of(&procs.nodes))
            .flatten();
        let busy = machine.busy_cpus();
        let info1 = match (procs.redis, &info0) {
            (Some(a), Some(_)) => redisinfo::read(a).await,
            _ => None,
        };
        let mut publish_error = None;
        while let Some(res) = pubs.join_next().await {
            match res {
                Ok(Ok(())) => {}
                Ok(Err(e)) => publish_error = Some(format!("{e:#}")),
                Err(e) => publish_error = Some(e.to_string()),
            }
        }
        // Drain: wait until every message sent has been received (or the drain timeout).
        let drain_began = Instant::now();
        let drained = loop {
            let expected = self.expected_deliveries();
            if shared.delivered.load(Ordering::Relaxed) >= expected {
                break true;
            }
            if drain_began.elapsed() >= timing.drain || shared.ended.load(Ordering::Relaxed) > 0 {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let drain_ms = drain_began.elapsed().as_secs_f64() * 1000.0;
        let (missing, gaps, dups) = self.missing();
        let hist = std::mem::replace(
            &mut *shared.hist.lock().unwrap_or_else(|e| e.into_inner()),
            new_histogram(),
        );
        let members = self.shape.members as f64;
        let offered_deliveries = rate * members;
        let delivered_per_s = (d1 - d0) as f64 / window;
        let published_per_s = (p1 - p0) as f64 / window;
        let errors = shared.errors.load(Ordering::Relaxed) - errors0;
        let ended = shared.ended.load(Ordering::Relaxed);
        let p99_ms = if hist.is_empty() {
            f64::INFINITY
        } else {
            hist.value_at_quantile(0.99) as f64 / 1000.0
        };

        let mut fail = Vec::new();
        if ended > 0 {
            fail.push("connections closed");
        }
        if publish_error.is_some() {
            fail.push("publish failed");
        }
        if errors > 0 {
            fail.push("server errors");
        }
        if !drained || missing > 0 {
            fail.push("loss");
        }
        if gaps > gaps0 || dups > dups0 {
            fail.push("gaps or duplicates");
        }
        if p99_ms > limits.max_p99_ms {
            fail.push("p99 over limit");
        }
        if published_per_s < rate * limits.min_delivered_ratio {
            fail.push("publishers behind schedule");
        }
        if delivered_per_s < offered_deliveries * limits.min_delivered_ratio {
            fail.push("delivered below offered");
        }
        let pass = fail.is_empty();

        let mut r = Map::new();
        r.insert("server".into(), json!(self.kind.name()));
        r.insert("rooms".into(), json!(self.shape.rooms));
        r.insert("members".into(), json!(self.shape.members));
        r.insert("publishers".into(), json!(self.publishers.len()));
        r.insert("payload_bytes".into(), json!(self.shape.payload));
        r.insert(
            "frame_bytes".into(),
            json!(shared.frame_bytes.load(Ordering::Relaxed)),
        );
        r.insert("text_payload".into(), json!(self.shape.text));
        r.insert("compression".into(), json!(self.shape.compression));
        if d1 > d0 {
            // Bytes on the wire per delivery during the window (the WebSocket frames as the
            // server sent them; pings and the like are a rounding error beside them).
            let per = b1.saturating_sub(b0) as f64 / (d1 - d0) as f64;
            r.insert("wire_bytes_per_delivery".into(), json!(per.round()));
        }
        r.insert("offered_publish_per_s".into(), json!(rate.round()));
        r.insert(
            "offered_deliveries_per_s".into(),
            json!(offered_deliveries.round()),
        );
        r.insert("published_per_s".into(), json!(published_per_s.round()));
        r.insert("delivered_per_s".into(), json!(delivered_per_s.round()));
        stats::latency_fields(&hist, "", &mut r);
        r.insert("missing".into(), json!(missing));
        r.insert("gaps".into(), json!(gaps - gaps0));
        r.insert("duplicates".into(), json!(dups - dups0));
        r.insert("errors".into(), json!(errors));
        r.insert("closed_connections".into(), json!(ended));
        r.insert("drained".into(), json!(drained));
        r.insert("drain_ms".into(), json!(drain_ms.round()));
        r.insert("window_s".into(), json!((window * 1000.0).round() / 1000.0));
        r.insert("nodes".into(), json!(self.nodes));
        r.insert("server_cpu".into(), json!(srv_share));
        if procs.nodes.len() > 1 || procs.broker.is_some() {
            r.insert("node_cpu".into(), json!(node_shares));
            r.insert("broker_cpu".into(), json!(broker_share));
        }
        if let (Some(a), Some(b)) = (&info0, &info1) {
            redisinfo::fields(a, b, p1 - p0, &mut r);
        }
        if let (Some((r0, w0)), Some((r1, w1))) = (srv_sys0, srv_sys1) {
            // How well the server batches: messages delivered per write system call.
            let writes = w1.saturating_sub(w0);
            r.insert(
                "server_writes_per_s".into(),
                json!((writes as f64 / window).round()),
            );
            r.insert(
                "server_reads_per_s".into(),
                json!((r1.saturating_sub(r0) as f64 / window).round()),
            );
            if writes > 0 {
                let per = (d1 - d0) as f64 / writes as f64;
                r.insert(
                    "deliveries_per_write".into(),
                    json!((per * 100.0).round() / 100.0),
                );
            }
        }
        r.insert("generator_cpu".into(), json!(gen_share));
        // CPUs busy with anything but the server and the generator (other work on the
        // machine): noise in this measurement.
        let other = match (busy, srv_share, gen_share) {
            (Some(b), Some(s), Some(g)) => Some(((b - s - g).max(0.0) * 100.0).round() / 100.0),
            _ => None,
        };
        r.insert("other_cpu".into(), json!(other));
        r.insert("pass".into(), json!(pass));
        r.insert("fail".into(), json!(fail.join(", ")));
        if let Some(e) = publish_error {
            r.insert("publish_error".into(), json!(e));
        }
        let problems = self.problems();
        if !problems.is_empty() {
            r.insert("problems".into(), json!(problems));
        }
        Ok(StepResult {
            record: r,
            pass,
            delivered_per_s,
        })
    }

    /// Problems noted by readers (first few).
    pub fn problems(&self) -> Vec<String> {
        self.shared
            .problems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Closes every connection (close frame 1000) and stops the readers.
    pub async fn close(mut self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        for w in &self.writers {
            let mut w = w.lock().await;
            let _ = tokio::time::timeout(Duration::from_millis(200), w.close(CloseCode::NORMAL.0))
                .await;
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while self.readers.join_next().await.is_some() {}
        })
        .await;
        self.readers.abort_all();
    }
}

/// One publisher during one step: sends `rate` messages per second from `start` to `stop`,
/// each batch of due messages in one write.
#[allow(clippy::too_many_arguments)]
async fn publish(
    writer: Arc<AsyncMutex<Writer>>,
    seq: Arc<AtomicU64>,
    index: usize,
    room: String,
    (payload, words): (usize, bool),
    rate: f64,
    start: Instant,
    stop: Instant,
) -> anyhow::Result<()> {
    const MAX_BATCH: u64 = 512;
    tokio::time::sleep_until(start.into()).await;
    let proto: Proto = writer.lock().await.proto;
    let mut sent: u64 = 0;
    let mut data = Vec::with_capacity(payload + 64);
    let mut text = Vec::with_capacity(payload + 128);
    loop {
        let now = Instant::now();
        if now >= stop {
            return Ok(());
        }
        let due = (now.duration_since(start).as_secs_f64() * rate).floor() as u64 + 1;
        let n = due.saturating_sub(sent).min(MAX_BATCH);
        if n > 0 {
            let mut w = writer.lock().await;
            let ns = now_ns();
            for _ in 0..n {
                let s = seq.fetch_add(1, Ordering::Relaxed) + 1;
                data.clear();
                marker_data(&mut data, index, s, ns, payload, words);
                text.clear();
                proto.publish_text(&mut text, &room, &data);
                w.push_text(&text);
            }
            w.flush().await.context("publish")?;
            sent += n;
        }
        let next = start + Duration::from_secs_f64(sent as f64 / rate);
        if next > Instant::now() {
            tokio::time::sleep_until(next.min(stop).into()).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
}

/// The table columns for fan-out steps.
pub const COLUMNS: &[&str] = &[
    "server",
    "offered/s",
    "delivered/s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "p99.9 ms",
    "max ms",
    "missing",
    "srv cpu",
    "gen cpu",
    "other cpu",
    "pass",
];

pub fn table_row(r: &Map<String, Value>) -> Vec<String> {
    let v = Value::Object(r.clone());
    let num = |k: &str| r.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    vec![
        stats::cell(&v, "server"),
        stats::si(num("offered_deliveries_per_s")),
        stats::si(num("delivered_per_s")),
        stats::cell(&v, "p50_ms"),
        stats::cell(&v, "p90_ms"),
        stats::cell(&v, "p99_ms"),
        stats::cell(&v, "p999_ms"),
        stats::cell(&v, "max_ms"),
        stats::cell(&v, "missing"),
        stats::cell(&v, "server_cpu"),
        stats::cell(&v, "generator_cpu"),
        stats::cell(&v, "other_cpu"),
        if r.get("pass") == Some(&json!(true)) {
            "yes".into()
        } else {
            format!("no ({})", stats::cell(&v, "fail"))
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_inside_any_envelope() {
        let mut data = Vec::new();
        marker_data(&mut data, 3, 41, 123_456_789, 64, false);
        assert_eq!(data.len(), 64);
        let mut frame = br#"42["message",{"room":"r0","data":""#.to_vec();
        frame.extend_from_slice(&data);
        frame.extend_from_slice(br#""}]"#);
        assert_eq!(parse_marker(&frame), Some((3, 41, 123_456_789)));
        assert_eq!(parse_marker(b"{\"type\":\"presence\"}"), None);
    }

    #[test]
    fn text_padding_is_words_of_the_asked_length_and_differs_per_message() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        marker_data(&mut a, 1, 1, 5, 1024, true);
        marker_data(&mut b, 1, 2, 5, 1024, true);
        assert_eq!((a.len(), b.len()), (1024, 1024));
        assert_ne!(a[16..], b[16..]);
        assert!(a.iter().all(|c| c.is_ascii_graphic() || *c == b' '));
        assert!(!a.contains(&b'"') && !a.contains(&b'\\'));
        assert_eq!(parse_marker(&a), Some((1, 1, 5)));
    }

    #[test]
    fn member_stats_count_gaps_and_duplicates() {
        let mut st = MemberStats::new(2);
        assert!(st.record(1, 1));
        assert!(st.record(1, 3));
        assert!(st.record(1, 3));
        assert!(!st.record(5, 1));
        assert_eq!((st.distinct[1], st.gaps, st.dups), (2, 1, 1));
    }
}
