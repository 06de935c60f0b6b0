// The server restarts (SIGTERM, then again on the same port and data directory) in the middle
// of a conversation: both pages reconnect by themselves, and what was typed while it was down
// is delivered, exactly once, to both, whichever page is back first.

import assert from "node:assert/strict";
import { test } from "node:test";
import {
  countMessages,
  launchBrowser,
  openChat,
  say,
  transcript,
  waitForConnection,
  waitForMembers,
  waitForMessages,
  within,
} from "../lib/browser.js";
import { startServer } from "../lib/server.js";

/** Starts the server again on `port` and `dataDir`, retrying a few times in case the port is still held. */
async function restartOn(port, dataDir) {
  let lastError;
  for (let attempt = 0; attempt < 10; attempt++) {
    try {
      return await startServer({ port, dataDir });
    } catch (error) {
      lastError = error;
      if (!/in use|cannot listen/i.test(error.message)) throw error;
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
  }
  throw lastError;
}

/** Records every text the connection banner shows, from now on, in window.__banners. */
function recordBanner(page) {
  return page.evaluate(() => {
    window.__banners = [];
    const banner = document.getElementById("banner");
    const record = () => {
      if (!banner.hidden) window.__banners.push(document.getElementById("banner-text").textContent);
    };
    new MutationObserver(record).observe(banner, { subtree: true, childList: true, characterData: true, attributes: true });
  });
}

test("after a server restart both pages reconnect and deliver offline messages exactly once", { timeout: 120_000 }, async () => {
  // The browser first: if it cannot start, no server is left running.
  const browser = await launchBrowser();
  let server = await startServer();
  try {
    const ada = await openChat(browser, server.origin, { name: "ada", room: "e2e-restart" });
    const grace = await openChat(browser, server.origin, { name: "grace", room: "e2e-restart" });
    const pages = [ada.page, grace.page];
    await waitForMembers(ada.page, ["ada", "grace"]);
    await waitForMembers(grace.page, ["ada", "grace"]);

    const before = ["before the restart, from ada", "before the restart, from grace"];
    await say(ada.page, before[0]);
    await say(grace.page, before[1]);
    for (const page of pages) await waitForMessages(page, before);

    // Stop the server (graceful shutdown: SIGTERM), the pages notice and count down.
    for (const page of pages) await recordBanner(page);
    const { port, dataDir } = server;
    const exit = await server.stop();
    assert.equal(exit.code, 0, "the server exits cleanly on SIGTERM");
    for (const page of pages) await waitForConnection(page, "reconnecting");

    // Typed while the server is down: shown as pending.
    const offline = ["typed offline by ada, 1", "typed offline by ada, 2", "typed offline by grace"];
    await say(ada.page, offline[0]);
    await say(ada.page, offline[1]);
    await say(grace.page, offline[2]);
    assert.equal(await ada.page.locator("#messages .msg.pending").count(), 2);
    assert.equal(await grace.page.locator("#messages .msg.pending").count(), 1);
    assert.match(await ada.page.locator("#banner-text").textContent(), /2 messages will be sent when you are back/);

    // The same port again: the pages come back by themselves.
    server = await restartOn(port, dataDir);
    for (const page of pages) await waitForConnection(page, "open", 30_000);
    for (const page of pages) await waitForMessages(page, offline, 30_000);
    for (const page of pages) {
      await page.waitForFunction(() => document.querySelectorAll("#messages .msg.pending").length === 0, null, { timeout: 15_000 });
    }
    await waitForMembers(ada.page, ["ada", "grace"]);
    await waitForMembers(grace.page, ["ada", "grace"]);

    // The banner said so, counting down: "… Reconnecting in 2 s…".
    for (const page of pages) {
      const banners = await page.evaluate(() => window.__banners);
      assert.ok(
        banners.some((text) => /Reconnecting in \d+ s…/.test(text)),
        `a countdown was shown; banner texts: ${JSON.stringify([...new Set(banners)])}`,
      );
      await page.waitForSelector("#banner", { state: "hidden", timeout: 15_000 }); // "Back online", then gone
    }

    // Give a late duplicate the time to show up, then count: every message exactly once.
    await ada.page.waitForTimeout(1_500);
    for (const page of pages) {
      for (const text of [...before, ...offline]) {
        assert.equal(await countMessages(page, text), 1, `"${text}" shows exactly once`);
      }
      const messages = (await transcript(page)).filter((m) => m.kind === "message").map((m) => m.text);
      assert.ok(messages.indexOf(offline[0]) < messages.indexOf(offline[1]), "ada's offline messages keep their order");
    }
    // Coming back is not reported as leaving and joining again.
    const adaLines = (await transcript(ada.page)).filter((m) => m.kind === "system").map((m) => m.text);
    assert.equal(adaLines.filter((text) => text === "grace joined").length, 1, JSON.stringify(adaLines));
    assert.equal(adaLines.filter((text) => text === "grace left").length, 0, JSON.stringify(adaLines));

    // And the conversation goes on.
    await say(grace.page, "after the restart, from grace");
    await waitForMessages(ada.page, ["after the restart, from grace"]);
    assert.equal(await countMessages(ada.page, "after the restart, from grace"), 1);

    for (const { pageErrors } of [ada, grace]) assert.deepEqual(pageErrors.map(String), []);
  } finally {
    try {
      await within(20_000, "closing the browser", browser.close());
    } finally {
      await server.stop();
    }
  }
});

test("a message sent while the server restarts reaches a page that is back only later, exactly once", { timeout: 120_000 }, async () => {
  const browser = await launchBrowser();
  let server = await startServer();
  try {
    // Grace's page cannot reach the server while the gate is shut (its socket is closed at
    // once), so ada is back first and her message goes out while grace is still away.
    const gate = { shut: false };
    const routeGated = (page) =>
      page.routeWebSocket(/\/ws$/, (ws) => {
        if (gate.shut) ws.close({ code: 1011, reason: "gate shut" });
        else ws.connectToServer();
      });
    const ada = await openChat(browser, server.origin, { name: "ada", room: "e2e-restart-late" });
    const grace = await openChat(browser, server.origin, { name: "grace", room: "e2e-restart-late", beforeOpen: routeGated });
    await waitForMembers(ada.page, ["ada", "grace"]);
    await say(grace.page, "before, from grace");
    await waitForMessages(ada.page, ["before, from grace"]);

    const { port, dataDir } = server;
    gate.shut = true;
    assert.equal((await server.stop()).code, 0);
    for (const page of [ada.page, grace.page]) await waitForConnection(page, "reconnecting");
    await say(ada.page, "sent while the server restarts");
    server = await restartOn(port, dataDir);
    await waitForConnection(ada.page, "open", 30_000);
    await ada.page.waitForFunction(() => document.querySelectorAll("#messages .msg.pending").length === 0, null, { timeout: 15_000 });
    await say(ada.page, "sent after the restart, grace still away");
    await waitForMessages(ada.page, ["sent after the restart, grace still away"]);
    assert.equal(await grace.page.evaluate(() => document.body.dataset.connection), "reconnecting", "grace is still away");

    gate.shut = false;
    await waitForConnection(grace.page, "open", 30_000);
    const missed = ["sent while the server restarts", "sent after the restart, grace still away"];
    await waitForMessages(grace.page, missed, 15_000);
    await grace.page.waitForTimeout(1_000); // a late duplicate would show up by now
    const messages = (await transcript(grace.page)).filter((m) => m.kind === "message").map((m) => m.text);
    assert.deepEqual(messages, ["before, from grace", ...missed], "each once, in order");
    const notices = (await transcript(grace.page)).filter((m) => m.kind === "system").map((m) => m.text);
    assert.ok(!notices.some((text) => /may be missing/.test(text)), `no gap reported: ${JSON.stringify(notices)}`);
    for (const { pageErrors } of [ada, grace]) assert.deepEqual(pageErrors.map(String), []);
  } finally {
    try {
      await within(20_000, "closing the browser", browser.close());
    } finally {
      await server.stop();
    }
  }
});
