// Shared by the React tests: the real server (from the SDK's integration tests), rendering
// under StrictMode, WebSockets that count themselves, and a test component.

import { StrictMode, createElement as h } from "react";
import { createRoot } from "react-dom/client";
import { WebSocket } from "ws";
import { Switchboard } from "@switchboard/client";
import { useRoom, useSwitchboard } from "../src/index.js";
import { nextEvent } from "../../js/test-integration/wait.js";

export { freePort, startServer } from "../../js/test-integration/server.js";
export { nextEvent, sleep, uniqueRoom, waitFor } from "../../js/test-integration/wait.js";

export const FAST = Object.freeze({ backoff: { baseMs: 50, maxMs: 500 }, timeoutMs: 5_000 });

/** A WebSocket class (the `ws` package's) that records every socket it makes. */
export function countingWebSocket() {
  const sockets = [];
  class CountedWebSocket extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      sockets.push(this);
    }
  }
  return { WebSocket: CountedWebSocket, sockets };
}

/** Renders `element` under StrictMode into a fresh container; `unmount()` when done. */
export function mount(element) {
  const container = document.createElement("div");
  document.body.append(container);
  const root = createRoot(container);
  root.render(h(StrictMode, null, element));
  let mounted = true;
  return {
    container,
    rerender(next) {
      root.render(h(StrictMode, null, next));
    },
    unmount() {
      if (!mounted) return;
      mounted = false;
      root.unmount();
      container.remove();
    },
  };
}

/** Texts of the elements matching `selector` in `container`. */
export function texts(container, selector) {
  return [...container.querySelectorAll(selector)].map((el) => el.textContent);
}

/**
 * A user of a room: its connection state, room status, members and messages, and a button
 * that publishes `say`.
 */
export function Chat({ room, user, say = "hello", presence }) {
  const { state } = useSwitchboard();
  const { messages, members, publish, status, error } = useRoom(room, { presence: presence ?? { name: user } });
  return h(
    "section",
    { "data-user": user },
    h("p", { className: "state" }, state),
    h("p", { className: "status" }, status),
    h("p", { className: "error" }, error ? error.code : ""),
    h("ul", { className: "members" }, members.map((m) => h("li", { key: m.conn }, m.presence.name ?? "?"))),
    h(
      "ol",
      { className: "messages" },
      messages.map((m) => h("li", { key: `${m.offset}` }, `${m.from.presence.name}: ${m.data.text}`)),
    ),
    h("button", { onClick: () => publish({ text: say }).catch(() => {}) }, "send"),
  );
}

/** What `user`'s Chat shows. */
export function view(container, user) {
  const section = container.querySelector(`[data-user="${user}"]`);
  if (!section) return null;
  return {
    state: section.querySelector(".state").textContent,
    status: section.querySelector(".status").textContent,
    error: section.querySelector(".error").textContent,
    members: texts(section, ".members li").sort(),
    messages: texts(section, ".messages li"),
    send: () => section.querySelector("button").click(),
  };
}

/**
 * A plain SDK client in `room`, outside React, recording the presence events it sees: the
 * server's view of who joined and left, and how often.
 */
export async function observe(url, room) {
  const sb = new Switchboard(url, { WebSocket, ...FAST });
  const joined = sb.join(room, { presence: { name: "observer" } });
  const events = [];
  const messages = [];
  joined.on("presence", ({ event, member }) => events.push(`${event} ${member.presence.name ?? "?"}`));
  joined.on("message", (m) => messages.push(m));
  await joined.ready;
  return { sb, room: joined, events, messages, close: () => sb.close() };
}

/** Waits for the next open of `sb`, unless it is already open. */
export async function opened(sb, timeoutMs = 5_000) {
  if (sb.state !== "open") await nextEvent(sb, "open", { timeoutMs });
}
