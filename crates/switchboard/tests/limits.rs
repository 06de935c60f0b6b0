//! Limits: rooms per connection, connections, message size, message rate.

mod common;

use std::time::{Duration, Instant};

use common::{field, offsets, refused, Closed, Peer, Server, STEP};
use serde_json::json;
use switchboard_client::Client;

#[tokio::test(flavor = "multi_thread")]
async fn too_many_rooms() {
    let server = Server::start(&["--max-rooms-per-connection", "3"]);
    let mut a = Peer::connect(&server).await;
    for room in ["a", "b", "c"] {
        a.join(room, None).await;
    }
    let err = a
        .request(json!({"type": "join", "id": 7, "room": "d"}))
        .await;
    assert_eq!(err["type"], "error");
    assert_eq!(err["code"], "too_many_rooms");
    assert_eq!(err["id"], 7);
    // Not joined to d after all.
    let err = a
        .request(json!({"type": "publish", "id": 8, "room": "d", "data": 1}))
        .await;
    assert_eq!(err["code"], "not_joined");
    // Joining a room it is already in is not a new room.
    a.join("b", Some(json!({"x": 1}))).await;
    // Leaving one makes room for another.
    let left = a
        .request(json!({"type": "leave", "id": 9, "room": "c"}))
        .await;
    assert_eq!(left["type"], "left");
    a.join("d", None).await;
    assert_eq!(a.publish("d", json!("in d")).await, 1);
    let err = a
        .request(json!({"type": "join", "id": 10, "room": "e"}))
        .await;
    assert_eq!(err["code"], "too_many_rooms");
    // The limit is per connection.
    let mut b = Peer::connect(&server).await;
    for room in ["a", "b", "c"] {
        b.join(room, None).await;
    }
}

