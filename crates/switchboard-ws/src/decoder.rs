use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

use crate::close::{CloseCode, CloseFrame};
use crate::deflate::{InflateError, Inflater, Params};
use crate::frame::OpCode;
use crate::mask::apply_mask;
use crate::utf8::Utf8Validator;

/// Which end of the connection the decoder sits at: servers require masked frames, clients
/// require unmasked ones (RFC 6455 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
}

/// A complete message, or a control frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message; the bytes are valid UTF-8.
    Text(Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    /// A close frame; `None` when it carried no status code.
    Close(Option<CloseFrame>),
}

/// Why the peer broke the protocol, with the close code to answer it with.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{reason} (close {code})")]
pub struct ProtocolError {
    pub code: CloseCode,
    pub reason: &'static str,
}

fn fail<T>(code: CloseCode, reason: &'static str) -> Result<T, ProtocolError> {
    Err(ProtocolError { code, reason })
}

struct Header {
    fin: bool,
    opcode: OpCode,
    /// The frame belongs to a compressed message (RSV1 on its first frame).
    compressed: bool,
    mask: Option<[u8; 4]>,
    header_len: usize,
    payload_len: usize,
}

struct Partial {
    opcode: OpCode,
    /// The message so far (inflated, for a compressed one).
    data: BytesMut,
    compressed: bool,
    /// Compressed bytes received so far (compressed messages only).
    raw_len: usize,
}

/// permessage-deflate on a connection that negotiated it.
struct Inflating {
    /// The client keeps its LZ77 window between messages: so must we.
    keep_context: bool,
    /// Made on the first compressed frame; dropped after each message when there is no
    /// context to keep, so an idle connection holds no inflate state.
    inflater: Option<Box<Inflater>>,
    /// Keep the inflater (reset) between messages even without context: fewer
    /// allocations for a client reading many messages, ~48 KB held for the connection.
    retain: bool,
}

/// Turns a stream of bytes into messages: parses and validates frames, unmasks them,
/// reassembles fragments and checks UTF-8 as fragments arrive.
///
/// Unfragmented payloads are split out of the read buffer without a copy.
pub struct Decoder {
    role: Role,
    max_message_size: usize,
    /// RSV bits an extension negotiated for this connection may set.
    allowed_rsv: u8,
    /// Boxed: a message in pieces is rare (and short-lived), and the decoder lives as long
    /// as its connection.
    partial: Option<Box<Partial>>,
    utf8: Utf8Validator,
    /// Payload bytes of the current text frame already unmasked and validated.
    checked: usize,
    /// Set when permessage-deflate was negotiated.
    inflating: Option<Inflating>,
}

impl Decoder {
    pub fn new(role: Role, max_message_size: usize) -> Decoder {
        Decoder {
            role,
            max_message_size,
            allowed_rsv: 0,
            partial: None,
            utf8: Utf8Validator::default(),
            checked: 0,
            inflating: None,
        }
    }

    /// Turns on permessage-deflate as negotiated: RSV1 marks a compressed message, which is
    /// inflated (at most `max_message_size` bytes of it) before it is handed out.
    pub fn enable_deflate(&mut self, params: &Params) {
        self.allowed_rsv |= 0b100;
        // The peer's side of the parameters: a server inflates what the client deflates.
        let peer_no_context_takeover = match self.role {
            Role::Server => params.client_no_context_takeover,
            Role::Client => params.server_no_context_takeover,
        };
        self.inflating = Some(Inflating {
            keep_context: !peer_no_context_takeover,
            inflater: None,
            retain: false,
        });
    }

    /// Keeps the inflate stream between messages (reset, not freed) when the peer sends
    /// each message on its own: one allocation per connection instead of one per message,
    /// for a busy reader that does not mind holding it. No effect without
    /// [`enable_deflate`](Decoder::enable_deflate).
    pub fn retain_inflater(&mut self) {
        if let Some(i) = self.inflating.as_mut() {
            i.retain = true;
        }
    }

    /// Whether the decoder holds inflate state (a compressed message is under way, or the
    /// client keeps its context between messages): what an idle connection costs.
    pub fn holds_inflate_state(&self) -> bool {
        self.inflating
            .as_ref()
            .is_some_and(|i| i.inflater.is_some())
    }

