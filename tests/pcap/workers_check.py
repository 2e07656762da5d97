#!/usr/bin/env python3
"""Check breakwater --workers N (flows spread over worker threads).

    workers_check.py BREAKWATER PCAP_DIR [--workers N] [--keep DIR]

For every committed capture (PCAP_DIR/*/*.pcap) the run with N workers must
say what the run with one says:

- without rules: the same records (transactions and flows), byte for byte
  once sorted, and the same summary counters (packets, flows, sessions,
  transactions, messages, anomalies, records); the summary's worker_frames
  has N entries adding up to the packets;
- with the default rules/: the same transaction records, field by field,
  except what depends on the order in which the workers reach the shared
  storm tracker: the measured value of a behaviour hit (a count taken a
  moment earlier or later), and so a score or an action where that changed
  which behaviour rules hit. Storm events: the same (rule, key, direction)
  multiset. Content hits are never allowed to differ;
- --replay 2 with N workers gives the records of --replay 2 with one (the
  pass barrier and the address rewriting between passes).

A usage check: --workers 0 and --workers 65 exit 2. No timing is checked.
Exit 0 when all holds, 1 otherwise (every mismatch printed).
"""
import argparse
import collections
import glob
import json
import os
import subprocess
import sys
import tempfile


def run(bw, args, summary, timeout=300):
    p = subprocess.run([bw] + args + ["-q", "--summary-json", summary],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError("%s %s: exit %d: %s" % (bw, " ".join(args), p.returncode,
                                                   p.stderr.decode(errors="replace")[-500:]))
    with open(summary) as f:
        summ = json.load(f)
    lines = p.stdout.decode(errors="replace").splitlines()
    return sorted(lines), summ


def flat(summ, prefix=""):
    """Every integer counter of a summary, by dotted name (times left out)."""
    out = {}
    for k, v in summ.items():
        name = prefix + k
        if isinstance(v, dict):
            out.update(flat(v, name + "."))
        elif isinstance(v, int) and not isinstance(v, bool):
            out[name] = v
    return out


TIMES = ("per_s", "ns_per", "mpps", "gbit", "stages.")
SKIP = ("memory_bytes", "flow_memory_peak_bytes", "workers", "flows.peak",
        "reassembly.held_peak", "rules.")


def compare_summaries(tag, a, b, errors):
    fa, fb = flat(a), flat(b)
    for k in sorted(set(fa) | set(fb)):
        if any(k == s or k.startswith(s) for s in SKIP) or "peak" in k:
            continue
        if any(t in k for t in TIMES) or k.endswith("_s"):
            continue            # figures of time, not counters
        if fa.get(k) != fb.get(k):
            errors.append("%s: summary %s: 1 worker %s, N workers %s" % (tag, k, fa.get(k), fb.get(k)))


def behaviour_free(rec, behaviour_rules):
    """A transaction record without what the workers' order may change."""
    r = dict(rec)
    hits = r.pop("hits", None) or []
    r.pop("score", None)
    r.pop("action", None)
    r["content_hits"] = sorted((h["rule"], h.get("score")) for h in hits
                               if h["rule"] not in behaviour_rules and "value" not in h)
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("breakwater")
    ap.add_argument("pcap_dir")
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--keep")
    args = ap.parse_args()
    bw, n = args.breakwater, str(args.workers)
    errors = []
    tmp = args.keep or tempfile.mkdtemp(prefix="bw-workers-")
    summ = os.path.join(tmp, "summary.json")
    caps = sorted(glob.glob(os.path.join(args.pcap_dir, "*", "*.pcap")))
    if not caps:
        print("no captures under %s" % args.pcap_dir)
        return 1

    for bad in ("0", "65"):
        p = subprocess.run([bw, "--pcap", caps[0], "--workers", bad], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        if p.returncode != 2:
            errors.append("--workers %s: exit %d, want 2" % (bad, p.returncode))

    total_tx = 0
    frames_by_worker = [0] * args.workers
    for cap in caps:
        tag = os.path.relpath(cap, args.pcap_dir)
        # no rules: everything equal
        r1, s1 = run(bw, ["--pcap", cap, "--no-rules", "--flows"], summ)
        rn, sn = run(bw, ["--pcap", cap, "--no-rules", "--flows", "--workers", n], summ)
        if r1 != rn:
            only1 = sorted(set(r1) - set(rn))[:2]
            onlyn = sorted(set(rn) - set(r1))[:2]
            errors.append("%s: --no-rules records differ (%d vs %d); 1 worker only: %s; "
                          "N only: %s" % (tag, len(r1), len(rn), only1, onlyn))
        compare_summaries(tag + " --no-rules", s1, sn, errors)
        if sn.get("workers") != args.workers or len(sn.get("worker_frames", [])) != args.workers:
            errors.append("%s: summary workers %s, worker_frames %s" %
                          (tag, sn.get("workers"), sn.get("worker_frames")))
        else:
            frames_by_worker = [a + b for a, b in zip(frames_by_worker, sn["worker_frames"])]
        if sn.get("worker_frames") and sum(sn["worker_frames"]) != sn["packets"]:
            errors.append("%s: worker_frames %s do not add up to %d packets" %
                          (tag, sn["worker_frames"], sn["packets"]))
        # the default rules: content equal, behaviour up to the workers' order
        r1, s1 = run(bw, ["--pcap", cap], summ)
        rn, sn = run(bw, ["--pcap", cap, "--workers", n], summ)
        j1 = [json.loads(l) for l in r1]
        jn = [json.loads(l) for l in rn]
        tx1 = sorted(json.dumps(behaviour_free(r, ()), sort_keys=True)
                     for r in j1 if r.get("event") == "smtp")
        txn = sorted(json.dumps(behaviour_free(r, ()), sort_keys=True)
                     for r in jn if r.get("event") == "smtp")
        total_tx += len(tx1)
        if tx1 != txn:
            a = sorted(set(tx1) - set(txn))[:1]
            b = sorted(set(txn) - set(tx1))[:1]
            errors.append("%s: transaction records differ beyond behaviour hits: %s / %s" %
                          (tag, a, b))
        ev1 = collections.Counter((r["rule"], r.get("key"), r["dir"]) for r in j1
                                  if r.get("event") == "storm")
        evn = collections.Counter((r["rule"], r.get("key"), r["dir"]) for r in jn
                                  if r.get("event") == "storm")
        if ev1 != evn:
            errors.append("%s: storm events differ: 1 worker only %s; N only %s" %
                          (tag, dict(ev1 - evn), dict(evn - ev1)))
        print("%-40s %5d records, %4d transactions, %3d storm events: %s" %
              (tag, len(r1), len(tx1), sum(ev1.values()),
               "same" if not errors or not errors[-1].startswith(tag) else "DIFFER"))

    # the comparison means something only when flows really were spread
    if sum(1 for f in frames_by_worker if f) < min(2, args.workers):
        errors.append("frames ran on too few workers: %s" % frames_by_worker)
    print("frames run by each worker over all captures:", frames_by_worker)

    # replay passes with workers: the barrier between passes
    cap = os.path.join(args.pcap_dir, "postfix-relay", "capture.pcap")
    if os.path.exists(cap):
        r1, _ = run(bw, ["--pcap", cap, "--no-rules", "--replay", "2"], summ)
        rn, sn = run(bw, ["--pcap", cap, "--no-rules", "--replay", "2", "--workers", n], summ)
        if r1 != rn:
            errors.append("--replay 2: records differ between 1 and %s workers" % n)
        else:
            print("--replay 2 on postfix-relay: %d records, same with %s workers" % (len(r1), n))

    if not args.keep:
        for f in os.listdir(tmp):
            os.unlink(os.path.join(tmp, f))
        os.rmdir(tmp)
    for e in errors:
        print("FAIL:", e)
    print("%d captures, %d transactions compared with %s workers: %s" %
          (len(caps), total_tx, n, "ok" if not errors else "%d mismatches" % len(errors)))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
