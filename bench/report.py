#!/usr/bin/env python3
"""Turns the JSON lines of a bench/run.sh run into docs/benchmarks.md and SVG plots.

    python3 bench/report.py --results target/bench/<stamp>/results.jsonl \
        --machine target/bench/<stamp>/machine.json --doc docs/benchmarks.md --plots docs/bench

Standard library only. Medians are taken over runs. A hand-written section of the doc
between the markers <!-- analysis:begin --> and <!-- analysis:end --> is kept when the doc
is written again, and so is the one between <!-- redis-analysis:begin --> and
<!-- redis-analysis:end --> (in "Many nodes over Redis").

    python3 bench/report.py --section redis --results … --machine … --doc docs/benchmarks.md

rewrites only the section "Many nodes over Redis" (between <!-- redis:begin --> and
<!-- redis:end -->) from a run of `switchboard` and `switchboard-redis2`, and leaves the
rest of the doc as it was; `--section compression` likewise "Compression" (between
<!-- compression:begin --> and <!-- compression:end -->, its hand-written part between
<!-- compression-analysis:begin --> and <!-- compression-analysis:end -->) from a run of
the servers plain and compressing; `--section rooms` "Large rooms and a room per
connection" (between <!-- rooms:begin --> and <!-- rooms:end -->, its hand-written part
between <!-- rooms-analysis:begin --> and <!-- rooms-analysis:end -->) from a run of
SECTION=rooms: the join storm and idle connections each in a room of its own; `--section
bigroom` "Fan-out in a 200-member room" (<!-- bigroom:begin --> … <!-- bigroom:end -->, by
hand between <!-- bigroom-analysis:begin --> and <!-- bigroom-analysis:end -->) from a run of
SECTION=bigroom: Switchboard and Bun at fixed loads in one large room. A full report keeps
the last "Compression", "Large rooms and a room per connection" and "Fan-out in a
200-member room" as they were.
"""

import argparse
import html
import json
import math
import os
import statistics
from collections import defaultdict

ORDER = ["switchboard", "switchboard-count", "switchboard-deflate", "switchboard-history", "switchboard-nowindow",
         "switchboard-redis2", "bun", "bun-deflate", "node-ws", "node-ws-deflate", "socketio",
         "python-websockets"]
LABEL = {
    "switchboard": "Switchboard",
    "switchboard-history": "Switchboard, history on disk",
    "switchboard-nowindow": "Switchboard, no recovery window",
    "switchboard-redis2": "Switchboard, 2 nodes + Redis",
    "switchboard-deflate": "Switchboard, compression",
    "switchboard-count": "Switchboard, presence count",
    "bun": "Bun",
    "bun-deflate": "Bun, compression",
    "node-ws": "Node ws",
    "node-ws-deflate": "Node ws, perMessageDeflate",
    "socketio": "Socket.IO",
    "python-websockets": "Python websockets",
}
COLOR = {
    "switchboard": "#1f77b4",
    "switchboard-history": "#17becf",
    "switchboard-nowindow": "#aec7e8",
    "switchboard-redis2": "#8c564b",
    "switchboard-count": "#9edae5",
    "bun": "#ff7f0e",
    "node-ws": "#2ca02c",
    "switchboard-deflate": "#393b79",
    "bun-deflate": "#e6550d",
    "node-ws-deflate": "#31a354",
    "socketio": "#d62728",
    "python-websockets": "#9467bd",
}
BEGIN, END = "<!-- analysis:begin -->", "<!-- analysis:end -->"
# The hand-written explanation under "Many nodes over Redis", kept the same way.
RBEGIN, REND = "<!-- redis-analysis:begin -->", "<!-- redis-analysis:end -->"
# The generated section itself, so that a run of only these configurations can rewrite it.
SBEGIN, SEND = "<!-- redis:begin -->", "<!-- redis:end -->"
# The section "Compression" (a run with SECTION=compression), and its hand-written part.
CBEGIN, CEND = "<!-- compression:begin -->", "<!-- compression:end -->"
CABEGIN, CAEND = "<!-- compression-analysis:begin -->", "<!-- compression-analysis:end -->"
# Each server plain and compressing, in the order the section shows them.
COMPRESSION = [("switchboard", "switchboard-deflate"), ("bun", "bun-deflate"),
               ("node-ws", "node-ws-deflate")]
# Targets (issue 13): compressed saturation ≥ half the uncompressed, ≥ 5× Node ws compressing.
DEFLATE_MIN_SHARE, DEFLATE_MIN_VS_NODE = 0.5, 5.0
# The section "Large rooms and a room per connection" (a run with SECTION=rooms), and its
# hand-written part.
RMBEGIN, RMEND = "<!-- rooms:begin -->", "<!-- rooms:end -->"
RMABEGIN, RMAEND = "<!-- rooms-analysis:begin -->", "<!-- rooms-analysis:end -->"
# Targets (the large-rooms issue): a join storm of 10,000 members at 2,000/s with every join
# answered, none dropped, join p99 < 100 ms, ≤ 2 KiB per member, a publish reaching all;
# 19,000 connections each in a room of its own at ≤ 1.5 KiB per connection.
STORM_MAX_P99_MS, STORM_MAX_BYTES, ROOM_IDLE_MAX_BYTES = 100, 2048, 1536
# The section "Fan-out in a 200-member room" (a run with SECTION=bigroom) and its
# hand-written part; its servers. Targets (the large-rooms issue): at each fixed load, server
# CPU per delivery and p99 no more than Bun's, and a saturation above Bun's.
BRBEGIN, BREND = "<!-- bigroom:begin -->", "<!-- bigroom:end -->"
BRABEGIN, BRAEND = "<!-- bigroom-analysis:begin -->", "<!-- bigroom-analysis:end -->"
BIGROOM = ("switchboard", "bun")
# One node with the embedded broker, and two nodes sharing one Redis.
SINGLE, CLUSTER = "switchboard", "switchboard-redis2"
# Targets of the Redis configuration against one node: throughput share, p99 ratio.
REDIS_MIN_SHARE, REDIS_MAX_P99 = 0.75, 2.0


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def servers_in(records):
    seen = {r["server"] for r in records}
    return [s for s in ORDER if s in seen] + sorted(seen - set(ORDER))


def si(v):
    if v is None:
        return "–"
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    return f"{v:.0f}"


def ms(v):
    if v is None:
        return "–"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def cpu_per_m(cpu, delivered):
    """CPU seconds per million deliveries, from a CPU share and deliveries per second."""
    return None if cpu is None or not delivered else cpu / delivered * 1e6


def num(v, fmt="{:.2f}"):
    return "–" if v is None else fmt.format(v)


def kib(b):
    return "–" if b is None else f"{b / 1024:.2f} KiB"


# ---------------------------------------------------------------- SVG charts

def nice_log_ticks(lo, hi):
    ticks = []
    e = math.floor(math.log10(lo))
    while 10 ** e <= hi * 1.0001:
        for m in (1, 2, 5):
            v = m * 10 ** e
            if lo / 1.0001 <= v <= hi * 1.0001:
                ticks.append(v)
        e += 1
    return ticks


def nice_lin_ticks(lo, hi, n=6):
    span = hi - lo
    step = 10 ** math.floor(math.log10(span / n)) if span > 0 else 1
    for m in (1, 2, 2.5, 5, 10):
        if span / (step * m) <= n:
            step *= m
            break
    t = math.ceil(lo / step) * step
    out = []
    while t <= hi + 1e-9:
        out.append(t)
        t += step
    return out


def fmt_tick(v):
    if v >= 1e6:
        return f"{v / 1e6:g}M"
    if v >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def svg_open(w, h):
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" font-family="DejaVu Sans, Arial, sans-serif" font-size="13">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
    ]


def line_chart(path, title, xlabel, ylabel, series, xlog=True, ylog=True, hlines=()):
    """series: [(name, color, [(x, y, ok)])]; failed points are drawn hollow."""
    W, H = 860, 520
    L, R, T, B = 80, 200, 50, 60
    pts = [(x, y) for _, _, ps in series for x, y, _ in ps if x and y]
    if not pts:
        return False
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts] + [h[0] for h in hlines]
    xlo, xhi = min(xs), max(xs)
    ylo, yhi = min(ys), max(ys)
    if xlog:
        xlo, xhi = 10 ** math.floor(math.log10(xlo)), 10 ** math.ceil(math.log10(xhi))
    if ylog:
        ylo, yhi = 10 ** math.floor(math.log10(ylo)), 10 ** math.ceil(math.log10(yhi))
    else:
        ylo, yhi = 0, yhi * 1.1

    def sx(x):
        f = (math.log10(x) - math.log10(xlo)) / (math.log10(xhi) - math.log10(xlo)) if xlog \
            else (x - xlo) / ((xhi - xlo) or 1)
        return L + f * (W - L - R)

    def sy(y):
        f = (math.log10(y) - math.log10(ylo)) / (math.log10(yhi) - math.log10(ylo)) if ylog \
            else (y - ylo) / ((yhi - ylo) or 1)
        return H - B - f * (H - T - B)

    s = svg_open(W, H)
    s.append(f'<text x="{W / 2 - R / 2 + L / 2}" y="28" text-anchor="middle" font-size="16" '
             f'font-weight="bold">{html.escape(title)}</text>')
    xt = nice_log_ticks(xlo, xhi) if xlog else nice_lin_ticks(xlo, xhi)
    yt = nice_log_ticks(ylo, yhi) if ylog else nice_lin_ticks(ylo, yhi)
    if ylog and len(yt) > 12:
        yt = [t for t in yt if str(t).lstrip("0.").startswith("1")]
    for t in xt:
        x = sx(t)
        s.append(f'<line x1="{x:.1f}" y1="{T}" x2="{x:.1f}" y2="{H - B}" stroke="#e5e5e5"/>')
        s.append(f'<text x="{x:.1f}" y="{H - B + 18}" text-anchor="middle">{fmt_tick(t)}</text>')
    for t in yt:
        y = sy(t)
        s.append(f'<line x1="{L}" y1="{y:.1f}" x2="{W - R}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        s.append(f'<text x="{L - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt_tick(t)}</text>')
    s.append(f'<rect x="{L}" y="{T}" width="{W - L - R}" height="{H - T - B}" fill="none" stroke="#444"/>')
    s.append(f'<text x="{L + (W - L - R) / 2}" y="{H - 15}" text-anchor="middle">{html.escape(xlabel)}</text>')
    s.append(f'<text transform="translate(20,{T + (H - T - B) / 2}) rotate(-90)" '
             f'text-anchor="middle">{html.escape(ylabel)}</text>')
    for value, label in hlines:
        y = sy(value)
        s.append(f'<line x1="{L}" y1="{y:.1f}" x2="{W - R}" y2="{y:.1f}" stroke="#888" '
                 f'stroke-dasharray="6,4"/>')
        s.append(f'<text x="{W - R - 6}" y="{y - 5:.1f}" text-anchor="end" fill="#555">'
                 f'{html.escape(label)}</text>')
    for i, (name, color, ps) in enumerate(series):
        ps = [p for p in ps if p[0] and p[1]]
        if ps:
            d = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y, _ in ps)
            s.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="2.2"/>')
            for x, y, ok in ps:
                fill = color if ok else "white"
                s.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="4" fill="{fill}" '
                         f'stroke="{color}" stroke-width="2"/>')
        ly = T + 20 + i * 24
        s.append(f'<line x1="{W - R + 15}" y1="{ly}" x2="{W - R + 40}" y2="{ly}" stroke="{color}" stroke-width="3"/>')
        s.append(f'<text x="{W - R + 46}" y="{ly + 4}">{html.escape(name)}</text>')
    ly = T + 20 + len(series) * 24 + 10
    s.append(f'<circle cx="{W - R + 27}" cy="{ly}" r="4" fill="white" stroke="#444" stroke-width="2"/>')
    s.append(f'<text x="{W - R + 46}" y="{ly + 4}" font-size="11">not sustained</text>')
    s.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(s) + "\n")
    return True


