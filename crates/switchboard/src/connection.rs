//! Drives one WebSocket connection: reads and decodes frames, hands messages to a
//! [`Handler`], writes what the [`Outbox`] holds with vectored writes, pings, and runs the
//! close handshake. One task per connection, no separate reader and writer tasks, and no
//! read buffer while the connection is idle: an idle connection costs little memory.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use switchboard_ws::{CloseCode, Decoder, Frame, Message, Role};
use tokio::time::Instant;

use crate::hub::ConnHandle;
use crate::socket::Socket;

/// Close code for a client that did not answer a ping within the heartbeat timeout.
pub const HEARTBEAT_TIMEOUT: CloseCode = CloseCode(4000);
/// Close code for a client whose outbound queue overflowed.
pub const SLOW_CONSUMER: CloseCode = CloseCode(4009);
/// How long to wait for the peer's half of the close handshake.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// Frames handed to one `writev`.
const MAX_IOV: usize = 64;
/// Bytes read per `read` call when the decoder has no better idea.
const READ_CHUNK: usize = 4096;

/// What a handler wants after a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Close(CloseCode, String),
}

/// A complete data message.
#[derive(Debug)]
pub enum Data {
    Text(Bytes),
    Binary(Bytes),
}

/// The application side of a connection (protocol v1, or the echo endpoint).
pub trait Handler: Send {
    fn on_message(&mut self, data: Data) -> impl Future<Output = Flow> + Send;
    /// When the handler wants [`on_deadline`](Handler::on_deadline) called (its token
    /// expires, say). Asked again after every message.
    fn deadline(&self) -> Option<Instant> {
        None
    }
    /// The deadline passed.
    fn on_deadline(&mut self) -> Flow {
        Flow::Continue
    }
    /// The server is shutting down; queue any last words (the close follows).
    fn on_shutdown(&mut self) {}
    /// The connection is gone; release what it held (rooms, presence).
    fn on_close(&mut self) -> impl Future<Output = ()> + Send;
}

pub struct Settings {
    pub max_message_size: usize,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    /// How long queued bytes may wait for a socket that takes none of them before the
    /// connection is closed as a slow consumer. A client that keeps sending but never
    /// reads would otherwise hold whatever was queued for it (up to the whole queue) for
    /// as long as it likes: its frames count as signs of life for the heartbeat.
    pub write_timeout: Duration,
}

/// What woke the connection's task.
enum Event {
    /// The server is shutting down ([`Outbox::shutdown`]).
    Shutdown,
    Readable(io::Result<()>),
    Writable(io::Result<()>),
    /// Frames were queued in the outbox.
    Queued,
    /// The outbox overflowed while the socket was not taking more.
    Overflow,
    Timer,
}

/// How a connection ended, for the log.
#[derive(Debug, Clone)]
pub struct Ending {
    pub code: CloseCode,
    pub reason: String,
    /// Who sent the first close frame (or, for 1006, who noticed the end).
    pub by_peer: bool,
}

/// The WebSocket side of one connection: its socket, read buffer and decoder, the frames
/// being written, the heartbeat and the close handshake. Made before the connection's
/// future ([`Driver::new`]) and lent to [`run`], so that the connection's task holds it
/// once: a value an async block is given and then moves into the future it awaits is kept
/// twice, in the block and in that future.
pub struct Driver<S> {
    stream: S,
    read_buf: BytesMut,
    decoder: Decoder,
    /// The connection's handle: its outbox is what the driver writes.
    conn: Arc<ConnHandle>,
    /// Frames taken from the outbox, not yet fully written; the first may be partly written.
    writing: VecDeque<Bytes>,
    head_partial: bool,
    reading: bool,
    /// The peer broke the framing: everything it sends from now on is discarded.
    discarding: bool,
    close_sent: bool,
    close_received: bool,
    write_shut: bool,
    /// Our close frame is written: the connection's loop sends FIN next.
    fin_due: bool,
    /// Boxed: known only at the end, and a reason string in every connection's task would
    /// cost it 24 bytes for its whole life.
    ending: Option<Box<Ending>>,
    closing_deadline: Option<Instant>,
    last_ping: Instant,
    awaiting_pong: bool,
    /// Since when the frames in `writing` have waited: when the socket last took bytes, or
    /// when the writer took them with nothing waiting before. Read only while `writing`
    /// holds frames (for the write timeout), so it is set when a flush leaves some waiting.
    last_write_progress: Instant,
}

