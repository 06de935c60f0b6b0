//! `switchboard_ws::handshake`: `validate_request` with an arbitrary method, HTTP version
//! and headers (built from the input, or parsed from it by httparse as the server does),
//! and the client's check of the answer (`parse_response`, `Response::verify`).
//!
//! Invariants: never panics; an accepted request was a GET over HTTP/1.1 whose last
//! `Sec-WebSocket-Key` is 16 bytes of base64, its `accept` is `accept_key` of that key and
//! passes the client's own check; offered protocols are non-empty and comma-free; errors
//! map to 400 or 426. A parsed response's head fits in the buffer and parses the same on
//! its own; `verify` accepts only a 101 whose accept header matches the key.

use arbitrary::{Arbitrary, Unstructured};
use switchboard_ws::handshake::{self, HandshakeError};

use super::{ensure, Target};

pub const TARGET: Target = Target {
    name: "ws_handshake",
    about: "switchboard_ws::handshake: validate_request and the client's response check",
    run,
    seeds,
    corpus: "ws_handshake",
    dict: &[
        b"GET",
        b"HTTP/1.1",
        b"HTTP/1.0",
        b"\r\n",
        b": ",
        b",",
        b";",
        b"=",
        b"Upgrade",
        b"websocket",
        b"Connection",
        b"upgrade",
        b"Sec-WebSocket-Key",
        b"Sec-WebSocket-Version",
        b"13",
        b"Sec-WebSocket-Protocol",
        b"Sec-WebSocket-Extensions",
        b"permessage-deflate",
        b"Sec-WebSocket-Accept",
        b"dGhlIHNhbXBsZSBub25jZQ==",
        b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
        b"101",
    ],
    max_len: 4096,
};

const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const METHODS: &[&str] = &["GET", "get", "POST", "GET ", "HEAD", ""];
const NAMES: &[&str] = &[
    "Upgrade",
    "connection",
    "Sec-WebSocket-Version",
    "SEC-WEBSOCKET-KEY",
    "Sec-WebSocket-Protocol",
    "sec-websocket-extensions",
    "Host",
];
const VALUES: &[&[u8]] = &[
    b"websocket",
    b"keep-alive, Upgrade",
    b"13",
    b" 13 ",
    b"dGhlIHNhbXBsZSBub25jZQ==",
    b"AAAAAAAAAAAAAAAAAAAAAA==",
    b"switchboard.v1, chat",
    b"permessage-deflate; client_max_window_bits; server_max_window_bits=\"10\", x",
    b",,, ;; =",
    b"\xff\xfe",
];

fn run(data: &[u8]) -> Result<(), String> {
    let Some((&mode, rest)) = data.split_first() else {
        return Ok(());
    };
    match mode % 3 {
        0 => structured(rest),
        1 => raw_request(rest),
        _ => response(rest),
    }
}

/// Builds method, version and headers from the input (arbitrary's `Unstructured`).
fn structured(data: &[u8]) -> Result<(), String> {
    let mut u = Unstructured::new(data);
    let method: String = match u.ratio(3, 4) {
        Ok(true) => u
            .choose(METHODS)
            .map(|m| (*m).to_owned())
            .unwrap_or_default(),
        _ => String::arbitrary(&mut u).unwrap_or_default(),
    };
    let http11 = u.ratio(7, 8).unwrap_or(true);
    let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
    while !u.is_empty() && headers.len() < 24 {
        let Ok(header) = header(&mut u) else { break };
        headers.push(header);
    }
    check_request(&method, http11, &headers)
}

fn header(u: &mut Unstructured) -> arbitrary::Result<(String, Vec<u8>)> {
    let name = if u.ratio(7, 8)? {
        (*u.choose(NAMES)?).to_owned()
    } else {
        String::arbitrary(u)?
    };
    let value = if u.ratio(2, 3)? {
        u.choose(VALUES)?.to_vec()
    } else {
        Vec::<u8>::arbitrary(u)?
    };
    Ok((name, value))
}

/// Parses the input as a request head, as the server's HTTP layer would, then validates it.
fn raw_request(data: &[u8]) -> Result<(), String> {
    let mut storage = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut storage);
    let Ok(httparse::Status::Complete(_)) = req.parse(data) else {
        return Ok(());
    };
    let method = req.method.unwrap_or("").to_owned();
    let http11 = req.version == Some(1);
    let headers: Vec<(String, Vec<u8>)> = req
        .headers
        .iter()
        .map(|h| (h.name.to_owned(), h.value.to_vec()))
        .collect();
    check_request(&method, http11, &headers)
}