def bar_chart(path, title, ylabel, groups, series, hlines=()):
    """groups: category labels; series: [(name, color, [value or None per group])]."""
    W, H = 860, 480
    L, R, T, B = 80, 200, 50, 60
    vals = [v for _, _, vs in series for v in vs if v is not None] + [h[0] for h in hlines]
    if not vals:
        return False
    yhi = max(vals) * 1.15
    yt = nice_lin_ticks(0, yhi)

    def sy(v):
        return H - B - v / yhi * (H - T - B)

    s = svg_open(W, H)
    s.append(f'<text x="{W / 2 - R / 2 + L / 2}" y="28" text-anchor="middle" font-size="16" '
             f'font-weight="bold">{html.escape(title)}</text>')
    for t in yt:
        y = sy(t)
        s.append(f'<line x1="{L}" y1="{y:.1f}" x2="{W - R}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        s.append(f'<text x="{L - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt_tick(t)}</text>')
    gw = (W - L - R) / len(groups)
    bw = gw * 0.8 / max(1, len(series))
    for gi, g in enumerate(groups):
        gx = L + gi * gw
        s.append(f'<text x="{gx + gw / 2:.1f}" y="{H - B + 18}" text-anchor="middle">{html.escape(g)}</text>')
        for si_, (_, color, vs) in enumerate(series):
            v = vs[gi]
            if v is None:
                continue
            x = gx + gw * 0.1 + si_ * bw
            s.append(f'<rect x="{x:.1f}" y="{sy(v):.1f}" width="{bw - 2:.1f}" '
                     f'height="{H - B - sy(v):.1f}" fill="{color}"/>')
            s.append(f'<text x="{x + bw / 2 - 1:.1f}" y="{sy(v) - 4:.1f}" text-anchor="middle" '
                     f'font-size="11">{v:.1f}</text>')
    s.append(f'<rect x="{L}" y="{T}" width="{W - L - R}" height="{H - T - B}" fill="none" stroke="#444"/>')
    s.append(f'<text transform="translate(20,{T + (H - T - B) / 2}) rotate(-90)" '
             f'text-anchor="middle">{html.escape(ylabel)}</text>')
    for i, (name, color, _) in enumerate(series):
        ly = T + 20 + i * 24
        s.append(f'<rect x="{W - R + 15}" y="{ly - 8}" width="22" height="14" fill="{color}"/>')
        s.append(f'<text x="{W - R + 46}" y="{ly + 4}">{html.escape(name)}</text>')
    for j, (value, label) in enumerate(hlines):
        y = sy(value)
        s.append(f'<line x1="{L}" y1="{y:.1f}" x2="{W - R}" y2="{y:.1f}" stroke="#444" stroke-dasharray="6,4"/>')
        ly = T + 20 + (len(series) + j) * 24 + 6
        s.append(f'<line x1="{W - R + 15}" y1="{ly}" x2="{W - R + 37}" y2="{ly}" stroke="#444" stroke-dasharray="6,4"/>')
        s.append(f'<text x="{W - R + 46}" y="{ly + 4}" font-size="12">{html.escape(label)}</text>')
    s.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(s) + "\n")
    return True


# ---------------------------------------------------------------- analysis

def run_of(r):
    return r.get("tag", "run=1")


def ladder_steps(by, server, runs):
    """A server's saturation-ladder steps by offered load, in order of load, keeping the loads
    that at least half of the runs reached."""
    steps = defaultdict(list)
    for r in by["saturation-step"]:
        if r["server"] == server:
            steps[r["offered_deliveries_per_s"]].append(r)
    return [(off, rs) for off, rs in sorted(steps.items()) if len(rs) * 2 >= runs]


def correctness_failed(r):
    return any(r.get(k) for k in ("missing", "gaps", "duplicates", "errors", "closed_connections")) \
        or "publish_error" in r


def timing_failed(r):
    f = r.get("fail") or ""
    return "p99" in f or "behind" in f or "below offered" in f


def build(results, machine, plots_dir, doc_dir):
    by = defaultdict(list)
    for r in results:
        by[r["scenario"]].append(r)
    servers = servers_in(results)
    runs = len({run_of(r) for r in results if r["scenario"] != "idle"}) or 1

    # Fan-out at a fixed rate.
    fan = {}
    for s in servers:
        rs = [r for r in by["fanout"] if r["server"] == s]
        if not rs:
            continue
        fan[s] = {k: median([r.get(k) for r in rs]) for k in (
            "offered_deliveries_per_s", "delivered_per_s", "p50_ms", "p90_ms", "p99_ms",
            "p999_ms", "max_ms", "server_cpu", "generator_cpu", "frame_bytes")}
        fan[s]["missing"] = sum(r.get("missing", 0) for r in rs)
        fan[s]["passed"] = sum(1 for r in rs if r.get("pass"))
        fan[s]["runs"] = len(rs)

    # Saturation.
    sat = {}
    for s in servers:
        rs = [r for r in by["saturation"] if r["server"] == s]
        if not rs:
            continue
        sat[s] = {
            "median": median([r.get("saturation_delivered_per_s") or 0 for r in rs]),
            "all": [r.get("saturation_delivered_per_s") for r in rs],
            "reasons": [r.get("first_fail_reason") or "max rate reached" for r in rs],
            "reached_max": any(r.get("reached_max_rate") for r in rs),
        }

    # Latency against offered load: median over runs of each ladder step.
    curve = {}
    for s in servers:
        pts = []
        for offered, rs in ladder_steps(by, s, runs):
            passed = sum(1 for r in rs if r.get("pass"))
            pts.append({
                "offered": offered,
                "delivered": median([r.get("delivered_per_s") for r in rs]),
                "p50": median([r.get("p50_ms") for r in rs]),
                "p99": median([r.get("p99_ms") for r in rs]),
                "p99_runs": sorted(r.get("p99_ms") for r in rs if r.get("p99_ms") is not None),
                "p999": median([r.get("p999_ms") for r in rs]),
                "server_cpu": median([r.get("server_cpu") for r in rs]),
                "generator_cpu": median([r.get("generator_cpu") for r in rs]),
                "per_write": median([r.get("deliveries_per_write") for r in rs]),
                "writes": median([r.get("server_writes_per_s") for r in rs]),
                "ok": passed * 2 > len(rs),
                "n": len(rs),
            })
        curve[s] = pts

    # Churn.
    churn = {}
    for s in servers:
        rs = [r for r in by["churn"] if r["server"] == s]
        if not rs:
            continue
        churn[s] = {k: median([r.get(k) for r in rs]) for k in (
            "churn_per_s", "open_join_p50_ms", "open_join_p99_ms", "room_p50_ms", "room_p99_ms",
            "room_server_cpu", "room_generator_cpu")}
        churn[s]["errors"] = sum(r.get("churn_errors", 0) for r in rs)
        churn[s]["missing"] = sum(r.get("room_missing", 0) or 0 for r in rs)
        churn[s]["first_error"] = next((r["churn_first_error"] for r in rs if r.get("churn_first_error")), "")

    # Idle.
    idle = defaultdict(dict)
    for r in by["idle"]:
        # Connections each in a room of their own are the rooms section's (SECTION=rooms).
        if not r.get("room_per_connection"):
            idle[r["server"]][r["requested"]] = r
    sizes = sorted({n for s in idle for n in idle[s]})

    # Loss below saturation.
    loss = defaultdict(list)
    for r in by["fanout"]:
        if correctness_failed(r):
            loss[r["server"]].append(f"fan-out {run_of(r)}: {r.get('fail')}")
    for r in by["saturation-step"]:
        if correctness_failed(r) and not timing_failed(r):
            loss[r["server"]].append(f"saturation step at {si(r['offered_deliveries_per_s'])}/s "
                                     f"{run_of(r)}: {r.get('fail')}")
    for r in by["churn"]:
        if r.get("room_missing") or r.get("churn_errors") or r.get("room_closed_connections"):
            loss[r["server"]].append(f"churn {run_of(r)}: {r.get('room_missing', 0)} missing, "
                                     f"{r.get('churn_errors', 0)} churn errors")
    for r in by["idle"]:
        if r.get("room_per_connection"):
            continue
        if r.get("failed") or r.get("dropped_while_idle"):
            loss[r["server"]].append(f"idle {r['requested']}: {r.get('failed')} failed, "
                                     f"{r.get('dropped_while_idle')} dropped")

    # Plots.
    os.makedirs(plots_dir, exist_ok=True)
    max_p99 = next((r.get("max_p99_ms") for r in by["saturation"]), 50)
    rel = os.path.relpath(plots_dir, doc_dir)
    plots = []
    series = [(LABEL.get(s, s), COLOR.get(s, "#333"),
               [(p["offered"], p["p99"], p["ok"]) for p in curve.get(s, [])]) for s in servers]
    if line_chart(os.path.join(plots_dir, "latency-p99.svg"),
                  "p99 latency against offered load (fan-out)", "offered deliveries per second",
                  "p99 latency (ms)", series, hlines=[(max_p99, f"limit {max_p99:g} ms")]):
        plots.append(("latency-p99.svg", "p99 latency against offered load"))
    series = [(LABEL.get(s, s), COLOR.get(s, "#333"),
               [(p["offered"], p["p50"], p["ok"]) for p in curve.get(s, [])]) for s in servers]
    if line_chart(os.path.join(plots_dir, "latency-p50.svg"),
                  "median latency against offered load (fan-out)", "offered deliveries per second",
                  "p50 latency (ms)", series):
        plots.append(("latency-p50.svg", "median latency against offered load"))
    series = [(LABEL.get(s, s), COLOR.get(s, "#333"),
               [(p["offered"], p["delivered"], p["ok"]) for p in curve.get(s, [])]) for s in servers]
    if line_chart(os.path.join(plots_dir, "throughput.svg"),
                  "delivered against offered (fan-out)", "offered deliveries per second",
                  "delivered per second", series):
        plots.append(("throughput.svg", "delivered against offered"))
    if sizes:
        def per_conn_kib(s, n):
            b = idle[s].get(n, {}).get("rss_per_connection_bytes")
            return None if b is None else b / 1024
        series = [(LABEL.get(s, s), COLOR.get(s, "#333"), [per_conn_kib(s, n) for n in sizes])
                  for s in servers if s in idle]
        if bar_chart(os.path.join(plots_dir, "memory.svg"),
                     "server resident memory per idle connection", "KiB per connection",
                     [f"{n:,} connections" for n in sizes], series,
                     hlines=[(4, "target 4 KiB")]):
            plots.append(("memory.svg", "server memory per idle connection"))

    return dict(servers=servers, runs=runs, fan=fan, sat=sat, curve=curve, churn=churn,
                idle=idle, sizes=sizes, loss=loss, plots=plots, rel=rel, max_p99=max_p99,
                by=by, machine=machine, redis=redis_figures(by, runs),
                compression=compression_figures(by, runs), rooms=rooms_figures(by),
                bigroom={n: d for n in BIGROOM if (d := ladder_figures(by, runs, n))})


