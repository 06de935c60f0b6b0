// The Switchboard client: one WebSocket to a Switchboard server, kept open, and the rooms
// joined over it (wire protocol "switchboard.v1", docs/protocol.md).
//
//   connecting ──▶ open ──(lost)──▶ reconnecting ──▶ open ──▶ ...
//        └──(failed)──▶ reconnecting
//   any state ──(close(), or a close code that says stop)──▶ closed
//
// "open" means the server's `welcome` arrived and, when a token was sent, the `auth` frame
// was answered (accepted, or, by a server that checks no tokens, `unavailable`: the client
// then goes on anonymously). Then every room joins again, and publishes queued meanwhile go
// out. While open, the token is refreshed ahead of its expiry (auth.js).

import { Auth } from "./auth.js";
import { BYTES, decodeFrame, encodeFrame, isBytes } from "./binary.js";
import { closePolicy } from "./close-codes.js";
import { Emitter } from "./emitter.js";
import { CLIENT_CODES, SwitchboardError } from "./errors.js";
import { Heartbeat } from "./heartbeat.js";
import { Requests } from "./requests.js";
import { Room } from "./room.js";
import { DEFAULT_BACKOFF, RetryTimer, systemClock } from "./timer.js";

export { CLIENT_CODES, SwitchboardError } from "./errors.js";

export const PROTOCOL = "switchboard.v1";
const OPEN = 1; // WebSocket.OPEN, the same in browsers and in `ws`

export class Switchboard {
  #url;
  #WebSocket;
  #auth;
  #timeoutMs;
  #resetAfterMs;
  #heartbeatGraceMs;
  #clock;
  #events = new Emitter();
  #state = "closed";
  #rooms = new Map();
  #requests;
  #heartbeat;
  #reconnectTimer;
  #link;
  #ws = null;
  #generation = 0; // bumped by each attempt and by close(): a slow getToken() can tell it is stale
  #connectTimer = null;
  #welcome = null;
  #authPending = false;
  #openedAt = null;
  #shutdownHint = null; // reconnect_ms of a `shutdown` frame, for the close that follows it
  #lastError = "";

  /** This connection's id and user, from `welcome` (and the `auth` reply). */
  conn = null;
  user = null;

