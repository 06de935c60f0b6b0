#!/usr/bin/env python3
"""Summarises bench/alloc.sh's JSON lines as Markdown tables: medians over runs, per allocator.

    python3 bench/alloc_report.py target/bench/alloc-<timestamp>/results.jsonl
"""
import json
import statistics
import sys
from collections import defaultdict


def tag(rec):
    fields = dict(kv.split("=", 1) for kv in rec.get("tag", "").split(",") if "=" in kv)
    return fields.get("alloc", "?"), fields.get("run", "?")


def mib(b):
    return "-" if b is None else f"{b / 1048576:.1f} MiB"


def si(v):
    if v is None:
        return "-"
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    return f"{v:.0f}"


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread(values, fmt):
    values = [v for v in values if v is not None]
    return ", ".join(fmt(v) for v in values) if values else "-"


def main(path):
    recs = [json.loads(line) for line in open(path) if line.strip()]
    order = []
    by = defaultdict(lambda: defaultdict(list))
    for r in recs:
        alloc, _ = tag(r)
        if alloc not in order:
            order.append(alloc)
        by[alloc][r["scenario"]].append(r)

    print("### Idle connections\n")
    print("| allocator | connections | RSS before | RSS after | per connection (median) | per run |")
    print("|---|---|---|---|---|---|")
    for a in order:
        rs = by[a]["idle"]
        per = [r.get("rss_per_connection_bytes") for r in rs]
        print(
            f"| {a} | {med([r.get('connections') for r in rs]):,.0f} | "
            f"{mib(med([r.get('server_rss_before') for r in rs]))} | "
            f"{mib(med([r.get('server_rss_after') for r in rs]))} | "
            f"**{med(per) / 1024:.2f} KiB** ({med(per):,.0f} B) | "
            f"{spread(per, lambda v: f'{v:,.0f}')} |"
        )

    print("\n### Memory after load\n")
    print(
        "| allocator | RSS start | RSS under fan-out | RSS with the burst open | peak (VmHWM) "
        "| RSS 1 s after | RSS at the end | given back | RSS at the end, per run |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for a in order:
        rs = by[a]["after-load"]
        if not rs:
            continue
        wait = rs[0].get("wait_s")
        ret = med([r.get("returned_share") for r in rs])
        print(
            f"| {a} | {mib(med([r.get('rss_start') for r in rs]))} | "
            f"{mib(med([r.get('rss_fanout') for r in rs]))} | "
            f"{mib(med([r.get('rss_burst') for r in rs]))} | "
            f"{mib(med([r.get('hwm') for r in rs]))} | "
            f"{mib(med([r.get('rss_after_1s') for r in rs]))} | "
            f"**{mib(med([r.get('rss_after') for r in rs]))}** (+{wait:.0f} s) | "
            f"{'-' if ret is None else f'{ret * 100:.0f}%'} | "
            f"{spread([r.get('rss_after') for r in rs], mib)} |"
        )
    bad = [(a, r) for a in order for r in by[a]["after-load"] if not r.get("pass")]
    for a, r in bad:
        print(f"\n{a}: an after-load run failed (fanout_ok={r.get('fanout_ok')}, burst_ok={r.get('burst_ok')})")

    print("\n### Fan-out at fixed rates\n")
    print("| allocator | offered/s | delivered/s | p50 ms | p99 ms (median) | p99 per run | server CPU | missing |")
    print("|---|---|---|---|---|---|---|---|")
    for a in order:
        rates = defaultdict(list)
        for r in by[a]["fanout"]:
            rates[r["offered_deliveries_per_s"]].append(r)
        for offered in sorted(rates):
            rs = rates[offered]
            print(
                f"| {a} | {si(offered)} | {si(med([r.get('delivered_per_s') for r in rs]))} | "
                f"{med([r.get('p50_ms') for r in rs]):.2f} | "
                f"**{med([r.get('p99_ms') for r in rs]):.2f}** | "
                f"{spread([r.get('p99_ms') for r in rs], lambda v: f'{v:.2f}')} | "
                f"{med([r.get('server_cpu') for r in rs]):.2f} | "
                f"{sum(r.get('missing', 0) for r in rs)} |"
            )

    print("\n### Saturation\n")
    print("| allocator | saturation (median) | per run | p99 at the highest sustained step, per run |")
    print("|---|---|---|---|")
    for a in order:
        rs = by[a]["saturation"]
        if not rs:
            continue
        sat = [r.get("saturation_delivered_per_s") for r in rs]
        steps = by[a]["saturation-step"]
        p99s = []
        for r in rs:
            _, run = tag(r)
            best = [
                s for s in steps
                if tag(s)[1] == run and s.get("pass")
                and s.get("delivered_per_s") == r.get("saturation_delivered_per_s")
            ]
            p99s.append(best[0].get("p99_ms") if best else None)
        top = " (ladder's top)" if any(r.get("reached_max_rate") for r in rs) else ""
        print(
            f"| {a} | **{si(med(sat))}/s**{top} | {spread(sat, si)} | "
            f"{spread(p99s, lambda v: f'{v:.1f} ms')} |"
        )
    noisy = sum(1 for r in recs if r.get("noisy"))
    other = [r.get("other_cpu") for r in recs if r.get("other_cpu") is not None]
    if other:
        print(
            f"\nOther work during the fan-out steps (CPUs): median {statistics.median(other):.2f}, "
            f"max {max(other):.2f}; {noisy} step(s) stayed noisy after retries."
        )


if __name__ == "__main__":
    main(sys.argv[1])
