// A room joined over the client's connection. It joins, and joins again after every
// reconnect with the position of the last message it saw, so the server can send exactly what
// was missed (or say plainly that it cannot). It keeps the member list, and holds publishes
// made while it is not joined, to send them in order once it is. A room that needs a room
// token (minted by the app's backend for this one room) sends it with every join: a fixed
// `token`, or one fetched with `getToken()` before each (re-)join.

import { tokenError } from "./auth.js";
import { Emitter } from "./emitter.js";
import { CLIENT_CODES, SwitchboardError, quiet } from "./errors.js";
import { Members } from "./members.js";
import { RetryTimer } from "./timer.js";

// Join refusals that may well go away if the same join is tried again a little later.
const RETRYABLE = new Set(["unavailable", "rate_limited", "internal", CLIENT_CODES.TIMEOUT, CLIENT_CODES.TOKEN]);

export class Room {
  #link; // what the room needs of the client: see Switchboard#link
  #events = new Emitter();
  #members = new Members();
  #state = "joining";
  #presence;
  #token; // a fixed room token, or null
  #getToken; // fetches a room token before each join, or null
  #epoch = null;
  #offset = null; // offset of the last message seen, within #epoch
  #queue = []; // publishes waiting for the join: { frame, timeoutMs, resolve, reject }
  #early = []; // frames for this room that arrived while its join was in flight
  #joinAttempt = 0; // tells the reply to the current join from stale ones
  #joining = false; // a join request is in flight
  #rejoinTimer;
  #settleReady;

  constructor(name, { presence, token = null, getToken = null } = {}, link) {
    this.name = name;
    this.#presence = presence;
    this.#token = token ?? null;
    this.#getToken = typeof getToken === "function" ? getToken : null;
    this.#link = link;
    this.#rejoinTimer = new RetryTimer(() => link.isOpen() && this._connected(), link.retry);
    this.ready = quiet(
      new Promise((resolve, reject) => {
        this.#settleReady = { resolve, reject };
      }),
    );
  }

  /** "joining" | "joined" | "closed" */
  get state() {
    return this.#state;
  }

  get members() {
    return this.#members.list;
  }

  /** How many members the room has: in a big room, more than `members` holds until every page is in. */
  get memberCount() {
    return this.#members.count;
  }

  on(event, listener) {
    return this.#events.on(event, listener);
  }

