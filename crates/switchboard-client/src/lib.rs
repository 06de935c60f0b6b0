//! A Switchboard client on the `switchboard-ws` codec: connect, send JSON frames, read
//! what the server sends. Used by the server's tests and the load generator, and usable
//! from any Rust program that talks protocol v1.
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchboard_client::Error> {
//! let mut client = switchboard_client::Client::connect("ws://127.0.0.1:8080/ws").await?;
//! let welcome = client.recv_json().await?;
//! client.send_json(&serde_json::json!({"type": "join", "id": 1, "room": "chat:lobby"})).await?;
//! let joined = client.recv_json().await?;
//! # let _ = (welcome, joined); Ok(()) }
//! ```

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use bytes::{Bytes, BytesMut};
use serde_json::Value;
use switchboard_ws::deflate::{self, Deflater, Params};
use switchboard_ws::handshake::{self, HandshakeError};
use switchboard_ws::{
    encode_frame, CloseCode, CloseFrame, Decoder, Frame, Message, OpCode, ProtocolError, Role,
};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use switchboard_ws;

#[derive(Debug, Error)]
pub enum Error {
    #[error("invalid URL {0:?} (expected ws://host:port/path)")]
    Url(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    /// The server refused the upgrade with an HTTP status and a body.
    #[error("the server refused the connection: {status} {body}")]
    Refused { status: u16, body: String },
    #[error("protocol: {0}")]
    Protocol(#[from] ProtocolError),
    /// The connection is closed; the server's close frame, if it sent one.
    #[error("connection closed: {0:?}")]
    Closed(Option<CloseFrame>),
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    /// The close code, when the error is a close.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            Error::Closed(Some(f)) => Some(f.code.0),
            Error::Closed(None) => Some(1005),
            _ => None,
        }
    }
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct Options {
    /// Subprotocols to offer; `switchboard.v1` by default.
    pub protocols: Vec<String>,
    pub headers: Vec<(String, String)>,
    /// Answer WebSocket pings automatically (turn off to play a client that stopped
    /// answering heartbeats).
    pub auto_pong: bool,
    pub max_message_size: usize,
    /// Offer permessage-deflate (`permessage-deflate; client_max_window_bits`, as browsers
    /// do); what the server accepted is [`Client::compression`].
    pub compression: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            protocols: vec!["switchboard.v1".to_owned()],
            headers: Vec::new(),
            auto_pong: true,
            max_message_size: 64 << 20,
            compression: false,
        }
    }
}

pub struct Client {
    stream: TcpStream,
    buf: BytesMut,
    decoder: Decoder,
    auto_pong: bool,
    rng: u64,
    closed: Option<Option<CloseFrame>>,
    /// The subprotocol the server selected.
    pub protocol: Option<String>,
    /// permessage-deflate as the server accepted it.
    pub compression: Option<Params>,
}

impl Client {
    pub async fn connect(url: &str) -> Result<Client, Error> {
        Client::connect_with(url, Options::default()).await
    }

