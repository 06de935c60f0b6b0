// A room's recent messages: someone who arrives sees what was said before (the room's history,
// which scripts/demo.toml keeps for the chat's rooms), then the conversation goes on live,
// each message once; a page opened after a server restart sees them too (history on disk); a
// page back from too long away (more missed than one re-join brings) fills the gap from history.

import assert from "node:assert/strict";
import { test } from "node:test";
import { launchBrowser, openChat, say, transcript, waitForMessages, within } from "../lib/browser.js";
import { startServer, startServerRetrying } from "../lib/server.js";

const messagesOf = async (page) => (await transcript(page)).filter((m) => m.kind === "message");

test("a page that joins late sees the earlier messages, then live ones, each once", { timeout: 120_000 }, async () => {
  const browser = await launchBrowser();
  let server = await startServer();
  try {
    const ada = await openChat(browser, server.origin, { name: "ada", room: "e2e-history" });
    const earlier = ["first, from ada", "second, from ada", "third, from ada"];
    for (const text of earlier) await say(ada.page, text);
    await waitForMessages(ada.page, earlier);
    await ada.page.waitForFunction(() => document.querySelectorAll("#messages .msg.pending").length === 0);

    const grace = await openChat(browser, server.origin, { name: "grace", room: "e2e-history" });
    await waitForMessages(grace.page, earlier);
    await say(ada.page, "live, from ada");
    // Grace answers once she has seen it, so the room's order of the two is defined.
    await waitForMessages(grace.page, ["live, from ada"]);
    await say(grace.page, "live, from grace");
    await waitForMessages(grace.page, ["live, from ada", "live, from grace"]);
    await waitForMessages(ada.page, ["live, from grace"]);
    await grace.page.waitForTimeout(500); // a duplicate would show up by now
    const shown = await messagesOf(grace.page);
    assert.deepEqual(
      shown.map((m) => [m.name, m.text]),
      [...earlier.map((text) => ["ada", text]), ["ada", "live, from ada"], ["grace", "live, from grace"]],
    );
    // The earlier messages come before the page's own "You joined" line.
    const lines = (await transcript(grace.page)).map((m) => m.text);
    assert.ok(lines.indexOf(earlier[2]) < lines.indexOf("You joined #e2e-history."), JSON.stringify(lines));

    // After a restart, a new page still sees all of it.
    const { port, dataDir } = server;
    assert.equal((await server.stop()).code, 0);
    server = await startServerRetrying({ port, dataDir });
    const cy = await openChat(browser, server.origin, { name: "cy", room: "e2e-history" });
    const all = [...earlier, "live, from ada", "live, from grace"];
    await waitForMessages(cy.page, all);
    assert.deepEqual((await messagesOf(cy.page)).map((m) => m.text), all);
    for (const { pageErrors } of [ada, grace, cy]) assert.deepEqual(pageErrors.map(String), []);
  } finally {
    try {
      await within(20_000, "closing the browser", browser.close());
    } finally {
      await server.stop();
    }
  }
});

test("a page that missed more than a re-join brings says so and shows them from history", { timeout: 120_000 }, async () => {
  const browser = await launchBrowser();
  // A re-join brings at most 2 missed messages; more is a gap (too_many).
  const server = await startServer({ args: ["--max-recovery-messages", "2"] });
  try {
    // Grace's socket can be dropped, and kept from coming back while the gate is shut.
    const gate = { shut: false, socket: null };
    const beforeOpen = (page) =>
      page.routeWebSocket(/\/ws$/, (ws) => {
        if (gate.shut) return ws.close({ code: 1011, reason: "gate shut" });
        gate.socket = ws;
        ws.connectToServer();
      });
    const ada = await openChat(browser, server.origin, { name: "ada", room: "e2e-gap" });
    const grace = await openChat(browser, server.origin, { name: "grace", room: "e2e-gap", beforeOpen });
    await say(ada.page, "before");
    await waitForMessages(grace.page, ["before"]);

    gate.shut = true;
    await gate.socket.close({ code: 4000, reason: "dropped by the test" });
    await grace.page.waitForFunction(() => document.body.dataset.connection === "reconnecting");
    const missed = ["missed 1", "missed 2", "missed 3"];
    for (const text of missed) await say(ada.page, text);
    await waitForMessages(ada.page, missed);
    await ada.page.waitForFunction(() => document.querySelectorAll("#messages .msg.pending").length === 0);
    gate.shut = false;

    await waitForMessages(grace.page, missed, 30_000);
    await say(ada.page, "after");
    await waitForMessages(grace.page, ["after"]);
    await grace.page.waitForTimeout(500);
    const lines = (await transcript(grace.page)).map((m) => m.text);
    const at = lines.indexOf("Reconnected. The messages you missed are below.");
    assert.ok(at !== -1, `the gap is reported, and filled: ${JSON.stringify(lines)}`);
    assert.deepEqual(lines.slice(at + 1).filter((text) => !/joined|left/.test(text)), [...missed, "after"], "in order, each once");
    assert.deepEqual((await messagesOf(grace.page)).map((m) => m.text), ["before", ...missed, "after"]);
    for (const { pageErrors } of [ada, grace]) assert.deepEqual(pageErrors.map(String), []);
  } finally {
    try {
      await within(20_000, "closing the browser", browser.close());
    } finally {
      await server.stop();
    }
  }
});
