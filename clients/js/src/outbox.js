// Requests of one room that must get an answer from the server, however often the connection
// drops on the way: publishes (sent while the room is joined) and history reads (sent while the
// connection is open). Each waits until it can go out, and one whose reply was lost with its
// connection is sent again, unchanged, when it can go out again. For a publish that is safe
// because its frame carries a `key`: the server answers a repeat with the first one's offset
// (`duplicate: true`) instead of delivering it twice (docs/protocol.md, "Idempotent publish").
//
// Whatever the server answers settles a request, whenever it arrives: an `ok` that comes after
// the `shutdown` frame, once the request was already marked for sending again, still counts,
// and the request is not sent again. A reply that can no longer come (the connection is gone:
// code `disconnected`) puts it back in line; a `timeout` on an open connection rejects it (the
// server may have acted on it: publish again with the same `key` to find out safely).

import { CLIENT_CODES } from "./errors.js";

export class Outbox {
  #send; // (frame, timeoutMs) => Promise of the reply: Switchboard#link.request
  #entries = []; // { frame, timeoutMs, resolve, reject, attempt }, oldest first
  #closed = null; // the error of close(): nothing more goes out, lost replies reject

  constructor(send) {
    this.#send = send;
  }

  /** Requests not answered yet: waiting, or sent and waiting for their reply. */
  get length() {
    return this.#entries.length;
  }

  /** Adds a request; `now`: send it at once. Resolves with the server's reply. */
  add(frame, timeoutMs, now) {
    return new Promise((resolve, reject) => {
      const entry = { frame, timeoutMs, resolve, reject, attempt: null };
      this.#entries.push(entry);
      if (now) this.#transmit(entry);
    });
  }

  /** Sends every request that is not on its way, oldest first. */
  flush() {
    for (const entry of [...this.#entries]) if (entry.attempt === null) this.#transmit(entry);
  }

  /** The connection is gone: what was sent on it goes again with the next flush. */
  requeue() {
    for (const entry of this.#entries) entry.attempt = null;
  }

  /** Rejects every request, sent or not. */
  rejectAll(error) {
    const entries = this.#entries;
    this.#entries = [];
    for (const entry of entries) entry.reject(error);
  }

  /**
   * Nothing more goes out: what waits is rejected with `error`; requests on their way still
   * get their reply, or are rejected if it is lost.
   */
  close(error) {
    this.#closed = error;
    const waiting = this.#entries.filter((entry) => entry.attempt === null);
    this.#entries = this.#entries.filter((entry) => entry.attempt !== null);
    for (const entry of waiting) entry.reject(error);
  }

  #transmit(entry) {
    const attempt = {};
    entry.attempt = attempt;
    this.#send(entry.frame, entry.timeoutMs).then(
      (reply) => this.#settle(entry, () => entry.resolve(reply)),
      (error) => {
        const answered = error.code !== CLIENT_CODES.DISCONNECTED && error.code !== CLIENT_CODES.TIMEOUT;
        if (answered) return this.#settle(entry, () => entry.reject(error)); // the server's refusal
        // No answer: news only about the latest copy sent, not one given up on (requeue).
        if (entry.attempt !== attempt) return;
        if (error.code === CLIENT_CODES.DISCONNECTED && !this.#closed) {
          entry.attempt = null; // never sent (the socket was closing), or lost: the next flush
          return;
        }
        this.#settle(entry, () => entry.reject(error));
      },
    );
  }

  #settle(entry, settle) {
    const index = this.#entries.indexOf(entry);
    if (index === -1) return; // settled already (an earlier copy's reply, or rejected)
    this.#entries.splice(index, 1);
    settle();
  }
}

// Publish keys: a random prefix per page (or process) and a counter. getRandomValues works
// on plain http too, where crypto.randomUUID does not (it needs a secure context).
const KEY_PREFIX = randomHex(12);
let keyCounter = 0;

/** A key no other publish uses (protocol: 1–128 bytes). */
export function newKey() {
  keyCounter += 1;
  return `${KEY_PREFIX}-${keyCounter.toString(36)}`;
}

function randomHex(bytes) {
  const values = new Uint8Array(bytes);
  if (typeof globalThis.crypto?.getRandomValues === "function") globalThis.crypto.getRandomValues(values);
  else for (let i = 0; i < bytes; i++) values[i] = Math.floor(Math.random() * 256);
  return Array.from(values, (b) => b.toString(16).padStart(2, "0")).join("");
}
