// Switchboard chat: a room chat over the JS SDK (served by the server at /sdk/).
//
//   /chat/?name=ada&room=lobby   goes straight into room chat:lobby as "ada";
//   without both, a form asks for what is missing.
//
// Auth mode: served by an app backend (examples/backend), the page carries
//   <meta name="switchboard-auth" content="/auth">        the backend's token endpoints
//   <meta name="switchboard-url" content="ws://…/ws">     the Switchboard server's socket
//   <meta name="switchboard-login" content="/">           where to log in
// Then the name is the logged-in person's (POST /auth/me), the connection uses a token from
// POST /auth/token (refreshed by the SDK before it expires), every room is joined with a room
// token from POST /auth/room-token, and a room the backend or server refuses says so.
// Served by the Switchboard binary itself (scripts/start.sh), there are no such tags: open demo.
//
// When someone arrives in a room, the room's recent messages (its history, read with the SDK's
// room.history) are shown above what arrives live. Messages are not lost across a reconnect or a
// server restart: the SDK re-joins from the last message received and the server sends what was
// missed; what I typed offline or whose acknowledgement was lost is sent again by the SDK, with
// the same key, so the server delivers it once.
//
// Everything a person typed (names, messages) is put on the page with textContent, never
// parsed as HTML.

import { Switchboard, SwitchboardError } from "/sdk/switchboard.js";
import {
  DIRECTORY_ROOM,
  MAX_MESSAGE_LENGTH,
  ROOM_PREFIX,
  checkDisplayName,
  checkRoomName,
  colourFor,
  formatDateTime,
  formatTime,
  initials,
  isRoomName,
  messageText,
  newId,
  typingText,
} from "./util.js";

// After a reconnect, how long someone who was in the room before has to be back before they are
// reported as gone (everyone reconnects at their own moment after a server restart).
const REGROUP_MS = 8_000;
// My "typing" presence goes back to false this long after the last keystroke.
const TYPING_IDLE_MS = 4_000;
// How many of the room's recent messages to show when someone arrives.
const HISTORY_LIMIT = 50;
// Consecutive messages of one person within this are grouped under one name.
const GROUP_MS = 5 * 60_000;

const $ = (id) => document.getElementById(id);
const ui = {
  joinScreen: $("join-screen"),
  joinForm: $("join-form"),
  joinName: $("join-name"),
  joinRoom: $("join-room"),
  joinError: $("join-error"),
  joinRoomList: $("join-room-list"),
  joinRoomsEmpty: $("join-rooms-empty"),
  app: $("app"),
  roomList: $("room-list"),
  newRoomForm: $("new-room-form"),
  newRoom: $("new-room"),
  newRoomError: $("new-room-error"),
  meAvatar: $("me-avatar"),
  meName: $("me-name"),
  changeName: $("change-name"),
  toggleRooms: $("toggle-rooms"),
  toggleMembers: $("toggle-members"),
  roomTitle: $("room-title"),
  memberCount: $("member-count"),
  banner: $("banner"),
  bannerStatus: $("banner-status"),
  bannerPending: $("banner-pending"),
  bannerRetry: $("banner-retry"),
  messages: $("messages"),
  typing: $("typing"),
  composer: $("composer"),
  input: $("message-input"),
  memberList: $("member-list"),
  backdrop: $("backdrop"),
};

/** The room being chatted in (see newChat), or null before one is chosen. */
let chat = null;

/** This page: its display name, and a random id that tells its member apart across reconnects. */
const me = { uid: newId(), name: null };

