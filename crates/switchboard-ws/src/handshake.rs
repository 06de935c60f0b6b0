//! The opening handshake (RFC 6455 §4): validating a client's upgrade request on the server,
//! and building the request and checking the answer on the client.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use sha1::{Digest, Sha1};
use thiserror::Error;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why an upgrade request was refused; `Display` is the reason sent in the 400 body.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HandshakeError {
    #[error("a WebSocket handshake must be a GET request")]
    NotGet,
    #[error("a WebSocket handshake needs HTTP/1.1")]
    HttpVersion,
    #[error("missing `Upgrade: websocket` header")]
    NoUpgrade,
    #[error("missing `Connection: upgrade` header")]
    NoConnectionUpgrade,
    #[error("unsupported Sec-WebSocket-Version (this server speaks 13)")]
    Version,
    #[error("missing or malformed Sec-WebSocket-Key (16 bytes, base64)")]
    Key,
    #[error("the server answered {status} instead of 101 Switching Protocols")]
    Rejected { status: u16 },
    #[error("the server's Sec-WebSocket-Accept does not match the key")]
    Accept,
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
}

impl HandshakeError {
    /// The HTTP status a server answers this error with: 426 tells the client which
    /// version to use, every other malformed request is a 400.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::Version => 426,
            _ => 400,
        }
    }
}

/// One extension offer from `Sec-WebSocket-Extensions`, e.g. `permessage-deflate;
/// client_max_window_bits`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionOffer {
    pub name: String,
    pub params: Vec<(String, Option<String>)>,
}

/// A valid upgrade request, reduced to what the server needs to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// The value for `Sec-WebSocket-Accept`.
    pub accept: String,
    /// Subprotocols the client offered, in its order of preference.
    pub protocols: Vec<String>,
    /// Extensions the client offered, in order.
    pub extensions: Vec<ExtensionOffer>,
}

impl Upgrade {
    /// The first of `supported` that the client offered.
    pub fn pick_protocol<'a>(&self, supported: &[&'a str]) -> Option<&'a str> {
        self.protocols.iter().find_map(|p| {
            supported
                .iter()
                .find(|s| s.eq_ignore_ascii_case(p))
                .copied()
        })
    }
}

/// Validates an upgrade request. `headers` are name/value pairs as received (a name may
/// repeat; lists in one value are split on commas).
pub fn validate_request<'a>(
    method: &str,
    http11_or_newer: bool,
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Result<Upgrade, HandshakeError> {
    if method != "GET" {
        return Err(HandshakeError::NotGet);
    }
    if !http11_or_newer {
        return Err(HandshakeError::HttpVersion);
    }
    let mut upgrade = false;
    let mut connection = false;
    let mut version = None;
    let mut key = None;
    let mut protocols = Vec::new();
    let mut extensions = Vec::new();
    for (name, value) in headers {
        let Ok(value) = std::str::from_utf8(value) else {
            continue;
        };
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade |= tokens(value).any(|t| t.eq_ignore_ascii_case("websocket"));
        } else if name.eq_ignore_ascii_case("connection") {
            connection |= tokens(value).any(|t| t.eq_ignore_ascii_case("upgrade"));
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            version = Some(value.trim().to_owned());
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            key = Some(value.trim().to_owned());
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            protocols.extend(tokens(value).map(str::to_owned));
        } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
            extensions.extend(tokens(value).filter_map(parse_extension));
        }
    }
    if !upgrade {
        return Err(HandshakeError::NoUpgrade);
    }
    if !connection {
        return Err(HandshakeError::NoConnectionUpgrade);
    }
    if version.as_deref() != Some("13") {
        return Err(HandshakeError::Version);
    }
    let key = key.ok_or(HandshakeError::Key)?;
    match BASE64.decode(&key) {
        Ok(raw) if raw.len() == 16 => {}
        _ => return Err(HandshakeError::Key),
    }
    Ok(Upgrade {
        accept: accept_key(&key),
        protocols,
        extensions,
    })
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID.as_bytes());
    BASE64.encode(sha.finalize())
}

fn tokens(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|t| !t.is_empty())
}

fn parse_extension(offer: &str) -> Option<ExtensionOffer> {
    let mut parts = offer.split(';').map(str::trim);
    let name = parts.next().filter(|n| !n.is_empty())?.to_owned();
    let params = parts
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (
                k.trim().to_owned(),
                Some(v.trim().trim_matches('"').to_owned()),
            ),
            None => (p.to_owned(), None),
        })
        .collect();
    Some(ExtensionOffer { name, params })
}

