// The collaborative editor (web/editor) in real browsers against the real server: two people
// type into the same paragraph at the same time, see each other (avatars, cursors, activity),
// and what they wrote survives server restarts.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { test } from "node:test";
import { artifactPath, launchBrowser, within } from "../lib/browser.js";
import {
  activityLines,
  documentTitles,
  editorContent,
  openEditor,
  peopleNames,
  placeCursor,
  remoteCursorNames,
  waitForActivity,
  waitForEditorConnection,
  waitForPeople,
  waitForText,
  waitSynced,
} from "../lib/editor.js";
import { startServer, startServerRetrying } from "../lib/server.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const JOINED = (name) => `${name} joined to edit the document`;
const LEFT = (name) => `${name} left the document`;

/** A server with its own, new data directory; `restart()` brings it back on the same port. */
async function serverWithDataDir() {
  const dataDir = mkdtempSync(path.join(tmpdir(), "switchboard-editor-e2e-"));
  const args = ["--data-dir", dataDir];
  const handle = { server: await startServer({ args }), dataDir };
  handle.restart = async () => {
    const { port } = handle.server;
    const exit = await handle.server.stop();
    assert.equal(exit.code, 0, "the server exits cleanly on SIGTERM");
    handle.server = await startServerRetrying({ port, args });
  };
  handle.cleanup = async () => {
    await handle.server.stop();
    rmSync(dataDir, { recursive: true, force: true });
  };
  return handle;
}

async function closeBrowser(browser) {
  await within(20_000, "closing the browser", browser.close());
}

test("the import map in index.html matches the installed packages", () => {
  const out = execFileSync(process.execPath, [path.join(ROOT, "web/editor/tools/importmap.mjs"), "--check"], { encoding: "utf8", timeout: 30_000 });
  assert.match(out, /import map OK/);
});

test("activity log: one leave per vanished session, written by one page, duplicates never shown", async () => {
  const Y = await import(pathToFileURL(path.join(ROOT, "web/editor/node_modules/yjs/dist/yjs.mjs")).href);
  const activity = await import(pathToFileURL(path.join(ROOT, "web/editor/activity.js")).href);
  // Three replicas of one document, kept in sync by hand.
  const docs = [1, 2, 3].map((clientID) => {
    const doc = new Y.Doc();
    doc.clientID = clientID;
    return doc;
  });
  const sync = () => {
    for (const a of docs) for (const b of docs) if (a !== b) Y.applyUpdate(b, Y.encodeStateAsUpdate(a, Y.encodeStateVector(b)));
  };
  const awarenessOf = (present) => ({ getStates: () => new Map(present.map((c) => [c, { user: { sid: `s${c}` } }])) });
  const t0 = 1_000_000;
  for (const doc of docs) activity.join(doc, { sid: `s${doc.clientID}`, name: `p${doc.clientID}`, color: "#123456", client: doc.clientID }, t0);
  sync();
  assert.deepEqual(activity.entries(docs[0]).map((e) => `${e.name} ${e.event}`), ["p1 join", "p2 join", "p3 join"]);

  // p3 vanishes. p2 is not the lowest client id: it writes nothing; p1 does, after the grace.
  const watches = docs.map(() => new activity.Watch());
  for (const w of watches) w.reset(t0 + 1000);
  const now = t0 + 2000;
  assert.deepEqual(activity.sweep(docs[0], awarenessOf([1, 2]), watches[0], { now }), []);
  assert.deepEqual(activity.sweep(docs[1], awarenessOf([1, 2]), watches[1], { now }), []);
  const later = now + activity.GRACE_MS;
  assert.deepEqual(activity.sweep(docs[1], awarenessOf([1, 2]), watches[1], { now: later }), [], "p2 is not the one to write");
  assert.deepEqual(activity.sweep(docs[0], awarenessOf([1, 2]), watches[0], { now: later }), ["s3"]);
  assert.deepEqual(activity.sweep(docs[0], awarenessOf([1, 2]), watches[0], { now: later + 5000 }), [], "once");
  // A concurrent second leave (two pages that both thought they should write) shows once.
  activity.leave(docs[2], "s3", later + 1);
  sync();
  const shown = activity.entries(docs[1]).map((e) => `${e.name} ${e.event}`);
  assert.deepEqual(shown, ["p1 join", "p2 join", "p3 join", "p3 leave"]);
  assert.equal(activity.isOpen(docs[1], "s3"), false);
  // Dated when it went missing (already gone at p1's first look: just before p1 synced).
  assert.equal(activity.entries(docs[1]).find((e) => e.event === "leave").ts, t0 + 999);
  // A page whose state timed out (not removed by the server) gets the long grace.
  const w = new activity.Watch();
  w.reset(later);
  assert.deepEqual(activity.sweep(docs[0], awarenessOf([1]), w, { now: later, timedOut: new Set([2]) }), []);
  assert.deepEqual(activity.sweep(docs[0], awarenessOf([1]), w, { now: later + activity.GRACE_MS, timedOut: new Set([2]) }), []);
  assert.deepEqual(activity.sweep(docs[0], awarenessOf([1]), w, { now: later + activity.LONG_GRACE_MS, timedOut: new Set([2]) }), ["s2"]);
  // Not connected (paused): nobody is missing.
  w.pause();
  assert.deepEqual(activity.sweep(docs[0], awarenessOf([]), w, { now: later + 10 * activity.LONG_GRACE_MS }), []);
});