const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.getAttribute("content") || null;
const AUTH = meta("switchboard-auth"); // null: the open demo
const wsUrl = meta("switchboard-url") ?? `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;

/**
 * POSTs to the backend's auth endpoint `path`. Not logged in (401): off to the login page,
 * and a refusal the SDK does not retry; not allowed (403): a refusal with the backend's reason.
 */
async function authRequest(path, body = {}) {
  const response = await fetch(`${AUTH}/${path}`, {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const reply = await response.json().catch(() => null);
  if (response.status === 401) {
    const login = new URL(meta("switchboard-login") ?? "/", location.href);
    login.searchParams.set("next", location.pathname + location.search);
    location.assign(login.href);
    throw new SwitchboardError("unauthorized", reply?.message ?? "not logged in");
  }
  if (response.status === 403) throw new SwitchboardError("forbidden", reply?.message ?? "not allowed");
  if (!response.ok || reply === null) throw new Error(reply?.message ?? `${path}: HTTP ${response.status}`);
  return reply;
}

const sb = new Switchboard(wsUrl, {
  backoff: { baseMs: 1_000, maxMs: 10_000 },
  getToken: AUTH ? async () => (await authRequest("token")).token : null,
});
/** The room token of `room`, fetched before every (re-)join in auth mode. */
const roomToken = AUTH ? async (room) => (await authRequest("room-token", { room })).token : null;

// ---------------------------------------------------------------------------------------------
// Connection banner: "Reconnecting in 4 s…", counting down, gone once the connection is back.

const connection = {
  retryAt: null, // when the next attempt is due (ms since the Unix epoch)
  shutdown: false, // the server said it is going away (a restart)
  wasDown: false, // lost at least once: say "Back online" when it returns
  backTimer: null,
  tick: null,
};

sb.on("state", (state) => {
  document.body.dataset.connection = state;
  if (state === "open") {
    connection.retryAt = null;
    connection.shutdown = false;
    if (!connection.wasDown) hideBanner();
  } else if (state === "reconnecting") {
    connection.wasDown = true;
  }
  renderBanner();
  if (chat) {
    renderMembers(chat);
    renderPendingStatus(chat);
  }
});
sb.on("reconnect", ({ at }) => {
  connection.retryAt = at;
  renderBanner();
});
sb.on("shutdown", () => {
  connection.shutdown = true;
});
sb.on("error", (error) => console.warn("switchboard:", error.code, error.message));

ui.bannerRetry.addEventListener("click", () => sb.connect());

function renderBanner() {
  const state = sb.state;
  clearTimeout(connection.tick);
  if (state !== "open") clearTimeout(connection.backTimer);
  let text;
  let kind;
  let retry = false;
  if (state === "open") {
    if (!connection.wasDown) return; // hidden, or "Back online" until its timer hides it
    connection.wasDown = false;
    text = "Back online.";
    kind = "ok";
    clearTimeout(connection.backTimer);
    connection.backTimer = setTimeout(hideBanner, 2_500);
  } else if (state === "connecting") {
    text = "Connecting…";
    kind = "info";
  } else if (state === "reconnecting") {
    const secs = connection.retryAt === null ? 0 : Math.ceil((connection.retryAt - Date.now()) / 1000);
    const lost = connection.shutdown ? "The server is restarting." : "Connection lost.";
    text = secs >= 1 ? `${lost} Reconnecting in ${secs} s…` : `${lost} Reconnecting…`;
    kind = "warn";
    retry = secs >= 1;
    if (secs >= 1) connection.tick = setTimeout(renderBanner, 250);
  } else {
    text = "Disconnected.";
    kind = "error";
    retry = true;
  }
  const pending = chat && state !== "open" ? chat.sending.filter((item) => item.state === "sending").length : 0;
  ui.banner.hidden = false;
  ui.banner.dataset.kind = kind;
  ui.bannerStatus.textContent = text;
  ui.bannerPending.textContent =
    pending > 0 ? `${pending} ${pending === 1 ? "message" : "messages"} will be sent when you are back.` : "";
  ui.bannerRetry.hidden = !retry;
  ui.bannerRetry.textContent = state === "closed" ? "Reconnect" : "Retry now";
}

function hideBanner() {
  ui.banner.hidden = true;
  ui.banner.dataset.kind = "";
}

// ---------------------------------------------------------------------------------------------
// Rooms in use.
//
// The server has no room-list API yet. So every chat page also joins one well-known room,
// chat:_rooms (the directory), with presence { uid, name, room }: the directory's member list
// *is* the list of who is in which room, kept live by the server's presence events, and a room
// is "in use" while some member's presence names it. Nothing is ever published there. Costs:
// one more room per page, and each page's room switch is one presence event to every open
// page; replace this with a room-list API when the server has one. Other clients can join the
// directory too, so what its members claim is checked (room names) and only ever shown as text.

const directory = sb.join(DIRECTORY_ROOM, { presence: directoryPresence() });
directory.on("members", renderRoomLists);
directory.on("error", (error) => console.warn("room directory:", error.code, error.message));

function directoryPresence() {
  return { uid: me.uid, name: me.name, room: chat ? chat.name : null };
}

/** [{ name, count }]: rooms with someone in them (and the current one), busiest first. */
function roomsInUse() {
  const people = new Map(); // room -> Set of member keys
  for (const member of directory.members) {
    const room = member.presence?.room;
    if (!isRoomName(room)) continue;
    if (!people.has(room)) people.set(room, new Set());
    people.get(room).add(memberKey(member));
  }
  if (chat && !people.has(chat.name)) people.set(chat.name, new Set([me.uid]));
  return [...people]
    .map(([name, keys]) => ({ name, count: keys.size }))
    .sort((a, b) => b.count - a.count || a.name.localeCompare(b.name));
}

function renderRoomLists() {
  const rooms = roomsInUse();
  fillRoomList(ui.roomList, rooms, (name) => {
    closeDrawers();
    enterRoom(name);
  });
  fillRoomList(ui.joinRoomList, rooms, (name) => {
    ui.joinRoom.value = name;
    if (checkDisplayName(ui.joinName.value).error) ui.joinName.focus();
    else ui.joinForm.requestSubmit();
  });
  ui.joinRoomsEmpty.hidden = rooms.length > 0;
}

function fillRoomList(list, rooms, choose) {
  const items = rooms.map(({ name, count }) => {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "room-item";
    if (chat && chat.name === name) {
      button.classList.add("current");
      button.setAttribute("aria-current", "true");
    }
    const hash = span("room-hash", "#");
    hash.setAttribute("aria-hidden", "true");
    const count_ = span("room-count", String(count));
    count_.title = `${count} ${count === 1 ? "person" : "people"}`;
    button.append(hash, span("room-name", name), count_);
    button.addEventListener("click", () => choose(name));
    li.append(button);
    return li;
  });
  list.replaceChildren(...items);
}

// ---------------------------------------------------------------------------------------------
// The room being chatted in.

function newChat(name, room) {
  return {
    name,
    room,
    unsubscribe: [],
    joinedOnce: false,
    sending: [], // my messages shown but not yet delivered, oldest first: { key, text, state, li }
    present: new Map(), // member key -> { name, conns }: who we have said is here
    missing: null, // Set of member keys we are waiting for after a reconnect, or null
    regroupTimer: null,
    typing: false,
    typingTimer: null,
  };
}

function myPresence() {
  return { uid: me.uid, name: me.name, typing: chat ? chat.typing : false };
}

/** A member's identity across reconnects: the page's uid when it has one, else its connection. */
function memberKey(member) {
  const uid = member?.presence?.uid;
  return typeof uid === "string" && uid !== "" ? uid : `conn:${member?.conn}`;
}

function memberName(member) {
  if (member?.server === true) return "Announcement";
  // The name the backend vouches for (the token's `info`) over what the member's page says.
  const vouched = member?.info?.name;
  if (typeof vouched === "string" && vouched.trim() !== "") return vouched.trim().slice(0, 64);
  const name = member?.presence?.name;
  if (typeof name === "string" && name.trim() !== "") return name.trim().slice(0, 64);
  return `guest-${String(member?.conn ?? "").slice(-4)}`;
}

function enterRoom(name) {
  if (chat && chat.name === name) return;
  if (chat) leaveRoom(chat);
  chat = newChat(name, null);
  const c = chat;
  const room = sb.join(ROOM_PREFIX + name, { presence: myPresence(), getToken: roomToken });
  c.room = room;
  const current = (fn) => (payload) => chat === c && fn(payload); // events of a room left: ignored
  c.unsubscribe = [
    room.on("joined", current((reply) => onJoined(c, reply))),
    room.on("state", current((state) => onRoomState(c, state))),
    room.on("message", current((message) => onMessage(c, message))),
    room.on("presence", current((event) => onPresence(c, event))),
    room.on("members", current(() => renderMembers(c))),
    room.on("gap", current((gap) => {
      if (c.joinedOnce) fillGap(c, gap);
    })),
    room.on("recovered", current(({ count }) => {
      if (count > 0) console.info(`#${name}: ${count} missed ${count === 1 ? "message" : "messages"} recovered`);
    })),
    room.on("error", current((error) => {
      if (error.code === "left") refused(c, `You were removed from #${name}: ${error.message}.`);
      else if (!REFUSED.has(error.code)) systemLine(c, `Problem in #${name}: ${error.message}`, "error");
    })),
  ];
  room.ready.catch((error) => {
    if (chat !== c || error.code === "closed" || error.code === "left") return;
    if (REFUSED.has(error.code)) refused(c, `You can't join #${name}: ${error.message}.`);
    else systemLine(c, `Could not join #${name}: ${error.message}`, "error");
  });

  ui.messages.replaceChildren();
  delete document.body.dataset.room;
  ui.input.disabled = false;
  ui.roomTitle.textContent = name;
  ui.input.placeholder = `Message #${name}`;
  document.title = `#${name} · Switchboard`;
  const url = new URL(location.href);
  if (!AUTH) url.searchParams.set("name", me.name); // in auth mode the name is the session's
  url.searchParams.set("room", name);
  history.replaceState(null, "", url);
  const changeUrl = new URL("./", location.href);
  changeUrl.searchParams.set("room", name);
  ui.changeName.href = changeUrl.pathname + changeUrl.search;
  directory.setPresence(directoryPresence());
  renderRoomLists();
  renderMembers(c);
  renderTyping(c);
  ui.input.focus();
}

