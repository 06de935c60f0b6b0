// Binary messages (docs/protocol.md, "Binary messages"): a WebSocket binary frame is the
// length of a JSON header (4 bytes, u32 big-endian), the header, and the payload. The SDK
// sends a publish of bytes that way and reads `message` frames of bytes back; a binary
// message listed in a JSON reply (`joined`, `history`) carries `"binary": true` and its bytes
// in base64 as `data`. Either way the app gets a Uint8Array.

/** The bytes of a publish's frame, under a symbol: JSON.stringify leaves it out of the header. */
export const BYTES = Symbol("switchboard.bytes");

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** Whether `data` is sent as bytes: an ArrayBuffer, any typed array or DataView (a Blob: isBlob). */
export function isBytes(data) {
  return data instanceof ArrayBuffer || ArrayBuffer.isView(data);
}

export function isBlob(data) {
  return typeof Blob === "function" && data instanceof Blob;
}

/** A copy of `data`'s bytes (ArrayBuffer or view): what the app does with its buffer later does not change what is sent, or sent again. */
export function copyBytes(data) {
  if (data instanceof ArrayBuffer) return new Uint8Array(data.slice(0));
  return new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
}

/** The binary frame of `frame` (its JSON fields as the header) with `bytes` as the payload. */
export function encodeFrame(frame, bytes) {
  const header = encoder.encode(JSON.stringify(frame));
  const out = new Uint8Array(4 + header.length + bytes.length);
  new DataView(out.buffer).setUint32(0, header.length);
  out.set(header, 4);
  out.set(bytes, 4 + header.length);
  return out;
}

/**
 * A binary frame from the server (an ArrayBuffer, or a Node Buffer / typed array) as a frame
 * object: its header with the payload as `data` (a Uint8Array). Null when it does not follow
 * the layout.
 */
export function decodeFrame(data) {
  const view = data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (view.length < 4) return null;
  const length = new DataView(view.buffer, view.byteOffset, view.byteLength).getUint32(0);
  if (4 + length > view.length) return null;
  let header;
  try {
    header = JSON.parse(decoder.decode(view.subarray(4, 4 + length)));
  } catch {
    return null;
  }
  if (header === null || typeof header !== "object" || Array.isArray(header)) return null;
  // A copy: the app may keep it, and must not keep the whole frame's buffer alive with it.
  header.data = view.slice(4 + length);
  return header;
}

/** A message object of a JSON list, with a binary message's base64 `data` as a Uint8Array. */
export function listedData(message) {
  if (message.binary === true && typeof message.data === "string") return fromBase64(message.data);
  return message.data;
}

function fromBase64(text) {
  if (typeof Uint8Array.fromBase64 === "function") return Uint8Array.fromBase64(text);
  const raw = atob(text);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}