test("two people type into the same paragraph at once, see each other, and it all survives restarts", { timeout: 150_000 }, async () => {
  // The browser first: if it cannot start, no server is left running.
  const browser = await launchBrowser();
  const srv = await serverWithDataDir();
  try {
    const doc = "e2e-shared";
    const ada = await openEditor(browser, srv.server.origin, { name: "ada", doc });
    await ada.page.locator("#doc .ProseMirror").click();
    await ada.page.keyboard.type("Plans for the launch");
    await ada.page.keyboard.press("Enter");
    await ada.page.keyboard.type("The shared paragraph.");
    const grace = await openEditor(browser, srv.server.origin, { name: "grace", doc });
    await waitForText(grace.page, ["The shared paragraph."]);

    // Same paragraph, same moment: ada at its start, grace at its end, key by key.
    const adaText = "Ada writes at the start. ";
    const graceText = " Grace adds at the end.";
    await placeCursor(ada.page, "The shared paragraph.", "start");
    await placeCursor(grace.page, "The shared paragraph.", "end");
    await Promise.all([
      ada.page.keyboard.type(adaText, { delay: 35 }),
      grace.page.keyboard.type(graceText, { delay: 35 }),
    ]);
    const expected = `${adaText}The shared paragraph.${graceText}`;
    for (const { page } of [ada, grace]) await waitForText(page, [expected], 20_000);
    const [a, g] = [await editorContent(ada.page), await editorContent(grace.page)];
    assert.equal(a.json, g.json, "both pages end with the same document");
    assert.deepEqual(a.paragraphs, ["Plans for the launch", expected]);

    // Avatars, cursors and the activity log show both people, on both pages.
    for (const { page } of [ada, grace]) {
      await waitForPeople(page, ["ada", "grace"]);
      assert.equal(await page.locator("#avatar-stack .avatar").count(), 2, "two avatars in the header");
      await waitForActivity(page, [JOINED("ada"), JOINED("grace")]);
      assert.equal(await page.locator("#status").getAttribute("data-state"), "connected");
    }
    await ada.page.waitForFunction(() => [...document.querySelectorAll("#doc .remote-caret-label")].some((el) => el.textContent === "grace"));
    await grace.page.waitForFunction(() => [...document.querySelectorAll("#doc .remote-caret-label")].some((el) => el.textContent === "ada"));
    assert.deepEqual(await remoteCursorNames(ada.page), ["grace"]);

    // Some formatting from the toolbar, seen by the other page.
    await placeCursor(ada.page, "Plans for the launch", "end");
    await ada.page.locator('[data-command="h1"]').click();
    await grace.page.waitForSelector("#doc .ProseMirror h1:has-text('Plans for the launch')");
    await placeCursor(grace.page, "Grace adds", "end");
    for (let i = 0; i < "the end.".length; i++) {
      await grace.page.keyboard.press("Shift+ArrowLeft");
      await grace.page.waitForTimeout(40); // a person's pace: the editor reads each selection change
    }
    await grace.page.keyboard.press("Control+b");
    await ada.page.waitForFunction(() => /"marks":\[\{"type":"strong"\}\],"text":"the end\."/.test(JSON.stringify(window.__editor.session.view.state.doc.toJSON()))).catch(async (e) => {
      throw new Error(`${e.message}\nada: ${(await editorContent(ada.page)).json}\ngrace: ${(await editorContent(grace.page)).json}\ngrace sel: ${await grace.page.evaluate(() => JSON.stringify(window.__editor.session.view.state.selection.toJSON()) + " active=" + document.activeElement?.className)}`);
    });

    await within(10_000, "screenshot", ada.page.screenshot({ path: artifactPath("editor.png") }));
    await within(10_000, "screenshot", grace.page.screenshot({ path: artifactPath("editor-grace.png") }));
    const content = (await editorContent(ada.page)).json;

    // Restart 1, with both pages open: they go offline, keep editing, and come back by themselves.
    const { port } = srv.server;
    const stopped = srv.server.stop();
    for (const { page } of [ada, grace]) await waitForEditorConnection(page, "offline", 20_000);
    assert.equal((await stopped).code, 0, "the server exits cleanly on SIGTERM");
    await placeCursor(ada.page, "Grace adds at the end.", "end");
    await ada.page.keyboard.type(" Typed while the server was down.", { delay: 10 });
    assert.match(await ada.page.locator("#banner-text").textContent(), /Connection lost.*kept on this device/);
    srv.server = await startServerRetrying({ port, args: ["--data-dir", srv.dataDir] });
    for (const { page } of [ada, grace]) {
      await waitSynced(page, 30_000);
      await waitForText(page, [expected, "Typed while the server was down."], 20_000);
    }
    assert.equal((await editorContent(ada.page)).json, (await editorContent(grace.page)).json);
    assert.notEqual((await editorContent(ada.page)).json, content);
    // A restart is not leaving: nobody is reported as gone, nor as joining twice.
    await ada.page.waitForTimeout(1_000);
    for (const { page } of [ada, grace]) {
      const lines = await activityLines(page);
      assert.deepEqual(lines, [JOINED("ada"), JOINED("grace")], `activity after the restart: ${JSON.stringify(lines)}`);
      await waitForPeople(page, ["ada", "grace"]);
    }
    const afterRestart = (await editorContent(ada.page)).json;

    // grace leaves properly (navigates away): ada's log says so at once.
    await grace.page.goto("about:blank");
    await waitForActivity(ada.page, [LEFT("grace")], 10_000);
    await waitForPeople(ada.page, ["ada"]);
    // ada's tab crashes: nobody can say she left, until someone comes back (below).
    const cdp = await ada.context.newCDPSession(ada.page);
    cdp.send("Page.crash").catch(() => {}); // never answers: the page is gone
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    await ada.context.close().catch(() => {});
    await grace.context.close();

    // Restart 2, with nobody there: what is shown next comes from the server's store alone.
    await srv.restart();
    const linus = await openEditor(browser, srv.server.origin, { name: "linus", doc });
    assert.equal((await editorContent(linus.page)).json, afterRestart, "the document is as it was");
    // Someone joining later sees the whole log; ada's stale session is closed (once) by linus.
    await waitForActivity(linus.page, [JOINED("ada"), JOINED("grace"), LEFT("grace"), JOINED("linus"), LEFT("ada")], 30_000);
    await linus.page.waitForTimeout(2_500); // time for a duplicate to show, if there were one
    const lines = await activityLines(linus.page);
    const seen = `activity seen by linus (oldest first): ${JSON.stringify(lines)}`;
    assert.deepEqual([...lines].sort(), [JOINED("ada"), JOINED("grace"), JOINED("linus"), LEFT("ada"), LEFT("grace")].sort(), seen);
    const at = (line) => lines.indexOf(line);
    assert.ok(at(JOINED("ada")) < at(JOINED("grace")) && at(JOINED("grace")) < at(LEFT("grace")), seen);
    assert.ok(at(JOINED("ada")) < at(LEFT("ada")), seen);
    assert.ok(at(LEFT("ada")) < at(JOINED("linus")), `ada's crash is dated before linus came; ${seen}`);
    assert.deepEqual(await peopleNames(linus.page), ["linus"]);
    assert.ok((await documentTitles(linus.page)).includes("E2e shared"), "the document is in the list");

    for (const { pageErrors } of [ada, grace, linus]) assert.deepEqual(pageErrors.map(String), []);
  } finally {
    try {
      await closeBrowser(browser);
    } finally {
      await srv.cleanup();
    }
  }
});

