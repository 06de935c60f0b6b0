//! Test harness: runs the real `switchboard` binary on an ephemeral port and talks to it
//! over real sockets with `switchboard-client`. Every wait has a timeout, so a broken
//! server fails a test instead of hanging it.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchboard_client::switchboard_ws::Message;
use switchboard_client::{Client, Error, Options};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// The longest any single step (connect, one reply, one frame) may take.
pub const STEP: Duration = Duration::from_secs(10);

/// A running server process. Killed on drop if still running.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    exit: Option<ExitStatus>,
}

impl Server {
    /// Starts the server with `--listen 127.0.0.1:0` plus `args`, and waits for its
    /// `listening` log line to learn the port.
    pub fn start(args: &[&str]) -> Server {
        // The stores go to a directory of the test's own unless it names one, so that
        // servers of parallel tests never share (or leave behind) a history file.
        let data_dir;
        let mut all: Vec<&str> = Vec::with_capacity(args.len() + 2);
        if !args.iter().any(|a| a.starts_with("--data-dir")) {
            data_dir = temp_dir("server").to_string_lossy().into_owned();
            all.extend(["--data-dir", data_dir.as_str()]);
        }
        // Presence events at once, as in a quiet room, so that a barrier (ping/pong) sees
        // them; the batching of a busy room is tested on its own (tests/presence.rs).
        if !args.iter().any(|a| a.starts_with("--presence-interval")) {
            all.extend(["--presence-interval", "0"]);
        }
        all.extend_from_slice(args);
        match Server::launch(None, "127.0.0.1:0", &all, Duration::from_secs(30)) {
            Ok(server) => server,
            Err(e) => panic!(
                "the server did not report `listening`; stderr:\n{}",
                e.stderr
            ),
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every stderr line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits until a log line satisfies `pred`, and returns it.
    pub async fn wait_for_log(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(line) = self.logs.lock().unwrap().iter().find(|l| pred(l)) {
                return line.clone();
            }
            if Instant::now() >= deadline {
                panic!(
                    "no log line {what} within {STEP:?}; stderr:\n{}",
                    self.logs().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The `disconnected` log line of connection `conn` (waits for it).
    pub async fn disconnected_line(&self, conn: &str) -> String {
        self.wait_for_log(&format!("`disconnected` for conn={conn}"), |l| {
            l.contains("disconnected") && field(l, "conn") == Some(conn)
        })
        .await
    }

    /// Sends SIGTERM with `kill`.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("cannot run kill");
        assert!(status.success(), "kill -TERM failed: {status}");
    }

    /// Waits for the process to exit; `None` if it is still running after `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exit = Some(status);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exit.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The value of `name=value` in a plain-text log line (values end at a space).
pub fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("{name}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key.as_str()))
        .map(|v| v.trim_matches('"'))
}

static NEXT_ID: AtomicI64 = AtomicI64::new(1_000_000);

/// A request id that no test writes by hand.
pub fn fresh_id() -> i64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// How a connection ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// The server's close frame, with its code.
    Code(u16),
    /// The stream ended (or was reset) without a close frame.
    NoFrame,
}

/// One connected client, with the frames it has read but not yet consumed.
pub struct Peer {
    pub client: Client,
    /// This connection's id, from `welcome`.
    pub conn: String,
    pub welcome: Value,
    stash: VecDeque<Value>,
    /// Events of a batched presence frame not read yet.
    expanded: VecDeque<Value>,
    /// Frames as they come, batches unexpanded.
    pub raw: bool,
    label: String,
}

impl Peer {
    pub async fn connect(server: &Server) -> Peer {
        Peer::connect_with(server, Options::default()).await
    }

    /// Connects and reads `welcome`, which must be the first frame.
    pub async fn connect_with(server: &Server, options: Options) -> Peer {
        let client = timeout(STEP, Client::connect_with(&server.url(), options))
            .await
            .expect("connect timed out")
            .expect("connect failed");
        Peer::from_client(client).await
    }

    /// Wraps a connected client and reads `welcome`, which must be the first frame.
    pub async fn from_client(client: Client) -> Peer {
        let mut peer = Peer {
            client,
            conn: String::new(),
            welcome: Value::Null,
            stash: VecDeque::new(),
            expanded: VecDeque::new(),
            raw: false,
            label: "(connecting)".into(),
        };
        let welcome = peer.next().await;
        assert_eq!(welcome["type"], "welcome", "first frame: {welcome}");
        peer.conn = welcome["conn"]
            .as_str()
            .expect("welcome.conn is a string")
            .to_owned();
        peer.label = peer.conn.clone();
        peer.welcome = welcome;
        peer
    }

    /// The member object others see for this connection.
    pub fn member(&self, presence: Value) -> Value {
        json!({"conn": self.conn, "user": null, "presence": presence})
    }

    pub async fn send(&mut self, frame: Value) {
        timeout(STEP, self.client.send_json(&frame))
            .await
            .unwrap_or_else(|_| panic!("{}: send timed out", self.label))
            .unwrap_or_else(|e| panic!("{}: send {} failed: {e}", self.label, short(&frame)));
    }

    pub async fn send_text(&mut self, text: &str) {
        timeout(STEP, self.client.send_text(text))
            .await
            .unwrap_or_else(|_| panic!("{}: send timed out", self.label))
            .unwrap_or_else(|e| panic!("{}: send failed: {e}", self.label));
    }

    /// Reads one frame from the wire, or `None` after `wait`. Panics if the connection closes.
    /// A batched presence frame (`events`) is read as its events, one `presence` frame each
    /// (with the batch's `member_count`): tests follow the changes, not the batching (which
    /// `tests/presence.rs` checks on raw frames, with [`Peer::raw`]).
    async fn read(&mut self, wait: Duration) -> Option<Value> {
        if let Some(v) = self.expanded.pop_front() {
            return Some(v);
        }
        let raw = self.raw;
        let next = async {
            loop {
                match self.client.recv().await? {
                    Message::Text(b) => return Ok(serde_json::from_slice(&b)?),
                    Message::Binary(b) => return Ok(binary_frame_json(&b)),
                    _ => {}
                }
            }
        };
        let read: Result<Value, Error> = match timeout(wait, next).await {
            Err(_) => return None,
            Ok(r) => r,
        };
        match read {
            Ok(v) if !raw && v["type"] == "presence" && v["events"].is_array() => {
                for e in v["events"].as_array().expect("array") {
                    self.expanded.push_back(json!({
                        "type": "presence",
                        "room": v["room"],
                        "event": e["event"],
                        "member": e["member"],
                        "member_count": v["member_count"],
                    }));
                }
                self.expanded.pop_front()
            }
            Ok(v) => Some(v),
            Err(e) => panic!(
                "{}: connection ended while reading: {e} (stash: {})",
                self.label,
                shorts(self.stash.iter())
            ),
        }
    }

    /// The next frame (stashed ones first).
    pub async fn next(&mut self) -> Value {
        if let Some(v) = self.stash.pop_front() {
            return v;
        }
        match self.read(STEP).await {
            Some(v) => v,
            None => panic!("{}: no frame within {STEP:?}", self.label),
        }
    }

    /// The next frame, or `None` if nothing arrives within `wait`.
    pub async fn try_next(&mut self, wait: Duration) -> Option<Value> {
        if let Some(v) = self.stash.pop_front() {
            return Some(v);
        }
        self.read(wait).await
    }

    /// The first frame (stashed or new) that satisfies `pred`; the others stay stashed, in order.
    pub async fn next_where(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.stash.iter().position(&pred) {
            return self.stash.remove(i).expect("index in range");
        }
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read(left).await {
                Some(v) if pred(&v) => return v,
                Some(v) => self.stash.push_back(v),
                None => panic!(
                    "{}: no {what} within {STEP:?}; got meanwhile: {}",
                    self.label,
                    shorts(self.stash.iter())
                ),
            }
        }
    }

    /// The next frame of type `kind`, leaving others stashed.
    pub async fn next_of(&mut self, kind: &str) -> Value {
        self.next_where(&format!("`{kind}` frame"), |v| v["type"] == kind)
            .await
    }

    /// Sends a request (which must carry an integer `id`) and returns the reply with that
    /// id; frames that arrive before it are stashed.
    pub async fn request(&mut self, frame: Value) -> Value {
        let id = frame["id"].as_i64().expect("request without an integer id");
        self.send(frame.clone()).await;
        self.next_where(&format!("reply to {}", short(&frame)), |v| {
            v["id"].as_i64() == Some(id)
        })
        .await
    }

    /// Sends a `ping` and returns every frame that arrived before its `pong`, stashed ones
    /// included. The server answers in order, so everything it queued for this connection
    /// before handling the ping is in the result.
    pub async fn barrier(&mut self) -> Vec<Value> {
        let id = fresh_id();
        let pong = self.request(json!({"type": "ping", "id": id})).await;
        assert_eq!(pong, json!({"type": "pong", "id": id}));
        self.stash.drain(..).collect()
    }

    /// Frames read but not consumed yet.
    pub fn stashed(&self) -> Vec<Value> {
        self.stash.iter().cloned().collect()
    }

    /// Frames read but not consumed yet (and clears them).
    pub fn take_stash(&mut self) -> Vec<Value> {
        self.stash.drain(..).collect()
    }

    /// Joins `room` and returns `joined`.
    pub async fn join(&mut self, room: &str, presence: Option<Value>) -> Value {
        let id = fresh_id();
        let mut req = json!({"type": "join", "id": id, "room": room});
        if let Some(p) = presence {
            req["presence"] = p;
        }
        let reply = self.request(req).await;
        assert_eq!(
            reply["type"], "joined",
            "{}: join {room}: {reply}",
            self.label
        );
        assert_eq!(reply["room"], room);
        reply
    }

    /// Publishes with an id and returns the offset from `ok`.
    pub async fn publish(&mut self, room: &str, data: Value) -> u64 {
        let id = fresh_id();
        let reply = self
            .request(json!({"type": "publish", "id": id, "room": room, "data": data}))
            .await;
        assert_eq!(reply["type"], "ok", "{}: publish: {reply}", self.label);
        reply["offset"].as_u64().expect("ok.offset")
    }

    /// Reads until the connection ends; returns the frames read (stash first) and how it ended.
    pub async fn until_closed(&mut self, limit: Duration) -> (Vec<Value>, Closed) {
        let mut frames: Vec<Value> = self.stash.drain(..).collect();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match timeout(left, self.client.recv()).await {
                Err(_) => panic!(
                    "{}: still open after {limit:?}; frames: {}",
                    self.label,
                    shorts(frames.iter())
                ),
                Ok(Ok(Message::Text(b))) => {
                    frames.push(serde_json::from_slice(&b).expect("text frame is JSON"))
                }
                Ok(Ok(Message::Binary(b))) => frames.push(binary_frame_json(&b)),
                Ok(Ok(_)) => {}
                Ok(Err(Error::Closed(Some(f)))) => return (frames, Closed::Code(f.code.0)),
                Ok(Err(Error::Closed(None))) | Ok(Err(Error::Io(_))) => {
                    return (frames, Closed::NoFrame)
                }
                Ok(Err(e)) => panic!("{}: unexpected error: {e}", self.label),
            }
        }
    }
}

/// A binary frame of the protocol (docs/protocol.md, "Binary messages") as the tests read
/// it: its JSON header with `"binary": true` and the payload in base64 as `data` — the way
/// replies list binary messages, so a live one compares equal to its listed self. Panics on
/// a frame that does not follow the layout, or whose header has either field itself.
pub fn binary_frame_json(frame: &[u8]) -> Value {
    use base64::Engine as _;
    let len = u32::from_be_bytes(frame[..4].try_into().expect("4 bytes of header length"));
    let (header, payload) = frame[4..].split_at(len as usize);
    let mut v: Value = serde_json::from_slice(header).expect("the header is JSON");
    let map = v.as_object_mut().expect("the header is an object");
    assert!(
        !map.contains_key("binary") && !map.contains_key("data"),
        "{map:?}"
    );
    map.insert("binary".into(), json!(true));
    let data = base64::engine::general_purpose::STANDARD.encode(payload);
    map.insert("data".into(), json!(data));
    v
}

/// A frame for an error message, cut to a readable length.
pub fn short(frame: &Value) -> String {
    let mut s = frame.to_string();
    if s.len() > 300 {
        let mut end = 300;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// Frames for an error message: the last 20, each cut short.
pub fn shorts<'a>(frames: impl ExactSizeIterator<Item = &'a Value>) -> String {
    let n = frames.len();
    let shown: Vec<String> = frames.skip(n.saturating_sub(20)).map(short).collect();
    format!("{n} frames, last: [{}]", shown.join(", "))
}

/// The `message` frames among `frames`.
pub fn messages(frames: &[Value]) -> Vec<Value> {
    frames
        .iter()
        .filter(|v| v["type"] == "message")
        .cloned()
        .collect()
}

/// The `offset`s of the `message` frames among `frames`.
pub fn offsets(frames: &[Value]) -> Vec<u64> {
    messages(frames)
        .iter()
        .map(|m| m["offset"].as_u64().expect("message.offset"))
        .collect()
}

/// Connects with the default options and expects a refusal; returns (status, body).
pub async fn refused(server: &Server) -> (u16, Value) {
    match timeout(STEP, Client::connect(&server.url()))
        .await
        .expect("connect timed out")
    {
        Err(Error::Refused { status, body }) => {
            let body = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("refusal body is not JSON ({e}): {body:?}"));
            (status, body)
        }
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected an HTTP refusal, the connection was accepted"),
    }
}

/// A raw HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }
}

/// Sends `request` as it is on a fresh TCP connection and reads one response.
pub async fn http(addr: SocketAddr, request: &str) -> HttpResponse {
    http_bytes(addr, request.as_bytes()).await
}

/// [`http`] with a request that need not be text (a binary body).
pub async fn http_bytes(addr: SocketAddr, request: &[u8]) -> HttpResponse {
    timeout(STEP, async {
        let mut s = TcpStream::connect(addr).await.expect("tcp connect");
        s.write_all(request).await.expect("write request");
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.expect("read response");
            assert!(n > 0, "connection closed before a response head: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let mut body = buf[head_end..].to_vec();
        let len = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse::<usize>().expect("content-length"));
        match len {
            // After 101 the connection speaks WebSocket: no HTTP body; HEAD has none either.
            _ if status == 101 || request.starts_with(b"HEAD ") => body.clear(),
            Some(len) => {
                while body.len() < len {
                    let mut chunk = [0u8; 4096];
                    let n = s.read(&mut chunk).await.expect("read body");
                    assert!(n > 0, "connection closed in the body");
                    body.extend_from_slice(&chunk[..n]);
                }
                body.truncate(len);
            }
            None => {
                s.read_to_end(&mut body).await.expect("read body");
            }
        }
        HttpResponse {
            status,
            headers,
            body,
        }
    })
    .await
    .expect("HTTP exchange timed out")
}

/// A WebSocket upgrade request for `/ws` with the given extra header lines (each ending
/// in `\r\n`), without the headers named in `omit`.
pub fn upgrade_request(method: &str, omit: &[&str], extra: &str) -> String {
    let mut req = format!("{method} /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    let standard = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ];
    for (name, value) in standard {
        if !omit.iter().any(|o| o.eq_ignore_ascii_case(name)) {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    req.push_str(extra);
    req.push_str("\r\n");
    req
}

static NEXT_DIR: AtomicI64 = AtomicI64::new(0);

/// A fresh, empty directory for one test (a server's `--data-dir`): the system temp dir,
/// this process id and a counter, so parallel tests and test binaries never share one.
pub fn temp_dir(label: &str) -> std::path::PathBuf {
    let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "switchboard-test-{label}-{}-{n}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Client options for endpoints that speak no subprotocol (`/yjs/{doc}`, `/echo`).
pub fn no_subprotocol() -> Options {
    Options {
        protocols: Vec::new(),
        ..Options::default()
    }
}

/// Resident memory of process `pid` in KiB (VmRSS in /proc/PID/status).
pub fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS:")
}

/// A `kB` field of /proc/PID/status, e.g. "VmRSS:" or "VmHWM:".
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

// Launching the binary in ways `Server::start` does not: on a given address (a restart on
// the port of a server that was killed), under a shell prefix (`ulimit -f`), or expecting
// it to fail at start. Used by tests/history.rs.

/// Why a launch did not reach `listening`: its exit status (`None`: still running at the
/// deadline, then killed) and its stderr.
#[derive(Debug)]
pub struct NotListening {
    pub status: Option<ExitStatus>,
    pub stderr: String,
}

impl Server {
    /// Starts the server with exactly `--listen listen`, the log flags of [`Server::start`],
    /// and `args`; run directly, or as `bash -c '<shell_prefix>; exec BIN ARGS…'` when
    /// `shell_prefix` is given (the shell execs, so the process id is the server's).
    /// Waits up to `limit` for `listening`.
    pub fn launch(
        shell_prefix: Option<&str>,
        listen: &str,
        args: &[&str],
        limit: Duration,
    ) -> Result<Server, NotListening> {
        let bin = env!("CARGO_BIN_EXE_switchboard");
        let mut cmd = match shell_prefix {
            Some(prefix) => {
                let mut cmd = Command::new("bash");
                cmd.args(["-c", &format!("{prefix}\nexec \"$0\" \"$@\""), bin]);
                cmd
            }
            None => Command::new(bin),
        };
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SWITCHBOARD_") {
                cmd.env_remove(key);
            }
        }
        cmd.args(["--listen", listen, "--log", "info", "--log-format", "text"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("cannot start the switchboard binary");
        let stderr = child.stderr.take().expect("piped stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
        let reader = {
            let logs = logs.clone();
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                let mut reader = BufReader::new(stderr);
                let mut raw = Vec::new();
                loop {
                    raw.clear();
                    match reader.read_until(b'\n', &mut raw) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let line = String::from_utf8_lossy(&raw).trim_end().to_owned();
                    if line.contains("listening") {
                        if let Some(addr) = field(&line, "addr").and_then(|a| a.parse().ok()) {
                            if let Some(tx) = tx.take() {
                                let _ = tx.send(addr);
                            }
                        }
                    }
                    logs.lock().unwrap().push(line);
                }
            })
        };
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(addr) = rx.recv_timeout(Duration::from_millis(20)) {
                return Ok(Server {
                    child,
                    addr,
                    logs,
                    exit: None,
                });
            }
            let status = child.try_wait().expect("try_wait");
            if status.is_some() || Instant::now() >= deadline {
                if status.is_none() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                let _ = reader.join();
                let stderr = logs.lock().unwrap().join("\n");
                return Err(NotListening { status, stderr });
            }
        }
    }

    /// Starts the server on `addr` (e.g. the address of a server that was just killed) with
    /// `args`, retrying for a few seconds while the address is still in use.
    pub fn start_on(addr: SocketAddr, args: &[&str]) -> Server {
        let deadline = Instant::now() + STEP;
        loop {
            match Server::launch(None, &addr.to_string(), args, Duration::from_secs(30)) {
                Ok(server) => return server,
                Err(e) if Instant::now() < deadline && e.stderr.contains("in use") => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => panic!(
                    "the server did not report `listening` on {addr} (exit {:?}); stderr:\n{}",
                    e.status, e.stderr
                ),
            }
        }
    }

    /// Kills the process with SIGKILL (no shutdown of any kind) and reaps it.
    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        if let Ok(status) = self.child.wait() {
            self.exit = Some(status);
        }
    }
}

/// A `redis-server` of the test's own on a free port; stopped when dropped.
pub struct Redis {
    pub child: Child,
    pub url: String,
    port: u16,
    /// Its options (persistence), for a restart on the same port.
    args: Vec<String>,
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Redis {
    /// Starts `redis-server` with `args` on a free port and waits until it takes connections.
    pub fn start(args: &[&str]) -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        Redis {
            child: spawn_redis(port, &args),
            url: format!("redis://127.0.0.1:{port}/"),
            port,
            args,
        }
    }

    /// Kills the server (SIGKILL: nothing is flushed that its options do not already write).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port with the same options.
    pub fn start_again(&mut self) {
        self.child = spawn_redis(self.port, &self.args);
    }
}

fn spawn_redis(port: u16, args: &[String]) -> Child {
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (apt-get install redis-server)");
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("redis-server did not start on port {port}");
}

/// A Redis that keeps nothing on disk.
pub fn redis() -> Redis {
    Redis::start(&["--save", "", "--appendonly", "no"])
}