fn check_request(method: &str, http11: bool, headers: &[(String, Vec<u8>)]) -> Result<(), String> {
    let result = handshake::validate_request(
        method,
        http11,
        headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
    );
    let up = match result {
        Err(e) => {
            return ensure(matches!(e.status(), 400 | 426), || {
                format!("{e:?} answers status {}", e.status())
            });
        }
        Ok(up) => up,
    };
    ensure(method == "GET" && http11, || {
        format!("accepted method {method:?}, HTTP/1.1 {http11}")
    })?;
    let key = headers
        .iter()
        .rev()
        .filter(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-key"))
        .find_map(|(_, v)| std::str::from_utf8(v).ok())
        .map(str::trim)
        .ok_or("accepted without a key")?;
    ensure(up.accept == handshake::accept_key(key), || {
        format!("accept {:?} is not the accept of key {key:?}", up.accept)
    })?;
    ensure(decoded_len(key) == Some(16), || {
        format!("accepted key {key:?}")
    })?;
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        up.accept
    );
    let res = handshake::parse_response(answer.as_bytes())
        .map_err(|e| format!("own answer does not parse: {e}"))?
        .ok_or("own answer is incomplete")?;
    res.verify(key)
        .map_err(|e| format!("own answer fails the client check: {e}"))?;
    for p in &up.protocols {
        ensure(!p.is_empty() && !p.contains(',') && p.trim() == p, || {
            format!("protocol token {p:?}")
        })?;
    }
    for e in &up.extensions {
        ensure(!e.name.is_empty() && !e.name.contains(';'), || {
            format!("extension name {:?}", e.name)
        })?;
    }
    Ok(())
}

/// Length of standard, padded base64 (as the key must be), or None.
fn decoded_len(key: &str) -> Option<usize> {
    let b = key.as_bytes();
    if !b.len().is_multiple_of(4) {
        return None;
    }
    let pad = b.iter().rev().take_while(|&&c| c == b'=').count();
    let body = &b[..b.len() - pad];
    if pad > 2
        || !body
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
    {
        return None;
    }
    Some(b.len() / 4 * 3 - pad)
}

/// The client's side: parse whatever came back and check it against a key.
fn response(data: &[u8]) -> Result<(), String> {
    let (key, buf) = match data.split_first() {
        Some((k, rest)) if k & 1 == 0 => (RFC_KEY.to_owned(), rest),
        Some((_, rest)) => {
            let n = rest.len().min(24);
            (String::from_utf8_lossy(&rest[..n]).into_owned(), &rest[n..])
        }
        None => return Ok(()),
    };
    let res = match handshake::parse_response(buf) {
        Ok(Some(res)) => res,
        Ok(None) | Err(HandshakeError::Malformed(_)) => return Ok(()),
        Err(e) => return Err(format!("parse_response failed with {e:?}")),
    };
    ensure(res.head_len <= buf.len(), || {
        format!(
            "head of {} bytes in a buffer of {}",
            res.head_len,
            buf.len()
        )
    })?;
    let alone = handshake::parse_response(&buf[..res.head_len])
        .map_err(|e| format!("the head alone does not parse: {e}"))?
        .ok_or("the head alone is incomplete")?;
    ensure(
        alone.status == res.status && alone.head_len == res.head_len,
        || "the head alone parses differently".into(),
    )?;
    if res.verify(&key).is_ok() {
        ensure(res.status == 101, || format!("verified a {}", res.status))?;
        ensure(
            res.header("sec-websocket-accept") == Some(handshake::accept_key(&key).as_str()),
            || "verified a wrong accept".into(),
        )?;
    }
    Ok(())
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let req = handshake::client_request(
        "example.com",
        "/ws",
        &["switchboard.v1"],
        &[(
            "Sec-WebSocket-Extensions",
            "permessage-deflate; client_max_window_bits",
        )],
        *b"the sample nonce",
    );
    let accept = handshake::accept_key(&req.key);
    let with = |mode: u8, bytes: &[u8]| {
        let mut v = vec![mode];
        v.extend_from_slice(bytes);
        v
    };
    let mut structured = vec![0u8];
    // Unstructured input for `structured`: mostly choices of known names and values.
    structured.extend_from_slice(&[
        0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 2, 0, 2, 0, 3, 0, 4, 0, 4, 0, 6,
    ]);
    vec![
        ("raw-client-request", with(1, &req.bytes)),
        (
            "raw-request-http10-post",
            with(1, b"POST /ws HTTP/1.0\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"),
        ),
        ("structured", structured),
        (
            "response-101",
            with(
                2,
                &[
                    format!(
                        "\x00HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                        handshake::accept_key(RFC_KEY)
                    )
                    .as_bytes(),
                    b"\x81\x02hi",
                ]
                .concat(),
            ),
        ),
        (
            "response-101-own-key",
            with(
                2,
                format!(
                    "\x01{}HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: {accept}\r\n\r\n",
                    req.key
                )
                .as_bytes(),
            ),
        ),
        (
            "response-400",
            with(2, b"\x00HTTP/1.1 400 Bad Request\r\nContent-Length: 5\r\n\r\nnope!"),
        ),
    ]
}