  /**
   * Publishes `data`; resolves with the server's `ok` reply ({ offset }). While the room is
   * not joined the publish waits in the room's queue (at most queueLimit), and its timeout
   * starts only when it is sent.
   */
  publish(data, { timeoutMs = this.#link.timeoutMs, echo } = {}) {
    const frame = { type: "publish", room: this.name, data, echo };
    if (this.#state === "closed") return this.#closedError("room was left");
    if (this.#link.isClosed()) return this.#closedError("client is closed");
    if (this.#state === "joined") return this.#link.request(frame, timeoutMs);
    if (this.#queue.length >= this.#link.queueLimit) {
      const message = `publish queue of room "${this.name}" is full (${this.#queue.length} waiting)`;
      return Promise.reject(new SwitchboardError(CLIENT_CODES.QUEUE_FULL, message));
    }
    return new Promise((resolve, reject) => this.#queue.push({ frame, timeoutMs, resolve, reject }));
  }

  /**
   * Replaces this member's presence state. While the room is not joined, the state goes out
   * with the next join. A refusal also emits "error".
   */
  setPresence(presence) {
    this.#presence = presence;
    if (this.#state !== "joined") return Promise.resolve(undefined);
    const frame = { type: "presence", room: this.name, presence };
    return quiet(
      this.#link.request(frame, this.#link.timeoutMs).catch((error) => {
        if (error.code === CLIENT_CODES.DISCONNECTED) return undefined; // re-sent with the re-join
        this.#error(error);
        throw error;
      }),
    );
  }

  /** Leaves the room: queued publishes are rejected, no more events are emitted. */
  leave() {
    if (this.#state === "closed") return Promise.resolve();
    const joinSent = this.#state === "joined" || this.#joining;
    this.#end(new SwitchboardError(CLIENT_CODES.CLOSED, `left room "${this.name}"`));
    if (!joinSent) return Promise.resolve();
    const notJoined = new Set(["not_joined", CLIENT_CODES.DISCONNECTED]);
    return quiet(
      this.#link.request({ type: "leave", room: this.name }, this.#link.timeoutMs).then(
        () => undefined,
        (error) => {
          if (!notJoined.has(error.code)) throw error;
        },
      ),
    );
  }

  // The client calls the methods below; they are not part of the public API.

  /** The connection is open: (re-)join, from the last message seen if there was one. */
  _connected() {
    if (this.#state === "closed") return;
    this.#rejoinTimer.cancel();
    const attempt = ++this.#joinAttempt;
    this.#joining = true;
    if (!this.#getToken) {
      this.#sendJoin(attempt, this.#token);
      return;
    }
    Promise.resolve()
      .then(() => this.#getToken(this.name))
      .then(
        (token) => {
          if (attempt !== this.#joinAttempt) return; // disconnected, left, or joined again meanwhile
          if (token != null && typeof token !== "string") throw new TypeError(`a ${typeof token}, not a string`);
          this.#sendJoin(attempt, token ?? null);
        },
      )
      .catch((error) => {
        // token_error is retried; a refusal (forbidden, unauthorized) ends the room.
        if (attempt === this.#joinAttempt) this.#joinFailed(tokenError(error, `getToken of room "${this.name}"`));
      });
  }

  #sendJoin(attempt, token) {
    const since = this.#offset === null ? undefined : { epoch: this.#epoch, offset: this.#offset };
    const frame = { type: "join", room: this.name, presence: this.#presence, since };
    if (token != null) frame.token = token;
    this.#link.request(frame, this.#link.timeoutMs).then(
      (reply) => attempt === this.#joinAttempt && this.#joined(reply, since),
      (error) => attempt === this.#joinAttempt && this.#joinFailed(error),
    );
  }

  /** The connection is lost: the next `_connected` re-joins. */
  _disconnected() {
    this.#joinAttempt++;
    this.#joining = false;
    this.#early = [];
    this.#rejoinTimer.cancel();
    if (this.#state === "joined") this.#setState("joining");
  }

  /** A `message` or `presence` frame for this room. */
  _receive(frame) {
    if (this.#state !== "joined") {
      if (this.#joining) this.#early.push(frame);
      return;
    }
    if (frame.type === "message") this.#deliver(frame);
    if (frame.type === "presence") {
      this.#members.apply(frame.event, frame.member);
      this.#events.emit("presence", { event: frame.event, member: frame.member });
      this.#events.emit("members", this.members);
    }
  }

  /**
   * A `left` frame without id: the server took this connection out of the room (its refreshed
   * token does not allow the room any more). The room is over, with an error saying why.
   */
  _removed(reason) {
    if (this.#state === "closed") return;
    const error = new SwitchboardError(CLIENT_CODES.LEFT, reason || `the server removed this connection from room "${this.name}"`);
    this.#error(error);
    this.#end(error);
  }

  /** The client stopped and will not reconnect by itself: nothing queued can go out. */
  _rejectQueue(error) {
    const queue = this.#queue;
    this.#queue = [];
    for (const publish of queue) publish.reject(error);
  }

  /** The client was closed: this room is over. */
  _close(error) {
    if (this.#state !== "closed") this.#end(error);
  }

  #joined(reply, since) {
    this.#joining = false;
    this.#rejoinTimer.reset();
    // Offsets count within an epoch; after a change they start again and are not comparable.
    if (reply.epoch !== this.#epoch) this.#offset = null;
    this.#epoch = reply.epoch;
    this.#members.replace(reply.members ?? [], reply.member_count);
    // Before any listener runs: what it publishes must go out after what waited.
    this.#flush();
    this.#setState("joined");
    this.#events.emit("joined", reply);
    this.#events.emit("members", this.members);
    if (since && reply.recovered !== true) {
      this.#events.emit("gap", { since, epoch: reply.epoch, offset: reply.offset });
    }
    for (const message of reply.messages ?? []) this.#deliver(message);
    if (this.#offset === null || reply.offset > this.#offset) this.#offset = reply.offset ?? null;
    const early = this.#early;
    this.#early = [];
    for (const frame of early) this._receive(frame);
    this.#settleReady.resolve(reply);
    if (reply.members_cursor != null) this.#fetchMembers(reply.members_cursor, this.#joinAttempt);
  }

  /**
   * Fetches the rest of a big room's member list, a page at a time. Replies come in order with
   * the presence events, so each page is applied as of the moment the server made it.
   */
  #fetchMembers(cursor, attempt) {
    const frame = { type: "members", room: this.name, cursor };
    this.#link.request(frame, this.#link.timeoutMs).then(
      (page) => {
        if (attempt !== this.#joinAttempt || this.#state !== "joined") return;
        this.#members.addPage(page.members ?? [], page.member_count);
        this.#events.emit("members", this.members);
        if (page.cursor != null) this.#fetchMembers(page.cursor, attempt);
      },
      (error) => {
        if (attempt !== this.#joinAttempt || error.code === CLIENT_CODES.DISCONNECTED) return;
        this.#error(error); // the list stays partial until the next join
      },
    );
  }

  #joinFailed(error) {
    this.#joining = false;
    this.#early = [];
    if (error.code === CLIENT_CODES.DISCONNECTED) return; // the next _connected re-joins
    this.#error(error);
    if (RETRYABLE.has(error.code)) this.#rejoinTimer.schedule();
    else this.#end(error);
  }

  /** Emits a message unless its offset shows it was already delivered (recovery overlaps). */
  #deliver(message) {
    if (this.#offset !== null && message.offset <= this.#offset) return;
    this.#offset = message.offset;
    const { data, from, offset, ts } = message;
    this.#events.emit("message", { data, from, offset, ts });
  }

  /** Sends the queued publishes, oldest first, right behind the join that lets them out. */
  #flush() {
    const queue = this.#queue;
    this.#queue = [];
    for (const { frame, timeoutMs, resolve, reject } of queue) {
      this.#link.request(frame, timeoutMs).then(resolve, reject);
    }
  }

  #end(error) {
    this.#joinAttempt++;
    this.#joining = false;
    this.#early = [];
    this.#rejoinTimer.cancel();
    this.#link.forget(this);
    this.#settleReady.reject(error);
    this._rejectQueue(error);
    this.#setState("closed");
    this.#events = new Emitter(); // nothing more to say, even from the middle of a join reply
  }

  #error(error) {
    if (!this.#events.emit("error", error)) console.error(`switchboard room "${this.name}":`, error);
  }

  #closedError(why) {
    return Promise.reject(new SwitchboardError(CLIENT_CODES.CLOSED, `room "${this.name}": ${why}`));
  }

  #setState(state) {
    if (this.#state === state) return;
    this.#state = state;
    this.#events.emit("state", state);
  }
}
