// The activity log of a document ("ada joined to edit the document", "ada left the document"),
// kept IN the document, so that everyone sees the same log, people who come later too, and it
// is stored and survives restarts with the text.
//
// Two shared types of the Y.Doc:
//   activity  Y.Array of { ts, name, color, event: "create" | "join" | "leave", sid }
//   sessions  Y.Map of sid → { name, color, client, joined, seen }: the editing sessions that
//             have joined and not (yet) left
//
// A session is one page having the document open (sid: random, new per page load). It joins
// once, when the page first syncs with the server: a reconnect is not a new join.
//
// Leaving is written in one of two ways:
//   1. by the page itself on pagehide (closing the tab, navigating away, switching document):
//      `leave()`; its update goes out on the open WebSocket right away;
//   2. by the others, for a page that went without saying so (crash, killed browser, lost
//      network, laptop lid): every connected page runs `sweep()` every few seconds; a session
//      whose page is missing from the awareness states (the server removes them when its
//      connection ends) for GRACE_MS is written as left — by ONE page only: the present page
//      with the lowest Yjs client id. Its time is when it went missing (for a session that
//      was already gone when this page connected: just before that), or at most
//      HEARTBEAT_MS after the session was last seen (`seen`, renewed every HEARTBEAT_MS
//      while the page is connected), so a session found stale much later is not dated "now".
//
// No duplicates: `leave` and `sweep` write a leave only for a session still in `sessions`, and
// delete it in the same transaction, so once any leave is in, nobody writes another. Two pages
// that both write one at the same moment (they each believed they were the lowest client id)
// could still both get in: `entries()` shows only the first join and the first leave of each
// sid. A page that finds its own session closed by others (it was away longer than GRACE_MS)
// starts a new one, with a new sid, and joins again: "ada joined to edit the document".

export const GRACE_MS = 10_000;
// For a page whose awareness state timed out here (it stopped renewing it, every 15 s, without
// its connection ending: a background tab whose timers the browser slows down to once a minute,
// or a network that went silent) rather than being removed by the server (its connection
// ended): such a page may well be back, so wait longer.
export const LONG_GRACE_MS = 180_000;
export const HEARTBEAT_MS = 60_000;
export const MAX_ENTRIES = 500;

export const TEXT = {
  create: "created the document",
  join: "joined to edit the document",
  leave: "left the document",
};

export function activityOf(ydoc) {
  return ydoc.getArray("activity");
}

export function sessionsOf(ydoc) {
  return ydoc.getMap("sessions");
}

function cleanName(value) {
  return typeof value === "string" && value.trim() !== "" ? value.trim().slice(0, 32) : "someone";
}

/** The log as shown: well-formed entries, each sid's first join and first leave, in time order. */
export function entries(ydoc) {
  const seen = new Set();
  const out = [];
  activityOf(ydoc).forEach((entry, index) => {
    if (entry === null || typeof entry !== "object" || !(entry.event in TEXT)) return;
    const ts = Number(entry.ts);
    if (!Number.isFinite(ts)) return;
    if (typeof entry.sid === "string") {
      const key = `${entry.event}:${entry.sid}`;
      if (seen.has(key)) return;
      seen.add(key);
    }
    out.push({ ts, name: cleanName(entry.name), color: entry.color, event: entry.event, sid: entry.sid, index });
  });
  return out.sort((a, b) => a.ts - b.ts || a.index - b.index);
}

function trim(ydoc) {
  const activity = activityOf(ydoc);
  if (activity.length > MAX_ENTRIES + 50) activity.delete(0, activity.length - MAX_ENTRIES);
}

/** Writes "created the document". */
export function create(ydoc, { sid, name, color }, now = Date.now()) {
  activityOf(ydoc).push([{ ts: now, name, color, event: "create", sid }]);
}

