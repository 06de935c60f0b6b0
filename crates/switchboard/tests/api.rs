//! The server HTTP API on the real binary: keys, publish and broadcast as the server, rooms
//! and members, disconnecting a user everywhere, and every bad request's status and body.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{http, Closed, HttpResponse, Peer, Server, STEP};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use switchboard_client::Client;

const KEY: &str = "api-key-for-the-tests-0123456789";
const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256";

async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> HttpResponse {
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    http(
        addr,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await
}

fn api_server(extra: &[&str]) -> Server {
    let mut args = vec!["--api-keys", KEY];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn assert_error(res: &HttpResponse, status: u16, code: &str) {
    assert_eq!(res.status, status, "{}", res.text());
    let body = res.json();
    assert_eq!(body["error"], code, "{body}");
    assert!(body["message"].is_string(), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_keys_the_api_does_not_exist() {
    let server = Server::start(&[]);
    let res = call(server.addr, "GET", "/api/info", Some(KEY), "").await;
    assert_error(&res, 404, "not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_are_required_and_guessing_is_rate_limited() {
    let server = api_server(&[]);
    assert_error(
        &call(server.addr, "GET", "/api/info", None, "").await,
        401,
        "unauthorized",
    );
    assert_error(
        &call(
            server.addr,
            "GET",
            "/api/info",
            Some("wrong-key-wrong-key"),
            "",
        )
        .await,
        401,
        "unauthorized",
    );
    // A burst of wrong keys: after the allowance, 429 (without comparing keys).
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(
            call(
                server.addr,
                "GET",
                "/api/info",
                Some("guess-guess-guess"),
                "",
            )
            .await
            .status,
        );
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(*statuses.last().unwrap(), 429, "{statuses:?}");
    // The right key still works, and the server says who it is.
    let res = call(server.addr, "GET", "/api/info", Some(KEY), "").await;
    assert_eq!(res.status, 200, "{}", res.text());
    let info = res.json();
    assert_eq!(info["version"], "0.1.0");
    // /healthz shows its details to a request with the key, and only the status otherwise.
    let health = call(server.addr, "GET", "/healthz", Some(KEY), "")
        .await
        .json();
    assert_eq!(health["connections"], 0, "{health}");
    assert_eq!(health["version"], "0.1.0");
    let health = call(server.addr, "GET", "/healthz", None, "").await.json();
    assert_eq!(health, json!({"status": "ok"}));
    assert_eq!(info["connections"], 0);
    assert!(info["uptime_ms"].is_u64());
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_and_broadcast_reach_members_from_the_server() {
    let server = api_server(&[]);
    let mut a = Peer::connect(&server).await;
    let mut b = Peer::connect(&server).await;
    a.join("news:one", None).await;
    b.join("news:two", None).await;
    let res = call(
        server.addr,
        "POST",
        "/api/publish",
        Some(KEY),
        r#"{"room":"news:one","data":{"score":"2-1"}}"#,
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let published = res.json();
    let epoch = published["epoch"].as_str().expect("an epoch").to_owned();
    assert_eq!(
        published,
        json!({"room": "news:one", "epoch": epoch, "offset": 1, "duplicate": false})
    );
    let m = a.next_of("message").await;
    assert_eq!(m["data"], json!({"score": "2-1"}));
    assert_eq!(m["from"]["server"], true, "{m}");
    assert_eq!(m["from"]["conn"], Value::Null);
    assert_eq!(m["offset"], 1);
    // curl's `-d` says form-urlencoded: the body is JSON all the same.
    let res = http(
        server.addr,
        &format!(
            "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 28\r\nConnection: close\r\n\r\n{{\"room\":\"news:one\",\"data\":0}}"
        ),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(a.next_of("message").await["data"], 0);
    // A member's own publish follows in the same order.
    assert_eq!(a.publish("news:one", json!("after")).await, 3);

    let res = call(
        server.addr,
        "POST",
        "/api/broadcast",
        Some(KEY),
        r#"{"rooms":["news:one","news:two","news:empty"],"data":"all"}"#,
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    // A room without members keeps the message in its recovery window all the same.
    let results = res.json()["results"].clone();
    let offsets: Vec<(String, u64)> = results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["room"].as_str().unwrap().to_owned(),
                r["offset"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        offsets,
        [
            ("news:one".into(), 4),
            ("news:two".into(), 1),
            ("news:empty".into(), 1)
        ],
        "{results}"
    );
    assert_eq!(results[0]["epoch"], epoch.as_str());
    assert_eq!(
        a.next_where("broadcast", |f| f["type"] == "message"
            && f["data"] == "all")
            .await["offset"],
        4
    );
    assert_eq!(b.next_of("message").await["data"], "all");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_a_status_and_a_json_error() {
    let dir = common::temp_dir("api");
    let config = dir.join("switchboard.toml");
    std::fs::write(&config, "[namespaces.chat]\n").unwrap();
    let server = api_server(&[
        "--config",
        config.to_str().unwrap(),
        "--max-message-size",
        "1KiB",
    ]);
    let post = |path: &'static str, body: String| {
        let addr = server.addr;
        async move { call(addr, "POST", path, Some(KEY), &body).await }
    };
    assert_error(
        &post("/api/publish", "{not json".into()).await,
        400,
        "bad_json",
    );
    assert_error(&post("/api/publish", "[1]".into()).await, 400, "bad_json");
    assert_error(
        &post("/api/publish", r#"{"room":"chat:a"}"#.into()).await,
        400,
        "bad_request",
    );
    assert_error(
        &post("/api/publish", r#"{"room":"bad room","data":1}"#.into()).await,
        400,
        "invalid_room",
    );
    assert_error(
        &post("/api/publish", r#"{"room":"nowhere:a","data":1}"#.into()).await,
        404,
        "unknown_namespace",
    );
    assert_error(
        &post(
            "/api/publish",
            format!(
                r#"{{"room":"chat:a","data":{}}}"#,
                "[".repeat(40) + &"]".repeat(40)
            ),
        )
        .await,
        400,
        "bad_request",
    );
    assert_error(
        &post(
            "/api/publish",
            format!(r#"{{"room":"chat:a","data":"{}"}}"#, "x".repeat(200_000)),
        )
        .await,
        413,
        "too_large",
    );
    assert_error(
        &post("/api/broadcast", r#"{"rooms":[],"data":1}"#.into()).await,
        400,
        "bad_request",
    );
    assert_error(
        &post("/api/disconnect", r#"{"user":"a","conn":"b"}"#.into()).await,
        400,
        "bad_request",
    );
    assert_error(
        &post("/api/disconnect", r#"{"user":"a","code":3000}"#.into()).await,
        400,
        "bad_request",
    );
    let res = call(server.addr, "GET", "/api/publish", Some(KEY), "").await;
    assert_error(&res, 405, "method_not_allowed");
    assert_eq!(res.header("allow"), Some("POST"));
    assert_error(
        &call(server.addr, "GET", "/api/nope", Some(KEY), "").await,
        404,
        "not_found",
    );
    assert_error(
        &call(
            server.addr,
            "GET",
            "/api/rooms/chat:none/members",
            Some(KEY),
            "",
        )
        .await,
        404,
        "not_found",
    );
    assert_error(
        &call(
            server.addr,
            "GET",
            "/api/rooms/chat:a/members?limit=0",
            Some(KEY),
            "",
        )
        .await,
        400,
        "bad_request",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rooms_and_members_are_listed() {
    let server = api_server(&["--members-page-size", "2"]);
    let mut peers = Vec::new();
    for (i, room) in ["chat:a", "chat:a", "chat:a", "chat:b", "other"]
        .iter()
        .enumerate()
    {
        let mut p = Peer::connect(&server).await;
        p.join(room, Some(json!({"i": i}))).await;
        peers.push(p);
    }
    let res = call(
        server.addr,
        "GET",
        "/api/rooms?prefix=chat%3A",
        Some(KEY),
        "",
    )
    .await;
    assert_eq!(
        res.json(),
        json!({"rooms": [{"room": "chat:a", "members": 3}, {"room": "chat:b", "members": 1}], "truncated": false})
    );
    let res = call(
        server.addr,
        "GET",
        "/api/rooms/chat:a/members",
        Some(KEY),
        "",
    )
    .await;
    let page = res.json();
    assert_eq!(page["member_count"], 3, "{page}");
    assert_eq!(page["members"].as_array().map(Vec::len), Some(2));
    let cursor = page["cursor"].as_str().expect("cursor").to_owned();
    let res = call(
        server.addr,
        "GET",
        &format!("/api/rooms/chat:a/members?cursor={cursor}"),
        Some(KEY),
        "",
    )
    .await;
    let rest = res.json();
    assert_eq!(rest["members"][0]["presence"]["i"], 2, "{rest}");
    assert_eq!(rest["cursor"], Value::Null);
}

#[tokio::test(flavor = "multi_thread")]
async fn disconnect_closes_every_connection_of_a_user() {
    let dir = common::temp_dir("api-disconnect");
    let server = api_server(&[
        "--token-hmac-secret",
        SECRET,
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = |sub: &str| {
        encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": sub, "exp": exp, "rooms": ["*"]}),
            &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let connect = |sub: &str| {
        let url = format!("{}?token={}", server.url(), token(sub));
        async move { Peer::from_client(Client::connect(&url).await.expect("connect")).await }
    };
    let mut ada1 = connect("ada").await;
    let mut ada2 = connect("ada").await;
    let mut bob = connect("bob").await;
    bob.join("r", None).await;
    ada1.join("r", None).await;
    let doc_url = format!("ws://{}/yjs/notes?token={}", server.addr, token("ada"));
    let mut ada_doc = Client::connect_with(&doc_url, common::no_subprotocol())
        .await
        .expect("doc");
    // Its first frame (sync step 1) says the server has it open.
    tokio::time::timeout(STEP, ada_doc.recv())
        .await
        .expect("sync step 1")
        .expect("sync step 1");

    let res = call(
        server.addr,
        "POST",
        "/api/disconnect",
        Some(KEY),
        r#"{"user":"ada","reason":"account suspended"}"#,
    )
    .await;
    assert_eq!(res.json(), json!({"disconnected": 3}), "{}", res.text());
    for peer in [&mut ada1, &mut ada2] {
        let (_, how) = peer.until_closed(STEP).await;
        assert_eq!(how, Closed::Code(4003));
    }
    let code = tokio::time::timeout(STEP, async {
        loop {
            if let Err(e) = ada_doc.recv().await {
                return e.close_code();
            }
        }
    })
    .await
    .expect("document connection closed");
    assert_eq!(code, Some(4003));
    // bob is untouched, and saw ada leave.
    let leave = bob
        .next_where("leave", |f| {
            f["type"] == "presence" && f["event"] == "leave"
        })
        .await;
    assert_eq!(leave["member"]["user"], "ada");
    bob.publish("r", json!("still here")).await;
    // By connection id.
    let body = format!(r#"{{"conn":"{}","code":4001}}"#, bob.conn);
    let res = call(server.addr, "POST", "/api/disconnect", Some(KEY), &body).await;
    assert_eq!(res.json(), json!({"disconnected": 1}));
    let (_, how) = bob.until_closed(STEP).await;
    assert_eq!(how, Closed::Code(4001));
    tokio::time::sleep(Duration::from_millis(50)).await;
}