    /// The most compressed bytes a message may take: deflate can make incompressible data
    /// slightly longer than it was, but never by this much. Bounds a stream of empty blocks
    /// that inflates to nothing.
    fn max_compressed_size(&self) -> u64 {
        let max = self.max_message_size as u64;
        max + max / 16 + 1024
    }

    /// Lets frames carry these RSV bits (for a negotiated extension such as
    /// permessage-deflate, which uses RSV1 = `0b100`).
    pub fn allow_rsv(&mut self, rsv: u8) {
        self.allowed_rsv = rsv & 0b111;
    }

    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// Decodes the next message from `buf`, consuming the bytes of every complete frame.
    /// Returns `Ok(None)` when more bytes are needed (and reserves room for them).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, ProtocolError> {
        loop {
            let Some(header) = self.parse_header(buf)? else {
                return Ok(None);
            };
            let total = header.header_len + header.payload_len;
            // Compressed text is checked once inflated.
            let is_text = self.is_text(&header) && !header.compressed;
            if buf.len() < total {
                buf.reserve(total - buf.len());
                if is_text {
                    // Check the text that has arrived so far, so a peer cannot make us
                    // wait for (and buffer) the rest of a frame that is already invalid.
                    let end = buf.len();
                    self.check_text(&header, &mut buf[..end])?;
                }
                return Ok(None);
            }
            if is_text {
                self.check_text(&header, &mut buf[..total])?;
            }
            buf.advance(header.header_len);
            let mut payload = buf.split_to(header.payload_len);
            if let Some(mask) = header.mask {
                apply_mask(&mut payload[self.checked..], mask, self.checked);
            }
            self.checked = 0;
            if let Some(message) = self.on_frame(header, payload)? {
                return Ok(Some(message));
            }
        }
    }

    /// Whether the frame carries text (a text frame, or a continuation of a text message).
    fn is_text(&self, header: &Header) -> bool {
        match header.opcode {
            OpCode::Text => true,
            OpCode::Continuation => self
                .partial
                .as_ref()
                .is_some_and(|p| p.opcode == OpCode::Text),
            _ => false,
        }
    }

    /// Unmasks and validates the part of a text frame's payload in `frame` (header
    /// included) that has not been checked yet; `self.checked` remembers how far it got.
    fn check_text(&mut self, header: &Header, frame: &mut [u8]) -> Result<(), ProtocolError> {
        if self.checked == 0 && header.opcode == OpCode::Text {
            self.utf8.reset(); // first bytes of a new text message
        }
        let start = header.header_len + self.checked;
        if frame.len() <= start {
            return Ok(());
        }
        let chunk = &mut frame[start..];
        if let Some(mask) = header.mask {
            apply_mask(chunk, mask, self.checked);
        }
        self.checked += chunk.len();
        self.utf8.feed(chunk).or_else(|()| {
            fail(
                CloseCode::INVALID_PAYLOAD,
                "text message is not valid UTF-8",
            )
        })
    }

    fn parse_header(&self, buf: &[u8]) -> Result<Option<Header>, ProtocolError> {
        if buf.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (buf[0], buf[1]);
        let fin = b0 & 0x80 != 0;
        let rsv = (b0 >> 4) & 0b111;
        let Some(opcode) = OpCode::from_u8(b0 & 0x0f) else {
            return fail(CloseCode::PROTOCOL_ERROR, "reserved opcode");
        };
        if rsv & !self.allowed_rsv != 0 {
            return fail(CloseCode::PROTOCOL_ERROR, "reserved bits set");
        }
        // RSV1 (permessage-deflate) marks the first frame of a compressed message, never
        // a continuation or a control frame (RFC 7692 §6.1).
        let rsv1 = rsv & 0b100 != 0;
        if rsv1 && opcode.is_control() {
            return fail(CloseCode::PROTOCOL_ERROR, "compressed control frame");
        }
        if rsv1 && opcode == OpCode::Continuation {
            return fail(
                CloseCode::PROTOCOL_ERROR,
                "RSV1 set on a continuation frame",
            );
        }
        let compressed = match opcode {
            OpCode::Continuation => self.partial.as_ref().is_some_and(|p| p.compressed),
            _ => rsv1,
        };
        let masked = b1 & 0x80 != 0;
        match (self.role, masked) {
            (Role::Server, false) => {
                return fail(CloseCode::PROTOCOL_ERROR, "client frames must be masked")
            }
            (Role::Client, true) => {
                return fail(
                    CloseCode::PROTOCOL_ERROR,
                    "server frames must not be masked",
                )
            }
            _ => {}
        }
        let len7 = (b1 & 0x7f) as usize;
        let (mut header_len, payload_len) = match len7 {
            126 => {
                if buf.len() < 4 {
                    return Ok(None);
                }
                (4, u16::from_be_bytes([buf[2], buf[3]]) as u64)
            }
            127 => {
                if buf.len() < 10 {
                    return Ok(None);
                }
                let len = u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes"));
                if len >> 63 != 0 {
                    return fail(
                        CloseCode::PROTOCOL_ERROR,
                        "frame length has its top bit set",
                    );
                }
                (10, len)
            }
            n => (2, n as u64),
        };
        if opcode.is_control() {
            if !fin {
                return fail(CloseCode::PROTOCOL_ERROR, "fragmented control frame");
            }
            if payload_len > 125 {
                return fail(
                    CloseCode::PROTOCOL_ERROR,
                    "control frame longer than 125 bytes",
                );
            }
        } else {
            match (opcode, &self.partial) {
                (OpCode::Continuation, None) => {
                    return fail(
                        CloseCode::PROTOCOL_ERROR,
                        "continuation frame without a message",
                    )
                }
                (OpCode::Text | OpCode::Binary, Some(_)) => {
                    return fail(
                        CloseCode::PROTOCOL_ERROR,
                        "new message before the previous one ended",
                    )
                }
                _ => {}
            }
            if compressed {
                let so_far = self.partial.as_ref().map_or(0, |p| p.raw_len) as u64;
                if so_far + payload_len > self.max_compressed_size() {
                    return fail(CloseCode::TOO_BIG, "message too big");
                }
            } else {
                let so_far = self.partial.as_ref().map_or(0, |p| p.data.len()) as u64;
                if so_far + payload_len > self.max_message_size as u64 {
                    return fail(CloseCode::TOO_BIG, "message too big");
                }
            }
        }
        let mask = if masked {
            if buf.len() < header_len + 4 {
                return Ok(None);
            }
            let m = [
                buf[header_len],
                buf[header_len + 1],
                buf[header_len + 2],
                buf[header_len + 3],
            ];
            header_len += 4;
            Some(m)
        } else {
            None
        };
        Ok(Some(Header {
            fin,
            opcode,
            compressed,
            mask,
            header_len,
            payload_len: payload_len as usize,
        }))
    }

    fn on_frame(
        &mut self,
        header: Header,
        payload: BytesMut,
    ) -> Result<Option<Message>, ProtocolError> {
        if header.compressed {
            return self.on_compressed_frame(header, &payload);
        }
        match header.opcode {
            OpCode::Ping => Ok(Some(Message::Ping(payload.freeze()))),
            OpCode::Pong => Ok(Some(Message::Pong(payload.freeze()))),
            OpCode::Close => parse_close(&payload).map(|c| Some(Message::Close(c))),
            OpCode::Text | OpCode::Binary if header.fin => {
                if header.opcode == OpCode::Text && !self.utf8.is_complete() {
                    return fail(
                        CloseCode::INVALID_PAYLOAD,
                        "text message ends mid-character",
                    );
                }
                Ok(Some(data_message(header.opcode, payload.freeze())))
            }
            OpCode::Text | OpCode::Binary => {
                self.partial = Some(Box::new(Partial {
                    opcode: header.opcode,
                    data: payload,
                    compressed: false,
                    raw_len: 0,
                }));
                Ok(None)
            }
            OpCode::Continuation => {
                let partial = self.partial.as_mut().expect("checked in parse_header");
                let is_text = partial.opcode == OpCode::Text;
                partial.data.extend_from_slice(&payload);
                if !header.fin {
                    return Ok(None);
                }
                if is_text && !self.utf8.is_complete() {
                    return fail(
                        CloseCode::INVALID_PAYLOAD,
                        "text message ends mid-character",
                    );
                }
                let partial = self.partial.take().expect("present");
                Ok(Some(data_message(partial.opcode, partial.data.freeze())))
            }
        }
    }
}

