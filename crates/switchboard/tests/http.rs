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
async fn healthz_says_only_the_status_unless_details_are_enabled() {
    let server = Server::start(&[]);
    let mut a = Peer::connect(&server).await;
    a.join("x", None).await;
    let body = health(&server).await;
    assert_eq!(
        body,
        json!({"status": "ok"}),
        "no version or counts for anyone"
    );
    let res = http(
        server.addr,
        "HEAD /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.header("content-length"),
        Some("15"),
        "{:?}",
        res.headers
    );
    assert!(res.body.is_empty(), "HEAD has no body");
    let res = http(
        server.addr,
        "DELETE /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(res.status, 405);
    assert_eq!(res.header("allow"), Some("GET, HEAD"));
    assert_eq!(res.json()["error"], "method_not_allowed");
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_reports_connections_and_rooms() {
    let server = Server::start(&["--health-details"]);
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
    let server = Server::start(&["--health-details"]);
    let res = http(
        server.addr,
        &upgrade_request("POST", &[], "Content-Length: 0\r\n"),
    )
    .await;
    assert_eq!(res.status, 405, "{}", res.text());
    assert_eq!(res.header("allow"), Some("GET"));
    assert_eq!(res.json()["error"], "method_not_allowed");
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

/// The web apps carry headers that stop other sites from framing them (clickjacking) and
/// scripts from anywhere but this origin; HEAD answers with the length GET would send.
#[tokio::test(flavor = "multi_thread")]
async fn web_apps_are_served_with_security_headers() {
    let server = Server::start(&[]);
    for page in ["/", "/chat/", "/editor/"] {
        let res = get(&server, page).await;
        assert_eq!(res.status, 200, "{page}");
        let csp = res.header("content-security-policy").unwrap_or_default();
        for directive in [
            "frame-ancestors 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "connect-src 'self'",
        ] {
            assert!(csp.contains(directive), "{page}: {csp}");
        }
        let scripts = csp
            .split(';')
            .find(|d| d.trim_start().starts_with("script-src"))
            .unwrap_or_default();
        assert!(
            !scripts.contains("unsafe-inline")
                && !scripts.contains("unsafe-eval")
                && !scripts.contains('*'),
            "{page}: {scripts}"
        );
        assert_eq!(res.header("x-frame-options"), Some("SAMEORIGIN"), "{page}");
        assert_eq!(res.header("referrer-policy"), Some("same-origin"), "{page}");
        assert_eq!(
            res.header("x-content-type-options"),
            Some("nosniff"),
            "{page}"
        );

        let head = http(
            server.addr,
            &format!("HEAD {page} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(head.status, 200, "{page}");
        assert_eq!(
            head.header("content-length"),
            Some(res.body.len().to_string().as_str()),
            "{page}: HEAD says how long GET's body is"
        );
        assert!(head.body.is_empty(), "{page}");

        let post = http(
            server.addr,
            &format!("POST {page} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(post.status, 405, "{page}");
        assert_eq!(post.header("allow"), Some("GET, HEAD"), "{page}");
    }
    // The editor's import map is an inline script: its hash is in the policy.
    let res = get(&server, "/editor/").await;
    let csp = res.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("'sha256-"), "{csp}");
}

/// Thousands of TCP connections that never send a request (finding: all were held until
/// the handshake timeout, and near the open-file limit nobody else got in). They are
/// counted from the moment they are accepted; at the limit the oldest is closed, so
/// `/healthz` and a real client still get through at once.
#[tokio::test(flavor = "multi_thread")]
async fn silent_connections_never_lock_out_healthz_or_clients() {
    const SILENT: usize = 3000;
    let server = Server::start(&["--handshake-timeout", "60s"]);
    let mut silent = Vec::with_capacity(SILENT);
    for _ in 0..SILENT {
        silent.push(TcpStream::connect(server.addr).await.expect("connect"));
    }
    // Served at once, despite 3,000 silent connections ahead of it.
    let started = Instant::now();
    assert_eq!(health(&server).await["status"], "ok");
    let mut a = Peer::connect(&server).await;
    a.join("r", None).await;
    assert_eq!(a.publish("r", json!(1)).await, 1);
    assert!(started.elapsed() < STEP);
    // All but the newest (at most max_pending_connections_per_ip = 256) were closed by the
    // server long before the 60 s handshake timeout.
    let mut open = 0;
    let mut buf = [0u8; 16];
    for s in &mut silent {
        match tokio::time::timeout(Duration::from_millis(2), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            _ => open += 1,
        }
    }
    assert!(open <= 256, "{open} silent connections still open");
    let vm_rss_kib = common::rss_kib(server.pid());
    assert!(vm_rss_kib < 64 * 1024, "server holds {vm_rss_kib} KiB");
}
