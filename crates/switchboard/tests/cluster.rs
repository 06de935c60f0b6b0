//! Several nodes over one Redis: real `redis-server`, real nodes on real ports.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{redis, Peer, Redis, Server};
use serde_json::{json, Value};

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

#[tokio::test(flavor = "multi_thread")]
async fn redis_restarting_mid_stream_loses_no_acknowledged_message() {
    let dir = common::temp_dir("redis");
    // Every write on disk before Redis answers it: a restart keeps what was acknowledged.
    let mut redis = Redis::start(&[
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        dir.to_str().expect("a UTF-8 temp dir"),
    ]);
    let server = node(&redis);
    let mut reader = Peer::connect(&server).await;
    reader.join("r", None).await;
    let mut writer = Peer::connect(&server).await;
    writer.join("r", None).await;
    let mut acked = Vec::new();
    let mut refused = 0;
    for i in 0..160u64 {
        if i == 100 {
            redis.stop();
        }
        if i == 110 {
            redis.start_again();
            // Give the connections a moment to come back.
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        writer
            .send(json!({"type": "publish", "id": i as i64 + 1, "room": "r", "data": i}))
            .await;
        let reply = writer.next_where("reply", |f| f["id"] == i + 1).await;
        match reply["type"].as_str() {
            Some("ok") => acked.push((reply["offset"].as_u64().unwrap(), i)),
            Some("error") => {
                assert_eq!(reply["code"], "unavailable", "{reply}");
                refused += 1;
            }
            _ => panic!("{reply}"),
        }
    }
    assert!(refused > 0, "publishes while Redis was down were refused");
    assert!(acked.len() >= 140, "{} acknowledged", acked.len());
    // Every acknowledged message reaches the reader once, in offset order.
    let mut seen = Vec::new();
    while seen.len() < acked.len() {
        let m = reader.next_of("message").await;
        seen.push((m["offset"].as_u64().unwrap(), m["data"].as_u64().unwrap()));
    }
    assert_eq!(seen, acked);
    // And history has them all.
    writer
        .send(json!({"type": "history", "id": 9999, "room": "r", "limit": 100, "reverse": true}))
        .await;
    let h = writer.next_of("history").await;
    assert_eq!(h["offset"].as_u64(), acked.last().map(|a| a.0), "{h}");
}

fn node_with(redis: &Redis, extra: &[&str]) -> Server {
    let mut args = vec![
        "--redis-url",
        &redis.url,
        "--message-rate",
        "10000",
        "--message-burst",
        "10000",
        "--api-keys",
        API_KEY,
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

const API_KEY: &str = "api-key-for-the-cluster-tests-0123";

async fn api(server: &Server, method: &str, path: &str, body: &str) -> Value {
    let res = common::http(
        server.addr,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert_eq!(res.status, 200, "{method} {path}: {}", res.text());
    res.json()
}

/// The next presence event of `room` seen by `peer`, as (event, member conn).
async fn presence(peer: &mut Peer, room: &str) -> (String, Value) {
    let f = peer
        .next_where("presence", |f| f["type"] == "presence" && f["room"] == room)
        .await;
    (f["event"].as_str().unwrap().to_owned(), f["member"].clone())
}

fn conns(members: &Value) -> Vec<String> {
    let mut v: Vec<String> = members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["conn"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn presence_spans_nodes_joins_updates_and_leaves() {
    let redis = redis();
    let nodes = [node(&redis), node(&redis), node(&redis)];
    let mut a = Peer::connect(&nodes[0]).await;
    a.join("p", Some(json!({"name": "ann"}))).await;
    let mut b = Peer::connect(&nodes[1]).await;
    let joined = b.join("p", Some(json!({"name": "bob"}))).await;
    // The joiner on another node is told who is there.
    assert_eq!(joined["member_count"], 2, "{joined}");
    let mut want = vec![a.conn.clone(), b.conn.clone()];
    want.sort();
    assert_eq!(conns(&joined["members"]), want, "{joined}");
    let (event, member) = presence(&mut a, "p").await;
    assert_eq!(
        (event.as_str(), &member),
        ("join", &b.member(json!({"name": "bob"})))
    );

    let mut c = Peer::connect(&nodes[2]).await;
    let joined = c.join("p", Some(json!({"name": "cy"}))).await;
    assert_eq!(joined["member_count"], 3, "{joined}");
    assert_eq!(presence(&mut a, "p").await.0, "join");
    assert_eq!(
        presence(&mut b, "p").await,
        ("join".into(), c.member(json!({"name": "cy"})))
    );

    // An update on one node reaches the others.
    b.send(json!({"type": "presence", "room": "p", "presence": {"name": "bob", "away": true}}))
        .await;
    let updated = b.member(json!({"name": "bob", "away": true}));
    assert_eq!(
        presence(&mut b, "p").await,
        ("update".into(), updated.clone())
    );
    assert_eq!(
        presence(&mut a, "p").await,
        ("update".into(), updated.clone())
    );
    assert_eq!(
        presence(&mut c, "p").await,
        ("update".into(), updated.clone())
    );

    // `members` on any node lists everyone, as they are now.
    let reply = a
        .request(json!({"type": "members", "id": 5, "room": "p"}))
        .await;
    assert_eq!(reply["member_count"], 3, "{reply}");
    let listed = reply["members"].as_array().unwrap();
    assert!(listed.contains(&updated), "{reply}");

    // The HTTP API of a node with no member in the room sees them too.
    let d = node_with(&redis, &[]);
    let members = api(&d, "GET", "/api/rooms/p/members", "").await;
    assert_eq!(members["member_count"], 3, "{members}");
    let mut all = vec![a.conn.clone(), b.conn.clone(), c.conn.clone()];
    all.sort();
    assert_eq!(conns(&members["members"]), all, "{members}");
    // Paged: one at a time, in join order, with a cursor.
    let first = api(&d, "GET", "/api/rooms/p/members?limit=1", "").await;
    assert_eq!(first["members"][0]["conn"], a.conn, "{first}");
    let cursor = first["cursor"].as_str().unwrap().to_owned();
    let second = api(
        &d,
        "GET",
        &format!("/api/rooms/p/members?limit=2&cursor={cursor}"),
        "",
    )
    .await;
    assert_eq!(second["members"][0]["conn"], b.conn, "{second}");
    assert_eq!(second["members"][1]["conn"], c.conn, "{second}");
    assert!(second["cursor"].is_null(), "{second}");
    let rooms = api(&d, "GET", "/api/rooms", "").await;
    assert_eq!(
        rooms["rooms"],
        json!([{"room": "p", "members": 3}]),
        "{rooms}"
    );

    // A leave on one node reaches the others.
    c.send(json!({"type": "leave", "id": 6, "room": "p"})).await;
    assert_eq!(
        presence(&mut a, "p").await,
        ("leave".into(), c.member(json!({"name": "cy"})))
    );
    assert_eq!(presence(&mut b, "p").await.0, "leave");
    let reply = b
        .request(json!({"type": "members", "id": 7, "room": "p"}))
        .await;
    assert_eq!(reply["member_count"], 2, "{reply}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_node_s_members_leave_everywhere_within_the_node_timeout() {
    let redis = redis();
    let a = node_with(&redis, &["--node-timeout", "2s"]);
    let mut b = node_with(&redis, &["--node-timeout", "2s"]);
    let c = node_with(&redis, &["--node-timeout", "2s"]);
    let mut watcher = Peer::connect(&a).await;
    watcher.join("k", None).await;
    let mut other = Peer::connect(&c).await;
    other.join("k", None).await;
    assert_eq!(presence(&mut watcher, "k").await.0, "join");
    let mut doomed = Vec::new();
    let mut on_b = Vec::new();
    for _ in 0..3 {
        let mut p = Peer::connect(&b).await;
        p.join("k", None).await;
        assert_eq!(presence(&mut watcher, "k").await.0, "join");
        assert_eq!(presence(&mut other, "k").await.0, "join");
        doomed.push(p.conn.clone());
        on_b.push(p);
    }
    b.sigkill();
    let killed = std::time::Instant::now();
    for peer in [&mut watcher, &mut other] {
        let mut left = Vec::new();
        while left.len() < doomed.len() {
            let (event, member) = presence(peer, "k").await;
            assert_eq!(event, "leave", "{member}");
            left.push(member["conn"].as_str().unwrap().to_owned());
        }
        left.sort();
        let mut want = doomed.clone();
        want.sort();
        assert_eq!(left, want);
    }
    // node_timeout (2 s) plus a heartbeat (0.5 s), and some slack for a loaded machine.
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(8), "members left after {took:?}");
    let reply = watcher
        .request(json!({"type": "members", "id": 3, "room": "k"}))
        .await;
    assert_eq!(reply["member_count"], 2, "{reply}");
    let members = api(&a, "GET", "/api/rooms/k/members", "").await;
    assert_eq!(members["member_count"], 2, "{members}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_shut_down_gracefully_takes_its_members_out_at_once() {
    let redis = redis();
    // A long node timeout: what the others see is the node's own goodbye.
    let a = node_with(&redis, &["--node-timeout", "60s"]);
    let mut b = node_with(
        &redis,
        &["--node-timeout", "60s", "--shutdown-timeout", "2s"],
    );
    let mut watcher = Peer::connect(&a).await;
    watcher.join("g", None).await;
    let mut leaving = Peer::connect(&b).await;
    leaving.join("g", None).await;
    assert_eq!(presence(&mut watcher, "g").await.0, "join");
    b.sigterm();
    let started = std::time::Instant::now();
    let (event, member) = presence(&mut watcher, "g").await;
    assert_eq!(
        (event.as_str(), &member["conn"]),
        ("leave", &json!(leaving.conn))
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(b.wait_exit(Duration::from_secs(10)).await.is_some());
    let rooms = api(&a, "GET", "/api/rooms", "").await;
    assert_eq!(
        rooms["rooms"],
        json!([{"room": "g", "members": 1}]),
        "{rooms}"
    );
    let info = api(&a, "GET", "/api/info", "").await;
    assert_eq!(
        info["cluster"]["nodes"].as_array().map(Vec::len),
        Some(1),
        "{info}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_of_any_node_disconnects_a_user_everywhere_and_counts_every_node() {
    let redis = redis();
    let secret = "a-cluster-test-secret-long-enough-for-hs256";
    let nodes = [
        node_with(&redis, &["--token-hmac-secret", secret]),
        node_with(&redis, &["--token-hmac-secret", secret]),
    ];
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "zoe", "exp": 4102444800u64}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap();
    let mut zoes = Vec::new();
    for n in &nodes {
        for _ in 0..2 {
            let url = format!("{}?token={token}", n.url());
            let client = switchboard_client::Client::connect(&url).await.unwrap();
            zoes.push(Peer::from_client(client).await);
        }
    }
    let mut bystander = Peer::connect(&nodes[1]).await;
    let info = api(&nodes[0], "GET", "/api/info", "").await;
    assert_eq!(info["cluster"]["connections"], 5, "{info}");
    assert_eq!(
        info["cluster"]["nodes"].as_array().map(Vec::len),
        Some(2),
        "{info}"
    );
    let res = api(
        &nodes[0],
        "POST",
        "/api/disconnect",
        r#"{"user":"zoe","code":4003,"reason":"banned"}"#,
    )
    .await;
    assert_eq!(res["disconnected"], 4, "{res}");
    assert_eq!(res["nodes"], 2, "{res}");
    for z in &mut zoes {
        let (_, closed) = z.until_closed(Duration::from_secs(5)).await;
        assert_eq!(closed, common::Closed::Code(4003), "{closed:?}");
    }
    // Others stay.
    let reply = bystander
        .request(json!({"type": "members", "id": 1, "room": "none"}))
        .await;
    assert_eq!(reply["type"], "error", "{reply}");
}

fn redis_cli(redis: &Redis, args: &[&str]) -> String {
    let port = redis.url.rsplit(':').next().unwrap().trim_end_matches('/');
    let out = Command::new("redis-cli")
        .args(["-p", port])
        .args(args)
        .output()
        .expect("redis-cli (from redis-tools)");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_that_missed_messages_it_cannot_read_back_makes_its_members_rejoin() {
    let redis = redis();
    assert_eq!(
        redis_cli(
            &redis,
            &[
                "ACL",
                "SETUSER",
                "cut",
                "on",
                ">pw-of-cut",
                "~*",
                "&*",
                "+@all"
            ]
        ),
        "OK"
    );
    let cut_url = redis.url.replace("redis://", "redis://cut:pw-of-cut@");
    // Rooms keep nothing: what a node misses cannot be read back.
    let a = Server::start(&["--redis-url", &cut_url, "--recovery-window-size", "0"]);
    let b = node_with(&redis, &["--recovery-window-size", "0"]);
    let mut reader = Peer::connect(&a).await;
    let epoch = reader.join("gap", None).await["epoch"].clone();
    let mut writer = Peer::connect(&b).await;
    writer.join("gap", None).await;
    assert_eq!(writer.publish("gap", json!(1)).await, 1);
    assert_eq!(reader.next_of("message").await["offset"], 1);
    // Node a loses Redis (its user is switched off and its connections closed) while b
    // goes on publishing.
    assert_eq!(redis_cli(&redis, &["ACL", "SETUSER", "cut", "off"]), "OK");
    let killed = redis_cli(&redis, &["CLIENT", "KILL", "USER", "cut"]);
    assert_eq!(
        killed, "2",
        "the node's command and subscription connections"
    );
    for i in 2..=4 {
        assert_eq!(writer.publish("gap", json!(i)).await, i);
    }
    assert_eq!(redis_cli(&redis, &["ACL", "SETUSER", "cut", "on"]), "OK");
    // Back in touch, a cannot deliver 2..4: its member is told to rejoin, not left with a
    // silent gap.
    let (frames, closed) = reader.until_closed(Duration::from_secs(15)).await;
    assert_eq!(
        closed,
        common::Closed::Code(4011),
        "{frames:?}\n{}",
        a.logs().join("\n")
    );
    assert!(
        !frames.iter().any(|f| f["type"] == "message"),
        "nothing after the gap: {frames:?}"
    );
    // Rejoining with its position, it learns what was lost.
    let mut back = Peer::connect(&a).await;
    let j = back
        .request(
            json!({"type": "join", "id": 3, "room": "gap", "since": {"epoch": epoch, "offset": 1}}),
        )
        .await;
    assert_eq!(
        (&j["recovered"], &j["reason"]),
        (&json!(false), &json!("too_old")),
        "{j}"
    );
    assert_eq!(j["offset"], 4, "{j}");
}

#[tokio::test(flavor = "multi_thread")]
async fn after_redis_loses_its_data_every_node_announces_its_members_again() {
    let mut redis = redis();
    let a = node_with(&redis, &["--node-timeout", "2s"]);
    let b = node_with(&redis, &["--node-timeout", "2s"]);
    let mut pa = Peer::connect(&a).await;
    pa.join("r", None).await;
    let mut pb = Peer::connect(&b).await;
    pb.join("r", None).await;
    let members = api(&a, "GET", "/api/rooms/r/members", "").await;
    assert_eq!(members["member_count"], 2, "{members}");
    // Redis restarts empty.
    redis.stop();
    redis.start_again();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut want = vec![pa.conn.clone(), pb.conn.clone()];
    want.sort();
    loop {
        let res = common::http(
            a.addr,
            &format!("GET /api/rooms/r/members HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        if res.status == 200 && conns(&res.json()["members"]) == want {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "members after the restart: {} {}",
            res.status,
            res.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And each node's members list the other's.
    let reply = pa
        .request(json!({"type": "members", "id": 1, "room": "r"}))
        .await;
    assert_eq!(conns(&reply["members"]), want, "{reply}");
    let reply = pb
        .request(json!({"type": "members", "id": 1, "room": "r"}))
        .await;
    assert_eq!(conns(&reply["members"]), want, "{reply}");
}

#[tokio::test(flavor = "multi_thread")]
async fn over_redis_a_publisher_gets_its_own_copy_before_its_ok() {
    let redis = redis();
    let a = node(&redis);
    let b = node(&redis);
    let mut listener = Peer::connect(&b).await;
    listener.join("own", None).await;
    let mut p = Peer::connect(&a).await;
    p.join("own", None).await;
    for i in 0..200i64 {
        p.send(json!({"type": "publish", "id": i + 1, "room": "own", "data": i}))
            .await;
    }
    let mut copies = std::collections::HashSet::new();
    let mut oks = 0;
    while oks < 200 {
        let f = p.next().await;
        match f["type"].as_str() {
            Some("message") => {
                copies.insert(f["offset"].as_u64().unwrap());
            }
            Some("ok") => {
                let offset = f["offset"].as_u64().unwrap();
                assert!(copies.contains(&offset), "ok for {offset} before its copy");
                oks += 1;
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rooms_are_sharded_over_several_redis_servers_and_still_span_nodes() {
    let shards = [redis(), redis()];
    let urls = format!("{},{}", shards[0].url, shards[1].url);
    let a = Server::start(&["--redis-url", &urls, "--api-keys", API_KEY]);
    let b = Server::start(&["--redis-url", &urls, "--api-keys", API_KEY]);
    let mut pa = Peer::connect(&a).await;
    let mut pb = Peer::connect(&b).await;
    let rooms: Vec<String> = (0..8).map(|i| format!("s{i}")).collect();
    for room in &rooms {
        pa.join(room, None).await;
        let joined = pb.join(room, None).await;
        assert_eq!(joined["member_count"], 2, "{joined}");
    }
    for (i, room) in rooms.iter().enumerate() {
        assert_eq!(pb.publish(room, json!(i)).await, 1);
        let m = pa
            .next_where("message", |f| {
                f["type"] == "message" && f["room"] == room.as_str()
            })
            .await;
        assert_eq!(m["data"], i, "{m}");
    }
    // Each room's stream is on exactly one of the servers, and both servers hold some.
    let mut per_shard = [0, 0];
    for room in &rooms {
        let key = format!("sb:{{{room}}}:s");
        let held: Vec<bool> = shards
            .iter()
            .map(|s| redis_cli(s, &["EXISTS", &key]) == "1")
            .collect();
        assert_eq!(held.iter().filter(|h| **h).count(), 1, "{room}: {held:?}");
        per_shard[usize::from(held[1])] += 1;
    }
    assert!(per_shard[0] > 0 && per_shard[1] > 0, "{per_shard:?}");
    // The API of either node sees every room, whichever server keeps it.
    let listed = api(&a, "GET", "/api/rooms", "").await;
    assert_eq!(
        listed["rooms"].as_array().map(Vec::len),
        Some(8),
        "{listed}"
    );
    let info = api(&b, "GET", "/api/info", "").await;
    assert_eq!(info["cluster"]["connections"], 2, "{info}");
}
