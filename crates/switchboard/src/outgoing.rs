//! A message on its way to many connections, in each encoding they may need, every one made
//! at most once: the plain frame, and the permessage-deflate frame for connections that
//! negotiated compression.
//!
//! Compress once per fan-out: every connection negotiates `server_no_context_takeover`
//! (`switchboard_ws::deflate::negotiate` always answers it), so the server deflates each
//! message on its own, with no state of the connection, and one deflated frame is valid for
//! every compressing member of a room. A fan-out makes one [`Outgoing`] and hands it by
//! reference to every member's [`Outbox::push_shared`](crate::outbox::Outbox::push_shared):
//! the first compressing member deflates it (on the fan-out's thread, with that thread's
//! deflater), the others queue the same bytes, and plain members queue the plain frame.
//!
//! [`stats`] counts the deflating done, process-wide.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use bytes::Bytes;
use serde::Serialize;
use switchboard_ws::deflate::{Deflater, Params};
use switchboard_ws::Frame;

/// Compression as one connection negotiated it, with the server's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    pub params: Params,
    /// Deflate level, 1–9 (`compression_level`).
    pub level: u32,
    /// Smaller messages go plain (`compression_threshold`).
    pub threshold: usize,
}

impl Compression {
    /// Whether `plain` should go compressed on this connection: a whole text or binary
    /// message, not compressed already, at least the threshold long, and short enough for
    /// the window the client allowed (a message no longer than the window can be deflated
    /// with our usual 15-bit window and still decodes with the client's smaller one).
    pub fn wants(&self, plain: &Frame) -> bool {
        if !plain.is_whole_data_message() || plain.is_compressed() {
            return false;
        }
        let len = plain.payload().len();
        len >= self.threshold.max(1) && len <= self.params.max_deflated_len()
    }
}

/// One outgoing message: its plain frame and, made on first use, its deflated frame.
/// Shared by reference across a fan-out.
#[derive(Debug)]
pub struct Outgoing {
    plain: Frame,
    /// `Some(None)`: deflated once and it did not get smaller, so it goes plain everywhere.
    deflated: OnceLock<Option<Frame>>,
}

impl Outgoing {
    pub fn new(plain: Frame) -> Outgoing {
        Outgoing {
            plain,
            deflated: OnceLock::new(),
        }
    }

    pub fn plain(&self) -> &Frame {
        &self.plain
    }

    /// The frame to queue for a connection with `compression` (`None`: it negotiated none).
    pub fn frame_for(&self, compression: Option<&Compression>) -> &Frame {
        match compression {
            Some(c) if c.wants(&self.plain) => self
                .deflated
                .get_or_init(|| deflate(&self.plain, c.level).map(|d| keeping(&d, &self.plain)))
                .as_ref()
                .unwrap_or(&self.plain),
            _ => &self.plain,
        }
    }
}

/// Deflated frame bytes that keep the plain frame's bytes alive for as long as they are
/// queued: a sender that learns from its frame's bytes being dropped that they have been
/// written (the documents' budget of queued copies, `documents::owner::Tracked`) learns the
/// same whichever of the two was queued.
struct Deflated {
    bytes: Bytes,
    _plain: Bytes,
}

