//! Several nodes over one Redis: real `redis-server`, real nodes on real ports.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Peer, Server};
use serde_json::{json, Value};

/// A `redis-server` of the test's own on a free port; stopped when dropped.
struct Redis {
    child: Child,
    url: String,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis() -> Redis {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (apt-get install redis-server)");
    for _ in 0..300 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Redis {
        child,
        url: format!("redis://127.0.0.1:{port}/"),
    }
}

fn node(redis: &Redis) -> Server {
    Server::start(&[
        "--redis-url",
        &redis.url,
        "--message-rate",
        "10000",
        "--message-burst",
        "10000",
    ])
}

const PER_NODE: u64 = 200;

#[tokio::test(flavor = "multi_thread")]
async fn messages_published_on_three_nodes_reach_every_member_in_one_order() {
    let redis = redis();
    let nodes = [node(&redis), node(&redis), node(&redis)];
    let mut peers = Vec::new();
    for n in &nodes {
        let mut p = Peer::connect(n).await;
        let joined = p.join("c", None).await;
        assert_eq!(joined["offset"], 0, "{joined}");
        peers.push(p);
    }
    // One publisher per node, all at once.
    let mut publishers = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let url = n.url();
        publishers.push(tokio::spawn(async move {
            let client = switchboard_client::Client::connect(&url).await.unwrap();
            let mut p = Peer::from_client(client).await;
            p.join("c", None).await;
            for k in 0..PER_NODE {
                p.send(json!({"type": "publish", "room": "c", "data": {"node": i, "k": k}}))
                    .await;
            }
            p.barrier().await;
            p
        }));
    }
    let total = 3 * PER_NODE;
    let mut orders: Vec<Vec<Value>> = Vec::new();
    for p in &mut peers {
        let mut got = Vec::new();
        while (got.len() as u64) < total {
            let m = p.next_of("message").await;
            got.push(m);
        }
        let offsets: Vec<u64> = got.iter().map(|m| m["offset"].as_u64().unwrap()).collect();
        assert_eq!(
            offsets,
            (1..=total).collect::<Vec<_>>(),
            "offsets 1..={total}, no gap, no duplicate"
        );
        orders.push(got.iter().map(|m| m["data"].clone()).collect());
    }
    assert_eq!(orders[0], orders[1], "one order on every node");
    assert_eq!(orders[0], orders[2], "one order on every node");
    // Each node's messages in the order it published them.
    for i in 0..3 {
        let ks: Vec<u64> = orders[0]
            .iter()
            .filter(|d| d["node"] == i)
            .map(|d| d["k"].as_u64().unwrap())
            .collect();
        assert_eq!(ks, (0..PER_NODE).collect::<Vec<_>>());
    }
    for p in publishers {
        p.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_moves_to_another_node_recovers_what_it_missed() {
    let redis = redis();
    let a = node(&redis);
    let b = node(&redis);
    let mut reader = Peer::connect(&a).await;
    let joined = reader.join("m", None).await;
    let epoch = joined["epoch"].as_str().unwrap().to_owned();
    let mut writer = Peer::connect(&b).await;
    writer.join("m", None).await;
    assert_eq!(writer.publish("m", json!(1)).await, 1);
    assert_eq!(reader.next_of("message").await["offset"], 1);
    drop(reader);
    for i in 2..=5 {
        assert_eq!(writer.publish("m", json!(i)).await, i);
    }
    // It comes back through the other node, from offset 1.
    let mut moved = Peer::connect(&b).await;
    moved
        .send(json!({"type": "join", "id": 9, "room": "m", "since": {"epoch": epoch, "offset": 1}}))
        .await;
    let j = moved.next_of("joined").await;
    assert_eq!(j["recovered"], true, "{j}");
    let offsets: Vec<u64> = j["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, vec![2, 3, 4, 5]);
    assert_eq!(j["offset"], 5);
    assert_eq!(writer.publish("m", json!(6)).await, 6);
    assert_eq!(moved.next_of("message").await["offset"], 6);
    // Keys are shared too: the same key through the other node is a duplicate.
    let mut other = Peer::connect(&a).await;
    other.join("m", None).await;
    writer
        .send(json!({"type": "publish", "id": 20, "room": "m", "data": "x", "key": "once"}))
        .await;
    let first = writer.next_of("ok").await;
    other
        .send(json!({"type": "publish", "id": 21, "room": "m", "data": "x", "key": "once"}))
        .await;
    let again = other.next_of("ok").await;
    assert_eq!(again["offset"], first["offset"]);
    assert_eq!(again["duplicate"], true, "{again}");
}
