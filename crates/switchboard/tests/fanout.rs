//! Fan-out at scale: 1,000 clients in one room.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{short, Peer, Server, STEP};
use serde_json::json;
use switchboard_client::switchboard_ws::Message;
use tokio::task::JoinSet;

const CLIENTS: usize = 1_000;
const PUBLISHERS: usize = 5;
const PER_PUBLISHER: u64 = 20;
const TOTAL: u64 = PUBLISHERS as u64 * PER_PUBLISHER;
const ROOM: &str = "big:room";
const PRESENCE_JOIN: &[u8] = br#"{"type":"presence","room":"big:room","event":"join""#;

/// Whether `f` is a message (else it must be a presence join: nothing else is expected).
fn is_message(client: usize, f: &serde_json::Value) -> bool {
    match f["type"].as_str() {
        Some("message") => true,
        Some("presence") if f["event"] == "join" => false,
        _ => panic!("client {client}: unexpected {}", short(f)),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_clients_each_get_every_message_once_in_order() {
    let server = Server::start(&[]);
    let started = Instant::now();

    // Connect and join in concurrent batches.
    let mut peers: Vec<(Peer, usize)> = Vec::with_capacity(CLIENTS);
    let url_server = &server;
    for batch in 0..CLIENTS / 100 {
        let mut set = JoinSet::new();
        for _ in 0..100 {
            let url = url_server.url();
            set.spawn(async move {
                let client = tokio::time::timeout(
                    Duration::from_secs(20),
                    switchboard_client::Client::connect(&url),
                )
                .await
                .expect("connect timed out")
                .expect("connect");
                let mut peer = Peer::from_client(client).await;
                let joined = peer.join(ROOM, None).await;
                // One page of members (at most 100), and the count of all of them.
                let listed = joined["members"].as_array().expect("members").len();
                let count = joined["member_count"].as_u64().expect("member_count") as usize;
                assert_eq!(listed, count.min(100), "{}", short(&joined));
                (peer, count)
            });
        }
        while let Some(r) = set.join_next().await {
            peers.push(r.expect("connect task"));
        }
        assert_eq!(peers.len(), (batch + 1) * 100);
    }
    let connected = started.elapsed();
    // Every `joined` counts the members so far, itself included: 1..=CLIENTS, each once.
    let mut sizes: Vec<usize> = peers.iter().map(|(_, n)| *n).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, (1..=CLIENTS).collect::<Vec<_>>());
    let conns: HashSet<String> = peers.iter().map(|(p, _)| p.conn.clone()).collect();
    assert_eq!(conns.len(), CLIENTS, "connection ids are unique");

    // Everyone reads; a few also publish (before reading, so that all publish at once).
    let mut set = JoinSet::new();
    for (i, (mut peer, members_at_join)) in peers.into_iter().enumerate() {
        set.spawn(async move {
            if i < PUBLISHERS {
                for n in 0..PER_PUBLISHER {
                    peer.send(json!({"type": "publish", "room": ROOM,
                                     "data": {"p": i, "n": n}}))
                        .await;
                }
            }
            let mut joins_seen = 0usize;
            let mut got = Vec::with_capacity(TOTAL as usize);
            for f in peer.take_stash() {
                if is_message(i, &f) {
                    got.push(f);
                } else {
                    joins_seen += 1;
                }
            }
            while (got.len() as u64) < TOTAL {
                let message = tokio::time::timeout(STEP, peer.client.recv())
                    .await
                    .unwrap_or_else(|_| panic!("client {i}: only {} messages", got.len()))
                    .unwrap_or_else(|e| panic!("client {i}: {e}"));
                let Message::Text(bytes) = message else {
                    continue;
                };
                // ~500 presence joins per client: a cheap look at them keeps this test
                // fast in a debug build (the server writes `type` first, and members
                // here have no presence data that could contain the pattern).
                if bytes.starts_with(PRESENCE_JOIN) {
                    joins_seen += 1;
                    continue;
                }
                let f = serde_json::from_slice(&bytes).expect("JSON");
                if is_message(i, &f) {
                    got.push(f);
                } else {
                    joins_seen += 1;
                }
            }
            // Nothing more: no duplicates queued behind.
            let rest = peer.barrier().await;
            assert!(
                rest.iter().all(|f| f["type"] != "message"),
                "{}: extra messages {rest:?}",
                peer.conn
            );
            (i, members_at_join, joins_seen, got)
        });
    }

    let mut checked = 0;
    let deadline = Duration::from_secs(60);
    let results = tokio::time::timeout(deadline, async {
        let mut all = Vec::new();
        while let Some(r) = set.join_next().await {
            all.push(r.expect("client task"));
        }
        all
    })
    .await
    .expect("not every client got every message within 60 s");
    for (i, members_at_join, joins_seen, got) in results {
        // Everyone who joined later was announced: the room's full membership is known.
        assert_eq!(members_at_join + joins_seen, CLIENTS, "client {i}");
        let offsets: Vec<u64> = got.iter().map(|m| m["offset"].as_u64().unwrap()).collect();
        assert_eq!(
            offsets,
            (1..=TOTAL).collect::<Vec<_>>(),
            "client {i}: every offset once, strictly increasing, no gaps"
        );
        let mut seen = HashSet::new();
        let mut last_n = [None; PUBLISHERS];
        for m in &got {
            let p = m["data"]["p"].as_u64().unwrap() as usize;
            let n = m["data"]["n"].as_u64().unwrap();
            assert!(seen.insert((p, n)), "client {i}: duplicate {m}");
            assert!(
                last_n[p].map_or(n == 0, |l: u64| n == l + 1),
                "client {i}: publisher {p}'s messages out of order"
            );
            last_n[p] = Some(n);
        }
        assert_eq!(seen.len() as u64, TOTAL);
        checked += 1;
    }
    assert_eq!(checked, CLIENTS);
    eprintln!(
        "fan-out: {CLIENTS} clients connected and joined in {connected:?}, \
         {TOTAL} messages delivered to all in {:?} total",
        started.elapsed()
    );
}