impl AsRef<[u8]> for Deflated {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

fn keeping(deflated: &Frame, plain: &Frame) -> Frame {
    Frame::from_raw(Bytes::from_owner(Deflated {
        bytes: deflated.as_bytes().clone(),
        _plain: plain.as_bytes().clone(),
    }))
}

/// The frame for a connection with `compression` of a frame queued on its own
/// ([`Outbox::push`](crate::outbox::Outbox::push)): deflated on this thread unless it has
/// the same bytes as the frame the last deflate on this thread was given. A fan-out that
/// still pushes one [`Frame`] to every member in a loop (the hub today, the documents'
/// owner) therefore deflates it once, not once per member.
///
/// The cache compares bytes (after lengths), not addresses, and keeps its own copy of
/// them: it must not keep the caller's frame alive (see [`Deflated`]), and a freed frame's
/// address may come back with other bytes. Comparing costs far less than a deflate.
pub fn frame_for_single(plain: &Frame, compression: &Compression) -> Frame {
    /// Larger frames (a document's first sync) are deflated without being kept.
    const MAX_CACHED: usize = 1 << 20;
    struct Last {
        level: u32,
        plain: Bytes,
        /// Without the plain frame in it (the caller's is added to what is returned).
        deflated: Option<Frame>,
    }
    thread_local! {
        static LAST: RefCell<Option<Last>> = const { RefCell::new(None) };
    }
    if plain.len() > MAX_CACHED {
        return Outgoing::new(plain.clone())
            .frame_for(Some(compression))
            .clone();
    }
    let level = compression.level;
    let deflated = LAST.with(|last| {
        let mut last = last.borrow_mut();
        let hit = last
            .as_ref()
            .is_some_and(|l| l.level == level && l.plain[..] == plain.as_bytes()[..]);
        if !hit {
            *last = None; // free the previous one before deflating the next
            *last = Some(Last {
                level,
                plain: Bytes::copy_from_slice(plain.as_bytes()),
                deflated: deflate(plain, level),
            });
        }
        last.as_ref().and_then(|l| l.deflated.clone())
    });
    match deflated {
        Some(d) => keeping(&d, plain),
        None => plain.clone(),
    }
}

static DEFLATED: AtomicU64 = AtomicU64::new(0);
static NOT_SMALLER: AtomicU64 = AtomicU64::new(0);
static BYTES_IN: AtomicU64 = AtomicU64::new(0);
static BYTES_OUT: AtomicU64 = AtomicU64::new(0);

/// Deflating done since the process started (for `GET /api/info` and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Messages deflated: one per fan-out, however many members received it compressed.
    pub messages_deflated: u64,
    /// Of those, how many did not get smaller and went plain.
    pub not_smaller: u64,
    /// Payload bytes in and out of the deflated messages that went compressed.
    pub bytes_in: u64,
    pub bytes_out: u64,
}

pub fn stats() -> Stats {
    Stats {
        messages_deflated: DEFLATED.load(Ordering::Relaxed),
        not_smaller: NOT_SMALLER.load(Ordering::Relaxed),
        bytes_in: BYTES_IN.load(Ordering::Relaxed),
        bytes_out: BYTES_OUT.load(Ordering::Relaxed),
    }
}

