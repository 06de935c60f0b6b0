// Small pure helpers of the chat app: input checks, colours, ids, formatting.
// Nothing here touches the DOM or the network.

/** Chat rooms live in the `chat` namespace: room "lobby" is `chat:lobby` on the wire. */
export const ROOM_PREFIX = "chat:";

/** The well-known room every chat page also joins to publish which room it is in (app.js). */
export const DIRECTORY_ROOM = "chat:_rooms";

export const MAX_ROOM_NAME = 64;
export const MAX_DISPLAY_NAME = 32;
export const MAX_MESSAGE_LENGTH = 4000;

const ROOM_NAME = /^[A-Za-z0-9_.-]+$/;

/**
 * Checks a room name typed by a person (or passed as `?room=`). A leading `#` or `chat:` is
 * forgiven. Names are letters, digits, `_`, `-` and `.` (the server also allows `:`, but that
 * would step out of the chat namespace); a leading `_` is reserved for rooms of the app itself.
 * Returns `{ name }` or `{ error }` (a sentence for the person).
 */
export function checkRoomName(raw) {
  let name = String(raw ?? "").trim();
  if (name.startsWith("#")) name = name.slice(1);
  if (name.startsWith(ROOM_PREFIX)) name = name.slice(ROOM_PREFIX.length);
  if (name === "") return { error: "Enter a room name." };
  if (name.length > MAX_ROOM_NAME) return { error: `Room names have at most ${MAX_ROOM_NAME} characters.` };
  if (!ROOM_NAME.test(name)) return { error: "Room names use only letters, digits, _ - and ." };
  if (name.startsWith("_")) return { error: "Room names starting with _ are reserved." };
  return { name };
}

/** Whether `name` (without prefix) is a room name this app would create. */
export function isRoomName(name) {
  if (typeof name !== "string") return false;
  const checked = checkRoomName(name);
  return !checked.error && checked.name === name;
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

// Colours that read well as text on white and as an avatar behind white letters.
const PALETTE = [
  "#e5484d", "#d6409f", "#8e4ec6", "#6e56cf", "#3e63dd", "#0588f0",
  "#0797b9", "#12a594", "#2b9a66", "#5c7c2f", "#cc4e00", "#a35829",
];

/** A colour per person, derived from the name so it stays the same across reconnects and rooms. */
export function colourFor(name) {
  let hash = 0x811c9dc5; // FNV-1a
  for (const ch of String(name).toLowerCase()) {
    hash ^= ch.codePointAt(0);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  hash ^= hash >>> 16; // mix the high bits in: short names differ mostly there
  hash = Math.imul(hash, 0x7feb352d) >>> 0;
  hash = (hash ^ (hash >>> 15)) >>> 0;
  return PALETTE[hash % PALETTE.length];
}

/** One or two letters for an avatar. */
export function initials(name) {
  const words = String(name).trim().split(/\s+/).filter(Boolean);
  if (words.length === 0) return "?";
  const first = [...words[0]][0] ?? "?";
  const second = words.length > 1 ? ([...words[words.length - 1]][0] ?? "") : "";
  return (first + second).toUpperCase();
}

/**
 * A random id (16 hex digits) for a message or a page. crypto.getRandomValues works on plain
 * http too, where crypto.randomUUID does not (it needs a secure context).
 */
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

/** "ada is typing…", "ada and grace are typing…", "Several people are typing…", or "". */
export function typingText(names) {
  if (names.length === 0) return "";
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  return "Several people are typing…";
}

/** The text of a message's data: `{ text }` from this app, anything else shown as JSON. */
export function messageText(data) {
  if (data !== null && typeof data === "object" && typeof data.text === "string") return data.text;
  if (typeof data === "string") return data;
  // A binary message (the SDK gives its bytes as a Uint8Array): the chat shows no bytes.
  if (data instanceof Uint8Array) return `(${data.length} bytes of binary data)`;
  try {
    return JSON.stringify(data);
  } catch {
    return String(data);
  }
}