/// A client's upgrade request, ready to write, and the key to check the answer against.
pub struct ClientRequest {
    pub bytes: Vec<u8>,
    pub key: String,
}

/// Builds a client upgrade request for `path` on `host`. `nonce` must be 16 random bytes.
pub fn client_request(
    host: &str,
    path: &str,
    protocols: &[&str],
    extra_headers: &[(&str, &str)],
    nonce: [u8; 16],
) -> ClientRequest {
    let key = BASE64.encode(nonce);
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    if !protocols.is_empty() {
        req.push_str(&format!(
            "Sec-WebSocket-Protocol: {}\r\n",
            protocols.join(", ")
        ));
    }
    for (name, value) in extra_headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    ClientRequest {
        bytes: req.into_bytes(),
        key,
    }
}

/// The head of the server's answer to an upgrade request.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Bytes of the buffer the head took; what follows is frames (or, for a refusal, a body).
    pub head_len: usize,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Checks that this is a 101 whose accept key matches `key`.
    pub fn verify(&self, key: &str) -> Result<(), HandshakeError> {
        if self.status != 101 {
            return Err(HandshakeError::Rejected {
                status: self.status,
            });
        }
        if self.header("sec-websocket-accept") != Some(accept_key(key).as_str()) {
            return Err(HandshakeError::Accept);
        }
        Ok(())
    }
}

/// Parses the response head from `buf`; `Ok(None)` if it is not complete yet.
pub fn parse_response(buf: &[u8]) -> Result<Option<Response>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut res = httparse::Response::new(&mut headers);
    match res.parse(buf) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(head_len)) => Ok(Some(Response {
            status: res.code.unwrap_or(0),
            headers: res
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_owned(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect(),
            head_len,
        })),
        Err(e) => Err(HandshakeError::Malformed(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Vec<(&'static str, &'static [u8])> {
        vec![
            ("Host", b"example.com"),
            ("Upgrade", b"websocket"),
            ("Connection", b"keep-alive, Upgrade"),
            ("Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", b"13"),
            ("Sec-WebSocket-Protocol", b"chat, switchboard.v1"),
            (
                "Sec-WebSocket-Extensions",
                b"permessage-deflate; client_max_window_bits",
            ),
        ]
    }

    #[test]
    fn accepts_the_rfc_example() {
        let up = validate_request("GET", true, good()).unwrap();
        assert_eq!(up.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(
            up.pick_protocol(&["switchboard.v1"]),
            Some("switchboard.v1")
        );
        assert_eq!(up.extensions[0].name, "permessage-deflate");
        assert_eq!(
            up.extensions[0].params,
            vec![("client_max_window_bits".to_owned(), None)]
        );
    }

    #[test]
    fn names_what_is_wrong_with_a_bad_request() {
        let without = |name: &str| {
            good()
                .into_iter()
                .filter(|(n, _)| *n != name)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            validate_request("POST", true, good()),
            Err(HandshakeError::NotGet)
        );
        assert_eq!(
            validate_request("GET", false, good()),
            Err(HandshakeError::HttpVersion)
        );
        assert_eq!(
            validate_request("GET", true, without("Upgrade")),
            Err(HandshakeError::NoUpgrade)
        );
        assert_eq!(
            validate_request("GET", true, without("Connection")),
            Err(HandshakeError::NoConnectionUpgrade)
        );
        assert_eq!(
            validate_request("GET", true, without("Sec-WebSocket-Key")),
            Err(HandshakeError::Key)
        );
        let mut short_key = without("Sec-WebSocket-Key");
        short_key.push(("Sec-WebSocket-Key", b"c2hvcnQ="));
        assert_eq!(
            validate_request("GET", true, short_key),
            Err(HandshakeError::Key)
        );
        let mut v8 = without("Sec-WebSocket-Version");
        v8.push(("Sec-WebSocket-Version", b"8"));
        let err = validate_request("GET", true, v8).unwrap_err();
        assert_eq!((err.clone(), err.status()), (HandshakeError::Version, 426));
    }

    #[test]
    fn client_request_round_trips_through_the_server_check() {
        let req = client_request("h", "/ws", &["switchboard.v1"], &[], [7; 16]);
        let text = String::from_utf8(req.bytes).unwrap();
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut parsed = httparse::Request::new(&mut headers);
        parsed.parse(text.as_bytes()).unwrap();
        let up = validate_request(
            "GET",
            true,
            parsed.headers.iter().map(|h| (h.name, h.value)),
        )
        .unwrap();
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            up.accept
        );
        let res = parse_response(answer.as_bytes()).unwrap().unwrap();
        res.verify(&req.key).unwrap();
        assert_eq!(res.head_len, answer.len());
    }
}
