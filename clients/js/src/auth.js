// The connection's token: where it comes from (the `token` option, or `getToken()`), when it
// must be fetched again, and its refresh on the open connection ahead of expiry.
//
//   dial ──▶ auth frame ──▶ ok { expires_at } ──▶ (timer) getToken() ──▶ auth frame ──▶ ok ...
//
// A refresh happens at 80 % of the token's remaining lifetime or 30 s before it expires,
// whichever is earlier, but never before half of it is over (a 4 s token refreshes after 2 s,
// a 60 s one after 30 s, a 1 h one after 48 min). A refresh that fails (getToken throws, the
// server refuses the new token) is reported and tried again on the backoff schedule, until the
// server closes the connection with 4010 at expiry; the client then reconnects with a new token.

import { CLIENT_CODES, SwitchboardError } from "./errors.js";
import { RetryTimer } from "./timer.js";

const REFRESH_SHARE = 0.8; // refresh at this share of the remaining lifetime...
const REFRESH_BEFORE_MS = 30_000; // ...or this long before expiry, whichever is earlier,
const REFRESH_NOT_BEFORE_SHARE = 0.5; // ...but not before this share of the lifetime is over.
const MIN_REFRESH_MS = 1_000; // never sooner than this after a token was accepted

// Codes with which a getToken() may refuse for good (the person logged out, or may not have
// this room): no retry. Any other failure is a `token_error`, retried with backoff.
export const REFUSALS = new Set(["unauthorized", "forbidden"]);

/** A getToken() failure as a SwitchboardError: its own refusal code, or token_error. */
export function tokenError(error, what = "getToken") {
  if (REFUSALS.has(error?.code)) return new SwitchboardError(error.code, String(error.message ?? error.code));
  return new SwitchboardError(CLIENT_CODES.TOKEN, `${what} failed: ${error?.message ?? error}`);
}

/** The claims of a JWT, without checking anything (that is the server's job); null if unreadable. */
export function jwtClaims(token) {
  try {
    const part = String(token).split(".")[1];
    const base64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(base64.padEnd(base64.length + ((4 - (base64.length % 4)) % 4), "="));
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims !== null && typeof claims === "object" ? claims : null;
  } catch {
    return null;
  }
}

/**
 * How long after acceptance a token should be refreshed, in ms. `expiresAt` is the server's
 * `expires_at` (Unix seconds), `nowMs` this side's clock. The server's and this clock may
 * disagree (a browser's clock can be minutes off): when the token says when it was issued
 * (`iat`), its lifetime `exp - iat` bounds what is left, whatever this clock says.
 */
export function refreshDelayMs(expiresAt, nowMs, token) {
  let remaining = expiresAt * 1000 - nowMs;
  const claims = jwtClaims(token);
  if (typeof claims?.iat === "number" && typeof claims?.exp === "number" && claims.exp > claims.iat) {
    const lifetime = (claims.exp - claims.iat) * 1000;
    // This clock ahead of the server's makes `remaining` too small (or negative), behind too big.
    remaining = remaining <= 0 ? lifetime : Math.min(remaining, lifetime);
  }
  if (!(remaining > 0)) return MIN_REFRESH_MS;
  const wanted = Math.min(remaining * REFRESH_SHARE, remaining - REFRESH_BEFORE_MS);
  return Math.max(MIN_REFRESH_MS, remaining * REFRESH_NOT_BEFORE_SHARE, wanted);
}

export class Auth {
  #token;
  #getToken;
  #fetched = false; // the current token came from getToken (and was not yet used on a connection that opened)
  #clock;
  #refreshAt = null; // this clock's time at which the current token is due for a refresh
  #timer = null;
  #retry;
  #session = null; // { send(frame) → Promise<reply>, accepted(reply), error(err) } of the open connection
  #generation = 0; // bumped by every connection change: a slow getToken() can tell it is stale