  constructor(url, options = {}) {
    const {
      token = null,
      getToken = null,
      WebSocket = globalThis.WebSocket,
      backoff,
      queueLimit = 1000,
      timeoutMs = 10_000,
      heartbeatGraceMs = 5_000,
      clock = systemClock,
      random = Math.random,
      autoConnect = true,
    } = options;
    if (typeof WebSocket !== "function") {
      throw new TypeError("no WebSocket here: pass one, e.g. new Switchboard(url, { WebSocket }) with ws");
    }
    this.#url = url;
    this.#WebSocket = WebSocket;
    this.#auth = new Auth({ token, getToken }, { clock, retry: { clock, random, backoff } });
    this.#timeoutMs = timeoutMs;
    this.#resetAfterMs = { ...DEFAULT_BACKOFF, ...backoff }.resetAfterMs;
    this.#heartbeatGraceMs = heartbeatGraceMs;
    this.#clock = clock;
    this.#requests = new Requests(clock);
    this.#reconnectTimer = new RetryTimer(() => this.#open(), { clock, random, backoff });
    this.#heartbeat = new Heartbeat(clock, {
      ping: () => this.#transmit({ type: "ping", id: this.#requests.nextId() }),
      dead: (silentMs) => this.#drop(`no frame from the server for ${silentMs} ms`),
    });
    // All a room may do with the client.
    this.#link = {
      request: (frame, ms) => this.#requests.send(this.#transmit, frame, ms),
      isOpen: () => this.#state === "open",
      isClosed: () => this.#state === "closed",
      forget: (room) => this.#rooms.get(room.name) === room && this.#rooms.delete(room.name),
      queueLimit,
      timeoutMs,
      retry: { clock, random, backoff },
    };
    if (autoConnect) this.connect();
  }

  /** "connecting" | "open" | "reconnecting" | "closed" */
  get state() {
    return this.#state;
  }

  on(event, listener) {
    return this.#events.on(event, listener);
  }

  /**
   * Connects (the constructor does, unless autoConnect is false). While waiting to
   * reconnect it retries at once; after a stop (4001, 4003, ...) it starts over.
   */
  connect() {
    if (this.#state === "open") return;
    if (this.#state !== "closed" && !this.#reconnectTimer.pending) return; // under way
    if (this.#state === "closed") {
      this.#reconnectTimer.reset();
      this.#setState("connecting");
    }
    this.#reconnectTimer.cancel();
    this.#open();
  }

  /** Joins `name` (or returns the room already joined under that name). */
  join(name, options = {}) {
    let room = this.#rooms.get(name);
    if (room) return room;
    room = new Room(name, options, this.#link);
    this.#rooms.set(name, room);
    if (this.#state === "open") room._connected();
    return room;
  }

  /** Closes for good: no reconnect, every room closed, queued publishes rejected. */
  close() {
    this.#generation++;
    this.#reconnectTimer.reset();
    const ws = this.#teardown();
    if (ws) {
      ws.close(1000, "client closed");
      this.#events.emit("disconnect", { code: 1000, reason: "closed by the client", reconnect: false });
    }
    const error = new SwitchboardError(CLIENT_CODES.CLOSED, "the client was closed");
    for (const room of [...this.#rooms.values()]) room._close(error);
    this.#setState("closed");
  }

  // One attempt: a token if one must be fetched (none yet, or the one there is due for a
  // refresh), then the WebSocket.
  #open() {
    const generation = ++this.#generation;
    if (!this.#auth.mustFetch) {
      this.#auth.reuse();
      this.#dial(this.#auth.token);
      return;
    }
    Promise.resolve()
      .then(() => this.#auth.fetch())
      .then(
        (token) => generation === this.#generation && this.#dial(token),
        (error) => {
          if (generation !== this.#generation) return;
          this.#error(error);
          if (error.code === CLIENT_CODES.TOKEN) {
            this.#scheduleReconnect(0);
            return;
          }
          // getToken refused (e.g. the person is logged out): stop until connect() is called.
          const closed = new SwitchboardError(CLIENT_CODES.CLOSED, `not connected: ${error.message}`);
          for (const room of this.#rooms.values()) room._rejectQueue(closed);
          this.#setState("closed");
        },
      );
  }

  #dial(token) {
    const ws = new this.#WebSocket(this.#url, PROTOCOL);
    ws.binaryType = "arraybuffer"; // binary messages (browsers would give Blobs, read asynchronously)
    this.#ws = ws;
    this.#lastError = "";
    this.conn = null;
    this.user = null;
    // Events of a socket this client has moved on from are ignored, not unhooked: `ws`
    // throws on an error event that has no listener.
    ws.onopen = () => ws === this.#ws && this.#authenticate(ws, token);
    ws.onmessage = (event) => ws === this.#ws && this.#receive(event.data);
    ws.onerror = (event) => {
      if (ws === this.#ws) this.#lastError = event?.message ?? event?.error?.message ?? "";
    };
    ws.onclose = (event) => ws === this.#ws && this.#closed(event.code, event.reason);
    this.#connectTimer = this.#clock.setTimeout(
      () => this.#drop(`not open within ${this.#timeoutMs} ms`),
      this.#timeoutMs,
    );
  }

  // First frame: the token, when there is one (browsers cannot set an Authorization header,
  // and a token in the URL ends up in logs). Rooms join once it is answered.
  #authenticate(ws, token) {
    if (token == null) return;
    this.#authPending = true;
    this.#requests.send(this.#transmit, { type: "auth", token }, this.#timeoutMs).then(
      (reply) => {
        if (ws !== this.#ws) return;
        this.#authPending = false;
        if (reply.user != null) this.user = reply.user;
        // How auth.js refreshes on this connection (it stops when the connection goes).
        this.#auth.accepted(token, reply, {
          send: (frame) => this.#requests.send(this.#transmit, frame, this.#timeoutMs),
          accepted: (next) => {
            if (next.user != null) this.user = next.user;
          },
          error: (error) => this.#error(error),
        });
        this.#maybeOpen();
      },
      (error) => {
        if (ws !== this.#ws) return;
        if (error.code === "unavailable") {
          // A server without a token key (open mode) checks no tokens: go on anonymously
          // rather than wait for an answer that will never come.
          this.#authPending = false;
          this.#maybeOpen();
          return;
        }
        // A refusal is followed by close 4001 (4010 if expired); a timeout by the connect timer.
        this.#error(error);
      },
    );
  }

  #receive(text) {
    this.#heartbeat.received();
    let frame;
    if (typeof text !== "string") {
      // A binary message: its JSON header, with the payload as `data` (binary.js).
      frame = isBytes(text) ? decodeFrame(text) : null;
      if (frame === null) {
        this.#error(new SwitchboardError(CLIENT_CODES.BAD_FRAME, "a binary frame that is not a header and a payload"));
        return;
      }
    } else {
      try {
        frame = JSON.parse(text);
      } catch {
        frame = null;
      }
    }
    if (frame === null || typeof frame !== "object") {
      const error = new SwitchboardError(CLIENT_CODES.BAD_FRAME, `not a JSON object: ${text.slice(0, 100)}`);
      this.#error(error);
      return;
    }
    if (frame.id != null && this.#requests.settle(frame)) return;
    switch (frame.type) {
      case "welcome":
        this.#welcome = frame;
        this.conn = frame.conn ?? null;
        if (frame.user != null) this.user = frame.user;
        this.#maybeOpen();
        break;
      case "message":
      case "presence":
        this.#rooms.get(frame.room)?._receive(frame);
        break;
      case "left": // without id: the server took this connection out of the room (a refresh without its permission)
        this.#rooms.get(frame.room)?._removed(frame.reason);
        break;
      case "shutdown":
        // The server will process nothing more on this connection: rooms count as not
        // joined from now on, so publishes wait in their queues for the reconnect.
        for (const room of this.#rooms.values()) room._disconnected();
        this.#shutdownHint = frame.reconnect_ms ?? 0;
        this.#events.emit("shutdown", { reason: frame.reason ?? "", reconnectMs: this.#shutdownHint });
        break;
      case "error": // no id, or for a request that gave up waiting: never dropped silently
        this.#error(SwitchboardError.fromFrame(frame));
        break;
      // pong, and replies that came after their timeout: receiving them was the point.
    }
  }

  #maybeOpen() {
    if (!this.#welcome || this.#authPending || this.#state === "open") return;
    this.#clock.clearTimeout(this.#connectTimer);
    this.#openedAt = this.#clock.now();
    this.#shutdownHint = null;
    this.#heartbeat.start(this.#welcome.heartbeat_ms, this.#heartbeatGraceMs);
    // Rooms first, so that a room joined by an "open" listener is not joined twice.
    for (const room of [...this.#rooms.values()]) room._connected();
    this.#setState("open");
    const { conn, heartbeat_ms: heartbeatMs, server } = this.#welcome;
    this.#events.emit("open", { conn, user: this.user, heartbeatMs, server });
  }

  // The connection closed (or was given up, see #drop): follow the close code's policy.
  #closed(code, reason) {
    const wasOpen = this.#state === "open";
    // A connection that lasted shows the trouble is over: start the schedule again.
    const stable = wasOpen && this.#clock.now() - this.#openedAt >= this.#resetAfterMs;
    const policy = closePolicy(code, {
      canRefresh: this.#auth.canRefresh,
      freshTokenRefused: this.#auth.fetched && !wasOpen,
    });
    const floorMs = Math.max(policy.minDelayMs, this.#shutdownHint ?? 0);
    this.#teardown();
    const reconnect = policy.action !== "stop";
    reason = reason || this.#lastError || policy.meaning;
    this.#events.emit("disconnect", { code, reason, reconnect });
    if (!reconnect) {
      const error = new SwitchboardError(CLIENT_CODES.CLOSED, `connection closed (${code}: ${reason})`);
      for (const room of this.#rooms.values()) room._rejectQueue(error);
      this.#setState("closed");
      return;
    }
    if (policy.action === "refresh") this.#auth.discard();
    if (stable) this.#reconnectTimer.reset();
    this.#scheduleReconnect(floorMs);
  }

  /** Gives up on a connection that gives no sign of life, without waiting for its close. */
  #drop(reason) {
    const ws = this.#ws;
    if (!ws) return;
    ws.close();
    this.#closed(1006, reason);
  }

  /** Forgets the current socket and everything waiting on it; returns it. */
  #teardown() {
    const ws = this.#ws;
    this.#ws = null;
    this.#clock.clearTimeout(this.#connectTimer);
    this.#heartbeat.stop();
    this.#auth.disconnected();
    this.#welcome = null;
    this.#authPending = false;
    this.#openedAt = null;
    this.#shutdownHint = null;
    this.#requests.failAll(new SwitchboardError(CLIENT_CODES.DISCONNECTED, "connection lost before the reply"));
    for (const room of this.#rooms.values()) room._disconnected();
    return ws;
  }

  #scheduleReconnect(floorMs) {
    const next = this.#reconnectTimer.schedule(floorMs);
    this.#setState("reconnecting");
    this.#events.emit("reconnect", next);
  }

  #transmit = (frame) => {
    if (this.#ws?.readyState !== OPEN) return false;
    // A publish of bytes goes as a binary frame: its other fields are the header.
    const bytes = frame[BYTES];
    this.#ws.send(bytes ? encodeFrame(frame, bytes) : JSON.stringify(frame));
    return true;
  };

  // Errors nobody asked for (no request waits for them) must not vanish unnoticed.
  #error(error) {
    if (!this.#events.emit("error", error)) console.error("switchboard:", error);
  }

  #setState(state) {
    if (this.#state === state) return;
    this.#state = state;
    this.#events.emit("state", state);
  }
}
