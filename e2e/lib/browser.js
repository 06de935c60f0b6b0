// Debian's Chromium driven by playwright-core, and helpers to read the chat page.

import { existsSync, mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { chromium } from "playwright-core";

export const ARTIFACTS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../artifacts");
export const WAIT_MS = 15_000; // longest wait for anything the page should do by itself

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** Launches Chromium; `args`: more command-line switches (e.g. `--ignore-certificate-errors`). */
export async function launchBrowser({ args = [] } = {}) {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`Chromium not found at ${CHROMIUM}: install it with \`apt-get install -y chromium\` (or set CHROMIUM_PATH)`);
  }
  return chromium.launch({ executablePath: CHROMIUM, args: [...CHROMIUM_ARGS, ...args], headless: true, timeout: 30_000 });
}

export function artifactPath(name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  return path.join(ARTIFACTS, name);
}

/** Resolves `promise`, or rejects after `ms` with `what` in the message. */
export function within(ms, what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Opens the chat in a fresh browser context (its own cookies and storage, like another
 * person's browser). With `name` and `room` it goes straight into the room and waits until
 * it is joined. `beforeOpen(page)` runs before the page is loaded (e.g. to route its
 * WebSocket). Returns { page, context, pageErrors, dialogs }.
 */
export async function openChat(
  browser,
  origin,
  { name, room, viewport = { width: 1280, height: 800 }, wait = true, beforeOpen } = {},
) {
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
  if (beforeOpen) await beforeOpen(page);
  const url = new URL("/chat/", origin);
  if (name !== undefined) url.searchParams.set("name", name);
  if (room !== undefined) url.searchParams.set("room", room);
  await page.goto(url.href);
  if (wait && name !== undefined && room !== undefined) await waitJoined(page);
  return { page, context, pageErrors, dialogs };
}

/** Waits until the page has joined its room (its "You joined #room" line is shown). */
export function waitJoined(page) {
  return page.waitForSelector("#messages .system-self", { timeout: WAIT_MS });
}

/** Types `text` into the message box and presses Enter. */
export async function say(page, text) {
  await page.locator("#message-input").fill(text);
  await page.locator("#message-input").press("Enter");
}

/** Everything the message list shows, in order: { kind, name, text, pending }. */
export function transcript(page) {
  return page.$$eval("#messages > li", (items) =>
    items.map((li) =>
      li.classList.contains("system")
        ? { kind: "system", text: li.querySelector(".system-text")?.textContent ?? "" }
        : {
            kind: "message",
            name: li.querySelector(".msg-name")?.textContent ?? "",
            text: li.querySelector(".msg-text")?.textContent ?? "",
            pending: li.classList.contains("pending"),
          },
    ),
  );
}

/** How many messages (sent, not pending) show exactly `text`. */
export async function countMessages(page, text) {
  return (await transcript(page)).filter((m) => m.kind === "message" && !m.pending && m.text === text).length;
}

/** Waits until every text in `texts` shows as a sent message at least once. */
export function waitForMessages(page, texts, timeout = WAIT_MS) {
  return page.waitForFunction(
    (wanted) => {
      const shown = [...document.querySelectorAll("#messages > .msg:not(.pending) .msg-text")].map((el) => el.textContent);
      return wanted.every((text) => shown.includes(text));
    },
    texts,
    { timeout },
  );
}

/** Waits until a system line reads exactly `text`. */
export function waitForSystemLine(page, text, timeout = WAIT_MS) {
  return page.waitForFunction(
    (wanted) => [...document.querySelectorAll("#messages > .system .system-text")].some((el) => el.textContent === wanted),
    text,
    { timeout },
  );
}

export function memberNames(page) {
  return page.$$eval("#member-list .member-name", (els) => els.map((el) => el.textContent).sort());
}

/** Waits until the member list shows exactly `names` (any order). */
export function waitForMembers(page, names, timeout = WAIT_MS) {
  return page.waitForFunction(
    (wanted) => {
      const shown = [...document.querySelectorAll("#member-list .member-name")].map((el) => el.textContent).sort();
      return JSON.stringify(shown) === JSON.stringify([...wanted].sort());
    },
    names,
    { timeout },
  );
}

/** Waits until the connection state (body[data-connection]) is `state`. */
export function waitForConnection(page, state, timeout = WAIT_MS) {
  return page.waitForFunction((wanted) => document.body.dataset.connection === wanted, state, { timeout });
}
