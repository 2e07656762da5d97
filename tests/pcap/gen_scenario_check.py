#!/usr/bin/env python3
"""Check gen-smtp-pcap.py --scenario and bench/detect.py against breakwater.

    gen_scenario_check.py BREAKWATER [--source DIR] [--scenario FILE] [--keep DIR]

Generates bench/scenarios/small.toml with --synth (generated messages: no
corpus, no network, no npm) into a temporary folder, twice, and checks:

- determinism: both runs wrote the same pcap, ground truth and event summary;
- validity (when tshark is installed): no bad checksum, malformed frame or
  TCP-analysis flag;
- breakwater (`--pcap X --rules SOURCE/rules -q`, the default rules) wrote
  one transaction record per ground-truth transaction, each equal to it in
  helo, mail_from, rcpt_to, rcpt_rejected, rcpt_replies, size, accepted,
  bdat, message_id, received_count and status, without anomalies;
- bench/detect.py --json on the records and the truth: every record joined,
  every event of the scenario present, every attack type detected (recall
  above 0: some of its transactions carry a behaviour hit or are blocked),
  and the legitimate bulk sender never blocked and never carrying a
  behaviour hit.

Prints every problem; exit status 0 when there is none, 1 otherwise. No
timing is checked.
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
from gen_check import tshark_problems  # noqa: E402  (the same tshark sanity check)
FIELDS = ("helo", "mail_from", "rcpt_to", "rcpt_rejected", "rcpt_replies", "size",
          "accepted", "bdat", "message_id", "received_count")
TYPES = ("reflection_loop", "forwarding_loop", "flood", "botnet", "bulk")


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def run(cmd, what, timeout=300):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError("%s exited %d: %s" % (
            what, p.returncode, p.stderr.decode(errors="replace").strip()[-800:]))
    return p.stdout


def generate(gen, scenario, out):
    run([sys.executable, gen, "--scenario", scenario, "--synth", "-o", out], "generator")
    base = out[:-5]
    return [out, base + ".truth.jsonl", base + ".events.json"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("breakwater")
    ap.add_argument("--source", default=SOURCE, help="the source tree (bench/, rules/)")
    ap.add_argument("--scenario", help="default: SOURCE/bench/scenarios/small.toml")
    ap.add_argument("--keep", help="write the capture and outputs here instead of a temp dir")
    a = ap.parse_args()
    gen = os.path.join(a.source, "bench", "gen-smtp-pcap.py")
    detect = os.path.join(a.source, "bench", "detect.py")
    scenario = a.scenario or os.path.join(a.source, "bench", "scenarios", "small.toml")
    rules = os.path.join(a.source, "rules")

    tmp = a.keep or tempfile.mkdtemp(prefix="gen-scenario-")
    os.makedirs(tmp, exist_ok=True)
    errors = []
    try:
        files = generate(gen, scenario, os.path.join(tmp, "small.pcap"))
        os.makedirs(os.path.join(tmp, "again"), exist_ok=True)
        again = generate(gen, scenario, os.path.join(tmp, "again", "small.pcap"))
        for x, y in zip(files, again):
            if sha(x) != sha(y):
                errors.append(f"not deterministic: {os.path.basename(x)} differs between "
                              "two runs of the same scenario")
        pcap, truth_path, events_path = files

        bad = tshark_problems(pcap)
        if bad is None:
            print("gen_scenario_check: tshark not installed, validity not checked")
        elif bad:
            errors.append(f"tshark flags {len(bad)} frames, first: {bad[0]}")

        out = run([a.breakwater, "--pcap", pcap, "--rules", rules, "-q"], "breakwater")
        rec_path = os.path.join(tmp, "records.jsonl")
        with open(rec_path, "wb") as f:
            f.write(out)
        recs = [json.loads(l) for l in out.decode("utf-8", "replace").splitlines()
                if l.strip()]
        recs = [r for r in recs if r.get("event") == "smtp"]
        with open(truth_path) as f:
            truth = [json.loads(l) for l in f if l.strip()]

        def key(r):
            return (r["src_ip"], r["src_port"], r["dest_ip"], r["dest_port"], r["tx"])

        if len(recs) != len(truth):
            errors.append(f"{len(recs)} transaction records, the ground truth has "
                          f"{len(truth)} transactions")
        got = {}
        for r in recs:
            if key(r) in got:
                errors.append(f"two records for {key(r)}")
            got[key(r)] = r
        for t in truth:
            r = got.pop(key(t), None)
            if r is None:
                errors.append(f"no record for {key(t)} ({t['event']} {t['role']})")
                continue
            for fld in FIELDS:
                if r.get(fld) != t[fld]:
                    errors.append(f"{key(t)} ({t['event']}) {fld}: expected {t[fld]!r}, "
                                  f"got {r.get(fld)!r}")
            want = "complete" if t["data"] else "incomplete"
            if r.get("status") != want:
                errors.append(f"{key(t)} status: expected {want}, got {r.get('status')}")
            if r.get("anomalies"):
                errors.append(f"{key(t)} anomalies: {r['anomalies']}")
        for k in got:
            errors.append(f"record {k} not in the ground truth")

        res = json.loads(run([sys.executable, detect, rec_path, truth_path, "--events",
                              events_path, "--json"], "detect.py"))
        j = res["join"]
        if j["unmatched_records"] or j["unmatched_truth"]:
            errors.append(f"detect.py join: {j}")
        if res["truth"]["transactions"] != len(truth):
            errors.append(f"detect.py read {res['truth']['transactions']} truth lines, "
                          f"expected {len(truth)}")
        types = res["types"]
        for ty in TYPES:
            t = types.get(ty)
            if t is None:
                errors.append(f"no {ty} event in the scenario's ground truth")
            elif ty == "bulk":
                if t["blocked"] or t["flagged"]:
                    errors.append(f"the legitimate bulk sender was blocked {t['blocked']} "
                                  f"times, flagged {t['flagged']} times "
                                  f"({t['behaviour_hits']})")
            elif not t["recall"] or t["detected"] != t["events"]:
                errors.append(f"{ty}: {t['detected']} of {t['events']} events detected, "
                              f"recall {t['recall']}")
        summary = ", ".join(f"{n} {t['flagged']}/{t['transactions']}"
                            for n, t in sorted(types.items()))
        print(f"gen_scenario_check: {len(truth)} transactions, {len(recs)} records; "
              f"flagged per event type: {summary}; {len(errors)} problems")
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    for e in errors[:50]:
        print("  " + e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
