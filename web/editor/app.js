// Switchboard editor: a collaborative rich-text editor (ProseMirror + Yjs) on the server's
// y-websocket endpoint, GET /yjs/{doc}.
//
//   /editor/?name=ada&doc=notes   opens document "notes" (doc:notes on the wire) as "ada";
//   /editor/?name=ada             opens the most recently edited document;
//   without a name, a form asks for it.
//
// Shared state, all of it Yjs documents stored by the server:
//   doc:<name>     the text (Y.XmlFragment "prosemirror"), its activity log and open sessions
//                  (activity.js)
//   editor:index   the list of documents: Y.Map "docs" of name → { title, created, updated, by };
//                  its awareness says who has which document open
// Awareness (not stored) carries each page's { user: { name, color, sid } } and its cursor.
//
// Nothing typed is lost: edits apply to the local Y.Doc at once, are kept in IndexedDB
// (y-indexeddb) and sent whenever there is a connection; Yjs merges everyone's edits.
// Everything a person typed (names, titles, links) reaches the page as text, never as HTML.

import * as Y from "yjs";
import { WebsocketProvider } from "y-websocket";
import { IndexeddbPersistence } from "y-indexeddb";
import * as activity from "./activity.js";
import { TOOLBAR, createEditor, cursorToEnd, linkAt, normaliseHref, setLink, writeTitle } from "./prosemirror.js";
import {
  DOC_PREFIX,
  INDEX_DOC,
  checkDisplayName,
  checkDocName,
  checkTitle,
  colourFor,
  docNameFor,
  formatAgo,
  formatDateTime,
  formatWhen,
  initials,
  isColour,
  isDocName,
  newId,
} from "./util.js";

// Auth mode: a backend serves this page with meta tags (examples/backend):
//   <meta name="switchboard-auth" content="/auth">         the backend's token endpoints
//   <meta name="switchboard-yjs-url" content="ws://…/yjs">  the server's document endpoint (or
//   <meta name="switchboard-url" content="ws://…/ws">       derived from the socket URL)
//   <meta name="switchboard-login" content="/">            where to log in
// Then the name is the logged-in person's, and every document connection carries a token
// from POST {auth}/editor-token on its URL (?token=, y-websocket's `params`). Without the meta
// tags: the open demo, as before.
const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.getAttribute("content") || null;
const AUTH = meta("switchboard-auth");
const YJS_URL = yjsUrl();