    pub async fn connect_with(url: &str, options: Options) -> Result<Client, Error> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| Error::Url(url.to_owned()))?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let mut stream = TcpStream::connect(host).await?;
        stream.set_nodelay(true)?;
        Client::handshake(&mut stream, host, path, &options)
            .await
            .map(|(buf, protocol, compression)| {
                let mut decoder = Decoder::new(Role::Client, options.max_message_size);
                if let Some(p) = &compression {
                    decoder.enable_deflate(p);
                }
                Client {
                    stream,
                    buf,
                    decoder,
                    auto_pong: options.auto_pong,
                    rng: RandomState::new().build_hasher().finish() | 1,
                    closed: None,
                    protocol,
                    compression,
                }
            })
    }

    async fn handshake(
        stream: &mut TcpStream,
        host: &str,
        path: &str,
        options: &Options,
    ) -> Result<(BytesMut, Option<String>, Option<Params>), Error> {
        let protocols: Vec<&str> = options.protocols.iter().map(String::as_str).collect();
        let mut headers: Vec<(&str, &str)> = options
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        if options.compression {
            headers.push((
                "Sec-WebSocket-Extensions",
                "permessage-deflate; client_max_window_bits",
            ));
        }
        let nonce: [u8; 16] = {
            let mut h = RandomState::new().build_hasher();
            h.write_u8(1);
            let a = h.finish();
            h.write_u8(2);
            let b = h.finish();
            let mut n = [0u8; 16];
            n[..8].copy_from_slice(&a.to_le_bytes());
            n[8..].copy_from_slice(&b.to_le_bytes());
            n
        };
        let req = handshake::client_request(host, path, &protocols, &headers, nonce);
        stream.write_all(&req.bytes).await?;
        let mut buf = BytesMut::with_capacity(4096);
        loop {
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(Error::Handshake(HandshakeError::Malformed(
                    "connection closed during the handshake".into(),
                )));
            }
            let Some(res) = handshake::parse_response(&buf)? else {
                continue;
            };
            if res.status != 101 {
                let len: usize = res
                    .header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                while buf.len() < res.head_len + len {
                    if stream.read_buf(&mut buf).await? == 0 {
                        break;
                    }
                }
                let end = buf.len().min(res.head_len + len);
                let body = String::from_utf8_lossy(&buf[res.head_len..end]).into_owned();
                return Err(Error::Refused {
                    status: res.status,
                    body,
                });
            }
            res.verify(&req.key)?;
            let protocol = res.header("sec-websocket-protocol").map(str::to_owned);
            let compression = match res.header("sec-websocket-extensions") {
                None => None,
                Some(v) => Some(deflate::accepted(v).ok_or_else(|| {
                    HandshakeError::Malformed(format!("unexpected Sec-WebSocket-Extensions: {v}"))
                })?),
            };
            let _ = buf.split_to(res.head_len);
            return Ok((buf, protocol, compression));
        }
    }

    fn mask(&mut self) -> [u8; 4] {
        // xorshift64: masks need to be unpredictable to intermediaries, not secret.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng as u32).to_le_bytes()
    }

    pub async fn send_text(&mut self, text: &str) -> Result<(), Error> {
        let mask = self.mask();
        self.send_raw(Frame::masked(OpCode::Text, text.as_bytes(), mask).as_bytes())
            .await
    }

    pub async fn send_json(&mut self, value: &Value) -> Result<(), Error> {
        self.send_text(&value.to_string()).await
    }

    pub async fn send_binary(&mut self, data: &[u8]) -> Result<(), Error> {
        let mask = self.mask();
        self.send_raw(Frame::masked(OpCode::Binary, data, mask).as_bytes())
            .await
    }

    /// Sends a message compressed (RSV1), as its own deflate stream, which is valid with
    /// or without context takeover; plain if deflating does not make it smaller or the
    /// server did not accept compression.
    pub async fn send_compressed(&mut self, opcode: OpCode, data: &[u8]) -> Result<(), Error> {
        let mask = self.mask();
        let deflated = self
            .compression
            .and_then(|_| Deflater::new(6).deflate(opcode, data));
        let bytes = match deflated {
            Some(frame) => encode_frame(true, 0b100, opcode, frame.payload(), Some(mask)),
            None => Frame::masked(opcode, data, mask).into_bytes(),
        };
        self.send_raw(&bytes).await
    }

    pub async fn ping(&mut self, payload: &[u8]) -> Result<(), Error> {
        let mask = self.mask();
        self.send_raw(Frame::masked(OpCode::Ping, payload, mask).as_bytes())
            .await
    }

    /// Writes bytes as they are: for tests that send malformed or hand-fragmented frames.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// A masking key for hand-built frames.
    pub fn next_mask(&mut self) -> [u8; 4] {
        self.mask()
    }

    /// Starts the close handshake.
    pub async fn close(&mut self, code: u16, reason: &str) -> Result<(), Error> {
        let mask = self.mask();
        self.send_raw(Frame::masked_close(CloseCode(code), reason, mask).as_bytes())
            .await
    }

    /// The next message. Pings are answered (and skipped) when `auto_pong` is on; a close
    /// frame is answered and returned as [`Error::Closed`].
    pub async fn recv(&mut self) -> Result<Message, Error> {
        if let Some(frame) = &self.closed {
            return Err(Error::Closed(frame.clone()));
        }
        loop {
            while let Some(message) = self.decoder.decode(&mut self.buf)? {
                match message {
                    Message::Ping(payload) if self.auto_pong => {
                        let mask = self.mask();
                        self.send_raw(Frame::masked(OpCode::Pong, &payload, mask).as_bytes())
                            .await?;
                    }
                    Message::Close(frame) => {
                        let mask = self.mask();
                        let code = frame.as_ref().map_or(CloseCode::NORMAL, |f| f.code);
                        let _ = self
                            .send_raw(Frame::masked_close(code, "", mask).as_bytes())
                            .await;
                        self.closed = Some(frame.clone());
                        return Err(Error::Closed(frame));
                    }
                    other => return Ok(other),
                }
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                self.closed = Some(None);
                return Err(Error::Closed(None));
            }
        }
    }

    /// The next text message, parsed as JSON (other messages are skipped).
    pub async fn recv_json(&mut self) -> Result<Value, Error> {
        loop {
            if let Message::Text(bytes) = self.recv().await? {
                return Ok(serde_json::from_slice(&bytes)?);
            }
        }
    }

    /// Reads until the server closes, and returns its close frame.
    pub async fn closed(&mut self) -> Option<CloseFrame> {
        loop {
            match self.recv().await {
                Ok(_) => continue,
                Err(Error::Closed(frame)) => return frame,
                Err(_) => return None,
            }
        }
    }

    /// Bytes received but not yet decoded (for tests that inspect raw traffic).
    pub fn buffered(&self) -> Bytes {
        Bytes::copy_from_slice(&self.buf)
    }
}
