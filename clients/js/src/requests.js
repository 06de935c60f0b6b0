// Requests in flight: each frame sent with an integer `id`, waiting for the reply that carries
// the same id (protocol v1, "Frames"). A reply settles the request's promise: an `error`
// frame rejects it with the server's code, any other frame resolves it with that frame.

import { CLIENT_CODES, SwitchboardError } from "./errors.js";

export class Requests {
  #clock;
  #nextId = 1;
  #pending = new Map(); // id -> { resolve, reject, timer }

  constructor(clock) {
    this.#clock = clock;
  }

  /** A fresh id, also for frames whose reply nobody waits for (pings). */
  nextId() {
    return this.#nextId++;
  }

  /**
   * Sends `frame` with a new id through `transmit` (which returns false when it could not
   * send) and returns a promise for the reply, rejected after `timeoutMs` without one.
   */
  send(transmit, frame, timeoutMs) {
    return new Promise((resolve, reject) => {
      const id = this.nextId();
      if (!transmit({ ...frame, id })) {
        reject(new SwitchboardError(CLIENT_CODES.DISCONNECTED, `not connected: ${frame.type} not sent`));
        return;
      }
      const timer = this.#clock.setTimeout(() => {
        this.#pending.delete(id);
        reject(new SwitchboardError(CLIENT_CODES.TIMEOUT, `no reply to ${frame.type} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, { resolve, reject, timer });
    });
  }

  /** Settles the request `frame` answers. False when no request waits for this id. */
  settle(frame) {
    const request = this.#pending.get(frame.id);
    if (!request) return false;
    this.#pending.delete(frame.id);
    this.#clock.clearTimeout(request.timer);
    if (frame.type === "error") request.reject(SwitchboardError.fromFrame(frame));
    else request.resolve(frame);
    return true;
  }

  /** Rejects every request in flight: their replies can no longer arrive. */
  failAll(error) {
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const request of pending) {
      this.#clock.clearTimeout(request.timer);
      request.reject(error);
    }
  }
}
