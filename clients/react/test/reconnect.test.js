// The bindings across a server restart (SIGTERM, then the server again on the same port and
// data directory): the same provider reconnects, its rooms re-join and recover, the rendered
// member lists are right; after a kill (SIGKILL) the hook reports the gap.

import { createElement as h, useState } from "react";
import { afterAll, beforeAll, expect, test } from "vitest";
import { WebSocket } from "ws";
import { gatedWebSocket } from "../../js/test-integration/gate.js";
import { SwitchboardProvider, useRoom } from "../src/index.js";
import {
  Chat,
  FAST,
  countingWebSocket,
  freePort,
  mount,
  observe,
  opened,
  sleep,
  startServer,
  texts,
  uniqueRoom,
  view,
  waitFor,
} from "./helpers.js";

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
    server = await startServer({ port, dataDir: server.dataDir });

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

/** Shows useRoom's recovery state, and the room's history when the button is clicked. */
function Recovering({ room, user }) {
  const { messages, recovery, history, status } = useRoom(room, { presence: { name: user } });
  const [page, setPage] = useState(null);
  return h(
    "section",
    { "data-user": user },
    h("p", { className: "status" }, status),
    h("p", { className: "recovery" }, [recovery.status ?? "none", recovery.reason, recovery.count].filter((part) => part !== null).join(" ")),
    h("ol", { className: "messages" }, messages.map((m) => h("li", { key: m.offset }, m.data.text))),
    h("ol", { className: "history" }, (page?.messages ?? []).map((m) => h("li", { key: m.offset }, `${m.offset} ${m.data.text}`))),
    h(
      "button",
      { onClick: () => history({ limit: 2, reverse: true }).then(setPage, (error) => setPage({ messages: [{ offset: 0, data: { text: error.code } }] })) },
      "history",
    ),
  );
}

const shown = (container, user, selector) => texts(container.querySelector(`[data-user="${user}"]`), selector);

test("recovery: messages published while a user was away arrive after the restart, and history reads the room", async () => {
  const room = uniqueRoom("chat");
  const { WebSocket: GatedWebSocket, gate } = gatedWebSocket(WebSocket);
  const app = mount(
    h(SwitchboardProvider, { url: server.url, options: { ...FAST, WebSocket: GatedWebSocket } }, h(Recovering, { room, user: "grace" })),
  );
  const ada = await observe(server.url, room);
  try {
    await waitFor(() => shown(app.container, "grace", ".status")[0] === "joined", { what: "grace joined" });
    await ada.room.publish({ text: "before" });
    await waitFor(() => shown(app.container, "grace", ".messages li").length === 1, { what: "the first message" });
    expect(shown(app.container, "grace", ".recovery")).toEqual(["none 0"]);

    gate.shut = true; // grace stays away after the restart until ada has published
    expect(await server.stop()).toEqual({ code: 0, signal: null });
    server = await startServer({ port, dataDir: server.dataDir });
    await opened(ada.sb, 10_000);
    await waitFor(() => ada.room.state === "joined", { what: "ada back" });
    await ada.room.publish({ text: "while grace was away" });
    gate.shut = false;

    await waitFor(() => shown(app.container, "grace", ".recovery")[0] === "recovered 1", {
      timeoutMs: 10_000,
      what: "grace recovered one message",
      describe: () => app.container.innerHTML,
    });
    expect(shown(app.container, "grace", ".messages li")).toEqual(["before", "while grace was away"]);

    app.container.querySelector('[data-user="grace"] button').click();
    await waitFor(() => shown(app.container, "grace", ".history li").length > 0, { what: "a history page" });
    expect(shown(app.container, "grace", ".history li")).toEqual(["2 while grace was away", "1 before"]);
  } finally {
    ada.close();
    app.unmount();
  }
});

test("a gap: after a kill the server has lost the room's window, and the hook says so", async () => {
  const room = uniqueRoom("chat");
  const app = mount(h(SwitchboardProvider, { url: server.url, options: { ...FAST, WebSocket } }, h(Recovering, { room, user: "ada" })));
  try {
    await waitFor(() => shown(app.container, "ada", ".status")[0] === "joined", { what: "ada joined" });
    await server.stop({ signal: "SIGKILL" });
    server = await startServer({ port, dataDir: server.dataDir });
    await waitFor(() => shown(app.container, "ada", ".recovery")[0] === "gap epoch_changed 0", {
      timeoutMs: 10_000,
      what: "a gap shown",
      describe: () => app.container.innerHTML,
    });
  } finally {
    app.unmount();
  }
});
