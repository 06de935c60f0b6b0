//! Heartbeat: clients that stop answering pings are closed with 4000.

mod common;

use std::time::{Duration, Instant};

use common::{field, Closed, Peer, Server};
use serde_json::json;
use switchboard_client::switchboard_ws::Message;
use switchboard_client::{Error, Options};

const INTERVAL_MS: u64 = 200;
const TIMEOUT_MS: u64 = 200;

fn start() -> Server {
    Server::start(&[
        "--heartbeat-interval",
        &format!("{INTERVAL_MS}ms"),
        "--heartbeat-timeout",
        &format!("{TIMEOUT_MS}ms"),
    ])
}

fn no_auto_pong() -> Options {
    Options {
        auto_pong: false,
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_does_not_pong_is_closed_with_4000() {
    let server = start();
    let started = Instant::now();
    let mut mute = Peer::connect_with(&server, no_auto_pong()).await;
    mute.join("r", Some(json!({"name": "mute"}))).await;
    let mute_member = mute.member(json!({"name": "mute"}));
    // `alive` answers pings only while it reads, so it reads from here on.
    let mut alive = Peer::connect(&server).await;
    assert_eq!(alive.welcome["heartbeat_ms"], json!(INTERVAL_MS));
    let joined = alive.join("r", None).await;
    assert_eq!(joined["members"][0], mute_member);

    // Read (without answering) until the server gives up on us.
    let mute_closed = async {
        let mut pings = 0;
        let frame = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match mute.client.recv().await {
                    Ok(Message::Ping(_)) => pings += 1,
                    Ok(_) => {}
                    Err(Error::Closed(frame)) => return frame,
                    Err(e) => panic!("unexpected error: {e}"),
                }
            }
        })
        .await
        .expect("the mute client was never closed");
        (frame, pings, started.elapsed())
    };
    let leave = alive.next_where("presence leave", |f| {
        f["type"] == "presence" && f["event"] == "leave"
    });
    let ((frame, pings, elapsed), leave) = tokio::join!(mute_closed, leave);
    let frame = frame.expect("a close frame, not a dropped connection");
    assert_eq!(frame.code.0, 4000, "{frame:?}");
    assert!(pings >= 1, "the server pinged before giving up");
    assert!(
        elapsed >= Duration::from_millis(INTERVAL_MS + TIMEOUT_MS - 10),
        "closed too early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(INTERVAL_MS + TIMEOUT_MS) + Duration::from_secs(3),
        "closed too late: {elapsed:?}"
    );

    // Its presence is gone for the others.
    assert_eq!(leave["member"], mute_member);
    let members = alive
        .request(json!({"type": "members", "id": 1, "room": "r"}))
        .await;
    assert_eq!(members["members"], json!([alive.member(json!({}))]));

    let line = server.disconnected_line(&mute.conn).await;
    assert_eq!(field(&line, "code"), Some("4000"), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_pongs_stays_connected() {
    let server = start();
    let mut a = Peer::connect(&server).await;
    let mut b = Peer::connect(&server).await;
    a.join("r", None).await;
    b.join("r", None).await;
    // Several heartbeat periods; the client answers pings while it reads.
    let deadline = Instant::now() + Duration::from_millis(4 * (INTERVAL_MS + TIMEOUT_MS));
    let mut published = 0u64;
    while Instant::now() < deadline {
        published += 1;
        assert_eq!(b.publish("r", json!(published)).await, published);
        let m = a.next_of("message").await;
        assert_eq!(
            m["offset"],
            json!(published),
            "a gets every message in turn"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(published >= 10);
    // Both are still there and in the room.
    let members = a
        .request(json!({"type": "members", "id": 1, "room": "r"}))
        .await;
    assert_eq!(
        members["members"],
        json!([a.member(json!({})), b.member(json!({}))])
    );
    let frames = a.barrier().await;
    assert!(
        frames
            .iter()
            .all(|f| !(f["type"] == "presence" && f["event"] == "leave")),
        "{frames:?}"
    );
    assert!(
        !server.logs().iter().any(|l| l.contains("disconnected")),
        "nobody was disconnected"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_client_that_pongs_stays_connected() {
    let server = start();
    let mut idle = Peer::connect(&server).await;
    idle.join("r", None).await;
    // Nothing but reading (which answers pings) for several heartbeat periods.
    let got = idle
        .try_next(Duration::from_millis(5 * (INTERVAL_MS + TIMEOUT_MS)))
        .await;
    assert!(got.is_none(), "nothing to read: {got:?}");
    let pong = idle.request(json!({"type": "ping", "id": 9})).await;
    assert_eq!(pong, json!({"type": "pong", "id": 9}));
    assert!(!server.logs().iter().any(|l| l.contains("disconnected")));
}

#[tokio::test(flavor = "multi_thread")]
async fn any_frame_counts_as_an_answer() {
    let server = start();
    let mut chatty = Peer::connect_with(&server, no_auto_pong()).await;
    // Never answers pings, but sends a frame more often than the timeout.
    let deadline = Instant::now() + Duration::from_millis(5 * (INTERVAL_MS + TIMEOUT_MS));
    let mut n = 0;
    while Instant::now() < deadline {
        n += 1;
        let pong = chatty.request(json!({"type": "ping", "id": n})).await;
        assert_eq!(pong, json!({"type": "pong", "id": n}));
        tokio::time::sleep(Duration::from_millis(TIMEOUT_MS / 4)).await;
    }
    assert!(n >= 5);
    assert!(!server.logs().iter().any(|l| l.contains("disconnected")));
    // And when it stops sending, it is closed.
    let (_, how) = chatty.until_closed(Duration::from_secs(5)).await;
    assert_eq!(how, Closed::Code(4000));
}