def how_it_was_run(m, results_path):
    """The start of a section's "How it was run" line: the command, the raw results, the
    machine, its load before and after, and how long the run took."""
    return (f"How it was run: `{m.get('command', 'bench/run.sh')}` (raw results: "
            f"`{os.path.relpath(results_path)}`), on {m.get('cpu')}, {m.get('cpus')} CPUs; "
            f"load before `{m.get('uptime_before')}`, after `{m.get('uptime_after')}` "
            f"({m.get('elapsed_s', 0) // 60} min {m.get('elapsed_s', 0) % 60} s)")


def how_it_was_run_pinned(a, results_path):
    """The "How it was run" line of a section measured `RUNS` times, interleaved, on the
    pinned CPUs."""
    return (how_it_was_run(a["machine"], results_path) + f"; {a['runs']} run(s), "
            "interleaved, medians over runs. Server on CPU 0, generator on CPU 1, as above.")


def rooms_figures(by):
    """The join storm per server (medians over runs, counts the worst run's) and idle
    connections each in a room of their own against bare ones, per size."""
    storm = {}
    for s in servers_in(by["join-storm"]):
        rs = [r for r in by["join-storm"] if r["server"] == s]
        d = {k: median([r.get(k) for r in rs]) for k in (
            "join_p50_ms", "join_p99_ms", "join_max_ms", "rss_per_member_bytes", "server_cpu",
            "generator_cpu", "server_cpu_seconds", "generator_cpu_seconds", "storm_secs",
            "started_per_s", "wire_bytes_per_member", "wire_bytes_per_s_storm", "reach_p50_ms",
            "reach_max_ms", "reach_secs", "server_rss_before", "server_rss_after",
            "server_hwm", "presence_frames_total")}
        # Correctness: the worst run.
        d["answered"] = min(r.get("joins_answered", 0) for r in rs)
        d["failed"] = max(r.get("joins_failed", 0) for r in rs)
        d["timed_out"] = max(r.get("joins_timed_out", 0) for r in rs)
        d["late"] = max(r.get("joins_late", 0) for r in rs)
        d["closed"] = max(r.get("closed_connections", 0) for r in rs)
        d["reach"] = min(r.get("reach", 0) for r in rs)
        d["worst_p99"] = max((r.get("join_p99_ms") for r in rs if r.get("join_p99_ms") is not None),
                             default=None)
        d["worst_bytes"] = max((r.get("rss_per_member_bytes") for r in rs
                                if r.get("rss_per_member_bytes") is not None), default=None)
        codes = defaultdict(int)
        for r in rs:
            for code, n in (r.get("close_codes") or {}).items():
                codes[code] += n
        d["close_codes"] = dict(codes)
        # The member that joined before the storm and never read (runs with --deaf).
        endings = defaultdict(int)
        for r in rs:
            if r.get("deaf_ending"):
                endings[r["deaf_ending"]] += 1
        d["deaf"] = dict(endings)
        d["deaf_bytes"] = median([r.get("deaf_bytes_read") for r in rs])
        d["deaf_secs"] = rs[0].get("deaf_secs")
        d["members"] = rs[0].get("members")
        d["rate"] = rs[0].get("rate")
        d["runs"] = len(rs)
        d["per_run_p99"] = [r.get("join_p99_ms") for r in rs]
        d["first_error"] = next((r["first_error"] for r in rs if r.get("first_error")), "")
        storm[s] = d
    idle_rooms = defaultdict(dict)
    bare = defaultdict(dict)
    rooms_runs = [r for r in by["idle"] if r.get("room_per_connection")]
    sizes = sorted({r["requested"] for r in rooms_runs})
    for n in sizes:
        for s in servers_in(by["idle"]):
            for room, out in ((True, idle_rooms), (False, bare)):
                rs = [r for r in by["idle"] if r["server"] == s and r["requested"] == n
                      and bool(r.get("room_per_connection")) == room]
                if rs:
                    out[s][n] = {
                        "per_conn": median([r.get("rss_per_connection_bytes") for r in rs]),
                        "worst": max((r.get("rss_per_connection_bytes") for r in rs
                                      if r.get("rss_per_connection_bytes") is not None), default=None),
                        "connections": min(r.get("connections", 0) for r in rs),
                        "failed": max(r.get("failed", 0) for r in rs),
                        "dropped": max(r.get("dropped_while_idle", 0) for r in rs),
                        "connect_secs": median([r.get("connect_secs") for r in rs]),
                        "runs": len(rs),
                        "first_error": next((r["first_error"] for r in rs if r.get("first_error")), ""),
                    }
    return dict(storm=storm, idle_rooms=idle_rooms, bare=bare, sizes=sizes)


def rooms_targets(rm):
    """The issue's targets: (target, measured, met)."""
    out = []
    sb = rm["storm"].get("switchboard")
    if sb:
        n, rate = sb["members"], sb["rate"]
        who = f"{n:,} members joining at {rate:,.0f}/s"
        out.append((f"{who}: every join answered",
                    f"{sb['answered']:,} of {n:,} answered (worst run); {sb['failed']} failed, "
                    f"{sb['timed_out']} timed out", sb["answered"] == n))
        codes = ", ".join(f"{c}: {k}" for c, k in sorted(sb["close_codes"].items()))
        out.append((f"{who}: none dropped",
                    f"{sb['closed']} connection(s) closed by the server" + (f" ({codes})" if codes else ""),
                    sb["closed"] == 0 and sb["failed"] == 0))
        p99 = sb["worst_p99"]
        out.append((f"{who}: join p99 < {STORM_MAX_P99_MS} ms",
                    f"{ms(p99)} ms (worst run)" + (f"; {p99 / STORM_MAX_P99_MS:.1f}× the target"
                                                   if p99 is not None and p99 >= STORM_MAX_P99_MS else ""),
                    p99 is not None and p99 < STORM_MAX_P99_MS and sb["answered"] == n))
        b = sb["worst_bytes"]
        out.append((f"{who}: ≤ 2 KiB server memory per member",
                    f"{kib(b)} ({b:,.0f} B, worst run)" if b is not None else "–",
                    b is not None and b <= STORM_MAX_BYTES))
        out.append((f"{who}: a publish reaches all {n:,}",
                    f"{sb['reach']:,} of {n:,} within 10 s (worst run)", sb["reach"] >= n))
        if sb["deaf"]:
            out.append(("a member of that room that never reads is closed without delaying "
                        "the others (4009 once its queue is full, 4000 when it leaves a ping "
                        "unanswered)",
                        deaf_cell(sb) + " (the others: the rows above)",
                        set(sb["deaf"]) <= {"closed 4009", "closed 4000", "dropped"}))
    for size, d in sorted(rm["idle_rooms"].get("switchboard", {}).items()):
        b = d["worst"]
        full = d["connections"] == size and d["failed"] == 0 and d["dropped"] == 0
        out.append((f"{size:,} connections each in a room of its own: ≤ 1.5 KiB per connection",
                    (f"{kib(b)} ({b:,.0f} B, worst run)" if b is not None else "–")
                    + ("" if full else f"; {d['connections']:,} of {size:,} connected, "
                       f"{d['failed']} failed"),
                    b is not None and b <= ROOM_IDLE_MAX_BYTES and full))
    return out


def deaf_cell(d):
    """How the member that never read ended, over the runs, and what it had been sent."""
    if not d["deaf"]:
        return "–"
    ends = ", ".join(f"{e} ×{k}" if k > 1 else e for e, k in sorted(d["deaf"].items()))
    b = d["deaf_bytes"]
    return ends + ("" if b is None else f"; read {b / 1048576:.2f} MiB at the end")


