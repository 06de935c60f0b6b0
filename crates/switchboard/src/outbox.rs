//! A connection's outbound queue: frames waiting for the socket, bounded in bytes.
//!
//! Publishers push shared frame bytes here and move on; only the connection's own task
//! touches the socket. A consumer that falls behind by more than the cap is marked as
//! overflowed and its task closes it with 4009, so one slow client never holds up a room
//! and memory never grows without bound.
//!
//! The outbox also knows whether its connection negotiated permessage-deflate, because the
//! choice between a message's plain and deflated frame is made where it is queued: a
//! fan-out hands every member the same [`Outgoing`] ([`Outbox::push_shared`]), and each
//! outbox takes the encoding its connection speaks.

use std::collections::VecDeque;
use std::mem;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use switchboard_ws::{CloseCode, Frame};

use crate::outgoing::{self, Compression, Outgoing};

pub struct Outbox {
    state: Mutex<State>,
    /// Bytes queued here or taken by the writer but not yet written to the socket. Added
    /// under the lock by pushes; the writer subtracts what it hands to a write *before*
    /// the system call and adds back what the call did not take. Subtracting after the
    /// call left a window, as long as the writer was preempted (which waking the reader
    /// makes likely on a busy machine), in which bytes the client had already read were
    /// still counted, and a push on another thread closed a client that keeps up as a
    /// slow consumer.
    pending: AtomicUsize,
    cap: usize,
    /// permessage-deflate as the connection negotiated it; `None`: everything goes plain.
    compression: Option<Compression>,
    /// The server is shutting down (or the connection's owner stops it):
    /// [`NOT_ASKED`], [`ASKED`] until the connection's task takes the news, then [`TOLD`].
    /// The task reads it with one atomic load per turn; it learns it through the outbox,
    /// which wakes it anyway, instead of a shutdown future of its own in every connection.
    shutdown: AtomicU8,
}

const NOT_ASKED: u8 = 0;
const ASKED: u8 = 1;
const TOLD: u8 = 2;

#[derive(Default)]
struct State {
    queue: VecDeque<Bytes>,
    overflowed: bool,
    /// Whether the writer has been told about the overflow (it is told once).
    overflow_taken: bool,
    /// Set once a close frame is queued: nothing may follow it on the wire.
    closed: bool,
    /// The code and reason of a close asked for from outside the connection's task (an API
    /// disconnect), for its log line.
    close_reason: Option<(CloseCode, String)>,
    /// The connection task, parked until something is queued. Taken by the push that wakes
    /// it, so the other frames of a burst wake nobody: a fan-out to a member costs one
    /// wake-up per batch, not one per frame.
    waker: Option<Waker>,
}

/// What [`Outbox::take`] found besides the frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// The queue overflowed since the last take: the connection must close with 4009.
    pub overflowed: bool,
    /// A close frame has been queued (by the connection or from outside).
    pub closed: bool,
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The queue is over its cap; the connection is being closed with 4009.
    Overflow,
    /// The connection is closing.
    Closed,
}

impl Outbox {
    pub fn new(cap: usize) -> Outbox {
        Outbox::with_compression(cap, None)
    }

    /// An outbox for a connection that negotiated `compression` (or none).
    pub fn with_compression(cap: usize, compression: Option<Compression>) -> Outbox {
        Outbox {
            state: Mutex::new(State::default()),
            pending: AtomicUsize::new(0),
            cap,
            compression,
            shutdown: AtomicU8::new(NOT_ASKED),
        }
    }

    /// Asks the connection's task to shut down: it lets its handler say its last words,
    /// then closes with 1001 (`going away`). Asking again changes nothing.
    pub fn shutdown(&self) {
        if self
            .shutdown
            .compare_exchange(NOT_ASKED, ASKED, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return;
        }
        // Under the lock: a task polling right now either sees the request there or has
        // left its waker for this to wake (see `poll`).
        let waker = self.lock().waker.take();
        wake(waker);
    }