function yjsUrl() {
  const given = meta("switchboard-yjs-url");
  if (given) return given.replace(/\/+$/, "");
  const sb = meta("switchboard-url");
  if (sb) {
    const url = new URL(sb, location.href);
    return `${url.protocol}//${url.host}/yjs`;
  }
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/yjs`;
}
const DEFAULT_DOC = "welcome";
// How often a page's own edits bump the document's "updated" time in the index.
const INDEX_TOUCH_MS = 30_000;
// Sessions housekeeping (activity.js) and the "Saving…" indicator.
const TICK_MS = 2_000;
// Without the server, the document is shown from this device's copy after this long.
const OFFLINE_OPEN_MS = 4_000;
// The most activity entries shown (the document keeps activity.MAX_ENTRIES).
const ACTIVITY_SHOWN = 200;

const $ = (id) => document.getElementById(id);
const ui = {
  joinScreen: $("join-screen"),
  joinForm: $("join-form"),
  joinName: $("join-name"),
  joinError: $("join-error"),
  joinDocList: $("join-doc-list"),
  joinDocsEmpty: $("join-docs-empty"),
  app: $("app"),
  docList: $("doc-list"),
  newDocForm: $("new-doc-form"),
  newDoc: $("new-doc"),
  newDocError: $("new-doc-error"),
  meAvatar: $("me-avatar"),
  meName: $("me-name"),
  changeName: $("change-name"),
  toggleDocs: $("toggle-docs"),
  togglePeople: $("toggle-people"),
  docTitle: $("doc-title"),
  docMeta: $("doc-meta"),
  status: $("status"),
  statusText: $("status-text"),
  avatarStack: $("avatar-stack"),
  peopleCount: $("people-count"),
  banner: $("banner"),
  bannerText: $("banner-text"),
  toolbar: $("toolbar"),
  linkForm: $("link-form"),
  linkInput: $("link-input"),
  linkRemove: $("link-remove"),
  linkCancel: $("link-cancel"),
  linkError: $("link-error"),
  scroller: $("scroller"),
  doc: $("doc"),
  docLoading: $("doc-loading"),
  peopleList: $("people-list"),
  activityList: $("activity-list"),
  activityEmpty: $("activity-empty"),
  backdrop: $("backdrop"),
};

/** Who I am: set once the name is known. */
const me = { name: null, color: null };

/** The open document (see openDoc), or null. */
let session = null;

// ---------------------------------------------------------------------------------------------
// The list of documents: a shared index document, so "new document" shows up for everyone.

// ---------------------------------------------------------------------------------------------
// Tokens (auth mode). One token for every document connection, refreshed ahead of expiry and
// put in each provider's `params`: y-websocket builds its URL from them on every (re)connect,
// so a reconnection after the old token expired uses the fresh one.

const auth = { token: null, expiresAt: 0, pending: null, timer: null };

/** POSTs to the backend's auth endpoint `path`. Not logged in (401): off to the login page. */
async function authRequest(path) {
  const response = await fetch(`${AUTH}/${path}`, {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json" },
    body: "{}",
  });
  const reply = await response.json().catch(() => null);
  if (response.status === 401) {
    const login = new URL(meta("switchboard-login") ?? "/", location.href);
    login.searchParams.set("next", location.pathname + location.search);
    location.assign(login.href);
    return new Promise(() => {}); // the page is going away
  }
  if (!response.ok || reply === null) throw new Error(reply?.message ?? `${path}: HTTP ${response.status}`);
  return reply;
}

/** The providers that connect with the token: the index's and the open document's. */
function providers() {
  return [index.provider, session?.provider].filter(Boolean);
}

function applyToken(provider) {
  if (AUTH && auth.token) provider.params = { ...provider.params, token: auth.token };
}

/** Fetches a new token (once at a time), gives it to every provider, schedules the next. */
function refreshToken() {
  if (!AUTH) return Promise.resolve();
  auth.pending ??= (async () => {
    clearTimeout(auth.timer);
    try {
      const { token, expires_at: expiresAt } = await authRequest("editor-token");
      auth.token = token;
      auth.expiresAt = Number(expiresAt) * 1000 || Date.now() + 60_000;
      for (const provider of providers()) applyToken(provider);
      const left = auth.expiresAt - Date.now();
      // As the SDK: at 80 % of the lifetime or 30 s before expiry, whichever is earlier, but
      // never before half of it.
      auth.timer = setTimeout(refreshToken, Math.max(1_000, left / 2, Math.min(left * 0.8, left - 30_000)));
    } catch (error) {
      console.warn("editor: could not get a token", error);
      auth.timer = setTimeout(refreshToken, 5_000);
    } finally {
      auth.pending = null;
    }
  })();
  return auth.pending;
}

/** A closed connection in auth mode: if the token is (nearly) expired, get a fresh one first. */
function onConnectionClose() {
  if (AUTH && auth.expiresAt - Date.now() < 10_000) refreshToken();
}

function providerOptions(options = {}) {
  return AUTH ? { ...options, params: { token: auth.token ?? "" } } : options;
}

const index = { ydoc: new Y.Doc(), provider: null, synced: false, waiters: [] };
index.docs = index.ydoc.getMap("docs");

function startIndex() {
  index.provider = new WebsocketProvider(YJS_URL, INDEX_DOC, index.ydoc, providerOptions());
  index.provider.on("connection-close", onConnectionClose);
  index.provider.on("sync", (synced) => {
    if (!synced) return;
    index.synced = true;
    for (const resolve of index.waiters.splice(0)) resolve();
    if (session) ensureIndexed(session.name);
    renderDocLists();
  });
  index.docs.observe(() => {
    renderDocLists();
    if (session) renderTitle(session);
  });
  index.provider.awareness.on("change", renderDocLists);
  index.provider.on("status", ({ status }) => {
    if (status === "connected") renewAwareness(index.provider.awareness);
  });
}

/** Resolves once the index has synced, or after `ms` (whichever is first). */
function indexReady(ms) {
  if (index.synced) return Promise.resolve();
  return new Promise((resolve) => {
    index.waiters.push(resolve);
    setTimeout(resolve, ms);
  });
}

function docMeta(name) {
  const meta = index.docs.get(name);
  return meta !== null && typeof meta === "object" ? meta : null;
}

/** "meeting-notes" → "Meeting notes": the title of a document nobody gave one. */
function titleFromName(name) {
  const words = name.replace(/[-_.]+/g, " ").trim();
  return words === "" ? name : words[0].toUpperCase() + words.slice(1);
}

function titleOf(name) {
  const title = docMeta(name)?.title;
  return typeof title === "string" && title.trim() !== "" ? title.trim().slice(0, 80) : titleFromName(name);
}

/** Adds a document opened by its name (a link) to the index, once the index is known. */
function ensureIndexed(name) {
  if (!index.synced || index.docs.has(name)) return;
  const now = Date.now();
  index.docs.set(name, { title: titleFromName(name), created: now, updated: now, by: me.name });
}

/** Records that the document changed, at most every INDEX_TOUCH_MS per page. */
function touchIndex(s) {
  const now = Date.now();
  if (!index.synced || now - s.lastTouch < INDEX_TOUCH_MS) return;
  s.lastTouch = now;
  const meta = docMeta(s.name) ?? { title: titleFromName(s.name), created: now, by: me.name };
  index.docs.set(s.name, { ...meta, updated: now });
}

/** [{ name, title, updated, people: [{ name, color }] }], most recently edited first. */
function documents() {
  const people = new Map();
  for (const state of index.provider?.awareness.getStates().values() ?? []) {
    const doc = state?.doc;
    const user = state?.user;
    if (!isDocName(doc) || typeof user?.name !== "string") continue;
    if (!people.has(doc)) people.set(doc, new Map());
    people.get(doc).set(user.name, isColour(user.color) ? user.color : colourFor(user.name));
  }
  const names = new Set([...index.docs.keys()].filter(isDocName));
  if (session) names.add(session.name);
  return [...names]
    .map((name) => ({
      name,
      title: titleOf(name),
      updated: Number(docMeta(name)?.updated) || 0,
      people: [...(people.get(name) ?? new Map())].map(([n, color]) => ({ name: n, color })),
    }))
    .sort((a, b) => b.updated - a.updated || a.title.localeCompare(b.title));
}

function renderDocLists() {
  const docs = documents();
  fillDocList(ui.docList, docs, (name) => {
    closeDrawers();
    openDoc(name);
  });
  fillDocList(ui.joinDocList, docs, (name) => {
    pendingDoc = name;
    if (checkDisplayName(ui.joinName.value).error) {
      ui.joinError.textContent = `Enter your name to open “${titleOf(name)}”.`;
      ui.joinName.focus();
      renderDocLists();
    } else ui.joinForm.requestSubmit();
  });
  ui.joinDocsEmpty.hidden = docs.length > 0;
}

function fillDocList(list, docs, choose) {
  const current = session?.name ?? (list === ui.joinDocList ? pendingDoc : null);
  const key = JSON.stringify([current, docs.map((d) => [d.name, d.title, formatAgo(d.updated), d.people])]);
  if (list.dataset.key === key) return; // unchanged: keep the elements (and a click in progress)
  list.dataset.key = key;
  list.replaceChildren(
    ...docs.map(({ name, title, updated, people }) => {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "doc-item";
      button.dataset.doc = name;
      if (name === current) {
        button.classList.add("current");
        button.setAttribute("aria-current", "true");
      }
      const text = span("doc-item-text", "");
      text.append(span("doc-item-title", title), span("doc-item-meta", updated ? `edited ${formatAgo(updated)}` : "new"));
      button.append(docIcon(), text);
      if (people.length > 0) {
        const stack = span("avatar-stack small-stack", "");
        for (const person of people.slice(0, 3)) stack.append(avatar(person.name, person.color));
        stack.title = people.map((p) => p.name).join(", ");
        button.append(stack);
      }
      button.addEventListener("click", () => choose(name));
      li.append(button);
      return li;
    }),
  );
}

// ---------------------------------------------------------------------------------------------
// The open document.

function openDoc(name, { create = null } = {}) {
  if (session?.name === name) return;
  if (session) closeDoc(session);
  const ydoc = new Y.Doc();
  const s = {
    name,
    ydoc,
    sid: newId(),
    fragment: ydoc.getXmlFragment("prosemirror"),
    create, // the title, when this page just created the document
    joined: false,
    everConnected: false,
    synced: false,
    view: null,
    watch: new activity.Watch(),
    timedOut: new Set(),
    lastTouch: 0,
    offlineEdits: 0,
    backTimer: null,
    sendingTimer: null,
    saving: false,
    timers: [],
  };
  session = s;
  s.idb = new IndexeddbPersistence(`switchboard-editor/${DOC_PREFIX}${name}`, ydoc);
  s.provider = new WebsocketProvider(YJS_URL, DOC_PREFIX + name, ydoc, providerOptions({ maxBackoffTime: 2_500 }));
  s.provider.on("connection-close", onConnectionClose);
  s.awareness = s.provider.awareness;
  s.awareness.setLocalStateField("user", { name: me.name, color: me.color, sid: s.sid });
  index.provider?.awareness.setLocalState({ user: { name: me.name, color: me.color }, doc: name });

  const current = (fn) => (...args) => session === s && fn(...args);
  s.provider.on("status", current(({ status }) => {
    if (status === "connected") {
      s.everConnected = true;
      renewAwareness(s.awareness);
    }
    if (status !== "connected") {
      s.synced = false;
      s.watch.pause(); // we cannot see who is there any more
    }
    renderStatus(s);
  }));
  s.provider.on("sync", current((synced) => onSync(s, synced)));
  s.idb.on("synced", current(() => {
    // This device's copy is loaded. Show it right away if it has something (the server's
    // answer only adds to it); an empty one waits for the server, or OFFLINE_OPEN_MS.
    if (s.fragment.length > 0) ensureView(s);
  }));
  s.timers.push(setTimeout(current(() => ensureView(s)), OFFLINE_OPEN_MS));
  s.timers.push(setInterval(current(() => tick(s)), TICK_MS));

  s.fragment.observeDeep(current((_events, transaction) => {
    if (!transaction.local) return;
    // An edit made here: count it while offline, bump the document's time in the index.
    if (!s.provider.wsconnected || !s.synced) s.offlineEdits++;
    touchIndex(s);
    renderStatus(s);
    watchSending(s);
  }));
  activity.activityOf(ydoc).observe(current(() => renderActivity(s)));
  s.awareness.on("change", current(({ added, updated, removed }, origin) => {
    for (const client of removed) if (origin === "timeout") s.timedOut.add(client);
    for (const client of [...added, ...updated]) s.timedOut.delete(client);
    renderPeople(s);
  }));

  ui.doc.setAttribute("aria-busy", "true");
  ui.doc.replaceChildren(ui.docLoading);
  ui.docLoading.hidden = false;
  closeLinkForm(false);
  const url = new URL(location.href);
  url.searchParams.set("name", me.name);
  url.searchParams.set("doc", name);
  history.replaceState(null, "", url);
  const changeUrl = new URL("./", location.href);
  changeUrl.searchParams.set("doc", name);
  if (!AUTH) ui.changeName.href = changeUrl.pathname + changeUrl.search;
  document.body.dataset.synced = "false";
  renderTitle(s);
  renderDocLists();
  renderPeople(s);
  renderActivity(s);
  renderToolbar(null);
  renderStatus(s);
}

/**
 * Sends my awareness state again with a new clock, on every (re)connection. Without this, the
 * others would ignore it after a reconnect for up to 15 s (until its next renewal): when a
 * connection drops, y-websocket removes the remote states locally but keeps their clocks, and
 * y-protocols drops a state whose clock it has already seen. Meanwhile, my avatar and cursor
 * would be gone from their pages, and I would count as missing (activity.js).
 */
function renewAwareness(awareness) {
  const state = awareness.getLocalState();
  if (state !== null) awareness.setLocalState({ ...state });
}

function onSync(s, synced) {
  s.synced = synced;
  if (synced) {
    s.watch.reset();
    const fresh = s.create !== null && s.fragment.length === 0 && activity.activityOf(s.ydoc).length === 0;
    if (fresh) {
      s.ydoc.transact(() => {
        activity.create(s.ydoc, { sid: s.sid, name: me.name, color: me.color });
        writeTitle(s.fragment, s.create);
      });
    }
    s.create = null;
    ensureView(s);
    if (fresh) cursorToEnd(s.view); // below the title, ready to write
    if (!s.joined) {
      s.joined = true;
      activity.join(s.ydoc, { sid: s.sid, name: me.name, color: me.color, client: s.ydoc.clientID });
    } else if (!activity.isOpen(s.ydoc, s.sid)) {
      rejoin(s);
    }
    ensureIndexed(s.name);
    s.offlineEdits = 0; // our answer to the server's sync step 1 carried them
    document.body.dataset.synced = "true";
  } else {
    s.watch.pause();
    document.body.dataset.synced = "false";
  }
  renderStatus(s);
}

/** My session was written as left while I was away (longer than the grace time): join again. */
function rejoin(s) {
  s.ydoc.transact(() => {
    activity.sessionsOf(s.ydoc).delete(s.sid);
    s.sid = newId();
    activity.join(s.ydoc, { sid: s.sid, name: me.name, color: me.color, client: s.ydoc.clientID });
  });
  s.awareness.setLocalStateField("user", { name: me.name, color: me.color, sid: s.sid });
}

/**
 * "Saving…" while what we sent is still in the socket's buffer 200 ms after an edit (a slow
 * network), "Saved" once it has gone out. (Not on every keystroke: that would flicker.)
 */
function watchSending(s) {
  if (s.sendingTimer) return;
  s.sendingTimer = setTimeout(() => {
    s.sendingTimer = null;
    if (session !== s) return;
    s.saving = (s.provider.ws?.bufferedAmount ?? 0) > 0;
    renderStatus(s);
    if (s.saving) watchSending(s);
  }, 200);
}

function tick(s) {
  if (s.provider.wsconnected && s.synced) {
    if (s.joined && !activity.isOpen(s.ydoc, s.sid)) rejoin(s);
    activity.heartbeat(s.ydoc, s.sid);
    activity.sweep(s.ydoc, s.awareness, s.watch, { timedOut: s.timedOut });
  }
  renderStatus(s);
  renderTitle(s);
}

/** Writes my leave (while the socket is still open) and clears my awareness state. */
function leaveDoc(s) {
  if (s.joined) activity.leave(s.ydoc, s.sid);
  s.joined = false;
  s.awareness.setLocalState(null);
}

function closeDoc(s) {
  for (const timer of s.timers) clearTimeout(timer);
  clearTimeout(s.backTimer);
  clearTimeout(s.sendingTimer);
  // The editor first: its plugins stop listening to awareness, which leaveDoc changes.
  s.view?.destroy();
  s.view = null;
  leaveDoc(s);
  s.provider.destroy();
  s.idb.destroy();
  s.ydoc.destroy();
  if (session === s) session = null;
}

function ensureView(s) {
  if (s.view || session !== s) return;
  ui.docLoading.hidden = true;
  ui.doc.replaceChildren();
  s.view = createEditor({
    mount: ui.doc,
    fragment: s.fragment,
    awareness: s.awareness,
    label: titleOf(s.name),
    placeholder: "Start writing…",
    onState: (state) => session === s && renderToolbar(state),
    onLink: () => openLinkForm(),
  });
  ui.doc.setAttribute("aria-busy", "false");
  if (!matchMedia("(max-width: 759px)").matches) s.view.focus();
}

// ---------------------------------------------------------------------------------------------
// Connection indicator: "Connecting…", "Saved", "Saving…", "Offline".

function renderStatus(s) {
  if (session !== s) return;
  const connected = s.provider.wsconnected;
  let state;
  let text;
  let title;
  if (connected && s.synced) {
    state = "connected";
    text = s.saving ? "Saving…" : "Saved";
    title = "Connected. Every change is stored on the server as it is made.";
  } else if (connected) {
    state = "connecting";
    text = "Syncing…";
    title = "Connected, catching up with the others' changes.";
  } else if (!s.everConnected) {
    state = "connecting";
    text = "Connecting…";
    title = "Connecting to the server.";
  } else {
    state = "offline";
    text = "Offline";
    title = "No connection. Your changes are kept on this device and sent when you are back.";
  }
  document.body.dataset.connection = state;
  ui.status.dataset.state = state;
  ui.statusText.textContent = text;
  ui.status.title = title;

  // The banner: while offline, and "Back online" for a moment after.
  if (state === "offline") {
    clearTimeout(s.backTimer);
    s.backTimer = null;
    s.wasOffline = true;
    ui.banner.hidden = false;
    ui.banner.dataset.kind = "warn";
    ui.bannerText.textContent =
      s.offlineEdits > 0
        ? "Connection lost. Reconnecting… Your edits are kept on this device and sent when you are back."
        : "Connection lost. Reconnecting… You can keep writing: your edits will be sent when you are back.";
  } else if (state === "connected" && s.wasOffline) {
    s.wasOffline = false;
    ui.banner.hidden = false;
    ui.banner.dataset.kind = "ok";
    ui.bannerText.textContent = "Back online. Everything is saved.";
    s.backTimer = setTimeout(() => {
      if (session === s && !s.wasOffline) ui.banner.hidden = true;
    }, 2_500);
  } else if (state === "connected" && !s.backTimer) {
    ui.banner.hidden = true;
  }
}

// ---------------------------------------------------------------------------------------------
// People: avatars of everyone with the document open, from awareness.

/** One entry per name (a person with two tabs shows once), me first. */
function people(s) {
  const byName = new Map();
  for (const [client, state] of s.awareness.getStates()) {
    const user = state?.user;
    if (typeof user?.name !== "string" || user.name.trim() === "") continue;
    const name = user.name.trim().slice(0, 32);
    const mine = client === s.ydoc.clientID;
    const person = byName.get(name) ?? { name, color: isColour(user.color) ? user.color : colourFor(name), me: false, tabs: 0 };
    person.me ||= mine;
    person.tabs++;
    byName.set(name, person);
  }
  return [...byName.values()].sort((a, b) => Number(b.me) - Number(a.me) || a.name.localeCompare(b.name));
}

function renderPeople(s) {
  if (session !== s) return;
  const list = people(s);
  // Awareness changes with every cursor move: rebuild only when what is shown changes (a
  // click on an avatar that is replaced between mousedown and mouseup is lost).
  const key = JSON.stringify(list);
  if (ui.peopleList.dataset.key === key) return;
  ui.peopleList.dataset.key = key;
  ui.peopleList.replaceChildren(
    ...list.map((person) => {
      const li = document.createElement("li");
      li.className = "person";
      li.append(avatar(person.name, person.color), span("person-name", person.name));
      if (person.me) li.append(span("person-you", "you"));
      else if (person.tabs > 1) li.append(span("person-tabs muted small", `${person.tabs} tabs`));
      return li;
    }),
  );
  const shown = list.slice(0, 4);
  ui.avatarStack.replaceChildren(...shown.map((person) => {
    const el = avatar(person.name, person.color);
    el.title = person.me ? `${person.name} (you)` : person.name;
    return el;
  }));
  const others = list.length - shown.length;
  ui.peopleCount.textContent = others > 0 ? `+${others}` : "";
  ui.togglePeople.setAttribute("aria-label", `${list.length} editing: show people and activity`);
  ui.togglePeople.title = list.map((p) => p.name).join(", ");
}

// ---------------------------------------------------------------------------------------------
// The activity log (activity.js), newest first.

function renderActivity(s) {
  if (session !== s) return;
  const shown = activity.entries(s.ydoc).reverse().slice(0, ACTIVITY_SHOWN);
  ui.activityEmpty.hidden = shown.length > 0 || !s.synced;
  ui.activityList.replaceChildren(
    ...shown.map((entry) => {
      const li = document.createElement("li");
      li.className = `activity activity-${entry.event}`;
      const dot = span("activity-dot", "");
      dot.style.backgroundColor = isColour(entry.color) ? entry.color : colourFor(entry.name);
      const text = span("activity-text", "");
      const who = span("activity-name", entry.name);
      text.append(who, ` ${activity.TEXT[entry.event]}`);
      const time = document.createElement("time");
      time.className = "activity-time";
      time.dateTime = new Date(entry.ts).toISOString();
      time.textContent = formatWhen(entry.ts);
      time.title = formatDateTime(entry.ts);
      li.append(dot, text, time);
      return li;
    }),
  );
}

// ---------------------------------------------------------------------------------------------
// Title, toolbar and the link box.

function renderTitle(s) {
  if (session !== s) return;
  const title = titleOf(s.name);
  ui.docTitle.textContent = title;
  document.title = `${title} · Switchboard editor`;
  const meta = docMeta(s.name);
  const updated = Number(meta?.updated);
  ui.docMeta.textContent = Number.isFinite(updated) && updated > 0 ? `Edited ${formatAgo(updated)}` : "";
  ui.docMeta.title = Number.isFinite(updated) && updated > 0 ? formatDateTime(updated) : "";
}

const toolButtons = new Map([...ui.toolbar.querySelectorAll("[data-command]")].map((b) => [b.dataset.command, b]));

function renderToolbar(state) {
  for (const item of TOOLBAR) {
    const button = toolButtons.get(item.id);
    if (!button) continue;
    const active = state !== null && Boolean(item.active?.(state));
    button.classList.toggle("active", active);
    if (item.active) button.setAttribute("aria-pressed", String(active));
    button.disabled = state === null || (!active && item.run !== null && !item.run(state));
  }
}

ui.toolbar.addEventListener("mousedown", (event) => {
  if (event.target.closest("[data-command]")) event.preventDefault(); // keep the editor's selection
});
ui.toolbar.addEventListener("click", (event) => {
  const button = event.target.closest("[data-command]");
  const view = session?.view;
  if (!button || !view) return;
  const item = TOOLBAR.find((t) => t.id === button.dataset.command);
  if (item?.id === "link") return openLinkForm();
  item?.run?.(view.state, view.dispatch);
  view.focus();
});

function openLinkForm() {
  const view = session?.view;
  if (!view) return;
  const around = linkAt(view.state);
  ui.linkInput.value = around?.href ?? "";
  ui.linkRemove.hidden = !around;
  ui.linkError.textContent = "";
  ui.linkForm.hidden = false;
  toolButtons.get("link")?.setAttribute("aria-expanded", "true");
  ui.linkInput.focus();
  ui.linkInput.select();
}

function closeLinkForm(focus = true) {
  ui.linkForm.hidden = true;
  toolButtons.get("link")?.setAttribute("aria-expanded", "false");
  if (focus) session?.view?.focus();
}

ui.linkForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const view = session?.view;
  if (!view) return;
  const href = normaliseHref(ui.linkInput.value);
  if (!href) {
    ui.linkError.textContent = "Enter a web address (https://…) or an email address.";
    return;
  }
  closeLinkForm(false);
  setLink(view, href);
});
ui.linkRemove.addEventListener("click", () => {
  closeLinkForm(false);
  if (session?.view) setLink(session.view, null);
});
ui.linkCancel.addEventListener("click", () => closeLinkForm());
ui.linkForm.addEventListener("keydown", (event) => {
  if (event.key === "Escape") {
    event.stopPropagation();
    closeLinkForm();
  }
});

// ---------------------------------------------------------------------------------------------
// Small DOM helpers.

function span(className, text) {
  const el = document.createElement("span");
  el.className = className;
  el.textContent = text;
  return el;
}

function avatar(name, color) {
  const el = span("avatar", initials(name));
  el.style.backgroundColor = isColour(color) ? color : colourFor(name);
  el.setAttribute("aria-hidden", "true");
  return el;
}

function docIcon() {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.classList.add("doc-icon");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", "M7 3h7l5 5v12a1 1 0 0 1-1 1H7a1 1 0 0 1-1-1V4a1 1 0 0 1 1-1zM14 3v5h5M9 13h6M9 17h4");
  svg.append(path);
  return svg;
}

// ---------------------------------------------------------------------------------------------
// New document, drawers on narrow screens.

ui.newDocForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const checked = checkTitle(ui.newDoc.value);
  let error = checked.error;
  if (!error && !index.synced) error = "The list of documents is still loading: try again in a moment.";
  ui.newDocError.textContent = error ?? "";
  ui.newDoc.setAttribute("aria-invalid", String(Boolean(error)));
  if (error) return;
  const name = docNameFor(checked.title, index.docs);
  const now = Date.now();
  index.docs.set(name, { title: checked.title, created: now, updated: now, by: me.name });
  ui.newDoc.value = "";
  closeDrawers();
  openDoc(name, { create: checked.title });
});
ui.newDoc.addEventListener("input", () => {
  ui.newDocError.textContent = "";
  ui.newDoc.removeAttribute("aria-invalid");
});

ui.toggleDocs.addEventListener("click", () => toggleDrawer("show-docs"));
ui.togglePeople.addEventListener("click", () => toggleDrawer("show-people"));
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
  ui.app.classList.remove("show-docs", "show-people");
  ui.backdrop.hidden = true;
}

// ---------------------------------------------------------------------------------------------
// Leaving: say so in the activity log while the connection is still open. A page the browser
// keeps for "back" (bfcache) starts afresh when shown again.

addEventListener("pagehide", () => {
  if (session) leaveDoc(session);
  index.provider?.awareness.setLocalState(null); // gone from the document list's avatars too
});
addEventListener("pageshow", (event) => {
  if (event.persisted) location.reload();
});
addEventListener("beforeunload", (event) => {
  // Changes made offline are kept on this device (IndexedDB), but only here: say so.
  if (session && session.offlineEdits > 0 && !session.provider.wsconnected) {
    event.preventDefault();
    event.returnValue = "";
  }
});

// ---------------------------------------------------------------------------------------------
// Start: straight into a document with ?name= (and ?doc=), else the form.

let pendingDoc = null;

async function start(name, doc) {
  me.name = name;
  me.color = colourFor(name);
  ui.meName.textContent = name;
  ui.meAvatar.textContent = initials(name);
  ui.meAvatar.style.backgroundColor = me.color;
  ui.joinScreen.hidden = true;
  ui.app.hidden = false;
  if (!doc) {
    // The most recently edited document, or a first one.
    await indexReady(3_000);
    doc = documents()[0]?.name ?? DEFAULT_DOC;
  }
  openDoc(doc);
}

ui.joinForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const name = checkDisplayName(ui.joinName.value);
  ui.joinError.textContent = name.error ?? "";
  ui.joinName.setAttribute("aria-invalid", String(Boolean(name.error)));
  if (name.error) {
    ui.joinName.focus();
    return;
  }
  start(name.name, pendingDoc);
});
ui.joinName.addEventListener("input", () => {
  ui.joinError.textContent = "";
  ui.joinName.removeAttribute("aria-invalid");
});

const params = new URLSearchParams(location.search);
if (AUTH) {
  // The logged-in person's name, and a token before any connection.
  const [account] = await Promise.all([authRequest("me"), refreshToken()]);
  params.set("name", account.name);
  ui.joinName.readOnly = true;
  ui.changeName.textContent = "Account";
  ui.changeName.href = meta("switchboard-login") ?? "/";
}
const givenName = params.has("name") ? checkDisplayName(params.get("name")) : null;
const givenDoc = params.has("doc") ? checkDocName(params.get("doc")) : null;
pendingDoc = givenDoc?.name ?? null;
startIndex();
if (givenName?.name && !givenDoc?.error) {
  start(givenName.name, pendingDoc);
} else {
  ui.joinName.value = givenName?.name ?? params.get("name") ?? "";
  ui.joinError.textContent = givenName?.error ?? (givenDoc?.error ? `That document link is not valid. ${givenDoc.error}` : "");
  ui.joinScreen.hidden = false;
  ui.joinName.focus();
  renderDocLists();
}
setInterval(renderDocLists, 60_000); // "edited 5 min ago"

// For tests and the curious: the live objects.
window.__editor = { index, auth, get session() { return session; } };
