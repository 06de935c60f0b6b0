// The React bindings rendered for real (react-dom, StrictMode, happy-dom) against the real
// Switchboard server. The server's /healthz counts WebSocket connections.

import { createElement as h, useState } from "react";
import { renderToString } from "react-dom/server";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import { WebSocket } from "ws";
import { Switchboard } from "@switchboard/client";
import { SwitchboardProvider, usePresence, useRoom, useSwitchboard } from "../src/index.js";
import {
  Chat,
  FAST,
  countingWebSocket,
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

let server;
const cleanups = [];

beforeAll(async () => {
  server = await startServer();
});
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()();
  // Every test leaves the server as it found it.
  await waitFor(async () => (await server.health()).connections === 0, { what: "no connections left" });
});
afterAll(async () => {
  await server?.stop();
});

const connections = async () => (await server.health()).connections;

function track(mounted) {
  cleanups.push(() => mounted.unmount());
  return mounted;
}

describe("two users, two providers, under StrictMode", () => {
  test("one connection per provider; messages and members flow; unmount cleans up", async () => {
    const room = uniqueRoom("chat");
    const watcher = await observe(server.url, room);
    cleanups.push(() => watcher.close());
    const ada = countingWebSocket();
    const grace = countingWebSocket();
    const app = track(
      mount(
        h(
          "main",
          null,
          h(
            SwitchboardProvider,
            { url: server.url, options: { ...FAST, WebSocket: ada.WebSocket } },
            h(Chat, { room, user: "ada", say: "hi grace" }),
          ),
          h(
            SwitchboardProvider,
            { url: server.url, options: { ...FAST, WebSocket: grace.WebSocket } },
            h(Chat, { room, user: "grace", say: "hi ada" }),
          ),
        ),
      ),
    );

    const everyone = ["ada", "grace", "observer"];
    await waitFor(
      () => {
        const a = view(app.container, "ada");
        const g = view(app.container, "grace");
        return (
          a?.state === "open" &&
          a.status === "joined" &&
          JSON.stringify(a.members) === JSON.stringify(everyone) &&
          JSON.stringify(g?.members) === JSON.stringify(everyone)
        );
      },
      { what: "both users joined, listing everyone", describe: () => app.container.innerHTML },
    );
    // Exactly one WebSocket per provider, though StrictMode mounted every effect twice.
    expect(ada.sockets).toHaveLength(1);
    expect(grace.sockets).toHaveLength(1);
    expect(await connections()).toBe(3); // ada, grace, and the observer
    // And one join each: no join/leave/join churn for the others to see.
    expect([...watcher.events].sort()).toEqual(["join ada", "join grace"]);

    view(app.container, "ada").send();
    await waitFor(() => view(app.container, "grace").messages.length === 1, {
      what: "grace to see ada's message",
      describe: () => app.container.innerHTML,
    });
    view(app.container, "grace").send();
    const both = ["ada: hi grace", "grace: hi ada"];
    await waitFor(
      () =>
        JSON.stringify(view(app.container, "ada").messages) === JSON.stringify(both) &&
        JSON.stringify(view(app.container, "grace").messages) === JSON.stringify(both),
      { what: "both messages on both sides, in order", describe: () => app.container.innerHTML },
    );
    await sleep(100);
    expect(view(app.container, "ada").messages).toEqual(both);
    expect(view(app.container, "grace").messages).toEqual(both);

    app.unmount();
    await waitFor(async () => (await connections()) === 1, { what: "only the observer left on /healthz" });
    await waitFor(() => watcher.room.members.length === 1, { what: "the observer alone in the room" });
    expect([...watcher.events].sort()).toEqual(["join ada", "join grace", "leave ada", "leave grace"]);
    expect(ada.sockets).toHaveLength(1);
    expect(grace.sockets).toHaveLength(1);
    expect(ada.sockets[0].readyState).toBe(WebSocket.CLOSED);
  });

  test("without the observer: /healthz counts exactly the two providers, then 0", async () => {
    const room = uniqueRoom("chat");
    const ada = countingWebSocket();
    const grace = countingWebSocket();
    const app = track(
      mount(
        h(
          "main",
          null,
          h(SwitchboardProvider, { url: server.url, options: { ...FAST, WebSocket: ada.WebSocket } }, h(Chat, { room, user: "ada" })),
          h(SwitchboardProvider, { url: server.url, options: { ...FAST, WebSocket: grace.WebSocket } }, h(Chat, { room, user: "grace" })),
        ),
      ),
    );
    await waitFor(
      () =>
        JSON.stringify(view(app.container, "ada")?.members) === '["ada","grace"]' &&
        JSON.stringify(view(app.container, "grace")?.members) === '["ada","grace"]',
      { what: "both members on both sides", describe: () => app.container.innerHTML },
    );
    expect(await connections()).toBe(2);
    expect((await server.health()).rooms).toBe(1);
    expect(ada.sockets.length + grace.sockets.length).toBe(2);
    app.unmount();
    await waitFor(async () => (await connections()) === 0, { what: "/healthz connections 0 after unmount" });
    expect((await server.health()).rooms).toBe(0);
  });
});

