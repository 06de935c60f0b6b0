// The chat app (web/chat) in real Chromium pages against the real server.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  artifactPath,
  countMessages,
  launchBrowser,
  memberNames,
  openChat,
  say,
  transcript,
  waitForMembers,
  waitForMessages,
  waitForSystemLine,
  waitJoined,
  within,
} from "../lib/browser.js";
import { startServer } from "../lib/server.js";

describe("chat", { timeout: 180_000 }, () => {
  let server;
  let browser;
  const opened = [];

  async function chat(options) {
    const session = await openChat(browser, server.origin, options);
    opened.push(session);
    return session;
  }

  before(async () => {
    server = await startServer();
    browser = await launchBrowser();
  });

  after(async () => {
    try {
      if (browser) await within(20_000, "closing the browser", browser.close());
    } finally {
      if (server) await server.stop();
    }
    for (const { pageErrors } of opened) assert.deepEqual(pageErrors.map(String), [], "uncaught errors in a page");
  });

  test("two people chat both ways and see each other", { timeout: 60_000 }, async () => {
    const ada = await chat({ name: "ada", room: "e2e-both" });
    const grace = await chat({ name: "grace", room: "e2e-both" });

    await waitForMembers(ada.page, ["ada", "grace"]);
    await waitForMembers(grace.page, ["ada", "grace"]);
    assert.deepEqual(await memberNames(ada.page), ["ada", "grace"]);
    assert.deepEqual(await memberNames(grace.page), ["ada", "grace"]);
    await waitForSystemLine(ada.page, "grace joined");

    // The message box has focus once the room is joined, and Enter sends.
    for (const { page } of [ada, grace]) {
      assert.equal(await page.evaluate(() => document.activeElement?.id), "message-input");
    }
    await ada.page.keyboard.type("Hello Grace! Ready to review the compiler?");
    await ada.page.keyboard.press("Enter");
    assert.equal(await ada.page.locator("#message-input").inputValue(), "", "the box is empty after sending");
    await waitForMessages(grace.page, ["Hello Grace! Ready to review the compiler?"]);

    // Typing shows on the other side through presence, and stops when the message goes.
    await grace.page.keyboard.type("Yes — pulling the branch");
    await ada.page.waitForFunction(() => document.getElementById("typing").textContent === "grace is typing…");
    await grace.page.keyboard.press("Enter");
    await ada.page.waitForFunction(() => document.getElementById("typing").textContent === "");
    await waitForMessages(ada.page, ["Yes — pulling the branch"]);

    await say(ada.page, "Great. The tests are green on my side.");
    // Grace answers what she has seen, so the order of the two is the room's, not a race.
    await waitForMessages(grace.page, ["Great. The tests are green on my side."]);
    await say(grace.page, "Same here, merging.\nThanks!");
    const everything = [
      "Hello Grace! Ready to review the compiler?",
      "Yes — pulling the branch",
      "Great. The tests are green on my side.",
      "Same here, merging.\nThanks!",
    ];
    await waitForMessages(ada.page, everything);
    await waitForMessages(grace.page, everything);

    // Both see the same conversation, each message once, with its author's name.
    for (const { page } of [ada, grace]) {
      const messages = (await transcript(page)).filter((m) => m.kind === "message");
      assert.deepEqual(
        messages.map((m) => [m.name, m.text, m.pending]),
        [
          ["ada", everything[0], false],
          ["grace", everything[1], false],
          ["ada", everything[2], false],
          ["grace", everything[3], false],
        ],
      );
    }
    // Names keep a colour per person, the same in both pages.
    const colours = (page) =>
      page.$$eval("#messages .msg", (els) =>
        Object.fromEntries(els.map((el) => [el.querySelector(".msg-name").textContent, el.querySelector(".avatar").style.backgroundColor])),
      );
    const adaColours = await colours(ada.page);
    assert.deepEqual(adaColours, await colours(grace.page));
    assert.notEqual(adaColours.ada, adaColours.grace);

    await ada.page.screenshot({ path: artifactPath("chat.png") });
    await grace.page.setViewportSize({ width: 390, height: 780 });
    await grace.page.waitForTimeout(400); // the drawers slide out of view (0.2 s)
    await grace.page.screenshot({ path: artifactPath("chat-phone.png") });
  });

  test("HTML in a message or a name shows as literal text", { timeout: 60_000 }, async () => {
    const html = '<img src=x onerror=alert(1)><b>bold</b>';
    const evilName = '<i onmouseover=alert(2)>eve</i>';
    const ada = await chat({ name: "ada", room: "e2e-html" });
    const eve = await chat({ name: evilName, room: "e2e-html" });
    await waitForMembers(ada.page, ["ada", evilName]);

    await say(eve.page, html);
    await waitForMessages(ada.page, [html]);
    await waitForMessages(eve.page, [html]);
    for (const { page } of [ada, eve]) {
      assert.equal(await countMessages(page, html), 1);
      const injected = await page.$$eval("#app img, #app b, #app i", (els) => els.map((el) => el.outerHTML));
      assert.deepEqual(injected, [], "markup from users must not become elements");
      const names = await page.$$eval("#messages .msg-name", (els) => els.map((el) => el.textContent));
      assert.ok(names.includes(evilName));
    }
    await waitForSystemLine(ada.page, `${evilName} joined`);
    await ada.page.waitForTimeout(300); // an onerror handler would have fired by now
    assert.deepEqual([...ada.dialogs, ...eve.dialogs], [], "no script from a message ran");
  });

  test("closing a page shows that the person left", { timeout: 60_000 }, async () => {
    const ada = await chat({ name: "ada", room: "e2e-leave" });
    const grace = await chat({ name: "grace", room: "e2e-leave" });
    await waitForMembers(ada.page, ["ada", "grace"]);
    await grace.page.close();
    await waitForSystemLine(ada.page, "grace left");
    await waitForMembers(ada.page, ["ada"]);
  });

  test("the form joins a room; the room list shows rooms in use and makes new ones", { timeout: 60_000 }, async () => {
    const linus = await chat({ name: "linus", room: "e2e-kernel" });
    const ken = await chat({ name: "ken", room: "e2e-kernel" });
    await waitForMembers(ken.page, ["ken", "linus"]);

    // No ?name=: the form asks, and lists the rooms in use.
    const ada = await chat({});
    const { page } = ada;
    await page.waitForSelector("#join-screen:not([hidden])");
    await page.waitForFunction(() =>
      [...document.querySelectorAll("#join-room-list .room-item")].some(
        (el) => el.querySelector(".room-name").textContent === "e2e-kernel" && el.querySelector(".room-count").textContent === "2",
      ),
    );
    assert.equal(await page.evaluate(() => document.activeElement?.id), "join-name");
    await page.locator("#join-room").fill("not a room!");
    await page.locator("#join-name").fill("ada");
    await page.locator("#join-name").press("Enter");
    assert.match(await page.locator("#join-error").textContent(), /letters, digits/);
    await page.locator("#join-room").fill("e2e-kernel");
    await page.locator("#join-room").press("Enter");
    await waitJoined(page);
    await waitForMembers(page, ["ada", "ken", "linus"]);
    assert.equal(await page.evaluate(() => document.activeElement?.id), "message-input");
    assert.match(page.url(), /[?&]name=ada&room=e2e-kernel$/);

    // A new room from the sidebar: invalid names are refused with a reason.
    await page.locator("#new-room").fill("_rooms");
    await page.locator("#new-room").press("Enter");
    assert.match(await page.locator("#new-room-error").textContent(), /reserved/);
    await page.locator("#new-room").fill("e2e-side-project");
    await page.locator("#new-room").press("Enter");
    await waitJoined(page);
    assert.equal(await page.locator("#room-title").textContent(), "e2e-side-project");
    await waitForMembers(page, ["ada"]);

    // The others see the new room in their lists, with ada in it.
    await linus.page.waitForFunction(() => {
      const rooms = Object.fromEntries(
        [...document.querySelectorAll("#room-list .room-item")].map((el) => [
          el.querySelector(".room-name").textContent,
          el.querySelector(".room-count").textContent,
        ]),
      );
      return rooms["e2e-kernel"] === "2" && rooms["e2e-side-project"] === "1";
    });
    await waitForSystemLine(linus.page, "ada left");
  });
});
