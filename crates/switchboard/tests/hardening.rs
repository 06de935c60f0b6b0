//! Inputs that respect every message limit but would make the server spend what it has no
//! budget for, or lock honest users out (issue "Hardening"). Each test plays the attacker
//! and an honest client side by side, and asserts what the honest one sees.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use bytes::BytesMut;
use common::{fresh_id, messages, upgrade_request, Peer, Server, STEP};
use serde_json::{json, Value};
use switchboard_client::switchboard_ws::{Decoder, Frame, Message, OpCode, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Presence over `max_presence_size` is refused, on join and on update, and changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn oversized_presence_is_refused_with_too_large() {
    let server = Server::start(&[]);
    let mut a = Peer::connect(&server).await;
    let mut b = Peer::connect(&server).await;
    b.join("r", None).await;
    let big = json!({"name": "x".repeat(60 * 1024)});
    let id = fresh_id();
    let err = a
        .request(json!({"type": "join", "id": id, "room": "r", "presence": big}))
        .await;
    assert_eq!(err["type"], "error", "{err}");
    assert_eq!(err["code"], "too_large", "{err}");
    a.join("r", Some(json!({"name": "ada"}))).await;
    let id = fresh_id();
    let err = a
        .request(json!({"type": "presence", "id": id, "room": "r", "presence": big}))
        .await;
    assert_eq!(err["code"], "too_large", "{err}");
    // b saw ada join and nothing else: no 60 KB update went out.
    let frames = b.barrier().await;
    let presence: Vec<&Value> = frames.iter().filter(|f| f["type"] == "presence").collect();
    assert_eq!(presence.len(), 1, "{frames:?}");
    assert_eq!(presence[0]["member"]["presence"], json!({"name": "ada"}));
}

/// Finding: 20 members with 60 KB presence each made every later `joined` bigger than the
/// outbound queue, so every newcomer was closed with 4009 before it got anything. Even where
/// an operator allows presence that large, a `joined` reply carries only as many members as
/// fit a quarter of the queue, and the rest are paged.
#[tokio::test(flavor = "multi_thread")]
async fn large_presence_never_locks_newcomers_out_of_a_room() {
    let server = Server::start(&["--max-presence-size", "64KiB"]);
    let mut members = Vec::new();
    for i in 0..20 {
        let mut p = Peer::connect(&server).await;
        p.join("big", Some(json!({"i": i, "blob": "x".repeat(60 * 1024)})))
            .await;
        members.push(p);
    }
    // The newcomer is answered, not closed, and can list every member page by page.
    let mut newcomer = Peer::connect(&server).await;
    let joined = newcomer.join("big", Some(json!({"i": 20}))).await;
    assert_eq!(joined["member_count"], 21, "{}", common::short(&joined));
    let first = joined["members"].as_array().expect("members").len();
    assert!((1..21).contains(&first), "first page has {first} members");
    let listed = all_members(&mut newcomer, "big", &joined).await;
    let mut seen: Vec<i64> = listed
        .iter()
        .map(|m| m["presence"]["i"].as_i64().expect("presence.i"))
        .collect();
    assert_eq!(
        seen,
        (0..=20).collect::<Vec<_>>(),
        "in join order, each once"
    );
    seen.dedup();
    assert_eq!(seen.len(), 21);
    assert_eq!(newcomer.publish("big", json!("hello")).await, 1);
}

/// Follows `cursor`s from a `joined` reply through `members` pages; returns every member.
async fn all_members(peer: &mut Peer, room: &str, joined: &Value) -> Vec<Value> {
    let mut listed: Vec<Value> = joined["members"].as_array().cloned().unwrap_or_default();
    let mut cursor = joined.get("members_cursor").cloned().unwrap_or(Value::Null);
    let mut pages = 0;
    while !cursor.is_null() {
        pages += 1;
        assert!(pages < 1000, "cursor loop");
        let id = fresh_id();
        let page = peer
            .request(json!({"type": "members", "id": id, "room": room, "cursor": cursor}))
            .await;
        assert_eq!(page["type"], "members", "{}", common::short(&page));
        listed.extend(page["members"].as_array().cloned().unwrap_or_default());
        cursor = page["cursor"].clone();
    }
    listed
}

/// Finding: joining grew with the room (the whole member list, sorted, in every `joined`;
/// a 140 KB `members` reply). Replies now hold one page, and pages list everyone once.
#[tokio::test(flavor = "multi_thread")]
async fn member_lists_are_paged_in_join_order() {
    let server = Server::start(&["--members-page-size", "10"]);
    let mut peers = Vec::new();
    for i in 0..35 {
        let mut p = Peer::connect(&server).await;
        p.join("hall", Some(json!({"i": i}))).await;
        peers.push(p);
    }
    // The 21st leaves: paging skips it, the count follows.
    let gone = peers.remove(20);
    drop(gone);
    let last = peers.last_mut().expect("peers");
    last.next_where("leave", |f| {
        f["type"] == "presence" && f["event"] == "leave"
    })
    .await;
    let mut newcomer = Peer::connect(&server).await;
    let joined = newcomer.join("hall", Some(json!({"i": 35}))).await;
    assert_eq!(joined["members"].as_array().map(Vec::len), Some(10));
    assert_eq!(joined["member_count"], 35);
    assert!(joined["members_cursor"].is_string(), "{joined}");
    let listed = all_members(&mut newcomer, "hall", &joined).await;
    let order: Vec<i64> = listed
        .iter()
        .map(|m| m["presence"]["i"].as_i64().expect("i"))
        .collect();
    let expected: Vec<i64> = (0..=35).filter(|i| *i != 20).collect();
    assert_eq!(order, expected);

    // A smaller page on request; the last page says there is no more.
    let id = fresh_id();
    let page = newcomer
        .request(json!({"type": "members", "id": id, "room": "hall", "limit": 3}))
        .await;
    assert_eq!(page["members"].as_array().map(Vec::len), Some(3), "{page}");
    assert_eq!(page["member_count"], 35);
    let id = fresh_id();
    let tail = newcomer
        .request(json!({"type": "members", "id": id, "room": "hall", "cursor": "999999"}))
        .await;
    assert_eq!(tail["members"], json!([]));
    assert!(tail["cursor"].is_null(), "{tail}");

    // Bad cursors and page sizes get bad_request with the id.
    for bad in [
        json!({"cursor": "abc"}),
        json!({"cursor": 5}),
        json!({"cursor": ""}),
        json!({"limit": 0}),
        json!({"limit": 11}),
        json!({"limit": 1_000_000}),
        json!({"limit": "3"}),
    ] {
        let id = fresh_id();
        let mut req = json!({"type": "members", "id": id, "room": "hall"});
        for (k, v) in bad.as_object().expect("object") {
            req[k] = v.clone();
        }
        let err = newcomer.request(req).await;
        assert_eq!(err["type"], "error", "{bad}: {err}");
        assert_eq!(err["code"], "bad_request", "{bad}: {err}");
    }
}

/// Finding: any JSON was relayed, and JSON nested 30,000 deep or with lone surrogates or
/// `1e400` crashes or is refused by the members' parsers (browsers, Python). It is refused
/// with bad_request and nobody receives it.
#[tokio::test(flavor = "multi_thread")]
async fn json_other_clients_cannot_parse_is_not_relayed() {
    let server = Server::start(&[
        "--max-message-size",
        "256KiB",
        "--max-presence-size",
        "128KiB",
    ]);
    let mut bad = Peer::connect(&server).await;
    let mut observer = Peer::connect(&server).await;
    bad.join("r", None).await;
    observer.join("r", None).await;
    let deep = format!("{}1{}", "[".repeat(30_000), "]".repeat(30_000));
    let just_too_deep = format!("{}1{}", "{\"a\":".repeat(33), "}".repeat(33));
    // 32 levels in all: the object around it is one.
    let fine_depth = format!("{}{}", "[".repeat(31), "]".repeat(31));
    let cases = [
        deep.as_str(),
        just_too_deep.as_str(),
        r#""\ud800""#,
        r#"{"text":"\udfff lone low"}"#,
        r#"{"n":1e400}"#,
        r#"[-1.5e309]"#,
    ];
    for (i, data) in cases.iter().enumerate() {
        let id = fresh_id();
        bad.send_text(&format!(
            r#"{{"type":"publish","id":{id},"room":"r","data":{data}}}"#
        ))
        .await;
        let err = bad.next_where("error", |f| f["id"] == id).await;
        assert_eq!(err["code"], "bad_request", "case {i}: {err}");
        let id = fresh_id();
        bad.send_text(&format!(
            r#"{{"type":"presence","id":{id},"room":"r","presence":{{"x":{data}}}}}"#
        ))
        .await;
        let err = bad.next_where("error", |f| f["id"] == id).await;
        assert_eq!(err["code"], "bad_request", "presence case {i}: {err}");
    }
    // What every parser takes still goes through, surrogate pairs and 32 levels included.
    let id = fresh_id();
    bad.send_text(&format!(
        r#"{{"type":"publish","id":{id},"room":"r","data":{{"t":"\ud83d\ude00","d":{fine_depth},"n":1e308}}}}"#
    ))
    .await;
    let ok = bad.next_where("ok", |f| f["id"] == id).await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let frames = observer.barrier().await;
    let got = messages(&frames);
    assert_eq!(got.len(), 1, "only the valid message: {frames:?}");
    assert_eq!(got[0]["data"]["t"], "😀");
    assert!(frames.iter().all(|f| f["type"] != "presence"), "{frames:?}");
}

/// Finding: a frame sent in the same packet as the handshake was not processed until more
/// bytes arrived (on `/ws`, `/echo` and `/yjs`). Here nothing else arrives: the answer must
/// come anyway.
#[tokio::test(flavor = "multi_thread")]
async fn a_frame_in_the_handshake_packet_is_answered() {
    let dir = common::temp_dir("leftover");
    let server = Server::start(&[
        "--echo-endpoint",
        "--data-dir",
        dir.to_str().expect("utf-8"),
    ]);
    // /ws: a ping comes back as a pong (after welcome).
    let ping = Frame::masked(OpCode::Text, br#"{"type":"ping","id":77}"#, [1, 2, 3, 4]);
    let got = first_answers(&server, "/ws", "Sec-WebSocket-Protocol: switchboard.v1\r\n", &ping, |m| {
        matches!(m, Message::Text(t) if serde_json::from_slice::<Value>(t).is_ok_and(|v| v["type"] == "pong"))
    })
    .await;
    let Message::Text(first) = &got[0] else {
        panic!("{got:?}")
    };
    assert_eq!(
        serde_json::from_slice::<Value>(first).expect("json")["type"],
        "welcome"
    );
    // /echo: the text comes back.
    let hello = Frame::masked(OpCode::Text, b"hello", [5, 6, 7, 8]);
    first_answers(
        &server,
        "/echo",
        "",
        &hello,
        |m| matches!(m, Message::Text(t) if &t[..] == b"hello"),
    )
    .await;
    // /yjs: a sync step 1 with an empty state vector is answered with sync step 2.
    let step1 = Frame::masked(OpCode::Binary, &[0, 0, 1, 0], [9, 9, 9, 9]);
    first_answers(
        &server,
        "/yjs/leftover",
        "",
        &step1,
        |m| matches!(m, Message::Binary(b) if b.starts_with(&[0, 1])),
    )
    .await;
}

/// Sends an upgrade request for `path` and `frame` in one write, then reads frames until
/// `done` matches one (within 3 s, sending nothing more); returns every frame read.
async fn first_answers(
    server: &Server,
    path: &str,
    extra: &str,
    frame: &Frame,
    done: impl Fn(&Message) -> bool,
) -> Vec<Message> {
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    let mut packet = upgrade_request("GET", &[], extra)
        .replacen("GET /ws ", &format!("GET {path} "), 1)
        .into_bytes();
    packet.extend_from_slice(frame.as_bytes());
    s.write_all(&packet).await.expect("write");
    let mut buf = BytesMut::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(STEP, s.read_buf(&mut buf))
            .await
            .expect("response head")
            .expect("read");
        assert!(n > 0, "closed before the response");
    };
    assert!(
        buf.starts_with(b"HTTP/1.1 101"),
        "{path}: {:?}",
        &buf[..head_end]
    );
    let _ = buf.split_to(head_end);
    let mut decoder = Decoder::new(Role::Client, 1 << 24);
    let mut got = Vec::new();
    let answered = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            while let Some(m) = decoder.decode(&mut buf).expect("server framing") {
                let finished = done(&m);
                got.push(m);
                if finished {
                    return;
                }
            }
            let n = s.read_buf(&mut buf).await.expect("read");
            assert!(n > 0, "{path}: closed");
        }
    })
    .await;
    assert!(
        answered.is_ok(),
        "{path}: no answer to the frame sent with the handshake (got {got:?})"
    );
    got
}

