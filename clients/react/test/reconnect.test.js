// The bindings across a server restart (SIGTERM, then the server again on the same port):
// the same provider reconnects, its rooms re-join, the rendered member lists are right.

import { createElement as h } from "react";
import { afterAll, beforeAll, expect, test } from "vitest";
import { SwitchboardProvider } from "../src/index.js";
import { Chat, FAST, countingWebSocket, freePort, mount, sleep, startServer, uniqueRoom, view, waitFor } from "./helpers.js";

let port;
let server;

beforeAll(async () => {
  port = await freePort();
  server = await startServer({ port });
});
afterAll(async () => {
  await server?.stop();
});

test("the UI follows the connection through a restart and lists both users again", async () => {
  const room = uniqueRoom("chat");
  const ada = countingWebSocket();
  const grace = countingWebSocket();
  const app = mount(
    h(
      "main",
      null,
      h(SwitchboardProvider, { url: server.url, options: { ...FAST, WebSocket: ada.WebSocket } }, h(Chat, { room, user: "ada", say: "after" })),
      h(SwitchboardProvider, { url: server.url, options: { ...FAST, WebSocket: grace.WebSocket } }, h(Chat, { room, user: "grace" })),
    ),
  );
  try {
    const bothListed = () =>
      ["ada", "grace"].every((user) => {
        const v = view(app.container, user);
        return v?.state === "open" && v.status === "joined" && JSON.stringify(v.members) === '["ada","grace"]';
      });
    await waitFor(bothListed, { what: "both joined", describe: () => app.container.innerHTML });
    const states = [];
    const record = () => states.push(view(app.container, "ada").state);
    const observer = new MutationObserver(record);
    observer.observe(app.container.querySelector('[data-user="ada"] .state'), { childList: true, characterData: true, subtree: true });

    expect(await server.stop()).toEqual({ code: 0, signal: null });
    await waitFor(() => view(app.container, "ada").state === "reconnecting", { what: "reconnecting shown" });
    expect(view(app.container, "ada").status).toBe("joining");
    await sleep(500);
    server = await startServer({ port });

    await waitFor(bothListed, { timeoutMs: 10_000, what: "both re-joined and listed", describe: () => app.container.innerHTML });
    observer.disconnect();
    expect(states.filter((s, i) => s !== states[i - 1])).toEqual(["reconnecting", "open"]);
    expect((await server.health()).connections).toBe(2);
    // One socket per provider per connection: the first, and the one after the restart.
    expect(ada.sockets.filter((s) => s.readyState === s.OPEN)).toHaveLength(1);
    expect(grace.sockets.filter((s) => s.readyState === s.OPEN)).toHaveLength(1);

    view(app.container, "ada").send();
    await waitFor(() => JSON.stringify(view(app.container, "grace").messages) === '["ada: after"]', {
      what: "a message after the restart",
      describe: () => app.container.innerHTML,
    });
  } finally {
    app.unmount();
  }
  await waitFor(async () => (await server.health()).connections === 0, { what: "/healthz connections 0 after unmount" });
});