describe("rooms shared and switched", () => {
  test("two components in one room share one join; the room is left when the last unmounts", async () => {
    const room = uniqueRoom("chat");
    const watcher = await observe(server.url, room);
    cleanups.push(() => watcher.close());
    const sockets = countingWebSocket();
    let setShown;
    function Two() {
      const [shown, set] = useState(2);
      setShown = set;
      return h(
        "div",
        null,
        shown >= 1 ? h(Chat, { room, user: "ada", key: "one" }) : null,
        shown >= 2 ? h(Counter, { room, key: "two" }) : null,
      );
    }
    function Counter({ room: name }) {
      const { messages, members } = useRoom(name);
      return h("p", { id: "counter" }, `${members.length} members, ${messages.length} messages`);
    }
    const app = track(mount(h(SwitchboardProvider, { url: server.url, options: { ...FAST, WebSocket: sockets.WebSocket } }, h(Two))));
    await waitFor(() => view(app.container, "ada")?.status === "joined", { what: "joined" });
    await waitFor(() => app.container.querySelector("#counter")?.textContent === "2 members, 0 messages", {
      what: "the second component sees the members",
      describe: () => app.container.innerHTML,
    });
    view(app.container, "ada").send();
    await waitFor(() => app.container.querySelector("#counter").textContent === "2 members, 1 messages", {
      what: "both components get the message",
    });
    expect(view(app.container, "ada").messages).toEqual(["ada: hello"]);
    // Counter has no presence of its own: ada's stays.
    expect(watcher.room.members.map((m) => m.presence.name).sort()).toEqual(["ada", "observer"]);

    setShown(1); // the second component goes: ada stays in the room
    await sleep(200);
    expect(watcher.events).toEqual(["join ada"]);
    setShown(0); // the last one goes: ada leaves
    await waitFor(() => watcher.events.length === 2, { what: "ada to leave" });
    expect(watcher.events).toEqual(["join ada", "leave ada"]);
    expect(await connections()).toBe(2); // the provider stays connected
    expect(sockets.sockets).toHaveLength(1);
  });

  test("changing the room name leaves the old room and joins the new one", async () => {
    const first = uniqueRoom("first");
    const second = uniqueRoom("second");
    const watchFirst = await observe(server.url, first);
    const watchSecond = await observe(server.url, second);
    cleanups.push(() => watchFirst.close(), () => watchSecond.close());
    const props = { url: server.url, options: { ...FAST, WebSocket } };
    const app = track(mount(h(SwitchboardProvider, props, h(Chat, { room: first, user: "ada" }))));
    await waitFor(() => view(app.container, "ada")?.members.length === 2, { what: "ada in the first room" });
    view(app.container, "ada").send();
    await waitFor(() => view(app.container, "ada").messages.length === 1, { what: "a message in the first room" });

    app.rerender(h(SwitchboardProvider, props, h(Chat, { room: second, user: "ada" })));
    await waitFor(() => watchSecond.events.includes("join ada") && watchFirst.events.includes("leave ada"), {
      what: "ada to move rooms",
      describe: () => JSON.stringify([watchFirst.events, watchSecond.events]),
    });
    await waitFor(() => view(app.container, "ada").status === "joined", { what: "joined the second room" });
    expect(view(app.container, "ada").messages).toEqual([]); // the first room's are gone
    expect(watchFirst.events).toEqual(["join ada", "leave ada"]);
    expect(watchSecond.events).toEqual(["join ada"]);
  });

  test("presence given to useRoom is updated when it changes, by value", async () => {
    const room = uniqueRoom("chat");
    const watcher = await observe(server.url, room);
    cleanups.push(() => watcher.close());
    const props = { url: server.url, options: { ...FAST, WebSocket } };
    const app = track(mount(h(SwitchboardProvider, props, h(Chat, { room, user: "ada", presence: { name: "ada" } }))));
    await waitFor(() => view(app.container, "ada")?.members.length === 2, { what: "joined" });
    // A new object with the same value: nothing sent.
    app.rerender(h(SwitchboardProvider, props, h(Chat, { room, user: "ada", presence: { name: "ada" } })));
    await sleep(150);
    expect(watcher.events).toEqual(["join ada"]);
    app.rerender(h(SwitchboardProvider, props, h(Chat, { room, user: "ada", presence: { name: "ada", typing: true } })));
    await waitFor(() => watcher.events.length === 2, { what: "the update" });
    expect(watcher.events).toEqual(["join ada", "update ada"]);
    expect(watcher.room.members.find((m) => m.presence.name === "ada").presence).toEqual({ name: "ada", typing: true });
  });
});

