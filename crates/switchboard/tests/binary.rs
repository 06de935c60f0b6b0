//! Binary messages on the real binary, as docs/protocol.md ("Binary messages") describes
//! them: the frame layout both ways, one order of offsets with JSON messages, compression,
//! the size and rate limits and permissions, every bad frame, recovery and the `history`
//! request, history on disk and recovery windows across a restart, and the HTTP API.
//!
//! The harness (`common::Peer`) reads a binary frame as its header plus `"binary": true` and
//! the payload in base64 as `data`: the way replies list binary messages.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use common::{fresh_id, http, http_bytes, offsets, temp_dir, Closed, HttpResponse, Peer, Server};
use serde_json::{json, Value};
use switchboard_client::switchboard_ws::Message;
use switchboard_client::Options;
use tokio::time::timeout;

const API_KEY: &str = "api-key-for-the-binary-tests-012345";

const NAMESPACES: &str = "[namespaces.default]\n\
     [namespaces.keep]\nhistory_size = 100\n\
     [namespaces.readonly]\nclient_publish = false\n";

fn data_dir(label: &str) -> PathBuf {
    let dir = temp_dir(label);
    std::fs::write(dir.join("switchboard.toml"), NAMESPACES).expect("write config");
    dir
}

fn args(dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "--config".into(),
        dir.join("switchboard.toml").to_str().expect("utf-8").into(),
        "--data-dir".into(),
        dir.to_str().expect("utf-8").into(),
        "--api-keys".into(),
        API_KEY.into(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn start(dir: &Path, extra: &[&str]) -> Server {
    let a = args(dir, extra);
    Server::start(&a.iter().map(String::as_str).collect::<Vec<_>>())
}

async fn stop(mut server: Server) -> SocketAddr {
    let addr = server.addr;
    server.sigterm();
    let status = server
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("the server exits after SIGTERM");
    assert!(status.success(), "exit after SIGTERM: {status}");
    addr
}

/// A binary frame of the protocol: the header's length (u32 big-endian), the header, the
/// payload.
fn framed(header: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut f = (header.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(header);
    f.extend_from_slice(payload);
    f
}

/// The bytes of a binary message as the harness shows it (`binary: true`, base64 `data`).
fn bytes_of(m: &Value) -> Vec<u8> {
    assert_eq!(m["binary"], true, "a binary message: {m}");
    base64::engine::general_purpose::STANDARD
        .decode(m["data"].as_str().expect("data is base64"))
        .expect("base64")
}

/// Bytes no text encoding would keep: every byte value, NULs, invalid UTF-8.
fn awkward(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 256) as u8).collect()
}

/// Sends a binary publish with a fresh id and returns the reply (`ok` or `error`).
async fn publish_bytes(p: &mut Peer, room: &str, payload: &[u8], extra: Value) -> Value {
    let id = fresh_id();
    let mut header = json!({"type": "publish", "id": id, "room": room});
    for (k, v) in extra.as_object().into_iter().flatten() {
        header[k] = v.clone();
    }
    let frame = framed(header.to_string().as_bytes(), payload);
    send_binary(p, &frame).await;
    p.next_where("the reply to a binary publish", |v| v["id"] == id)
        .await
}

async fn send_binary(p: &mut Peer, frame: &[u8]) {
    timeout(common::STEP, p.client.send_binary(frame))
        .await
        .expect("send timed out")
        .expect("send");
}

async fn api(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> HttpResponse {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEY}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    http_bytes(addr, &req).await
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_and_json_messages_reach_every_member_in_one_order_of_offsets() {
    let dir = data_dir("binary-fanout");
    let server = start(&dir, &[]);
    let mut members = Vec::new();
    for name in ["ada", "grace", "alan"] {
        let mut p = Peer::connect(&server).await;
        p.join("game-1", Some(json!({ "name": name }))).await;
        members.push(p);
    }
    for p in &mut members {
        p.barrier().await;
    }
    let payload = awkward(1000);
    let first = members[0]
        .publish("game-1", json!({"text": "before"}))
        .await;
    let ok = publish_bytes(&mut members[0], "game-1", &payload, json!({})).await;
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(ok["offset"], first + 1);
    let empty = publish_bytes(&mut members[1], "game-1", b"", json!({})).await;
    assert_eq!(empty["offset"], first + 2, "an empty payload is a message");
    let last = members[2].publish("game-1", json!("after")).await;
    assert_eq!(last, first + 3);
    let from = members[0].member(json!({"name": "ada"}));
    for p in &mut members {
        let frames = p.barrier().await;
        let got = common::messages(&frames);
        assert_eq!(offsets(&got), vec![first, first + 1, first + 2, first + 3]);
        assert_eq!(got[0]["data"], json!({"text": "before"}));
        assert!(got[0].get("binary").is_none(), "a JSON message: {}", got[0]);
        let m = &got[1];
        assert_eq!(bytes_of(m), payload, "exactly the bytes published");
        assert_eq!(m["room"], "game-1");
        assert_eq!(m["from"], from);
        assert!(m["ts"].as_u64().unwrap() > 1_700_000_000_000);
        let keys: Vec<&String> = m.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["binary", "data", "from", "offset", "room", "ts", "type"],
            "the header is the message envelope (and the harness's two fields)"
        );
        assert_eq!(bytes_of(&got[2]), b"");
        assert_eq!(got[3]["data"], "after");
    }
}

/// The header on the wire, exactly: a raw client sees the layout of docs/protocol.md.
#[tokio::test]
async fn the_server_frame_is_a_length_prefixed_header_and_the_bytes() {
    let server = Server::start(&[]);
    let mut p = Peer::connect(&server).await;
    p.join("r", None).await;
    let frame = framed(
        br#"{"type":"publish","room":"r","echo":true}"#,
        b"\x00\x01\xfe\xff",
    );
    send_binary(&mut p, &frame).await;
    let raw = loop {
        match timeout(common::STEP, p.client.recv())
            .await
            .unwrap()
            .unwrap()
        {
            Message::Binary(b) => break b,
            Message::Text(t) => panic!("a text frame first: {}", String::from_utf8_lossy(&t)),
            _ => {}
        }
    };
    let len = u32::from_be_bytes(raw[..4].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&raw[4..4 + len]).unwrap();
    assert_eq!(&raw[4 + len..], b"\x00\x01\xfe\xff");
    assert_eq!(
        header,
        json!({"type": "message", "room": "r", "from": p.member(json!({})), "offset": 1, "ts": header["ts"]})
    );
    // No id, no reply: nothing else is queued before the pong.
    assert!(common::messages(&p.barrier().await).is_empty());
}

#[tokio::test]
async fn echo_false_and_idempotency_keys_work_for_bytes() {
    let server = Server::start(&[]);
    let mut a = Peer::connect(&server).await;
    let mut b = Peer::connect(&server).await;
    a.join("r", None).await;
    b.join("r", None).await;
    a.barrier().await;
    let ok = publish_bytes(&mut a, "r", b"once", json!({"echo": false, "key": "k-1"})).await;
    assert_eq!(ok, json!({"type": "ok", "id": ok["id"], "offset": 1}));
    let again = publish_bytes(&mut a, "r", b"once", json!({"key": "k-1"})).await;
    assert_eq!(
        (&again["offset"], &again["duplicate"]),
        (&json!(1), &json!(true))
    );
    assert!(
        common::messages(&a.barrier().await).is_empty(),
        "echo: false"
    );
    let got = common::messages(&b.barrier().await);
    assert_eq!(got.len(), 1, "delivered once: {got:?}");
    assert_eq!(bytes_of(&got[0]), b"once");
}

#[tokio::test]
async fn binary_messages_are_compressed_once_for_compressing_members() {
    let server = Server::start(&["--health-details"]);
    let mut members = Vec::new();
    for i in 0..6 {
        let options = Options {
            compression: i % 2 == 0,
            ..Options::default()
        };
        let mut p = Peer::connect_with(&server, options).await;
        assert_eq!(p.client.compression.is_some(), i % 2 == 0);
        p.join("r", None).await;
        members.push(p);
    }
    for p in &mut members {
        p.barrier().await;
    }
    let stats = || async {
        http(server.addr, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .json()["compression"]
            .clone()
    };
    let before = stats().await;
    // Compressible bytes, well over the threshold.
    let payload: Vec<u8> = b"\x00\x01\x02 binary state of a game \xff\xfe"
        .iter()
        .copied()
        .cycle()
        .take(8000)
        .collect();
    let ok = publish_bytes(&mut members[1], "r", &payload, json!({})).await;
    assert_eq!(ok["type"], "ok");
    for p in &mut members {
        let got = common::messages(&p.barrier().await);
        assert_eq!(bytes_of(&got[0]), payload);
    }
    let after = stats().await;
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap();
    assert_eq!(
        n(&after, "messages_deflated") - n(&before, "messages_deflated"),
        1,
        "deflated once for three compressing members: {before} → {after}"
    );
    let (inn, out) = (
        n(&after, "bytes_in") - n(&before, "bytes_in"),
        n(&after, "bytes_out") - n(&before, "bytes_out"),
    );
    assert!(
        inn > 8000 && out * 10 < inn,
        "{inn} bytes deflated to {out}"
    );
    // A compressing client may send its binary frames compressed too.
    let frame = framed(br#"{"type":"publish","room":"r","id":5}"#, &payload);
    members[0]
        .client
        .send_compressed(switchboard_client::switchboard_ws::OpCode::Binary, &frame)
        .await
        .unwrap();
    let ok = members[0].next_where("ok", |v| v["id"] == 5).await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let got = common::messages(&members[3].barrier().await);
    assert_eq!(bytes_of(&got[0]), payload);
}

#[tokio::test]
async fn max_message_size_rate_limits_and_permissions_apply_to_bytes() {
    let dir = data_dir("binary-limits");
    let server = start(
        &dir,
        &[
            "--max-message-size",
            "2048",
            "--message-rate",
            "1",
            "--message-burst",
            "3",
        ],
    );
    let mut p = Peer::connect(&server).await;
    p.join("r", None).await;
    // Not joined, and a namespace where clients may not publish.
    let not_joined = publish_bytes(&mut p, "other", b"x", json!({})).await;
    assert_eq!(not_joined["code"], "not_joined", "{not_joined}");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    p.join("readonly:r", None).await;
    let forbidden = publish_bytes(&mut p, "readonly:r", b"x", json!({})).await;
    assert_eq!(forbidden["code"], "forbidden", "{forbidden}");
    tokio::time::sleep(Duration::from_millis(3100)).await;
    // Over the rate: dropped, answered with the header's id.
    let mut codes = Vec::new();
    for _ in 0..5 {
        let reply = publish_bytes(&mut p, "r", b"fast", json!({})).await;
        codes.push(match reply["type"].as_str() {
            Some("ok") => json!("ok"),
            _ => reply["code"].clone(),
        });
    }
    assert_eq!(codes.iter().filter(|c| *c == "ok").count(), 3, "{codes:?}");
    assert_eq!(
        codes.iter().filter(|c| *c == "rate_limited").count(),
        2,
        "{codes:?}"
    );
    tokio::time::sleep(Duration::from_millis(3100)).await;
    p.barrier().await;
    // The whole message counts, header included: 2048 bytes fit, 2049 close with 1009.
    let header = br#"{"type":"publish","room":"r"}"#;
    let fits = framed(header, &vec![7u8; 2048 - 4 - header.len()]);
    assert_eq!(fits.len(), 2048);
    send_binary(&mut p, &fits).await;
    let got = common::messages(&p.barrier().await);
    assert_eq!(bytes_of(&got[0]).len(), 2048 - 4 - header.len());
    let over = framed(header, &vec![7u8; 2049 - 4 - header.len()]);
    send_binary(&mut p, &over).await;
    let (_, closed) = p.until_closed(common::STEP).await;
    assert_eq!(closed, Closed::Code(1009));
}

#[tokio::test]
async fn a_rate_limited_binary_frame_is_answered_with_its_id() {
    let server = Server::start(&["--message-rate", "1", "--message-burst", "1"]);
    let mut p = Peer::connect(&server).await;
    p.join("r", None).await; // the burst
    let reply = publish_bytes(&mut p, "r", b"x", json!({})).await;
    assert_eq!(reply["code"], "rate_limited", "{reply}");
}

#[tokio::test]
async fn bad_binary_frames_are_bad_request_and_the_connection_stays() {
    let server = Server::start(&["--message-rate", "1000", "--message-burst", "1000"]);
    let mut p = Peer::connect(&server).await;
    p.join("r", None).await;
    let cases: Vec<(&str, Vec<u8>, Option<i64>)> = vec![
        ("empty", vec![], None),
        ("short", vec![0, 0, 1], None),
        ("length past the end", vec![0, 0, 0, 40, b'{', b'}'], None),
        ("huge length", vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3], None),
        ("not JSON", framed(b"publish r", b"x"), None),
        (
            "not UTF-8",
            framed(b"{\"type\":\"publish\xff\"}", b"x"),
            None,
        ),
        ("an array", framed(b"[1,2]", b"x"), None),
        (
            "no type",
            framed(br#"{"id":11,"room":"r"}"#, b"x"),
            Some(11),
        ),
        (
            "unknown type",
            framed(br#"{"id":12,"type":"dance","room":"r"}"#, b"x"),
            Some(12),
        ),
        (
            "join",
            framed(br#"{"id":13,"type":"join","room":"r"}"#, b""),
            Some(13),
        ),
        ("ping", framed(br#"{"id":14,"type":"ping"}"#, b""), Some(14)),
        (
            "no room",
            framed(br#"{"id":15,"type":"publish"}"#, b"x"),
            Some(15),
        ),
        (
            "data in the header",
            framed(br#"{"id":16,"type":"publish","room":"r","data":1}"#, b"x"),
            Some(16),
        ),
        (
            "bad echo",
            framed(
                br#"{"id":17,"type":"publish","room":"r","echo":"no"}"#,
                b"x",
            ),
            Some(17),
        ),
        (
            "bad key",
            framed(br#"{"id":18,"type":"publish","room":"r","key":""}"#, b"x"),
            Some(18),
        ),
        (
            "bad id",
            framed(br#"{"id":"x","type":"publish","room":"r"}"#, b"x"),
            None,
        ),
    ];
    for (what, frame, id) in cases {
        send_binary(&mut p, &frame).await;
        let err = p.next_where(what, |v| v["type"] == "error").await;
        assert_eq!(err["code"], "bad_request", "{what}: {err}");
        assert_eq!(err.get("id").and_then(Value::as_i64), id, "{what}: {err}");
    }
    let room = publish_bytes(&mut p, "no such room!", b"x", json!({})).await;
    assert_eq!(room["code"], "invalid_room");
    // Still open, nothing was published.
    let frames = p.barrier().await;
    assert!(common::messages(&frames).is_empty(), "{frames:?}");
    assert!(server.logs().iter().all(|l| !l.contains("panicked")));
}

#[tokio::test(flavor = "multi_thread")]
async fn recovery_and_history_return_binary_messages_exactly() {
    let dir = data_dir("binary-recover");
    let server = start(&dir, &[]);
    let mut a = Peer::connect(&server).await;
    let epoch = a.join("r", None).await["epoch"].clone();
    let mut reader = Peer::connect(&server).await;
    reader.join("r", None).await;
    a.publish("r", json!(1)).await;
    reader.barrier().await;
    drop(reader);
    let payloads = [awkward(300), vec![], b"{\"not\":\"json\"}".to_vec()];
    publish_bytes(&mut a, "r", &payloads[0], json!({})).await;
    a.publish("r", json!("text between")).await;
    publish_bytes(&mut a, "r", &payloads[1], json!({})).await;
    publish_bytes(&mut a, "r", &payloads[2], json!({})).await;
    let live: Vec<Value> = common::messages(&a.barrier().await);
    assert_eq!(offsets(&live), vec![1, 2, 3, 4, 5]);

    let mut reader = Peer::connect(&server).await;
    let id = fresh_id();
    let joined = reader
        .request(
            json!({"type": "join", "id": id, "room": "r", "since": {"epoch": epoch, "offset": 1}}),
        )
        .await;
    assert_eq!(joined["recovered"], true, "{joined}");
    let missed = joined["messages"].as_array().unwrap();
    assert_eq!(missed, &live[1..], "listed as the members received them");
    assert_eq!(bytes_of(&missed[0]), payloads[0]);
    assert_eq!(missed[1]["data"], "text between");
    assert!(missed[1].get("binary").is_none());
    assert_eq!(bytes_of(&missed[2]), payloads[1]);
    assert_eq!(
        bytes_of(&missed[3]),
        payloads[2],
        "bytes that look like JSON stay bytes"
    );

    let id = fresh_id();
    let history = reader
        .request(json!({"type": "history", "id": id, "room": "r", "reverse": true, "limit": 3}))
        .await;
    let listed = history["messages"].as_array().unwrap();
    assert_eq!(offsets(listed), vec![5, 4, 3]);
    assert_eq!(listed[0], live[4]);
    assert_eq!(listed[1], live[3]);

    // The HTTP API lists them the same way.
    let res = api(
        server.addr,
        "GET",
        "/api/rooms/r/history",
        "application/json",
        b"",
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["messages"], json!(live));
}

#[tokio::test(flavor = "multi_thread")]
async fn history_on_disk_and_saved_windows_keep_bytes_across_a_restart() {
    let dir = data_dir("binary-restart");
    let server = start(&dir, &[]);
    let mut a = Peer::connect(&server).await;
    let kept_epoch = a.join("keep:r", None).await["epoch"].clone();
    let window_epoch = a.join("w", None).await["epoch"].clone();
    let payload = awkward(5000);
    publish_bytes(&mut a, "keep:r", &payload, json!({"key": "disk-1"})).await;
    a.publish("keep:r", json!({"t": 2})).await;
    publish_bytes(&mut a, "w", &payload[..100], json!({})).await;
    let before: Vec<Value> = common::messages(&a.barrier().await);
    drop(a);
    let addr = stop(server).await;

    let a = args(&dir, &[]);
    let server = Server::start_on(addr, &a.iter().map(String::as_str).collect::<Vec<_>>());
    let mut p = Peer::connect(&server).await;
    let id = fresh_id();
    let history = p
        .request(json!({"type": "history", "id": id, "room": "keep:r"}))
        .await;
    assert_eq!(history["epoch"], kept_epoch);
    let listed = history["messages"].as_array().unwrap();
    assert_eq!(bytes_of(&listed[0]), payload);
    assert_eq!(listed[..], before[..2]);
    // The key survived too.
    p.join("keep:r", None).await;
    let again = publish_bytes(&mut p, "keep:r", &payload, json!({"key": "disk-1"})).await;
    assert_eq!(
        (&again["offset"], &again["duplicate"]),
        (&json!(1), &json!(true))
    );
    // The recovery window, saved at the graceful shutdown.
    let id = fresh_id();
    let joined = p
        .request(json!({"type": "join", "id": id, "room": "w", "since": {"epoch": window_epoch, "offset": 0}}))
        .await;
    assert_eq!(joined["recovered"], true, "{joined}");
    assert_eq!(joined["messages"][0], before[2]);
    assert_eq!(bytes_of(&joined["messages"][0]), &payload[..100]);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_http_api_publishes_bytes() {
    let dir = data_dir("binary-api");
    let server = start(&dir, &[]);
    let mut p = Peer::connect(&server).await;
    p.join("keep:r", None).await;
    let payload = awkward(700);
    let res = api(
        server.addr,
        "POST",
        "/api/publish?room=keep:r&key=api-1",
        "application/octet-stream",
        &payload,
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(
        (&res.json()["offset"], &res.json()["duplicate"]),
        (&json!(1), &json!(false))
    );
    let again = api(
        server.addr,
        "POST",
        "/api/publish?room=keep:r&key=api-1",
        "application/octet-stream",
        &payload,
    )
    .await;
    assert_eq!(again.json()["duplicate"], true);
    let got = common::messages(&p.barrier().await);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(bytes_of(&got[0]), payload);
    assert_eq!(got[0]["from"]["server"], true);
    // A JSON body is still JSON; a binary one needs its room in the query.
    let json_body = api(
        server.addr,
        "POST",
        "/api/publish",
        "application/json",
        br#"{"room":"keep:r","data":"t"}"#,
    )
    .await;
    assert_eq!(json_body.status, 200, "{}", json_body.text());
    for (path, status, code) in [
        ("/api/publish", 400, "bad_request"),
        ("/api/publish?room=bad%20room", 400, "invalid_room"),
        ("/api/publish?room=nope:r", 404, "unknown_namespace"),
        ("/api/publish?room=keep:r&key=", 400, "bad_request"),
    ] {
        let res = api(server.addr, "POST", path, "application/octet-stream", b"x").await;
        assert_eq!(res.status, status, "{path}: {}", res.text());
        assert_eq!(res.json()["error"], code, "{path}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Over Redis: bytes published on one node reach members on another, and a client that
/// recovers on the other node (from the Redis stream) gets them exactly.
#[tokio::test(flavor = "multi_thread")]
async fn binary_messages_cross_nodes_and_recover_from_the_redis_stream() {
    let redis = common::redis();
    let nodes = [
        Server::start(&["--redis-url", &redis.url]),
        Server::start(&["--redis-url", &redis.url]),
    ];
    let mut a = Peer::connect(&nodes[0]).await;
    let mut b = Peer::connect(&nodes[1]).await;
    let epoch = a.join("r", None).await["epoch"].clone();
    b.join("r", None).await;
    let payload = awkward(2000);
    let ok = publish_bytes(&mut a, "r", &payload, json!({})).await;
    assert_eq!(ok["offset"], 1, "{ok}");
    a.publish("r", json!("text")).await;
    // Delivered through Redis pub/sub: they arrive when they arrive.
    let got = [b.next_of("message").await, b.next_of("message").await];
    assert_eq!(bytes_of(&got[0]), payload);
    assert_eq!(got[1]["data"], "text");
    let mut c = Peer::connect(&nodes[1]).await;
    let id = fresh_id();
    let joined = c
        .request(
            json!({"type": "join", "id": id, "room": "r", "since": {"epoch": epoch, "offset": 0}}),
        )
        .await;
    assert_eq!(joined["recovered"], true, "{joined}");
    assert_eq!(bytes_of(&joined["messages"][0]), payload);
    assert_eq!(joined["messages"][0], got[0]);
}
