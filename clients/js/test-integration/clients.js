// SDK clients for integration tests: the `ws` package as the WebSocket, a short backoff,
// short timeouts, and a record of what each client went through.

import { WebSocket } from "ws";
import { Switchboard } from "../src/switchboard.js";
import { nextEvent } from "./wait.js";

export const FAST = Object.freeze({
  backoff: { baseMs: 50, maxMs: 500 },
  timeoutMs: 5_000,
});

/**
 * A connected client, closed when the test `t` ends. Returns { sb, states, errors,
 * disconnects }: every state change, client-level error and disconnect seen since creation.
 */
export async function connect(t, url, options = {}) {
  const sb = new Switchboard(url, { WebSocket, ...FAST, ...options, autoConnect: false });
  const record = { sb, states: [], errors: [], disconnects: [] };
  sb.on("state", (state) => record.states.push(state));
  sb.on("error", (error) => record.errors.push(error));
  sb.on("disconnect", (event) => record.disconnects.push(event));
  t.after(() => sb.close());
  const open = nextEvent(sb, "open", { timeoutMs: options.timeoutMs ?? FAST.timeoutMs });
  sb.connect();
  await open;
  return record;
}

/**
 * Joins `name` on `sb` and records the room's messages, gaps, recoveries and errors.
 * Returns { room, messages, gaps, recoveries, errors, presence }.
 */
export function join(sb, name, options) {
  const room = sb.join(name, options);
  const record = { room, messages: [], gaps: [], recoveries: [], errors: [], presence: [] };
  room.on("message", (message) => record.messages.push(message));
  room.on("gap", (gap) => record.gaps.push(gap));
  room.on("recovered", (event) => record.recoveries.push(event));
  room.on("error", (error) => record.errors.push(error));
  room.on("presence", (event) => record.presence.push(event));
  return record;
}

/** Names in a member list, sorted, from each member's presence `name`. */
export function names(members) {
  return members.map((member) => member.presence?.name).sort();
}
