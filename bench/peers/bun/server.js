// Peer server for the Switchboard benchmark: Bun, whose WebSocket server is uWebSockets,
// with rooms as Bun's topics: `server.publish` sends one message to every subscriber of a
// room (the sender included), serialised once — the fast path Bun documents for broadcast.
// One process; Bun runs JavaScript on one thread.
//
// Protocol (JSON text frames, the same as bench/peers/node/ws-server.js):
//   {"type":"join","room":R,"id":N}          -> {"type":"joined","room":R,"id":N}
//   {"type":"publish","room":R,"data":D}     -> every member of R (the sender included)
//                                               gets {"type":"message","room":R,"data":D}
//   {"type":"leave","room":R}                -> leaves R
//
// Usage: bun server.js [port]   (0 or nothing: any free port; prints "listening addr=...")
// PERMESSAGE_DEFLATE=1: permessage-deflate on (`perMessageDeflate: true`: Bun's shared
// compressor, no context takeover) and every publish sent compressed (`compress` true).

const port = Number(process.argv[2] || 0);
const deflate = process.env.PERMESSAGE_DEFLATE === "1";

const server = Bun.serve({
  hostname: "127.0.0.1",
  port,
  fetch(req, server) {
    if (server.upgrade(req)) return undefined;
    return new Response("WebSocket only", { status: 400 });
  },
  websocket: {
    perMessageDeflate: deflate,
    // As large as the others allow: the benchmark measures fan-out, not back-pressure.
    maxPayloadLength: 16 * 1024 * 1024,
    backpressureLimit: 16 * 1024 * 1024,
    closeOnBackpressureLimit: false,
    idleTimeout: 0,
    message(ws, raw) {
      if (typeof raw !== "string") return;
      let msg;
      try {
        msg = JSON.parse(raw);
      } catch {
        ws.send(JSON.stringify({ type: "error", code: "bad_json" }));
        return;
      }
      const room = msg.room;
      if (typeof room !== "string") return;
      if (msg.type === "join") {
        ws.subscribe(room);
        if (msg.id !== undefined) ws.send(JSON.stringify({ type: "joined", room, id: msg.id }));
      } else if (msg.type === "publish") {
        server.publish(room, JSON.stringify({ type: "message", room, data: msg.data }), deflate);
      } else if (msg.type === "leave") {
        ws.unsubscribe(room);
      }
    },
  },
});

console.log(`listening addr=127.0.0.1:${server.port} bun=${Bun.version} deflate=${deflate}`);
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => process.exit(0));
