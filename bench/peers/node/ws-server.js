// Peer server for the Switchboard benchmark: the Node `ws` server of the tutorials, with
// rooms. One process, one thread (Node's event loop).
//
// Protocol (JSON text frames, the same as bench/peers/python/server.py):
//   {"type":"join","room":R,"id":N}          -> {"type":"joined","room":R,"id":N}
//   {"type":"publish","room":R,"data":D}     -> every member of R (the sender included)
//                                               gets {"type":"message","room":R,"data":D}
//   {"type":"leave","room":R}                -> leaves R
//
// Usage: node ws-server.js [port]   (0 or nothing: any free port; prints "listening addr=...")
// PERMESSAGE_DEFLATE=1: permessage-deflate on, with ws's defaults (what `perMessageDeflate:
// true` gives: zlib's default level, context takeover, messages under 1 KiB plain),
// each member's copy compressed by its own connection.
'use strict';

const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || 0);
const deflate = process.env.PERMESSAGE_DEFLATE === '1';
const rooms = new Map(); // room name -> Set of sockets

const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: deflate, clientTracking: false });

wss.on('connection', (ws) => {
  const joined = new Set();
  ws.on('message', (raw, isBinary) => {
    if (isBinary) return;
    let msg;
    try {
      msg = JSON.parse(raw);
    } catch {
      ws.send(JSON.stringify({ type: 'error', code: 'bad_json' }));
      return;
    }
    const room = msg.room;
    if (typeof room !== 'string') return;
    if (msg.type === 'join') {
      let members = rooms.get(room);
      if (!members) rooms.set(room, (members = new Set()));
      members.add(ws);
      joined.add(room);
      if (msg.id !== undefined) ws.send(JSON.stringify({ type: 'joined', room, id: msg.id }));
    } else if (msg.type === 'publish') {
      const members = rooms.get(room);
      if (!members) return;
      // Serialise once; every member gets the same buffer.
      const out = Buffer.from(JSON.stringify({ type: 'message', room, data: msg.data }));
      for (const member of members) member.send(out, { binary: false });
    } else if (msg.type === 'leave') {
      leave(ws, room);
      joined.delete(room);
    }
  });
  ws.on('close', () => {
    for (const room of joined) leave(ws, room);
  });
  ws.on('error', () => {});
});

function leave(ws, room) {
  const members = rooms.get(room);
  if (!members) return;
  members.delete(ws);
  if (members.size === 0) rooms.delete(room);
}

wss.on('listening', () => {
  const a = wss.address();
  console.log(`listening addr=${a.address}:${a.port} ws=${require('ws/package.json').version} deflate=${deflate}`);
});

for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));
