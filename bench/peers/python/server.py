"""Peer server for the Switchboard benchmark: Python `websockets` (asyncio) with rooms.

Protocol (JSON text frames, the same as bench/peers/node/ws-server.js):
  {"type":"join","room":R,"id":N}       -> {"type":"joined","room":R,"id":N}
  {"type":"publish","room":R,"data":D}  -> every member of R (the sender included) gets
                                           {"type":"message","room":R,"data":D}
  {"type":"leave","room":R}             -> leaves R

Fan-out uses websockets.broadcast(): the frame is written to every member's transport
without awaiting each one (the library's documented way to broadcast).

Usage: python server.py [port]   (0 or nothing: any free port; prints "listening addr=...")
"""

import asyncio
import json
import signal
import sys

import websockets
from websockets.asyncio.server import broadcast, serve

rooms: dict[str, set] = {}


def dumps(obj):
    # Compact, like JSON.stringify: the frames are as small as the Node peer's.
    return json.dumps(obj, separators=(",", ":"))


def leave(ws, room):
    members = rooms.get(room)
    if members is None:
        return
    members.discard(ws)
    if not members:
        del rooms[room]


async def handler(ws):
    joined = set()
    try:
        async for raw in ws:
            if not isinstance(raw, str):
                continue
            try:
                msg = json.loads(raw)
            except ValueError:
                await ws.send(dumps({"type": "error", "code": "bad_json"}))
                continue
            room = msg.get("room")
            if not isinstance(room, str):
                continue
            kind = msg.get("type")
            if kind == "join":
                rooms.setdefault(room, set()).add(ws)
                joined.add(room)
                if "id" in msg:
                    await ws.send(dumps({"type": "joined", "room": room, "id": msg["id"]}))
            elif kind == "publish":
                members = rooms.get(room)
                if members:
                    # Serialised once, written to every member.
                    out = dumps({"type": "message", "room": room, "data": msg.get("data")})
                    broadcast(members, out)
            elif kind == "leave":
                leave(ws, room)
                joined.discard(room)
    except websockets.ConnectionClosed:
        pass
    finally:
        for room in joined:
            leave(ws, room)


async def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(handler, "127.0.0.1", port, compression=None, backlog=1024) as server:
        host, bound = server.sockets[0].getsockname()[:2]
        print(f"listening addr={host}:{bound} websockets={websockets.__version__}", flush=True)
        await stop


if __name__ == "__main__":
    asyncio.run(main())