impl<S: Socket> Driver<S> {
    /// The driver of a connection whose handshake is done. `leftover` holds bytes read
    /// past the handshake (plaintext, on TLS too).
    pub fn new(
        stream: S,
        leftover: Bytes,
        conn: Arc<ConnHandle>,
        settings: &Settings,
    ) -> Driver<S> {
        // Copy what the handshake read past its end, and let go of `leftover` now: it may be
        // a slice of the HTTP server's read buffer, which it would otherwise keep alive
        // (several KiB per connection) for as long as the connection lives.
        let read_buf = BytesMut::from(&leftover[..]);
        drop(leftover);
        let mut decoder = Decoder::new(Role::Server, settings.max_message_size);
        if let Some(c) = conn.outbox.compression() {
            // permessage-deflate was negotiated: the client may send compressed messages too.
            decoder.enable_deflate(&c.params);
        }
        Driver {
            stream,
            read_buf,
            decoder,
            conn,
            writing: VecDeque::new(),
            head_partial: false,
            reading: true,
            discarding: false,
            close_sent: false,
            close_received: false,
            write_shut: false,
            fin_due: false,
            ending: None,
            closing_deadline: None,
            last_ping: Instant::now(),
            awaiting_pong: false,
            last_write_progress: Instant::now(),
        }
    }
}

/// Runs the connection until it is closed.
pub async fn run<S: Socket, H: Handler>(
    d: &mut Driver<S>,
    handler: &mut H,
    settings: &Settings,
) -> Ending {
    // The server's shutdown reaches the connection through its outbox
    // ([`Outbox::shutdown`]), which wakes the task anyway when something is queued.
    let mut shutting_down = d.conn.outbox.take_shutdown();
    if shutting_down {
        handler.on_shutdown();
        d.close(CloseCode::GOING_AWAY, "server shutting down", false);
    }
    if !d.read_buf.is_empty() {
        // A client may send its first frames in the same packet as the handshake: decode
        // them now. Waiting for readability would leave them unanswered until the client
        // happened to send more.
        d.awaiting_pong = false;
        d.decode_buffered(handler).await;
    }
    // One timer per connection, re-armed only when its deadline moves (about once per
    // heartbeat), not on every frame: the timer wheel is shared by all connections.
    let sleep = tokio::time::sleep_until(d.timer(settings, handler.deadline()));
    tokio::pin!(sleep);
    while !d.finished() {
        if d.fin_due {
            // Our close frame is on the wire: send FIN, so the peer sees the end of the
            // stream, and keep reading until its close arrives.
            d.fin_due = false;
            let _ = d.stream.shutdown().await;
            d.write_shut = true;
            continue;
        }
        let handler_deadline = handler.deadline();
        let deadline = d.timer(settings, handler_deadline);
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        // TLS records the socket did not take yet count as something to write.
        let want_write = !d.writing.is_empty() || d.stream.has_pending_output();
        // The socket's readiness is polled directly (one waker slot per direction), not
        // through `readable()`/`writable()` futures that join a waiter list on every turn
        // of this loop. Taking over the slots also drops the wakers the HTTP server left
        // there during the handshake, which would otherwise keep its finished task's
        // memory (about 1 KiB) alive for the life of the connection.
        let event = std::future::poll_fn(|cx| {
            // One atomic load; the request wakes the task through the outbox, which is
            // polled below whenever this returns `Pending`.
            if !shutting_down && d.conn.outbox.take_shutdown() {
                return Poll::Ready(Event::Shutdown);
            }
            if d.reading {
                if let Poll::Ready(r) = d.stream.poll_read_ready(cx) {
                    return Poll::Ready(Event::Readable(r));
                }
            }
            if want_write {
                if let Poll::Ready(r) = d.stream.poll_write_ready(cx) {
                    return Poll::Ready(Event::Writable(r));
                }
                if d.conn.outbox.poll_overflow(cx).is_ready() {
                    return Poll::Ready(Event::Overflow);
                }
            } else if d.conn.outbox.poll_ready(cx).is_ready() {
                return Poll::Ready(Event::Queued);
            }
            if sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Timer);
            }
            Poll::Pending
        })
        .await;
        match event {
            Event::Shutdown => {
                shutting_down = true;
                if !d.close_sent {
                    handler.on_shutdown();
                    d.close(CloseCode::GOING_AWAY, "server shutting down", false);
                }
            }
            Event::Readable(Ok(())) => d.on_readable(handler).await,
            Event::Readable(Err(_)) => d.abort("read error"),
            Event::Writable(Ok(())) | Event::Queued => d.flush(),
            Event::Writable(Err(_)) => d.abort("write error"),
            Event::Overflow => {
                d.take_from_outbox();
            }
            Event::Timer => {
                if !d.close_sent && handler_deadline.is_some_and(|t| Instant::now() >= t) {
                    let flow = handler.on_deadline();
                    d.on_flow(flow);
                    d.flush();
                } else {
                    d.on_timer(settings);
                }
            }
        }
    }
    handler.on_close().await;
    d.ending.take().map_or(
        Ending {
            code: CloseCode::ABNORMAL,
            reason: String::new(),
            by_peer: true,
        },
        |e| *e,
    )
}

