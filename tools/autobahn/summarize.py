#!/usr/bin/env python3
"""Summarize an Autobahn|Testsuite fuzzingclient report.

    python3 summarize.py [--expect N] [--strict] target/autobahn/index.json

Prints, per agent, the counts of `behavior` and `behaviorClose`, the ids of failing and
non-strict cases, and the slowest cases. Exit status 1 if any case fails:

  * behavior      not in OK, NON-STRICT, INFORMATIONAL (i.e. FAILED, UNIMPLEMENTED --
                  which for 12.* and 13.* means permessage-deflate was not negotiated --
                  or anything else wstest may report), or
  * behaviorClose is FAILED (connection closed by the wrong endpoint, or the opening
                  handshake never completed) or UNCLEAN (the spec requires a clean close);
                  these are the red "Fail"/"Unclean" cells of Autobahn's own HTML report.

`behaviorClose` WRONG CODE (wrong close code where the case does not already turn that into
a FAILED behavior) and FAILED BY CLIENT (the client, not the server, had to drop the TCP
connection) are listed as warnings only, as are NON-STRICT behaviors; --strict makes them fail.
With --expect N, the report must contain exactly N cases per agent (guards against a partial
run or a stale report). Exit status 2 on a missing/unreadable/empty report.
"""
import argparse
import collections
import json
import sys

PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}
CLOSE_PASSING = {"OK", "INFORMATIONAL", "WRONG CODE", "FAILED BY CLIENT"}
CLOSE_WARN = {"WRONG CODE", "FAILED BY CLIENT"}


def case_key(case_id):
    return [int(x) for x in case_id.split(".")]


def ids(cases, pred):
    return sorted((k for k, v in cases.items() if pred(v)), key=case_key)


def show(label, case_ids, cases=None):
    if not case_ids:
        return
    print(f"   {label} ({len(case_ids)}):")
    if cases is None:
        print("      " + " ".join(case_ids))
        return
    for k in case_ids:
        v = cases[k]
        print(f"      {k:<9} behavior={v.get('behavior')}  close={v.get('behaviorClose')}"
              f"  remoteCloseCode={v.get('remoteCloseCode')}  ({v.get('reportfile')})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("index", nargs="?", default="target/autobahn/index.json")
    ap.add_argument("--expect", type=int, help="number of cases each agent must have")
    ap.add_argument("--strict", action="store_true",
                    help="also fail on NON-STRICT, WRONG CODE and FAILED BY CLIENT")
    args = ap.parse_args()

    try:
        with open(args.index) as f:
            idx = json.load(f)
    except (OSError, ValueError) as e:
        print(f"cannot read report {args.index}: {e}", file=sys.stderr)
        return 2
    if not idx or not any(idx.values()):
        print(f"report {args.index} contains no cases", file=sys.stderr)
        return 2

    rc = 0
    for agent, cases in sorted(idx.items()):
        beh = collections.Counter(v["behavior"] for v in cases.values())
        clo = collections.Counter(v["behaviorClose"] for v in cases.values())
        total_ms = sum(v.get("duration") or 0 for v in cases.values())
        print(f"{agent}: {len(cases)} cases in {total_ms / 1000:.1f}s"
              f"  behavior={dict(beh)}  close={dict(clo)}")

        bad = ids(cases, lambda v: v["behavior"] not in PASSING or v["behaviorClose"] not in CLOSE_PASSING)
        nonstrict = ids(cases, lambda v: v["behavior"] == "NON-STRICT")
        closewarn = [k for k in ids(cases, lambda v: v["behaviorClose"] in CLOSE_WARN) if k not in bad]
        unimpl = ids(cases, lambda v: v["behavior"] == "UNIMPLEMENTED")

        show("FAILED", bad, cases)
        show("NON-STRICT", nonstrict)
        show("close warnings (WRONG CODE / FAILED BY CLIENT)", closewarn, cases)
        show("UNIMPLEMENTED", unimpl)
        slow = sorted(cases.items(), key=lambda kv: kv[1].get("duration") or 0, reverse=True)[:5]
        print("   slowest: " + ", ".join(f"{k} {v.get('duration')}ms" for k, v in slow))

        if bad or (args.strict and (nonstrict or closewarn)):
            rc = 1
        if args.expect is not None and len(cases) != args.expect:
            print(f"   expected {args.expect} cases, report has {len(cases)}")
            rc = 1
    print("RESULT:", "PASS" if rc == 0 else "FAIL")
    return rc


if __name__ == "__main__":
    sys.exit(main())
