//! A client that stops reading is closed with 4009, without waiting for it to read again;
//! the room goes on without it.

mod common;

use std::time::{Duration, Instant};

use common::{field, messages, offsets, short, Closed, Peer, Server};
use serde_json::json;

/// Size of each message's data: large-ish, a quarter of the 64 KiB queue.
const DATA_LEN: usize = 16 * 1024;
/// The publisher stays at most this many messages ahead of the normal reader, so that a
/// reader that keeps up never has more than WINDOW × 16 KB waiting (well under 64 KiB).
const WINDOW: u64 = 2;
/// Messages published after the slow client is gone.
const AFTER: u64 = 20;
/// Messages published while the slow client does not read: 800 × 16 KB = 12.8 MB, far more
/// than the 64 KiB queue plus what the kernel buffers for a socket nobody reads.
const N: u64 = 800;

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_is_closed_with_4009_and_others_are_not_slowed() {
    let server = Server::start(&[
        "--max-outbound-queue",
        "64KiB",
        "--message-rate",
        "100000",
        "--message-burst",
        "100000",
    ]);
    let mut slow = Peer::connect(&server).await;
    let mut reader = Peer::connect(&server).await;
    let mut publisher = Peer::connect(&server).await;
    slow.join("r", None).await;
    reader.join("r", None).await;
    publisher.join("r", None).await;
    slow.barrier().await;
    reader.barrier().await;
    let slow_conn = slow.conn.clone();
    // From here on, `slow` does not read until the end of the test.

    let started = Instant::now();
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0u64);
    let filler = "x".repeat(DATA_LEN);

    let publishing = async {
        for i in 1..=N {
            progress
                .wait_for(|&got| got + WINDOW >= i)
                .await
                .expect("reader gone");
            publisher
                .send(json!({"type": "publish", "room": "r", "echo": false,
                             "data": {"seq": i, "fill": filler}}))
                .await;
        }
    };
    // Reads N messages, checking order, and reports progress to the publisher.
    let reading = async {
        let mut got = 0u64;
        let mut presence = Vec::new();
        while got < N {
            let f = reader.next().await;
            if f["type"] != "message" {
                assert_eq!(f["type"], "presence", "{}", short(&f));
                presence.push(f);
                continue;
            }
            got += 1;
            assert_eq!(f["offset"], json!(got), "in order, no gaps");
            assert_eq!(f["data"]["seq"], json!(got));
            assert_eq!(f["data"]["fill"].as_str().map(str::len), Some(DATA_LEN));
            progress_tx.send_replace(got);
        }
        presence
    };
    let ((), mut presence) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(publishing, reading)
    })
    .await
    .expect("publishing stalled: the reader did not get every message in 60 s");
    let elapsed = started.elapsed();

    // The server closes the slow client by itself, while it still reads nothing: a client
    // that stopped reading may never drain its socket, and must not hold its place in the
    // room (and its connection slot) for ever.
    let line = server.disconnected_line(&slow.conn).await;
    assert_eq!(field(&line, "code"), Some("4009"), "{line}");

    // Now the slow client reads: a prefix of the messages, then the close.
    let (frames, how) = slow.until_closed(Duration::from_secs(30)).await;
    let seen = offsets(&frames);
    assert!(
        (seen.len() as u64) < N,
        "the slow client got all {N} messages: it was not closed"
    );
    assert_eq!(
        seen,
        (1..=seen.len() as u64).collect::<Vec<_>>(),
        "what it got is in order, without gaps"
    );
    assert!(messages(&frames)
        .iter()
        .all(|m| m["data"]["fill"].as_str().map(str::len) == Some(DATA_LEN)));
    // The close frame follows the buffered messages (or, if the server gave up waiting
    // for the socket to drain, the connection is simply closed).
    assert!(
        matches!(how, Closed::Code(4009) | Closed::NoFrame),
        "closed with {how:?}"
    );
    eprintln!(
        "slow consumer: reader got {N} in {elapsed:?}; the slow client read {} then {how:?}",
        seen.len()
    );

    // The room goes on: the reader saw the slow client leave, and gets what follows.
    for i in 1..=AFTER {
        let offset = publisher.publish("r", json!({"after": i})).await;
        assert_eq!(offset, N + i);
    }
    let mut after = Vec::new();
    while (after.len() as u64) < AFTER {
        let f = reader.next().await;
        if f["type"] == "message" {
            after.push(f["offset"].as_u64().expect("offset"));
        } else {
            presence.push(f);
        }
    }
    assert_eq!(after, (N + 1..=N + AFTER).collect::<Vec<_>>());
    presence.extend(reader.barrier().await);
    let leaves: Vec<_> = presence
        .iter()
        .filter(|f| f["type"] == "presence" && f["event"] == "leave")
        .collect();
    assert_eq!(leaves.len(), 1, "{presence:?}");
    assert_eq!(leaves[0]["member"]["conn"], slow_conn.as_str());
}
