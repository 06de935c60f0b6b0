//! Presence: member lists, join/leave/update events, abrupt disconnects.

mod common;

use std::time::Duration;

use common::{Peer, Server};
use serde_json::{json, Value};

/// The presence events among `frames`, without their `member_count` (checked on its own).
fn presence_events(frames: &[Value]) -> Vec<Value> {
    frames
        .iter()
        .filter(|f| f["type"] == "presence")
        .map(|f| uncounted(f.clone()))
        .collect()
}

fn uncounted(mut frame: Value) -> Value {
    if let Some(o) = frame.as_object_mut() {
        o.remove("member_count");
    }
    frame
}

fn event(room: &str, kind: &str, member: Value) -> Value {
    json!({"type": "presence", "room": room, "event": kind, "member": member})
}

async fn members(peer: &mut Peer, room: &str, id: i64) -> Value {
    let reply = peer
        .request(json!({"type": "members", "id": id, "room": room}))
        .await;
    assert_eq!(reply["type"], "members", "{reply}");
    assert_eq!(reply["room"], room);
    reply["members"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn member_lists_and_join_leave_update_events() {
    let server = Server::start(&[]);
    let mut a = Peer::connect(&server).await;
    let mut b = Peer::connect(&server).await;
    let mut c = Peer::connect(&server).await;
    let room = "team:blue";

    let joined = a.join(room, Some(json!({"name": "ada"}))).await;
    assert_eq!(joined["members"], json!([a.member(json!({"name": "ada"}))]));
    let joined = b
        .join(room, Some(json!({"name": "bob", "tags": [1, 2]})))
        .await;
    assert_eq!(
        joined["members"],
        json!([
            a.member(json!({"name": "ada"})),
            b.member(json!({"name": "bob", "tags": [1, 2]}))
        ])
    );
    let joined = c.join(room, None).await;
    let abc = json!([
        a.member(json!({"name": "ada"})),
        b.member(json!({"name": "bob", "tags": [1, 2]})),
        c.member(json!({}))
    ]);
    assert_eq!(
        joined["members"], abc,
        "join order, presence {{}} when none"
    );

    // Joins are announced to the others only.
    let a_saw = presence_events(&a.barrier().await);
    assert_eq!(
        a_saw,
        vec![
            event(
                room,
                "join",
                b.member(json!({"name": "bob", "tags": [1, 2]}))
            ),
            event(room, "join", c.member(json!({}))),
        ]
    );
    let b_saw = presence_events(&b.barrier().await);
    assert_eq!(b_saw, vec![event(room, "join", c.member(json!({})))]);
    assert!(presence_events(&c.barrier().await).is_empty());

    assert_eq!(members(&mut c, room, 10).await, abc);

    // A presence update: `ok` for the sender, `update` for everyone, the sender included.
    let ok = b
        .request(json!({"type": "presence", "id": 11, "room": room, "presence": {"name": "bobby"}}))
        .await;
    assert_eq!(ok, json!({"type": "ok", "id": 11}));
    let update = event(room, "update", b.member(json!({"name": "bobby"})));
    for peer in [&mut a, &mut b, &mut c] {
        assert_eq!(presence_events(&peer.barrier().await), vec![update.clone()]);
    }
    // The member keeps its place in the list.
    let abc2 = json!([
        a.member(json!({"name": "ada"})),
        b.member(json!({"name": "bobby"})),
        c.member(json!({}))
    ]);
    assert_eq!(members(&mut a, room, 12).await, abc2);

    // Joining again replaces presence; the others see `update`, not a second `join`.
    let joined = a
        .join(room, Some(json!({"name": "ada", "away": true})))
        .await;
    let abc3 = json!([
        a.member(json!({"name": "ada", "away": true})),
        b.member(json!({"name": "bobby"})),
        c.member(json!({}))
    ]);
    assert_eq!(joined["members"], abc3);
    let rejoin = event(
        room,
        "update",
        a.member(json!({"name": "ada", "away": true})),
    );
    assert_eq!(presence_events(&b.barrier().await), vec![rejoin.clone()]);
    assert_eq!(presence_events(&c.barrier().await), vec![rejoin]);
    assert!(presence_events(&a.barrier().await).is_empty());

    // Leave: `left` for the leaver, `leave` for the rest.
    let left = c
        .request(json!({"type": "leave", "id": 13, "room": room}))
        .await;
    assert_eq!(left, json!({"type": "left", "id": 13, "room": room}));
    let leave = event(room, "leave", c.member(json!({})));
    assert_eq!(presence_events(&a.barrier().await), vec![leave.clone()]);
    assert_eq!(presence_events(&b.barrier().await), vec![leave]);
    assert!(presence_events(&c.barrier().await).is_empty());
    let ab = json!([
        a.member(json!({"name": "ada", "away": true})),
        b.member(json!({"name": "bobby"}))
    ]);
    assert_eq!(members(&mut b, room, 14).await, ab);
}

#[tokio::test(flavor = "multi_thread")]
async fn abrupt_disconnect_sends_presence_leave() {
    let server = Server::start(&[]);
    let mut a = Peer::connect(&server).await;
    let mut b = Peer::connect(&server).await;
    let c = {
        let mut c = Peer::connect(&server).await;
        c.join("r", Some(json!({"name": "cy"}))).await;
        c.join("s", None).await;
        c
    };
    a.join("r", None).await;
    b.join("r", None).await;
    b.join("s", None).await;
    a.barrier().await;
    b.barrier().await;
    let c_member = c.member(json!({"name": "cy"}));
    let c_member_s = c.member(json!({}));
    let c_conn = c.conn.clone();

    // Drop the socket: no close frame, just the TCP connection going away.
    drop(c);

    let leave = a
        .next_where("presence leave", |f| f["type"] == "presence")
        .await;
    assert_eq!(uncounted(leave), event("r", "leave", c_member.clone()));
    // b was in both rooms with c: a leave in each.
    let mut b_leaves = Vec::new();
    for _ in 0..2 {
        b_leaves.push(uncounted(
            b.next_where("presence leave", |f| f["type"] == "presence")
                .await,
        ));
    }
    b_leaves.sort_by_key(|v| v["room"].as_str().unwrap_or_default().to_owned());
    assert_eq!(
        b_leaves,
        vec![
            event("r", "leave", c_member),
            event("s", "leave", c_member_s)
        ]
    );
    assert_eq!(
        members(&mut a, "r", 1).await,
        json!([a.member(json!({})), b.member(json!({}))])
    );
    assert_eq!(members(&mut b, "s", 2).await, json!([b.member(json!({}))]));
    // Exactly one leave each: nothing else arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(presence_events(&a.barrier().await).is_empty());
    assert!(presence_events(&b.barrier().await).is_empty());

    let line = server.disconnected_line(&c_conn).await;
    assert_eq!(common::field(&line, "code"), Some("1006"), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn clean_close_sends_presence_leave() {
    let server = Server::start(&[]);
    let mut a = Peer::connect(&server).await;
    let mut b = Peer::connect(&server).await;
    a.join("r", None).await;
    b.join("r", Some(json!({"k": "v"}))).await;
    a.barrier().await;
    b.client.close(1000, "bye").await.unwrap();
    let (_, how) = b.until_closed(common::STEP).await;
    assert_eq!(
        how,
        common::Closed::Code(1000),
        "the server echoes our code"
    );
    let leave = a
        .next_where("presence leave", |f| f["type"] == "presence")
        .await;
    assert_eq!(
        uncounted(leave),
        event("r", "leave", b.member(json!({"k": "v"})))
    );
    assert_eq!(members(&mut a, "r", 1).await, json!([a.member(json!({}))]));
}

#[tokio::test(flavor = "multi_thread")]
async fn rejoining_without_presence_keeps_the_presence() {
    // docs/protocol.md: joining a room you are already in "replaces your presence (if
    // given)": without `presence`, the member keeps the one it has.
    let server = Server::start(&[]);
    let mut a = Peer::connect(&server).await;
    let mut b = Peer::connect(&server).await;
    a.join("r", Some(json!({"name": "ada"}))).await;
    b.join("r", None).await;
    a.barrier().await;
    let joined = a.join("r", None).await;
    let expected = json!([a.member(json!({"name": "ada"})), b.member(json!({}))]);
    assert_eq!(
        joined["members"], expected,
        "joined after a rejoin without presence"
    );
    assert_eq!(members(&mut b, "r", 1).await, expected);
    for f in presence_events(&b.barrier().await) {
        assert_eq!(f["member"], a.member(json!({"name": "ada"})), "{f}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_sent_just_before_an_abrupt_disconnect_is_delivered_before_the_leave() {
    let server = Server::start(&[]);
    let mut a = Peer::connect(&server).await;
    let mut c = Peer::connect(&server).await;
    a.join("r", None).await;
    c.join("r", None).await;
    a.barrier().await;
    c.barrier().await; // nothing unread on c's socket: dropping it sends FIN, not RST
    c.send(json!({"type": "publish", "room": "r", "echo": false, "data": "last words"}))
        .await;
    let c_member = c.member(json!({}));
    drop(c);
    let m = a.next().await;
    assert_eq!(m["type"], "message", "{m}");
    assert_eq!(m["data"], "last words");
    assert_eq!(m["from"], c_member);
    let leave = a.next().await;
    assert_eq!(uncounted(leave), event("r", "leave", c_member));
}

/// Reads `peer`'s raw frames for `room` until `want` presence events have arrived (a batched
/// frame counts each of its events); returns the frames.
async fn presence_frames(peer: &mut Peer, room: &str, want: usize) -> Vec<Value> {
    peer.raw = true;
    let mut frames = Vec::new();
    let mut events = 0;
    while events < want {
        let f = peer
            .next_where("presence", |f| f["type"] == "presence" && f["room"] == room)
            .await;
        events += f["events"].as_array().map_or(1, Vec::len);
        frames.push(f);
    }
    frames
}

/// (event, member conn) of every event in `frames`, in order.
fn flat(frames: &[Value]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for f in frames {
        let events = match f["events"].as_array() {
            Some(list) => list.clone(),
            None => vec![f.clone()],
        };
        for e in events {
            out.push((
                e["event"].as_str().unwrap().to_owned(),
                e["member"]["conn"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_room_sends_its_presence_changes_in_batches_in_order() {
    let server = Server::start(&["--presence-interval", "300ms"]);
    let mut watcher = Peer::connect(&server).await;
    watcher.join("busy", None).await;
    let mut joiners = Vec::new();
    for _ in 0..30 {
        let mut p = Peer::connect(&server).await;
        p.join("busy", None).await;
        joiners.push(p);
    }
    let frames = presence_frames(&mut watcher, "busy", 30).await;
    let want: Vec<(String, String)> = joiners
        .iter()
        .map(|p| ("join".to_owned(), p.conn.clone()))
        .collect();
    assert_eq!(flat(&frames), want, "every join, in join order");
    assert!(
        frames.len() < 10,
        "30 joins within a few intervals come in a few frames, not {}",
        frames.len()
    );
    assert!(frames.iter().any(|f| f["events"].is_array()), "{frames:?}");
    assert_eq!(frames.last().unwrap()["member_count"], 31);
    // Nobody is told of its own join (its `joined` reply says it), only of the later ones.
    for (i, p) in joiners.iter_mut().enumerate() {
        let seen: Vec<(String, String)> = p
            .barrier()
            .await
            .iter()
            .filter(|f| f["type"] == "presence")
            .flat_map(|f| flat(std::slice::from_ref(f)))
            .collect();
        assert!(!seen.iter().any(|(_, c)| *c == p.conn), "{i}: {seen:?}");
    }
    // Leaves come the same way, and the list ends right.
    let leaving: Vec<String> = joiners.drain(..10).map(|p| p.conn.clone()).collect();
    let frames = presence_frames(&mut watcher, "busy", 10).await;
    let mut left: Vec<String> = flat(&frames)
        .into_iter()
        .map(|(e, c)| {
            assert_eq!(e, "leave");
            c
        })
        .collect();
    left.sort();
    let mut want = leaving.clone();
    want.sort();
    assert_eq!(left, want);
    watcher.raw = false;
    let reply = watcher
        .request(json!({"type": "members", "id": 1, "room": "busy"}))
        .await;
    assert_eq!(reply["member_count"], 21, "{reply}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_presence_updates_is_coalesced_not_multiplied() {
    let server = Server::start(&[
        "--presence-interval",
        "200ms",
        "--message-rate",
        "10000",
        "--message-burst",
        "10000",
    ]);
    let mut watchers = Vec::new();
    for _ in 0..5 {
        let mut w = Peer::connect(&server).await;
        w.join("flood", None).await;
        watchers.push(w);
    }
    let mut flooder = Peer::connect(&server).await;
    flooder.join("flood", None).await;
    let started = std::time::Instant::now();
    for i in 0..500 {
        flooder
            .send(json!({"type": "presence", "room": "flood", "presence": {"n": i}}))
            .await;
    }
    flooder.barrier().await;
    let elapsed = started.elapsed();
    // The last state arrives; the frames are about one per interval, not 500.
    for w in &mut watchers {
        w.raw = true;
        let mut frames = 0;
        loop {
            let f = w.next_where("presence", |f| f["type"] == "presence").await;
            frames += 1;
            let last = match f["events"].as_array() {
                Some(list) => list.last().cloned().unwrap(),
                None => f.clone(),
            };
            if last["event"] == "update" && last["member"]["presence"]["n"] == 499 {
                break;
            }
        }
        let bound = 3 + (elapsed.as_millis() / 200) as usize * 2;
        assert!(
            frames <= bound,
            "{frames} frames for 500 updates in {elapsed:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_count_only_namespace_tells_how_many_and_nothing_else() {
    let dir = common::temp_dir("count");
    let config = dir.join("switchboard.toml");
    std::fs::write(&config, "[namespaces.live]\npresence = \"count\"\n").unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let mut a = Peer::connect(&server).await;
    let joined = a.join("live:show", Some(json!({"name": "ada"}))).await;
    assert_eq!(joined["members"], json!([]), "{joined}");
    assert_eq!(joined["member_count"], 1, "{joined}");
    let mut b = Peer::connect(&server).await;
    let joined = b.join("live:show", None).await;
    assert_eq!(
        (&joined["members"], &joined["member_count"]),
        (&json!([]), &json!(2))
    );
    let f = a.next_of("presence").await;
    assert_eq!(
        f,
        json!({"type": "presence", "room": "live:show", "member_count": 2})
    );
    drop(b);
    let f = a.next_of("presence").await;
    assert_eq!(
        f,
        json!({"type": "presence", "room": "live:show", "member_count": 1})
    );
    let reply = a
        .request(json!({"type": "members", "id": 2, "room": "live:show"}))
        .await;
    assert_eq!(reply["code"], "forbidden", "{reply}");
    let reply = a
        .request(json!({"type": "presence", "id": 3, "room": "live:show", "presence": {}}))
        .await;
    assert_eq!(reply["code"], "forbidden", "{reply}");
}

/// A room of more than 1,000 members gathers its presence changes for longer, in proportion
/// to its size (`presence_interval` per 1,000 members, up to `presence_interval_max`), so
/// the frames each member is sent stay about as many as in a room of 1,000 while the room's
/// presence keeps changing.
#[tokio::test(flavor = "multi_thread")]
async fn a_big_room_sends_presence_less_often_in_proportion_to_its_size() {
    const MEMBERS: usize = 2400;
    let dir = common::temp_dir("paced");
    let config = dir.join("switchboard.toml");
    std::fs::write(&config, "[namespaces.live]\npresence = \"count\"\n").unwrap();
    let server = Server::start(&[
        "--config",
        config.to_str().unwrap(),
        "--presence-interval",
        "40ms",
        "--presence-interval-max",
        "10s",
    ]);
    let mut watcher = Peer::connect(&server).await;
    watcher.join("live:big", None).await;
    let mut members = Vec::new();
    let mut joining = tokio::task::JoinSet::new();
    let url = server.url();
    for i in 1..MEMBERS {
        let url = url.clone();
        joining.spawn(async move {
            let client = switchboard_client::Client::connect(&url)
                .await
                .expect("a member connects");
            let mut p = Peer::from_client(client).await;
            p.join("live:big", None).await;
            p
        });
        if i % 64 == 0 || i == MEMBERS - 1 {
            while let Some(p) = joining.join_next().await {
                members.push(p.expect("a member joins"));
            }
        }
    }
    assert_eq!(members.len(), MEMBERS - 1);
    watcher.raw = true;
    watcher.barrier().await;
    // One member comes and goes for two seconds (a join and a leave every 25 ms, within
    // the message rate): the count changes 80 times a second. With 2,400 members the
    // room's interval is 40 ms × 2.4 = 96 ms.
    let mut churner = Peer::connect(&server).await;
    let churn = tokio::spawn(async move {
        let until = std::time::Instant::now() + Duration::from_secs(2);
        while std::time::Instant::now() < until {
            churner.join("live:big", None).await;
            churner
                .request(json!({"type": "leave", "id": 7, "room": "live:big"}))
                .await;
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    });
    let mut arrivals = Vec::new();
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(1800) {
        let f = watcher
            .next_where("presence", |f| f["type"] == "presence")
            .await;
        assert!(f["member_count"].as_u64().is_some(), "{f}");
        arrivals.push(std::time::Instant::now());
    }
    churn.await.unwrap();
    let mut gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort();
    assert!(
        gaps.len() >= 5,
        "the count kept coming: {} frames",
        arrivals.len()
    );
    let median = gaps[gaps.len() / 2];
    assert!(
        median >= Duration::from_millis(80),
        "frames {median:?} apart (median of {}): the 40 ms interval did not grow with the room",
        gaps.len()
    );
    // And the count ends right.
    let last = loop {
        let f = watcher
            .next_where("presence", |f| f["type"] == "presence")
            .await;
        if f["member_count"] == MEMBERS as u64 {
            break f;
        }
    };
    assert_eq!(last["room"], "live:big");
}