impl Decoder {
    /// A frame of a compressed message: inflated onto the message so far.
    fn on_compressed_frame(
        &mut self,
        header: Header,
        payload: &[u8],
    ) -> Result<Option<Message>, ProtocolError> {
        let mut partial = match self.partial.take() {
            Some(p) => p, // a continuation (parse_header saw it belongs to this message)
            None => {
                if header.opcode == OpCode::Text {
                    self.utf8.reset();
                }
                Box::new(Partial {
                    opcode: header.opcode,
                    data: BytesMut::new(),
                    compressed: true,
                    raw_len: 0,
                })
            }
        };
        partial.raw_len += payload.len();
        let Some(inflating) = self.inflating.as_mut() else {
            return fail(CloseCode::PROTOCOL_ERROR, "reserved bits set");
        };
        let inflater = inflating.inflater.get_or_insert_with(Box::default);
        let start = partial.data.len();
        inflater
            .inflate(
                payload,
                header.fin,
                &mut partial.data,
                self.max_message_size,
            )
            .or_else(|e| match e {
                InflateError::TooBig => fail(CloseCode::TOO_BIG, "message too big"),
                InflateError::Corrupt => fail(
                    CloseCode::INVALID_PAYLOAD,
                    "compressed message is not valid deflate data",
                ),
            })?;
        let is_text = partial.opcode == OpCode::Text;
        if is_text && self.utf8.feed(&partial.data[start..]).is_err() {
            return fail(
                CloseCode::INVALID_PAYLOAD,
                "text message is not valid UTF-8",
            );
        }
        if !header.fin {
            self.partial = Some(partial);
            return Ok(None);
        }
        if is_text && !self.utf8.is_complete() {
            return fail(
                CloseCode::INVALID_PAYLOAD,
                "text message ends mid-character",
            );
        }
        inflater.end_message(inflating.keep_context);
        if !inflating.keep_context && !inflating.retain {
            inflating.inflater = None;
        }
        Ok(Some(data_message(partial.opcode, partial.data.freeze())))
    }
}

