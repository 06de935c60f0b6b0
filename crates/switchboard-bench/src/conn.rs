//! A small WebSocket client connection on the `switchboard-ws` codec, built for reading at
//! a high rate: after setup it splits into a [`Reader`] (one task, decodes in batches) and
//! a [`Writer`] (publishers write many frames per system call).
//!
//! It speaks three application protocols ([`Proto`]): Switchboard protocol v1, the minimal
//! JSON protocol of the Node `ws` and Python `websockets` peers, and Socket.IO v5 over
//! Engine.IO v4 on a plain WebSocket.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::{Bytes, BytesMut};
use switchboard_ws::{apply_mask, deflate, handshake, CloseCode, Decoder, Message, OpCode, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};

/// Which server is on the other end; decides the protocol spoken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServerKind {
    Switchboard,
    NodeWs,
    Socketio,
    PythonWebsockets,
}

impl ServerKind {
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Switchboard => "switchboard",
            ServerKind::NodeWs => "node-ws",
            ServerKind::Socketio => "socketio",
            ServerKind::PythonWebsockets => "python-websockets",
        }
    }

    pub fn proto(self) -> Proto {
        match self {
            ServerKind::Switchboard => Proto::Switchboard,
            ServerKind::NodeWs | ServerKind::PythonWebsockets => Proto::Json,
            ServerKind::Socketio => Proto::SocketIo,
        }
    }
}

/// The application protocol over the WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// Switchboard protocol v1 at `/ws` (docs/protocol.md).
    Switchboard,
    /// `{"type":"join","room","id"}` → `{"type":"joined","room","id"}`;
    /// `{"type":"publish","room","data"}` → every member gets `{"type":"message","room","data"}`.
    Json,
    /// Engine.IO v4 + Socket.IO v5: `42["join",room]`, `42["publish",{room,data}]`,
    /// `42["message",{room,data}]`, pings `2` answered with `3`.
    SocketIo,
}

