#!/usr/bin/env python3
"""pcap: behaviour rules end to end.

Replays tests/pcap/smtp-source-sessions (9 transactions from one client,
each to the same 4 recipients, from one sender) with the track rules of
tests/pcap/storm-basic/rules.cf, and checks, in the order records are
written:
  - T_CLIENT_FANOUT (distinct rcpt per client_ip > 3) crosses up once, at
    the first transaction, with value 4; every transaction carries it;
  - T_CLIENT_COUNT (count per client_ip > 5) crosses up once, with value 6,
    just before the 6th transaction's record; the 6th onward carry it with
    the running count as value, the first five do not;
  - T_RCPT_FANIN (distinct sender per rcpt > 1) never fires: one sender;
  - the meta T_BOTH hits exactly when both fire, and the action is tag
    exactly when the score reaches 3.
Usage: storm_check.py BREAKWATER
"""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    bw = sys.argv[1]
    cap = os.path.join(HERE, "smtp-source-sessions", "capture.pcap")
    rules = os.path.join(HERE, "storm-basic", "rules.cf")
    out = subprocess.run([bw, "--pcap", cap, "--rules", rules, "-q"],
                         capture_output=True, text=True, check=True).stdout
    recs = [json.loads(l) for l in out.splitlines()]
    fails = []
    storms = [r for r in recs if r["event"] == "storm"]
    txs = [r for r in recs if r["event"] == "smtp"]
    if len(txs) != 9:
        fails.append(f"expected 9 transactions, got {len(txs)}")
    ups = {(s["rule"], s["dir"]): s for s in storms}
    if len(storms) != 2:
        fails.append(f"expected 2 storm events, got {[(s['rule'], s['dir']) for s in storms]}")
    fan = ups.get(("T_CLIENT_FANOUT", "up"))
    cnt = ups.get(("T_CLIENT_COUNT", "up"))
    if not fan or fan["value"] != 4 or fan["key"] != "198.18.0.1" or fan["per"] != "client_ip":
        fails.append(f"T_CLIENT_FANOUT event wrong: {fan}")
    if not cnt or cnt["value"] != 6 or cnt["key"] != "198.18.0.1":
        fails.append(f"T_CLIENT_COUNT event wrong: {cnt}")
    # the count event comes right before the 6th transaction record
    order = [r["event"] if r["event"] == "smtp" else r["rule"] for r in recs]
    if "T_CLIENT_COUNT" in order and order.index("T_CLIENT_COUNT") != order.index("smtp") + 5:
        fails.append(f"T_CLIENT_COUNT event not before the 6th transaction: {order}")
    for i, t in enumerate(txs):
        hits = {h["rule"]: h for h in t["hits"]}
        if "T_CLIENT_FANOUT" not in hits or hits["T_CLIENT_FANOUT"]["value"] != 4:
            fails.append(f"tx #{i + 1}: no T_CLIENT_FANOUT hit of value 4: {t['hits']}")
        want_count = i >= 5
        if ("T_CLIENT_COUNT" in hits) != want_count:
            fails.append(f"tx #{i + 1}: T_CLIENT_COUNT hit {('T_CLIENT_COUNT' in hits)}, want {want_count}")
        elif want_count and hits["T_CLIENT_COUNT"]["value"] != i + 1:
            fails.append(f"tx #{i + 1}: count value {hits['T_CLIENT_COUNT']['value']}, want {i + 1}")
        if "T_RCPT_FANIN" in hits:
            fails.append(f"tx #{i + 1}: T_RCPT_FANIN fired with one sender")
        if ("T_BOTH" in hits) != want_count:
            fails.append(f"tx #{i + 1}: meta T_BOTH {('T_BOTH' in hits)}, want {want_count}")
        want_score = sum(h["score"] for h in t["hits"])
        if abs(t["score"] - want_score) > 1e-6:
            fails.append(f"tx #{i + 1}: score {t['score']} is not the sum of its hits {want_score}")
        if (t["action"] == "tag") != (t["score"] >= 3):
            fails.append(f"tx #{i + 1}: action {t['action']} for score {t['score']}")
    for f in fails:
        print("FAIL:", f)
    print(f"{len(txs)} transactions, {len(storms)} storm events checked")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