// Join refusals: the room is closed for this person, the composer with it.
const REFUSED = new Set(["forbidden", "unauthorized"]);

function refused(c, text) {
  systemLine(c, text, "error");
  document.body.dataset.room = "refused";
  ui.input.disabled = true;
  ui.input.placeholder = "Pick another room";
}

function leaveRoom(c) {
  for (const off of c.unsubscribe) off();
  clearTimeout(c.regroupTimer);
  clearTimeout(c.typingTimer);
  c.room.leave();
}

function onRoomState(c, state) {
  // Joined, then not: the connection was lost. My messages wait in the SDK's queue.
  if (state === "joining" && c.joinedOnce) {
    clearTimeout(c.regroupTimer);
    c.missing = null;
    renderPendingStatus(c);
  }
  renderMembers(c);
  renderTyping(c);
}

// Getting back together. When a server restarts, every page loses its connection at the same
// moment and comes back at its own time (the reconnect delays are random, on purpose). So
// after a reconnect, someone who was here before and is not back yet is not reported as gone
// until REGROUP_MS passed: a restart does not read as everyone leaving and joining again.
// (Messages need no such wait: whoever is back later gets what they missed from the server.)
function onJoined(c, reply) {
  const now = new Map();
  for (const member of reply.members ?? []) {
    const key = memberKey(member);
    if (!now.has(key)) now.set(key, { name: memberName(member), conns: new Set() });
    now.get(key).conns.add(member.conn);
  }
  if (!c.joinedOnce) {
    c.joinedOnce = true;
    c.present = now;
    const others = [...now.keys()].filter((key) => key !== me.uid).length;
    systemLine(c, others === 0 ? `You joined #${c.name}. It is just you for now.` : `You joined #${c.name}.`, "self");
    ui.input.focus();
    showRecent(c, reply.offset);
  } else {
    const missing = new Set();
    for (const [key, person] of c.present) {
      if (key === me.uid || now.has(key)) continue;
      missing.add(key);
      now.set(key, { name: person.name, conns: new Set() }); // not back yet
    }
    for (const [key, person] of now) {
      if (key !== me.uid && !c.present.has(key)) systemLine(c, `${person.name} joined`, "join");
    }
    c.present = now;
    clearTimeout(c.regroupTimer);
    c.missing = missing.size > 0 ? missing : null;
    if (c.missing) c.regroupTimer = setTimeout(() => endRegroup(c), REGROUP_MS);
  }
  renderPendingStatus(c);
  renderMembers(c);
}

