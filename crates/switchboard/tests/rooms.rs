//! Rooms: join, publish, fan-out order, echo, leave.

mod common;

use common::{messages, offsets, shorts, Peer, Server};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn welcome_describes_the_connection() {
    let server = Server::start(&["--heartbeat-interval", "7s"]);
    let a = Peer::connect(&server).await;
    let b = Peer::connect(&server).await;
    assert_eq!(a.welcome["user"], json!(null));
    assert_eq!(a.welcome["heartbeat_ms"], json!(7000));
    assert_eq!(
        a.welcome["server"],
        json!({"name": "switchboard", "version": "0.1.0"})
    );
    assert!(!a.conn.is_empty());
    assert_ne!(a.conn, b.conn, "connection ids are unique");
    assert_eq!(a.client.protocol.as_deref(), Some("switchboard.v1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_clients_get_every_message_once_in_offset_order() {
    let server = Server::start(&[]);
    let mut a = Peer::connect(&server).await;
    let mut b = Peer::connect(&server).await;

    let joined = a.join("chat:lobby", None).await;
    assert_eq!(joined["offset"], json!(0));
    assert_eq!(joined["messages"], json!([]));
    assert!(joined["epoch"].as_str().is_some_and(|e| !e.is_empty()));
    assert!(
        joined.get("recovered").is_none(),
        "no `recovered` without `since`"
    );
    let joined_b = b.join("chat:lobby", None).await;
    assert_eq!(joined_b["epoch"], joined["epoch"], "same room, same epoch");

    // Interleaved publishers; every `ok` carries the offset the room assigned.
    let mut expected = Vec::new();
    for i in 0..10u64 {
        let data = json!({"n": i, "nested": [1, "two", null, {"x": true}]});
        let (who, sender) = if i % 2 == 0 {
            ("a", &mut a)
        } else {
            ("b", &mut b)
        };
        let id = 100 + i as i64;
        let ok = sender
            .request(json!({"type": "publish", "id": id, "room": "chat:lobby", "data": data}))
            .await;
        assert_eq!(ok, json!({"type": "ok", "id": id, "offset": i + 1}));
        // The sender's own copy came before its `ok`.
        assert!(
            offsets(&sender.stashed()).contains(&(i + 1)),
            "own copy of {} not before ok: {:?}",
            i + 1,
            sender.stashed()
        );
        expected.push((who, i + 1, data));
    }

    let members = [a.member(json!({})), b.member(json!({}))];
    for (name, peer) in [("a", &mut a), ("b", &mut b)] {
        let frames = peer.barrier().await;
        let got = messages(&frames);
        assert_eq!(got.len(), 10, "{name} got {frames:?}");
        for (m, (who, offset, data)) in got.iter().zip(&expected) {
            assert_eq!(m["room"], "chat:lobby");
            assert_eq!(m["offset"], json!(offset), "{name}: {got:?}");
            assert_eq!(&m["data"], data, "data is delivered as sent");
            let from = if *who == "a" {
                &members[0]
            } else {
                &members[1]
            };
            assert_eq!(&m["from"], from);
            assert!(m["ts"].as_u64().is_some_and(|t| t > 1_600_000_000_000));
        }
        // Besides messages: b's presence join (seen by a) and nothing else.
        let others: Vec<_> = frames.iter().filter(|f| f["type"] != "message").collect();
        if name == "a" {
            assert_eq!(others.len(), 1, "{others:?}");
            assert_eq!(others[0]["type"], "presence");
        } else {
            assert!(others.is_empty(), "{others:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn message_from_names_the_sender_with_its_presence() {
    let server = Server::start(&[]);
    let mut a = Peer::connect(&server).await;
    let mut b = Peer::connect(&server).await;
    a.join("r", Some(json!({"name": "ada"}))).await;
    b.join("r", None).await;
    a.publish("r", json!("hi")).await;
    let m = b.next_of("message").await;
    assert_eq!(m["from"], a.member(json!({"name": "ada"})));
    assert_eq!(m["data"], json!("hi"));
    assert_eq!(b.publish("r", json!(null)).await, 2);
    let m = a
        .next_where("message 2", |m| m["type"] == "message" && m["offset"] == 2)
        .await;
    assert_eq!(m["from"], b.member(json!({})));
    assert_eq!(m["data"], json!(null), "null data is delivered as null");
}

#[tokio::test(flavor = "multi_thread")]
async fn echo_false_skips_only_the_sender() {
    let server = Server::start(&[]);
    let mut a = Peer::connect(&server).await;
    let mut b = Peer::connect(&server).await;
    a.join("r", None).await;
    b.join("r", None).await;
    b.barrier().await;

    let reply = a
        .request(json!({"type": "publish", "id": 1, "room": "r", "data": "quiet", "echo": false}))
        .await;
    assert_eq!(reply, json!({"type": "ok", "id": 1, "offset": 1}));
    let reply = a
        .request(json!({"type": "publish", "id": 2, "room": "r", "data": "loud", "echo": true}))
        .await;
    assert_eq!(reply, json!({"type": "ok", "id": 2, "offset": 2}));
    // Without an id: no `ok`, but the message goes out.
    a.send(json!({"type": "publish", "room": "r", "data": "no-id", "echo": false}))
        .await;

    let a_frames = a.barrier().await;
    assert_eq!(
        offsets(&a_frames),
        vec![2],
        "a sees only its echoed message: {a_frames:?}"
    );
    assert!(
        a_frames.iter().all(|f| f["type"] != "ok"),
        "no ok without id: {a_frames:?}"
    );
    let b_frames = b.barrier().await;
    assert_eq!(offsets(&b_frames), vec![1, 2, 3]);
    let data: Vec<_> = messages(&b_frames)
        .iter()
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(data, vec![json!("quiet"), json!("loud"), json!("no-id")]);
}

#[tokio::test(flavor = "multi_thread")]
async fn rooms_are_independent_and_offsets_are_per_room() {
    let server = Server::start(&[]);
    let mut a = Peer::connect(&server).await;
    let mut b = Peer::connect(&server).await;
    a.join("one", None).await;
    a.join("two", None).await;
    b.join("two", None).await;
    assert_eq!(a.publish("one", json!(1)).await, 1);
    assert_eq!(a.publish("one", json!(2)).await, 2);
    assert_eq!(a.publish("two", json!(3)).await, 1);
    assert_eq!(b.publish("two", json!(4)).await, 2);
    let b_frames = b.barrier().await;
    let got = messages(&b_frames);
    assert_eq!(got.len(), 2, "b is only in `two`: {b_frames:?}");
    assert!(got.iter().all(|m| m["room"] == "two"));
    assert_eq!(offsets(&b_frames), vec![1, 2]);
    let a_frames = a.barrier().await;
    let rooms: Vec<_> = messages(&a_frames)
        .iter()
        .map(|m| {
            (
                m["room"].as_str().unwrap().to_owned(),
                m["offset"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rooms,
        vec![
            ("one".to_owned(), 1),
            ("one".to_owned(), 2),
            ("two".to_owned(), 1),
            ("two".to_owned(), 2)
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn leave_stops_delivery_and_later_publish_is_not_joined() {
    let server = Server::start(&[]);
    let mut a = Peer::connect(&server).await;
    let mut b = Peer::connect(&server).await;
    a.join("r", None).await;
    b.join("r", None).await;
    let left = b
        .request(json!({"type": "leave", "id": 5, "room": "r"}))
        .await;
    assert_eq!(left, json!({"type": "left", "id": 5, "room": "r"}));
    a.publish("r", json!("after")).await;
    let frames = b.barrier().await;
    assert!(messages(&frames).is_empty(), "b left: {frames:?}");
    let err = b
        .request(json!({"type": "publish", "id": 6, "room": "r", "data": 1}))
        .await;
    assert_eq!(err["type"], "error");
    assert_eq!(err["code"], "not_joined");
    // a still gets its own messages.
    assert_eq!(offsets(&a.barrier().await), vec![1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn joined_reports_the_current_offset_and_an_emptied_room_starts_over() {
    let server = Server::start(&[]);
    let mut a = Peer::connect(&server).await;
    let mut b = Peer::connect(&server).await;
    let first = a.join("r", None).await;
    for i in 0..3 {
        a.publish("r", json!(i)).await;
    }
    let joined = b.join("r", None).await;
    assert_eq!(joined["offset"], json!(3), "the room's current offset");
    assert_eq!(joined["epoch"], first["epoch"]);
    assert_eq!(joined["messages"], json!([]));
    assert_eq!(b.publish("r", json!("x")).await, 4);

    // Everyone leaves: the room keeps its position while its recovery window lasts.
    a.request(json!({"type": "leave", "id": 1, "room": "r"}))
        .await;
    b.request(json!({"type": "leave", "id": 1, "room": "r"}))
        .await;
    let again = a.join("r", None).await;
    assert_eq!(again["offset"], json!(4));
    assert_eq!(again["epoch"], first["epoch"], "the same life of the room");
    assert_eq!(a.publish("r", json!("y")).await, 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_room_that_keeps_nothing_starts_over_when_it_empties() {
    let server = Server::start(&["--recovery-window-size", "0"]);
    let mut a = Peer::connect(&server).await;
    let first = a.join("r", None).await;
    assert_eq!(a.publish("r", json!(1)).await, 1);
    a.request(json!({"type": "leave", "id": 1, "room": "r"}))
        .await;
    let again = a.join("r", None).await;
    assert_eq!(again["offset"], json!(0));
    assert_ne!(again["epoch"], first["epoch"], "a new life of the room");
    assert_eq!(a.publish("r", json!("y")).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn join_with_since_recovers_exactly_what_was_missed() {
    let server = Server::start(&[]);
    let mut a = Peer::connect(&server).await;
    let first = a.join("r", None).await;
    a.publish("r", json!(1)).await;
    let mut b = Peer::connect(&server).await;
    let reply = b
        .request(json!({"type": "join", "id": 3, "room": "r",
                        "since": {"epoch": first["epoch"], "offset": 0}}))
        .await;
    assert_eq!(reply["type"], "joined");
    assert_eq!(reply["recovered"], json!(true), "{reply}");
    assert_eq!(reply["messages"].as_array().unwrap().len(), 1, "{reply}");
    assert_eq!(reply["messages"][0]["data"], json!(1));
    assert_eq!(reply["offset"], json!(1));
    // Another epoch: it cannot say what was missed, and says so.
    let mut c = Peer::connect(&server).await;
    let reply = c
        .request(json!({"type": "join", "id": 4, "room": "r",
                        "since": {"epoch": "elsewhere", "offset": 0}}))
        .await;
    assert_eq!(reply["recovered"], json!(false));
    assert_eq!(reply["reason"], "epoch_changed");
    assert_eq!(reply["messages"], json!([]));
    assert_eq!(reply["offset"], json!(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn ping_is_answered_with_pong() {
    let server = Server::start(&[]);
    let mut a = Peer::connect(&server).await;
    let reply = a.request(json!({"type": "ping", "id": 42})).await;
    assert_eq!(reply, json!({"type": "pong", "id": 42}));
    // Unknown fields are ignored.
    let reply = a
        .request(json!({"type": "ping", "id": -3, "extra": {"deep": [1, 2]}, "x": null}))
        .await;
    assert_eq!(reply, json!({"type": "pong", "id": -3}));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fragmented_message_with_a_ping_in_between_is_reassembled() {
    use switchboard_client::switchboard_ws::{encode_fragment, OpCode};
    let server = Server::start(&[]);
    let mut a = Peer::connect(&server).await;
    let mut b = Peer::connect(&server).await;
    a.join("r", None).await;
    b.join("r", None).await;
    let text = r#"{"type":"publish","id":77,"room":"r","data":{"text":"héllo, wörld"}}"#;
    // Split inside a multi-byte character, with a ping between the fragments.
    let bytes = text.as_bytes();
    let cut1 = text.find('é').unwrap() + 1;
    let cut2 = text.find('w').unwrap();
    let mut wire = Vec::new();
    let mut mask = || Some(a.client.next_mask());
    wire.extend_from_slice(&encode_fragment(
        false,
        OpCode::Text,
        &bytes[..cut1],
        mask(),
    ));
    wire.extend_from_slice(&encode_fragment(true, OpCode::Ping, b"mid", mask()));
    wire.extend_from_slice(&encode_fragment(
        false,
        OpCode::Continuation,
        &bytes[cut1..cut2],
        mask(),
    ));
    wire.extend_from_slice(&encode_fragment(
        true,
        OpCode::Continuation,
        &bytes[cut2..],
        mask(),
    ));
    a.client.send_raw(&wire).await.unwrap();
    let ok = a.next_of("ok").await;
    assert_eq!(ok, json!({"type": "ok", "id": 77, "offset": 1}));
    let m = b.next_of("message").await;
    assert_eq!(m["data"], json!({"text": "héllo, wörld"}));
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_without_an_id_get_no_reply_on_success_except_join() {
    let server = Server::start(&[]);
    let mut a = Peer::connect(&server).await;
    // join without an id still gets `joined`: it carries the room's state.
    a.send(json!({"type": "join", "room": "quiet"})).await;
    let joined = a.next_of("joined").await;
    assert!(joined.get("id").is_none(), "{joined}");
    a.send(json!({"type": "ping"})).await;
    a.send(json!({"type": "members", "room": "quiet"})).await;
    a.send(json!({"type": "presence", "room": "quiet", "presence": {"away": true}}))
        .await;
    a.send(json!({"type": "publish", "room": "quiet", "data": 1, "echo": false}))
        .await;
    a.send(json!({"type": "leave", "room": "quiet"})).await;
    // Everything before the barrier's pong: only the presence update addressed to all
    // members (the sender included) may be there — no pong, members, ok or left.
    let before = a.barrier().await;
    let kinds: Vec<&str> = before.iter().filter_map(|f| f["type"].as_str()).collect();
    assert_eq!(kinds, vec!["presence"], "{}", shorts(before.iter()));
    // ... but a failure without an id is still reported.
    a.send(json!({"type": "publish", "room": "quiet", "data": 1}))
        .await;
    let err = a.next_of("error").await;
    assert_eq!(err["code"], "not_joined");
    assert!(err.get("id").is_none());
}
