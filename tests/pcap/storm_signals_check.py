#!/usr/bin/env python3
"""pcap: the over-quota and backscatter signals on the storm-flood capture.

storm-flood (see its README) floods full@sink.example.test, which Postfix
answers 452 4.2.2 Mailbox full, and sends 22 null-sender bounces back to the
forged sender victim@client.example.test. With signals.cf:
  T_OVERQ   count overquota_rcpt per rcpt > 20: crosses on full@ at 21;
  T_BOUNCES count null_sender per rcpt > 10: crosses on victim@ at 11;
and neither crosses on any other key. Then the shipped rules/ on the same
capture: BW_OVERQUOTA_STORM on full@ and BW_BOUNCE_STORM on victim@ at 21,
nothing else, and the legitimate sender alice@ never above pass.
Usage: storm_signals_check.py BREAKWATER
"""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    case = os.path.join(HERE, "storm-flood")
    out = subprocess.run([sys.argv[1], "--pcap", os.path.join(case, "capture.pcap"),
                          "--rules", os.path.join(case, "signals.cf"), "-q"],
                         capture_output=True, text=True, check=True).stdout
    ups = [json.loads(l) for l in out.splitlines()]
    ups = [(r["rule"], r["key"], r["value"]) for r in ups
           if r["event"] == "storm" and r["dir"] == "up"]
    want = [("T_OVERQ", "full@sink.example.test", 21),
            ("T_BOUNCES", "victim@client.example.test", 11)]
    ok = sorted(ups) == sorted(want)
    if not ok:
        print(f"FAIL: storm events {ups}, want {want}")
    print(f"{len(ups)} storm events checked")

    # The shipped rules (rules/, found from the source tree) on the same
    # capture: the over-quota and bounce storms cross at their 21st, nothing
    # else crosses, and the legitimate sender alice@ stays at pass.
    out = subprocess.run([sys.argv[1], "--pcap", os.path.join(case, "capture.pcap"), "-q"],
                         capture_output=True, text=True, check=True).stdout
    recs = [json.loads(l) for l in out.splitlines()]
    ups = sorted((r["rule"], r["key"], r["value"]) for r in recs
                 if r["event"] == "storm" and r["dir"] == "up")
    want = sorted([("BW_OVERQUOTA_STORM", "full@sink.example.test", 21),
                   ("BW_BOUNCE_STORM", "victim@client.example.test", 21)])
    if ups != want:
        print(f"FAIL: shipped rules: storm events {ups}, want {want}")
        ok = False
    legit = [r for r in recs if r["event"] != "storm" and
             r.get("mail_from") == "alice@client.example.test"]
    bad = [r for r in legit if r.get("action") != "pass"]
    if not legit or bad:
        print(f"FAIL: shipped rules: legitimate sender: {len(legit)} transactions, "
              f"{len(bad)} not pass")
        ok = False
    print(f"shipped rules: {len(ups)} storm events, {len(legit)} legitimate transactions at pass")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