/**
 * The room's recent messages, above everything shown since the join: those up to `offset`
 * (the join's position; the ones after it arrive live). A room that keeps nothing, or a token
 * without the history permission, just shows none.
 */
function showRecent(c, offset) {
  const anchor = ui.messages.firstChild;
  c.room.history({ limit: HISTORY_LIMIT, reverse: true }).then(
    (page) => {
      if (chat !== c) return;
      const earlier = page.messages.filter((m) => m.offset <= offset).reverse();
      showEarlier(earlier, (li) => ui.messages.insertBefore(li, anchor?.parentNode === ui.messages ? anchor : ui.messages.firstChild));
    },
    (error) => console.warn(`history of #${c.name}:`, error.code, error.message),
  );
}

/**
 * A re-join the server could not recover (too many missed, or the room's history was lost):
 * say so, and fill in what the room still keeps of what was missed, up to the re-join's
 * position (what comes after it arrives live, below). My own missed messages are on the page
 * already, sent or pending.
 */
function fillGap(c, { since, epoch, offset }) {
  const notice = systemLine(c, "Reconnected. Messages sent while you were offline may be missing.", "notice");
  const sameEpoch = since.epoch === epoch;
  const after = sameEpoch ? since.offset : 0; // in a new epoch every message of it was missed
  if (!notice || offset <= after) return;
  c.room.history({ limit: HISTORY_LIMIT, reverse: true }).then(
    (page) => {
      if (chat !== c || page.epoch !== epoch) return;
      const missed = page.messages.filter((m) => m.offset > after && m.offset <= offset).reverse();
      let last = notice;
      showEarlier(
        missed.filter((m) => memberKey(m.from) !== me.uid),
        (li) => {
          last.after(li);
          last = li;
        },
      );
      // All of it, when the oldest missed message was still kept (and the epoch is the same).
      if (sameEpoch && missed[0]?.offset === after + 1) {
        notice.querySelector(".system-text").textContent = "Reconnected. The messages you missed are below.";
      }
    },
    (error) => console.warn(`history of #${c.name}:`, error.code, error.message),
  );
}

