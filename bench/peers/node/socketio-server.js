// Peer server for the Switchboard benchmark: Socket.IO v4 with rooms, WebSocket transport
// only (the load generator speaks Engine.IO v4 / Socket.IO v5 over a plain WebSocket).
//
// Events: "join" (room, ack) -> joins the room and acks "ok";
//         "publish" {room, data} -> io.to(room).emit("message", {room, data}), so every
//         member of the room (the sender included) gets it;
//         "leave" (room).
//
// Usage: node socketio-server.js [port]   (prints "listening addr=...")
'use strict';

const http = require('http');
const { Server } = require('socket.io');

const port = Number(process.argv[2] || 0);
const httpServer = http.createServer();
const io = new Server(httpServer, {
  transports: ['websocket'],
  perMessageDeflate: false,
  serveClient: false,
  maxHttpBufferSize: 1e6,
});

io.on('connection', (socket) => {
  socket.on('join', (room, ack) => {
    if (typeof room !== 'string') return;
    socket.join(room);
    if (typeof ack === 'function') ack('ok');
  });
  socket.on('publish', (msg) => {
    if (!msg || typeof msg.room !== 'string') return;
    io.to(msg.room).emit('message', { room: msg.room, data: msg.data });
  });
  socket.on('leave', (room) => socket.leave(room));
});

httpServer.listen(port, '127.0.0.1', () => {
  const a = httpServer.address();
  console.log(`listening addr=${a.address}:${a.port} socket.io=${require('socket.io/package.json').version}`);
});

for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));