  constructor({ token = null, getToken = null }, { clock, retry }) {
    this.#token = token ?? null;
    this.#getToken = typeof getToken === "function" ? getToken : null;
    this.#clock = clock;
    this.#retry = new RetryTimer(() => this.#refresh(), retry);
  }

  /** The token the next connection sends, or null for an anonymous one. */
  get token() {
    return this.#token;
  }

  /** A new token can be fetched: getToken was given. */
  get canRefresh() {
    return this.#getToken !== null;
  }

  /** The current token was fetched for the connection being made (not reused from before). */
  get fetched() {
    return this.#fetched;
  }

  /** Whether getToken must be called before the next connection: no token, or one past its refresh time. */
  get mustFetch() {
    if (!this.#getToken) return false;
    return this.#token == null || (this.#refreshAt !== null && this.#clock.now() >= this.#refreshAt);
  }

  /** Calls getToken; resolves with the token (null: connect anonymously), rejects with a token_error. */
  async fetch() {
    let token;
    try {
      token = await this.#getToken();
    } catch (error) {
      throw tokenError(error);
    }
    if (token != null && typeof token !== "string") {
      throw new SwitchboardError(CLIENT_CODES.TOKEN, `getToken returned a ${typeof token}, not a string`);
    }
    this.#token = token ?? null;
    this.#fetched = true;
    this.#refreshAt = null;
    return this.#token;
  }

  /** Keeps the current token for the next connection without fetching (a reconnect after 1006). */
  reuse() {
    this.#fetched = false;
  }

  /** The token was refused or expired: the next connection fetches a new one. */
  discard() {
    this.#token = null;
    this.#refreshAt = null;
  }

  /**
   * The server accepted `token` on the open connection (reply: { user, expires_at, info }).
   * `session` is how to refresh on it. Schedules the refresh, when getToken can give one.
   */
  accepted(token, reply, session) {
    this.#stopTimers();
    this.#session = session;
    this.#fetched = false;
    this.#refreshAt = null;
    if (typeof reply?.expires_at !== "number") return;
    const delay = refreshDelayMs(reply.expires_at, this.#clock.now(), token);
    this.#refreshAt = this.#clock.now() + delay;
    if (!this.#getToken) return; // a fixed token: the server closes with 4010 when it expires
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = null;
      this.#refresh();
    }, delay);
  }

  /** The connection is gone (or the client closed): no refresh on it any more. */
  disconnected() {
    this.#generation++;
    this.#session = null;
    this.#stopTimers();
    this.#retry.reset();
  }

  /** When the next refresh is due (this clock's ms), or null. */
  get refreshAt() {
    return this.#refreshAt;
  }

  #stopTimers() {
    if (this.#timer !== null) this.#clock.clearTimeout(this.#timer);
    this.#timer = null;
    this.#retry.cancel();
  }

  async #refresh() {
    const session = this.#session;
    if (!session) return;
    const generation = ++this.#generation;
    const stale = () => generation !== this.#generation || this.#session !== session;
    let token;
    try {
      token = await this.fetch();
      if (stale()) return;
      if (token == null) throw new SwitchboardError(CLIENT_CODES.TOKEN, "getToken returned no token to refresh with");
    } catch (error) {
      if (stale()) return;
      session.error(error);
      // Refused for good: the connection lasts until the server closes it at expiry.
      if (!REFUSALS.has(error.code)) this.#retry.schedule();
      return;
    }
    let reply;
    try {
      reply = await session.send({ type: "auth", token });
    } catch (error) {
      if (stale()) return;
      session.error(error);
      // A bad or expired token is followed by close 4001 / 4010; anything else (forbidden:
      // a token for another user; a timeout) leaves the connection as it was: try again.
      if (error.code !== "unauthorized" && error.code !== CLIENT_CODES.DISCONNECTED) this.#retry.schedule();
      return;
    }
    if (stale()) return;
    this.#retry.reset();
    session.accepted(reply);
    this.accepted(token, reply, session);
  }
}