/** Shows messages of the room's history (oldest first), each element placed by `insert`. */
function showEarlier(messages, insert) {
  const stick = isNearBottom();
  let prev = null;
  for (const { data, from, ts } of messages) {
    const key = memberKey(from);
    const li = messageElement({ key, name: memberName(from), text: messageText(data), ts, mine: key === me.uid }, prev);
    li.classList.add("earlier");
    insert(li);
    prev = li;
  }
  if (stick) scrollToBottom();
}

function endRegroup(c) {
  clearTimeout(c.regroupTimer);
  const missing = c.missing ?? new Set();
  c.missing = null;
  for (const key of missing) {
    const person = c.present.get(key);
    if (person && person.conns.size === 0) {
      c.present.delete(key);
      systemLine(c, `${person.name} left`, "leave");
    }
  }
}

function onPresence(c, { event, member }) {
  const key = memberKey(member);
  if (key !== me.uid) {
    const person = c.present.get(key);
    if (event === "join") {
      if (!person) {
        c.present.set(key, { name: memberName(member), conns: new Set([member.conn]) });
        systemLine(c, `${memberName(member)} joined`, "join");
      } else {
        person.conns.add(member.conn);
        if (c.missing?.delete(key) && c.missing.size === 0) endRegroup(c);
      }
    } else if (event === "leave" && person) {
      person.conns.delete(member.conn);
      if (person.conns.size === 0 && !c.missing?.has(key)) {
        c.present.delete(key);
        systemLine(c, `${person.name} left`, "leave");
      }
    } else if (event === "update" && person) {
      person.name = memberName(member);
    }
  }
  renderTyping(c);
}

