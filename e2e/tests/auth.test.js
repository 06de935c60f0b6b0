// Access in real Chromium: the chat app in auth mode behind the example backend
// (examples/backend) and a Switchboard server that checks tokens. People log in through the
// backend, chat in an allowed room, are refused a staff room with a clear message, stay
// connected while their 4 s tokens are refreshed, see the backend's announcements; a page of
// another origin cannot open a socket.

import assert from "node:assert/strict";
import http from "node:http";
import { after, before, describe, test } from "node:test";
import { logIn, startAuthSetup } from "../lib/backend.js";
import {
  launchBrowser,
  say,
  waitForMembers,
  waitForMessages,
  waitForSystemLine,
  waitJoined,
  within,
} from "../lib/browser.js";

const TTL_S = 4; // connection tokens: refreshed by the SDK after 2 s; 1 s grace after expiry

describe("auth: the chat behind the example backend", { timeout: 180_000 }, () => {
  let server;
  let backend;
  let browser;
  let evil;
  const sessions = [];

  async function person(name, next) {
    const session = await logIn(browser, backend.origin, name, next);
    sessions.push(session);
    return session;
  }

  before(async () => {
    ({ server, backend } = await startAuthSetup({
      backend: { tokenTtlS: TTL_S, staff: ["Grace"] },
      args: ["--token-expiry-grace", "1s"],
    }));
    browser = await launchBrowser();
  });

  after(async () => {
    try {
      if (browser) await within(20_000, "closing the browser", browser.close());
    } finally {
      await backend?.stop();
      await server?.stop();
      if (evil) await new Promise((resolve) => evil.close(resolve));
    }
    for (const { pageErrors } of sessions) assert.deepEqual(pageErrors.map(String), [], "uncaught errors in a page");
  });

  test("people log in through the backend and chat; names come from their tokens", { timeout: 60_000 }, async () => {
    const ada = await person("Ada", "/chat/?room=lobby");
    await waitJoined(ada.page);
    assert.equal(new URL(ada.page.url()).origin, backend.origin, "the chat is served by the backend's origin");
    const bob = await person("Bob", "/chat/?room=lobby");
    await waitJoined(bob.page);
    await waitForMembers(ada.page, ["Ada", "Bob"]);
    await say(ada.page, "hello from Ada");
    await waitForMessages(bob.page, ["hello from Ada"]);
    const shown = await bob.page.$$eval("#messages .msg .msg-name", (els) => els.map((el) => el.textContent));
    assert.ok(shown.includes("Ada"), `sender shown as Ada: ${shown}`);
    // The connection token grants only the room list; the room came with a room token.
    const mine = backend.tokens.filter((t) => t.claims.sub === "ada");
    assert.deepEqual(mine.find((t) => t.kind === "connection").claims.rooms, { "chat:_rooms": ["join", "presence"] });
    assert.ok(mine.some((t) => t.kind === "room" && t.claims.room === "chat:lobby"));

    // Staff announce through the backend, which publishes with the HTTP API key.
    const grace = await person("Grace", "/");
    await grace.page.locator("#room").fill("lobby");
    await grace.page.locator("#text").fill("Lunch is served");
    await grace.page.locator("form#announce button").click();
    await grace.page.waitForSelector("text=Announced in chat:lobby.");
    for (const { page } of [ada, bob]) await waitForMessages(page, ["Lunch is served"]);
    const names = await ada.page.$$eval("#messages .msg .msg-name", (els) => els.map((el) => el.textContent));
    assert.ok(names.includes("Announcement"), `announcement shown as such: ${names}`);

    // Someone who arrives later sees what was said (the room token allows history).
    const cy = await person("Cy", "/chat/?room=lobby");
    await waitJoined(cy.page);
    await waitForMessages(cy.page, ["hello from Ada", "Lunch is served"]);
    assert.ok(backend.tokens.find((t) => t.kind === "room" && t.claims.sub === "cy").claims.permissions.includes("history"));
  });

  test("a staff room is refused with a clear message; the server refuses it too", { timeout: 60_000 }, async () => {
    const ada = await person("Ada", "/chat/?room=staff");
    await waitForSystemLine(ada.page, "You can't join #staff: #staff is for staff only.");
    assert.equal(await ada.page.evaluate(() => document.body.dataset.room), "refused");
    assert.equal(await ada.page.locator("#message-input").isDisabled(), true);
    assert.equal(await ada.page.evaluate(() => document.body.dataset.connection), "open", "the connection is fine");

    // Not only the backend: a socket with Ada's connection token and no room token is
    // refused by the server (the token names the room list only).
    const reply = await ada.page.evaluate(async (wsUrl) => {
      const { token } = await (await fetch("/auth/token", { method: "POST" })).json();
      const ws = new WebSocket(wsUrl, "switchboard.v1");
      const frames = [];
      await new Promise((resolve, reject) => {
        ws.onopen = () => {
          ws.send(JSON.stringify({ type: "auth", id: 1, token }));
          ws.send(JSON.stringify({ type: "join", id: 2, room: "chat:staff" }));
        };
        ws.onmessage = (e) => {
          const frame = JSON.parse(e.data);
          frames.push(frame);
          if (frame.id === 2) resolve();
        };
        ws.onerror = () => reject(new Error("socket error"));
        setTimeout(() => reject(new Error(`no join reply: ${JSON.stringify(frames)}`)), 5000);
      });
      ws.close();
      return frames.find((f) => f.id === 2);
    }, `ws://127.0.0.1:${server.port}/ws`);
    assert.equal(reply.type, "error");
    assert.equal(reply.code, "forbidden");

    // Staff may.
    const grace = await person("Grace", "/chat/?room=staff");
    await waitJoined(grace.page);
    await say(grace.page, "staff only");
    await waitForMessages(grace.page, ["staff only"]);
  });

  test("the connection stays open across token refreshes", { timeout: 60_000 }, async () => {
    const ada = await person("Ada", "/chat/?room=refresh");
    await waitJoined(ada.page);
    const bob = await person("Bob", "/chat/?room=refresh");
    await waitJoined(bob.page);
    // Every change of the connection state from now on.
    await ada.page.evaluate(() => {
      window.__states = [];
      new MutationObserver(() => window.__states.push(document.body.dataset.connection)).observe(document.body, {
        attributes: true,
        attributeFilter: ["data-connection"],
      });
    });
    const since = Date.now();
    // Three lifetimes of a 4 s token: without refreshes the server would close at 5 s.
    for (let i = 0; i < 6; i++) {
      await ada.page.waitForTimeout(2_000);
      await say(ada.page, `tick ${i}`);
    }
    await waitForMessages(bob.page, [0, 1, 2, 3, 4, 5].map((i) => `tick ${i}`));
    assert.deepEqual(await ada.page.evaluate(() => window.__states), [], "never left the open state");
    const refreshed = backend.tokens.filter((t) => t.kind === "connection" && t.claims.sub === "ada" && t.at >= since);
    assert.ok(refreshed.length >= 4, `connection tokens minted for ada in 12 s: ${refreshed.length}`);
    assert.equal(await ada.page.evaluate(() => document.body.dataset.connection), "open");
  });

  test("a page of another origin cannot open a socket (403)", { timeout: 60_000 }, async () => {
    const wsUrl = `ws://127.0.0.1:${server.port}/ws`;
    evil = http.createServer((req, res) => {
      res.writeHead(200, { "content-type": "text/html" });
      res.end(`<!doctype html><title>other site</title><script>
        window.result = new Promise((resolve) => {
          const ws = new WebSocket(${JSON.stringify(wsUrl)}, "switchboard.v1");
          const seen = [];
          ws.onopen = () => seen.push("open");
          ws.onerror = () => seen.push("error");
          ws.onclose = (e) => resolve({ seen, code: e.code });
        });
      </script>`);
    });
    await new Promise((resolve) => evil.listen(0, "127.0.0.1", resolve));
    // "localhost" vs "127.0.0.1": another origin, not in --allowed-origins.
    const evilOrigin = `http://localhost:${evil.address().port}`;
    const context = await browser.newContext();
    sessions.push({ context, pageErrors: [] });
    const page = await context.newPage();
    await page.goto(`${evilOrigin}/`);
    const result = await page.evaluate(() => window.result);
    assert.deepEqual(result, { seen: ["error"], code: 1006 });

    // What the browser was told: 403 with a JSON body.
    const refused = await new Promise((resolve, reject) => {
      const req = http.request({
        host: "127.0.0.1",
        port: server.port,
        path: "/ws",
        headers: {
          connection: "Upgrade",
          upgrade: "websocket",
          "sec-websocket-version": "13",
          "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
          "sec-websocket-protocol": "switchboard.v1",
          origin: evilOrigin,
        },
      });
      req.on("response", (res) => {
        let body = "";
        res.on("data", (chunk) => (body += chunk));
        res.on("end", () => resolve({ status: res.statusCode, body: JSON.parse(body) }));
      });
      req.on("upgrade", () => reject(new Error("the upgrade was accepted")));
      req.on("error", reject);
      req.end();
    });
    assert.equal(refused.status, 403);
    assert.equal(refused.body.error, "forbidden_origin");
  });
});