impl<S: Socket> Driver<S> {
    fn finished(&self) -> bool {
        if self
            .ending
            .as_ref()
            .is_some_and(|e| e.code == CloseCode::ABNORMAL)
        {
            return true; // the socket is gone or unusable
        }
        // Our close frame is on the wire and the peer answered (or hung up).
        self.write_shut && (self.close_received || !self.reading)
    }

    fn timer(&self, s: &Settings, handler: Option<Instant>) -> Instant {
        if let Some(deadline) = self.closing_deadline {
            return deadline;
        }
        let s_deadline = self.own_timer(s);
        match handler {
            Some(h) => h.min(s_deadline),
            None => s_deadline,
        }
    }

    fn own_timer(&self, s: &Settings) -> Instant {
        let heartbeat = if self.awaiting_pong {
            self.last_ping + s.heartbeat_timeout
        } else {
            self.last_ping + s.heartbeat_interval
        };
        if self.writing.is_empty() {
            heartbeat
        } else {
            heartbeat.min(self.last_write_progress + s.write_timeout)
        }
    }

    fn on_timer(&mut self, s: &Settings) {
        let now = Instant::now();
        if self.closing_deadline.is_some_and(|d| now >= d) {
            // The peer never finished the close handshake (or never read our close frame):
            // stop waiting and drop the socket. The ending keeps the code we sent.
            if self.ending.is_none() {
                self.abort("close handshake timed out");
            }
            self.reading = false;
            self.write_shut = true;
            return;
        }
        if !self.writing.is_empty() && now >= self.last_write_progress + s.write_timeout {
            self.close(
                SLOW_CONSUMER,
                "slow consumer: not reading what it was sent",
                false,
            );
            return;
        }
        if self.awaiting_pong && now >= self.last_ping + s.heartbeat_timeout {
            self.close(HEARTBEAT_TIMEOUT, "heartbeat timeout", false);
            return;
        }
        if !self.awaiting_pong && now >= self.last_ping + s.heartbeat_interval {
            if self.conn.outbox.push(&Frame::ping(b"")).is_ok() {
                self.awaiting_pong = true;
            }
            self.last_ping = now;
        }
    }

