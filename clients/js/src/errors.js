// Errors carry a `code`: the server's error codes (bad_request, forbidden, ...) as sent in
// `error` frames, or one of these codes for what happens on this side of the wire.

export const CLIENT_CODES = Object.freeze({
  // No reply within the request's timeout. The server may still have acted on it.
  TIMEOUT: "timeout",
  // The connection was lost after the frame was sent: the outcome is unknown.
  DISCONNECTED: "disconnected",
  // The room's offline queue already holds `queueLimit` publishes; this one was not queued.
  QUEUE_FULL: "queue_full",
  // The client or the room was closed (or left) before the request could be sent.
  CLOSED: "closed",
  // getToken() threw or rejected.
  TOKEN: "token_error",
  // The server sent a frame that is not a JSON object.
  BAD_FRAME: "bad_frame",
  // The server took this connection out of a room (a `left` frame with a reason).
  LEFT: "left",
});

export class SwitchboardError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "SwitchboardError";
    this.code = code;
  }

  /** An `error` frame from the server as an Error, keeping its code. */
  static fromFrame(frame) {
    return new SwitchboardError(frame.code ?? "internal", frame.message ?? frame.code ?? "server error");
  }
}

/**
 * Marks `promise` as handled and returns it, for promises callers may well ignore
 * (room.ready, setPresence(), leave()): ignoring one that rejects must not crash a Node
 * process with an unhandled rejection. Awaiting it still sees the rejection.
 */
export function quiet(promise) {
  promise.catch(() => {});
  return promise;
}
