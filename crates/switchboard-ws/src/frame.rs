use std::io;

use bytes::{BufMut, Bytes, BytesMut};

use crate::close::CloseCode;
use crate::mask::apply_mask;

/// The longest header a frame can have: 2 bytes, 8 of extended length, 4 of mask.
pub const MAX_HEADER_LEN: usize = 14;
/// Server-to-client frames are never masked, so their header is at most 10 bytes.
const MAX_UNMASKED_HEADER_LEN: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    pub fn from_u8(v: u8) -> Option<OpCode> {
        Some(match v {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    pub fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// A complete frame as it goes on the wire, header included.
///
/// Cloning is a reference-count increment: a room encodes a message once and every member's
/// writer holds the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame(Bytes);

impl Frame {
    /// An unmasked (server) text frame. The payload must be valid UTF-8; callers that hold a
    /// `str` get that for free.
    pub fn text(payload: &str) -> Frame {
        Frame::unmasked(OpCode::Text, payload.as_bytes())
    }

    pub fn binary(payload: &[u8]) -> Frame {
        Frame::unmasked(OpCode::Binary, payload)
    }

    pub fn ping(payload: &[u8]) -> Frame {
        Frame::unmasked(OpCode::Ping, &payload[..payload.len().min(125)])
    }

    pub fn pong(payload: &[u8]) -> Frame {
        Frame::unmasked(OpCode::Pong, &payload[..payload.len().min(125)])
    }

    pub fn close(code: CloseCode, reason: &str) -> Frame {
        Frame::unmasked(OpCode::Close, &close_payload(code, reason))
    }

    /// A frame with a single fragment and no RSV bits, unmasked.
    pub fn unmasked(opcode: OpCode, payload: &[u8]) -> Frame {
        let mut b = FrameBuilder::new(opcode);
        b.extend_from_slice(payload);
        b.finish()
    }

    /// A frame as a client sends it: masked with `mask`.
    pub fn masked(opcode: OpCode, payload: &[u8], mask: [u8; 4]) -> Frame {
        let mut buf = BytesMut::with_capacity(MAX_HEADER_LEN + payload.len());
        let (header, len) = encode_header(true, 0, opcode, payload.len() as u64, Some(mask));
        buf.extend_from_slice(&header[..len]);
        let start = buf.len();
        buf.extend_from_slice(payload);
        apply_mask(&mut buf[start..], mask, 0);
        Frame(buf.freeze())
    }

    /// A close frame as a client sends it.
    pub fn masked_close(code: CloseCode, reason: &str, mask: [u8; 4]) -> Frame {
        Frame::masked(OpCode::Close, &close_payload(code, reason), mask)
    }

    /// Wraps bytes that already hold a complete frame (for example a fragment sequence built
    /// by hand in a test).
    pub fn from_raw(bytes: Bytes) -> Frame {
        Frame(bytes)
    }

    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The opcode of an unmasked frame (as built here); `None` for bytes that are not one.
    pub fn opcode(&self) -> Option<OpCode> {
        OpCode::from_u8(*self.0.first()? & 0x0f)
    }

    /// Whether RSV1 is set: the frame starts a compressed (permessage-deflate) message.
    pub fn is_compressed(&self) -> bool {
        self.0.first().is_some_and(|b| b & 0x40 != 0)
    }

    /// Whether this is a complete single-frame message: FIN set, text or binary.
    pub fn is_whole_data_message(&self) -> bool {
        self.0.first().is_some_and(|b| b & 0x80 != 0)
            && matches!(self.opcode(), Some(OpCode::Text | OpCode::Binary))
    }

    /// The payload of an unmasked frame (as built here): the bytes after the header. Empty
    /// for bytes too short to be a frame, or a masked one.
    pub fn payload(&self) -> &[u8] {
        let b = &self.0;
        if b.len() < 2 || b[1] & 0x80 != 0 {
            return &[];
        }
        let header = match b[1] & 0x7f {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        b.get(header..).unwrap_or(&[])
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn close_payload(code: CloseCode, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut p = Vec::with_capacity(2 + end);
    p.extend_from_slice(&code.0.to_be_bytes());
    p.extend_from_slice(&reason.as_bytes()[..end]);
    p
}

/// Builds an unmasked frame by writing its payload in place: room is left in front for the
/// header, which is filled in by [`finish`](FrameBuilder::finish) once the length is known.
/// This lets a server serialise a message straight into the buffer that goes on the wire.
pub struct FrameBuilder {
    buf: BytesMut,
    opcode: OpCode,
    rsv: u8,
}

impl FrameBuilder {
    pub fn new(opcode: OpCode) -> FrameBuilder {
        FrameBuilder::with_capacity(opcode, 128)
    }

    pub fn with_capacity(opcode: OpCode, payload_capacity: usize) -> FrameBuilder {
        let mut buf = BytesMut::with_capacity(MAX_UNMASKED_HEADER_LEN + payload_capacity);
        buf.put_bytes(0, MAX_UNMASKED_HEADER_LEN);
        FrameBuilder {
            buf,
            opcode,
            rsv: 0,
        }
    }

    /// Sets the RSV1–3 bits (`0b100` is RSV1, used by permessage-deflate).
    pub fn rsv(mut self, rsv: u8) -> FrameBuilder {
        self.rsv = rsv & 0b111;
        self
    }

    pub fn extend_from_slice(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The buffer, header room in front: for an encoder that writes the payload itself.
    pub(crate) fn buf_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    pub fn payload_len(&self) -> usize {
        self.buf.len() - MAX_UNMASKED_HEADER_LEN
    }

    pub fn finish(mut self) -> Frame {
        let len = self.payload_len() as u64;
        let (header, hlen) = encode_header(true, self.rsv, self.opcode, len, None);
        let start = MAX_UNMASKED_HEADER_LEN - hlen;
        self.buf[start..MAX_UNMASKED_HEADER_LEN].copy_from_slice(&header[..hlen]);
        let _ = self.buf.split_to(start);
        Frame(self.buf.freeze())
    }
}

impl io::Write for FrameBuilder {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.buf.extend_from_slice(data);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Encodes a frame header; returns the bytes and how many of them are used.
pub(crate) fn encode_header(
    fin: bool,
    rsv: u8,
    opcode: OpCode,
    len: u64,
    mask: Option<[u8; 4]>,
) -> ([u8; MAX_HEADER_LEN], usize) {
    let mut h = [0u8; MAX_HEADER_LEN];
    h[0] = (if fin { 0x80 } else { 0 }) | ((rsv & 0b111) << 4) | opcode.as_u8();
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut n = if len < 126 {
        h[1] = mask_bit | len as u8;
        2
    } else if len <= u16::MAX as u64 {
        h[1] = mask_bit | 126;
        h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        h[1] = mask_bit | 127;
        h[2..10].copy_from_slice(&len.to_be_bytes());
        10
    };
    if let Some(m) = mask {
        h[n..n + 4].copy_from_slice(&m);
        n += 4;
    }
    (h, n)
}

/// Encodes one fragment of a message (a test and client helper: lets callers send a message
/// in several frames).
pub fn encode_fragment(fin: bool, opcode: OpCode, payload: &[u8], mask: Option<[u8; 4]>) -> Bytes {
    encode_frame(fin, 0, opcode, payload, mask)
}

/// Encodes one frame with RSV bits (`0b100`: RSV1, a compressed message's first frame).
pub fn encode_frame(
    fin: bool,
    rsv: u8,
    opcode: OpCode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> Bytes {
    let (header, hlen) = encode_header(fin, rsv, opcode, payload.len() as u64, mask);
    let mut buf = BytesMut::with_capacity(hlen + payload.len());
    buf.extend_from_slice(&header[..hlen]);
    let start = buf.len();
    buf.extend_from_slice(payload);
    if let Some(m) = mask {
        apply_mask(&mut buf[start..], m, 0);
    }
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_writes_the_shortest_header_for_each_length_class() {
        for (len, header_len) in [
            (0usize, 2usize),
            (125, 2),
            (126, 4),
            (65535, 4),
            (65536, 10),
        ] {
            let payload = vec![b'x'; len];
            let frame = Frame::binary(&payload);
            assert_eq!(frame.len(), header_len + len, "payload {len}");
            assert_eq!(frame.as_bytes()[0], 0x82);
            assert_eq!(&frame.as_bytes()[header_len..], &payload[..]);
        }
    }

    #[test]
    fn text_frame_matches_rfc_example() {
        // RFC 6455 §5.7: a single-frame unmasked text message "Hello".
        assert_eq!(
            &Frame::text("Hello").as_bytes()[..],
            &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
        );
        // ... and the masked one.
        assert_eq!(
            &Frame::masked(OpCode::Text, b"Hello", [0x37, 0xfa, 0x21, 0x3d]).as_bytes()[..],
            &[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
    }

    #[test]
    fn payload_and_opcode_are_read_back() {
        for len in [0usize, 5, 125, 126, 65535, 65536] {
            let payload = vec![b'y'; len];
            let f = Frame::binary(&payload);
            assert_eq!(f.payload(), &payload[..]);
            assert_eq!(f.opcode(), Some(OpCode::Binary));
            assert!(f.is_whole_data_message() && !f.is_compressed());
        }
        assert!(!Frame::ping(b"").is_whole_data_message());
        assert!(Frame::masked(OpCode::Text, b"x", [1, 2, 3, 4])
            .payload()
            .is_empty());
        let f = FrameBuilder::new(OpCode::Text).rsv(0b100).finish();
        assert!(f.is_compressed());
    }

    #[test]
    fn clones_share_the_same_bytes() {
        let frame = Frame::text("shared");
        let copy = frame.clone();
        assert_eq!(frame.as_bytes().as_ptr(), copy.as_bytes().as_ptr());
    }

    #[test]
    fn close_reason_is_cut_at_a_char_boundary() {
        let reason = "é".repeat(100);
        let frame = Frame::close(CloseCode::NORMAL, &reason);
        assert!(frame.len() <= 2 + 125);
        assert!(std::str::from_utf8(&frame.as_bytes()[4..]).is_ok());
    }
}
