import assert from "node:assert/strict";
import { test } from "node:test";

import { RetryTimer, backoffDelay } from "../src/timer.js";
import { FakeClock } from "./fakes.js";

const backoff = { baseMs: 500, maxMs: 30_000 };

test("the backoff window doubles from baseMs up to maxMs", () => {
  const almostOne = () => 0.999999;
  const windows = [1, 2, 3, 4, 5, 6, 7, 8, 20].map((n) => backoffDelay(n, backoff, almostOne) + 1);
  assert.deepEqual(windows, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
});

test("full jitter: every delay lies in [0, window)", () => {
  assert.equal(backoffDelay(5, backoff, () => 0), 0);
  for (let attempt = 1; attempt <= 12; attempt++) {
    const window = Math.min(30_000, 500 * 2 ** (attempt - 1));
    for (let i = 0; i < 200; i++) {
      const delay = backoffDelay(attempt, backoff, Math.random);
      assert.ok(delay >= 0 && delay < window, `attempt ${attempt}: ${delay}`);
    }
  }
});

test("RetryTimer fires after the scheduled delay, grows per attempt, starts over on reset", () => {
  const clock = new FakeClock();
  let fired = 0;
  const timer = new RetryTimer(() => fired++, { clock, random: () => 0.5, backoff });

  const first = timer.schedule();
  assert.deepEqual(first, { attempt: 1, delayMs: 250, at: clock.now() + 250 });
  clock.advance(249);
  assert.equal(fired, 0);
  clock.advance(1);
  assert.equal(fired, 1);
  assert.equal(timer.pending, false);

  assert.equal(timer.schedule().delayMs, 500);
  assert.equal(timer.schedule().delayMs, 1000, "rescheduling replaces the pending timer");
  assert.deepEqual(clock.pending, [1000]);

  timer.reset();
  assert.deepEqual(clock.pending, []);
  assert.deepEqual(timer.schedule(), { attempt: 1, delayMs: 250, at: clock.now() + 250 });
});

test("a floor is added to the jittered delay", () => {
  const timer = new RetryTimer(() => {}, { clock: new FakeClock(), random: () => 0.5, backoff });
  assert.equal(timer.schedule(5000).delayMs, 5250);
});
