// Time, and the retry schedule used for reconnecting the socket and re-joining rooms.
//
// Everything that waits goes through a `clock` ({ now, setTimeout, clearTimeout }) and every
// random choice through `random` (() => [0, 1)), both injectable, so schedules can be tested
// step by step without a network or real time passing.

export const systemClock = Object.freeze({
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle),
});

// resetAfterMs: a connection open that long resets the reconnect schedule to its first step.
export const DEFAULT_BACKOFF = Object.freeze({ baseMs: 500, maxMs: 30_000, resetAfterMs: 10_000 });

/**
 * Exponential backoff with full jitter: uniform in [0, min(maxMs, baseMs * 2^(attempt-1))).
 * Full jitter spreads a crowd of clients dropped at the same moment (a server restart) over
 * the whole window instead of having them all return together.
 */
export function backoffDelay(attempt, { baseMs, maxMs }, random) {
  const ceiling = Math.min(maxMs, baseMs * 2 ** (attempt - 1));
  return Math.floor(random() * ceiling);
}

/**
 * Calls `callback` after a delay that grows with each consecutive `schedule()`, until
 * `reset()` (called once the thing retried has proven to work).
 */
export class RetryTimer {
  #callback;
  #clock;
  #random;
  #backoff;
  #attempt = 0;
  #handle = null;

  constructor(callback, { clock = systemClock, random = Math.random, backoff = DEFAULT_BACKOFF } = {}) {
    this.#callback = callback;
    this.#clock = clock;
    this.#random = random;
    this.#backoff = { ...DEFAULT_BACKOFF, ...backoff };
  }

  get attempt() {
    return this.#attempt;
  }

  get pending() {
    return this.#handle !== null;
  }

  /**
   * Schedules the next attempt, at least `floorMs` from now (plus the jittered backoff).
   * Returns what a UI needs to show "retrying in 4 s": { attempt, delayMs, at }.
   */
  schedule(floorMs = 0) {
    this.cancel();
    this.#attempt += 1;
    const delayMs = floorMs + backoffDelay(this.#attempt, this.#backoff, this.#random);
    this.#handle = this.#clock.setTimeout(() => {
      this.#handle = null;
      this.#callback();
    }, delayMs);
    return { attempt: this.#attempt, delayMs, at: this.#clock.now() + delayMs };
  }

  cancel() {
    if (this.#handle !== null) this.#clock.clearTimeout(this.#handle);
    this.#handle = null;
  }

  reset() {
    this.cancel();
    this.#attempt = 0;
  }
}