/** Opens the session `sid` and writes "joined to edit the document". */
export function join(ydoc, { sid, name, color, client }, now = Date.now()) {
  ydoc.transact(() => {
    sessionsOf(ydoc).set(sid, { name, color, client, joined: now, seen: now });
    activityOf(ydoc).push([{ ts: now, name, color, event: "join", sid }]);
    trim(ydoc);
  });
}

/** Closes the session `sid` (if still open) and writes "left the document". */
export function leave(ydoc, sid, ts = Date.now()) {
  const sessions = sessionsOf(ydoc);
  const session = sessions.get(sid);
  if (!session) return false;
  ydoc.transact(() => {
    sessions.delete(sid);
    activityOf(ydoc).push([{ ts, name: cleanName(session.name), color: session.color, event: "leave", sid }]);
  });
  return true;
}

/** Whether the session `sid` is open: joined, and not written as left by anyone. */
export function isOpen(ydoc, sid) {
  if (!sessionsOf(ydoc).has(sid)) return false;
  return !entries(ydoc).some((e) => e.sid === sid && e.event === "leave");
}

/** Renews `seen` of my session (while connected), at most every HEARTBEAT_MS. */
export function heartbeat(ydoc, sid, now = Date.now()) {
  const sessions = sessionsOf(ydoc);
  const session = sessions.get(sid);
  if (session && now - Number(session.seen ?? 0) >= HEARTBEAT_MS) sessions.set(sid, { ...session, seen: now });
}

/** What `sweep` remembers between calls; reset it (`watch.reset(now)`) on every (re)sync. */
export class Watch {
  constructor() {
    this.missingSince = new Map(); // sid → since when it is known to be missing
    this.connectedAt = null; // when this page last synced: it sees who is there from then on
    this.swept = false; // whether sweep ran since then
  }

  reset(now = Date.now()) {
    this.missingSince.clear();
    this.connectedAt = now;
    this.swept = false;
  }

  /** Connection lost: nobody can be seen, so nobody is missing. */
  pause() {
    this.missingSince.clear();
    this.connectedAt = null;
  }
}

/**
 * Notes since when each open session is missing from `awareness`, and writes a leave for
 * those missing GRACE_MS (LONG_GRACE_MS for a page whose client id is in `timedOut`) if this
 * page is the one to do it (the lowest client id present). A session already missing at the
 * first sweep after syncing was gone before this page came: it is dated just before then
 * (or HEARTBEAT_MS after it was last seen, if earlier). Call it only while connected and
 * synced. Returns the sids written as left.
 */
export function sweep(ydoc, awareness, watch, { now = Date.now(), timedOut = new Set() } = {}) {
  if (watch.connectedAt === null) return [];
  const present = new Set();
  let lowest = Infinity;
  for (const [client, state] of awareness.getStates()) {
    const sid = state?.user?.sid;
    if (typeof sid === "string") {
      present.add(sid);
      lowest = Math.min(lowest, client);
    }
  }
  const { missingSince } = watch;
  const sessions = sessionsOf(ydoc);
  const due = [];
  for (const [sid, session] of sessions.entries()) {
    if (present.has(sid)) {
      missingSince.delete(sid);
      continue;
    }
    if (!missingSince.has(sid)) missingSince.set(sid, watch.swept ? now : watch.connectedAt - 1);
    const grace = timedOut.has(session?.client) ? LONG_GRACE_MS : GRACE_MS;
    if (now - Math.max(missingSince.get(sid), watch.connectedAt) >= grace) due.push([sid, session]);
  }
  for (const sid of missingSince.keys()) if (!sessions.has(sid)) missingSince.delete(sid);
  watch.swept = true;
  if (due.length === 0 || lowest !== ydoc.clientID) return [];
  const left = [];
  ydoc.transact(() => {
    for (const [sid, session] of due) {
      const seen = Number(session?.seen);
      const bound = Number.isFinite(seen) ? seen + HEARTBEAT_MS : Infinity;
      if (leave(ydoc, sid, Math.min(missingSince.get(sid), bound))) left.push(sid);
      missingSince.delete(sid);
    }
  });
  return left;
}
