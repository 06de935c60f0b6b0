//! Graceful shutdown on SIGTERM.

mod common;

use std::time::{Duration, Instant};

use common::{Closed, Peer, Server, STEP};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_tells_every_client_and_exits_0() {
    let mut server = Server::start(&["--shutdown-timeout", "5s"]);
    let mut peers = Vec::new();
    for i in 0..6 {
        let mut p = Peer::connect(&server).await;
        match i % 3 {
            0 => {
                p.join("a", Some(json!({"i": i}))).await;
            }
            1 => {
                p.join("a", None).await;
                p.join("b", None).await;
            }
            _ => {} // in no room
        }
        peers.push(p);
    }
    for p in &mut peers {
        p.barrier().await;
    }
    // Traffic in flight when the signal arrives is fine too.
    peers[0].publish("a", json!("before")).await;

    let signalled = Instant::now();
    server.sigterm();
    let mut tasks = Vec::new();
    for mut p in peers {
        tasks.push(tokio::spawn(async move {
            let (frames, how) = p.until_closed(STEP).await;
            (p.conn.clone(), frames, how)
        }));
    }
    let mut closed = 0;
    for t in tasks {
        let (conn, frames, how) = t.await.expect("client task");
        assert_eq!(how, Closed::Code(1001), "{conn}: {frames:?}");
        let last = frames.last().unwrap_or_else(|| panic!("{conn}: no frames"));
        assert_eq!(
            last,
            &json!({"type": "shutdown", "reason": "server shutting down", "reconnect_ms": 1000}),
            "{conn}: `shutdown` is the last frame before the close: {frames:?}"
        );
        assert_eq!(
            frames.iter().filter(|f| f["type"] == "shutdown").count(),
            1,
            "{conn}: {frames:?}"
        );
        closed += 1;
    }
    assert_eq!(closed, 6);

    let status = server
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("the server did not exit within the shutdown timeout");
    assert_eq!(status.code(), Some(0), "exit status {status}");
    let took = signalled.elapsed();
    assert!(took < Duration::from_secs(5), "{took:?}");
    let logs = server.logs();
    assert!(
        logs.iter().any(|l| l.contains("shutting down")),
        "{logs:#?}"
    );
    assert!(
        logs.iter().any(|l| l.contains("all connections closed")),
        "every client answered the close: {logs:#?}"
    );
    let disconnected: Vec<_> = logs.iter().filter(|l| l.contains("disconnected")).collect();
    assert_eq!(disconnected.len(), 6, "{logs:#?}");
    assert!(disconnected
        .iter()
        .all(|l| common::field(l, "code") == Some("1001")));
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_does_not_wait_past_the_timeout_for_a_client_that_never_reads() {
    let mut server = Server::start(&["--shutdown-timeout", "1s"]);
    let mut deaf = Peer::connect(&server).await;
    deaf.join("r", None).await;
    let mut fine = Peer::connect(&server).await;
    fine.join("r", None).await;
    let signalled = Instant::now();
    server.sigterm();
    // `fine` reads and answers the close; `deaf` never reads again.
    let (frames, how) = fine.until_closed(STEP).await;
    assert_eq!(how, Closed::Code(1001));
    assert_eq!(
        frames.last().map(|f| f["type"].clone()),
        Some(json!("shutdown"))
    );
    let status = server
        .wait_exit(Duration::from_secs(4))
        .await
        .expect("the server waited for the deaf client past its shutdown timeout");
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(
        took >= Duration::from_millis(900),
        "waited for the deaf client: {took:?}"
    );
    drop(deaf);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_new_connections_while_shutting_down() {
    let mut server = Server::start(&["--shutdown-timeout", "2s"]);
    // A client that never reads keeps the server in its shutdown phase for a while.
    let _deaf = Peer::connect(&server).await;
    server.sigterm();
    server
        .wait_for_log("`shutting down`", |l| l.contains("shutting down"))
        .await;
    assert!(
        server.wait_exit(Duration::ZERO).await.is_none(),
        "still draining"
    );
    let r = tokio::time::timeout(STEP, switchboard_client::Client::connect(&server.url()))
        .await
        .expect("connect timed out");
    match r {
        Err(switchboard_client::Error::Io(_)) => {} // the listener is closed
        Err(switchboard_client::Error::Refused { status, .. }) => assert_eq!(status, 503),
        Err(e) => panic!("unexpected: {e}"),
        Ok(_) => panic!("a connection was accepted during shutdown"),
    }
    let status = server
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("exit");
    assert_eq!(status.code(), Some(0));
}

/// Document (`/yjs`) and echo (`/echo`) connections are told too: they close with 1001 at
/// once, and the server does not wait for its shutdown timeout.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_closes_document_and_echo_connections_too() {
    let mut server = Server::start(&["--shutdown-timeout", "30s", "--echo-endpoint"]);
    let host = server.addr;
    let mut clients = Vec::new();
    for path in ["/echo", "/yjs/notes", "/yjs/other"] {
        let url = format!("ws://{host}{path}");
        let c = switchboard_client::Client::connect_with(&url, common::no_subprotocol())
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        clients.push((path, c));
    }
    // The echo connection answers: it is open and served.
    clients[0].1.send_text("hello").await.unwrap();
    loop {
        match clients[0].1.recv().await.expect("echo") {
            switchboard_client::switchboard_ws::Message::Text(t) if &t[..] == b"hello" => break,
            _ => {}
        }
    }
    let signalled = Instant::now();
    server.sigterm();
    for (path, mut c) in clients {
        let code = tokio::time::timeout(STEP, async {
            loop {
                if let Err(e) = c.recv().await {
                    return e.close_code();
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{path}: still open after the shutdown began"));
        assert_eq!(code, Some(1001), "{path}");
    }
    let status = server
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("the server exits without waiting for its 30 s shutdown timeout");
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(signalled.elapsed() < Duration::from_secs(10));
}
