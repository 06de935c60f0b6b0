//! A connection's outbound queue: frames waiting for the socket, bounded in bytes.
//!
//! Publishers push shared frame bytes here and move on; only the connection's own task
//! touches the socket. A consumer that falls behind by more than the cap is marked as
//! overflowed and its task closes it with 4009, so one slow client never holds up a room
//! and memory never grows without bound.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use switchboard_ws::Frame;
use tokio::sync::Notify;

pub struct Outbox {
    state: Mutex<State>,
    notify: Notify,
    cap: usize,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Bytes>,
    /// Bytes queued here or taken by the writer but not yet written to the socket.
    pending: usize,
    overflowed: bool,
    /// Set once a close frame is queued: nothing may follow it on the wire.
    closed: bool,
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
        Outbox {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            cap,
        }
    }

    /// Queues a frame for this connection.
    pub fn push(&self, frame: &Frame) -> Result<(), PushError> {
        let bytes = frame.as_bytes();
        {
            let mut s = self.lock();
            if s.closed || s.overflowed {
                return Err(if s.overflowed {
                    PushError::Overflow
                } else {
                    PushError::Closed
                });
            }
            if s.pending + bytes.len() > self.cap {
                s.overflowed = true;
                s.queue.clear();
                drop(s);
                self.notify.notify_one();
                return Err(PushError::Overflow);
            }
            s.pending += bytes.len();
            s.queue.push_back(bytes.clone());
        }
        self.notify.notify_one();
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
        s.pending += frame.len();
        s.queue.push_back(frame.into_bytes());
        drop(s);
        self.notify.notify_one();
        true
    }

    /// Moves every queued frame into `out`; returns whether the queue has overflowed.
    pub fn take(&self, out: &mut VecDeque<Bytes>) -> bool {
        let mut s = self.lock();
        out.append(&mut s.queue);
        s.overflowed
    }

    /// Records that `n` bytes reached the socket.
    pub fn written(&self, n: usize) {
        let mut s = self.lock();
        s.pending = s.pending.saturating_sub(n);
    }

    /// Drops frames that have not been handed to the writer and forgets `n` bytes the writer
    /// discarded, so the close frame that follows an overflow is not stuck behind them.
    pub fn discard(&self, n: usize) {
        let mut s = self.lock();
        let queued: usize = s.queue.iter().map(Bytes::len).sum();
        s.queue.clear();
        s.pending = s.pending.saturating_sub(n + queued);
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Resolves once a frame has been queued since the last call (a permit is stored when
    /// no one is waiting, so no wake-up is lost).
    pub async fn notified(&self) {
        self.notify.notified().await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The lock guards plain data with no invariant a panic could break halfway.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
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
        assert!(out.take(&mut taken));
        assert!(
            taken.is_empty(),
            "an overflowed queue is dropped, not delivered"
        );
    }

    #[test]
    fn written_bytes_free_room() {
        let out = Outbox::new(10);
        let frame = Frame::text("12345");
        out.push(&frame).unwrap();
        let mut taken = VecDeque::new();
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
    }
}
