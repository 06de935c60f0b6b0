#!/usr/bin/env python3
"""Server memory per idle WebSocket connection, plain and over TLS (docs/benchmarks.md, "TLS").

For each mode, starts a fresh server (the binary given, default target/release/switchboard),
reads its VmRSS, opens N connections to /ws (the WebSocket handshake done and `welcome`
read; over TLS with a certificate made here with the openssl CLI), waits 2 s, reads VmRSS
again, and prints (after - before) / N. Connections are held by this one process, opened
one after the other; everything stays on 127.0.0.1.

    python3 bench/tls_idle.py [--bin PATH] [--connections 2000] [--runs 1]
"""

import argparse
import base64
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time


def make_cert(d):
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", "key.pem", "-out", "cert.pem", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        cwd=d, check=True, capture_output=True)
    return os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def start(binary, extra, data_dir):
    cmd = [binary, "--listen", "127.0.0.1:0", "--log", "info", "--log-format", "text",
           "--data-dir", data_dir, "--heartbeat-interval", "10m", "--heartbeat-timeout", "10m",
           *extra]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 30
    while time.time() < deadline:
        line = proc.stderr.readline()
        if "listening" in line:
            for word in line.split():
                if word.startswith("addr="):
                    host, port = word[5:].rsplit(":", 1)
                    # Drain the rest of stderr in the background so the pipe never fills.
                    subprocess.Popen(["cat"], stdin=proc.stderr, stdout=subprocess.DEVNULL)
                    return proc, (host, int(port))
    proc.kill()
    raise RuntimeError("server did not report listening")


def open_ws(addr, ctx):
    s = socket.create_connection(addr)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if ctx is not None:
        s = ctx.wrap_socket(s, server_hostname="localhost")
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
               f"Sec-WebSocket-Protocol: switchboard.v1\r\n\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("closed in the handshake")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    if b" 101 " not in head.split(b"\r\n")[0]:
        raise RuntimeError(head.decode(errors="replace"))
    # The whole welcome frame: a text frame with a 7- or 16-bit length.
    def frame_len(b):
        if len(b) < 2:
            return None
        n = b[1] & 0x7F
        if n < 126:
            return 2 + n
        return 4 + int.from_bytes(b[2:4], "big") if len(b) >= 4 else None
    while frame_len(rest) is None or len(rest) < frame_len(rest):
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("closed before welcome")
        rest += chunk
    return s


def measure(binary, n, tls, d):
    extra = []
    ctx = None
    if tls:
        cert, key = make_cert(d)
        extra = ["--tls-cert", cert, "--tls-key", key]
        ctx = ssl.create_default_context(cafile=cert)
    proc, addr = start(binary, extra, tempfile.mkdtemp(dir=d))
    try:
        time.sleep(1)
        before = rss_kib(proc.pid)
        conns = [open_ws(addr, ctx) for _ in range(n)]
        time.sleep(2)
        after = rss_kib(proc.pid)
        per = (after - before) * 1024 / n
        for c in conns:
            c.close()
        return before, after, per
    finally:
        proc.kill()
        proc.wait()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default="target/release/switchboard")
    p.add_argument("--connections", type=int, default=2000)
    p.add_argument("--runs", type=int, default=1)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        for run in range(a.runs):
            for tls in (False, True):
                before, after, per = measure(a.bin, a.connections, tls, d)
                mode = "tls  " if tls else "plain"
                print(f"run {run + 1} {mode}: {a.connections} idle connections, "
                      f"RSS {before} -> {after} KiB, {per:.0f} B per connection", flush=True)


if __name__ == "__main__":
    sys.exit(main())
