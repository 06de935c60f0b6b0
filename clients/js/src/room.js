// A room joined over the client's connection. It joins, and joins again after every
// reconnect with the position of the last message it saw (`since`), so the server can send
// exactly what was missed (`recovered`), or say plainly that it cannot (`gap`). It keeps the
// member list. Every publish carries a key; publishes made while the room is not joined wait,
// and so do those whose `ok` was lost with a connection: they all go out, in order, once the
// room is joined again, and the key keeps a repeat from being delivered twice (outbox.js).
// A room that needs a room token (minted by the app's backend for this one room) sends it with
// every join: a fixed `token`, or one fetched with `getToken()` before each (re-)join.
// A big room's `joined` reply carries its first page of members and the count: the rest is
// fetched page by page when the room has at most `memberLimit` members, and otherwise only when
// the app asks (`fetchMembers()`), so that joining a room of 10,000 does not read 10,000 members.

import { tokenError } from "./auth.js";
import { BYTES, copyBytes, isBlob, isBytes, listedData } from "./binary.js";
import { Emitter } from "./emitter.js";
import { CLIENT_CODES, SwitchboardError, quiet } from "./errors.js";
import { Members } from "./members.js";
import { Outbox, newKey } from "./outbox.js";
import { RetryTimer } from "./timer.js";