/// Deflates `plain` with this thread's deflater (one per thread and level: a deflate stream
/// is about 256 KiB, too much to keep per connection).
fn deflate(plain: &Frame, level: u32) -> Option<Frame> {
    thread_local! {
        static DEFLATER: RefCell<Option<(u32, Deflater)>> = const { RefCell::new(None) };
    }
    let opcode = plain.opcode()?;
    let payload = plain.payload();
    let out = DEFLATER.with(|d| {
        let mut d = d.borrow_mut();
        if d.as_ref().is_none_or(|(l, _)| *l != level) {
            *d = Some((level, Deflater::new(level)));
        }
        d.as_mut().and_then(|(_, d)| d.deflate(opcode, payload))
    });
    DEFLATED.fetch_add(1, Ordering::Relaxed);
    match &out {
        Some(f) => {
            BYTES_IN.fetch_add(payload.len() as u64, Ordering::Relaxed);
            BYTES_OUT.fetch_add(f.payload().len() as u64, Ordering::Relaxed);
        }
        None => {
            NOT_SMALLER.fetch_add(1, Ordering::Relaxed);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_ws::deflate::{inflate_message, negotiate, Policy};
    use switchboard_ws::handshake::ExtensionOffer;

    pub(crate) fn compression(server_window: Option<&str>) -> Compression {
        let offer = ExtensionOffer {
            name: "permessage-deflate".into(),
            params: server_window
                .map(|b| ("server_max_window_bits".to_owned(), Some(b.to_owned())))
                .into_iter()
                .collect(),
        };
        Compression {
            params: negotiate(&[offer], Policy::default()).unwrap(),
            level: 1,
            threshold: 16,
        }
    }

    fn json(n: usize) -> Frame {
        Frame::text(&r#"{"type":"message","room":"chat:lobby","data":{"text":"hi"}}"#.repeat(n))
    }

    #[test]
    fn deflated_once_and_shared() {
        let out = Outgoing::new(json(10));
        let c = compression(None);
        let a = out.frame_for(Some(&c));
        let b = out.frame_for(Some(&c));
        assert!(a.is_compressed());
        assert_eq!(
            a.as_bytes().as_ptr(),
            b.as_bytes().as_ptr(),
            "the same bytes"
        );
        assert!(a.len() < out.plain().len());
        assert_eq!(
            &inflate_message(a.payload(), 1 << 20).unwrap()[..],
            out.plain().payload()
        );
        // A plain member gets the plain frame.
        assert_eq!(out.frame_for(None), out.plain());
    }

    #[test]
    fn small_incompressible_and_control_frames_go_plain() {
        let c = compression(None);
        assert!(!c.wants(&Frame::text("short")), "under the threshold");
        assert!(!c.wants(&Frame::ping(b"0123456789abcdefghijkl")));
        let noise: Vec<u8> = (0..200u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let out = Outgoing::new(Frame::binary(&noise));
        assert!(
            !out.frame_for(Some(&c)).is_compressed(),
            "not smaller: plain"
        );
    }

    #[test]
    fn a_small_client_window_takes_only_messages_that_fit_it() {
        let c = compression(Some("8"));
        assert!(c.wants(&json(4)), "~240 bytes fit a 256-byte window");
        assert!(!c.wants(&json(5)), "longer ones go plain");
        let c = compression(Some("15"));
        assert!(c.wants(&json(1000)));
    }

    #[test]
    fn a_frame_pushed_to_many_is_deflated_once_per_thread() {
        let c = compression(None);
        let frame = json(20);
        let first = frame_for_single(&frame, &c);
        for _ in 0..100 {
            let again = frame_for_single(&frame, &c);
            assert_eq!(first.as_bytes().as_ptr(), again.as_bytes().as_ptr());
        }
        // Another frame with the same bytes (its own buffer) is the same message.
        let other = json(20);
        let f = frame_for_single(&other, &c);
        assert_eq!(f.as_bytes().as_ptr(), first.as_bytes().as_ptr());
        // Other bytes, another deflate.
        let f = frame_for_single(&json(21), &c);
        assert_ne!(f.as_bytes().as_ptr(), first.as_bytes().as_ptr());
        assert_eq!(
            &inflate_message(f.payload(), 1 << 20).unwrap()[..],
            json(21).payload()
        );
    }

    /// A queued deflated frame keeps the plain one alive, and nothing else does: the
    /// documents learn that a copy was written when its plain bytes are dropped.
    #[test]
    fn the_plain_frame_lives_as_long_as_its_deflated_frame_is_queued() {
        use std::sync::{Arc, Weak};
        struct Owned(Vec<u8>, #[allow(dead_code)] Arc<()>);
        impl AsRef<[u8]> for Owned {
            fn as_ref(&self) -> &[u8] {
                &self.0
            }
        }
        let c = compression(None);
        for shared in [false, true] {
            let token = Arc::new(());
            let weak: Weak<()> = Arc::downgrade(&token);
            let plain = Frame::from_raw(Bytes::from_owner(Owned(
                json(30).as_bytes().to_vec(),
                token,
            )));
            let queued = if shared {
                Outgoing::new(plain.clone()).frame_for(Some(&c)).clone()
            } else {
                frame_for_single(&plain, &c)
            };
            assert!(queued.is_compressed());
            drop(plain);
            assert!(weak.upgrade().is_some(), "queued: the plain bytes live");
            drop(queued);
            assert!(weak.upgrade().is_none(), "written: nothing holds them");
        }
    }
}
