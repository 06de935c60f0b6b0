// Waiting with a deadline, so that a test that does not get what it expects fails saying
// what it was waiting for instead of hanging.

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Polls `check` (sync or async) until it returns something truthy, and resolves with it.
 * `what` describes the condition for the failure message; `describe()` can add the current
 * state of things to it.
 */
export async function waitFor(check, { timeoutMs = 5_000, intervalMs = 20, what = "condition", describe } = {}) {
  const deadline = Date.now() + timeoutMs;
  let lastError;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
      lastError = undefined;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() >= deadline) {
      const state = describe ? `\n  now: ${describe()}` : "";
      const cause = lastError ? `\n  last error: ${lastError.stack ?? lastError}` : "";
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${state}${cause}`);
    }
    await sleep(intervalMs);
  }
}

/**
 * The next `event` from something with `on(event, listener) → unsubscribe` (a Switchboard
 * client or room) whose payload passes `filter`.
 */
export function nextEvent(source, event, { filter = () => true, timeoutMs = 5_000 } = {}) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for event "${event}"`));
    }, timeoutMs);
    const off = source.on(event, (payload) => {
      if (!filter(payload)) return;
      clearTimeout(timer);
      off();
      resolve(payload);
    });
  });
}

/** Rejects when `promise` does not settle within `ms`. */
export function within(promise, ms, what = "promise") {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

let counter = 0;
/** A room name no other test uses. */
export function uniqueRoom(prefix = "test") {
  counter += 1;
  return `${prefix}:${process.pid}-${Date.now().toString(36)}-${counter}`;
}
