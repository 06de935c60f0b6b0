// Small pure helpers of the editor app: names, colours, ids, formatting.
// Nothing here touches the DOM, the network or Yjs.

/** Documents live under `doc:` on the wire: document "notes" is /yjs/doc:notes. */
export const DOC_PREFIX = "doc:";
/** The shared list of documents: a Y.Map "docs" of name → { title, created, updated, by }. */
export const INDEX_DOC = "editor:index";

export const MAX_DOC_NAME = 64;
export const MAX_TITLE = 80;
export const MAX_DISPLAY_NAME = 32;

const DOC_NAME = /^[A-Za-z0-9_.-]+$/;

/**
 * Checks a document name (from `?doc=` or a link). A leading `doc:` is forgiven. Names are
 * letters, digits, `_`, `-` and `.` (the server also allows `:`, which would step out of the
 * `doc:` namespace). Returns `{ name }` or `{ error }` (a sentence for the person).
 */
export function checkDocName(raw) {
  let name = String(raw ?? "").trim();
  if (name.startsWith(DOC_PREFIX)) name = name.slice(DOC_PREFIX.length);
  if (name === "") return { error: "Enter a document name." };
  if (name.length > MAX_DOC_NAME) return { error: `Document names have at most ${MAX_DOC_NAME} characters.` };
  if (!DOC_NAME.test(name)) return { error: "Document names use only letters, digits, _ - and ." };
  return { name };
}

export function isDocName(name) {
  if (typeof name !== "string") return false;
  const checked = checkDocName(name);
  return !checked.error && checked.name === name;
}

/** A title typed by a person: any text, spaces collapsed, 1–80 characters. */
export function checkTitle(raw) {
  // eslint-disable-next-line no-control-regex
  const title = String(raw ?? "").replace(/[\u0000-\u001f\u007f]/g, "").replace(/\s+/g, " ").trim();
  if (title === "") return { error: "Give the document a title." };
  if ([...title].length > MAX_TITLE) return { error: `Titles have at most ${MAX_TITLE} characters.` };
  return { title };
}

/**
 * A document name for a title, unique among `taken` (a Set or Map of names): "Meeting notes"
 * → "meeting-notes", then "meeting-notes-2"... A title with no letters or digits of A–Z
 * (say, "日本語") gets "doc-" and a random suffix.
 */
export function docNameFor(title, taken, random = newId) {
  let base = title
    .normalize("NFKD")
    .replace(/[\u0300-\u036f]/g, "")
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, MAX_DOC_NAME - 4)
    .replace(/-+$/, "");
  if (base === "") base = `doc-${random().slice(0, 6)}`;
  let name = base;
  for (let n = 2; taken.has(name); n++) name = `${base}-${n}`;
  return name;
}

/**
 * Checks a display name: any text (it is only ever rendered as text), 1–32 characters once
 * trimmed, spaces collapsed, no control characters. Returns `{ name }` or `{ error }`.
 */
export function checkDisplayName(raw) {
  // eslint-disable-next-line no-control-regex
  const name = String(raw ?? "").replace(/[\u0000-\u001f\u007f]/g, "").replace(/\s+/g, " ").trim();
  if (name === "") return { error: "Enter a name." };
  if ([...name].length > MAX_DISPLAY_NAME) return { error: `Names have at most ${MAX_DISPLAY_NAME} characters.` };
  return { name };
}

// The chat's palette and hash (web/chat/util.js), so a person has the same colour in both apps.
// Each is #rrggbb: y-prosemirror only draws cursors in colours of that form.
const PALETTE = [
  "#e5484d", "#d6409f", "#8e4ec6", "#6e56cf", "#3e63dd", "#0588f0",
  "#0797b9", "#12a594", "#2b9a66", "#5c7c2f", "#cc4e00", "#a35829",
];

export function colourFor(name) {
  let hash = 0x811c9dc5; // FNV-1a
  for (const ch of String(name).toLowerCase()) {
    hash ^= ch.codePointAt(0);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  hash ^= hash >>> 16;
  hash = Math.imul(hash, 0x7feb352d) >>> 0;
  hash = (hash ^ (hash >>> 15)) >>> 0;
  return PALETTE[hash % PALETTE.length];
}

/** Whether `colour` is one y-prosemirror draws (#rrggbb). */
export function isColour(colour) {
  return typeof colour === "string" && /^#[0-9a-fA-F]{6}$/.test(colour);
}

/** One or two letters for an avatar. */
export function initials(name) {
  const words = String(name).trim().split(/\s+/).filter(Boolean);
  if (words.length === 0) return "?";
  const first = [...words[0]][0] ?? "?";
  const second = words.length > 1 ? ([...words[words.length - 1]][0] ?? "") : "";
  return (first + second).toUpperCase();
}

/** 16 hex digits (crypto.getRandomValues works on plain http, randomUUID does not). */
export function newId() {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function formatTime(ts) {
  return new Date(ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

export function formatDateTime(ts) {
  return new Date(ts).toLocaleString([], { dateStyle: "medium", timeStyle: "medium" });
}

/** "14:05" today, "3 Mar, 14:05" before. */
export function formatWhen(ts, now = Date.now()) {
  const d = new Date(ts);
  const today = new Date(now);
  if (d.toDateString() === today.toDateString()) return formatTime(ts);
  return d.toLocaleString([], { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });
}

/** "just now", "5 min ago", "2 h ago", "3 Mar". */
export function formatAgo(ts, now = Date.now()) {
  const s = Math.max(0, (now - ts) / 1000);
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(ts).toLocaleDateString([], { day: "numeric", month: "short" });
}
