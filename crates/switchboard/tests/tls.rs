//! TLS on the real binary (`tls_cert`, `tls_key`, `tls_redirect`): HTTPS and WSS from a
//! rustls client trusting a CA made here with the `openssl` CLI, certificate reload (SIGHUP
//! and a file change) under a connected client, the redirect listener, the handshake
//! timeout, plain HTTP on the TLS port, and bad certificate files at start.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{field, http, temp_dir, Server, STEP};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use switchboard_ws::handshake;
use switchboard_ws::{Decoder, Frame, Message, OpCode, Role};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A CA and leaf certificates for 127.0.0.1 and localhost, signed by it, in `dir`.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(label: &str) -> Pki {
        let dir = temp_dir(label);
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=Switchboard test CA",
            ],
        );
        Pki { dir }
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Makes leaf `name` (`name.pem`, `name.key`) with serial `serial`.
    fn leaf(&self, name: &str, serial: u32) -> (PathBuf, PathBuf) {
        let ext = self.dir.join("san.ext");
        std::fs::write(&ext, "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let pem = format!("{name}.pem");
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                "/CN=localhost",
            ],
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                &serial.to_string(),
                "-days",
                "2",
                "-extfile",
                "san.ext",
                "-out",
                &pem,
            ],
        );
        (self.dir.join(pem), self.dir.join(key))
    }

    fn connector(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.ca()).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("cannot run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The DER of the first certificate of a PEM file.
fn leaf_der(pem: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(pem)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

fn tls_args<'a>(cert: &'a Path, key: &'a Path) -> Vec<&'a str> {
    vec![
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]
}

async fn tls_connect(connector: &TlsConnector, addr: SocketAddr) -> TlsStream<TcpStream> {
    timeout(STEP, async {
        let tcp = TcpStream::connect(addr).await.expect("tcp connect");
        tcp.set_nodelay(true).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        connector.connect(name, tcp).await.expect("TLS handshake")
    })
    .await
    .expect("TLS connect timed out")
}

/// The certificate the server presented on `stream`.
fn presented(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// One HTTPS request (`Connection: close`): status and body.
async fn https_get(connector: &TlsConnector, addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tls_connect(connector, addr).await;
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.flush().await.unwrap();
    let mut raw = Vec::new();
    timeout(STEP, s.read_to_end(&mut raw))
        .await
        .expect("https response timed out")
        .ok();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A minimal WebSocket client over any stream (here: TLS).
struct Ws<S> {
    s: S,
    buf: BytesMut,
    decoder: Decoder,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Ws<S> {
    async fn open(mut s: S, path: &str, protocols: &[&str]) -> Ws<S> {
        let req = handshake::client_request("localhost", path, protocols, &[], [7u8; 16]);
        s.write_all(&req.bytes).await.unwrap();
        s.flush().await.unwrap();
        let mut buf = BytesMut::with_capacity(4096);
        let res = timeout(STEP, async {
            loop {
                assert!(
                    s.read_buf(&mut buf).await.unwrap() > 0,
                    "closed in the handshake"
                );
                if let Some(res) = handshake::parse_response(&buf).unwrap() {
                    return res;
                }
            }
        })
        .await
        .expect("WebSocket handshake timed out");
        res.verify(&req.key).expect("101 with the right accept key");
        let _ = buf.split_to(res.head_len);
        Ws {
            s,
            buf,
            decoder: Decoder::new(Role::Client, 16 << 20),
        }
    }

    async fn send(&mut self, opcode: OpCode, payload: &[u8]) {
        let frame = Frame::masked(opcode, payload, [1, 2, 3, 4]);
        timeout(STEP, async {
            self.s.write_all(frame.as_bytes()).await?;
            // tokio-rustls may keep records until flushed.
            self.s.flush().await
        })
        .await
        .expect("send timed out")
        .unwrap();
    }

    async fn send_json(&mut self, v: Value) {
        self.send(OpCode::Text, v.to_string().as_bytes()).await;
    }

    /// The next data message (pings answered); panics on a close or the end of the stream.
    async fn recv(&mut self) -> Message {
        timeout(STEP, async {
            loop {
                while let Some(m) = self.decoder.decode(&mut self.buf).unwrap() {
                    match m {
                        Message::Ping(p) => {
                            let pong = Frame::masked(OpCode::Pong, &p, [0; 4]);
                            self.s.write_all(pong.as_bytes()).await.unwrap();
                            self.s.flush().await.unwrap();
                        }
                        Message::Close(f) => panic!("closed by the server: {f:?}"),
                        other => return other,
                    }
                }
                let n = self.s.read_buf(&mut self.buf).await.expect("read");
                assert!(n > 0, "the stream ended");
            }
        })
        .await
        .expect("no message in time")
    }

    async fn recv_json(&mut self) -> Value {
        loop {
            if let Message::Text(t) = self.recv().await {
                return serde_json::from_slice(&t).unwrap();
            }
        }
    }

    /// The reply of type `kind` (or with `id`), skipping others.
    async fn next_where(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let v = self.recv_json().await;
            if pred(&v) {
                return v;
            }
        }
    }
}

async fn wss(pki: &TlsConnector, addr: SocketAddr, path: &str) -> Ws<TlsStream<TcpStream>> {
    let s = tls_connect(pki, addr).await;
    let protocols: &[&str] = if path == "/ws" {
        &["switchboard.v1"]
    } else {
        &[]
    };
    Ws::open(s, path, protocols).await
}

/// Joins `room` on a fresh `/ws` connection (after its welcome).
async fn member(
    connector: &TlsConnector,
    addr: SocketAddr,
    room: &str,
) -> Ws<TlsStream<TcpStream>> {
    let mut ws = wss(connector, addr, "/ws").await;
    let welcome = ws.recv_json().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    ws.send_json(json!({"type": "join", "id": 1, "room": room}))
        .await;
    let joined = ws.next_where(|v| v["id"] == 1).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    ws
}

/// `a` publishes `text` to `room` and `b` receives it.
async fn exchange(
    a: &mut Ws<TlsStream<TcpStream>>,
    b: &mut Ws<TlsStream<TcpStream>>,
    room: &str,
    text: &str,
    id: u64,
) {
    a.send_json(json!({"type": "publish", "id": id, "room": room, "data": {"text": text}}))
        .await;
    let ok = a.next_where(|v| v["id"] == id).await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let got = b.next_where(|v| v["type"] == "message").await;
    assert_eq!(got["data"]["text"], text, "{got}");
    assert_eq!(got["room"], room);
}

#[tokio::test]
async fn https_wss_documents_and_echo_over_tls() {
    let pki = Pki::new("tls-basic");
    let (cert, key) = pki.leaf("leaf", 1);
    let mut args = tls_args(&cert, &key);
    args.push("--echo-endpoint");
    let server = Server::start(&args);
    let tls = pki.connector();

    let (status, body) = https_get(&tls, server.addr, "/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"status": "ok"})
    );
    let (status, body) = https_get(&tls, server.addr, "/chat/").await;
    assert_eq!(status, 200, "the chat app over https");
    assert!(body.contains("<html") || body.contains("<!doctype") || body.contains("<!DOCTYPE"));

    // Two members of a room: a publish reaches the other, both ways, many times.
    let mut a = member(&tls, server.addr, "chat:tls").await;
    let mut b = member(&tls, server.addr, "chat:tls").await;
    exchange(&mut a, &mut b, "chat:tls", "hello over wss", 10).await;
    exchange(&mut b, &mut a, "chat:tls", "and back", 11).await;
    // A message larger than a TLS record (16 KiB) in both directions.
    let big = "x".repeat(40_000);
    exchange(&mut a, &mut b, "chat:tls", &big, 12).await;

    // /echo: a large message and a burst of small ones come back in order.
    let mut echo = wss(&tls, server.addr, "/echo").await;
    let payload = "e".repeat(60_000);
    echo.send(OpCode::Text, payload.as_bytes()).await;
    match echo.recv().await {
        Message::Text(t) => assert_eq!(t.len(), payload.len()),
        other => panic!("echo: {other:?}"),
    }
    for i in 0..200 {
        echo.send(OpCode::Binary, format!("m{i}").as_bytes()).await;
    }
    for i in 0..200 {
        match echo.recv().await {
            Message::Binary(b) => assert_eq!(&b[..], format!("m{i}").as_bytes()),
            other => panic!("echo: {other:?}"),
        }
    }

    // /yjs: the document endpoint answers with its sync step 1 (a binary message).
    let mut doc = wss(&tls, server.addr, "/yjs/tls-notes").await;
    // y-websocket's sync step 1 with an empty state vector.
    doc.send(OpCode::Binary, &[0, 0, 1, 0]).await;
    match doc.recv().await {
        Message::Binary(b) => assert_eq!(b[0], 0, "a sync message: {b:?}"),
        other => panic!("document: {other:?}"),
    }

    let line = server
        .wait_for_log("a TLS `connected` line", |l| {
            l.contains("connected") && l.contains("tls=true")
        })
        .await;
    assert!(field(&line, "conn").is_some());
}

#[tokio::test]
async fn certificate_reload_keeps_connections_and_serves_the_new_one() {
    let pki = Pki::new("tls-reload");
    let (cert1, key1) = pki.leaf("one", 1);
    let (cert2, key2) = pki.leaf("two", 2);
    let (cert3, key3) = pki.leaf("three", 3);
    // The server reads `live.pem`/`live.key`, which the test replaces.
    let live_cert = pki.dir.join("live.pem");
    let live_key = pki.dir.join("live.key");
    std::fs::copy(&cert1, &live_cert).unwrap();
    std::fs::copy(&key1, &live_key).unwrap();
    let server = Server::start(&tls_args(&live_cert, &live_key));
    let tls = pki.connector();
    let reloads = |server: &Server| {
        server
            .logs()
            .iter()
            .filter(|l| l.contains("certificate reloaded"))
            .count()
    };

    let mut a = member(&tls, server.addr, "chat:reload").await;
    let mut b = member(&tls, server.addr, "chat:reload").await;
    assert_eq!(
        presented(&tls_connect(&tls, server.addr).await),
        leaf_der(&cert1)
    );

    // SIGHUP: the files are read again (replaced in place, key first).
    std::fs::copy(&key2, &live_key).unwrap();
    std::fs::copy(&cert2, &live_cert).unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_until("a reload after SIGHUP", || reloads(&server) >= 1).await;
    wait_for_cert(&tls, server.addr, &cert2).await;
    exchange(&mut a, &mut b, "chat:reload", "after SIGHUP", 20).await;

    // A change of the files alone (a new file renamed over the old: a new inode).
    let tmp_cert = pki.dir.join("tmp.pem");
    let tmp_key = pki.dir.join("tmp.key");
    std::fs::copy(&cert3, &tmp_cert).unwrap();
    std::fs::copy(&key3, &tmp_key).unwrap();
    let before = reloads(&server);
    std::fs::rename(&tmp_key, &live_key).unwrap();
    std::fs::rename(&tmp_cert, &live_cert).unwrap();
    wait_until("a reload after the files changed", || {
        reloads(&server) > before
    })
    .await;
    wait_for_cert(&tls, server.addr, &cert3).await;
    exchange(&mut b, &mut a, "chat:reload", "after the file change", 21).await;

    // A broken new file: an error in the log, and the previous certificate still served.
    std::fs::write(&live_cert, "not a certificate\n").unwrap();
    server
        .wait_for_log("the reload error", |l| {
            l.contains("still serving the previous certificate") && l.contains("live.pem")
        })
        .await;
    assert_eq!(
        presented(&tls_connect(&tls, server.addr).await),
        leaf_der(&cert3)
    );
    exchange(&mut a, &mut b, "chat:reload", "after a bad file", 22).await;
    // The old connections never dropped.
    assert!(!server.logs().iter().any(|l| l.contains("disconnected")));
}

async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + STEP;
    while !cond() {
        assert!(Instant::now() < deadline, "no {what} within {STEP:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until a new connection is served `pem`'s certificate.
async fn wait_for_cert(tls: &TlsConnector, addr: SocketAddr, pem: &Path) {
    let want = leaf_der(pem);
    let deadline = Instant::now() + STEP;
    loop {
        if presented(&tls_connect(tls, addr).await) == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} not served within {STEP:?}",
            pem.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_redirect_listener_answers_301_to_https() {
    let pki = Pki::new("tls-redirect");
    let (cert, key) = pki.leaf("leaf", 1);
    let mut args = tls_args(&cert, &key);
    args.extend(["--tls-redirect", "127.0.0.1:0"]);
    let server = Server::start(&args);
    let line = server
        .wait_for_log("`listening`", |l| l.contains("listening"))
        .await;
    let redirect: SocketAddr = field(&line, "redirect").unwrap().parse().unwrap();
    let port = server.addr.port();

    let res = http(
        redirect,
        "GET /chat/?room=lobby HTTP/1.1\r\nHost: example.com:8080\r\n\r\n",
    )
    .await;
    assert_eq!(res.status, 301);
    assert_eq!(
        res.header("location"),
        Some(format!("https://example.com:{port}/chat/?room=lobby").as_str())
    );
    let res = http(redirect, "GET /ws HTTP/1.1\r\nHost: [::1]:80\r\n\r\n").await;
    assert_eq!(
        res.header("location"),
        Some(format!("https://[::1]:{port}/ws").as_str())
    );
    // Without a Host there is nowhere to send the client.
    let res = http(redirect, "GET / HTTP/1.0\r\n\r\n").await;
    assert_eq!(res.status, 400);
    assert_eq!(res.json()["error"], "bad_request");
    // Nor with one that is not a host name.
    let res = http(redirect, "GET / HTTP/1.1\r\nHost: evil.com/x@y\r\n\r\n").await;
    assert_eq!(res.status, 400);

    // The https side is where it points.
    let (status, _) = https_get(&pki.connector(), server.addr, "/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_silent_client_is_closed_after_the_handshake_timeout() {
    let pki = Pki::new("tls-timeout");
    let (cert, key) = pki.leaf("leaf", 1);
    let mut args = tls_args(&cert, &key);
    args.extend(["--handshake-timeout", "500ms"]);
    let server = Server::start(&args);

    let started = Instant::now();
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let n = timeout(STEP, silent.read(&mut buf))
        .await
        .expect("the silent connection stayed open")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400),
        "closed too early: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "closed too late: {waited:?}"
    );

    // One that stalls inside the handshake (a ClientHello cut short) too.
    let started = Instant::now();
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    let n = timeout(STEP, stalled.read(&mut buf))
        .await
        .expect("the stalled handshake stayed open")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() >= Duration::from_millis(400));

    // The server is fine.
    let (status, _) = https_get(&pki.connector(), server.addr, "/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn plain_http_and_garbage_on_the_tls_port_are_refused_cleanly() {
    let pki = Pki::new("tls-plain");
    let (cert, key) = pki.leaf("leaf", 1);
    let server = Server::start(&tls_args(&cert, &key));

    let res = http(
        server.addr,
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await;
    assert_eq!(res.status, 400);
    assert_eq!(res.json()["error"], "tls_required");
    // A plain WebSocket handshake gets the same.
    let res = http(server.addr, &common::upgrade_request("GET", &[], "")).await;
    assert_eq!(res.status, 400);

    // Bytes that are neither: a TLS alert, then the connection closes.
    let mut junk = TcpStream::connect(server.addr).await.unwrap();
    junk.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 6, 7, 8])
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = timeout(STEP, junk.read_to_end(&mut rest))
        .await
        .expect("the junk connection stayed open");
    let mut junk = TcpStream::connect(server.addr).await.unwrap();
    junk.write_all(&[0xff; 100]).await.unwrap();
    let _ = timeout(STEP, junk.read_to_end(&mut rest))
        .await
        .expect("the junk connection stayed open");

    let (status, _) = https_get(&pki.connector(), server.addr, "/healthz").await;
    assert_eq!(status, 200, "the server still serves TLS");
    assert!(!server.logs().iter().any(|l| l.contains("panicked")));
}

#[tokio::test]
async fn bad_certificate_files_stop_the_start_naming_them() {
    let pki = Pki::new("tls-bad");
    let (cert, key) = pki.leaf("leaf", 1);
    let (_, other_key) = pki.leaf("other", 2);
    let garbage = pki.dir.join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let empty = pki.dir.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let missing = pki.dir.join("missing.pem");
    let data = temp_dir("tls-bad-data");
    let data = data.to_str().unwrap();

    let cases: [(&Path, &Path, &Path); 5] = [
        (&garbage, &key, &garbage),
        (&empty, &key, &empty),
        (&missing, &key, &missing),
        (&cert, &garbage, &garbage),
        (&cert, &other_key, &other_key),
    ];
    for (c, k, named) in cases {
        let mut args = tls_args(c, k);
        args.extend(["--data-dir", data]);
        let e = match Server::launch(None, "127.0.0.1:0", &args, Duration::from_secs(20)) {
            Ok(_) => panic!("started with cert {} key {}", c.display(), k.display()),
            Err(e) => e,
        };
        assert!(e.status.is_some_and(|s| !s.success()), "{:?}", e.status);
        assert!(
            e.stderr.contains(named.to_str().unwrap()),
            "the message names {}: {}",
            named.display(),
            e.stderr
        );
    }
    // Only one of the pair: refused as a setting.
    let cert_only = ["--tls-cert", cert.to_str().unwrap(), "--data-dir", data];
    let e = Server::launch(None, "127.0.0.1:0", &cert_only, Duration::from_secs(20))
        .err()
        .expect("started with tls_cert alone");
    assert!(e.stderr.contains("tls_key"), "{}", e.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_client_that_stops_reading_is_closed_with_4009_and_others_go_on() {
    let pki = Pki::new("tls-slow");
    let (cert, key) = pki.leaf("leaf", 1);
    let mut args = tls_args(&cert, &key);
    args.extend([
        "--max-outbound-queue",
        "64KiB",
        "--message-rate",
        "100000",
        "--message-burst",
        "100000",
    ]);
    let server = Server::start(&args);
    let tls = pki.connector();
    let mut slow = member(&tls, server.addr, "chat:slow").await;
    let mut reader = member(&tls, server.addr, "chat:slow").await;
    let mut publisher = member(&tls, server.addr, "chat:slow").await;
    // `slow` reads nothing from here on: what it is sent piles up in the kernel, then in
    // rustls, then in its queue, which overflows.
    let filler = "x".repeat(16 * 1024);
    let mut seq = 0u64;
    let deadline = Instant::now() + 3 * STEP;
    loop {
        // One at a time: the reader keeps up, in order, its queue never near full.
        for _ in 0..20 {
            seq += 1;
            publisher
                .send_json(
                    json!({"type": "publish", "room": "chat:slow", "echo": false,
                                  "data": {"seq": seq, "fill": filler}}),
                )
                .await;
            let m = reader.next_where(|v| v["type"] == "message").await;
            assert_eq!(m["data"]["seq"], seq);
        }
        if server
            .logs()
            .iter()
            .any(|l| l.contains("disconnected") && l.contains("code=4009"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slow TLS client was not closed ({seq} sent)"
        );
    }
    // The slow client's connection ends (its close frame is somewhere behind the backlog).
    let mut sink = vec![0u8; 1 << 16];
    let drained = timeout(STEP, async {
        loop {
            match slow.s.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "the slow connection stayed open");
    exchange(&mut publisher, &mut reader, "chat:slow", "still here", 99).await;
}

#[tokio::test]
async fn tls_handshakes_count_as_pending_connections() {
    let pki = Pki::new("tls-pending");
    let (cert, key) = pki.leaf("leaf", 1);
    let mut args = tls_args(&cert, &key);
    args.extend(["--max-pending-connections-per-ip", "2"]);
    let server = Server::start(&args);
    // Two silent connections fill this address's pending places; a third closes the oldest
    // at once (long before the 10 s handshake timeout).
    let mut first = TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _second = TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let _third = TcpStream::connect(server.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = timeout(Duration::from_secs(3), first.read(&mut buf))
        .await
        .expect("the oldest pending connection stayed open")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() < Duration::from_secs(3));
    // A real client still gets in (closing the oldest silent one again).
    let (status, _) = https_get(&pki.connector(), server.addr, "/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn shutdown_closes_tls_clients_with_1001_and_close_notify() {
    let pki = Pki::new("tls-shutdown");
    let (cert, key) = pki.leaf("leaf", 1);
    let mut server = Server::start(&tls_args(&cert, &key));
    let tls = pki.connector();
    let mut a = member(&tls, server.addr, "chat:bye").await;
    server.sigterm();
    // `shutdown`, then the close frame with 1001, then the end of the TLS stream.
    let close = timeout(STEP, async {
        loop {
            while let Some(m) = a.decoder.decode(&mut a.buf).unwrap() {
                if let Message::Close(f) = m {
                    return f;
                }
            }
            let n = a.s.read_buf(&mut a.buf).await.expect("read");
            assert!(n > 0, "the stream ended before a close frame");
        }
    })
    .await
    .expect("no close frame");
    assert_eq!(close.map(|f| f.code.0), Some(1001));
    a.s.write_all(Frame::masked_close(switchboard_ws::CloseCode(1001), "", [0; 4]).as_bytes())
        .await
        .unwrap();
    a.s.flush().await.unwrap();
    // A clean end of the TLS stream (close_notify: read returns 0, not an error).
    let mut rest = Vec::new();
    let end = timeout(STEP, a.s.read_to_end(&mut rest))
        .await
        .expect("still open");
    assert!(end.is_ok(), "the TLS stream did not end cleanly: {end:?}");
    let status = server
        .wait_exit(STEP)
        .await
        .expect("the server did not exit");
    assert!(status.success(), "{status}");
}