    /// Marks the connection done without a clean close (socket error, timeouts).
    fn abort(&mut self, why: &str) {
        self.ending = Some(Box::new(Ending {
            code: CloseCode::ABNORMAL,
            reason: why.to_owned(),
            by_peer: true,
        }));
    }

    /// Starts the close handshake from our side (or answers the peer's close).
    fn close(&mut self, code: CloseCode, reason: &str, by_peer: bool) {
        if self.close_sent {
            return;
        }
        self.close_sent = true;
        if self.ending.is_none() {
            self.ending = Some(Box::new(Ending {
                code,
                reason: reason.to_owned(),
                by_peer,
            }));
        }
        self.conn.outbox.push_close(Frame::close(code, reason));
        self.closing_deadline = Some(Instant::now() + CLOSE_TIMEOUT);
    }

    async fn on_readable<H: Handler>(&mut self, handler: &mut H) {
        if self.read_buf.capacity() - self.read_buf.len() < READ_CHUNK / 4 {
            self.read_buf.reserve(READ_CHUNK);
        }
        match self.stream.try_read_buf(&mut self.read_buf) {
            Ok(0) => {
                self.reading = false;
                if !self.close_sent {
                    self.ending = Some(Box::new(Ending {
                        code: CloseCode::ABNORMAL,
                        reason: "connection closed without a close frame".to_owned(),
                        by_peer: true,
                    }));
                }
                return;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Nothing after all (a spurious wake-up, or TLS records with no data in them:
                // a partial record, a key update): keep no buffer for nothing.
                if self.read_buf.is_empty() {
                    self.read_buf = BytesMut::new();
                }
                return;
            }
            Err(e) => {
                self.abort(&format!("read error: {e}"));
                return;
            }
        }
        // Any frame proves the peer is alive. Pings still go out every interval, so a
        // client that only listens sees traffic too.
        self.awaiting_pong = false;
        self.decode_buffered(handler).await;
    }

    /// Decodes and handles every complete frame in the read buffer, then writes replies.
    async fn decode_buffered<H: Handler>(&mut self, handler: &mut H) {
        if self.discarding {
            // Keep draining until the peer hangs up: closing a socket with unread input
            // makes the kernel send RST, which can destroy our close frame in flight.
            self.read_buf.clear();
        }
        while self.reading && !self.close_received && !self.discarding {
            let message = match self.decoder.decode(&mut self.read_buf) {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    self.close(e.code, e.reason, false);
                    // The rest of the stream cannot be framed any more; discard it.
                    self.read_buf.clear();
                    self.discarding = true;
                    break;
                }
            };
            match message {
                // The handler's future is boxed: its state (a join waiting for the broker
                // holds the whole request) would otherwise be part of every connection's
                // task, idle ones too — about 650 bytes each. A message costs one small
                // allocation instead.
                Message::Text(b) if !self.close_sent => {
                    let flow = Box::pin(handler.on_message(Data::Text(b))).await;
                    self.on_flow(flow);
                }
                Message::Binary(b) if !self.close_sent => {
                    let flow = Box::pin(handler.on_message(Data::Binary(b))).await;
                    self.on_flow(flow);
                }
                Message::Text(_) | Message::Binary(_) => {} // closing: ignore data
                Message::Ping(payload) => {
                    let _ = self.conn.outbox.push(&Frame::pong(&payload));
                }
                Message::Pong(_) => {}
                Message::Close(frame) => {
                    self.close_received = true;
                    let (code, reason) = match frame {
                        Some(f) => (f.code, f.reason),
                        None => (CloseCode(1005), String::new()),
                    };
                    if !self.close_sent {
                        self.ending = Some(Box::new(Ending {
                            code,
                            reason: reason.clone(),
                            by_peer: true,
                        }));
                        // Echo the peer's code, as RFC 6455 §5.5.1 suggests.
                        let echo = if code.0 == 1005 {
                            CloseCode::NORMAL
                        } else {
                            code
                        };
                        self.close(echo, "", true);
                    }
                }
            }
        }
        // Give the memory back once a large message has gone through.
        if self.read_buf.is_empty() {
            self.read_buf = BytesMut::new();
        }
        self.flush();
    }

