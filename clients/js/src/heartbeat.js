// Dead-connection detection for clients that cannot see WebSocket pings (browsers).
//
// A connection whose peer vanished (laptop lid closed, Wi-Fi gone) often gets no close event
// for minutes. So: after `intervalMs` without any frame from the server, send an application
// `ping`; if still nothing arrives within `graceMs`, the connection is dead. A busy connection
// never pings, and at most intervalMs + graceMs pass between the last frame and `dead()`.

export class Heartbeat {
  #clock;
  #ping;
  #dead;
  #intervalMs = 0;
  #graceMs = 0;
  #timer = null;

  constructor(clock, { ping, dead }) {
    this.#clock = clock;
    this.#ping = ping;
    this.#dead = dead;
  }

  /** Starts watching; an interval of 0 (or none) disables the heartbeat. */
  start(intervalMs, graceMs) {
    this.#intervalMs = intervalMs > 0 ? intervalMs : 0;
    this.#graceMs = graceMs;
    this.received();
  }

  /** Any frame from the server proves the connection alive. */
  received() {
    this.#clear();
    if (!this.#intervalMs) return;
    this.#timer = this.#clock.setTimeout(() => {
      this.#ping();
      this.#timer = this.#clock.setTimeout(() => {
        this.#timer = null;
        this.#dead(this.#intervalMs + this.#graceMs);
      }, this.#graceMs);
    }, this.#intervalMs);
  }

  stop() {
    this.#intervalMs = 0;
    this.#clear();
  }

  #clear() {
    if (this.#timer !== null) this.#clock.clearTimeout(this.#timer);
    this.#timer = null;
  }
}