/// Connects until the server accepts again (a freed slot is released asynchronously).
async fn connect_when_free(server: &Server) -> Peer {
    let deadline = Instant::now() + STEP;
    loop {
        match tokio::time::timeout(STEP, Client::connect(&server.url())).await {
            Ok(Ok(client)) => return Peer::from_client(client).await,
            Ok(Err(switchboard_client::Error::Refused { status: 429, .. })) => {}
            other => panic!("unexpected: {:?}", other.map(|r| r.err())),
        }
        assert!(Instant::now() < deadline, "the slot was never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_per_ip_over_the_limit_get_429() {
    let server = Server::start(&["--max-connections-per-ip", "3"]);
    let mut peers = Vec::new();
    for _ in 0..3 {
        peers.push(Peer::connect(&server).await);
    }
    let (status, body) = refused(&server).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"], "too_many_connections");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("address")),
        "{body}"
    );
    // The refused attempts did not take a slot, and the open ones still work.
    let (status, _) = refused(&server).await;
    assert_eq!(status, 429);
    for p in &mut peers {
        p.barrier().await;
    }
    // Closing one frees its slot.
    let mut gone = peers.pop().unwrap();
    gone.client.close(1000, "").await.unwrap();
    assert_eq!(gone.until_closed(STEP).await.1, Closed::Code(1000));
    drop(gone);
    let mut again = connect_when_free(&server).await;
    again.barrier().await;
    // And the limit holds again.
    let (status, _) = refused(&server).await;
    assert_eq!(status, 429);
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_over_the_server_limit_get_429() {
    let server = Server::start(&["--max-connections", "2", "--health-details"]);
    let _a = Peer::connect(&server).await;
    let mut b = Peer::connect(&server).await;
    let (status, body) = refused(&server).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"], "too_many_connections");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("connection limit")),
        "{body}"
    );
    // HTTP requests other than upgrades are not connections in this sense.
    let health = common::http(
        server.addr,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["connections"], 2);
    b.client.close(1000, "").await.unwrap();
    b.until_closed(STEP).await;
    drop(b);
    connect_when_free(&server).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_over_the_size_limit_closes_with_1009() {
    let server = Server::start(&["--max-message-size", "1KiB"]);
    let mut big = Peer::connect(&server).await;
    let mut other = Peer::connect(&server).await;
    big.join("r", None).await;
    other.join("r", None).await;

    // Exactly at the limit is fine.
    let prefix = r#"{"type":"publish","room":"r","data":""#;
    let suffix = r#""}"#;
    let fill = "y".repeat(1024 - prefix.len() - suffix.len());
    let at_limit = format!("{prefix}{fill}{suffix}");
    assert_eq!(at_limit.len(), 1024);
    big.send_text(&at_limit).await;
    let m = other.next_of("message").await;
    assert_eq!(m["data"].as_str().map(str::len), Some(fill.len()));

    // One byte more closes the connection with 1009.
    let over = format!("{prefix}{fill}y{suffix}");
    big.send_text(&over).await;
    let (frames, how) = big.until_closed(STEP).await;
    assert_eq!(how, Closed::Code(1009));
    assert_eq!(offsets(&frames), vec![1], "only the message at the limit");
    // The server ignores what follows an oversized frame, our close reply included,
    // and finishes when the socket goes away.
    let big_conn = big.conn.clone();
    drop(big);
    let line = server.disconnected_line(&big_conn).await;
    assert_eq!(field(&line, "code"), Some("1009"), "{line}");

    // The others are not affected.
    let leave = other
        .next_where("presence leave", |f| f["type"] == "presence")
        .await;
    assert_eq!(leave["event"], "leave");
    assert_eq!(other.publish("r", json!("still fine")).await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limited_then_closed_with_4008() {
    const BURST: i64 = 5;
    const STRIKES: usize = 3;
    let server = Server::start(&[
        "--message-rate",
        "1",
        "--message-burst",
        &BURST.to_string(),
        "--rate-limit-strikes",
        &STRIKES.to_string(),
    ]);
    let mut observer = Peer::connect(&server).await;
    observer.join("r", None).await;
    let mut flood = Peer::connect(&server).await;
    // The join uses one token of the burst.
    flood.join("r", None).await;
    for id in 1..BURST {
        let pong = flood.request(json!({"type": "ping", "id": id})).await;
        assert_eq!(pong, json!({"type": "pong", "id": id}));
    }
    // Over the rate: dropped and answered `rate_limited`.
    flood
        .send(json!({"type": "publish", "id": 100, "room": "r", "data": "dropped"}))
        .await;
    let err = flood.next_of("error").await;
    assert_eq!(err["code"], "rate_limited", "{err}");
    // Keep flooding: closed with 4008 after the strikes.
    for id in 101..(101 + STRIKES as i64 + 2) {
        let _ = flood
            .client
            .send_json(&json!({"type": "ping", "id": id}))
            .await;
    }
    let (frames, how) = flood.until_closed(STEP).await;
    assert_eq!(how, Closed::Code(4008), "{frames:?}");
    // The first one above, then at most STRIKES in all before the close.
    let limited = 1 + frames
        .iter()
        .filter(|f| f["code"] == "rate_limited")
        .count();
    assert!(
        (1..=STRIKES).contains(&limited),
        "{limited} rate_limited errors before the close: {frames:?}"
    );
    assert!(
        frames.iter().all(|f| f["type"] != "pong"),
        "dropped frames are not answered: {frames:?}"
    );
    let line = server.disconnected_line(&flood.conn).await;
    assert_eq!(field(&line, "code"), Some("4008"), "{line}");
    // Nothing the flooder sent while limited reached the room.
    let frames = observer.barrier().await;
    assert!(offsets(&frames).is_empty(), "{frames:?}");
    assert_eq!(observer.publish("r", json!("ok")).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limited_request_is_answered_with_its_id() {
    // The contract: a frame with an `id` is answered with that `id`, errors included.
    let server = Server::start(&["--message-rate", "1", "--message-burst", "1"]);
    let mut a = Peer::connect(&server).await;
    let pong = a.request(json!({"type": "ping", "id": 1})).await;
    assert_eq!(pong["type"], "pong");
    a.send(json!({"type": "ping", "id": 2})).await;
    let err = a.next().await;
    assert_eq!(err["type"], "error");
    assert_eq!(err["code"], "rate_limited");
    assert_eq!(
        err["id"], 2,
        "the rate_limited error carries the request id: {err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fragmented_message_over_the_size_limit_closes_with_1009() {
    use switchboard_client::switchboard_ws::{encode_fragment, OpCode};
    let server = Server::start(&["--max-message-size", "1KiB"]);
    let mut a = Peer::connect(&server).await;
    // Three fragments of 400 bytes: each is small, the message is not.
    let text = format!(
        r#"{{"type":"ping","id":1,"pad":"{}"}}"#,
        "z".repeat(1200 - 31)
    );
    assert_eq!(text.len(), 1200);
    let bytes = text.as_bytes();
    let mut wire = Vec::new();
    for (i, chunk) in bytes.chunks(400).enumerate() {
        let opcode = if i == 0 {
            OpCode::Text
        } else {
            OpCode::Continuation
        };
        let mask = Some(a.client.next_mask());
        wire.extend_from_slice(&encode_fragment(i == 2, opcode, chunk, mask));
    }
    a.client.send_raw(&wire).await.unwrap();
    let (frames, how) = a.until_closed(STEP).await;
    assert_eq!(how, Closed::Code(1009), "{frames:?}");
    assert!(frames.iter().all(|f| f["type"] != "pong"), "{frames:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn strikes_are_forgiven_once_the_client_calms_down() {
    // Burst 2, then 1 token per 500 ms; the third strike in a row would close.
    let server = Server::start(&[
        "--message-rate",
        "2",
        "--message-burst",
        "2",
        "--rate-limit-strikes",
        "3",
    ]);
    let mut a = Peer::connect(&server).await;
    for round in 0..2 {
        for id in 1..=4 {
            a.send(json!({"type": "ping", "id": round * 10 + id})).await;
        }
        let mut pongs = 0;
        let mut limited = 0;
        while pongs + limited < 4 {
            let f = a.next().await;
            match f["type"].as_str() {
                Some("pong") => pongs += 1,
                Some("error") if f["code"] == "rate_limited" => limited += 1,
                _ => panic!("round {round}: unexpected {f}"),
            }
        }
        assert_eq!((pongs, limited), (2, 2), "round {round}");
        // Let the burst allowance refill completely.
        tokio::time::sleep(Duration::from_millis(1300)).await;
    }
    // Four strikes in all, but never three without calming down: still connected.
    let pong = a.request(json!({"type": "ping", "id": 99})).await;
    assert_eq!(pong["type"], "pong");
    assert!(!server.logs().iter().any(|l| l.contains("disconnected")));
}
