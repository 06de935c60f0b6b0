//! Log lines: every connection is logged when it opens and when it ends, with its close code.

mod common;

use common::{field, Closed, Peer, Server, STEP};

#[tokio::test(flavor = "multi_thread")]
async fn connected_and_disconnected_lines_name_the_connection_and_code() {
    let server = Server::start(&[]);
    let listening = server
        .wait_for_log("`listening`", |l| l.contains("listening"))
        .await;
    assert_eq!(
        field(&listening, "addr"),
        Some(server.addr.to_string().as_str())
    );
    assert!(listening.contains("INFO"), "{listening}");

    let mut a = Peer::connect(&server).await;
    let local = a.client.protocol.clone();
    assert_eq!(local.as_deref(), Some("switchboard.v1"));
    let connected = server
        .wait_for_log("`connected`", |l| {
            l.contains(" connected") && field(l, "conn") == Some(&a.conn)
        })
        .await;
    assert!(
        field(&connected, "remote").is_some_and(|r| r.starts_with("127.0.0.1:")),
        "{connected}"
    );

    a.client.close(4321, "done here").await.unwrap();
    let (_, how) = a.until_closed(STEP).await;
    assert_eq!(how, Closed::Code(4321));
    let line = server.disconnected_line(&a.conn).await;
    assert_eq!(field(&line, "code"), Some("4321"), "{line}");
    assert_eq!(
        field(&line, "remote"),
        field(&connected, "remote"),
        "{line}"
    );
    assert!(line.contains("reason=done here"), "{line}");
    assert_eq!(field(&line, "by"), Some("client"), "{line}");

    // Exactly one of each for this connection.
    let logs = server.logs();
    let mine: Vec<_> = logs
        .iter()
        .filter(|l| field(l, "conn") == Some(&a.conn))
        .collect();
    assert_eq!(mine.len(), 2, "{mine:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn server_side_closes_are_logged_with_their_code() {
    let server = Server::start(&["--max-message-size", "200"]);
    let mut a = Peer::connect(&server).await;
    a.send_text(&format!(r#"{{"type":"ping","pad":"{}"}}"#, "p".repeat(300)))
        .await;
    let (_, how) = a.until_closed(STEP).await;
    assert_eq!(how, Closed::Code(1009));
    let conn = a.conn.clone();
    drop(a);
    let line = server.disconnected_line(&conn).await;
    assert_eq!(field(&line, "code"), Some("1009"), "{line}");
    assert_eq!(field(&line, "by"), Some("server"), "{line}");

    // An abrupt disconnect is logged as 1006.
    let b = Peer::connect(&server).await;
    let conn = b.conn.clone();
    drop(b);
    let line = server.disconnected_line(&conn).await;
    assert_eq!(field(&line, "code"), Some("1006"), "{line}");
}