    /// True once: the first time it is asked after [`shutdown`](Outbox::shutdown).
    pub fn take_shutdown(&self) -> bool {
        self.shutdown.load(Ordering::Acquire) == ASKED
            && self
                .shutdown
                .compare_exchange(ASKED, TOLD, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
    }

    /// permessage-deflate as the connection negotiated it (the driver sets up its decoder
    /// from this too).
    pub fn compression(&self) -> Option<&Compression> {
        self.compression.as_ref()
    }

    /// Queues a message made for many connections: its deflated frame (made at most once
    /// for all of them, by the first compressing connection that gets it) if this connection
    /// negotiated compression and the message is worth compressing, its plain frame
    /// otherwise.
    pub fn push_shared(&self, message: &Outgoing) -> Result<(), PushError> {
        self.push_bytes(message.frame_for(self.compression.as_ref()).as_bytes())
    }

    /// Queues a frame for this connection. On a compressing connection a text or binary
    /// message at least `compression_threshold` long goes deflated; a run of pushes of the
    /// same frame on one thread (a fan-out that has no [`Outgoing`]) deflates it once
    /// ([`outgoing::frame_for_single`]). Control frames always go plain.
    pub fn push(&self, frame: &Frame) -> Result<(), PushError> {
        match &self.compression {
            Some(c) if c.wants(frame) => {
                self.push_bytes(outgoing::frame_for_single(frame, c).as_bytes())
            }
            _ => self.push_bytes(frame.as_bytes()),
        }
    }

    fn push_bytes(&self, bytes: &Bytes) -> Result<(), PushError> {
        let waker = {
            let mut s = self.lock();
            if s.closed || s.overflowed {
                return Err(if s.overflowed {
                    PushError::Overflow
                } else {
                    PushError::Closed
                });
            }
            if self.pending.load(Ordering::Acquire) + bytes.len() > self.cap {
                s.overflowed = true;
                s.queue = VecDeque::new();
                let waker = s.waker.take();
                drop(s);
                wake(waker);
                return Err(PushError::Overflow);
            }
            self.pending.fetch_add(bytes.len(), Ordering::AcqRel);
            s.queue.push_back(bytes.clone());
            s.waker.take()
        };
        wake(waker);
        Ok(())
    }

    /// Queues a close frame: the last frame this connection sends. Not subject to the cap,
    /// so that even an overflowing connection learns why it is closed.
    pub fn push_close(&self, frame: Frame) -> bool {
        let mut s = self.lock();
        if s.closed {
            return false;
        }
        s.closed = true;
        self.pending.fetch_add(frame.len(), Ordering::AcqRel);
        s.queue.push_back(frame.into_bytes());
        let waker = s.waker.take();
        drop(s);
        wake(waker);
        true
    }

    /// Closes the connection from outside its task (another connection's request, the HTTP
    /// API): queues the close frame, and the connection's driver runs the close handshake.
    /// Returns false if the connection was closing already.
    pub fn close_with(&self, code: CloseCode, reason: &str) -> bool {
        {
            let mut s = self.lock();
            if s.closed {
                return false;
            }
            s.close_reason = Some((code, reason.to_owned()));
        }
        self.push_close(Frame::close(code, reason))
    }

    /// What [`close_with`](Outbox::close_with) was given, if it was called.
    pub fn close_reason(&self) -> Option<(CloseCode, String)> {
        self.lock().close_reason.clone()
    }

    /// Moves every queued frame into `out` (the queue's buffer itself when `out` is empty:
    /// no copy, no allocation).
    pub fn take(&self, out: &mut VecDeque<Bytes>) -> Taken {
        let mut s = self.lock();
        if out.is_empty() {
            mem::swap(out, &mut s.queue);
        } else {
            out.append(&mut s.queue);
        }
        let overflowed = s.overflowed && !s.overflow_taken;
        s.overflow_taken |= overflowed;
        Taken {
            overflowed,
            closed: s.closed,
        }
    }

    /// Puts back `n` bytes that a write was given but did not take.
    pub fn unwritten(&self, n: usize) {
        self.pending.fetch_add(n, Ordering::AcqRel);
    }

    /// Records that `n` bytes are out of the writer's hands: about to be written (see
    /// [`unwritten`](Outbox::unwritten)), or dropped.
    pub fn written(&self, n: usize) {
        let _ = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                Some(p.saturating_sub(n))
            });
    }

    /// Ready when there is something to take: frames, news of an overflow, or a shutdown
    /// request not yet taken. Otherwise the task's waker is kept, and the next push (or
    /// [`shutdown`](Outbox::shutdown)) wakes it.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.poll(cx, true)
    }

    /// Ready only with news of an overflow (or a shutdown request): for a writer that is waiting for its socket
    /// with frames in hand already, so that a client that stopped reading is closed now,
    /// not whenever its socket drains (which may be never).
    pub fn poll_overflow(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.poll(cx, false)
    }

    fn poll(&self, cx: &mut Context<'_>, frames: bool) -> Poll<()> {
        let mut s = self.lock();
        if (frames && !s.queue.is_empty())
            || (s.overflowed && !s.overflow_taken)
            || self.shutdown.load(Ordering::SeqCst) == ASKED
        {
            return Poll::Ready(());
        }
        match &s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => s.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Drops frames that have not been handed to the writer and forgets `n` bytes the writer
    /// discarded, so the close frame that follows an overflow is not stuck behind them.
    pub fn discard(&self, n: usize) {
        let mut s = self.lock();
        let queued: usize = s.queue.iter().map(Bytes::len).sum();
        s.queue.clear();
        drop(s);
        self.written(n + queued);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The lock guards plain data with no invariant a panic could break halfway.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Wakes outside the lock, so the woken task never waits for it.
fn wake(waker: Option<Waker>) {
    if let Some(w) = waker {
        w.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_marks_the_queue_and_refuses_more() {
        let out = Outbox::new(10);
        let frame = Frame::text("12345"); // 7 bytes on the wire
        assert_eq!(out.push(&frame), Ok(()));
        assert_eq!(out.push(&frame), Err(PushError::Overflow));
        assert_eq!(out.push(&Frame::text("")), Err(PushError::Overflow));
        let mut taken = VecDeque::new();
        assert!(out.take(&mut taken).overflowed);
        assert!(
            taken.is_empty(),
            "an overflowed queue is dropped, not delivered"
        );
        assert!(
            !out.take(&mut taken).overflowed,
            "the writer hears of an overflow once"
        );
    }

    #[test]
    fn written_bytes_free_room() {
        let out = Outbox::new(10);
        let frame = Frame::text("12345");
        out.push(&frame).unwrap();
        let mut taken = VecDeque::new();
        out.take(&mut taken);
        out.written(2);
        assert_eq!(
            out.push(&frame),
            Err(PushError::Overflow),
            "taken is not written: 5 bytes still out"
        );
        let out = Outbox::new(10);
        out.push(&frame).unwrap();
        out.take(&mut taken);
        out.written(7);
        assert_eq!(out.push(&frame), Ok(()));
    }

    #[test]
    fn nothing_follows_a_close_frame() {
        let out = Outbox::new(100);
        assert!(out.push_close(Frame::close(switchboard_ws::CloseCode::NORMAL, "")));
        assert_eq!(out.push(&Frame::text("late")), Err(PushError::Closed));
        assert!(!out.push_close(Frame::close(switchboard_ws::CloseCode::NORMAL, "")));
        assert!(out.take(&mut VecDeque::new()).closed);
    }

    /// The first push after the writer parked wakes it once; later pushes wake nobody until
    /// the writer polls again.
    #[test]
    fn one_wake_up_per_batch() {
        use std::sync::Arc;
        use std::task::Wake;

        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let out = Outbox::new(1000);
        assert!(out.poll_ready(&mut cx).is_pending());
        for _ in 0..5 {
            out.push(&Frame::text("x")).unwrap();
        }
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(out.poll_ready(&mut cx).is_ready());
        let mut taken = VecDeque::new();
        out.take(&mut taken);
        assert_eq!(taken.len(), 5);
        assert!(out.poll_ready(&mut cx).is_pending());
        out.push(&Frame::text("y")).unwrap();
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
    }

    /// A fan-out to 100 members, half of them compressing: one deflate, the same deflated
    /// bytes in every compressing queue, the same plain bytes in every other.
    #[test]
    fn push_shared_deflates_once_for_every_compressing_member() {
        use switchboard_ws::deflate::{negotiate, Policy};
        use switchboard_ws::handshake::ExtensionOffer;
        let offer = ExtensionOffer {
            name: "permessage-deflate".into(),
            params: vec![],
        };
        let c = Compression {
            params: negotiate(&[offer], Policy::default()).unwrap(),
            level: 1,
            threshold: 128,
        };
        let members: Vec<Outbox> = (0..100)
            .map(|i| Outbox::with_compression(1 << 20, (i % 2 == 0).then_some(c)))
            .collect();
        let text = r#"{"type":"message","room":"r","data":{"text":"hello"}}"#.repeat(10);
        for frame in [Frame::text(&text), Frame::text("short")] {
            let message = Outgoing::new(frame.clone());
            for m in &members {
                m.push_shared(&message).unwrap();
            }
            // The same through `push` (the hub's loop today): also deflated once.
            for m in &members {
                m.push(&frame).unwrap();
            }
        }
        let mut queues: Vec<VecDeque<Bytes>> = members
            .iter()
            .map(|m| {
                let mut q = VecDeque::new();
                m.take(&mut q);
                q
            })
            .collect();
        let (even, odd) = (queues.remove(0), queues.remove(0));
        assert!(even[0].len() < text.len() / 4, "deflated");
        assert_eq!(&odd[0][..], Frame::text(&text).as_bytes(), "plain");
        assert_eq!(even[1], even[0], "push and push_shared make the same frame");
        assert_eq!(
            &even[2][..],
            Frame::text("short").as_bytes(),
            "short ones go plain"
        );
        assert_eq!(&odd[3][..], &even[3][..]);
        for (i, q) in queues.iter().enumerate() {
            let like = if i % 2 == 0 { &even } else { &odd };
            for (a, b) in q.iter().zip(like.iter()) {
                assert_eq!(
                    a.as_ptr(),
                    b.as_ptr(),
                    "member {i}: shared bytes, not copies"
                );
            }
        }
    }

    /// A writer blocked on its socket hears of an overflow, not of every frame.
    #[test]
    fn overflow_news_reaches_a_blocked_writer() {
        let mut cx = Context::from_waker(Waker::noop());
        let out = Outbox::new(10);
        out.push(&Frame::text("12345")).unwrap();
        assert!(
            out.poll_overflow(&mut cx).is_pending(),
            "frames are not news"
        );
        assert_eq!(out.push(&Frame::text("12345")), Err(PushError::Overflow));
        assert!(out.poll_overflow(&mut cx).is_ready());
        assert!(out.take(&mut VecDeque::new()).overflowed);
        assert!(out.poll_overflow(&mut cx).is_pending(), "told once");
    }
}
