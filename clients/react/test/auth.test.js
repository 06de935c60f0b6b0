// The provider's token and getToken against the real server checking HS256 tokens: the
// connection is the token's user, stays open across refreshes of a 3 s token, and a room
// the token does not cover is refused (or joined with a room token from useRoom).

import { createHmac } from "node:crypto";
import { createElement as h } from "react";
import { afterAll, beforeAll, expect, test } from "vitest";
import { SwitchboardProvider, useRoom, useSwitchboard } from "../src/index.js";
import { Chat, FAST, mount, sleep, startServer, uniqueRoom, view, waitFor } from "./helpers.js";
import { WebSocket } from "ws";

const SECRET = "react-test-secret-of-at-least-32-bytes!!";

/** An HS256 JWT, signed as a backend would. */
function sign(claims, ttlS = 60) {
  const now = Math.floor(Date.now() / 1000);
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const body = `${part({ alg: "HS256", typ: "JWT" })}.${part({ iat: now, exp: now + ttlS, ...claims })}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}

let server;
beforeAll(async () => {
  server = await startServer({ args: ["--token-hmac-secret", SECRET, "--token-expiry-grace", "1s"] });
});
afterAll(async () => {
  await server?.stop();
});

function Who() {
  const { client, state } = useSwitchboard();
  return h("p", { className: "who" }, `${state} ${client.user}`);
}

test("getToken on the provider: the token's user, open across refreshes, messages flow", async () => {
  const room = uniqueRoom("chat");
  let calls = 0;
  const options = { ...FAST, WebSocket };
  const app = mount(
    h(
      "main",
      null,
      h(
        SwitchboardProvider,
        { url: server.url, options, getToken: async () => (calls++, sign({ sub: "ada", rooms: ["chat:*"] }, 3)) },
        h(Who),
        h(Chat, { room, user: "ada", say: "late" }),
      ),
      h(SwitchboardProvider, { url: server.url, options, token: sign({ sub: "bob", rooms: ["chat:*"] }, 600) }, h(Chat, { room, user: "bob" })),
    ),
  );
  try {
    await waitFor(() => app.container.querySelector(".who")?.textContent === "open ada", { what: "open as ada" });
    await waitFor(() => view(app.container, "bob")?.members.length === 2, { what: "both joined" });
    const states = [];
    const observer = new MutationObserver(() => states.push(app.container.querySelector(".who").textContent));
    observer.observe(app.container.querySelector(".who"), { childList: true, characterData: true, subtree: true });
    await sleep(6_000); // twice the token's lifetime, past expiry plus grace
    observer.disconnect();
    expect(states).toEqual([]);
    expect(calls).toBeGreaterThanOrEqual(3);
    view(app.container, "ada").send();
    await waitFor(() => view(app.container, "bob").messages.includes("ada: late"), { what: "a message after the refreshes" });
  } finally {
    app.unmount();
  }
});

function Order({ name, getToken }) {
  const { status, error } = useRoom(name, getToken ? { getToken } : {});
  return h("p", { className: `order ${name.replace(/\W/g, "-")}` }, `${status} ${error?.code ?? ""}`.trim());
}

test("a room the token does not cover is refused; useRoom's getToken joins it with a room token", async () => {
  const covered = uniqueRoom("order");
  const refused = uniqueRoom("order");
  const asked = [];
  const getToken = async (room) => {
    asked.push(room);
    return sign({ sub: "ada", room: covered });
  };
  const app = mount(
    h(
      SwitchboardProvider,
      { url: server.url, options: { ...FAST, WebSocket }, getToken: () => sign({ sub: "ada", rooms: ["chat:*"] }) },
      h(Order, { name: covered, getToken }),
      h(Order, { name: refused }),
    ),
  );
  const text = (name) => app.container.querySelector(`.${name.replace(/\W/g, "-")}`)?.textContent;
  try {
    await waitFor(() => text(covered) === "joined" && text(refused) === "closed forbidden", {
      what: "one joined with its room token, the other refused",
      describe: () => app.container.innerHTML,
    });
    expect(asked[0]).toBe(covered);
  } finally {
    app.unmount();
  }
});