fn data_message(opcode: OpCode, data: Bytes) -> Message {
    if opcode == OpCode::Text {
        Message::Text(data)
    } else {
        Message::Binary(data)
    }
}

fn parse_close(payload: &[u8]) -> Result<Option<CloseFrame>, ProtocolError> {
    match payload.len() {
        0 => Ok(None),
        1 => fail(
            CloseCode::PROTOCOL_ERROR,
            "close frame with a one-byte body",
        ),
        _ => {
            let code = CloseCode(u16::from_be_bytes([payload[0], payload[1]]));
            if !code.is_allowed_on_wire() {
                return fail(CloseCode::PROTOCOL_ERROR, "invalid close code");
            }
            let Ok(reason) = std::str::from_utf8(&payload[2..]) else {
                return fail(
                    CloseCode::INVALID_PAYLOAD,
                    "close reason is not valid UTF-8",
                );
            };
            Ok(Some(CloseFrame {
                code,
                reason: reason.to_owned(),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{encode_fragment, Frame};

    const MASK: [u8; 4] = [1, 2, 3, 4];

    fn server() -> Decoder {
        Decoder::new(Role::Server, 1024)
    }

    fn decode_all(d: &mut Decoder, bytes: &[u8]) -> Result<Vec<Message>, ProtocolError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(m) = d.decode(&mut buf)? {
            out.push(m);
        }
        Ok(out)
    }

    #[test]
    fn decodes_a_masked_text_frame_fed_byte_by_byte() {
        let frame = Frame::masked(OpCode::Text, b"hello", MASK);
        let mut d = server();
        let mut buf = BytesMut::new();
        let mut got = None;
        for b in frame.as_bytes().iter() {
            buf.extend_from_slice(&[*b]);
            if let Some(m) = d.decode(&mut buf).unwrap() {
                got = Some(m);
            }
        }
        assert_eq!(got, Some(Message::Text(Bytes::from_static(b"hello"))));
        assert!(buf.is_empty());
    }

    #[test]
    fn reassembles_fragments_with_control_frames_between() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&encode_fragment(
            false,
            OpCode::Text,
            "héllo ".as_bytes(),
            Some(MASK),
        ));
        bytes.extend_from_slice(Frame::masked(OpCode::Ping, b"p", MASK).as_bytes());
        bytes.extend_from_slice(&encode_fragment(
            false,
            OpCode::Continuation,
            &"wörld".as_bytes()[..2],
            Some(MASK),
        ));
        bytes.extend_from_slice(&encode_fragment(
            true,
            OpCode::Continuation,
            &"wörld".as_bytes()[2..],
            Some(MASK),
        ));
        let msgs = decode_all(&mut server(), &bytes).unwrap();
        assert_eq!(
            msgs,
            vec![
                Message::Ping(Bytes::from_static(b"p")),
                Message::Text(Bytes::from("héllo wörld")),
            ]
        );
    }

    #[test]
    fn invalid_utf8_fails_before_the_frame_is_complete() {
        let mut payload = b"valid start ".to_vec();
        payload.extend_from_slice(&[0xce, 0xba, 0xf4, 0x90]); // kappa, then an impossible sequence
        payload.extend_from_slice(&[b'x'; 100]);
        let frame = Frame::masked(OpCode::Text, &payload, MASK);
        let mut d = server();
        // Header (2+4 bytes) plus the first 16 payload bytes: the error shows already.
        let mut buf = BytesMut::from(&frame.as_bytes()[..6 + 16]);
        assert_eq!(
            d.decode(&mut buf).unwrap_err().code,
            CloseCode::INVALID_PAYLOAD
        );
    }

    #[test]
    fn text_checked_in_pieces_decodes_intact() {
        let text = "ünïcödé ".repeat(40);
        let frame = Frame::masked(OpCode::Text, text.as_bytes(), MASK);
        let mut d = server();
        let mut buf = BytesMut::new();
        let mut got = None;
        for chunk in frame.as_bytes().chunks(7) {
            buf.extend_from_slice(chunk);
            if let Some(m) = d.decode(&mut buf).unwrap() {
                got = Some(m);
            }
        }
        assert_eq!(got, Some(Message::Text(Bytes::from(text))));
    }

    #[test]
    fn rejects_unmasked_client_frames_and_masked_server_frames() {
        let err = decode_all(&mut server(), Frame::text("x").as_bytes()).unwrap_err();
        assert_eq!(err.code, CloseCode::PROTOCOL_ERROR);
        let mut client = Decoder::new(Role::Client, 1024);
        let err = decode_all(
            &mut client,
            Frame::masked(OpCode::Text, b"x", MASK).as_bytes(),
        )
        .unwrap_err();
        assert_eq!(err.code, CloseCode::PROTOCOL_ERROR);
    }

    #[test]
    fn enforces_the_message_size_limit_across_fragments() {
        let mut d = Decoder::new(Role::Server, 10);
        let mut bytes = encode_fragment(false, OpCode::Binary, &[0; 6], Some(MASK)).to_vec();
        bytes.extend_from_slice(&encode_fragment(
            true,
            OpCode::Continuation,
            &[0; 6],
            Some(MASK),
        ));
        assert_eq!(
            decode_all(&mut d, &bytes).unwrap_err().code,
            CloseCode::TOO_BIG
        );
        // A single frame over the limit fails on its header, before its payload arrives.
        let mut d = Decoder::new(Role::Server, 10);
        let frame = Frame::masked(OpCode::Binary, &[0; 11], MASK);
        let err = decode_all(&mut d, &frame.as_bytes()[..6]).unwrap_err();
        assert_eq!(err.code, CloseCode::TOO_BIG);
    }

    #[test]
    fn invalid_utf8_fails_on_the_fragment_that_breaks_it() {
        let mut d = server();
        let mut buf = BytesMut::from(&encode_fragment(false, OpCode::Text, b"ok", Some(MASK))[..]);
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(&encode_fragment(
            false,
            OpCode::Continuation,
            &[0xff],
            Some(MASK),
        ));
        assert_eq!(
            d.decode(&mut buf).unwrap_err().code,
            CloseCode::INVALID_PAYLOAD
        );
    }

    #[test]
    fn protocol_violations_get_1002() {
        let cases: Vec<Bytes> = vec![
            // reserved opcode 3
            encode_fragment(true, OpCode::Text, b"", Some(MASK))
                .iter()
                .enumerate()
                .map(|(i, b)| if i == 0 { 0x83 } else { *b })
                .collect(),
            // fragmented ping
            encode_fragment(false, OpCode::Ping, b"", Some(MASK)),
            // continuation with nothing to continue
            encode_fragment(true, OpCode::Continuation, b"x", Some(MASK)),
            // RSV1 without an extension
            encode_fragment(true, OpCode::Text, b"x", Some(MASK))
                .iter()
                .enumerate()
                .map(|(i, b)| if i == 0 { b | 0x40 } else { *b })
                .collect(),
            // ping longer than 125 bytes
            encode_fragment(true, OpCode::Ping, &[0; 126], Some(MASK)),
            // close code 1005 may not be sent
            Frame::masked(OpCode::Close, &1005u16.to_be_bytes(), MASK).into_bytes(),
        ];
        for (i, case) in cases.iter().enumerate() {
            let err = decode_all(&mut server(), case).unwrap_err();
            assert_eq!(err.code, CloseCode::PROTOCOL_ERROR, "case {i}: {err}");
        }
    }

    mod deflate {
        use super::*;
        use crate::deflate::{negotiate, Deflater, Policy};
        use crate::handshake::ExtensionOffer;
        use flate2::{Compress, Compression, FlushCompress};

        fn params(client_nct: bool) -> Params {
            let offer = ExtensionOffer {
                name: "permessage-deflate".into(),
                params: vec![],
            };
            let policy = Policy {
                client_no_context_takeover: client_nct,
            };
            negotiate(&[offer], policy).unwrap()
        }

        fn compressing_server(max: usize, client_nct: bool) -> Decoder {
            let mut d = Decoder::new(Role::Server, max);
            d.enable_deflate(&params(client_nct));
            d
        }

        /// Raw deflate of `data` with the sync-flush trailer stripped, as a client sends it.
        fn deflate(c: &mut Compress, data: &[u8]) -> Vec<u8> {
            let mut out = Vec::with_capacity(data.len() + 64);
            c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
            assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
            out.truncate(out.len() - 4);
            out
        }

        fn compressed(data: &[u8]) -> Vec<u8> {
            deflate(
                &mut Compress::new_with_window_bits(Compression::default(), false, 15),
                data,
            )
        }

        /// A masked frame with RSV1 set (or not).
        fn frame(fin: bool, rsv1: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
            let mut f = encode_fragment(fin, opcode, payload, Some(MASK)).to_vec();
            if rsv1 {
                f[0] |= 0x40;
            }
            f
        }

        #[test]
        fn inflates_a_compressed_text_message() {
            let text = "héllo wörld, ".repeat(30);
            let z = compressed(text.as_bytes());
            let mut d = compressing_server(1024, true);
            let msgs = decode_all(&mut d, &frame(true, true, OpCode::Text, &z)).unwrap();
            assert_eq!(msgs, vec![Message::Text(Bytes::from(text))]);
            assert!(
                !d.holds_inflate_state(),
                "no context to keep: state dropped"
            );
        }

        #[test]
        fn a_retained_inflater_is_reset_between_messages() {
            let mut d = compressing_server(1024, true);
            d.retain_inflater();
            for text in [
                "first message, first message",
                "second: another one entirely",
            ] {
                let z = compressed(text.as_bytes());
                let msgs = decode_all(&mut d, &frame(true, true, OpCode::Text, &z)).unwrap();
                assert_eq!(msgs, vec![Message::Text(Bytes::from(text))]);
                assert!(d.holds_inflate_state(), "kept for the next message");
            }
        }

        #[test]
        fn plain_messages_still_work_beside_compressed_ones() {
            let mut d = compressing_server(1024, true);
            let mut bytes = frame(true, false, OpCode::Text, b"plain");
            bytes.extend(frame(
                true,
                true,
                OpCode::Binary,
                &compressed(&[1, 2, 3, 1, 2, 3]),
            ));
            bytes.extend(frame(true, false, OpCode::Binary, &[9]));
            assert_eq!(
                decode_all(&mut d, &bytes).unwrap(),
                vec![
                    Message::Text(Bytes::from_static(b"plain")),
                    Message::Binary(Bytes::from_static(&[1, 2, 3, 1, 2, 3])),
                    Message::Binary(Bytes::from_static(&[9])),
                ]
            );
        }

        #[test]
        fn reassembles_fragmented_compressed_messages_with_pings_between() {
            let text = "fragmented and compressed ✓ ".repeat(20);
            let z = compressed(text.as_bytes());
            for pieces in [1, 2, 3, 7, z.len()] {
                let size = z.len().div_ceil(pieces);
                let chunks: Vec<&[u8]> = z.chunks(size).collect();
                let mut bytes = Vec::new();
                for (i, chunk) in chunks.iter().enumerate() {
                    let op = if i == 0 {
                        OpCode::Text
                    } else {
                        OpCode::Continuation
                    };
                    bytes.extend(frame(i + 1 == chunks.len(), i == 0, op, chunk));
                    bytes.extend(Frame::masked(OpCode::Ping, b"p", MASK).as_bytes());
                }
                let mut d = compressing_server(4096, true);
                let msgs = decode_all(&mut d, &bytes).unwrap();
                let data: Vec<_> = msgs
                    .iter()
                    .filter(|m| !matches!(m, Message::Ping(_)))
                    .collect();
                assert_eq!(data, vec![&Message::Text(Bytes::from(text.clone()))]);
                assert_eq!(msgs.len(), chunks.len() + 1, "{pieces} pieces");
            }
            // An empty final fragment is allowed too.
            let mut bytes = frame(false, true, OpCode::Binary, &z);
            bytes.extend(frame(true, false, OpCode::Continuation, b""));
            let msgs = decode_all(&mut compressing_server(4096, true), &bytes).unwrap();
            assert_eq!(msgs, vec![Message::Binary(Bytes::from(text))]);
        }

        #[test]
        fn rsv1_rules() {
            let z = compressed(b"abc");
            let cases: Vec<(Vec<u8>, &str)> = vec![
                (frame(true, true, OpCode::Ping, b""), "compressed ping"),
                (
                    frame(true, true, OpCode::Close, &[3, 232]),
                    "compressed close",
                ),
                (
                    [
                        frame(false, true, OpCode::Text, &z),
                        frame(true, true, OpCode::Continuation, b""),
                    ]
                    .concat(),
                    "RSV1 on a continuation",
                ),
                (
                    [
                        frame(false, false, OpCode::Text, b"a"),
                        frame(true, true, OpCode::Continuation, &z),
                    ]
                    .concat(),
                    "RSV1 on the continuation of a plain message",
                ),
            ];
            for (bytes, what) in cases {
                let err = decode_all(&mut compressing_server(1024, true), &bytes).unwrap_err();
                assert_eq!(err.code, CloseCode::PROTOCOL_ERROR, "{what}: {err}");
            }
            // Without the extension, RSV1 is a protocol error even on a data frame.
            let err = decode_all(&mut server(), &frame(true, true, OpCode::Text, &z)).unwrap_err();
            assert_eq!(err.code, CloseCode::PROTOCOL_ERROR);
            // RSV2 and RSV3 stay reserved.
            let mut f = frame(true, false, OpCode::Text, b"x");
            f[0] |= 0x20;
            let err = decode_all(&mut compressing_server(1024, true), &f).unwrap_err();
            assert_eq!(err.code, CloseCode::PROTOCOL_ERROR);
        }

        #[test]
        fn utf8_is_checked_after_inflating() {
            // Valid deflate of invalid UTF-8.
            let z = compressed(&[b'o', b'k', 0xff, b'!']);
            let err = decode_all(
                &mut compressing_server(1024, true),
                &frame(true, true, OpCode::Text, &z),
            )
            .unwrap_err();
            assert_eq!(err.code, CloseCode::INVALID_PAYLOAD);
            // A message that ends mid-character.
            let z = compressed(&"é".as_bytes()[..1]);
            let err = decode_all(
                &mut compressing_server(1024, true),
                &frame(true, true, OpCode::Text, &z),
            )
            .unwrap_err();
            assert_eq!(err.code, CloseCode::INVALID_PAYLOAD);
            // Compressed binary is not text: any bytes go.
            let z = compressed(&[0xff, 0xfe]);
            let msgs = decode_all(
                &mut compressing_server(1024, true),
                &frame(true, true, OpCode::Binary, &z),
            )
            .unwrap();
            assert_eq!(
                msgs,
                vec![Message::Binary(Bytes::from_static(&[0xff, 0xfe]))]
            );
        }

        #[test]
        fn corrupt_compressed_data_gets_1007() {
            let err = decode_all(
                &mut compressing_server(1024, true),
                &frame(true, true, OpCode::Binary, &[0xff, 0xff, 0xff, 0xff]),
            )
            .unwrap_err();
            assert_eq!(err.code, CloseCode::INVALID_PAYLOAD);
        }

        #[test]
        fn a_decompression_bomb_stops_at_the_limit_with_1009() {
            // 8 MiB of zeros deflate to about 8 KiB; the limit is 64 KiB.
            let z = compressed(&vec![0; 8 << 20]);
            assert!(z.len() < 16 << 10);
            let mut d = compressing_server(64 << 10, true);
            let err = decode_all(&mut d, &frame(true, true, OpCode::Binary, &z)).unwrap_err();
            assert_eq!(err.code, CloseCode::TOO_BIG);
            // Fragmented, the same.
            let mut bytes = Vec::new();
            let chunks: Vec<&[u8]> = z.chunks(1000).collect();
            for (i, c) in chunks.iter().enumerate() {
                let op = if i == 0 {
                    OpCode::Text
                } else {
                    OpCode::Continuation
                };
                bytes.extend(frame(i + 1 == chunks.len(), i == 0, op, c));
            }
            let mut d = compressing_server(64 << 10, true);
            let err = decode_all(&mut d, &bytes).unwrap_err();
            assert_eq!(err.code, CloseCode::TOO_BIG);
        }

        #[test]
        fn compressed_bytes_are_bounded_too() {
            // Empty stored blocks inflate to nothing; endless ones are refused by size.
            let empty_block = [0x00, 0x00, 0x00, 0xff, 0xff];
            let junk: Vec<u8> = empty_block.iter().copied().cycle().take(5 * 600).collect();
            let mut d = compressing_server(1000, true);
            let err = decode_all(&mut d, &frame(true, true, OpCode::Binary, &junk)).unwrap_err();
            assert_eq!(err.code, CloseCode::TOO_BIG);
        }

        #[test]
        fn context_takeover_is_kept_when_the_client_uses_it() {
            let mut c = Compress::new_with_window_bits(Compression::fast(), false, 15);
            let text = "the same words again and again and again";
            let m1 = deflate(&mut c, text.as_bytes());
            let m2 = deflate(&mut c, text.as_bytes());
            let mut d = compressing_server(1024, false);
            let mut bytes = frame(true, true, OpCode::Text, &m1);
            bytes.extend(frame(true, true, OpCode::Text, &m2));
            let msgs = decode_all(&mut d, &bytes).unwrap();
            assert_eq!(msgs, vec![Message::Text(Bytes::from(text)); 2]);
            assert!(
                d.holds_inflate_state(),
                "the window is kept for the next message"
            );
        }

        #[test]
        fn our_deflater_output_decodes() {
            // What the server sends, re-masked as if a client sent it.
            let text = "{\"type\":\"message\",\"data\":{\"text\":\"hi\"}} ".repeat(10);
            let f = Deflater::new(1)
                .deflate(OpCode::Text, text.as_bytes())
                .unwrap();
            let b = f.as_bytes();
            let payload = &b[2..]; // short frame: 2 header bytes
            assert!(payload.len() < 126);
            let msgs = decode_all(
                &mut compressing_server(1024, true),
                &frame(true, true, OpCode::Text, payload),
            )
            .unwrap();
            assert_eq!(msgs, vec![Message::Text(Bytes::from(text))]);
        }
    }

    #[test]
    fn parses_close_frames() {
        let f = Frame::masked_close(CloseCode(4009), "slow", MASK);
        assert_eq!(
            decode_all(&mut server(), f.as_bytes()).unwrap(),
            vec![Message::Close(Some(CloseFrame::new(
                CloseCode(4009),
                "slow"
            )))]
        );
        let empty = Frame::masked(OpCode::Close, b"", MASK);
        assert_eq!(
            decode_all(&mut server(), empty.as_bytes()).unwrap(),
            vec![Message::Close(None)]
        );
    }
}
