// The web apps under their Content-Security-Policy in real Chromium: they work with no
// violation reported, and a page of another origin cannot frame them (clickjacking).

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { launchBrowser, openChat, waitForMembers, within } from "../lib/browser.js";
import { openEditor } from "../lib/editor.js";
import { startServer } from "../lib/server.js";

/** Records every CSP violation the page reports, from before its first script runs. */
async function recordViolations(context) {
  await context.addInitScript(() => {
    window.__violations = [];
    document.addEventListener("securitypolicyviolation", (e) => {
      window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`);
    });
  });
}

describe("web app security headers", { timeout: 120_000 }, () => {
  let server;
  let browser;
  let other; // a server on another origin: another site's page
  const contexts = [];
  const dataDir = mkdtempSync(path.join(tmpdir(), "switchboard-security-e2e-"));

  before(async () => {
    browser = await launchBrowser();
    server = await startServer({ args: ["--data-dir", dataDir] });
  });

  after(async () => {
    for (const context of contexts) await context.close().catch(() => {});
    if (browser) await within(20_000, "closing the browser", browser.close());
    if (server) await server.stop();
    if (other) await new Promise((resolve) => other.close(resolve));
    rmSync(dataDir, { recursive: true, force: true });
  });

  test("chat and editor work under the policy with no violation", async () => {
    // A context per app, recording violations from before the page's first script.
    for (const open of ["chat", "editor"]) {
      const context = await browser.newContext();
      contexts.push(context);
      await recordViolations(context);
      const page = await context.newPage();
      const errors = [];
      page.on("pageerror", (e) => errors.push(String(e)));
      const url = new URL(open === "chat" ? "/chat/" : "/editor/", server.origin);
      url.searchParams.set("name", "ada");
      url.searchParams.set(open === "chat" ? "room" : "doc", "csp-check");
      await page.goto(url.href);
      if (open === "chat") await page.waitForSelector("#messages .system-self");
      else await page.waitForFunction(() => document.body.dataset.synced === "true" && document.querySelector("#doc .ProseMirror"));
      assert.deepEqual(await page.evaluate(() => window.__violations), [], `${open}: CSP violations`);
      assert.deepEqual(errors, [], `${open}: page errors`);
    }
    // The apps still do their job together (a second person sees the first).
    const grace = await openChat(browser, server.origin, { name: "grace", room: "csp-check" });
    contexts.push(grace.context);
    await waitForMembers(grace.page, ["ada", "grace"]);
    const bob = await openEditor(browser, server.origin, { name: "bob", doc: "csp-check" });
    contexts.push(bob.context);
  });

  test("a page of another origin cannot frame the chat", async () => {
    other = http.createServer((req, res) => {
      res.writeHead(200, { "content-type": "text/html" });
      res.end(`<!doctype html><title>evil</title><iframe id="victim" src="${server.origin}/chat/?name=victim&room=framed" width="800" height="600"></iframe>`);
    });
    await new Promise((resolve) => other.listen(0, "127.0.0.1", resolve));
    // "localhost" vs "127.0.0.1": another origin of the same machine.
    const evil = `http://localhost:${other.address().port}/`;
    const context = await browser.newContext();
    contexts.push(context);
    const page = await context.newPage();
    await page.goto(evil);
    await page.waitForSelector("#victim");
    // Give the frame time to load if it were allowed to.
    await page.waitForTimeout(1500);
    const frame = page.frames().find((f) => f !== page.mainFrame());
    assert.ok(frame, "the iframe exists");
    const chatLoaded = await frame
      .evaluate(() => document.querySelector("#message-input") !== null)
      .catch(() => false);
    assert.equal(chatLoaded, false, `the chat rendered inside another site's frame (${frame.url()})`);
  });
});