// Rooms of up to this many members get their whole member list by themselves.
export const DEFAULT_MEMBER_LIMIT = 1000;

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
  #blobs = 0; // publishes of Blobs whose bytes are being read, and those queued behind them
  #blobChain = Promise.resolve();
  #publishes; // sent while joined; what waits or lost its ok goes out after the next join
  #reads; // history requests: sent while the connection is open
  #early = []; // frames for this room that arrived while its join was in flight
  #joinAttempt = 0; // tells the reply to the current join from stale ones
  #memberLimit; // fetch every page by itself up to this many members
  #membersCursor = null; // where the member list goes on, while pages are missing
  #membersFetch = null; // { attempt, promise } of the pages being fetched
  #joining = false; // a join request is in flight
  #rejoinTimer;
  #settleReady;

  constructor(name, { presence, token = null, getToken = null, memberLimit = DEFAULT_MEMBER_LIMIT } = {}, link) {
    this.name = name;
    this.#memberLimit = typeof memberLimit === "number" && memberLimit >= 0 ? memberLimit : DEFAULT_MEMBER_LIMIT;
    this.#presence = presence;
    this.#token = token ?? null;
    this.#getToken = typeof getToken === "function" ? getToken : null;
    this.#link = link;
    this.#publishes = new Outbox(link.request);
    this.#reads = new Outbox(link.request);
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

  /** Whether `members` lists every member (every page is in). */
  get membersComplete() {
    return this.#state === "joined" && this.#membersCursor === null;
  }

  /**
   * Fetches the pages of the member list not fetched yet (a room bigger than `memberLimit`
   * gets only its first page by itself); resolves with the whole list, kept live by presence
   * events from then on. Rejects if the connection is lost meanwhile: the list starts over with
   * the next join.
   */
  fetchMembers() {
    if (this.#state === "closed") return this.#closedError("room was left");
    if (this.#state !== "joined") {
      return Promise.reject(new SwitchboardError(CLIENT_CODES.DISCONNECTED, `room "${this.name}" is not joined`));
    }
    if (this.#membersCursor === null) return Promise.resolve(this.members);
    const attempt = this.#joinAttempt;
    if (this.#membersFetch?.attempt !== attempt) {
      const promise = this.#fetchPages(this.#membersCursor, attempt).finally(() => {
        if (this.#membersFetch?.promise === promise) this.#membersFetch = null;
      });
      this.#membersFetch = { attempt, promise };
    }
    return this.#membersFetch.promise;
  }

  on(event, listener) {
    return this.#events.on(event, listener);
  }

  /**
   * Publishes `data` with a key (`key`, or one made here); resolves with the server's `ok`
   * ({ offset, duplicate, key }). `data` is sent as JSON, or as bytes in a binary frame when it
   * is an ArrayBuffer, a typed array, a DataView or a Blob (members receive a Uint8Array). While
   * the room is not joined the publish waits in the room's queue (at most queueLimit), and its
   * timeout starts only when it is sent. One whose `ok` is lost with the connection is sent
   * again, with the same key, after the room is joined again.
   */
  publish(data, options = {}) {
    if (!isBlob(data) && this.#blobs === 0) return this.#publish(data, options);
    // A Blob's bytes are read first; publishes made after it wait for it, so that every
    // publish goes out in the order it was made.
    this.#blobs++;
    const bytes = isBlob(data) ? data.arrayBuffer() : data;
    const added = this.#blobChain.then(() => bytes).then((read) => ({ reply: this.#publish(read, options) }));
    this.#blobChain = added.then(
      () => this.#blobs--,
      () => this.#blobs--,
    );
    return added.then(({ reply }) => reply);
  }

  #publish(data, { timeoutMs = this.#link.timeoutMs, echo, key = newKey() } = {}) {
    const frame = { type: "publish", room: this.name, echo, key };
    // Bytes are copied now: what the app does with its buffer later changes nothing sent.
    if (isBytes(data)) frame[BYTES] = copyBytes(data);
    else frame.data = data;
    if (this.#state === "closed") return this.#closedError("room was left");
    if (this.#link.isClosed()) return this.#closedError("client is closed");
    const joined = this.#state === "joined";
    if (!joined && this.#publishes.length >= this.#link.queueLimit) {
      const message = `publish queue of room "${this.name}" is full (${this.#publishes.length} waiting)`;
      return Promise.reject(new SwitchboardError(CLIENT_CODES.QUEUE_FULL, message));
    }
    return this.#publishes
      .add(frame, timeoutMs, joined)
      .then((reply) => ({ ...reply, key, duplicate: reply.duplicate === true }));
  }

  /**
   * Reads what the room keeps (protocol `history`): resolves with { epoch, offset, messages },
   * the room's current position and the messages as `message` events carry them. Without
   * `since`, the oldest kept first (`reverse`: the latest first); with `since`, those after it
   * (`reverse`: those before it, latest first). Waits for the connection to be open, and is sent
   * again if its reply was lost with a connection.
   */
  history({ since, limit, reverse, timeoutMs = this.#link.timeoutMs } = {}) {
    if (this.#state === "closed") return this.#closedError("room was left");
    if (this.#link.isClosed()) return this.#closedError("client is closed");
    const frame = { type: "history", room: this.name, since, limit, reverse };
    return this.#reads.add(frame, timeoutMs, this.#link.isOpen()).then((reply) => ({
      epoch: reply.epoch,
      offset: reply.offset,
      messages: (reply.messages ?? []).map(toMessage),
    }));
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
      this.#reads.flush();
      return;
    }
    this.#reads.flush();
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
    this.#publishes.requeue();
    this.#reads.requeue();
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
      // One change, several in the order they happened (a busy room's batch), or only the
      // count (a namespace with presence = "count"); member_count is the count after them.
      const events = Array.isArray(frame.events) ? frame.events : frame.event ? [frame] : [];
      for (const { event, member } of events) {
        this.#members.apply(event, member);
        this.#events.emit("presence", { event, member });
      }
      if (typeof frame.member_count === "number") this.#members.setCount(frame.member_count);
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
    this.#publishes.rejectAll(error);
    this.#reads.rejectAll(error);
  }

  /** The client was closed: this room is over. */
  _close(error) {
    if (this.#state !== "closed") this.#end(error);
  }

  #joined(reply, since) {
    this.#joining = false;
    this.#rejoinTimer.reset();
    // Recovered: the reply continues from `since`. Otherwise (a first join, or a gap) the room
    // goes on from the reply's position, which may even be behind the one we had (the room
    // started over, or our position was ahead of it): forget ours.
    const recovered = since !== undefined && reply.recovered === true && reply.epoch === since.epoch;
    if (!recovered) this.#offset = null;
    this.#epoch = reply.epoch;
    this.#members.replace(reply.members ?? [], reply.member_count);
    this.#membersCursor = reply.members_cursor ?? null;
    // Before any listener runs: what it publishes must go out after what waited.
    this.#publishes.flush();
    this.#setState("joined");
    this.#events.emit("joined", reply);
    this.#events.emit("members", this.members);
    if (since !== undefined && !recovered) {
      const reason = reply.reason ?? (reply.epoch === since.epoch ? "unknown" : "epoch_changed");
      this.#events.emit("gap", { room: this.name, reason, since, epoch: reply.epoch, offset: reply.offset });
    }
    let count = 0;
    for (const message of reply.messages ?? []) if (this.#deliver(message)) count++;
    if (this.#state !== "joined") return; // a listener left the room
    if (this.#offset === null || reply.offset > this.#offset) this.#offset = reply.offset ?? null;
    if (recovered) this.#events.emit("recovered", { room: this.name, count });
    const early = this.#early;
    this.#early = [];
    for (const frame of early) this._receive(frame);
    this.#settleReady.resolve(reply);
    if (this.#membersCursor !== null && this.#members.count <= this.#memberLimit) {
      this.fetchMembers().catch((error) => {
        if (error.code !== CLIENT_CODES.DISCONNECTED) this.#error(error); // partial until the next join
      });
    }
  }

  /**
   * Fetches the rest of a big room's member list, a page at a time. Replies come in order with
   * the presence events, so each page is applied as of the moment the server made it.
   */
  #fetchPages(cursor, attempt) {
    const frame = { type: "members", room: this.name, cursor };
    return this.#link.request(frame, this.#link.timeoutMs).then((page) => {
      if (attempt !== this.#joinAttempt || this.#state !== "joined") {
        throw new SwitchboardError(CLIENT_CODES.DISCONNECTED, `room "${this.name}" was joined again meanwhile`);
      }
      this.#members.addPage(page.members ?? [], page.member_count);
      this.#membersCursor = page.cursor ?? null;
      this.#events.emit("members", this.members);
      return this.#membersCursor === null ? this.members : this.#fetchPages(this.#membersCursor, attempt);
    });
  }

  #joinFailed(error) {
    this.#joining = false;
    this.#early = [];
    if (error.code === CLIENT_CODES.DISCONNECTED) return; // the next _connected re-joins
    this.#error(error);
    if (RETRYABLE.has(error.code)) this.#rejoinTimer.schedule();
    else this.#end(error);
  }

  /**
   * Emits a message unless its offset shows it was already delivered (a recovery that overlaps
   * live messages, a repeat). Returns whether it was emitted.
   */
  #deliver(message) {
    if (this.#offset !== null && message.offset <= this.#offset) return false;
    this.#offset = message.offset;
    this.#events.emit("message", toMessage(message));
    return true;
  }

  #end(error) {
    this.#joinAttempt++;
    this.#joining = false;
    this.#early = [];
    this.#rejoinTimer.cancel();
    this.#link.forget(this);
    this.#settleReady.reject(error);
    // What was sent still gets its reply (a publish sent before a leave is answered before it).
    this.#publishes.close(error);
    this.#reads.close(error);
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

/**
 * A `message` frame (or one of `joined` and `history`) as the SDK hands it to the app: a
 * binary message's `data` is a Uint8Array, whether it came as a binary frame or listed in
 * base64 with `binary: true`.
 */
function toMessage(message) {
  const { from, offset, ts } = message;
  return { data: listedData(message), from, offset, ts };
}