function onMessage(c, { data, from, ts }) {
  const key = memberKey(from);
  // My own messages are on the page already, as I sent them: this is the server's copy, in
  // the order I sent them (my page's uid is mine alone). A message the server refused never
  // comes back, so it is skipped.
  if (key === me.uid) {
    const item = c.sending.find((entry) => entry.state !== "refused");
    if (item) return delivered(c, item, ts);
  }
  showMessage(c, { key, name: memberName(from), text: messageText(data), ts, mine: key === me.uid });
}

// ---------------------------------------------------------------------------------------------
// Sending. A message is shown at once, as pending, and published with a key of its own. The
// SDK keeps it while the connection is down and sends it again if its acknowledgement was lost
// (same key: the server delivers it once). It stops being pending when the server's copy comes
// back, or the acknowledgement does. A refused one, or one without an answer in time, says so
// and is sent again, with the same key, when clicked.

function send(c, text) {
  const item = { key: newId(), text, state: "sending", li: null, error: null };
  c.sending.push(item);
  item.li = showMessage(c, { key: me.uid, name: me.name, text, ts: Date.now(), mine: true, pending: true });
  setTyping(c, false);
  publish(c, item);
  renderBanner();
}

function publish(c, item) {
  item.state = "sending";
  c.room.publish({ text: item.text }, { key: item.key }).then(
    () => delivered(c, item, null),
    (error) => {
      if (!c.sending.includes(item) || error.code === "closed") return; // delivered, or the room was left
      // Without an answer in time the server may have it: the same key again finds out.
      item.state = error.code === "timeout" ? "unanswered" : "refused";
      item.error = error.message;
      renderPendingStatus(c);
    },
  );
  renderPendingStatus(c);
}

function delivered(c, item, ts) {
  if (!c.sending.includes(item)) return;
  c.sending = c.sending.filter((entry) => entry !== item);
  item.li.classList.remove("pending", "failed");
  item.li.querySelector(".msg-status")?.remove();
  if (ts !== null) setTime(item.li.querySelector(".msg-time"), ts);
  renderBanner();
}

function renderPendingStatus(c) {
  const online = sb.state === "open" && c.room.state === "joined";
  for (const item of c.sending) {
    const status = item.li.querySelector(".msg-status");
    const failed = item.state !== "sending";
    item.li.classList.toggle("failed", failed);
    if (failed) status.textContent = `Not sent: ${item.error}. Click to retry.`;
    else status.textContent = online ? "sending…" : "pending: sent when you are back online";
  }
}

function retryFailed(c, li) {
  const item = c.sending.find((entry) => entry.li === li && entry.state !== "sending");
  if (item) publish(c, item);
}

// ---------------------------------------------------------------------------------------------
// Rendering.

function span(className, text) {
  const el = document.createElement("span");
  el.className = className;
  el.textContent = text;
  return el;
}

function setTime(time, ts) {
  time.dateTime = new Date(ts).toISOString();
  time.textContent = formatTime(ts);
  time.title = formatDateTime(ts);
}

function avatar(name) {
  const el = span("avatar", initials(name));
  el.style.backgroundColor = colourFor(name);
  el.setAttribute("aria-hidden", "true");
  return el;
}

/** Appends a message; returns its element. */
function showMessage(c, message) {
  const stick = isNearBottom() || message.mine;
  const li = messageElement(message, ui.messages.lastElementChild, c);
  ui.messages.append(li);
  if (stick) scrollToBottom();
  return li;
}

/**
 * A message's element, grouped under the name of `prev` when that is the same person's, just
 * before. `c`: the chat of a pending message (its status retries it when clicked).
 */