/// A client that keeps sending (so the heartbeat counts it alive) but never reads would
/// hold whatever is queued for it. Once its socket has taken nothing for `write_timeout`,
/// it is closed as a slow consumer; a reading member of the same room gets everything.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_reads_is_closed_after_the_write_timeout() {
    // A timeout a loaded machine does not reach while the reader reads (a debug build
    // parsing 24 MiB of JSON): only the client that never reads gets there.
    let server = Server::start(&[
        "--write-timeout",
        "3s",
        "--max-message-size",
        "1MiB",
        "--max-outbound-queue",
        "64MiB",
    ]);
    let mut stalled = Peer::connect(&server).await;
    stalled.join("r", None).await;
    let mut reader = Peer::connect(&server).await;
    reader.join("r", None).await;
    let conn = stalled.conn.clone();
    // 24 MiB for each: more than loopback's socket buffers hold, less than the queue.
    let blob = "y".repeat(1000 * 1000);
    const COUNT: usize = 24;
    let publisher = tokio::spawn({
        let url = server.url();
        let blob = blob.clone();
        async move {
            let client = switchboard_client::Client::connect(&url)
                .await
                .expect("connect");
            let mut p = Peer::from_client(client).await;
            p.join("r", None).await;
            for i in 0..COUNT {
                // Without its own copies: the publisher does not read them here either.
                p.send(json!({"type": "publish", "room": "r", "echo": false, "data": {"i": i, "blob": blob}}))
                    .await;
            }
            p.barrier().await;
            p
        }
    });
    // The stalled client keeps sending pings and never reads.
    let keep_sending = tokio::spawn(async move {
        for _ in 0..150 {
            if stalled
                .client
                .send_text(r#"{"type":"ping"}"#)
                .await
                .is_err()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stalled
    });
    let mut got = HashSet::new();
    while got.len() < COUNT {
        let f = reader.next_of("message").await;
        got.insert(f["data"]["i"].as_u64().expect("i"));
    }
    let line = server.disconnected_line(&conn).await;
    assert_eq!(common::field(&line, "code"), Some("4009"), "{line}");
    assert!(line.contains("not reading"), "{line}");
    let _ = publisher.await;
    let _ = keep_sending.await;
}
