// Test doubles: a clock whose time moves only when told, and a WebSocket whose server side
// the test plays by hand. No network, no real waiting.

import { decodeFrame } from "../src/binary.js";
import { Switchboard } from "../src/switchboard.js";

export class FakeClock {
  #now = 1_700_000_000_000;
  #timers = new Map();
  #nextId = 1;

  now() {
    return this.#now;
  }

  setTimeout(fn, ms) {
    const id = this.#nextId++;
    this.#timers.set(id, { id, at: this.#now + ms, fn });
    return id;
  }

  clearTimeout(id) {
    this.#timers.delete(id);
  }

  /** Moves time forward by `ms`, running each timer that falls due, in order. */
  advance(ms) {
    const end = this.#now + ms;
    for (;;) {
      const due = [...this.#timers.values()].filter((t) => t.at <= end);
      if (due.length === 0) break;
      const next = due.reduce((a, b) => (b.at < a.at || (b.at === a.at && b.id < a.id) ? b : a));
      this.#timers.delete(next.id);
      this.#now = next.at;
      next.fn();
    }
    this.#now = end;
  }

  /** Delays of the timers still pending, from now, in order. */
  get pending() {
    return [...this.#timers.values()].map((t) => t.at - this.#now).sort((a, b) => a - b);
  }
}

/** A WebSocket class with its own list of instances. */
export function fakeWebSocketClass() {
  return class FakeWebSocket {
    static instances = [];
    static get last() {
      return this.instances.at(-1);
    }

    readyState = 0;
    sent = [];
    closedWith = null;

    constructor(url, protocol) {
      this.url = url;
      this.protocol = protocol;
      FakeWebSocket.instances.push(this);
    }

    send(text) {
      if (this.readyState !== 1) throw new Error("send on a socket that is not open");
      if (typeof text === "string") this.sent.push(JSON.parse(text));
      else this.sent.push(decodeFrame(text)); // a binary frame: its header, the payload as `data`
    }

    close(code, reason) {
      this.closedWith = { code, reason };
      this.readyState = 2;
    }

    // The server's side.

    open() {
      this.readyState = 1;
      this.onopen?.({});
    }

    receive(frame) {
      const binary = frame instanceof ArrayBuffer || ArrayBuffer.isView(frame);
      this.onmessage?.({ data: typeof frame === "string" || binary ? frame : JSON.stringify(frame) });
    }

    welcome(fields = {}) {
      this.receive({ type: "welcome", conn: "c1", user: null, heartbeat_ms: 0, server: { name: "fake" }, ...fields });
    }

    serverClose(code, reason = "") {
      this.readyState = 3;
      this.onclose?.({ code, reason });
    }

    /** The frames of `type` the client sent. */
    frames(type) {
      return this.sent.filter((f) => f.type === type);
    }

    /** Answers the last `type` request with `reply` fields. */
    reply(type, reply) {
      const request = this.frames(type).at(-1);
      this.receive({ id: request.id, ...reply });
    }
  };
}

/** Lets promise callbacks run (they are not timers, so the fake clock does not run them). */
export const flush = () => new Promise((resolve) => setImmediate(resolve));

/** A client over fakes; random() is 0.5 unless given. */
export function setup(options = {}) {
  const clock = new FakeClock();
  const WebSocket = fakeWebSocketClass();
  const sb = new Switchboard("ws://test/ws", { WebSocket, clock, random: () => 0.5, ...options });
  const events = [];
  for (const name of ["state", "open", "disconnect", "reconnect", "shutdown", "error"]) {
    sb.on(name, (payload) => events.push([name, payload]));
  }
  /** Opens the newest socket and says welcome: the client is then open (without auth). */
  const connect = (welcome) => {
    WebSocket.last.open();
    WebSocket.last.welcome(welcome);
    return WebSocket.last;
  };
  const named = (name) => events.filter(([n]) => n === name).map(([, payload]) => payload);
  return { sb, clock, WebSocket, events, named, connect };
}

/** A joined reply for `room` answering the socket's last join. */
export function joined(ws, fields = {}) {
  const join = ws.frames("join").at(-1);
  ws.receive({ type: "joined", id: join.id, room: join.room, epoch: "e1", offset: 0, members: [], ...fields });
}