    fn on_flow(&mut self, flow: Flow) {
        if let Flow::Close(code, reason) = flow {
            self.close(code, &reason, false);
        }
    }

    /// Moves what the outbox holds to the writer. Returns whether a close frame has been
    /// queued.
    fn take_from_outbox(&mut self) -> bool {
        let taken = self.conn.outbox.take(&mut self.writing);
        if taken.closed && !self.close_sent {
            // Closed from outside the task (`Outbox::close_with`): the close frame is queued;
            // run the rest of the handshake as for our own close.
            self.close_sent = true;
            let (code, reason) = self
                .conn
                .outbox
                .close_reason()
                .unwrap_or((CloseCode::NORMAL, String::new()));
            if self.ending.is_none() {
                self.ending = Some(Box::new(Ending {
                    code,
                    reason,
                    by_peer: false,
                }));
            }
            self.closing_deadline = Some(Instant::now() + CLOSE_TIMEOUT);
        }
        if taken.overflowed && !self.close_sent {
            // Keep only a frame already partly on the wire, so the stream stays well-formed.
            let keep = usize::from(self.head_partial);
            let dropped: usize = self.writing.iter().skip(keep).map(Bytes::len).sum();
            self.writing.truncate(keep);
            self.conn.outbox.discard(dropped);
            self.close(
                SLOW_CONSUMER,
                "slow consumer: outbound queue overflow",
                false,
            );
            return self.conn.outbox.take(&mut self.writing).closed;
        }
        taken.closed
    }

    /// Writes as much as the socket takes right now, many frames per system call. Not
    /// async (its future would widen every connection's task): the FIN after our close
    /// frame is left to the connection's loop ([`fin_due`](Driver::fin_due)).
    fn flush(&mut self) {
        // Whether the writer took frames or the socket took bytes in this call: the stall
        // clock (`last_write_progress`) is read only while frames wait, so it is set only
        // when this call leaves some waiting, not on every write.
        let mut progressed = false;
        let closed = loop {
            if self.writing.is_empty() {
                let closed = self.take_from_outbox();
                if self.writing.is_empty() {
                    break closed;
                }
                // Nothing was waiting for the socket until now: the stall clock starts here.
                progressed = true;
            }
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            for (i, frame) in self.writing.iter().take(MAX_IOV).enumerate() {
                iov[i] = IoSlice::new(frame);
                n += 1;
            }
            // Counted as written before the call: the client may read these bytes and
            // answer before this task runs again (see `Outbox::pending`).
            let batch: usize = iov[..n].iter().map(|s| s.len()).sum();
            self.conn.outbox.written(batch);
            match self.stream.try_write_vectored(&iov[..n]) {
                Ok(0) => {
                    self.abort("write returned zero");
                    return;
                }
                Ok(n) => {
                    self.conn.outbox.unwritten(batch - n);
                    self.advance(n);
                    progressed = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.conn.outbox.unwritten(batch);
                    if progressed {
                        self.last_write_progress = Instant::now();
                    }
                    return;
                }
                Err(e) => {
                    self.abort(&format!("write error: {e}"));
                    return;
                }
            }
        };
        // Everything queued is written: give the queue's buffer back, so an idle connection
        // holds none (a burst may have grown it).
        self.writing = VecDeque::new();
        // And out of the socket layer (TLS records): the rest waits for writability.
        match self.stream.try_flush() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                self.abort(&format!("write error: {e}"));
                return;
            }
        }
        // Once our close frame is out, FIN is due.
        if self.close_sent && !self.write_shut && closed {
            self.fin_due = true;
        }
    }

    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.writing.front_mut() else {
                return;
            };
            if n >= front.len() {
                n -= front.len();
                self.writing.pop_front();
                self.head_partial = false;
            } else {
                front.advance(n);
                self.head_partial = true;
                n = 0;
            }
        }
    }
}
