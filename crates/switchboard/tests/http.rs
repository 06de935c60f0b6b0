//! Plain HTTP: health, static pages, refused handshakes, stalled handshakes.

mod common;

use std::time::{Duration, Instant};

use common::{http, upgrade_request, HttpResponse, Peer, Server, STEP};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn get(server: &Server, path: &str) -> HttpResponse {
    http(
        server.addr,
        &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
    )
    .await
}

async fn health(server: &Server) -> serde_json::Value {
    let res = get(server, "/healthz").await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(
        res.header("content-type")
            .is_some_and(|v| v.starts_with("application/json")),
        "{:?}",
        res.headers
    );
    res.json()
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_reports_connections_and_rooms() {
    let server = Server::start(&[]);
    let body = health(&server).await;
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], "0.1.0");
    assert!(
        body["broker"].as_str().is_some_and(|b| !b.is_empty()),
        "{body}"
    );
    assert_eq!(body["connections"], 0);
    assert_eq!(body["rooms"], 0);

    let mut a = Peer::connect(&server).await;
    let mut b = Peer::connect(&server).await;
    a.join("x", None).await;
    a.join("y", None).await;
    b.join("x", None).await;
    let body = health(&server).await;
    assert_eq!(body["connections"], 2, "{body}");
    assert_eq!(body["rooms"], 2, "{body}");

    // Connections and rooms go away with their clients.
    a.client.close(1000, "").await.unwrap();
    a.until_closed(STEP).await;
    drop(a);
    let deadline = Instant::now() + STEP;
    loop {
        let body = health(&server).await;
        if body["connections"] == 1 {
            assert_eq!(body["rooms"], 1, "room y had only a: {body}");
            break;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn index_page_is_html_and_unknown_paths_are_404_json() {
    let server = Server::start(&[]);
    let res = get(&server, "/").await;
    assert_eq!(res.status, 200);
    assert!(
        res.header("content-type")
            .is_some_and(|v| v.starts_with("text/html")),
        "{:?}",
        res.headers
    );
    let page = res.text().to_ascii_lowercase();
    assert!(page.contains("<html") && page.contains("</html>"), "{page}");

    let res = get(&server, "/no/such/page").await;
    assert_eq!(res.status, 404);
    assert!(res
        .header("content-type")
        .is_some_and(|v| v.starts_with("application/json")));
    let body = res.json();
    assert_eq!(body["error"], "not_found");
    assert!(body["message"].is_string(), "{body}");
}

/// Sends an upgrade request and checks the refusal: status, `bad_handshake`, and a message
/// that mentions `needle`.
async fn refused_handshake(
    server: &Server,
    request: &str,
    status: u16,
    needle: &str,
) -> HttpResponse {
    let res = http(server.addr, request).await;
    assert_eq!(res.status, status, "{request:?} → {}", res.text());
    let body = res.json();
    assert_eq!(body["error"], "bad_handshake", "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message
            .to_ascii_lowercase()
            .contains(&needle.to_ascii_lowercase()),
        "{request:?}: the message should name {needle:?}: {body}"
    );
    res
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_handshakes_are_refused_with_a_reason() {
    let server = Server::start(&[]);
    refused_handshake(
        &server,
        &upgrade_request("GET", &["Sec-WebSocket-Key"], ""),
        400,
        "Sec-WebSocket-Key",
    )
    .await;
    refused_handshake(
        &server,
        &upgrade_request(
            "GET",
            &["Sec-WebSocket-Key"],
            "Sec-WebSocket-Key: c2hvcnQ=\r\n",
        ),
        400,
        "Sec-WebSocket-Key",
    )
    .await;
    refused_handshake(
        &server,
        &upgrade_request("GET", &["Upgrade"], ""),
        400,
        "Upgrade",
    )
    .await;
    refused_handshake(
        &server,
        &upgrade_request("GET", &["Connection"], "Connection: keep-alive\r\n"),
        400,
        "Connection",
    )
    .await;
    refused_handshake(
        &server,
        &upgrade_request("POST", &[], "Content-Length: 0\r\n"),
        400,
        "GET",
    )
    .await;
    refused_handshake(
        &server,
        &upgrade_request("GET", &[], "Sec-WebSocket-Protocol: mqtt, chat\r\n"),
        400,
        "switchboard.v1",
    )
    .await;
    let res = refused_handshake(
        &server,
        &upgrade_request(
            "GET",
            &["Sec-WebSocket-Version"],
            "Sec-WebSocket-Version: 8\r\n",
        ),
        426,
        "version",
    )
    .await;
    assert_eq!(res.header("sec-websocket-version"), Some("13"));

    // None of them became a connection.
    assert_eq!(health(&server).await["connections"], 0);
    // A proper request still works.
    let res = http(server.addr, &upgrade_request("GET", &[], "")).await;
    assert_eq!(res.status, 101);
    assert_eq!(
        res.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "RFC 6455's example key"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn subprotocol_is_echoed_when_offered() {
    let server = Server::start(&[]);
    let res = http(
        server.addr,
        &upgrade_request(
            "GET",
            &[],
            "Sec-WebSocket-Protocol: other, switchboard.v1\r\n",
        ),
    )
    .await;
    assert_eq!(res.status, 101);
    assert_eq!(res.header("sec-websocket-protocol"), Some("switchboard.v1"));
    let res = http(server.addr, &upgrade_request("GET", &[], "")).await;
    assert_eq!(res.status, 101);
    assert_eq!(res.header("sec-websocket-protocol"), None);
}

/// Opens a TCP connection, sends `partial`, then waits for the server to drop it; returns
/// how long that took.
async fn stalled(server: &Server, partial: &str) -> Duration {
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    let started = Instant::now();
    s.write_all(partial.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    // Whatever the server says (perhaps a 408), the connection must end.
    let r = tokio::time::timeout(STEP, s.read_to_end(&mut buf)).await;
    let took = started.elapsed();
    match r {
        Err(_) => panic!("a stalled handshake ({partial:?}) was still open after {STEP:?}"),
        Ok(_) => took,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_half_sent_request_is_dropped_after_the_handshake_timeout() {
    let server = Server::start(&["--handshake-timeout", "500ms"]);
    let took = stalled(&server, "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgr").await;
    assert!(
        took >= Duration::from_millis(450),
        "dropped too early: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "dropped too late: {took:?}");
    // The server is fine afterwards.
    assert_eq!(health(&server).await["status"], "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_connection_is_dropped_after_the_handshake_timeout() {
    let server = Server::start(&["--handshake-timeout", "500ms"]);
    let took = stalled(&server, "").await;
    assert!(
        took >= Duration::from_millis(450),
        "dropped too early: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "dropped too late: {took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_handshakes_do_not_hold_up_others() {
    let server = Server::start(&["--handshake-timeout", "500ms"]);
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(TcpStream::connect(server.addr).await.expect("connect"));
    }
    // Meanwhile, real clients connect and talk.
    let mut a = Peer::connect(&server).await;
    a.join("r", None).await;
    assert_eq!(a.publish("r", json!(1)).await, 1);
    drop(idle);
}