function messageElement({ key, name, text, ts, mine, pending }, prev, c) {
  const li = document.createElement("li");
  li.className = "msg";
  if (mine) li.classList.add("mine");
  if (pending) li.classList.add("pending");
  li.dataset.key = key;
  li.dataset.ts = String(ts);
  if (prev?.classList.contains("msg") && prev.dataset.key === key && ts - Number(prev.dataset.ts) < GROUP_MS) {
    li.classList.add("cont");
  }

  const head = document.createElement("div");
  head.className = "msg-head";
  const who = span("msg-name", name);
  who.style.color = colourFor(name);
  const time = document.createElement("time");
  time.className = "msg-time";
  setTime(time, ts);
  head.append(who, time);
  if (pending) {
    const status = span("msg-status", "");
    status.addEventListener("click", () => retryFailed(c, li));
    head.append(status);
  }
  const body = document.createElement("p");
  body.className = "msg-text";
  body.textContent = text; // text, never HTML
  li.append(avatar(name), head, body);
  return li;
}

/** A line about the room itself: joins, leaves, reconnects. Returns its element. */
function systemLine(c, text, kind) {
  if (chat !== c) return null;
  const stick = isNearBottom();
  const li = document.createElement("li");
  li.className = `system system-${kind}`;
  const time = document.createElement("time");
  time.className = "system-time";
  setTime(time, Date.now());
  li.append(span("system-text", text), time);
  ui.messages.append(li);
  if (stick) scrollToBottom();
  return li;
}

function isNearBottom() {
  const m = ui.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
}

function scrollToBottom() {
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

/** The people in the room (one entry per person, however many connections), me first. */
function people(c) {
  const byKey = new Map();
  for (const member of c.room.members) {
    const key = memberKey(member);
    const person = byKey.get(key) ?? { key, name: memberName(member), typing: false, me: key === me.uid };
    person.typing ||= member.presence?.typing === true;
    byKey.set(key, person);
  }
  if (!byKey.has(me.uid)) byKey.set(me.uid, { key: me.uid, name: me.name, typing: false, me: true });
  return [...byKey.values()].sort((a, b) => Number(b.me) - Number(a.me) || a.name.localeCompare(b.name));
}

function renderMembers(c) {
  if (chat !== c) return;
  const list = people(c);
  const online = sb.state === "open" && c.room.state === "joined";
  // A big room's list arrives page by page: until it is all in, the server's count says how
  // many are here (connections, so one person on two devices counts twice).
  const unlisted = Math.max(0, c.room.memberCount - c.room.members.length);
  const count = unlisted > 0 ? c.room.memberCount : list.length;
  ui.memberCount.textContent = String(count);
  ui.toggleMembers.setAttribute("aria-label", `${count} in this room: show members`);
  ui.memberList.classList.toggle("stale", !online);
  const more = [];
  if (unlisted > 0) {
    const li = document.createElement("li");
    li.className = "member member-more";
    li.textContent = `and ${unlisted} more`;
    more.push(li);
  }
  ui.memberList.replaceChildren(
    ...list.map((person) => {
      const li = document.createElement("li");
      li.className = "member";
      li.dataset.key = person.key;
      const name = span("member-name", person.name);
      li.append(avatar(person.name), name);
      if (person.me) li.append(span("member-you", "you"));
      if (person.typing && !person.me && online) li.append(span("member-typing", "typing…"));
      return li;
    }),
    ...more,
  );
  renderTyping(c);
}

function renderTyping(c) {
  if (chat !== c) return;
  const online = sb.state === "open" && c.room.state === "joined";
  const names = online ? people(c).filter((p) => p.typing && !p.me).map((p) => p.name) : [];
  ui.typing.textContent = typingText(names);
  ui.typing.classList.toggle("active", names.length > 0);
}

// ---------------------------------------------------------------------------------------------
// Typing and the message box.

function setTyping(c, on) {
  clearTimeout(c.typingTimer);
  if (on) c.typingTimer = setTimeout(() => setTyping(c, false), TYPING_IDLE_MS);
  if (c.typing === on) return;
  c.typing = on;
  c.room.setPresence(myPresence()).catch(() => {}); // a refusal is also shown through "error"
}

ui.input.addEventListener("input", () => {
  autoGrow();
  if (chat) setTyping(chat, ui.input.value.trim() !== "");
});

ui.input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  }
});

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.input.value.trim();
  if (!chat || text === "") return;
  send(chat, text.slice(0, MAX_MESSAGE_LENGTH));
  ui.input.value = "";
  autoGrow();
  ui.input.focus();
});

