// Helpers to drive and read the editor page (web/editor) in a browser.

import { WAIT_MS } from "./browser.js";

/**
 * Opens the editor in a fresh browser context (its own storage, IndexedDB included: another
 * person's browser). With `name` and `doc` it goes straight into the document and waits until
 * it has synced with the server. Returns { page, context, pageErrors, dialogs, name }.
 */
export async function openEditor(browser, origin, { name, doc, viewport = { width: 1280, height: 800 }, wait = true } = {}) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1, locale: "en-GB", timezoneId: "UTC" });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  page.setDefaultNavigationTimeout(WAIT_MS);
  const pageErrors = [];
  const dialogs = [];
  page.on("pageerror", (error) => pageErrors.push(error));
  page.on("dialog", (dialog) => {
    dialogs.push(dialog.message());
    dialog.dismiss().catch(() => {});
  });
  const url = new URL("/editor/", origin);
  if (name !== undefined) url.searchParams.set("name", name);
  if (doc !== undefined) url.searchParams.set("doc", doc);
  await page.goto(url.href);
  if (wait && name !== undefined) await waitSynced(page);
  return { page, context, pageErrors, dialogs, name };
}

/** Waits until the page is connected, its document synced and the editor shown. */
export function waitSynced(page, timeout = WAIT_MS) {
  return page.waitForFunction(
    () =>
      document.body.dataset.synced === "true" &&
      document.body.dataset.connection === "connected" &&
      document.querySelector("#doc .ProseMirror") !== null,
    null,
    { timeout },
  );
}

/** Waits until the connection indicator (body[data-connection]) is `state`. */
export function waitForEditorConnection(page, state, timeout = WAIT_MS) {
  return page.waitForFunction((wanted) => document.body.dataset.connection === wanted, state, { timeout });
}

/** The document as ProseMirror has it: { json, text, paragraphs: [text of each textblock] }. */
export function editorContent(page) {
  return page.evaluate(() => {
    const doc = window.__editor.session.view.state.doc;
    const paragraphs = [];
    doc.descendants((node) => {
      if (node.isTextblock) {
        paragraphs.push(node.textContent);
        return false;
      }
      return true;
    });
    return { json: JSON.stringify(doc.toJSON()), text: doc.textContent, paragraphs };
  });
}

/** Waits until the document's text contains every string of `texts`. */
export function waitForText(page, texts, timeout = WAIT_MS) {
  return page.waitForFunction(
    (wanted) => {
      const text = window.__editor?.session?.view?.state.doc.textContent ?? "";
      return wanted.every((t) => text.includes(t));
    },
    texts,
    { timeout },
  );
}

/** Names in the "Editing now" list, sorted. */
export function peopleNames(page) {
  return page.$$eval("#people-list .person-name", (els) => els.map((el) => el.textContent).sort());
}

/** Waits until "Editing now" shows exactly `names` (any order). */
export function waitForPeople(page, names, timeout = WAIT_MS) {
  return page.waitForFunction(
    (wanted) => {
      const shown = [...document.querySelectorAll("#people-list .person-name")].map((el) => el.textContent).sort();
      return JSON.stringify(shown) === JSON.stringify([...wanted].sort());
    },
    names,
    { timeout },
  );
}

/** The activity log as shown, oldest first: ["ada joined to edit the document", ...]. */
export async function activityLines(page) {
  const newestFirst = await page.$$eval("#activity-list .activity-text", (els) => els.map((el) => el.textContent));
  return newestFirst.reverse();
}

/** Waits until the activity log shows every line of `lines`. */
export function waitForActivity(page, lines, timeout = WAIT_MS) {
  return page.waitForFunction(
    (wanted) => {
      const shown = [...document.querySelectorAll("#activity-list .activity-text")].map((el) => el.textContent);
      return wanted.every((line) => shown.includes(line));
    },
    lines,
    { timeout },
  );
}

/** Names on the remote cursors shown in the page. */
export function remoteCursorNames(page) {
  return page.$$eval("#doc .remote-caret-label", (els) => els.map((el) => el.textContent).sort());
}

/** Titles in the document list of the side panel. */
export function documentTitles(page) {
  return page.$$eval("#doc-list .doc-item-title", (els) => els.map((el) => el.textContent));
}

/** Clicks into the paragraph containing `text` and puts the cursor at its start or end (keys). */
export async function placeCursor(page, text, where) {
  const paragraph = page.locator("#doc .ProseMirror p", { hasText: text }).first();
  await paragraph.click();
  await page.keyboard.press(where === "start" ? "Home" : "End");
}
