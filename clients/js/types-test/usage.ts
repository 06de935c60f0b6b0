// Compiles only if the declarations describe the API the README shows.
import { Switchboard, SwitchboardError, type BinaryData, type Member, type Message, type WebSocketConstructor } from "@switchboard/client";

declare const NodeWebSocket: WebSocketConstructor; // e.g. `import WebSocket from "ws"`
declare function show(...values: unknown[]): void;

async function main(): Promise<void> {
  const sb = new Switchboard("ws://localhost:8080/ws", {
    getToken: async () => "jwt",
    WebSocket: NodeWebSocket,
    backoff: { baseMs: 500, maxMs: 30_000 },
    queueLimit: 100,
  });
  const off = sb.on("state", (state) => {
    const known: "connecting" | "open" | "reconnecting" | "closed" = state;
    void known;
  });
  off();
  sb.on("reconnect", ({ attempt, delayMs, at }) => show(attempt, delayMs, new Date(at)));
  sb.on("disconnect", ({ code, reason, reconnect }) => show(code, reason, reconnect));
  sb.on("error", (error) => show(error.code, error.message));

  const room = sb.join("chat:lobby", { presence: { name: "ada" } });
  const joined = await room.ready;
  show(joined.epoch, joined.offset, joined.members.length);
  room.on("message", ({ data, from, offset, ts }) => show(data, from.user, offset, ts));
  room.on("presence", ({ event, member }) => show(event, member.conn));
  room.on("gap", ({ room: name, reason, since, epoch, offset }) => show(name, reason, since.offset, epoch, offset));
  room.on("recovered", ({ room: name, count }) => show(name, count + 1));
  const page = await room.history({ limit: 50, reverse: true });
  const latest: Message | undefined = page.messages[0];
  show(page.epoch, page.offset + 1, latest?.data);
  const earlier = await room.history({ since: { epoch: page.epoch, offset: latest?.offset ?? 0 }, reverse: true, timeoutMs: 1000 });
  show(earlier.messages.length);
  const members: readonly Member[] = room.members;
  show(members.map((m) => m.presence));

  interface Chat {
    text: string;
  }
  const chat: Chat = { text: "hi" };
  try {
    const { offset, duplicate, key } = await room.publish(chat, { timeoutMs: 5000 });
    const next: number = offset;
    const repeated: boolean = duplicate;
    await room.publish(chat, { key });
    void [next, repeated];
  } catch (error) {
    if (error instanceof SwitchboardError && error.code === "queue_full") show("offline too long");
  }
  // Bytes: published as a binary message, received as a Uint8Array.
  await room.publish(new Uint8Array([1, 2, 3]));
  await room.publish(new ArrayBuffer(8), { echo: false });
  await room.publish(new DataView(new ArrayBuffer(4)));
  room.on("message", ({ data }) => {
    if (data instanceof Uint8Array) show(data.byteLength);
  });
  await room.setPresence({ name: "ada", typing: true });
  await room.leave();
  sb.close();

  // @ts-expect-error: not an event of the client
  sb.on("message", () => {});
  // @ts-expect-error: not an event of a room
  room.on("open", () => {});
  // @ts-expect-error: the offset is a number
  room.on("message", (m: { offset: string }) => show(m));
  // @ts-expect-error: presence is an object
  room.setPresence("typing");
  // @ts-expect-error: a key is a string
  room.publish(chat, { key: 7 });
  // @ts-expect-error: since is a position
  room.history({ since: 12 });
}

void main;

// Tokens: a connection token fetched from the backend, room tokens, the server as a sender.
async function withTokens(): Promise<void> {
  const sb = new Switchboard("ws://localhost:8080/ws", {
    getToken: () => fetch("/token").then((r) => r.text()),
    WebSocket: NodeWebSocket,
  });
  sb.on("error", (error) => {
    if (error.code === "token_error" || error.code === "left") show(error.message);
  });
  const order = sb.join("order:1234", { getToken: (room) => fetch(`/room-token?room=${room}`).then((r) => r.text()) });
  const fixed = sb.join("order:99", { token: "jwt" });
  order.on("message", ({ from }) => {
    if (from.conn === null) show("from the backend", from.server);
    else show(from.conn, from.info);
  });
  await fixed.ready;
  // @ts-expect-error: a room token is a string
  sb.join("order:1", { token: 42 });
}
void withTokens;

declare const file: { size: number; type: string; name: string; arrayBuffer(): Promise<ArrayBuffer> };
const upload: BinaryData = file; // a File or Blob
void upload;
declare function fetch(url: string): Promise<{ text(): Promise<string> }>;