function autoGrow() {
  ui.input.style.height = "auto";
  ui.input.style.height = `${Math.min(ui.input.scrollHeight, 160)}px`;
}

// ---------------------------------------------------------------------------------------------
// New room, drawers on narrow screens.

ui.newRoomForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const checked = checkRoomName(ui.newRoom.value);
  ui.newRoomError.textContent = checked.error ?? "";
  ui.newRoom.setAttribute("aria-invalid", String(Boolean(checked.error)));
  if (checked.error) return;
  ui.newRoom.value = "";
  closeDrawers();
  enterRoom(checked.name);
});
ui.newRoom.addEventListener("input", () => {
  ui.newRoomError.textContent = "";
  ui.newRoom.removeAttribute("aria-invalid");
});

ui.toggleRooms.addEventListener("click", () => toggleDrawer("show-rooms"));
ui.toggleMembers.addEventListener("click", () => toggleDrawer("show-members"));
ui.backdrop.addEventListener("click", closeDrawers);
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") closeDrawers();
});

function toggleDrawer(name) {
  const open = !ui.app.classList.contains(name);
  closeDrawers();
  ui.app.classList.toggle(name, open);
  ui.backdrop.hidden = !open;
}

function closeDrawers() {
  ui.app.classList.remove("show-rooms", "show-members");
  ui.backdrop.hidden = true;
}

// ---------------------------------------------------------------------------------------------
// Start: straight into the chat with ?name= and ?room=, else the form.

function startChat(name, room) {
  me.name = name;
  ui.meName.textContent = name;
  ui.meAvatar.textContent = initials(name);
  ui.meAvatar.style.backgroundColor = colourFor(name);
  ui.joinScreen.hidden = true;
  ui.app.hidden = false;
  enterRoom(room);
}

ui.joinForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const name = checkDisplayName(ui.joinName.value);
  const room = checkRoomName(ui.joinRoom.value || "lobby");
  const error = name.error ?? room.error;
  ui.joinError.textContent = error ?? "";
  ui.joinName.setAttribute("aria-invalid", String(Boolean(name.error)));
  ui.joinRoom.setAttribute("aria-invalid", String(Boolean(room.error)));
  if (error) {
    (name.error ? ui.joinName : ui.joinRoom).focus();
    return;
  }
  startChat(name.name, room.name);
});

const params = new URLSearchParams(location.search);
if (AUTH) {
  // The logged-in person's name; the form asks only for a room.
  const session = await authRequest("me");
  params.set("name", session.name);
  ui.joinName.readOnly = true;
  ui.changeName.textContent = "Account";
  ui.changeName.href = meta("switchboard-login") ?? "/";
}
const givenName = params.has("name") ? checkDisplayName(params.get("name")) : null;
const givenRoom = params.has("room") ? checkRoomName(params.get("room")) : null;
if (givenName?.name && givenRoom?.name) {
  startChat(givenName.name, givenRoom.name);
} else {
  ui.joinName.value = givenName?.name ?? params.get("name") ?? "";
  ui.joinRoom.value = givenRoom?.name ?? params.get("room") ?? "lobby";
  ui.joinError.textContent = givenName?.error ?? givenRoom?.error ?? "";
  ui.joinScreen.hidden = false;
  (givenName?.name ? ui.joinRoom : ui.joinName).focus();
  renderRoomLists();
}
renderBanner();
