//! permessage-deflate on the real binary: negotiation, compressed round trips on /echo and
//! /ws, rooms that mix compressing and plain members, compress-once fan-out, and a
//! decompression bomb. Node's `ws` (tests-node/yjs has it) checks interoperability with a
//! client we did not write.

mod common;

use std::path::Path;
use std::process::Command;

use common::{http, no_subprotocol, rss_kib, Peer, Server, STEP};
use flate2::{Compress, Compression, FlushCompress};
use serde_json::{json, Value};
use switchboard_client::switchboard_ws::{encode_frame, Message, OpCode};
use switchboard_client::{Client, Options};
use tokio::time::timeout;

fn compressing() -> Options {
    Options {
        compression: true,
        ..Options::default()
    }
}

fn echo_url(server: &Server) -> String {
    format!("ws://{}/echo", server.addr)
}

async fn connect(url: &str, options: Options) -> Client {
    timeout(STEP, Client::connect_with(url, options))
        .await
        .expect("connect timed out")
        .expect("connect failed")
}

/// The server's deflate counters (GET /healthz with details).
async fn deflate_stats(server: &Server) -> Value {
    let res = http(server.addr, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
    res.json()["compression"].clone()
}

/// A JSON-ish text that compresses well and is well over the threshold.
fn chatty(n: usize) -> String {
    (0..n)
        .map(|i| format!(r#"{{"user":"ada","text":"message number {i}, hello everyone"}}"#))
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test]
async fn echo_round_trips_compressed_and_plain_messages() {
    let server = Server::start(&["--echo-endpoint", "--health-details"]);
    let mut c = connect(
        &echo_url(&server),
        Options {
            compression: true,
            ..no_subprotocol()
        },
    )
    .await;
    let params = c
        .compression
        .expect("the server accepts permessage-deflate");
    assert!(params.server_no_context_takeover && params.client_no_context_takeover);
    let before = deflate_stats(&server).await["messages_deflated"]
        .as_u64()
        .unwrap();
    let long = chatty(50);
    let binary: Vec<u8> = long.bytes().rev().collect();
    c.send_compressed(OpCode::Text, long.as_bytes())
        .await
        .unwrap();
    c.send_compressed(OpCode::Binary, &binary).await.unwrap();
    c.send_text("short, plain").await.unwrap();
    c.send_compressed(OpCode::Text, "é".repeat(10).as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(timeout(STEP, c.recv()).await.unwrap().unwrap());
    }
    assert_eq!(
        got,
        vec![
            Message::Text(long.clone().into()),
            Message::Binary(binary.into()),
            Message::Text("short, plain".into()),
            Message::Text("é".repeat(10).into()),
        ]
    );
    let after = deflate_stats(&server).await;
    assert_eq!(
        after["messages_deflated"].as_u64().unwrap() - before,
        2,
        "the two long echoes went deflated, the short ones plain: {after}"
    );
    assert!(after["bytes_out"].as_u64() < after["bytes_in"].as_u64());
}

/// The `Sec-WebSocket-Extensions` answer to an upgrade of /echo offering `offer`.
async fn answer(server: &Server, offer: &str) -> Option<String> {
    let req = common::upgrade_request(
        "GET",
        &[],
        &format!("Sec-WebSocket-Extensions: {offer}\r\n"),
    )
    .replace("GET /ws ", "GET /echo ");
    let res = http(server.addr, &req).await;
    assert_eq!(res.status, 101, "{offer}");
    res.header("sec-websocket-extensions").map(str::to_owned)
}

#[tokio::test]
async fn offers_are_answered_or_declined_per_rfc_7692() {
    let server = Server::start(&["--echo-endpoint"]);
    assert_eq!(
        answer(&server, "permessage-deflate; client_max_window_bits")
            .await
            .as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    assert_eq!(
        answer(&server, "permessage-deflate; server_max_window_bits=10")
            .await
            .as_deref(),
        Some(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10"
        )
    );
    // A bad first offer is declined and the next one taken; a bad only offer, no compression
    // (and the handshake still succeeds).
    assert_eq!(
        answer(
            &server,
            "permessage-deflate; server_max_window_bits=7, permessage-deflate"
        )
        .await
        .as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    assert_eq!(answer(&server, "permessage-deflate; foo=1").await, None);
    assert_eq!(
        answer(
            &server,
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover"
        )
        .await,
        None
    );
    assert_eq!(answer(&server, "x-webkit-deflate-frame").await, None);
}

#[tokio::test]
async fn compression_can_be_turned_off() {
    let server = Server::start(&["--compression", "false"]);
    let mut peer = Peer::connect_with(&server, compressing()).await;
    assert_eq!(peer.client.compression, None);
    peer.join("chat:off", None).await;
    let long = chatty(30);
    peer.publish("chat:off", json!({ "text": long })).await;
}

/// Members of one room that negotiated compression and members that did not all get the
/// same message; the room also works from the compressing side of the protocol (joins,
/// publishes, replies).
#[tokio::test]
async fn compressing_and_plain_members_share_a_room() {
    let server = Server::start(&["--health-details"]);
    let mut members = Vec::new();
    for i in 0..6 {
        let options = if i % 2 == 0 {
            compressing()
        } else {
            Options::default()
        };
        let mut p = Peer::connect_with(&server, options).await;
        assert_eq!(p.client.compression.is_some(), i % 2 == 0);
        p.join("chat:mixed", Some(json!({ "n": i }))).await;
        members.push(p);
    }
    for p in &mut members {
        p.barrier().await;
        p.take_stash();
    }
    let long = chatty(40);
    let offset = members[0]
        .publish("chat:mixed", json!({ "text": long }))
        .await;
    members[1]
        .publish("chat:mixed", json!({ "text": "hi" }))
        .await;
    for p in &mut members {
        let m = p.next_of("message").await;
        assert_eq!(m["data"]["text"], long);
        assert_eq!(m["offset"], offset);
        let m = p.next_of("message").await;
        assert_eq!(m["data"]["text"], "hi");
    }
}

/// A publish to a room of 100 compressing members is deflated once, not 100 times: the
/// server's counter moves by one.
#[tokio::test]
async fn a_broadcast_to_100_compressing_members_deflates_once() {
    let server = Server::start(&["--health-details", "--max-connections-per-ip", "1000"]);
    let mut members = Vec::new();
    for _ in 0..100 {
        let mut p = Peer::connect_with(&server, compressing()).await;
        // No presence: the joins fan out nothing worth deflating.
        p.join("chat:hundred", None).await;
        members.push(p);
    }
    for p in &mut members {
        p.barrier().await;
        p.take_stash();
    }
    let before = deflate_stats(&server).await;
    let long = chatty(40);
    members[0]
        .publish("chat:hundred", json!({ "text": long }))
        .await;
    for p in &mut members {
        let m = p.next_of("message").await;
        assert_eq!(m["data"]["text"], long);
    }
    let after = deflate_stats(&server).await;
    let deflated = |v: &Value| v["messages_deflated"].as_u64().unwrap();
    assert_eq!(
        deflated(&after) - deflated(&before),
        1,
        "one deflate for 100 members: before {before}, after {after}"
    );
    // ...and that one deflate made the message several times smaller.
    let bytes = |v: &Value, k: &str| v[k].as_u64().unwrap();
    let (inn, out) = (
        bytes(&after, "bytes_in") - bytes(&before, "bytes_in"),
        bytes(&after, "bytes_out") - bytes(&before, "bytes_out"),
    );
    assert!(out * 4 < inn, "{inn} bytes deflated to {out}");
}

/// 100 MB of zeros deflate to about 100 KB; sent as one message to a server whose limit is
/// 1 MiB, the connection closes with 1009 once the inflated size crosses the limit, and
/// the server's memory barely moves.
#[tokio::test]
async fn a_decompression_bomb_closes_1009_without_inflating_it() {
    let server = Server::start(&["--echo-endpoint", "--max-message-size", "1MiB"]);
    let mut c = connect(
        &echo_url(&server),
        Options {
            compression: true,
            ..no_subprotocol()
        },
    )
    .await;
    assert!(c.compression.is_some());
    // Make sure the connection is fully set up before measuring.
    c.send_text("warm up").await.unwrap();
    timeout(STEP, c.recv()).await.unwrap().unwrap();
    let bomb = zeros_deflated(100 << 20);
    assert!(bomb.len() < 200 << 10, "{} bytes", bomb.len());
    let rss_before = rss_kib(server.pid());
    let mask = c.next_mask();
    c.send_raw(&encode_frame(
        true,
        0b100,
        OpCode::Binary,
        &bomb,
        Some(mask),
    ))
    .await
    .unwrap();
    let close = timeout(STEP, c.closed()).await.expect("closed in time");
    assert_eq!(close.map(|f| f.code.0), Some(1009));
    let growth = rss_kib(server.pid()).saturating_sub(rss_before);
    eprintln!(
        "bomb: {} KiB deflated, server RSS grew by {growth} KiB",
        bomb.len() >> 10
    );
    assert!(
        growth < 8 * 1024,
        "the server grew by {growth} KiB inflating a bomb"
    );
}

/// Raw deflate of `n` zeros at the best level, sync-flush trailer stripped.
fn zeros_deflated(n: usize) -> Vec<u8> {
    let chunk = vec![0u8; 1 << 20];
    let mut c = Compress::new_with_window_bits(Compression::best(), false, 15);
    let mut out = Vec::with_capacity(n / 500);
    for i in 0..n.div_ceil(chunk.len()) {
        let flush = if (i + 1) * chunk.len() >= n {
            FlushCompress::Sync
        } else {
            FlushCompress::None
        };
        let before = c.total_in();
        while c.total_in() - before < chunk.len() as u64 {
            let done = (c.total_in() - before) as usize;
            if out.capacity() - out.len() < 1024 {
                out.reserve(64 << 10);
            }
            c.compress_vec(&chunk[done..], &mut out, flush).unwrap();
        }
    }
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(64 << 10);
        }
        let len = out.len();
        c.compress_vec(&[], &mut out, FlushCompress::Sync).unwrap();
        if out.len() == len {
            break;
        }
    }
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

/// Node's `ws` with permessage-deflate on (the client most Node backends use) against /echo
/// and /ws: it negotiates, and messages compressed either way arrive intact.
#[tokio::test]
async fn node_ws_with_compression_interoperates() {
    let Some(node_modules) = node_ws_modules() else {
        return;
    };
    let server = Server::start(&["--echo-endpoint", "--health-details"]);
    let before = deflate_stats(&server).await["messages_deflated"]
        .as_u64()
        .unwrap();
    let script = r#"
        const WebSocket = require("ws");
        const base = process.argv[1];
        setTimeout(() => { console.error("timed out"); process.exit(2); }, 20000).unref();
        const open = (path, protocol) => new Promise((resolve, reject) => {
            const ws = new WebSocket(base + path, protocol ? [protocol] : [], {
                perMessageDeflate: { threshold: 0 },
            });
            // Messages queue up from the start: several may arrive in one read.
            ws.queue = [];
            ws.waiting = [];
            ws.on("message", (data, isBinary) => {
                const m = { data, isBinary };
                if (ws.waiting.length) ws.waiting.shift()(m); else ws.queue.push(m);
            });
            ws.once("open", () => resolve(ws));
            ws.once("error", reject);
        });
        const next = (ws) => ws.queue.length
            ? Promise.resolve(ws.queue.shift())
            : new Promise((resolve) => ws.waiting.push(resolve));
        (async () => {
            const out = {};
            const echo = await open("/echo");
            out.echo_extensions = echo._extensions["permessage-deflate"] ? "permessage-deflate" : null;
            const long = JSON.stringify(Array.from({ length: 200 }, (_, i) => ({ i, text: "hello again" })));
            echo.send(long);
            let m = await next(echo);
            out.echo_text = m.data.toString() === long && !m.isBinary;
            const bytes = Buffer.alloc(5000, 7);
            echo.send(bytes);
            m = await next(echo);
            out.echo_binary = Buffer.compare(m.data, bytes) === 0 && m.isBinary;
            echo.send("tiny");
            m = await next(echo);
            out.echo_tiny = m.data.toString() === "tiny";
            echo.close();

            const ws = await open("/ws", "switchboard.v1");
            const welcome = JSON.parse((await next(ws)).data);
            out.ws_welcome = welcome.type;
            ws.send(JSON.stringify({ type: "join", id: 1, room: "chat:node" }));
            const joined = JSON.parse((await next(ws)).data);
            out.ws_joined = joined.type;
            ws.send(JSON.stringify({ type: "publish", id: 2, room: "chat:node", data: { text: long } }));
            const frames = [JSON.parse((await next(ws)).data), JSON.parse((await next(ws)).data)];
            const msg = frames.find((f) => f.type === "message");
            out.ws_message = msg && msg.data.text === long;
            ws.close();
            console.log(JSON.stringify(out));
        })().catch((e) => { console.error(e); process.exit(1); });
    "#;
    let base = format!("ws://{}", server.addr);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .env("NODE_PATH", node_modules)
            .args(["-e", script, &base])
            .output()
            .expect("run node")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "node failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("node prints JSON");
    assert_eq!(
        got,
        json!({
            "echo_extensions": "permessage-deflate",
            "echo_text": true,
            "echo_binary": true,
            "echo_tiny": true,
            "ws_welcome": "welcome",
            "ws_joined": "joined",
            "ws_message": true,
        })
    );
    let after = deflate_stats(&server).await["messages_deflated"]
        .as_u64()
        .unwrap();
    assert!(after - before >= 3, "the server deflated what it sent node");
}

/// tests-node/yjs/node_modules, installed with `npm ci` if missing; `None` (the test is
/// skipped with a note) only when node itself is not installed.
fn node_ws_modules() -> Option<std::path::PathBuf> {
    if Command::new("node").arg("--version").output().is_err() {
        eprintln!("node is not installed: skipping the Node ws interop test");
        return None;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests-node/yjs");
    let modules = dir.join("node_modules");
    if !modules.join("ws").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("run npm ci in tests-node/yjs");
        assert!(status.success(), "npm ci in tests-node/yjs failed");
    }
    Some(modules)
}

/// Document connections negotiate it too, and the server's first frames arrive.
#[tokio::test]
async fn document_connections_negotiate_compression() {
    let dir = common::temp_dir("compression-doc");
    let server = Server::start(&["--data-dir", dir.to_str().unwrap()]);
    let mut c = connect(
        &format!("ws://{}/yjs/notes", server.addr),
        Options {
            compression: true,
            ..no_subprotocol()
        },
    )
    .await;
    assert!(c.compression.is_some());
    // y-websocket: the server opens with sync step 1 (binary, first byte 0 = sync).
    match timeout(STEP, c.recv()).await.unwrap().unwrap() {
        Message::Binary(b) => assert_eq!(b.first(), Some(&0)),
        other => panic!("expected sync step 1, got {other:?}"),
    }
}