test("the join form, the document list and a new document, shared with everyone", { timeout: 90_000 }, async () => {
  // The browser first: if it cannot start, no server is left running.
  const browser = await launchBrowser();
  const srv = await serverWithDataDir();
  try {
    // No ?name=: the form asks for one.
    const ada = await openEditor(browser, srv.server.origin, {});
    await ada.page.locator("#join-name").fill("ada");
    await ada.page.locator("#join-form button[type=submit]").click();
    await waitSynced(ada.page);
    assert.equal(new URL(ada.page.url()).searchParams.get("doc"), "welcome", "a first document to start with");

    await ada.page.locator("#new-doc").fill("Meeting notes: Tuesday");
    await ada.page.locator("#new-doc-form button[type=submit]").click();
    await ada.page.waitForFunction(() => new URL(location.href).searchParams.get("doc") === "meeting-notes-tuesday");
    await waitSynced(ada.page);
    await ada.page.waitForSelector("#doc .ProseMirror h1:has-text('Meeting notes: Tuesday')");
    await waitForActivity(ada.page, ["ada created the document", JOINED("ada")]);
    await ada.page.keyboard.type("Agenda");

    // grace sees it in the list on the join screen, and opens it from there.
    const grace = await openEditor(browser, srv.server.origin, {});
    await grace.page.waitForSelector("#join-doc-list .doc-item-title:has-text('Meeting notes: Tuesday')");
    await grace.page.locator("#join-name").fill("grace");
    await grace.page.locator("#join-doc-list .doc-item", { hasText: "Meeting notes: Tuesday" }).click();
    await waitSynced(grace.page);
    await waitForText(grace.page, ["Meeting notes: Tuesday", "Agenda"]);
    assert.equal(await grace.page.locator("#doc-title").textContent(), "Meeting notes: Tuesday");
    // ada's list shows grace's avatar by the document.
    await ada.page.waitForFunction(() =>
      [...document.querySelectorAll("#doc-list .doc-item.current .avatar")].length === 2,
    );

    // A link, from the link box; only http(s) and mailto are accepted.
    await placeCursor(grace.page, "Agenda", "end");
    await grace.page.keyboard.press("Enter");
    await grace.page.locator('[data-command="link"]').click();
    await grace.page.locator("#link-input").fill("javascript:alert(1)");
    await grace.page.locator("#link-form button[type=submit]").click();
    assert.match(await grace.page.locator("#link-error").textContent(), /web address/);
    await grace.page.locator("#link-input").fill("example.com/plan");
    await grace.page.locator("#link-form button[type=submit]").click();
    await ada.page.waitForSelector('#doc .ProseMirror a[href="https://example.com/plan"]');

    // Phone-sized: the panels become drawers.
    await ada.page.setViewportSize({ width: 390, height: 760 });
    await ada.page.waitForTimeout(400); // the side panels slide away
    await ada.page.locator("#toggle-people").click();
    await ada.page.waitForFunction(() => document.getElementById("app").classList.contains("show-people"));
    await ada.page.waitForTimeout(300); // the drawer slides in
    await within(10_000, "screenshot", ada.page.screenshot({ path: artifactPath("editor-phone.png") }));

    for (const { pageErrors } of [ada, grace]) assert.deepEqual(pageErrors.map(String), []);
  } finally {
    try {
      await closeBrowser(browser);
    } finally {
      await srv.cleanup();
    }
  }
});

test("a server built without the editor packages gets a page that says how to fix it", { timeout: 60_000 }, async () => {
  // The browser first: if it cannot start, no server is left running.
  const browser = await launchBrowser();
  const srv = await serverWithDataDir();
  try {
    const context = await browser.newContext({ viewport: { width: 900, height: 700 } });
    const page = await context.newPage();
    // What a build without web/editor/node_modules serves: nothing under /editor/vendor/.
    await page.route("**/editor/vendor/**", (route) => route.fulfill({ status: 404, contentType: "application/json", body: '{"error":"not_found"}' }));
    await page.goto(new URL("/editor/?name=ada&doc=x", srv.server.origin).href);
    await page.waitForSelector("#load-error:not([hidden])", { timeout: 15_000 });
    assert.equal(await page.locator("#load-error-title").textContent(), "The editor packages were not installed");
    assert.match(await page.locator("#load-error-text").textContent(), /scripts\/start\.sh.*npm ci/s);
    await within(10_000, "screenshot", page.screenshot({ path: artifactPath("editor-not-installed.png") }));
  } finally {
    try {
      await closeBrowser(browser);
    } finally {
      await srv.cleanup();
    }
  }
});
