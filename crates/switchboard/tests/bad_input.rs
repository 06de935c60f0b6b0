//! Bad input gets its documented answer and harms no one else.

mod common;

use std::time::Duration;

use common::{messages, offsets, Closed, Peer, Server, STEP};
use serde_json::{json, Value};
use switchboard_client::switchboard_ws::{Frame, OpCode};

/// One bad frame and what the server must answer: (frame, code, id echoed).
fn cases() -> Vec<(String, &'static str, Option<i64>)> {
    let long_room = "a".repeat(129);
    let mut v: Vec<(String, &'static str, Option<i64>)> = vec![
        ("{not json".into(), "bad_json", None),
        ("".into(), "bad_json", None),
        (r#"{"type":"ping","id":1"#.into(), "bad_json", None),
        ("[1,2]".into(), "bad_request", None),
        (r#""hello""#.into(), "bad_request", None),
        ("42".into(), "bad_request", None),
        (r#"{"id":1}"#.into(), "bad_request", Some(1)),
        (r#"{"id":2,"type":7}"#.into(), "bad_request", Some(2)),
        (r#"{"id":3,"type":"dance"}"#.into(), "unknown_type", Some(3)),
        (r#"{"type":"dance"}"#.into(), "unknown_type", None),
        (r#"{"id":4,"type":"join"}"#.into(), "bad_request", Some(4)),
        (
            r#"{"id":5,"type":"join","room":""}"#.into(),
            "invalid_room",
            Some(5),
        ),
        (
            r#"{"id":6,"type":"join","room":"a b"}"#.into(),
            "invalid_room",
            Some(6),
        ),
        (
            r#"{"id":7,"type":"join","room":"<script>"}"#.into(),
            "invalid_room",
            Some(7),
        ),
        (
            r#"{"id":8,"type":"join","room":"caf\u00e9"}"#.into(),
            "invalid_room",
            Some(8),
        ),
        (
            format!(r#"{{"id":9,"type":"join","room":"{long_room}"}}"#),
            "invalid_room",
            Some(9),
        ),
        (
            r#"{"id":10,"type":"join","room":5}"#.into(),
            "bad_request",
            Some(10),
        ),
        (
            r#"{"id":11,"type":"join","room":"r","presence":[1]}"#.into(),
            "bad_request",
            Some(11),
        ),
        (
            r#"{"id":12,"type":"join","room":"r","since":5}"#.into(),
            "bad_request",
            Some(12),
        ),
        (
            r#"{"id":13,"type":"publish","room":"r"}"#.into(),
            "bad_request",
            Some(13),
        ),
        (
            r#"{"id":14,"type":"publish","room":"r","data":1,"echo":"yes"}"#.into(),
            "bad_request",
            Some(14),
        ),
        (
            r#"{"id":15,"type":"publish","room":"elsewhere","data":1}"#.into(),
            "not_joined",
            Some(15),
        ),
        (
            r#"{"id":16,"type":"publish","room":"bad room","data":1}"#.into(),
            "invalid_room",
            Some(16),
        ),
        (
            r#"{"id":17,"type":"presence","room":"elsewhere","presence":{}}"#.into(),
            "not_joined",
            Some(17),
        ),
        (
            r#"{"id":18,"type":"presence","room":"r","presence":"x"}"#.into(),
            "bad_request",
            Some(18),
        ),
        (
            r#"{"id":19,"type":"presence","room":"r"}"#.into(),
            "bad_request",
            Some(19),
        ),
        (
            r#"{"id":20,"type":"members","room":"elsewhere"}"#.into(),
            "not_joined",
            Some(20),
        ),
        (
            r#"{"id":21,"type":"leave","room":"elsewhere"}"#.into(),
            "not_joined",
            Some(21),
        ),
        (
            r#"{"id":22,"type":"history","room":"r","limit":100000}"#.into(),
            "bad_request",
            Some(22),
        ),
        (
            r#"{"id":23,"type":"auth","token":"x.y.z"}"#.into(),
            "unavailable",
            Some(23),
        ),
        (
            r#"{"type":"publish","room":"elsewhere","data":1}"#.into(),
            "not_joined",
            None,
        ),
    ];
    // Large ids are echoed exactly.
    v.push((
        r#"{"id":9007199254740993,"type":"nope"}"#.into(),
        "unknown_type",
        Some(9007199254740993),
    ));
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_input_gets_its_error_and_others_keep_receiving() {
    let server = Server::start(&[]);
    let mut bad = Peer::connect(&server).await;
    let mut observer = Peer::connect(&server).await;
    let mut publisher = Peer::connect(&server).await;
    bad.join("r", None).await;
    observer.join("r", None).await;
    publisher.join("r", None).await;

    // A third client publishes all along, while the bad input goes on.
    const BACKGROUND: usize = 40;
    let background = tokio::spawn(async move {
        for i in 0..BACKGROUND {
            publisher
                .send(json!({"type": "publish", "room": "r", "data": {"bg": i}}))
                .await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        publisher.barrier().await;
        publisher
    });

    let cases = cases();
    for (i, (frame, code, id)) in cases.iter().enumerate() {
        bad.send_text(frame).await;
        let err = bad.next_of("error").await;
        assert_eq!(err["code"], *code, "frame {frame:?}: {err}");
        assert_eq!(err["id"].as_i64(), *id, "id echoed for {frame:?}: {err}");
        assert_eq!(err.get("id").is_some(), id.is_some(), "{frame:?}: {err}");
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{frame:?}: a message for humans: {err}"
        );
        // The same connection still works, and its message reaches the room.
        let offset = bad.publish("r", json!({"after": i})).await;
        assert!(offset >= 1);
    }
    // A binary frame that does not follow the layout (the header length says 0x00016269)
    // is refused, but the connection stays open.
    bad.client.send_binary(b"\x00\x01binary").await.unwrap();
    let err = bad.next_of("error").await;
    assert_eq!(err["code"], "bad_request", "{err}");
    assert!(err.get("id").is_none());
    bad.publish("r", json!({"after": "binary"})).await;

    let publisher = tokio::time::timeout(STEP, background)
        .await
        .expect("background publisher stalled")
        .expect("background publisher panicked");
    drop(publisher);

    // The observer got every message, each once, in offset order, and no errors.
    let total = cases.len() + 1 + BACKGROUND;
    let mut frames = Vec::new();
    while messages(&frames).len() < total {
        frames.push(observer.next().await);
    }
    frames.extend(observer.barrier().await);
    let got = offsets(&frames);
    assert_eq!(got, (1..=total as u64).collect::<Vec<_>>());
    let data: Vec<Value> = messages(&frames)
        .iter()
        .map(|m| m["data"].clone())
        .collect();
    for i in 0..cases.len() {
        assert_eq!(
            data.iter().filter(|d| **d == json!({"after": i})).count(),
            1
        );
    }
    for i in 0..BACKGROUND {
        assert_eq!(data.iter().filter(|d| **d == json!({"bg": i})).count(), 1);
    }
    assert!(
        frames.iter().all(|f| f["type"] != "error"),
        "observer got an error: {frames:?}"
    );

    // And the bad client got exactly one error per bad frame.
    let rest = bad.barrier().await;
    assert!(
        rest.iter().all(|f| f["type"] != "error"),
        "extra errors: {rest:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_128_character_room_name_is_fine() {
    let server = Server::start(&[]);
    let mut a = Peer::connect(&server).await;
    let room = format!("ns:{}", "A-z_0.9".repeat(18)); // 3 + 126 = 129 > 128
    let room = &room[..128];
    a.join(room, None).await;
    assert_eq!(a.publish(room, json!(1)).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_string_id_is_not_echoed_but_answered() {
    let server = Server::start(&[]);
    let mut a = Peer::connect(&server).await;
    a.send_text(r#"{"id":"seven","type":"ping"}"#).await;
    let err = a.next().await;
    assert_eq!(err["type"], "error");
    assert_eq!(err["code"], "bad_request");
    assert!(err.get("id").is_none(), "{err}");
}

/// Bad framing closes only the connection that sent it.
async fn framing_error_closes_with(raw: impl FnOnce(&mut Peer) -> Vec<u8>, code: u16) {
    let server = Server::start(&[]);
    let mut bad = Peer::connect(&server).await;
    let mut observer = Peer::connect(&server).await;
    bad.join("r", None).await;
    observer.join("r", None).await;
    let bytes = raw(&mut bad);
    bad.client.send_raw(&bytes).await.unwrap();
    let (_, how) = bad.until_closed(STEP).await;
    assert_eq!(how, Closed::Code(code));
    // The server discards everything after bad framing (our close reply too), so it
    // finishes when the socket goes away.
    let conn = bad.conn.clone();
    drop(bad);
    let leave = observer
        .next_where("presence leave", |f| {
            f["type"] == "presence" && f["event"] == "leave"
        })
        .await;
    assert_eq!(leave["event"], "leave");
    assert_eq!(leave["member"]["conn"], conn.as_str());
    assert_eq!(observer.publish("r", json!("still here")).await, 1);
    let line = server.disconnected_line(&conn).await;
    assert_eq!(common::field(&line, "code"), Some(&*code.to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_utf8_closes_with_1007() {
    framing_error_closes_with(
        |p| {
            Frame::masked(OpCode::Text, b"{\"a\":\"\xff\xfe\"}", p.client.next_mask())
                .as_bytes()
                .to_vec()
        },
        1007,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unmasked_frame_closes_with_1002() {
    framing_error_closes_with(
        |_| {
            Frame::unmasked(OpCode::Text, br#"{"type":"ping"}"#)
                .as_bytes()
                .to_vec()
        },
        1002,
    )
    .await;
}
