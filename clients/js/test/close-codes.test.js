import assert from "node:assert/strict";
import { test } from "node:test";

import { closePolicy } from "../src/close-codes.js";

const action = (code, options) => closePolicy(code, options).action;

test("stop on normal closure, policy violation, unauthorized and forbidden", () => {
  for (const code of [1000, 1008, 4001, 4003]) assert.equal(action(code), "stop", code);
});

test("reconnect on going away, too big, server error, rate limit, slow consumer, anything else", () => {
  for (const code of [1001, 1005, 1006, 1009, 1011, 4008, 4009, 4000, 4999, 3000]) {
    assert.equal(action(code), "reconnect", code);
  }
});

test("rate limited waits at least 5 s; others add no floor", () => {
  assert.equal(closePolicy(4008).minDelayMs, 5000);
  assert.equal(closePolicy(1006).minDelayMs, 0);
});

test("4010 refreshes the token when getToken can, else stops", () => {
  assert.equal(action(4010, { canRefresh: true }), "refresh");
  assert.equal(action(4010, { canRefresh: false }), "stop");
});

test("4001 tries one fresh token, never a second", () => {
  assert.equal(action(4001, { canRefresh: true }), "refresh");
  assert.equal(action(4001, { canRefresh: true, freshTokenRefused: true }), "stop");
});

test("every policy says what the code means", () => {
  assert.equal(closePolicy(4009).meaning, "slow consumer");
  assert.equal(closePolicy(1006).meaning, "connection lost");
});