describe("usePresence", () => {
  test("by room name: members and setPresence", async () => {
    const room = uniqueRoom("chat");
    const watcher = await observe(server.url, room);
    cleanups.push(() => watcher.close());
    function Who() {
      const { members, setPresence } = usePresence(room);
      return h(
        "div",
        null,
        h("ul", null, members.map((m) => h("li", { key: m.conn }, JSON.stringify(m.presence)))),
        h("button", { onClick: () => setPresence({ name: "ada", away: true }) }, "away"),
      );
    }
    const app = track(mount(h(SwitchboardProvider, { url: server.url, options: { ...FAST, WebSocket } }, h(Who))));
    await waitFor(() => texts(app.container, "li").length === 2, { what: "two members", describe: () => app.container.innerHTML });
    expect(texts(app.container, "li").sort()).toEqual(["{\"name\":\"observer\"}", "{}"]);
    app.container.querySelector("button").click();
    await waitFor(() => texts(app.container, "li").includes("{\"name\":\"ada\",\"away\":true}"), {
      what: "my presence updated",
      describe: () => app.container.innerHTML,
    });
    expect(watcher.events).toEqual(["join ?", "update ada"]);
  });

  test("with useRoom's room: the same members, one join", async () => {
    const room = uniqueRoom("chat");
    const watcher = await observe(server.url, room);
    cleanups.push(() => watcher.close());
    function Both() {
      const { room: joined } = useRoom(room, { presence: { name: "ada" } });
      const byRoom = usePresence(joined);
      const byName = usePresence(room);
      return h("p", null, `${byRoom.members.length}/${byName.members.length}`);
    }
    const app = track(mount(h(SwitchboardProvider, { url: server.url, options: { ...FAST, WebSocket } }, h(Both))));
    await waitFor(() => app.container.textContent === "2/2", { what: "2/2", describe: () => app.container.innerHTML });
    await sleep(150);
    expect(watcher.events).toEqual(["join ada"]);
  });
});

describe("the provider", () => {
  test("useSwitchboard gives the client and its state", async () => {
    let seen;
    function Show() {
      seen = useSwitchboard();
      return h("p", null, seen.state);
    }
    const app = track(mount(h(SwitchboardProvider, { url: server.url, options: { ...FAST, WebSocket } }, h(Show))));
    await waitFor(() => app.container.textContent === "open", { what: "state open" });
    expect(seen.client).toBeInstanceOf(Switchboard);
    expect(seen.client.conn).toMatch(/\S/);
    expect(await connections()).toBe(1);
  });

  test("a client passed in is used as it is: not closed on unmount", async () => {
    const client = new Switchboard(server.url, { ...FAST, WebSocket });
    cleanups.push(() => client.close());
    await opened(client);
    const room = uniqueRoom("chat");
    const app = track(mount(h(SwitchboardProvider, { client }, h(Chat, { room, user: "ada" }))));
    await waitFor(() => view(app.container, "ada")?.status === "joined", { what: "joined" });
    expect(view(app.container, "ada").state).toBe("open");
    app.unmount();
    await sleep(200);
    expect(client.state).toBe("open");
    expect(await connections()).toBe(1);
    expect((await server.health()).rooms).toBe(0); // the room was left all the same
  });

  test("a refused join shows as status closed with the server's code", async () => {
    const app = track(mount(h(SwitchboardProvider, { url: server.url, options: { ...FAST, WebSocket } }, h(Chat, { room: "not a room", user: "ada" }))));
    await waitFor(() => view(app.container, "ada")?.status === "closed", { what: "closed", describe: () => app.container.innerHTML });
    expect(view(app.container, "ada").error).toBe("invalid_room");
  });

  test("the hooks throw outside a provider", () => {
    function Lost() {
      useRoom("chat:lobby");
      return null;
    }
    function Alone() {
      useSwitchboard();
      return null;
    }
    expect(() => renderToString(h(Lost))).toThrow(/inside <SwitchboardProvider>/);
    expect(() => renderToString(h(Alone))).toThrow(/inside <SwitchboardProvider>/);
  });
});
