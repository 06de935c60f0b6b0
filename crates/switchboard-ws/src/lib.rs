//! An RFC 6455 WebSocket codec built for fan-out.
//!
//! The crate is sans-IO: it turns bytes into [`Message`]s ([`Decoder`]) and messages into
//! frame bytes ([`Frame`]), and validates the opening handshake ([`handshake`]). It knows
//! nothing of sockets, rooms or JSON.
//!
//! The point of owning it: an outgoing frame is encoded once into a [`Frame`] whose bytes are
//! reference-counted, so a server can hand the very same buffer to every connection of a room
//! without copying or re-encoding it. permessage-deflate (RFC 7692, [`deflate`]) keeps that
//! property: negotiated without server context takeover, a message is deflated once into a
//! frame of its own that every compressing member shares; the decoder inflates (bounded)
//! what peers compress.

mod close;
mod decoder;
pub mod deflate;
mod frame;
pub mod handshake;
mod mask;
mod utf8;

pub use close::{CloseCode, CloseFrame};
pub use decoder::{Decoder, Message, ProtocolError, Role};
pub use frame::{encode_fragment, encode_frame, Frame, FrameBuilder, OpCode, MAX_HEADER_LEN};
pub use mask::apply_mask;
pub use utf8::Utf8Validator;