impl Proto {
    fn path(self) -> &'static str {
        match self {
            Proto::Switchboard => "/ws",
            Proto::Json => "/",
            Proto::SocketIo => "/socket.io/?EIO=4&transport=websocket",
        }
    }

    fn protocols(self) -> &'static [&'static str] {
        match self {
            Proto::Switchboard => &["switchboard.v1"],
            _ => &[],
        }
    }

    /// The frame that joins `room`, asking for a reply tagged `id`.
    pub fn join_frame(self, room: &str, id: u64) -> String {
        match self {
            Proto::Switchboard | Proto::Json => {
                format!(r#"{{"type":"join","id":{id},"room":"{room}"}}"#)
            }
            Proto::SocketIo => format!(r#"42{id}["join","{room}"]"#),
        }
    }

    pub fn is_join_reply(self, text: &[u8], id: u64) -> bool {
        match self {
            Proto::Switchboard | Proto::Json => {
                contains(text, br#""type":"joined""#)
                    && (contains(text, format!(r#""id":{id},"#).as_bytes())
                        || contains(text, format!(r#""id":{id}}}"#).as_bytes()))
            }
            Proto::SocketIo => text.starts_with(format!("43{id}[").as_bytes()),
        }
    }

    /// Appends the text of a publish of `data` (a JSON string's contents, no quotes or
    /// escapes needed) to `room`, without an id: no acknowledgement is asked for.
    pub fn publish_text(self, out: &mut Vec<u8>, room: &str, data: &[u8]) {
        match self {
            Proto::Switchboard | Proto::Json => {
                out.extend_from_slice(br#"{"type":"publish","room":""#);
                out.extend_from_slice(room.as_bytes());
                out.extend_from_slice(br#"","data":""#);
                out.extend_from_slice(data);
                out.extend_from_slice(br#""}"#);
            }
            Proto::SocketIo => {
                out.extend_from_slice(br#"42["publish",{"room":""#);
                out.extend_from_slice(room.as_bytes());
                out.extend_from_slice(br#"","data":""#);
                out.extend_from_slice(data);
                out.extend_from_slice(br#""}]"#);
            }
        }
    }

    /// What a text message that carries no benchmark payload asks of us.
    pub fn control(self, text: &[u8]) -> Control {
        match self {
            Proto::SocketIo if text == b"2" => Control::Reply(b"3"),
            Proto::SocketIo if text.starts_with(b"44") || text.starts_with(b"1") => Control::Error,
            Proto::Switchboard | Proto::Json if contains(text, br#""type":"error""#) => {
                Control::Error
            }
            _ => Control::Ignore,
        }
    }
}

/// See [`Proto::control`].
pub enum Control {
    Ignore,
    /// Send this text back (Engine.IO pong).
    Reply(&'static [u8]),
    /// The server reported an error.
    Error,
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let last_start = haystack.len() - needle.len();
    let mut i = 0;
    while i <= last_start {
        match haystack[i..=last_start].iter().position(|&b| b == first) {
            None => return None,
            Some(off) => {
                i += off;
                if &haystack[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

/// Masking keys: xorshift64, seeded per connection. Masks must be unpredictable to
/// intermediaries, not secret.
pub struct MaskRng(u64);

impl MaskRng {
    pub fn new() -> MaskRng {
        static SEED: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
        let s = SEED.fetch_add(0x6A09_E667_F3BC_C909, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        MaskRng((s ^ nanos.rotate_left(17)) | 1)
    }

    pub fn next(&mut self) -> [u8; 4] {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 as u32).to_le_bytes()
    }
}

/// Appends one masked client frame to `out`.
pub fn put_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], mask: [u8; 4]) {
    let len = payload.len();
    out.push(0x80 | opcode.as_u8());
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask, 0);
}

/// Opens a TCP connection, from `source` when given (127.0.0.x addresses spread the
/// ephemeral ports over several source addresses).
pub async fn tcp_connect(addr: SocketAddr, source: Option<IpAddr>) -> anyhow::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        // Let connect() pick the port for the whole 4-tuple, instead of bind() reserving
        // one per source address (which runs out under churn).
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let one: libc::c_int = 1;
            // SAFETY: a valid socket fd and a pointer to a c_int of the given size.
            unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_BIND_ADDRESS_NO_PORT,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        socket
            .bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("bind {ip}"))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A WebSocket connection during setup: handshake, protocol open, join.
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    decoder: Decoder,
    mask: MaskRng,
    pub proto: Proto,
    /// The server accepted permessage-deflate.
    pub compressed: bool,
}

/// What a browser offers (Chromium, Firefox): permessage-deflate, any server window.
const DEFLATE_OFFER: &str = "permessage-deflate; client_max_window_bits";

const MAX_MESSAGE: usize = 16 << 20;

impl Conn {
    /// Connects, upgrades and opens the application protocol (Switchboard: `welcome`
    /// received; Socket.IO: namespace connected).
    pub async fn open(
        addr: SocketAddr,
        source: Option<IpAddr>,
        proto: Proto,
        timeout: Duration,
    ) -> anyhow::Result<Conn> {
        Conn::open_with(addr, source, proto, timeout, false).await
    }

    /// [`open`](Conn::open), offering permessage-deflate as browsers do when `compress`;
    /// [`compressed`](Conn::compressed) says whether the server took it.
    pub async fn open_with(
        addr: SocketAddr,
        source: Option<IpAddr>,
        proto: Proto,
        timeout: Duration,
        compress: bool,
    ) -> anyhow::Result<Conn> {
        tokio::time::timeout(timeout, Conn::open_inner(addr, source, proto, compress))
            .await
            .map_err(|_| anyhow!("connect timed out after {timeout:?}"))?
    }

    async fn open_inner(
        addr: SocketAddr,
        source: Option<IpAddr>,
        proto: Proto,
        compress: bool,
    ) -> anyhow::Result<Conn> {
        let mut stream = tcp_connect(addr, source).await?;
        let host = addr.to_string();
        let mut nonce = [0u8; 16];
        let mut rng = MaskRng::new();
        for chunk in nonce.chunks_mut(4) {
            chunk.copy_from_slice(&rng.next());
        }
        let offer = [("Sec-WebSocket-Extensions", DEFLATE_OFFER)];
        let headers: &[(&str, &str)] = if compress { &offer } else { &[] };
        let req = handshake::client_request(&host, proto.path(), proto.protocols(), headers, nonce);
        stream.write_all(&req.bytes).await?;
        let mut buf = BytesMut::with_capacity(4096);
        let mut decoder = Decoder::new(Role::Client, MAX_MESSAGE);
        let mut compressed = false;
        loop {
            if stream.read_buf(&mut buf).await? == 0 {
                bail!("connection closed during the handshake");
            }
            if let Some(res) = handshake::parse_response(&buf)? {
                if res.status != 101 {
                    bail!(
                        "server answered {}: {}",
                        res.status,
                        String::from_utf8_lossy(&buf[res.head_len..])
                    );
                }
                res.verify(&req.key)?;
                if let Some(ext) = res.header("sec-websocket-extensions") {
                    let params = deflate::accepted(ext)
                        .ok_or_else(|| anyhow!("unexpected Sec-WebSocket-Extensions: {ext}"))?;
                    decoder.enable_deflate(&params);
                    // A reader of many messages: one inflate stream per connection.
                    decoder.retain_inflater();
                    compressed = true;
                }
                let _ = buf.split_to(res.head_len);
                break;
            }
        }
        let mut conn = Conn {
            stream,
            buf,
            decoder,
            mask: rng,
            proto,
            compressed,
        };
        match proto {
            Proto::Switchboard => loop {
                let text = conn.recv_text().await?;
                if contains(&text, br#""type":"welcome""#) {
                    break;
                }
            },
            Proto::Json => {}
            Proto::SocketIo => {
                let open = conn.recv_text().await?;
                if !open.starts_with(b"0{") {
                    bail!(
                        "expected an Engine.IO open packet, got {:?}",
                        String::from_utf8_lossy(&open)
                    );
                }
                conn.send_text(b"40").await?;
                loop {
                    let text = conn.recv_text().await?;
                    if text.starts_with(b"40") {
                        break;
                    }
                    if text.starts_with(b"44") {
                        bail!("namespace refused: {}", String::from_utf8_lossy(&text));
                    }
                }
            }
        }
        Ok(conn)
    }

    pub async fn send_text(&mut self, text: &[u8]) -> anyhow::Result<()> {
        let mut out = Vec::with_capacity(text.len() + 14);
        put_frame(&mut out, OpCode::Text, text, self.mask.next());
        self.stream.write_all(&out).await?;
        Ok(())
    }

    /// The next text message; pings (WebSocket and Engine.IO) are answered on the way.
    pub async fn recv_text(&mut self) -> anyhow::Result<Bytes> {
        loop {
            while let Some(msg) = self.decoder.decode(&mut self.buf)? {
                match msg {
                    Message::Text(t) => {
                        if let Control::Reply(r) = self.proto.control(&t) {
                            self.send_text(r).await?;
                            continue;
                        }
                        return Ok(t);
                    }
                    Message::Ping(p) => {
                        let mut out = Vec::new();
                        put_frame(&mut out, OpCode::Pong, &p, self.mask.next());
                        self.stream.write_all(&out).await?;
                    }
                    Message::Close(f) => bail!("closed by the server: {f:?}"),
                    Message::Binary(_) | Message::Pong(_) => {}
                }
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                bail!("connection closed by the server");
            }
        }
    }

    /// Joins `room` and waits for the server to confirm.
    pub async fn join(&mut self, room: &str, id: u64, timeout: Duration) -> anyhow::Result<()> {
        let frame = self.proto.join_frame(room, id);
        self.send_text(frame.as_bytes()).await?;
        tokio::time::timeout(timeout, async {
            loop {
                let text = self.recv_text().await?;
                if self.proto.is_join_reply(&text, id) {
                    return Ok(());
                }
                if let Control::Error = self.proto.control(&text) {
                    bail!("join refused: {}", String::from_utf8_lossy(&text));
                }
            }
        })
        .await
        .map_err(|_| anyhow!("join timed out after {timeout:?}"))?
    }

    /// Closes politely: a close frame, then waits (bounded) for the server to close.
    pub async fn close(mut self, timeout: Duration) -> anyhow::Result<()> {
        let mut out = Vec::new();
        put_frame(
            &mut out,
            OpCode::Close,
            &CloseCode::NORMAL.0.to_be_bytes(),
            self.mask.next(),
        );
        self.stream.write_all(&out).await?;
        let _ = tokio::time::timeout(timeout, async {
            let mut scratch = [0u8; 4096];
            loop {
                match self.stream.read(&mut scratch).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        Ok(())
    }

    pub fn into_split(self) -> (Reader, Writer) {
        let (rd, wr) = self.stream.into_split();
        (
            Reader {
                rd,
                buf: self.buf,
                decoder: self.decoder,
                proto: self.proto,
                wire: 0,
            },
            Writer {
                wr,
                mask: self.mask,
                out: Vec::new(),
                proto: self.proto,
            },
        )
    }
}

/// The read half after setup.
pub struct Reader {
    rd: OwnedReadHalf,
    buf: BytesMut,
    decoder: Decoder,
    pub proto: Proto,
    /// Bytes read from the socket since the last [`take_wire_bytes`](Reader::take_wire_bytes).
    wire: u64,
}

/// What ended a reader.
pub enum Ended {
    /// The server sent a close frame (its code, 1005 if none).
    Closed(u16),
    /// The TCP connection ended without a close frame.
    Eof,
    Error(anyhow::Error),
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Closed(code) => write!(f, "closed by the server with {code}"),
            Ended::Eof => f.write_str("connection closed without a close frame"),
            Ended::Error(e) => write!(f, "{e:#}"),
        }
    }
}

impl Reader {
    /// Reads at least one more chunk from the socket (up to `chunk` bytes of room).
    pub async fn fill(&mut self, chunk: usize) -> Result<(), Ended> {
        if self.buf.capacity() - self.buf.len() < chunk / 4 {
            self.buf.reserve(chunk);
        }
        match self.rd.read_buf(&mut self.buf).await {
            Ok(0) => Err(Ended::Eof),
            Ok(n) => {
                self.wire += n as u64;
                Ok(())
            }
            Err(e) => Err(Ended::Error(e.into())),
        }
    }

    /// Bytes read from the socket (WebSocket frames as sent: compressed, if they were)
    /// since the last call.
    pub fn take_wire_bytes(&mut self) -> u64 {
        std::mem::take(&mut self.wire)
    }

    /// The next complete message already buffered.
    pub fn next(&mut self) -> Result<Option<Message>, Ended> {
        self.decoder
            .decode(&mut self.buf)
            .map_err(|e| Ended::Error(e.into()))
    }
}

/// The write half after setup.
pub struct Writer {
    wr: OwnedWriteHalf,
    mask: MaskRng,
    out: Vec<u8>,
    pub proto: Proto,
}

impl Writer {
    /// Queues a text frame; [`flush`](Writer::flush) writes everything queued at once.
    pub fn push_text(&mut self, text: &[u8]) {
        let mask = self.mask.next();
        put_frame(&mut self.out, OpCode::Text, text, mask);
    }

    pub fn push(&mut self, opcode: OpCode, payload: &[u8]) {
        let mask = self.mask.next();
        put_frame(&mut self.out, opcode, payload, mask);
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.wr.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    pub async fn close(&mut self, code: u16) -> std::io::Result<()> {
        self.push(OpCode::Close, &code.to_be_bytes());
        self.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_locates_needles() {
        assert_eq!(find(b"hello sb1 1 2 3", b"sb1 "), Some(6));
        assert_eq!(find(b"sb1", b"sb1 "), None);
        assert_eq!(find(b"ssb1 ", b"sb1 "), Some(1));
        assert_eq!(find(b"", b"x"), None);
    }

    #[test]
    fn join_replies_are_recognised() {
        let sb = br#"{"type":"joined","id":7,"room":"r0","epoch":"x","offset":0,"members":[]}"#;
        assert!(Proto::Switchboard.is_join_reply(sb, 7));
        assert!(!Proto::Switchboard.is_join_reply(sb, 70));
        assert!(Proto::Json.is_join_reply(br#"{"type":"joined","room":"r0","id":3}"#, 3));
        assert!(Proto::SocketIo.is_join_reply(br#"4312["ok"]"#, 12));
        assert!(!Proto::SocketIo.is_join_reply(br#"4312["ok"]"#, 1));
    }

    #[test]
    fn frames_are_masked_and_sized() {
        let mut out = Vec::new();
        put_frame(&mut out, OpCode::Text, b"Hello", [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(
            out,
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
        out.clear();
        put_frame(&mut out, OpCode::Text, &[b'x'; 300], [0; 4]);
        assert_eq!(&out[..4], &[0x81, 0xfe, 0x01, 0x2c]);
    }
}
