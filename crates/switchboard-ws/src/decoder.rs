use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

use crate::close::{CloseCode, CloseFrame};
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
    rsv: u8,
    opcode: OpCode,
    mask: Option<[u8; 4]>,
    header_len: usize,
    payload_len: usize,
}

struct Partial {
    opcode: OpCode,
    data: BytesMut,
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
    partial: Option<Partial>,
    utf8: Utf8Validator,
    /// Payload bytes of the current text frame already unmasked and validated.
    checked: usize,
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
        }
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
            let is_text = self.is_text(&header);
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
            let so_far = self.partial.as_ref().map_or(0, |p| p.data.len()) as u64;
            if so_far + payload_len > self.max_message_size as u64 {
                return fail(CloseCode::TOO_BIG, "message too big");
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
            rsv,
            opcode,
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
        let _ = header.rsv; // no extension interprets RSV bits yet
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
                self.partial = Some(Partial {
                    opcode: header.opcode,
                    data: payload,
                });
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