def render_rooms(a, analysis, results_path):
    """The section "Large rooms and a room per connection"; `analysis` is its hand-written part."""
    rm = a["rooms"]
    if not rm["storm"] and not rm["idle_rooms"]:
        return []
    m = a["machine"]
    L = [RMBEGIN, "## Large rooms and a room per connection", ""]
    L.append(how_it_was_run(m, results_path) + f"; {a['runs']} run(s), "
             "interleaved, each measurement on a freshly started server; medians over runs, "
             "counts of the worst run. Server on CPU 0, generator on CPU 1, as above. "
             "`switchboard-count` is Switchboard with `[namespaces.default] presence = \"count\"` "
             "(rooms tell their members only how many there are); `switchboard` has full "
             "presence, the default. Switchboard here runs with `--max-pending-connections 512` "
             "(1,024 by default), so that 19,000 connections fit under the open-file cap of "
             "20,000 together with the descriptors it keeps for handshakes.")
    L.append("")
    st = rm["storm"]
    if st:
        any_s = next(iter(st.values()))
        L.append("### Join storm")
        L.append("")
        L.append(f"{any_s['members']:,} clients join one room, started at {any_s['rate']:,.0f} per "
                 "second (paced evenly, from 127.0.0.2–9, one generator process): each opens its "
                 "connection (Switchboard: `welcome` received), sends `join` and waits for "
                 "`joined`; the join time is from sending `join` to reading its reply, in the "
                 "generator (so it includes the generator's own delay when it is busy). A join "
                 "not answered within 10 s is *timed out*; *failed* counts connections that could "
                 "not be opened, joins refused, and connections lost before the reply. Every "
                 "member keeps reading afterwards (presence frames discarded, pings answered). "
                 "Server memory per member: (`VmRSS` 2 s after the last join was answered − "
                 "`VmRSS` before the first connection) / members. CPU: share of one core, from "
                 "the first connection to the last join's outcome. Then the first member "
                 "publishes one message to the room; *reach* is how many members receive it "
                 "within 10 s. *Presence read*: bytes the generator read per member over the "
                 "whole run (nearly all of it presence frames).")
        L.append("")
        L.append("| server | joins answered | failed | timed out | join p50 ms | join p99 ms | "
                 "join max ms | closed by the server | server memory per member | reach | "
                 "server CPU | generator CPU | presence read per member |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for s in servers_in([{"server": k} for k in st]):
            d = st[s]
            codes = ", ".join(f"{c}: {k}" for c, k in sorted(d["close_codes"].items()))
            closed = f"{d['closed']}" + (f" ({codes})" if codes else "")
            b = d["rss_per_member_bytes"]
            wire = d["wire_bytes_per_member"]
            L.append(f"| {LABEL.get(s, s)} | {d['answered']:,} of {d['members']:,} | {d['failed']} | "
                     f"{d['timed_out']} | {ms(d['join_p50_ms'])} | {ms(d['join_p99_ms'])} | "
                     f"{ms(d['join_max_ms'])} | {closed} | "
                     f"**{kib(b)}**{'' if b is None else f' ({b:,.0f} B)'} | "
                     f"{d['reach']:,} of {d['members']:,} | {num(d['server_cpu'])} | "
                     f"{num(d['generator_cpu'])} | "
                     f"{'–' if wire is None else f'{wire / 1048576:.2f} MiB' if wire >= 1048576 else f'{wire / 1024:.1f} KiB'} |")
        L.append("")
        L.append("More of each (medians): time from the first connection to the last join's "
                 "outcome, clients started per second, CPU seconds used by the server and the "
                 "generator over the whole run, bytes the generator read per second during the "
                 "storm, and when the published message arrived (p50 / max over the members "
                 "that got it). *Never reads*: one more member joins the room before the storm "
                 f"and then reads nothing for {num(any_s.get('deaf_secs'), '{:g}')} s after its join "
                 "(`DEAF_SECS`), then reads what reached it: `closed 4009` is the server's close frame for a slow consumer, `closed 4000` "
                 "for a heartbeat left unanswered, `dropped` the connection's end without a "
                 "close frame (the server gave up writing to it), `open` that it was still a "
                 "member; and the bytes it had been sent.")
        L.append("")
        L.append("| server | storm s | started/s | server CPU s | generator CPU s | read during the "
                 "storm | reach p50 / max ms | server peak RSS | never reads |")
        L.append("|---|---|---|---|---|---|---|---|---|")
        for s in servers_in([{"server": k} for k in st]):
            d = st[s]
            rate = d["wire_bytes_per_s_storm"]
            hwm = d["server_hwm"]
            L.append(f"| {LABEL.get(s, s)} | {num(d['storm_secs'])} | {si(d['started_per_s'])} | "
                     f"{num(d['server_cpu_seconds'])} | {num(d['generator_cpu_seconds'])} | "
                     f"{'–' if rate is None else f'{rate / 1048576:.1f} MiB/s'} | "
                     f"{ms(d['reach_p50_ms'])} / {ms(d['reach_max_ms'])} | "
                     f"{'–' if hwm is None else f'{hwm / 1048576:.1f} MiB'} | {deaf_cell(d)} |")
        L.append("")
        errs = [(s, d["first_error"]) for s, d in st.items() if d["first_error"]]
        for s, e in errs:
            L.append(f"- {LABEL.get(s, s)}: first problem seen: `{e}`")
        if errs:
            L.append("")
    if rm["idle_rooms"]:
        L.append("### A room per connection")
        L.append("")
        L.append("Idle connections as in [Idle connections](#idle-connections), but each joins a "
                 "room of its own once it is open (`own<shard>-<i>`: one member per room) and "
                 "waits for the reply before it idles; on a freshly started server, memory read "
                 "before the first connection and 2 s after the last. Switchboard's bare "
                 "connections (no room) were measured in the same run, also on a fresh server.")
        L.append("")
        L.append("| server | connections | failed | per connection, each in a room of its own | "
                 "bare connection (no room) | the room costs |")
        L.append("|---|---|---|---|---|---|")
        for n in rm["sizes"]:
            for s in servers_in([{"server": k} for k in rm["idle_rooms"]]):
                d = rm["idle_rooms"][s].get(n)
                if not d:
                    continue
                b = rm["bare"].get(s, {}).get(n)
                bare_b = b["per_conn"] if b else None
                extra = (f"{(d['per_conn'] - bare_b):,.0f} B"
                         if d["per_conn"] is not None and bare_b is not None else "–")
                L.append(f"| {LABEL.get(s, s)} | {d['connections']:,} of {n:,} | {d['failed']} | "
                         f"**{kib(d['per_conn'])}** | {kib(bare_b)} | {extra} |")
        L.append("")
        errs = [(s, n, d["first_error"]) for s in rm["idle_rooms"] for n, d in rm["idle_rooms"][s].items()
                if d["first_error"]]
        errs += [(s, n, d["first_error"]) for s in rm["bare"] for n, d in rm["bare"][s].items()
                 if d["first_error"]]
        for s, n, e in errs:
            L.append(f"- {LABEL.get(s, s)} at {n:,}: first failure: `{e}`")
        if errs:
            L.append("")
    L.append("### Targets")
    L.append("")
    L.append("| target | measured | met |")
    L.append("|---|---|---|")
    for name, measured, ok in rooms_targets(rm):
        L.append(f"| {name} | {measured} | {'yes' if ok else '**no**'} |")
    L.append("")
    L.append(analysis)
    L.append(RMEND)
    L.append("")
    return L


def redis_figures(by, runs):
    """One node against two nodes over Redis: per configuration, the fixed-rate fan-out
    and every ladder step with the CPU of the nodes and of Redis, and Redis's own counts."""
    out = {}
    for s in (SINGLE, CLUSTER):
        fan = [r for r in by["fanout"] if r["server"] == s]
        sat = [r for r in by["saturation"] if r["server"] == s]
        if not fan and not sat:
            continue

        def summary(rs):
            d = {k: median([r.get(k) for r in rs]) for k in (
                "delivered_per_s", "p50_ms", "p99_ms", "p999_ms", "server_cpu", "broker_cpu",
                "redis_commands_per_publish", "redis_reads_per_publish",
                "redis_cpu_us_per_publish", "redis_net_in_per_publish",
                "redis_net_out_per_publish", "deliveries_per_write")}
            d["nodes_cpu"] = median([r["server_cpu"] - (r.get("broker_cpu") or 0) for r in rs
                                     if r.get("server_cpu") is not None])
            d["cpu_per_m"] = median([cpu_per_m(r.get("server_cpu"), r.get("delivered_per_s"))
                                     for r in rs])
            d["nodes_cpu_per_m"] = median([
                cpu_per_m(r["server_cpu"] - (r.get("broker_cpu") or 0), r.get("delivered_per_s"))
                for r in rs if r.get("server_cpu") is not None])
            d["redis_cpu_per_m"] = median([cpu_per_m(r.get("broker_cpu"), r.get("delivered_per_s"))
                                           for r in rs])
            d["redis_share"] = median([r["broker_cpu"] / r["server_cpu"] for r in rs
                                       if r.get("broker_cpu") is not None and r.get("server_cpu")])
            d["p99_runs"] = sorted(r["p99_ms"] for r in rs if r.get("p99_ms") is not None)
            d["passed"] = sum(1 for r in rs if r.get("pass"))
            d["runs"] = len(rs)
            d["offered"] = median([r.get("offered_deliveries_per_s") for r in rs])
            d["nodes"] = median([r.get("nodes") for r in rs])
            cmds = defaultdict(lambda: defaultdict(list))
            for r in rs:
                for name, c in (r.get("redis_commands") or {}).items():
                    cmds[name]["per_publish"].append(c.get("per_publish"))
                    cmds[name]["us_per_call"].append(c.get("us_per_call"))
            d["commands"] = {n: {k: median(v) for k, v in c.items()} for n, c in cmds.items()}
            return d

        ladder = []
        for offered, rs in ladder_steps(by, s, runs):
            d = summary(rs)
            d["ok"] = d["passed"] * 2 > len(rs)
            ladder.append(d)
        best = None  # the sustained step of the highest delivered rate (medians over runs)
        for d in ladder:
            if d["ok"] and (best is None or d["delivered_per_s"] > best["delivered_per_s"]):
                best = d
        # A ladder ended by steps that stayed noisy (other work on the machine over the limit
        # after every retry) measured the machine, not the server: it is shown, marked, and
        # left out of the saturation figure when a ladder that other work did not end exists.
        def noise_ended(r):
            rs = [x for x in by["saturation-step"] if x["server"] == s and run_of(x) == run_of(r)]
            ending = [x for x in rs if not x.get("pass")][-2:]
            return bool(ending) and any(x.get("noisy") for x in ending)
        quiet = [r for r in sat if not noise_ended(r)]
        counted = quiet or sat
        # Every measurement other work left alone (not noisy), by offered load: the fixed-rate
        # fan-out and the ladder steps alike.
        quiet_by = defaultdict(list)
        for x in fan + [x for x in by["saturation-step"] if x["server"] == s]:
            if not x.get("noisy") and x.get("p99_ms") is not None:
                quiet_by[x["offered_deliveries_per_s"]].append(x)
        out[s] = {
            "quiet_steps": {k: summary(v) for k, v in quiet_by.items()},
            "fan": summary(fan) if fan else None,
            "sat": median([r.get("saturation_delivered_per_s") or 0 for r in counted]) if sat else None,
            "sat_quiet": len(quiet),
            "sat_runs": [(r.get("saturation_delivered_per_s"), noise_ended(r)) for r in sat],
            "reasons": sorted({r.get("first_fail_reason") or "max rate reached" for r in sat}),
            "ladder": ladder,
            "best": best,
        }
    return out


def step_summary(rs):
    """Medians over runs of one fan-out step (a fixed rate, or a ladder step), with server CPU
    per million deliveries and whether most runs sustained it."""
    d = {k: median([r.get(k) for r in rs]) for k in (
        "offered_deliveries_per_s", "delivered_per_s", "p50_ms", "p99_ms", "server_cpu",
        "generator_cpu", "wire_bytes_per_delivery", "frame_bytes", "deliveries_per_write")}
    d["cpu_per_m"] = median([cpu_per_m(r.get("server_cpu"), r.get("delivered_per_s")) for r in rs])
    d["p99_runs"] = sorted(r.get("p99_ms") for r in rs if r.get("p99_ms") is not None)
    d["passed"] = sum(1 for r in rs if r.get("pass"))
    d["runs"] = len(rs)
    d["ok"] = d["passed"] * 2 > len(rs)
    d["compressed"] = any(r.get("compression") for r in rs)
    return d


def ladder_ends(by, s, sat):
    """What ended each of a server's saturation ladders: the first step not sustained, and
    whether the generator was at its core's limit there (then the server's saturation is a
    lower bound)."""
    ends = []
    for r in sat:
        failed = [x for x in by["saturation-step"] if x["server"] == s
                  and run_of(x) == run_of(r) and not x.get("pass")]
        first = min(failed, key=lambda x: x["offered_deliveries_per_s"]) if failed else None
        ends.append({
            "reason": r.get("first_fail_reason") or "max rate reached",
            "generator_bound": bool(first and (first.get("generator_cpu") or 0) >= 0.9
                                    and (first.get("server_cpu") or 0) < 0.9),
            "server_cpu": first.get("server_cpu") if first else None,
            "generator_cpu": first.get("generator_cpu") if first else None,
        })
    return ends


def ladder_figures(by, runs, s):
    """A server's fixed-rate fan-out, saturation and every ladder step, or None."""
    fan = [r for r in by["fanout"] if r["server"] == s]
    sat = [r for r in by["saturation"] if r["server"] == s]
    if not fan and not sat:
        return None
    return {
        "fan": step_summary(fan) if fan else None,
        "fixed": {off: step_summary(rs) for off, rs in sorted(
            group_by(fan, "offered_deliveries_per_s").items())},
        "sat": median([r.get("saturation_delivered_per_s") or 0 for r in sat]) if sat else None,
        "sat_runs": [r.get("saturation_delivered_per_s") for r in sat],
        "ends": ladder_ends(by, s, sat),
        "ladder": {off: step_summary(rs) for off, rs in ladder_steps(by, s, runs)},
    }


def group_by(records, key):
    out = defaultdict(list)
    for r in records:
        out[r.get(key)].append(r)
    return out


def compression_figures(by, runs):
    """Each server plain and compressing: the fixed-rate fan-out, saturation, and every
    ladder step with its CPU per delivery and bytes on the wire per delivery."""
    out = {}
    for s in [n for pair in COMPRESSION for n in pair]:
        d = ladder_figures(by, runs, s)
        if d:
            out[s] = d
    return out


def compression_targets(c):
    """The issue's two targets. Where the compressed ladder ended because the generator,
    inflating every message, was at its limit, its saturation is a lower bound and the
    verdict comes from server CPU per delivery at the highest load both sustained."""
    out = []
    sb, sbz, nodez = c.get("switchboard"), c.get("switchboard-deflate"), c.get("node-ws-deflate")
    if sb and sbz and sb.get("sat") and sbz.get("sat") is not None:
        share = sbz["sat"] / sb["sat"]
        bound = sum(e["generator_bound"] for e in sbz["ends"]) * 2 > len(sbz["ends"])
        common = [off for off in set(sb["ladder"]) & set(sbz["ladder"])
                  if sb["ladder"][off]["ok"] and sbz["ladder"][off]["ok"]
                  and sb["ladder"][off]["cpu_per_m"] and sbz["ladder"][off]["cpu_per_m"]]
        measured = f"saturation {si(sbz['sat'])}/s vs {si(sb['sat'])}/s = {share:.0%}"
        ok = share >= DEFLATE_MIN_SHARE
        if bound and common:
            # Deliveries per CPU second, compressing over plain, at every load both sustained;
            # the verdict takes the least of them.
            ratios = sorted((sb["ladder"][off]["cpu_per_m"] / sbz["ladder"][off]["cpu_per_m"], off)
                            for off in common)
            least, at = ratios[0]
            measured = (f"the generator, inflating every message, was at its core's limit where the "
                        f"compressed ladders ended, so their {si(sbz['sat'])}/s ({share:.0%} of "
                        f"{si(sb['sat'])}/s) is the generator's. Server CPU per delivery instead, at "
                        f"the {len(ratios)} loads both sustained ({si(min(common))}–{si(max(common))}/s): "
                        f"compressing delivers {least:.0%}–{ratios[-1][0]:.0%} of the uncompressed "
                        f"deliveries per CPU second, the least at {si(at)}/s "
                        f"({sbz['ladder'][at]['cpu_per_m']:.2f} against {sb['ladder'][at]['cpu_per_m']:.2f} "
                        f"CPU s per million deliveries)")
            ok = least >= DEFLATE_MIN_SHARE
        out.append(("with compression, ≥ 50% of the uncompressed saturation", measured, ok))
    if sbz and nodez and sbz.get("sat") is not None:
        if nodez.get("sat"):
            x = sbz["sat"] / nodez["sat"]
            lower = " (a lower bound: ours ended at the generator's limit)" if any(
                e["generator_bound"] for e in sbz["ends"]) else ""
            out.append(("with compression, ≥ 5× Node ws with perMessageDeflate",
                        f"{si(sbz['sat'])}/s vs {si(nodez['sat'])}/s = {x:.1f}×{lower}",
                        x >= DEFLATE_MIN_VS_NODE))
        else:
            out.append(("with compression, ≥ 5× Node ws with perMessageDeflate",
                        f"{si(sbz['sat'])}/s vs none: Node ws sustained no step of its ladder", True))
    return out


def render_compression(a, analysis, results_path):
    """The section "Compression"; `analysis` is its hand-written part."""
    c = a["compression"]
    if "switchboard-deflate" not in c:
        return []
    fan_any = next((r for r in a["by"]["fanout"] if r["server"] in c), {})
    L = [CBEGIN, "## Compression", ""]
    L.append(how_it_was_run_pinned(a, results_path))
    L.append("")
    L.append(f"The fan-out shape of the other sections ({fan_any.get('rooms', '?')} rooms × "
             f"{fan_any.get('members', '?')} members) with {fan_any.get('payload_bytes', '?')} bytes "
             "of text in each message's `data` (words, every message different: it compresses "
             "about as chat text does). In the *compression* configurations every member offers "
             "permessage-deflate as Chromium does (`permessage-deflate; client_max_window_bits`) "
             "and the run fails unless the server accepts it for every member; the generator "
             "inflates and checks every message. **Switchboard** with its defaults: level 1, "
             "messages under 128 B plain, `server_no_context_takeover`, each message to a room "
             "deflated once and the same compressed frame queued for every member. **Bun** "
             "(`perMessageDeflate: true`, `server.publish(room, text, true)`): uWebSockets' "
             "shared compressor. **Node ws** (`perMessageDeflate: true`, ws's defaults: zlib's "
             "default level, context takeover, messages under 1 KiB plain): every member's copy "
             "deflated by its own connection's zlib stream.")
    L.append("")
    L.append("| configuration | saturation (p99 ≤ "
             f"{a['max_p99']:g} ms) | per run | what ended the ladder | bytes on the wire per "
             "delivery | message bytes | p99 at the fixed rate | CPU s per million deliveries "
             "at the fixed rate |")
    L.append("|---|---|---|---|---|---|---|---|")
    for pair in COMPRESSION:
        for s in pair:
            d = c.get(s)
            if not d:
                continue
            f = d["fan"] or {}
            ends = sorted({e["reason"] + (" (generator at its limit)" if e["generator_bound"] else "")
                           for e in d["ends"]})
            L.append(f"| {LABEL.get(s, s)} | **{si(d['sat'])}/s** | "
                     f"{', '.join(si(v) for v in d['sat_runs'])} | {'; '.join(ends)} | "
                     f"{num(f.get('wire_bytes_per_delivery'), '{:.0f}')} | "
                     f"{num(f.get('frame_bytes'), '{:.0f}')} | {ms(f.get('p99_ms'))} | "
                     f"{num(f.get('cpu_per_m'))} |")
    L.append("")
    if fan_any:
        L.append(f"Fixed rate: {si(fan_any.get('offered_deliveries_per_s'))} deliveries/s. *Bytes on "
                 "the wire*: what members read from their sockets over deliveries, in the measured "
                 "window (frame headers included); *message bytes*: one delivered message as the "
                 "application sees it (inflated). CPU per million deliveries: the server's CPU "
                 "share ÷ deliveries per second × 10⁶.")
        L.append("")
    L.append("### Targets")
    L.append("")
    L.append("With compression, at least 50% of Switchboard's uncompressed saturation, and at least "
             "5× Node ws with compression (issue 13).")
    L.append("")
    L.append("| target | measured | met |")
    L.append("|---|---|---|")
    for name, measured, ok in compression_targets(c):
        L.append(f"| {name} | {measured} | {'yes' if ok else '**no**'} |")
    L.append("")
    loads = sorted({off for d in c.values() for off in d["ladder"]})
    shown = [s for pair in COMPRESSION for s in pair if s in c]
    if loads:
        L.append("### Every step (medians)")
        L.append("")
        L.append("CPU s per million deliveries / p99 ms / bytes on the wire per delivery at each "
                 "offered load of the ladder. ✗: not sustained.")
        L.append("")
        L.append("| offered/s | " + " | ".join(LABEL.get(s, s) for s in shown) + " |")
        L.append("|---|" + "---|" * len(shown))
        for off in loads:
            cells = []
            for s in shown:
                d = c[s]["ladder"].get(off)
                if not d:
                    cells.append("")
                    continue
                cells.append(f"{num(d['cpu_per_m'])} / {ms(d['p99_ms'])} / "
                             f"{num(d['wire_bytes_per_delivery'], '{:.0f}')}"
                             + ("" if d["ok"] else " ✗"))
            L.append(f"| {si(off)} | " + " | ".join(cells) + " |")
        L.append("")
    L.append(analysis)
    L.append(CEND)
    L.append("")
    return L


def bigroom_targets(b):
    """(target, measured, met) for Switchboard against Bun in the 200-member room."""
    sb, bun = b.get("switchboard"), b.get("bun")
    if not sb or not bun:
        return []
    out = []
    loads = sorted(set(sb["fixed"]) & set(bun["fixed"]))
    for off in loads:
        x, y = sb["fixed"][off], bun["fixed"][off]
        if x["cpu_per_m"] is not None and y["cpu_per_m"] is not None:
            ratio = x["cpu_per_m"] / y["cpu_per_m"]
            out.append((f"at {si(off)} deliveries/s: server CPU per delivery ≤ Bun's",
                        f"{x['cpu_per_m']:.2f} vs {y['cpu_per_m']:.2f} CPU s per million deliveries "
                        f"= {ratio:.2f}× (delivered {si(x['delivered_per_s'])}/s vs "
                        f"{si(y['delivered_per_s'])}/s)", ratio <= 1.0 and x["ok"]))
    for off in loads:
        x, y = sb["fixed"][off], bun["fixed"][off]
        if not y["ok"]:
            out.append((f"at {si(off)} deliveries/s: p99 ≤ Bun's", "Bun did not sustain this load", x["ok"]))
        elif x["p99_ms"] is not None and y["p99_ms"] is not None:
            out.append((f"at {si(off)} deliveries/s: p99 ≤ Bun's",
                        f"{ms(x['p99_ms'])} ms vs {ms(y['p99_ms'])} ms (per run "
                        f"{', '.join(ms(v) for v in x['p99_runs'])} vs "
                        f"{', '.join(ms(v) for v in y['p99_runs'])})",
                        x["p99_ms"] <= y["p99_ms"] and x["ok"]))
    if sb.get("sat") is not None and bun.get("sat"):
        lower = " (ours ended at the generator's limit: a lower bound)" if any(
            e["generator_bound"] for e in sb["ends"]) else ""
        ratio = sb["sat"] / bun["sat"]
        # Within 2%: both sustained the same step of the ladder, a tie.
        tie = " (the same step of the ladder: a tie)" if abs(ratio - 1) < 0.02 else ""
        out.append(("saturation above Bun's",
                    f"{si(sb['sat'])}/s vs {si(bun['sat'])}/s = {ratio:.2f}×{tie}{lower}",
                    ratio >= 1.02))
    return out


def render_bigroom(a, analysis, results_path):
    """The section "Fan-out in a 200-member room"; `analysis` is its hand-written part."""
    b = a["bigroom"]
    records = [r for r in a["by"]["fanout"] if r["server"] in b]
    if "switchboard" not in b or "bun" not in b or not records:
        return []
    shape = records[0]
    L = [BRBEGIN, "## Fan-out in a 200-member room", ""]
    L.append(how_it_was_run_pinned(a, results_path))
    L.append("")
    L.append(f"One room of {shape.get('members')} members, {shape.get('publishers')} of them "
             f"publishing {shape.get('payload_bytes')}-byte messages at a fixed rate; every message "
             "goes to every member, its publisher included. Each fixed load is a fan-out step of "
             "its own on the same server (members connect and join, 1 s of warm-up, then the "
             "measured window). **Bun** does the same job with `server.publish` (uWebSockets' "
             "topic broadcast, the message serialised once). *CPU s per million deliveries*: the "
             "server's CPU share over the window ÷ deliveries per second × 10⁶, a figure that "
             "stays honest when the generator is the limit.")
    L.append("")
    L.append("| offered/s | server | delivered/s | p50 ms | p99 ms | server CPU | CPU s per million "
             "deliveries | deliveries per write | generator CPU | runs passed |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for off in sorted({o for d in b.values() for o in d["fixed"]}):
        for s in BIGROOM:
            d = b.get(s, {}).get("fixed", {}).get(off)
            if not d:
                continue
            L.append(f"| {si(off)} | {LABEL.get(s, s)} | {si(d['delivered_per_s'])} | "
                     f"{ms(d['p50_ms'])} | {ms(d['p99_ms'])} | {num(d['server_cpu'])} | "
                     f"**{num(d['cpu_per_m'])}** | {num(d['deliveries_per_write'])} | "
                     f"{num(d['generator_cpu'])} | {d['passed']}/{d['runs']} |")
    L.append("")
    L.append(f"Saturation (p99 ≤ {a['max_p99']:g} ms, nothing lost, ≥ 95% of the offered "
             "deliveries delivered), the ladder rising by steps on a fresh set of members:")
    L.append("")
    L.append("| server | saturation | per run | what ended the ladder |")
    L.append("|---|---|---|---|")
    for s in BIGROOM:
        d = b.get(s)
        if not d or d.get("sat") is None:
            continue
        ends = sorted({e["reason"] + (" (generator at its limit)" if e["generator_bound"] else "")
                       for e in d["ends"]})
        L.append(f"| {LABEL.get(s, s)} | **{si(d['sat'])}/s** | "
                 f"{', '.join(si(v) for v in d['sat_runs'])} | {'; '.join(ends)} |")
    L.append("")
    L.append("### Targets")
    L.append("")
    L.append("| target | measured | met |")
    L.append("|---|---|---|")
    for name, measured, ok in bigroom_targets(b):
        L.append(f"| {name} | {measured} | {'yes' if ok else '**no**'} |")
    L.append("")
    loads = sorted({off for d in b.values() for off in d["ladder"]})
    if loads:
        L.append("### Every step of the ladder (medians)")
        L.append("")
        L.append("CPU s per million deliveries / p50 ms / p99 ms / deliveries per write. ✗: not sustained.")
        L.append("")
        L.append("| offered/s | " + " | ".join(LABEL.get(s, s) for s in BIGROOM if s in b) + " |")
        L.append("|---|" + "---|" * sum(1 for s in BIGROOM if s in b))
        for off in loads:
            cells = []
            for s in BIGROOM:
                if s not in b:
                    continue
                d = b[s]["ladder"].get(off)
                cells.append("" if not d else
                             f"{num(d['cpu_per_m'])} / {ms(d['p50_ms'])} / {ms(d['p99_ms'])} / "
                             f"{num(d['deliveries_per_write'])}" + ("" if d["ok"] else " ✗"))
            L.append(f"| {si(off)} | " + " | ".join(cells) + " |")
        L.append("")
    L.append(analysis)
    L.append(BREND)
    L.append("")
    return L


def targets(a):
    out = []
    sat, curve, idle = a["sat"], a["curve"], a["idle"]
    sb = sat.get("switchboard", {}).get("median")
    node = sat.get("node-ws", {}).get("median")
    if sb is not None and node:
        ratio = sb / node
        note = ""
        if sat["switchboard"]["reached_max"]:
            note = " (Switchboard reached the ladder's top: a lower bound)"
        out.append(("fan-out saturation ≥ 3× Node ws",
                    f"{si(sb)}/s vs {si(node)}/s = {ratio:.2f}×{note}", ratio >= 3))
    for peer in ("socketio", "python-websockets"):
        p = sat.get(peer, {}).get("median")
        if sb is not None and p is not None:
            out.append((f"fan-out saturation > {LABEL[peer]}",
                        f"{si(sb)}/s vs {si(p)}/s = {sb / p:.2f}×" if p else f"{si(sb)}/s vs 0", sb > p))
    if curve.get("switchboard") and curve.get("node-ws"):
        sbp = {p["offered"]: p for p in curve["switchboard"]}
        comps = []
        for p in curve["node-ws"]:
            if p["ok"]:
                q = sbp.get(p["offered"])
                comps.append((p["offered"], q["p99"] if q else None, p["p99"]))
        if comps:
            def ratio(c):
                return math.inf if c[1] is None or not c[2] else c[1] / c[2]
            worst = max(comps, key=ratio)
            ok = all(c[1] is not None and c[1] <= c[2] for c in comps)
            if worst[1] is None:
                text = (f"{len(comps)} loads; at {si(worst[0])}/s Switchboard has no step "
                        f"(its ladder stopped earlier); Node ws: {ms(worst[2])} ms")
            else:
                text = (f"{len(comps)} loads compared; worst at {si(worst[0])}/s: Switchboard "
                        f"{ms(worst[1])} ms vs Node ws {ms(worst[2])} ms ({ratio(worst):.2f}×)")
                # The spread of the runs at that load, for judging a small difference.
                sb_runs = sbp[worst[0]].get("p99_runs")
                node_runs = next(p for p in curve["node-ws"] if p["offered"] == worst[0]).get("p99_runs")
                if sb_runs and node_runs and len(sb_runs) > 1:
                    text += (f"; per run {ms(sb_runs[0])}–{ms(sb_runs[-1])} ms vs "
                             f"{ms(node_runs[0])}–{ms(node_runs[-1])} ms")
            out.append(("p99 ≤ Node ws at every load Node ws sustains", text, ok))
    big = idle.get("switchboard", {})
    if big:
        n = max(big)
        r = big[n]
        b = r.get("rss_per_connection_bytes")
        out.append((f"≤ 4 KiB server memory per idle connection at ~19k",
                    f"{kib(b)} ({b:,.0f} B) at {r.get('connections'):,} connections" if b else "–",
                    b is not None and b <= 4096 and r.get("connections", 0) >= 19000))
    for name, measured, ok in redis_targets(a):
        if ok is not None:
            out.append((name, measured, ok))
    sbl = a["loss"].get("switchboard", [])
    out.append(("no loss in any scenario below saturation (Switchboard)",
                "none" if not sbl else "; ".join(sbl[:4]), not sbl))
    return out


def redis_targets(a):
    """The targets of many nodes over Redis, against one node, from the same run."""
    one, two = a["redis"].get(SINGLE), a["redis"].get(CLUSTER)
    if not one or not two:
        return []
    # met: True, False, or None (no verdict: other work on the machine decided the figure).
    out = []
    name = f"throughput over Redis ≥ {REDIS_MIN_SHARE:.0%} of one node's (same server CPU)"
    if one["sat_quiet"] and two["sat_quiet"] and one["sat"]:
        share = two["sat"] / one["sat"]
        note = " (one node reached the ladder's top: a lower bound for it)" \
            if a["sat"].get(SINGLE, {}).get("reached_max") else ""
        out.append((name, f"{si(two['sat'])}/s vs {si(one['sat'])}/s = {share:.0%}{note}",
                    share >= REDIS_MIN_SHARE))
    elif one["sat"] is not None and two["sat"] is not None:
        out.append((name, f"no verdict from this run: every ladder of "
                    f"{'both configurations' if not one['sat_quiet'] and not two['sat_quiet'] else LABEL[SINGLE if not one['sat_quiet'] else CLUSTER]} "
                    f"was ended by other work on the machine ({si(two['sat'])}/s vs {si(one['sat'])}/s as measured)",
                    None))
    if one["fan"] and two["fan"]:
        rate = one["fan"]["offered"]
        q1, q2 = one["quiet_steps"].get(rate), two["quiet_steps"].get(rate)
        name = f"p99 over Redis ≤ {REDIS_MAX_P99:g}× one node's at {si(rate)}/s"
        if q1 and q2 and q1["p99_ms"]:
            ratio = q2["p99_ms"] / q1["p99_ms"]
            out.append((name, f"{ms(q2['p99_ms'])} ms vs {ms(q1['p99_ms'])} ms = {ratio:.2f}× "
                        f"(medians of the measurements at {si(rate)}/s that other work left alone: "
                        f"{q2['runs']} and {q1['runs']})", ratio <= REDIS_MAX_P99))
        else:
            out.append((name, "no verdict from this run: every measurement at this load was noisy "
                        f"({ms(two['fan']['p99_ms'])} ms vs {ms(one['fan']['p99_ms'])} ms as measured)",
                        None))
    return out


def render_redis(a, analysis, results_path):
    """The section "Many nodes over Redis"; `analysis` is its hand-written part."""
    r = a["redis"]
    one, two = r.get(SINGLE), r.get(CLUSTER)
    if not two:
        return []
    L = [SBEGIN]
    L.append("## Many nodes over Redis")
    L.append("")
    m = a["machine"]
    mine = [x for x in a["by"]["saturation-step"] + a["by"]["fanout"] if x["server"] in (SINGLE, CLUSTER)]
    again = sum(max(0, (x.get("attempts") or 1) - 1) for x in mine)
    noisy = [x for x in mine if x.get("noisy")]
    others = [x.get("other_cpu") for x in mine if x.get("other_cpu") is not None]
    L.append(how_it_was_run(m, results_path) + f". "
             f"{a['runs']} run(s), interleaved, medians over runs. "
             + (f"Other work during these configurations' steps: median {median(others):.2f}, "
                f"max {max(others):.2f} CPUs of 2; {again} step(s) measured again, "
                f"{len(noisy)} of {len(mine)} stayed noisy and are kept as they are. "
                if others else ""))
    L.append("")
    L.append("`switchboard-redis2`: two Switchboard nodes started with `--redis-url` against one "
             "Debian `redis-server` (`--save \"\" --appendonly no`, on a free 127.0.0.1 port), "
             "against `switchboard`, one node with the embedded broker, in the same run. The "
             "generator is given both nodes' addresses (`--addr A,B`) and spreads each room's "
             "members over them in turn (member `slot` of room `r` on node `(slot + r) mod 2`: "
             "every room has half its members on each node, and the publishers alternate), and "
             "checks delivery as for one node: every member gets every message once, in order. "
             "A publish goes to the publisher's node, through the publish script in Redis, and "
             "back to both nodes on the room's channel; each node delivers to its half of the "
             "room.")
    L.append("")
    L.append("**Same server CPU.** The machine has two CPUs, one for the load generator, so the "
             "two nodes *and* redis-server run together on the server's CPU (`taskset -c "
             "SERVER_CPU`), the one CPU the single node gets alone: the comparison is the same "
             "server-side CPU budget, and throughput over Redis here is what that budget "
             "delivers, Redis's work included. In a deployment each node and Redis have their "
             "own CPUs; *nodes' CPU per million deliveries* below is what a node would need "
             "there. Server CPU is read per process from `/proc/PID/stat` (nodes and "
             "redis-server) for every step; Redis's own counts (`INFO all`: commands, event-loop "
             "reads, bytes) are read at the start and end of each measured window.")
    L.append("")
    L.append("*Saturation*: the median over the ladders that other work on the machine did not end "
             "(a ladder whose last, failing steps stayed noisy after every retry is marked "
             "*(noise)* and left out, unless every ladder of the configuration was; then all count).")
    L.append("")
    L.append("| configuration | saturation (p99 ≤ "
             f"{a['max_p99']:g} ms) | per run | p99 at the fixed rate | server CPU at the fixed rate "
             "(nodes + Redis) | CPU s per million deliveries, nodes + Redis | nodes | Redis | "
             "Redis share of the server CPU |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for s in (SINGLE, CLUSTER):
        c = r.get(s)
        if not c:
            continue
        f = c["fan"] or {}
        runs_p99 = f.get("p99_runs") or []
        per_run = f" ({', '.join(ms(v) for v in runs_p99)})" if len(runs_p99) > 1 else ""
        L.append(f"| {LABEL.get(s, s)} | **{si(c['sat'])}/s** | "
                 f"{', '.join(si(v) + (' (noise)' if n else '') for v, n in c['sat_runs'])} | "
                 f"**{ms(f.get('p99_ms'))} ms**{per_run} | "
                 f"{num(f.get('server_cpu'))} | {num(f.get('cpu_per_m'))} | "
                 f"{num(f.get('nodes_cpu_per_m'))} | {num(f.get('redis_cpu_per_m'))} | "
                 f"{num(f.get('redis_share'), '{:.0%}')} |")
    L.append("")
    if one and one.get("fan"):
        L.append(f"Fixed rate: {si(one['fan']['offered'])} deliveries/s, as in \"Fan-out at a fixed "
                 "rate\". CPU per million deliveries: CPU share ÷ deliveries per second × 10⁶ "
                 "(CPU seconds), medians over runs.")
        L.append("")
    L.append("### Targets")
    L.append("")
    L.append("Per-node throughput over Redis at least 75% of one node's, with p99 at most 2× "
             "(issue 11). Throughput is compared on the same server CPU (above); p99 at the "
             "fixed rate.")
    L.append("")
    L.append("| target | measured | met |")
    L.append("|---|---|---|")
    for name, measured, ok in redis_targets(a):
        L.append(f"| {name} | {measured} | {'–' if ok is None else 'yes' if ok else '**no**'} |")
    L.append("")
    if one and two:
        loads = sorted(set(one["quiet_steps"]) & set(two["quiet_steps"]))
        pairs = [(one["quiet_steps"][k], two["quiet_steps"][k]) for k in loads]
        pairs = [(d, e) for d, e in pairs if d.get("cpu_per_m") and e.get("cpu_per_m")]
        if pairs:
            L.append("### The same load on both")
            L.append("")
            L.append("Every measurement (fixed-rate fan-out and ladder steps) at a load both "
                     "configurations were measured at, *other work on the machine under the "
                     "limit* (not noisy), medians: what a delivery costs the server side, Redis "
                     "included, and the latency, side by side. ✗: not sustained (in most of them).")
            L.append("")
            L.append("| offered/s | one node: CPU s per M deliveries | two nodes + Redis: nodes + Redis (Redis) | "
                     "ratio | one node: p99 ms | two nodes + Redis: p99 ms | measurements |")
            L.append("|---|---|---|---|---|---|---|")
            for d, e in pairs:
                mk = lambda x: "" if x["passed"] * 2 > x["runs"] else " ✗"
                L.append(f"| {si(d['offered'])} | {num(d['cpu_per_m'])}{mk(d)} | "
                         f"{num(e['cpu_per_m'])} ({num(e['redis_cpu_per_m'])}){mk(e)} | "
                         f"{e['cpu_per_m'] / d['cpu_per_m']:.2f}× | {ms(d['p99_ms'])} | {ms(e['p99_ms'])} | "
                         f"{d['runs']}, {e['runs']} |")
            L.append("")
    L.append("### Every step (medians)")
    L.append("")
    L.append("| configuration | offered/s | delivered/s | p50 / p99 ms | CPU nodes / Redis | "
             "CPU s per M deliveries (Redis) | Redis commands / reads per publish | Redis µs per "
             "publish | deliveries per node write |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for s in (SINGLE, CLUSTER):
        c = r.get(s)
        if not c:
            continue
        for d in c["ladder"]:
            mark = "" if d["ok"] else " ✗"
            redis_m = f" ({num(d['redis_cpu_per_m'])})" if d.get("redis_cpu_per_m") is not None else ""
            L.append(f"| {LABEL.get(s, s)} | {si(d['offered'])} | {si(d['delivered_per_s'])}{mark} | "
                     f"{ms(d['p50_ms'])} / {ms(d['p99_ms'])} | {num(d['nodes_cpu'])} / "
                     f"{num(d['broker_cpu'])} | {num(d['cpu_per_m'])}{redis_m} | "
                     f"{num(d['redis_commands_per_publish'])} / {num(d['redis_reads_per_publish'])} | "
                     f"{num(d['redis_cpu_us_per_publish'], '{:.1f}')} | "
                     f"{num(d['deliveries_per_write'])} |")
    L.append("")
    L.append("✗: not sustained. *Redis commands per publish*: `total_commands_processed` over "
             "messages published in the window (a script's own calls count too); *reads per "
             "publish*: `total_reads_processed` (reads of client sockets by Redis's event loop) "
             "over messages published, so 1 / reads is about how many publishes one round trip "
             "carries; *Redis µs per publish*: `used_cpu_user + used_cpu_sys` over publishes.")
    L.append("")
    cmds = (two.get("fan") or {}).get("commands") or {}
    if cmds:
        L.append(f"What Redis runs per message at the fixed rate (`INFO commandstats`, medians):")
        L.append("")
        L.append("| command | calls per publish | µs per call |")
        L.append("|---|---|---|")
        for name, c in sorted(cmds.items(), key=lambda kv: -(kv[1].get("per_publish") or 0)):
            L.append(f"| `{name}` | {num(c.get('per_publish'), '{:.3f}')} | {num(c.get('us_per_call'))} |")
        L.append("")
    L.append(analysis)
    L.append(SEND)
    L.append("")
    return L


def render(a, results_path, redis_analysis="", compression_analysis=""):
    m = a["machine"]
    L = []
    L.append("# Benchmarks")
    L.append("")
    L.append("Switchboard side by side with the servers people usually start from — the Node `ws` "
             "server of the tutorials, Socket.IO v4, and Python `websockets` — in one run, on one "
             "machine, driven by one load generator (`switchboard-bench`, Rust, on our codec's "
             "client side). Each server runs pinned to CPU 0, the load generator to CPU 1. "
             "How to run it, and what each peer is: [bench/README.md](../bench/README.md).")
    L.append("")
    L.append("This page is written by `bench/report.py` from the run's JSON lines; the section "
             "\"What the profiles show\" is written by hand and kept across runs.")
    L.append("")
    L.append("## The run")
    L.append("")
    L.append(f"- Command: `{m.get('command', 'bench/run.sh')}` (raw results: `{os.path.relpath(results_path)}`)")
    L.append(f"- Machine: {m.get('cpu')}, {m.get('cpus')} CPUs, {m.get('mem_gib')} GiB, Linux {m.get('kernel')}, "
             f"open files limit {m.get('nofile')} per process")
    L.append(f"- Software: {m.get('rustc')}; Node {m.get('node')} with ws {m.get('ws')} and Socket.IO "
             f"{m.get('socketio')} (its engine.io uses ws {m.get('engineio_ws')}); {m.get('python')} with "
             f"websockets {m.get('websockets')}; Bun {m.get('bun')}")
    L.append(f"- Load before the run: `{m.get('uptime_before')}`")
    L.append(f"- Load after the run: `{m.get('uptime_after')}` ({m.get('elapsed_s', 0) // 60} min "
             f"{m.get('elapsed_s', 0) % 60} s). Other work may have been running on the machine; the "
             "load averages above say how much.")
    others = [r.get("other_cpu") for r in a["by"]["saturation-step"] + a["by"]["fanout"]
              if r.get("other_cpu") is not None]
    if others:
        L.append(f"- Other work during the measurements (CPUs busy with anything but the server and "
                 f"the generator, from `/proc/stat`, per step): median {median(others):.2f}, "
                 f"max {max(others):.2f} of 2.")
    steps = a["by"]["saturation-step"] + a["by"]["fanout"]
    again = sum(max(0, (r.get("attempts") or 1) - 1) for r in steps)
    noisy = [r for r in steps if r.get("noisy")]
    if again or noisy:
        where = sorted({"{} at {}/s".format(LABEL.get(r["server"], r["server"]),
                                             si(r["offered_deliveries_per_s"])) for r in noisy})
        L.append(f"- {again} step(s) were measured again because other work used more than the "
                 f"allowed share of the CPUs during them; {len(noisy)} of {len(steps)} stayed noisy "
                 f"after the retries and are kept as they are ({', '.join(where) or 'none'}).")
    L.append(f"- {a['runs']} run(s) of each scenario, interleaved across servers; figures are medians over runs.")
    f0 = next(iter(a["by"]["fanout"]), None) or next(iter(a["by"]["saturation-step"]), {})
    if f0:
        L.append(f"- Fan-out shape: {f0.get('rooms')} rooms × {f0.get('members')} members "
                 f"({f0.get('rooms', 0) * f0.get('members', 0):,} connections), {f0.get('publishers')} "
                 f"publishers (members too), {f0.get('payload_bytes')}-byte data; every message goes to "
                 "every member of its room, its publisher included. Offered load is counted in "
                 "deliveries per second (messages published per second × members per room).")
    L.append("")
    L.append("## Targets")
    L.append("")
    L.append("| target | measured | met |")
    L.append("|---|---|---|")
    for name, measured, ok in targets(a):
        L.append(f"| {name} | {measured} | {'yes' if ok else '**no**'} |")
    L.append("")

    L.append("## Fan-out at a fixed rate")
    L.append("")
    if a["fan"]:
        first = next(iter(a["fan"].values()))
        L.append(f"Offered: {si(first['offered_deliveries_per_s'])} deliveries/s. Latency is from the "
                 "publisher's send to a member's read, timestamps in the payload.")
        L.append("")
        L.append("| server | delivered/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | missing | "
                 "server CPU | frame bytes | runs passed |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for s in a["servers"]:
            f = a["fan"].get(s)
            if not f:
                continue
            L.append(f"| {LABEL.get(s, s)} | {si(f['delivered_per_s'])} | {ms(f['p50_ms'])} | "
                     f"{ms(f['p90_ms'])} | {ms(f['p99_ms'])} | {ms(f['p999_ms'])} | {ms(f['max_ms'])} | "
                     f"{f['missing']} | {f['server_cpu'] if f['server_cpu'] is not None else '–'} | "
                     f"{f['frame_bytes']:.0f} | {f['passed']}/{f['runs']} |")
        L.append("")
        L.append("*frame bytes*: one delivered message as it arrives (Switchboard's `message` carries "
                 "`from`, `offset` and `ts` besides `room` and `data`; the peers send `room` and `data`).")
        L.append("")

    L.append("## Saturation")
    L.append("")
    L.append(f"The offered rate rises by steps; a step is sustained when p99 ≤ {a['max_p99']:g} ms, "
             "nothing is lost (every member got every message before the drain timeout), no "
             "connection was dropped, and at least 95% of the offered deliveries per second were "
             "delivered. Saturation is the highest delivered rate of a sustained step.")
    L.append("")
    L.append("| server | saturation (median) | per run | first step not sustained |")
    L.append("|---|---|---|---|")
    for s in a["servers"]:
        t = a["sat"].get(s)
        if not t:
            continue
        L.append(f"| {LABEL.get(s, s)} | **{si(t['median'])}/s** | {', '.join(si(v) for v in t['all'])} | "
                 f"{'; '.join(sorted(set(t['reasons'])))} |")
    L.append("")
    for fname, alt in a["plots"]:
        if fname != "memory.svg":
            L.append(f"![{alt}]({a['rel']}/{fname})")
            L.append("")
    L.append("Hollow points: the step was not sustained (in most runs).")
    L.append("")
    L.append("### Every step (medians)")
    L.append("")
    L.append("| offered/s | " + " | ".join(f"{LABEL.get(s, s)}: p50 / p99 ms (delivered/s, CPU server / generator)" for s in a["servers"]) + " |")
    L.append("|---|" + "---|" * len(a["servers"]))
    offers = sorted({p["offered"] for s in a["servers"] for p in a["curve"].get(s, [])})
    for off in offers:
        cells = []
        for s in a["servers"]:
            p = next((p for p in a["curve"].get(s, []) if p["offered"] == off), None)
            if p is None:
                cells.append("")
            else:
                mark = "" if p["ok"] else " ✗"
                cpu = ""
                if p["server_cpu"] is not None and p["generator_cpu"] is not None:
                    cpu = f", {p['server_cpu']:.2f} / {p['generator_cpu']:.2f}"
                cells.append(f"{ms(p['p50'])} / {ms(p['p99'])} ({si(p['delivered'])}{cpu}){mark}")
        L.append(f"| {si(off)} | " + " | ".join(cells) + " |")
    L.append("")
    L.append("✗: not sustained. CPU: share of one core used by the server and by the load "
             "generator during the step (1.0 = its core busy). Where the generator is near 1.0 "
             "too, the step measures both ends, and the server's figure is a lower bound.")
    L.append("")

    if any(p.get("per_write") for s in a["servers"] for p in a["curve"].get(s, [])):
        L.append("### How the servers write")
        L.append("")
        L.append("Messages delivered per write system call of the server (`syscw` in "
                 "`/proc/PID/io`, which counts `write` and `writev`), medians. 1.0 means one "
                 "system call per message per member. A server that writes with `send`/`sendmsg` "
                 "(Python's asyncio does) is not counted there, and its column stays empty.")
        L.append("")
        L.append("| offered/s | " + " | ".join(LABEL.get(s, s) for s in a["servers"]) + " |")
        L.append("|---|" + "---|" * len(a["servers"]))
        for off in offers:
            cells = []
            for s in a["servers"]:
                p = next((p for p in a["curve"].get(s, []) if p["offered"] == off), None)
                cells.append("" if p is None or p.get("per_write") is None else f"{p['per_write']:.2f}")
            L.append(f"| {si(off)} | " + " | ".join(cells) + " |")
        L.append("")
    L.extend(render_redis(a, redis_analysis, results_path))
    L.extend(render_compression(a, compression_analysis, results_path))
    L.append("## Idle connections")
    L.append("")
    L.append("Connections opened (WebSocket handshake done; Switchboard's `welcome` received, "
             "Socket.IO's namespace connected), then held idle; the server's resident memory "
             "(`VmRSS` in `/proc/PID/status`) is read before the first connection and 2 s after "
             "the last, on a freshly started server. Bytes per connection = (after − before) / "
             "connections. Connections come from 127.0.0.2–9 and from two load-generator "
             "processes above 15,000 (each process may hold 20,000 descriptors).")
    L.append("")
    L.append("| server | connections | failed | connect time s | connections/s | p99 connect ms | "
             "RSS before | RSS after | per connection |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for s in a["servers"]:
        for n in a["sizes"]:
            r = a["idle"].get(s, {}).get(n)
            if not r:
                continue
            mib = lambda b: "–" if b is None else f"{b / 1048576:.1f} MiB"
            L.append(f"| {LABEL.get(s, s)} | {r.get('connections'):,} of {n:,} | {r.get('failed')} | "
                     f"{r.get('connect_secs')} | {si(r.get('connects_per_s'))} | {ms(r.get('connect_p99_ms'))} | "
                     f"{mib(r.get('server_rss_before'))} | {mib(r.get('server_rss_after'))} | "
                     f"**{kib(r.get('rss_per_connection_bytes'))}** |")
    L.append("")
    if any(f == "memory.svg" for f, _ in a["plots"]):
        L.append(f"![server memory per idle connection]({a['rel']}/memory.svg)")
        L.append("")
    errs = [(s, n, r.get("first_error")) for s in a["idle"] for n, r in a["idle"][s].items() if r.get("first_error")]
    for s, n, e in errs:
        L.append(f"- {LABEL.get(s, s)} at {n:,}: first failure: `{e}`")
    if errs:
        L.append("")

    L.append("## Churn")
    L.append("")
    cr = next(iter(a["by"]["churn"]), {})
    L.append(f"{cr.get('workers', '?')} workers each open a connection, join the publishing room, "
             f"close (close handshake), and start again, as fast as they can, while the room's "
             f"{cr.get('members', '?')} steady members receive {si(cr.get('room_offered_publish_per_s'))} "
             "messages/s. Churn/s counts complete open-join-close cycles.")
    L.append("")
    L.append("| server | churn/s | open+join p50 ms | open+join p99 ms | room p50 ms | room p99 ms | "
             "room missing | errors | server CPU |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for s in a["servers"]:
        c = a["churn"].get(s)
        if not c:
            continue
        L.append(f"| {LABEL.get(s, s)} | {si(c['churn_per_s'])} | {ms(c['open_join_p50_ms'])} | "
                 f"{ms(c['open_join_p99_ms'])} | {ms(c['room_p50_ms'])} | {ms(c['room_p99_ms'])} | "
                 f"{c['missing']} | {c['errors']} | {c['room_server_cpu']} |")
    L.append("")
    L.append("## Loss and errors")
    L.append("")
    any_loss = False
    for s in a["servers"]:
        items = a["loss"].get(s, [])
        if items:
            any_loss = True
            L.append(f"- {LABEL.get(s, s)}: " + "; ".join(items[:6]) + (" …" if len(items) > 6 else ""))
    if not any_loss:
        L.append("None: in every scenario below saturation, every member got every message, and "
                 "no connection failed or was dropped.")
    L.append("")
    return "\n".join(L)


SECTIONS = {
    # name: (title, section markers, hand-written part's markers, renderer, what it needs)
    "redis": ("Many nodes over Redis", (SBEGIN, SEND), (RBEGIN, REND),
              lambda a, an, res: render_redis(a, an, res), f"{CLUSTER} results"),
    "compression": ("Compression", (CBEGIN, CEND), (CABEGIN, CAEND),
                    lambda a, an, res: render_compression(a, an, res), "switchboard-deflate results"),
    "rooms": ("Large rooms and a room per connection", (RMBEGIN, RMEND), (RMABEGIN, RMAEND),
              lambda a, an, res: render_rooms(a, an, res), "join-storm or room-per-connection results"),
    "bigroom": ("Fan-out in a 200-member room", (BRBEGIN, BREND), (BRABEGIN, BRAEND),
                lambda a, an, res: render_bigroom(a, an, res), "switchboard and bun results"),
}
# Where a section goes the first time: before this heading (the default: "## Idle connections").
# The hand-written section "TLS" (measured with bench/tls_idle.py, not by this run): kept
# as it is by a full report, after "Idle connections".
TBEGIN, TEND = "<!-- tls:begin -->", "<!-- tls:end -->"
BEFORE = {RMBEGIN: "## Churn", TBEGIN: "## Churn", BRBEGIN: "## Churn"}


def place_section(old, section, begin, end):
    """`old` with the section between `begin` and `end` replaced by `section`; the first
    time, it goes before "## Idle connections" (the rooms section before "## Churn")."""
    if begin in old and end in old:
        return old[:old.index(begin)] + section + old[old.index(end) + len(end):]
    heading = "\n" + BEFORE.get(begin, "## Idle connections")
    if heading in old:
        at = old.index(heading) + 1
        return old[:at] + section + "\n\n" + old[at:]
    return old.rstrip("\n") + "\n\n" + section + "\n"


def write_section(name, results, machine, args):
    """Rewrites one generated section of the doc (keeping its hand-written part) and
    nothing else."""
    import tempfile
    title, (begin, end), (abegin, aend), render_fn, needs = SECTIONS[name]
    with open(args.doc) as f:
        old = f.read()
    analysis = f"{abegin}\n### Why (not written yet)\n{aend}"
    if abegin in old and aend in old:
        analysis = old[old.index(abegin):old.index(aend) + len(aend)]
    # Plots are not part of the section: build them where they do not replace the doc's.
    with tempfile.TemporaryDirectory() as tmp:
        a = build(results, machine, tmp, os.path.dirname(os.path.abspath(args.doc)))
    section = "\n".join(render_fn(a, analysis, args.results)).rstrip("\n")
    if not section:
        raise SystemExit(f"no {needs} in {args.results}")
    with open(args.doc, "w") as f:
        f.write(place_section(old, section, begin, end))
    print(f"wrote the section \"{title}\" of {args.doc}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--machine", required=True)
    ap.add_argument("--doc", default="docs/benchmarks.md")
    ap.add_argument("--plots", default="docs/bench")
    ap.add_argument("--section", choices=sorted(SECTIONS),
                    help="rewrite only this section of --doc (\"Many nodes over Redis\", "
                         "\"Compression\", \"Large rooms and a room per connection\")")
    args = ap.parse_args()
    with open(args.results) as f:
        results = [json.loads(line) for line in f if line.strip().startswith("{")]
    with open(args.machine) as f:
        machine = json.load(f)
    if args.section:
        write_section(args.section, results, machine, args)
        return
    a = build(results, machine, args.plots, os.path.dirname(os.path.abspath(args.doc)))
    analysis = f"{BEGIN}\n## What the profiles show\n\n(Not written yet.)\n{END}"
    redis_analysis = f"{RBEGIN}\n### Why (not written yet)\n{REND}"
    compression_analysis = f"{CABEGIN}\n### Why (not written yet)\n{CAEND}"
    if os.path.exists(args.doc):
        with open(args.doc) as f:
            old = f.read()
        if BEGIN in old and END in old:
            analysis = old[old.index(BEGIN):old.index(END) + len(END)]
        if RBEGIN in old and REND in old:
            redis_analysis = old[old.index(RBEGIN):old.index(REND) + len(REND)]
        if CABEGIN in old and CAEND in old:
            compression_analysis = old[old.index(CABEGIN):old.index(CAEND) + len(CAEND)]
    body = render(a, args.results, redis_analysis, compression_analysis)
    # A full run does not measure compression (SECTION=compression does): the section of
    # the last such run stays as it was.
    if CBEGIN not in body and os.path.exists(args.doc) and CBEGIN in old and CEND in old:
        body = place_section(body, old[old.index(CBEGIN):old.index(CEND) + len(CEND)], CBEGIN, CEND)
    # Nor TLS (bench/tls_idle.py does), written by hand.
    if TBEGIN not in body and os.path.exists(args.doc) and TBEGIN in old and TEND in old:
        body = place_section(body, old[old.index(TBEGIN):old.index(TEND) + len(TEND)], TBEGIN, TEND)
    # Nor large rooms (SECTION=rooms does) or the 200-member room (SECTION=bigroom): those
    # sections stay as they were too.
    for begin, end in ((RMBEGIN, RMEND), (BRBEGIN, BREND)):
        if begin not in body and os.path.exists(args.doc) and begin in old and end in old:
            body = place_section(body, old[old.index(begin):old.index(end) + len(end)], begin, end)
    with open(args.doc, "w") as f:
        f.write(body + "\n" + analysis + "\n")
    print(f"wrote {args.doc} and {len(a['plots'])} plot(s) in {args.plots}")


if __name__ == "__main__":
    main()
